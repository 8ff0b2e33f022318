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
//! * [`memory`]: guest RAM out of a stream: a page index (8 bytes per page, the caller's) built
//!   in one pass, reads of any guest range, and the PC machines' guest-physical layout.
//! * [`vmdesc`]: the VMDESCRIPTION JSON writer; [`writer`]: a whole-stream writer.
//! * [`io`]: streaming encode/decode over `embedded_io` with a fixed working buffer;
//!   [`dirty`]: the lock-free dirty-page log; [`snapshot`]: a seqlock cell for device state.
//! * [`v4`]: vmstate v4 (`docs/FORMAT.md`): vendor chain and minors, framed records and
//!   subsections, CRC-32C, v3 ↔ v4 conversion, capabilities and the migratability check.
//! * [`State`], [`encode_section_into`] / [`load_section`] (one section's bytes),
//!   [`load`] (a body), [`load_record`] (a section of [`Records`]): the typed layer devices use;
//!   the README's "Using the library" walks through a device.
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
//! length ([`v4::crc32c`]); the table compiler and checker of [`schema`] (`const fn`s run on
//! table constants, where `get` and iterators are not callable and an index or a sum out of
//! range is a compile error); test modules, where a panic is a failed test.
//!
//! Every module is under them: [`body`], [`schema`], [`machine`], [`stream`], [`io`],
//! [`wire`], [`sink`], [`writer`], [`ram`], [`memory`], [`vmdesc`] and all of [`v4`]; the exceptions are
//! the item-level `#[allow]`s named above.
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
pub mod mapped_ram;
pub mod memory;
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

use wire::section::{SectionFooter, SectionHeader, SectionHeaderRepr, SectionKind, footer_bytes};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The byte a NULL element of a pointer array is written as (`VMS_NULLPTR_MARKER`, ASCII `0`).
///
/// ```
/// assert_eq!(vmstate::NULL_PTR_MARKER, b'0');
/// ```
pub const NULL_PTR_MARKER: u8 = 0x30;

/// A device state struct and its description table.
///
/// The struct is `#[repr(C)]` zerocopy over bytes; `VMSD` describes it (checked at compile time
/// with [`assert_layout!`]).
///
/// ```
/// use vmstate::{State, Vmsd, assert_layout, field};
/// use zerocopy::byteorder::big_endian::U16;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
///
/// #[repr(C)]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// struct Counter { value: U16, enabled: u8 }
///
/// const COUNTER: Vmsd = Vmsd::new("counter", 1, 1, size_of::<Counter>())
///     .fields(&[field!(Counter, value), field!(Counter, enabled).boolean()]);
/// assert_layout!(Counter, COUNTER, wire);
///
/// impl State for Counter {
///     const VMSD: &'static Vmsd = &COUNTER;
/// }
/// assert_eq!(Counter::VMSD.name, "counter");
/// ```
pub trait State: FromBytes + IntoBytes + KnownLayout + Immutable + Sized {
    /// The top-level description.
    const VMSD: &'static Vmsd;
}

/// Identifies a section instance on the wire.
///
/// ```
/// use vmstate::SectionId;
/// // QEMU 7.2's `pc` machine registers `port92` as section 27, instance 0.
/// let id = SectionId { section_id: 27, idstr: b"port92", instance_id: 0 };
/// assert_eq!(id.idstr, b"port92");
/// ```
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
///
/// For a table and state bytes chosen at run time (a typed state uses [`encode_section`]).
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let id = SectionId { section_id: 27, idstr: b"port92", instance_id: 0 };
/// let mut out = [0u8; 64];
/// let mut sink = vmstate::SliceSink::new(&mut out);
/// vmstate::encode_section_raw(id, &PORT92, Port92 { outport: 2 }.as_bytes(), &mut sink)?;
/// assert_eq!(sink.finish(), 26);
/// # Ok::<(), vmstate::Error>(())
/// ```
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
///
/// Into any [`Sink`]: a [`SliceSink`], an [`IoSink`] over `embedded_io::Write`, a
/// [`CountingSink`] to learn the length first.
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let id = SectionId { section_id: 27, idstr: b"port92", instance_id: 0 };
/// let mut count = vmstate::CountingSink::new();
/// vmstate::encode_section(id, &Port92 { outport: 2 }, &mut count)?;
/// assert_eq!(count.count(), 26);
/// # Ok::<(), vmstate::Error>(())
/// ```
pub fn encode_section<T: State, S: Sink>(
    id: SectionId<'_>,
    state: &T,
    out: &mut S,
) -> core::result::Result<(), S::Error> {
    encode_section_raw(id, T::VMSD, state.as_bytes(), out)
}

