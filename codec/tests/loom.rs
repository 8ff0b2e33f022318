//! loom model tests for the dirty log and the snapshot cell.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p vmstate --release --test loom
//! ```
//!
//! Each correct model must pass, and each deliberately broken variant (a harvest written as
//! load + store, a reader that skips the sequence check) must be caught: the `*_is_caught`
//! tests run the broken model under `loom::model` and assert that loom found a failing
//! interleaving. Building with `--cfg loom_broken` as well switches the shipped harvest to the
//! broken one, and then `dirty_log_loses_no_mark` itself fails.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::AtomicU64;
use loom::thread;
use vmstate::dirty::DirtyLog;
use vmstate::snapshot::SnapshotCell;
use zerocopy::{FromBytes, Immutable, IntoBytes};

fn bounded() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

/// Two writers mark pages (one of them the same word twice, around the harvest), the migration
/// thread harvests one round concurrently; after the writers stop, a final harvest. Every mark
/// must be in exactly one of the two rounds.
fn dirty_model(racy: bool) {
    bounded().check(move || {
        let words: Arc<[AtomicU64; 1]> = Arc::new([AtomicU64::new(0)]);
        let w1 = {
            let words = words.clone();
            thread::spawn(move || {
                let log = DirtyLog::new(&words[..], 64).unwrap();
                log.mark(1);
                log.mark(2);
            })
        };
        let w2 = {
            let words = words.clone();
            thread::spawn(move || {
                let log = DirtyLog::new(&words[..], 64).unwrap();
                log.mark(5);
            })
        };
        let log = DirtyLog::new(&words[..], 64).unwrap();
        let take = |log: &DirtyLog<'_>| {
            if racy {
                log.harvest_word_racy(0)
            } else {
                log.harvest_word(0)
            }
        };
        let round1 = take(&log);
        w1.join().unwrap();
        w2.join().unwrap();
        let round2 = take(&log);
        assert_eq!(round1 & round2, 0, "a mark was harvested twice");
        assert_eq!(
            round1 | round2,
            (1 << 1) | (1 << 2) | (1 << 5),
            "a mark was lost: round1 {round1:#x} round2 {round2:#x}"
        );
    });
}

#[test]
fn dirty_log_loses_no_mark() {
    dirty_model(false);
}

/// Runs a model that must fail and returns its panic message.
fn must_fail(model: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(model).expect_err("loom found no failing interleaving");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn racy_harvest_is_caught() {
    let msg = must_fail(|| dirty_model(true));
    assert!(msg.contains("a mark was lost"), "{msg}");
}

#[derive(FromBytes, IntoBytes, Immutable, Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Dev {
    a: [u8; 8],
    b: [u8; 8],
}

impl Dev {
    fn of(k: u8) -> Dev {
        Dev {
            a: [k; 8],
            b: [k; 8],
        }
    }
}

/// The owner writes two new values while the migration thread takes a copy: the copy must be
/// one of the three values whole, never half of one and half of another.
fn snapshot_model(checked: bool) {
    bounded().check(move || {
        let cell: Arc<SnapshotCell<Dev, 2>> = Arc::new(SnapshotCell::new(&Dev::of(0)));
        let owner = {
            let cell = cell.clone();
            thread::spawn(move || {
                cell.write(&Dev::of(1));
                cell.write(&Dev::of(2));
            })
        };
        let v = if checked {
            cell.read()
        } else {
            cell.read_unchecked()
        };
        assert_eq!(v.a, v.b, "torn snapshot {v:?}");
        assert!(v.a[0] <= 2);
        owner.join().unwrap();
        assert_eq!(cell.read(), Dev::of(2));
    });
}

#[test]
fn snapshot_is_never_torn() {
    snapshot_model(true);
}

#[test]
fn unchecked_snapshot_is_caught() {
    let msg = must_fail(|| snapshot_model(false));
    assert!(msg.contains("torn snapshot"), "{msg}");
}
