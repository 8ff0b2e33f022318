//! `vmstate`: a `no_std`, allocation-free codec for QEMU's savevm/migration stream.
//!
//! * [`wire`]: zero-copy views over stream records (file header, configuration, section headers
//!   and footers, subsections, commands, the VMDESCRIPTION trailer).
//! * [`schema`]: const description tables (QEMU's `VMStateDescription`), checked against the
//!   zerocopy state struct at compile time.
//! * [`body`]: the table-driven body encoder and decoder (version gating, predicates, nested
//!   structs, variable arrays, subsections).
//! * [`machine`]: the sans-IO stream machine every reader is built on; [`stream`]: a record
//!   iterator over it that walks a whole stream, yielding borrowed slices.
//! * [`ram`]: the `ram` section's records (block list, ZERO/PAGE/XBZRLE, EOS).
//! * [`vmdesc`]: the VMDESCRIPTION JSON writer; [`writer`]: a whole-stream writer.
//! * [`io`]: streaming encode/decode over `embedded_io` with a fixed working buffer;
//!   [`dirty`]: the lock-free dirty-page log; [`snapshot`]: a seqlock cell for device state.
//! * [`v4`]: vmstate v4 (`docs/FORMAT.md`): vendor chain and minors, framed records and
//!   subsections, CRC-32C, v3 ↔ v4 conversion, capabilities and the migratability check.
//! * [`State`], [`load`], [`encode_section`]: the typed layer devices use.
//!
//! Contract for every decoder in this crate: no input can make it panic, read out of bounds or
//! loop without consuming input; errors carry the absolute byte offset, the section and the
//! field. Nothing allocates.
//!
//! # The no-panic lints
//!
//! The contract is backed by `clippy::indexing_slicing` (no `a[i]`, `a[i..j]`: bounds are
//! checked with `get`, `split_at_checked`, `chunks_exact`, …) and
//! `clippy::arithmetic_side_effects` (no `+`, `-`, `*` that can overflow: `checked_*` where
//! overflow is an error the input caused, `saturating_*` where a bound proven earlier makes
//! it unreachable, `wrapping_*` where wrapping is the meaning, e.g. a seqlock's counter).
//! Both are denied for the whole crate, so a new module is under them from its first line.
//!
//! Where they do not fit, the exception is an `#[allow(…, reason = "…")]` on the one item
//! it covers: the CRC-32C tables are built by a `const fn` at compile time, and its hot loop
//! indexes 256-entry tables with a `u8` and `chunks_exact` steps with offsets below the step
//! length ([`v4::crc32c`]); the table compiler and checker of [`schema`] (`const fn`s run on
//! table constants, where `get` and iterators are not callable and an index or a sum out of
//! range is a compile error); test modules, where a panic is a failed test.
//!
//! Not yet under the lints (the `#[allow]` on their `mod` lines in [`v4`]): `v4::{wire,
//! convert}` (the v4 reader and the v3 ↔ v4 converter). Everything else — [`body`],
//! [`schema`], [`machine`], [`stream`], [`io`], [`wire`], [`sink`], [`writer`], [`ram`],
//! [`vmdesc`], `v4::{caps, minor, load}` — is under them.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod body;
mod copy;
// The dirty log and the snapshot cell need 64-bit atomics (x86_64, aarch64, …); Cortex-M4 has
// none, and firmware does not track dirty guest memory.
#[cfg(any(target_has_atomic = "64", loom))]
pub mod dirty;
pub mod error;
pub mod io;
pub mod machine;
pub mod ram;
pub mod schema;
pub mod sink;
#[cfg(any(target_has_atomic = "64", loom))]
pub mod snapshot;
pub mod stream;
#[cfg(any(target_has_atomic = "64", loom))]
pub mod sync;
pub mod v4;
pub mod vmdesc;
pub mod wire;
pub mod writer;

