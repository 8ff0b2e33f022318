//! Walking a whole v3 stream: a record iterator yielding borrowed slices, built on the stream
//! [`Machine`] (which holds the stream-level rules, docs/UNTRUSTED-INPUT.md §5).
//!
//! v3 section bodies carry no length, so the iterator asks a [`BodyLength`] resolver where each
//! VMState body ends: the destination's description tables ([`Schemas`]), a heuristic
//! [`FooterScan`], or anything the caller provides. `ram` bodies are self-delimiting and
//! measured by the RAM parser. A caller that decodes bodies anyway takes section heads instead
//! ([`Records::next_head`]), decodes each body once and tells the walk its length
//! ([`Records::commit`]). Every body is followed by its footer, which the walk checks, so a
//! wrong length is detected at once. A trailer must reach exactly the end of the input. After
//! the first error the iterator is fused.

// Offsets are sums of lengths of bytes held in the input slice and cannot overflow; the input
// is indexed through `get`.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::error::{Error, ErrorKind, Result, SectionContext};
use crate::machine::{Head, Machine, Phase, SectionHead, Step};
use crate::ram::{RamContext, RamOptions};
use crate::schema::Vmsd;
use crate::wire::command::CommandId;
use crate::wire::section::SectionKind;
use crate::wire::{Command, Configuration, Reader, Trailer, record};

pub use crate::machine::MAX_OPEN_SECTIONS;

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
        || idstr
            .strip_suffix(n)
            .is_some_and(|p| p.last() == Some(&b'/'))
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
        let mut from = 0;
        while let Some(i) = rest
            .get(from..)
            .and_then(|r| crate::wire::section::find_footer(r, sec.section_id))
        {
            let at = from.saturating_add(i);
            if plausible_record_start(rest.get(at.saturating_add(5)..).unwrap_or(&[])) {
                return Ok(Some(at));
            }
            from = at.saturating_add(1);
        }
        Err(Error::new(
            base.saturating_add(rest.len()),
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
///
/// ```
/// use vmstate::stream::{FooterScan, Record, Records};
/// static STREAM: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
/// let timer = Records::new(STREAM, FooterScan)
///     .find_map(|r| match r.ok()?.record {
///         Record::Section(s) if s.idstr == b"timer" => Some(s),
///         _ => None,
///     })
///     .unwrap();
/// assert_eq!((timer.instance_id, timer.version_id, timer.body.len()), (0, 2, 24));
/// assert_eq!(timer.end(), timer.body_offset + timer.body.len() + 5);
/// ```
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
        crate::machine::ctx(self.idstr, self.instance_id, self.section_id)
    }

    /// Offset just past the footer.
    pub fn end(&self) -> usize {
        self.body_offset
            .saturating_add(self.body.len())
            .saturating_add(5)
    }

    /// Whether this is the `ram` section.
    pub fn is_ram(&self) -> bool {
        self.idstr == b"ram"
    }
}

/// One record of a stream.
///
/// ```
/// use vmstate::stream::{FooterScan, Record, Records};
/// static STREAM: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
/// let mut records = Records::new(STREAM, FooterScan);
/// assert_eq!(records.next().unwrap()?.record, Record::Header { version: 3 });
/// assert!(matches!(records.next().unwrap()?.record, Record::Configuration(c) if c.machine == b"pc-i440fx-7.2"));
/// # Ok::<(), vmstate::Error>(())
/// ```
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

