//! Every command reads a stream's description with one reader and reaches one verdict
//! (issue 13 item 11): a trailer with a raw NUL, two sections swapped in the stream or in the
//! description, an unknown key, version -1, a float or 2^64 `page_size`, and a 59 MB trailer
//! (under an address-space limit) each go through `verify`, `inspect`, `inspect --desc`,
//! `diff`, `rewrite` and `check`, which must all accept or all refuse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vmstate_cli::Stream;
use vmstate_cli::model::Item;

const FIXTURE: &str = "q72-pc-i440fx-7.2";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
}

fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-one-verdict");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `vmstate ARGS`, optionally under `ulimit -v KIB`.
fn run(args: &[&str], limit_kib: Option<u64>) -> Output {
    let bin = env!("CARGO_BIN_EXE_vmstate");
    match limit_kib {
        None => Command::new(bin).args(args).output().unwrap(),
        Some(k) => Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {k} && exec \"$0\" \"$@\""))
            .arg(bin)
            .args(args)
            .output()
            .unwrap(),
    }
}

/// The stream with its trailer's JSON replaced.
fn with_json(bytes: &[u8], json: &[u8]) -> Vec<u8> {
    let at = vmstate::wire::Trailer::locate(bytes).unwrap();
    let mut out = bytes[..at + 1].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out
}

fn json_of(bytes: &[u8]) -> &[u8] {
    &bytes[vmstate::wire::Trailer::locate(bytes).unwrap() + 5..]
}

fn replace_once(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{} not found", String::from_utf8_lossy(from)));
    [&hay[..at], to, &hay[at + from.len()..]].concat()
}

/// The byte ranges of the two section records `x` and `y` (idstr, instance), adjacent.
fn record_ranges(bytes: &[u8], x: (&str, u32), y: (&str, u32)) -> (usize, usize, usize) {
    let s = Stream::parse(bytes).unwrap();
    let find = |(name, inst): (&str, u32)| {
        s.entries
            .iter()
            .find(|e| match &e.item {
                Item::Device { section, .. } => {
                    section.idstr == name.as_bytes() && section.instance_id == inst
                }
                _ => false,
            })
            .map(|e| (e.offset, e.end))
            .unwrap()
    };
    let ((a, a_end), (b, b_end)) = (find(x), find(y));
    assert_eq!(a_end, b, "the records are adjacent");
    (a, b, b_end)
}

