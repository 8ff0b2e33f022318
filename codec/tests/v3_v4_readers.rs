//! Where the v3 reader (`stream::Records`, the stream machine) and the v4 reader
//! (`v4::wire::Records4`) answer differently for the same kind of input: each header, framing
//! and trailer rule keeps its own errors and offsets, and the v4 record-position and
//! section-id rules keep theirs. Both readers are built on the one stream machine; these
//! tests pin what each reports, so moving a rule from one to the other cannot change an answer.

use vmstate::error::RecordPosition;
use vmstate::stream::{BodyLength, Options, Records, SectionInfo};
use vmstate::v4::Error as V4Error;
use vmstate::v4::wire::{Header, Record4, Records4, SectionHead, emit_record, emit_section};
use vmstate::wire::SectionKind;
use vmstate::wire::record;
use vmstate::{Error, ErrorKind, Sink, SliceSink};

const V3_HEADER: &[u8] = b"QEVM\0\0\0\x03";
const V3_CONFIG: &[u8] = b"\x07\0\0\0\x0dpc-i440fx-7.2";

/// A v3 FULL (or START) section `idstr` with `id`, version `version`, body `2a` and its footer.
fn v3_section(kind: u8, id: u8, idstr: &[u8], version: u8) -> Vec<u8> {
    let mut s = vec![kind, 0, 0, 0, id, idstr.len() as u8];
    s.extend_from_slice(idstr);
    s.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, version, 0x2a, 0x7e, 0, 0, 0, id]);
    s
}

/// Every test body is one byte (the footer is checked after it).
#[derive(Clone, Copy)]
struct OneByte;

impl BodyLength for OneByte {
    fn body_len(
        &mut self,
        _: &SectionInfo<'_>,
        _: &[u8],
        _: usize,
    ) -> vmstate::Result<Option<usize>> {
        Ok(Some(1))
    }
}

fn v3_first_error(bytes: &[u8], options: Options) -> Error {
    Records::with_options(bytes, OneByte, options)
        .find_map(Result::err)
        .expect("an error")
}

fn v3_commands() -> Options {
    Options {
        allow_commands: true,
        ..Options::default()
    }
}

fn v4_first_error(bytes: &[u8]) -> V4Error {
    Records4::new(bytes)
        .find_map(Result::err)
        .expect("an error")
}

fn codec(e: V4Error) -> Error {
    match e {
        V4Error::Codec(e) => e,
        e => panic!("not a codec error: {e:?}"),
    }
}

fn head(kind: SectionKind, section_id: u32, idstr: &'static [u8]) -> SectionHead<'static> {
    SectionHead {
        kind,
        section_id,
        idstr,
        instance_id: 0,
        version_id: 4,
        minors: &[],
    }
}

/// A v4 stream: the header (with checksums when `crc`), then what `f` writes.
fn v4(crc: bool, f: impl FnOnce(&mut SliceSink<'_>, bool)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let mut out = SliceSink::new(&mut buf);
    Header::new(&[], crc).unwrap().emit(&mut out).unwrap();
    f(&mut out, crc);
    let n = out.finish();
    buf.truncate(n);
    buf
}

fn full(out: &mut SliceSink<'_>, crc: bool, id: u32, idstr: &'static [u8]) {
    let body = [0u8, 0, 0, 1, 0x2a];
    emit_section(out, crc, &head(SectionKind::Full, id, idstr), 5, |o| {
        o.write(&body)
    })
    .unwrap();
}

#[test]
fn a_cut_header_is_one_8_byte_read_in_v3_and_field_by_field_in_v4() {
    let e = v3_first_error(b"QEV", Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            0,
            ErrorKind::Truncated {
                needed: 8,
                available: 3
            }
        )
    );
    // v3 reads the 8 bytes before it looks at the magic.
    let e = v3_first_error(b"QEVX\0\0", Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            0,
            ErrorKind::Truncated {
                needed: 8,
                available: 6
            }
        )
    );

    let e = codec(v4_first_error(b"QEV"));
    assert_eq!(
        (e.offset, e.kind),
        (
            0,
            ErrorKind::Truncated {
                needed: 4,
                available: 3
            }
        )
    );
    let e = codec(v4_first_error(b"QEVX\0\0"));
    assert_eq!(
        (e.offset, e.kind),
        (
            0,
            ErrorKind::BadMagic {
                found: u32::from_be_bytes(*b"QEVX")
            }
        )
    );
    let e = codec(v4_first_error(b"QEVM\0\0\0\x04\0\0"));
    assert_eq!(
        (e.offset, e.kind),
        (
            8,
            ErrorKind::Truncated {
                needed: 4,
                available: 2
            }
        )
    );
    // Each reader takes only its own version.
    let e = codec(v4_first_error(V3_HEADER));
    assert_eq!(
        (e.offset, e.kind),
        (4, ErrorKind::UnsupportedFileVersion { found: 3 })
    );
    let e = v3_first_error(b"QEVM\0\0\0\x04", Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (4, ErrorKind::UnsupportedFileVersion { found: 4 })
    );
    // Nothing after the header: the next record's type byte is missing, in both.
    let e = v3_first_error(V3_HEADER, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            8,
            ErrorKind::Truncated {
                needed: 1,
                available: 0
            }
        )
    );
    let s = v4(false, |_, _| {});
    let e = codec(v4_first_error(&s));
    assert_eq!(
        (e.offset, e.kind),
        (
            13,
            ErrorKind::Truncated {
                needed: 1,
                available: 0
            }
        )
    );
}

