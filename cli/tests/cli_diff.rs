//! `diff` of two large streams keeps its resident memory bounded: a 64 GiB guest sent as
//! ZERO records (16 Mi records, about 150 MB per stream) and a stream of 160 MiB of data
//! pages, each against a copy with one page changed. Pages are merged from both streams in
//! stream order, never collected (issue 13 item 9: 2.9 GB before).
//!
//! This file holds one test so that the peak resident size of this process's children
//! (`getrusage(RUSAGE_CHILDREN)`) is that of the `vmstate diff` runs alone.

mod support;

use std::process::Command;
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};

/// How the pages of the `pc.ram` block are sent.
#[derive(Clone, Copy)]
enum Fill {
    /// Every page a ZERO record.
    Zeros,
    /// Every page a PAGE record with contents derived from its number.
    Data,
}

/// Writes a stream with one `pc.ram` block of `ram` bytes sent as `fill`, except page
/// `changed`, whose first byte is 0x5a (sent as a PAGE record).
fn write_stream(path: &std::path::Path, ram: u64, fill: Fill, changed: Option<u64>) -> usize {
    let mut w = support::writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: ram,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut writer = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    let pages = ram / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        // QEMU writes RAM in many PART sections; a section is walked whole before the input
        // behind it is released, so a PART of data pages is kept at 8 MiB.
        let per_part = match fill {
            Fill::Zeros => 1 << 16,
            Fill::Data => 2048,
        };
        let end = (next + per_part).min(pages);
        w.ram_part(1, false, &mut writer, |ram, out| {
            for p in next..end {
                let offset = p * PAGE_SIZE as u64;
                match fill {
                    Fill::Zeros => page.fill(0),
                    Fill::Data => {
                        page.fill((p % 251) as u8 + 1);
                        page[8..16].copy_from_slice(&p.to_be_bytes());
                    }
                }
                if changed == Some(p) {
                    page[0] = 0x5a;
                } else if let Fill::Zeros = fill {
                    ram.zero(b"pc.ram", offset, out)?;
                    continue;
                }
                ram.page(b"pc.ram", offset, &page, out)?;
            }
            Ok(())
        })
        .unwrap();
        next = end;
    }
    w.ram_part(1, true, &mut writer, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    support::finish(w)
}

/// Peak resident set of the waited-for children so far, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: zero-initialised and filled in by the successful call above.
    let usage = unsafe { usage.assume_init() };
    // Linux reports KiB.
    usage.ru_maxrss as u64 * 1024
}

/// `vmstate diff A B`: exit status, stdout, stderr.
fn diff(a: &std::path::Path, b: &std::path::Path) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(["diff", a.to_str().unwrap(), b.to_str().unwrap()])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// The bound: tens of MiB whatever the RAM size (the streams here hold no device sections).
const BOUND: u64 = 64 << 20;

#[test]
fn diff_of_large_streams_runs_in_bounded_memory() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-diff-memory");
    std::fs::create_dir_all(&dir).unwrap();

    // A 64 GiB guest of ZERO records, and the same with page 0x123456 changed.
    let (a, b) = (dir.join("zeros-a.vmstate"), dir.join("zeros-b.vmstate"));
    let ram = 64 << 30;
    let len = write_stream(&a, ram, Fill::Zeros, None);
    write_stream(&b, ram, Fill::Zeros, Some(0x123456));
    assert!(len > 140 << 20, "{len}");
    let (code, out, err) = diff(&a, &b);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        out,
        "ram:pc.ram@0x123456000+0x0: 0x00 -> 0x5a (1 bytes of the page differ)\n"
    );
    assert!(
        err.contains("RAM block lists (1 blocks) and 16777216 pages by content"),
        "{err}"
    );
    let (code, out, _) = diff(&a, &a);
    assert_eq!((code, out.as_str()), (Some(0), ""));
    let peak = children_peak_rss();
    eprintln!("diff peak RSS: {peak} bytes");
    assert!(
        peak < BOUND,
        "diff peak RSS {peak} bytes for two {len}-byte streams of ZERO records"
    );
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(&b).unwrap();

    // 160 MiB of data pages, one page changed.
    let (a, b) = (dir.join("data-a.vmstate"), dir.join("data-b.vmstate"));
    let ram = 160 << 20;
    let len = write_stream(&a, ram, Fill::Data, None);
    write_stream(&b, ram, Fill::Data, Some(0x9000));
    let (code, out, err) = diff(&a, &b);
    assert_eq!(code, Some(1), "{err}");
    // Page 0x9000 holds (0x9000 % 251) + 1 = 0xdb everywhere but its page number.
    assert_eq!(
        out,
        "ram:pc.ram@0x9000000+0x0: 0xdb -> 0x5a (1 bytes of the page differ)\n"
    );
    let peak = children_peak_rss();
    eprintln!("diff peak RSS: {peak} bytes");
    assert!(
        peak < BOUND,
        "diff peak RSS {peak} bytes for two {len}-byte streams of data pages"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
