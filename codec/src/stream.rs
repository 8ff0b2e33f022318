//! Walking a whole v3 stream: a record iterator yielding borrowed slices.
//!
//! v3 section bodies carry no length, so the iterator asks a [`BodyLength`] resolver where each
//! VMState body ends: the destination's description tables ([`Schemas`]), a heuristic
//! [`FooterScan`], or anything the caller provides (the host tools use the stream's own
//! VMDESCRIPTION). `ram` bodies are self-delimiting and handled here. Every body is followed by
//! its footer, which the iterator checks, so a wrong length is detected at once.
//!
//! Stream-level hardening (untrusted-input §5): record bytes other than START/PART/END/FULL,
//! EOF and (with [`Options::allow_commands`]) COMMAND are refused at record position; a COMMAND
//! must be one QEMU knows with a length its loader accepts ([`Command`]); section ids are
//! unique; PART/END must
//! belong to a section opened by START and not yet ended; after EOF at most one trailer whose
//! length reaches exactly the end, then nothing. After the first error the iterator is fused.

use crate::error::{Error, ErrorKind, Name, RecordPosition, Result, SectionContext};
use crate::ram::{RamContext, RamOptions};
use crate::schema::Vmsd;
use crate::wire::command::CommandId;
use crate::wire::section::{SectionHeaderRepr, SectionKind, read_footer};
use crate::wire::{Command, Configuration, Reader, StreamHeader, Trailer, record};

/// What the iterator knows of a section when it asks for the body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionInfo<'a> {
    /// Record kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (for PART/END: the one its START carried).
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
    /// Version id.
    pub version_id: u32,
    /// Index of this section among the FULL/START sections of the stream (0-based), which is
    /// also its index in the VMDESCRIPTION `devices` array for FULL sections.
    pub ordinal: usize,
}

/// Tells the iterator where a VMState section body ends.
pub trait BodyLength {
    /// Returns the length of the body that starts at `rest[0]` (absolute offset `base`), or
    /// `None` if this resolver does not know the section.
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<usize>>;
}

/// Knows no section.
impl BodyLength for () {
    fn body_len(&mut self, _: &SectionInfo<'_>, _: &[u8], _: usize) -> Result<Option<usize>> {
        Ok(None)
    }
}

/// Tries `A`, then `B`.
impl<A: BodyLength, B: BodyLength> BodyLength for (A, B) {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<usize>> {
        match self.0.body_len(sec, rest, base)? {
            Some(n) => Ok(Some(n)),
            None => self.1.body_len(sec, rest, base),
        }
    }
}

impl<L: BodyLength + ?Sized> BodyLength for &mut L {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<usize>> {
        (**self).body_len(sec, rest, base)
    }
}

/// Whether a section idstr names `vmsd_name`: equal, or `path/` + name (qdev path prefix).
pub fn idstr_matches(idstr: &[u8], vmsd_name: &str) -> bool {
    let n = vmsd_name.as_bytes();
    idstr == n
        || (idstr.len() > n.len() && idstr.ends_with(n) && idstr[idstr.len() - n.len() - 1] == b'/')
}

/// Resolves body lengths from description tables by decoding the body structurally into a
/// caller-provided scratch buffer (at least as large as the largest state struct).
#[derive(Debug)]
pub struct Schemas<'s> {
    vmsds: &'s [&'static Vmsd],
    scratch: &'s mut [u8],
}

impl<'s> Schemas<'s> {
    /// Resolver over `vmsds`, using `scratch` as decode space.
    pub fn new(vmsds: &'s [&'static Vmsd], scratch: &'s mut [u8]) -> Self {
        Schemas { vmsds, scratch }
    }

    /// The table for an idstr, if any.
    pub fn find(&self, idstr: &[u8]) -> Option<&'static Vmsd> {
        self.vmsds
            .iter()
            .copied()
            .find(|v| idstr_matches(idstr, v.name))
    }
}

impl BodyLength for Schemas<'_> {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<usize>> {
        let Some(vmsd) = self.find(sec.idstr) else {
            return Ok(None);
        };
        let mut r = Reader::new(rest, base);
        crate::body::measure_body(vmsd, sec.version_id, &mut r, self.scratch).map(Some)
    }
}

