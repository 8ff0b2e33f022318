//! The stream machine: the one sans-IO state machine every stream reader is built on.
//!
//! [`Machine::step`] takes the unread input (and whether more can come) and answers with
//! [`Step::NeedMore`], one record head ([`Step::Item`]) or an error. It owns what a stream
//! reader must know between records: the [`Phase`], the file header check, the CONFIGURATION
//! record's x-ignore-shared capability, and the section-id bookkeeping ([`Sections`]: ids
//! used, sections open, the ordinal of the next one). It does not find where a section body
//! ends: for a [`Head::Section`] the caller measures (decodes) the body itself, then reports
//! it with [`Machine::commit`]; until then the machine has not moved, so a caller short of
//! input can step again and get the same head.
//!
//! * [`crate::stream::Records`] (whole stream in a slice) steps with `at_eof` set and measures
//!   bodies with a [`BodyLength`](crate::stream::BodyLength), or hands the head to its caller
//!   ([`crate::stream::Records::next_head`]).
//! * [`crate::io::Decoder`] (push decoder over a small buffer) steps with `at_eof` unset until
//!   the input ends, and streams RAM records and the trailer in pieces.
//! * [`crate::v4::wire::Records4`] reads v4 frames (length prefixes, CRC-32C), its own header
//!   and its whole trailer, and takes the rules between them from a [`Machine::v4`]:
//!   what a record's type byte may be where the walk is ([`Machine::record`], then
//!   [`Machine::passed`]) and the section-id rules ([`Sections::admit`] and
//!   [`Sections::commit`] of [`Machine::sections`]).
//!
//! Stream-level hardening (docs/UNTRUSTED-INPUT.md §5): record bytes other than START/PART/END/FULL,
//! EOF and (with [`Options::allow_commands`]) COMMAND are refused at record position; a COMMAND
//! must be one QEMU knows with a length its loader accepts ([`Command`]); section ids are
//! unique; PART/END must belong to a section opened by START and not yet ended; after EOF at
//! most one trailer, then nothing.

// Offsets are sums of lengths of bytes held in memory and cannot overflow; indexing goes
// through `get`.
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::error::{Error, ErrorKind, Name, RecordPosition, Result, SectionContext};
use crate::stream::{Options, SectionInfo};
use crate::v4::Minors;
use crate::wire::section::{SectionHeaderRepr, SectionKind, read_footer};
use crate::wire::{Command, Configuration, Reader, StreamHeader, Trailer, record};

/// Live sections open at once (START seen, END not yet). QEMU 7.2 on pc has one (`ram`).
pub const MAX_OPEN_SECTIONS: usize = 16;
/// Section ids below this are tracked for reuse.
const SEEN_IDS: usize = 4096;

/// Where a walk is in the stream grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the file header.
    Header,
    /// After the header, before the CONFIGURATION record.
    Configuration,
    /// Section, command and EOF records.
    Records,
    /// After EOF: a trailer or the end.
    AfterEof,
    /// Inside the trailer's JSON, `left` bytes to go.
    Trailer {
        /// JSON bytes still to come.
        left: usize,
    },
    /// After the trailer: only the end.
    AfterTrailer,
    /// The end, or after an error.
    Done,
}

/// A section opened by START and not yet ended. `I` holds its idstr (a borrowed slice, or a
/// copy where the input buffer is reused).
#[derive(Debug, Clone)]
pub struct Open<I> {
    /// Section id.
    pub section_id: u32,
    /// idstr.
    pub idstr: I,
    /// Instance id.
    pub instance_id: u32,
    /// Version id.
    pub version_id: u32,
    /// Index among the FULL/START sections of the stream.
    pub ordinal: usize,
    /// Minor per vendor level (v4; empty in v3).
    pub minors: Minors,
}

/// What a record's type byte is where the walk is ([`Machine::record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// The configuration record.
    Configuration,
    /// A COMMAND record.
    Command,
    /// `QEMU_VM_EOF`.
    Eof,
    /// A section record.
    Section(SectionKind),
    /// A v4 ancillary record (`0x80..=0xff`) to skip.
    Ancillary,
}

