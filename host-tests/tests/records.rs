//! The record iterator on real QEMU 7.2 streams: it reports the same sections, ids and body
//! boundaries as the stream's own VMDESCRIPTION implies; every prefix fails cleanly; byte flips
//! never panic.

use vmstate::Result;
use vmstate::stream::{BodyLength, FooterScan, Located, Record, Records, SectionInfo};
use vmstate::wire::SectionKind;
use vmstate_host_tests::{DescribedSection, FIXTURES, Rng, described_sections, fixture};

/// Resolves body lengths from the description computed with serde_json (independent of the
/// codec's own code).
#[derive(Clone)]
struct FromDescription(Vec<DescribedSection>);

impl BodyLength for FromDescription {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        _rest: &[u8],
        _base: usize,
    ) -> Result<Option<usize>> {
        // FULL sections appear in the trailer in stream order; `ram` (START) is not described
        // and is handled by the iterator itself, so count only FULL sections here.
        Ok(self
            .0
            .iter()
            .find(|d| d.idstr.as_bytes() == sec.idstr && d.instance_id == sec.instance_id)
            .map(|d| d.body_len))
    }
}

fn trailer_json(stream: &[u8]) -> &[u8] {
    let at = vmstate::wire::Trailer::locate(stream).expect("trailer");
    &stream[at + 5..]
}

fn walk<L: BodyLength>(stream: &[u8], l: L) -> Vec<Located<'_>> {
    Records::new(stream, l)
        .collect::<Result<Vec<_>>>()
        .unwrap_or_else(|e| panic!("walk failed: {e}"))
}

fn full_sections<'a>(recs: &[Located<'a>]) -> Vec<vmstate::SectionRecord<'a>> {
    recs.iter()
        .filter_map(|l| match l.record {
            Record::Section(s) if s.kind == SectionKind::Full => Some(s),
            _ => None,
        })
        .collect()
}

#[test]
fn walks_fixtures_with_the_boundaries_the_description_implies() {
    for name in FIXTURES {
        let stream = fixture(name);
        let described = described_sections(trailer_json(&stream));
        assert!(described.len() > 25, "{name}: {} devices", described.len());

        // Independent resolver 1: the footer scan (knows nothing of the devices).
        let by_scan = walk(&stream, FooterScan);
        // Independent resolver 2: the description computed with serde_json.
        let by_desc = walk(&stream, FromDescription(described.clone()));
        assert_eq!(by_scan, by_desc, "{name}: the two walks disagree");

        let full = full_sections(&by_scan);
        assert_eq!(full.len(), described.len(), "{name}");
        for (s, d) in full.iter().zip(&described) {
            assert_eq!(std::str::from_utf8(s.idstr).unwrap(), d.idstr, "{name}");
            assert_eq!(
                (s.instance_id, s.version_id),
                (d.instance_id, d.version),
                "{name} {}",
                d.idstr
            );
            assert_eq!(s.body.len(), d.body_len, "{name} {} body", d.idstr);
            // The footer right after the body repeats the section id.
            let f = &stream[s.body_offset + s.body.len()..s.end()];
            assert_eq!(f[0], 0x7e);
            assert_eq!(u32::from_be_bytes([f[1], f[2], f[3], f[4]]), s.section_id);
        }

        // Record sequence: header, configuration, ram START/PART/END, FULLs, EOF, trailer,
        // covering the file exactly with no gaps.
        let kinds: Vec<&str> = by_scan
            .iter()
            .map(|l| match l.record {
                Record::Header { .. } => "header",
                Record::Configuration(_) => "config",
                Record::Section(s) => s.kind.name(),
                Record::Command(_) => "command",
                Record::Eof => "eof",
                Record::Trailer(_) => "trailer",
            })
            .collect();
        assert_eq!(&kinds[..3], &["header", "config", "start"], "{name}");
        assert_eq!(&kinds[kinds.len() - 2..], &["eof", "trailer"], "{name}");
        assert!(kinds.iter().filter(|k| **k == "end").count() == 1);
        let mut at = 0;
        for l in &by_scan {
            assert_eq!(l.offset, at, "{name}: gap before record at {}", l.offset);
            at = l.end;
        }
        assert_eq!(at, stream.len());
        match by_scan[1].record {
            Record::Configuration(c) => assert_eq!(c.machine, b"pc-i440fx-7.2"),
            _ => unreachable!(),
        }
        // The RAM block list sums to the MEM_SIZE total (checked by the parser); pc.ram is 32 MiB.
        let ram = Records::new(&stream, FooterScan);
        let mut ram = ram;
        for _ in 0..3 {
            ram.next().unwrap().unwrap();
        }
        let blocks = ram.ram().blocks.expect("block list");
        assert_eq!(blocks.length_of(b"pc.ram"), Some(32 << 20));
        assert_eq!(blocks.iter().map(|b| b.length).sum::<u64>(), blocks.total);
    }
}

