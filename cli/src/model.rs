//! A whole v3 stream as a value: every record decoded, and written back byte for byte.
//!
//! The stream is in one buffer (memory-mapped by the binary) and everything here borrows from
//! it: a RAM section keeps its body slice and is re-read record by record when iterated
//! ([`RamRecords`]; no page is copied, no per-record memory is kept), the configuration and
//! commands borrow too. Only VMState section bodies are decoded into owned trees
//! ([`crate::generic::Body`]), which are small.
//!
//! FULL sections are decoded with the stream's own VMDESCRIPTION ([`DescDecoder`]). A stream
//! without a trailer can still be walked and rewritten: its bodies are found with the codec's
//! footer scan and kept as opaque bytes.

use crate::desc::{DescError, Description, Device, MAX_DESCRIPTION_LEN};
use crate::generic::{self, Body, DecodeError, EditCheck, EditError};
use serde_json::{Map, Value};
use std::fmt;
use std::io::{self, Write};
use vmstate::SectionHead;
use vmstate::ram::{BlockList, RamContext, RamRecord};
use vmstate::stream::{
    BodyLength, FooterScan, Next, Options, Record, Records, Schemas, SectionInfo,
    probe_section_footers,
};
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};
use vmstate::wire::{Command, Configuration, Reader, Trailer};
use vmstate::writer::StreamWriter;
use vmstate::{ErrorKind, Sink};

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The codec refused the bytes.
    Codec(Box<vmstate::Error>),
    /// A section body does not match its description.
    Body {
        /// The section (`idstr` instance, id).
        section: String,
        /// The mismatch.
        error: Box<DecodeError>,
    },
    /// The description itself is malformed.
    Description(DescError),
    /// The description and the stream disagree about which sections there are.
    Mismatch {
        /// Offset of the section record (or of EOF).
        offset: usize,
        /// What differs.
        message: String,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Codec(e) => write!(f, "{e}"),
            StreamError::Body { section, error } => write!(f, "section {section}: {error}"),
            StreamError::Description(e) => write!(f, "{e}"),
            StreamError::Mismatch { offset, message } => {
                write!(f, "at byte {offset} (0x{offset:x}): {message}")
            }
        }
    }
}

impl std::error::Error for StreamError {}

impl From<vmstate::Error> for StreamError {
    fn from(e: vmstate::Error) -> Self {
        StreamError::Codec(Box::new(e))
    }
}

/// `'idstr' instance N (id M)`: how errors name a section.
pub(crate) fn section_label(idstr: &[u8], instance_id: u32, section_id: u32) -> String {
    format!(
        "'{}' instance {instance_id} (id {section_id})",
        vmstate::Escaped(idstr)
    )
}

/// Decodes FULL section bodies with the stream's own description: the caller takes a
/// section's head from the walk ([`Records::next_head`]), decodes the body here once, and
/// commits the length the decode used.
///
/// Each FULL section is decoded with its description entry, found by
/// [`Description::device`] (idstr and instance id, as QEMU's loader keys sections); the
/// section's version must be the one described. Which entries were used is kept, so the
/// caller can name a described device the stream does not carry.
#[derive(Debug)]
pub struct DescDecoder<'d, 'a> {
    desc: &'d Description<'a>,
    /// Which device objects a section was matched to.
    used: Vec<bool>,
}

impl<'d, 'a> DescDecoder<'d, 'a> {
    /// A decoder over `desc`.
    pub fn new(desc: &'d Description<'a>) -> Self {
        DescDecoder {
            desc,
            used: vec![false; desc.devices.len()],
        }
    }

    /// How many device objects have been matched so far.
    pub fn matched(&self) -> usize {
        self.used.iter().filter(|&&u| u).count()
    }

    /// The device objects no section has been matched to so far.
    pub fn unmatched(&self) -> impl Iterator<Item = &'d Device<'a>> + '_ {
        self.desc
            .devices
            .iter()
            .zip(&self.used)
            .filter_map(|(d, &used)| (!used).then_some(d))
    }

    fn devices_len(&self) -> usize {
        self.desc.devices.len()
    }

    /// Decodes the FULL section `head`, whose body starts `rest`: its device index, tree and
    /// body length.
    pub fn decode(
        &mut self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
    ) -> Result<(usize, Body<'a>, usize), StreamError> {
        let base = head.body_offset();
        let label = || section_label(head.idstr, head.instance_id, head.section_id);
        let Some((i, dev)) = self.desc.device(head.idstr, head.instance_id) else {
            let message = format!(
                "section {} is not in the stream's description ({} devices)",
                label(),
                self.desc.devices.len()
            );
            return Err(StreamError::Mismatch {
                offset: base,
                message,
            });
        };
        if let Some((_, v)) = &dev.vmsd
            && *v != head.version_id
        {
            let message = format!(
                "section {} version {} does not match description devices[{i}]: '{}' instance {} version {v}",
                label(),
                head.version_id,
                dev.name,
                dev.instance_id,
            );
            return Err(StreamError::Mismatch {
                offset: base,
                message,
            });
        }
        #[cfg(test)]
        reads::bump(&reads::DECODED);
        let (body, used) =
            generic::decode_prefix(&dev.body, rest, base).map_err(|error| StreamError::Body {
                section: label(),
                error: Box::new(error),
            })?;
        self.used[i] = true;
        Ok((i, body, used))
    }
}

/// Header fields of a section record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionMeta<'a> {
    /// Record kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (for PART/END, from the START).
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
    /// Version id.
    pub version_id: u32,
    /// Absolute offset of the body.
    pub body_offset: usize,
    /// Body length.
    pub body_len: usize,
}

impl<'a> SectionMeta<'a> {
    /// The header fields of `head`, its body not measured yet (`body_len` 0).
    pub fn of(head: &SectionHead<&'a [u8]>) -> Self {
        section_meta(head, 0)
    }

