//! `i8259`: the two cascaded 8259A programmable interrupt controllers (QEMU 7.2
//! `hw/intc/i8259_common.c`, `hw/intc/i8259.c`; docs/V3-WIRE.md §16.2, docs/UNTRUSTED-INPUT.md
//! §4.2).
//!
//! idstr `i8259`, instance 0 (master, I/O base 0x20) and instance 1 (slave, 0xa0), version 1
//! (minimum 1). The body is 16 single bytes. QEMU 8.0 added the subsection `i8259/ltim`
//! (version 1, one byte `ltim`: ICW1's level-triggered mode bit, stored as `val & 8`), sent
//! only when `ltim != 0`. [`VMSD`] is QEMU 10.0's table (with the subsection), [`VMSD_7_2`]
//! QEMU 7.2's (without it): a QEMU 7.2 destination refuses a stream that carries the
//! subsection ("unknown subsection i8259/ltim"), as QEMU 7.2 itself does (`-ENOENT` from
//! `vmstate_subsection_load`). Both read every body without the subsection identically.
//!
//! The state carries one destination configuration byte that is not on the wire, `elcr_mask`
//! (the edge/level control bits the chip implements: 0xf8 on the master, 0xde on the slave);
//! start from [`Pic::MASTER`] or [`Pic::SLAVE`].
//!
//! # Invariants checked on load
//!
//! QEMU 7.2 checks nothing: its userspace model stays safe by masking at every use, and the KVM
//! model hands every byte to `KVM_SET_IRQCHIP`. This model rejects what a guest cannot produce
//! through the port interface, naming the class each rule guards against:
//!
//! | field | accepted | why |
//! |---|---|---|
//! | `priority_add` | 0..=7 | MUST: a priority rotation index (out-of-bounds index if used unmasked) |
//! | `irq_base` | multiple of 8 | should reject: the guest stores `val & 0xf8`; an unaligned base makes `irq_base + irq` overflow the 8-bit vector |
//! | `init_state` | 0..=3 | should reject: selects the ICW sequence step (state-machine dispatch) |
//! | `single_mode` | 0 or 2 | accept 2: the guest stores `val & 2` (docs/UNTRUSTED-INPUT.md §3.2); others should reject |
//! | flag bytes | 0 or 1 | should reject: the guest stores single bits |
//! | `elcr` | bits inside `elcr_mask` | should reject: the guest's write is masked |
//! | `last_irr`, `irr`, `imr`, `isr` | any | accept: 8 independent line bits |
//! | `ltim` (subsection) | 0 or 8 | should reject: the guest stores `val & 8` (QEMU 10.0 `pic_ioport_write`); the subsection is sent only when non-zero |
//!
//! [`VMSD`] enforces every rule. [`PERMISSIVE_VMSD`] is the same table enforcing only the MUST
//! rule; load with it through [`vmstate::load_with`].

use vmstate::schema::{NotMigrated, Subsection};
use vmstate::{Expected, Violation, Vmsd, assert_layout, check, field, mutate, not_migrated, pred};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The `i8259` body: 16 bytes in wire order (a zero-copy view of a section body).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct PicBody {
    /// Input line levels seen at the last edge check.
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Priority rotation: the line with the highest priority (0..=7).
    pub priority_add: u8,
    /// Vector base (ICW2), a multiple of 8.
    pub irq_base: u8,
    /// OCW3 read register select: 0 reads IRR, 1 reads ISR.
    pub read_reg_select: u8,
    /// OCW3 poll command pending (0/1).
    pub poll: u8,
    /// OCW3 special mask mode (0/1).
    pub special_mask: u8,
    /// Initialization sequence step (0 = ready, 1..=3 = expecting ICW2..ICW4).
    pub init_state: u8,
    /// ICW4 automatic end of interrupt (0/1).
    pub auto_eoi: u8,
    /// Rotate on automatic EOI (0/1).
    pub rotate_on_auto_eoi: u8,
    /// ICW4 special fully nested mode (0/1).
    pub special_fully_nested_mode: u8,
    /// ICW1 "ICW4 needed" (0/1).
    pub init4: u8,
    /// ICW1 single mode, stored as the raw bit: 0 or **2**.
    pub single_mode: u8,
    /// Edge/level control register (port 0x4d0/0x4d1).
    pub elcr: u8,
}

