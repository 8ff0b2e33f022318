//! File safety of the built `vmstate` binary (issue 13, items 1–5 and 13): what each kind of
//! output path receives, what is never overwritten, and the exit status of each kind of
//! failure.
//!
//! These tests run as whatever user runs `cargo test`, possibly root: none of them points an
//! output at a shared system file that a regression could replace (a device node of our own
//! is made with `mknod` where permitted; `/dev/null` is used only where a non-root user
//! cannot replace it anyway).

mod support;

use support::{fixture, vmstate};

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate_cli::exit::Exit;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmstate-cli-files-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Lists `dir` (names only), sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Writes a v3 stream with the given RAM blocks, every page of block `i` sent as a PAGE
/// record filled with `fill + i` (its first 8 bytes hold the page number).
fn write_stream(path: &Path, blocks: &[(&[u8], u64)], fill: u8) {
    let mut w = support::writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let entries: Vec<BlockEntry<'_>> = blocks
        .iter()
        .map(|&(name, length)| BlockEntry {
            name,
            length,
            addr: None,
        })
        .collect();
    w.ram_start(1, &entries).unwrap();
    let mut ram = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    for (i, &(name, length)) in blocks.iter().enumerate() {
        let pages = length / PAGE_SIZE as u64;
        let mut next = 0;
        while next < pages {
            let end = (next + 2048).min(pages);
            w.ram_part(1, false, &mut ram, |ram, out| {
                for p in next..end {
                    page.fill(fill.wrapping_add(i as u8));
                    page[..8].copy_from_slice(&p.to_be_bytes());
                    ram.page(name, p * PAGE_SIZE as u64, &page, out)?;
                }
                Ok(())
            })
            .unwrap();
            next = end;
        }
    }
    w.ram_part(1, true, &mut ram, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    support::finish(w);
}

const SMALL: &str = "pc-7.2-bios.vmstate";

/// A character device `major:minor` of our own in `dir` where permitted (root), else the
/// system's `fallback` (which a non-root user cannot replace): a regression that replaced its
/// output by a regular file must not be able to destroy the machine's /dev/null or /dev/full.
fn own_device(dir: &Path, name: &str, major: u32, minor: u32, fallback: &str) -> PathBuf {
    let own = dir.join(name);
    let made = Command::new("mknod")
        .args([s(&own), "c", &major.to_string(), &minor.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|st| st.success());
    if made { own } else { PathBuf::from(fallback) }
}

// ---------------------------------------------------------------------------------------------
// Item 1: non-regular and symlinked outputs

#[test]
fn fifo_output_delivers_the_bytes_to_a_reader() {
    let dir = scratch("fifo");
    let fifo = dir.join("out.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            File::open(&fifo).unwrap().read_to_end(&mut got).unwrap();
            got
        })
    };
    let src = fixture(SMALL);
    let o = vmstate(&["rewrite", s(&src), s(&fifo)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    // Checked before waiting: a FIFO replaced by a file leaves the reader waiting forever.
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );
    let got = reader.join().unwrap();
    assert!(
        got == fs::read(&src).unwrap(),
        "the reader got {} bytes",
        got.len()
    );
    assert_eq!(names(&dir), ["out.fifo"], "no temporary file left");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn device_output_stays_a_device() {
    let dir = scratch("device");
    let dev = own_device(&dir, "null", 1, 3, "/dev/null");
    let made = dev.starts_with(&dir);
    let src = fixture(SMALL);
    for args in [
        vec!["rewrite", s(&src), s(&dev)],
        vec!["rewrite", s(&src), s(&dev), "--format", "v4"],
        vec!["caps", "--stream", s(&src), s(&dev)],
    ] {
        let o = vmstate(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        let m = fs::symlink_metadata(&dev).unwrap();
        assert!(m.file_type().is_char_device(), "{args:?}: replaced");
        assert_eq!(m.rdev(), fs::metadata("/dev/null").unwrap().rdev());
    }
    if made {
        assert_eq!(names(&dir), ["null"], "no temporary file left");
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn symlinked_regular_output_replaces_the_target_and_keeps_the_link() {
    let dir = scratch("symlink");
    let target = dir.join("real.vmstate");
    fs::write(&target, b"old").unwrap();
    let link = dir.join("link.vmstate");
    // Two links deep, the first one relative.
    let mid = dir.join("mid.vmstate");
    std::os::unix::fs::symlink("real.vmstate", &mid).unwrap();
    std::os::unix::fs::symlink(&mid, &link).unwrap();
    let src = fixture(SMALL);
    let o = vmstate(&["rewrite", s(&src), s(&link)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(fs::symlink_metadata(&mid).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(&target).unwrap().file_type().is_file());
    assert!(fs::read(&target).unwrap() == fs::read(&src).unwrap());
    // A link to nothing is refused, and nothing is created.
    let dangling = dir.join("dangling.vmstate");
    std::os::unix::fs::symlink("nowhere", &dangling).unwrap();
    let o = vmstate(&["rewrite", s(&src), s(&dangling)]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    assert_eq!(
        names(&dir),
        [
            "dangling.vmstate",
            "link.vmstate",
            "mid.vmstate",
            "real.vmstate"
        ]
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn symlink_to_a_pipe_is_written_through() {
    let dir = scratch("pipe");
    let link = dir.join("stdout.vmstate");
    std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
    let src = fixture(SMALL);
    for out in [s(&link), "/proc/self/fd/1"] {
        let o = vmstate(&["rewrite", s(&src), out]);
        assert_eq!(o.status.code(), Some(0), "{out}: {}", err(&o));
        assert!(
            o.stdout == fs::read(&src).unwrap(),
            "{out}: the pipe got {} bytes",
            o.stdout.len()
        );
    }
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(names(&dir), ["stdout.vmstate"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn directories_and_sockets_are_refused() {
    let dir = scratch("refused");
    let sock = dir.join("out.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let src = fixture(SMALL);
    for (out, why) in [(&sock, "is a socket"), (&dir, "is a directory")] {
        let o = vmstate(&["rewrite", s(&src), s(out)]);
        assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
        assert!(err(&o).contains(why), "{}", err(&o));
    }
    assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    assert_eq!(names(&dir), ["out.sock"]);
    fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Item 2: temporary files

#[test]
fn planted_symlinks_at_temporary_names_redirect_nothing() {
    let dir = scratch("planted");
    let outside = scratch("planted-victim");
    let victim = outside.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let out = dir.join("out.vmstate");
    // The old fixed temporary name, and a crowd of names of the new pattern.
    std::os::unix::fs::symlink(&victim, dir.join("out.vmstate.vmstate-tmp")).unwrap();
    for i in 0..64 {
        std::os::unix::fs::symlink(&victim, dir.join(format!(".vmstate-{i:016x}.tmp"))).unwrap();
    }
    let before = names(&dir);
    let src = fixture(SMALL);
    for args in [
        vec!["rewrite", s(&src), s(&out)],
        vec!["rewrite", s(&src), s(&out), "--format", "v4"],
        vec!["caps", "--stream", s(&src), s(&out)],
    ] {
        let o = vmstate(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "{args:?}");
        assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file());
    }
    let mut after = before.clone();
    after.push("out.vmstate".into());
    after.sort();
    assert_eq!(names(&dir), after, "only the output is new");
    assert_eq!(names(&outside), ["victim"]);
    fs::remove_dir_all(dir).unwrap();
    fs::remove_dir_all(outside).unwrap();
}

#[test]
fn two_concurrent_rewrites_each_leave_a_complete_file() {
    let dir = scratch("concurrent");
    let (a, b) = (dir.join("a.vmstate"), dir.join("b.vmstate"));
    write_stream(&a, &[(b"pc.ram", 48 << 20)], 1);
    write_stream(&b, &[(b"pc.ram", 48 << 20)], 7);
    let (want_a, want_b) = (fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let out = dir.join("out.vmstate");
    for round in 0..3 {
        let spawn = |src: &Path| {
            Command::new(env!("CARGO_BIN_EXE_vmstate"))
                .args(["rewrite", s(src), s(&out)])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (spawn(&a), spawn(&b));
        let (oa, ob) = (
            pa.wait_with_output().unwrap(),
            pb.wait_with_output().unwrap(),
        );
        for o in [&oa, &ob] {
            assert_eq!(o.status.code(), Some(0), "round {round}: {}", err(o));
        }
        let got = fs::read(&out).unwrap();
        assert!(
            got == want_a || got == want_b,
            "round {round}: the output is neither input ({} bytes)",
            got.len()
        );
        assert_eq!(names(&dir), ["a.vmstate", "b.vmstate", "out.vmstate"]);
    }
    fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Item 3: mode, owner, hard links, long names

#[test]
fn an_existing_outputs_mode_and_owner_are_kept() {
    let dir = scratch("mode");
    let src = fixture(SMALL);
    for (i, args) in [
        vec!["rewrite", s(&src)],
        vec!["rewrite", "--format", "v4", s(&src)],
        vec!["caps", "--stream", s(&src)],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.join(format!("out{i}"));
        fs::write(&out, b"old").unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).unwrap();
        // Root can give the file away: then the owner must be kept too.
        let root = fs::metadata(&dir).unwrap().uid() == 0 && {
            let st = Command::new("chown").args(["4321:4322", s(&out)]).status();
            st.is_ok_and(|st| st.success())
        };
        let mut args = args.clone();
        args.push(s(&out));
        let o = vmstate(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
        let m = fs::metadata(&out).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600, "{args:?}");
        assert!(m.len() > 3, "{args:?}: written");
        if root {
            assert_eq!((m.uid(), m.gid()), (4321, 4322), "{args:?}");
        }
    }
    // A new file gets the default mode: 0666 minus the umask (here 022 or 002, as cargo's).
    let new = dir.join("new");
    let o = vmstate(&["rewrite", s(&src), s(&new)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let mode = fs::metadata(&new).unwrap().mode() & 0o777;
    let probe = dir.join("probe");
    File::create(&probe).unwrap();
    assert_eq!(mode, fs::metadata(&probe).unwrap().mode() & 0o777);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_hard_linked_output_keeps_its_links() {
    let dir = scratch("hardlink");
    let out = dir.join("out.vmstate");
    let other = dir.join("other-name.vmstate");
    fs::write(&out, vec![0x55; 3 << 20]).unwrap();
    fs::hard_link(&out, &other).unwrap();
    let ino = fs::metadata(&out).unwrap().ino();
    let src = fixture(SMALL);
    let o = vmstate(&["rewrite", s(&src), s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let want = fs::read(&src).unwrap();
    for p in [&out, &other] {
        let m = fs::metadata(p).unwrap();
        assert_eq!((m.ino(), m.nlink()), (ino, 2), "{}", p.display());
        assert!(
            fs::read(p).unwrap() == want,
            "{}: shorter file, same bytes",
            p.display()
        );
    }
    assert_eq!(names(&dir), ["other-name.vmstate", "out.vmstate"]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_250_character_output_name_works() {
    let dir = scratch("long");
    let src = fixture(SMALL);
    let out = dir.join("o".repeat(250));
    for args in [
        vec!["rewrite", s(&src), s(&out)],
        vec!["caps", "--stream", s(&src), s(&out)],
    ] {
        let o = vmstate(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", err(&o));
    }
    assert_eq!(names(&dir), ["o".repeat(250)]);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_failed_write_leaves_the_old_output_and_no_temporary_file() {
    let dir = scratch("failed");
    let out = dir.join("out.vmstate");
    fs::write(&out, b"old").unwrap();
    // An input that is not a stream: nothing is written.
    let bad = dir.join("bad");
    fs::write(&bad, b"QEVM\0\0\0\x03garbage").unwrap();
    let o = vmstate(&["rewrite", s(&bad), s(&out)]);
    assert_eq!(o.status.code(), Some(Exit::Invalid.status()), "{}", err(&o));
    assert_eq!(fs::read(&out).unwrap(), b"old");
    assert_eq!(names(&dir), ["bad", "out.vmstate"]);
    // A write that fails half-way (the file size limit stands in for a full disk): exit 104,
    // the old output unchanged, no temporary file left.
    for args in [
        format!("rewrite {} {}", s(&fixture(SMALL)), s(&out)),
        format!("rewrite --format v4 {} {}", s(&fixture(SMALL)), s(&out)),
    ] {
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -f 64; trap '' XFSZ; exec {} {args}",
                env!("CARGO_BIN_EXE_vmstate")
            ))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(Exit::Output.status()),
            "{args}: {}",
            err(&o)
        );
        assert_eq!(fs::read(&out).unwrap(), b"old", "{args}");
        assert_eq!(names(&dir), ["bad", "out.vmstate"], "{args}");
    }
    // A full device: the write fails, exit 104, the device stays.
    let full = own_device(&dir, "full", 1, 7, "/dev/full");
    let o = vmstate(&["rewrite", s(&fixture(SMALL)), s(&full)]);
    assert_eq!(o.status.code(), Some(Exit::Output.status()), "{}", err(&o));
    assert!(err(&o).contains(s(&full)), "{}", err(&o));
    assert!(fs::metadata(&full).unwrap().file_type().is_char_device());
    fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Item 4: no command writes over its input

#[test]
fn no_command_writes_over_one_of_its_inputs() {
    let dir = scratch("inputs");
    let src = dir.join("in.vmstate");
    fs::copy(fixture(SMALL), &src).unwrap();
    let want = fs::read(&src).unwrap();
    let hard = dir.join("hard.vmstate");
    fs::hard_link(&src, &hard).unwrap();
    let soft = dir.join("soft.vmstate");
    std::os::unix::fs::symlink("in.vmstate", &soft).unwrap();
    let dotted = format!(
        "{}/../{}/in.vmstate",
        s(&dir),
        dir.file_name().unwrap().to_str().unwrap()
    );
    for out in [s(&src), s(&hard), s(&soft), dotted.as_str()] {
        for args in [
            vec!["caps", "--stream", s(&src), out],
            vec!["caps", "--stream", s(&src), "--stream", s(&src), out],
            vec!["rewrite", s(&src), out],
            vec!["rewrite", s(&src), out, "--format", "v4"],
            vec!["rewrite", s(&src), out, "--set", "i8259[0].imr=0x5a"],
        ] {
            let o = vmstate(&args);
            assert_eq!(
                o.status.code(),
                Some(Exit::Usage.status()),
                "{args:?}: {}",
                err(&o)
            );
            assert!(err(&o).contains("refusing to overwrite"), "{}", err(&o));
            assert!(
                fs::read(&src).unwrap() == want,
                "{args:?}: the input changed"
            );
        }
    }
    assert_eq!(names(&dir), ["hard.vmstate", "in.vmstate", "soft.vmstate"]);
    // extract: a file of the output directory that is the input (a hard link to it).
    let parts = dir.join("parts");
    fs::create_dir_all(&parts).unwrap();
    fs::hard_link(&src, parts.join("state.json")).unwrap();
    let o = vmstate(&["extract", s(&src), s(&parts)]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(err(&o).contains("refusing to overwrite"), "{}", err(&o));
    assert!(fs::read(&src).unwrap() == want, "extract changed its input");
    fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Item 5: extract

#[test]
fn extract_keeps_blocks_whose_old_file_names_collided_apart() {
    let dir = scratch("extract-names");
    let src = dir.join("collide.vmstate");
    let blocks: [(&[u8], u64); 3] = [
        (b"_rom@etc_acpi_rsdp", 8 << 10),
        (b"/rom@etc/acpi/rsdp", 8 << 10),
        (b"%2From", 4 << 10),
    ];
    write_stream(&src, &blocks, 0x10);
    let out = dir.join("parts");
    let o = vmstate(&["extract", s(&src), s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let files = names(&out.join("ram"));
    assert_eq!(files.len(), 3, "{files:?}");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    let ram = index["ram"].as_array().unwrap();
    assert_eq!(ram.len(), 3);
    for (i, &(name, length)) in blocks.iter().enumerate() {
        let entry = ram
            .iter()
            .find(|e| e["name"].as_str().unwrap().as_bytes() == name)
            .unwrap_or_else(|| panic!("{index}"));
        assert_eq!(entry["length"], length);
        let file = entry["file"].as_str().unwrap();
        let image = fs::read(out.join(file)).unwrap();
        assert_eq!(image.len() as u64, length);
        // Each block's own pages, not another's.
        assert!(
            image[8..4096].iter().all(|&b| b == 0x10 + i as u8),
            "{file}"
        );
        // The file name gives the block name back.
        let stem = file
            .strip_prefix("ram/")
            .unwrap()
            .strip_suffix(".bin")
            .unwrap();
        assert_eq!(
            vmstate_cli::extract::name_from_file(stem).as_deref(),
            Some(name)
        );
    }
    assert!(index["sections"].is_array());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extract_follows_no_symlink_planted_in_the_output_directory() {
    let dir = scratch("extract-planted");
    let outside = scratch("extract-victim");
    let victim = outside.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let out = dir.join("parts");
    fs::create_dir_all(out.join("sections")).unwrap();
    for name in ["desc.json", "state.json", "index.json"] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(&victim, out.join("sections/1-timer.0.bin")).unwrap();
    // A hard link to the victim is replaced too, not written through.
    fs::hard_link(&victim, out.join("sections/0-timer.0.bin")).unwrap();
    let src = fixture(SMALL);
    let o = vmstate(&["extract", s(&src), s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for name in ["desc.json", "state.json", "index.json"] {
        assert!(
            fs::symlink_metadata(out.join(name))
                .unwrap()
                .file_type()
                .is_file()
        );
    }
    // A directory planted as a symlink out of the output directory is refused.
    fs::remove_dir_all(&out).unwrap();
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("ram")).unwrap();
    let o = vmstate(&["extract", s(&src), s(&out)]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(err(&o).contains("ram"), "{}", err(&o));
    assert_eq!(names(&outside), ["victim"]);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    fs::remove_dir_all(dir).unwrap();
    fs::remove_dir_all(outside).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Item 13: exit statuses and messages

/// `static-check` dumps: a source of `n` sections, a destination that has none of them.
fn dumps(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let mut src = serde_json::Map::new();
    src.insert(
        "vmschkmachine".into(),
        serde_json::json!({"Name": "pc-i440fx-7.2"}),
    );
    for i in 0..n {
        src.insert(
            format!("dev{i}"),
            serde_json::json!({
                "Name": format!("dev{i}"),
                "version_id": 1,
                "minimum_version_id": 1,
                "Description": {
                    "name": format!("dev{i}"),
                    "version_id": 1,
                    "minimum_version_id": 1,
                    "Fields": []
                }
            }),
        );
    }
    let dst = serde_json::json!({"vmschkmachine": {"Name": "pc-i440fx-7.2"}});
    let (s, d) = (dir.join(format!("src{n}.json")), dir.join("dst.json"));
    fs::write(&s, serde_json::to_vec(&src).unwrap()).unwrap();
    fs::write(&d, serde_json::to_vec(&dst).unwrap()).unwrap();
    (s, d)
}

#[test]
fn problem_counts_stay_below_the_reserved_statuses() {
    let dir = scratch("counts");
    for (n, want) in [
        (0, 0),
        (1, 1),
        (99, 99),
        (100, 100),
        (255, 100),
        (256, 100),
        (300, 100),
    ] {
        let (src, dst) = dumps(&dir, n);
        let o = vmstate(&["static-check", s(&src), s(&dst)]);
        assert_eq!(o.status.code(), Some(want), "{n} problems: {}", err(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).lines().count(),
            n,
            "every problem is still printed"
        );
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn each_kind_of_failure_has_its_own_status() {
    let dir = scratch("statuses");
    let src = fixture(SMALL);
    let out = dir.join("out");
    let not_stream = dir.join("text");
    fs::write(&not_stream, b"hello").unwrap();
    let (dump, _) = dumps(&dir, 1);
    let cases: Vec<(Vec<&str>, Exit)> = vec![
        (vec!["verify", s(&src)], Exit::Success),
        (vec!["verify", s(&not_stream)], Exit::Problems(1)),
        (vec!["inspect", s(&not_stream)], Exit::Invalid),
        (
            vec!["check", s(&not_stream), "--dest", s(&src)],
            Exit::Invalid,
        ),
        (
            vec!["check", s(&src), "--dest", s(&not_stream)],
            Exit::Invalid,
        ),
        (
            vec!["static-check", s(&not_stream), s(&dump)],
            Exit::Invalid,
        ),
        (vec!["verify"], Exit::Usage),
        (vec!["frobnicate"], Exit::Usage),
        (vec!["rewrite", s(&src), s(&dir)], Exit::Usage),
        (vec!["verify", "/nonexistent"], Exit::Unreadable),
        (
            vec!["check", "/nonexistent", "--dest", s(&src)],
            Exit::Unreadable,
        ),
        (
            vec!["check", s(&src), "--dest", "/nonexistent"],
            Exit::Unreadable,
        ),
        (
            vec!["static-check", "/nonexistent", s(&dump)],
            Exit::Unreadable,
        ),
        (
            vec!["caps", "--dump", "/nonexistent", s(&out)],
            Exit::Unreadable,
        ),
        (
            vec!["rewrite", s(&src), "/nonexistent-dir/out"],
            Exit::Output,
        ),
    ];
    for (args, want) in &cases {
        let o = vmstate(args);
        assert_eq!(
            o.status.code(),
            Some(want.status()),
            "{args:?}: {}",
            err(&o)
        );
    }
    assert!(!out.exists());
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_standard_output_that_cannot_be_written_exits_104() {
    let dir = scratch("stdout");
    let src = fixture(SMALL);
    let (dump, _) = dumps(&dir, 3);
    let caps = dir.join("caps.json");
    for args in [
        vec!["verify", s(&src)],
        vec!["inspect", s(&src)],
        vec!["check", s(&src), "--dest", s(&src)],
        vec!["static-check", s(&dump), s(&dir.join("dst.json"))],
        vec!["caps", "--stream", s(&src), s(&caps)],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
            .args(&args)
            .stdout(File::options().write(true).open("/dev/full").unwrap())
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(Exit::Output.status()),
            "{args:?}: {}",
            err(&o)
        );
        assert!(err(&o).contains("stdout"), "{args:?}: {}", err(&o));
    }
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn destination_file_errors_name_the_file_and_the_byte() {
    let dir = scratch("dest-errors");
    let src = fixture(SMALL);
    let caps = dir.join("caps.json");
    let o = vmstate(&["caps", "--stream", s(&src), s(&caps)]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let full = fs::read(&caps).unwrap();
    let cut = dir.join("cut.json");
    fs::write(&cut, &full[..1000]).unwrap();
    let o = vmstate(&["check", s(&src), "--dest", s(&cut)]);
    assert_eq!(o.status.code(), Some(Exit::Invalid.status()), "{}", err(&o));
    assert!(
        err(&o).contains(s(&cut)) && err(&o).contains("at byte 1000 (0x3e8)"),
        "{}",
        err(&o)
    );
    // A cut stream as the destination names its file too.
    let v4 = dir.join("dest.v4");
    let o = vmstate(&["rewrite", s(&src), s(&v4), "--format", "v4"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let bytes = fs::read(&v4).unwrap();
    fs::write(&v4, &bytes[..3000]).unwrap();
    let o = vmstate(&["check", s(&src), "--dest", s(&v4)]);
    assert_eq!(o.status.code(), Some(Exit::Invalid.status()), "{}", err(&o));
    assert!(
        err(&o).contains(&format!("{}: at byte ", s(&v4))),
        "{}",
        err(&o)
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn set_on_a_section_without_a_description_says_so() {
    let dir = scratch("set");
    let bytes = fs::read(fixture(SMALL)).unwrap();
    let end = vmstate::wire::trailer::Trailer::locate(&bytes).unwrap();
    let bare = dir.join("bare.vmstate");
    fs::write(&bare, &bytes[..end]).unwrap();
    let out = dir.join("out");
    let o = vmstate(&["rewrite", s(&bare), s(&out), "--set", "i8259[0].imr=0x5a"]);
    assert_eq!(o.status.code(), Some(Exit::Usage.status()), "{}", err(&o));
    assert!(
        err(&o).contains(
            "section 'i8259' instance 0 is in this stream but its fields are not described: \
             the stream has no VMDESCRIPTION trailer"
        ),
        "{}",
        err(&o)
    );
    // A section that really is not there is still named as missing.
    let o = vmstate(&["rewrite", s(&bare), s(&out), "--set", "i8259[7].imr=0x5a"]);
    assert!(
        err(&o).contains("no section 'i8259' instance 7"),
        "{}",
        err(&o)
    );
    assert!(!out.exists());
    fs::remove_dir_all(dir).unwrap();
}
