//! v3 ↔ v4 conversion (`docs/FORMAT.md` §8, §9).
//!
//! **v3 → v4** ([`upgrade`]) walks a v3 stream with the codec's record iterator (which needs a
//! [`BodyLength`] resolver to find where each body ends) and frames every FULL section body as
//! top-level fields plus one frame per top-level subsection. v3 bodies carry no such
//! boundaries, so a [`SubsectionSplit`] says where they are:
//!
//! * [`VmsdSplit`] derives them from the codec's description tables (modelled devices);
//! * a host tool derives them from the stream's own VMDESCRIPTION trailer: the trailer's
//!   `devices` entry with the section's idstr and instance id describes it (as QEMU's loader
//!   and analyze-migration.py key sections), its `fields` give where the fields end and its
//!   `subsections` list the top-level subsections in order. Subsections of nested structs stay inside the fields blob, so the
//!   splitter only deals with the top level.
//!
//! The v4 stream keeps every byte the v3 stream had (configuration record verbatim, section
//! ids, instance ids, versions, RAM records, trailer); the v3 footer is implied by the section
//! id. **v4 → v3** ([`downgrade`]) therefore reproduces the original v3 bytes exactly, provided
//! the stream uses no vendor feature: every minor 0 and no must-understand vendor subsection
//! (skippable vendor subsections are dropped, as an upstream writer would never have sent them).
//! Otherwise it refuses before writing anything, naming the device and the feature.

use super::wire::{
    Body, Header, Record4, Records4, SectionHead, SubsectionFrame, Tag, Vendor, emit_frame,
    emit_record, emit_section, sub_flags,
};
use super::{Error, MAX_LEVELS, Refusal, Result};
use crate::error::{ErrorKind, Name};
use crate::schema::{MAX_SUBSECTIONS, VendorTag, Vmsd};
use crate::sink::Sink;
use crate::stream::{BodyLength, Options, Record, Records, SectionInfo, idstr_matches};
use crate::wire::header::{VERSION_V3, header_bytes};
use crate::wire::section::{SectionHeaderRepr, SectionKind, find_footer, footer_bytes};
use crate::wire::{Reader, SubsectionHeader, Trailer, record};

/// Tells the v3 → v4 converter where a FULL section's top-level fields end and where each
/// top-level subsection ends.
///
/// `split` receives the section (idstr, instance id, version; the host tools find its
/// VMDESCRIPTION entry by idstr and instance id), the body (without footer) and its absolute offset. It fills
/// `ends[0]` with the length of the top-level fields and `ends[1..n]` with the end of each
/// top-level subsection (`05 | name | version | body`), relative to `body[0]`, in stream
/// order, and returns `Some(n)`; `ends[n - 1]` must be `body.len()`. `None` means "I do not
/// know this section" (conversion then fails with [`Error::NotSplit`]). `ends` holds
/// `MAX_SUBSECTIONS + 1` entries. The converter checks the result: ends increasing, every
/// subsection range holding one well-formed v3 subsection header whose name extends the
/// section's, so a wrong splitter makes conversion fail, never produce a wrong stream.
pub trait SubsectionSplit {
    /// Splits `body`; see the trait documentation.
    fn split(
        &mut self,
        sec: &SectionInfo<'_>,
        body: &[u8],
        base: usize,
        ends: &mut [usize],
    ) -> crate::Result<Option<usize>>;

    /// The vendor tag of a subsection of this section, if it is a vendor feature. The default
    /// knows none (an upstream QEMU stream has no vendor features).
    fn vendor_tag(&self, sec: &SectionInfo<'_>, subsection: &[u8]) -> Option<VendorTag> {
        let _ = (sec, subsection);
        None
    }
}

impl<P: SubsectionSplit + ?Sized> SubsectionSplit for &mut P {
    fn split(
        &mut self,
        sec: &SectionInfo<'_>,
        body: &[u8],
        base: usize,
        ends: &mut [usize],
    ) -> crate::Result<Option<usize>> {
        (**self).split(sec, body, base, ends)
    }

    fn vendor_tag(&self, sec: &SectionInfo<'_>, subsection: &[u8]) -> Option<VendorTag> {
        (**self).vendor_tag(sec, subsection)
    }
}

/// Tries `A`, then `B`.
impl<A: SubsectionSplit, B: SubsectionSplit> SubsectionSplit for (A, B) {
    fn split(
        &mut self,
        sec: &SectionInfo<'_>,
        body: &[u8],
        base: usize,
        ends: &mut [usize],
    ) -> crate::Result<Option<usize>> {
        match self.0.split(sec, body, base, ends)? {
            Some(n) => Ok(Some(n)),
            None => self.1.split(sec, body, base, ends),
        }
    }

