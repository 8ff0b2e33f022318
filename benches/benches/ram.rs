//! RAM over a 256 MiB region: zero-page detection (`ram::is_zero` on every page) and encoding
//! the region as a RAM PART section (`RamWriter::page_or_zero`, QEMU's ZERO-or-PAGE choice,
//! EOS, footer), against a `memcpy` of the region (the bandwidth limit). Three contents: all
//! zero, random, and 10% of pages random (the rest zero).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstate::SliceSink;
use vmstate::ram::{PAGE_SIZE, RamWriter, is_zero};
use vmstate::writer::StreamWriter;

const REGION: usize = 256 << 20;

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A region whose page `i` is random when `dirty(i)` holds, zero otherwise.
fn region(dirty: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut v = vec![0u8; REGION];
    // Touch every page: an untouched zeroed allocation maps every page to the kernel's one
    // shared zero page, which would make zero pages read from cache.
    for page in v.chunks_exact_mut(PAGE_SIZE) {
        page[0] = 1;
    }
    black_box(&mut v);
    for page in v.chunks_exact_mut(PAGE_SIZE) {
        page[0] = 0;
    }
    let mut x = 0x2545_f491_4f6c_dd1d;
    for (i, page) in v.chunks_exact_mut(PAGE_SIZE).enumerate() {
        if dirty(i) {
            for w in page.chunks_exact_mut(8) {
                w.copy_from_slice(&xorshift(&mut x).to_ne_bytes());
            }
        }
    }
    v
}

fn ram(c: &mut Criterion) {
    // Room for every page as a PAGE record plus headers (touched like the regions).
    let mut out = vec![1u8; REGION + (REGION / PAGE_SIZE) * 16 + 4096];
    let contents: [(&str, Vec<u8>); 3] = [
        ("zero", region(|_| false)),
        ("random", region(|_| true)),
        // Every tenth page, spread over the region.
        ("dirty10", region(|i| i % 10 == 0)),
    ];
    for (name, mem) in &contents {
        let mut g = c.benchmark_group(format!("ram_{name}"));
        g.throughput(Throughput::Bytes(REGION as u64));
        g.sample_size(10);
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                out[..REGION].copy_from_slice(black_box(mem));
                black_box(&out);
            })
        });
        g.bench_function("is_zero", |b| {
            b.iter(|| {
                black_box(mem)
                    .chunks_exact(PAGE_SIZE)
                    .filter(|p| is_zero(p))
                    .count()
            })
        });
        g.bench_function("part_encode", |b| {
            b.iter(|| {
                let mut w = StreamWriter::new(SliceSink::new(&mut out));
                let mut ram = RamWriter::new();
                w.ram_part(2, false, &mut ram, |ram, out| {
                    for (i, page) in black_box(mem).chunks_exact(PAGE_SIZE).enumerate() {
                        ram.page_or_zero(b"pc.ram", (i * PAGE_SIZE) as u64, page, out)?;
                    }
                    Ok(())
                })
                .expect("fits");
                w.into_inner().finish()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = ram
}
criterion_main!(benches);
