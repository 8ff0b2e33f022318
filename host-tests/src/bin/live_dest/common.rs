//! What the live-migration source (`tests/live_migration.rs`) and destination (`live_dest`)
//! share: the guest's RAM block, the modelled devices and their description tables, an
//! `embedded_io` adapter for std streams, and the hash both sides print.
//!
//! The devices are the typed `port92` and `i8259` models of `vmstate-devices` (loaded with
//! their hardened checks on the destination) plus a counter with big-endian wide fields.
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

pub use vmstate_devices::i8259::Pic;
pub use vmstate_devices::port92::Port92;

/// A PIC state derived from one counter value: registers a guest can reach (any IRR/IMR/ISR,
/// an 8-aligned vector base), all from the same `k`, so a torn copy is visible.
pub fn pic_at(base: Pic, k: u64) -> Pic {
    let b = k as u8;
    let mut p = base;
    p.body.last_irr = b;
    p.body.irr = b;
    p.body.imr = b;
    p.body.isr = b;
    p.body.irq_base = b & 0xf8;
    p
}

/// Whether the registers [`pic_at`] sets agree (no torn copy).
pub fn pic_consistent(p: &Pic) -> bool {
    let b = p.body.last_irr;
    p.body.irr == b && p.body.imr == b && p.body.isr == b && p.body.irq_base == b & 0xf8
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
pub const VMSDS: [&Vmsd; 3] = [
    &vmstate_devices::port92::VMSD,
    &vmstate_devices::i8259::VMSD,
    &COUNTER_VMSD,
];

/// The device states, in hashing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Devices {
    /// port92.
    pub port92: Port92,
    /// i8259 instances 0 and 1.
    pub pic: [Pic; 2],
    /// The counter.
    pub counter: Counter,
}

impl Devices {
    /// Power-on state.
    pub fn new() -> Devices {
        Devices {
            port92: Port92::DEFAULT,
            pic: [Pic::MASTER, Pic::SLAVE],
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