    fn vendor_tag(&self, sec: &SectionInfo<'_>, subsection: &[u8]) -> Option<VendorTag> {
        self.0
            .vendor_tag(sec, subsection)
            .or_else(|| self.1.vendor_tag(sec, subsection))
    }
}

/// Splits sections from description tables by decoding them structurally into `scratch` (at
/// least as large as the largest state struct).
#[derive(Debug)]
pub struct VmsdSplit<'s> {
    vmsds: &'s [&'static Vmsd],
    scratch: &'s mut [u8],
}

impl<'s> VmsdSplit<'s> {
    /// A splitter over `vmsds`.
    pub fn new(vmsds: &'s [&'static Vmsd], scratch: &'s mut [u8]) -> Self {
        VmsdSplit { vmsds, scratch }
    }

    fn find(&self, idstr: &[u8]) -> Option<&'static Vmsd> {
        self.vmsds
            .iter()
            .copied()
            .find(|v| idstr_matches(idstr, v.name))
    }
}

impl SubsectionSplit for VmsdSplit<'_> {
    fn split(
        &mut self,
        sec: &SectionInfo<'_>,
        body: &[u8],
        base: usize,
        ends: &mut [usize],
    ) -> crate::Result<Option<usize>> {
        let Some(vmsd) = self.find(sec.idstr) else {
            return Ok(None);
        };
        let mut r = Reader::new(body, base);
        ends[0] = crate::body::measure_fields(vmsd, sec.version_id, &mut r, self.scratch)?;
        let mut n = 1;
        while let Some(name) = SubsectionHeader::peek_name(&r, vmsd.name) {
            let at = r.offset();
            let Some((_, sub)) = vmsd.subsection(name) else {
                return Err(crate::Error::new(
                    at,
                    ErrorKind::UnknownSubsection {
                        name: Name::new(name),
                    },
                ));
            };
            let h = SubsectionHeader::read(&mut r)?;
            crate::body::measure_body(sub.vmsd, h.version, &mut r, self.scratch)
                .map_err(|e| e.in_field(sub.vmsd.name))?;
            let slot = ends.get_mut(n).ok_or(crate::Error::new(
                at,
                ErrorKind::TooManySubsections {
                    limit: MAX_SUBSECTIONS as u16,
                },
            ))?;
            *slot = r.position();
            n += 1;
        }
        Ok(Some(n))
    }

    fn vendor_tag(&self, sec: &SectionInfo<'_>, subsection: &[u8]) -> Option<VendorTag> {
        self.find(sec.idstr)?.subsection(subsection)?.1.vendor
    }
}

/// Options for [`upgrade`].
#[derive(Debug, Clone, Copy)]
pub struct UpgradeOptions<'v> {
    /// The vendor chain to declare (empty for an upstream stream).
    pub vendors: &'v [Vendor<'v>],
    /// Whether to append a CRC-32C to every section record.
    pub crc: bool,
}

impl Default for UpgradeOptions<'_> {
    fn default() -> Self {
        UpgradeOptions {
            vendors: &[],
            crc: true,
        }
    }
}

/// A top-level subsection located in a v3 body.
#[derive(Clone, Copy)]
struct V3Sub<'a> {
    name: &'a [u8],
    version: u32,
    body: &'a [u8],
    tag: Option<VendorTag>,
}