    /// The idstr as text for a terminal ([`vmstate::Escaped`]: it comes from the input).
    pub fn name(&self) -> String {
        vmstate::Escaped(self.idstr).to_string()
    }

    fn header(&self) -> SectionHeaderRepr<'a> {
        SectionHeaderRepr {
            kind: self.kind,
            section_id: self.section_id,
            idstr: self.idstr,
            instance_id: self.instance_id,
            version_id: self.version_id,
        }
    }
}

/// What a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A `ram` section (START, PART or END) and its records; pages borrow the input.
    Ram {
        /// Header.
        section: SectionMeta<'a>,
        /// Records up to and including EOS.
        records: RamRecords<'a>,
    },
    /// A FULL section decoded with its description.
    Device {
        /// Header.
        section: SectionMeta<'a>,
        /// Index of its device object in the description.
        device: usize,
        /// The decoded body.
        body: Body<'a>,
    },
    /// A section no description covers (the stream has no trailer), kept as bytes.
    Opaque {
        /// Header.
        section: SectionMeta<'a>,
        /// The body.
        body: &'a [u8],
    },
    /// A COMMAND record.
    Command(Command<'a>),
    /// `QEMU_VM_EOF`.
    Eof,
}

/// The records of one `ram` section, read again from the input on each iteration.
///
/// They were all checked when the stream was parsed (the codec's walk reads every record to
/// find the section's end); only the body and the RAM parsing state at its start are kept,
/// because a decoded record takes several times the 9 bytes a ZERO record takes on the wire:
/// keeping them would make memory grow faster than the stream.
///
/// Boxed: a RAM section is one of few, and its parsing state is larger than a whole device
/// section's entry, which would otherwise grow every [`Entry`] of a stream of many small
/// sections.
#[derive(Debug, Clone)]
pub struct RamRecords<'a>(Box<RamSectionState<'a>>);

#[derive(Debug, Clone)]
struct RamSectionState<'a> {
    body: &'a [u8],
    base: usize,
    start: RamContext<'a>,
    /// The MEM_SIZE records' block lists, taken while parsing (views into the body).
    lists: Vec<BlockList<'a>>,
}

/// How many records of each kind one RAM section holds for one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCount<'a> {
    /// The block name.
    pub block: &'a [u8],
    /// ZERO records.
    pub zero: u64,
    /// PAGE records.
    pub page: u64,
    /// XBZRLE records.
    pub xbzrle: u64,
}

impl<'a> RamRecords<'a> {
    /// Page record counts per block (first-seen order), counted now: one pass over the
    /// records. A walk that needs them counts while it reads ([`Visit::ram`],
    /// [`BlockCount::add`]).
    pub fn counts(&self) -> Vec<BlockCount<'a>> {
        let mut counts = Vec::new();
        for rec in self {
            BlockCount::add(&mut counts, &rec);
        }
        counts
    }

    /// The block lists of the section's MEM_SIZE records, in order (taken while parsing: no
    /// record is read again).
    pub fn block_lists(&self) -> &[BlockList<'a>] {
        &self.0.lists
    }

    /// The records, EOS last.
    pub fn iter(&self) -> RamIter<'a> {
        RamIter {
            r: Reader::new(self.0.body, self.0.base),
            ram: self.0.start,
            done: false,
        }
    }
}

impl PartialEq for RamRecords<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for RamRecords<'_> {}

impl<'a> IntoIterator for &RamRecords<'a> {
    type Item = RamRecord<'a>;
    type IntoIter = RamIter<'a>;

    fn into_iter(self) -> RamIter<'a> {
        self.iter()
    }
}

impl<'a> BlockCount<'a> {
    /// Adds a page record to the per-block counts (other records are not counted).
    pub fn add(counts: &mut Vec<BlockCount<'a>>, rec: &RamRecord<'a>) {
        let (block, kind) = match *rec {
            RamRecord::Zero { block, .. } => (block, 0),
            RamRecord::Page { block, .. } => (block, 1),
            RamRecord::Xbzrle { block, .. } => (block, 2),
            _ => return,
        };
        // CONTINUE records repeat the previous block: look there first.
        let i = match counts.iter().rposition(|c| c.block == block) {
            Some(i) => i,
            None => {
                counts.push(BlockCount {
                    block,
                    zero: 0,
                    page: 0,
                    xbzrle: 0,
                });
                counts.len() - 1
            }
        };
        let c = &mut counts[i];
        match kind {
            0 => c.zero += 1,
            1 => c.page += 1,
            _ => c.xbzrle += 1,
        }
    }
}

/// Iterator over [`RamRecords`].
#[derive(Debug, Clone)]
pub struct RamIter<'a> {
    r: Reader<'a>,
    ram: RamContext<'a>,
    done: bool,
}

impl RamIter<'_> {
    /// Input offset of the next record.
    pub fn offset(&self) -> usize {
        self.r.offset()
    }
}

impl<'a> Iterator for RamIter<'a> {
    type Item = RamRecord<'a>;

    fn next(&mut self) -> Option<RamRecord<'a>> {
        if self.done {
            return None;
        }
        #[cfg(test)]
        reads::bump(&reads::AGAIN);
        // Parsing checked these bytes already; an error cannot happen, but ends the walk.
        match self.ram.read_record(&mut self.r) {
            Ok(x) => {
                self.done = x == RamRecord::Eos;
                Some(x)
            }
            Err(_) => {
                self.done = true;
                None
            }
        }
    }
}

/// A record and where it was in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Offset of its first byte.
    pub offset: usize,
    /// Offset just past it.
    pub end: usize,
    /// The record.
    pub item: Item<'a>,
}

