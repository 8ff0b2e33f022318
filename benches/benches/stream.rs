//! Walking whole real QEMU 7.2 streams record by record (header, configuration, every RAM
//! record, every device section with its footer check, EOF, trailer), in bytes of stream per
//! second, with the footer-scan resolver and with description tables (falling back to the
//! footer scan for sections no table describes). A `memcpy` of the stream is the reference.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstate::stream::{FooterScan, Records, Schemas};
use vmstate_benches::{DEVICE_TABLES, FIXTURES, SCRATCH_LEN};

fn walk(c: &mut Criterion) {
    let mut scratch = vec![0u8; SCRATCH_LEN];
    for (name, bytes) in FIXTURES {
        let mut copy = vec![0u8; bytes.len()];
        let mut g = c.benchmark_group(format!("walk_{name}"));
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                copy.copy_from_slice(black_box(bytes));
                black_box(&copy);
            })
        });
        g.bench_function("footer_scan", |b| {
            b.iter(|| {
                Records::new(black_box(bytes), FooterScan)
                    .map(|r| r.expect("fixture walks").end)
                    .sum::<usize>()
            })
        });
        g.bench_function("schemas", |b| {
            b.iter(|| {
                let lengths = (Schemas::new(&DEVICE_TABLES, &mut scratch), FooterScan);
                Records::new(black_box(bytes), lengths)
                    .map(|r| r.expect("fixture walks").end)
                    .sum::<usize>()
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = walk
}
criterion_main!(benches);
