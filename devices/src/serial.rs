//! ISA 16550A UART (`serial`): QEMU 7.2 `hw/char/serial.c`, `hw/char/serial-isa.c`,
//! `util/fifo8.c`; docs/V3-WIRE.md §16.4, invariants docs/UNTRUSTED-INPUT.md §4.4.
//!
//! The section's vmsd (`vmstate_isa_serial`, version 3, minimum 2) has one field, `state`, a
//! `VMSTATE_STRUCT` of the nested vmsd also named `serial` (version 3, minimum 2): an 11-byte body
//! (`divider` since 2, eight registers, `fcr_vmstate` since 3) followed by the nested vmsd's seven
//! subsections. A nested struct is always read with its own current version (docs/V3-WIRE.md
//! §6.3), so the layout is the same 11 bytes whatever version the section header carries.
//!
//! The two FIFOs are QEMU `Fifo8`s (`vmstate_fifo8`): a `VMSTATE_VBUFFER_UINT32` of `capacity`
//! bytes, then be32 `head` and be32 `num`. The capacity is the destination's and is not on the
//! wire. This model stores the data as a fixed 16-byte buffer rather than a VBUFFER sized by a
//! non-wire capacity field: the 16550 FIFO is always `UART_FIFO_LENGTH` (16) bytes, the bytes and
//! the JSON (`"buffer"`, size 16) are identical, and the type then cannot represent a FIFO whose
//! capacity disagrees with its storage or with the head/num bounds checked below.
//!
//! Load rules (a rejected load leaves the state unchanged; "MUST" is class (a) of
//! docs/UNTRUSTED-INPUT.md §3.3, "should" class (c), rejected by default):
//!
//! | rule | class | error |
//! |---|---|---|
//! | FIFO `head` < 16 | MUST | `Invalid { Below(16) }`, field `head` |
//! | FIFO `num` ≤ 16 | MUST | `Invalid { AtMost(16) }`, field `num` |
//! | `tsr_retry` > 0 requires LSR.TEMT clear; `tsr_retry` == 0 requires it set (QEMU's check) | MUST | `Invalid`, field `tsr_retry` / `lsr` |
//! | `tsr_retry` ≤ 4 (`MAX_XMIT_RETRY`): **rejected**, not clamped as QEMU does, so that a load never rewrites a value and round trips stay byte-exact; a guest cannot produce more than 4 | MUST | `Invalid { AtMost(4) }`, field `tsr_retry` |
//! | `serial/tsr` sent with `tsr_retry` 0, `serial/recv_fifo` / `serial/xmit_fifo` sent with an empty FIFO (QEMU sends them only when needed; their other values would not survive the next save) | should | `Invalid { Rule }`, field `tsr_retry` / `recv_fifo` / `xmit_fifo` |
//! | `thr_ipending` ∈ {0, 1} when sent | should | `Invalid`, field `thr_ipending` |
//! | `timeout_ipending` ∈ {0, 1} | should | `Invalid`, field `timeout_ipending` |
//! | `poll_msl` ∈ {0, 1} when sent | should | `Invalid`, field `poll_msl` |
//! | `fcr_vmstate` only the sticky bits 0xC9 | should | `Invalid`, field `fcr_vmstate` |
//! | `ier` & 0xF0 == 0, `mcr` & 0xE0 == 0 | should | `Invalid`, field `ier` / `mcr` |
//!
//! Accepted: `divider` 0 (QEMU treats it as about 3500 baud; nothing here divides by it) and any
//! `rbr`, `iir`, `lcr`, `lsr`, `msr`, `scr`, `thr`, `tsr`, FIFO data and timer values.
//! Not checked: LSR.DR against `recv_fifo.num` (optional in §4.4, not safety-relevant).
//!
//! Absent subsections: `thr_ipending` is derived from `iir` (QEMU's `post_load` does this when
//! its `pre_load` sentinel -1 survives), `poll_msl` stays -1 (no modem-status polling); the others
//! get the values of a freshly reset UART (empty FIFOs, timers not armed, `tsr_retry` 0).