pub use error::{
    Error, ErrorKind, Escaped, Expected, Name, RecordPosition, Result, SectionContext, Violation,
};
pub use machine::{Machine, SectionHead, Step};
pub use schema::{Field, Kind, Scalar, Subsection, VendorTag, Vmsd};
pub use sink::{CountingSink, IoError, IoSink, Sink, SliceSink};
pub use stream::{Record, Records, SectionRecord};
#[doc(hidden)]
pub use zerocopy;

use wire::section::{SectionHeaderRepr, SectionKind, footer_bytes};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The byte a NULL element of a pointer array is written as (`VMS_NULLPTR_MARKER`, ASCII `0`).
pub const NULL_PTR_MARKER: u8 = 0x30;

/// A device state struct and its description table.
///
/// The struct is `#[repr(C)]` zerocopy over bytes; `VMSD` describes it (checked at compile time
/// with [`assert_layout!`]).
pub trait State: FromBytes + IntoBytes + KnownLayout + Immutable + Sized {
    /// The top-level description.
    const VMSD: &'static Vmsd;
}

/// Identifies a section instance on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionId<'a> {
    /// Section id (registration order in QEMU).
    pub section_id: u32,
    /// idstr (the vmsd name, possibly with a qdev path prefix).
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
}

/// The FULL section header of `id` for `vmsd` at its current version.
#[inline(always)]
fn full_header<'a>(id: SectionId<'a>, vmsd: &Vmsd) -> SectionHeaderRepr<'a> {
    SectionHeaderRepr {
        kind: SectionKind::Full,
        section_id: id.section_id,
        idstr: id.idstr,
        instance_id: id.instance_id,
        version_id: vmsd.version_id,
    }
}

/// Encodes a FULL section (header, body at the current version, needed subsections, footer) of
/// `state` described by `vmsd`.
pub fn encode_section_raw<S: Sink>(
    id: SectionId<'_>,
    vmsd: &Vmsd,
    state: &[u8],
    out: &mut S,
) -> core::result::Result<(), S::Error> {
    full_header(id, vmsd).emit(out)?;
    body::encode_body(vmsd, state, out)?;
    out.write(&footer_bytes(id.section_id))
}

/// Encodes a FULL section of a typed state.
pub fn encode_section<T: State, S: Sink>(
    id: SectionId<'_>,
    state: &T,
    out: &mut S,
) -> core::result::Result<(), S::Error> {
    encode_section_raw(id, T::VMSD, state.as_bytes(), out)
}

/// Encodes a FULL section of a typed state into `buf`, returning the bytes used.
#[inline]
pub fn encode_section_into<T: State>(
    id: SectionId<'_>,
    state: &T,
    buf: &mut [u8],
) -> Result<usize> {
    if let Some(n) = encode_section_planned(id, T::VMSD, state.as_bytes(), buf) {
        return Ok(n);
    }
    let mut sink = SliceSink::new(buf);
    encode_section(id, state, &mut sink)?;
    Ok(sink.finish())
}

/// [`encode_section_into`] through the inlined runner ([`body::encode_planned`]), or `None`.
#[inline(always)]
fn encode_section_planned(
    id: SectionId<'_>,
    vmsd: &Vmsd,
    state: &[u8],
    buf: &mut [u8],
) -> Option<usize> {
    let mut head = SliceSink::new(buf);
    full_header(id, vmsd).emit(&mut head).ok()?;
    let mut n = head.finish();
    n = n.checked_add(body::encode_planned(vmsd, state, buf.get_mut(n..)?)?)?;
    let footer = footer_bytes(id.section_id);
    buf.get_mut(n..n.checked_add(footer.len())?)?
        .copy_from_slice(&footer);
    n.checked_add(footer.len())
}

/// Encodes just the body (fields and needed subsections) of a typed state into `buf`.
#[inline]
pub fn encode_body_into<T: State>(state: &T, buf: &mut [u8]) -> Result<usize> {
    body::encode_typed(T::VMSD, state.as_bytes(), buf)
}