/// A decoded stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream<'a> {
    /// File version (3).
    pub version: u32,
    /// The configuration record, if sent.
    pub configuration: Option<Configuration<'a>>,
    /// Section, command and EOF records in stream order.
    pub entries: Vec<Entry<'a>>,
    /// The VMDESCRIPTION JSON text, if present.
    pub trailer: Option<&'a [u8]>,
    /// The parsed description, if a trailer is present.
    pub description: Option<Description<'a>>,
    /// Input length.
    pub len: usize,
    /// Where a walk with [`ParseOptions::stop_at_unmeasured`] stopped (the entries end there).
    pub unmeasured: Option<Unmeasured>,
    /// Whether sections end with footers (machine types after pc-*-2.2); a stream without
    /// them is written back without them.
    pub footers: bool,
}

/// What to say when [`find_description`] finds none, for commands that need one.
pub const NO_DESCRIPTION: &str =
    "no VMDESCRIPTION trailer (of at most 16 MiB of JSON) ends the input";

/// Finds and parses the trailer the way analyze-migration.py does (it must end the input).
/// The one reader of the description for every command: the record walk refuses a trailer
/// this does not find ([`vmstate::ErrorKind::TrailerAmbiguous`], or a length over
/// [`vmstate::wire::Trailer::MAX_LEN`]), so no command reads a stream without the
/// description another command uses.
///
/// Only the last [`MAX_DESCRIPTION_LEN`] bytes (and the six before them: EOF, type byte and
/// length) are looked at: a longer trailer is refused anyway, and a multi-GiB file without a
/// trailer (and with no NUL byte near its end) is not read back to front. A longer trailer
/// that ends the stream is refused by [`Stream::parse_observed`] when it reaches it.
pub fn find_description(bytes: &[u8]) -> Result<Option<(usize, Description<'_>)>, StreamError> {
    let from = bytes.len().saturating_sub(MAX_DESCRIPTION_LEN + 6);
    let Some(at) = bytes
        .get(from..)
        .and_then(Trailer::locate)
        .map(|at| from + at)
    else {
        return Ok(None);
    };
    let json = &bytes[at + 5..];
    Description::from_json_bytes(json)
        .map(|d| Some((at, d)))
        .map_err(StreamError::Description)
}

/// What [`Stream::parse_observed`] does beyond decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// A stream without section footers and without a trailer (machine types up to
    /// pc-*-2.2) can be measured only as far as the typed device tables reach: stop at the
    /// first section none of them describes and keep what was read ([`Stream::unmeasured`])
    /// instead of failing. Only for showing a map: such a stream cannot be written back.
    pub stop_at_unmeasured: bool,
    /// `(from, to)`: the input is a view of a live stream whose bytes `from..to` (from the end
    /// of the CONFIGURATION record to the held final phase) another reader walked and are not
    /// in it (the validating proxy's `--set`); the walk continues at `to`
    /// ([`Records::resume_at`]), and [`Stream::write_to`] writes the records it read.
    pub resume: Option<(usize, usize)>,
    /// The file offset of the stream's byte 0 ([`crate::input::Input::stream_start`]): what
    /// mapped-ram headers' file offsets are relative to ([`vmstate::ram::RamOptions::file_offset`]).
    pub file_offset: u64,
}

/// What a walk ([`Stream::parse_visit`]) hands out as it reads: each RAM record once, as it
/// is read and checked, and each record's entry once it is decoded (after the RAM records of
/// its section). A command that compares or writes pages does it here, so no RAM record is
/// read twice.
pub trait Visit<'a> {
    /// A RAM record of a section of kind `kind`, as the walk reads it.
    fn ram(&mut self, kind: SectionKind, record: &RamRecord<'a>) {
        let _ = (kind, record);
    }

    /// The entry of one record, with the stream read so far (header and configuration); it
    /// is kept in [`Stream::entries`] only if given back.
    fn entry(&mut self, stream: &Stream<'a>, entry: Entry<'a>) -> Option<Entry<'a>>;
}

/// The visitor that keeps every entry and looks at nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeepAll;

impl<'a> Visit<'a> for KeepAll {
    fn entry(&mut self, _: &Stream<'a>, entry: Entry<'a>) -> Option<Entry<'a>> {
        Some(entry)
    }
}

/// How often the parse read a RAM record and decoded a section body, for the tests that
/// show each command does each once.
#[cfg(test)]
pub(crate) mod reads {
    use std::cell::Cell;

    thread_local! {
        /// RAM records read by the walk.
        pub static WALKED: Cell<u64> = const { Cell::new(0) };
        /// RAM records read again from a kept entry ([`super::RamIter`]).
        pub static AGAIN: Cell<u64> = const { Cell::new(0) };
        /// Section bodies decoded with the description ([`super::DescDecoder::decode`]).
        pub static DECODED: Cell<u64> = const { Cell::new(0) };
    }

    /// Adds one to `counter`.
    pub fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
        counter.with(|c| c.set(c.get() + 1));
    }

    /// The three counters (walked, again, decoded), set back to zero.
    pub fn take() -> (u64, u64, u64) {
        let t = |c: &'static std::thread::LocalKey<Cell<u64>>| c.with(|c| c.replace(0));
        (t(&WALKED), t(&AGAIN), t(&DECODED))
    }

    /// What a kept parse holds: (RAM records, device sections) — what one walk reads once.
    pub fn held(s: &super::Stream<'_>) -> (u64, u64) {
        let records = s
            .entries
            .iter()
            .map(|e| match &e.item {
                super::Item::Ram { records, .. } => records.iter().count() as u64,
                _ => 0,
            })
            .sum();
        (records, s.devices().count() as u64)
    }
}

/// Where the walk of a stream without footers and trailer stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmeasured {
    /// Offset of the section record.
    pub offset: usize,
    /// `'cpu_common' instance 0 (id 3)`.
    pub section: String,
    /// Where and why `--schema` stopped ([`crate::schema`]); `None` when nothing could
    /// measure the section (no footers, trailer, typed model or schema).
    pub why: Option<String>,
}