/// What [`Sections::admit`] found for a section record's id.
#[derive(Debug, Clone, Copy)]
pub enum Admitted<'m, I> {
    /// A START/FULL with a fresh id, and its ordinal.
    New(usize),
    /// A PART/END of this open section.
    Continues(&'m Open<I>),
}

/// Section-id bookkeeping: the ids START/FULL records used (ids are unique in a stream; below
/// 4096 they are tracked), the sections open, and the ordinal of the next START/FULL.
#[derive(Debug, Clone)]
pub struct Sections<I> {
    open: heapless::Vec<Open<I>, MAX_OPEN_SECTIONS>,
    seen: [u64; SEEN_IDS / 64],
    ordinal: usize,
}

impl<I> Default for Sections<I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I> Sections<I> {
    /// No section seen.
    pub const fn new() -> Self {
        Sections {
            open: heapless::Vec::new(),
            seen: [0; SEEN_IDS / 64],
            ordinal: 0,
        }
    }

    fn seen_bit(section_id: u32) -> Option<(usize, u64)> {
        let id = usize::try_from(section_id)
            .ok()
            .filter(|&id| id < SEEN_IDS)?;
        Some((id / 64, 1u64 << (id % 64)))
    }

    /// The section-id rules: a START/FULL must use an id no section used before (it gets the
    /// next ordinal), else [`ErrorKind::DuplicateSection`]; a PART/END must continue an open
    /// section, else [`ErrorKind::UnknownSectionId`]. A refusal is at `id_at` (the id field's
    /// offset); a reused id's carries `context()` (v3 reads the whole header first; v4 checks
    /// the id before the name, with none). Books nothing ([`Sections::commit`]).
    pub fn admit(
        &self,
        kind: SectionKind,
        section_id: u32,
        id_at: usize,
        context: impl FnOnce() -> Option<SectionContext>,
    ) -> Result<Admitted<'_, I>> {
        if !kind.has_full_header() {
            return self
                .find(section_id)
                .map(Admitted::Continues)
                .ok_or(Error::new(
                    id_at,
                    ErrorKind::UnknownSectionId { found: section_id },
                ));
        }
        if let Some((word, bit)) = Self::seen_bit(section_id)
            && self.seen.get(word).is_some_and(|w| w & bit != 0)
        {
            return Err(Error {
                section: context(),
                ..Error::new(id_at, ErrorKind::DuplicateSection)
            });
        }
        Ok(Admitted::New(self.ordinal))
    }

    /// The open section `section_id`, if any.
    pub fn find(&self, section_id: u32) -> Option<&Open<I>> {
        self.open.iter().find(|o| o.section_id == section_id)
    }

    /// Whether a START may open one more section; the error is at `at` (the record's offset).
    pub fn room(&self, at: usize) -> Result<()> {
        if self.open.is_full() {
            return Err(Error::new(
                at,
                ErrorKind::BufferTooSmall {
                    needed: MAX_OPEN_SECTIONS.saturating_add(1),
                    capacity: MAX_OPEN_SECTIONS,
                },
            ));
        }
        Ok(())
    }

    /// Books a section record once all of it was read (so a cut record can be retried): a
    /// START opens `open`, an END closes its section, a START/FULL uses its id and ordinal.
    /// A START beyond [`MAX_OPEN_SECTIONS`] is the error of [`Sections::room`].
    pub fn commit(&mut self, kind: SectionKind, open: Open<I>, at: usize) -> Result<()> {
        let section_id = open.section_id;
        match kind {
            SectionKind::Start => {
                self.room(at)?;
                // Cannot fail: there is room.
                let _ = self.open.push(open);
            }
            SectionKind::End => {
                if let Some(i) = self.open.iter().position(|o| o.section_id == section_id) {
                    self.open.swap_remove(i);
                }
            }
            _ => {}
        }
        if kind.has_full_header() {
            if let Some((word, bit)) = Self::seen_bit(section_id)
                && let Some(w) = self.seen.get_mut(word)
            {
                *w |= bit;
            }
            self.ordinal = self.ordinal.saturating_add(1);
        }
        Ok(())
    }
}

/// Whether a CONFIGURATION record announces QEMU's x-ignore-shared capability (shared RAM
/// blocks are then not sent, and their RAM records carry the block's host address).
pub fn ignores_shared(c: &Configuration<'_>) -> bool {
    c.capabilities
        .iter()
        .flat_map(|c| c.iter())
        .any(|cap| cap == b"x-ignore-shared")
}