/// Finds a body's end by scanning for its footer (`7e` + section id) followed by bytes that
/// start a valid record. A heuristic for sections nobody describes: a body containing those
/// exact bytes can fool it, so it is a fallback, never a loader. Work is linear in the body.
/// When the input ends before a footer is found the answer is "need more input"
/// ([`ErrorKind::Truncated`]): more bytes may bring the footer.
#[derive(Debug, Default, Clone, Copy)]
pub struct FooterScan;

impl BodyLength for FooterScan {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<usize>> {
        let footer = crate::wire::section::footer_bytes(sec.section_id);
        let mut from = 0;
        while let Some(i) = rest
            .get(from..)
            .and_then(|r| r.windows(5).position(|w| w == footer))
        {
            let at = from + i;
            if plausible_record_start(rest.get(at + 5..).unwrap_or(&[])) {
                return Ok(Some(at));
            }
            from = at + 1;
        }
        Err(Error::new(
            base + rest.len(),
            ErrorKind::Truncated {
                needed: 5,
                available: 0,
            },
        ))
    }
}

fn plausible_record_start(next: &[u8]) -> bool {
    match next.first() {
        // The footer is the last thing in the input: plausible only for a cut stream, which the
        // caller reports when it reads on.
        None => true,
        Some(&record::EOF) => matches!(next.get(1), None | Some(&record::VMDESCRIPTION)),
        Some(&b) if SectionKind::from_byte(b).is_some() => {
            SectionHeader::new_checked(next, 0).is_ok()
        }
        // A known command with a length QEMU accepts (its payload may not be buffered yet).
        Some(&record::COMMAND) => match next.get(1..5) {
            Some(&[c0, c1, l0, l1]) => CommandId::from_u16(u16::from_be_bytes([c0, c1]))
                .is_some_and(|id| id.payload_len().allows(u16::from_be_bytes([l0, l1]))),
            _ => false,
        },
        _ => false,
    }
}

use crate::wire::SectionHeader;

/// A section record with its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionRecord<'a> {
    /// Offset of the type byte.
    pub offset: usize,
    /// Kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (for PART/END, from the matching START).
    pub idstr: &'a [u8],
    /// Instance id (for PART/END, from the matching START).
    pub instance_id: u32,
    /// Version id (for PART/END, from the matching START).
    pub version_id: u32,
    /// Header length in bytes.
    pub header_len: usize,
    /// The body.
    pub body: &'a [u8],
    /// Absolute offset of `body[0]`.
    pub body_offset: usize,
    /// Index among the FULL/START sections of the stream (for PART/END: its START's).
    pub ordinal: usize,
}

impl SectionRecord<'_> {
    /// Context for errors about this section.
    pub fn context(&self) -> SectionContext {
        SectionContext {
            idstr: Name::new(self.idstr),
            instance_id: self.instance_id,
            section_id: self.section_id,
        }
    }

    /// Offset just past the footer.
    pub fn end(&self) -> usize {
        self.body_offset + self.body.len() + 5
    }

    /// Whether this is the `ram` section.
    pub fn is_ram(&self) -> bool {
        self.idstr == b"ram"
    }
}

