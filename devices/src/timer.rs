//! `timer`: the guest clock offsets (QEMU 7.2 `softmmu/cpu-timers.c`, `vmstate_timers`;
//! docs/V3-WIRE.md §17).
//!
//! idstr `timer`, instance 0, **version 2, minimum 1** (QEMU 7.2 declares
//! `minimum_version_id = 1`). Body: `cpu_ticks_offset` (i64), 8 unused bytes (formerly
//! `dummy`), `cpu_clock_offset` (i64, since version 2): 24 bytes, 16 in version 1.
//!
//! Subsections: QEMU sends `timer/icount` (with its own nested subsections) only when icount
//! is enabled. This model does not describe icount, so a stream carrying `timer/icount` fails
//! to load with [`vmstate::ErrorKind::UnknownSubsection`] rather than silently dropping the
//! instruction counter state.
//!
//! Invariants: none. Both offsets are arbitrary 64-bit clock offsets that QEMU adds to host
//! clock readings; a consumer must use wrapping arithmetic (signed overflow is UB in C and a
//! panic in debug Rust). The unused bytes are read and ignored, and written as zeros.

use vmstate::{Vmsd, assert_layout, field};
use zerocopy::byteorder::big_endian::I64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The `timer` body at version 2, which is also the whole state (a zero-copy view).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Timers {
    /// Offset added to the host tick counter to give the guest's `cpu_get_ticks`.
    pub cpu_ticks_offset: I64,
    /// Unused bytes (always written as zeros; their content is ignored on load).
    pub unused: [u8; 8],
    /// Offset of the virtual clock (version 2 on).
    pub cpu_clock_offset: I64,
}

/// The description table of `timer` (version 2, minimum 1).
pub const VMSD: Vmsd = Vmsd::new("timer", 2, 1, core::mem::size_of::<Timers>()).fields(&[
    field!(Timers, cpu_ticks_offset),
    field!(Timers, unused).unused(),
    field!(Timers, cpu_clock_offset).since(2),
]);

assert_layout!(Timers, VMSD, wire);

impl vmstate::State for Timers {
    const VMSD: &'static Vmsd = &VMSD;
}

impl Timers {
    /// Both offsets zero (a VM whose clocks never ran).
    pub const DEFAULT: Timers = Timers {
        cpu_ticks_offset: I64::ZERO,
        unused: [0; 8],
        cpu_clock_offset: I64::ZERO,
    };
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use vmstate::ErrorKind;

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            let s = round_trip(stream, "timer", 0, Timers::DEFAULT);
            let key = "timer (0)";
            assert_eq!(
                s.cpu_ticks_offset.get() as u64,
                state_hex(analysis, key, "cpu_ticks_offset")
            );
            assert_eq!(
                s.cpu_clock_offset.get() as u64,
                state_hex(analysis, key, "cpu_clock_offset")
            );
        }
        // The BIOS run moved the clocks; the -S run did not.
        let s = round_trip(BIOS, "timer", 0, Timers::DEFAULT);
        assert_eq!(s.cpu_ticks_offset.get(), 0xa61e0311);
        assert_eq!(s.cpu_clock_offset.get(), 0x3ffc69b2);
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "timer", 0, Timers::DEFAULT);
            assert_eq!(
                our_device_json("timer", 0, &s),
                qemu_device_json(stream, "timer", 0)
            );
        }
    }

    #[test]
    fn version_1_body_has_no_clock_offset() {
        let rec = section(BIOS, "timer", 0);
        let mut s = Timers::DEFAULT;
        s.cpu_clock_offset = I64::new(-5);
        vmstate::load(&mut s, 1, &rec.body[..16], 0).unwrap();
        assert_eq!(s.cpu_ticks_offset.get(), 0xa61e0311);
        // Not on the wire in version 1: the destination keeps its value, as QEMU does.
        assert_eq!(s.cpu_clock_offset.get(), -5);
        // A version-1 body with the version-2 field appended has a byte too many.
        let e = vmstate::load(&mut s, 1, rec.body, 0).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::MissingFooter { .. }));
        assert_eq!(e.offset, 16);
    }

    #[test]
    fn unused_bytes_are_ignored_and_written_as_zeros() {
        let mut body = [0u8; 24];
        body[7] = 1;
        body[8..16].fill(0xee);
        let mut s = Timers::DEFAULT;
        vmstate::load(&mut s, 2, &body, 0).unwrap();
        assert_eq!(s.unused, [0; 8]);
        let mut out = [0xa5u8; 24];
        assert_eq!(vmstate::encode_body_into(&s, &mut out).unwrap(), 24);
        body[8..16].fill(0);
        assert_eq!(out, body);
    }

    #[test]
    fn icount_subsection_is_refused() {
        let mut body = [0u8; 24 + 1 + 1 + 12 + 4 + 16];
        body[24] = 0x05;
        body[25] = 12;
        body[26..38].copy_from_slice(b"timer/icount");
        body[41] = 1;
        let before = Timers::DEFAULT;
        let mut s = before;
        let e = vmstate::load(&mut s, 2, &body, 100).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::UnknownSubsection { .. }));
        assert_eq!(e.offset, 124);
        assert_eq!(s, before);
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        let rec = section(BIOS, "timer", 0);
        every_prefix_fails(&Timers::DEFAULT, 2, rec.body);
        every_prefix_fails(&Timers::DEFAULT, 1, &rec.body[..16]);
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        let ok = random_bodies_round_trip(Timers::DEFAULT, 24, &[(8, 16)], |_| {}, 64);
        assert_eq!(ok, 64);
    }
}