#[test]
fn section_ids_and_order_match_qemu_registration() {
    // docs/V3-WIRE.md §15.2: `timer` has id 0 but comes after `ram` (id 2); ids 1 and 3 never
    // occur.
    let stream = fixture("pc-7.2-nodefaults-S.vmstate");
    let recs = walk(&stream, FooterScan);
    let full = full_sections(&recs);
    assert_eq!((full[0].idstr, full[0].section_id), (&b"timer"[..], 0));
    let port92 = full.iter().find(|s| s.idstr == b"port92").unwrap();
    assert_eq!((port92.section_id, port92.offset), (0x1b, 0x45b84));
    assert!(full.iter().all(|s| s.section_id != 1 && s.section_id != 3));
}

#[test]
fn every_prefix_of_every_fixture_fails_cleanly() {
    for name in FIXTURES {
        let stream = fixture(name);
        let mut it = Records::new(&stream[..], FooterScan);
        let mut checked = 0usize;
        loop {
            let checkpoint = it.clone();
            let Some(rec) = it.next() else { break };
            let rec = rec.unwrap();
            // Cut inside this record: resuming from the state before it must say "need more"
            // (the records before the cut parse identically, by construction of the walk).
            let ram_body = match rec.record {
                Record::Section(s) if s.is_ram() => Some(s),
                _ => None,
            };
            let cuts: Box<dyn Iterator<Item = usize>> = match ram_body {
                // A RAM body is walked record by record below; cut its header and footer here.
                Some(s) => Box::new(
                    (rec.offset..s.body_offset).chain(s.body_offset + s.body.len()..rec.end),
                ),
                None => Box::new(rec.offset..rec.end),
            };
            for k in cuts {
                // The trailer is optional: a stream cut right after EOF is complete.
                if matches!(rec.record, Record::Trailer(_)) && k == rec.offset {
                    assert!(checkpoint.truncated_to(k).next().is_none());
                    checked += 1;
                    continue;
                }
                let e = checkpoint
                    .truncated_to(k)
                    .next()
                    .expect("a record or an error");
                let e = e.expect_err("a cut record must not parse");
                assert!(e.is_incomplete(), "{name}: cut at {k}: {e}");
                checked += 1;
            }
            if let Some(s) = ram_body {
                // Every cut inside the RAM body, one RAM record at a time.
                let mut ctx = *checkpoint.ram();
                let mut r = vmstate::wire::Reader::new(&stream[..s.body_offset + s.body.len()], 0);
                r.skip(s.body_offset).unwrap();
                while r.remaining() > 0 {
                    let start = r.offset();
                    let before = ctx;
                    ctx.read_record(&mut r).unwrap();
                    for k in start..r.offset() {
                        let mut c = before;
                        let mut t = vmstate::wire::Reader::new(&stream[..k], 0);
                        t.skip(start).unwrap();
                        let e = c.read_record(&mut t).expect_err("cut RAM record");
                        assert!(e.is_incomplete(), "{name}: RAM cut at {k}: {e}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(
            checked,
            stream.len(),
            "{name}: every byte position is a checked cut"
        );

        // And literally from the start, for a spread of prefixes.
        let mut rng = Rng::new(0x5eed);
        let mut cuts: Vec<usize> = (0..2048).chain(stream.len() - 2048..stream.len()).collect();
        cuts.extend((0..200).map(|_| rng.below(stream.len())));
        for k in cuts {
            let res: Result<Vec<_>> = Records::new(&stream[..k], FooterScan).collect();
            let e = res.expect_err("prefix");
            assert!(e.is_incomplete(), "{name}: prefix {k}: {e}");
        }
    }
}

#[test]
fn random_byte_flips_never_panic_and_errors_say_where() {
    for name in FIXTURES {
        let original = fixture(name);
        let mut rng = Rng::new(0xf11b ^ original.len() as u64);
        let mut errors = 0;
        for _ in 0..300 {
            let mut s = original.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(s.len());
                s[i] ^= 1 << rng.below(8);
            }
            let res: Result<Vec<_>> = Records::new(&s, FooterScan).collect();
            if let Err(e) = res {
                errors += 1;
                assert!(e.offset <= s.len(), "{e}");
                let _ = e.to_string();
            }
        }
        // Flips in page data or in field values are not structural; many flips are.
        assert!(errors > 0, "{name}: no flip detected at all");
    }
}
