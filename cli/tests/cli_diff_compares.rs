//! `diff` never calls streams the same without comparing them (issue 13 item 10): sections
//! no description decodes are compared as bytes, RAM block lists are compared (a 32 MiB and a
//! 1 TiB `pc.ram` differ), and stderr says what was compared.

use std::path::PathBuf;
use std::process::Command;
use vmstate_cli::Stream;
use vmstate_cli::model::Item;

fn fixture_bytes() -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../host-tests/fixtures/q72-pc-i440fx-7.2.vmstate"),
    )
    .unwrap()
}

fn path(name: &str) -> String {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-diff-compares");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name).to_str().unwrap().to_string()
}

/// `vmstate diff A B`: exit status, stdout, stderr.
fn diff(a: &[u8], b: &[u8], name: &str) -> (Option<i32>, String, String) {
    let (pa, pb) = (path(&format!("{name}-a")), path(&format!("{name}-b")));
    std::fs::write(&pa, a).unwrap();
    std::fs::write(&pb, b).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(["diff", &pa, &pb])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// Absolute offset and length of the body of section (`idstr`, `instance`).
fn body(bytes: &[u8], idstr: &str, instance: u32) -> (usize, usize) {
    let s = Stream::parse(bytes).unwrap();
    s.devices()
        .find(|(m, _)| m.idstr == idstr.as_bytes() && m.instance_id == instance)
        .map(|(m, _)| (m.body_offset, m.body_len))
        .unwrap()
}

#[test]
fn sections_without_a_description_are_compared_as_bytes() {
    let bytes = fixture_bytes();
    let (cpu, cpu_len) = body(&bytes, "cpu", 0);
    let (pic, _) = body(&bytes, "i8259", 1);
    let (fdc, _) = body(&bytes, "fdc", 0);
    // Without the trailer nothing is decoded (the model decodes with the description only).
    let at = vmstate::wire::Trailer::locate(&bytes).unwrap();
    let a = bytes[..at].to_vec();
    let (code, out, err) = diff(&a, &a, "same");
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(
        err.contains("0 device sections field by field, 38 as bytes (not decoded)")
            && err.contains("; no differences"),
        "{err}"
    );
    // One byte of three sections changes: each is reported with its first differing byte.
    let mut b = a.clone();
    for (at, x) in [(cpu + 0x10, 0x01), (pic + 3, 0x20), (fdc + 5, 0x01)] {
        b[at] ^= x;
    }
    let (code, out, err) = diff(&a, &b, "bytes");
    assert_eq!(code, Some(1), "{err}");
    let show = |v: u8, len: usize| format!("{v:#04x} ({len} bytes, not decoded)");
    let line = |name: &str, off: usize, start: usize, len: usize| {
        format!(
            "{name}#body+{:#x}: {} -> {}",
            off - start,
            show(a[off], len),
            show(b[off], len)
        )
    };
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.contains(&line("cpu[0]", cpu + 0x10, cpu, cpu_len).as_str()),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("i8259[1]#body+0x3: ")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("fdc[0]#body+0x5: ")),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(err.contains("; 3 differences"), "{err}");

    // One stream decoded (with its trailer), the other not: compared as bytes too.
    let (code, out, err) = diff(&bytes, &b, "mixed");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn ram_block_lengths_are_compared() {
    let bytes = fixture_bytes();
    let s = Stream::parse(&bytes).unwrap();
    let start = s
        .entries
        .iter()
        .find_map(|e| match &e.item {
            Item::Ram { section, .. }
                if section.kind == vmstate::wire::section::SectionKind::Start =>
            {
                Some(section.body_offset)
            }
            _ => None,
        })
        .unwrap();
    // MEM_SIZE: total | flags, then (name, length) per block; pc.ram is 32 MiB.
    let total = u64::from_be_bytes(bytes[start..start + 8].try_into().unwrap());
    let name = bytes[start..]
        .windows(7)
        .position(|w| w == b"\x06pc.ram")
        .unwrap()
        + start;
    let len_at = name + 7;
    assert_eq!(
        u64::from_be_bytes(bytes[len_at..len_at + 8].try_into().unwrap()),
        32 << 20
    );
    let mut big = bytes.clone();
    big[start..start + 8].copy_from_slice(&(total + (1 << 40) - (32 << 20)).to_be_bytes());
    big[len_at..len_at + 8].copy_from_slice(&(1u64 << 40).to_be_bytes());
    let (code, out, err) = diff(&bytes, &big, "length");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "ram:pc.ram#length: 0x2000000 -> 0x10000000000\n");
    assert!(err.contains("RAM block lists (8 blocks)"), "{err}");
}

/// A stream whose RAM block list is `blocks` (no pages sent).
fn blocks_stream(blocks: &[(&[u8], u64)]) -> Vec<u8> {
    use vmstate::ram::{BlockEntry, RamWriter};
    let mut buf = vec![0u8; 4096];
    let mut w = vmstate::writer::StreamWriter::new(vmstate::SliceSink::new(&mut buf));
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let list: Vec<BlockEntry<'_>> = blocks
        .iter()
        .map(|&(name, length)| BlockEntry {
            name,
            length,
            addr: None,
        })
        .collect();
    w.ram_start(1, &list).unwrap();
    let mut ram = RamWriter::new();
    w.ram_part(1, true, &mut ram, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    buf.truncate(n);
    buf
}

#[test]
fn ram_block_names_and_order_are_compared() {
    let a = blocks_stream(&[(b"pc.ram", 1 << 20), (b"pc.bios", 1 << 16)]);
    let (code, out, err) = diff(&a, &a, "blocks-same");
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(err.contains("RAM block lists (2 blocks)"), "{err}");
    let swapped = blocks_stream(&[(b"pc.bios", 1 << 16), (b"pc.ram", 1 << 20)]);
    let (code, out, err) = diff(&a, &swapped, "blocks-order");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(out, "ram#block-order: pc.ram, pc.bios -> pc.bios, pc.ram\n");
    let renamed = blocks_stream(&[(b"pc.ram", 1 << 20), (b"pc.rom", 1 << 16)]);
    let (code, out, err) = diff(&a, &renamed, "blocks-names");
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        out,
        "ram:pc.bios#length: 0x10000 -> -\nram:pc.rom#length: - -> 0x10000\n"
    );
}
