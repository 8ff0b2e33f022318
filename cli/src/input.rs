//! Input files, memory-mapped so that a multi-GiB stream is never copied into memory, and a
//! progress line for long walks.
//!
//! A mapped file still becomes resident as it is read. Walks over the input call
//! [`Input::release_before`] with the offset they reached, which drops the mapping's pages
//! behind that point from this process (they are read back from the page cache or the file if
//! touched again), so resident memory stays bounded by the largest single record plus the
//! decoded model, not by the file size.
//!
//! The two calls into `memmap2` that the compiler cannot check are the only `unsafe` code of
//! the crate; each states why it is sound for this read-only tool.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Granularity of [`Input::release_before`].
const RELEASE_STEP: usize = 8 << 20;

/// A read-only view of an input file.
#[derive(Debug)]
pub struct Input {
    map: Option<memmap2::Mmap>,
    released: Cell<usize>,
}

impl Input {
    /// Maps `path` read-only (an empty file is an empty input).
    pub fn open(path: &Path) -> io::Result<Input> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let map = if len == 0 { None } else { Some(map(&file)?) };
        Ok(Input {
            map,
            released: Cell::new(0),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Tells the kernel that the bytes before `offset` are not needed for now: their pages
    /// leave this process's resident set (later reads fault them back in). Called with
    /// increasing offsets during one pass; an offset behind the last one starts a new pass.
    pub fn release_before(&self, offset: usize) {
        let Some(m) = &self.map else { return };
        let from = self.released.get();
        let to = offset.min(m.len()) & !(RELEASE_STEP - 1);
        if to < from {
            // A new pass over the input (e.g. writing after parsing) started behind the last
            // release point: release from here on again.
            self.released.set(to);
        } else if to > from {
            release(m, from, to - from);
            self.released.set(to);
        }
    }
}

// SAFETY (both functions below): `memmap2` marks mapping a file `unsafe` because the mapping
// aliases the file, and another process that truncates or writes the file while we read it
// would change (or, for truncation, unmap with SIGBUS) memory Rust treats as immutable. This
// tool only reads: a concurrently modified input can make it report garbage or die with
// SIGBUS, exactly like any reader of a file being overwritten, but it cannot make the tool
// write anywhere. Inputs are migration streams an operator points the tool at, not files
// another process is expected to change underneath it.
#[allow(unsafe_code)]
fn map(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: see the comment above; the mapping is read-only and shared.
    let m = unsafe { memmap2::Mmap::map(file)? };
    // Walks are front to back.
    let _ = m.advise(memmap2::Advice::Sequential);
    Ok(m)
}

// `MADV_DONTNEED` is `unsafe` in memmap2 because on a private or anonymous mapping it
// discards data (the next read sees zeros or the file's contents). This mapping is a shared,
// read-only file mapping: there is no private copy to lose, and the next read faults in the
// same file contents, so every `&[u8]` into the mapping stays valid and unchanged.
#[allow(unsafe_code)]
fn release(m: &memmap2::Mmap, offset: usize, len: usize) {
    // SAFETY: shared read-only file mapping (see above); advice failure only costs memory.
    let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
}

/// A `\r`-updated percentage line on stderr, shown only when stderr is a terminal and at most
/// ten times a second.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: usize,
    enabled: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// A progress line for an operation over `total` bytes.
    pub fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            enabled: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    /// Reports that `done` bytes are processed.
    pub fn update(&mut self, done: usize) {
        if !self.enabled || self.total == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let pct = (done.min(self.total) as u128 * 100 / self.total as u128) as u32;
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{}: {pct:3}%", self.label);
        let _ = e.flush();
        self.shown = true;
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{:width$}\r", "", width = self.label.len() + 6);
            let _ = e.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
