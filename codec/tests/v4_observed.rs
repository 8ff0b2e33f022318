//! The conversions report how far they have read their input (`upgrade_from_at`'s and
//! `downgrade_observed`'s `reached`), so a caller whose input is a mapped file can release
//! what is behind: reports stay inside the input, each pass ends at the input's end, and a
//! large RAM section is reported within, not only at its end.

use vmstate::SliceSink;
use vmstate::ram::{BlockEntry, MEASURE_WINDOW, PAGE_SIZE, RamWriter};
use vmstate::v4::convert::{
    OPAQUE_PIECE, UpgradeOptions, VmsdSplit, downgrade, downgrade_observed, upgrade_from_at,
};
use vmstate::v4::wire::Records4;
use vmstate::writer::StreamWriter;

const PAGES: u64 = 1024;

/// A v3 stream of one RAM section of `PAGES` distinct pages (more than `OPAQUE_PIECE` bytes),
/// its end, and EOF.
fn v3_stream() -> Vec<u8> {
    let mut buf = vec![0u8; (PAGES as usize + 16) * (PAGE_SIZE + 32)];
    let mut w = StreamWriter::new(SliceSink::new(&mut buf));
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: PAGES * PAGE_SIZE as u64,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut ram = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    w.ram_part(1, false, &mut ram, |r, out| {
        for p in 0..PAGES {
            page.fill(p as u8 | 1);
            r.page(b"pc.ram", p * PAGE_SIZE as u64, &page, out)?;
        }
        Ok(())
    })
    .unwrap();
    w.ram_part(1, true, &mut ram, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    buf.truncate(n);
    buf
}

/// The passes in `reports`: runs of non-decreasing offsets.
fn passes(reports: &[usize]) -> Vec<&[usize]> {
    let mut out = Vec::new();
    let mut from = 0;
    for i in 1..=reports.len() {
        if i == reports.len() || reports[i] < reports[i - 1] {
            out.push(&reports[from..i]);
            from = i;
        }
    }
    out
}

#[test]
fn conversions_report_how_far_they_have_read() {
    let v3 = v3_stream();
    assert!(v3.len() > 2 * OPAQUE_PIECE, "{}", v3.len());
    let mut scratch = [0u8; 16];
    let mut v4 = vec![0u8; v3.len() + 4096];
    let mut out = SliceSink::new(&mut v4);
    let mut reports = Vec::new();
    upgrade_from_at(
        &v3,
        None,
        0,
        VmsdSplit::new(&[], &mut scratch),
        &UpgradeOptions::default(),
        &mut out,
        &mut |at| reports.push(at),
    )
    .unwrap();
    let n = out.finish();
    v4.truncate(n);

    assert!(reports.iter().all(|&at| at <= v3.len()));
    assert_eq!(reports.last(), Some(&v3.len()));
    // The RAM part is measured in windows of MEASURE_WINDOW (and a record), then written in
    // pieces of OPAQUE_PIECE, each reported: no long stretch of the input is read unreported.
    for pass in passes(&reports) {
        for w in pass.windows(2) {
            assert!(w[1] - w[0] <= OPAQUE_PIECE, "{w:?}");
        }
    }
    let measured = passes(&reports)[0];
    assert!(
        measured
            .windows(2)
            .all(|w| w[1] - w[0] <= MEASURE_WINDOW + 8 + PAGE_SIZE),
        "{measured:?}"
    );
    assert!(measured.len() > v3.len() / MEASURE_WINDOW, "{measured:?}");
    // The measuring pass over the part, then the write of its body going back to its start.
    assert!(passes(&reports).len() >= 2, "{reports:?}");

    let mut back = vec![0u8; v3.len() + 4096];
    let mut out = SliceSink::new(&mut back);
    let mut reports = Vec::new();
    downgrade_observed(&v4, &mut out, &mut |at| reports.push(at)).unwrap();
    let n = out.finish();
    assert_eq!(&back[..n], &v3[..], "v3 -> v4 -> v3");
    // Two passes (the check for vendor features, the conversion), each record's end once.
    let ends: Vec<usize> = Records4::new(&v4).map(|r| r.unwrap().end).collect();
    let passes = passes(&reports);
    assert_eq!(passes.len(), 2, "{reports:?}");
    assert!(passes.iter().all(|p| *p == &ends[..]), "{reports:?}");

    // The unobserved forms convert the same.
    let mut again = vec![0u8; v3.len() + 4096];
    let mut out = SliceSink::new(&mut again);
    downgrade(&v4, &mut out).unwrap();
    let n = out.finish();
    assert_eq!(&again[..n], &v3[..]);
}
