//! The atomics the concurrent parts of the codec use ([`crate::dirty`], [`crate::snapshot`]).
//!
//! Normally these are `core::sync::atomic`; under `--cfg loom` they are loom's checked
//! versions, so the model tests in `codec/tests/loom.rs` explore every interleaving of the
//! same code that ships. Nothing else in the crate may name `core::sync::atomic` directly.

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Tells the processor (or loom's scheduler) that the caller is waiting on another thread.
#[inline]
pub fn spin_loop() {
    #[cfg(not(loom))]
    core::hint::spin_loop();
    #[cfg(loom)]
    loom::hint::spin_loop();
}
