//! Streaming encode/decode against the real QEMU 7.2 fixtures.
//!
//! * The push/pull decoder, fed in random chunk sizes through working buffers of random size,
//!   yields exactly what `Records::new(bytes, FooterScan)` yields (RAM sections expanded record
//!   by record with `RamContext`, the trailer in chunks).
//! * The record encoder over an `IoSink` whose writer accepts random partial writes, and over a
//!   `SliceSink`, re-creates every fixture byte for byte (RAM bodies re-encoded through
//!   `RamWriter`, not copied).
//! * A cut stream is "need more" (`Status::Partial`) until the input ends, then `Truncated`;
//!   malformed bytes are an error at once; a section larger than the working buffer is named.

use std::fmt::Write as _;
use vmstate::io::{Decoder, Event, Status, StreamReader};
use vmstate::ram::{RamContext, RamOptions, RamRecord};
use vmstate::stream::{FooterScan, Options, Record, Records};
use vmstate::wire::Reader;
use vmstate::wire::command::CommandId;
use vmstate::wire::section::SectionHeaderRepr;
use vmstate::writer::StreamWriter;
use vmstate::{ErrorKind, IoSink, SliceSink};

mod fixtures_support;
use fixtures_support::{FIXTURES, FIXTURES_V2, WITH_COMMAND, fixture};

/// Options that accept COMMAND records (QEMU 10.0 machine types send SWITCHOVER_START).
fn with_commands() -> Options {
    Options {
        allow_commands: true,
        ..Options::default()
    }
}

/// RAM options for a fixture (the x-ignore-shared ones carry block addresses).
fn ram_options(name: &str) -> RamOptions {
    RamOptions {
        ignore_shared: name.contains("ignore-shared"),
        ..RamOptions::default()
    }
}

/// Every fixture with the options to read it and the number of decoder rounds to run.
fn all_fixtures() -> impl Iterator<Item = (&'static str, Options, usize)> {
    let first = FIXTURES.into_iter().map(|n| (n, Options::default(), 10));
    let second = FIXTURES_V2.into_iter().map(|n| {
        let o = Options {
            ram: ram_options(n),
            ..with_commands()
        };
        (n, o, 2)
    });
    first.chain(second)
}

/// xorshift64*: a small deterministic generator, so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Mostly small chunks, sometimes large ones.
    fn chunk(&mut self) -> usize {
        match self.next() % 4 {
            0 => 1 + (self.next() % 8) as usize,
            1 => 1 + (self.next() % 300) as usize,
            2 => 1 + (self.next() % 5000) as usize,
            _ => 1 + (self.next() % 70_000) as usize,
        }
    }
}

struct ChunkedReader<'a> {
    data: &'a [u8],
    rng: Rng,
}

impl embedded_io::ErrorType for ChunkedReader<'_> {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for ChunkedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = self.rng.chunk().min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

struct ChunkedWriter {
    out: Vec<u8>,
    rng: Rng,
}