/// A zero-copy view of a current-version body as the struct `B` that is its exact wire layout
/// (a device's body struct, checked with `assert_layout!(…, body = B)`). The body may carry
/// subsections after the fields; they are not part of the view.
pub fn view<B: FromBytes + KnownLayout + Immutable + zerocopy::Unaligned>(
    body: &[u8],
    base: usize,
) -> Result<&B> {
    B::ref_from_prefix(body).map(|(b, _)| b).map_err(|_| {
        Error::new(
            base.saturating_add(body.len()),
            ErrorKind::Truncated {
                needed: core::mem::size_of::<B>().saturating_sub(body.len()),
                available: 0,
            },
        )
    })
}

/// Loads a section body of `version` into `state`.
///
/// The body is decoded into a staging copy (on the stack) that replaces `state` only when the
/// whole body, its subsections and the device invariants passed and the body was consumed
/// exactly: a failed load changes nothing. `base` is the absolute offset of `body[0]` for errors.
#[inline(always)]
pub fn load<T: State>(state: &mut T, version: u32, body: &[u8], base: usize) -> Result<()> {
    load_with(T::VMSD, state, version, body, base)
}

/// [`load`] with a description of the same struct other than `T::VMSD`, e.g. a device's
/// permissive table that enforces only the memory-safety invariants. `vmsd.size` must be the
/// struct's size (otherwise an error, never a partial load).
#[inline(always)]
pub fn load_with<T: State>(
    vmsd: &Vmsd,
    state: &mut T,
    version: u32,
    body: &[u8],
    base: usize,
) -> Result<()> {
    let staged = decode_with(vmsd, state, version, body, base)?;
    copy::copy(state.as_mut_bytes(), staged.as_bytes());
    Ok(())
}

/// Loads a FULL/START section record from the stream iterator into `state`, adding the section
/// context to errors. The record's idstr is not checked here (the caller routes by idstr).
pub fn load_section<T: State>(state: &mut T, rec: &SectionRecord<'_>) -> Result<()> {
    load(state, rec.version_id, rec.body, rec.body_offset).map_err(|e| e.in_section(rec.context()))
}

/// Decodes a body into a fresh copy of `init` and returns it (for callers that do not keep a
/// live state). `init` provides the destination values for `_EQUAL` fields and configuration.
#[inline(always)]
pub fn decode<T: State>(init: &T, version: u32, body: &[u8], base: usize) -> Result<T> {
    decode_with(T::VMSD, init, version, body, base)
}

/// [`decode`] with another description of the same struct (see [`load_with`]).
#[inline(always)]
pub fn decode_with<T: State>(
    vmsd: &Vmsd,
    init: &T,
    version: u32,
    body: &[u8],
    base: usize,
) -> Result<T> {
    // One value, built in place and returned as is (no copy of a large state on return).
    // `T: FromBytes + IntoBytes` makes the first copy infallible; keep it an error, never a
    // panic.
    let mut res = if core::mem::size_of::<T>() < copy::LARGE {
        T::read_from_bytes(init.as_bytes()).map_err(|_| size_error::<T>(vmsd, base))
    } else {
        // Large states: a copy that does not depend on where the two sit (see `copy`).
        let mut t = T::new_zeroed();
        copy::copy(t.as_mut_bytes(), init.as_bytes());
        Ok(t)
    };
    if let Ok(out) = &mut res
        && let Err(e) = body::decode_typed(vmsd, version, body, base, out.as_mut_bytes())
    {
        res = Err(e);
    }
    res
}

#[cold]
fn size_error<T>(vmsd: &Vmsd, base: usize) -> Error {
    Error::new(
        base,
        ErrorKind::BufferTooSmall {
            needed: vmsd.size,
            capacity: core::mem::size_of::<T>(),
        },
    )
}

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
