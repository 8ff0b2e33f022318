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
//! # Features and costs
//!
//! * `caps` (default): the serde derives of [`v4::caps::Capabilities`] and its postcard
//!   encoding, for exchanging capabilities with a destination. A firmware that never exchanges
//!   them turns it off (`default-features = false`) and builds neither serde nor postcard;
//!   [`v4::caps::check`] stays.
//! * `defmt`: `defmt::Format` for the error and record types.
//!
//! [`embedded_io`] (0.7) is re-exported for [`IoSink`] and [`io::StreamReader`]. What each
//! type a firmware keeps on its stack costs is in [`sizes`].
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
//! length ([`v4::crc32c`]); test modules, where a panic is a failed test.
//!
//! Not yet under the lints (the `#[allow]` on their `mod` lines below):
//! [`body`], [`planned`] and [`schema`] (the body codec and its const-fn table compiler, whose
//! hot loops index plans whose bounds the compiler proved; issue 14 unified their encode side
//! but not yet their load side). Everything else — [`machine`], [`stream`], [`io`], [`wire`],
//! [`sink`], [`writer`], [`ram`], [`vmdesc`], `v4::{caps, minor, load, convert, wire}` — is
//! under them.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod body;
mod copy;
// The dirty log and the snapshot cell need 64-bit atomics (x86_64, aarch64, …); Cortex-M4 has
// none, and firmware does not track dirty guest memory.
#[cfg(any(target_has_atomic = "64", loom))]
pub mod dirty;
pub mod error;
pub mod io;
pub mod machine;
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod planned;
pub mod ram;
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
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

/// The `embedded-io` crate (version 0.7) whose `Write` [`IoSink`] writes to and whose `Read`
/// [`io::StreamReader`] reads from: implement these traits through this re-export and the
/// versions cannot disagree (another major version's traits would not be these).
pub use embedded_io;
pub use error::{
    Error, ErrorKind, Escaped, Expected, Name, RecordPosition, Result, SectionContext, Violation,
};
pub use machine::{Machine, SectionHead, Step};
pub use schema::{Field, Kind, Scalar, Subsection, VendorId, VendorTag, Vmsd};
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

/// [`encode_section_into`] through the plans (see `planned`), or `None`.
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
    n = n.checked_add(body::encode_planned_into(vmsd, state, buf.get_mut(n..)?)?)?;
    let footer = footer_bytes(id.section_id);
    buf.get_mut(n..n.checked_add(footer.len())?)?
        .copy_from_slice(&footer);
    n.checked_add(footer.len())
}