impl embedded_io::ErrorType for ChunkedWriter {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for ChunkedWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.rng.chunk().min(buf.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The reference event list, as text: Records' records, with `ram` sections expanded.
fn reference(bytes: &[u8], options: Options) -> (Vec<String>, Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut json = Vec::new();
    let mut ram = RamContext::new(options.ram);
    let mut largest = 0;
    for rec in Records::with_options(bytes, FooterScan, options) {
        let rec = rec.unwrap();
        match rec.record {
            Record::Section(s) if s.is_ram() => {
                out.push(format!(
                    "ram {:?} {} {} {} {} {}",
                    s.kind, s.offset, s.section_id, s.instance_id, s.header_len, s.ordinal
                ));
                let mut r = Reader::new(s.body, s.body_offset);
                loop {
                    let at = r.offset();
                    let rr = ram.read_record(&mut r).unwrap();
                    out.push(format!("{at} {rr:?}"));
                    if rr == RamRecord::Eos {
                        break;
                    }
                }
            }
            Record::Trailer(t) => {
                out.push(format!("trailer {} {}", rec.offset, t.json.len()));
                json.extend_from_slice(t.json);
            }
            r => {
                if let Record::Section(_) = r {
                    largest = largest.max(rec.end - rec.offset);
                }
                out.push(format!("{r:?}"));
            }
        }
    }
    (out, json, largest)
}

fn describe(ev: &Event<'_>, json: &mut Vec<u8>) -> Option<String> {
    Some(match ev {
        Event::RamSection(s) => format!(
            "ram {:?} {} {} {} {} {}",
            s.kind, s.offset, s.section_id, s.instance_id, s.header_len, s.ordinal
        ),
        Event::Ram { offset, record } => format!("{offset} {record:?}"),
        Event::TrailerStart { offset, len } => format!("trailer {offset} {len}"),
        Event::TrailerData { data, .. } => {
            json.extend_from_slice(data);
            return None;
        }
        Event::Record(r) => format!("{r:?}"),
    })
}

/// Polls `dec`, skipping events and feeding it `bytes` from `fed` on as it asks, until it
/// says something else (done, an error, or "need more" with `bytes` used up).
fn feed<L: vmstate::stream::BodyLength>(
    dec: &mut Decoder<'_, L>,
    bytes: &[u8],
    fed: &mut usize,
) -> Result<Status, vmstate::Error> {
    loop {
        match dec.poll() {
            Ok(Status::Ready) => {}
            Ok(Status::Partial) if *fed < bytes.len() => {
                let s = dec.space();
                let n = s.len().min(bytes.len() - *fed);
                s[..n].copy_from_slice(&bytes[*fed..*fed + n]);
                dec.fill(n);
                *fed += n;
            }
            other => return other,
        }
    }
}

#[test]
fn streamed_events_equal_records_for_random_chunks_and_buffers() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for (name, options, rounds) in all_fixtures() {
        let bytes = fixture(name);
        let (want, want_json, largest) = reference(&bytes, options);
        // A VMState section must fit with LOOKAHEAD bytes after it, next to the pinned RAM
        // block list (140 bytes in the first-generation streams, 211 with 8 blocks and 275
        // with x-ignore-shared in the second); a RAM page record is at most 8 + 256 + 4096
        // bytes.
        let pin = 300;
        let min = (largest + vmstate::io::LOOKAHEAD + pin).max(4400 + pin);
        for round in 0..rounds {
            let size = min + (rng.next() % 3) as usize * (rng.next() % 40_000) as usize;
            let mut buf = vec![0u8; size];
            let input = ChunkedReader {
                data: &bytes,
                rng: Rng(rng.next() | 1),
            };
            let dec = Decoder::with_options(&mut buf, FooterScan, options);
            let mut sr = StreamReader::with_decoder(input, dec);
            let mut got = Vec::new();
            let mut json = Vec::new();
            while let Some(ev) = sr
                .next_event()
                .unwrap_or_else(|e| panic!("{name} round {round} buf {size}: {e}"))
            {
                got.extend(describe(&ev, &mut json));
            }
            assert_eq!(got.len(), want.len(), "{name} buf {size}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{name} buf {size} event {i}:\n got {g:.300}\nwant {w:.300}"
                );
            }
            assert!(json == want_json, "{name}: trailer differs");
            assert_eq!(sr.decoder().offset(), bytes.len());
        }
    }
}

/// `Decoder::consumed` is always the stream just before the decoder's offset and
/// `Decoder::unconsumed` the stream from it to what was fed, and the consumed bytes stay in
/// the buffer until `space` moves its contents (pinning a RAM block list does not drop them):
/// a forwarder that takes them before each `space` passes the whole stream on, in order,
/// without a copy of its own.
#[test]
fn consumed_bytes_stay_in_the_buffer_until_space() {
    let mut rng = Rng(0x5eed_c0a5_0000_0002);
    for (name, options, rounds) in all_fixtures() {
        let bytes = fixture(name);
        let (_, _, largest) = reference(&bytes, options);
        let min = (largest + vmstate::io::LOOKAHEAD + 300).max(4700);
        for round in 0..rounds {
            let size = min + (rng.next() % 3) as usize * (rng.next() % 40_000) as usize;
            let mut buf = vec![0u8; size];
            let mut dec = Decoder::with_options(&mut buf, FooterScan, options);
            let (mut fed, mut passed) = (0, Vec::new());
            let at = |what: &str| format!("{name} round {round} buf {size}: {what}");
            loop {
                let status = dec
                    .poll()
                    .unwrap_or_else(|e| panic!("{}", at(&e.to_string())));
                let (off, c) = (dec.offset(), dec.consumed());
                assert!(c == &bytes[off - c.len()..off], "{}", at("consumed"));
                assert!(dec.unconsumed() == &bytes[off..fed], "{}", at("unconsumed"));
                match status {
                    Status::Ready => continue,
                    Status::Done => break,
                    Status::Partial => {}
                }
                // What was checked goes on before `space` drops it.
                let from = off - c.len();
                assert!(
                    from <= passed.len(),
                    "{}",
                    at("consumed bytes were dropped")
                );
                passed.extend_from_slice(&c[passed.len() - from..]);
                if fed == bytes.len() {
                    dec.finish();
                    continue;
                }
                let s = dec.space();
                let n = s
                    .len()
                    .min(bytes.len() - fed)
                    .min(1 + (rng.next() % 70_000) as usize);
                s[..n].copy_from_slice(&bytes[fed..fed + n]);
                dec.fill(n);
                fed += n;
            }
            let off = dec.offset();
            let c = dec.consumed();
            passed.extend_from_slice(&c[passed.len() - (off - c.len())..]);
            assert!(passed == bytes[..off], "{}", at("passed bytes differ"));
            assert_eq!(off, bytes.len(), "{}", at("offset at the end"));
        }
    }
}