#[test]
fn the_configuration_record_is_required_in_v3_and_optional_but_first_in_v4() {
    let mut s = V3_HEADER.to_vec();
    s.push(record::EOF);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (8, ErrorKind::ConfigurationMissing { found: 0 })
    );

    // v4: EOF right after the header is a whole stream.
    let s = v4(false, |o, _| o.write(&[record::EOF]).unwrap());
    let recs: Vec<_> = Records4::new(&s).map(|r| r.unwrap().record).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1], Record4::Eof);
    // ... and a configuration record after a section is at the wrong place.
    for crc in [false, true] {
        let s = v4(crc, |o, crc| {
            full(o, crc, 1, b"dev");
            emit_record(o, crc, record::CONFIGURATION, &V3_CONFIG[1..]).unwrap();
        });
        let at = Records4::new(&s).nth(1).unwrap().unwrap().end;
        let e = codec(v4_first_error(&s));
        assert_eq!(
            (e.offset, e.kind, e.section),
            (
                at,
                ErrorKind::UnknownRecordType {
                    found: record::CONFIGURATION,
                    expected: RecordPosition::V4Records
                },
                None
            )
        );
    }
    // v3: the same.
    let mut s = [V3_HEADER, V3_CONFIG, V3_CONFIG].concat();
    s.push(0);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            26,
            ErrorKind::UnknownRecordType {
                found: record::CONFIGURATION,
                expected: RecordPosition::V3Records { commands: false }
            }
        )
    );
}

#[test]
fn record_types_v4_skips_ancillary_and_always_takes_commands() {
    let command = b"\x00\x04\x00\x00"; // SWITCHOVER_START, no payload
    let s = v4(true, |o, crc| {
        emit_record(o, crc, 0x80, b"skip me").unwrap();
        emit_record(o, crc, record::COMMAND, command).unwrap();
        emit_record(o, crc, 0xff, b"").unwrap();
        o.write(&[record::EOF]).unwrap();
    });
    let recs: Vec<_> = Records4::new(&s).map(|r| r.unwrap().record).collect();
    assert_eq!(recs.len(), 5, "{recs:?}");
    assert_eq!(
        recs[1],
        Record4::Ancillary {
            kind: 0x80,
            payload: b"skip me"
        }
    );
    assert!(matches!(recs[2], Record4::Command(_)));
    assert_eq!(
        recs[3],
        Record4::Ancillary {
            kind: 0xff,
            payload: b""
        }
    );
    // Below 0x80 an unknown type is refused once its frame (and checksum) was read.
    let s = v4(true, |o, crc| emit_record(o, crc, 0x7f, b"x").unwrap());
    let e = codec(v4_first_error(&s));
    assert_eq!(
        (e.offset, e.kind),
        (
            13,
            ErrorKind::UnknownRecordType {
                found: 0x7f,
                expected: RecordPosition::V4Records
            }
        )
    );
    let mut bad = s.clone();
    bad[18] ^= 1;
    assert!(matches!(
        v4_first_error(&bad),
        V4Error::Checksum {
            offset: 13,
            kind: 0x7f,
            ..
        }
    ));
    // A cut frame is a truncation before its type is judged.
    let e = codec(v4_first_error(&s[..16]));
    assert_eq!(
        (e.offset, e.kind),
        (
            14,
            ErrorKind::Truncated {
                needed: 4,
                available: 2
            }
        )
    );

    // v3: an ancillary type is unknown; COMMAND only when allowed.
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.push(0x80);
    let e = v3_first_error(&s, v3_commands());
    assert_eq!(
        (e.offset, e.kind),
        (
            26,
            ErrorKind::UnknownRecordType {
                found: 0x80,
                expected: RecordPosition::V3Records { commands: true }
            }
        )
    );
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&[record::COMMAND, 0, 4, 0, 0, record::EOF]);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            26,
            ErrorKind::UnknownRecordType {
                found: record::COMMAND,
                expected: RecordPosition::V3Records { commands: false }
            }
        )
    );
    assert!(Records::with_options(&s, OneByte, v3_commands()).all(|r| r.is_ok()));
}