use vmstate::schema::{Field, Subsection, Vmsd};
use vmstate::{
    Expected, State, Violation, assert_layout, check, field, mutate, pred, struct_field,
};
use zerocopy::byteorder::big_endian::{I32, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in each 16550 FIFO (`UART_FIFO_LENGTH`).
pub const FIFO_LEN: usize = 16;
/// Most transmit retries QEMU keeps (`MAX_XMIT_RETRY`).
pub const MAX_XMIT_RETRY: u32 = 4;
/// LSR transmitter-empty bit (`UART_LSR_TEMT`).
pub const LSR_TEMT: u8 = 0x40;
/// IER THR-empty interrupt enable (`UART_IER_THRI`).
pub const IER_THRI: u8 = 0x02;
/// FCR bits the guest path keeps (`val & 0xC9`).
pub const FCR_STICKY: u8 = 0xc9;

/// A QEMU `Fifo8` of the UART's 16 bytes; this struct is its 24-byte wire body.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Fifo8 {
    /// Ring storage.
    pub data: [u8; FIFO_LEN],
    /// Index of the oldest byte.
    pub head: U32,
    /// Bytes held.
    pub num: U32,
    /// The destination's capacity (`Fifo8.capacity`): not on the wire, it sizes the `data`
    /// VBUFFER, as in QEMU. Always [`FIFO_LEN`] for the UART.
    pub capacity: I32,
}

impl Fifo8 {
    /// An empty FIFO.
    pub const EMPTY: Fifo8 = Fifo8 {
        data: [0; FIFO_LEN],
        head: U32::ZERO,
        num: U32::ZERO,
        capacity: I32::new(FIFO_LEN as i32),
    };

    /// A FIFO holding `bytes` (oldest first) from slot `head`; `None` if they do not fit or
    /// `head` is not a slot.
    pub fn with_contents(head: usize, bytes: &[u8]) -> Option<Fifo8> {
        if head >= FIFO_LEN || bytes.len() > FIFO_LEN {
            return None;
        }
        let mut f = Fifo8::EMPTY;
        for (i, &b) in bytes.iter().enumerate() {
            f.data[(head + i) % FIFO_LEN] = b;
        }
        f.head = (head as u32).into();
        f.num = (bytes.len() as u32).into();
        Some(f)
    }

    /// Bytes held (bounded by the storage whatever `num` says).
    pub fn len(&self) -> usize {
        (self.num.get() as usize).min(FIFO_LEN)
    }

    /// Whether the FIFO is empty (`fifo8_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.num.get() == 0
    }

    /// The held bytes, oldest first (in bounds whatever the fields say).
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        let head = self.head.get() as usize % FIFO_LEN;
        (0..self.len()).map(move |i| self.data[(head + i) % FIFO_LEN])
    }

    /// The FIFO bookkeeping invariants.
    pub fn check(&self) -> Result<(), Violation> {
        // CVE-2013-4530 class (a stream FIFO cursor used as an index): `fifo8_pop` reads
        // `data[head++]` before reducing modulo the capacity, so head ≥ 16 is an out-of-bounds
        // heap read at a guest-chosen 32-bit offset.
        if self.head.get() >= FIFO_LEN as u32 {
            return Err(Violation {
                field: "head",
                expected: Expected::Below(FIFO_LEN as u64),
                found: self.head.get() as u64,
            });
        }
        // CVE-2013-4533 class (a stream fill level above the storage): num > 16 underflows
        // `fifo8_num_free` and trips the asserts in `fifo8_push` (process abort).
        if self.num.get() > FIFO_LEN as u32 {
            return Err(Violation {
                field: "num",
                expected: Expected::AtMost(FIFO_LEN as u64),
                found: self.num.get() as u64,
            });
        }
        Ok(())
    }
}

/// `Fifo8` description (version 1). As in QEMU, `data` is a VBUFFER sized by the destination's
/// capacity (never read from the wire), so the description matches QEMU's `-dump-vmstate`; for
/// the UART the capacity is always 16 (see the module docs).
pub const FIFO8_VMSD: Vmsd = Vmsd::new("Fifo8", 1, 1, core::mem::size_of::<Fifo8>())
    .fields(&[
        // QEMU gates `data` on version 1 (always true for a v1 body).
        vmstate::vbuffer!(Fifo8, data, size = capacity).since(1),
        field!(Fifo8, head),
        field!(Fifo8, num),
    ])
    // The capacity is not on the wire; a load into a real UART already has 16 here, but a
    // structure-only walk (`vmstate::stream::Schemas`) starts from zeroed scratch and would
    // size `data` as 0 bytes, misplacing the body's end.
    .pre_load(mutate!(Fifo8, |f| f.capacity = I32::new(FIFO_LEN as i32)))
    .validate(check!(Fifo8, |f, _version| f.check()))
    .not_migrated(&[vmstate::not_migrated!(Fifo8, capacity)]);
assert_layout!(Fifo8, FIFO8_VMSD);

