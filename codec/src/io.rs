//! Streaming I/O: write a stream record by record to any [`Sink`](crate::Sink) (an `embedded_io::Write`
//! through [`IoSink`](crate::IoSink)), and read one from any `embedded_io::Read` through a fixed-size working
//! buffer the caller owns, with no whole-stream buffer.
//!
//! * [`StreamWriter`](crate::writer::StreamWriter) writes records; over a
//!   [`SliceSink`](crate::SliceSink) and over an [`IoSink`](crate::IoSink) it produces the same
//!   bytes, because it is one piece of code over [`Sink`](crate::Sink).
//! * [`Decoder`] is a push parser (httparse style): the caller copies input into
//!   [`Decoder::space`], reports it with [`Decoder::fill`] (and [`Decoder::finish`] at the end
//!   of input), and calls [`Decoder::poll`]: [`Status::Ready`] means [`Decoder::event`] holds the
//!   next item, [`Status::Partial`] means "need more bytes" (never an error), and malformed
//!   input is an `Err`. [`StreamReader`] is the pull form over an `embedded_io::Read`.
//!
//! What the decoder yields: the same records as [`Records`](crate::stream::Records) for the same
//! bytes, except that `ram` sections arrive record by record ([`Event::RamSection`], then one
//! [`Event::Ram`] per RAM record, the last being EOS with the footer checked), because a RAM PART
//! body is hundreds of kilobytes while its records (at most a 4 KiB page and a name) are
//! self-delimiting; and the VMDESCRIPTION trailer arrives as [`Event::TrailerStart`] and
//! [`Event::TrailerData`] chunks. VMState sections arrive whole, so each must fit in the working
//! buffer together with [`LOOKAHEAD`] bytes after it; one that does not is reported as
//! [`ErrorKind::BufferTooSmall`] with the section named. The buffer also keeps the RAM block
//! list (the MEM_SIZE record) at its front once the RAM START was read, and a RAM record (up to
//! 8 + 256 + 4096 bytes) must fit in the rest.
//!
//! The stream-level checks are those of `Records`: record types, unique section ids, PART/END
//! only for an open section, RAM version 4, footers, nothing after the trailer. After an error
//! the decoder is fused.

use crate::error::{Error, ErrorKind, Name, RecordPosition, Result, SectionContext};
use crate::ram::{RamContext, RamOptions, RamRecord};
use crate::sink::IoError;
use crate::stream::{
    BodyLength, MAX_OPEN_SECTIONS, Options, Record, SectionInfo, SectionRecord, SeenSections,
    check_ram_version, ctx, resolve_body,
};
use crate::wire::section::{SectionHeaderRepr, SectionKind, read_footer};
use crate::wire::{Command, Configuration, Reader, StreamHeader, record};

// ------------------------------------------------------------------------------------------
// Decoder

/// What [`Decoder::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// An item is ready: read it with [`Decoder::event`].
    Ready,
    /// Need more input: copy bytes into [`Decoder::space`] and call [`Decoder::fill`].
    Partial,
    /// The stream ended cleanly (after EOF, and the trailer if there was one).
    Done,
}

/// The header of a `ram` section; its records follow as [`Event::Ram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamSection {
    /// Offset of the type byte.
    pub offset: usize,
    /// Kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// Instance id (from the START for PART/END).
    pub instance_id: u32,
    /// Version id (4).
    pub version_id: u32,
    /// Header length.
    pub header_len: usize,
    /// Index among the FULL/START sections of the stream (for PART/END: its START's).
    pub ordinal: usize,
}