#[test]
fn after_eof_a_wrong_byte_is_trailing_in_v3_and_an_unexpected_record_in_v4() {
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&[record::EOF, 0x42, 0x43]);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (27, ErrorKind::TrailingBytes { count: 2 })
    );

    let s = v4(false, |o, _| o.write(&[record::EOF, 0x42, 0x43]).unwrap());
    let e = codec(v4_first_error(&s));
    assert_eq!(
        (e.offset, e.kind),
        (14, ErrorKind::UnexpectedRecord { found: 0x42 })
    );
}

#[test]
fn a_cut_or_overlong_trailer_and_bytes_after_it() {
    let trailer = b"\x06\x00\x00\x00\x10{\"a\"";
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.push(record::EOF);
    s.extend_from_slice(trailer);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            32,
            ErrorKind::Truncated {
                needed: 16,
                available: 4
            }
        )
    );
    let e = v3_first_error(&s[..30], Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            28,
            ErrorKind::Truncated {
                needed: 4,
                available: 2
            }
        )
    );

    let s4 = v4(false, |o, _| {
        o.write(&[record::EOF]).unwrap();
        o.write(trailer).unwrap();
    });
    let e = codec(v4_first_error(&s4));
    assert_eq!(
        (e.offset, e.kind),
        (
            19,
            ErrorKind::Truncated {
                needed: 16,
                available: 4
            }
        )
    );
    let e = codec(v4_first_error(&s4[..17]));
    assert_eq!(
        (e.offset, e.kind),
        (
            15,
            ErrorKind::Truncated {
                needed: 4,
                available: 2
            }
        )
    );

    // A declared length over the limit, at the length field, in both.
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&[record::EOF, 6, 0xff, 0xff, 0xff, 0xff]);
    let e = v3_first_error(&s, Options::default());
    assert!(
        matches!(
            e.kind,
            ErrorKind::LengthTooLarge {
                found: 0xffff_ffff,
                ..
            }
        ) && e.offset == 28,
        "{e:?}"
    );
    let s4 = v4(false, |o, _| {
        o.write(&[record::EOF, 6, 0xff, 0xff, 0xff, 0xff]).unwrap()
    });
    let e = codec(v4_first_error(&s4));
    assert!(
        matches!(
            e.kind,
            ErrorKind::LengthTooLarge {
                found: 0xffff_ffff,
                ..
            }
        ) && e.offset == 15,
        "{e:?}"
    );

    // Bytes after a whole trailer.
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&[record::EOF, 6, 0, 0, 0, 2, b'{', b'}', 0x99]);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (34, ErrorKind::TrailingBytes { count: 1 })
    );
    let s4 = v4(false, |o, _| {
        o.write(&[record::EOF, 6, 0, 0, 0, 2, b'{', b'}', 0x99])
            .unwrap()
    });
    let e = codec(v4_first_error(&s4));
    assert_eq!(
        (e.offset, e.kind),
        (21, ErrorKind::TrailingBytes { count: 1 })
    );
    // A whole trailer ends both walks.
    let recs: Vec<_> = Records4::new(&s4[..s4.len() - 1])
        .map(|r| r.unwrap().record)
        .collect();
    assert_eq!(recs.last(), Some(&Record4::Trailer(b"{}")));
}

