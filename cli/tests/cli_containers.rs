//! Streams in containers (issue 17, item 2), on the real fixtures: libvirt 11.3 `virsh save`
//! images of QEMU 10.0 and 7.2 domains (raw, sparse, gzip, bzip2, xz, zstd) and the stream
//! QEMU 10.0 wrote with `migrate file:PATH,offset=4096` (see host-tests/fixtures/README.md).
//! Where the stream starts is computed here from the file's own bytes (libvirt's header
//! fields), never taken from the tool.

mod support;

use support::{fixture, vmstate};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vmstate_cli::container::{Container, SaveFormat};
use vmstate_cli::input::Input;

const Q10: &str = "lv11-q10-pc-i440fx-10.0";
const Q72: &str = "lv11-q72-pc-i440fx-7.2.save";
/// The same domain saved by libvirt 9.0 (Debian bookworm).
const LV9: &str = "lv9-q72-pc-i440fx-7.2.save";
const OFFSET: &str = "q10-pc-i440fx-10.0-offset4096.file";
const COMPRESSED: [&str; 4] = ["gzip", "bzip2", "xz", "zstd"];

fn image(format: &str) -> PathBuf {
    fixture(&if format == "raw" {
        format!("{Q10}.save")
    } else {
        format!("{Q10}-{format}.save")
    })
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The file offset of the stream in a libvirt image, from its header: 92 + data_len.
fn stream_start(b: &[u8]) -> usize {
    assert_eq!(&b[..16], b"LibvirtQemudSave");
    92 + le32(b, 20) as usize
}

#[test]
fn every_libvirt_fixture_is_recognised_with_its_header() {
    let formats = ["raw", "sparse", "gzip", "bzip2", "xz", "zstd"];
    for (word, f) in formats.iter().enumerate() {
        let path = image(f);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(le32(&bytes, 16), 2, "{f}: version");
        let format = [0, 6, 1, 2, 3, 5][word];
        assert_eq!(le32(&bytes, 28), format, "{f}: format word");
        let input = Input::open(&path).unwrap();
        let Some(Container::Libvirt(i)) = input.container() else {
            panic!("{f}: not recognised as a libvirt image");
        };
        assert_eq!(i.header.format.name(), *f);
        assert_eq!(i.header.format as u32, format);
        assert_eq!(i.stream_start, stream_start(&bytes));
        assert_eq!(i.header.was_running, le32(&bytes, 24));
        assert_eq!(i.header.cookie_offset, le32(&bytes, 32));
        // The XML is the text from offset 92 to its NUL.
        let nul = bytes[92..].iter().position(|&b| b == 0).unwrap();
        assert_eq!(i.xml.as_bytes(), &bytes[92..92 + nul]);
        assert_eq!(
            i.domain.name.as_deref(),
            Some("vmstate-lv11-q10-pc-i440fx-10.0")
        );
        assert_eq!(i.domain.machine.as_deref(), Some("pc-i440fx-10.0"));
        assert_eq!(i.domain.memory, Some(32 << 20));
        assert_eq!(i.domain.vcpus, Some(1));
        assert!(input.bytes().starts_with(b"QEVM\0\0\0\x03"), "{f}");
        if i.header.format.compressed() {
            assert_eq!(input.stream_start(), 0, "{f}: a decompressed stream");
            assert!(input.prefix().is_empty());
        } else {
            assert_eq!(input.stream_start(), stream_start(&bytes));
            assert_eq!(input.prefix(), &bytes[..stream_start(&bytes)]);
            assert_eq!(input.bytes(), &bytes[stream_start(&bytes)..]);
        }
        assert_eq!(i.header.format == SaveFormat::Sparse, *f == "sparse");
    }
}

#[test]
fn inspect_shows_the_libvirt_header_and_the_domain() {
    for f in ["raw", "gzip"] {
        let path = image(f);
        let bytes = fs::read(&path).unwrap();
        let start = stream_start(&bytes);
        let o = vmstate(&["inspect", s(&path)]);
        assert!(o.status.success(), "{f}: {}", err(&o));
        let text = out(&o);
        let word = if f == "raw" { 0 } else { 1 };
        assert!(
            text.starts_with(&format!(
                "libvirt save image: magic LibvirtQemudSave, version 2, format {f} ({word}), \
                 was_running 1\n"
            )),
            "{text}"
        );
        for want in [
            &format!("data at 0x0000005c: {} bytes: domain XML", le32(&bytes, 20)),
            "domain: name vmstate-lv11-q10-pc-i440fx-10.0, uuid \
             5f0c6a1e-2b1d-4c3a-9e8f-17a2b3c4d5e6, type qemu, arch x86_64, machine \
             pc-i440fx-10.0, memory 32 MiB, vCPUs 1",
            "emulator: ",
            &format!("file offset {start} (0x{start:x})"),
            "header at 0x00000000: magic QEVM, file version 3",
        ] {
            assert!(text.contains(want), "{f}: no {want:?} in\n{text}");
        }
        assert!(text.contains(if f == "raw" {
            "byte offsets below are stream offsets"
        } else {
            "offsets in the decompressed QEMU stream"
        }));
    }
    // The 7.2 domain's images, by libvirt 11.3 and 9.0.
    for name in [Q72, LV9] {
        let o = vmstate(&["inspect", s(&fixture(name))]);
        assert!(o.status.success(), "{}", err(&o));
        assert!(out(&o).contains("machine pc-i440fx-7.2, memory 32 MiB, vCPUs 1"));
    }
    // JSON output stays JSON; the container is named on stderr.
    let o = vmstate(&["inspect", "--json", s(&image("raw"))]);
    assert!(o.status.success());
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap();
    assert!(err(&o).contains("libvirt save image (raw), QEMU stream at file offset"));
}

#[test]
fn verify_passes_on_each_container_fixture() {
    let mut names: Vec<PathBuf> = vec![
        image("raw"),
        image("sparse"),
        fixture(Q72),
        fixture(LV9),
        fixture(OFFSET),
    ];
    names.extend(COMPRESSED.iter().map(|f| image(f)));
    for path in names {
        let o = vmstate(&["verify", s(&path)]);
        let text = out(&o);
        assert!(o.status.success(), "{}: {text}{}", path.display(), err(&o));
        assert!(text.contains(": ok: "), "{text}");
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.starts_with("lv") {
            assert!(text.contains("libvirt header (version 2"), "{text}");
            assert!(text.contains("checked; libvirt save image"), "{text}");
        } else {
            assert!(
                text.contains("QEMU stream at file offset 4096 (0x1000, found at a 4 KiB"),
                "{text}"
            );
        }
    }
}

/// A change to a file's bytes.
type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;

/// A copy of `src` changed by `edit`, verified: the exit status and what it printed.
fn verify_edited(dir: &Path, src: &Path, edit: impl FnOnce(&mut Vec<u8>)) -> (i32, String) {
    let mut b = fs::read(src).unwrap();
    edit(&mut b);
    let p = dir.join("edited.save");
    fs::write(&p, &b).unwrap();
    let o = vmstate(&["verify", s(&p)]);
    (o.status.code().unwrap(), out(&o) + &err(&o))
}

#[test]
fn a_corrupted_header_xml_or_stream_is_refused_at_its_offset() {
    let dir = support::scratch("containers-corrupt");
    let raw = image("raw");
    let bytes = fs::read(&raw).unwrap();
    let start = stream_start(&bytes);
    let data_len = le32(&bytes, 20);
    let put = |b: &mut Vec<u8>, at: usize, w: u32| b[at..at + 4].copy_from_slice(&w.to_le_bytes());
    let cases: Vec<(&str, Edit, String)> = vec![
        (
            "partial magic",
            Box::new(|b| b[12..16].copy_from_slice(b"Part")),
            "at file offset 0 (0x0): the image is incomplete".into(),
        ),
        (
            "version",
            Box::new(move |b| put(b, 16, 3)),
            "at file offset 16 (0x10): version 0x3: expected 1 or 2".into(),
        ),
        (
            "format",
            Box::new(move |b| put(b, 28, 9)),
            "at file offset 28 (0x1c): format 9: expected 0..=6".into(),
        ),
        (
            "data length past the end",
            Box::new(move |b| put(b, 20, u32::MAX)),
            format!("at file offset 20 (0x14): data length {}", u32::MAX),
        ),
        (
            "data length one too long",
            Box::new(move |b| put(b, 20, data_len + 1)),
            format!(
                "at file offset {} (0x{:x}): expected the QEMU stream (QEVM)",
                start + 1,
                start + 1
            ),
        ),
        (
            "cookie offset",
            Box::new(move |b| put(b, 32, data_len)),
            "at file offset 32 (0x20): cookie offset".into(),
        ),
        (
            "domain XML",
            Box::new(|b| b[93..99].copy_from_slice(b"dumain")),
            "at file offset 92 (0x5c): domain XML:".into(),
        ),
    ];
    for (what, edit, want) in cases {
        let (code, text) = verify_edited(&dir, &raw, edit);
        assert_eq!(code, 101, "{what}: {text}");
        assert!(text.contains(&want), "{what}: no {want:?} in {text}");
        assert!(text.contains("libvirt save image: "), "{what}: {text}");
    }
    // A stream byte: the first RAM section's record type (stream offset 0x1b, after the
    // header and the CONFIGURATION record) made an unknown type. The stream offset reported,
    // plus the stream's file offset named once, is the byte changed.
    let at = 0x1b;
    assert_eq!(bytes[start + at], 0x01, "a SECTION_START record");
    let (code, text) = verify_edited(&dir, &raw, |b| b[start + at] = 0x7e);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("at byte {at} (0x{at:x})")), "{text}");
    assert!(
        text.contains(&format!(
            "QEMU stream at file offset {start} (0x{start:x}); byte offsets below are stream \
             offsets (file offset = {start} + stream offset)"
        )),
        "{text}"
    );
    // The other commands name the stream's start in the error itself.
    let o = vmstate(&["inspect", s(&dir.join("edited.save"))]);
    assert_eq!(o.status.code(), Some(101));
    assert!(
        err(&o).contains(&format!(
            "edited.save (stream at file offset {start} (0x{start:x}); offsets in the stream): \
             at byte {at} (0x{at:x})"
        )),
        "{}",
        err(&o)
    );
    // Compressed data cut short: the decompressor's error names the format and the data's
    // file offset.
    let gz = image("gzip");
    let gz_start = stream_start(&fs::read(&gz).unwrap());
    let (code, text) = verify_edited(&dir, &gz, |b| b.truncate(b.len() / 2));
    assert_eq!(code, 101, "{text}");
    assert!(
        text.contains(&format!("gzip data at file offset {gz_start}")),
        "{text}"
    );
    assert!(text.contains("gzip decompression of the stream"), "{text}");
    // lzop: no decoder, refused by name.
    let (code, text) = verify_edited(&dir, &raw, |b| {
        put(b, 28, 4);
        b.splice(start..start, *b"\x89LZO\0\r\n\x1a\n");
    });
    assert_eq!(code, 101, "{text}");
    assert!(
        text.contains("lzop-compressed (format 4), which vmstate does not read"),
        "{text}"
    );
}

