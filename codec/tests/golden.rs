//! Golden bytes for every field kind, version gating, predicates and subsections.
//!
//! Encoders write into buffers pre-filled with 0xa5 so a byte the encoder forgot shows up.

use vmstate::schema::{Field, Subsection, Vmsd};
use vmstate::{
    ErrorKind, Expected, SectionId, State, Violation, assert_layout, check, field, mutate, pred,
    struct_field, struct_varray, varray, vbuffer,
};
use zerocopy::byteorder::big_endian::{I16, I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

#[repr(C)]
#[derive(
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
struct Pair {
    x: u8,
    y: U16,
}

const PAIR: Vmsd =
    Vmsd::new("pair", 1, 1, size_of::<Pair>()).fields(&[field!(Pair, x), field!(Pair, y)]);
assert_layout!(Pair, PAIR, wire);

/// A struct with one field of every kind.
#[repr(C)]
#[derive(
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Default,
)]
struct Kinds {
    u8_: u8,
    u16_: U16,
    u32_: U32,
    u64_: U64,
    i8_: i8,
    i16_: I16,
    i32_: I32,
    i64_: I64,
    flag: u8,
    deadline: U64,
    arr: [U16; 3],
    buf: [u8; 4],
    pad: [u8; 2],
    magic: U32,
    one: Pair,
    two: [Pair; 2],
    n: u8,
    items: [Pair; 4],
    m: I32,
    bytes: [u8; 8],
    k: U16,
    words: [U32; 4],
    since2: U32,
    only_if_seven: u8,
    // Subsection field.
    extra: U16,
}

fn is_seven(s: &[u8], _v: u32) -> bool {
    s.first() == Some(&7)
}

const EXTRA: Vmsd =
    Vmsd::new("kinds/extra", 1, 1, size_of::<Kinds>()).fields(&[field!(Kinds, extra)]);

const KINDS: Vmsd = Vmsd::new("kinds", 2, 1, size_of::<Kinds>())
    .fields(&[
        field!(Kinds, u8_),
        field!(Kinds, u16_),
        field!(Kinds, u32_),
        field!(Kinds, u64_),
        field!(Kinds, i8_),
        field!(Kinds, i16_),
        field!(Kinds, i32_),
        field!(Kinds, i64_),
        field!(Kinds, flag).boolean(),
        field!(Kinds, deadline).timer(),
        field!(Kinds, arr),
        field!(Kinds, buf),
        field!(Kinds, pad).unused(),
        field!(Kinds, magic).equal(),
        struct_field!(Kinds, one, PAIR),
        struct_field!(Kinds, two, PAIR),
        field!(Kinds, n),
        Field::validate("n in range", |s, _| {
            s.get(offset_n()).is_some_and(|&n| n <= 4)
        }),
        struct_varray!(Kinds, items, PAIR, count = n),
        field!(Kinds, m),
        vbuffer!(Kinds, bytes, size = m),
        field!(Kinds, k),
        varray!(Kinds, words, count = k),
        Field::null_ptr("ptr"),
        field!(Kinds, since2).since(2),
        field!(Kinds, only_if_seven).exists(is_seven),
    ])
    .subsections(&[
        Subsection::new(&EXTRA, pred!(Kinds, |s| s.extra.get() != 0))
            .absent(mutate!(Kinds, |s| s.extra = U16::new(0))),
    ])
    .validate(check!(Kinds, |s, _v| if s.u16_.get() == 0xdead {
        Err(Violation {
            field: "u16_",
            expected: Expected::Rule("not 0xdead"),
            found: 0xdead,
        })
    } else {
        Ok(())
    }));
assert_layout!(Kinds, KINDS);

const fn offset_n() -> usize {
    core::mem::offset_of!(Kinds, n)
}

impl State for Kinds {
    const VMSD: &'static Vmsd = &KINDS;
}

