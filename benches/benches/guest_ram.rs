//! Guest RAM out of a saved stream (`vmstate ram`, issue 17): indexing a 3 GiB stream in one
//! pass (`vmstate_cli::ram::index` over the mapped file, the walk `vmstate ram` makes: every
//! record read and checked, each page's slot set), and random 4 KiB reads after indexing
//! (`PageIndex::read`), against a plain 4 KiB copy from the mapped file at the same offsets.
//!
//! The stream is generated once under `target/bench-data/` (3 GiB of `pc.ram`: three pages in
//! four random, every fourth a ZERO record, in 2048-page PART sections as QEMU writes them) and
//! kept in the page cache by the runs, so the numbers are the walk's, not the disk's.

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstate::Sink;
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate::writer::StreamWriter;
use vmstate_cli::input::Input;
use vmstate_cli::ram::{DEFAULT_INDEX_LIMIT, Place};

const RAM: u64 = 3 << 30;
const PAGES_PER_PART: u64 = 2048;

struct FileSink(BufWriter<File>, usize);

impl Sink for FileSink {
    type Error = vmstate::Error;
    fn write(&mut self, bytes: &[u8]) -> Result<(), vmstate::Error> {
        self.0.write_all(bytes).map_err(|_| {
            vmstate::Error::new(
                self.1,
                vmstate::ErrorKind::BufferTooSmall {
                    capacity: 0,
                    needed: 0,
                },
            )
        })?;
        self.1 += bytes.len();
        Ok(())
    }
    fn position(&self) -> usize {
        self.1
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The 3 GiB stream, written once.
fn stream() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("guest-ram-3g.vmstate");
    if path.metadata().is_ok_and(|m| m.len() > RAM) {
        return path;
    }
    let tmp = dir.join("guest-ram-3g.vmstate.tmp");
    let f = File::create(&tmp).unwrap();
    let mut w = StreamWriter::new(FileSink(BufWriter::with_capacity(1 << 20, f), 0));
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    w.configuration(&vmstate::wire::Configuration::new(b"pc-i440fx-7.2"))
        .unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: RAM,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut ram = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let pages = RAM / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        let end = (next + PAGES_PER_PART).min(pages);
        w.ram_part(1, false, &mut ram, |ram, out| {
            for p in next..end {
                if p % 4 == 3 {
                    ram.zero(b"pc.ram", p * PAGE_SIZE as u64, out)?;
                    continue;
                }
                for word in page.chunks_exact_mut(8) {
                    word.copy_from_slice(&xorshift(&mut x).to_ne_bytes());
                }
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
    sink.0.flush().unwrap();
    drop(sink);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn guest_ram(c: &mut Criterion) {
    let path = stream();
    let input = Input::open(&path).unwrap();
    let len = input.bytes().len() as u64;

    let mut g = c.benchmark_group("guest_ram_index");
    g.throughput(Throughput::Bytes(len));
    g.sample_size(10);
    g.bench_function("index_3gib_stream", |b| {
        b.iter(|| {
            let ram = vmstate_cli::ram::index(&input, "bench", DEFAULT_INDEX_LIMIT).unwrap();
            black_box(ram.index.blocks().count)
        })
    });
    g.finish();

    let ram = vmstate_cli::ram::index(&input, "bench", DEFAULT_INDEX_LIMIT).unwrap();
    let block = ram.index.block(b"pc.ram").unwrap();
    let pages = RAM / PAGE_SIZE as u64;
    let mut g = c.benchmark_group("guest_ram_read");
    g.throughput(Throughput::Bytes(PAGE_SIZE as u64));
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let mut buf = vec![0u8; PAGE_SIZE];
    g.bench_function("random_4k_read", |b| {
        b.iter(|| {
            let p = xorshift(&mut x) % pages;
            ram.index
                .read(block, p * PAGE_SIZE as u64, &mut buf)
                .unwrap();
            black_box(&buf);
        })
    });
    // The same through `vmstate ram`'s own copy (range checks, the guest-physical layout).
    let physical = ram.physical(&Default::default()).unwrap();
    g.bench_function("random_4k_read_physical", |b| {
        b.iter(|| {
            let p = xorshift(&mut x) % pages;
            let place = Place::Physical {
                addr: p * PAGE_SIZE as u64,
                len: PAGE_SIZE as u64,
            };
            ram.copy(&place, Some(&physical), &mut |_, bytes| {
                black_box(bytes);
                Ok(())
            })
            .unwrap();
        })
    });
    // The floor: a 4 KiB copy from the mapped stream at a random page-sized offset.
    let bytes = input.bytes();
    g.bench_function("memcpy_4k_from_the_mapping", |b| {
        b.iter(|| {
            let o = (xorshift(&mut x) % (len / PAGE_SIZE as u64 - 1)) as usize * PAGE_SIZE;
            buf.copy_from_slice(&bytes[o..o + PAGE_SIZE]);
            black_box(&buf);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    targets = guest_ram
}
criterion_main!(benches);