/// A v3 section header, with what its START said for PART/END. The body follows.
///
/// See [`Machine`]'s example for a whole walk.
///
/// ```
/// use vmstate::machine::Head;
/// use vmstate::stream::Options;
/// use vmstate::{Machine, Step};
/// let options = Options { require_configuration: false, ..Options::default() };
/// let mut m: Machine<&[u8]> = Machine::new(options);
/// let Step::Item { len, .. } = m.step(b"QEVM\0\0\0\x03", 0, false)? else { unreachable!() };
/// // FULL section `a`: id 1, instance 0, version 1.
/// let full = b"\x04\0\0\0\x01\x01a\0\0\0\0\0\0\0\x01";
/// let Step::Item { head: Head::Section(h), .. } = m.step(full, len, false)? else { unreachable!() };
/// assert_eq!((h.idstr, h.section_id, h.version_id, h.ordinal), (&b"a"[..], 1, 1, 0));
/// assert_eq!(h.body_offset(), 8 + 15); // the body follows the 15-byte header
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHead<I> {
    /// Offset of the type byte.
    pub offset: usize,
    /// Kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (for PART/END: the one its START carried).
    pub idstr: I,
    /// Instance id (for PART/END: from the START).
    pub instance_id: u32,
    /// Version id (for PART/END: from the START).
    pub version_id: u32,
    /// Header length in bytes.
    pub header_len: usize,
    /// Index of this section among the FULL/START sections of the stream (for PART/END: its
    /// START's), which is also its index in the VMDESCRIPTION `devices` array for FULL
    /// sections.
    pub ordinal: usize,
}

impl<I: AsRef<[u8]>> SectionHead<I> {
    /// Offset of the body's first byte.
    pub fn body_offset(&self) -> usize {
        self.offset.saturating_add(self.header_len)
    }

    /// Whether this is the `ram` section (its body is RAM records, self-delimiting).
    pub fn is_ram(&self) -> bool {
        self.idstr.as_ref() == b"ram"
    }

    /// Context for errors about this section.
    pub fn context(&self) -> SectionContext {
        ctx(self.idstr.as_ref(), self.instance_id, self.section_id)
    }

    /// What a [`BodyLength`](crate::stream::BodyLength) is told of the section.
    pub fn info(&self) -> SectionInfo<'_> {
        SectionInfo {
            kind: self.kind,
            section_id: self.section_id,
            idstr: self.idstr.as_ref(),
            instance_id: self.instance_id,
            version_id: self.version_id,
            ordinal: self.ordinal,
        }
    }
}

