//! v3 ↔ v4 conversion (`docs/FORMAT.md` §8, §9).
//!
//! **v3 → v4** ([`upgrade`]) walks a v3 stream with section heads ([`Records::next_head`]) and
//! frames every FULL section body as top-level fields plus one frame per top-level subsection.
//! v3 bodies carry neither their length nor such boundaries, so a [`BodySplit`] says where they
//! are, in one answer per body:
//!
//! * [`VmsdSplit`] derives them from the codec's description tables (modelled devices);
//! * a host tool derives them from the stream's own VMDESCRIPTION trailer: the trailer's
//!   `devices` entry with the section's idstr and instance id describes it (as QEMU's loader
//!   and analyze-migration.py key sections), its `fields` give where the fields end and its
//!   `subsections` list the top-level subsections in order. Subsections of nested structs stay
//!   inside the fields blob, so the splitter only deals with the top level.
//!
//! The v4 stream keeps every byte the v3 stream had (configuration record verbatim, section
//! ids, instance ids, versions, RAM records, trailer); the v3 footer is implied by the section
//! id. **v4 → v3** ([`downgrade`]) therefore reproduces the original v3 bytes exactly, provided
//! the stream uses no vendor feature: every minor 0 and no must-understand vendor subsection
//! (skippable vendor subsections are dropped, as an upstream writer would never have sent them).
//! Otherwise it refuses before writing anything, naming the device and the feature.

use super::wire::{
    Body, Header, Record4, Records4, SectionHead, SubsectionFrame, Vendor, emit_frame, emit_record,
    emit_section,
};
use super::{Error, MAX_LEVELS, Refusal, Result};
use crate::error::{ErrorKind, Name};
use crate::machine::SectionHead as V3Head;
use crate::schema::{MAX_SUBSECTIONS, VendorId, VendorTag, Vmsd};
use crate::sink::Sink;
use crate::stream::{Next, Options, Record, Records, SectionRecord, idstr_matches};
use crate::wire::header::{VERSION_V3, header_bytes};
use crate::wire::section::{SectionHeaderRepr, SectionKind, find_footer, footer_bytes};
use crate::wire::{Reader, SubsectionHeader, Trailer, record};

/// Tells the v3 → v4 converter, in one answer, where a section body ends and, for a FULL
/// section, where its top-level fields and each top-level subsection end.
///
/// `split` receives the section's head (kind, idstr, instance id, version; the host tools find
/// its VMDESCRIPTION entry by idstr and instance id) and the input from the body's first byte
/// ([`V3Head::body_offset`]) on. It fills `ends[0]` with the length of the top-level fields and
/// `ends[1..n]` with the end of each top-level subsection (`05 | name | version | body`),
/// relative to the body's start, in stream order, and returns `Some(n)`: `ends[n - 1]` is the
/// body's length (all a START/PART/END section needs). `None` means "I do not know this
/// section": a `ram` body is then measured by the RAM parser, any other is
/// [`ErrorKind::BodyLengthUnknown`], and a FULL section stays unsplit ([`Error::NotSplit`]).
/// `ends` holds `MAX_SUBSECTIONS + 1` entries. The converter checks the answer: the footer
/// after the body, ends increasing, every subsection range holding one well-formed v3
/// subsection header whose name extends the section's, so a wrong splitter makes conversion
/// fail, never produce a wrong stream. [`upgrade`] returns the splitter's errors as they are.
pub trait BodySplit {
    /// The splitter's refusals; the converter's own errors convert into it.
    type Error: From<Error>;