/// The state of one PIC: the body and the destination's `elcr_mask` configuration.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Pic {
    /// The wire body.
    pub body: PicBody,
    /// ELCR bits this chip implements (configuration, not on the wire): 0xf8 master, 0xde
    /// slave. A zeroed state therefore accepts only `elcr == 0`.
    pub elcr_mask: u8,
    /// ICW1 level-triggered mode (LTIM), as QEMU ≥ 8.0 stores it: 0 or 8 (subsection
    /// `i8259/ltim`; QEMU 7.2 does not migrate it).
    pub ltim: u8,
}

/// The value QEMU stores for ICW1's LTIM bit (`val & 8`).
pub const LTIM: u8 = 8;

/// Checks the body against the invariants in the module table, in wire order; with `strict`
/// false, only the MUST rule.
fn validate(s: &Pic, strict: bool) -> Result<(), Violation> {
    let b = &s.body;
    // MUST reject: `priority_add` indexes the 8-entry priority rotation; a value above 7 is an
    // out-of-bounds index for any model (or kernel) that does not mask it.
    if b.priority_add > 7 {
        return Err(bad("priority_add", Expected::AtMost(7), b.priority_add));
    }
    if !strict {
        return Ok(());
    }
    // Should reject (guest cannot produce it: ICW2 is stored as `val & 0xf8`): an unaligned
    // base makes the delivered vector `irq_base + irq` wrap past 255.
    if b.irq_base & 7 != 0 {
        return Err(bad("irq_base", Expected::MaskClear(7), b.irq_base));
    }
    // Should reject (guest cannot produce it): OCW3/ICW bits stored as single bits.
    for (name, v) in [
        ("read_reg_select", b.read_reg_select),
        ("poll", b.poll),
        ("special_mask", b.special_mask),
    ] {
        if v > 1 {
            return Err(bad(name, Expected::AtMost(1), v));
        }
    }
    // Should reject (guest cannot produce it): `init_state` selects the step of the ICW
    // sequence; values above 3 are outside the state machine (a dispatch enum).
    if b.init_state > 3 {
        return Err(bad("init_state", Expected::AtMost(3), b.init_state));
    }
    for (name, v) in [
        ("auto_eoi", b.auto_eoi),
        ("rotate_on_auto_eoi", b.rotate_on_auto_eoi),
        ("special_fully_nested_mode", b.special_fully_nested_mode),
        ("init4", b.init4),
    ] {
        if v > 1 {
            return Err(bad(name, Expected::AtMost(1), v));
        }
    }
    // Accept 0 and 2 (the guest stores `val & 2`, docs/UNTRUSTED-INPUT.md §3.2); anything else
    // should reject: guest cannot produce it.
    if b.single_mode != 0 && b.single_mode != 2 {
        return Err(bad("single_mode", Expected::OneOf(&[0, 2]), b.single_mode));
    }
    // Should reject (guest cannot produce it: ELCR writes are masked with `elcr_mask`).
    if b.elcr & !s.elcr_mask != 0 {
        return Err(bad(
            "elcr",
            Expected::MaskClear(!s.elcr_mask as u64),
            b.elcr,
        ));
    }
    Ok(())
}

fn bad(field: &'static str, expected: Expected, found: u8) -> Violation {
    Violation {
        field,
        expected,
        found: found as u64,
    }
}

