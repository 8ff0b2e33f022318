//! What the live-migration source (`tests/live_migration.rs`) and destination (`live_dest`)
//! share: the guest's RAM block, the modelled devices and their description tables, an
//! `embedded_io` adapter for std streams, and the hash both sides print.
//!
//! The devices are small stand-ins with the wire layout of QEMU 7.2's `port92` and `i8259`
//! (format §16.8, §16.2) plus a counter with big-endian wide fields; the typed models of
//! `vmstate-devices` can replace them.
#![allow(dead_code)]

use vmstate::schema::Vmsd;
use vmstate::{State, assert_layout, field};
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The guest's one RAM block.
pub const BLOCK: &[u8] = b"pc.ram";
/// Guest RAM size: 64 MiB.
pub const RAM_BYTES: usize = 64 << 20;
/// Pages of guest RAM.
pub const PAGES: usize = RAM_BYTES / vmstate::ram::PAGE_SIZE;
/// Section ids on the wire.
pub const RAM_SECTION: u32 = 2;
/// port92's section id (as in the real pc stream).
pub const PORT92_SECTION: u32 = 27;
/// i8259 master and slave section ids.
pub const PIC_SECTIONS: [u32; 2] = [15, 16];
/// The counter's section id.
pub const COUNTER_SECTION: u32 = 40;

/// `port92`: one byte.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Port92 {
    /// The A20/reset register.
    pub outport: u8,
}

/// `port92` v1.
pub const PORT92_VMSD: Vmsd = Vmsd::new("port92", 1, 1, 1).fields(&[field!(Port92, outport)]);
assert_layout!(Port92, PORT92_VMSD, wire);

impl State for Port92 {
    const VMSD: &'static Vmsd = &PORT92_VMSD;
}

/// `i8259`: sixteen bytes.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct I8259 {
    /// Last IRR.
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register.
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Priority rotation.
    pub priority_add: u8,
    /// Vector base.
    pub irq_base: u8,
    /// Read register select.
    pub read_reg_select: u8,
    /// Poll mode.
    pub poll: u8,
    /// Special mask mode.
    pub special_mask: u8,
    /// Init sequence state.
    pub init_state: u8,
    /// Auto EOI.
    pub auto_eoi: u8,
    /// Rotate on auto EOI.
    pub rotate_on_auto_eoi: u8,
    /// Special fully nested mode.
    pub special_fully_nested_mode: u8,
    /// ICW4 expected.
    pub init4: u8,
    /// Single mode.
    pub single_mode: u8,
    /// Edge/level control.
    pub elcr: u8,
}

/// `i8259` v1.
pub const I8259_VMSD: Vmsd = Vmsd::new("i8259", 1, 1, 16).fields(&[
    field!(I8259, last_irr),
    field!(I8259, irr),
    field!(I8259, imr),
    field!(I8259, isr),
    field!(I8259, priority_add),
    field!(I8259, irq_base),
    field!(I8259, read_reg_select),
    field!(I8259, poll),
    field!(I8259, special_mask),
    field!(I8259, init_state),
    field!(I8259, auto_eoi),
    field!(I8259, rotate_on_auto_eoi),
    field!(I8259, special_fully_nested_mode),
    field!(I8259, init4),
    field!(I8259, single_mode),
    field!(I8259, elcr),
]);
assert_layout!(I8259, I8259_VMSD, wire);

impl State for I8259 {
    const VMSD: &'static Vmsd = &I8259_VMSD;
}

impl I8259 {
    /// Every register set from one counter value (so a torn copy is visible).
    pub fn at(k: u64) -> I8259 {
        let b = k as u8;
        I8259 {
            last_irr: b,
            irr: b,
            imr: b,
            isr: b,
            priority_add: b,
            irq_base: b,
            read_reg_select: b,
            poll: b,
            special_mask: b,
            init_state: b,
            auto_eoi: b,
            rotate_on_auto_eoi: b,
            special_fully_nested_mode: b,
            init4: b,
            single_mode: b,
            elcr: b,
        }
    }

    /// Whether all registers agree (no torn copy).
    pub fn consistent(&self) -> bool {
        self.as_bytes().iter().all(|&x| x == self.last_irr)
    }
}

/// A free-running counter with wide big-endian fields.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Counter {
    /// Ticks so far.
    pub ticks: U64,
    /// Ticks since the last wrap of `period`.
    pub phase: U32,
}

/// `live-counter` v1.
pub const COUNTER_VMSD: Vmsd =
    Vmsd::new("live-counter", 1, 1, 12).fields(&[field!(Counter, ticks), field!(Counter, phase)]);
assert_layout!(Counter, COUNTER_VMSD, wire);

impl State for Counter {
    const VMSD: &'static Vmsd = &COUNTER_VMSD;
}

/// The description tables the destination knows.
pub const VMSDS: [&Vmsd; 3] = [&PORT92_VMSD, &I8259_VMSD, &COUNTER_VMSD];

/// The device states, in hashing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// port92.
    pub port92: Port92,
    /// i8259 instances 0 and 1.
    pub pic: [I8259; 2],
    /// The counter.
    pub counter: Counter,
}

impl Devices {
    /// Power-on state.
    pub fn new() -> Devices {
        Devices {
            port92: Port92 { outport: 0 },
            pic: [I8259::at(0), I8259::at(0)],
            counter: Counter {
                ticks: U64::new(0),
                phase: U32::new(0),
            },
        }
    }

    /// Hash of all device bytes.
    pub fn hash(&self) -> u64 {
        let mut h = Hasher::new();
        h.bytes(self.port92.as_bytes());
        h.bytes(self.pic[0].as_bytes());
        h.bytes(self.pic[1].as_bytes());
        h.bytes(self.counter.as_bytes());
        h.finish()
    }
}

impl Default for Devices {
    fn default() -> Self {
        Devices::new()
    }
}

/// FNV-1a over 64-bit words (RAM is hashed as little-endian words on both sides).
#[derive(Debug, Clone, Copy)]
pub struct Hasher(u64);

impl Hasher {
    /// The offset basis.
    pub fn new() -> Hasher {
        Hasher(0xcbf2_9ce4_8422_2325)
    }

    /// Adds a word.
    pub fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0000_0100_0000_01b3);
    }

    /// Adds bytes (zero-padded to whole words).
    pub fn bytes(&mut self, b: &[u8]) {
        for c in b.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
    }

    /// The hash.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

/// A std stream as an `embedded_io` reader or writer.
#[derive(Debug)]
pub struct Io<T>(pub T);

/// A std I/O error kind as an `embedded_io` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoErr(pub std::io::ErrorKind);

impl std::fmt::Display for IoErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for IoErr {}

impl embedded_io::Error for IoErr {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::Other
    }
}

impl<T> embedded_io::ErrorType for Io<T> {
    type Error = IoErr;
}

impl<T: std::io::Read> embedded_io::Read for Io<T> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoErr> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map_err(|e| IoErr(e.kind())),
            }
        }
    }
}

impl<T: std::io::Write> embedded_io::Write for Io<T> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, IoErr> {
        self.0.write(buf).map_err(|e| IoErr(e.kind()))
    }

    fn flush(&mut self) -> Result<(), IoErr> {
        self.0.flush().map_err(|e| IoErr(e.kind()))
    }
}

/// A child process that is killed and reaped when dropped, so a failing test leaves no
/// destination or QEMU behind.
#[derive(Debug)]
pub struct Reaper(pub std::process::Child);

impl std::ops::Deref for Reaper {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
