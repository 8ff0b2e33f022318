//! A seqlock cell: torn-free copies of a device state that its owner keeps updating.
//!
//! During live migration a device keeps running on its owner thread while the migration thread
//! wants a consistent copy of its state. [`SnapshotCell`] holds the state's bytes in `W` atomic
//! words plus a sequence counter, odd while a write is in progress:
//!
//! * the writer moves the counter from even `s` to `s + 1` (a compare-exchange, so two writers
//!   exclude each other), stores the words with `Release`, then stores `s + 2` with `Release`;
//! * a reader loads the counter with `Acquire` (retrying while odd), loads the words with
//!   `Acquire`, and loads the counter again: equal means no write overlapped the copy.
//!
//! Why that suffices: if a word load returns a value of a later write, that `Release` store
//! synchronises with the `Acquire` load, so the later write's odd counter store is visible to the
//! second counter load and the copy is thrown away. If the first load saw `s + 2` of a finished
//! write, every word store of that write is visible. The payload lives in atomics (never an
//! `UnsafeCell` read racing a write), which is what loom can check and what `forbid(unsafe_code)`
//! allows.

use crate::sync::{AtomicU64, Ordering, spin_loop};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A seqlock over a `T` stored in `W` 64-bit words (`W * 8 >= size_of::<T>()`, checked at
/// compile time).
#[derive(Debug)]
pub struct SnapshotCell<T, const W: usize> {
    seq: AtomicU64,
    words: [AtomicU64; W],
    _t: core::marker::PhantomData<fn() -> T>,
}

impl<T: FromBytes + IntoBytes + Immutable, const W: usize> SnapshotCell<T, W> {
    const FITS: () = assert!(
        core::mem::size_of::<T>() <= W * 8,
        "SnapshotCell: W words cannot hold T"
    );

    /// A cell holding `value`.
    pub fn new(value: &T) -> Self {
        let () = Self::FITS;
        let cell = SnapshotCell {
            seq: AtomicU64::new(0),
            words: core::array::from_fn(|_| AtomicU64::new(0)),
            _t: core::marker::PhantomData,
        };
        cell.store_words(value);
        cell
    }

    fn store_words(&self, value: &T) {
        let mut chunks = value.as_bytes().chunks(8);
        for w in &self.words {
            let mut word = [0u8; 8];
            for (d, s) in word.iter_mut().zip(chunks.next().unwrap_or_default()) {
                *d = *s;
            }
            w.store(u64::from_ne_bytes(word), Ordering::Release);
        }
    }

    /// Replaces the value. Writers exclude each other; readers never see a half-written value.
    pub fn write(&self, value: &T) {
        let s = loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(
                        s,
                        s.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                break s;
            }
            spin_loop();
        };
        self.store_words(value);
        // A sequence number wraps (after 2^63 writes): only equality and parity are read.
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// One attempt at a consistent copy: `None` if a write was in progress or overlapped.
    pub fn try_read(&self) -> Option<T> {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 {
            return None;
        }
        let copy = self.load_words();
        let s2 = self.seq.load(Ordering::Relaxed);
        if s1 == s2 { copy } else { None }
    }

    /// A consistent copy, retrying while writes overlap. It returns as soon as the owner leaves
    /// the cell alone for the length of one copy.
    pub fn read(&self) -> T {
        loop {
            if let Some(v) = self.try_read() {
                return v;
            }
            spin_loop();
        }
    }

    /// The deliberately wrong reader: copies the words without checking the counter. Only
    /// compiled for the loom model tests, which must see it return torn values.
    #[cfg(any(loom, loom_broken))]
    #[doc(hidden)]
    pub fn read_unchecked(&self) -> T {
        loop {
            if let Some(v) = self.load_words() {
                return v;
            }
        }
    }

    /// Number of completed writes (for statistics).
    pub fn version(&self) -> u64 {
        self.seq.load(Ordering::Acquire) / 2
    }

    fn load_words(&self) -> Option<T> {
        let mut buf = [[0u8; 8]; W];
        for (b, w) in buf.iter_mut().zip(&self.words) {
            *b = w.load(Ordering::Acquire).to_ne_bytes();
        }
        // Some bit patterns may not be a `T` only if `T` is not `FromBytes`; it is, so this
        // never fails, but the error path is kept instead of an unwrap.
        T::read_from_prefix(buf.as_flattened()).ok().map(|(v, _)| v)
    }
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[derive(FromBytes, IntoBytes, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
    #[repr(C)]
    struct Pic {
        regs: [u8; 19],
    }

    #[test]
    fn round_trip_and_version() {
        let c: SnapshotCell<Pic, 3> = SnapshotCell::new(&Pic { regs: [3; 19] });
        assert_eq!(c.read(), Pic { regs: [3; 19] });
        c.write(&Pic { regs: [9; 19] });
        assert_eq!(c.try_read(), Some(Pic { regs: [9; 19] }));
        assert_eq!(c.version(), 1);
    }

    #[test]
    fn threads_never_see_a_torn_value() {
        let c: Arc<SnapshotCell<Pic, 3>> = Arc::new(SnapshotCell::new(&Pic { regs: [0; 19] }));
        let stop = Arc::new(AtomicBool::new(false));
        let w = {
            let (c, stop) = (c.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 0u8;
                while !stop.load(core::sync::atomic::Ordering::Relaxed) {
                    k = k.wrapping_add(1);
                    c.write(&Pic { regs: [k; 19] });
                }
            })
        };
        for _ in 0..20_000 {
            let v = c.read();
            assert!(v.regs.iter().all(|&b| b == v.regs[0]), "{v:?}");
        }
        stop.store(true, core::sync::atomic::Ordering::Relaxed);
        w.join().unwrap();
    }
}