impl Options {
    /// Options for a stream file as some QEMU wrote it, told from its first bytes (at least 9):
    /// the CONFIGURATION record is required when the stream starts with one (machine types up
    /// to 2.3 send none), and COMMAND records are accepted.
    pub fn for_stream(start: &[u8]) -> Options {
        Options {
            require_configuration: start.get(8) == Some(&record::CONFIGURATION),
            allow_commands: true,
            ..Options::default()
        }
    }
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

/// What [`Records::next_head`] found: a whole record, or a section's head (the caller
/// measures its body and calls [`Records::commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next<'a> {
    /// A record other than a section, whole.
    Record(Located<'a>),
    /// A section header; the body starts at [`SectionHead::body_offset`].
    Section(SectionHead<&'a [u8]>),
}

/// Walks a stream record by record: the [`Machine`] over a slice. As an iterator it measures
/// bodies with `L` (and RAM bodies with the RAM parser); [`Records::next_head`] and
/// [`Records::commit`] leave measuring to the caller instead.
///
/// ```
/// use vmstate::stream::{FooterScan, Record, Records};
/// static STREAM: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
/// // Every record of a real QEMU 7.2 stream; no allocation, each body a borrowed slice.
/// let mut sections = 0;
/// for rec in Records::new(STREAM, FooterScan) {
///     if let Record::Section(_) = rec?.record {
///         sections += 1;
///     }
/// }
/// assert!(sections > 30);
/// // A cut stream: an error with its offset, never a panic.
/// let cut = &STREAM[..1000];
/// assert!(Records::new(cut, FooterScan).any(|r| r.is_err_and(|e| e.offset <= 1000)));
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Records<'a, L> {
    buf: &'a [u8],
    pos: usize,
    machine: Machine<&'a [u8]>,
    lengths: L,
    ram: RamContext<'a>,
}

impl<'a, L> Records<'a, L> {
    /// Walks `buf` with default options, asking `lengths` for body ends.
    pub fn new(buf: &'a [u8], lengths: L) -> Self {
        Self::with_options(buf, lengths, Options::default())
    }