impl<'a> SectionHead<&'a [u8]> {
    /// The whole section record, with `body` (which starts at [`SectionHead::body_offset`]).
    pub fn record(&self, body: &'a [u8]) -> crate::SectionRecord<'a> {
        crate::SectionRecord {
            offset: self.offset,
            kind: self.kind,
            section_id: self.section_id,
            idstr: self.idstr,
            instance_id: self.instance_id,
            version_id: self.version_id,
            header_len: self.header_len,
            body,
            body_offset: self.body_offset(),
            ordinal: self.ordinal,
        }
    }
}

/// What a record starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head<'x, I> {
    /// The file header (version 3).
    Header {
        /// File version.
        version: u32,
    },
    /// The configuration record.
    Configuration(Configuration<'x>),
    /// A command record.
    Command(Command<'x>),
    /// `QEMU_VM_EOF`.
    Eof,
    /// A section header; the caller measures the body and calls [`Machine::commit`].
    Section(SectionHead<I>),
    /// The VMDESCRIPTION trailer's type and length; its JSON follows as
    /// [`Head::TrailerData`].
    TrailerStart {
        /// Declared JSON length (at most [`Trailer::MAX_LEN`]).
        len: u32,
    },
    /// A piece of trailer JSON: the first `len` bytes of the input.
    TrailerData,
}

/// What [`Machine::step`] found.
///
/// See [`Machine`]'s example for a whole walk.
///
/// ```
/// use vmstate::stream::Options;
/// use vmstate::{Machine, Step};
/// let mut m: Machine<&[u8]> = Machine::new(Options::default());
/// // Half a file header and more input to come: nothing is consumed yet.
/// assert!(matches!(m.step(b"QEVM", 0, false)?, Step::NeedMore));
/// // The whole header: an item of 8 bytes.
/// assert!(matches!(m.step(b"QEVM\0\0\0\x03", 0, false)?, Step::Item { len: 8, .. }));
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'x, I> {
    /// The input holds no whole item yet (only when more input can come).
    NeedMore,
    /// The stream ended cleanly.
    Done,
    /// An item of `len` bytes (for a section: its header).
    Item {
        /// Bytes of input the item takes (a section's header only).
        len: usize,
        /// The item.
        head: Head<'x, I>,
    },
}

/// The stream machine (module docs). `I` is how it keeps an open section's idstr.
///
/// # Example
///
/// What [`crate::stream::Records`] does, by hand: step, measure a section's body, commit.
///
/// ```
/// use vmstate::machine::Head;
/// use vmstate::stream::Options;
/// use vmstate::{Machine, Step};
///
/// // Header, a FULL section `a` (id 1, instance 0, version 1) with a one-byte body and its
/// // footer, EOF. No CONFIGURATION record: the options say it is not required.
/// let stream = b"QEVM\0\0\0\x03\x04\0\0\0\x01\x01a\0\0\0\0\0\0\0\x01\x07\x7e\0\0\0\x01\x00";
/// let options = Options { require_configuration: false, ..Options::default() };
/// let mut m: Machine<&[u8]> = Machine::new(options);
/// let (mut pos, mut seen) = (0, Vec::new());
/// loop {
///     match m.step(&stream[pos..], pos, true)? {
///         Step::Item { len, head: Head::Section(h) } => {
///             // The caller knows this body is one byte (a table would say), then the footer.
///             assert_eq!((h.idstr, h.body_offset()), (&b"a"[..], 23));
///             m.commit(&h);
///             pos += len + 1 + 5;
///             seen.push("section");
///         }
///         Step::Item { len, head } => {
///             pos += len;
///             seen.push(if matches!(head, Head::Eof) { "eof" } else { "header" });
///         }
///         Step::Done => break,
///         Step::NeedMore => unreachable!("the whole stream is here"),
///     }
/// }
/// assert_eq!(seen, ["header", "section", "eof"]);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Machine<I> {
    phase: Phase,
    /// The records this machine reads: v3 ([`Options::require_configuration`],
    /// [`Options::allow_commands`]) or v4 (docs/FORMAT.md §2: CONFIGURATION optional but only
    /// first, COMMAND always, ancillary records `0x80..` skipped).
    records: RecordPosition,
    options: Options,
    sections: Sections<I>,
}

impl<I: Clone + AsRef<[u8]>> Machine<I> {
    /// A v3 machine before the file header.
    pub const fn new(options: Options) -> Self {
        Machine {
            phase: Phase::Header,
            records: RecordPosition::V3Records {
                commands: options.allow_commands,
            },
            options,
            sections: Sections::new(),
        }
    }

    /// A v4 machine before the file header (the v4 reader reads the header, frames and
    /// trailer itself).
    pub fn v4() -> Self {
        Machine {
            records: RecordPosition::V4Records,
            ..Self::new(Options {
                allow_commands: true,
                ..Options::default()
            })
        }
    }

    /// The options, with [`RamOptions::ignore_shared`](crate::ram::RamOptions::ignore_shared)
    /// set once the CONFIGURATION record announced it.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Where the walk is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Ends the walk (after an error: the readers are fused).
    pub fn stop(&mut self) {
        self.phase = Phase::Done;
    }

    /// How many sections are open (START read, END not yet).
    pub fn open_sections(&self) -> usize {
        self.sections.open.len()
    }

    /// The section-id bookkeeping, for a reader that reads section heads itself (v4).
    pub fn sections(&mut self) -> &mut Sections<I> {
        &mut self.sections
    }

    /// The file header was read: the CONFIGURATION record's place is next when the options
    /// require one (in v4, where it is optional, always), else the records.
    pub fn header_read(&mut self) {
        self.phase = if self.options.require_configuration {
            Phase::Configuration
        } else {
            Phase::Records
        };
    }