/// One item of a streamed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A record exactly as [`Records`](crate::stream::Records) yields it: the header, the
    /// configuration, a non-RAM section (whole, footer checked), a command, EOF.
    Record(Record<'a>),
    /// A `ram` section header.
    RamSection(RamSection),
    /// One RAM record of the current `ram` section; [`RamRecord::Eos`] comes after its footer
    /// was checked and ends the section.
    Ram {
        /// Absolute offset of the record word.
        offset: usize,
        /// The record.
        record: RamRecord<'a>,
    },
    /// The VMDESCRIPTION trailer begins; `len` bytes of JSON follow as [`Event::TrailerData`].
    TrailerStart {
        /// Offset of the `0x06` byte.
        offset: usize,
        /// Declared JSON length.
        len: u32,
    },
    /// A chunk of trailer JSON.
    TrailerData {
        /// Absolute offset of `data[0]`.
        offset: usize,
        /// The bytes.
        data: &'a [u8],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Header,
    Configuration,
    Records,
    Ram {
        section_id: u32,
        instance_id: u32,
        kind: SectionKind,
    },
    AfterEof,
    Trailer {
        left: usize,
    },
    AfterTrailer,
    Done,
}

#[derive(Debug, Clone, Copy)]
struct OpenSection {
    section_id: u32,
    idstr: [u8; 255],
    idstr_len: u8,
    instance_id: u32,
    version_id: u32,
    ordinal: usize,
}

impl OpenSection {
    fn idstr(&self) -> &[u8] {
        &self.idstr[..self.idstr_len as usize]
    }
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    offset: usize,
    kind: SectionKind,
    section_id: u32,
    instance_id: u32,
    version_id: u32,
    header_len: usize,
    ordinal: usize,
    /// For PART/END: the index of the open START in `open`.
    open: Option<usize>,
}

#[derive(Debug, Clone, Copy)]
enum Pending {
    Header {
        version: u32,
        next: Phase,
    },
    Configuration {
        ignore_shared: bool,
    },
    Command,
    Eof,
    Section {
        meta: Meta,
        body_len: usize,
    },
    RamSection {
        meta: Meta,
    },
    Ram {
        last_before: Option<usize>,
        last_after: Option<usize>,
        pin: bool,
    },
    RamEos,
    TrailerStart {
        len: u32,
    },
    TrailerData,
}

/// Bytes past a VMState section's footer the decoder wants buffered before it accepts the
/// section (unless the input ended): the longest record header, `14 + 255`.
pub const LOOKAHEAD: usize = 14 + 255;

/// A push decoder over a caller-owned working buffer.
#[derive(Debug)]
pub struct Decoder<'b, L> {
    buf: &'b mut [u8],
    /// `buf[..pin]` holds the current RAM block list record (MEM_SIZE word and entries).
    pin: usize,
    start: usize,
    end: usize,
    /// Absolute stream offset of `buf[start]`.
    abs: usize,
    input_done: bool,
    phase: Phase,
    lengths: L,
    options: Options,
    open: heapless::Vec<OpenSection, MAX_OPEN_SECTIONS>,
    seen: SeenSections,
    /// Index in the pinned block list of the block CONTINUE refers to.
    ram_last: Option<usize>,
    pending: Option<(usize, Pending)>,
}

impl<'b, L: BodyLength> Decoder<'b, L> {
    /// A decoder using `buf` as working space and `lengths` for VMState body ends, with
    /// default [`Options`].
    pub fn new(buf: &'b mut [u8], lengths: L) -> Self {
        Self::with_options(buf, lengths, Options::default())
    }

    /// A decoder with `options`.
    pub fn with_options(buf: &'b mut [u8], lengths: L, options: Options) -> Self {
        Decoder {
            buf,
            pin: 0,
            start: 0,
            end: 0,
            abs: 0,
            input_done: false,
            phase: Phase::Header,
            lengths,
            options,
            open: heapless::Vec::new(),
            seen: SeenSections::new(),
            ram_last: None,
            pending: None,
        }
    }

    /// Absolute offset of the next unconsumed byte.
    pub fn offset(&self) -> usize {
        self.abs
    }

    /// The body-length resolver.
    pub fn lengths(&mut self) -> &mut L {
        &mut self.lengths
    }