/// Where a body nothing decodes ends: found by the footer scan, or, in a stream without
/// footers, by the typed device tables (`vmstate_devices::pc::VMSDS`) for FULL sections; any
/// other body cannot be measured then.
struct Lengths {
    footers: bool,
    scratch: Vec<u8>,
}

impl BodyLength for Lengths {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> vmstate::Result<Option<usize>> {
        match () {
            // Iterative sections other than `ram` are not in the description.
            _ if self.footers => FooterScan.body_len(sec, rest, base),
            _ if sec.kind == SectionKind::Full => {
                Schemas::new(vmstate_devices::pc::VMSDS, &mut self.scratch)
                    .body_len(sec, rest, base)
            }
            _ => Ok(None),
        }
    }
}

/// A walk of a v3 stream that its caller drives one step at a time: one RAM record inside a
/// RAM section, one whole record otherwise. [`Stream::parse_visit`] runs one to its end;
/// `diff` runs two side by side, so it compares their pages as it reads them. Every body is
/// read once: RAM records handed to the visitor as they are checked, FULL bodies decoded with
/// the description, and the codec's walk told where each body ended.
pub struct Walk<'d, 'a> {
    bytes: &'a [u8],
    records: Records<'a, Lengths>,
    description: Option<&'d Description<'a>>,
    decoder: Option<DescDecoder<'d, 'a>>,
    options: ParseOptions,
    footers: bool,
    stream: Stream<'a>,
    /// The RAM section being read.
    ram: Option<RamSection<'a>>,
    done: bool,
}

/// A RAM section between its head and its EOS record.
struct RamSection<'a> {
    head: SectionHead<&'a [u8]>,
    rest: &'a [u8],
    r: Reader<'a>,
    /// The RAM state before the section: where a later iteration of its records starts.
    start: RamContext<'a>,
    lists: Vec<BlockList<'a>>,
}

fn section_meta<'a>(head: &SectionHead<&'a [u8]>, body_len: usize) -> SectionMeta<'a> {
    SectionMeta {
        kind: head.kind,
        section_id: head.section_id,
        idstr: head.idstr,
        instance_id: head.instance_id,
        version_id: head.version_id,
        body_offset: head.body_offset(),
        body_len,
    }
}

impl<'d, 'a> Walk<'d, 'a> {
    /// A walk of `bytes` decoding FULL sections with `description` (see
    /// [`Stream::parse_with`]).
    pub fn new(
        bytes: &'a [u8],
        description: Option<&'d Description<'a>>,
        options: ParseOptions,
    ) -> Self {
        let footers = probe_section_footers(bytes);
        let mut walk = Options {
            section_footers: footers,
            ..Options::for_stream(bytes)
        };
        walk.ram.file_offset = options.file_offset;
        let lengths = Lengths {
            footers,
            scratch: if footers {
                Vec::new()
            } else {
                vec![0; vmstate_devices::pc::MAX_STATE_SIZE]
            },
        };
        Walk {
            bytes,
            records: Records::with_options(bytes, lengths, walk),
            description,
            decoder: description.map(DescDecoder::new),
            options,
            footers,
            stream: Stream {
                version: 0,
                configuration: None,
                entries: Vec::new(),
                trailer: None,
                description: None,
                len: bytes.len(),
                unmeasured: None,
                footers,
            },
            ram: None,
            done: false,
        }
    }

    /// Takes one step, handing what it read to `visit` and the offset reached to `reached`:
    /// `Ok(false)` once the walk has ended (and after an error).
    pub fn step(
        &mut self,
        reached: &mut dyn FnMut(usize),
        visit: &mut dyn Visit<'a>,
    ) -> Result<bool, StreamError> {
        if self.done {
            return Ok(false);
        }
        let stepped = self.advance(reached, visit);
        self.done = !matches!(stepped, Ok(true));
        stepped
    }

