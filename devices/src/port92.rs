//! `port92`: System Control Port A (A20 gate, fast reset) of the pc machine
//! (QEMU 7.2 `hw/i386/port92.c`; docs/V3-WIRE.md §16.8, docs/UNTRUSTED-INPUT.md §4.7).
//!
//! idstr `port92`, instance 0, version 1 (minimum 1). The body is the single byte `outport`;
//! there are no subsections.
//!
//! Invariants: none. The guest's port write stores the whole byte (`outport = val`), so every
//! value is reachable and must load (docs/UNTRUSTED-INPUT.md §3.2); nothing indexes with it.

use vmstate::{Vmsd, assert_layout, field};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bit 1 of `outport`: the A20 gate.
pub const A20: u8 = 1 << 1;
/// Bit 0 of `outport`: fast reset (a 0→1 write resets the machine).
pub const RESET: u8 = 1 << 0;

/// The `port92` body, which is also the whole state (a zero-copy view of the 1-byte body).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Port92 {
    /// The last byte the guest wrote to port 0x92.
    pub outport: u8,
}

/// The description table of `port92` (version 1, minimum 1).
pub const VMSD: Vmsd =
    Vmsd::new("port92", 1, 1, core::mem::size_of::<Port92>()).fields(&[field!(Port92, outport)]);

assert_layout!(Port92, VMSD, wire);

impl vmstate::State for Port92 {
    const VMSD: &'static Vmsd = &VMSD;
}

impl Port92 {
    /// The power-on state: a new device holds 0 (QEMU's reset only clears the fast-reset bit).
    pub const DEFAULT: Port92 = Port92 { outport: 0 };

    /// Whether the A20 gate is open.
    pub const fn a20(&self) -> bool {
        self.outport & A20 != 0
    }

    /// Opens or closes the A20 gate, keeping the other bits.
    pub fn set_a20(&mut self, on: bool) {
        if on {
            self.outport |= A20;
        } else {
            self.outport &= !A20;
        }
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
            let s = round_trip(stream, "port92", 0, Port92::DEFAULT);
            let want = state_hex(analysis, "port92 (27)", "outport");
            assert_eq!(s.outport as u64, want);
        }
        // SeaBIOS opened the A20 gate through port 0x92.
        let s = round_trip(BIOS, "port92", 0, Port92::DEFAULT);
        assert!(s.a20());
        let s = round_trip(NODEFAULTS, "port92", 0, Port92::DEFAULT);
        assert!(!s.a20());
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "port92", 0, Port92::DEFAULT);
            assert_eq!(
                our_device_json("port92", 0, &s),
                qemu_device_json(stream, "port92", 0)
            );
        }
    }

    #[test]
    fn every_byte_is_accepted() {
        for b in 0..=255u8 {
            let mut s = Port92::DEFAULT;
            vmstate::load(&mut s, 1, &[b], 0).unwrap();
            assert_eq!(s.outport, b);
        }
    }

    #[test]
    fn truncated_and_overlong_bodies_fail_without_changing_state() {
        let before = Port92 { outport: 0x02 };
        every_prefix_fails(&before, 1, &[0x03]);
        let mut s = before;
        let e = vmstate::load(&mut s, 1, &[0x03, 0x00], 10).unwrap_err();
        assert_eq!(e.kind, vmstate::ErrorKind::MissingFooter { found: 0 });
        assert_eq!(e.offset, 11);
        assert_eq!(s, before);
        let e = vmstate::load(&mut s, 2, &[0x03], 10).unwrap_err();
        assert_eq!(
            e.kind,
            vmstate::ErrorKind::VersionTooNew { found: 2, max: 1 }
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a20_accessors() {
        let mut s = Port92 { outport: 0x81 };
        s.set_a20(true);
        assert_eq!(s.outport, 0x83);
        assert!(s.a20());
        s.set_a20(false);
        assert_eq!(s.outport, 0x81);
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        let ok = random_bodies_round_trip(Port92::DEFAULT, 1, &[], |_| {}, 64);
        assert_eq!(ok, 64);
    }
}
