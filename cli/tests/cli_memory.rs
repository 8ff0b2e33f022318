//! Large streams: `inspect`, `verify`, `rewrite` and `extract` over a 256 MiB stream of RAM pages keep their
//! resident memory well below the file size (the input is memory-mapped and released behind
//! the walk, pages are never copied).
//!
//! The same for a stream of 4 Mi ZERO records, which take 9 bytes each on the wire.
//!
//! This file holds one test so that the peak resident size of this process's children
//! (`getrusage(RUSAGE_CHILDREN)`) is that of the `vmstate` runs alone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::Command;
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate::writer::StreamWriter;

/// A [`vmstate::Sink`] over a file.
struct FileSink {
    w: BufWriter<File>,
    n: usize,
}

#[derive(Debug)]
enum SinkError {
    Io(#[allow(dead_code)] std::io::Error),
    Codec(#[allow(dead_code)] vmstate::Error),
}

impl From<vmstate::Error> for SinkError {
    fn from(e: vmstate::Error) -> Self {
        SinkError::Codec(e)
    }
}

impl vmstate::Sink for FileSink {
    type Error = SinkError;

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.w.write_all(bytes).map_err(SinkError::Io)?;
        self.n += bytes.len();
        Ok(())
    }

    fn position(&self) -> usize {
        self.n
    }
}

const RAM: u64 = 256 << 20;
/// Pages per PART section (QEMU writes RAM in many PART sections, one per iteration).
const PAGES_PER_PART: u64 = 2048;

/// Writes a stream with one `pc.ram` block of [`RAM`] bytes, every page sent as a PAGE record
/// with non-zero contents.
fn write_stream(path: &std::path::Path) -> usize {
    let f = File::create(path).unwrap();
    let mut w = StreamWriter::new(FileSink {
        w: BufWriter::with_capacity(1 << 20, f),
        n: 0,
    });
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: RAM,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut ram = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    let pages = RAM / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        let end = (next + PAGES_PER_PART).min(pages);
        w.ram_part(1, false, &mut ram, |ram, out| {
            for p in next..end {
                page.fill((p % 251) as u8 + 1);
                page[..8].copy_from_slice(&p.to_be_bytes());
                ram.page(b"pc.ram", p * PAGE_SIZE as u64, &page, out)?;
            }
            Ok(())
        })
        .unwrap();
        next = end;
    }
    w.ram_part(1, true, &mut ram, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    let mut sink = w.into_inner();
    sink.w.flush().unwrap();
    sink.n
}

/// Writes a stream whose `pc.ram` block of `ram` bytes is sent as ZERO records only: 9 bytes
/// on the wire per 4 KiB page.
fn write_zero_stream(path: &std::path::Path, ram: u64) -> usize {
    let f = File::create(path).unwrap();
    let mut w = StreamWriter::new(FileSink {
        w: BufWriter::with_capacity(1 << 20, f),
        n: 0,
    });
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: ram,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut writer = RamWriter::new();
    let pages = ram / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        let end = (next + (1 << 16)).min(pages);
        w.ram_part(1, false, &mut writer, |ram, out| {
            for p in next..end {
                ram.zero(b"pc.ram", p * PAGE_SIZE as u64, out)?;
            }
            Ok(())
        })
        .unwrap();
        next = end;
    }
    w.ram_part(1, true, &mut writer, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    let mut sink = w.into_inner();
    sink.w.flush().unwrap();
    sink.n
}

/// Whether two files hold the same bytes (compared in chunks).
fn same_contents(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
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

/// Runs `vmstate ARGS` and asserts it exits 0 (showing its stderr otherwise).
fn vmstate_ok(args: &[&str]) -> std::process::Output {
    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn large_streams_are_processed_in_bounded_memory() {
    let dir = std::env::temp_dir().join(format!("vmstate-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // 4 Mi ZERO records (16 GiB of RAM) in a 36 MiB stream: nothing is kept per record, so
    // the peak stays below the stream's size (a decoded record takes more than its 9 bytes).
    let zeros = dir.join("zeros.vmstate");
    let zlen = write_zero_stream(&zeros, 16 << 30);
    let o = vmstate_ok(&["inspect", zeros.to_str().unwrap()]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("block=pc.ram\tlength=0x400000000\tzero=4194304\tnormal=0\txbzrle=0"),
        "{out}"
    );
    let zero_peak = children_peak_rss();
    assert!(
        zero_peak < zlen as u64 / 2,
        "inspect peak RSS {zero_peak} bytes for a {zlen}-byte stream of ZERO records"
    );
    std::fs::remove_file(&zeros).unwrap();

    let path = dir.join("large.vmstate");
    let len = write_stream(&path);
    assert!(len as u64 > RAM, "{len}");
    let file = path.to_str().unwrap();

    let o = vmstate_ok(&["inspect", file]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("block=pc.ram\tlength=0x10000000\tzero=0\tnormal=65536\txbzrle=0"),
        "{out}"
    );
    let inspect_peak = children_peak_rss();

    let o = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(["verify", file])
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(o.status.code(), Some(0), "{out}");
    // START: block list + EOS; 32 PARTs of 2048 pages + EOS; END: EOS.
    assert!(
        out.contains(&format!(
            "ok: 0 sections checked with typed models, 0 with the description only, {} RAM records, {len} bytes",
            2 + 65536 + 32 + 1
        )),
        "{out}"
    );
    let verify_peak = children_peak_rss();

    // rewrite: byte-identical, and extract: the block image holds every page.
    let copy = dir.join("copy.vmstate");
    vmstate_ok(&["rewrite", file, copy.to_str().unwrap()]);
    assert!(same_contents(&path, &copy), "rewrite is byte-identical");
    std::fs::remove_file(&copy).unwrap();
    let parts = dir.join("parts");
    vmstate_ok(&["extract", file, parts.to_str().unwrap()]);
    let image = std::fs::read(parts.join("ram/pc.ram.bin")).unwrap();
    assert_eq!(image.len() as u64, RAM);
    for p in [0u64, 1, 12345, 65535] {
        let at = (p * PAGE_SIZE as u64) as usize;
        assert_eq!(image[at..at + 8], p.to_be_bytes());
        assert!(
            image[at + 8..at + PAGE_SIZE]
                .iter()
                .all(|&b| b == (p % 251) as u8 + 1)
        );
    }
    drop(image);
    let peak = children_peak_rss();
    std::fs::remove_dir_all(&dir).unwrap();

    // The file is 256 MiB; the decoded model of 65536 page records is a few MiB and the
    // mapping is released every 8 MiB. A copy of the input (or a mapping kept resident)
    // would put the peak above the file size.
    let limit = len as u64 / 4;
    assert!(
        inspect_peak < limit,
        "inspect peak RSS {inspect_peak} bytes for a {len}-byte stream"
    );
    assert!(
        verify_peak < limit,
        "verify peak RSS {verify_peak} bytes for a {len}-byte stream"
    );
    assert!(
        peak < limit,
        "rewrite/extract peak RSS {peak} bytes for a {len}-byte stream"
    );
}