    fn advance(
        &mut self,
        reached: &mut dyn FnMut(usize),
        visit: &mut dyn Visit<'a>,
    ) -> Result<bool, StreamError> {
        if let Some(ram) = &mut self.ram {
            let rec = self
                .records
                .ram_mut()
                .read_record(&mut ram.r)
                .map_err(|e| e.in_section(ram.head.context()))?;
            #[cfg(test)]
            reads::bump(&reads::WALKED);
            if let RamRecord::MemSize(list) = rec {
                ram.lists.push(list);
            }
            visit.ram(ram.head.kind, &rec);
            reached(ram.r.offset());
            if rec == RamRecord::Eos
                && let Some(ram) = self.ram.take()
            {
                let len = ram.r.position();
                let records = RamRecords(Box::new(RamSectionState {
                    body: ram.rest.get(..len).unwrap_or_default(),
                    base: ram.head.body_offset(),
                    start: ram.start,
                    lists: ram.lists,
                }));
                let section = section_meta(&ram.head, len);
                self.commit(&ram.head, len, Item::Ram { section, records }, visit)?;
            }
            return Ok(true);
        }
        if let Some((from, to)) = self.options.resume
            && self.records.offset() == from
        {
            self.records.resume_at(to)?;
        }
        let Some(next) = self.records.next_head() else {
            return Ok(false);
        };
        let head = match next? {
            Next::Section(head) => head,
            Next::Record(located) => {
                reached(located.offset);
                let stream = &mut self.stream;
                let item = match located.record {
                    Record::Header { version } => {
                        stream.version = version;
                        return Ok(true);
                    }
                    Record::Configuration(c) => {
                        // QEMU ≥ 8.2 describes the record too: it must read as described.
                        if let Some(cfg) = self.description.and_then(|d| d.configuration.as_ref()) {
                            let body = self
                                .bytes
                                .get(located.offset + 1..located.end)
                                .unwrap_or_default();
                            generic::decode_configuration(cfg, body, located.offset + 1).map_err(
                                |error| StreamError::Body {
                                    section: "configuration".into(),
                                    error: Box::new(error),
                                },
                            )?;
                        }
                        stream.configuration = Some(c);
                        return Ok(true);
                    }
                    Record::Trailer(t) => {
                        if self.description.is_none() && t.json.len() > MAX_DESCRIPTION_LEN {
                            // Too long for `find_description` to look for: the parser's
                            // length check refuses it with its own message.
                            Description::from_json_bytes(t.json)
                                .map_err(StreamError::Description)?;
                        }
                        stream.trailer = Some(t.json);
                        return Ok(true);
                    }
                    Record::Eof => Item::Eof,
                    Record::Command(c) => Item::Command(c),
                    // Sections come as heads.
                    Record::Section(_) => return Ok(true),
                };
                stream.keep(visit, located.offset, located.end, item);
                return Ok(true);
            }
        };
        reached(head.offset);
        let rest = self.records.body_rest(&head);
        if head.is_ram() {
            self.ram = Some(RamSection {
                head,
                rest,
                r: Reader::new(rest, head.body_offset()),
                start: *self.records.ram(),
                lists: Vec::new(),
            });
            return Ok(true);
        }
        let (len, item) = if let Some(d) = self
            .decoder
            .as_mut()
            .filter(|_| head.kind == SectionKind::Full)
        {
            let (device, body, len) = d.decode(&head, rest)?;
            let section = section_meta(&head, len);
            let item = Item::Device {
                section,
                device,
                body,
            };
            (len, item)
        } else {
            let len = match self.records.measure(&head) {
                Ok(n) => n,
                Err(e) if !self.footers && e.kind == ErrorKind::BodyLengthUnknown => {
                    let section = section_label(head.idstr, head.instance_id, head.section_id);
                    // `--schema`: a layout from a description of the same build, checked
                    // against its dump (crate::schema); it stops where they cannot tell.
                    let measured = match crate::schema::installed() {
                        Some(schema) if head.kind == SectionKind::Full => {
                            Some(schema.measure(&head, rest).map(|(_, n)| n))
                        }
                        _ => None,
                    };
                    match measured {
                        Some(Ok(n)) => n,
                        Some(Err(stop)) if self.options.stop_at_unmeasured => {
                            self.stream.unmeasured = Some(Unmeasured {
                                offset: stop.offset,
                                section,
                                why: Some(stop.why),
                            });
                            return Ok(false);
                        }
                        Some(Err(stop)) => return Err(stop.into()),
                        None if self.options.stop_at_unmeasured => {
                            self.stream.unmeasured = Some(Unmeasured {
                                offset: e.offset,
                                section,
                                why: None,
                            });
                            return Ok(false);
                        }
                        None => {
                            return Err(StreamError::Mismatch {
                                offset: e.offset,
                                message: format!(
                                    "section {section}: cannot measure its body: the stream has \
                                     no section footers (machine types up to pc-*-2.2) and no \
                                     VMDESCRIPTION trailer, no typed model describes it, and no \
                                     --schema was given"
                                ),
                            });
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let section = section_meta(&head, len);
            let item = Item::Opaque {
                section,
                body: rest.get(..len).unwrap_or_default(),
            };
            (len, item)
        };
        self.commit(&head, len, item, visit)?;
        Ok(true)
    }

    /// Tells the codec's walk where the body of `head` ended and hands its entry over.
    fn commit(
        &mut self,
        head: &SectionHead<&'a [u8]>,
        len: usize,
        item: Item<'a>,
        visit: &mut dyn Visit<'a>,
    ) -> Result<(), StreamError> {
        let located = self.records.commit(head, len)?;
        self.stream.keep(visit, located.offset, located.end, item);
        Ok(())
    }

    /// The stream walked, once every described device was found in it (QEMU describes what
    /// it sent); its description is the caller's to set.
    pub fn finish(self) -> Result<Stream<'a>, StreamError> {
        if let Some(d) = self.decoder.as_ref()
            && let Some(dev) = d.unmatched().next()
        {
            return Err(StreamError::Mismatch {
                offset: self.bytes.len(),
                message: format!(
                    "the description lists '{}' instance {}, which the stream does not carry \
                     ({} of {} devices matched)",
                    dev.name,
                    dev.instance_id,
                    d.matched(),
                    d.devices_len()
                ),
            });
        }
        Ok(self.stream)
    }
}

impl<'a> Stream<'a> {
    /// Decodes every record of `bytes`, using its own VMDESCRIPTION trailer if it has one.
    pub fn parse(bytes: &'a [u8]) -> Result<Stream<'a>, StreamError> {
        let description = find_description(bytes)?.map(|(_, d)| d);
        Stream::parse_with(bytes, description)
    }

    /// Decodes every record of `bytes` with `description` for its FULL sections: the stream's
    /// own (already parsed), or one taken from another stream of the same machine when this
    /// one has no trailer (`suppress-vmdesc`). Without a description, bodies stay opaque.
    pub fn parse_with(
        bytes: &'a [u8],
        description: Option<Description<'a>>,
    ) -> Result<Stream<'a>, StreamError> {
        Stream::parse_observed(bytes, description, ParseOptions::default(), &mut |_| {})
    }

    /// [`Stream::parse_with`] with `options`, calling `reached` with the input offset as the
    /// walk advances (for a progress line, or to release the input behind it).
    pub fn parse_observed(
        bytes: &'a [u8],
        description: Option<Description<'a>>,
        options: ParseOptions,
        reached: &mut dyn FnMut(usize),
    ) -> Result<Stream<'a>, StreamError> {
        Stream::parse_visit(bytes, description, options, reached, &mut KeepAll)
    }

    /// Hands the entry of bytes `offset..end` to `visit` and keeps what it gives back.
    fn keep(&mut self, visit: &mut dyn Visit<'a>, offset: usize, end: usize, item: Item<'a>) {
        if let Some(kept) = visit.entry(self, Entry { offset, end, item }) {
            self.entries.push(kept);
        }
    }

    /// [`Stream::parse_observed`] handing each RAM record and each record's entry to `visit`
    /// as soon as it is read ([`Visit`]); an entry is kept in [`Stream::entries`] only if
    /// `visit` gives it back. A command that needs one record at a time (`inspect`'s map)
    /// keeps nothing per record this way.
    pub fn parse_visit(
        bytes: &'a [u8],
        description: Option<Description<'a>>,
        options: ParseOptions,
        reached: &mut dyn FnMut(usize),
        visit: &mut dyn Visit<'a>,
    ) -> Result<Stream<'a>, StreamError> {
        let mut walk = Walk::new(bytes, description.as_ref(), options);
        while walk.step(reached, visit)? {}
        let mut stream = walk.finish()?;
        stream.description = description;
        Ok(stream)
    }

    /// Writes the stream to `out`. Without edits the bytes equal the input.
    pub fn write_to<W: Write>(&self, out: W) -> io::Result<()> {
        self.write_observed(out, &mut |_| {})
    }

    /// [`Stream::write_to`], calling `reached` with the input offset of each record written.
    /// A large piece written straight from a mapped input (a mapped-ram pages region, inside
    /// one record) releases it as it goes ([`crate::input::Releasing`]).
    pub fn write_observed<W: Write>(
        &self,
        out: W,
        reached: &mut dyn FnMut(usize),
    ) -> io::Result<()> {
        let mut sink = IoWrite {
            w: io::BufWriter::new(crate::input::Releasing(out)),
            n: 0,
        };
        self.emit(&mut sink, reached).map_err(|e| match e {
            WriteError::Io(e) => e,
            WriteError::Codec(e) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        })?;
        sink.w.flush()
    }

    /// The stream as bytes.
    pub fn to_bytes(&self) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(self.len);
        self.write_to(&mut v)?;
        Ok(v)
    }