#[test]
fn a_duplicate_id_is_checked_with_its_section_in_v3_and_before_the_name_in_v4() {
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    let first = v3_section(record::SECTION_FULL, 3, b"dev", 1);
    s.extend_from_slice(&first);
    let at = s.len();
    s.extend_from_slice(&v3_section(record::SECTION_FULL, 3, b"two", 1));
    s.push(record::EOF);
    let e = v3_first_error(&s, Options::default());
    assert_eq!((e.offset, e.kind), (at + 1, ErrorKind::DuplicateSection));
    let c = e.section.expect("v3: in the section");
    assert_eq!((c.idstr.as_bytes(), c.section_id), (&b"two"[..], 3));
    // v3 reads the whole header first: a bad name wins over the reused id.
    let mut bad = s.clone();
    bad[at + 6] = 0x01;
    let e = v3_first_error(&bad, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (at + 6, ErrorKind::BadNameByte { found: 1 })
    );

    for crc in [false, true] {
        let s = v4(crc, |o, crc| {
            full(o, crc, 3, b"dev");
            full(o, crc, 3, b"two");
        });
        let at = Records4::new(&s).nth(1).unwrap().unwrap().end;
        let e = codec(v4_first_error(&s));
        assert_eq!(
            (e.offset, e.kind, e.section),
            (at + 5, ErrorKind::DuplicateSection, None)
        );
        // The id is checked before the name is read.
        if !crc {
            let mut bad = s.clone();
            bad[at + 10] = 0x01;
            let e = codec(v4_first_error(&bad));
            assert_eq!((e.offset, e.kind), (at + 5, ErrorKind::DuplicateSection));
        }
    }
}

#[test]
fn a_part_without_an_open_section_is_refused_at_its_id_in_both() {
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&[record::SECTION_PART, 0, 0, 0, 9, 0x7e, 0, 0, 0, 9, 0]);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind, e.section),
        (27, ErrorKind::UnknownSectionId { found: 9 }, None)
    );

    let s = v4(false, |o, crc| {
        emit_section(o, crc, &head(SectionKind::Part, 9, b"x"), 1, |o| {
            o.write(b"d")
        })
        .unwrap()
    });
    let e = codec(v4_first_error(&s));
    assert_eq!(
        (e.offset, e.kind, e.section),
        (18, ErrorKind::UnknownSectionId { found: 9 }, None)
    );
}

#[test]
fn a_start_beyond_the_open_section_limit_is_refused_at_its_header_in_v3_and_when_booked_in_v4() {
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    let mut at = 0;
    for id in 0..17u8 {
        at = s.len();
        s.extend_from_slice(&v3_section(record::SECTION_START, id, b"live", 1));
    }
    s.push(record::EOF);
    let e = v3_first_error(&s, Options::default());
    assert_eq!(
        (e.offset, e.kind),
        (
            at,
            ErrorKind::BufferTooSmall {
                needed: 17,
                capacity: 16
            }
        )
    );
    assert_eq!(e.section.expect("v3: in the section").section_id, 16);

    let s = v4(false, |o, crc| {
        for id in 0..17 {
            emit_section(o, crc, &head(SectionKind::Start, id, b"live"), 1, |o| {
                o.write(b"d")
            })
            .unwrap();
        }
    });
    let at = Records4::new(&s).nth(16).unwrap().unwrap().end;
    let e = codec(v4_first_error(&s));
    assert_eq!(
        (e.offset, e.kind, e.section),
        (
            at,
            ErrorKind::BufferTooSmall {
                needed: 17,
                capacity: 16
            },
            None
        )
    );
}

#[test]
fn the_ram_version_is_a_v3_rule_only() {
    let mut s = [V3_HEADER, V3_CONFIG].concat();
    s.extend_from_slice(&v3_section(record::SECTION_START, 2, b"ram", 3));
    let e = v3_first_error(&s, Options::default());
    assert_eq!((e.offset, e.kind), (26, ErrorKind::RamVersion { found: 3 }));
    assert_eq!(e.section.expect("in the section").idstr.as_bytes(), b"ram");

    let s = v4(false, |o, crc| {
        let h = SectionHead {
            version_id: 3,
            ..head(SectionKind::Start, 2, b"ram")
        };
        emit_section(o, crc, &h, 1, |o| o.write(b"d")).unwrap();
        o.write(&[record::EOF]).unwrap();
    });
    assert!(Records4::new(&s).all(|r| r.is_ok()));
}