#[test]
fn rewrite_keeps_the_container_byte_for_byte() {
    let dir = support::scratch("containers-rewrite");
    for path in [image("raw"), fixture(Q72), fixture(LV9), fixture(OFFSET)] {
        let o = &*dir.join("out");
        let r = vmstate(&["rewrite", s(&path), s(o)]);
        assert!(r.status.success(), "{}: {}", path.display(), err(&r));
        assert!(support::same_contents(&path, o), "{}", path.display());
    }
    // An edit changes the stream only: the container is the same, and the stream is what
    // rewriting the bare stream with the same edit writes.
    let raw = image("raw");
    let bytes = fs::read(&raw).unwrap();
    let start = stream_start(&bytes);
    let bare = &*dir.join("bare.vmstate");
    fs::write(bare, &bytes[start..]).unwrap();
    let (edited, edited_bare) = (&*dir.join("edited"), &*dir.join("edited-bare"));
    let set = "i8259[0].imr=0x5a";
    assert!(
        vmstate(&["rewrite", s(&raw), s(edited), "--set", set])
            .status
            .success()
    );
    assert!(
        vmstate(&["rewrite", s(bare), s(edited_bare), "--set", set])
            .status
            .success()
    );
    let (e, eb) = (fs::read(edited).unwrap(), fs::read(edited_bare).unwrap());
    assert_eq!(&e[..start], &bytes[..start]);
    assert_eq!(&e[start..], &eb[..]);
    assert_ne!(e, bytes);
    // A compressed image is refused by name; so is a format change.
    let r = vmstate(&["rewrite", s(&image("zstd")), s(&dir.join("z"))]);
    assert_eq!(r.status.code(), Some(102));
    assert!(err(&r).contains("rewrite of a zstd-compressed libvirt save image is not supported"));
    let r = vmstate(&["rewrite", s(&raw), s(&dir.join("v4")), "--format", "v4"]);
    assert_eq!(r.status.code(), Some(102));
    assert!(err(&r).contains("--format with a stream inside a container"));
}