fn sample() -> Kinds {
    Kinds {
        u8_: 7,
        u16_: U16::new(0x1234),
        u32_: U32::new(70000),
        u64_: U64::new(0x0102_0304_0506_0708),
        i8_: -2,
        i16_: I16::new(-300),
        i32_: I32::new(-5),
        i64_: I64::new(-12121212),
        flag: 1,
        deadline: U64::new(u64::MAX),
        arr: [U16::new(1), U16::new(2), U16::new(3)],
        buf: *b"abcd",
        pad: [0, 0],
        magic: U32::new(0xcafe_f00d),
        one: Pair {
            x: 9,
            y: U16::new(10),
        },
        two: [
            Pair {
                x: 1,
                y: U16::new(2),
            },
            Pair {
                x: 3,
                y: U16::new(4),
            },
        ],
        n: 2,
        items: [
            Pair {
                x: 0x11,
                y: U16::new(0x2222),
            },
            Pair {
                x: 0x33,
                y: U16::new(0x4444),
            },
            Pair::default(),
            Pair::default(),
        ],
        m: I32::new(3),
        bytes: [0xb0, 0xb1, 0xb2, 0, 0, 0, 0, 0],
        k: U16::new(1),
        words: [U32::new(0xdead_beef), U32::new(0), U32::new(0), U32::new(0)],
        since2: U32::new(0x5555_5555),
        only_if_seven: 0x77,
        extra: U16::new(0xbeef),
    }
}

/// The body of `sample()` at version 2, written out by hand.
fn golden_body() -> Vec<u8> {
    let mut b = vec![];
    b.extend([0x07]); // u8
    b.extend([0x12, 0x34]); // u16
    b.extend([0x00, 0x01, 0x11, 0x70]); // u32 70000
    b.extend([1, 2, 3, 4, 5, 6, 7, 8]); // u64
    b.extend([0xfe]); // i8 -2
    b.extend([0xfe, 0xd4]); // i16 -300
    b.extend([0xff, 0xff, 0xff, 0xfb]); // i32 -5
    b.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0x47, 0x0b, 0x84]); // i64 -12121212
    b.extend([0x01]); // bool
    b.extend([0xff; 8]); // timer, not armed
    b.extend([0, 1, 0, 2, 0, 3]); // u16 array
    b.extend(*b"abcd"); // buffer
    b.extend([0, 0]); // unused
    b.extend([0xca, 0xfe, 0xf0, 0x0d]); // equal
    b.extend([9, 0, 10]); // struct
    b.extend([1, 0, 2, 3, 0, 4]); // struct array
    b.extend([2]); // varray count
    // (validate: zero bytes)
    b.extend([0x11, 0x22, 0x22, 0x33, 0x44, 0x44]); // struct varray, 2 of 4
    b.extend([0, 0, 0, 3]); // vbuffer size (int32)
    b.extend([0xb0, 0xb1, 0xb2]); // vbuffer, 3 bytes
    b.extend([0, 1]); // scalar varray count
    b.extend([0xde, 0xad, 0xbe, 0xef]); // u32 varray, 1 of 4
    b.extend([0x30]); // NULL pointer marker
    b.extend([0x55; 4]); // since 2
    b.extend([0x77]); // exists(u8 == 7)
    b.extend([0x05, 11]); // subsection
    b.extend(*b"kinds/extra");
    b.extend([0, 0, 0, 1, 0xbe, 0xef]);
    b
}

fn encode(state: &Kinds) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 512];
    let n = vmstate::encode_body_into(state, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn every_field_kind_encodes_to_golden_bytes() {
    assert_eq!(encode(&sample()), golden_body());
}

#[test]
fn every_field_kind_decodes_from_golden_bytes() {
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        ..Kinds::default()
    };
    let body = golden_body();
    let got = vmstate::decode(&init, 2, &body, 0).unwrap();
    assert_eq!(got, sample());
}

