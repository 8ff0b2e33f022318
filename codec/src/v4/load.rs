//! Loading a device's state straight from a v4 section record (`docs/FORMAT.md` §3, §6).
//!
//! The record has already been checked by [`Records4`](super::wire::Records4) (frame, CRC-32C,
//! subsection frames), so corruption was caught before this runs. Loading then:
//! 1. checks the section's minors against what the local build supports: at each vendor level
//!    with a minor above 0, the local vendor at that level must be the stream's and the
//!    device's description must have a vendor subsection of that level with at least that
//!    minor;
//! 2. rebuilds the v3 body in caller scratch: the fields, then every subsection the local
//!    description knows; unknown skippable subsections are dropped, unknown must-understand
//!    ones refused;
//! 3. decodes it with the typed loader ([`crate::load`]): staging copy, commit on success, so a
//!    failed load changes nothing.
//!
//! Error offsets point into the v4 stream (each rebuilt piece maps back to where it came from).

use super::wire::{Body, Section, Vendor};
use super::{Error, Refusal, Result};
use crate::State;
use crate::error::{ErrorKind, Name};
use crate::schema::MAX_SUBSECTIONS;
use crate::sink::{Sink, SliceSink};
use crate::wire::SubsectionHeader;

/// A piece of the rebuilt v3 body and where its bytes came from.
#[derive(Clone, Copy, Default)]
struct Piece {
    at: usize,
    from: usize,
}

/// Loads `state` from the FULL section `sec` of a stream whose vendor chain is `stream` into a
/// build whose vendor chain is `local`, using `scratch` to rebuild the v3 body (it must hold
/// the fields and the kept subsections with their v3 headers).
///
/// ```
/// use vmstate::v4::{StreamWriter, load_section, wire::{Header, Record4, Records4}};
/// use vmstate::{SectionId, SliceSink, State, Vmsd, field};
/// use zerocopy::FromZeros;
/// # #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable, Debug, PartialEq)]
/// # #[repr(C)]
/// # struct Timer { count: zerocopy::big_endian::U32 }
/// # const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
/// # impl State for Timer { const VMSD: &'static Vmsd = &TIMER; }
/// let mut buf = [0u8; 128];
/// let mut w = StreamWriter::new(&Header::new(&[], true)?, SliceSink::new(&mut buf))?;
/// let id = SectionId { section_id: 1, idstr: b"timer", instance_id: 0 };
/// w.section(id, &Timer { count: 7.into() })?;
/// w.eof()?;
/// let n = w.into_inner().finish();
/// let mut timer = Timer::new_zeroed();
/// let mut scratch = [0u8; 64];
/// for rec in Records4::new(&buf[..n]) {
///     if let Record4::Section(sec) = rec?.record {
///         // Upstream stream, upstream build: no vendor chain on either side.
///         load_section(&mut timer, &sec, &[], &[], &mut scratch)?;
///     }
/// }
/// assert_eq!(timer.count.get(), 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn load_section<T: State>(
    state: &mut T,
    sec: &Section<'_>,
    stream: &[Vendor<'_>],
    local: &[Vendor<'_>],
    scratch: &mut [u8],
) -> Result<()> {
    let ctx = sec.context();
    let Body::Structured {
        fields,
        fields_offset,
        ..
    } = sec.body
    else {
        return Err(crate::Error::new(
            sec.offset,
            ErrorKind::UnexpectedRecord {
                found: sec.kind.byte(),
            },
        )
        .in_section(ctx)
        .into());
    };
    let vmsd = T::VMSD;
    for (i, &minor) in sec.minors.iter().enumerate() {
        if minor == 0 {
            continue;
        }
        let level = (i as u8).saturating_add(1);
        let vendor = stream.get(i).map_or(&[][..], |v| v.id.as_bytes());
        let same_vendor = local.get(i).map(|v| v.id.as_bytes()) == Some(vendor);
        let supported = vmsd
            .subsections
            .iter()
            .filter_map(|s| s.vendor)
            .filter(|t| t.level == level)
            .map(|t| t.minor)
            .max()
            .unwrap_or(0);
        if !same_vendor || minor > supported {
            let feature = sec.subsections().find_map(|s| {
                s.ok()
                    .filter(|s| s.vendor.is_some_and(|t| t.level == level && t.minor > 0))
                    .map(|s| Name::new(s.name))
            });
            return Err(Error::Unsupported(Refusal {
                offset: sec.offset,
                section: ctx,
                level,
                vendor: Name::new(vendor),
                minor,
                feature,
            }));
        }
    }
    let mut pieces = [Piece::default(); 2 * MAX_SUBSECTIONS + 1];
    let mut n_pieces = 0;
    let mut out = SliceSink::new(scratch);
    // A piece starts where the rebuilt body stands and maps back to `from`; so does a scratch
    // too small for it.
    let mut piece = |out: &SliceSink<'_>, from: usize| {
        if let Some(p) = pieces.get_mut(n_pieces) {
            *p = Piece {
                at: out.position(),
                from,
            };
            n_pieces = n_pieces.saturating_add(1);
        }
        move |e: crate::Error| crate::Error::new(from, e.kind)
    };
    let e = piece(&out, fields_offset);
    out.write(fields).map_err(e)?;
    for sub in sec.subsections() {
        let sub = sub?;
        if vmsd.subsection(sub.name).is_none() {
            if sub.must_understand() {
                return Err(crate::Error::new(
                    sub.offset,
                    ErrorKind::UnknownSubsection {
                        name: Name::new(sub.name),
                    },
                )
                .in_section(ctx)
                .into());
            }
            continue;
        }
        let e = piece(&out, sub.offset);
        SubsectionHeader {
            name: sub.name,
            version: sub.version,
        }
        .emit(&mut out)
        .map_err(e)?;
        let e = piece(&out, sub.body_offset);
        out.write(sub.body).map_err(e)?;
    }
    let len = out.finish();
    let body = scratch.get(..len).unwrap_or(&[]);
    crate::load(state, sec.version_id, body, 0).map_err(|mut e| {
        // Map the offset in the rebuilt body back to the stream.
        if let Some(p) = pieces
            .get(..n_pieces)
            .unwrap_or(&[])
            .iter()
            .rev()
            .find(|p| p.at <= e.offset)
        {
            e.offset = p.from.saturating_add(e.offset.saturating_sub(p.at));
        }
        e.in_section(ctx).into()
    })
}