    /// The record-position rule of both formats: what the type byte `b` of the record at `at`
    /// is where the walk is, or the error for a record that may not be there
    /// ([`ErrorKind::ConfigurationMissing`] in v3, else [`ErrorKind::UnknownRecordType`]).
    /// Nothing changes until [`Machine::passed`].
    pub fn record(&self, b: u8, at: usize) -> Result<RecordType> {
        let v4 = self.records == RecordPosition::V4Records;
        Ok(match b {
            record::CONFIGURATION if self.phase == Phase::Configuration => {
                RecordType::Configuration
            }
            found if self.phase == Phase::Configuration && !v4 => {
                return Err(Error::new(at, ErrorKind::ConfigurationMissing { found }));
            }
            record::EOF => RecordType::Eof,
            record::COMMAND if self.options.allow_commands => RecordType::Command,
            _ if let Some(kind) = SectionKind::from_byte(b) => RecordType::Section(kind),
            crate::v4::wire::record4::ANCILLARY.. if v4 => RecordType::Ancillary,
            found => {
                let expected = self.records;
                return Err(Error::new(
                    at,
                    ErrorKind::UnknownRecordType { found, expected },
                ));
            }
        })
    }

    /// A record of type `t` was read whole: after EOF a trailer or the end may come, after
    /// anything else the records.
    pub fn passed(&mut self, t: RecordType) {
        self.phase = if t == RecordType::Eof {
            Phase::AfterEof
        } else {
            Phase::Records
        };
    }

