//! The edit re-validation hook with a typed state: a stand-in for the `vmstate-devices` i8259
//! model (16 × u8, docs/V3-WIRE.md §16.2) carrying one of its invariants from
//! docs/UNTRUSTED-INPUT.md §4.2: `priority_add` is reachable only as 0-7, so a load must refuse
//! more.

use std::path::PathBuf;
use vmstate::zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};
use vmstate::{Expected, Violation, Vmsd, check, field};
use vmstate_cli::Stream;
use vmstate_cli::generic::{AllOf, NoCheck, TypedCheck};

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
struct Pic {
    last_irr: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    priority_add: u8,
    irq_base: u8,
    read_reg_select: u8,
    poll: u8,
    special_mask: u8,
    init_state: u8,
    auto_eoi: u8,
    rotate_on_auto_eoi: u8,
    special_fully_nested_mode: u8,
    init4: u8,
    single_mode: u8,
    elcr: u8,
}

const PIC: Vmsd = Vmsd::new("i8259", 1, 1, size_of::<Pic>())
    .fields(&[
        field!(Pic, last_irr),
        field!(Pic, irr),
        field!(Pic, imr),
        field!(Pic, isr),
        field!(Pic, priority_add),
        field!(Pic, irq_base),
        field!(Pic, read_reg_select),
        field!(Pic, poll),
        field!(Pic, special_mask),
        field!(Pic, init_state),
        field!(Pic, auto_eoi),
        field!(Pic, rotate_on_auto_eoi),
        field!(Pic, special_fully_nested_mode),
        field!(Pic, init4),
        field!(Pic, single_mode),
        field!(Pic, elcr),
    ])
    .validate(check!(Pic, |s, _version| {
        if s.priority_add > 7 {
            return Err(Violation {
                field: "priority_add",
                expected: Expected::AtMost(7),
                found: u64::from(s.priority_add),
            });
        }
        Ok(())
    }));
vmstate::assert_layout!(Pic, PIC);

impl vmstate::State for Pic {
    const VMSD: &'static Vmsd = &PIC;
}

fn fixture() -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
    std::fs::read(p).unwrap()
}

#[test]
fn typed_check_refuses_what_the_device_would_refuse() {
    let bytes = fixture();
    let mut s = Stream::parse(&bytes).unwrap();
    let pic = TypedCheck::new(Pic::new_zeroed());
    // Generic range checks alone accept 8 (it fits a u8).
    s.clone().set("i8259[1].priority_add=8", &NoCheck).unwrap();
    let e = s.set("i8259[1].priority_add=8", &pic).unwrap_err();
    assert!(e.0.contains("i8259 refuses the edited body"), "{e}");
    assert!(e.0.contains("priority_add"), "{e}");
    assert!(
        s.to_bytes().unwrap() == bytes,
        "a refused edit changes nothing"
    );
    // In range: accepted, and the typed load of the new body sees it.
    s.set("i8259[1].priority_add=7", &pic).unwrap();
    let out = s.to_bytes().unwrap();
    let back = Stream::parse(&out).unwrap();
    let (m, body) = back
        .devices()
        .find(|(m, _)| m.idstr == b"i8259" && m.instance_id == 1)
        .unwrap();
    let typed = vmstate::decode(&Pic::new_zeroed(), m.version_id, &body.to_bytes(), 0).unwrap();
    assert_eq!(typed.priority_add, 7);
    // Checks compose; sections the typed state does not model pass through.
    let both = AllOf(&[&NoCheck, &pic]);
    s.set("i8254[0].channels[0].count=5", &both).unwrap();
    assert!(s.set("i8259[0].priority_add=9", &both).is_err());
}