const LTIM_VMSD: Vmsd = Vmsd::new("i8259/ltim", 1, 1, core::mem::size_of::<Pic>())
    .fields(&[field!(Pic, ltim)])
    // Should reject (guest cannot produce it: ICW1 stores `val & 8`); the subsection is sent
    // only when the value is non-zero.
    .validate(check!(Pic, |s, _version| match s.ltim {
        LTIM => Ok(()),
        v => Err(bad("ltim", Expected::OneOf(&[LTIM as u64]), v)),
    }));

const SUBSECTIONS: &[Subsection] =
    &[Subsection::new(&LTIM_VMSD, pred!(Pic, |s| s.ltim != 0))
        .absent(mutate!(Pic, |s| s.ltim = 0))];

/// QEMU 10.0's description table of `i8259` (version 1, minimum 1; subsection `i8259/ltim`).
pub const VMSD: Vmsd = VMSD_7_2.subsections(SUBSECTIONS).not_migrated(&[ELCR_MASK]);

/// The destination's configuration, never on the wire.
const ELCR_MASK: NotMigrated = not_migrated!(Pic, elcr_mask);

/// QEMU 7.2's description table of `i8259` (version 1, minimum 1; no subsections).
pub const VMSD_7_2: Vmsd = Vmsd::new("i8259", 1, 1, core::mem::size_of::<Pic>())
    .fields(&[
        field!(Pic, body.last_irr),
        field!(Pic, body.irr),
        field!(Pic, body.imr),
        field!(Pic, body.isr),
        field!(Pic, body.priority_add),
        field!(Pic, body.irq_base),
        field!(Pic, body.read_reg_select),
        field!(Pic, body.poll),
        field!(Pic, body.special_mask),
        field!(Pic, body.init_state),
        field!(Pic, body.auto_eoi),
        field!(Pic, body.rotate_on_auto_eoi),
        field!(Pic, body.special_fully_nested_mode),
        field!(Pic, body.init4),
        field!(Pic, body.single_mode),
        field!(Pic, body.elcr),
    ])
    .validate(check!(Pic, |s, _version| validate(s, true)))
    // QEMU 7.2 has no `i8259/ltim` subsection.
    .not_migrated(&[ELCR_MASK, not_migrated!(Pic, ltim)]);

/// [`VMSD`] enforcing only the MUST rule (`priority_add`), for streams from producers known to
/// write unreachable but harmless values; load with [`vmstate::load_with`].
pub const PERMISSIVE_VMSD: Vmsd = VMSD.validate(check!(Pic, |s, _version| validate(s, false)));

assert_layout!(Pic, VMSD, body = PicBody);
assert_layout!(Pic, VMSD_7_2, body = PicBody);
assert_layout!(Pic, PERMISSIVE_VMSD, body = PicBody);

impl vmstate::State for Pic {
    const VMSD: &'static Vmsd = &VMSD;
}

impl PicBody {
    /// The reset state: every register 0 (QEMU's `pic_reset_common`; `elcr` survives a reset
    /// in QEMU but is 0 at power-on).
    pub const RESET: PicBody = PicBody {
        last_irr: 0,
        irr: 0,
        imr: 0,
        isr: 0,
        priority_add: 0,
        irq_base: 0,
        read_reg_select: 0,
        poll: 0,
        special_mask: 0,
        init_state: 0,
        auto_eoi: 0,
        rotate_on_auto_eoi: 0,
        special_fully_nested_mode: 0,
        init4: 0,
        single_mode: 0,
        elcr: 0,
    };
}

impl Pic {
    /// The master PIC (instance 0, I/O base 0x20) at power-on.
    pub const MASTER: Pic = Pic {
        body: PicBody::RESET,
        elcr_mask: 0xf8,
        ltim: 0,
    };
    /// The slave PIC (instance 1, I/O base 0xa0) at power-on.
    pub const SLAVE: Pic = Pic {
        body: PicBody::RESET,
        elcr_mask: 0xde,
        ltim: 0,
    };

