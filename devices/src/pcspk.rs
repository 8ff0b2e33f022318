//! `pcspk`: the PC speaker (QEMU 7.2 `hw/audio/pcspk.c`; docs/V3-WIRE.md §16.7,
//! docs/UNTRUSTED-INPUT.md §4.7).
//!
//! idstr `pcspk`, instance 0, version 1 (minimum 1), a 2-byte body, no subsections.
//!
//! The whole section is optional: its top-level `needed` is the device's `migrate` property
//! (default on; `pc_compat_2_7` turns it off), so a stream for an old machine type simply has no
//! `pcspk` section. That is the stream's business, not the body's.
//!
//! Invariants: none. `data_on` is written as `(val >> 1) & 1` by the guest but only ever used
//! as a truth value, and `dummy_refresh_clock` is a toggling read-back bit; QEMU 7.2 checks
//! neither and no value can cause harm, so every byte is accepted (docs/UNTRUSTED-INPUT.md §4.7).

use vmstate::{Vmsd, assert_layout, field};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The `pcspk` body, which is also the whole state (a zero-copy view of the 2-byte body).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Pcspk {
    /// Speaker data enable (port 0x61 bit 1).
    pub data_on: u8,
    /// The refresh-clock bit read back through port 0x61 bit 4.
    pub dummy_refresh_clock: u8,
}

/// The description table of `pcspk` (version 1, minimum 1).
pub const VMSD: Vmsd = Vmsd::new("pcspk", 1, 1, core::mem::size_of::<Pcspk>())
    .fields(&[field!(Pcspk, data_on), field!(Pcspk, dummy_refresh_clock)]);

assert_layout!(Pcspk, VMSD, wire);

impl vmstate::State for Pcspk {
    const VMSD: &'static Vmsd = &VMSD;
}

impl Pcspk {
    /// The power-on state (both bytes 0).
    pub const DEFAULT: Pcspk = Pcspk {
        data_on: 0,
        dummy_refresh_clock: 0,
    };

    /// Whether the speaker data line is enabled (any nonzero byte counts, as in QEMU).
    pub const fn speaker_on(&self) -> bool {
        self.data_on != 0
    }
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            let s = round_trip(stream, "pcspk", 0, Pcspk::DEFAULT);
            let on = state_hex(analysis, "pcspk (21)", "data_on");
            let refresh = state_hex(analysis, "pcspk (21)", "dummy_refresh_clock");
            assert_eq!(
                (s.data_on as u64, s.dummy_refresh_clock as u64),
                (on, refresh)
            );
            assert!(!s.speaker_on());
        }
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "pcspk", 0, Pcspk::DEFAULT);
            assert_eq!(
                our_device_json("pcspk", 0, &s),
                qemu_device_json(stream, "pcspk", 0)
            );
        }
    }

    #[test]
    fn any_bytes_are_accepted() {
        for b in [0u8, 1, 2, 0x7f, 0xff] {
            let mut s = Pcspk::DEFAULT;
            vmstate::load(&mut s, 1, &[b, b ^ 0xff], 0).unwrap();
            assert_eq!((s.data_on, s.dummy_refresh_clock), (b, b ^ 0xff));
        }
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        every_prefix_fails(
            &Pcspk {
                data_on: 1,
                dummy_refresh_clock: 1,
            },
            1,
            &[0, 0],
        );
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        let ok = random_bodies_round_trip(Pcspk::DEFAULT, 2, &[], |_| {}, 64);
        assert_eq!(ok, 64);
    }
}