#[test]
fn version_gating_and_predicates() {
    let mut s = sample();
    // Version 1 leaves out `since2`; the predicate field follows u8 == 7.
    let mut v1 = vec![0xa5u8; 512];
    let mut sink = vmstate::SliceSink::new(&mut v1);
    vmstate::body::encode_body_v(&KINDS, 1, s.as_bytes(), &mut sink).unwrap();
    let n = sink.finish();
    let golden = golden_body();
    let cut = golden.len() - 4 - 1 - 19; // since2, predicate byte, subsection
    assert_eq!(&v1[..cut], &golden[..cut]);
    assert_eq!(
        &v1[cut..n],
        &[&[0x77u8][..], &golden[golden.len() - 19..]].concat()[..]
    );
    // Decoding that v1 body into a state with since2 = 0 leaves since2 alone.
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        ..Kinds::default()
    };
    let got = vmstate::decode(&init, 1, &v1[..n], 0).unwrap();
    assert_eq!(got.since2.get(), 0);
    assert_eq!(got.only_if_seven, 0x77);
    // With u8 != 7 the predicate field is absent.
    s.u8_ = 6;
    let b = encode(&s);
    assert_eq!(b.len(), golden.len() - 1);
    assert_eq!(vmstate::decode(&init, 2, &b, 0).unwrap().only_if_seven, 0);
}

#[test]
fn subsections_present_absent_unknown_duplicate() {
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        extra: U16::new(0x1111),
        ..Kinds::default()
    };
    let golden = golden_body();
    let base = golden.len() - 19;
    // Absent: not needed when extra == 0; on load the default applies (0), not the prior 0x1111.
    let mut s = sample();
    s.extra = U16::new(0);
    assert_eq!(encode(&s), golden[..base].to_vec());
    assert_eq!(
        vmstate::decode(&init, 2, &golden[..base], 0)
            .unwrap()
            .extra
            .get(),
        0
    );
    // Unknown name with the device's prefix: error naming it, at the subsection's offset.
    let mut unknown = golden.clone();
    unknown[base + 2 + 6] = b'X'; // kinds/Xxtra
    let e = vmstate::decode(&init, 2, &unknown, 100).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::UnknownSubsection { name } if name.eq_bytes(b"kinds/Xxtra"))
    );
    assert_eq!(e.offset, 100 + base);
    // A name without the prefix is not a subsection: the bytes are left over.
    let mut foreign = golden.clone();
    foreign[base + 2] = b'K';
    assert!(matches!(
        vmstate::decode(&init, 2, &foreign, 0).unwrap_err().kind,
        ErrorKind::MissingFooter { found: 0x05 }
    ));
    // Duplicate subsection.
    let mut dup = golden.clone();
    dup.extend_from_slice(&golden[base..]);
    assert!(matches!(
        vmstate::decode(&init, 2, &dup, 0).unwrap_err().kind,
        ErrorKind::DuplicateSubsection {
            name: "kinds/extra"
        }
    ));
    // Subsection version above 255 (QEMU would truncate 0x101 to 1).
    let mut wide = golden.clone();
    wide[base + 2 + 11 + 2] = 1;
    assert!(matches!(
        vmstate::decode(&init, 2, &wide, 0).unwrap_err().kind,
        ErrorKind::SubsectionVersionOverflow { found: 0x101 }
    ));
    // Subsection version too new.
    let mut newer = golden.clone();
    newer[base + 2 + 11 + 3] = 2;
    let e = vmstate::decode(&init, 2, &newer, 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::VersionTooNew { found: 2, max: 1 });
    assert_eq!(e.field, Some("kinds/extra"));
}

