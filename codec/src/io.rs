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
//! The stream-level checks are those of `Records`, because both are the stream
//! [`Machine`]: record types, unique section ids, PART/END only for an open section, RAM
//! version 4, footers, nothing after the trailer. After an error the decoder is fused.

// Offsets are sums of lengths of bytes held in the working buffer and cannot overflow; the
// buffer is indexed through `get` (a window `start..end` the decoder keeps inside it).
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use crate::error::{Error, ErrorKind, Result, SectionContext};
use crate::machine::{Head, IdstrBuf, Machine, Phase, SectionHead, Step};
use crate::ram::{BlockList, RamContext, RamOptions, RamRecord};
use crate::sink::IoError;
use crate::stream::{BodyLength, Options, Record, SectionRecord, body_len};
use crate::wire::section::SectionKind;
use crate::wire::{Command, Configuration, Reader};

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

#[derive(Debug, Clone, Copy)]
enum Pending {
    Header {
        version: u32,
    },
    Configuration,
    Command,
    Eof,
    Section {
        head: SectionHead<IdstrBuf>,
        body_len: usize,
    },
    RamSection(SectionHead<IdstrBuf>),
    Ram {
        last_before: Option<usize>,
        pin: bool,
    },
    RamEos,
    TrailerStart {
        len: u32,
    },
    TrailerData,
}

/// What [`Decoder::parse`] found.
enum Parsed {
    /// An item is pending.
    Ready,
    /// Need more input (inside this section, if any).
    NeedMore(Option<SectionContext>),
    /// The clean end.
    Done,
}

/// Bytes past a VMState section's footer the decoder wants buffered before it accepts the
/// section (unless the input ended): the longest record header, `14 + 255`.
pub const LOOKAHEAD: usize = 14 + 255;