/// Re-encodes a fixture through `StreamWriter` (RAM bodies record by record).
fn reencode<'a, S: vmstate::Sink>(bytes: &'a [u8], options: Options, enc: &mut StreamWriter<'a, S>)
where
    S::Error: core::fmt::Debug,
{
    let mut ram = RamContext::new(options.ram);
    for rec in Records::with_options(bytes, FooterScan, options) {
        match rec.unwrap().record {
            Record::Section(s) if s.is_ram() => {
                enc.section_header(&SectionHeaderRepr {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                })
                .unwrap();
                let mut r = Reader::new(s.body, s.body_offset);
                loop {
                    let rr = ram.read_record(&mut r).unwrap();
                    enc.ram_record(&rr).unwrap();
                    if rr == RamRecord::Eos {
                        break;
                    }
                }
                enc.footer(s.section_id).unwrap();
            }
            other => enc.record(&other).unwrap(),
        }
    }
}

#[test]
fn io_and_slice_encoders_recreate_every_fixture() {
    let mut rng = Rng(0x0dd_ba11_cafe_f00d);
    for (name, options, _) in all_fixtures() {
        let bytes = fixture(name);
        let mut slice = vec![0xa5u8; bytes.len()];
        let mut enc = StreamWriter::new(SliceSink::new(&mut slice));
        reencode(&bytes, options, &mut enc);
        assert_eq!(enc.into_inner().finish(), bytes.len(), "{name}");
        assert!(slice == bytes, "{name}: slice encoder differs");
        for _ in 0..4 {
            let w = ChunkedWriter {
                out: Vec::new(),
                rng: Rng(rng.next() | 1),
            };
            let mut enc = StreamWriter::new(IoSink::new(w));
            reencode(&bytes, options, &mut enc);
            let out = enc.into_inner().into_inner().out;
            assert!(out == bytes, "{name}: io encoder differs");
        }
        // Too small a slice is an error value, not a panic.
        let mut small = vec![0u8; bytes.len() - 1];
        let mut enc = StreamWriter::new(SliceSink::new(&mut small));
        let mut ram = RamContext::new(options.ram);
        let mut failed = false;
        for rec in Records::with_options(&bytes, FooterScan, options) {
            let r = match rec.unwrap().record {
                Record::Section(s) if s.is_ram() => {
                    // Measured only, to keep the block list current.
                    ram.measure_body(&mut Reader::new(s.body, 0)).unwrap();
                    enc.record(&Record::Section(s))
                }
                other => enc.record(&other),
            };
            if let Err(e) = r {
                assert!(matches!(e.kind, ErrorKind::BufferTooSmall { .. }));
                failed = true;
                break;
            }
        }
        assert!(failed);
    }
}

/// Pushes `bytes` through a decoder in `chunk`-byte pieces; returns the events' text, the
/// status after the last byte, and the first error.
fn push_all(
    bytes: &[u8],
    buf: &mut [u8],
    chunk: usize,
) -> (String, Result<Status, vmstate::Error>) {
    let mut dec = Decoder::new(buf, FooterScan);
    let mut text = String::new();
    let mut fed = 0;
    loop {
        match dec.poll() {
            Ok(Status::Ready) => {
                let _ = write!(text, "{:.40?};", dec.event().unwrap());
            }
            Ok(Status::Partial) if fed < bytes.len() => {
                let space = dec.space();
                let n = space.len().min(chunk).min(bytes.len() - fed);
                space[..n].copy_from_slice(&bytes[fed..fed + n]);
                dec.fill(n);
                fed += n;
            }
            other => return (text, other),
        }
    }
}