    /// Reads the next item from `input` (whose first byte is at absolute offset `base`);
    /// `at_eof`: no more input will come, so a cut item is an error
    /// ([`ErrorKind::Truncated`]) instead of [`Step::NeedMore`]. Nothing changes on
    /// `NeedMore`, on an error, or for a section head (until [`Machine::commit`]).
    pub fn step<'x>(&mut self, input: &'x [u8], base: usize, at_eof: bool) -> Result<Step<'x, I>>
    where
        I: From<&'x [u8]>,
    {
        match self.read(input, base, at_eof) {
            Err(e) if e.is_incomplete() && !at_eof => Ok(Step::NeedMore),
            other => other,
        }
    }

    fn read<'x>(&mut self, input: &'x [u8], base: usize, at_eof: bool) -> Result<Step<'x, I>>
    where
        I: From<&'x [u8]>,
    {
        let mut r = Reader::new(input, base);
        let truncated = |r: &Reader<'_>| {
            r.error(ErrorKind::Truncated {
                needed: 1,
                available: 0,
            })
        };
        let (head, next) = match self.phase {
            Phase::Done => return Ok(Step::Done),
            Phase::Header => {
                let h = StreamHeader::new_checked(r.bytes(StreamHeader::<&[u8]>::LEN)?)?;
                let version = h.validate()?;
                if version != crate::wire::header::VERSION_V3 {
                    return Err(Error::new(
                        4,
                        ErrorKind::UnsupportedFileVersion { found: version },
                    ));
                }
                self.header_read();
                (Head::Header { version }, self.phase)
            }
            Phase::Configuration | Phase::Records => {
                let b = r.peek(0).ok_or(truncated(&r))?;
                let t = self.record(b, r.offset())?;
                let head = match t {
                    RecordType::Configuration => {
                        r.skip(1)?;
                        let c = Configuration::read_body(&mut r)?;
                        // The record's end is found by looking for subsections: with the input
                        // cut right after the record, one more byte decides.
                        if r.remaining() == 0 && !at_eof {
                            return Ok(Step::NeedMore);
                        }
                        self.options.ram.ignore_shared |= ignores_shared(&c);
                        self.options.ram.mapped_ram |= crate::mapped_ram::announced(&c);
                        Head::Configuration(c)
                    }
                    RecordType::Eof => {
                        r.skip(1)?;
                        Head::Eof
                    }
                    RecordType::Command => Head::Command(Command::read(&mut r)?),
                    // (`record` answers `Ancillary` only to the v4 reader, which does not step.)
                    RecordType::Section(_) | RecordType::Ancillary => {
                        let head = self.section(&mut r)?;
                        return Ok(Step::Item {
                            len: head.header_len,
                            head: Head::Section(head),
                        });
                    }
                };
                self.passed(t);
                (head, self.phase)
            }
            Phase::AfterEof => {
                let Some(b) = r.peek(0) else {
                    return if at_eof {
                        self.phase = Phase::Done;
                        Ok(Step::Done)
                    } else {
                        Ok(Step::NeedMore)
                    };
                };
                if b != record::VMDESCRIPTION {
                    return Err(r.error(ErrorKind::TrailingBytes {
                        count: r.remaining(),
                    }));
                }
                r.skip(1)?;
                let at = r.offset();
                let len = r.be32()?;
                // One limit for every reader.
                let left = usize::try_from(len)
                    .ok()
                    .filter(|&n| n <= Trailer::MAX_LEN)
                    .ok_or(Error::new(
                        at,
                        ErrorKind::LengthTooLarge {
                            found: len.into(),
                            max: Trailer::MAX_LEN as u64,
                        },
                    ))?;
                let next = if left == 0 {
                    Phase::AfterTrailer
                } else {
                    Phase::Trailer { left }
                };
                (Head::TrailerStart { len }, next)
            }
            Phase::Trailer { left } => {
                let n = left.min(r.remaining());
                if n == 0 {
                    return Err(r.error(ErrorKind::Truncated {
                        needed: left,
                        available: 0,
                    }));
                }
                r.skip(n)?;
                let next = match left.checked_sub(n) {
                    Some(0) | None => Phase::AfterTrailer,
                    Some(left) => Phase::Trailer { left },
                };
                (Head::TrailerData, next)
            }
            Phase::AfterTrailer => {
                if r.remaining() != 0 {
                    return Err(r.error(ErrorKind::TrailingBytes {
                        count: r.remaining(),
                    }));
                }
                if !at_eof {
                    return Ok(Step::NeedMore);
                }
                self.phase = Phase::Done;
                return Ok(Step::Done);
            }
        };
        self.phase = next;
        Ok(Step::Item {
            len: r.position(),
            head,
        })
    }

    /// Reads a section header: a START/FULL must use a new id (and a START find room), a
    /// PART/END continue an open section; `ram` must be version 4.
    fn section<'x>(&self, r: &mut Reader<'x>) -> Result<SectionHead<I>>
    where
        I: From<&'x [u8]>,
    {
        let offset = r.offset();
        let h = SectionHeaderRepr::read(r)?;
        let header_len = r.offset().saturating_sub(offset);
        let id_at = offset.saturating_add(1);
        let context = || ctx(h.idstr, h.instance_id, h.section_id);
        let (idstr, instance_id, version_id, ordinal) =
            match self
                .sections
                .admit(h.kind, h.section_id, id_at, || Some(context()))?
            {
                Admitted::New(ordinal) => {
                    if h.kind == SectionKind::Start {
                        self.sections
                            .room(offset)
                            .map_err(|e| e.in_section(context()))?;
                    }
                    (I::from(h.idstr), h.instance_id, h.version_id, ordinal)
                }
                Admitted::Continues(o) => (o.idstr.clone(), o.instance_id, o.version_id, o.ordinal),
            };
        let head = SectionHead {
            offset,
            kind: h.kind,
            section_id: h.section_id,
            idstr,
            instance_id,
            version_id,
            header_len,
            ordinal,
        };
        if head.is_ram() && head.version_id != 4 {
            return Err(Error::new(
                offset,
                ErrorKind::RamVersion {
                    found: head.version_id,
                },
            )
            .in_section(head.context()));
        }
        Ok(head)
    }

    /// Checks the footer (`7e` + section id) that ends `head`'s record at `r`, when the stream
    /// has footers ([`Options::section_footers`]).
    pub fn footer(&self, head: &SectionHead<I>, r: &mut Reader<'_>) -> Result<()> {
        if self.options.section_footers {
            read_footer(r, head.section_id).map_err(|e| e.in_section(head.context()))?;
        }
        Ok(())
    }

    /// Books the section `head` once its body (and footer) was read: a START opens it, an END
    /// closes it, a START/FULL uses its id.
    pub fn commit(&mut self, head: &SectionHead<I>) {
        let open = Open {
            section_id: head.section_id,
            idstr: head.idstr.clone(),
            instance_id: head.instance_id,
            version_id: head.version_id,
            ordinal: head.ordinal,
            minors: Minors::new(),
        };
        // Cannot fail: `section` refused a START without room.
        let _ = self.sections.commit(head.kind, open, head.offset);
    }
}