    fn emit(
        &self,
        out: &mut IoWrite<impl Write>,
        reached: &mut dyn FnMut(usize),
    ) -> Result<(), WriteError> {
        let mut w = StreamWriter::new(out);
        w.header(self.version)?;
        if let Some(c) = &self.configuration {
            w.configuration(c)?;
        }
        let mut buf = Vec::new();
        for e in &self.entries {
            reached(e.offset);
            match &e.item {
                Item::Eof => w.eof()?,
                Item::Command(c) => w.command(c)?,
                Item::Ram { section, records } => {
                    w.section_header(&section.header())?;
                    let mut it = records.iter();
                    while let Some(r) = it.next() {
                        let (ram, out) = w.ram_parts();
                        ram.record(&r, out)?;
                        reached(it.offset());
                    }
                    if self.footers {
                        w.footer(section.section_id)?;
                    }
                }
                Item::Device { section, body, .. } => {
                    buf.clear();
                    body.encode(&mut buf);
                    self.section(&mut w, section, &buf)?;
                }
                Item::Opaque { section, body } => self.section(&mut w, section, body)?,
            }
        }
        if let Some(json) = self.trailer {
            w.trailer(json)?;
        }
        Ok(())
    }

    /// Writes a section record: header, body, and the footer if the stream has footers.
    fn section<S: Sink>(
        &self,
        w: &mut StreamWriter<'_, S>,
        section: &SectionMeta<'_>,
        body: &[u8],
    ) -> Result<(), S::Error> {
        if self.footers {
            return w.section_bytes(&section.header(), body);
        }
        w.section_header(&section.header())?;
        let (_, out) = w.ram_parts();
        out.write(body)
    }

    /// Device sections with their decoded bodies.
    pub fn devices(&self) -> impl Iterator<Item = (&SectionMeta<'a>, &Body<'a>)> {
        self.entries.iter().filter_map(|e| match &e.item {
            Item::Device { section, body, .. } => Some((section, body)),
            _ => None,
        })
    }

    /// The object analyze-migration.py `-d state` prints: `"idstr (section_id)"` keys in the
    /// order sections first appear, `ram` as its block sizes, every other section as its
    /// decoded body. `None` when the stream has no description (the script fails then too).
    pub fn analyze_state(&self) -> Option<Value> {
        self.description.as_ref()?;
        let mut m = Map::new();
        for e in &self.entries {
            match &e.item {
                Item::Ram { section, records } if section.kind == SectionKind::Start => {
                    let mut sizes = Map::new();
                    for b in records.block_lists().iter().flat_map(|l| l.iter()) {
                        sizes.insert(
                            String::from_utf8_lossy(b.name).into_owned(),
                            format!("0x{:016x}", b.length).into(),
                        );
                    }
                    let mut v = Map::new();
                    v.insert("section sizes".into(), Value::Object(sizes));
                    m.insert(key(section), Value::Object(v));
                }
                Item::Device { section, body, .. } => {
                    m.insert(key(section), body.to_analyze_json());
                }
                _ => {}
            }
        }
        Some(Value::Object(m))
    }

