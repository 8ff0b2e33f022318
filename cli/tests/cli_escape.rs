//! Names from the input never reach the terminal raw (issue 13 item 8): a stream whose device
//! idstr, field name and RAM block name hold ESC, CR, LF and BEL goes through every command;
//! their output holds no control byte but our own newlines (and `inspect`'s tabs), and the
//! escaped form of each name appears.

use std::path::PathBuf;
use std::process::Command;

/// An idstr of 6 bytes (the length of `serial`): clear the screen, then start a new line.
const IDSTR: &[u8] = b"\x1b[2J\r\n";
/// A field name (JSON escapes in the trailer) that would ring, set a window title, draw an
/// "ok" line and reverse the rest of the line.
const IDSTR_SHOWN: &str = "\\x1b[2J\\x0d\\x0a";
/// A RAM block name of 6 bytes (the length of `pc.ram`).
const BLOCK: &[u8] = b"p\x07\x1b\rm\n";
const FIELD_JSON: &str = r"i\u0007\u001b]0;pwn\u0007\rok\n\u202emr";
const FIELD_SHOWN: &str = "i\\x07\\x1b]0;pwn\\x07\\x0dok\\x0a\\u{202e}mr";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
}

fn path(name: &str) -> String {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-escape");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name).to_str().unwrap().to_string()
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    let mut n = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            n += 1;
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    assert!(n > 0, "{} not found", String::from_utf8_lossy(from));
    out
}

