//! A section's vendor minors, computed from its description table and state (§3), and a v4
//! writer for typed device state.
//!
//! A device declares each vendor feature as a subsection tagged with
//! [`VendorTag`](crate::schema::VendorTag) `{ level, minor, must_understand }`. For one
//! instance, the section's minor at vendor level `L` is the largest `minor` among the tagged
//! subsections of level `L` whose `needed` holds, and 0 when none does: a backported feature
//! this VM does not use leaves the minor at 0, so the section stays loadable by builds that
//! lack the feature. Only top-level subsections count (nested ones travel inside the fields).

use super::wire::{SectionHead, SubsectionFrame, emit_section};
use super::{MAX_LEVELS, Minors};
use crate::SectionId;
use crate::error::{Error, ErrorKind};
use crate::schema::{PlanRun, Subsection, VendorId, Vmsd};
use crate::sink::{CountingSink, Sink};
use crate::wire::section::SectionKind;

fn is_needed(sub: &Subsection, state: &[u8]) -> bool {
    sub.needed.is_none_or(|needed| needed(state))
}

/// Checks that every vendor tag of `vmsd` fits the vendor chain `chain`: a tag of level 0
/// (upstream, which tags nothing) or above `chain.len()` is [`ErrorKind::VendorLevel`], a tag
/// that names its vendor when `chain` has another one at its level is
/// [`ErrorKind::VendorMismatch`], each naming the subsection (the caller adds the section).
/// Every tag counts, needed or not, so a table fits a chain or does not whatever the state.
pub fn check_tags(vmsd: &Vmsd, chain: &[VendorId<'_>]) -> crate::Result<()> {
    minors(vmsd, None, chain.len(), chain)
        .map(drop)
        .map_err(|sub| vendor_level(sub, chain.len(), chain, 0, None))
}

/// The error for `sub`'s tag that does not fit a chain of `levels` vendors, `chain` when known
/// ([`ErrorKind::VendorMismatch`] when the tag's level is in it, else
/// [`ErrorKind::VendorLevel`]), at `at`, in the section `id` when given (out of line, and one
/// function for every caller: the writers' cold path).
#[cold]
#[inline(never)]
fn vendor_level(
    sub: &Subsection,
    levels: usize,
    chain: &[VendorId<'_>],
    at: usize,
    id: Option<&SectionId<'_>>,
) -> Error {
    let level = sub.vendor.map_or(0, |t| t.level);
    let in_chain = (level as usize)
        .checked_sub(1)
        .is_some_and(|i| i < chain.len());
    let kind = match sub.vendor_id {
        Some(tag) if in_chain => ErrorKind::VendorMismatch {
            level,
            tag,
            at: chain
                .iter()
                .position(|v| *v == tag)
                .map_or(0, |i| i.saturating_add(1).min(255) as u8),
        },
        _ => ErrorKind::VendorLevel {
            level,
            levels: levels.min(255) as u8,
        },
    };
    let e = Error::new(at, kind).in_field(sub.vmsd.name);
    match id {
        Some(id) => e.in_section(crate::machine::ctx(id.idstr, id.instance_id, id.section_id)),
        None => e,
    }
}

/// The minors of `vmsd`'s section for `state` in a stream of `levels` vendor levels, one per
/// level `1..=levels` (no allocation), after [`check_tags`].
pub fn section_minors(vmsd: &Vmsd, state: &[u8], levels: usize) -> crate::Result<Minors> {
    let all = minors(vmsd, Some(state), levels, &[])
        .map_err(|sub| vendor_level(sub, levels, &[], 0, None))?;
    Ok(Minors::from_slice(all.get(..levels).unwrap_or_default()).unwrap_or_default())
}

/// The minors of [`section_minors`] as a whole table (entries from `levels` on are 0; all 0
/// without a state), or the first subsection whose tag is outside `1..=levels` or names
/// another vendor than `chain` has at its level (`chain`: the vendor ids, when known).
fn minors<'v>(
    vmsd: &'v Vmsd,
    state: Option<&[u8]>,
    levels: usize,
    chain: &[VendorId<'_>],
) -> Result<[u16; MAX_LEVELS], &'v Subsection> {
    let mut all = [0u16; MAX_LEVELS];
    for sub in vmsd.subsections {
        let Some(tag) = sub.vendor else { continue };
        let Some((i, m)) = (tag.level as usize)
            .checked_sub(1)
            .filter(|&i| i < levels)
            .and_then(|i| Some((i, all.get_mut(i)?)))
        else {
            return Err(sub);
        };
        if let (Some(v), Some(c)) = (sub.vendor_id, chain.get(i))
            && v != *c
        {
            return Err(sub);
        }
        if state.is_some_and(|s| is_needed(sub, s)) {
            *m = (*m).max(tag.minor);
        }
    }
    Ok(all)
}

/// The top-level fields of `state` as `vmsd`'s copy plan writes them, when it has one and
/// `state` is a whole state: `state[start..start + len]` with the plan's zero runs, in one
/// piece, as [`crate::body::encode_body`] writes them before the subsections.
fn planned<'v, 's>(vmsd: &'v Vmsd, state: &'s [u8]) -> Option<(&'s [u8], &'v [PlanRun])> {
    let p = vmsd.plan_for(vmsd.version_id)?;
    if state.len() != vmsd.size {
        return None;
    }
    let (start, len) = (p.start as usize, p.len as usize);
    Some((state.get(start..start.checked_add(len)?)?, p.zeros()))
}

/// Writes a FULL v4 section record of `state` described by `vmsd`: fields (v3 encoding), one
/// frame per needed top-level subsection (vendor-tagged ones with their tag and flags), minors
/// computed by [`section_minors`] for a stream whose header has the vendor chain `chain`, after
/// [`check_tags`]. Reached through [`StreamWriter::section`](super::StreamWriter::section),
/// which takes `chain` and `crc` from the header it wrote.
pub(crate) fn write_section<S: Sink>(
    id: SectionId<'_>,
    vmsd: &Vmsd,
    state: &[u8],
    chain: &[VendorId<'_>],
    crc: bool,
    out: &mut S,
) -> Result<(), S::Error> {
    // As v3's `encode_body`: a state that is not the described struct is refused.
    if state.len() != vmsd.size {
        return Err(Error::new(
            out.position(),
            ErrorKind::BufferTooSmall {
                needed: vmsd.size,
                capacity: state.len(),
            },
        )
        .in_field(vmsd.name)
        .into());
    }
    // Nothing is written yet: the error's offset is where the section would start.
    let levels = chain.len();
    let minors = minors(vmsd, Some(state), levels, chain)
        .map_err(|sub| vendor_level(sub, levels, chain, out.position(), Some(&id)))?;
    let fields_len = match planned(vmsd, state) {
        Some((bytes, _)) => bytes.len(),
        None => {
            let mut c = CountingSink::new();
            crate::body::encode_fields(vmsd, vmsd.version_id, state, &mut c)?;
            c.count()
        }
    };
    let mut body_len = fields_len.saturating_add(4);
    for sub in vmsd.subsections.iter().filter(|s| is_needed(s, state)) {
        let mut c = CountingSink::new();
        crate::body::encode_body(sub.vmsd, state, &mut c)?;
        body_len = body_len.saturating_add(SubsectionFrame::frame_len(
            sub.vmsd.name.len(),
            sub.vendor.is_some(),
            c.count(),
        ));
    }
    let head = SectionHead {
        kind: SectionKind::Full,
        section_id: id.section_id,
        idstr: id.idstr,
        instance_id: id.instance_id,
        version_id: vmsd.version_id,
        minors: minors.get(..levels).unwrap_or_default(),
    };
    emit_section(out, crc, &head, body_len, |o| {
        o.write(&(fields_len as u32).to_be_bytes())?;
        match planned(vmsd, state) {
            Some((bytes, zeros)) => o.write_with_zeros(bytes, zeros)?,
            None => crate::body::encode_fields(vmsd, vmsd.version_id, state, o)?,
        }
        for sub in vmsd.subsections.iter().filter(|s| is_needed(s, state)) {
            let mut c = CountingSink::new();
            crate::body::encode_body(sub.vmsd, state, &mut c)?;
            SubsectionFrame::emit_head(
                o,
                sub.vendor,
                sub.vmsd.name.as_bytes(),
                sub.vmsd.version_id,
                c.count(),
            )?;
            crate::body::encode_body(sub.vmsd, state, o)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::field;
    use crate::sink::SliceSink;
    use crate::wire::record;
    use std::vec::Vec;
    use zerocopy::byteorder::big_endian::{U16, U32};

    #[repr(C)]
    struct Dev {
        a: U32,
        gap: [u8; 3],
        b: U16,
        flag: u8,
        extra: U32,
    }

    const EXTRA: Vmsd = Vmsd::new("dev/extra", 1, 1, 14).fields(&[field!(Dev, extra)]);
    const SUBS: &[Subsection] = &[Subsection::new(&EXTRA, |s| s[9] != 0)];
    const DEV: Vmsd = Vmsd::new("dev", 2, 1, 14)
        .fields(&[
            field!(Dev, a),
            field!(Dev, gap).unused(),
            field!(Dev, b),
            field!(Dev, flag).boolean(),
        ])
        .subsections(SUBS);

    fn encode(vmsd: &Vmsd, state: &[u8], crc: bool) -> Vec<u8> {
        let mut buf = [0xa5u8; 128];
        let mut out = SliceSink::new(&mut buf);
        let id = SectionId {
            section_id: 3,
            idstr: b"dev",
            instance_id: 0,
        };
        write_section(id, vmsd, state, &[], crc, &mut out).unwrap();
        let n = out.finish();
        buf[..n].to_vec()
    }

    /// The copy plan writes the fields in one piece; the section must be byte for byte what the
    /// field-by-field encoder makes, with and without CRC, with and without the subsection.
    #[test]
    fn the_plan_path_writes_what_the_field_path_writes() {
        assert!(DEV.plan_for(2).is_some());
        let no_plan = DEV.without_plan();
        for flag in [0u8, 1] {
            let mut state = [1, 2, 3, 4, 0xee, 0xee, 0xee, 5, 6, flag, 7, 8, 9, 10];
            for crc in [false, true] {
                let planned = encode(&DEV, &state, crc);
                assert_eq!(
                    planned,
                    encode(&no_plan, &state, crc),
                    "flag {flag} crc {crc}"
                );
                // type, len, id, name, instance, version, fields_len, fields (gap zeroed).
                assert_eq!(planned[0], SectionKind::Full.byte());
                let fields_at = 1 + 4 + 4 + 4 + 4 + 4 + 4;
                assert_eq!(&planned[fields_at - 4..fields_at], &10u32.to_be_bytes());
                assert_eq!(
                    &planned[fields_at..fields_at + 10],
                    &[1, 2, 3, 4, 0, 0, 0, 5, 6, flag]
                );
                let sub_at = fields_at + 10;
                let end = planned.len() - if crc { 4 } else { 0 };
                let want = if flag != 0 {
                    Some(&record::SUBSECTION)
                } else {
                    None
                };
                assert_eq!(planned[sub_at..end].first(), want);
            }
            // A state of the wrong size takes the field path: same result either way.
            state[0] = 0;
            let short = &state[..13];
            let (mut x, mut y) = ([0u8; 128], [0u8; 128]);
            let id = SectionId {
                section_id: 3,
                idstr: b"dev",
                instance_id: 0,
            };
            let a = write_section(id, &DEV, short, &[], true, &mut SliceSink::new(&mut x));
            let b = write_section(id, &no_plan, short, &[], true, &mut SliceSink::new(&mut y));
            assert_eq!(a, b);
            assert_eq!(x, y);
            // Refused, whether or not a subsection is needed, and nothing is written.
            let Err(e) = a else {
                panic!("a 13-byte state of a 14-byte struct is refused: {a:?}");
            };
            assert_eq!((e.offset, e.field), (0, Some("dev")));
            assert!(matches!(
                e.kind,
                crate::ErrorKind::BufferTooSmall {
                    needed: 14,
                    capacity: 13
                }
            ));
            assert!(x.iter().all(|&b| b == 0));
        }
    }

    /// A table whose fields start past offset 0 (its plan's `start`): the plan path writes
    /// those bytes, not the front of the state.
    #[test]
    fn a_plan_starting_inside_the_state_writes_its_own_bytes() {
        const TAIL: Vmsd = Vmsd::new("dev", 2, 1, 14).fields(&[field!(Dev, b), field!(Dev, flag)]);
        assert_eq!(TAIL.plan_for(2).map(|p| (p.start, p.len)), Some((7, 3)));
        let no_plan = TAIL.without_plan();
        let state = [1, 2, 3, 4, 0xee, 0xee, 0xee, 5, 6, 1, 7, 8, 9, 10];
        for crc in [false, true] {
            let planned = encode(&TAIL, &state, crc);
            assert_eq!(planned, encode(&no_plan, &state, crc));
            let fields_at = 1 + 4 + 4 + 4 + 4 + 4 + 4;
            assert_eq!(&planned[fields_at..fields_at + 3], &[5, 6, 1]);
        }
    }
}
