//! The binary's `rewrite --set` re-validation with the real device models, and the v4 and
//! compatibility subcommands (`rewrite --format`, `check`, `caps`, `static-check`).

use std::path::PathBuf;
use std::process::{Command, Output};
use vmstate_cli::exit::Exit;

const FIXTURES: &[&str] = &["pc-7.2-nodefaults-S", "pc-7.2-bios", "pc-7.2-serial"];

/// The second-generation fixtures (host-tests/fixtures/make-fixtures.py), written by QEMU 7.2
/// (`q72-*`) and QEMU 10.0 (`q10-*`).
const FIXTURES_V2: &[&str] = &[
    "q72-pc-i440fx-7.2",
    "q72-pc-q35-7.2",
    "q10-pc-i440fx-10.0",
    "q10-pc-q35-10.0",
    "q10-pc-i440fx-7.2",
    "q10-pc-q35-7.2",
    "q10-pc-i440fx-7.2-ltim",
    "q72-pc-i440fx-7.2-ignore-shared",
    "q10-pc-i440fx-10.0-ignore-shared",
];

/// Whether a fixture's machine type sends the SWITCHOVER_START COMMAND record (≥ 10.0).
fn sends_command(f: &str) -> bool {
    f.contains("-10.0")
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn tmp(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("vmstate-cmds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name).to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .expect("run vmstate")
}

fn out(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn edits_of_modelled_sections_are_revalidated_by_the_device() {
    let out_file = tmp("edit.vmstate");
    // (fixture, edit, refused with this text in the message)
    let refused = [
        (
            "pc-7.2-bios",
            "i8259[0].priority_add=9",
            "field priority_add",
        ),
        ("pc-7.2-bios", "i8259[1].single_mode=1", "field single_mode"),
        (
            "pc-7.2-bios",
            "mc146818rtc[0].cmos_index=0x80",
            "field cmos_index",
        ),
        ("pc-7.2-bios", "i8254[0].channels[0].count=0", "count"),
        ("pc-7.2-bios", "ioapic[0].id=16", "field id"),
        ("pc-7.2-bios", "hpet[0].timer[1].tn=5", "field timer"),
        ("pc-7.2-bios", "hpet[0].num_timers=4", "hpet model refuses"),
        (
            "pc-7.2-bios",
            "fw_cfg[0].cur_entry=0x1234",
            "field cur_entry",
        ),
        (
            "pc-7.2-bios",
            "fw_cfg[0].fw_cfg/acpi_mr.table_mr_size=0x40000000",
            "table_mr_size",
        ),
        ("pc-7.2-bios", "globalstate[0].size=3", "field size"),
        ("pc-7.2-serial", "serial[0].state.ier=0xf0", "field ier"),
    ];
    for (f, edit, why) in refused {
        let src = fixture(&format!("{f}.vmstate"));
        let o = run(&["rewrite", &src, &out_file, "--set", edit]);
        assert_eq!(
            o.status.code(),
            Some(Exit::Usage.status()),
            "{edit}: {}",
            err(&o)
        );
        let idstr = edit.split('[').next().unwrap();
        assert!(
            err(&o).contains(&format!("the {idstr} model refuses the edited body")),
            "{edit}: {}",
            err(&o)
        );
        assert!(err(&o).contains(why), "{edit}: {}", err(&o));
        assert!(
            std::fs::metadata(&out_file).is_err(),
            "{edit}: nothing written"
        );
    }
    // Accepted edits, one per modelled device, and each shows up in the written stream.
    let accepted = [
        (
            "pc-7.2-bios",
            "i8259[0].imr=0x5a",
            "i8259[0].imr: 0xb8 -> 0x5a",
        ),
        (
            "pc-7.2-bios",
            "i8259[1].priority_add=7",
            "i8259[1].priority_add",
        ),
        (
            "pc-7.2-bios",
            "mc146818rtc[0].cmos_index=0x7f",
            "cmos_index",
        ),
        ("pc-7.2-bios", "i8254[0].channels[1].count=100", "-> 0x64"),
        ("pc-7.2-bios", "ioapic[0].id=15", "ioapic[0].id"),
        (
            "pc-7.2-bios",
            "hpet[0].timer[2].cmp=0x1000",
            "hpet[0].timer[2].cmp",
        ),
        (
            "pc-7.2-bios",
            "fw_cfg[0].cur_entry=0x19",
            "fw_cfg[0].cur_entry",
        ),
        ("pc-7.2-bios", "pcspk[0].data_on=1", "pcspk[0].data_on"),
        ("pc-7.2-bios", "port92[0].outport=0", "port92[0].outport"),
        (
            "pc-7.2-bios",
            "timer[0].cpu_ticks_offset=5",
            "timer[0].cpu_ticks_offset",
        ),
        (
            "pc-7.2-serial",
            "serial[0].state.scr=0x42",
            "serial[0].state.scr",
        ),
    ];
    for (f, edit, shown) in accepted {
        let src = fixture(&format!("{f}.vmstate"));
        let o = run(&["rewrite", &src, &out_file, "--set", edit]);
        assert_eq!(o.status.code(), Some(0), "{edit}: {}", err(&o));
        let o = run(&["diff", &src, &out_file]);
        assert_eq!(o.status.code(), Some(1), "{edit}");
        assert!(out(&o).contains(shown), "{edit}: {}", out(&o));
        let o = run(&["verify", &out_file]);
        assert_eq!(o.status.code(), Some(0), "{edit}: {}", out(&o));
        std::fs::remove_file(&out_file).unwrap();
    }
    // The destination's configuration decides: four HPET timers configured makes a
    // four-timer hpet the only acceptable one, so the three-timer stream cannot be edited.
    let src = fixture("pc-7.2-bios.vmstate");
    let o = run(&[
        "rewrite",
        &src,
        &out_file,
        "--hpet-timers",
        "4",
        "--set",
        "hpet[0].timer[2].cmp=0x1000",
    ]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(err(&o).contains("field num_timers"), "{}", err(&o));
}

#[test]
fn rewrite_format_round_trips_every_fixture() {
    for f in FIXTURES {
        let src = fixture(&format!("{f}.vmstate"));
        let v4 = tmp(&format!("{f}.v4"));
        let plain = tmp(&format!("{f}.nocrc.v4"));
        let back = tmp(&format!("{f}.v3"));
        let o = run(&["rewrite", &src, &v4, "--format", "v4"]);
        assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
        let bytes = std::fs::read(&v4).unwrap();
        assert_eq!(&bytes[..8], b"QEVM\0\0\0\x04", "{f}");
        let o = run(&["rewrite", &src, &plain, "--format", "v4", "--no-crc"]);
        assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
        let smaller = std::fs::read(&plain).unwrap();
        assert!(smaller.len() < bytes.len(), "{f}: CRCs left out");
        for input in [&v4, &plain] {
            let o = run(&["rewrite", input, &back, "--format", "v3"]);
            assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
            assert!(
                std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap(),
                "{f}: v3 -> v4 -> v3 is byte-identical"
            );
        }
        // A v4 stream with a flipped body bit is refused with exit 1.
        let mut bad = bytes.clone();
        let at = bytes.len() / 2;
        bad[at] ^= 0x10;
        std::fs::write(&plain, &bad).unwrap();
        let o = run(&["rewrite", &plain, &back, "--format", "v3"]);
        assert_eq!(
            o.status.code(),
            Some(Exit::Invalid.status()),
            "{f}: {}",
            err(&o)
        );
        assert!(err(&o).contains("invalid input"), "{}", err(&o));
        for p in [v4, plain, back] {
            let _ = std::fs::remove_file(p);
        }
    }
    // Edits and a format change together.
    let src = fixture("pc-7.2-bios.vmstate");
    let (v4, back) = (tmp("edit.v4"), tmp("edit.v3"));
    let o = run(&[
        "rewrite",
        &src,
        &v4,
        "--format",
        "v4",
        "--set",
        "i8259[0].imr=0x5a",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        run(&["rewrite", &v4, &back, "--format", "v3"])
            .status
            .code(),
        Some(0)
    );
    let o = run(&["diff", &src, &back]);
    assert_eq!(out(&o), "i8259[0].imr: 0xb8 -> 0x5a\n");
    assert_eq!(
        run(&["rewrite", &src, &v4, "--format", "v5"]).status.code(),
        Some(Exit::Usage.status())
    );
    assert_eq!(
        run(&["rewrite", &src, &v4, "--no-crc"]).status.code(),
        Some(Exit::Usage.status())
    );
}

#[test]
fn caps_and_check_decide_migratability() {
    let stream = fixture("pc-7.2-bios.vmstate");
    let dump = fixture("pc-7.2.dump-vmstate.json");
    let caps = tmp("caps.json");
    // The destination from its dump alone: QEMU 7.2 (inferred), pc-i440fx-7.2 (the dump names
    // it); sections no dump shows (ram, cpu, …) come from the build's facts. One summary line.
    let o = run(&["caps", "--dump", &dump, &caps]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let summary = out(&o);
    assert_eq!(summary.lines().count(), 1, "{summary}");
    assert!(
        summary.starts_with("destination pc-i440fx-7.2 (QEMU 7.2): "),
        "{summary}"
    );
    let o = run(&["check", &stream, "--dest", &caps]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
    assert!(out(&o).starts_with("compatible: "), "{}", out(&o));
    // The dump itself, or a stream the destination wrote, may stand for the destination.
    for dest in [&dump, &stream] {
        let o = run(&["check", &stream, "--dest", dest]);
        assert_eq!(o.status.code(), Some(0), "{dest}: {}{}", out(&o), err(&o));
    }
    // Dump + stream.
    let o = run(&["caps", "--dump", &dump, "--stream", &stream, &caps]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(out(&o).contains("+ stream "), "{}", out(&o));
    // A v4 stream is checked the same way.
    let v4 = tmp("check.v4");
    assert_eq!(
        run(&["rewrite", &stream, &v4, "--format", "v4"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(run(&["check", &v4, "--dest", &caps]).status.code(), Some(0));

    // Another machine type: refused, one line per reason, exit status = their number.
    let q35 = fixture("q72-pc-q35-7.2.vmstate");
    let o = run(&["check", &q35, "--dest", &caps]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("machine type: the stream is for machine type pc-q35-7.2, the destination is pc-i440fx-7.2"),
        "{text}"
    );
    // A subsection the destination build does not know (i8259/ltim is QEMU 8.0+).
    let ltim = fixture("q10-pc-i440fx-7.2-ltim.vmstate");
    let o = run(&["check", &ltim, "--dest", &dump]);
    assert_eq!(
        (o.status.code(), out(&o).as_str()),
        (
            Some(1),
            "subsection: i8259 (instance 0): destination does not know must-understand \
             subsection i8259/ltim\n"
        )
    );

    // Usage and I/O errors.
    assert_eq!(
        run(&["caps", &caps]).status.code(),
        Some(Exit::Usage.status())
    );
    assert_eq!(
        run(&["caps", "--dump", "/nonexistent.json", &caps])
            .status
            .code(),
        Some(Exit::Unreadable.status())
    );
    assert_eq!(
        run(&["caps", "--dump", &stream, &caps]).status.code(),
        Some(Exit::Invalid.status()),
        "a stream is not a dump"
    );
    assert_eq!(
        run(&["caps", "--dump", &dump, "--qemu", "6.0", &caps])
            .status
            .code(),
        Some(Exit::Invalid.status()),
        "no facts for that build"
    );
    // The output is never one of the inputs.
    let copy = tmp("caps-input.vmstate");
    std::fs::copy(&stream, &copy).unwrap();
    let o = run(&["caps", "--stream", &copy, &copy]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&stream).unwrap());
    let o = run(&["check", &stream, "--dest", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(Exit::Unreadable.status()));
    assert!(err(&o).contains("/nonexistent"), "{}", err(&o));
    let o = run(&[
        "check",
        &stream,
        "--dest",
        &fixture("pc-7.2-bios.state.json"),
    ]);
    assert_eq!(
        o.status.code(),
        Some(Exit::Invalid.status()),
        "not a destination"
    );
    let _ = std::fs::remove_file(caps);
    let _ = std::fs::remove_file(v4);
}

#[test]
fn static_check_counts_problems() {
    let dump = fixture("pc-7.2.dump-vmstate.json");
    let o = run(&["static-check", "--src", &dump, "--dst", &dump]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), ""));
    // A destination whose rtc is older and lacks a subsection.
    let mut d: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    d["mc146818rtc"]["Description"]["version_id"] = 2.into();
    d["mc146818rtc"]["Description"]
        .as_object_mut()
        .unwrap()
        .remove("Subsections");
    let older = tmp("older.json");
    std::fs::write(&older, serde_json::to_vec(&d).unwrap()).unwrap();
    let o = run(&["static-check", "--src", &dump, "--dst", &older]);
    let text = out(&o);
    let n = o.status.code().unwrap();
    assert!(n >= 2, "{text}");
    assert_eq!(text.lines().count(), n as usize, "{text}");
    assert!(text.contains("mc146818rtc"), "{text}");
    // The other direction is judged on its own (the exit status still counts lines).
    let o = run(&["static-check", "--src", &dump, "--dst", &older, "--reverse"]);
    assert_eq!(
        o.status.code().unwrap() as usize,
        out(&o).lines().count(),
        "{}",
        out(&o)
    );
    // An unopenable file exits 103 (the script's argument parser: 2).
    let o = run(&["static-check", "--src", "/nonexistent", "--dst", &older]);
    assert_eq!(o.status.code(), Some(Exit::Unreadable.status()));
    assert!(err(&o).contains("/nonexistent"), "{}", err(&o));
    assert_eq!(
        run(&["static-check", "--src", &dump]).status.code(),
        Some(Exit::Usage.status())
    );
    let _ = std::fs::remove_file(older);
}

#[test]
fn progress_is_shown_only_on_a_terminal() {
    let src = fixture("pc-7.2-bios.vmstate");
    // `script` runs the command on a pseudo-terminal (util-linux).
    let cmd = format!("{} verify {src}", env!("CARGO_BIN_EXE_vmstate"));
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script(1) from util-linux");
    assert_eq!(o.status.code(), Some(0));
    let tty = out(&o);
    assert!(tty.starts_with("\rverify:   0%\r"), "{tty:?}");
    // The line is blanked before the summary is printed.
    let blank = format!("\r{}\r", " ".repeat("verify: 100%".len()));
    assert!(tty.contains(&blank), "{tty:?}");
    assert!(tty.contains(": ok: 11 sections checked"), "{tty:?}");
    // Not a terminal: nothing on stderr.
    let o = run(&["verify", &src]);
    assert_eq!((o.status.code(), err(&o).as_str()), (Some(0), ""));
}

/// `inspect --json` and `inspect --desc` print what the analyze-migration.py of the QEMU build
/// that wrote each fixture prints (`-d state`, `-d desc`; stored next to the fixture): 7.2's
/// script for `pc-7.2-*` and `q72-*`, 10.0's for `q10-*`. One rule serves both: consecutive
/// same-name field objects are one array (10.0's rule, which gives 7.2's output on what 7.2
/// writes), so 10.0's arrays of structs (the last element without `index`) are not folded.
#[test]
fn inspect_equals_the_writing_builds_analyze_migration() {
    let mut compared = 0;
    for f in FIXTURES.iter().chain(FIXTURES_V2) {
        let src = fixture(&format!("{f}.vmstate"));
        for (flag, ext) in [("--json", "state"), ("--desc", "desc")] {
            let o = run(&["inspect", flag, &src]);
            assert_eq!(o.status.code(), Some(0), "{f} {flag}: {}", err(&o));
            let mine: serde_json::Value =
                serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("{f} {flag}: {e}"));
            let Ok(text) = std::fs::read_to_string(fixture(&format!("{f}.{ext}.json"))) else {
                // Both QEMU scripts fail on this one ("Unknown section type: 5").
                assert_eq!(*f, "q72-pc-i440fx-7.2-ignore-shared");
                continue;
            };
            let theirs: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(mine == theirs, "{f} {flag} differs from {f}.{ext}.json");
            compared += 1;
        }
    }
    assert_eq!(compared, 2 * (FIXTURES.len() + FIXTURES_V2.len() - 1));
    // The 10.0 fixtures do carry 10.0's convention, and the arrays come out whole.
    let o = run(&["inspect", "--json", &fixture("q10-pc-i440fx-7.2.vmstate")]);
    let state: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let ide = &state["0000:00:01.1/ide (17)"];
    for array in ["bmdma", "bus", "bus[0].ifs", "bus[1].ifs"] {
        assert_eq!(ide[array].as_array().map(Vec::len), Some(2), "{array}");
    }
    let o = run(&["inspect", "--desc", &fixture("q10-pc-i440fx-7.2.vmstate")]);
    let desc: serde_json::Value = serde_json::from_str(&out(&o)).unwrap();
    let ide = desc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "0000:00:01.1/ide")
        .unwrap();
    let bmdma: Vec<_> = ide["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "bmdma")
        .map(|f| f.get("index").cloned())
        .collect();
    assert_eq!(bmdma, [Some(0.into()), None]);
    assert!(desc["configuration"]["vmsd_name"] == "configuration");
}

/// `diff` of the same machine type written by QEMU 7.2 and by 10.0 reports what really
/// differs: guest-visible state that moved on (clocks, CPU registers, RAM) and the two layout
/// changes between the builds (globalstate's runstate split, hpet's renamed field), and compares
/// arrays of structs element by element (no `bmdma[1]` "missing").
#[test]
fn diff_of_streams_from_both_builds_reports_real_differences_only() {
    let a = fixture("q72-pc-i440fx-7.2.vmstate");
    let b = fixture("q10-pc-i440fx-7.2.vmstate");
    let o = run(&["diff", &a, &b]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let text = out(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 20, "{text}");
    assert!(!text.contains("/ide["), "{text}");
    for l in &lines {
        let one_sided = l.ends_with(" -> -") || l.contains(": - -> ");
        if one_sided {
            assert!(
                l.starts_with("globalstate[0].") || l.starts_with("hpet[0].num_timers"),
                "{l}"
            );
        }
    }
    assert!(lines.contains(&"hpet[0].num_timers: 0x3 -> -"), "{text}");
    assert!(
        lines.contains(&"hpet[0].num_timers_save: - -> 0x3"),
        "{text}"
    );
    assert!(
        lines.contains(&"globalstate[0].has_vm_was_suspended: - -> 0x1"),
        "{text}"
    );
    // One edited element of an array of structs is one line, with its index.
    let edited = tmp("bmdma.vmstate");
    let o = run(&[
        "rewrite",
        &b,
        &edited,
        "--set",
        "0000:00:01.1/ide[0].bmdma[1].cmd=0x1",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let o = run(&["diff", &b, &edited]);
    assert_eq!(out(&o), "0000:00:01.1/ide[0].bmdma[1].cmd: 0x0 -> 0x1\n");
    let _ = std::fs::remove_file(edited);
}

/// `rewrite` without edits writes every fixture of both builds back byte for byte, COMMAND
/// records included, and `extract` writes the description, the state (as `inspect`), every
/// device body and the RAM image.
#[test]
fn rewrite_and_extract_work_on_streams_of_both_builds() {
    for f in FIXTURES_V2 {
        let src = fixture(&format!("{f}.vmstate"));
        let back = tmp(&format!("{f}.same"));
        let o = run(&["rewrite", &src, &back]);
        assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
        assert!(
            std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap(),
            "{f}: rewrite is byte-identical"
        );
        let _ = std::fs::remove_file(back);
        let dir = tmp(&format!("{f}.parts"));
        let _ = std::fs::remove_dir_all(&dir);
        let o = run(&["extract", &src, &dir]);
        assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
        let inspect = run(&["inspect", "--json", &src]);
        assert_eq!(
            std::fs::read_to_string(format!("{dir}/state.json")).unwrap(),
            out(&inspect),
            "{f}"
        );
        let desc = run(&["inspect", "--desc", &src]);
        assert_eq!(
            std::fs::read_to_string(format!("{dir}/desc.json")).unwrap(),
            out(&desc),
            "{f}"
        );
        let state: serde_json::Value = serde_json::from_str(&out(&inspect)).unwrap();
        let sections = std::fs::read_dir(format!("{dir}/sections"))
            .unwrap()
            .count();
        // Every key but `ram` is a device section with its own file.
        assert_eq!(sections + 1, state.as_object().unwrap().len(), "{f}");
        let ram = std::fs::metadata(format!("{dir}/ram/pc.ram.bin")).unwrap();
        assert_eq!(ram.len(), 32 << 20, "{f}: -m 32");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// `rewrite --format v4` and back is byte-identical on the fixtures of both builds whose
/// machine types send no COMMAND record.
#[test]
fn rewrite_format_round_trips_streams_of_both_builds() {
    for f in FIXTURES_V2.iter().filter(|f| !sends_command(f)) {
        v4_round_trip(f);
    }
}

/// The same on the pc-*-10.0 fixtures, which carry a SWITCHOVER_START COMMAND record: needs
/// the codec's v4 support for COMMAND records (issue 12 item 5).
#[test]
fn rewrite_format_round_trips_streams_with_command_records() {
    for f in FIXTURES_V2.iter().filter(|f| sends_command(f)) {
        v4_round_trip(f);
    }
}

/// v3 → v4 conversion reads the trailer with the CLI's one description reader: a body that
/// does not match its entry is refused with the section, byte, field and reason.
#[test]
fn rewrite_format_names_a_body_that_does_not_match_its_description() {
    let mut bytes = std::fs::read(fixture("pc-7.2-bios.vmstate")).unwrap();
    let field = br#"{"name": "imr", "type": "uint8", "size": 1}"#;
    // The last `imr` is i8259 instance 1's.
    let at = bytes
        .windows(field.len())
        .rposition(|w| w == field)
        .unwrap();
    bytes[at + field.len() - 2] = b'2';
    let src = tmp("imr-size.vmstate");
    std::fs::write(&src, &bytes).unwrap();
    let v4 = tmp("imr-size.v4");
    for extra in [&[][..], &["--no-crc"][..]] {
        let mut args = vec!["rewrite", &src, &v4, "--format", "v4"];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(Exit::Invalid.status()), "{}", err(&o));
        assert!(
            err(&o).contains(
                "section 'i8259' instance 1: at byte 533199 (0x822cf), field imr: type uint8 \
                 is 1 bytes wide, description says 2"
            ),
            "{}",
            err(&o)
        );
    }
    let _ = std::fs::remove_file(src);
}

fn v4_round_trip(f: &str) {
    let src = fixture(&format!("{f}.vmstate"));
    let (v4, back) = (tmp(&format!("{f}.rt.v4")), tmp(&format!("{f}.rt.v3")));
    let o = run(&["rewrite", &src, &v4, "--format", "v4"]);
    assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
    let o = run(&["rewrite", &v4, &back, "--format", "v3"]);
    assert_eq!(o.status.code(), Some(0), "{f}: {}", err(&o));
    assert!(
        std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap(),
        "{f}: v3 -> v4 -> v3 is byte-identical"
    );
    for p in [v4, back] {
        let _ = std::fs::remove_file(p);
    }
}

/// A stream without section footers and trailer (QEMU 7.2, `-M pc-i440fx-2.2`): `inspect`
/// shows the map as far as the RAM parser and the typed device tables measure it and names the
/// first section it cannot measure; commands that write a stream refuse it, saying why.
#[test]
fn inspect_maps_a_stream_without_footers_as_far_as_the_typed_models_reach() {
    let old = fixture("q72-pc-i440fx-2.2.vmstate");
    let o = run(&["inspect", &old]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let text = out(&o);
    for row in [
        "offset=0x00000008\tkind=start\tid=2\tidstr=ram\tinstance=0\tversion=4\tbody=121\tdetail=5 blocks",
        "offset=0x00042539\tkind=end\tid=2\tidstr=ram",
        "offset=0x00042546\tkind=full\tid=0\tidstr=timer\tinstance=0\tversion=2\tbody=24",
        "stop at 0x00042589: section 'cpu_common' instance 0 (id 4) cannot be measured (no section \
         footers, no VMDESCRIPTION trailer, no typed model): the map stops here, 12439 bytes \
         before the end",
        "RAM total 5 blocks, 8273 zero pages, 48 normal pages",
    ] {
        assert!(text.contains(row), "{row}\n{text}");
    }
    // Every stream with footers is told apart from it.
    for name in
        std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host-tests/fixtures"))
            .unwrap()
    {
        let name = name.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".vmstate") {
            let bytes = std::fs::read(fixture(&name)).unwrap();
            assert_eq!(
                vmstate::stream::probe_section_footers(&bytes),
                !name.contains("-2.2."),
                "{name}"
            );
        }
    }
    let dir = tmp("old-rewrite.vmstate");
    let o = run(&["rewrite", &old, &dir]);
    assert_eq!(o.status.code(), Some(Exit::Invalid.status()));
    assert!(
        err(&o).contains(
            "at byte 271753 (0x42589): section 'cpu_common' instance 0 (id 4): cannot measure its \
             body: the stream has no section footers"
        ),
        "{}",
        err(&o)
    );
    assert!(!std::path::Path::new(&dir).exists());
}

// The binary on the real QEMU 10.0 streams that carry a COMMAND record (SWITCHOVER_START,
// `08 00 0b 00 00`, machine types >= 10.0): inspect names it, rewrite keeps it (v3 and v4),
// diff reports it, extract, verify and check go through it.

/// The streams of machine types >= 10.0.
const WITH_COMMAND: &[&str] = &[
    "q10-pc-i440fx-10.0",
    "q10-pc-q35-10.0",
    "q10-pc-i440fx-10.0-ignore-shared",
];

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn command_offset(bytes: &[u8]) -> usize {
    bytes
        .windows(5)
        .position(|w| w == [8, 0, 0x0b, 0, 0])
        .unwrap()
}

#[test]
fn inspect_shows_the_command_by_name_at_its_offset() {
    for name in WITH_COMMAND {
        let f = fixture(&format!("{name}.vmstate"));
        let at = command_offset(&std::fs::read(&f).unwrap());
        let map = ok(&["inspect", &f]);
        let rows: Vec<&str> = map.lines().filter(|l| l.contains("kind=command")).collect();
        assert_eq!(
            rows,
            [format!(
                "offset=0x{at:08x}\tkind=command\tbody=0\tdetail=COMMAND SWITCHOVER_START"
            )],
            "{name}"
        );
    }
}

#[test]
fn rewrite_keeps_the_command_in_v3_and_v4() {
    for name in WITH_COMMAND {
        let f = fixture(&format!("{name}.vmstate"));
        let original = std::fs::read(&f).unwrap();
        let (v3, v4, back) = (
            tmp(&format!("{name}.v3")),
            tmp(&format!("{name}.v4")),
            tmp(&format!("{name}.back")),
        );
        ok(&["rewrite", &f, &v3]);
        assert!(
            std::fs::read(&v3).unwrap() == original,
            "{name}: v3 rewrite"
        );
        ok(&["rewrite", "--format", "v4", &f, &v4]);
        let v4_bytes = std::fs::read(&v4).unwrap();
        // The v4 COMMAND record: type 08, length 8 (4 + CRC), the v3 bytes after 08.
        assert!(
            v4_bytes
                .windows(9)
                .any(|w| w == [8, 0, 0, 0, 8, 0, 0x0b, 0, 0]),
            "{name}: no v4 COMMAND record"
        );
        ok(&["rewrite", "--format", "v3", &v4, &back]);
        assert!(
            std::fs::read(&back).unwrap() == original,
            "{name}: v3 -> v4 -> v3 differs"
        );
    }
}

#[test]
fn diff_extract_verify_and_check_go_through_the_command() {
    let a = fixture("q10-pc-i440fx-7.2.vmstate");
    let b = fixture("q10-pc-i440fx-10.0.vmstate");
    let o = run(&["diff", &a, &b]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.lines().any(|l| l == "commands: - -> SWITCHOVER_START"),
        "{text:.2000}"
    );
    assert_eq!(run(&["diff", &b, &b]).status.code(), Some(0));
    for name in WITH_COMMAND {
        let f = fixture(&format!("{name}.vmstate"));
        let dir = tmp(&format!("{name}.extract"));
        let _ = std::fs::remove_dir_all(&dir);
        ok(&["extract", &f, &dir]);
        // A stream is compatible with capabilities taken from itself.
        let caps = tmp(&format!("{name}.caps"));
        ok(&["caps", "--stream", &f, &caps]);
        ok(&["check", "--dest", &caps, &f]);
    }
    for name in WITH_COMMAND {
        let text = ok(&["verify", &fixture(&format!("{name}.vmstate"))]);
        assert!(text.contains(": ok: "), "{text}");
    }
}