/// The UART's state (`SerialState`, nested vmsd `serial`): the 11 body bytes first, then the
/// fields carried by subsections.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Serial {
    /// Baud divisor latch (0 is legal).
    pub divider: U16,
    /// Receive buffer (non-FIFO mode).
    pub rbr: u8,
    /// Interrupt enable register.
    pub ier: u8,
    /// Interrupt identification register.
    pub iir: u8,
    /// Line control register.
    pub lcr: u8,
    /// Modem control register.
    pub mcr: u8,
    /// Line status register.
    pub lsr: u8,
    /// Modem status register.
    pub msr: u8,
    /// Scratch register.
    pub scr: u8,
    /// FIFO control register as saved (`fcr`).
    pub fcr_vmstate: u8,
    /// THR-empty interrupt pending (subsection `serial/thr_ipending`).
    pub thr_ipending: I32,
    /// Transmit retries left (subsection `serial/tsr`).
    pub tsr_retry: U32,
    /// Transmit holding register (subsection `serial/tsr`).
    pub thr: u8,
    /// Transmit shift register (subsection `serial/tsr`).
    pub tsr: u8,
    /// Receive FIFO (subsection `serial/recv_fifo`).
    pub recv_fifo: Fifo8,
    /// Transmit FIFO (subsection `serial/xmit_fifo`).
    pub xmit_fifo: Fifo8,
    /// Character-timeout timer (subsection `serial/fifo_timeout_timer`), all-ones if not armed.
    pub fifo_timeout_timer: U64,
    /// Character-timeout interrupt pending (subsection `serial/timeout_ipending`).
    pub timeout_ipending: I32,
    /// Modem-status polling: -1 if the chardev cannot report it (subsection `serial/poll`).
    pub poll_msl: I32,
    /// Modem-status poll timer (subsection `serial/poll`).
    pub modem_status_poll: U64,
}

const SIZE: usize = core::mem::size_of::<Serial>();

impl Serial {
    /// A UART after reset (`serial_reset`) on a chardev without modem-status support
    /// (`poll_msl` -1, as with `-serial null`).
    pub fn new() -> Serial {
        let mut s = Serial::new_zeroed();
        s.divider = 0x0c.into();
        s.iir = 0x01;
        s.mcr = 0x08;
        s.lsr = 0x60;
        s.msr = 0xb0;
        s.recv_fifo = Fifo8::EMPTY;
        s.xmit_fifo = Fifo8::EMPTY;
        s.fifo_timeout_timer = u64::MAX.into();
        s.poll_msl = (-1).into();
        s.modem_status_poll = u64::MAX.into();
        s
    }

    /// `thr_ipending` as QEMU derives it from `iir` when the subsection is absent.
    pub fn derived_thr_ipending(&self) -> i32 {
        ((self.iir & 0x06) == 0x02) as i32
    }

    /// The invariants checked after the body and all subsections (module docs).
    pub fn check(&self) -> Result<(), Violation> {
        let retry = self.tsr_retry.get();
        // QEMU's own consistency check (serial_post_load), no CVE: `tsr_retry` and LSR.TEMT
        // select the transmit path (retry watch or idle), a stream value selecting code
        // (§3.1); QEMU fails the load on an inconsistent pair too.
        if retry > 0 && self.lsr & LSR_TEMT != 0 {
            return Err(Violation {
                field: "tsr_retry",
                expected: Expected::Rule("0 while LSR.TEMT is set"),
                found: retry as u64,
            });
        }
        if retry == 0 && self.lsr & LSR_TEMT == 0 {
            return Err(Violation {
                field: "lsr",
                expected: Expected::Rule("LSR.TEMT set while tsr_retry is 0"),
                found: self.lsr as u64,
            });
        }
        // Should reject (class c, no CVE): values the guest paths never store (they mask
        // with 0x0f, 0x1f, 0xc9).
        if self.ier & 0xf0 != 0 {
            return Err(Violation {
                field: "ier",
                expected: Expected::MaskClear(0xf0),
                found: self.ier as u64,
            });
        }
        if self.mcr & 0xe0 != 0 {
            return Err(Violation {
                field: "mcr",
                expected: Expected::MaskClear(0xe0),
                found: self.mcr as u64,
            });
        }
        if self.fcr_vmstate & !FCR_STICKY != 0 {
            return Err(Violation {
                field: "fcr_vmstate",
                expected: Expected::MaskClear(!FCR_STICKY as u64),
                found: self.fcr_vmstate as u64,
            });
        }
        // Should reject (class c, no CVE): a pending flag is 0 or 1 (negatives included).
        flag("timeout_ipending", self.timeout_ipending.get())
    }
}