/// Encodes a FULL section of a typed state into `buf`, returning the bytes used.
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let id = SectionId { section_id: 27, idstr: b"port92", instance_id: 0 };
/// let mut buf = [0u8; 64];
/// let n = vmstate::encode_section_into(id, &Port92 { outport: 2 }, &mut buf)?;
/// // FULL, section id, idstr, instance, version | body | footer
/// assert_eq!(&buf[..n], b"\x04\0\0\0\x1b\x06port92\0\0\0\0\0\0\0\x01\x02\x7e\0\0\0\x1b");
/// // Too small a buffer is an error, never a partial section.
/// assert!(vmstate::encode_section_into(id, &Port92 { outport: 2 }, &mut buf[..20]).is_err());
/// # Ok::<(), vmstate::Error>(())
/// ```
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
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let mut buf = [0u8; 8];
/// assert_eq!(vmstate::encode_body_into(&Port92 { outport: 2 }, &mut buf)?, 1);
/// assert_eq!(buf[0], 2);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[inline]
pub fn encode_body_into<T: State>(state: &T, buf: &mut [u8]) -> Result<usize> {
    body::encode_typed(T::VMSD, state.as_bytes(), buf)
}

/// A zero-copy view of a current-version body as the struct `B` that is its exact wire layout
/// (a device's body struct, checked with `assert_layout!(…, body = B)`). The body may carry
/// subsections after the fields; they are not part of the view.
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let body = [0x02u8];
/// let p: &Port92 = vmstate::view(&body, 0)?;
/// assert_eq!(p.outport, 2);
/// assert!(vmstate::view::<Port92>(&[], 0).is_err());
/// # Ok::<(), vmstate::Error>(())
/// ```
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
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let mut live = Port92 { outport: 0 };
/// vmstate::load(&mut live, 1, &[0x02], 0)?;
/// assert_eq!(live.outport, 2);
/// // A body with a byte too many: refused at that byte, `live` unchanged.
/// let e = vmstate::load(&mut live, 1, &[0x03, 0x00], 100).unwrap_err();
/// assert_eq!(e.offset, 101);
/// assert_eq!(live.outport, 2);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[inline(always)]
pub fn load<T: State>(state: &mut T, version: u32, body: &[u8], base: usize) -> Result<()> {
    load_with(T::VMSD, state, version, body, base)
}

/// [`load`] with a description of the same struct other than `T::VMSD`, e.g. a device's
/// permissive table that enforces only the memory-safety invariants. `vmsd.size` must be the
/// struct's size (otherwise an error, never a partial load).
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// // A permissive table of the same struct: also accepts version 0 bodies.
/// const ANY_VERSION: Vmsd = PORT92.versions(1, 0);
/// let mut live = Port92 { outport: 0 };
/// assert!(vmstate::load(&mut live, 0, &[0x02], 0).is_err());
/// vmstate::load_with(&ANY_VERSION, &mut live, 0, &[0x02], 0)?;
/// assert_eq!(live.outport, 2);
/// # Ok::<(), vmstate::Error>(())
/// ```
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

/// Loads a FULL/START section record from the stream iterator ([`Records`]) into `state`, adding
/// the section context to errors. The record's idstr is not checked here (the caller routes by
/// idstr); to load the bytes of one encoded section, see [`load_section`].
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// use vmstate::stream::{Record, Records, Schemas};
/// use vmstate::wire::Configuration;
/// use vmstate::writer::StreamWriter;
/// let mut buf = [0u8; 128];
/// let mut out = StreamWriter::new(vmstate::SliceSink::new(&mut buf));
/// out.header(3)?;
/// out.configuration(&Configuration::new(b"pc-i440fx-7.2"))?;
/// out.section(SectionId { section_id: 27, idstr: b"port92", instance_id: 0 }, &Port92 { outport: 2 })?;
/// out.eof()?;
/// let n = out.into_inner().finish();
///
/// let mut scratch = [0u8; 8];
/// let mut live = Port92 { outport: 0 };
/// for rec in Records::new(&buf[..n], Schemas::new(&[&PORT92], &mut scratch)) {
///     if let Record::Section(s) = rec?.record {
///         vmstate::load_record(&mut live, &s)?;
///     }
/// }
/// assert_eq!(live.outport, 2);
/// # Ok::<(), vmstate::Error>(())
/// ```
pub fn load_record<T: State>(state: &mut T, rec: &SectionRecord<'_>) -> Result<()> {
    load(state, rec.version_id, rec.body, rec.body_offset).map_err(|e| e.in_section(rec.context()))
}