/// The fixture with its trailer's JSON edited by `edit`.
fn with_json(edit: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let bytes = std::fs::read(fixture("q72-pc-i440fx-7.2.vmstate")).unwrap();
    let at = vmstate::wire::Trailer::locate(&bytes).unwrap();
    let json = edit(&bytes[at + 5..]);
    let mut out = bytes[..at + 1].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// The fixture with a hostile field name in the trailer (an accepted stream).
fn hostile_field() -> Vec<u8> {
    with_json(|json| {
        replace_all(
            json,
            br#"{"name": "imr", "type": "uint8""#,
            format!(r#"{{"name": "{FIELD_JSON}", "type": "uint8""#).as_bytes(),
        )
    })
}

/// Runs `vmstate ARGS` and returns (exit status, stdout + stderr as bytes).
fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, Vec<u8>) {
    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .unwrap();
    let mut text = o.stdout;
    text.extend_from_slice(&o.stderr);
    (o.status.code(), text)
}

/// No control byte but `\n` and `\t`, no bidi override, and every name in `shown` appears
/// escaped.
fn assert_clean(what: &str, text: &[u8], shown: &[&str]) {
    let bad = text
        .iter()
        .position(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f);
    let text = String::from_utf8_lossy(text);
    assert!(!text.contains('\u{202e}'), "{what}: raw U+202E in {text:?}");
    assert!(bad.is_none(), "{what}: raw control byte in {text:?}");
    for s in shown {
        assert!(text.contains(s), "{what}: {s} not in {text:.3000}");
    }
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// The status of a command that refuses its input: `verify` reports it as a problem (1), the
/// other commands as invalid input.
fn refused(cmd: &str) -> Option<i32> {
    Some(if cmd == "verify" {
        1
    } else {
        vmstate_cli::exit::Exit::Invalid.status()
    })
}

#[test]
fn names_in_the_trailer_are_shown_escaped() {
    let p = path("field.vmstate");
    std::fs::write(&p, hostile_field()).unwrap();
    let original = fixture("q72-pc-i440fx-7.2.vmstate");
    let original = original.to_str().unwrap();

    let (code, text) = run(&[os("verify"), os(&p)]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&text));
    assert_clean("verify", &text, &[]);
    let (code, text) = run(&[os("inspect"), os(&p)]);
    assert_eq!(code, Some(0), "{}", String::from_utf8_lossy(&text));
    assert_clean("inspect", &text, &[]);
    // JSON output escapes control characters itself.
    for flag in ["--json", "--desc"] {
        let (code, text) = run(&[os("inspect"), os(flag), os(&p)]);
        assert_eq!(code, Some(0), "{flag}: {}", String::from_utf8_lossy(&text));
        assert_clean(flag, &text, &["\\u0007\\u001b]0;pwn"]);
    }
    // diff against the original names the renamed field on both sides.
    let (code, text) = run(&[os("diff"), os(original), os(&p)]);
    assert_eq!(code, Some(1), "{}", String::from_utf8_lossy(&text));
    assert_clean(
        "diff",
        &text,
        &[
            &format!("i8259[0].{FIELD_SHOWN}: - -> "),
            "i8259[0].imr: 0xb8 -> -",
        ],
    );
    // --set on a field that does not exist lists the fields, the hostile one escaped; on the
    // field itself, its type name shows in the range error.
    let out = path("field-out.vmstate");
    let (code, text) = run(&[
        os("rewrite"),
        os(&p),
        os(&out),
        os("--set"),
        os("i8259[0].nothing=1"),
    ]);
    assert_ne!(code, Some(0));
    assert_clean("--set", &text, &[FIELD_SHOWN]);
    let _ = std::fs::remove_file(&p);
}

#[test]
fn names_in_errors_are_shown_escaped() {
    // A description entry for a section the stream does not carry.
    let bytes = with_json(|json| {
        replace_all(
            json,
            br#""devices": ["#,
            br#""devices": [{"name": "\u001b[2J\r\n\u202e", "instance_id": 7, "size": 0, "fields": []}, "#,
        )
    });
    let p = path("device.vmstate");
    std::fs::write(&p, bytes).unwrap();
    let out = path("device-out.vmstate");
    for cmd in ["inspect", "verify", "rewrite", "diff"] {
        let mut args = vec![os(cmd), os(&p)];
        if cmd != "inspect" && cmd != "verify" {
            args.push(os(if cmd == "diff" { &p } else { &out }));
        }
        let (code, text) = run(&args);
        assert_eq!(
            code,
            refused(cmd),
            "{cmd}: {}",
            String::from_utf8_lossy(&text)
        );
        assert_clean(cmd, &text, &[&format!("{IDSTR_SHOWN}\\u{{202e}}")]);
    }
    // Names on the wire are printable ASCII or the stream is refused: the refusal shows the
    // byte escaped, whatever command reads it.
    let bytes = std::fs::read(fixture("q72-pc-i440fx-7.2.vmstate")).unwrap();
    let renamed = replace_all(&bytes, b"\x06pc.ram", &[&b"\x06"[..], BLOCK].concat());
    let renamed = replace_all(
        &renamed,
        b"\x06serial\x00\x00\x00\x01",
        &[&b"\x06"[..], IDSTR, b"\x00\x00\x00\x01"].concat(),
    );
    std::fs::write(&p, renamed).unwrap();
    for cmd in ["inspect", "verify", "rewrite", "diff"] {
        let mut args = vec![os(cmd), os(&p)];
        if cmd != "inspect" && cmd != "verify" {
            args.push(os(if cmd == "diff" { &p } else { &out }));
        }
        let (code, text) = run(&args);
        assert_eq!(
            code,
            refused(cmd),
            "{cmd}: {}",
            String::from_utf8_lossy(&text)
        );
        assert_clean(cmd, &text, &["name holds byte 0x07"]);
    }
    let _ = std::fs::remove_file(&p);
}

#[test]
fn static_check_escapes_names_from_the_dumps() {
    let src = fixture("q72-pc-i440fx-7.2.dump-vmstate.json");
    let json = std::fs::read(&src).unwrap();
    let renamed = replace_all(&json, br#""serial""#, br#""ser\u001b[2J\u202eial""#);
    let dst = path("renamed.dump-vmstate.json");
    std::fs::write(&dst, renamed).unwrap();
    let (code, text) = run(&[os("static-check"), src.as_os_str(), os(&dst)]);
    assert!(
        code.is_some_and(|c| c > 0),
        "{}",
        String::from_utf8_lossy(&text)
    );
    assert_clean("static-check", &text, &["ser\\x1b[2J\\u{202e}ial"]);
    let _ = std::fs::remove_file(&dst);
}
