//! vmstate v4: the cost of the per-section CRC-32C (section encode with and without it, a
//! whole v4 stream walked with and without checksum verification, and the raw CRC-32C
//! throughput on 4 KiB and 64 KiB buffers), and deciding
//! compatibility from the headers alone (`SectionRequirement::from_section` for every section)
//! against a full validated load of every section.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmstate::v4::caps::SectionRequirement;
use vmstate::v4::wire::{Record4, Records4};
use vmstate::{SectionId, SliceSink, State};
use vmstate_benches::{Big, big, hpet, i8254, rtc, serial};
use vmstate_devices::{hpet::Hpet, i8254::Pit, rtc::Rtc, serial::IsaSerial};
use zerocopy::IntoBytes;

fn id(section_id: u32, vmsd: &vmstate::Vmsd) -> SectionId<'static> {
    SectionId {
        section_id,
        idstr: vmsd.name.as_bytes(),
        instance_id: 0,
    }
}

/// A v4 stream (no vendors) holding the five benchmark devices.
fn stream(crc: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 16];
    let header = vmstate::v4::wire::Header::new(&[], crc).expect("header");
    let mut out =
        vmstate::v4::StreamWriter::new(&header, SliceSink::new(&mut buf)).expect("header");
    let (r, p, h, s, b) = (rtc(), i8254(), hpet(), serial(), big());
    let states: [(&vmstate::Vmsd, &[u8]); 5] = [
        (Rtc::VMSD, r.state.as_bytes()),
        (Pit::VMSD, p.state.as_bytes()),
        (Hpet::VMSD, h.state.as_bytes()),
        (IsaSerial::VMSD, s.state.as_bytes()),
        (Big::VMSD, b.state.as_bytes()),
    ];
    for (i, (vmsd, state)) in states.into_iter().enumerate() {
        out.section_raw(id(i as u32 + 1, vmsd), vmsd, state)
            .expect("section");
    }
    out.eof().expect("eof");
    let n = out.into_inner().finish();
    buf.truncate(n);
    buf
}

fn crc(c: &mut Criterion) {
    let mut buf = vec![0u8; 1 << 16];
    fn section<T: State>(c: &mut Criterion, name: &str, state: &T, buf: &mut [u8]) {
        let mut g = c.benchmark_group(format!("v4_encode_{name}"));
        let n = vmstate::encode_body_into(state, buf).expect("encodes");
        g.throughput(Throughput::Bytes(n as u64));
        for crc in [false, true] {
            g.bench_function(if crc { "crc32c" } else { "no_crc" }, |b| {
                b.iter(|| {
                    let header = vmstate::v4::wire::Header::new(&[], crc).expect("header");
                    let mut out = vmstate::v4::StreamWriter::new(&header, SliceSink::new(buf))
                        .expect("header");
                    out.section(id(1, T::VMSD), black_box(state))
                        .expect("encodes");
                    out.into_inner().finish()
                })
            });
        }
        g.finish();
    }
    section(c, "rtc", &rtc().state, &mut buf);
    section(c, "hpet", &hpet().state, &mut buf);
    section(c, "big4k", &big().state, &mut buf);

    let mut g = c.benchmark_group("v4_walk");
    for crc in [false, true] {
        let s = stream(crc);
        g.throughput(Throughput::Bytes(s.len() as u64));
        g.bench_function(if crc { "crc32c" } else { "no_crc" }, |b| {
            b.iter(|| {
                Records4::new(black_box(&s))
                    .map(|r| r.expect("walks").end)
                    .sum::<usize>()
            })
        });
    }
    g.finish();
}

/// Raw CRC-32C throughput (`vmstate::v4::crc32c`) on buffers the size of a page and of a
/// large device section.
fn checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for len in [4 << 10, 64 << 10] {
        let buf: Vec<u8> = (0..len).map(|i| (i * 131 + 7) as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(format!("{}KiB", len >> 10), |b| {
            b.iter(|| vmstate::v4::crc32c::crc32c(black_box(&buf)))
        });
    }
    g.finish();
}

fn requirements(c: &mut Criterion) {
    for crc in [true, false] {
        requirements_of(c, crc);
    }
}

fn requirements_of(c: &mut Criterion, crc: bool) {
    let s = stream(crc);
    let (r0, p0, h0, s0, b0) = (
        rtc().init,
        i8254().init,
        hpet().init,
        serial().init,
        big().init,
    );
    let mut scratch = vec![0u8; 1 << 16];
    let mut g = c.benchmark_group(if crc {
        "v4_requirements"
    } else {
        "v4_requirements_no_crc"
    });
    g.throughput(Throughput::Bytes(s.len() as u64));
    g.bench_function("from_headers", |b| {
        b.iter(|| {
            let mut n = 0;
            for rec in Records4::new(black_box(&s)) {
                if let Record4::Section(sec) = rec.expect("walks").record {
                    n += SectionRequirement::from_section(&sec)
                        .expect("requirements")
                        .subsections
                        .len();
                }
            }
            n
        })
    });
    g.bench_function("full_load", |b| {
        b.iter(|| {
            let (mut r, mut p, mut h, mut se, mut bg) = (r0, p0, h0, s0, b0);
            for rec in Records4::new(black_box(&s)) {
                if let Record4::Section(sec) = rec.expect("walks").record {
                    let sc = &mut scratch;
                    match sec.idstr {
                        b"mc146818rtc" => vmstate::v4::load_section(&mut r, &sec, &[], &[], sc),
                        b"i8254" => vmstate::v4::load_section(&mut p, &sec, &[], &[], sc),
                        b"hpet" => vmstate::v4::load_section(&mut h, &sec, &[], &[], sc),
                        b"serial" => vmstate::v4::load_section(&mut se, &sec, &[], &[], sc),
                        _ => vmstate::v4::load_section(&mut bg, &sec, &[], &[], sc),
                    }
                    .expect("loads");
                }
            }
            black_box((r, p, h, se, bg));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = crc, checksum, requirements
}
criterion_main!(benches);
