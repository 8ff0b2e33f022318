//! `ioapic`: the I/O APIC (QEMU 7.2 `hw/intc/ioapic_common.c`, `hw/intc/ioapic.c`; format
//! §16.5, docs/UNTRUSTED-INPUT.md §4.5).
//!
//! idstr `ioapic`, instance 0, **version 3, minimum 1**. Body: `id`, `ioregsel`, 8 unused bytes
//! (since version 2, "to account for qemu-kvm's v2 format"), `irr` (since version 2) and the 24
//! redirection entries: 206 bytes (194 in version 1). No subsections.
//!
//! # Invariants checked on load
//!
//! QEMU 7.2 checks nothing; its memory safety comes from the use site, which computes the
//! redirection index `(ioregsel - 0x10) >> 1` and bounds it by 24.
//!
//! | field | accepted | why |
//! |---|---|---|
//! | `ioregsel` | **any byte** | accept: the guest writes it directly (docs/UNTRUSTED-INPUT.md §3.2); the bound lives at the use site, see [`Ioapic::selected_pin`] |
//! | `id` | 0..=15 | should reject: the guest stores `(val >> 24) & 0xf` |
//! | `irr` | bits 0..=23 | should reject: only the 24 pins can raise a request |
//! | `ioredtbl[24]` | any | accept: writable bits are guest-chosen; a stuck remote IRR is a guest-level DoS only, and QEMU does not normalise it on load either |
//! | unused (v2+) | any | ignored on load, written as zeros |
//!
//! [`VMSD`] enforces every rule; [`PERMISSIVE_VMSD`] none (load with it through
//! [`vmstate::load_with`]).
//!
//! Kernel anchor for trusting this state: CVE-2013-1798 (KVM IOAPIC redirection index).

use vmstate::{Expected, Violation, Vmsd, assert_layout, check, field};
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Number of redirection table entries (interrupt input pins).
pub const NUM_PINS: usize = 24;
/// The first `ioregsel` value that selects a redirection table word.
pub const REG_REDTBL_BASE: u8 = 0x10;
/// IRR bits above the last pin.
const IRR_RESERVED: u32 = !((1 << NUM_PINS) - 1);
/// Redirection entry bit 16: the pin is masked.
pub const REDIR_MASKED: u64 = 1 << 16;

/// The `ioapic` body at version 3, which is also the whole state (a zero-copy view).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Ioapic {
    /// APIC id (0..=15).
    pub id: u8,
    /// Register select (any byte).
    pub ioregsel: u8,
    /// Unused bytes (version 2 on; ignored on load, written as zeros).
    pub unused: [u8; 8],
    /// Interrupt request register, one bit per pin (version 2 on).
    pub irr: U32,
    /// Redirection table.
    pub ioredtbl: [U64; NUM_PINS],
}

/// Checks the invariants in the module table (all of them "should reject"; none with `strict`
/// false).
fn validate(s: &Ioapic, strict: bool) -> Result<(), Violation> {
    if !strict {
        return Ok(());
    }
    // Should reject (guest cannot produce it: the id register stores 4 bits).
    if s.id > 15 {
        return Err(Violation {
            field: "id",
            expected: Expected::AtMost(15),
            found: s.id as u64,
        });
    }
    // Should reject (guest cannot produce it: only pins 0..=23 set IRR bits).
    let irr = s.irr.get();
    if irr & IRR_RESERVED != 0 {
        return Err(Violation {
            field: "irr",
            expected: Expected::MaskClear(IRR_RESERVED as u64),
            found: irr as u64,
        });
    }
    Ok(())
}

/// The description table of `ioapic` (version 3, minimum 1).
pub const VMSD: Vmsd = Vmsd::new("ioapic", 3, 1, core::mem::size_of::<Ioapic>())
    .fields(&[
        field!(Ioapic, id),
        field!(Ioapic, ioregsel),
        field!(Ioapic, unused).unused().since(2),
        field!(Ioapic, irr).since(2),
        field!(Ioapic, ioredtbl),
    ])
    .validate(check!(Ioapic, |s, _version| validate(s, true)));

/// [`VMSD`] without the "should reject" rules (the IOAPIC has no MUST rule), for streams from
/// producers known to write unreachable but harmless values; load with
/// [`vmstate::load_with`].
pub const PERMISSIVE_VMSD: Vmsd = VMSD.validate(check!(Ioapic, |s, _version| validate(s, false)));

assert_layout!(Ioapic, VMSD, wire);
assert_layout!(Ioapic, PERMISSIVE_VMSD, wire);

impl vmstate::State for Ioapic {
    const VMSD: &'static Vmsd = &VMSD;
}

impl Ioapic {
    /// The reset state (QEMU's `ioapic_reset_common`): id, register select and IRR 0, every
    /// pin masked.
    pub const DEFAULT: Ioapic = Ioapic {
        id: 0,
        ioregsel: 0,
        unused: [0; 8],
        irr: U32::ZERO,
        ioredtbl: [U64::new(REDIR_MASKED); NUM_PINS],
    };

    /// The redirection entry of `pin`, or `None` past the last pin.
    pub fn redirection(&self, pin: usize) -> Option<u64> {
        self.ioredtbl.get(pin).map(|e| e.get())
    }

    /// The pin whose redirection entry `ioregsel` selects, with whether it selects the high
    /// word; `None` when it selects another register or lies past the table. This is the
    /// use-site bound that makes any loaded `ioregsel` safe.
    pub const fn selected_pin(&self) -> Option<(usize, bool)> {
        match self.ioregsel.checked_sub(REG_REDTBL_BASE) {
            Some(d) if ((d >> 1) as usize) < NUM_PINS => Some(((d >> 1) as usize, d & 1 != 0)),
            _ => None,
        }
    }
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use vmstate::ErrorKind;