    /// Measures and splits the body at the start of `rest`; see the trait documentation.
    fn split(
        &mut self,
        head: &V3Head<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> core::result::Result<Option<usize>, Self::Error>;

    /// The vendor tag of a subsection of this section, if it is a vendor feature. The default
    /// knows none (an upstream QEMU stream has no vendor features).
    fn vendor_tag(&self, head: &V3Head<&[u8]>, subsection: &[u8]) -> Option<VendorTag> {
        let _ = (head, subsection);
        None
    }

    /// The vendor a tagged subsection's tag names ([`crate::schema::Subsection::feature_of`]),
    /// if the splitter knows it: the converter then refuses a header whose chain has another
    /// vendor at the tag's level ([`ErrorKind::VendorMismatch`]) instead of crediting the
    /// feature to that vendor. The default knows none (the tag is placed by its level only).
    fn vendor_id(&self, head: &V3Head<&[u8]>, subsection: &[u8]) -> Option<VendorId<'static>> {
        let _ = (head, subsection);
        None
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

    /// The ends of `vmsd`'s body at the start of `rest` (see [`BodySplit`]); their number.
    fn ends(
        &mut self,
        vmsd: &Vmsd,
        head: &V3Head<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> crate::Result<usize> {
        let mut r = Reader::new(rest, head.body_offset());
        let too_many = |at| {
            crate::Error::new(
                at,
                ErrorKind::TooManySubsections {
                    limit: MAX_SUBSECTIONS as u16,
                },
            )
        };
        let (fields, mut slots) = match ends.split_first_mut() {
            Some((f, s)) => (f, s.iter_mut()),
            None => return Err(too_many(r.offset())),
        };
        *fields = crate::body::measure_fields(vmsd, head.version_id, &mut r, self.scratch)?;
        let mut n = 1usize;
        while let Some(name) = SubsectionHeader::peek_name(&r, vmsd.name) {
            let at = r.offset();
            let Some((_, sub)) = vmsd.subsection(name) else {
                let name = Name::new(name);
                return Err(crate::Error::new(at, ErrorKind::UnknownSubsection { name }));
            };
            let h = SubsectionHeader::read(&mut r)?;
            crate::body::measure_body(sub.vmsd, h.version, &mut r, self.scratch)
                .map_err(|e| e.in_field(sub.vmsd.name))?;
            *slots.next().ok_or(too_many(at))? = r.position();
            // At most `ends.len()`.
            n = n.saturating_add(1);
        }
        Ok(n)
    }
}

impl BodySplit for VmsdSplit<'_> {
    type Error = Error;

    fn split(
        &mut self,
        head: &V3Head<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> Result<Option<usize>> {
        let Some(vmsd) = self.find(head.idstr) else {
            return Ok(None);
        };
        match self.ends(vmsd, head, rest, ends) {
            Ok(n) => Ok(Some(n)),
            Err(e) => Err(e.in_section(head.context()).into()),
        }
    }

    fn vendor_tag(&self, head: &V3Head<&[u8]>, subsection: &[u8]) -> Option<VendorTag> {
        self.find(head.idstr)?.subsection(subsection)?.1.vendor
    }

    fn vendor_id(&self, head: &V3Head<&[u8]>, subsection: &[u8]) -> Option<VendorId<'static>> {
        self.find(head.idstr)?.subsection(subsection)?.1.vendor_id
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
/// `split` measures and splits each body in one answer ([`BodySplit`]); a body it does not
/// know is measured by the RAM parser if it is `ram`, else refused. Every FULL section must be
/// split; START/PART/END bodies are carried opaque. The splitter's errors are returned as they
/// are; the converter's own become `P::Error`.
pub fn upgrade<P, S>(
    v3: &[u8],
    split: P,
    opts: &UpgradeOptions<'_>,
    out: &mut S,
) -> core::result::Result<(), P::Error>
where
    P: BodySplit,
    S: Sink<Error = crate::Error>,
{
    upgrade_from(v3, None, split, opts, out)
}

/// [`upgrade`] of the part of `v3` from offset `from` on, the header and configuration record
/// (at their place) having been converted already: a live writer sends the stream's first part
/// as it comes ([`upgrade_record`], [`live_head`], DATA records) and converts the rest here
/// once it has it whole, over a view of the stream whose bytes between the configuration and
/// `from` are not there (the codec's [`Records::resume_at`]). Writes neither header nor
/// configuration. `None` is [`upgrade`].
pub fn upgrade_from<P, S>(
    v3: &[u8],
    from: Option<usize>,
    split: P,
    opts: &UpgradeOptions<'_>,
    out: &mut S,
) -> core::result::Result<(), P::Error>
where
    P: BodySplit,
    S: Sink<Error = crate::Error>,
{
    upgrade_from_at(v3, from, 0, split, opts, out, &mut |_| {})
}

/// [`upgrade_from`] of a stream at file offset `file_offset` of its file (a libvirt save
/// image, `migrate file:PATH,offset=N`): a mapped-ram stream's headers hold file offsets
/// ([`RamOptions::file_offset`](crate::ram::RamOptions::file_offset)). Its RAM START body is
/// carried as it is, so the v4 stream's mapped-ram offsets are for the same place.
///
/// `reached` is called with the offset in `v3` the conversion has read up to: after each
/// record, at most [`MEASURE_WINDOW`](crate::ram::MEASURE_WINDOW) bytes (and a record) apart
/// while a `ram` body is measured, and after each [`OPAQUE_PIECE`] of an opaque body written.
/// The offsets go back once for each body that is measured and then written (the write is a
/// second pass over it). A caller whose input is a mapped file releases what lies behind.
pub fn upgrade_from_at<P, S>(
    v3: &[u8],
    from: Option<usize>,
    file_offset: u64,
    mut split: P,
    opts: &UpgradeOptions<'_>,
    out: &mut S,
    reached: &mut dyn FnMut(usize),
) -> core::result::Result<(), P::Error>
where
    P: BodySplit,
    S: Sink<Error = crate::Error>,
{
    let header = Header::new(opts.vendors, opts.crc)?;
    // Streams of machines older than QEMU 2.4 have no configuration record.
    // COMMAND records (SWITCHOVER_START in every stream of a machine type >= 10.0) are
    // carried as v4 COMMAND records (§12).
    let mut options = Options::for_stream(v3);
    options.ram.file_offset = file_offset;
    let mut walk = Records::with_options(v3, (), options);
    let mut ends = [0usize; MAX_SUBSECTIONS + 1];
    let mut resume = from;
    while let Some(next) = walk.next_head() {
        let rec = match next.map_err(Error::from)? {
            Next::Record(rec) => rec,
            Next::Section(head) => {
                let n = split.split(&head, walk.body_rest(&head), &mut ends)?;
                let ends = n.map(|n| ends.get(..n).unwrap_or(&ends));
                let len = match ends.and_then(<[usize]>::last) {
                    Some(&len) => Ok(len),
                    None => walk.measure_observed(&head, &mut *reached),
                };
                let rec = len.and_then(|len| walk.commit(&head, len));
                if let Record::Section(s) = rec.map_err(Error::from)?.record {
                    let tag = |name: &[u8]| {
                        let t = split.vendor_tag(&head, name)?;
                        Some((t, split.vendor_id(&head, name)))
                    };
                    upgrade_section(&s, ends, tag, &header, out, reached)?;
                }
                reached(walk.offset());
                continue;
            }
        };
        if let Some(pos) = resume {
            // The header, then the configuration record if the stream has one.
            let config_next = matches!(rec.record, Record::Header { .. })
                && v3.get(rec.end) == Some(&record::CONFIGURATION);
            if !config_next {
                walk.resume_at(pos).map_err(Error::from)?;
                resume = None;
            }
            continue;
        }
        if !matches!(rec.record, Record::Section(_)) {
            let bytes = v3.get(rec.offset..rec.end).unwrap_or(&[]);
            upgrade_record(bytes, &header, out).map_err(Error::from)?;
        }
        reached(walk.offset());
    }
    Ok(())
}

/// Writes the v4 form of `bytes`, one whole v3 record that is not a section (the file
/// header, configuration, COMMAND, EOF or VMDESCRIPTION trailer), in a stream with `header`.
/// The configuration and COMMAND payloads are carried verbatim, the trailer too.
pub fn upgrade_record<S: Sink<Error = crate::Error>>(
    bytes: &[u8],
    header: &Header<'_>,
    out: &mut S,
) -> crate::Result<()> {
    let payload = bytes.get(1..).unwrap_or(&[]);
    match bytes.first().copied() {
        Some(b'Q') => header.emit(out),
        Some(record::CONFIGURATION) => {
            emit_record(out, header.crc(), record::CONFIGURATION, payload)
        }
        Some(record::COMMAND) => emit_record(out, header.crc(), record::COMMAND, payload),
        Some(record::EOF) => out.write(&[record::EOF]),
        Some(record::VMDESCRIPTION) => {
            let json = payload.get(4..).unwrap_or(&[]);
            emit_frame(out, record::VMDESCRIPTION, json.len()).and_then(|()| out.write(json))
        }
        found => Err(crate::Error::new(
            out.position(),
            ErrorKind::UnexpectedRecord {
                found: found.unwrap_or(0),
            },
        )),
    }
}

/// Writes the v4 head of a v3 live section (START, PART or END: `head`) as a section record
/// with no data, in a stream with `header`: a live writer streams the data after it in DATA
/// records (§13), as it comes. Minors are 0 (a v3 stream has no vendor features).
pub fn live_head<S: Sink<Error = crate::Error>>(
    head: &SectionHeaderRepr<'_>,
    header: &Header<'_>,
    out: &mut S,
) -> Result<()> {
    if head.kind == SectionKind::Full {
        return Err(crate::Error::new(
            out.position(),
            ErrorKind::UnexpectedRecord {
                found: head.kind.byte(),
            },
        )
        .into());
    }
    let minors = [0u16; MAX_LEVELS];
    let v4 = SectionHead {
        kind: head.kind,
        section_id: head.section_id,
        idstr: head.idstr,
        instance_id: head.instance_id,
        version_id: head.version_id,
        minors: minors.get(..header.levels()).unwrap_or(&[]),
    };
    Ok(emit_section(out, header.crc(), &v4, 0, |_| Ok(()))?)
}

/// How much of an opaque body (a RAM section's) [`upgrade_from_at`] writes between two
/// reports of the offset it reached.
pub const OPAQUE_PIECE: usize = 1 << 20;

/// Writes the v3 section `s` as a v4 section record: opaque unless FULL, else its fields and
/// one frame per top-level subsection at `ends` (the splitter's answer), tagged by `tag` (with
/// the vendor the tag names, when known: checked against the header's chain).
fn upgrade_section<S: Sink<Error = crate::Error>>(
    s: &SectionRecord<'_>,
    ends: Option<&[usize]>,
    tag: impl Fn(&[u8]) -> Option<(VendorTag, Option<VendorId<'static>>)>,
    header: &Header<'_>,
    out: &mut S,
    reached: &mut dyn FnMut(usize),
) -> Result<()> {
    let (levels, crc) = (header.levels(), header.crc());
    let mut minors = [0u16; MAX_LEVELS];
    if s.kind != SectionKind::Full {
        return Ok(emit_section(
            out,
            crc,
            &v4_head(s, &minors, levels),
            s.body.len(),
            |o| {
                let mut at = s.body_offset;
                for piece in s.body.chunks(OPAQUE_PIECE) {
                    o.write(piece)?;
                    at = at.saturating_add(piece.len());
                    reached(at);
                }
                Ok(())
            },
        )?);
    }
    let ends = ends.ok_or(Error::NotSplit {
        section: s.context(),
    })?;
    let mut subs = [None::<V3Sub<'_>>; MAX_SUBSECTIONS];
    let fields_len = check_split(s, ends, &mut subs).map_err(|e| e.in_section(s.context()))?;
    // The frames' lengths are bounded by the body's: the sums cannot overflow.
    let mut frames_len = 0usize;
    for sub in subs.iter_mut().flatten() {
        let tagged = tag(sub.name);
        sub.tag = tagged.map(|(t, _)| t);
        if let Some((t, Some(id))) = tagged {
            vendor_at(header, t.level, id, s)?;
        }
        if let Some(t) = sub.tag {
            let minor = usize::from(t.level)
                .checked_sub(1)
                .filter(|&i| i < levels)
                .and_then(|i| minors.get_mut(i))
                .ok_or(Error::BadVendorLevel {
                    offset: s.body_offset,
                    level: t.level,
                    levels: levels as u8,
                })?;
            *minor = (*minor).max(t.minor);
        }
        frames_len = frames_len.saturating_add(SubsectionFrame::frame_len(
            sub.name.len(),
            sub.tag.is_some(),
            sub.body.len(),
        ));
    }
    let fields = s.body.get(..fields_len).unwrap_or(&[]);
    let len = fields_len.saturating_add(4).saturating_add(frames_len);
    Ok(emit_section(
        out,
        crc,
        &v4_head(s, &minors, levels),
        len,
        |o| {
            o.write(&(fields_len as u32).to_be_bytes())?;
            o.write(fields)?;
            for sub in subs.iter().flatten() {
                SubsectionFrame::emit_head(o, sub.tag, sub.name, sub.version, sub.body.len())?;
                o.write(sub.body)?;
            }
            Ok(())
        },
    )?)
}

/// Checks that `header`'s chain has `id` at `level` (a tag naming its vendor), else the
/// [`ErrorKind::VendorMismatch`] that says where the chain has it, at the section's body.
fn vendor_at(
    header: &Header<'_>,
    level: u8,
    id: VendorId<'static>,
    s: &SectionRecord<'_>,
) -> Result<()> {
    if header.vendor(level).is_none_or(|v| v == id) {
        // No vendor at that level: the level check that follows reports it.
        return Ok(());
    }
    let at = (1..=MAX_LEVELS as u8)
        .find(|&l| header.vendor(l) == Some(id))
        .unwrap_or(0);
    Err(crate::Error::new(
        s.body_offset,
        ErrorKind::VendorMismatch { level, tag: id, at },
    )
    .in_section(s.context())
    .into())
}

/// The v4 head of the v3 section `s`, with the first `levels` of `minors`.
fn v4_head<'a>(
    s: &SectionRecord<'a>,
    minors: &'a [u16; MAX_LEVELS],
    levels: usize,
) -> SectionHead<'a> {
    SectionHead {
        kind: s.kind,
        section_id: s.section_id,
        idstr: s.idstr,
        instance_id: s.instance_id,
        version_id: s.version_id,
        // `levels <= MAX_LEVELS` (`Header::new`).
        minors: minors.get(..levels).unwrap_or(&[]),
    }
}

/// Checks a splitter's answer `ends` for the FULL section `s` and extracts the subsections;
/// returns the fields length.
fn check_split<'a>(
    s: &SectionRecord<'a>,
    ends: &[usize],
    subs: &mut [Option<V3Sub<'a>>; MAX_SUBSECTIONS],
) -> crate::Result<usize> {
    let (body, base) = (s.body, s.body_offset);
    let at = |at: usize| base.saturating_add(at);
    let bad = |offset: usize| crate::Error::new(at(offset), ErrorKind::BadDescription);
    let (&fields_len, rest) = ends.split_first().ok_or(bad(0))?;
    if ends.last() != Some(&body.len()) || fields_len > body.len() {
        return Err(bad(fields_len.min(body.len())));
    }
    // The section's vmsd name is the idstr without a qdev path prefix.
    let vmsd_name = s.idstr.rsplit(|&b| b == b'/').next().unwrap_or(s.idstr);
    let mut slots = subs.iter_mut();
    let mut start = fields_len;
    for &end in rest {
        let slot = slots.next().ok_or(crate::Error::new(
            at(start),
            ErrorKind::TooManySubsections {
                limit: MAX_SUBSECTIONS as u16,
            },
        ))?;
        let range = body.get(start..end).ok_or(bad(start))?;
        let mut r = Reader::new(range, at(start));
        let h = SubsectionHeader::read(&mut r)?;
        if !h.name.starts_with(vmsd_name) || h.name.len() <= vmsd_name.len() {
            return Err(bad(start));
        }
        *slot = Some(V3Sub {
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
    obstacle(v4, &mut |_| {})
}

/// [`downgrade_obstacle`], calling `reached` with the end of each record walked.
fn obstacle(v4: &[u8], reached: &mut dyn FnMut(usize)) -> Result<Option<Refusal>> {
    let mut vendors = super::wire::VendorChain::new();
    for rec in Records4::new(v4) {
        let rec = rec?;
        reached(rec.end);
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
        vendor: Name::new(
            usize::from(level)
                .checked_sub(1)
                .and_then(|i| vendors.get(i))
                .map_or(&[][..], |v| v.id.as_bytes()),
        ),
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
    let raised = (1..=u8::MAX).zip(s.minors.iter()).find(|(_, m)| **m != 0);
    Ok(raised.map(|(level, _)| refusal(s.offset, level, None)))
}

/// Converts the v4 stream `v4` to v3, writing to `out`: byte-identical to what a v3 writer
/// makes of the same state. Refuses ([`Error::Refused`]) before writing anything when a vendor
/// feature is in use (see [`downgrade_obstacle`]).
pub fn downgrade<S: Sink<Error = crate::Error>>(v4: &[u8], out: &mut S) -> Result<()> {
    downgrade_observed(v4, out, &mut |_| {})
}

/// [`downgrade`], calling `reached` with the end of each record read, in each of its two
/// passes (the check for vendor features, then the conversion): a caller whose input is a
/// mapped file releases what lies behind. The second pass starts behind the first's last
/// offset.
pub fn downgrade_observed<S: Sink<Error = crate::Error>>(
    v4: &[u8],
    out: &mut S,
    reached: &mut dyn FnMut(usize),
) -> Result<()> {
    if let Some(r) = obstacle(v4, reached)? {
        return Err(Error::Refused(r));
    }
    let mut d = Downgrader::new();
    // `obstacle` walked the whole stream and verified every checksum.
    for rec in Records4::verified(v4) {
        let rec = rec?;
        d.record(&rec.record, &[], out)?;
        reached(rec.end);
    }
    d.finish(out)
}

/// v4 → v3 one record at a time, for a reader that never holds the whole stream (a live
/// connection): [`downgrade`] is this over a whole buffer. Feed it every record in stream
/// order ([`Downgrader::record`]), then [`Downgrader::finish`].
///
/// A live section's v3 footer is written when the next record that is not one of its DATA
/// records (§13) comes, so its data may arrive in any number of pieces. Each section record is
/// checked for vendor features before any byte of it is written (the refusal of
/// [`downgrade_obstacle`], for that section); what went out before stays out, so a caller that
/// must write nothing on a refusal checks the whole stream first, as [`downgrade`] does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Downgrader {
    /// The live section whose footer is still to be written, and whether it is `ram` (whose
    /// RAM records are self-delimiting; any other live data must not hold its own footer).
    open: Option<(u32, bool)>,
}

impl Downgrader {
    /// A converter at the start of a stream.
    pub const fn new() -> Self {
        Downgrader { open: None }
    }

    /// Writes the v3 form of `rec`, a record of a walk that verified it ([`Records4`]).
    /// `vendors` is the stream's vendor chain (it only names the vendor of a refusal).
    pub fn record<S: Sink<Error = crate::Error>>(
        &mut self,
        rec: &Record4<'_>,
        vendors: &[Vendor<'_>],
        out: &mut S,
    ) -> Result<()> {
        if let Record4::Data {
            section_id,
            data,
            offset,
        } = *rec
        {
            // Other live data is delimited by its footer in v3, which only a whole record is
            // checked for: DATA records continue `ram` sections only.
            return match self.open {
                Some((id, true)) if id == section_id => Ok(out.write(data)?),
                _ => Err(crate::Error::new(
                    offset,
                    ErrorKind::UnexpectedRecord {
                        found: super::wire::record4::DATA,
                    },
                )
                .into()),
            };
        }
        self.finish(out)?;
        match rec {
            Record4::Header(_) => out.write(&header_bytes(VERSION_V3))?,
            Record4::Configuration(payload) => {
                out.write(&[record::CONFIGURATION])?;
                out.write(payload)?;
            }
            Record4::Section(s) => {
                let chain: super::wire::VendorChain<'_> =
                    vendors.iter().copied().take(MAX_LEVELS).collect();
                if let Some(r) = section_obstacle(s, &chain)? {
                    return Err(Error::Refused(r));
                }
                self.section(s, out)?;
            }
            Record4::Command(c) => c.emit(out)?,
            Record4::Ancillary { .. } | Record4::Data { .. } => {}
            Record4::Eof => out.write(&[record::EOF])?,
            Record4::Trailer(json) => Trailer { json }.emit(out)?,
        }
        Ok(())
    }

    /// Ends the stream: writes the footer of a live section still open.
    pub fn finish<S: Sink<Error = crate::Error>>(&mut self, out: &mut S) -> Result<()> {
        if let Some((id, _)) = self.open.take() {
            out.write(&footer_bytes(id))?;
        }
        Ok(())
    }

    fn section<S: Sink<Error = crate::Error>>(
        &mut self,
        s: &super::wire::Section<'_>,
        out: &mut S,
    ) -> Result<()> {
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
                let ram = s.idstr == b"ram";
                // RAM records are measured by the RAM parser; any other live data is found
                // by its footer in v3, so it must not contain one.
                if !ram && let Some(i) = find_footer(data, s.section_id) {
                    return Err(crate::Error::new(
                        offset.saturating_add(i),
                        ErrorKind::FooterInLiveData,
                    )
                    .in_section(s.context())
                    .into());
                }
                out.write(data)?;
                // The footer waits for the section's DATA records.
                self.open = Some((s.section_id, ram));
                return Ok(());
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
        Ok(out.write(&footer_bytes(s.section_id))?)
    }
}
