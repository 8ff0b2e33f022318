//! `mc146818rtc`: the MC146818 real-time clock and CMOS RAM (QEMU 7.2 `hw/rtc/mc146818rtc.c`;
//! docs/V3-WIRE.md §16.1, docs/UNTRUSTED-INPUT.md §4.1).
//!
//! idstr `mc146818rtc`, instance 0, **version 3, minimum 1**. The body is 245 bytes in
//! version 3, 205 in version 2 and 197 in version 1 (the later fields are gated with
//! `since`). Fields absent from an old body keep the destination's values, as in QEMU; QEMU's
//! `post_load` then recomputes the time from CMOS and zeroes `offset` for `v <= 2`, which is
//! the consumer's job here.
//!
//! Subsection `mc146818rtc/irq_reinject_on_ack_count` (version 1) carries one u16, sent iff it
//! is nonzero; when a body omits it the count is reset to 0.
//!
//! # Invariants checked on load
//!
//! QEMU 7.2 checks nothing (`rtc_post_load` only recomputes derived state).
//!
//! | field | accepted | why |
//! |---|---|---|
//! | `cmos_index` | 0..=127 | **MUST**: the port-0x71 paths index `cmos_data[cmos_index]`; 128..=255 is an intra-object out-of-bounds read/write over the fields and host pointers that follow the array |
//! | `irq_reinject_on_ack_count` | 0..=20 | should reject: the device counts up to `RTC_REINJECT_ON_ACK_COUNT` (20) only |
//! | `cmos_data` (time, NVRAM, REG_C/REG_D) | any | accept: the guest may write non-BCD time bytes |
//! | `irq_coalesced`, `period` | any | accept: `period` is recomputed from REG_A/REG_B by QEMU |
//! | clocks and timers | any 64-bit | accept: consumers use wrapping arithmetic |
//! | unused runs | any | ignored on load, written as zeros |
//!
//! [`VMSD`] enforces every rule. [`PERMISSIVE_VMSD`] is the same table enforcing only the MUST
//! rule; load with it through [`vmstate::load_with`].

use vmstate::{Expected, Subsection, Violation, Vmsd, assert_layout, check, field, mutate, pred};
use zerocopy::byteorder::big_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of CMOS RAM (clock registers included).
pub const CMOS_SIZE: usize = 128;
/// CMOS index of status register A (rate selection, update in progress).
pub const REG_A: usize = 0x0a;
/// CMOS index of status register B (mode and interrupt enables).
pub const REG_B: usize = 0x0b;
/// CMOS index of status register C (interrupt flags, read-to-clear).
pub const REG_C: usize = 0x0c;
/// CMOS index of status register D (valid RAM and time).
pub const REG_D: usize = 0x0d;
/// The largest `irq_reinject_on_ack_count` the device produces (`RTC_REINJECT_ON_ACK_COUNT`).
pub const MAX_REINJECT_ON_ACK_COUNT: u16 = 20;
/// A timer expiry that means "not armed".
pub const TIMER_NOT_ARMED: u64 = u64::MAX;

/// The `mc146818rtc` body at version 3 (a zero-copy view of the 245-byte body).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct RtcBody {
    /// CMOS RAM: time and date, REG_A..REG_D at 0x0a..=0x0d, then NVRAM.
    pub cmos_data: [u8; CMOS_SIZE],
    /// Index selected through port 0x70 (0..=127).
    pub cmos_index: u8,
    /// First unused run (7 × 4 bytes of removed fields).
    pub unused0: [u8; 28],
    /// Periodic interrupt timer expiry (ns; all-ones when not armed).
    pub periodic_timer: U64,
    /// Next periodic interrupt time (ns).
    pub next_periodic_time: I64,
    /// Second unused run (3 × 8 bytes of removed fields).
    pub unused1: [u8; 24],
    /// Lost periodic ticks still to deliver (slew policy; version 2 on).
    pub irq_coalesced: U32,
    /// Periodic rate in clock ticks (derived from REG_A/REG_B; version 2 on).
    pub period: U32,
    /// Guest time base in seconds (version 3 on).
    pub base_rtc: U64,
    /// Time of the last update, in ns of the rtc clock (version 3 on).
    pub last_update: U64,
    /// Offset within the current second (version 3 on).
    pub offset: I64,
    /// Update-ended timer expiry (ns; all-ones when not armed; version 3 on).
    pub update_timer: U64,
    /// Next alarm time (ns; version 3 on).
    pub next_alarm_time: U64,
}

/// The state of the RTC: the body and its subsection field.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Rtc {
    /// The wire body.
    pub body: RtcBody,
    /// Periodic interrupts re-injected on ACK (subsection; 0 when absent).
    pub irq_reinject_on_ack_count: U16,
}