#[test]
fn checks_on_load_name_the_field_and_offset() {
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        ..Kinds::default()
    };
    let golden = golden_body();
    let at = |name: &str| -> usize {
        // Offsets of fields in golden_body(), by construction above.
        match name {
            "flag" => 30,
            "magic" => 51,
            "n" => 64,
            "m" => 71,
            "ptr" => 84,
            _ => unreachable!(),
        }
    };
    type Case = (usize, u8, &'static str, Box<dyn Fn(&ErrorKind) -> bool>);
    let cases: Vec<Case> = vec![
        (
            at("flag"),
            2,
            "flag",
            Box::new(|k| *k == ErrorKind::BadBool { found: 2 }),
        ),
        (
            at("magic"),
            0,
            "magic",
            Box::new(|k| {
                *k == ErrorKind::NotEqual {
                    expected: 0xcafef00d,
                    found: 0x00fef00d,
                }
            }),
        ),
        (
            at("n"),
            5,
            "n in range",
            Box::new(|k| {
                *k == ErrorKind::ValidationFailed {
                    check: "n in range",
                }
            }),
        ),
        (
            at("m") + 3,
            9,
            "bytes",
            Box::new(|k| {
                *k == ErrorKind::CountOverCapacity {
                    count: 9,
                    capacity: 8,
                }
            }),
        ),
        (
            at("m"),
            0xff,
            "bytes",
            Box::new(|k| matches!(k, ErrorKind::CountOverCapacity { count, .. } if *count < 0)),
        ),
        (
            at("ptr"),
            0x31,
            "ptr",
            Box::new(|k| *k == ErrorKind::BadNullMarker { found: 0x31 }),
        ),
    ];
    for (off, byte, field, ok) in cases {
        let mut b = golden.clone();
        b[off] = byte;
        let e = vmstate::decode(&init, 2, &b, 1000).unwrap_err();
        assert!(ok(&e.kind), "{field}: {e}");
        assert_eq!(e.field, Some(field), "{e}");
        assert!(e.offset >= 1000 && e.offset <= 1000 + off + 4, "{e}");
    }
    // The device validation hook names its field and its byte offset.
    let mut b = golden.clone();
    b[1] = 0xde;
    b[2] = 0xad;
    let e = vmstate::decode(&init, 2, &b, 1000).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::Invalid {
            expected: Expected::Rule("not 0xdead"),
            found: 0xdead
        }
    );
    assert_eq!((e.field, e.offset), (Some("u16_"), 1001));
    // Versions outside [min, max].
    assert_eq!(
        vmstate::decode(&init, 3, &golden, 0).unwrap_err().kind,
        ErrorKind::VersionTooNew { found: 3, max: 2 }
    );
    assert_eq!(
        vmstate::decode(&init, 0, &golden, 0).unwrap_err().kind,
        ErrorKind::VersionTooOld { found: 0, min: 1 }
    );
}

#[test]
fn failed_load_changes_nothing_and_every_prefix_fails_cleanly() {
    let golden = golden_body();
    let before = Kinds {
        magic: U32::new(0xcafe_f00d),
        u8_: 42,
        ..Kinds::default()
    };
    let mut state = before;
    let fields_end = golden.len() - 19;
    for n in 0..golden.len() {
        if n == fields_end {
            // A body without its optional subsection is complete.
            vmstate::load(&mut state, 2, &golden[..n], 0).unwrap();
            state = before;
            continue;
        }
        let e = vmstate::load(&mut state, 2, &golden[..n], 0).unwrap_err();
        assert!(
            e.is_incomplete() || matches!(e.kind, ErrorKind::MissingFooter { .. }),
            "{n}: {e}"
        );
        assert_eq!(state, before, "prefix {n} changed the state");
    }
    vmstate::load(&mut state, 2, &golden, 0).unwrap();
    assert_eq!(state, sample());
}

#[test]
fn full_section_golden() {
    let mut buf = [0xa5u8; 256];
    #[repr(C)]
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
    struct Port92 {
        outport: u8,
    }
    const PORT92: Vmsd = Vmsd::new("port92", 1, 1, 1).fields(&[field!(Port92, outport)]);
    impl State for Port92 {
        const VMSD: &'static Vmsd = &PORT92;
    }
    let id = SectionId {
        section_id: 0x1b,
        idstr: b"port92",
        instance_id: 0,
    };
    let n = vmstate::encode_section_into(id, &Port92 { outport: 0 }, &mut buf).unwrap();
    // docs/V3-WIRE.md §15.3, from the real pc-i440fx-7.2 stream.
    assert_eq!(
        &buf[..n],
        &[
            4, 0, 0, 0, 0x1b, 6, b'p', b'o', b'r', b't', b'9', b'2', 0, 0, 0, 0, 0, 0, 0, 1, 0,
            0x7e, 0, 0, 0, 0x1b
        ]
    );
    // Too small a buffer is an error, not a panic.
    assert!(matches!(
        vmstate::encode_section_into(id, &Port92 { outport: 0 }, &mut buf[..10])
            .unwrap_err()
            .kind,
        ErrorKind::BufferTooSmall { .. }
    ));
}