#[test]
fn extract_writes_the_container_and_the_same_stream_parts() {
    let dir = support::scratch("containers-extract");
    let raw = image("raw");
    let bytes = fs::read(&raw).unwrap();
    let start = stream_start(&bytes);
    let bare = &*dir.join("bare.vmstate");
    fs::write(bare, &bytes[start..]).unwrap();
    let (a, b) = (&*dir.join("a"), &*dir.join("b"));
    let o = vmstate(&["extract", s(&raw), s(a)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(vmstate(&["extract", s(bare), s(b)]).status.success());
    for part in ["state.json", "desc.json", "index.json", "ram/pc.ram.bin"] {
        assert!(
            support::same_contents(&a.join(part), &b.join(part)),
            "{part} differs"
        );
    }
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(a.join("container.json")).unwrap()).unwrap();
    assert_eq!(c["kind"], "libvirt-save-image");
    assert_eq!(c["format"], "raw");
    assert_eq!(c["stream_offset"], start);
    assert_eq!(c["domain"]["machine"], "pc-i440fx-10.0");
    let nul = bytes[92..].iter().position(|&b| b == 0).unwrap();
    let xml = fs::read(a.join("domain.xml")).unwrap();
    assert_eq!(&xml[..xml.len() - 1], &bytes[92..92 + nul]);
    assert!(
        fs::read_to_string(a.join("cookie.xml"))
            .unwrap()
            .starts_with("<cookie>")
    );
    // A compressed image: its RAM image has the guest's size.
    let z = &*dir.join("z");
    assert!(
        vmstate(&["extract", s(&image("xz")), s(z)])
            .status
            .success()
    );
    assert_eq!(
        fs::metadata(z.join("ram/pc.ram.bin")).unwrap().len(),
        32 << 20
    );
}

#[test]
fn a_stream_at_an_offset_is_found_or_given() {
    let dir = support::scratch("containers-offset");
    let path = fixture(OFFSET);
    let bytes = fs::read(&path).unwrap();
    assert!(bytes[..4096].iter().all(|&b| b == 0));
    let input = Input::open(&path).unwrap();
    assert_eq!(
        input.container(),
        Some(&Container::Offset {
            start: 4096,
            given: false
        })
    );
    assert_eq!(input.bytes(), &bytes[4096..]);
    // What is before the offset is anything: a header of 100 bytes of text is not at an
    // aligned offset, so the stream is not found without --offset.
    let mut odd = b"any header a user wrote before the stream\n".repeat(3);
    odd.truncate(100);
    odd.extend_from_slice(&bytes[4096..]);
    let p = &*dir.join("odd.bin");
    fs::write(p, &odd).unwrap();
    let o = vmstate(&["verify", s(p)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("not a migration stream"), "{}", out(&o));
    let o = vmstate(&["verify", "--offset", "100", s(p)]);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("QEMU stream at file offset 100 (0x64, given with --offset)"));
    let w = &*dir.join("odd-out.bin");
    assert!(
        vmstate(&["rewrite", "--offset", "100", s(p), s(w)])
            .status
            .success()
    );
    assert!(support::same_contents(p, w));
    // A wrong --offset is refused with the offset and what is there.
    let o = vmstate(&["verify", "--offset", "99", s(p)]);
    assert_eq!(o.status.code(), Some(101));
    assert!(
        err(&o).contains("--offset 99: expected the QEVM magic at file offset 99 (0x63)"),
        "{}",
        err(&o)
    );
}

#[test]
fn a_libvirt_image_can_come_through_a_pipe() {
    let raw = image("raw");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' verify /dev/stdin",
            s(&raw),
            env!("CARGO_BIN_EXE_vmstate")
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains("libvirt header (version 2, format raw)"));
    // What is not an image is refused as soon as it shows: a bad header at its 92nd byte, a
    // good header with garbage data once the data length has arrived (never a whole
    // /dev/zero spooled).
    let header = &fs::read(&raw).unwrap()[..92];
    let dir = support::scratch("containers-pipe");
    let good_header = dir.join("header");
    fs::write(&good_header, header).unwrap();
    for (head, want) in [
        (
            "printf LibvirtQemudSave".to_string(),
            "at file offset 16 (0x10): version 0x0",
        ),
        (
            format!("cat '{}'", s(&good_header)),
            "at file offset 92 (0x5c): domain XML",
        ),
    ] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "({head}; cat /dev/zero) | timeout 60 '{}' verify /dev/stdin",
                env!("CARGO_BIN_EXE_vmstate")
            ))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(101), "{head}: {}", err(&o));
        assert!(err(&o).contains(want), "{head}: {}", err(&o));
    }
    // An offset is looked for in files only (cli_mapped_ram_pipes.rs: given with --offset, a
    // pipe's is read too).
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | '{}' verify /dev/stdin",
            s(&fixture(OFFSET)),
            env!("CARGO_BIN_EXE_vmstate")
        ))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(101), "{}", err(&o));
    assert!(
        err(&o).contains("give the file, or --offset N"),
        "{}",
        err(&o)
    );
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// pc.ram's mapped-ram header in a sparse image, read from the file's own bytes: (file offset
/// of the header, bitmap offset, pages offset, block length).
fn pc_ram_header(b: &[u8]) -> (usize, usize, usize, usize) {
    let start = stream_start(b);
    let entry = start
        + b[start..]
            .windows(7)
            .position(|w| w == b"\x06pc.ram")
            .unwrap();
    let length = be64(b, entry + 7) as usize;
    let h = entry + 7 + 8;
    assert_eq!(u32::from_be_bytes(b[h..h + 4].try_into().unwrap()), 1);
    assert_eq!(be64(b, h + 4), 4096);
    (
        h,
        be64(b, h + 12) as usize,
        be64(b, h + 20) as usize,
        length,
    )
}

