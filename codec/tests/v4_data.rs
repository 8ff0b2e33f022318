//! DATA records (docs/FORMAT.md §13): a live section's data in pieces. Where they may stand,
//! their v3 form, and the record-at-a-time converter against the whole-buffer one.

use vmstate::SliceSink;
use vmstate::v4::Error;
use vmstate::v4::convert::{Downgrader, downgrade, live_head};
use vmstate::v4::wire::{Header, Record4, Records4, emit_data, emit_record};
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};

/// A v4 stream (with checksums): configuration "pc", a live section `idstr` (id 2) as START
/// with no data then DATA records `pieces`, an END (id 2) with DATA `end`, then `tail`
/// records written by `more`, then EOF.
fn stream(
    idstr: &[u8],
    pieces: &[&[u8]],
    more: impl Fn(&mut SliceSink<'_>, &Header<'_>),
) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 4096];
    let mut out = SliceSink::new(&mut buf);
    let h = Header::new(&[], true).unwrap();
    h.emit(&mut out).unwrap();
    emit_record(&mut out, true, 0x07, &[0, 0, 0, 2, b'p', b'c']).unwrap();
    let head = |kind| SectionHeaderRepr {
        kind,
        section_id: 2,
        idstr,
        instance_id: 0,
        version_id: 4,
    };
    live_head(&head(SectionKind::Start), &h, &mut out).unwrap();
    for p in pieces {
        emit_data(&mut out, true, 2, p).unwrap();
    }
    live_head(&head(SectionKind::End), &h, &mut out).unwrap();
    emit_data(&mut out, true, 2, b"\x00\x00\x00\x00\x00\x00\x00\x10").unwrap();
    more(&mut out, &h);
    vmstate::Sink::write(&mut out, &[0]).unwrap();
    let n = out.finish();
    buf.truncate(n);
    buf
}

fn to_v3(v4: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0xa5u8; v4.len() * 2];
    let mut out = SliceSink::new(&mut buf);
    downgrade(v4, &mut out)?;
    let n = out.finish();
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn data_records_continue_the_section_before_them_in_v3() {
    let v4 = stream(b"ram", &[b"ab", b"", b"cde"], |_, _| {});
    let v3 = to_v3(&v4).unwrap();
    let mut want = b"QEVM\0\0\0\x03\x07\0\0\0\x02pc".to_vec();
    want.extend_from_slice(b"\x01\0\0\0\x02\x03ram\0\0\0\0\0\0\0\x04abcde\x7e\0\0\0\x02");
    want.extend_from_slice(b"\x03\0\0\0\x02\0\0\0\0\0\0\0\x10\x7e\0\0\0\x02\0");
    assert_eq!(v3, want);
    // Record by record, as a live reader converts: the same bytes.
    let mut buf = vec![0xa5u8; 256];
    let mut out = SliceSink::new(&mut buf);
    let mut d = Downgrader::new();
    for rec in Records4::new(&v4) {
        d.record(&rec.unwrap().record, &[], &mut out).unwrap();
    }
    d.finish(&mut out).unwrap();
    let n = out.finish();
    assert_eq!(buf[..n], want[..]);
    // Every cut of the stream is refused cleanly (never a panic, never a partial record).
    for cut in 0..v4.len() {
        let last = Records4::new(&v4[..cut]).find(|r| r.is_err());
        assert!(last.is_some() || cut == 0, "{cut}");
    }
}

#[test]
fn a_data_record_anywhere_but_after_its_section_is_refused() {
    // After a FULL section (here a COMMAND record: not a live section record).
    let v4 = stream(b"ram", &[b"ab"], |out, h| {
        emit_record(out, h.crc(), 0x08, &[0, 2, 0, 4, 0, 0, 0, 1]).unwrap();
        emit_data(out, true, 2, b"zz").unwrap();
    });
    let e = Records4::new(&v4).find_map(Result::err).unwrap();
    assert!(
        e.to_string().contains("record 0x09 is not allowed here"),
        "{e}"
    );
    // Naming another section.
    let v4 = stream(b"ram", &[b"ab"], |out, _| {
        emit_data(out, true, 3, b"zz").unwrap();
    });
    let e = Records4::new(&v4).find_map(Result::err).unwrap();
    assert!(
        e.to_string().contains("record 0x09 is not allowed here"),
        "{e}"
    );
    // A corrupt DATA record: its checksum.
    let mut v4 = stream(b"ram", &[b"abcdef"], |_, _| {});
    let at = v4.windows(6).position(|w| w == b"abcdef").unwrap();
    v4[at] ^= 1;
    let e = Records4::new(&v4).find_map(Result::err).unwrap();
    assert!(matches!(e, Error::Checksum { kind: 0x09, .. }), "{e}");
    // A live section other than `ram` cannot continue in DATA records in v3 (its end is
    // found by its footer there).
    let v4 = stream(b"blk", &[b"ab"], |_, _| {});
    assert!(Records4::new(&v4).all(|r| r.is_ok()));
    let e = to_v3(&v4).unwrap_err();
    assert!(
        e.to_string().contains("record 0x09 is not allowed here"),
        "{e}"
    );
}

#[test]
fn the_records_of_a_data_stream_are_what_the_writer_wrote() {
    let v4 = stream(b"ram", &[b"ab"], |_, _| {});
    let kinds: Vec<String> = Records4::new(&v4)
        .map(|r| match r.unwrap().record {
            Record4::Header(_) => "header".into(),
            Record4::Configuration(_) => "configuration".into(),
            Record4::Section(s) => format!("{:?} {}", s.kind, s.section_id),
            Record4::Data {
                section_id, data, ..
            } => format!("data {section_id} {}", data.len()),
            Record4::Eof => "eof".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "header",
            "configuration",
            "Start 2",
            "data 2 2",
            "End 2",
            "data 2 8",
            "eof"
        ]
    );
}