/// Checks the invariants in the module table (after the subsection was decoded); with
/// `strict` false, only the MUST rule.
fn validate(s: &Rtc, strict: bool) -> Result<(), Violation> {
    // MUST reject: an index outside CMOS RAM turns the guest's port-0x71 accesses into
    // intra-object out-of-bounds reads and writes (memory-safety class; docs/UNTRUSTED-INPUT.md
    // §4.1).
    if s.body.cmos_index as usize >= CMOS_SIZE {
        return Err(Violation {
            field: "cmos_index",
            expected: Expected::Below(CMOS_SIZE as u64),
            found: s.body.cmos_index as u64,
        });
    }
    if !strict {
        return Ok(());
    }
    // Should reject: guest cannot produce it (the device counts up to 20 and then stops).
    let n = s.irq_reinject_on_ack_count.get();
    if n > MAX_REINJECT_ON_ACK_COUNT {
        return Err(Violation {
            field: "irq_reinject_on_ack_count",
            expected: Expected::AtMost(MAX_REINJECT_ON_ACK_COUNT as u64),
            found: n as u64,
        });
    }
    Ok(())
}

/// Subsection `mc146818rtc/irq_reinject_on_ack_count` (version 1, minimum 1).
pub const REINJECT_VMSD: Vmsd = Vmsd::new(
    "mc146818rtc/irq_reinject_on_ack_count",
    1,
    1,
    core::mem::size_of::<Rtc>(),
)
.fields(&[field!(Rtc, irq_reinject_on_ack_count)]);

/// The description table of `mc146818rtc` (version 3, minimum 1).
pub const VMSD: Vmsd = Vmsd::new("mc146818rtc", 3, 1, core::mem::size_of::<Rtc>())
    .fields(&[
        field!(Rtc, body.cmos_data),
        field!(Rtc, body.cmos_index),
        field!(Rtc, body.unused0).unused(),
        field!(Rtc, body.periodic_timer).timer(),
        field!(Rtc, body.next_periodic_time),
        field!(Rtc, body.unused1).unused(),
        field!(Rtc, body.irq_coalesced).since(2),
        field!(Rtc, body.period).since(2),
        field!(Rtc, body.base_rtc).since(3),
        field!(Rtc, body.last_update).since(3),
        field!(Rtc, body.offset).since(3),
        field!(Rtc, body.update_timer).timer().since(3),
        field!(Rtc, body.next_alarm_time).since(3),
    ])
    .subsections(&[Subsection::new(
        &REINJECT_VMSD,
        pred!(Rtc, |s| s.irq_reinject_on_ack_count.get() != 0),
    )
    .absent(mutate!(Rtc, |s| s.irq_reinject_on_ack_count = U16::ZERO))])
    .validate(check!(Rtc, |s, _version| validate(s, true)));

/// [`VMSD`] enforcing only the MUST rule (`cmos_index`), for streams from producers known to
/// write unreachable but harmless values; load with [`vmstate::load_with`].
pub const PERMISSIVE_VMSD: Vmsd = VMSD.validate(check!(Rtc, |s, _version| validate(s, false)));

assert_layout!(Rtc, VMSD, body = RtcBody);
assert_layout!(Rtc, PERMISSIVE_VMSD, body = RtcBody);

impl vmstate::State for Rtc {
    const VMSD: &'static Vmsd = &VMSD;
}

impl Rtc {
    /// CMOS byte `index`, or `None` past the 128 bytes.
    pub fn cmos(&self, index: usize) -> Option<u8> {
        self.body.cmos_data.get(index).copied()
    }

    /// Sets CMOS byte `index`; returns false (and changes nothing) past the 128 bytes.
    pub fn set_cmos(&mut self, index: usize, value: u8) -> bool {
        match self.body.cmos_data.get_mut(index) {
            Some(b) => {
                *b = value;
                true
            }
            None => false,
        }
    }

    /// The CMOS index selected through port 0x70 (below 128 in any loaded state).
    pub const fn cmos_index(&self) -> u8 {
        self.body.cmos_index
    }

    /// The byte the guest reads from port 0x71 for the selected index, or `None` if the
    /// index is out of range (impossible after a successful load).
    pub fn selected(&self) -> Option<u8> {
        self.cmos(self.body.cmos_index as usize)
    }

    /// Whether the periodic interrupt timer is armed.
    pub fn periodic_timer_armed(&self) -> bool {
        self.body.periodic_timer.get() != TIMER_NOT_ARMED
    }

    /// Whether the update-ended timer is armed.
    pub fn update_timer_armed(&self) -> bool {
        self.body.update_timer.get() != TIMER_NOT_ARMED
    }
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;

