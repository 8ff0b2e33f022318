//! `vmstate static-check` equals QEMU 10.0's `scripts/vmstate-static-checker.py` line for line
//! and in exit status, on every case of `host-tests/fixtures/static-checker/cases.txt`: QEMU's
//! own test data (`dump1.json`, `dump2.json`), every ordered pair of the real `-dump-vmstate`
//! fixtures of QEMU 7.2 and 10.0, hand-made corner cases and inputs the script stops on. The
//! script's outputs are stored in `expected/` (made by `make-expected.sh`, see the README
//! there), so no Python is needed; with `VMSTATE_QEMU_SRC` set and `python3` available the
//! script also runs live.
//!
//! The library's `static_check::run` is what the binary prints (stdout, then stderr) and exits
//! with; `cli/tests/static_checker_cli.rs` runs the binary itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use vmstate_cli::static_check::{Outcome, run};

fn dir() -> PathBuf {
    vmstate_host_tests::fixture_path("static-checker")
}

/// One line of cases.txt: a name and the script's arguments.
struct Case {
    name: String,
    args: Vec<String>,
    src: PathBuf,
    dst: PathBuf,
    reverse: bool,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("cases.txt")).unwrap();
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut words = line.split_whitespace().map(String::from);
        let name = words.next().unwrap();
        let args: Vec<String> = words.collect();
        let (mut src, mut dst, mut reverse) = (None, None, false);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-s" => src = it.next().map(|p| dir().join(p)),
                "-d" => dst = it.next().map(|p| dir().join(p)),
                "--reverse" => reverse = true,
                other => panic!("{name}: unexpected argument {other}"),
            }
        }
        let (src, dst) = (src.expect("-s"), dst.expect("-d"));
        out.push(Case {
            name,
            args,
            src,
            dst,
            reverse,
        });
    }
    out
}