/// Error context for a section.
pub(crate) fn ctx(idstr: &[u8], instance_id: u32, section_id: u32) -> SectionContext {
    SectionContext {
        idstr: Name::new(idstr),
        instance_id,
        section_id,
    }
}

/// An idstr kept by value, for readers whose input buffer is reused (the push decoder).
/// Bytes past its length are zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdstrBuf {
    len: u8,
    bytes: [u8; 255],
}

impl core::fmt::Debug for IdstrBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", crate::Escaped(self.as_ref()))
    }
}

impl From<&[u8]> for IdstrBuf {
    /// Keeps the first 255 bytes (an idstr is at most 255: its length is a byte).
    fn from(idstr: &[u8]) -> Self {
        let mut b = IdstrBuf {
            len: 0,
            bytes: [0; 255],
        };
        let n = idstr.len().min(255);
        if let (Some(dst), Some(src)) = (b.bytes.get_mut(..n), idstr.get(..n)) {
            dst.copy_from_slice(src);
            b.len = n as u8;
        }
        b
    }
}

impl AsRef<[u8]> for IdstrBuf {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Header, configuration (x-ignore-shared), a FULL section `dev` (id 2, body `00 2a`),
    /// EOF.
    fn stream() -> Vec<u8> {
        let parts: [&[u8]; 8] = [
            b"QEVM\0\0\0\x03",
            b"\x07\0\0\0\x0dpc-i440fx-7.2",
            b"\x05\x1aconfiguration/capabilities\0\0\0\x01",
            b"\0\0\0\x01\x0fx-ignore-shared",
            b"\x04\0\0\0\x02\x03dev\0\0\0\0\0\0\0\x02",
            b"\x00\x2a",
            b"\x7e\0\0\0\x02",
            b"\x00",
        ];
        parts.concat()
    }

    #[test]
    fn a_cut_item_is_need_more_until_the_input_ends_and_a_head_waits_for_commit() {
        let s = stream();
        let mut m = Machine::<&[u8]>::new(Options::default());
        // The header, offered byte by byte.
        for k in 0..8 {
            assert_eq!(m.step(&s[..k], 0, false), Ok(Step::NeedMore));
        }
        assert_eq!(
            m.step(&s[..8], 0, true),
            Ok(Step::Item {
                len: 8,
                head: Head::Header { version: 3 }
            })
        );
        let mut at = 8;
        // The configuration: complete only with one byte after it, or at the end of input.
        assert_eq!(m.step(&s[at..at + 70], at, false), Ok(Step::NeedMore));
        assert!(!m.options().ram.ignore_shared);
        let Ok(Step::Item {
            len,
            head: Head::Configuration(c),
        }) = m.step(&s[at..at + 70], at, true)
        else {
            panic!("configuration")
        };
        assert_eq!((len, c.machine), (70, &b"pc-i440fx-7.2"[..]));
        assert!(m.options().ram.ignore_shared);
        at += len;
        // The section head: nothing is booked until commit, so stepping again gives it again.
        let first = m.step(&s[at..], at, false);
        assert_eq!(m.step(&s[at..], at, false), first);
        let Ok(Step::Item {
            head: Head::Section(h),
            ..
        }) = first
        else {
            panic!("section")
        };
        assert_eq!(
            (h.idstr, h.section_id, h.body_offset()),
            (&b"dev"[..], 2, at + 17)
        );
        let body_end = h.body_offset() + 2;
        m.footer(&h, &mut Reader::new(&s[body_end..], body_end))
            .unwrap();
        m.commit(&h);
        // Now the id is used: the same section again is refused.
        assert_eq!(
            m.step(&s[at..], at, true).unwrap_err().kind,
            ErrorKind::DuplicateSection
        );
        at = body_end + 5;
        assert_eq!(
            m.step(&s[at..], at, true),
            Ok(Step::Item {
                len: 1,
                head: Head::Eof
            })
        );
        // After EOF: more may come (a trailer) until the input ends.
        assert_eq!(m.step(&[], s.len(), false), Ok(Step::NeedMore));
        assert_eq!(m.step(&[], s.len(), true), Ok(Step::Done));
        assert_eq!(m.phase(), Phase::Done);
    }
}
