//! A lock-free dirty-page log for live migration, over caller-owned storage.
//!
//! While a guest runs, its vCPU threads (the *writers*) store into guest pages and then
//! [`DirtyLog::mark`] them; the migration thread [`DirtyLog::harvest`]s a *round*: it takes every
//! set bit and clears it in one atomic `swap` per 64-page word, then sends those pages.
//!
//! **No mark is lost.** A bit is cleared only by the `swap` that also returns it, so every mark
//! is returned by exactly one harvest: a page written (and marked) after its bit was harvested
//! shows up in a later round. The writer stores the page *before* marking it (`fetch_or` with
//! `Release`); the harvest `swap`s with `Acquire`, so a harvested page's contents are at least
//! as new as the write that marked it. A write racing the page copy may or may not be in the
//! copy, but its mark is then still set, so the page is sent again. After the writers stop
//! (stop-and-copy), one last harvest makes source and destination equal.
//!
//! Loom checks this protocol (`codec/tests/loom.rs`), and checks that a harvest written as
//! `load` then `store(0)` (the `cfg(loom_broken)` variant) does lose marks.
//!
//! [`encode_round`] writes the harvested pages as RAM records: ZERO for all-zero pages, PAGE
//! otherwise, through [`RamWriter`] (so CONTINUE is set exactly as QEMU sets it).

use crate::error::{Error, ErrorKind};
use crate::ram::{PAGE_SIZE, RamWriter};
use crate::sink::Sink;
use crate::sync::{AtomicU64, Ordering};

/// Pages per bitmap word.
pub const PAGES_PER_WORD: usize = 64;

/// Words a bitmap needs for `pages` pages.
pub const fn words_for(pages: usize) -> usize {
    pages.div_ceil(PAGES_PER_WORD)
}

/// A dirty-page bitmap: bit `p % 64` of word `p / 64` is page `p`.
///
/// Any number of threads may call [`DirtyLog::mark`] concurrently with one harvesting thread.
#[derive(Debug, Clone, Copy)]
pub struct DirtyLog<'a> {
    words: &'a [AtomicU64],
    pages: usize,
}

impl<'a> DirtyLog<'a> {
    /// A log for `pages` pages over `words` (at least [`words_for`]`(pages)` words; extra words
    /// are ignored). Returns [`ErrorKind::BufferTooSmall`] if the storage is too short. The
    /// storage's current bits are kept (start it zeroed for "nothing dirty").
    pub fn new(words: &'a [AtomicU64], pages: usize) -> Result<Self, Error> {
        let needed = words_for(pages);
        match words.get(..needed) {
            Some(words) => Ok(DirtyLog { words, pages }),
            None => Err(Error::new(
                0,
                ErrorKind::BufferTooSmall {
                    needed,
                    capacity: words.len(),
                },
            )),
        }
    }

    /// Number of pages tracked.
    pub const fn pages(&self) -> usize {
        self.pages
    }

    /// Number of bitmap words (the length a harvest buffer needs).
    pub const fn words(&self) -> usize {
        self.words.len()
    }

    /// Marks `page` dirty. Call it *after* storing into the page. Returns `false` (and marks
    /// nothing) if the page is out of range.
    #[inline]
    pub fn mark(&self, page: usize) -> bool {
        if page >= self.pages {
            return false;
        }
        if let Some(w) = self.words.get(page / PAGES_PER_WORD) {
            w.fetch_or(1 << (page % PAGES_PER_WORD), Ordering::Release);
        }
        true
    }

    /// Marks every page dirty (the first round of a migration sends all of memory).
    pub fn mark_all(&self) {
        for (i, w) in self.words.iter().enumerate() {
            let lo = i.saturating_mul(PAGES_PER_WORD);
            let n = self.pages.saturating_sub(lo).min(PAGES_PER_WORD);
            let bits = if n == PAGES_PER_WORD {
                u64::MAX
            } else {
                !(u64::MAX << n)
            };
            w.fetch_or(bits, Ordering::Release);
        }
    }

    /// Whether `page` is currently marked (a racy snapshot, for tests and statistics).
    pub fn is_marked(&self, page: usize) -> bool {
        page < self.pages
            && self
                .words
                .get(page / PAGES_PER_WORD)
                .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (page % PAGES_PER_WORD)) != 0)
    }

    /// Takes and clears the bits of word `i` in one atomic step (0 if out of range).
    #[inline]
    pub fn harvest_word(&self, i: usize) -> u64 {
        let Some(w) = self.words.get(i) else {
            return 0;
        };
        #[cfg(not(loom_broken))]
        {
            w.swap(0, Ordering::Acquire)
        }
        #[cfg(loom_broken)]
        {
            racy_take(w)
        }
    }

    /// The deliberately wrong harvest: `load` then `store(0)`. A mark landing between the two
    /// is cleared without being returned. Only compiled for the loom model tests, which must
    /// catch it.
    #[cfg(any(loom, loom_broken))]
    #[doc(hidden)]
    pub fn harvest_word_racy(&self, i: usize) -> u64 {
        self.words.get(i).map_or(0, racy_take)
    }

    /// Harvests a round into `out` (one word per bitmap word, same layout) and returns the
    /// number of dirty pages in it. Returns [`ErrorKind::BufferTooSmall`] (harvesting nothing)
    /// if `out` is shorter than [`DirtyLog::words`].
    pub fn harvest(&self, out: &mut [u64]) -> Result<usize, Error> {
        let capacity = out.len();
        let out = out.get_mut(..self.words.len()).ok_or(Error::new(
            0,
            ErrorKind::BufferTooSmall {
                needed: self.words.len(),
                capacity,
            },
        ))?;
        let mut n: usize = 0;
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.harvest_word(i);
            n = n.saturating_add(o.count_ones() as usize);
        }
        Ok(n)
    }
}