/// The script's recorded (stdout, stderr, status) for a case.
fn expected(name: &str) -> (String, String, u8) {
    let read = |ext: &str| {
        let p = dir().join("expected").join(format!("{name}.{ext}"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let status = read("status").trim().parse().unwrap();
    (read("stdout"), read("stderr"), status)
}

/// Our outcome equals the script's: stdout byte for byte, the status where it cannot be
/// mistaken for a count (`status_of_script`); stderr empty where the script's is, else our
/// one `vmstate: ` line in place of its traceback or usage text.
fn assert_same(name: &str, ours: &Outcome, stdout: &str, stderr: &str, status: u8) {
    assert_eq!(ours.stdout, stdout, "{name}: stdout");
    assert_eq!(
        ours.status,
        vmstate_cli::static_check::status_of_script(status, !stderr.is_empty()),
        "{name}: exit status"
    );
    if stderr.is_empty() {
        assert_eq!(ours.stderr, "", "{name}: stderr");
    } else {
        assert!(
            ours.stderr.starts_with("vmstate: ")
                && ours.stderr.ends_with('\n')
                && ours.stderr.lines().count() == 1,
            "{name}: stderr should be one vmstate: line, is {:?}",
            ours.stderr
        );
        if status == 1 {
            assert!(
                ours.stderr.starts_with("vmstate: invalid input: "),
                "{name}"
            );
        }
    }
}

#[test]
fn static_check_equals_the_script_on_every_case() {
    let cases = cases();
    for c in &cases {
        let (stdout, stderr, status) = expected(&c.name);
        let ours = run(&c.src, &c.dst, c.reverse);
        assert_same(&c.name, &ours, &stdout, &stderr, status);
    }
    // Every expected/ entry belongs to a case (no stale expectations), and the set covers
    // QEMU's data both ways and against itself and every ordered pair of the real dumps.
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    let mut stored: Vec<String> = std::fs::read_dir(dir().join("expected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|f| f.strip_suffix(".status").map(String::from))
        .collect();
    stored.sort();
    let mut listed: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    listed.sort();
    assert_eq!(stored, listed);
    for n in [
        "qemu-dump1--dump1",
        "qemu-dump1--dump2",
        "qemu-dump2--dump1",
        "qemu-dump2--dump2",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let dumps: Vec<String> = std::fs::read_dir(vmstate_host_tests::fixture_path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|f| f.strip_suffix(".dump-vmstate.json").map(String::from))
        .collect();
    assert!(dumps.len() >= 7, "{dumps:?}");
    for a in &dumps {
        for b in &dumps {
            let n = format!("real-{a}--{b}");
            assert!(names.contains(&n.as_str()), "no case {n}");
        }
    }
}

#[test]
fn the_issue_cases_show_what_the_script_shows() {
    // QEMU's dump1 against itself: one minimum-version problem and nothing after it (we used
    // to report "while dest has no further fields" for PIIX3-xen as well).
    let d1 = dir().join("dump1.json");
    let o = run(&d1, &d1, false);
    assert_eq!(
        (o.stdout.as_str(), o.status),
        (
            "Section \"PIIX3-xen\" Description \"PIIX3\": minimum version error: 1 < 2\n",
            1
        )
    );
    // A section-level missing entry has the script's colon.
    let o = run(&d1, &dir().join("dump2.json"), false);
    assert!(
        o.stdout
            .contains("Section \"cfi.pflash01\": Entry \"Description\" missing\n"),
        "{}",
        o.stdout
    );
    // A section below the destination's minimum version: `Section "NAME" ` and no newline,
    // not counted; the next line continues it, and at the end the output has no newline.
    let (src, dst) = (
        dir().join("crafted/edge-src.json"),
        dir().join("crafted/edge-dst.json"),
    );
    let o = run(&src, &dst, false);
    assert!(
        o.stdout
            .contains("\nSection \"sec-minver\" Section \"unused-mismatch\", "),
        "{}",
        o.stdout
    );
    assert!(o.stdout.ends_with("\nSection \"zz-last\" "), "{}", o.stdout);
    assert_eq!(o.status as usize, o.stdout.lines().count() - 2);
    // The QEMU 7.2 build's pc-i440fx-7.2 cannot take QEMU 10.0's pc-i440fx-7.2 dump as a
    // source (19 problems the other way round: 39), as the script says.
    let (q72, q10) = (
        vmstate_host_tests::fixture_path("q72-pc-i440fx-7.2.dump-vmstate.json"),
        vmstate_host_tests::fixture_path("q10-pc-i440fx-7.2.dump-vmstate.json"),
    );
    assert_eq!(
        run(&q72, &q10, false).status,
        expected("real-q72-pc-i440fx-7.2--q10-pc-i440fx-7.2").2
    );
    assert_eq!(
        run(&q10, &q72, false).status,
        expected("real-q10-pc-i440fx-7.2--q72-pc-i440fx-7.2").2
    );
    assert_eq!(run(&q72, &q10, true), run(&q10, &q72, false));
}

/// With `VMSTATE_QEMU_SRC` (a QEMU 10.0 source tree) and `python3`, the script runs live on
/// every case: its output must still equal `expected/` (and so ours).
#[test]
fn the_live_script_agrees_when_available() {
    let Some(src) = std::env::var_os("VMSTATE_QEMU_SRC") else {
        eprintln!("VMSTATE_QEMU_SRC not set: the script is not run live (expected/ is used)");
        return;
    };
    let script = Path::new(&src).join("scripts/vmstate-static-checker.py");
    let python = Command::new("python3").arg("--version").output();
    if !script.is_file() || !python.is_ok_and(|o| o.status.success()) {
        eprintln!("no python3 or no {}: not run live", script.display());
        return;
    }
    for c in cases() {
        let out = Command::new("python3")
            .arg(&script)
            .args(&c.args)
            .current_dir(dir())
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let status = out.status.code().unwrap() as u8;
        let (e_out, e_err, e_status) = expected(&c.name);
        assert_eq!(
            (&stdout, status),
            (&e_out, e_status),
            "{}: expected/ is stale",
            c.name
        );
        assert_eq!(stderr.is_empty(), e_err.is_empty(), "{}", c.name);
        assert_same(
            &c.name,
            &run(&c.src, &c.dst, c.reverse),
            &stdout,
            &stderr,
            status,
        );
    }
}