/// One record of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// The file header.
    Header {
        /// File version (3).
        version: u32,
    },
    /// The configuration record.
    Configuration(Configuration<'a>),
    /// A section (START/PART/END/FULL) with its body; the footer has been checked.
    Section(SectionRecord<'a>),
    /// A command record.
    Command(Command<'a>),
    /// `QEMU_VM_EOF`.
    Eof,
    /// The VMDESCRIPTION trailer.
    Trailer(Trailer<'a>),
}

/// A record with its byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'a> {
    /// Offset of the record's first byte.
    pub offset: usize,
    /// Offset just past it.
    pub end: usize,
    /// The record.
    pub record: Record<'a>,
}

/// Iterator options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Require the configuration record after the header (QEMU's `send-configuration`, on for
    /// every machine newer than 2.3).
    pub require_configuration: bool,
    /// Accept COMMAND records ([`Command`]: known command numbers with the payload lengths
    /// QEMU's loader accepts). Off by default: a loader implements no command, and a QEMU 7.2
    /// stream written to a file carries none. Streams of machine types >= 10.0 carry
    /// SWITCHOVER_START; whether a destination knows a command is
    /// [`CommandId::known_by`](crate::wire::command::CommandId::known_by).
    pub allow_commands: bool,
    /// RAM options.
    pub ram: RamOptions,
    /// Every section record ends with a footer (`7e` + section id): QEMU's
    /// `send-section-footer`, on for every machine type newer than pc-*-2.2. Without footers a
    /// body's end comes from [`BodyLength`] alone (and the RAM parser for `ram`), unchecked.
    pub section_footers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            require_configuration: true,
            allow_commands: false,
            ram: RamOptions::default(),
            section_footers: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Configuration,
    Records,
    AfterEof,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct Open<'a> {
    section_id: u32,
    idstr: &'a [u8],
    instance_id: u32,
    version_id: u32,
    ordinal: usize,
}

/// Live sections open at once (START seen, END not yet). QEMU 7.2 on pc has one (`ram`).
pub const MAX_OPEN_SECTIONS: usize = 16;
const SEEN_IDS: usize = 4096;

/// Section-id bookkeeping shared by [`Records`] and the streaming decoder
/// ([`crate::io::Decoder`]): the ids START/FULL records already used (ids are unique in a
/// stream; below [`SEEN_IDS`] they are tracked) and the ordinal of the next one.
#[derive(Debug, Clone)]
pub(crate) struct SeenSections {
    seen: [u64; SEEN_IDS / 64],
    ordinal: usize,
}

impl SeenSections {
    pub(crate) const fn new() -> Self {
        SeenSections {
            seen: [0; SEEN_IDS / 64],
            ordinal: 0,
        }
    }

    /// What the iterator knows of a START/FULL section; a reused id is
    /// [`ErrorKind::DuplicateSection`]. `offset` is the record's first byte.
    pub(crate) fn full_info<'x>(
        &self,
        h: &SectionHeaderRepr<'x>,
        offset: usize,
    ) -> Result<SectionInfo<'x>> {
        let id = h.section_id as usize;
        if id < SEEN_IDS && self.seen[id / 64] & (1 << (id % 64)) != 0 {
            return Err(
                Error::new(offset + 1, ErrorKind::DuplicateSection).in_section(ctx(
                    h.idstr,
                    h.instance_id,
                    h.section_id,
                )),
            );
        }
        Ok(SectionInfo {
            kind: h.kind,
            section_id: h.section_id,
            idstr: h.idstr,
            instance_id: h.instance_id,
            version_id: h.version_id,
            ordinal: self.ordinal,
        })
    }

    /// Records a START/FULL section once its whole record parsed (so a cut record can be
    /// retried with more input).
    pub(crate) fn mark(&mut self, section_id: u32) {
        let id = section_id as usize;
        if id < SEEN_IDS {
            self.seen[id / 64] |= 1 << (id % 64);
        }
        self.ordinal += 1;
    }
}

/// Refuses a `ram` section whose version is not 4.
pub(crate) fn check_ram_version(info: &SectionInfo<'_>, offset: usize) -> Result<()> {
    if info.version_id != 4 {
        return Err(Error::new(
            offset,
            ErrorKind::RamVersion {
                found: info.version_id,
            },
        )
        .in_section(ctx(info.idstr, info.instance_id, info.section_id)));
    }
    Ok(())
}

/// Asks `lengths` where the VMState body at `r` ends, skips it and checks the footer (when the
/// stream has footers); returns the body length.
pub(crate) fn resolve_body<L: BodyLength>(
    lengths: &mut L,
    info: &SectionInfo<'_>,
    r: &mut Reader<'_>,
    footers: bool,
) -> Result<usize> {
    let context = ctx(info.idstr, info.instance_id, info.section_id);
    let body_offset = r.offset();
    let n = lengths
        .body_len(info, r.rest(), body_offset)
        .map_err(|e| e.in_section(context))?
        .ok_or(Error::new(body_offset, ErrorKind::BodyLengthUnknown).in_section(context))?;
    r.skip(n).map_err(|e| e.in_section(context))?;
    if footers {
        read_footer(r, info.section_id).map_err(|e| e.in_section(context))?;
    }
    Ok(n)
}