    /// Free space to copy input into (consumes the item last returned). Empty only while an
    /// item is ready and unconsumed would not fit, which [`Decoder::poll`] never leaves.
    pub fn space(&mut self) -> &mut [u8] {
        self.settle();
        if self.start > self.pin {
            self.buf.copy_within(self.start..self.end, self.pin);
            self.end -= self.start - self.pin;
            self.start = self.pin;
        }
        &mut self.buf[self.end..]
    }

    /// Reports `n` bytes copied into [`Decoder::space`].
    pub fn fill(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Reports the end of input: from now on a truncated record is an error.
    pub fn finish(&mut self) {
        self.input_done = true;
    }

    /// Parses the next item (after consuming the last one).
    pub fn poll(&mut self) -> Result<Status> {
        self.settle();
        if self.phase == Phase::Done {
            return Ok(Status::Done);
        }
        match self.parse() {
            Ok(Some(p)) => {
                self.pending = Some(p);
                Ok(Status::Ready)
            }
            Ok(None) => {
                self.phase = Phase::Done;
                Ok(Status::Done)
            }
            Err(e) if needs_more(&e) && !self.input_done => {
                if self.start == self.pin && self.end == self.buf.len() {
                    self.phase = Phase::Done;
                    let mut full = Error::new(
                        self.abs,
                        ErrorKind::BufferTooSmall {
                            needed: self.buf.len() - self.pin + 1,
                            capacity: self.buf.len() - self.pin,
                        },
                    );
                    full.section = e.section;
                    Err(full)
                } else {
                    Ok(Status::Partial)
                }
            }
            Err(e) => {
                self.phase = Phase::Done;
                Err(e)
            }
        }
    }

    /// The item [`Decoder::poll`] found, until the next `poll` or `space`.
    pub fn event(&self) -> Option<Event<'_>> {
        let (len, p) = self.pending?;
        let data = self.buf.get(self.start..self.end)?;
        let mut r = Reader::new(data, self.abs);
        Some(match p {
            Pending::Header { version, .. } => Event::Record(Record::Header { version }),
            Pending::Configuration { .. } => {
                Event::Record(Record::Configuration(Configuration::read(&mut r).ok()?))
            }
            Pending::Command => Event::Record(Record::Command(Command::read(&mut r).ok()?)),
            Pending::Eof => Event::Record(Record::Eof),
            Pending::Section { meta, body_len } => {
                let idstr = match meta.open {
                    Some(i) => self.open.get(i)?.idstr(),
                    None => SectionHeaderRepr::read(&mut r).ok()?.idstr,
                };
                Event::Record(Record::Section(SectionRecord {
                    offset: meta.offset,
                    kind: meta.kind,
                    section_id: meta.section_id,
                    idstr,
                    instance_id: meta.instance_id,
                    version_id: meta.version_id,
                    header_len: meta.header_len,
                    body: data.get(meta.header_len..meta.header_len + body_len)?,
                    body_offset: meta.offset + meta.header_len,
                    ordinal: meta.ordinal,
                }))
            }
            Pending::RamSection { meta } => Event::RamSection(RamSection {
                offset: meta.offset,
                kind: meta.kind,
                section_id: meta.section_id,
                instance_id: meta.instance_id,
                version_id: meta.version_id,
                header_len: meta.header_len,
                ordinal: meta.ordinal,
            }),
            Pending::Ram { last_before, .. } => {
                let (record, _) =
                    ram_parse(&self.buf[..self.pin], last_before, self.options.ram, &mut r).ok()?;
                Event::Ram {
                    offset: self.abs,
                    record,
                }
            }
            Pending::RamEos => Event::Ram {
                offset: self.abs,
                record: RamRecord::Eos,
            },
            Pending::TrailerStart { len } => Event::TrailerStart {
                offset: self.abs,
                len,
            },
            Pending::TrailerData => Event::TrailerData {
                offset: self.abs,
                data: data.get(..len)?,
            },
        })
    }