impl Default for Serial {
    fn default() -> Self {
        Serial::new()
    }
}

/// A 0/1 flag stored as int32.
fn flag(field: &'static str, v: i32) -> Result<(), Violation> {
    if (0..=1).contains(&v) {
        Ok(())
    } else {
        Err(Violation {
            field,
            expected: Expected::OneOf(&[0, 1]),
            found: v as u32 as u64,
        })
    }
}

const THR_IPENDING_VMSD: Vmsd = Vmsd::new("serial/thr_ipending", 1, 1, SIZE)
    .fields(&[field!(Serial, thr_ipending)])
    // Should reject (class c, no CVE): only 0 or 1 is ever sent (QEMU would treat -1 as
    // "absent").
    .validate(check!(Serial, |s, _v| flag(
        "thr_ipending",
        s.thr_ipending.get()
    )));

const TSR_VMSD: Vmsd = Vmsd::new("serial/tsr", 1, 1, SIZE)
    .fields(&[
        field!(Serial, tsr_retry),
        field!(Serial, thr),
        field!(Serial, tsr),
    ])
    .validate(check!(Serial, |s, _v| {
        // A retry count above MAX_XMIT_RETRY is unreachable (a retry loop bound, §3.1; no
        // CVE); QEMU clamps it, this model rejects it (module docs).
        if s.tsr_retry.get() > MAX_XMIT_RETRY {
            return Err(Violation {
                field: "tsr_retry",
                expected: Expected::AtMost(MAX_XMIT_RETRY as u64),
                found: s.tsr_retry.get() as u64,
            });
        }
        sent_only_when_needed(
            "tsr_retry",
            "non-zero: QEMU sends serial/tsr only then",
            s.tsr_retry.get() != 0,
        )
    }));

/// Should reject (class c, no CVE): QEMU sends these subsections only when their `needed`
/// predicate holds. One that arrives anyway carries values (`thr`, `tsr`, FIFO bytes) that no
/// encoder writes back — the next save drops the subsection and the load after it resets
/// them — so the load would not round-trip.
fn sent_only_when_needed(
    field: &'static str,
    rule: &'static str,
    needed: bool,
) -> Result<(), Violation> {
    if needed {
        return Ok(());
    }
    Err(Violation {
        field,
        expected: Expected::Rule(rule),
        found: 0,
    })
}

const FIFO_RULE: &str = "a non-empty FIFO: QEMU sends the FIFO subsections only then";

// QEMU declares both FIFO structs with field version 1 (always present in a v1 subsection).
const RECV_FIFO_FIELDS: &[Field] = &[struct_field!(Serial, recv_fifo, FIFO8_VMSD).since(1)];
const RECV_FIFO_VMSD: Vmsd = Vmsd::new("serial/recv_fifo", 1, 1, SIZE)
    .fields(RECV_FIFO_FIELDS)
    .validate(check!(Serial, |s, _v| sent_only_when_needed(
        "recv_fifo",
        FIFO_RULE,
        !s.recv_fifo.is_empty()
    )));

const XMIT_FIFO_FIELDS: &[Field] = &[struct_field!(Serial, xmit_fifo, FIFO8_VMSD).since(1)];
const XMIT_FIFO_VMSD: Vmsd = Vmsd::new("serial/xmit_fifo", 1, 1, SIZE)
    .fields(XMIT_FIFO_FIELDS)
    .validate(check!(Serial, |s, _v| sent_only_when_needed(
        "xmit_fifo",
        FIFO_RULE,
        !s.xmit_fifo.is_empty()
    )));

const FIFO_TIMEOUT_TIMER_VMSD: Vmsd = Vmsd::new("serial/fifo_timeout_timer", 1, 1, SIZE)
    .fields(&[field!(Serial, fifo_timeout_timer).timer()]);

const TIMEOUT_IPENDING_VMSD: Vmsd =
    Vmsd::new("serial/timeout_ipending", 1, 1, SIZE).fields(&[field!(Serial, timeout_ipending)]);

const POLL_VMSD: Vmsd = Vmsd::new("serial/poll", 1, 1, SIZE)
    .fields(&[
        field!(Serial, poll_msl),
        field!(Serial, modem_status_poll).timer(),
    ])
    // Should reject (class c, no CVE): -1 ("no modem-status support") is never sent, and
    // nothing else exists.
    .validate(check!(Serial, |s, _v| flag("poll_msl", s.poll_msl.get())));

