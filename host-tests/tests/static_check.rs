//! Our device tables against real QEMU `-dump-vmstate` output: QEMU 7.2's
//! (host-tests/fixtures/pc-7.2.dump-vmstate.json, made with `qemu-system-x86_64 -M pc
//! -nodefaults -display none -accel tcg -dump-vmstate FILE`, and q72-*.dump-vmstate.json) and
//! QEMU 10.0's (q10-*.dump-vmstate.json), for pc-i440fx and pc-q35 machine types: each build's
//! tables show no problem in either direction, the way QEMU's vmstate-static-checker.py would
//! judge it; the other build's tables show exactly the documented version differences; a
//! deliberately changed table shows the problem.

use vmstate::Vmsd;
use vmstate_cli::static_check::check_tables;
use vmstate_devices::{fw_cfg, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial};

/// Each modelled table of QEMU 7.2 with the QOM type name QEMU keys its dump by. `timer` and
/// `globalstate` are not QOM devices and do not appear in a dump (globalstate's two layouts are
/// checked against the streams' own descriptions in `vmstate-devices`).
fn ours() -> Vec<(&'static str, &'static Vmsd)> {
    ours_for(false)
}

/// QEMU 10.0's tables (`new`) or QEMU 7.2's: they differ in i8259 (`i8259/ltim`) and hpet
/// (`num_timers_save`).
fn ours_for(new: bool) -> Vec<(&'static str, &'static Vmsd)> {
    vec![
        ("mc146818rtc", &rtc::VMSD),
        (
            "isa-i8259",
            if new { &i8259::VMSD } else { &i8259::VMSD_7_2 },
        ),
        ("isa-pit", &i8254::VMSD),
        ("ioapic", &ioapic::VMSD),
        ("hpet", if new { &hpet::VMSD } else { &hpet::VMSD_7_2 }),
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
    static NEWER_PORT92: Vmsd = port92::VMSD.versions(2, 2);
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

fn dump(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(vmstate_host_tests::fixture_path(name)).unwrap()).unwrap()
}

/// Every -dump-vmstate of both builds (the machine type is named inside each).
const DUMPS: &[&str] = &[
    "pc-7.2.dump-vmstate.json",
    "q72-pc-i440fx-7.2.dump-vmstate.json",
    "q72-pc-q35-7.2.dump-vmstate.json",
    "q10-pc-i440fx-7.2.dump-vmstate.json",
    "q10-pc-q35-7.2.dump-vmstate.json",
    "q10-pc-i440fx-10.0.dump-vmstate.json",
    "q10-pc-q35-10.0.dump-vmstate.json",
];

/// The problems of both directions, as one text.
fn problems(tables: &[(&str, &Vmsd)], dump: &serde_json::Value) -> (i32, String) {
    let (forward, backward) = check_tables(tables, dump);
    (
        forward.exit_status() + backward.exit_status(),
        format!("{}{}", forward.text(), backward.text()),
    )
}

#[test]
fn each_builds_tables_match_its_dumps_for_pc_and_q35_in_both_directions() {
    for name in DUMPS {
        let d = dump(name);
        let machine = d["vmschkmachine"]["Name"].as_str().unwrap().to_string();
        assert!(
            machine.starts_with("pc-i440fx-") || machine.starts_with("pc-q35-"),
            "{name}"
        );
        let new = name.starts_with("q10");
        let (n, text) = problems(&ours_for(new), &d);
        assert_eq!(n, 0, "{name} ({machine}):\n{text}");
        // Every modelled device is in the dump (nothing was skipped for being absent).
        for (qom, _) in ours_for(new) {
            assert!(d.get(qom).is_some(), "{name}: {qom}");
        }
    }
}

/// The other build's tables against a dump show exactly the documented differences, in both
/// directions: QEMU 10.0's i8259 has subsections (i8259/ltim, 8.0) where 7.2's has none, and
/// 10.0 renamed hpet's num_timers to num_timers_save.
#[test]
fn the_other_builds_tables_differ_only_as_documented() {
    let expected = [
        r#"Section "hpet", Description "hpet": expected field "num_timers", got "num_timers_save"; skipping rest"#,
        r#"Section "hpet", Description "hpet": expected field "num_timers_save", got "num_timers"; skipping rest"#,
        // One direction only: a destination that knows more subsections loads the source's.
        r#"Section "isa-i8259" Description "i8259": Entry "Subsections" missing"#,
    ];
    for name in DUMPS {
        let d = dump(name);
        let new = name.starts_with("q10");
        let (n, text) = problems(&ours_for(!new), &d);
        assert_eq!(n, 3, "{name}:\n{text}");
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.sort();
        assert_eq!(lines, expected, "{name}");
    }
    // The subsection QEMU 10.0's dumps carry is i8259/ltim, which our 10.0 table has.
    let d = dump("q10-pc-i440fx-7.2.dump-vmstate.json");
    let subs = &d["isa-i8259"]["Description"]["Subsections"];
    assert_eq!(subs[0]["name"], "i8259/ltim");
    assert_eq!(i8259::VMSD.subsections[0].vmsd.name, "i8259/ltim");
}