#[test]
fn cut_input_is_partial_then_truncated_and_bad_input_is_an_error() {
    let bytes = fixture("pc-7.2-nodefaults-S.vmstate");
    let mut buf = vec![0u8; 64 * 1024];
    // Cuts inside the header, configuration, RAM START, a page record, a FULL section, the
    // trailer.
    for cut in [
        3,
        20,
        60,
        0xc4 + 3,
        0x120d0 + 100,
        0x45b84 + 10,
        bytes.len() - 7,
    ] {
        let (_, st) = push_all(&bytes[..cut], &mut buf, 777);
        assert_eq!(st, Ok(Status::Partial), "cut {cut}");
        // Then the end of input turns "need more" into a truncation error.
        let mut dec = Decoder::new(&mut buf, FooterScan);
        let mut fed = 0;
        let err = loop {
            match feed(&mut dec, &bytes[..cut], &mut fed) {
                Ok(Status::Partial) => dec.finish(),
                Ok(Status::Done) => panic!("cut {cut}: a cut stream ended cleanly"),
                Ok(Status::Ready) => unreachable!("feed polls past Ready"),
                Err(e) => break e,
            }
        };
        assert!(
            err.is_incomplete() || err.kind == ErrorKind::BodyLengthUnknown,
            "cut {cut}: {err}"
        );
    }
    // The whole stream ends cleanly.
    let mut dec = Decoder::new(&mut buf, FooterScan);
    let mut fed = 0;
    loop {
        match dec.poll().unwrap() {
            Status::Ready => {}
            Status::Partial if fed < bytes.len() => {
                let s = dec.space();
                let n = s.len().min(bytes.len() - fed);
                s[..n].copy_from_slice(&bytes[fed..fed + n]);
                dec.fill(n);
                fed += n;
            }
            Status::Partial => dec.finish(),
            Status::Done => break,
        }
    }
    // Malformed: an unknown record type where the RAM START should be, a bad RAM flag, a
    // footer with the wrong id. Each is an error as soon as its bytes are in, not Partial.
    let mut bad = bytes.clone();
    bad[0x1a] = 0x09;
    let (_, st) = push_all(&bad, &mut buf, 100);
    assert_eq!(
        st.unwrap_err().kind,
        ErrorKind::UnknownRecordType {
            found: 9,
            expected: vmstate::RecordPosition::V3Records { commands: false }
        }
    );
    let mut bad = bytes.clone();
    bad[0xc9 + 7] = 0x11; // the first PART record word: ZERO -> FULL|EOS
    let (_, st) = push_all(&bad, &mut buf, 100);
    let e = st.unwrap_err();
    assert_eq!(e.kind, ErrorKind::RamFlags { flags: 0x11 });
    assert_eq!(e.offset, 0xc9);
    assert!(e.section.unwrap().idstr.eq_bytes(b"ram"));
    let mut bad = bytes.clone();
    bad[0xbf + 4] = 0x63;
    let (_, st) = push_all(&bad, &mut buf, 100);
    assert!(matches!(
        st.unwrap_err().kind,
        ErrorKind::FooterMismatch {
            expected: 2,
            found: 0x63
        }
    ));
}

#[test]
fn a_section_larger_than_the_buffer_is_named() {
    let bytes = fixture("pc-7.2-bios.vmstate");
    // The largest VMState section.
    let (id, len) = Records::new(&bytes, FooterScan)
        .filter_map(|r| match r.unwrap() {
            l @ vmstate::stream::Located {
                record: Record::Section(s),
                ..
            } if !s.is_ram() => Some((s.idstr.to_vec(), l.end - l.offset)),
            _ => None,
        })
        .max_by_key(|(_, n)| *n)
        .unwrap();
    // The decoder keeps the block list (the RAM START body less its EOS) at the front of the
    // buffer; every RAM record of the stream (at most 8 + 1 + 21 + 4096 bytes here) still fits
    // in the rest.
    let pinned = Records::new(&bytes, FooterScan)
        .find_map(|r| match r.unwrap().record {
            Record::Section(s) if s.is_ram() => Some(s.body.len() - 8),
            _ => None,
        })
        .unwrap();
    assert!(len > 4126 + 1, "{len}");
    let mut buf = vec![0u8; pinned + len - 1];
    let (_, st) = push_all(&bytes, &mut buf, 4096);
    let e = st.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::BufferTooSmall { capacity, .. } if capacity == buf.len() - pinned),
        "{e}"
    );
    assert!(e.section.unwrap().idstr.eq_bytes(&id), "{e}");
}