/// Loads the bytes of one encoded FULL section — header, body, footer, as
/// [`encode_section`]/[`encode_section_into`] write them — into `state`: the counterpart of
/// [`encode_section_into`], in one call.
///
/// Checked, in this order, each error naming the byte offset (from `section[0]`), the section
/// as its header gives it and, for header fields, the field (`section_id`, `idstr`,
/// `instance_id`, `version_id`):
///
/// * a FULL section header ([`ErrorKind::UnexpectedRecord`] for START/PART/END);
/// * `section_id`, `idstr` and `instance_id` equal `id`'s ([`ErrorKind::Invalid`] with the
///   expected value, [`ErrorKind::OtherSection`] for the idstr);
/// * the version is within `T::VMSD`'s `minimum_version_id..=version_id`
///   ([`ErrorKind::VersionTooOld`], [`ErrorKind::VersionTooNew`]);
/// * the footer follows the body and repeats the section id ([`ErrorKind::MissingFooter`],
///   [`ErrorKind::FooterMismatch`]), and nothing follows it ([`ErrorKind::TrailingBytes`]);
///   input cut short is [`ErrorKind::Truncated`];
/// * the body itself, as [`load`] checks it (fields, subsections, device invariants).
///
/// A failed load changes nothing in `state`.
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field, ErrorKind};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let id = SectionId { section_id: 27, idstr: b"port92", instance_id: 0 };
/// let mut buf = [0u8; 64];
/// let n = vmstate::encode_section_into(id, &Port92 { outport: 2 }, &mut buf)?;
///
/// let mut live = Port92 { outport: 0 };
/// vmstate::load_section(&mut live, id, &buf[..n])?;
/// assert_eq!(live, Port92 { outport: 2 });
///
/// // Another instance than the one asked for: refused, `live` unchanged.
/// let other = SectionId { instance_id: 1, ..id };
/// let n = vmstate::encode_section_into(other, &Port92 { outport: 7 }, &mut buf)?;
/// let e = vmstate::load_section(&mut live, id, &buf[..n]).unwrap_err();
/// assert_eq!((e.offset, e.field), (12, Some("instance_id")));
/// assert_eq!(live, Port92 { outport: 2 });
/// # Ok::<(), vmstate::Error>(())
/// ```
pub fn load_section<T: State>(state: &mut T, id: SectionId<'_>, section: &[u8]) -> Result<()> {
    let head = SectionHeader::new_checked(section, 0)?;
    let ctx = machine::ctx(head.idstr(), head.instance_id(), head.section_id());
    load_section_checked(state, id, section, &head).map_err(|e| e.in_section(ctx))
}

/// [`load_section`] once its header parsed: the checks, the footer, the body.
fn load_section_checked<T: State>(
    state: &mut T,
    id: SectionId<'_>,
    section: &[u8],
    head: &SectionHeader<&[u8]>,
) -> Result<()> {
    const SECTION_ID_AT: usize = 1;
    const IDSTR_AT: usize = 5;
    let kind = head.kind();
    if kind != SectionKind::Full {
        return Err(Error::new(
            0,
            ErrorKind::UnexpectedRecord { found: kind.byte() },
        ));
    }
    let unequal = |at: usize, field: &'static str, expected: u32, found: u32| {
        let kind = ErrorKind::Invalid {
            expected: Expected::Equal(expected.into()),
            found: found.into(),
        };
        Error::new(at, kind).in_field(field)
    };
    if head.section_id() != id.section_id {
        let found = head.section_id();
        return Err(unequal(SECTION_ID_AT, "section_id", id.section_id, found));
    }
    if head.idstr() != id.idstr {
        let kind = ErrorKind::OtherSection {
            expected: Name::new(id.idstr),
        };
        return Err(Error::new(IDSTR_AT, kind).in_field("idstr"));
    }
    let hl = head.header_len();
    // instance_id and version_id are the header's last eight bytes.
    let instance_at = hl.saturating_sub(8);
    if head.instance_id() != id.instance_id {
        let found = head.instance_id();
        return Err(unequal(instance_at, "instance_id", id.instance_id, found));
    }
    let (version, vmsd) = (head.version_id(), T::VMSD);
    let version_err = if version > vmsd.version_id {
        Some(ErrorKind::VersionTooNew {
            found: version,
            max: vmsd.version_id,
        })
    } else if version < vmsd.minimum_version_id {
        Some(ErrorKind::VersionTooOld {
            found: version,
            min: vmsd.minimum_version_id,
        })
    } else {
        None
    };
    if let Some(kind) = version_err {
        return Err(Error::new(instance_at.saturating_add(4), kind).in_field("version_id"));
    }
    // The usual case: the footer is the last five bytes, the body what lies between.
    let footer_at = section
        .len()
        .saturating_sub(SectionFooter::<&[u8]>::LEN)
        .max(hl);
    let (Some(body), Some(footer)) = (section.get(hl..footer_at), section.get(footer_at..)) else {
        return Err(Error::new(
            hl,
            ErrorKind::Truncated {
                needed: 5,
                available: 0,
            },
        ));
    };
    if footer.len() == SectionFooter::<&[u8]>::LEN && footer.first() == Some(&0x7e) {
        SectionFooter::new_checked(footer, footer_at)?.validate(head.section_id(), footer_at)?;
        match load(state, version, body, hl) {
            // The body ends before the last five bytes: said below.
            Err(e) if matches!(e.kind, ErrorKind::MissingFooter { .. }) => {}
            done => return done,
        }
    }
    // No footer at the end: say where the body really ends and what stands there instead,
    // decoding into a copy (never `state`).
    let rest = section.get(hl..).unwrap_or_default();
    let end = match decode(state, version, rest, hl) {
        Ok(_) => section.len(),
        Err(e) if matches!(e.kind, ErrorKind::MissingFooter { .. }) => e.offset,
        Err(e) => return Err(e),
    };
    let mut r = wire::Reader::new(section.get(end..).unwrap_or_default(), end);
    wire::section::read_footer(&mut r, head.section_id())?;
    Err(r.error(ErrorKind::TrailingBytes {
        count: r.rest().len(),
    }))
}