/// Bytes of `path` the file system allocated.
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

/// libvirt's sparse image is a mapped-ram stream at file offset 66762, whose headers hold file
/// offsets (the bitmap right after the header *in the file*, the pages region at a 1 MiB
/// boundary of the file): verify, inspect, the RAM read at its file offsets (`ram`, `extract`)
/// and `rewrite` byte for byte and sparse all work on it.
#[test]
fn a_sparse_image_is_read_at_its_file_offsets() {
    let dir = support::scratch("containers-sparse");
    let path = image("sparse");
    let bytes = fs::read(&path).unwrap();
    let start = stream_start(&bytes);
    let (h, bitmap, pages, length) = pc_ram_header(&bytes);
    // The file's facts: file offsets, not stream offsets.
    assert_eq!(bitmap, h + 28);
    assert_eq!(pages % (1 << 20), 0);
    assert_ne!(
        (pages - start) % 4096,
        0,
        "the stream offset of the pages is not aligned"
    );

    let o = vmstate(&["verify", s(&path)]);
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains(": ok: "), "{}", out(&o));
    assert!(out(&o).contains("format sparse"), "{}", out(&o));

    let o = vmstate(&["inspect", s(&path)]);
    assert!(o.status.success(), "{}", err(&o));
    let row = format!(
        "block=pc.ram\theader={h:#x}\tversion=1\tpage_size=4096\tbitmap={bitmap:#x}..{:#x}\t\
         pages={pages:#x}..{:#x}\t",
        bitmap + length / 4096 / 8,
        pages + length
    );
    assert!(out(&o).contains(&row), "no {row:?} in\n{}", out(&o));
    assert!(out(&o).contains(&format!(
        "mapped-ram (pages at fixed file offsets, the stream at file offset {start} \
         ({start:#x}); zero pages are not in the file)\n"
    )));

    // RAM: a page whose bit is set is the file's bytes at pages + offset; one whose bit is
    // clear reads as zeros.
    let bit = |i: usize| bytes[bitmap + i / 8] >> (i % 8) & 1 == 1;
    let present = (0..length / 4096).find(|&i| bit(i)).unwrap();
    let absent = (0..length / 4096).find(|&i| !bit(i)).unwrap();
    for (i, want) in [
        (present, &bytes[pages + present * 4096..][..4096]),
        (absent, &[0u8; 4096][..]),
    ] {
        let addr = format!("{:#x}", i * 4096);
        let o = vmstate(&["ram", "--addr", &addr, "--len", "4096", s(&path)]);
        assert!(o.status.success(), "{addr}: {}", err(&o));
        assert!(o.stdout == want, "{addr}");
    }
    assert!(
        bytes[pages + present * 4096..][..4096]
            .iter()
            .any(|&b| b != 0)
    );
    // The flat image and extract's block image: the same 32 MiB.
    let img = &*dir.join("image.bin");
    let o = vmstate(&["ram", "--image", s(img), s(&path)]);
    assert!(o.status.success(), "{}", err(&o));
    let x = &*dir.join("x");
    let o = vmstate(&["extract", s(&path), s(x)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(support::same_contents(img, &x.join("ram/pc.ram.bin")));
    let image = fs::read(img).unwrap();
    assert_eq!(image.len(), length);
    assert_eq!(
        &image[present * 4096..][..4096],
        &bytes[pages + present * 4096..][..4096]
    );
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("index.json")).unwrap()).unwrap();
    let text = index.to_string();
    assert!(
        text.contains(&format!("\"bitmap_offset\":{bitmap}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("\"pages_offset\":{pages}")),
        "{text}"
    );
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("container.json")).unwrap()).unwrap();
    assert_eq!(c["format"], "sparse");

    // rewrite: the image byte for byte, its holes kept (40 MB, well under 2 MB allocated).
    let o_path = &*dir.join("out.save");
    let r = vmstate(&["rewrite", s(&path), s(o_path)]);
    assert!(r.status.success(), "{}", err(&r));
    assert!(support::same_contents(&path, o_path));
    assert!(allocated(o_path) < 2 << 20, "{} bytes", allocated(o_path));
    // An edit: the container and every other byte as they were; diff names the one field.
    let e_path = &*dir.join("edited.save");
    let r = vmstate(&["rewrite", s(&path), s(e_path), "--set", "i8259[0].imr=0x5a"]);
    assert!(r.status.success(), "{}", err(&r));
    let edited = fs::read(e_path).unwrap();
    assert_eq!(edited.len(), bytes.len());
    assert_eq!(&edited[..start], &bytes[..start]);
    assert_eq!(edited.iter().zip(&bytes).filter(|(a, b)| a != b).count(), 1);
    assert!(allocated(e_path) < 2 << 20, "{} bytes", allocated(e_path));
    // What the library writes for the same edit (host-tests/tests/containers.rs loads that
    // into QEMU 10.0): the same bytes.
    let input = Input::open(&path).unwrap();
    let options = vmstate_cli::model::ParseOptions {
        file_offset: input.stream_start() as u64,
        ..Default::default()
    };
    let d = vmstate_cli::model::find_description(input.bytes())
        .unwrap()
        .map(|(_, d)| d);
    let mut stream =
        vmstate_cli::Stream::parse_observed(input.bytes(), d, options, &mut |_| {}).unwrap();
    stream
        .set("i8259[0].imr=0x5a", &vmstate_cli::generic::NoCheck)
        .unwrap();
    let mut library = input.prefix().to_vec();
    stream.write_to(&mut library).unwrap();
    assert!(
        library == edited,
        "the library's edit differs from rewrite --set"
    );
    let d = vmstate(&["diff", s(&path), s(e_path)]);
    assert_eq!(d.status.code(), Some(1), "{}", err(&d));
    assert_eq!(out(&d), "i8259[0].imr: 0xb8 -> 0x5a\n");
    assert!(
        err(&d).contains("RAM block lists (6 blocks) and 8322 pages by content, 0 pages in one"),
        "{}",
        err(&d)
    );
}