/// Whether a v3 stream's section records end with footers (QEMU's `send-section-footer`,
/// off for machine types up to pc-*-2.2, which also send no CONFIGURATION record). Told from
/// the first section record, as a reader must: a stream with a CONFIGURATION record has
/// footers; otherwise the first section (`ram`, measured by the RAM parser) is followed by its
/// footer or not. Anything else (an unreadable start) answers `true`, so the walk with footers
/// reports the real error.
pub fn probe_section_footers(bytes: &[u8]) -> bool {
    if bytes.get(8) == Some(&crate::wire::record::CONFIGURATION) {
        return true;
    }
    let options = Options {
        require_configuration: false,
        allow_commands: true,
        ..Options::default()
    };
    for rec in Records::with_options(bytes, (), options) {
        match rec {
            Ok(Located {
                record: Record::Section(_),
                ..
            }) => return true,
            Ok(_) => continue,
            Err(e) => return !matches!(e.kind, ErrorKind::MissingFooter { .. }),
        }
    }
    true
}

/// Walks a stream record by record.
#[derive(Debug, Clone)]
pub struct Records<'a, L> {
    buf: &'a [u8],
    pos: usize,
    phase: Phase,
    lengths: L,
    options: Options,
    open: heapless::Vec<Open<'a>, MAX_OPEN_SECTIONS>,
    seen: SeenSections,
    ram: RamContext<'a>,
}

impl<'a, L: BodyLength> Records<'a, L> {
    /// Walks `buf` with default options, asking `lengths` for body ends.
    pub fn new(buf: &'a [u8], lengths: L) -> Self {
        Self::with_options(buf, lengths, Options::default())
    }

    /// Walks `buf` with `options`.
    pub fn with_options(buf: &'a [u8], lengths: L, options: Options) -> Self {
        Records {
            buf,
            pos: 0,
            phase: Phase::Header,
            lengths,
            options,
            open: heapless::Vec::new(),
            seen: SeenSections::new(),
            ram: RamContext::new(options.ram),
        }
    }