/// Converts the v3 stream `v3` to v4, writing to `out`.
///
/// `lengths` finds v3 body ends (as for [`Records`]); `split` finds the top-level subsections.
/// Every FULL section must be split; START/PART/END bodies are carried opaque.
pub fn upgrade<L, P, S>(
    v3: &[u8],
    lengths: L,
    mut split: P,
    opts: &UpgradeOptions<'_>,
    out: &mut S,
) -> Result<()>
where
    L: BodyLength,
    P: SubsectionSplit,
    S: Sink<Error = crate::Error>,
{
    let header = Header::new(opts.vendors, opts.crc)?;
    let levels = header.levels();
    // Streams of machines older than QEMU 2.4 have no configuration record.
    // COMMAND records (SWITCHOVER_START in every stream of a machine type >= 10.0) are
    // carried as v4 COMMAND records (§12).
    let options = Options {
        require_configuration: v3.get(8) == Some(&record::CONFIGURATION),
        allow_commands: true,
        ..Options::default()
    };
    for rec in Records::with_options(v3, lengths, options) {
        let rec = rec?;
        match rec.record {
            Record::Header { .. } => header.emit(out)?,
            Record::Configuration(_) => {
                let payload = v3.get(rec.offset + 1..rec.end).unwrap_or(&[]);
                emit_record(out, opts.crc, record::CONFIGURATION, payload)?;
            }
            Record::Section(s) => {
                let info = SectionInfo {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                    ordinal: s.ordinal,
                };
                let zeros = [0u16; MAX_LEVELS];
                if s.kind != SectionKind::Full {
                    let head = SectionHead {
                        kind: s.kind,
                        section_id: s.section_id,
                        idstr: s.idstr,
                        instance_id: s.instance_id,
                        version_id: s.version_id,
                        minors: &zeros[..levels],
                    };
                    emit_section(out, opts.crc, &head, s.body.len(), |o| o.write(s.body))?;
                    continue;
                }
                let mut ends = [0usize; MAX_SUBSECTIONS + 1];
                let n = split
                    .split(&info, s.body, s.body_offset, &mut ends)?
                    .ok_or(Error::NotSplit {
                        section: s.context(),
                    })?;
                let mut subs = [None::<V3Sub<'_>>; MAX_SUBSECTIONS];
                let fields_len = check_split(
                    &info,
                    s.body,
                    s.body_offset,
                    &ends[..n.min(ends.len())],
                    &mut subs,
                )
                .map_err(|e| Error::from(e.in_section(s.context())))?;
                let mut minors = [0u16; MAX_LEVELS];
                let mut frames_len = 0;
                for sub in subs.iter_mut().flatten() {
                    sub.tag = split.vendor_tag(&info, sub.name);
                    if let Some(t) = sub.tag {
                        if t.level == 0 || t.level as usize > levels {
                            return Err(Error::BadVendorLevel {
                                offset: s.body_offset,
                                level: t.level,
                                levels: levels as u8,
                            });
                        }
                        let m = &mut minors[t.level as usize - 1];
                        *m = (*m).max(t.minor);
                    }
                    frames_len += SubsectionFrame::frame_len(
                        sub.name.len(),
                        sub.tag.is_some(),
                        sub.body.len(),
                    );
                }
                let head = SectionHead {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                    minors: &minors[..levels],
                };
                let fields = s.body.get(..fields_len).unwrap_or(&[]);
                emit_section(out, opts.crc, &head, 4 + fields_len + frames_len, |o| {
                    o.write(&(fields_len as u32).to_be_bytes())?;
                    o.write(fields)?;
                    for sub in subs.iter().flatten() {
                        let must = sub.tag.is_none_or(|t| t.must_understand);
                        SubsectionFrame::emit_head(
                            o,
                            if must { sub_flags::MUST_UNDERSTAND } else { 0 },
                            sub.tag.map(|t| Tag {
                                level: t.level,
                                minor: t.minor,
                            }),
                            sub.name,
                            sub.version,
                            sub.body.len(),
                        )?;
                        o.write(sub.body)?;
                    }
                    Ok(())
                })?;
            }
            Record::Command(_) => {
                let payload = v3.get(rec.offset + 1..rec.end).unwrap_or(&[]);
                emit_record(out, opts.crc, record::COMMAND, payload)?;
            }
            Record::Eof => out.write(&[record::EOF])?,
            Record::Trailer(t) => {
                emit_frame(out, record::VMDESCRIPTION, t.json.len())?;
                out.write(t.json)?;
            }
        }
    }
    Ok(())
}

/// Checks a splitter's answer and extracts the subsections; returns the fields length.
fn check_split<'a>(
    info: &SectionInfo<'_>,
    body: &'a [u8],
    base: usize,
    ends: &[usize],
    subs: &mut [Option<V3Sub<'a>>; MAX_SUBSECTIONS],
) -> crate::Result<usize> {
    let bad = |at: usize| crate::Error::new(base + at, ErrorKind::BadDescription);
    let (&fields_len, rest) = ends.split_first().ok_or(bad(0))?;
    if rest.len() > MAX_SUBSECTIONS {
        let at = rest.get(MAX_SUBSECTIONS - 1).copied().unwrap_or(fields_len);
        return Err(crate::Error::new(
            base + at.min(body.len()),
            ErrorKind::TooManySubsections {
                limit: MAX_SUBSECTIONS as u16,
            },
        ));
    }
    if ends.last() != Some(&body.len()) || fields_len > body.len() {
        return Err(bad(fields_len.min(body.len())));
    }
    // The section's vmsd name is the idstr without a qdev path prefix.
    let vmsd_name = match info.idstr.iter().rposition(|&b| b == b'/') {
        Some(i) => &info.idstr[i + 1..],
        None => info.idstr,
    };
    let mut start = fields_len;
    for (i, &end) in rest.iter().enumerate() {
        let range = body.get(start..end).ok_or(bad(start))?;
        let mut r = Reader::new(range, base + start);
        let h = SubsectionHeader::read(&mut r)?;
        if !h.name.starts_with(vmsd_name) || h.name.len() <= vmsd_name.len() {
            return Err(bad(start));
        }
        subs[i] = Some(V3Sub {
            name: h.name,
            version: h.version,
            body: r.rest(),
            tag: None,
        });
        start = end;
    }
    Ok(fields_len)
}

/// Finds the first reason the v4 stream `v4` cannot be written as v3, reading headers only.
/// `Ok(None)` means [`downgrade`] will succeed (barring a malformed stream, reported here too).
pub fn downgrade_obstacle(v4: &[u8]) -> Result<Option<Refusal>> {
    let mut vendors = super::wire::VendorChain::new();
    for rec in Records4::new(v4) {
        let rec = rec?;
        match rec.record {
            Record4::Header(h) => vendors = h.vendors,
            Record4::Section(s) => {
                if let Some(r) = section_obstacle(&s, &vendors)? {
                    return Ok(Some(r));
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

fn section_obstacle(
    s: &super::wire::Section<'_>,
    vendors: &super::wire::VendorChain<'_>,
) -> Result<Option<Refusal>> {
    let refusal = |offset, level: u8, feature: Option<&[u8]>| Refusal {
        offset,
        section: s.context(),
        level,
        vendor: Name::new(vendors.get(level as usize - 1).map(|v| v.id).unwrap_or(&[])),
        minor: s.minor(level),
        feature: feature.map(Name::new),
    };
    // A must-understand vendor subsection, or the subsection that raised a minor, is the
    // most precise reason; a minor raised without any subsection comes next.
    for sub in s.subsections() {
        let sub = sub?;
        if let Some(t) = sub.vendor
            && (sub.must_understand() || t.minor > 0)
        {
            return Ok(Some(refusal(sub.offset, t.level, Some(sub.name))));
        }
    }
    for (i, &m) in s.minors.iter().enumerate() {
        if m != 0 {
            return Ok(Some(refusal(s.offset, i as u8 + 1, None)));
        }
    }
    Ok(None)
}

/// Converts the v4 stream `v4` to v3, writing to `out`: byte-identical to what a v3 writer
/// makes of the same state. Refuses ([`Error::Refused`]) before writing anything when a vendor
/// feature is in use (see [`downgrade_obstacle`]).
pub fn downgrade<S: Sink<Error = crate::Error>>(v4: &[u8], out: &mut S) -> Result<()> {
    if let Some(r) = downgrade_obstacle(v4)? {
        return Err(Error::Refused(r));
    }
    // `downgrade_obstacle` walked the whole stream and verified every checksum.
    for rec in Records4::verified(v4) {
        let rec = rec?;
        match rec.record {
            Record4::Header(_) => out.write(&header_bytes(VERSION_V3))?,
            Record4::Configuration(payload) => {
                out.write(&[record::CONFIGURATION])?;
                out.write(payload)?;
            }
            Record4::Section(s) => {
                SectionHeaderRepr {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                }
                .emit(out)?;
                match s.body {
                    Body::Opaque { data, offset } => {
                        // RAM records are measured by the RAM parser; any other live data
                        // is found by its footer in v3, so it must not contain one.
                        if s.idstr != b"ram"
                            && let Some(i) = find_footer(data, s.section_id)
                        {
                            return Err(crate::Error::new(offset + i, ErrorKind::FooterInLiveData)
                                .in_section(s.context())
                                .into());
                        }
                        out.write(data)?
                    }
                    Body::Structured { fields, .. } => {
                        out.write(fields)?;
                        for sub in s.subsections() {
                            let sub = sub?;
                            if sub.vendor.is_some() {
                                // Skippable, minor 0 (anything else was refused above).
                                continue;
                            }
                            SubsectionHeader {
                                name: sub.name,
                                version: sub.version,
                            }
                            .emit(out)?;
                            out.write(sub.body)?;
                        }
                    }
                }
                out.write(&footer_bytes(s.section_id))?;
            }
            Record4::Command(c) => c.emit(out)?,
            Record4::Ancillary { .. } => {}
            Record4::Eof => out.write(&[record::EOF])?,
            Record4::Trailer(json) => Trailer { json }.emit(out)?,
        }
    }
    Ok(())
}
