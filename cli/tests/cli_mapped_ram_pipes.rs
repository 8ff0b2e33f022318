//! mapped-ram files and libvirt images through a pipe (`cat F | vmstate CMD /dev/stdin`), on
//! the real fixtures. A mapped-ram stream needs random access (its pages are at file offsets,
//! after the block list); a pipe is spooled into a temporary file first, so every command
//! answers from a pipe what it answers from the file, byte for byte where it writes. A stream
//! after other bytes (`migrate file:PATH,offset=N`) is looked for in regular files only: from a
//! pipe it is refused with why and what to do, and read with `--offset N`.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{fixture, same_contents, vmstate};

/// The real mapped-ram fixtures: libvirt's sparse image (at file offset 66762) and QEMU 10.0's
/// `file:` streams without and with multifd.
const MAPPED: [&str; 3] = [
    "lv11-q10-pc-i440fx-10.0-sparse.save",
    "q10-pc-i440fx-10.0-mapped-ram.vmstate",
    "q10-pc-q35-10.0-mapped-ram-multifd.vmstate",
];
const OFFSET: &str = "q10-pc-i440fx-10.0-offset4096.file";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cat FILE | vmstate ARGS` (`/dev/stdin` in `args` is the pipe, not the file).
fn piped(file: &Path, args: &[&str]) -> Output {
    let mut cat = Command::new("cat")
        .arg(file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .stdin(Stdio::from(cat.stdout.take().unwrap()))
        .output()
        .unwrap();
    // `cat` ends when the pipe's reader is gone, whatever it read.
    let _ = cat.wait();
    o
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn every_command_reads_a_mapped_ram_stream_from_a_pipe_as_from_the_file() {
    let dir = support::scratch("mapped-pipes");
    for name in MAPPED {
        let path = fixture(name);
        let p = s(&path);
        let same = |args: &[&str]| {
            let from_file: Vec<&str> = args
                .iter()
                .map(|&a| if a == "/dev/stdin" { p } else { a })
                .collect();
            let (a, b) = (piped(&path, args), vmstate(&from_file));
            assert!(a.status.success(), "{name} {args:?}: {}", text(&a.stderr));
            assert_eq!(a.status.code(), b.status.code(), "{name} {args:?}");
            // The reports name the input.
            assert_eq!(
                text(&a.stdout).replace("/dev/stdin", "F"),
                text(&b.stdout).replace(p, "F"),
                "{name} {args:?}"
            );
        };
        same(&["verify", "/dev/stdin"]);
        same(&["inspect", "/dev/stdin"]);
        same(&["inspect", "--json", "/dev/stdin"]);
        same(&["inspect", "--desc", "/dev/stdin"]);
        same(&["ram", "--addr", "0xf0000", "--len", "4096", "/dev/stdin"]);
        // extract: the same parts.
        let (x, y) = (dir.join(format!("{name}.x")), dir.join(format!("{name}.y")));
        assert!(
            piped(&path, &["extract", "/dev/stdin", s(&x)])
                .status
                .success()
        );
        assert!(vmstate(&["extract", p, s(&y)]).status.success());
        for part in ["state.json", "desc.json", "ram/pc.ram.bin"] {
            assert!(
                same_contents(&x.join(part), &y.join(part)),
                "{name}: {part}"
            );
        }
        // rewrite: the input byte for byte, as sparse as the writer's file.
        let out = dir.join(format!("{name}.out"));
        let r = piped(&path, &["rewrite", "/dev/stdin", s(&out)]);
        assert!(r.status.success(), "{name}: {}", text(&r.stderr));
        assert!(same_contents(&path, &out), "{name}");
        assert!(allocated(&out) < 2 << 20, "{name}: {}", allocated(&out));
        // ram --image: the same flat image.
        let (i, j) = (dir.join(format!("{name}.i")), dir.join(format!("{name}.j")));
        assert!(
            piped(&path, &["ram", "--image", s(&i), "/dev/stdin"])
                .status
                .success()
        );
        assert!(vmstate(&["ram", "--image", s(&j), p]).status.success());
        assert!(same_contents(&i, &j), "{name}");
        // diff of the pipe against the file: every page compared, no difference.
        let d = piped(&path, &["diff", "/dev/stdin", p]);
        assert_eq!(d.status.code(), Some(0), "{name}: {}", text(&d.stderr));
        assert!(text(&d.stderr).contains("0 pages in one stream only; no differences"));
        let _ = fs::remove_dir_all(&x);
        let _ = fs::remove_dir_all(&y);
    }
}

/// A stream at a file offset is looked for in a regular file only: from a pipe it is refused
/// at once with the reason and what to do, never read as something else; with `--offset N`
/// it is read from the pipe too (the sparse image's mapped-ram stream included), and rewritten
/// with what is before it.
#[test]
fn a_stream_at_an_offset_comes_through_a_pipe_with_offset() {
    let dir = support::scratch("offset-pipes");
    let path = fixture(OFFSET);
    let o = piped(&path, &["verify", "/dev/stdin"]);
    assert_eq!(o.status.code(), Some(101), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr)
            .contains("is looked for in a regular file only: give the file, or --offset N)"),
        "{}",
        text(&o.stderr)
    );
    let o = piped(&path, &["verify", "--offset", "4096", "/dev/stdin"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(": ok: "), "{}", text(&o.stdout));
    let out = dir.join("out.file");
    let r = piped(
        &path,
        &["rewrite", "--offset", "4096", "/dev/stdin", s(&out)],
    );
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(same_contents(&path, &out));
    // A wrong offset: what is there; an input shorter than the offset: how long it was.
    let o = piped(&path, &["verify", "--offset", "4095", "/dev/stdin"]);
    assert_eq!(o.status.code(), Some(101));
    assert!(
        text(&o.stderr).contains(
            "--offset 4095: expected the QEVM magic at offset 4095 (0xfff) of the input, found \
             [00, 51, 45, 56, 4d"
        ),
        "{}",
        text(&o.stderr)
    );
    let short = dir.join("short");
    fs::write(&short, [0u8; 100]).unwrap();
    let o = piped(&short, &["verify", "--offset", "4096", "/dev/stdin"]);
    assert_eq!(o.status.code(), Some(101));
    assert!(text(&o.stderr).contains("--offset 4096: the input ended after 100 bytes"));
    // The sparse image's stream given by its offset: mapped-ram at that file offset.
    let sparse = fixture(MAPPED[0]);
    let o = piped(&sparse, &["verify", "--offset", "66762", "/dev/stdin"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(": ok: "), "{}", text(&o.stdout));
}