    /// Offset of the next record.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The RAM parsing state (block list once the START section was read).
    pub fn ram(&self) -> &RamContext<'a> {
        &self.ram
    }

    /// The resolver.
    pub fn lengths(&mut self) -> &mut L {
        &mut self.lengths
    }

    /// A copy of this iterator's state over a shorter view of the same stream (the first `len`
    /// bytes), to re-run the next record against a truncated input.
    pub fn truncated_to(&self, len: usize) -> Self
    where
        L: Clone,
    {
        let mut c = self.clone();
        c.buf = &self.buf[..len.min(self.buf.len())];
        c
    }

    fn fail(&mut self, e: Error) -> Option<Result<Located<'a>>> {
        self.phase = Phase::Done;
        Some(Err(e))
    }

    fn step(&mut self) -> Result<Option<Located<'a>>> {
        let mut r = Reader::new(self.buf, 0);
        r.skip(self.pos)?;
        let offset = self.pos;
        let record = match self.phase {
            Phase::Done => return Ok(None),
            Phase::Header => {
                let h = StreamHeader::new_checked(r.bytes(StreamHeader::<&[u8]>::LEN)?)?;
                let version = h.validate()?;
                if version != crate::wire::header::VERSION_V3 {
                    return Err(Error::new(
                        4,
                        ErrorKind::UnsupportedFileVersion { found: version },
                    ));
                }
                self.phase = if self.options.require_configuration {
                    Phase::Configuration
                } else {
                    Phase::Records
                };
                Record::Header { version }
            }
            Phase::Configuration => {
                let c = Configuration::read(&mut r)?;
                for cap in c.capabilities.iter().flat_map(|c| c.iter()) {
                    if cap == b"x-ignore-shared" {
                        self.ram.options.ignore_shared = true;
                    }
                }
                self.phase = Phase::Records;
                Record::Configuration(c)
            }
            Phase::Records => {
                let b = r.peek(0).ok_or(r.error(ErrorKind::Truncated {
                    needed: 1,
                    available: 0,
                }))?;
                match b {
                    record::EOF => {
                        r.skip(1)?;
                        self.phase = Phase::AfterEof;
                        Record::Eof
                    }
                    record::COMMAND if self.options.allow_commands => {
                        Record::Command(Command::read(&mut r)?)
                    }
                    _ if SectionKind::from_byte(b).is_some() => {
                        Record::Section(self.section(&mut r)?)
                    }
                    found => {
                        return Err(r.error(ErrorKind::UnknownRecordType {
                            found,
                            expected: RecordPosition::V3Records {
                                commands: self.options.allow_commands,
                            },
                        }));
                    }
                }
            }
            Phase::AfterEof => {
                if r.remaining() == 0 {
                    self.phase = Phase::Done;
                    return Ok(None);
                }
                let at = r.offset();
                if r.peek(0) != Some(record::VMDESCRIPTION) {
                    return Err(Error::new(
                        at,
                        ErrorKind::TrailingBytes {
                            count: r.remaining(),
                        },
                    ));
                }
                let t = Trailer::read(&mut r)?;
                if r.remaining() != 0 {
                    return Err(r.error(ErrorKind::TrailingBytes {
                        count: r.remaining(),
                    }));
                }
                // Every reader must take this trailer as the description (issue 13 item 11).
                let located = Trailer::locate(self.buf);
                if located != Some(at) {
                    return Err(Error::new(at, ErrorKind::TrailerAmbiguous { located }));
                }
                self.phase = Phase::Done;
                Record::Trailer(t)
            }
        };
        self.pos = r.position();
        Ok(Some(Located {
            offset,
            end: self.pos,
            record,
        }))
    }

    fn section(&mut self, r: &mut Reader<'a>) -> Result<SectionRecord<'a>> {
        let offset = r.offset();
        let h = SectionHeaderRepr::read(r)?;
        let header_len = r.offset() - offset;
        let info = if h.kind.has_full_header() {
            self.seen.full_info(&h, offset)?
        } else {
            let open = self
                .open
                .iter()
                .find(|o| o.section_id == h.section_id)
                .ok_or(Error::new(
                    offset + 1,
                    ErrorKind::UnknownSectionId {
                        found: h.section_id,
                    },
                ))?;
            SectionInfo {
                kind: h.kind,
                section_id: h.section_id,
                idstr: open.idstr,
                instance_id: open.instance_id,
                version_id: open.version_id,
                ordinal: open.ordinal,
            }
        };
        let context = ctx(info.idstr, info.instance_id, info.section_id);
        let body_offset = r.offset();
        let len = if info.idstr == b"ram" {
            check_ram_version(&info, offset)?;
            let n = self
                .ram
                .measure_body(r)
                .map_err(|e| e.in_section(context))?;
            if self.options.section_footers {
                read_footer(r, info.section_id).map_err(|e| e.in_section(context))?;
            }
            n
        } else {
            resolve_body(&mut self.lengths, &info, r, self.options.section_footers)?
        };
        let body = &r.buffer()[body_offset..body_offset + len];
        // Bookkeeping only after the whole record parsed, so a truncated record can be retried.
        match h.kind {
            SectionKind::Start => {
                self.open
                    .push(Open {
                        section_id: info.section_id,
                        idstr: info.idstr,
                        instance_id: info.instance_id,
                        version_id: info.version_id,
                        ordinal: info.ordinal,
                    })
                    .map_err(|_| {
                        Error::new(
                            offset,
                            ErrorKind::BufferTooSmall {
                                needed: MAX_OPEN_SECTIONS + 1,
                                capacity: MAX_OPEN_SECTIONS,
                            },
                        )
                        .in_section(context)
                    })?;
            }
            SectionKind::End => {
                if let Some(i) = self
                    .open
                    .iter()
                    .position(|o| o.section_id == info.section_id)
                {
                    self.open.swap_remove(i);
                }
            }
            _ => {}
        }
        if h.kind.has_full_header() {
            self.seen.mark(h.section_id);
        }
        Ok(SectionRecord {
            offset,
            kind: h.kind,
            section_id: info.section_id,
            idstr: info.idstr,
            instance_id: info.instance_id,
            version_id: info.version_id,
            header_len,
            body,
            body_offset,
            ordinal: info.ordinal,
        })
    }
}

pub(crate) fn ctx(idstr: &[u8], instance_id: u32, section_id: u32) -> SectionContext {
    SectionContext {
        idstr: Name::new(idstr),
        instance_id,
        section_id,
    }
}

impl<'a, L: BodyLength> Iterator for Records<'a, L> {
    type Item = Result<Located<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(rec)) => Some(Ok(rec)),
            Ok(None) => {
                self.phase = Phase::Done;
                None
            }
            Err(e) => self.fail(e),
        }
    }
}
