//! A section's vendor minors, computed from its description table and state (§3), and a v4
//! writer for typed device state.
//!
//! A device declares each vendor feature as a subsection tagged with
//! [`VendorTag`](crate::schema::VendorTag) `{ level, minor, must_understand }`. For one
//! instance, the section's minor at vendor level `L` is the largest `minor` among the tagged
//! subsections of level `L` whose `needed` holds, and 0 when none does: a backported feature
//! this VM does not use leaves the minor at 0, so the section stays loadable by builds that
//! lack the feature. Only top-level subsections count (nested ones travel inside the fields).

use super::wire::{SectionHead, SubsectionFrame, Tag, Vendor, emit_section, sub_flags};
use super::{Error, MAX_LEVELS, Minors, Result};
use crate::SectionId;
use crate::schema::{Subsection, Vmsd};
use crate::sink::{CountingSink, Sink};
use crate::wire::section::SectionKind;

fn is_needed(sub: &Subsection, state: &[u8]) -> bool {
    sub.needed.is_none_or(|needed| needed(state))
}

/// The minors of `vmsd`'s section for `state`, one per vendor level `1..=N` (a const-size
/// table, no allocation). A tag whose level is 0 or above `N` is an error.
pub fn section_minors<const N: usize>(vmsd: &Vmsd, state: &[u8]) -> Result<[u16; N]> {
    let mut minors = [0u16; N];
    for sub in vmsd.subsections {
        let Some(tag) = sub.vendor else { continue };
        if !is_needed(sub, state) {
            continue;
        }
        let slot = (tag.level as usize)
            .checked_sub(1)
            .and_then(|i| minors.get_mut(i))
            .ok_or(Error::BadVendorLevel {
                offset: 0,
                level: tag.level,
                levels: N.min(255) as u8,
            })?;
        *slot = (*slot).max(tag.minor);
    }
    Ok(minors)
}

/// [`section_minors`] for a runtime number of levels.
pub fn minors_for(vmsd: &Vmsd, state: &[u8], levels: usize) -> Result<Minors> {
    let all = section_minors::<MAX_LEVELS>(vmsd, state)?;
    let mut out = Minors::new();
    for (i, &m) in all.iter().enumerate() {
        if i < levels {
            let _ = out.push(m);
        } else if m != 0 {
            return Err(Error::BadVendorLevel {
                offset: 0,
                level: i as u8 + 1,
                levels: levels as u8,
            });
        }
    }
    Ok(out)
}

/// Writes a FULL v4 section record of `state` described by `vmsd`: fields (v3 encoding), one
/// frame per needed top-level subsection (vendor-tagged ones with their tag and flags), minors
/// computed by [`minors_for`] for a stream of `levels` vendor levels.
pub fn encode_section<S: Sink<Error = crate::Error>>(
    id: SectionId<'_>,
    vmsd: &Vmsd,
    state: &[u8],
    levels: usize,
    crc: bool,
    out: &mut S,
) -> Result<()> {
    let minors = minors_for(vmsd, state, levels)?;
    let mut fields = CountingSink::new();
    crate::body::encode_fields(vmsd, vmsd.version_id, state, &mut fields)?;
    let mut body_len = 4 + fields.count();
    for sub in vmsd.subsections.iter().filter(|s| is_needed(s, state)) {
        let mut c = CountingSink::new();
        crate::body::encode_body(sub.vmsd, state, &mut c)?;
        body_len +=
            SubsectionFrame::frame_len(sub.vmsd.name.len(), sub.vendor.is_some(), c.count());
    }
    let head = SectionHead {
        kind: SectionKind::Full,
        section_id: id.section_id,
        idstr: id.idstr,
        instance_id: id.instance_id,
        version_id: vmsd.version_id,
        minors: &minors,
    };
    emit_section(out, crc, &head, body_len, |o| {
        o.write(&(fields.count() as u32).to_be_bytes())?;
        crate::body::encode_fields(vmsd, vmsd.version_id, state, o)?;
        for sub in vmsd.subsections.iter().filter(|s| is_needed(s, state)) {
            let mut c = CountingSink::new();
            crate::body::encode_body(sub.vmsd, state, &mut c)?;
            let must = sub.vendor.is_none_or(|t| t.must_understand);
            SubsectionFrame::emit_head(
                o,
                if must { sub_flags::MUST_UNDERSTAND } else { 0 },
                sub.vendor.map(|t| Tag {
                    level: t.level,
                    minor: t.minor,
                }),
                sub.vmsd.name.as_bytes(),
                sub.vmsd.version_id,
                c.count(),
            )?;
            crate::body::encode_body(sub.vmsd, state, o)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Writes a v4 file header for `vendors`.
pub fn encode_header<S: Sink<Error = crate::Error>>(
    vendors: &[Vendor<'_>],
    crc: bool,
    out: &mut S,
) -> Result<()> {
    super::wire::Header::new(vendors, crc)?.emit(out)?;
    Ok(())
}

/// Writes the EOF record.
pub fn encode_eof<S: Sink<Error = crate::Error>>(out: &mut S) -> Result<()> {
    out.write(&[crate::wire::record::EOF])?;
    Ok(())
}