#[test]
fn mutated_streams_end_in_an_error_or_done_never_a_panic() {
    let bytes = fixture("pc-7.2-serial.vmstate");
    let mut rng = Rng(0xbad_f00d_0bad_cafe);
    let mut buf = vec![0u8; 16 * 1024];
    let mut errors = 0;
    for _ in 0..150 {
        let mut m = bytes.clone();
        // Hit the record structure (the first 0x46000 bytes hold RAM and the sections) more
        // often than the trailer's JSON.
        for _ in 0..1 + rng.next() % 4 {
            let at = (rng.next() % 0x46000) as usize;
            m[at] = rng.next() as u8;
        }
        let input = ChunkedReader {
            data: &m,
            rng: Rng(rng.next() | 1),
        };
        let mut sr = StreamReader::new(input, &mut buf, FooterScan);
        let mut events = 0usize;
        loop {
            match sr.next_event() {
                Ok(Some(_)) => events += 1,
                Ok(None) => break,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
            assert!(events <= m.len(), "no progress");
        }
    }
    assert!(errors > 0);
}

/// The QEMU 10.0 streams' SWITCHOVER_START: the slice iterator and the push decoder yield it at
/// the same offset, right before the RAM END section; without `allow_commands` both refuse it
/// with a message that names what the position allows (and does not list 0x08 as allowed).
#[test]
fn switchover_start_in_real_10_0_streams() {
    let mut buf = vec![0u8; 256 * 1024];
    for name in WITH_COMMAND {
        let bytes = fixture(name);
        let options = Options {
            ram: ram_options(name),
            ..with_commands()
        };
        let at = bytes
            .windows(5)
            .position(|w| w == [8, 0, 0x0b, 0, 0])
            .unwrap();
        let recs: Vec<_> = Records::with_options(&bytes, FooterScan, options)
            .map(|r| r.unwrap())
            .collect();
        let i = recs
            .iter()
            .position(|r| matches!(r.record, Record::Command(_)))
            .unwrap();
        let Record::Command(c) = recs[i].record else {
            unreachable!()
        };
        assert_eq!(
            (c.id, c.payload, c.packaged, recs[i].offset, recs[i].end),
            (CommandId::SwitchoverStart, &[][..], &[][..], at, at + 5),
            "{name}"
        );
        assert!(
            matches!(recs[i + 1].record, Record::Section(s) if s.is_ram()
                && s.kind == vmstate::wire::section::SectionKind::End),
            "{name}: the RAM END follows"
        );
        assert_eq!(
            recs.iter()
                .filter(|r| matches!(r.record, Record::Command(_)))
                .count(),
            1
        );
        // The push decoder, fed in small pieces.
        let mut dec = Decoder::with_options(&mut buf, FooterScan, options);
        let (mut fed, mut seen) = (0, None);
        loop {
            match dec.poll().unwrap() {
                Status::Ready => {
                    if let Some(Event::Record(Record::Command(c))) = dec.event() {
                        seen = Some((c.id, dec.offset()));
                    }
                }
                Status::Partial if fed < bytes.len() => {
                    let s = dec.space();
                    let n = s.len().min(bytes.len() - fed).min(4099);
                    s[..n].copy_from_slice(&bytes[fed..fed + n]);
                    dec.fill(n);
                    fed += n;
                }
                Status::Partial => dec.finish(),
                Status::Done => break,
            }
        }
        assert_eq!(seen, Some((CommandId::SwitchoverStart, at)), "{name}");
        // Default options: refused at the record, with a message that does not contradict
        // itself.
        let default = Options {
            ram: ram_options(name),
            ..Options::default()
        };
        let e = Records::with_options(&bytes, FooterScan, default)
            .find_map(|r| r.err())
            .unwrap();
        assert_eq!(
            (e.offset, e.kind),
            (
                at,
                ErrorKind::UnknownRecordType {
                    found: 8,
                    expected: vmstate::RecordPosition::V3Records { commands: false }
                }
            )
        );
        let msg = e.kind.to_string();
        let (found, expected) = msg.split_once("expected").unwrap();
        assert!(
            found.contains("0x08 (COMMAND) is not allowed here")
                && !expected.contains("0x08")
                && expected.contains("allow_commands"),
            "{msg}"
        );
    }
}

/// A PACKAGED record (put where a real 10.0 stream has its SWITCHOVER_START): its sub-stream is
/// part of the record; cut anywhere inside, the slice iterator reports a truncation at the
/// record and the push decoder says "need more" until the input ends.
#[test]
fn packaged_data_must_be_in_the_input() {
    let real = fixture("q10-pc-i440fx-10.0.vmstate");
    let at = real
        .windows(5)
        .position(|w| w == [8, 0, 0x0b, 0, 0])
        .unwrap();
    let packaged: &[u8] = &[8, 0, 7, 0, 4, 0, 0, 0, 6, 0, 1, 2, 3, 4, 5];
    let bytes = [&real[..at], packaged, &real[at + 5..]].concat();
    let rec = Records::with_options(&bytes, FooterScan, with_commands())
        .map(|r| r.unwrap())
        .find(|r| matches!(r.record, Record::Command(_)))
        .unwrap();
    let Record::Command(c) = rec.record else {
        unreachable!()
    };
    assert_eq!(
        (c.id, c.payload, c.packaged, rec.end - rec.offset),
        (
            CommandId::Packaged,
            &[0, 0, 0, 6][..],
            &[0, 1, 2, 3, 4, 5][..],
            15
        )
    );
    let mut buf = vec![0u8; 256 * 1024];
    for cut in at + 1..at + packaged.len() {
        let e = Records::with_options(&bytes[..cut], FooterScan, with_commands())
            .find_map(|r| r.err())
            .unwrap();
        assert!(
            e.is_incomplete() && (at..=cut).contains(&e.offset),
            "cut {cut}: {e}"
        );
        let mut dec = Decoder::with_options(&mut buf, FooterScan, with_commands());
        let mut fed = 0;
        let last = feed(&mut dec, &bytes[..cut], &mut fed);
        assert_eq!(last, Ok(Status::Partial), "cut {cut}");
        assert_eq!(dec.offset(), at, "cut {cut}: waits at the record");
    }
    // A declared length the input cannot hold.
    let mut huge = bytes.clone();
    huge[at + 5..at + 9].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]);
    let e = Records::with_options(&huge, FooterScan, with_commands())
        .find_map(|r| r.err())
        .unwrap();
    assert_eq!(
        (e.offset, e.kind),
        (
            at + 9,
            ErrorKind::Truncated {
                needed: u32::MAX as usize,
                available: huge.len() - at - 9
            }
        )
    );
}

