//! The fast walk over RAM bodies (`RamContext::continued_run_len`, used by `measure_body`)
//! against the full record parser (`RamContext::read_record`) on the real QEMU 7.2 fixtures:
//!
//! * at every record of every RAM section, the run the fast loop skips is exactly the records
//!   `read_record` reads as ZERO/PAGE records continuing the last block, and no more;
//! * on records with flipped bits, changed fill bytes, moved offsets and cuts, `measure_body`
//!   and a walk that calls only `read_record` give the same result, the same error, the same
//!   reader position and the same last block.

use vmstate::Result;
use vmstate::ram::{RamContext, RamRecord};
use vmstate::stream::{FooterScan, Options, Record, Records};
use vmstate::wire::Reader;

mod fixtures_support;
use fixtures_support::{FIXTURES, fixture, ram_records};

fn is_continued_page(rec: &Result<RamRecord<'_>>) -> bool {
    matches!(
        rec,
        Ok(RamRecord::Zero {
            continued: true,
            ..
        } | RamRecord::Page {
            continued: true,
            ..
        })
    )
}

#[test]
fn the_skipped_run_is_exactly_the_continued_pages_read_record_reads() {
    for name in FIXTURES {
        let stream = fixture(name);
        let records = ram_records(&stream, Options::default());
        assert!(
            records.len() > 8000,
            "{name}: {} RAM records",
            records.len()
        );
        let mut skipped = 0;
        for (i, at) in records.iter().enumerate() {
            let run = at.before.continued_run_len(&stream[at.start..]);
            let mut ctx = at.before;
            let mut r = Reader::new(&stream, 0);
            r.skip(at.start).unwrap();
            let rec = ctx.read_record(&mut r);
            if is_continued_page(&rec) {
                // This record, then the run from the next one (records are contiguous).
                assert_eq!(ctx.last_block(), at.before.last_block(), "{name}: {i}");
                let next = records
                    .get(i + 1)
                    .map_or(0, |n| n.before.continued_run_len(&stream[n.start..]));
                assert_eq!(run, at.end - at.start + next, "{name}: record {i}");
                skipped += 1;
            } else {
                assert_eq!(run, 0, "{name}: record {i} ({rec:?}) is not skipped");
            }
        }
        // The fixtures are mostly such runs: the fast loop is what walks them.
        assert!(
            skipped * 10 > records.len() * 9,
            "{name}: {skipped} skipped"
        );
    }
}

/// `measure_body` with only `read_record`, as it was before the fast loop.
fn measure_by_records<'a>(ctx: &mut RamContext<'a>, r: &mut Reader<'a>) -> Result<usize> {
    let start = r.position();
    loop {
        if let RamRecord::Eos = ctx.read_record(r)? {
            return Ok(r.position() - start);
        }
    }
}

/// Asserts that both walks agree on `bytes` (absolute offset `base`) from context `ctx`.
fn assert_walks_agree(ctx: RamContext<'_>, bytes: &[u8], base: usize, what: &dyn Fn() -> String) {
    let (mut fast, mut slow) = (ctx, ctx);
    let (mut rf, mut rs) = (Reader::new(bytes, base), Reader::new(bytes, base));
    let a = fast.measure_body(&mut rf);
    let b = measure_by_records(&mut slow, &mut rs);
    assert_eq!(a, b, "{}", what());
    assert_eq!(rf.offset(), rs.offset(), "{}", what());
    assert_eq!(fast.last_block(), slow.last_block(), "{}", what());
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

#[test]
fn mutated_and_cut_records_give_the_same_result_and_error() {
    for name in FIXTURES {
        let stream = fixture(name);
        let records = ram_records(&stream, Options::default());
        let mut rng = Rng(0x7a3e ^ stream.len() as u64);
        let mut checked = 0;
        for (i, at) in records.iter().enumerate() {
            // The mutated record, two records of context after it, then EOS: a short body that
            // both walks finish (or refuse) quickly.
            let tail_end = records.get(i + 3).map_or(at.end, |n| n.start);
            let mut body = stream[at.start..tail_end].to_vec();
            body.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x10]);
            let len = at.end - at.start;
            // Every record as is, with and without non-zero fills allowed.
            for allow in [false, true] {
                let mut ctx = at.before;
                ctx.options.allow_nonzero_fill = allow;
                assert_walks_agree(ctx, &body, at.start, &|| format!("{name}: {i} {allow}"));
            }
            // Every bit of the record word and of the byte after it (fill, name length or
            // first page byte), on a spread of records and on every record that is not a
            // continued ZERO (the named ones, PAGE, EOS, MEM_SIZE).
            if i % 17 == 0 || len != 9 || body[7] != 0x22 {
                for bit in 0..72 {
                    let mut m = body.clone();
                    m[bit / 8] ^= 1 << (bit % 8);
                    for allow in [false, true] {
                        let mut ctx = at.before;
                        ctx.options.allow_nonzero_fill = allow;
                        assert_walks_agree(ctx, &m, at.start, &|| {
                            format!("{name}: {i} bit {bit} {allow}")
                        });
                        checked += 1;
                    }
                }
            }
            // An offset moved to a random page, at the last page of a block and past it.
            let mut m = body.clone();
            let word = u64::from_be_bytes(m[..8].try_into().unwrap());
            let length = at.before.last_block().map_or(0, |(_, l)| l);
            for addr in [
                (rng.below(1 << 20) as u64) << 12,
                length.wrapping_sub(0x1000),
                length,
                length.wrapping_sub(0x800),
                u64::MAX,
            ] {
                let w = (addr & !0xfff) | (word & 0xfff);
                m[..8].copy_from_slice(&w.to_be_bytes());
                assert_walks_agree(at.before, &m, at.start, &|| {
                    format!("{name}: {i} at {addr:#x}")
                });
                checked += 1;
            }
            // Cuts: every cut of short records, a spread of cuts of pages.
            let cuts: Vec<usize> = if len <= 64 {
                (0..len).collect()
            } else {
                (0..16)
                    .chain(len - 16..len)
                    .chain((0..4).map(|_| rng.below(len)))
                    .collect()
            };
            for k in cuts {
                let mut ctx = at.before;
                let mut r = Reader::new(&body[..k], at.start);
                let e = ctx.measure_body(&mut r).unwrap_err();
                assert!(e.is_incomplete(), "{name}: {i} cut at {k}: {e}");
                assert_walks_agree(at.before, &body[..k], at.start, &|| {
                    format!("{name}: {i} cut at {k}")
                });
                checked += 1;
            }
        }
        assert!(checked > 50_000, "{name}: {checked} mutations");
    }
}

#[test]
fn whole_fixture_bodies_measure_the_same_and_end_at_their_footer() {
    for name in FIXTURES {
        let stream = fixture(name);
        let mut it = Records::new(&stream, FooterScan);
        let mut bodies = 0;
        loop {
            let ctx = *it.ram();
            let Some(rec) = it.next() else { break };
            let Record::Section(s) = rec.unwrap().record else {
                continue;
            };
            if s.is_ram() {
                // Past the body: the footer and the rest of the stream, which neither walk reads.
                let rest = &stream[s.body_offset..];
                assert_walks_agree(ctx, rest, s.body_offset, &|| format!("{name}: {s:?}"));
                let mut c = ctx;
                let n = c.measure_body(&mut Reader::new(rest, s.body_offset));
                assert_eq!(n, Ok(s.body.len()));
                bodies += 1;
            }
        }
        assert!(bodies >= 3, "{name}: {bodies} RAM bodies");
    }
}