/// Encodes just the body (fields and needed subsections) of a typed state into `buf`.
#[inline]
pub fn encode_body_into<T: State>(state: &T, buf: &mut [u8]) -> Result<usize> {
    // The planned steps first (straight-line code for a device's constant table); the general
    // path from the start when they decline, which writes the same bytes or the exact error.
    if let Some(n) = body::encode_planned_into(T::VMSD, state.as_bytes(), buf) {
        return Ok(n);
    }
    let mut sink = SliceSink::new(buf);
    body::encode_body(T::VMSD, state.as_bytes(), &mut sink)?;
    Ok(sink.finish())
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
        // The planned path first (straight-line code when `vmsd` is a device's constant table).
        && !planned::load(vmsd, version, body, out.as_mut_bytes())
    {
        // Not the planned case: start again from `init` on the general path (the same state,
        // or the exact error).
        copy::copy(out.as_mut_bytes(), init.as_bytes());
        if let Err(e) = decode_general(vmsd, version, body, base, out.as_mut_bytes()) {
            res = Err(e);
        }
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

/// The general path of [`decode_with`] into `state` (a copy of the initial state).
#[inline(never)]
fn decode_general(
    vmsd: &Vmsd,
    version: u32,
    body: &[u8],
    base: usize,
    state: &mut [u8],
) -> Result<()> {
    let mut r = wire::Reader::new(body, base);
    body::decode_body(vmsd, version, &mut r, state)?;
    if let Some(b) = r.peek(0) {
        // QEMU: "Missing section footer" — the body holds bytes the description does not.
        return Err(r.error(ErrorKind::MissingFooter { found: b }));
    }
    Ok(())
}

/// Generates [`sizes`]' table from one list, and its checks: a unit test on 64-bit hosts and a
/// compile-time assertion on 32-bit targets (the firmware's), so the documented numbers
/// cannot go stale.
macro_rules! sizes {
    ($( $name:literal $t:ty = $b64:literal, $b32:literal, $what:literal; )*) => {
        /// The sizes of the types a firmware keeps on its stack, in bytes, on 64-bit targets
        /// (x86_64, aarch64) and 32-bit ones (thumbv7em): what a call that returns one, or a
        /// frame that holds one, costs. Checked by a test (64-bit) and at compile time
        /// (32-bit), so the table is the truth.
        ///
        /// | Type | 64-bit | 32-bit | What |
        /// |---|---:|---:|---|
        #[doc = concat!($( "| ", $name, " | ", stringify!($b64), " | ", stringify!($b32),
            " | ", $what, " |\n", )*)]
        ///
        /// Working buffers are the caller's (`&mut [u8]`), so they are not in these numbers;
        /// [`IoSink`] adds its writer, two `usize` and its `N`-byte buffer.
        pub mod sizes {}

        #[cfg(target_pointer_width = "32")]
        const _: () = {
            $( assert!(
                core::mem::size_of::<$t>() == $b32,
                concat!("the 32-bit size of ", stringify!($t), " in `sizes` is stale")
            ); )*
        };

        #[cfg(all(test, target_pointer_width = "64"))]
        #[test]
        fn documented_sizes_are_current() {
            extern crate std;
            let mut stale = std::vec::Vec::new();
            $( if core::mem::size_of::<$t>() != $b64 {
                stale.push(std::format!(
                    "{}: documented {}, is {}",
                    stringify!($t),
                    $b64,
                    core::mem::size_of::<$t>()
                ));
            } )*
            assert!(stale.is_empty(), "stale sizes in `sizes`: {stale:#?}");
        }
    };
}

sizes! {
    "[`Error`]" Error = 104, 80,
        "returned by every fallible call; why not smaller: its docs";
    "[`v4::Error`]" v4::Error = 112, 104, "returned by the v4 layer";
    "[`Records`]`<FooterScan>`" Records<'static, stream::FooterScan> = 1672, 1304,
        "the record iterator: its [`Machine`] tracks up to [`machine::MAX_OPEN_SECTIONS`] \
         open sections";
    "[`Machine`]`<FooterScan>`" Machine<stream::FooterScan> = 1320, 1112,
        "the sans-IO stream machine";
    "[`io::Decoder`]`<FooterScan>`" io::Decoder<'static, stream::FooterScan> = 6096, 5824,
        "the push decoder: its machine keeps each open section's idstr by value (255 bytes \
         each, [`machine::IdstrBuf`]), as the working buffer (the caller's) is reused";
    "[`writer::StreamWriter`]`<SliceSink>`" writer::StreamWriter<'static, SliceSink<'static>>
        = 40, 20, "the v3 stream writer";
    "[`SliceSink`]" SliceSink<'static> = 24, 12, "a caller-slice sink";
    "[`v4::wire::Records4`]" v4::wire::Records4<'static> = 1608, 1256,
        "the v4 record iterator";
    "[`v4::caps::Capabilities`] (defaults)" v4::caps::Capabilities<'static> = 2736, 1760,
        "32 devices, 64 subsection names";
    "[`v4::caps::SectionRequirement`]" v4::caps::SectionRequirement<'static> = 1080, 680,
        "room for the 32 top-level subsections one section may carry";
    "[`v4::caps::Report`]`<8>`" v4::caps::Report<'static, 8> = 656, 360,
        "eight incompatibilities";
}

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