    /// Walks `buf` with `options`.
    pub fn with_options(buf: &'a [u8], lengths: L, options: Options) -> Self {
        Records {
            buf,
            pos: 0,
            machine: Machine::new(options),
            lengths,
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

    /// The RAM parsing state, for a caller that reads a `ram` body itself (between
    /// [`Records::next_head`] and [`Records::commit`]).
    pub fn ram_mut(&mut self) -> &mut RamContext<'a> {
        &mut self.ram
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
        c.buf = self.buf.get(..len).unwrap_or(self.buf);
        c
    }

    /// Continues the walk at `pos`, past bytes another reader already walked: the validating
    /// proxy reads a live stream's RAM phase record by record as it arrives, and hands the
    /// held final phase to this walker over a view whose bytes before `pos` (except the
    /// header and CONFIGURATION already read) are not there. Only between records, with no
    /// section open, forwards and inside the input; otherwise [`ErrorKind::TrailingBytes`] at
    /// the current offset. The RAM state is not carried over (a RAM record after `pos` needs
    /// its START, which is before it), and section ordinals ([`SectionInfo::ordinal`]) count
    /// the sections this walk read.
    pub fn resume_at(&mut self, pos: usize) -> Result<()> {
        let between = self.machine.phase() == Phase::Records && self.machine.open_sections() == 0;
        if !between || pos < self.pos || pos > self.buf.len() {
            return Err(Error::new(
                self.pos,
                ErrorKind::TrailingBytes {
                    count: self.buf.len().saturating_sub(self.pos),
                },
            ));
        }
        self.pos = pos;
        Ok(())
    }

    /// The input from `head`'s body to the end: a caller measures the body in it.
    pub fn body_rest(&self, head: &SectionHead<&'a [u8]>) -> &'a [u8] {
        self.buf.get(head.body_offset()..).unwrap_or(&[])
    }

    fn fail<T>(&mut self, e: Error) -> Result<T> {
        self.machine.stop();
        Err(e)
    }

    /// The next record, or the head of the next section; `None` at the end (and after an
    /// error: the walk is fused).
    pub fn next_head(&mut self) -> Option<Result<Next<'a>>> {
        let offset = self.pos;
        let input = self.buf.get(offset..).unwrap_or(&[]);
        let (len, head) = match self.machine.step(input, offset, true) {
            Err(e) => return Some(self.fail(e)),
            // `at_eof` is set: no `NeedMore`.
            Ok(Step::Done | Step::NeedMore) => return None,
            Ok(Step::Item { len, head }) => (len, head),
        };
        let mut end = offset.saturating_add(len);
        let record = match head {
            Head::Section(h) => return Some(Ok(Next::Section(h))),
            Head::Header { version } => Record::Header { version },
            Head::Configuration(c) => {
                self.ram.options.ignore_shared = self.machine.options().ram.ignore_shared;
                self.ram.options.mapped_ram = self.machine.options().ram.mapped_ram;
                Record::Configuration(c)
            }
            Head::Command(c) => Record::Command(c),
            Head::Eof => Record::Eof,
            Head::TrailerStart { len } => match self.trailer(offset, end, len as usize) {
                Ok((t, e)) => {
                    end = e;
                    Record::Trailer(t)
                }
                Err(e) => return Some(self.fail(e)),
            },
            // `trailer` takes the JSON with its head.
            Head::TrailerData => return None,
        };
        self.pos = end;
        Some(Ok(Next::Record(Located {
            offset,
            end,
            record,
        })))
    }

    /// The trailer whose head (at `at`) ends at `json_at`: all its JSON, then the end of the
    /// input; every reader must take it as the description (issue 13 item 11).
    fn trailer(&mut self, at: usize, json_at: usize, len: usize) -> Result<(Trailer<'a>, usize)> {
        let mut r = Reader::new(self.buf, 0);
        r.skip(json_at)?;
        let json = r.bytes(len)?;
        if len != 0 {
            self.machine.step(json, json_at, true)?;
        }
        self.machine.step(r.rest(), r.offset(), true)?;
        let located = Trailer::locate(self.buf);
        if located != Some(at) {
            return Err(Error::new(at, ErrorKind::TrailerAmbiguous { located }));
        }
        Ok((Trailer { json }, r.offset()))
    }

    /// Ends the section `head` after `body_len` body bytes: checks its footer, books it, and
    /// returns the whole record. An error fuses the walk.
    pub fn commit(&mut self, head: &SectionHead<&'a [u8]>, body_len: usize) -> Result<Located<'a>> {
        let context = head.context();
        let body_offset = head.body_offset();
        let mut r = Reader::new(self.buf, 0);
        let body = r
            .skip(body_offset)
            .and_then(|()| r.bytes(body_len))
            .map_err(|e| e.in_section(context));
        let body = match body.and_then(|b| self.machine.footer(head, &mut r).map(|()| b)) {
            Ok(b) => b,
            Err(e) => return self.fail(e),
        };
        self.machine.commit(head);
        self.pos = r.position();
        Ok(Located {
            offset: head.offset,
            end: self.pos,
            record: Record::Section(head.record(body)),
        })
    }
}

impl<'a, L: BodyLength> Records<'a, L> {
    /// Where `head`'s body ends: the RAM parser for `ram`, the resolver for anything else.
    pub fn measure(&mut self, head: &SectionHead<&'a [u8]>) -> Result<usize> {
        self.measure_observed(head, |_| {})
    }

    /// [`Records::measure`], calling `reached` with the input offset after each RAM record
    /// of a `ram` body ([`RamContext::measure_body_observed`]).
    pub fn measure_observed(
        &mut self,
        head: &SectionHead<&'a [u8]>,
        reached: impl FnMut(usize),
    ) -> Result<usize> {
        let rest = self.body_rest(head);
        if head.is_ram() {
            return self
                .ram
                .measure_body_observed(&mut Reader::new(rest, head.body_offset()), reached)
                .map_err(|e| e.in_section(head.context()));
        }
        body_len(&mut self.lengths, head, rest)
    }
}

/// Asks `lengths` where `head`'s body, at the start of `rest`, ends; a section it does not
/// know is [`ErrorKind::BodyLengthUnknown`].
pub(crate) fn body_len<L: BodyLength, I: AsRef<[u8]>>(
    lengths: &mut L,
    head: &SectionHead<I>,
    rest: &[u8],
) -> Result<usize> {
    let context = head.context();
    let body_offset = head.body_offset();
    lengths
        .body_len(&head.info(), rest, body_offset)
        .map_err(|e| e.in_section(context))?
        .ok_or(Error::new(body_offset, ErrorKind::BodyLengthUnknown).in_section(context))
}

impl<'a, L: BodyLength> Iterator for Records<'a, L> {
    type Item = Result<Located<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_head()? {
            Ok(Next::Record(l)) => Some(Ok(l)),
            Ok(Next::Section(head)) => Some(match self.measure(&head) {
                Ok(n) => self.commit(&head, n),
                Err(e) => self.fail(e),
            }),
            Err(e) => Some(Err(e)),
        }
    }
}