    /// Applies the bookkeeping of the pending item and consumes its bytes.
    fn settle(&mut self) {
        let Some((len, p)) = self.pending.take() else {
            return;
        };
        let at = self.start;
        match p {
            Pending::Header { next, .. } => self.phase = next,
            Pending::Configuration { ignore_shared } => {
                self.options.ram.ignore_shared |= ignore_shared;
                self.phase = Phase::Records;
            }
            Pending::Command => {}
            Pending::Eof => self.phase = Phase::AfterEof,
            Pending::Section { meta, .. } => self.book_section(&meta, at),
            Pending::RamSection { meta } => {
                self.book_section(&meta, at);
                self.phase = Phase::Ram {
                    section_id: meta.section_id,
                    instance_id: meta.instance_id,
                    kind: meta.kind,
                };
            }
            Pending::Ram {
                last_after, pin, ..
            } => {
                self.ram_last = last_after;
                if pin {
                    // The block list stays at the front of the buffer for later records.
                    self.buf.copy_within(at..at + len, 0);
                    self.pin = len;
                }
            }
            Pending::RamEos => {
                if let Phase::Ram {
                    section_id,
                    kind: SectionKind::End,
                    ..
                } = self.phase
                    && let Some(i) = self.open.iter().position(|o| o.section_id == section_id)
                {
                    self.open.swap_remove(i);
                }
                self.phase = Phase::Records;
            }
            Pending::TrailerStart { len } => {
                self.phase = if len == 0 {
                    Phase::AfterTrailer
                } else {
                    Phase::Trailer { left: len as usize }
                }
            }
            Pending::TrailerData => {
                if let Phase::Trailer { left } = self.phase {
                    self.phase = if left <= len {
                        Phase::AfterTrailer
                    } else {
                        Phase::Trailer { left: left - len }
                    };
                }
            }
        }
        self.start += len;
        self.abs += len;
    }

    fn book_section(&mut self, meta: &Meta, header_at: usize) {
        if meta.kind.has_full_header() {
            self.seen.mark(meta.section_id);
        }
        match meta.kind {
            SectionKind::Start => {
                let mut r = Reader::new(&self.buf[header_at..self.end], 0);
                if let Ok(h) = SectionHeaderRepr::read(&mut r) {
                    let mut o = OpenSection {
                        section_id: meta.section_id,
                        idstr: [0; 255],
                        idstr_len: h.idstr.len() as u8,
                        instance_id: meta.instance_id,
                        version_id: meta.version_id,
                        ordinal: meta.ordinal,
                    };
                    o.idstr[..h.idstr.len()].copy_from_slice(h.idstr);
                    // A full list was refused when the header was parsed.
                    let _ = self.open.push(o);
                }
            }
            SectionKind::End if !matches!(self.phase, Phase::Ram { .. }) => {
                if let Some(i) = self
                    .open
                    .iter()
                    .position(|o| o.section_id == meta.section_id)
                {
                    self.open.swap_remove(i);
                }
            }
            _ => {}
        }
    }

