//! Heap allocations of the codec paths, counted by a global allocator around each path
//! (after one warm-up call, so lazily initialised runtime state is not counted). The codec is
//! `no_std` without `alloc`, so every codec row must read 0; the serde rows that return a
//! `Vec` are printed for contrast. Not a timing benchmark: `cargo bench` runs it and prints
//! the table.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use vmstate::SectionId;
use vmstate::SliceSink;
use vmstate::ram::{PAGE_SIZE, RamWriter};
use vmstate::stream::{FooterScan, Records, Schemas};
use vmstate::writer::StreamWriter;
use vmstate_benches::{
    BINCODE, BigSerde, DEVICE_TABLES, FIXTURES, RtcSerde, SCRATCH_LEN, big, rtc,
};
use vmstate_devices::rtc::RtcBody;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the counter has no effect on
// the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by one call of `f` (after a warm-up call).
fn count<R>(mut f: impl FnMut() -> R) -> usize {
    black_box(f());
    let before = ALLOCS.load(Ordering::Relaxed);
    black_box(f());
    ALLOCS.load(Ordering::Relaxed) - before
}

fn main() {
    let d = rtc();
    let b4k = big();
    let body = d.body();
    let big_body = b4k.body();
    let mut buf = vec![0u8; 1 << 16];
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let mut live = d.init;
    let page = vec![0x5au8; PAGE_SIZE];
    let zero = vec![0u8; PAGE_SIZE];
    let id = SectionId {
        section_id: 19,
        idstr: b"mc146818rtc",
        instance_id: 0,
    };
    let rtc_mirror = RtcSerde::from(&d.state);
    let big_mirror = BigSerde::from(&b4k.state);
    let pc = postcard::to_allocvec(&rtc_mirror).expect("encodes");

    let rows: Vec<(&str, usize)> = vec![
        (
            "vmstate encode_section_into (rtc)",
            count(|| vmstate::encode_section_into(id, &d.state, &mut buf)),
        ),
        (
            "vmstate encode_body_into (big4k)",
            count(|| vmstate::encode_body_into(&b4k.state, &mut buf)),
        ),
        (
            "vmstate view (rtc)",
            count(|| vmstate::view::<RtcBody>(&body, 0).map(|v| v.cmos_index)),
        ),
        (
            "vmstate decode (rtc)",
            count(|| vmstate::decode(&d.init, 3, &body, 0)),
        ),
        (
            "vmstate load (rtc)",
            count(|| vmstate::load(&mut live, 3, &body, 0)),
        ),
        (
            "vmstate decode (big4k)",
            count(|| vmstate::decode(&b4k.init, 1, &big_body, 0)),
        ),
        (
            "vmstate Records+FooterScan (all fixtures)",
            count(|| {
                FIXTURES
                    .iter()
                    .flat_map(|(_, s)| Records::new(s, FooterScan))
                    .filter(Result::is_ok)
                    .count()
            }),
        ),
        (
            "vmstate Records+Schemas (all fixtures)",
            count(|| {
                let mut n = 0;
                for (_, s) in FIXTURES {
                    let lengths = (Schemas::new(&DEVICE_TABLES, &mut scratch), FooterScan);
                    n += Records::new(s, lengths).filter(Result::is_ok).count();
                }
                n
            }),
        ),
        (
            "vmstate RamWriter PART (2 pages)",
            count(|| {
                let mut w = StreamWriter::new(SliceSink::new(&mut buf));
                let mut ram = RamWriter::new();
                w.ram_part(2, false, &mut ram, |ram, out| {
                    ram.page_or_zero(b"pc.ram", 0, &zero, out)?;
                    ram.page_or_zero(b"pc.ram", PAGE_SIZE as u64, &page, out)
                })
            }),
        ),
        (
            "postcard to_slice (rtc)",
            count(|| postcard::to_slice(&rtc_mirror, &mut buf).map(|b| b.len())),
        ),
        (
            "postcard from_bytes (rtc)",
            count(|| postcard::from_bytes::<RtcSerde>(&pc)),
        ),
        (
            "postcard to_allocvec (big4k)",
            count(|| postcard::to_allocvec(&big_mirror)),
        ),
        (
            "bincode encode_to_vec (big4k)",
            count(|| bincode::serde::encode_to_vec(&big_mirror, BINCODE)),
        ),
    ];
    println!("allocations per call");
    println!("| path | allocations |");
    println!("|---|---:|");
    for (name, n) in &rows {
        println!("| {name} | {n} |");
    }
    let codec_allocs: usize = rows
        .iter()
        .filter(|(name, _)| name.starts_with("vmstate"))
        .map(|(_, n)| n)
        .sum();
    println!("codec paths total: {codec_allocs}");
}
