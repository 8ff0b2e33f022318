//! `vmstate check` gives the verdict the real destination QEMU gives.
//!
//! Each case loads a stream into a real destination QEMU (7.2 or 10.0, `-incoming "exec:cat
//! FILE"`, or `defer` + `migrate-incoming` where a capability must be set first), waits for
//! `query-migrate` to say `completed` or `failed`, and compares that with `check` against the
//! destination described by the build's `-dump-vmstate` for that machine type (and, where the
//! destination build wrote a stream of that machine type, by dump + stream and by the stream
//! alone where a stream shows all that decides the case). A "no" must name the same reason QEMU
//! gives: the machine type, a version, a subsection, a capability.
//!
//! Also here: the facts table for sections no dump shows (`vmstate_cli::dest::BUILDS`) covers
//! every section of every fixture its build wrote.

use serde_json::json;
use std::path::{Path, PathBuf};
use vmstate_cli::dest::{self, CapsArgs, Destination, Problem, Reason};
use vmstate_host_tests::qemu::{self, LoadOutcome, Qemu, SHARED_RAM, temp_stream};
use vmstate_host_tests::{QemuBuild, fixture, fixture_path};

/// The dump file of `build` for `machine` (make-fixtures.py `dump_name`).
fn dump_path(build: QemuBuild, machine: &str) -> PathBuf {
    let b = match build {
        QemuBuild::V7_2 => "q72",
        QemuBuild::V10_0 => "q10",
    };
    fixture_path(&format!("{b}-{machine}.dump-vmstate.json"))
}

/// The fixture `build` wrote for `machine`, if there is one.
fn dest_stream(build: QemuBuild, machine: &str) -> Option<PathBuf> {
    let b = match build {
        QemuBuild::V7_2 => "q72",
        QemuBuild::V10_0 => "q10",
    };
    let p = fixture_path(&format!("{b}-{machine}.vmstate"));
    p.is_file().then_some(p)
}

struct Case<'a> {
    /// What the case shows.
    what: &'a str,
    /// The stream.
    stream: PathBuf,
    /// The destination build and machine type.
    build: QemuBuild,
    machine: &'a str,
    /// Extra destination options (beyond COMMON, machine, DEVICES).
    extra: &'a [&'a str],
    /// Migration capabilities the destination sets (then `-incoming defer`).
    capabilities: &'a [&'a str],
    /// `None`: QEMU loads it; `Some((reason, phrase))`: QEMU refuses, its stderr contains
    /// `phrase`, and `check` names `reason`.
    refused: Option<(Reason, &'a str)>,
    /// Whether the destination's own stream (alone) shows everything that decides this case.
    stream_alone_decides: bool,
}

fn load(case: &Case<'_>) -> Option<LoadOutcome> {
    let args = [qemu::fixture_machine(case.machine), case.extra.to_vec()].concat();
    if case.capabilities.is_empty() {
        let mut q = Qemu::incoming_on(case.build, &case.stream, &args)?;
        return Some(q.wait_loaded());
    }
    let mut q = Qemu::start(
        case.build,
        &[&args[..], &["-S", "-incoming", "defer"]].concat(),
    )?;
    let caps: Vec<_> = case
        .capabilities
        .iter()
        .map(|c| json!({ "capability": c, "state": true }))
        .collect();
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    let uri = format!("exec:cat '{}'", case.stream.display());
    q.execute("migrate-incoming", json!({ "uri": uri }));
    Some(q.wait_loaded())
}

fn destination(case: &Case<'_>, dump: bool, stream: Option<&Path>) -> Destination {
    let dump_file = dump_path(case.build, case.machine);
    let args = CapsArgs {
        dump: dump.then_some(dump_file.as_path()),
        streams: stream.into_iter().collect(),
        qemu: None,
        vendors: Vec::new(),
        capabilities: case.capabilities.iter().map(|c| c.to_string()).collect(),
    };
    dest::destination(&args).unwrap_or_else(|e| panic!("{}: destination: {e}", case.what))
}

fn verdict(case: &Case<'_>, d: &Destination, form: &str) -> Vec<Problem> {
    let bytes = std::fs::read(&case.stream).unwrap();
    let problems = dest::check(&bytes, d)
        .unwrap_or_else(|e| panic!("{} ({form}): check failed: {e}", case.what));
    match case.refused {
        None => assert!(
            problems.is_empty(),
            "{} ({form}): QEMU loads it, check says {problems:#?}",
            case.what
        ),
        Some((reason, _)) => assert!(
            problems.iter().any(|p| p.reason == reason),
            "{} ({form}): QEMU refuses it ({reason}), check says {problems:#?}",
            case.what
        ),
    }
    problems
}