#[test]
fn description_json_matches_qemu_rules() {
    let mut out = vec![0u8; 4096];
    let mut sink = vmstate::SliceSink::new(&mut out);
    vmstate::vmdesc::device(&mut sink, b"kinds", 0, &KINDS, sample().as_bytes()).unwrap();
    let n = sink.finish();
    let json = std::str::from_utf8(&out[..n]).unwrap();
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    // Compact QEMU style: ", " and ": " separators.
    assert!(json.starts_with(r#"{"name": "kinds", "instance_id": 0, "vmsd_name": "kinds", "version": 2, "fields": [{"name": "u8_", "type": "uint8", "size": 1}"#), "{json}");
    let fields = v["fields"].as_array().unwrap();
    let by_name = |n: &str| fields.iter().filter(|f| f["name"] == n).collect::<Vec<_>>();
    assert_eq!(by_name("arr")[0]["array_len"], 3);
    assert_eq!(by_name("unused")[0]["type"], "unused_buffer");
    assert_eq!(by_name("pad").len(), 0);
    assert_eq!(by_name("magic")[0]["type"], "uint32 equal");
    assert_eq!(by_name("deadline")[0]["type"], "timer");
    assert_eq!(by_name("two")[0]["array_len"], 2); // compressible struct array
    assert_eq!(by_name("two")[0]["struct"]["vmsd_name"], "pair");
    assert_eq!(by_name("items")[0]["array_len"], 2); // varray with count 2
    assert_eq!(by_name("bytes")[0]["size"], 3);
    assert_eq!(by_name("words")[0]["size"], 4);
    assert!(by_name("n in range").is_empty());
    assert_eq!(v["subsections"][0]["vmsd_name"], "kinds/extra");
    // The sizes add up to the body.
    let total: u64 = fields
        .iter()
        .map(|f| {
            f["size"].as_u64().unwrap() * f.get("array_len").and_then(|a| a.as_u64()).unwrap_or(1)
        })
        .sum();
    assert_eq!(total as usize + 19, golden_body().len());
}

// ---------------------------------------------------------------------------------------------
// Zero heap allocations: a counting global allocator, enabled per thread around the measured
// code, so the test harness's own allocations do not count.

mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    std::thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: forwards every call to the system allocator unchanged; only counts.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if ON.with(|on| on.get()) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
            if ON.with(|on| on.get()) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new) }
        }
    }

    /// Runs `f` and returns how many allocations it made on this thread.
    pub fn allocations(f: impl FnOnce()) -> usize {
        COUNT.with(|c| c.set(0));
        ON.with(|on| on.set(true));
        f();
        ON.with(|on| on.set(false));
        COUNT.with(|c| c.get())
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

#[test]
fn encode_and_decode_make_no_heap_allocation() {
    use vmstate::stream::{FooterScan, Records};
    static STREAM: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
    let golden = golden_body();
    let state = sample();
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        ..Kinds::default()
    };
    let mut buf = [0u8; 512];
    let mut json = [0u8; 4096];
    let mut sections = 0usize;
    // The page index's slots and links are the caller's (allocated before counting).
    let mut slots = vec![0u64; 1 << 14];
    let mut links = [vmstate::memory::Link::default(); 4];
    let mut pages_read = 0usize;
    // Sanity: the counter does count.
    assert!(counting::allocations(|| drop(std::hint::black_box(vec![1u8; 8]))) > 0);
    let n = counting::allocations(|| {
        let n = vmstate::encode_body_into(&state, &mut buf).unwrap();
        assert_eq!(&buf[..n], &golden[..]);
        let id = SectionId {
            section_id: 5,
            idstr: b"kinds",
            instance_id: 0,
        };
        let n = vmstate::encode_section_into(id, &state, &mut buf).unwrap();
        // One encoded section loaded in one call, and a cut one refused.
        let mut one = init;
        vmstate::load_section(&mut one, id, &buf[..n]).unwrap();
        assert!(one == state);
        assert!(vmstate::load_section(&mut one, id, &buf[..n - 3]).is_err());
        let got = vmstate::decode(&init, 2, &golden, 0).unwrap();
        assert!(got == state);
        let mut live = init;
        vmstate::load(&mut live, 2, &golden, 0).unwrap();
        assert!(vmstate::load(&mut live, 2, &golden[..40], 0).is_err());
        let mut sink = vmstate::SliceSink::new(&mut json);
        vmstate::vmdesc::device(&mut sink, b"kinds", 0, &KINDS, state.as_bytes()).unwrap();
        // Walk a whole real stream, RAM records included, indexing its pages and reading
        // one back (vmstate::memory).
        use vmstate::memory::{PageIndex, SliceLinks};
        use vmstate::ram::{RamContext, RamOptions, RamRecord};
        let mut ram = RamContext::new(RamOptions::default());
        let mut index = None;
        for rec in Records::new(STREAM, FooterScan) {
            let rec = rec.unwrap();
            sections += 1;
            let vmstate::stream::Record::Section(s) = rec.record else {
                continue;
            };
            if s.idstr != b"ram" {
                continue;
            }
            let mut r = vmstate::wire::Reader::new(s.body, s.body_offset);
            while r.remaining() > 0 {
                match ram.read_record(&mut r).unwrap() {
                    RamRecord::MemSize(list) => {
                        let ix = PageIndex::new(
                            STREAM,
                            list,
                            &mut slots[..],
                            SliceLinks::new(&mut links),
                        );
                        index = Some(ix.unwrap());
                    }
                    RamRecord::Eos => break,
                    rec => index.as_mut().unwrap().add(&rec).unwrap(),
                }
            }
        }
        let index = index.unwrap();
        let bios = index.block(b"pc.bios").unwrap();
        let mut vector = [0u8; 16];
        index.read(bios, 0x3fff0, &mut vector).unwrap();
        pages_read += 1;
        assert_eq!(vector[0], 0xea, "the BIOS's reset vector: a far jump");
    });
    assert_eq!(n, 0, "the codec allocated {n} times");
    assert!(sections > 30);
    assert_eq!(pages_read, 1);
}