const SUBSECTIONS: &[Subsection] = &[
    Subsection::new(
        &THR_IPENDING_VMSD,
        pred!(Serial, |s| s.ier & IER_THRI != 0
            && s.thr_ipending.get() != s.derived_thr_ipending()),
    )
    .absent(mutate!(Serial, |s| s.thr_ipending = s.derived_thr_ipending().into())),
    Subsection::new(&TSR_VMSD, pred!(Serial, |s| s.tsr_retry.get() != 0)).absent(mutate!(
        Serial,
        |s| {
            s.tsr_retry = 0.into();
            s.thr = 0;
            s.tsr = 0;
        }
    )),
    Subsection::new(&RECV_FIFO_VMSD, pred!(Serial, |s| !s.recv_fifo.is_empty()))
        .absent(mutate!(Serial, |s| s.recv_fifo = Fifo8::EMPTY)),
    Subsection::new(&XMIT_FIFO_VMSD, pred!(Serial, |s| !s.xmit_fifo.is_empty()))
        .absent(mutate!(Serial, |s| s.xmit_fifo = Fifo8::EMPTY)),
    Subsection::new(
        &FIFO_TIMEOUT_TIMER_VMSD,
        pred!(Serial, |s| s.fifo_timeout_timer.get() != u64::MAX),
    )
    .absent(mutate!(Serial, |s| s.fifo_timeout_timer = u64::MAX.into())),
    Subsection::new(
        &TIMEOUT_IPENDING_VMSD,
        pred!(Serial, |s| s.timeout_ipending.get() != 0),
    )
    .absent(mutate!(Serial, |s| s.timeout_ipending = 0.into())),
    Subsection::new(&POLL_VMSD, pred!(Serial, |s| s.poll_msl.get() >= 0)).absent(mutate!(
        Serial,
        |s| {
            s.poll_msl = (-1).into();
            s.modem_status_poll = u64::MAX.into();
        }
    )),
];

/// The nested `serial` description (`vmstate_serial`, version 3, minimum 2).
pub const SERIAL_VMSD: Vmsd = Vmsd::new("serial", 3, 2, SIZE)
    .fields(&[
        field!(Serial, divider).since(2),
        field!(Serial, rbr),
        field!(Serial, ier),
        field!(Serial, iir),
        field!(Serial, lcr),
        field!(Serial, mcr),
        field!(Serial, lsr),
        field!(Serial, msr),
        field!(Serial, scr),
        field!(Serial, fcr_vmstate).since(3),
    ])
    .subsections(SUBSECTIONS)
    // QEMU's sentinels: -1 means "subsection absent".
    .pre_load(mutate!(Serial, |s| {
        s.thr_ipending = (-1).into();
        s.poll_msl = (-1).into();
    }))
    .validate(check!(Serial, |s, _v| s.check()));
assert_layout!(Serial, SERIAL_VMSD);

/// The ISA serial section's state (`ISASerialState`): only the nested UART is migrated.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct IsaSerial {
    /// The UART.
    pub state: Serial,
}

impl IsaSerial {
    /// A reset UART (see [`Serial::new`]).
    pub fn new() -> IsaSerial {
        IsaSerial {
            state: Serial::new(),
        }
    }
}

impl Default for IsaSerial {
    fn default() -> Self {
        IsaSerial::new()
    }
}

const ISA_FIELDS: &[Field] = &[struct_field!(IsaSerial, state, SERIAL_VMSD)];

/// The section's description (`vmstate_isa_serial`, idstr `serial`, version 3, minimum 2).
pub const VMSD: Vmsd =
    Vmsd::new("serial", 3, 2, core::mem::size_of::<IsaSerial>()).fields(ISA_FIELDS);
assert_layout!(IsaSerial, VMSD);

impl State for IsaSerial {
    const VMSD: &'static Vmsd = &VMSD;
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixtures::{SERIAL, SERIAL_STATE, body_of, section};
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;
    use vmstate::{Error, ErrorKind, load};

    fn analyze(s: &Serial) -> String {
        format!(
            "{{\"state\":{{\"divider\":\"0x{:04x}\",\"rbr\":\"0x{:02x}\",\"ier\":\"0x{:02x}\",\
             \"iir\":\"0x{:02x}\",\"lcr\":\"0x{:02x}\",\"mcr\":\"0x{:02x}\",\"lsr\":\"0x{:02x}\",\
             \"msr\":\"0x{:02x}\",\"scr\":\"0x{:02x}\",\"fcr_vmstate\":\"0x{:02x}\"}}}}",
            s.divider.get(),
            s.rbr,
            s.ier,
            s.iir,
            s.lcr,
            s.mcr,
            s.lsr,
            s.msr,
            s.scr,
            s.fcr_vmstate
        )
    }