    use super::fixtures::*;
    use super::*;
    use std::vec::Vec;
    use vmstate::ErrorKind;
    use zerocopy::FromZeros;

    const KEY: &str = "mc146818rtc (19)";
    const SUB: &str = "mc146818rtc/irq_reinject_on_ack_count";

    fn zero() -> Rtc {
        Rtc::new_zeroed()
    }

    fn real_body() -> Vec<u8> {
        section(BIOS, "mc146818rtc", 0).body.to_vec()
    }

    /// The real body followed by the reinject subsection carrying `count`.
    fn body_with_subsection(count: u16) -> Vec<u8> {
        let mut b = real_body();
        b.push(0x05);
        b.push(SUB.len() as u8);
        b.extend_from_slice(SUB.as_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b
    }

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            let s = round_trip(stream, "mc146818rtc", 0, zero());
            let b = &s.body;
            assert_eq!(
                b.cmos_data.to_vec(),
                parse_bytes(state_values(analysis, KEY, "cmos_data")[0])
            );
            assert_eq!(b.cmos_index as u64, state_hex(analysis, KEY, "cmos_index"));
            assert_eq!(
                b.periodic_timer.get().to_be_bytes().to_vec(),
                parse_bytes(state_values(analysis, KEY, "periodic_timer")[0])
            );
            assert_eq!(
                b.update_timer.get().to_be_bytes().to_vec(),
                parse_bytes(state_values(analysis, KEY, "update_timer")[0])
            );
            for (name, v) in [
                ("next_periodic_time", b.next_periodic_time.get() as u64),
                ("irq_coalesced", b.irq_coalesced.get() as u64),
                ("period", b.period.get() as u64),
                ("base_rtc", b.base_rtc.get()),
                ("last_update", b.last_update.get()),
                ("offset", b.offset.get() as u64),
                ("next_alarm_time", b.next_alarm_time.get()),
            ] {
                assert_eq!(v, state_hex(analysis, KEY, name), "{name}");
            }
            // Not time-dependent: the status registers SeaBIOS/QEMU set up, and the timers.
            assert_eq!(
                (s.cmos(REG_A), s.cmos(REG_B), s.cmos(REG_D)),
                (Some(0x26), Some(0x02), Some(0x80))
            );
            assert!(!s.periodic_timer_armed() && s.update_timer_armed());
            assert_eq!(s.irq_reinject_on_ack_count.get(), 0);
        }
        // SeaBIOS left index 0x0f (shutdown status) selected and the update flag in REG_C.
        let s = round_trip(BIOS, "mc146818rtc", 0, zero());
        assert_eq!((s.cmos_index(), s.cmos(REG_C)), (0x0f, Some(0x10)));
        assert_eq!(s.selected(), s.cmos(0x0f));
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "mc146818rtc", 0, zero());
            assert_eq!(
                our_device_json("mc146818rtc", 0, &s),
                qemu_device_json(stream, "mc146818rtc", 0)
            );
        }
    }

    #[test]
    fn old_version_bodies_decode() {
        let body = real_body();
        let mut dest = zero();
        dest.body.period = U32::new(7);
        dest.body.base_rtc = U64::new(99);
        // Version 1: 197 bytes, no irq_coalesced/period and nothing of version 3.
        let mut s = dest;
        vmstate::load(&mut s, 1, &body[..197], 0).unwrap();
        assert_eq!(s.body.cmos_data[..], body[..128]);
        assert_eq!((s.body.period.get(), s.body.base_rtc.get()), (7, 99));
        // Version 2: 205 bytes, with irq_coalesced/period.
        let mut s = dest;
        vmstate::load(&mut s, 2, &body[..205], 0).unwrap();
        assert_eq!(s.body.period.get(), 0);
        assert_eq!(s.body.base_rtc.get(), 99);
        // A version-2 header on a version-3 body leaves bytes over.
        let e = vmstate::load(&mut s, 2, &body, 0).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::MissingFooter { .. }));
        assert_eq!(e.offset, 205);
        // Below the minimum.
        let e = vmstate::load(&mut s, 0, &body[..197], 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::VersionTooOld { found: 0, min: 1 });
    }

    #[test]
    fn reinject_subsection_round_trips_and_defaults_to_zero() {
        let body = body_with_subsection(20);
        let mut s = zero();
        vmstate::load(&mut s, 3, &body, 0).unwrap();
        assert_eq!(s.irq_reinject_on_ack_count.get(), 20);
        let mut out = [0xa5u8; 512];
        let n = vmstate::encode_body_into(&s, &mut out).unwrap();
        assert_eq!(&out[..n], &body[..]);
        // A body without the subsection resets the count (QEMU would keep a stale value).
        vmstate::load(&mut s, 3, &real_body(), 0).unwrap();
        assert_eq!(s.irq_reinject_on_ack_count.get(), 0);
        // Present with 0 is harmless and accepted, though a QEMU writer never sends it.
        vmstate::load(&mut s, 3, &body_with_subsection(0), 0).unwrap();
        assert_eq!(s.irq_reinject_on_ack_count.get(), 0);
    }

    #[test]
    fn cmos_index_outside_cmos_is_rejected() {
        let before = round_trip(BIOS, "mc146818rtc", 0, zero());
        for bad in [128u8, 0x80 | 0x0f, 255] {
            let mut body = real_body();
            body[128] = bad;
            let mut s = before;
            let e = vmstate::load(&mut s, 3, &body, 4000).unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::Invalid {
                    expected: Expected::Below(128),
                    found: bad as u64
                }
            );
            assert_eq!((e.field, e.offset), (Some("cmos_index"), 4128));
            assert_eq!(s.as_bytes(), before.as_bytes());
            // A MUST rule: the permissive table enforces it too.
            let r = vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 3, &body, 4000);
            assert_eq!(r.unwrap_err(), e);
            assert_eq!(s, before);
        }
        // The rule holds in every version.
        let mut body = real_body();
        body[128] = 200;
        let mut s = before;
        let e = vmstate::load(&mut s, 1, &body[..197], 0).unwrap_err();
        assert_eq!((e.field, e.offset), (Some("cmos_index"), 128));
        assert_eq!(s, before);
    }

    #[test]
    fn reinject_count_above_20_is_rejected() {
        let before = zero();
        let body = body_with_subsection(21);
        let mut s = before;
        let e = vmstate::load(&mut s, 3, &body, 0).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::AtMost(20),
                found: 21
            }
        );
        assert_eq!(e.field, Some("irq_reinject_on_ack_count"));
        // The field is the subsection body's first byte: after the 245-byte body and the
        // 1 + 1 + 37 + 4-byte subsection header.
        assert_eq!(e.offset, 245 + 2 + SUB.len() + 4);
        assert_eq!(s.as_bytes(), before.as_bytes());
        // A "should reject" rule: the permissive table loads it.
        vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 3, &body, 0).unwrap();
        assert_eq!(s.irq_reinject_on_ack_count.get(), 21);
    }

    #[test]
    fn odd_reachable_states_load() {
        let mut body = real_body();
        body[..10].fill(0xff); // non-BCD time bytes
        body[REG_C] = 0xff;
        body[127] = 0x5a;
        body[128] = 127;
        body[129..157].fill(0x11); // unused content is ignored
        body[197..205].fill(0xff); // irq_coalesced and period
        body[205..245].fill(0x80); // clocks and timers
        let mut s = zero();
        vmstate::load(&mut s, 3, &body, 0).unwrap();
        assert_eq!(
            (s.cmos(0), s.cmos_index(), s.selected()),
            (Some(0xff), 127, Some(0x5a))
        );
        assert_eq!(s.body.unused0, [0; 28]);
        assert_eq!(s.body.irq_coalesced.get(), u32::MAX);
        assert_eq!(s.body.offset.get(), i64::from_be_bytes([0x80; 8]));
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        let body = real_body();
        let before = round_trip(NODEFAULTS, "mc146818rtc", 0, zero());
        every_prefix_fails(&before, 3, &body);
        every_prefix_fails(&before, 2, &body[..205]);
        every_prefix_fails(&before, 1, &body[..197]);
        // With the subsection, the only complete prefix is the body without it.
        let full = body_with_subsection(3);
        for len in 0..full.len() {
            let mut s = before;
            let r = vmstate::load(&mut s, 3, &full[..len], 0);
            if len == 245 {
                r.unwrap();
            } else {
                r.unwrap_err();
                assert_eq!(s, before);
            }
        }
    }

    #[test]
    fn cmos_accessors_are_bounded() {
        let mut s = zero();
        assert!(s.set_cmos(127, 1));
        assert!(!s.set_cmos(128, 1));
        assert_eq!((s.cmos(127), s.cmos(128)), (Some(1), None));
        s.body.cmos_index = 200; // only reachable by direct mutation, never by a load
        assert_eq!(s.selected(), None);
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        fn fix(b: &mut [u8]) {
            b[128] &= 0x7f;
        }
        let ok = random_bodies_round_trip(zero(), 245, &[(129, 157), (173, 197)], fix, 256);
        assert!(
            ok > 64,
            "about half of the raw bodies have a valid index: {ok}"
        );
    }
}