    /// Parses the next item without consuming it: its length and bookkeeping.
    fn parse(&mut self) -> Result<Option<(usize, Pending)>> {
        let data = &self.buf[self.start..self.end];
        let mut r = Reader::new(data, self.abs);
        let p = match self.phase {
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
                let next = if self.options.require_configuration {
                    Phase::Configuration
                } else {
                    Phase::Records
                };
                Pending::Header { version, next }
            }
            Phase::Configuration => {
                let c = Configuration::read(&mut r)?;
                // The record's end is found by looking for subsections: with the input cut
                // right after the record, one more byte decides.
                if r.remaining() == 0 && !self.input_done {
                    return Err(r.error(ErrorKind::Truncated {
                        needed: 1,
                        available: 0,
                    }));
                }
                let ignore_shared = c
                    .capabilities
                    .iter()
                    .flat_map(|c| c.iter())
                    .any(|cap| cap == b"x-ignore-shared");
                Pending::Configuration { ignore_shared }
            }
            Phase::Records => {
                let b = r.peek(0).ok_or(r.error(ErrorKind::Truncated {
                    needed: 1,
                    available: 0,
                }))?;
                match b {
                    record::EOF => {
                        r.skip(1)?;
                        Pending::Eof
                    }
                    record::COMMAND if self.options.allow_commands => {
                        Command::read(&mut r)?;
                        Pending::Command
                    }
                    _ if SectionKind::from_byte(b).is_some() => {
                        return self.parse_section().map(Some);
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
            Phase::Ram {
                section_id,
                instance_id,
                ..
            } => {
                let context = SectionContext {
                    idstr: Name::new(b"ram"),
                    instance_id,
                    section_id,
                };
                let (rec, last_after) = ram_parse(
                    &self.buf[..self.pin],
                    self.ram_last,
                    self.options.ram,
                    &mut r,
                )
                .map_err(|e| e.in_section(context))?;
                match rec {
                    RamRecord::Eos => {
                        if self.options.section_footers {
                            read_footer(&mut r, section_id).map_err(|e| e.in_section(context))?;
                        }
                        Pending::RamEos
                    }
                    rec => Pending::Ram {
                        last_before: self.ram_last,
                        last_after,
                        pin: matches!(rec, RamRecord::MemSize(_)),
                    },
                }
            }
            Phase::AfterEof => {
                let Some(b) = r.peek(0) else {
                    if self.input_done {
                        return Ok(None);
                    }
                    return Err(r.error(ErrorKind::Truncated {
                        needed: 1,
                        available: 0,
                    }));
                };
                if b != record::VMDESCRIPTION {
                    return Err(r.error(ErrorKind::TrailingBytes {
                        count: r.remaining(),
                    }));
                }
                r.skip(1)?;
                let at = r.offset();
                let len = r.be32()?;
                // The slice walk's limit (`Trailer::read`): one rule for every reader.
                if len as usize > crate::wire::Trailer::MAX_LEN {
                    return Err(crate::Error::new(
                        at,
                        ErrorKind::LengthTooLarge {
                            found: len.into(),
                            max: crate::wire::Trailer::MAX_LEN as u64,
                        },
                    ));
                }
                Pending::TrailerStart { len }
            }
            Phase::Trailer { left } => {
                let n = left.min(r.remaining());
                if n == 0 {
                    return Err(r.error(ErrorKind::Truncated {
                        needed: left,
                        available: 0,
                    }));
                }
                return Ok(Some((n, Pending::TrailerData)));
            }
            Phase::AfterTrailer => {
                if r.remaining() != 0 {
                    return Err(r.error(ErrorKind::TrailingBytes {
                        count: r.remaining(),
                    }));
                }
                if self.input_done {
                    return Ok(None);
                }
                return Err(r.error(ErrorKind::Truncated {
                    needed: 1,
                    available: 0,
                }));
            }
        };
        Ok(Some((r.position(), p)))
    }

    fn parse_section(&mut self) -> Result<(usize, Pending)> {
        let data = &self.buf[self.start..self.end];
        let mut r = Reader::new(data, self.abs);
        let offset = r.offset();
        let h = SectionHeaderRepr::read(&mut r)?;
        let header_len = r.offset() - offset;
        let (info, open) = if h.kind.has_full_header() {
            let info = self.seen.full_info(&h, offset)?;
            if h.kind == SectionKind::Start && self.open.is_full() {
                return Err(Error::new(
                    offset,
                    ErrorKind::BufferTooSmall {
                        needed: MAX_OPEN_SECTIONS + 1,
                        capacity: MAX_OPEN_SECTIONS,
                    },
                )
                .in_section(ctx(h.idstr, h.instance_id, h.section_id)));
            }
            (info, None)
        } else {
            let i = self
                .open
                .iter()
                .position(|o| o.section_id == h.section_id)
                .ok_or(Error::new(
                    offset + 1,
                    ErrorKind::UnknownSectionId {
                        found: h.section_id,
                    },
                ))?;
            let o = &self.open[i];
            let info = SectionInfo {
                kind: h.kind,
                section_id: h.section_id,
                idstr: o.idstr(),
                instance_id: o.instance_id,
                version_id: o.version_id,
                ordinal: o.ordinal,
            };
            (info, Some(i))
        };
        let context = ctx(info.idstr, info.instance_id, info.section_id);
        let meta = Meta {
            offset,
            kind: h.kind,
            section_id: info.section_id,
            instance_id: info.instance_id,
            version_id: info.version_id,
            header_len,
            ordinal: info.ordinal,
            open,
        };
        if info.idstr == b"ram" {
            check_ram_version(&info, offset)?;
            return Ok((header_len, Pending::RamSection { meta }));
        }
        let body_len = resolve_body(
            &mut self.lengths,
            &info,
            &mut r,
            self.options.section_footers,
        )?;
        // A resolver may decide a body's end by looking at what follows it (FooterScan checks
        // that a record header starts after the footer). Decide only once the longest such
        // header is buffered, so a cut in the input can never change the answer.
        if !self.input_done && r.remaining() < LOOKAHEAD {
            return Err(r
                .error(ErrorKind::Truncated {
                    needed: LOOKAHEAD,
                    available: r.remaining(),
                })
                .in_section(context));
        }
        Ok((r.position(), Pending::Section { meta, body_len }))
    }
}

/// Whether an error may go away with more input: a truncated item, or a body whose end the
/// resolver could not find in the bytes buffered so far.
fn needs_more(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Truncated { .. } | ErrorKind::BodyLengthUnknown
    )
}

/// Reads one RAM record with the block list `pinned` (a MEM_SIZE record, or empty) and the
/// CONTINUE block `last` (an index into the list); returns the record and the new index.
fn ram_parse<'x>(
    pinned: &'x [u8],
    last: Option<usize>,
    options: RamOptions,
    r: &mut Reader<'x>,
) -> Result<(RamRecord<'x>, Option<usize>)> {
    let mut ram = RamContext::new(options);
    if !pinned.is_empty() {
        ram.read_record(&mut Reader::new(pinned, 0))?;
    }
    if let (Some(i), Some(list)) = (last, ram.blocks) {
        ram.set_last_block(list.iter().nth(i).map(|b| (b.name, b.length)));
    }
    let rec = ram.read_record(r)?;
    let last = match (ram.last_block(), ram.blocks) {
        (Some((name, _)), Some(list)) => list.iter().position(|b| b.name == name),
        _ => None,
    };
    // A new block list resets nothing else; its own names are found from the pin next time.
    Ok((rec, last))
}