    fn load_err(body: &[u8]) -> Error {
        let mut s = IsaSerial::new();
        s.state.scr = 0x5a; // a live state that must survive the failed load
        fixtures::load_err(s, 3, body)
    }

    #[test]
    fn real_section_decodes_reencodes_and_describes_like_qemu() {
        let rec = section(SERIAL, "serial", 0);
        assert_eq!((rec.version_id, rec.body.len()), (3, 11));
        let mut init = IsaSerial::new();
        init.state.poll_msl = 0.into(); // a destination value the load must replace
        let s = fixtures::round_trip(SERIAL, "serial", 0, init);
        // The analysis and the trailer's device object, exactly.
        fixtures::describes_like_qemu(SERIAL, SERIAL_STATE, "serial", &s, &analyze(&s.state));
        // Absent subsections: derived thr_ipending (iir 0x01 → 0), poll_msl sentinel kept.
        assert_eq!(s.state.thr_ipending.get(), 0);
        assert_eq!(s.state.poll_msl.get(), -1);
        assert_eq!(
            s,
            IsaSerial::new(),
            "a -serial null UART that never ran is in reset state"
        );
    }

    #[test]
    fn section_version_2_reads_the_same_nested_v3_body() {
        let rec = section(SERIAL, "serial", 0);
        let mut s = IsaSerial::new();
        s.state.scr = 9;
        load(&mut s, 2, rec.body, 0).expect("v2 section, nested v3 body");
        assert_eq!(s, IsaSerial::new());
        let e = load_err(&rec.body[..10]); // a v2-style 10-byte body is truncated
        assert!(e.is_incomplete());
        let mut s = IsaSerial::new();
        assert_eq!(
            load(&mut s, 1, rec.body, 0).unwrap_err().kind,
            ErrorKind::VersionTooOld { found: 1, min: 2 }
        );
    }

    #[test]
    fn every_prefix_of_a_full_body_fails_cleanly() {
        let mut s = IsaSerial::new();
        let u = &mut s.state;
        u.ier = IER_THRI;
        u.iir = 0x01;
        u.thr_ipending = 1.into();
        u.lsr = 0x21; // TEMT clear: transmitting
        u.tsr_retry = 2.into();
        u.recv_fifo = Fifo8::with_contents(3, b"abc").unwrap();
        u.xmit_fifo = Fifo8::with_contents(15, b"xy").unwrap();
        u.fifo_timeout_timer = 77.into();
        u.timeout_ipending = 1.into();
        u.poll_msl = 1.into();
        u.modem_status_poll = 88.into();
        let body = body_of(&s);
        // 11 + thr_ipending 29 + tsr 22 + 2 × fifo 46 + timer 39 + timeout 33 + poll 29.
        assert_eq!(body.len(), 11 + 29 + 22 + 46 + 46 + 39 + 33 + 29);
        let mut d = IsaSerial::new();
        load(&mut d, 3, &body, 0).unwrap();
        assert_eq!(d, s);
        // A prefix that ends between two subsections is a complete, shorter body whose absent
        // subsections take their defaults. Cut anywhere before the tsr subsection is complete,
        // the defaulted tsr_retry 0 contradicts the busy transmitter and is rejected; every
        // other prefix is incomplete (or leaves a partial subsection header behind the body).
        let mut ok = Vec::new();
        for n in 0..body.len() {
            let mut d = IsaSerial::new();
            match load(&mut d, 3, &body[..n], 0) {
                Ok(()) => ok.push(n),
                Err(e) => assert!(
                    e.is_incomplete()
                        || matches!(e.kind, ErrorKind::MissingFooter { found: 5 })
                        || (matches!(e.kind, ErrorKind::Invalid { .. })
                            && e.field == Some("lsr")
                            && (11..62).contains(&n)),
                    "{n}: {e:?}"
                ),
            }
        }
        assert_eq!(ok, [62, 108, 154, 193, 226]);
    }

