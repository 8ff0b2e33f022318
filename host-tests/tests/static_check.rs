//! Our device tables against a real QEMU 7.2 `-dump-vmstate` (host-tests/fixtures/
//! pc-7.2.dump-vmstate.json, made with `qemu-system-x86_64 -M pc -nodefaults -display none
//! -accel tcg -dump-vmstate FILE`): no problem in either direction, the way QEMU's
//! vmstate-static-checker.py would judge it; a deliberately changed table shows the problem.

use vmstate::Vmsd;
use vmstate_cli::static_check::check_tables;
use vmstate_devices::{fw_cfg, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial};

/// Each modelled table with the QOM type name QEMU keys its dump by. `timer` and `globalstate`
/// are not QOM devices and do not appear in a dump.
fn ours() -> Vec<(&'static str, &'static Vmsd)> {
    vec![
        ("mc146818rtc", &rtc::VMSD),
        ("isa-i8259", &i8259::VMSD),
        ("isa-pit", &i8254::VMSD),
        ("ioapic", &ioapic::VMSD),
        ("hpet", &hpet::VMSD),
        ("isa-pcspk", &pcspk::VMSD),
        ("isa-serial", &serial::VMSD),
        ("port92", &port92::VMSD),
        ("fw_cfg_io", &fw_cfg::VMSD),
    ]
}

fn real_dump() -> serde_json::Value {
    let bytes =
        std::fs::read(vmstate_host_tests::fixture_path("pc-7.2.dump-vmstate.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn modelled_tables_match_qemu_7_2_in_both_directions() {
    let dump = real_dump();
    let (forward, backward) = check_tables(&ours(), &dump);
    assert_eq!(
        forward.exit_status(),
        0,
        "ours -> QEMU:\n{}",
        forward.text()
    );
    assert_eq!(
        backward.exit_status(),
        0,
        "QEMU -> ours:\n{}",
        backward.text()
    );
}

#[test]
fn a_changed_table_shows_the_problem() {
    static NEWER_PORT92: Vmsd = Vmsd {
        version_id: 2,
        minimum_version_id: 2,
        ..port92::VMSD
    };
    let dump = real_dump();
    let mut tables = ours();
    tables.retain(|(n, _)| *n != "port92");
    tables.push(("port92", &NEWER_PORT92));
    let (forward, backward) = check_tables(&tables, &dump);
    // QEMU 7.2's port92 (version 1) cannot load our version-2-minimum stream and vice versa.
    assert!(forward.exit_status() + backward.exit_status() > 0);
    let text = format!("{}{}", forward.text(), backward.text());
    assert!(text.contains("port92"), "{text}");
}