/// A push decoder over a caller-owned working buffer: the stream [`Machine`] fed from it.
#[derive(Debug)]
pub struct Decoder<'b, L> {
    buf: &'b mut [u8],
    /// `buf[pin..pin + pin_len]` holds the current RAM block list record (MEM_SIZE word and
    /// entries): where it was read until [`Decoder::space`] moves it to the front.
    pin: usize,
    pin_len: usize,
    /// `buf[kept..start]`: consumed bytes still in place ([`Decoder::consumed`]).
    kept: usize,
    /// The pinned list as read (and checked) once when it was pinned: each later record
    /// is read against it without reading the list again.
    list: Option<BlockList<'static>>,
    start: usize,
    end: usize,
    /// Absolute stream offset of `buf[start]`.
    abs: usize,
    input_done: bool,
    machine: Machine<IdstrBuf>,
    lengths: L,
    /// The `ram` section whose records are being read.
    ram: Option<SectionHead<IdstrBuf>>,
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
            pin_len: 0,
            kept: 0,
            list: None,
            start: 0,
            end: 0,
            abs: 0,
            input_done: false,
            machine: Machine::new(options),
            lengths,
            ram: None,
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

    /// The bytes consumed since the working buffer last moved its contents, still in it:
    /// the stream from offset `offset() - consumed().len()` to [`Decoder::offset`]. A caller
    /// that passes on what the decoder checked can take them from here instead of keeping a
    /// copy, before [`Decoder::space`] (which may drop them); nothing else does.
    pub fn consumed(&self) -> &[u8] {
        self.buf.get(self.kept..self.start).unwrap_or_default()
    }

    /// The bytes fed and not consumed yet (the item [`Decoder::poll`] found among them): the
    /// stream from [`Decoder::offset`] on.
    pub fn unconsumed(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// Free space to copy input into (consumes the item last returned). Empty only while an
    /// item is ready and unconsumed would not fit, which [`Decoder::poll`] never leaves.
    pub fn space(&mut self) -> &mut [u8] {
        self.settle();
        if self.start > self.pin_len {
            // The pinned block list goes to the front, the unconsumed bytes after it.
            let (pin, front) = (self.pin, self.pin_len);
            if pin != 0 {
                self.buf.copy_within(pin..pin.saturating_add(front), 0);
                self.pin = 0;
            }
            self.buf.copy_within(self.start..self.end, front);
            self.end = front.saturating_add(self.end.saturating_sub(self.start));
            self.start = front;
            self.kept = front;
        }
        self.buf.get_mut(self.end..).unwrap_or_default()
    }

    /// Reports `n` bytes copied into [`Decoder::space`].
    pub fn fill(&mut self, n: usize) {
        self.end = self.end.saturating_add(n).min(self.buf.len());
    }

    /// Reports the end of input: from now on a truncated record is an error.
    pub fn finish(&mut self) {
        self.input_done = true;
    }

    /// Parses the next item (after consuming the last one).
    pub fn poll(&mut self) -> Result<Status> {
        self.settle();
        if self.machine.phase() == Phase::Done {
            return Ok(Status::Done);
        }
        match self.parse() {
            Ok(Parsed::Ready) => Ok(Status::Ready),
            Ok(Parsed::Done) => {
                self.machine.stop();
                Ok(Status::Done)
            }
            Ok(Parsed::NeedMore(section)) => {
                if self.start == self.pin_len && self.end == self.buf.len() {
                    self.machine.stop();
                    let capacity = self.buf.len().saturating_sub(self.pin_len);
                    let mut full = Error::new(
                        self.abs,
                        ErrorKind::BufferTooSmall {
                            needed: capacity.saturating_add(1),
                            capacity,
                        },
                    );
                    full.section = section;
                    Err(full)
                } else {
                    Ok(Status::Partial)
                }
            }
            Err(e) => {
                self.machine.stop();
                Err(e)
            }
        }
    }

    /// The item [`Decoder::poll`] found, until the next `poll` or `space`.
    pub fn event(&self) -> Option<Event<'_>> {
        let (len, p) = self.pending.as_ref()?;
        let data = self.buf.get(self.start..self.end)?;
        let mut r = Reader::new(data, self.abs);
        Some(match p {
            Pending::Header { version } => Event::Record(Record::Header { version: *version }),
            Pending::Configuration => {
                Event::Record(Record::Configuration(Configuration::read(&mut r).ok()?))
            }
            Pending::Command => Event::Record(Record::Command(Command::read(&mut r).ok()?)),
            Pending::Eof => Event::Record(Record::Eof),
            Pending::Section { head, body_len } => Event::Record(Record::Section(SectionRecord {
                offset: head.offset,
                kind: head.kind,
                section_id: head.section_id,
                idstr: head.idstr.as_ref(),
                instance_id: head.instance_id,
                version_id: head.version_id,
                header_len: head.header_len,
                body: data.get(head.header_len..head.header_len.checked_add(*body_len)?)?,
                body_offset: head.body_offset(),
                ordinal: head.ordinal,
            })),
            Pending::RamSection(head) => Event::RamSection(RamSection {
                offset: head.offset,
                kind: head.kind,
                section_id: head.section_id,
                instance_id: head.instance_id,
                version_id: head.version_id,
                header_len: head.header_len,
                ordinal: head.ordinal,
            }),
            Pending::Ram { last_before, .. } => {
                let pinned = self
                    .buf
                    .get(self.pin..self.pin.saturating_add(self.pin_len))?;
                let options = self.machine.options().ram;
                let (record, _) =
                    ram_parse(pinned, self.list, *last_before, options, &mut r).ok()?;
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
                len: *len,
            },
            Pending::TrailerData => Event::TrailerData {
                offset: self.abs,
                data: data.get(..*len)?,
            },
        })
    }

    /// Consumes the pending item's bytes (the machine booked it when it was parsed).
    fn settle(&mut self) {
        let Some((len, p)) = self.pending.take() else {
            return;
        };
        if let Pending::Ram { pin: true, .. } = p {
            // The block list stays in the buffer for later records: where it is (the bytes
            // consumed before it stay in place), until `space` moves it to the front.
            (self.pin, self.pin_len) = (self.start, len);
            let pinned = self
                .buf
                .get(self.start..self.start.saturating_add(len))
                .unwrap_or_default();
            let mut ram = RamContext::new(self.machine.options().ram);
            self.list = match ram.read_record(&mut Reader::new(pinned, 0)) {
                Ok(RamRecord::MemSize(list)) => Some(list.rebind(&[])),
                _ => None,
            };
        }
        self.start = self.start.saturating_add(len);
        self.abs = self.abs.saturating_add(len);
    }

    /// Parses the next item without consuming it.
    fn parse(&mut self) -> Result<Parsed> {
        let data = self.buf.get(self.start..self.end).unwrap_or_default();
        let mut r = Reader::new(data, self.abs);
        let more = |e: Error, done: bool| {
            if needs_more(&e) && !done {
                Ok(Parsed::NeedMore(e.section))
            } else {
                Err(e)
            }
        };
        if let Some(head) = &self.ram {
            let pinned = self
                .buf
                .get(self.pin..self.pin.saturating_add(self.pin_len))
                .unwrap_or_default();
            let options = self.machine.options().ram;
            let rec = ram_parse(pinned, self.list, self.ram_last, options, &mut r)
                .map_err(|e| e.in_section(head.context()))
                .and_then(|(rec, last)| {
                    if rec == RamRecord::Eos {
                        self.machine.footer(head, &mut r)?;
                    }
                    Ok((rec, last))
                });
            let (rec, last_after) = match rec {
                Ok(x) => x,
                Err(e) => return more(e, self.input_done),
            };
            let p = match rec {
                RamRecord::Eos => {
                    self.ram = None;
                    Pending::RamEos
                }
                rec => Pending::Ram {
                    last_before: core::mem::replace(&mut self.ram_last, last_after),
                    pin: matches!(rec, RamRecord::MemSize(_)),
                },
            };
            self.pending = Some((r.position(), p));
            return Ok(Parsed::Ready);
        }
        let (len, head) = match self.machine.step(data, self.abs, self.input_done)? {
            Step::NeedMore => return Ok(Parsed::NeedMore(None)),
            Step::Done => return Ok(Parsed::Done),
            Step::Item { len, head } => (len, head),
        };
        let p = match head {
            Head::Header { version } => Pending::Header { version },
            Head::Configuration(_) => Pending::Configuration,
            Head::Command(_) => Pending::Command,
            Head::Eof => Pending::Eof,
            Head::TrailerStart { len } => Pending::TrailerStart { len },
            Head::TrailerData => Pending::TrailerData,
            Head::Section(head) if head.is_ram() => {
                self.machine.commit(&head);
                self.ram = Some(head);
                Pending::RamSection(head)
            }
            Head::Section(head) => {
                let context = head.context();
                let measured = r.skip(len).and_then(|()| {
                    let n = body_len(&mut self.lengths, &head, r.rest())?;
                    r.skip(n).map_err(|e| e.in_section(context))?;
                    self.machine.footer(&head, &mut r)?;
                    Ok(n)
                });
                let body_len = match measured {
                    Ok(n) => n,
                    Err(e) => return more(e, self.input_done),
                };
                // A resolver may decide a body's end by looking at what follows it (FooterScan
                // checks that a record header starts after the footer). Decide only once the
                // longest such header is buffered, so a cut in the input can never change the
                // answer.
                if !self.input_done && r.remaining() < LOOKAHEAD {
                    return Ok(Parsed::NeedMore(Some(context)));
                }
                self.machine.commit(&head);
                self.pending = Some((r.position(), Pending::Section { head, body_len }));
                return Ok(Parsed::Ready);
            }
        };
        self.pending = Some((len, p));
        Ok(Parsed::Ready)
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

/// Reads one RAM record with the block list `pinned` (a MEM_SIZE record, or empty; `list`
/// its shape, read when it was pinned) and the CONTINUE block `last` (an index into the
/// list); returns the record and the new index.
fn ram_parse<'x>(
    pinned: &'x [u8],
    list: Option<BlockList<'static>>,
    last: Option<usize>,
    options: RamOptions,
    r: &mut Reader<'x>,
) -> Result<(RamRecord<'x>, Option<usize>)> {
    let mut ram = RamContext::new(options);
    // The list's entries follow the 8-byte MEM_SIZE word.
    ram.blocks = list.map(|l| l.rebind(pinned.get(8..).unwrap_or_default()));
    if let (Some(i), Some(list)) = (last, ram.blocks) {
        ram.set_last_block(list.iter().nth(i).map(|b| (b.name, b.length)));
    }
    let rec = ram.read_record(r)?;
    let last = match rec {
        // The block a CONTINUE record refers to stays the last one.
        RamRecord::Zero {
            continued: true, ..
        }
        | RamRecord::Page {
            continued: true, ..
        }
        | RamRecord::Xbzrle {
            continued: true, ..
        }
        | RamRecord::Eos
        | RamRecord::MultifdFlush => last,
        _ => match (ram.last_block(), ram.blocks) {
            (Some((name, _)), Some(list)) => list.iter().position(|b| b.name == name),
            _ => None,
        },
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