    #[test]
    fn fifo_subsection_bytes_are_exact_and_round_trip() {
        let mut s = IsaSerial::new();
        s.state.recv_fifo = Fifo8::with_contents(14, b"hello").unwrap();
        let body = body_of(&s);
        let mut want = body[..11].to_vec();
        want.extend_from_slice(b"\x05\x10serial/recv_fifo\x00\x00\x00\x01");
        let mut data = [0u8; 16];
        data[14] = b'h';
        data[15] = b'e';
        data[..3].copy_from_slice(b"llo");
        want.extend_from_slice(&data);
        want.extend_from_slice(&[0, 0, 0, 14, 0, 0, 0, 5]);
        assert_eq!(body, want);
        let mut d = IsaSerial::new();
        load(&mut d, 3, &body, 0).unwrap();
        assert_eq!(d.state.recv_fifo.iter().collect::<Vec<u8>>(), b"hello");
        assert_eq!(d, s);
        // xmit FIFO full (num == 16 is legal) together with the recv FIFO.
        s.state.xmit_fifo = Fifo8::with_contents(0, &[7; 16]).unwrap();
        let body = body_of(&s);
        assert_eq!(
            &body[11 + 46..11 + 46 + 22],
            b"\x05\x10serial/xmit_fifo\x00\x00\x00\x01"
        );
        let mut d = IsaSerial::new();
        load(&mut d, 3, &body, 0).unwrap();
        assert_eq!(d, s);
    }

    #[test]
    fn a_structure_walk_from_zeroed_scratch_measures_fifo_subsections() {
        let mut s = IsaSerial::new();
        s.state.recv_fifo = Fifo8::with_contents(3, b"abc").unwrap();
        s.state.xmit_fifo = Fifo8::with_contents(0, &[7; 16]).unwrap();
        let body = body_of(&s);
        let mut scratch = [0u8; core::mem::size_of::<IsaSerial>()];
        let mut r = vmstate::wire::Reader::new(&body, 0);
        let n = vmstate::body::measure_body(&VMSD, 3, &mut r, &mut scratch).unwrap();
        assert_eq!(n, body.len());
    }