fn run(case: &Case<'_>) {
    // check's verdict from the dump, and from dump + the destination's own stream.
    verdict(case, &destination(case, true, None), "dump");
    let own = dest_stream(case.build, case.machine);
    if let Some(own) = &own {
        verdict(case, &destination(case, true, Some(own)), "dump + stream");
        if case.stream_alone_decides {
            verdict(case, &destination(case, false, Some(own)), "stream");
        }
    }
    // The real destination.
    let Some(outcome) = load(case) else {
        return;
    };
    match (&case.refused, outcome) {
        (None, LoadOutcome::Completed) => {}
        (Some((_, phrase)), LoadOutcome::Failed(stderr)) => assert!(
            stderr.contains(phrase),
            "{}: QEMU refused it, but not with {phrase:?}: {stderr}",
            case.what
        ),
        (want, got) => panic!(
            "{}: expected QEMU {} it, got {got:?}",
            case.what,
            if want.is_some() {
                "to refuse"
            } else {
                "to load"
            }
        ),
    }
}

fn case<'a>(
    what: &'a str,
    stream: &str,
    build: QemuBuild,
    machine: &'a str,
    refused: Option<(Reason, &'a str)>,
) -> Case<'a> {
    Case {
        what,
        stream: fixture_path(stream),
        build,
        machine,
        extra: &[],
        capabilities: &[],
        refused,
        stream_alone_decides: true,
    }
}

const MACHINE: Option<(Reason, &str)> = Some((Reason::MachineType, "Machine type received is"));

#[test]
fn streams_of_7_2_load_into_7_2_and_into_10_0_with_the_same_machine_type() {
    use QemuBuild::*;
    for c in [
        case(
            "7.2 pc -> 7.2",
            "q72-pc-i440fx-7.2.vmstate",
            V7_2,
            "pc-i440fx-7.2",
            None,
        ),
        case(
            "7.2 q35 -> 7.2",
            "q72-pc-q35-7.2.vmstate",
            V7_2,
            "pc-q35-7.2",
            None,
        ),
        case(
            "7.2 pc -> 10.0 pc-i440fx-7.2",
            "q72-pc-i440fx-7.2.vmstate",
            V10_0,
            "pc-i440fx-7.2",
            None,
        ),
        case(
            "7.2 q35 -> 10.0 pc-q35-7.2",
            "q72-pc-q35-7.2.vmstate",
            V10_0,
            "pc-q35-7.2",
            None,
        ),
    ] {
        run(&c);
    }
}

#[test]
fn a_stream_10_0_wrote_for_pc_i440fx_7_2_loads_into_7_2() {
    use QemuBuild::*;
    for c in [
        case(
            "10.0 pc-i440fx-7.2 -> 7.2",
            "q10-pc-i440fx-7.2.vmstate",
            V7_2,
            "pc-i440fx-7.2",
            None,
        ),
        case(
            "10.0 pc-q35-7.2 -> 7.2",
            "q10-pc-q35-7.2.vmstate",
            V7_2,
            "pc-q35-7.2",
            None,
        ),
        case(
            "10.0 pc-i440fx-7.2 -> 10.0",
            "q10-pc-i440fx-7.2.vmstate",
            V10_0,
            "pc-i440fx-7.2",
            None,
        ),
    ] {
        run(&c);
    }
}

#[test]
fn streams_of_10_0_machine_types_load_into_10_0() {
    use QemuBuild::*;
    for c in [
        case(
            "10.0 pc -> 10.0",
            "q10-pc-i440fx-10.0.vmstate",
            V10_0,
            "pc-i440fx-10.0",
            None,
        ),
        case(
            "10.0 q35 -> 10.0",
            "q10-pc-q35-10.0.vmstate",
            V10_0,
            "pc-q35-10.0",
            None,
        ),
    ] {
        run(&c);
    }
}

#[test]
fn another_machine_type_is_refused() {
    use QemuBuild::*;
    for c in [
        case(
            "pc-i440fx-10.0 -> 7.2",
            "q10-pc-i440fx-10.0.vmstate",
            V7_2,
            "pc-i440fx-7.2",
            MACHINE,
        ),
        case(
            "7.2 pc -> 10.0 pc-i440fx-10.0",
            "q72-pc-i440fx-7.2.vmstate",
            V10_0,
            "pc-i440fx-10.0",
            MACHINE,
        ),
        case(
            "q35 -> pc (7.2)",
            "q72-pc-q35-7.2.vmstate",
            V7_2,
            "pc-i440fx-7.2",
            MACHINE,
        ),
        case(
            "q35 -> pc (10.0)",
            "q10-pc-q35-10.0.vmstate",
            V10_0,
            "pc-i440fx-10.0",
            MACHINE,
        ),
        case(
            "pc -> q35 (10.0)",
            "q10-pc-i440fx-7.2.vmstate",
            V10_0,
            "pc-q35-7.2",
            MACHINE,
        ),
    ] {
        run(&c);
    }
}

/// `port92`'s section header (and its trailer entry) say version 2; both builds know version 1
/// only.
fn port92_version_2() -> PathBuf {
    let mut bytes = fixture("q72-pc-i440fx-7.2.vmstate");
    // FULL header tail: idstr "port92", instance 0, version 1.
    let pat = b"\x06port92\x00\x00\x00\x00\x00\x00\x00\x01";
    let at = bytes
        .windows(pat.len())
        .position(|w| w == pat)
        .expect("port92 header");
    assert_eq!(
        bytes[at + pat.len()..]
            .windows(pat.len())
            .position(|w| w == pat),
        None,
        "one port92 header"
    );
    bytes[at + pat.len() - 1] = 2;
    let entry = br#""name": "port92", "instance_id": 0, "vmsd_name": "port92", "version": 1"#;
    let at = bytes
        .windows(entry.len())
        .position(|w| w == entry)
        .expect("port92 trailer entry");
    bytes[at + entry.len() - 1] = b'2';
    temp_stream("port92-v2.vmstate", &bytes)
}