/// Pulls events from an `embedded_io::Read` through a [`Decoder`].
#[derive(Debug)]
pub struct StreamReader<'b, R, L> {
    input: R,
    decoder: Decoder<'b, L>,
}

impl<'b, R: embedded_io::Read, L: BodyLength> StreamReader<'b, R, L> {
    /// Reads from `input` using `buf` as the working buffer.
    pub fn new(input: R, buf: &'b mut [u8], lengths: L) -> Self {
        StreamReader {
            input,
            decoder: Decoder::new(buf, lengths),
        }
    }

    /// Wraps a configured decoder.
    pub fn with_decoder(input: R, decoder: Decoder<'b, L>) -> Self {
        StreamReader { input, decoder }
    }

    /// The decoder.
    pub fn decoder(&mut self) -> &mut Decoder<'b, L> {
        &mut self.decoder
    }

    /// The next event, `None` at the clean end of the stream. The input ending inside a record
    /// is [`ErrorKind::Truncated`].
    pub fn next_event(&mut self) -> core::result::Result<Option<Event<'_>>, IoError<R::Error>> {
        loop {
            match self.decoder.poll()? {
                Status::Ready => break,
                Status::Done => return Ok(None),
                Status::Partial => {
                    let n = self.input.read(self.decoder.space()).map_err(IoError::Io)?;
                    if n == 0 {
                        self.decoder.finish();
                    } else {
                        self.decoder.fill(n);
                    }
                }
            }
        }
        Ok(self.decoder.event())
    }
}
