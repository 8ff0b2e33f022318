//! Section encode and body decode of typed device states, against the physical limit (a
//! `memcpy` of the same body bytes) and the serde formats a user would pick instead (postcard,
//! bincode) encoding the same values.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};
use vmstate::{SectionId, State};
use vmstate_benches::{BINCODE, Big, Device, big, hpet, i8254, rtc, serial};
use vmstate_devices::{i8254::Pit, rtc::RtcBody};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// A zero-copy view of a body as `B`, reading one field so the access is not optimised out.
type ViewFn = fn(&[u8]) -> u8;

fn view_of<B: FromBytes + KnownLayout + Immutable + Unaligned>(
    body: &[u8],
    first_byte: fn(&B) -> u8,
) -> u8 {
    first_byte(vmstate::view::<B>(body, 0).expect("body is a full view"))
}

fn device<T, M>(c: &mut Criterion, d: Device<T>, view: Option<ViewFn>)
where
    T: State + Copy,
    M: for<'a> From<&'a T> + Serialize + for<'de> Deserialize<'de>,
{
    let body = d.body();
    let mirror = M::from(&d.state);
    let mut buf = vec![0u8; 1 << 16];
    let postcard_bytes = postcard::to_allocvec(&mirror).expect("mirror encodes");
    let bincode_bytes = bincode::serde::encode_to_vec(&mirror, BINCODE).expect("mirror encodes");
    let id = SectionId {
        section_id: 19,
        idstr: T::VMSD.name.as_bytes(),
        instance_id: 0,
    };

    let mut g = c.benchmark_group(format!("encode_{}", d.name));
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("memcpy", |b| {
        b.iter(|| {
            buf[..body.len()].copy_from_slice(black_box(&body));
            black_box(&buf[..body.len()]);
        })
    });
    g.bench_function("vmstate_body", |b| {
        b.iter(|| vmstate::encode_body_into(black_box(&d.state), &mut buf).expect("encodes"))
    });
    g.bench_function("vmstate_section", |b| {
        b.iter(|| vmstate::encode_section_into(id, black_box(&d.state), &mut buf).expect("encodes"))
    });
    g.bench_function("postcard", |b| {
        b.iter(|| {
            postcard::to_slice(black_box(&mirror), &mut buf)
                .expect("encodes")
                .len()
        })
    });
    g.bench_function("bincode", |b| {
        b.iter(|| {
            bincode::serde::encode_into_slice(black_box(&mirror), &mut buf, BINCODE)
                .expect("encodes")
        })
    });
    g.finish();

    let mut g = c.benchmark_group(format!("decode_{}", d.name));
    g.throughput(Throughput::Bytes(body.len() as u64));
    if let Some(view) = view {
        g.bench_function("view", |b| b.iter(|| view(black_box(&body))));
    }
    g.bench_function("vmstate_decode", |b| {
        b.iter(|| {
            vmstate::decode(black_box(&d.init), d.version(), black_box(&body), 0).expect("decodes")
        })
    });
    let mut live = d.init;
    g.bench_function("vmstate_load", |b| {
        b.iter(|| vmstate::load(&mut live, d.version(), black_box(&body), 0).expect("loads"))
    });
    g.bench_function("postcard", |b| {
        b.iter(|| postcard::from_bytes::<M>(black_box(&postcard_bytes)).expect("decodes"))
    });
    g.bench_function("bincode", |b| {
        b.iter(|| {
            bincode::serde::decode_from_slice::<M, _>(black_box(&bincode_bytes), BINCODE)
                .expect("decodes")
        })
    });
    g.finish();
}

fn devices(c: &mut Criterion) {
    use vmstate_benches::{BigSerde, HpetSerde, PitSerde, RtcSerde, SerialSerde};
    device::<_, RtcSerde>(
        c,
        rtc(),
        Some(|b| view_of::<RtcBody>(b, |v| v.cmos_index ^ v.periodic_timer.get() as u8)),
    );
    device::<_, PitSerde>(
        c,
        i8254(),
        Some(|b| {
            view_of::<Pit>(b, |v| {
                v.channels[0].mode ^ v.next_transition_time.get() as u8
            })
        }),
    );
    // hpet and serial bodies vary in length (timer count, subsections): no fixed view.
    device::<_, HpetSerde>(c, hpet(), None);
    device::<_, SerialSerde>(c, serial(), None);
    device::<_, BigSerde>(
        c,
        big(),
        Some(|b| view_of::<Big>(b, |v| v.channels[31].ctrl ^ v.regs[127].get() as u8)),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = devices
}
criterion_main!(benches);
