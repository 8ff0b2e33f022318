//! Differential testing of `vmstate verify` against the real QEMU 7.2 and 10.0
//! (`vmstate_host_tests::differential`, docs/DIFFERENTIAL.md).
//!
//! The CI run: a deterministic small campaign (`SMALL` mutants of the second-generation
//! fixtures, each loaded into every build that has its machine type, two QEMU loads at a
//! time) with zero unexplained disagreements. The long run is the same test with
//! `VMSTATE_DIFFERENTIAL_MUTANTS=5000` (and optionally `VMSTATE_DIFFERENTIAL_SEED=N`); it prints
//! the table that docs/DIFFERENTIAL.md records (run with `--nocapture`).

use vmstate_host_tests::differential::{self, Campaign, HARDENING, mutants, rule_of, run, table};

/// Mutants of the CI run.
const SMALL: usize = 210;
/// Seed of the CI run.
const SEED: u64 = 0x1313_2026;

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn verify_is_never_looser_than_qemu_and_every_stricter_verdict_is_a_documented_rule() {
    if vmstate_host_tests::require_qemu(vmstate_host_tests::QemuBuild::V7_2, "qemu-system-x86_64")
        .is_none()
    {
        return;
    }
    let n = env_number("VMSTATE_DIFFERENTIAL_MUTANTS").map_or(SMALL, |n| n as usize);
    let seed = env_number("VMSTATE_DIFFERENTIAL_SEED").unwrap_or(SEED);
    let campaign = Campaign::new(seed);
    let started = std::time::Instant::now();
    let (ms, outcomes) = run(&campaign, n, 2);
    let t = table(&ms, &outcomes);
    println!(
        "differential run: {n} mutants, seed {seed:#x}, {} loads, {:.0} s\n{t}",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        outcomes.len() >= n,
        "every mutant judged on at least one build"
    );
    let bad: Vec<_> = outcomes
        .iter()
        .filter(|o| o.class.is_disagreement())
        .collect();
    assert!(bad.is_empty(), "{} disagreements:\n{t}", bad.len());
}

#[test]
fn mutants_are_deterministic_and_cover_every_kind() {
    let a = mutants(7, 120);
    let b = mutants(7, 120);
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| x.bytes == y.bytes && x.what == y.what)
    );
    for kind in [
        "field value",
        "section version",
        "instance id",
        "subsection",
        "length",
        "section",
        "COMMAND",
    ] {
        assert!(a.iter().any(|m| m.kind == kind), "no {kind} mutant");
    }
}

#[test]
fn verify_messages_map_to_rules() {
    // The message verify prints for a device rule names section and field (README's example).
    assert_eq!(
        rule_of(
            "at byte 279280 (0x442f0), section 'i8259' instance 1 (id 16), field priority_add: \
             invalid value: expected <= 0x7, found 0x9"
        ),
        "i8259.priority_add"
    );
    assert_eq!(
        rule_of("at byte 9 (0x9), section 'hpet' instance 0 (id 1): section occurs twice"),
        "stream.duplicate-section"
    );
}

#[test]
fn every_hardening_rule_is_documented() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/DIFFERENTIAL.md"),
    )
    .expect("docs/DIFFERENTIAL.md");
    for h in HARDENING {
        assert!(doc.contains(&format!("`{}`", h.id)), "{} not in docs", h.id);
    }
    let _ = differential::EXPLAINED;
}

/// QEMU's `find_se` matches instance id 0xffffffff to a handler registered without an alias
/// id: QEMU 7.2 and 10.0 load a `pcspk` section with that instance id; `verify` refuses it
/// and says why (rule `stream.instance-any`), instead of claiming QEMU refuses it.
#[test]
fn instance_id_any_is_loaded_by_qemu_and_refused_as_documented_hardening() {
    use vmstate::stream::{FooterScan, Record, Records};
    let fx = differential::FIXTURES[0];
    let mut bytes = vmstate_host_tests::fixture(fx.file);
    let at = Records::new(&bytes, FooterScan)
        .find_map(|l| match l.unwrap().record {
            Record::Section(s) if s.idstr == b"pcspk" => Some(s.body_offset - 8),
            _ => None,
        })
        .unwrap();
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let m = differential::Mutant {
        fixture: fx,
        kind: "instance id",
        what: "pcspk instance 0xffffffff".into(),
        bytes,
    };
    let path = vmstate_host_tests::qemu::temp_stream("instance-any", &m.bytes);
    for build in fx.builds {
        let Some(class) = differential::judge(&m, *build, &path) else {
            continue;
        };
        // The trailer rules fire too: the trailer still describes instance 0.
        match class {
            differential::Class::Hardening(ids) => {
                assert!(ids.contains(&"stream.instance-any"), "{build:?}: {ids:?}")
            }
            other => panic!("{build:?}: {other:?}"),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Loads `bytes` (a mutant of `fx`) on every build and returns the verdicts.
fn judge_all(fx: differential::Fixture, what: &str, bytes: Vec<u8>) -> Vec<differential::Class> {
    let m = differential::Mutant {
        fixture: fx,
        kind: "test",
        what: what.into(),
        bytes,
    };
    let path = vmstate_host_tests::qemu::temp_stream(what, &m.bytes);
    let out = fx
        .builds
        .iter()
        .filter_map(|b| differential::judge(&m, *b, &path))
        .collect();
    let _ = std::fs::remove_file(&path);
    out
}

/// POSTCOPY_RUN in a plain load: QEMU refuses it (postcopy never started); `verify` accepted
/// it (a command the build knows, with its length) until rule `command.live-only`.
#[test]
fn a_live_migration_command_is_refused_like_qemu_does() {
    use vmstate::stream::{FooterScan, Options, Record, Records};
    let fx = differential::FIXTURES[2];
    let real = vmstate_host_tests::fixture(fx.file);
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    let at = Records::with_options(&real, FooterScan, options)
        .find_map(|l| {
            let l = l.unwrap();
            matches!(l.record, Record::Configuration(_)).then_some(l.end)
        })
        .unwrap();
    let bytes = [&real[..at], &[8, 0, 5, 0, 0][..], &real[at..]].concat();
    for class in judge_all(fx, "postcopy-run", bytes) {
        assert_eq!(class, differential::Class::AgreeRefuse);
    }
}

/// `fw_cfg/acpi_mr` sent twice: QEMU loads it again (the later wins); `verify` refuses, and
/// its message names the rule (`subsection.once`).
#[test]
fn a_repeated_subsection_is_documented_hardening() {
    use vmstate::stream::{FooterScan, Record, Records};
    let fx = differential::FIXTURES[0];
    let real = vmstate_host_tests::fixture(fx.file);
    let (start, end) = Records::new(&real, FooterScan)
        .find_map(|l| match l.unwrap().record {
            Record::Section(s) if s.idstr == b"fw_cfg" => {
                let name = b"\x05\x0efw_cfg/acpi_mr";
                let i = s.body.windows(name.len()).position(|w| w == name)?;
                Some((s.body_offset + i, s.body_offset + s.body.len()))
            }
            _ => None,
        })
        .unwrap();
    let bytes = [&real[..end], &real[start..end], &real[end..]].concat();
    for class in judge_all(fx, "acpi-mr-twice", bytes) {
        match class {
            differential::Class::Hardening(ids) => assert!(ids.contains(&"subsection.once")),
            other => panic!("{other:?}"),
        }
    }
}