/// Each command's verdict on `path`: true = accepted.
fn verdicts(path: &Path, limit_kib: Option<u64>) -> Vec<(&'static str, bool, String)> {
    let p = path.to_str().unwrap();
    let out = dir().join(format!(
        "{}.out",
        path.file_name().unwrap().to_str().unwrap()
    ));
    let out = out.to_str().unwrap();
    let dump = fixture(&format!("{FIXTURE}.dump-vmstate.json"));
    let runs: [(&'static str, Vec<&str>); 6] = [
        ("verify", vec!["verify", p]),
        ("inspect", vec!["inspect", p]),
        ("inspect --desc", vec!["inspect", "--desc", p]),
        ("diff", vec!["diff", p, p]),
        ("rewrite", vec!["rewrite", p, out]),
        ("check", vec!["check", p, "--dest", dump.to_str().unwrap()]),
    ];
    runs.into_iter()
        .map(|(name, args)| {
            let o = run(&args, limit_kib);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // No command may die of the memory limit instead of answering.
            assert!(o.status.code().is_some(), "{name}: killed: {text}");
            (name, o.status.success(), text)
        })
        .collect()
}

/// Every command accepts (`true`) or every command refuses (`false`) `bytes`.
fn assert_one_verdict(name: &str, bytes: &[u8], accepted: bool, limit_kib: Option<u64>) {
    let path = dir().join(format!("{name}.vmstate"));
    std::fs::write(&path, bytes).unwrap();
    for (cmd, ok, text) in verdicts(&path, limit_kib) {
        assert_eq!(
            ok,
            accepted,
            "{name}: `{cmd}` {} it: {text:.1500}",
            if ok { "accepts" } else { "refuses" }
        );
        if !ok {
            assert!(
                !text.trim().is_empty(),
                "{name}: `{cmd}` refuses without a word"
            );
        }
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn trailer_defects_are_refused_by_every_command() {
    let bytes = std::fs::read(fixture(&format!("{FIXTURE}.vmstate"))).unwrap();
    let json = json_of(&bytes);
    assert_one_verdict("original", &bytes, true, None);
    // A raw NUL in the JSON (verify used to check 19 sections less and exit 0).
    let nul = replace_once(json, b", \"devices\"", b",\0\"devices\"");
    assert_one_verdict("nul", &with_json(&bytes, &nul), false, None);
    // A NUL followed by a complete trailer of its own: readers from the end and the record
    // walk would see different descriptions.
    let mut inner = json[..json.len() - 1].to_vec();
    inner.extend_from_slice(b", \"x\": \"\0");
    inner.push(6);
    inner.extend_from_slice(&(json.len() as u32).to_be_bytes());
    inner.extend_from_slice(json);
    assert_one_verdict("nul-and-trailer", &with_json(&bytes, &inner), false, None);
    for (name, from, to) in [
        (
            "unknown-key",
            &b"\"page_size\": 4096"[..],
            &b"\"page_size\": 4096, \"zzz\": 1"[..],
        ),
        ("version-minus-one", b"\"version\": 2", b"\"version\": -1"),
        (
            "float-page-size",
            b"\"page_size\": 4096",
            b"\"page_size\": 4096.0",
        ),
        (
            "page-size-2-64",
            b"\"page_size\": 4096",
            b"\"page_size\": 18446744073709551616",
        ),
    ] {
        assert_one_verdict(
            name,
            &with_json(&bytes, &replace_once(json, from, to)),
            false,
            None,
        );
    }
}

#[test]
fn swapped_sections_are_accepted_by_every_command() {
    let bytes = std::fs::read(fixture(&format!("{FIXTURE}.vmstate"))).unwrap();
    // QEMU's loader and analyze-migration.py key sections by (idstr, instance id): two
    // sections in the other order, in the stream or in the description, are the same state.
    for (x, y) in [(("serial", 0), ("serial", 1)), (("fdc", 0), ("ps2kbd", 0))] {
        let (a, b, end) = record_ranges(&bytes, x, y);
        let swapped = [&bytes[..a], &bytes[b..end], &bytes[a..b], &bytes[end..]].concat();
        assert_one_verdict(&format!("swapped-{}", x.0), &swapped, true, None);
    }
    // The description's entries swapped (the serial ports' objects are the same length).
    let json = json_of(&bytes);
    let first = br#"{"name": "serial", "instance_id": 0"#;
    let second = br#"{"name": "serial", "instance_id": 1"#;
    let swapped = replace_once(&replace_once(json, first, b"@@FIRST@@"), second, first);
    let swapped = replace_once(&swapped, b"@@FIRST@@", second);
    assert_one_verdict(
        "description-swapped",
        &with_json(&bytes, &swapped),
        true,
        None,
    );
}

#[test]
fn a_59_mb_trailer_is_refused_within_a_memory_limit() {
    let bytes = std::fs::read(fixture(&format!("{FIXTURE}.vmstate"))).unwrap();
    let json = json_of(&bytes);
    let pad = vec![b' '; 59 << 20];
    let big = replace_once(
        json,
        b"\"page_size\": 4096",
        &[b"\"page_size\": 4096", &pad[..]].concat(),
    );
    // 384 MiB of address space: the 61 MB input mapped, the binary, and no copy of the JSON.
    assert_one_verdict(
        "big-trailer",
        &with_json(&bytes, &big),
        false,
        Some(384 << 10),
    );
}