    /// Applies `PATH=VALUE` (`IDSTR[INSTANCE].FIELD...=VALUE`) to the matching device
    /// section. `check` sees the edited body before it replaces the old one.
    pub fn set(&mut self, assignment: &str, check: &dyn EditCheck) -> Result<(), EditError> {
        let (path, value) = assignment
            .split_once('=')
            .ok_or_else(|| EditError(format!("'{assignment}': expected PATH=VALUE")))?;
        let (idstr, instance, field) = split_section_path(path)?;
        let mut found = false;
        let desc = self.description.as_ref();
        for e in &mut self.entries {
            let Item::Device {
                section,
                body,
                device,
            } = &mut e.item
            else {
                continue;
            };
            if section.idstr != idstr.as_bytes() || section.instance_id != instance {
                continue;
            }
            found = true;
            let mut edited = body.clone();
            edited
                .set(field, value)
                .map_err(|e| EditError(format!("{assignment}: {e}")))?;
            let bytes = edited.to_bytes();
            // The edited body must still read back as the same tree: a value can make the
            // bytes after a nested struct look like a subsection to QEMU (docs/V3-WIRE.md §7.2).
            if let Some(d) = desc.and_then(|d| d.devices.get(*device)) {
                match generic::decode_section(&d.body, &bytes, section.body_offset) {
                    Ok(back) if back == edited => {}
                    Ok(_) => {
                        return Err(EditError(format!(
                            "{assignment}: the edited body would not read back the same"
                        )));
                    }
                    Err(e) => return Err(EditError(format!("{assignment}: {}", e.message))),
                }
            }
            check
                .check(idstr, instance, section.version_id, &bytes)
                .map_err(|m| EditError(format!("{path}: {m}")))?;
            *body = edited;
        }
        if found {
            return Ok(());
        }
        // The section may be there without a field layout to edit it by.
        let opaque = self.entries.iter().any(|e| {
            matches!(&e.item, Item::Opaque { section, .. }
                if section.idstr == idstr.as_bytes() && section.instance_id == instance)
        });
        Err(EditError(if opaque {
            format!(
                "{path}: section '{idstr}' instance {instance} is in this stream but its fields \
                 are not described: {}",
                if self.description.is_some() {
                    "the VMDESCRIPTION trailer has no entry for it"
                } else {
                    "the stream has no VMDESCRIPTION trailer (edits use the field layout the \
                     trailer gives)"
                }
            )
        } else {
            format!("{path}: no section '{idstr}' instance {instance} in this stream")
        }))
    }
}

fn key(s: &SectionMeta<'_>) -> String {
    format!("{} ({})", String::from_utf8_lossy(s.idstr), s.section_id)
}

/// Splits `IDSTR[INSTANCE].REST`. The idstr may itself hold dots, slashes and colons
/// (`0000:00:01.1/ide`), so the split is at the first `[digits].`.
pub fn split_section_path(path: &str) -> Result<(&str, u32, &str), EditError> {
    let bad = || {
        EditError(format!(
            "'{path}': expected IDSTR[INSTANCE].FIELD, e.g. i8259[0].imr"
        ))
    };
    let mut from = 0;
    while let Some(i) = path[from..].find('[') {
        let open = from + i;
        let rest = &path[open + 1..];
        if let Some((digits, tail)) = rest.split_once(']')
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Some(field) = tail.strip_prefix('.')
        {
            let n = digits.parse().map_err(|_| bad())?;
            if open == 0 || field.is_empty() {
                return Err(bad());
            }
            return Ok((&path[..open], n, field));
        }
        from = open + 1;
    }
    Err(bad())
}

enum WriteError {
    Io(io::Error),
    Codec(Box<vmstate::Error>),
}

impl From<vmstate::Error> for WriteError {
    fn from(e: vmstate::Error) -> Self {
        WriteError::Codec(Box::new(e))
    }
}

struct IoWrite<W: Write> {
    w: io::BufWriter<W>,
    n: usize,
}

impl<W: Write> Sink for IoWrite<W> {
    type Error = WriteError;

    fn write(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        self.w.write_all(bytes).map_err(WriteError::Io)?;
        self.n += bytes.len();
        Ok(())
    }