    const KEY: &str = "ioapic (17)";

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            let s = round_trip(stream, "ioapic", 0, Ioapic::DEFAULT);
            assert_eq!(s.id as u64, state_hex(analysis, KEY, "id"));
            assert_eq!(s.ioregsel as u64, state_hex(analysis, KEY, "ioregsel"));
            assert_eq!(s.irr.get() as u64, state_hex(analysis, KEY, "irr"));
            let table = state_array(analysis, KEY, "ioredtbl");
            assert_eq!(table.len(), NUM_PINS);
            for (pin, v) in table.iter().enumerate() {
                assert_eq!(s.redirection(pin), Some(parse_hex(v)));
            }
            // Neither run programmed the IOAPIC: every pin is still masked.
            assert_eq!(s, Ioapic::DEFAULT);
        }
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "ioapic", 0, Ioapic::DEFAULT);
            assert_eq!(
                our_device_json("ioapic", 0, &s),
                qemu_device_json(stream, "ioapic", 0)
            );
        }
    }

    fn real_body() -> [u8; 206] {
        let mut b = [0u8; 206];
        b.copy_from_slice(section(BIOS, "ioapic", 0).body);
        b
    }

    #[test]
    fn version_1_body_has_no_unused_bytes_and_no_irr() {
        let v3 = real_body();
        let mut v1 = [0u8; 194];
        v1[..2].copy_from_slice(&v3[..2]);
        v1[2..].copy_from_slice(&v3[14..]);
        v1[2 + 8 * 5..2 + 8 * 6].copy_from_slice(&0x1234_u64.to_be_bytes());
        let mut s = Ioapic::DEFAULT;
        s.irr = U32::new(0x10);
        vmstate::load(&mut s, 1, &v1, 0).unwrap();
        assert_eq!(s.redirection(5), Some(0x1234));
        // Not on the wire in version 1: the destination keeps its IRR, as QEMU does.
        assert_eq!(s.irr.get(), 0x10);
        // Version 2 has the same layout as version 3.
        let mut s2 = Ioapic::DEFAULT;
        vmstate::load(&mut s2, 2, &v3, 0).unwrap();
        assert_eq!(s2, Ioapic::DEFAULT);
    }

    #[test]
    fn any_ioregsel_loads_and_the_use_site_bounds_it() {
        let mut body = real_body();
        for sel in 0..=255u8 {
            body[1] = sel;
            let mut s = Ioapic::DEFAULT;
            vmstate::load(&mut s, 3, &body, 0).unwrap();
            assert_eq!(s.ioregsel, sel);
            match s.selected_pin() {
                Some((pin, high)) => {
                    assert!((0x10..0x40).contains(&sel));
                    assert_eq!((pin, high), (((sel - 0x10) >> 1) as usize, sel & 1 == 1));
                    assert!(s.redirection(pin).is_some());
                }
                None => assert!(!(0x10..0x40).contains(&sel)),
            }
        }
    }

    #[test]
    fn odd_reachable_states_load() {
        let mut body = real_body();
        body[0] = 15;
        body[2..10].fill(0x77); // unused content is ignored
        body[10..14].copy_from_slice(&0x00ff_ffffu32.to_be_bytes());
        body[14..].fill(0xff); // remote IRR, delivery status and all: accepted
        let mut s = Ioapic::DEFAULT;
        vmstate::load(&mut s, 3, &body, 0).unwrap();
        assert_eq!((s.id, s.irr.get(), s.unused), (15, 0x00ff_ffff, [0; 8]));
        assert_eq!(s.redirection(23), Some(u64::MAX));
    }

    #[test]
    fn each_rule_rejects_with_field_and_offset_and_keeps_state() {
        let mut before = Ioapic::DEFAULT;
        before.ioregsel = 0x12;
        let cases: &[(usize, &[u8], &str, Expected, u64)] = &[
            (0, &[16], "id", Expected::AtMost(15), 16),
            (0, &[0xff], "id", Expected::AtMost(15), 0xff),
            (
                10,
                &[0x01, 0, 0, 0],
                "irr",
                Expected::MaskClear(0xff00_0000),
                0x0100_0000,
            ),
        ];
        for &(at, bytes, field, expected, found) in cases {
            let mut body = real_body();
            body[at..at + bytes.len()].copy_from_slice(bytes);
            let mut s = before;
            let e = vmstate::load(&mut s, 3, &body, 300).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid { expected, found });
            assert_eq!((e.field, e.offset), (Some(field), 300 + at));
            assert_eq!(s.as_bytes(), before.as_bytes());
            // No MUST rule: the permissive table loads it.
            vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 3, &body, 300).unwrap();
            assert_eq!(&s.as_bytes()[at..at + bytes.len()], bytes);
        }
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        let body = real_body();
        every_prefix_fails(&Ioapic::DEFAULT, 3, &body);
        let mut v1 = [0u8; 194];
        v1[..2].copy_from_slice(&body[..2]);
        v1[2..].copy_from_slice(&body[14..]);
        every_prefix_fails(&Ioapic::DEFAULT, 1, &v1);
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        fn fix(b: &mut [u8]) {
            b[0] &= 0x0f;
            b[10] = 0;
        }
        random_bodies_round_trip(Ioapic::DEFAULT, 206, &[(2, 10)], fix, 256);
    }
}