    /// The interrupt mask register.
    pub const fn imr(&self) -> u8 {
        self.body.imr
    }

    /// Sets the interrupt mask register.
    pub fn set_imr(&mut self, imr: u8) {
        self.body.imr = imr;
    }

    /// The interrupt request register.
    pub const fn irr(&self) -> u8 {
        self.body.irr
    }

    /// The in-service register.
    pub const fn isr(&self) -> u8 {
        self.body.isr
    }

    /// The vector delivered for line `irq` (0..=7), or `None` for another line. Never
    /// overflows for a loaded state (`irq_base` is a multiple of 8).
    pub const fn vector(&self, irq: u8) -> Option<u8> {
        if irq > 7 {
            return None;
        }
        self.body.irq_base.checked_add(irq)
    }

    /// Whether single mode (no cascade) is selected; the byte is kept as 0 or 2 on the wire.
    pub const fn single_mode(&self) -> bool {
        self.body.single_mode != 0
    }

    /// Whether line `irq` (0..=7) is level-triggered according to the ELCR.
    pub const fn level_triggered(&self, irq: u8) -> bool {
        irq < 8 && self.body.elcr & (1 << irq) != 0
    }
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use vmstate::ErrorKind;

    fn config(instance: u32) -> Pic {
        if instance == 0 {
            Pic::MASTER
        } else {
            Pic::SLAVE
        }
    }

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            for (instance, key) in [(0, "i8259 (15)"), (1, "i8259 (16)")] {
                let s = round_trip(stream, "i8259", instance, config(instance));
                // Every byte equals what QEMU's analyzer printed for the field of that name.
                for (i, f) in VMSD.fields.iter().enumerate() {
                    assert_eq!(f.offset, i);
                    assert_eq!(
                        s.body.as_bytes()[i] as u64,
                        state_hex(analysis, key, f.name)
                    );
                }
                assert_eq!(s.elcr_mask, config(instance).elcr_mask);
            }
        }
        // SeaBIOS programmed the vectors 0x08 and 0x70 and masked lines.
        let master = round_trip(BIOS, "i8259", 0, Pic::MASTER);
        let slave = round_trip(BIOS, "i8259", 1, Pic::SLAVE);
        assert_eq!((master.imr(), master.vector(0)), (0xb8, Some(0x08)));
        assert_eq!((slave.imr(), slave.vector(7)), (0x8e, Some(0x77)));
        assert!(slave.level_triggered(2) && slave.level_triggered(3));
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            for instance in [0, 1] {
                let s = round_trip(stream, "i8259", instance, config(instance));
                assert_eq!(
                    our_device_json("i8259", instance, &s),
                    qemu_device_json(stream, "i8259", instance)
                );
            }
        }
    }

    /// Loads the real BIOS master body with byte `at` replaced by `value` into `init`.
    fn load_with(init: Pic, at: usize, value: u8) -> (Pic, Result<(), vmstate::Error>) {
        let rec = section(BIOS, "i8259", 0);
        let mut body = [0u8; 16];
        body.copy_from_slice(rec.body);
        body[at] = value;
        let mut s = init;
        let r = vmstate::load(&mut s, 1, &body, 500);
        (s, r)
    }

    #[test]
    fn each_rule_rejects_with_field_and_offset_and_keeps_state() {
        let mut before = Pic::MASTER;
        before.set_imr(0x5a);
        let cases: &[(&str, u8, Expected)] = &[
            ("priority_add", 8, Expected::AtMost(7)),
            ("irq_base", 0x0c, Expected::MaskClear(7)),
            ("read_reg_select", 2, Expected::AtMost(1)),
            ("poll", 2, Expected::AtMost(1)),
            ("special_mask", 0xff, Expected::AtMost(1)),
            ("init_state", 4, Expected::AtMost(3)),
            ("auto_eoi", 2, Expected::AtMost(1)),
            ("rotate_on_auto_eoi", 2, Expected::AtMost(1)),
            ("special_fully_nested_mode", 2, Expected::AtMost(1)),
            ("init4", 2, Expected::AtMost(1)),
            ("single_mode", 1, Expected::OneOf(&[0, 2])),
            ("single_mode", 3, Expected::OneOf(&[0, 2])),
            ("elcr", 0x01, Expected::MaskClear(0x07)),
        ];
        for &(name, value, expected) in cases {
            let at = VMSD.fields.iter().position(|f| f.name == name).unwrap();
            let (after, r) = load_with(before, at, value);
            let e = r.unwrap_err();
            assert_eq!(
                e.kind,
                ErrorKind::Invalid {
                    expected,
                    found: value as u64
                },
                "{name}"
            );
            assert_eq!(e.field, Some(name));
            assert_eq!(e.offset, 500 + at, "{name}");
            assert_eq!(
                after.as_bytes(),
                before.as_bytes(),
                "{name}: state unchanged"
            );
            // The permissive table enforces only the MUST rule.
            let rec = section(BIOS, "i8259", 0);
            let mut body = [0u8; 16];
            body.copy_from_slice(rec.body);
            body[at] = value;
            let mut s = before;
            let r = vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 1, &body, 500);
            if name == "priority_add" {
                assert_eq!(r.unwrap_err(), e);
                assert_eq!(s, before);
            } else {
                r.unwrap();
                assert_eq!(s.body.as_bytes(), &body[..], "{name}");
            }
        }
    }

    #[test]
    fn odd_reachable_states_load() {
        for (name, value) in [
            ("single_mode", 2u8), // ICW1 stores `val & 2`
            ("priority_add", 7),
            ("init_state", 3),
            ("irq_base", 0xf8),
            ("elcr", 0xf8),
            ("imr", 0xff),
            ("irr", 0xff),
            ("isr", 0xff),
            ("last_irr", 0xff),
        ] {
            let at = VMSD.fields.iter().position(|f| f.name == name).unwrap();
            let (s, r) = load_with(Pic::MASTER, at, value);
            r.unwrap();
            assert_eq!(s.body.as_bytes()[at], value, "{name}");
        }
        let (s, _) = load_with(Pic::MASTER, 14, 2);
        assert!(s.single_mode());
    }

    #[test]
    fn elcr_mask_is_the_destination_configuration() {
        // The slave's real ELCR (0x0c: lines 10 and 11) is valid for the slave only.
        let rec = section(BIOS, "i8259", 1);
        let mut master = Pic::MASTER;
        let e = vmstate::load(&mut master, 1, rec.body, rec.body_offset).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::MaskClear(0x07),
                found: 0x0c
            }
        );
        assert_eq!(e.offset, rec.body_offset + 15);
        assert_eq!(master, Pic::MASTER);
        let mut slave = Pic::SLAVE;
        vmstate::load(&mut slave, 1, rec.body, rec.body_offset).unwrap();
        assert_eq!(slave.body.elcr, 0x0c);
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        let rec = section(BIOS, "i8259", 0);
        every_prefix_fails(&Pic::MASTER, 1, rec.body);
    }

    #[test]
    fn accessors() {
        let mut p = Pic::SLAVE;
        p.set_imr(0x12);
        assert_eq!(p.imr(), 0x12);
        assert_eq!(p.vector(8), None);
        assert!(!p.level_triggered(9));
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        fn fix(b: &mut [u8]) {
            b[4] &= 7;
            b[5] &= 0xf8;
            b[6..9].iter_mut().for_each(|v| *v &= 1);
            b[9] &= 3;
            b[10..14].iter_mut().for_each(|v| *v &= 1);
            b[14] &= 2;
            b[15] &= 0xf8;
        }
        random_bodies_round_trip(Pic::MASTER, 16, &[], fix, 256);
    }

    /// The guest set LTIM on the master (q10-pc-i440fx-7.2-ltim, written by QEMU 10.0): the
    /// subsection decodes into `ltim`, re-encodes byte for byte and is described as QEMU 10.0
    /// describes it; QEMU 7.2's table refuses the section, naming the subsection.
    #[test]
    fn ltim_subsection_round_trips_and_a_7_2_destination_refuses_it() {
        extern crate std;
        let stream = v2("q10-pc-i440fx-7.2-ltim");
        let rec = section(stream, "i8259", 0);
        assert!(
            rec.body
                .ends_with(b"\x05\x0ai8259/ltim\x00\x00\x00\x01\x08")
        );
        let s = round_trip(stream, "i8259", 0, Pic::MASTER);
        assert_eq!((s.ltim, s.body.irq_base, s.body.init4), (LTIM, 0x08, 1));
        assert_eq!(
            our_device_json("i8259", 0, &s),
            qemu_device_json(stream, "i8259", 0)
        );
        let mut old = Pic::MASTER;
        let e = vmstate::load_with(&VMSD_7_2, &mut old, 1, rec.body, rec.body_offset).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::UnknownSubsection { .. }), "{e}");
        assert_eq!(e.offset, rec.body_offset + 16, "{e}");
        assert!(std::format!("{e}").contains("i8259/ltim"), "{e}");
        assert_eq!(old, Pic::MASTER, "state unchanged");
        // The slave never had LTIM set: no subsection, both tables agree.
        let slave = round_trip(stream, "i8259", 1, Pic::SLAVE);
        assert_eq!(slave.ltim, 0);
        let mut s72 = Pic::SLAVE;
        let rec1 = section(stream, "i8259", 1);
        vmstate::load_with(&VMSD_7_2, &mut s72, 1, rec1.body, 0).unwrap();
        assert_eq!(s72, slave);
    }

    #[test]
    fn ltim_is_what_the_guest_can_store() {
        let stream = v2("q10-pc-i440fx-7.2-ltim");
        let rec = section(stream, "i8259", 0);
        let at = rec.body.len() - 1;
        for bad in [0u8, 1, 9, 0xff] {
            let mut b = rec.body.to_vec();
            b[at] = bad;
            let mut p = Pic::MASTER;
            let e = vmstate::load(&mut p, 1, &b, 100).unwrap_err();
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::OneOf(&[8]),
                        found: bad as u64
                    },
                    Some("ltim"),
                    100 + at
                ),
                "{bad}"
            );
            assert_eq!(p, Pic::MASTER);
        }
        // A state without LTIM sends no subsection, and an absent subsection clears it.
        let mut p = Pic::MASTER;
        p.ltim = LTIM;
        vmstate::load(&mut p, 1, &rec.body[..16], 0).unwrap();
        assert_eq!(p.ltim, 0);
    }

    /// Every i8259 section of both builds' pc and q35 streams loads with both tables (none but
    /// the ltim fixture carries the subsection) and is described as its writer described it.
    #[test]
    fn both_builds_streams_load_and_describe_like_qemu() {
        for (name, stream, _) in V2 {
            for instance in [0, 1] {
                let s = round_trip(stream, "i8259", instance, config(instance));
                let mut s72 = config(instance);
                let rec = section(stream, "i8259", instance);
                let r = vmstate::load_with(&VMSD_7_2, &mut s72, 1, rec.body, 0);
                let ltim = name.ends_with("-ltim") && instance == 0;
                assert_eq!(r.is_err(), ltim, "{name} {instance}");
                if !ltim {
                    assert_eq!(s72, s, "{name}");
                }
                let vmsd = if name.starts_with("q10") {
                    &VMSD
                } else {
                    &VMSD_7_2
                };
                assert_eq!(
                    our_device_json_with(vmsd, "i8259", instance, &s),
                    qemu_device_json(stream, "i8259", instance),
                    "{name}"
                );
            }
        }
    }
}
