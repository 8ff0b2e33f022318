//! The `vmstate static-check` binary given exactly the arguments QEMU's
//! `vmstate-static-checker.py` was given for each case of
//! `host-tests/fixtures/static-checker/cases.txt` writes the script's recorded standard output
//! and exits with its status; standard error is empty where the script's is, else one
//! `vmstate: ` line (instead of a traceback or usage text). Also the other argument forms.

use std::path::PathBuf;
use std::process::{Command, Output};
use vmstate_cli::exit::Exit;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host-tests/fixtures/static-checker")
}

fn static_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .arg("static-check")
        .args(args)
        .current_dir(dir())
        .output()
        .expect("run vmstate")
}

fn expected(name: &str, ext: &str) -> Vec<u8> {
    let p = dir().join("expected").join(format!("{name}.{ext}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Asserts the binary's output equals case `name`'s recorded script output.
fn assert_case(name: &str, o: &Output) {
    let script: u8 = String::from_utf8(expected(name, "status"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The script's status, except where it would be mistaken for a count.
    let stopped = !expected(name, "stderr").is_empty();
    let status = i32::from(vmstate_cli::static_check::status_of_script(script, stopped));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&expected(name, "stdout")),
        "{name}: stdout"
    );
    assert_eq!(o.status.code(), Some(status), "{name}: exit status");
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    if expected(name, "stderr").is_empty() {
        assert_eq!(err, "", "{name}: stderr");
    } else {
        assert!(
            err.starts_with("vmstate: ") && err.lines().count() == 1,
            "{name}: {err:?}"
        );
    }
}

#[test]
fn the_binary_with_the_scripts_arguments_prints_what_the_script_printed() {
    let cases = std::fs::read_to_string(dir().join("cases.txt")).unwrap();
    let mut n = 0;
    for line in cases
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap();
        let args: Vec<&str> = words.collect();
        assert_case(name, &static_check(&args));
        n += 1;
    }
    assert!(n >= 61, "{n} cases");
}

#[test]
fn file_arguments_and_long_options_are_the_same_check() {
    assert_case(
        "qemu-dump1--dump2",
        &static_check(&["dump1.json", "dump2.json"]),
    );
    assert_case(
        "qemu-dump1--dump2-reverse",
        &static_check(&["--reverse", "dump1.json", "dump2.json"]),
    );
    assert_case(
        "qemu-dump1--dump2",
        &static_check(&["--src", "dump1.json", "--dest", "dump2.json"]),
    );
    assert_case(
        "qemu-dump2--dump1",
        &static_check(&["--dst", "dump1.json", "dump2.json"]),
    );
    assert_case(
        "edge",
        &static_check(&["-s", "crafted/edge-src.json", "crafted/edge-dst.json"]),
    );
    // Not two dumps: usage errors, exit 102, nothing on stdout.
    for args in [
        &["dump1.json"][..],
        &["dump1.json", "dump2.json", "dump1.json"],
        &["-s", "dump1.json", "-d", "dump2.json", "dump1.json"],
        &[],
    ] {
        let o = static_check(args);
        assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?}");
    }
}