/// libvirt's sparse image (mapped-ram at file offset 66762, read into memory before counting):
/// the walk at its file offset, the block list's layouts and a page read through the page
/// index straight from its pages region make no heap allocation either.
#[test]
fn mapped_ram_at_a_file_offset_makes_no_heap_allocation() {
    use vmstate::memory::{PageIndex, SliceLinks};
    use vmstate::ram::{RamContext, RamRecord};
    use vmstate::stream::{FooterScan, Options, Record, Records};
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host-tests/fixtures/lv11-q10-pc-i440fx-10.0-sparse.save"
    ))
    .unwrap();
    // libvirt's header: the stream starts after its 92 bytes and data_len (LE at 20).
    let start = 92 + u32::from_le_bytes(image[20..24].try_into().unwrap()) as usize;
    let stream = &image[start..];
    let mut links = [vmstate::memory::Link::default(); 1];
    let mut vector = [0u8; 16];
    let mut blocks = 0;
    let n = counting::allocations(|| {
        let mut options = Options::for_stream(stream);
        options.ram.file_offset = start as u64;
        let mut ram = RamContext::new(options.ram);
        for rec in Records::with_options(stream, FooterScan, options) {
            let Record::Section(s) = rec.unwrap().record else {
                continue;
            };
            if s.idstr != b"ram" || s.kind != vmstate::wire::section::SectionKind::Start {
                continue;
            }
            ram.options.mapped_ram = true;
            let mut r = vmstate::wire::Reader::new(s.body, s.body_offset);
            let RamRecord::MemSize(list) = ram.read_record(&mut r).unwrap() else {
                panic!("the START body begins with the block list");
            };
            for (_, layout) in list.entries() {
                let l = layout.unwrap();
                assert_eq!(l.bitmap_offset, l.header_offset + 28);
                assert_eq!(l.pages_offset % (1 << 20), 0);
                blocks += 1;
            }
            // Mapped blocks need no slots.
            let index = PageIndex::new(stream, list, &mut [][..], SliceLinks::new(&mut links));
            let index = index.unwrap();
            let bios = index.block(b"pc.bios").unwrap();
            index.read(bios, 0x3fff0, &mut vector).unwrap();
        }
    });
    assert_eq!(n, 0, "the codec allocated {n} times");
    assert_eq!(blocks, 6);
    assert_eq!(vector[0], 0xea, "the BIOS's reset vector: a far jump");
}