/// Decodes a body into a fresh copy of `init` and returns it (for callers that do not keep a
/// live state). `init` provides the destination values for `_EQUAL` fields and configuration.
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// let init = Port92 { outport: 0 };
/// let got = vmstate::decode(&init, 1, &[0x02], 0)?;
/// assert_eq!((got.outport, init.outport), (2, 0));
/// # Ok::<(), vmstate::Error>(())
/// ```
#[inline(always)]
pub fn decode<T: State>(init: &T, version: u32, body: &[u8], base: usize) -> Result<T> {
    decode_with(T::VMSD, init, version, body, base)
}

/// [`decode`] with another description of the same struct (see [`load_with`]).
///
/// ```
/// # use vmstate::{State, SectionId, Vmsd, assert_layout, field};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// # #[repr(C)]
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Debug)]
/// # struct Port92 { outport: u8 }
/// # const PORT92: Vmsd = Vmsd::new("port92", 1, 1, size_of::<Port92>())
/// #     .fields(&[field!(Port92, outport)]);
/// # assert_layout!(Port92, PORT92, wire);
/// # impl State for Port92 { const VMSD: &'static Vmsd = &PORT92; }
/// const ANY_VERSION: Vmsd = PORT92.versions(1, 0);
/// let got = vmstate::decode_with(&ANY_VERSION, &Port92 { outport: 0 }, 0, &[0x02], 0)?;
/// assert_eq!(got.outport, 2);
/// # Ok::<(), vmstate::Error>(())
/// ```
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
    "[`Records`]`<FooterScan>`" Records<'static, stream::FooterScan> = 1720, 1352,
        "the record iterator: its [`Machine`] tracks up to [`machine::MAX_OPEN_SECTIONS`] \
         open sections";
    "[`Machine`]`<FooterScan>`" Machine<stream::FooterScan> = 1344, 1136,
        "the sans-IO stream machine";
    "[`io::Decoder`]`<FooterScan>`" io::Decoder<'static, stream::FooterScan> = 6192, 5896,
        "the push decoder: its machine keeps each open section's idstr by value (255 bytes \
         each, [`machine::IdstrBuf`]), as the working buffer (the caller's) is reused";
    "[`writer::StreamWriter`]`<SliceSink>`" writer::StreamWriter<'static, SliceSink<'static>>
        = 40, 20, "the v3 stream writer";
    "[`SliceSink`]" SliceSink<'static> = 24, 12, "a caller-slice sink";
    "[`v4::wire::Records4`]" v4::wire::Records4<'static> = 1640, 1288,
        "the v4 record iterator";
    "[`v4::caps::Capabilities`] (defaults)" v4::caps::Capabilities<'static> = 2736, 1760,
        "32 devices, 64 subsection names";
    "[`v4::caps::SectionRequirement`]" v4::caps::SectionRequirement<'static> = 1080, 680,
        "room for the 32 top-level subsections one section may carry";
    "[`v4::caps::Report`]`<8>`" v4::caps::Report<'static, 8> = 656, 360,
        "eight incompatibilities";
    "[`memory::PageIndex`]`<SliceLinks>`"
        memory::PageIndex<'static, &'static mut [u64], memory::SliceLinks<'static>> = 1168, 1112,
        "each block's first slot for up to [`memory::MAX_BLOCKS`] blocks (the page slots \
         themselves are the caller's: [`memory::SLOT_BYTES`] per page)";
}

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