/// A sparse image and a raw image of the same domain (two saves of one SeaBIOS run): diff
/// compares every page of the mapped-ram image with the page records of the raw one, and
/// their RAM is the same. A byte changed in a page of the sparse image's pages region, and a
/// page whose bitmap bit is cleared (a zero page for QEMU), are named by block, page offset and
/// byte.
#[test]
fn diff_compares_a_sparse_image_page_by_page_with_a_raw_one() {
    let dir = support::scratch("containers-sparse-diff");
    let sparse = image("sparse");
    let raw = image("raw");
    let d = vmstate(&["diff", s(&sparse), s(&raw)]);
    assert_eq!(d.status.code(), Some(1), "{}", err(&d));
    assert_eq!(
        out(&d),
        "configuration: target-page-bits None, capabilities [mapped-ram], uuid None -> \
         target-page-bits None, capabilities [], uuid None\n\
         mc146818rtc[0].cmos_data[0]: 0x46 -> 0x44\n\
         timer[0].cpu_ticks_offset: 0x906a1bc0 -> 0x8caad9e6\n\
         timer[0].cpu_clock_offset: 0x44c4c2c3 -> 0x42fbfab9\n"
    );
    assert!(
        err(&d).contains("and 8322 pages by content, 0 pages in one stream only; 4 differences"),
        "{}",
        err(&d)
    );
    let mut bytes = fs::read(&sparse).unwrap();
    let (_, bitmap, pages, length) = pc_ram_header(&bytes);
    let bit = |b: &[u8], i: usize| b[bitmap + i / 8] >> (i % 8) & 1 == 1;
    let mut set = (0..length / 4096).filter(|&i| bit(&bytes, i));
    let (changed, cleared) = (set.next().unwrap(), set.next_back().unwrap());
    let at = pages + changed * 4096 + 0x10;
    let old = bytes[at];
    bytes[at] ^= 0xff;
    bytes[bitmap + cleared / 8] &= !(1 << (cleared % 8));
    let first = bytes[pages + cleared * 4096..][..4096]
        .iter()
        .position(|&b| b != 0)
        .unwrap();
    let n = bytes[pages + cleared * 4096..][..4096]
        .iter()
        .filter(|&&b| b != 0)
        .count();
    let edited = &*dir.join("edited.save");
    fs::write(edited, &bytes).unwrap();
    let d = vmstate(&["diff", s(edited), s(&raw)]);
    assert_eq!(d.status.code(), Some(1), "{}", err(&d));
    let text = out(&d);
    for want in [
        format!(
            "ram:pc.ram@{:#x}+0x10: {:#04x} -> {old:#04x} (1 bytes of the page differ)\n",
            changed * 4096,
            old ^ 0xff
        ),
        format!(
            "ram:pc.ram@{:#x}+{first:#x}: 0x00 -> {:#04x} ({n} bytes of the page differ)\n",
            cleared * 4096,
            bytes[pages + cleared * 4096 + first]
        ),
    ] {
        assert!(text.contains(&want), "no {want:?} in\n{text}");
    }
    assert!(err(&d).contains("8322 pages by content, 0 pages in one stream only; 6 differences"));
}