    fn position(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made stream: an iterative (START/END) section nobody describes around a FULL
    /// section the trailer describes.
    fn synthetic() -> Vec<u8> {
        let json = br#"{"page_size": 4096, "devices": [{"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 2, "fields": [{"name": "x", "type": "uint16", "size": 2}]}]}"#;
        let mut b = b"QEVM\0\0\0\x03\x07\0\0\0\x0dpc-i440fx-7.2".to_vec();
        b.extend_from_slice(b"\x01\0\0\0\x01\x05dummy\0\0\0\0\0\0\0\x01\x11\x22\x7e\0\0\0\x01");
        b.extend_from_slice(b"\x04\0\0\0\x02\x03dev\0\0\0\0\0\0\0\x02\x00\x2a\x7e\0\0\0\x02");
        b.extend_from_slice(b"\x03\0\0\0\x01\x33\x7e\0\0\0\x01\x00\x06");
        b.extend_from_slice(&(json.len() as u32).to_be_bytes());
        b.extend_from_slice(json);
        b
    }

    #[test]
    fn the_trailer_is_looked_for_only_as_far_back_as_it_may_reach() {
        // A trailer one byte longer than the parser accepts: not found by the bounded look
        // back, and refused (with the parser's message) when the walk reaches it.
        let mut b = b"QEVM\0\0\0\x03\x07\0\0\0\x0dpc-i440fx-7.2\0\x06".to_vec();
        let json_len = MAX_DESCRIPTION_LEN + 1;
        b.extend_from_slice(&(json_len as u32).to_be_bytes());
        b.push(b'{');
        b.resize(b.len() + json_len - 2, b' ');
        b.push(b'}');
        assert!(find_description(&b).unwrap().is_none());
        let e = Stream::parse(&b).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "length too large: expected at most {MAX_DESCRIPTION_LEN}, found {json_len}"
            )),
            "{e}"
        );
        // One byte shorter is found where it is (and read: it lacks the required keys).
        let json_len = MAX_DESCRIPTION_LEN;
        b.truncate(28);
        b.extend_from_slice(&(json_len as u32).to_be_bytes());
        b.push(b'{');
        b.resize(b.len() + json_len - 2, b' ');
        b.push(b'}');
        let e = find_description(&b).err().map(|e| e.to_string());
        assert!(
            e.as_ref().is_some_and(|e| !e.contains("expected at most")),
            "{e:?}"
        );
    }

    #[test]
    fn undescribed_iterative_sections_stay_opaque() {
        let bytes = synthetic();
        let s = Stream::parse(&bytes).unwrap();
        let kinds: Vec<&str> = s
            .entries
            .iter()
            .map(|e| match &e.item {
                Item::Opaque { body, .. } if body == b"\x11\x22" || body == b"\x33" => "opaque",
                Item::Device { .. } => "device",
                Item::Eof => "eof",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["opaque", "device", "opaque", "eof"]);
        assert_eq!(
            serde_json::to_string(&s.analyze_state().unwrap()).unwrap(),
            r#"{"dev (2)":{"x":"0x002a"}}"#
        );
        let mut text = Vec::new();
        assert!(crate::analyze::write_state(&s, &mut text));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            crate::pretty_json(&s.analyze_state().unwrap()) + "\n"
        );
        assert!(s.to_bytes().unwrap() == bytes);
        let mut e = s.clone();
        e.set("dev[0].x=0xffff", &crate::generic::NoCheck).unwrap();
        let out = e.to_bytes().unwrap();
        let at = bytes.windows(2).position(|w| w == b"\x00\x2a").unwrap();
        assert_eq!(&out[at..at + 2], b"\xff\xff");
    }

    #[test]
    fn description_and_stream_must_agree() {
        let bytes = synthetic();
        // Version 2 in the header, 3 in the description (same JSON length).
        let mut bad = bytes.clone();
        let at = bad
            .windows(12)
            .position(|w| w == b"\"version\": 2")
            .unwrap();
        bad[at + 11] = b'3';
        let e = Stream::parse(&bad).unwrap_err();
        assert!(
            matches!(&e, StreamError::Mismatch { message, .. } if message.contains("'dev' instance 0 (id 2) version 2")),
            "{e}"
        );
        // A description with one device too many.
        let json = br#"{"page_size": 4096, "devices": [{"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 2, "fields": [{"name": "x", "type": "uint16", "size": 2}]}, {"name": "dev", "instance_id": 1, "size": 0, "fields": []}]}"#;
        let cut = Trailer::locate(&bytes).unwrap() + 1;
        let mut more = bytes[..cut].to_vec();
        more.extend_from_slice(&(json.len() as u32).to_be_bytes());
        more.extend_from_slice(json);
        let e = Stream::parse(&more).unwrap_err();
        assert!(
            e.to_string()
                .contains("lists 'dev' instance 1, which the stream does not carry"),
            "{e}"
        );
    }

    /// Sections find their entry by idstr and instance id, not by position: a trailer listing
    /// the devices in another order describes the same stream, and a section the trailer does
    /// not list is refused with its name.
    #[test]
    fn sections_are_matched_to_entries_by_idstr_and_instance() {
        let with_json = |json: &[u8]| {
            let bytes = synthetic();
            let cut = Trailer::locate(&bytes).unwrap() + 1;
            let mut b = bytes[..cut].to_vec();
            b.extend_from_slice(&(json.len() as u32).to_be_bytes());
            b.extend_from_slice(json);
            b
        };
        let other = br#"{"name": "other", "instance_id": 0, "size": 0, "fields": []}"#;
        let dev = br#"{"name": "dev", "instance_id": 0, "vmsd_name": "dev", "version": 2, "fields": [{"name": "x", "type": "uint16", "size": 2}]}"#;
        let json = |list: &[&[u8]]| {
            let mut j = br#"{"page_size": 4096, "devices": ["#.to_vec();
            j.extend_from_slice(&list.join(&b", "[..]));
            j.extend_from_slice(b"]}");
            j
        };
        // `other` first: the ordinal rule would have decoded `dev` with it.
        let bytes = with_json(&json(&[other, dev]));
        let e = Stream::parse(&bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("lists 'other' instance 0, which the stream does not carry"),
            "{e}"
        );
        let d = Description::from_json_bytes(&json(&[other, dev]))
            .unwrap()
            .into_owned();
        assert_eq!(d.device(b"dev", 0).map(|(i, _)| i), Some(1));
        assert_eq!(d.device(b"other", 0).map(|(i, _)| i), Some(0));
        assert!(d.device(b"dev", 1).is_none() && d.device(b"de", 0).is_none());
        // Only `other`: the FULL section `dev` is not described.
        let bytes = with_json(&json(&[other]));
        let e = Stream::parse(&bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("section 'dev' instance 0 (id 2) is not in the stream's description"),
            "{e}"
        );
        // The same section described twice is refused when the trailer is read.
        let e = Description::from_json_bytes(&json(&[dev, other, dev])).unwrap_err();
        assert_eq!(e.path, "devices[2]");
        assert!(
            e.message.contains("described twice (also devices[0])"),
            "{e}"
        );
    }

    #[test]
    fn section_paths_split_at_the_instance() {
        assert_eq!(
            split_section_path("i8259[0].imr").unwrap(),
            ("i8259", 0, "imr")
        );
        assert_eq!(
            split_section_path("0000:00:01.1/ide[0].bmdma[1].cmd").unwrap(),
            ("0000:00:01.1/ide", 0, "bmdma[1].cmd")
        );
        assert_eq!(
            split_section_path("cpu[12].env.regs[0]").unwrap(),
            ("cpu", 12, "env.regs[0]")
        );
        for bad in [
            "i8259.imr",
            "[0].imr",
            "i8259[0]",
            "i8259[x].imr",
            "i8259[0].",
        ] {
            assert!(split_section_path(bad).is_err(), "{bad}");
        }
    }
}