/// Unknown command numbers are refused with the number and the record's offset, by both
/// readers.
#[test]
fn unknown_commands_are_refused_with_their_number() {
    let real = fixture("q10-pc-q35-10.0.vmstate");
    let at = real
        .windows(5)
        .position(|w| w == [8, 0, 0x0b, 0, 0])
        .unwrap();
    for cmd in [0u16, 12, 0xffff] {
        let mut bytes = real.clone();
        bytes[at + 1..at + 3].copy_from_slice(&cmd.to_be_bytes());
        let e = Records::with_options(&bytes, FooterScan, with_commands())
            .find_map(|r| r.err())
            .unwrap();
        let want = (at + 1, ErrorKind::UnknownCommand { cmd, len: 0 });
        assert_eq!((e.offset, e.kind), want);
        assert!(e.to_string().contains(&format!("{cmd:#06x}")), "{e}");
        let mut buf = vec![0u8; 256 * 1024];
        let (_, st) = {
            let mut dec = Decoder::with_options(&mut buf, FooterScan, with_commands());
            let mut fed = 0;
            let st = loop {
                match dec.poll() {
                    Ok(Status::Ready) => {}
                    Ok(Status::Partial) if fed < bytes.len() => {
                        let s = dec.space();
                        let n = s.len().min(bytes.len() - fed);
                        s[..n].copy_from_slice(&bytes[fed..fed + n]);
                        dec.fill(n);
                        fed += n;
                    }
                    Ok(Status::Partial) => dec.finish(),
                    other => break other,
                }
            };
            ((), st)
        };
        let e = st.unwrap_err();
        assert_eq!((e.offset, e.kind), want);
    }
}