/// `check` and `caps` read the sparse image (mapped-ram at a file offset) and the stream at
/// offset 4096, as input and as destination: the image loads where its own stream's
/// destination is, and against the offset stream (written without mapped-ram) the capability
/// is the difference, named.
#[test]
fn check_and_caps_read_streams_in_containers() {
    let dir = support::scratch("containers-check");
    let (sparse, offset) = (image("sparse"), fixture(OFFSET));
    let mapped = fixture("q10-pc-i440fx-10.0-mapped-ram.vmstate");
    for dest in [&sparse, &mapped] {
        let o = vmstate(&["check", "--dest", s(dest), s(&sparse)]);
        assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
        assert!(out(&o).starts_with("compatible: "), "{}", out(&o));
    }
    let o = vmstate(&["check", "--dest", s(&offset), s(&sparse)]);
    assert_eq!(o.status.code(), Some(2), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains(
            "capability: capability mapped-ram is on in the stream and off at the destination\n"
        ),
        "{}",
        out(&o)
    );
    let o = vmstate(&["check", "--dest", s(&sparse), s(&offset)]);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(
        out(&o).contains("capability mapped-ram is off in the stream and on at the destination")
    );
    let caps = &*dir.join("caps.json");
    let o = vmstate(&["caps", "--stream", s(&sparse), s(caps)]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("capabilities mapped-ram; from stream"),
        "{}",
        out(&o)
    );
    let o = vmstate(&["check", "--dest", s(caps), s(&sparse)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", out(&o), err(&o));
}