    /// A subsection QEMU would not have sent (found by fuzzing `device_section`: a
    /// `serial/tsr` with `tsr_retry` 0 loaded `thr`/`tsr` values that the next save dropped).
    #[test]
    fn subsections_sent_when_not_needed_are_rejected() {
        // serial/tsr with tsr_retry 0 (and LSR.TEMT set, as that requires).
        let mut b = with_tsr(1, 0x60);
        b[27..31].copy_from_slice(&0u32.to_be_bytes());
        b[31] = 0xfe;
        let e = load_err(&b);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::Rule("non-zero: QEMU sends serial/tsr only then"),
                    found: 0
                },
                Some("tsr_retry"),
                1000 + 27
            )
        );
        // serial/recv_fifo and serial/xmit_fifo with nothing in them.
        for xmit in [false, true] {
            let mut s = IsaSerial::new();
            let fifo = Fifo8::with_contents(0, b"z").unwrap();
            if xmit {
                s.state.xmit_fifo = fifo;
            } else {
                s.state.recv_fifo = fifo;
            }
            let mut b = body_of(&s);
            let fifo = 11 + 1 + 1 + 16 + 4; // the FIFO struct, its `num` at +20
            b[fifo + 20..fifo + 24].copy_from_slice(&0u32.to_be_bytes());
            let e = load_err(&b);
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::Rule(FIFO_RULE),
                        found: 0
                    },
                    Some(if xmit { "xmit_fifo" } else { "recv_fifo" }),
                    1000 + fifo
                ),
                "xmit {xmit}"
            );
        }
    }

    #[test]
    fn fifo_head_and_num_outside_the_storage_are_rejected() {
        let mut s = IsaSerial::new();
        s.state.recv_fifo = Fifo8::with_contents(0, b"z").unwrap();
        let good = body_of(&s);
        let fifo = 11 + 1 + 1 + 16 + 4; // fifo body start
        let mut b = good.clone();
        b[fifo + 16..fifo + 20].copy_from_slice(&16u32.to_be_bytes());
        let e = load_err(&b);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::Below(16),
                    found: 16
                },
                Some("head"),
                1000 + fifo + 16
            )
        );
        let mut b = good.clone();
        b[fifo + 16..fifo + 20].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(load_err(&b).field, Some("head"));
        let mut b = good.clone();
        b[fifo + 20..fifo + 24].copy_from_slice(&17u32.to_be_bytes());
        let e = load_err(&b);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::AtMost(16),
                    found: 17
                },
                Some("num"),
                1000 + fifo + 20
            )
        );
    }

    fn with_tsr(retry: u32, lsr: u8) -> Vec<u8> {
        let mut s = IsaSerial::new();
        s.state.lsr = lsr;
        s.state.tsr_retry = retry.into();
        body_of(&s)
    }

    #[test]
    fn tsr_retry_must_agree_with_temt_and_stay_at_most_4() {
        // Retrying while the transmitter is empty.
        let e = load_err(&with_tsr(1, 0x60));
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::Rule("0 while LSR.TEMT is set"),
                    found: 1
                },
                Some("tsr_retry"),
                1000 + 11 + 1 + 1 + 10 + 4
            )
        );
        // Transmitter busy but no retry pending.
        let e = load_err(&with_tsr(0, 0x20));
        assert_eq!((e.field, e.offset), (Some("lsr"), 1007));
        // Above MAX_XMIT_RETRY: rejected (QEMU would clamp to 4).
        let e = load_err(&with_tsr(5, 0x20));
        assert_eq!(
            (e.kind, e.field),
            (
                ErrorKind::Invalid {
                    expected: Expected::AtMost(4),
                    found: 5
                },
                Some("tsr_retry")
            )
        );
        // 4 with TEMT clear loads.
        let mut d = IsaSerial::new();
        load(&mut d, 3, &with_tsr(4, 0x20), 0).unwrap();
        assert_eq!(d.state.tsr_retry.get(), 4);
    }

    #[test]
    fn unreachable_register_and_flag_values_are_rejected() {
        let good = body_of(&IsaSerial::new());
        for (at, value, field) in [
            (3usize, 0x10u8, "ier"),
            (6, 0x20, "mcr"),
            (10, 0x02, "fcr_vmstate"),
        ] {
            let mut b = good.clone();
            b[at] = value;
            let e = load_err(&b);
            assert_eq!((e.field, e.offset), (Some(field), 1000 + at), "{field}");
            assert!(matches!(e.kind, ErrorKind::Invalid { .. }));
        }
        // Flags carried by subsections.
        for (name, bad) in [
            (&b"serial/thr_ipending"[..], -1i32),
            (b"serial/thr_ipending", 2),
            (b"serial/timeout_ipending", 2),
            (b"serial/timeout_ipending", -1),
        ] {
            let mut b = good.clone();
            b.extend_from_slice(&[5, name.len() as u8]);
            b.extend_from_slice(name);
            b.extend_from_slice(&[0, 0, 0, 1]);
            b.extend_from_slice(&bad.to_be_bytes());
            let e = load_err(&b);
            let field = core::str::from_utf8(&name[7..]).unwrap();
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::OneOf(&[0, 1]),
                        found: bad as u32 as u64
                    },
                    Some(field),
                    1000 + 11 + 2 + name.len() + 4
                )
            );
        }
        let mut b = good.clone();
        b.extend_from_slice(b"\x05\x0bserial/poll\x00\x00\x00\x01\xff\xff\xff\xff");
        b.extend_from_slice(&[0xff; 8]);
        let e = load_err(&b);
        assert_eq!((e.field, e.offset), (Some("poll_msl"), 1000 + 11 + 17));
    }

    #[test]
    fn odd_but_reachable_states_load() {
        let mut s = IsaSerial::new();
        s.state.divider = 0.into(); // divisor latch 0
        s.state.rbr = 0xff;
        s.state.iir = 0xc2; // FIFO bits + THRI pending
        s.state.ier = 0x0f;
        s.state.mcr = 0x1f;
        s.state.fcr_vmstate = FCR_STICKY;
        s.state.lcr = 0xff;
        s.state.msr = 0xff;
        s.state.thr_ipending = 0.into(); // differs from the derived 1: sent
        let body = body_of(&s);
        assert_eq!(&body[11..13], b"\x05\x13");
        let mut d = IsaSerial::new();
        load(&mut d, 3, &body, 0).expect("reachable");
        assert_eq!(d, s);
    }

    #[test]
    fn absent_subsections_reset_and_derive() {
        let mut live = IsaSerial::new();
        live.state.recv_fifo = Fifo8::with_contents(2, b"q").unwrap();
        live.state.timeout_ipending = 1.into();
        live.state.fifo_timeout_timer = 5.into();
        live.state.poll_msl = 1.into();
        live.state.thr_ipending = 0.into();
        let mut body = body_of(&IsaSerial::new());
        body[4] = 0x02; // iir: THRI → thr_ipending derived as 1
        load(&mut live, 3, &body, 0).unwrap();
        let mut want = IsaSerial::new();
        want.state.iir = 0x02;
        want.state.thr_ipending = 1.into();
        assert_eq!(live, want);
    }

    #[test]
    fn fifo_helpers_stay_in_bounds() {
        assert!(Fifo8::with_contents(16, b"").is_none());
        assert!(Fifo8::with_contents(0, &[0; 17]).is_none());
        let mut f = Fifo8::EMPTY;
        f.head = 1000.into();
        f.num = 1000.into();
        assert_eq!(f.iter().count(), 16);
        assert!(f.check().is_err());
    }
}