#[test]
fn stream_writer_output_walks_back_and_io_sink_matches_slice() {
    use vmstate::ram::{BlockEntry, RamWriter};
    use vmstate::stream::{Record, Records, Schemas};
    use vmstate::wire::Configuration;
    use vmstate::writer::{Described, StreamWriter};

    struct VecWriter(Vec<u8>);
    impl embedded_io::ErrorType for VecWriter {
        type Error = core::convert::Infallible;
    }
    impl embedded_io::Write for VecWriter {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    let state = sample();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: 0x2000,
        addr: None,
    }];
    let page = [0x5au8; 4096];
    fn write<S: vmstate::Sink>(
        w: &mut StreamWriter<'_, S>,
        state: &Kinds,
        blocks: &[BlockEntry<'_>],
        page: &[u8],
    ) -> Result<(), S::Error> {
        w.header(vmstate::wire::header::VERSION_V3)?;
        w.configuration(&Configuration::new(b"pc-i440fx-7.2"))?;
        w.ram_start(2, blocks)?;
        let mut ram = RamWriter::new();
        w.ram_part(2, false, &mut ram, |ram, out| {
            ram.page_or_zero(b"pc.ram", 0, &[0; 4096], out)?;
            ram.page_or_zero(b"pc.ram", 0x1000, page, out)
        })?;
        w.ram_part(2, true, &mut ram, |_, _| Ok(()))?;
        w.section(
            SectionId {
                section_id: 7,
                idstr: b"kinds",
                instance_id: 0,
            },
            state,
        )?;
        w.eof()?;
        w.trailer_for(&[Described {
            idstr: b"kinds",
            instance_id: 0,
            vmsd: &KINDS,
            state: state.as_bytes(),
        }])
    }
    let mut buf = vec![0xa5u8; 16384];
    let mut w = StreamWriter::new(vmstate::SliceSink::new(&mut buf));
    write(&mut w, &state, &blocks, &page).unwrap();
    let n = w.into_inner().finish();
    buf.truncate(n);
    let mut w = StreamWriter::new(vmstate::IoSink::new(VecWriter(Vec::new())));
    write(&mut w, &state, &blocks, &page).unwrap();
    assert_eq!(
        w.into_inner().into_inner().0,
        buf,
        "embedded-io and slice outputs differ"
    );

    // Walk it back with the schema as the body-length resolver.
    let vmsds: [&'static Vmsd; 1] = [&KINDS];
    let mut scratch = [0u8; 512];
    let recs: Vec<_> = Records::new(&buf, Schemas::new(&vmsds, &mut scratch))
        .collect::<vmstate::Result<_>>()
        .unwrap();
    assert_eq!(recs.len(), 8);
    let Record::Section(s) = recs[5].record else {
        panic!()
    };
    assert_eq!(s.body, &golden_body()[..]);
    let init = Kinds {
        magic: U32::new(0xcafe_f00d),
        ..Kinds::default()
    };
    let mut live = init;
    vmstate::load_record(&mut live, &s).unwrap();
    assert_eq!(live, state);
    let Record::Trailer(t) = recs[7].record else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(t.json).unwrap();
    assert_eq!(v["page_size"], 4096);
    assert_eq!(v["devices"][0]["name"], "kinds");
    // The zero-copy view reads the fields of a wire-layout body in place.
    let p: &Pair = vmstate::view(&[9, 0, 10, 0x05], 0).unwrap();
    assert_eq!((p.x, p.y.get()), (9, 10));
    assert!(
        vmstate::view::<Pair>(&[9, 0], 0)
            .unwrap_err()
            .is_incomplete()
    );
}
