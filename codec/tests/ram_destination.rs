//! The RAM rules that differ between destination versions, on real fixture bytes mutated:
//!
//! * a ZERO page's fill byte: QEMU 7.2 fills the page with it, QEMU >= 8.2 refuses any byte
//!   but 0 ("Found a zero page with value %d");
//! * a bare MULTIFD_FLUSH word (`0x200`): QEMU >= 8.0 accepts it as a sync point, 7.2 refuses
//!   it ("Unknown combination of migration flags: 0x200").
//!
//! `RamOptions::for_qemu` gives each version's rules; the default is the strict intersection.

use vmstate::ram::{RamContext, RamOptions, RamRecord, RamWriter, flags};
use vmstate::stream::{FooterScan, Options, Records};
use vmstate::wire::Reader;
use vmstate::{ErrorKind, Name, SliceSink};

mod fixtures_support;
use fixtures_support::fixture;

/// Every RAM record of `stream`: (offset, end, record).
fn ram_records(stream: &[u8], options: Options) -> Vec<(usize, usize, RamRecord<'_>)> {
    fixtures_support::ram_records(stream, options)
        .into_iter()
        .map(|at| (at.start, at.end, at.record))
        .collect()
}

fn walk(stream: &[u8], ram: RamOptions) -> Result<usize, vmstate::Error> {
    let options = Options {
        ram,
        allow_commands: true,
        ..Options::default()
    };
    let mut n = 0;
    for r in Records::with_options(stream, FooterScan, options) {
        r?;
        n += 1;
    }
    Ok(n)
}

#[test]
fn for_qemu_gives_each_versions_rules() {
    let v = |a, b| RamOptions::for_qemu(a, b);
    assert!(v(7, 2).allow_nonzero_fill && !v(7, 2).multifd_flush);
    assert!(v(8, 0).allow_nonzero_fill && v(8, 0).multifd_flush);
    assert!(v(8, 1).allow_nonzero_fill);
    assert!(!v(8, 2).allow_nonzero_fill && v(8, 2).multifd_flush);
    assert!(!v(10, 0).allow_nonzero_fill && v(10, 0).multifd_flush);
    let d = RamOptions::default();
    assert!(!d.allow_nonzero_fill && !d.multifd_flush);
}

/// A real QEMU 7.2 stream with one ZERO page's fill byte set to 0x41: a 7.2 destination takes
/// it, an 8.2 or 10.0 destination (and the default) refuses it, naming the byte's offset, the
/// block and the byte.
#[test]
fn a_nonzero_fill_is_refused_from_8_2_on() {
    let real = fixture("q72-pc-i440fx-7.2.vmstate");
    let (start, end, block) = ram_records(&real, Options::default())
        .into_iter()
        .find_map(|(s, e, r)| match r {
            RamRecord::Zero {
                block,
                continued: false,
                ..
            } => Some((s, e, block.to_vec())),
            _ => None,
        })
        .unwrap();
    assert_eq!(real[end - 1], 0, "QEMU writes fill 0");
    let mut bytes = real.clone();
    bytes[end - 1] = 0x41;
    for (major, minor) in [(7, 2), (8, 1)] {
        assert!(walk(&bytes, RamOptions::for_qemu(major, minor)).is_ok());
    }
    for ram in [
        RamOptions::default(),
        RamOptions::for_qemu(8, 2),
        RamOptions::for_qemu(10, 0),
    ] {
        let e = walk(&bytes, ram).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                end - 1,
                ErrorKind::RamNonZeroFill {
                    block: Name::new(&block),
                    fill: 0x41
                }
            )
        );
        assert!(e.section.unwrap().idstr.eq_bytes(b"ram"));
        let msg = e.to_string();
        let block = String::from_utf8_lossy(&block);
        assert!(
            msg.contains(&format!("ZERO page of block {block}")) && msg.contains("0x41"),
            "{msg}"
        );
    }
    assert!(start < end);
    // A continued ZERO record (the fast path of `measure_body`) is judged the same way.
    let (_, end2) = ram_records(&real, Options::default())
        .into_iter()
        .find_map(|(s, e, r)| {
            matches!(
                r,
                RamRecord::Zero {
                    continued: true,
                    ..
                }
            )
            .then_some((s, e))
        })
        .unwrap();
    let mut bytes = real.clone();
    bytes[end2 - 1] = 0xff;
    assert!(walk(&bytes, RamOptions::for_qemu(7, 2)).is_ok());
    let e = walk(&bytes, RamOptions::for_qemu(10, 0)).unwrap_err();
    assert_eq!(e.offset, end2 - 1);
    assert!(matches!(
        e.kind,
        ErrorKind::RamNonZeroFill { fill: 0xff, .. }
    ));
}

/// A bare MULTIFD_FLUSH word put before the EOS of a real QEMU 10.0 stream's RAM PART: accepted
/// by 8.0 and later, refused by 7.2 and by default; with an address or CONTINUE it is refused
/// by every version here (QEMU never writes one). It writes back byte for byte.
#[test]
fn multifd_flush_is_a_record_from_8_0_on() {
    let real = fixture("q10-pc-i440fx-10.0.vmstate");
    let opts = Options {
        allow_commands: true,
        ..Options::default()
    };
    let recs = ram_records(&real, opts);
    // The EOS closing the first PART (the body with the pages).
    let eos = recs
        .iter()
        .filter(|(_, _, r)| *r == RamRecord::Eos)
        .nth(1)
        .map(|(s, _, _)| *s)
        .unwrap();
    let flush = (flags::MULTIFD_FLUSH as u64).to_be_bytes();
    let bytes = [&real[..eos], &flush[..], &real[eos..]].concat();
    for (major, minor) in [(8, 0), (8, 2), (10, 0)] {
        let ram = RamOptions::for_qemu(major, minor);
        assert!(walk(&bytes, ram).is_ok(), "{major}.{minor}");
        let opts = Options { ram, ..opts };
        let got: Vec<_> = ram_records(&bytes, opts)
            .into_iter()
            .filter(|(_, _, r)| *r == RamRecord::MultifdFlush)
            .map(|(s, e, _)| (s, e))
            .collect();
        assert_eq!(got, [(eos, eos + 8)]);
    }
    for ram in [RamOptions::for_qemu(7, 2), RamOptions::default()] {
        let e = walk(&bytes, ram).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (eos, ErrorKind::RamFlags { flags: 0x200 })
        );
    }
    for word in [0x1200u64, 0x220] {
        let bad = [&real[..eos], &word.to_be_bytes()[..], &real[eos..]].concat();
        let e = walk(&bad, RamOptions::for_qemu(10, 0)).unwrap_err();
        assert_eq!(e.offset, eos);
        assert!(matches!(e.kind, ErrorKind::RamFlags { .. }), "{word:#x}");
    }
    // Read and written back through the RAM writer.
    let mut ctx = RamContext::new(RamOptions::for_qemu(10, 0));
    let mut r = Reader::new(&flush, 0);
    let rec = ctx.read_record(&mut r).unwrap();
    let mut out = [0xa5u8; 9];
    let mut s = SliceSink::new(&mut out);
    RamWriter::new().record(&rec, &mut s).unwrap();
    assert_eq!(s.finish(), 8);
    assert_eq!(out[..8], flush);
}