#[cfg(any(loom, loom_broken))]
fn racy_take(w: &AtomicU64) -> u64 {
    let v = w.load(Ordering::Acquire);
    w.store(0, Ordering::Relaxed);
    v
}

/// The page numbers set in a harvested bitmap, in ascending order.
pub fn dirty_pages(bitmap: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bitmap.iter().enumerate().flat_map(|(i, &w)| {
        let mut bits = w;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let b = bits.trailing_zeros() as usize;
            // Clears the lowest set bit (`bits` is not 0 here).
            bits &= bits.wrapping_sub(1);
            Some(i.saturating_mul(PAGES_PER_WORD).saturating_add(b))
        })
    })
}

/// What [`encode_round`] wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundStats {
    /// Pages sent as ZERO records.
    pub zero: usize,
    /// Pages sent as PAGE records.
    pub full: usize,
}

/// Writes the pages of a harvested `bitmap` of block `block` as RAM records (ZERO or PAGE),
/// ascending, without EOS. `read_page(page, buf)` copies the page's current contents into the
/// 4096-byte `buf` (the caller's guest memory may be atomics, so the copy is the caller's).
pub fn encode_round<'n, S: Sink>(
    w: &mut RamWriter<'n>,
    block: &'n [u8],
    bitmap: &[u64],
    mut read_page: impl FnMut(usize, &mut [u8; PAGE_SIZE]),
    out: &mut S,
) -> Result<RoundStats, S::Error> {
    let mut stats = RoundStats::default();
    let mut page = [0u8; PAGE_SIZE];
    for p in dirty_pages(bitmap) {
        read_page(p, &mut page);
        let offset = (p as u64).saturating_mul(PAGE_SIZE as u64);
        if crate::ram::is_zero(&page) {
            w.zero(block, offset, out)?;
            stats.zero = stats.zero.saturating_add(1);
        } else {
            w.page(block, offset, &page, out)?;
            stats.full = stats.full.saturating_add(1);
        }
    }
    Ok(stats)
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    use super::*;
    use crate::ram::{RamContext, RamOptions, RamRecord};
    use crate::sink::SliceSink;
    use crate::wire::Reader;

    #[test]
    fn mark_harvest_and_range() {
        let words: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
        assert!(DirtyLog::new(&words, 129).is_err());
        let log = DirtyLog::new(&words, 100).unwrap();
        assert!(log.mark(0) && log.mark(63) && log.mark(64) && log.mark(99));
        assert!(!log.mark(100));
        assert!(log.is_marked(63) && !log.is_marked(62));
        let mut out = [0u64; 2];
        assert_eq!(log.harvest(&mut out).unwrap(), 4);
        assert_eq!(
            dirty_pages(&out)
                .collect::<heapless::Vec<_, 8>>()
                .as_slice(),
            &[0, 63, 64, 99]
        );
        assert_eq!(log.harvest(&mut out).unwrap(), 0);
        assert!(log.harvest(&mut [0u64; 1]).is_err());
        log.mark_all();
        assert_eq!(log.harvest(&mut out).unwrap(), 100);
        assert_eq!(out[1], (1 << 36) - 1);
    }

    #[test]
    fn round_encodes_zero_and_page_records() {
        let words = [AtomicU64::new(0)];
        let log = DirtyLog::new(&words, 4).unwrap();
        log.mark(1);
        log.mark(3);
        let mut bm = [0u64; 1];
        log.harvest(&mut bm).unwrap();
        let mut buf = [0xa5u8; 2 * 4200];
        let mut s = SliceSink::new(&mut buf);
        let mut w = RamWriter::new();
        let stats = encode_round(
            &mut w,
            b"pc.ram",
            &bm,
            |p, b| b.fill(if p == 3 { 7 } else { 0 }),
            &mut s,
        )
        .unwrap();
        w.eos(&mut s).unwrap();
        assert_eq!(stats, RoundStats { zero: 1, full: 1 });
        let n = s.finish();
        // ZERO 0x1000 naming the block, then PAGE|CONTINUE 0x3000.
        assert_eq!(&buf[..16], b"\0\0\0\0\0\0\x10\x02\x06pc.ram\0");
        assert_eq!(&buf[16..24], &[0, 0, 0, 0, 0, 0, 0x30, 0x28]);
        let mut ctx = RamContext::new(RamOptions::default());
        let list = b"\0\0\0\0\0\0\x40\x04\x06pc.ram\0\0\0\0\0\0\x40\x00";
        ctx.read_record(&mut Reader::new(list, 0)).unwrap();
        let mut r = Reader::new(&buf[..n], 0);
        assert!(matches!(
            ctx.read_record(&mut r).unwrap(),
            RamRecord::Zero { offset: 0x1000, .. }
        ));
        assert!(matches!(
            ctx.read_record(&mut r).unwrap(),
            RamRecord::Page { offset: 0x3000, data, continued: true, .. } if data == [7; 4096]
        ));
        assert_eq!(ctx.read_record(&mut r).unwrap(), RamRecord::Eos);
    }
}