#[test]
fn a_section_version_above_the_destinations_is_refused() {
    use QemuBuild::*;
    let stream = port92_version_2();
    let version = Some((Reason::Version, "unsupported version 2 for 'port92'"));
    for (what, build) in [("port92 v2 -> 7.2", V7_2), ("port92 v2 -> 10.0", V10_0)] {
        let mut c = case(what, "", build, "pc-i440fx-7.2", version);
        c.stream = stream.clone();
        run(&c);
    }
    let _ = std::fs::remove_file(stream);
}

#[test]
fn a_subsection_only_the_newer_build_knows_is_refused_by_the_older_when_sent() {
    use QemuBuild::*;
    // i8259/ltim (QEMU 8.0+), sent because the guest set LTIM.
    let mut older = case(
        "ltim in use -> 7.2",
        "q10-pc-i440fx-7.2-ltim.vmstate",
        V7_2,
        "pc-i440fx-7.2",
        Some((Reason::Subsection, "i8259")),
    );
    older.stream_alone_decides = true;
    run(&older);
    // 10.0 knows it; its own stream of that machine type does not show it (not needed there),
    // so only the dump decides.
    let mut newer = case(
        "ltim in use -> 10.0",
        "q10-pc-i440fx-7.2-ltim.vmstate",
        V10_0,
        "pc-i440fx-7.2",
        None,
    );
    newer.stream_alone_decides = false;
    run(&newer);
    // Not sent: both load it (the q10-pc-i440fx-7.2 cases above).
}

#[test]
fn x_ignore_shared_must_be_set_on_both_sides() {
    use QemuBuild::*;
    let off = Case {
        extra: SHARED_RAM,
        stream_alone_decides: false,
        ..case(
            "x-ignore-shared stream -> 10.0 without the capability",
            "q10-pc-i440fx-10.0-ignore-shared.vmstate",
            V10_0,
            "pc-i440fx-10.0",
            Some((Reason::Capability, "x-ignore-shared")),
        )
    };
    run(&off);
    for (stream, build, machine) in [
        (
            "q10-pc-i440fx-10.0-ignore-shared.vmstate",
            V10_0,
            "pc-i440fx-10.0",
        ),
        (
            "q72-pc-i440fx-7.2-ignore-shared.vmstate",
            V7_2,
            "pc-i440fx-7.2",
        ),
    ] {
        let on = Case {
            extra: SHARED_RAM,
            capabilities: &["x-ignore-shared"],
            stream_alone_decides: false,
            ..case(
                "x-ignore-shared on both sides",
                stream,
                build,
                machine,
                None,
            )
        };
        run(&on);
    }
}

/// Every section of every fixture a build wrote is either in that build's dump (by vmsd name)
/// or in the build's facts table, with its version in range and its subsections known.
#[test]
fn the_facts_table_covers_what_the_dumps_lack() {
    for (prefix, build, version) in [
        ("q72-", QemuBuild::V7_2, "7.2"),
        ("q10-", QemuBuild::V10_0, "10.0"),
    ] {
        let facts = dest::build(version).expect("facts");
        for entry in std::fs::read_dir(fixture_path("")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            // pc-i440fx-2.2 writes no trailer (and is not in the dumps).
            if !(name.starts_with(prefix) && name.ends_with(".vmstate")) || name.contains("-2.2") {
                continue;
            }
            let machine = if name.contains("q35") {
                if name.contains("10.0") {
                    "pc-q35-10.0"
                } else {
                    "pc-q35-7.2"
                }
            } else if name.contains("10.0") {
                "pc-i440fx-10.0"
            } else {
                "pc-i440fx-7.2"
            };
            let dump: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dump_path(build, machine)).unwrap()).unwrap();
            let in_dump: Vec<&str> = dump
                .as_object()
                .unwrap()
                .values()
                .filter_map(|d| d.get("Description")?.get("name")?.as_str())
                .collect();
            let theirs = Destination::from_stream(&fixture(&name), &name).unwrap();
            for s in &theirs.sections {
                if in_dump.contains(&s.name.as_str()) {
                    continue;
                }
                let f = facts
                    .not_in_dump
                    .iter()
                    .find(|f| f.name == s.name)
                    .unwrap_or_else(|| panic!("{name}: section {} is in neither the dump nor the QEMU {version} facts", s.name));
                assert!(
                    (f.min_version..=f.max_version).contains(&s.max_version),
                    "{name}: {} version {}",
                    s.name,
                    s.max_version
                );
                for sub in &s.subsections {
                    assert!(
                        f.subsections.contains(&sub.as_str()),
                        "{name}: {} subsection {sub} is not in the QEMU {version} facts",
                        s.name
                    );
                }
            }
        }
    }
}
