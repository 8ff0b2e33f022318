//! v4 streams crafted with the codec's v4 writer (issue 13 item 12): conversion to v3 keeps
//! the decoders' limits (at most 32 top-level subsections, nothing the description does not
//! read), `check` names the real problem, a CRC error on the configuration record names that
//! record, and the v3-only commands say how to convert a v4 stream.

use std::path::PathBuf;
use std::process::{Command, Output};
use vmstate::v4::wire::{
    Body, Record4, Records4, SectionHead, SubsectionFrame, emit_section, sub_flags,
};
use vmstate::{Sink, SliceSink};
use vmstate_cli::v4tools::{Format, rewrite};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
}

fn path(name: &str) -> String {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-v4-limits");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name).to_str().unwrap().to_string()
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), text)
}

/// The fixture as v4 (with checksums).
fn v4() -> Vec<u8> {
    let v3 = std::fs::read(fixture("q72-pc-i440fx-7.2.vmstate")).unwrap();
    rewrite(&v3, Format::V4).unwrap()
}

/// `v4` with the FULL section `serial` instance 0 re-emitted with `extra` frames appended
/// (each: flags, name, version, body), checksums recomputed by the writer.
fn with_frames(v4: &[u8], extra: &[(u8, Vec<u8>, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut crc = false;
    for rec in Records4::new(v4) {
        let rec = rec.unwrap();
        match &rec.record {
            Record4::Header(h) => crc = h.crc(),
            Record4::Section(s) if s.idstr == b"serial" && s.instance_id == 0 => {
                let Body::Structured {
                    fields,
                    subsections,
                    ..
                } = s.body
                else {
                    panic!("serial is a FULL section")
                };
                let mut body = (fields.len() as u32).to_be_bytes().to_vec();
                body.extend_from_slice(fields);
                body.extend_from_slice(subsections);
                for (flags, name, version, sub) in extra {
                    let mut head = vec![0u8; SubsectionFrame::frame_len(name.len(), false, 0)];
                    let mut sink = SliceSink::new(&mut head);
                    SubsectionFrame::emit_head(&mut sink, None, name, *version, sub.len()).unwrap();
                    // The writer makes untagged frames must-understand; set the flags asked.
                    head[1] = *flags;
                    body.extend_from_slice(&head);
                    body.extend_from_slice(sub);
                }
                let head = SectionHead {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                    minors: &[],
                };
                let mut buf = vec![0u8; body.len() + 64 + s.idstr.len()];
                let mut sink = SliceSink::new(&mut buf);
                emit_section(&mut sink, crc, &head, body.len(), |o| o.write(&body)).unwrap();
                let n = sink.finish();
                out.extend_from_slice(&buf[..n]);
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&v4[rec.offset..rec.end]);
    }
    out
}

fn skippable(n: usize) -> Vec<(u8, Vec<u8>, u32, Vec<u8>)> {
    (0..n)
        .map(|i| (0, format!("serial/x{i}").into_bytes(), 1, Vec::new()))
        .collect()
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
fn the_crafting_helper_keeps_an_unchanged_section_loadable() {
    let v4 = v4();
    let same = with_frames(&v4, &[]);
    assert!(same == v4);
    let p = path("same.v4");
    std::fs::write(&p, &same).unwrap();
    let out = path("same.v3");
    let (code, text) = run(&["rewrite", &p, &out, "--format", "v3"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = run(&["verify", &out]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn more_than_32_subsections_are_refused_by_conversion_and_check() {
    let v4 = v4();
    let dump = fixture("q72-pc-i440fx-7.2.dump-vmstate.json");
    for n in [33, 100_000] {
        let p = path(&format!("subs-{n}.v4"));
        std::fs::write(&p, with_frames(&v4, &skippable(n))).unwrap();
        let out = path(&format!("subs-{n}.v3"));
        let (code, text) = run(&["rewrite", &p, &out, "--format", "v3"]);
        assert_eq!(code, refused("rewrite"), "{n}: {text}");
        assert!(
            text.contains("section 'serial' instance 0")
                && text.contains("too many subsections: expected at most 32"),
            "{n}: {text}"
        );
        assert!(!std::path::Path::new(&out).exists(), "{n}: v3 written");
        let (code, text) = run(&["check", &p, "--dest", dump.to_str().unwrap()]);
        assert_ne!(code, Some(0), "{n}: {text}");
        assert!(
            text.contains("too many subsections: expected at most 32")
                && text.contains("'serial'")
                && !text.contains("buffer too small"),
            "{n}: {text}"
        );
    }
}

#[test]
fn conversion_refuses_what_the_v3_decoders_refuse() {
    let v4 = v4();
    // 32 frames are within the limit, but the description lists no `serial/x0`: QEMU and
    // `verify` refuse the v3 stream, so the conversion refuses too.
    // A frame nested in a frame's body: the v3 bytes would carry v4 framing.
    let inner = {
        let mut f = vec![0u8; SubsectionFrame::frame_len(9, false, 0)];
        let mut sink = SliceSink::new(&mut f);
        SubsectionFrame::emit_head(&mut sink, None, b"serial/in", 1, 0).unwrap();
        f
    };
    for (name, frames) in [
        ("32-unknown", skippable(32)),
        (
            "nested",
            vec![(sub_flags::MUST_UNDERSTAND, b"serial/out".to_vec(), 1, inner)],
        ),
    ] {
        let p = path(&format!("{name}.v4"));
        std::fs::write(&p, with_frames(&v4, &frames)).unwrap();
        let out = path(&format!("{name}.v3"));
        let (code, text) = run(&["rewrite", &p, &out, "--format", "v3"]);
        assert_eq!(code, refused("rewrite"), "{name}: {text}");
        assert!(
            text.contains("converted to v3 would not load") && text.contains("'serial'"),
            "{name}: {text}"
        );
        assert!(!std::path::Path::new(&out).exists(), "{name}: v3 written");
    }
}

#[test]
fn a_crc_error_on_the_configuration_record_names_it() {
    let mut v4 = v4();
    let conf = Records4::new(&v4)
        .find_map(|r| match r.unwrap() {
            l @ vmstate::v4::wire::Located4 {
                record: Record4::Configuration(_),
                ..
            } => Some(l.offset),
            _ => None,
        })
        .unwrap();
    // A byte of the machine name.
    v4[conf + 9] ^= 0x01;
    let p = path("crc-config.v4");
    std::fs::write(&p, &v4).unwrap();
    let (code, text) = run(&["rewrite", &p, &path("crc-config.v3"), "--format", "v3"]);
    assert_eq!(code, refused("rewrite"), "{text}");
    assert!(
        text.contains(&format!(
            "offset {conf}: configuration record: CRC-32C mismatch"
        )),
        "{text}"
    );
    assert!(!text.contains("section  ("), "{text}");
}

#[test]
fn v3_only_commands_say_how_to_convert_a_v4_stream() {
    let p = path("plain.v4");
    std::fs::write(&p, v4()).unwrap();
    for cmd in ["verify", "inspect", "extract"] {
        let mut args = vec![cmd, p.as_str()];
        let dir = path("extract-dir");
        if cmd == "extract" {
            args.push(&dir);
        }
        let (code, text) = run(&args);
        assert_eq!(code, refused(cmd), "{cmd}: {text}");
        assert!(
            text.contains("file version 4 (vmstate v4)")
                && text.contains("vmstate rewrite IN OUT --format v3")
                && !text.contains("expected 3 or 4"),
            "{cmd}: {text}"
        );
    }
}
