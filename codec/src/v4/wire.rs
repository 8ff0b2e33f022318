//! v4 records: the stream header with its vendor chain, the record frame, section records and
//! subsection frames (`docs/FORMAT.md` §1–§7), as parsed views plus emitters.
//!
//! ```text
//! header:      "QEVM" | 00 00 00 04 | flags be32 | levels u8 | levels × (vendor str8 | minor be16)
//! record:      type u8 | len be32 | payload[len]            (EOF is the single byte 00)
//! FULL:        section_id be32 | idstr str8 | instance be32 | version be32 | levels × minor be16
//!              | fields_len be32 | fields | subsection frame* | [crc32c be32]
//! START:       section_id be32 | idstr str8 | instance be32 | version be32 | levels × minor be16
//!              | data | [crc32c be32]
//! PART/END:    section_id be32 | data | [crc32c be32]
//! COMMAND:     cmd be16 | len be16 | payload[len] | [packaged] | [crc32c be32]   (v3 bytes after 08)
//! subsection:  05 | flags u8 | [level u8 | minor be16] | name str8 | version be32 | len be32 | body
//! ```
//!
//! Contract: [`Records4`] checks a record's frame and, when the stream carries checksums, its
//! CRC-32C before it parses anything inside it, and parses every subsection frame of a FULL
//! section before yielding the section, so a consumer never sees a byte of a corrupt or
//! malformed record. Nothing here panics on any input.

use super::{Error, MAX_LEVELS, Minors, Result};
use crate::error::{ErrorKind, Name, SectionContext};
use crate::schema::{VendorId, VendorTag};
use crate::sink::Sink;
use crate::wire::emit_name;
use crate::wire::header::{MAGIC, header_bytes};
use crate::wire::section::SectionKind;
use crate::wire::{Command, Reader, record};

/// Header flag bits (§1).
pub mod flags {
    /// Every section record ends with a CRC-32C of the record.
    pub const CRC32C: u32 = 1 << 0;
    /// All flags this reader knows; any other bit set is an error.
    pub const KNOWN: u32 = CRC32C;
}

/// Subsection flag bits (§6).
pub mod sub_flags {
    /// A reader that does not know the subsection must refuse the stream (otherwise it may skip
    /// it, like a PNG ancillary chunk).
    pub const MUST_UNDERSTAND: u8 = 1 << 0;
    /// The frame carries a vendor tag (level, minor).
    pub const VENDOR: u8 = 1 << 1;
    /// All flags this reader knows.
    pub const KNOWN: u8 = MUST_UNDERSTAND | VENDOR;
}

/// Record types that are not v3 record types (§2).
pub mod record4 {
    /// Lowest ancillary record type: a reader skips unknown records of types `0x80..=0xff`
    /// and refuses unknown records below.
    pub const ANCILLARY: u8 = 0x80;
    /// A DATA record (§13): more data of the START/PART/END section record just before it
    /// (a live writer that cannot know a section's length ahead streams its data in pieces).
    pub const DATA: u8 = 0x09;
}

use super::crc32c::Crc32c;
pub use super::crc32c::crc32c;
use crate::machine::{Admitted, Machine, Open, Phase, RecordType, ctx};

/// One vendor of the chain: a reverse-FQDN id and that vendor's protocol minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vendor<'a> {
    /// Reverse-FQDN vendor id, e.g. `org.linux-kvm`.
    pub id: VendorId<'a>,
    /// The vendor's own protocol revision (informative; devices carry their own minors).
    pub protocol_minor: u16,
}

/// The vendor chain: level 1 is the first downstream of upstream QEMU, level 2 its downstream…
pub type VendorChain<'a> = heapless::Vec<Vendor<'a>, MAX_LEVELS>;

/// The v4 file header (§1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// Flag bits ([`flags`]).
    pub flags: u32,
    /// The vendor chain; its length is the protocol minor.
    pub vendors: VendorChain<'a>,
}

impl<'a> Header<'a> {
    /// A header with `vendors` and checksums on or off.
    pub fn new(vendors: &[Vendor<'a>], crc: bool) -> Result<Self> {
        let mut v = VendorChain::new();
        for x in vendors {
            v.push(*x).map_err(|_| Error::TooManyLevels {
                offset: 12,
                found: vendors.len().min(255) as u8,
            })?;
        }
        Ok(Header {
            flags: if crc { flags::CRC32C } else { 0 },
            vendors: v,
        })
    }

    /// The protocol minor: the number of downstream vendor levels.
    pub fn levels(&self) -> usize {
        self.vendors.len()
    }

    /// Whether section records carry a CRC-32C.
    pub fn crc(&self) -> bool {
        self.flags & flags::CRC32C != 0
    }

    /// The vendor id at `level` (1-based), if declared.
    pub fn vendor(&self, level: u8) -> Option<VendorId<'a>> {
        (level as usize)
            .checked_sub(1)
            .and_then(|i| self.vendors.get(i))
            .map(|v| v.id)
    }

    /// Reads the header from the start of the stream.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let magic = r.be32()?;
        if magic != MAGIC {
            return Err(crate::Error::new(0, ErrorKind::BadMagic { found: magic }).into());
        }
        let version = r.be32()?;
        if version != super::VERSION {
            return Err(
                crate::Error::new(4, ErrorKind::UnsupportedFileVersion { found: version }).into(),
            );
        }
        let at = r.offset();
        let flags = r.be32()?;
        if flags & !flags::KNOWN != 0 {
            return Err(Error::ReservedFlags {
                offset: at,
                found: flags,
            });
        }
        let at = r.offset();
        let levels = r.u8()?;
        if levels as usize > MAX_LEVELS {
            return Err(Error::TooManyLevels {
                offset: at,
                found: levels,
            });
        }
        let mut vendors = VendorChain::new();
        for _ in 0..levels {
            let at = r.offset();
            let id = r.name()?;
            let id = VendorId::parse(id).ok_or(Error::BadVendorId {
                offset: at,
                found: Name::new(id),
            })?;
            let protocol_minor = r.be16()?;
            // Cannot overflow: levels <= MAX_LEVELS.
            let _ = vendors.push(Vendor { id, protocol_minor });
        }
        Ok(Header { flags, vendors })
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        // Names are at most 255 bytes, at most MAX_LEVELS of them.
        self.vendors.iter().fold(13, |n: usize, v| {
            n.saturating_add(v.id.as_bytes().len()).saturating_add(3)
        })
    }

    /// Writes the header.
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        out.write(&header_bytes(super::VERSION))?;
        out.write(&self.flags.to_be_bytes())?;
        out.write(&[self.vendors.len() as u8])?;
        for v in &self.vendors {
            emit_name(out, v.id.as_bytes())?;
            out.write(&v.protocol_minor.to_be_bytes())?;
        }
        Ok(())
    }
}

/// A subsection frame (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsectionFrame<'a> {
    /// Offset of the `05` byte.
    pub offset: usize,
    /// Flag bits ([`sub_flags`]).
    pub flags: u8,
    /// Vendor tag, when [`sub_flags::VENDOR`] is set (its `must_understand` is the frame's
    /// [`sub_flags::MUST_UNDERSTAND`] bit).
    pub vendor: Option<VendorTag>,
    /// Full subsection name, e.g. `mc146818rtc/td_hack`.
    pub name: &'a [u8],
    /// Subsection version (the v3 be32, kept as sent).
    pub version: u32,
    /// The body: the subsection's fields and its nested subsections in v3 encoding.
    pub body: &'a [u8],
    /// Offset of `body[0]`.
    pub body_offset: usize,
}

impl<'a> SubsectionFrame<'a> {
    /// Whether a reader that does not know this subsection must refuse the stream.
    pub fn must_understand(&self) -> bool {
        self.flags & sub_flags::MUST_UNDERSTAND != 0
    }

    /// Fixed part of a frame: `05`, flags, name length, version, body length.
    const FIXED: usize = 1 + 1 + 1 + 4 + 4;

    /// Frame length for a name of `name_len` bytes and a body of `body_len`, with or without a
    /// vendor tag.
    pub const fn frame_len(name_len: usize, vendor: bool, body_len: usize) -> usize {
        let fixed = if vendor { Self::FIXED + 3 } else { Self::FIXED };
        fixed.saturating_add(name_len).saturating_add(body_len)
    }

    /// Reads one frame; `levels` is the stream's protocol minor.
    pub fn read(r: &mut Reader<'a>, levels: u8) -> Result<Self> {
        let offset = r.offset();
        let marker = r.u8()?;
        if marker != record::SUBSECTION {
            return Err(
                crate::Error::new(offset, ErrorKind::UnexpectedRecord { found: marker }).into(),
            );
        }
        let at = r.offset();
        let flags = r.u8()?;
        if flags & !sub_flags::KNOWN != 0 {
            return Err(Error::ReservedFlags {
                offset: at,
                found: flags as u32,
            });
        }
        let vendor = if flags & sub_flags::VENDOR != 0 {
            let at = r.offset();
            let level = r.u8()?;
            if level == 0 || level > levels {
                return Err(Error::BadVendorLevel {
                    offset: at,
                    level,
                    levels,
                });
            }
            Some(VendorTag {
                level,
                minor: r.be16()?,
                must_understand: flags & sub_flags::MUST_UNDERSTAND != 0,
            })
        } else {
            None
        };
        let name = r.name()?;
        let version = r.be32()?;
        let len = r.be32()? as usize;
        let body_offset = r.offset();
        let body = r.bytes(len)?;
        Ok(SubsectionFrame {
            offset,
            flags,
            vendor,
            name,
            version,
            body,
            body_offset,
        })
    }

    /// Writes a frame header (everything before the body); the caller writes `body_len` bytes
    /// of body after it. An untagged (upstream) subsection is must-understand; a vendor one is
    /// when its tag says so.
    pub fn emit_head<S: Sink + ?Sized>(
        out: &mut S,
        vendor: Option<VendorTag>,
        name: &[u8],
        version: u32,
        body_len: usize,
    ) -> core::result::Result<(), S::Error> {
        let flags = match vendor {
            None => sub_flags::MUST_UNDERSTAND,
            Some(t) if t.must_understand => sub_flags::MUST_UNDERSTAND | sub_flags::VENDOR,
            Some(_) => sub_flags::VENDOR,
        };
        out.write(&[record::SUBSECTION, flags])?;
        if let Some(t) = vendor {
            out.write(&[t.level])?;
            out.write(&t.minor.to_be_bytes())?;
        }
        emit_name(out, name)?;
        out.write(&version.to_be_bytes())?;
        out.write(&len32(body_len, out.position())?.to_be_bytes())
    }
}

fn len32(n: usize, at: usize) -> crate::Result<u32> {
    u32::try_from(n).map_err(|_| {
        crate::Error::new(
            at,
            ErrorKind::LengthTooLarge {
                found: n as u64,
                max: u32::MAX as u64,
            },
        )
    })
}

/// The subsection frames of a FULL section, in stream order (already checked by
/// [`Records4`], so iteration yields no error for records it produced).
#[derive(Debug, Clone, Copy)]
pub struct Subsections<'a> {
    r: Reader<'a>,
    levels: u8,
}

impl<'a> Iterator for Subsections<'a> {
    type Item = Result<SubsectionFrame<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.remaining() == 0 {
            return None;
        }
        let item = SubsectionFrame::read(&mut self.r, self.levels);
        if item.is_err() {
            // Fuse: skip the rest.
            let n = self.r.remaining();
            let _ = self.r.skip(n);
        }
        Some(item)
    }
}

/// The body of a section record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// A FULL section: top-level fields (v3 encoding, nested subsections included) and the
    /// subsection frames.
    Structured {
        /// The fields.
        fields: &'a [u8],
        /// Offset of `fields[0]`.
        fields_offset: usize,
        /// The subsection frames, back to back.
        subsections: &'a [u8],
        /// Offset of `subsections[0]`.
        subsections_offset: usize,
    },
    /// A START/PART/END section: the iterative data as the v3 stream carries it (e.g. RAM
    /// records).
    Opaque {
        /// The data.
        data: &'a [u8],
        /// Offset of `data[0]`.
        offset: usize,
    },
}

/// A section record (§4, §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section<'a> {
    /// Offset of the type byte.
    pub offset: usize,
    /// Offset just past the record.
    pub end: usize,
    /// Record kind (the v3 kinds).
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (for PART/END: from the START).
    pub idstr: &'a [u8],
    /// Instance id (for PART/END: from the START).
    pub instance_id: u32,
    /// Version id (for PART/END: from the START).
    pub version_id: u32,
    /// Minor per vendor level (for PART/END: from the START).
    pub minors: Minors,
    /// The body.
    pub body: Body<'a>,
    levels: u8,
}

impl<'a> Section<'a> {
    /// Error context for this section.
    pub fn context(&self) -> SectionContext {
        ctx(self.idstr, self.instance_id, self.section_id)
    }

    /// The subsection frames (none for START/PART/END).
    pub fn subsections(&self) -> Subsections<'a> {
        let (frames, at) = match self.body {
            Body::Structured {
                subsections,
                subsections_offset,
                ..
            } => (subsections, subsections_offset),
            Body::Opaque { offset, .. } => (&[][..], offset),
        };
        Subsections {
            r: Reader::new(frames, at),
            levels: self.levels,
        }
    }

    /// The minor at `level` (1-based); 0 when the level is not declared.
    pub fn minor(&self, level: u8) -> u16 {
        (level as usize)
            .checked_sub(1)
            .and_then(|i| self.minors.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// The fixed fields of a START/FULL section header, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHead<'a> {
    /// Kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (ignored for PART/END).
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
    /// Version id.
    pub version_id: u32,
    /// Minor per vendor level; must have exactly the stream's number of levels (ignored for
    /// PART/END).
    pub minors: &'a [u16],
}

impl SectionHead<'_> {
    /// The record's payload length (its length field) with a body of `body_len` bytes.
    fn payload_len(&self, crc: bool, body_len: usize) -> usize {
        let full = self.kind.has_full_header();
        // id [+ idstr length, instance, version] [+ CRC]
        let fixed = match (full, crc) {
            (true, true) => 17,
            (true, false) => 13,
            (false, true) => 8,
            (false, false) => 4,
        };
        let names = match full {
            true => self.idstr.len().saturating_add(size_of_val(self.minors)),
            false => 0,
        };
        body_len.saturating_add(fixed).saturating_add(names)
    }
}

/// A sink that feeds a CRC-32C with everything written through it, or, when made without
/// `crc`, only forwards (a stream without checksums costs no CRC work).
pub struct CrcSink<'s, S> {
    inner: &'s mut S,
    digest: Option<Crc32c>,
}

impl<'s, S: Sink> CrcSink<'s, S> {
    /// Wraps `inner`, computing the CRC when `crc` is set.
    pub fn new(inner: &'s mut S, crc: bool) -> Self {
        CrcSink {
            inner,
            digest: crc.then(Crc32c::new),
        }
    }

    /// The CRC of everything written so far; `None` for a sink made without `crc`.
    pub fn crc(&self) -> Option<u32> {
        self.digest.as_ref().map(Crc32c::finish)
    }
}

impl<S: Sink> Sink for CrcSink<'_, S> {
    type Error = S::Error;

    fn write(&mut self, bytes: &[u8]) -> core::result::Result<(), S::Error> {
        if let Some(d) = &mut self.digest {
            d.update(bytes);
        }
        self.inner.write(bytes)
    }

    fn position(&self) -> usize {
        self.inner.position()
    }

    fn write_with_zeros(
        &mut self,
        bytes: &[u8],
        zeros: &[(u32, u32)],
    ) -> core::result::Result<(), S::Error> {
        if self.digest.is_some() {
            // Piece by piece, so the digest sees the zeros.
            crate::sink::write_pieces(self, bytes, zeros)
        } else {
            // Lets a slice sink copy a planned body in one piece.
            self.inner.write_with_zeros(bytes, zeros)
        }
    }
}

/// Writes a whole section record: frame, head, `body_len` body bytes produced by `body`, and
/// the CRC when `crc` is set. `body` must write exactly `body_len` bytes.
pub fn emit_section<S, F>(
    out: &mut S,
    crc: bool,
    head: &SectionHead<'_>,
    body_len: usize,
    body: F,
) -> core::result::Result<(), S::Error>
where
    S: Sink,
    F: FnOnce(&mut CrcSink<'_, S>) -> core::result::Result<(), S::Error>,
{
    let payload = head.payload_len(crc, body_len);
    let [l0, l1, l2, l3] = len32(payload, out.position().saturating_add(1))?.to_be_bytes();
    let [i0, i1, i2, i3] = head.section_id.to_be_bytes();
    let mut c = CrcSink::new(out, crc);
    c.write(&[head.kind.byte(), l0, l1, l2, l3, i0, i1, i2, i3])?;
    if head.kind.has_full_header() {
        emit_name(&mut c, head.idstr)?;
        let [n0, n1, n2, n3] = head.instance_id.to_be_bytes();
        let [v0, v1, v2, v3] = head.version_id.to_be_bytes();
        c.write(&[n0, n1, n2, n3, v0, v1, v2, v3])?;
        for m in head.minors {
            c.write(&m.to_be_bytes())?;
        }
    }
    let body_start = c.position();
    body(&mut c)?;
    let written = c.position().saturating_sub(body_start);
    if written != body_len {
        return Err(crate::Error::new(
            body_start,
            ErrorKind::BufferTooSmall {
                needed: written,
                capacity: body_len,
            },
        )
        .into());
    }
    if let Some(sum) = c.crc() {
        out.write(&sum.to_be_bytes())?;
    }
    Ok(())
}

/// Writes a whole non-section record (`type | len | payload | [crc32c]`), e.g. the
/// configuration record or an ancillary record.
pub fn emit_record<S: Sink>(
    out: &mut S,
    crc: bool,
    kind: u8,
    payload: &[u8],
) -> core::result::Result<(), S::Error> {
    let mut c = CrcSink::new(out, crc);
    let crc_len = if crc { 4 } else { 0 };
    emit_frame(&mut c, kind, payload.len().saturating_add(crc_len))?;
    c.write(payload)?;
    if let Some(sum) = c.crc() {
        out.write(&sum.to_be_bytes())?;
    }
    Ok(())
}

/// Writes a DATA record (§13): `data` continuing the live section record `section_id` just
/// written.
pub fn emit_data<S: Sink>(
    out: &mut S,
    crc: bool,
    section_id: u32,
    data: &[u8],
) -> core::result::Result<(), S::Error> {
    let mut c = CrcSink::new(out, crc);
    let crc_len = if crc { 4 } else { 0 };
    emit_frame(
        &mut c,
        record4::DATA,
        data.len().saturating_add(4).saturating_add(crc_len),
    )?;
    c.write(&section_id.to_be_bytes())?;
    c.write(data)?;
    if let Some(sum) = c.crc() {
        out.write(&sum.to_be_bytes())?;
    }
    Ok(())
}

/// Writes a record frame header (`type | len`).
pub fn emit_frame<S: Sink>(
    out: &mut S,
    kind: u8,
    payload_len: usize,
) -> core::result::Result<(), S::Error> {
    let len = len32(payload_len, out.position().saturating_add(1))?;
    out.write(&[kind])?;
    out.write(&len.to_be_bytes())
}

/// Reads with `read` inside a frame that declared `declared` bytes: running out is a frame
/// length error.
fn framed<'a, T>(
    r: &mut Reader<'a>,
    declared: usize,
    read: impl FnOnce(&mut Reader<'a>) -> crate::Result<T>,
) -> Result<T> {
    read(r).map_err(|e| match e.is_incomplete() {
        true => Error::FrameLength {
            offset: e.offset,
            declared,
        },
        false => e.into(),
    })
}

/// Reads the v3 record body `payload` (at `offset` in the stream, in a frame that declared
/// `declared` bytes) with `read`, which must take all of it: running out inside the frame or
/// bytes left after the body are a frame length error.
fn read_whole<'a, T>(
    payload: &'a [u8],
    offset: usize,
    declared: usize,
    read: impl FnOnce(&mut Reader<'a>) -> crate::Result<T>,
) -> Result<T> {
    let mut r = Reader::new(payload, offset);
    let value = framed(&mut r, declared, read)?;
    if r.remaining() != 0 {
        return Err(Error::FrameLength {
            offset: r.offset(),
            declared,
        });
    }
    Ok(value)
}

/// One v4 record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record4<'a> {
    /// The file header.
    Header(Header<'a>),
    /// The configuration record: exactly the v3 record's bytes after its `07` type byte.
    Configuration(&'a [u8]),
    /// A section record, checked (frame, checksum, subsection frames, minors).
    Section(Section<'a>),
    /// A COMMAND record (§12): the v3 record after its `08` byte, parsed by [`Command`].
    Command(Command<'a>),
    /// An ancillary record (type `0x80..=0xff`) this reader does not know; skipped.
    Ancillary {
        /// The type byte.
        kind: u8,
        /// The payload.
        payload: &'a [u8],
    },
    /// A DATA record (§13): `data` continues the data of the START/PART/END section record
    /// (or DATA record) just before it, of the same section id.
    Data {
        /// The section id.
        section_id: u32,
        /// The data (CRC excluded).
        data: &'a [u8],
        /// Offset of `data[0]`.
        offset: usize,
    },
    /// End of records.
    Eof,
    /// The VMDESCRIPTION JSON trailer (same bytes as in v3).
    Trailer(&'a [u8]),
}

/// A record with its byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located4<'a> {
    /// Offset of the first byte.
    pub offset: usize,
    /// Offset just past it.
    pub end: usize,
    /// The record.
    pub record: Record4<'a>,
}

/// Walks a v4 stream record by record. After the first error the iterator is fused.
#[derive(Debug, Clone)]
pub struct Records4<'a> {
    buf: &'a [u8],
    pos: usize,
    levels: u8,
    crc: bool,
    /// Whether checksums are compared (off only for a second walk over bytes a first walk
    /// already verified).
    verify: bool,
    /// The stream machine: phase, record-position and section-id rules.
    machine: Machine<&'a [u8]>,
    /// The section id of the live section record (or DATA record) just read: a DATA record
    /// may follow only that.
    live: Option<u32>,
}

impl<'a> Records4<'a> {
    /// Walks `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Records4 {
            buf,
            pos: 0,
            levels: 0,
            crc: false,
            verify: true,
            machine: Machine::v4(),
            live: None,
        }
    }

    /// Walks `buf`, which a [`Records4::new`] walk has already gone through without error:
    /// checksums are stripped but not computed again. The bytes cannot have changed in between
    /// (they are borrowed immutably), so this yields exactly what that walk yielded.
    pub(crate) fn verified(buf: &'a [u8]) -> Self {
        Records4 {
            verify: false,
            ..Self::new(buf)
        }
    }

    fn step(&mut self) -> Result<Option<Located4<'a>>> {
        let offset = self.pos;
        let mut r = Reader::new(self.buf.get(offset..).unwrap_or_default(), offset);
        let record = match self.machine.phase() {
            // The trailer is read whole after EOF: no trailer phases here.
            Phase::Done | Phase::Trailer { .. } | Phase::AfterTrailer => return Ok(None),
            Phase::Header => {
                let h = Header::read(&mut r)?;
                self.levels = h.vendors.len() as u8;
                self.crc = h.crc();
                self.machine.header_read();
                Record4::Header(h)
            }
            Phase::Configuration | Phase::Records => {
                let kind = r.peek(0).ok_or(r.error(ErrorKind::Truncated {
                    needed: 1,
                    available: 0,
                }))?;
                // EOF is the one unframed record.
                let (content, declared) = if kind == record::EOF {
                    (r.bytes(1)?, 0)
                } else {
                    r.skip(1)?;
                    let declared = r.be32()? as usize;
                    r.skip(declared)?;
                    let frame = self.buf.get(offset..r.offset()).unwrap_or_default();
                    // Checksum first: nothing inside a corrupt record is interpreted, and a
                    // flipped type byte cannot turn a section into a skippable record.
                    (self.verify(kind, frame, offset, declared)?, declared)
                };
                let payload = content.get(5..).unwrap_or_default();
                let payload_at = offset.saturating_add(5);
                let live = self.live.take();
                if kind == record4::DATA {
                    let mut d = Reader::new(payload, payload_at);
                    let section_id = framed(&mut d, declared, Reader::be32)?;
                    if live != Some(section_id) {
                        let e =
                            crate::Error::new(offset, ErrorKind::UnexpectedRecord { found: kind });
                        return Err(match self.machine.sections().find(section_id) {
                            Some(o) => e.in_section(ctx(o.idstr, o.instance_id, section_id)),
                            None => e,
                        }
                        .into());
                    }
                    self.live = live;
                    self.pos = r.offset();
                    return Ok(Some(Located4 {
                        offset,
                        end: self.pos,
                        record: Record4::Data {
                            section_id,
                            offset: d.offset(),
                            data: d.rest(),
                        },
                    }));
                }
                let t = self.machine.record(kind, offset)?;
                let rec = match t {
                    RecordType::Eof => Record4::Eof,
                    RecordType::Configuration => {
                        // The v3 record's rules (name length and bytes, subsections): a
                        // configuration the v3 reader refuses never reaches a downgrade.
                        read_whole(payload, payload_at, declared, |r| {
                            crate::wire::config::Configuration::read_body(r)
                        })?;
                        Record4::Configuration(payload)
                    }
                    RecordType::Section(k) => {
                        let s = self.section(k, payload, declared, offset, r.offset())?;
                        if k != SectionKind::Full {
                            self.live = Some(s.section_id);
                        }
                        Record4::Section(s)
                    }
                    RecordType::Command => Record4::Command(read_whole(
                        payload,
                        payload_at,
                        declared,
                        Command::read_body,
                    )?),
                    RecordType::Ancillary => Record4::Ancillary { kind, payload },
                };
                self.machine.passed(t);
                rec
            }
            Phase::AfterEof => {
                if r.remaining() == 0 {
                    return Ok(None);
                }
                let t = crate::wire::Trailer::read(&mut r)?;
                if r.remaining() != 0 {
                    return Err(r
                        .error(ErrorKind::TrailingBytes {
                            count: r.remaining(),
                        })
                        .into());
                }
                self.machine.stop();
                Record4::Trailer(t.json)
            }
        };
        self.pos = r.offset();
        Ok(Some(Located4 {
            offset,
            end: self.pos,
            record,
        }))
    }

    /// Checks a framed record's CRC-32C (when the stream carries them; `declared`: the frame's
    /// length field) and returns the record without it.
    fn verify(
        &mut self,
        kind: u8,
        frame: &'a [u8],
        offset: usize,
        declared: usize,
    ) -> Result<&'a [u8]> {
        if !self.crc {
            return Ok(frame);
        }
        let Some((data, sum)) = frame
            .split_last_chunk::<4>()
            .filter(|(data, _)| data.len() >= 5)
        else {
            return Err(Error::FrameLength {
                offset: offset.saturating_add(1),
                declared,
            });
        };
        if !self.verify {
            return Ok(data);
        }
        let stored = u32::from_be_bytes(*sum);
        let computed = crc32c(data);
        if stored != computed {
            return Err(Error::Checksum {
                offset,
                kind,
                section: self.best_effort_context(kind, data),
                stored,
                computed,
            });
        }
        Ok(data)
    }

    /// Parses the section record at `offset` (ending at `end`) from its checked payload (CRC
    /// excluded); `declared` is the frame's length field.
    fn section(
        &mut self,
        kind: SectionKind,
        payload: &'a [u8],
        declared: usize,
        offset: usize,
        end: usize,
    ) -> Result<Section<'a>> {
        let id_at = offset.saturating_add(5);
        let mut r = Reader::new(payload, id_at);
        let section_id = framed(&mut r, declared, Reader::be32)?;
        let levels = self.levels;
        let (idstr, instance_id, version_id, minors, ordinal) = match self
            .machine
            .sections()
            .admit(kind, section_id, id_at, || None)?
        {
            Admitted::New(ordinal) => framed(&mut r, declared, |r| {
                let (idstr, instance_id, version_id) = (r.name()?, r.be32()?, r.be32()?);
                let mut minors = Minors::new();
                for _ in 0..levels {
                    let _ = minors.push(r.be16()?);
                }
                Ok((idstr, instance_id, version_id, minors, ordinal))
            })?,
            Admitted::Continues(o) => (
                o.idstr,
                o.instance_id,
                o.version_id,
                o.minors.clone(),
                o.ordinal,
            ),
        };
        let body = if kind == SectionKind::Full {
            let fields_len = framed(&mut r, declared, Reader::be32)? as usize;
            let fields_offset = r.offset();
            let fields = framed(&mut r, declared, |r| r.bytes(fields_len))?;
            let subsections_offset = r.offset();
            Body::Structured {
                fields,
                fields_offset,
                subsections: r.rest(),
                subsections_offset,
            }
        } else {
            Body::Opaque {
                data: r.rest(),
                offset: r.offset(),
            }
        };
        let sec = Section {
            offset,
            end,
            kind,
            section_id,
            idstr,
            instance_id,
            version_id,
            minors,
            body,
            levels: self.levels,
        };
        let ctx = sec.context();
        for (i, sub) in sec.subsections().enumerate() {
            // The format's limit (§8), which every reader and converter keeps: a v3 body can
            // carry no more top-level subsections than the v3 decoders take.
            if i == crate::schema::MAX_SUBSECTIONS {
                let at = sub.as_ref().map_or(offset, |s| s.offset);
                return Err(crate::Error::new(
                    at,
                    ErrorKind::TooManySubsections {
                        limit: crate::schema::MAX_SUBSECTIONS as u16,
                    },
                )
                .in_section(ctx)
                .into());
            }
            let sub = sub.map_err(|e| match e {
                Error::Codec(c) if c.is_incomplete() => Error::FrameLength {
                    offset: c.offset,
                    declared,
                },
                Error::Codec(c) => Error::Codec(c.in_section(ctx)),
                e => e,
            })?;
            if let Some(t) = sub.vendor {
                let m = sec.minor(t.level);
                if t.minor > m {
                    return Err(Error::MinorInconsistent {
                        offset: sub.offset.saturating_add(3),
                        level: t.level,
                        minor: t.minor,
                        section_minor: m,
                    });
                }
            }
        }
        let open = Open {
            section_id,
            idstr,
            instance_id,
            version_id,
            ordinal,
            minors: sec.minors.clone(),
        };
        self.machine.sections().commit(kind, open, offset)?;
        Ok(sec)
    }

    fn best_effort_context(&mut self, kind: u8, data: &[u8]) -> SectionContext {
        let Some(kind) = SectionKind::from_byte(kind) else {
            return ctx(&[], 0, 0);
        };
        let mut r = Reader::new(data.get(5..).unwrap_or(&[]), 0);
        let section_id = r.be32().unwrap_or(0);
        let (idstr, instance_id) = if kind.has_full_header() {
            let idstr = r.name().unwrap_or(&[]);
            (idstr, r.be32().unwrap_or(0))
        } else {
            self.machine
                .sections()
                .find(section_id)
                .map(|o| (o.idstr, o.instance_id))
                .unwrap_or((&[], 0))
        };
        ctx(idstr, instance_id, section_id)
    }
}

impl<'a> Iterator for Records4<'a> {
    type Item = Result<Located4<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.step().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.machine.stop();
        }
        item
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
    extern crate std;
    use super::*;
    use crate::sink::SliceSink;
    use std::vec::Vec;

    fn head(kind: SectionKind) -> SectionHead<'static> {
        SectionHead {
            kind,
            section_id: 7,
            idstr: b"dev",
            instance_id: 1,
            version_id: 3,
            minors: &[],
        }
    }

    fn section(crc: bool, body: &[u8]) -> Vec<u8> {
        let mut buf = std::vec![0xa5u8; 64 + body.len()];
        let mut out = SliceSink::new(&mut buf);
        emit_section(&mut out, crc, &head(SectionKind::Full), body.len(), |o| {
            o.write(body)
        })
        .unwrap();
        let n = out.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn a_section_without_checksum_is_the_checked_one_minus_its_crc() {
        let body: Vec<u8> = (0..100).collect();
        let with = section(true, &body);
        let without = section(false, &body);
        let n = without.len();
        assert_eq!(with.len(), n + 4);
        // Same bytes apart from the record length, which counts the CRC.
        let len = |r: &[u8]| u32::from_be_bytes([r[1], r[2], r[3], r[4]]) as usize;
        assert_eq!(len(&with), len(&without) + 4);
        assert_eq!(len(&without), n - 5);
        assert_eq!(with[0], without[0]);
        assert_eq!(with[5..n], without[5..]);
        // The CRC covers the whole record before it, type byte and length included.
        assert_eq!(
            u32::from_be_bytes([with[n], with[n + 1], with[n + 2], with[n + 3]]),
            crc32c(&with[..n])
        );
    }

    #[test]
    fn crc_sink_digests_exactly_what_reaches_the_inner_sink() {
        let bytes: Vec<u8> = (1..=200).collect();
        let zeros = [(3u32, 5u32), (64, 70), (199, 1)];
        for digest in [true, false] {
            let mut buf = [0xa5u8; 600];
            let mut inner = SliceSink::new(&mut buf);
            let mut c = CrcSink::new(&mut inner, digest);
            c.write(b"head").unwrap();
            c.write_zeros(130).unwrap();
            c.write_with_zeros(&bytes, &zeros).unwrap();
            c.write(&bytes[..17]).unwrap();
            assert_eq!(c.position(), 4 + 130 + 200 + 17);
            let sum = c.crc();
            let written = inner.written();
            assert_eq!(written.len(), 4 + 130 + 200 + 17);
            assert_eq!(written[134 + 3..134 + 8], [0; 5]);
            assert_eq!(written[134 + 8], 9);
            assert_eq!(sum, digest.then(|| crc32c(written)));
        }
    }

    #[test]
    fn a_verified_rewalk_yields_what_the_checking_walk_yielded() {
        let mut buf = std::vec![0u8; 512];
        let mut out = SliceSink::new(&mut buf);
        Header::new(&[], true).unwrap().emit(&mut out).unwrap();
        let body: Vec<u8> = (0..40).collect();
        emit_section(&mut out, true, &head(SectionKind::Start), body.len(), |o| {
            o.write(&body)
        })
        .unwrap();
        emit_section(&mut out, true, &head(SectionKind::End), 3, |o| {
            o.write(b"end")
        })
        .unwrap();
        out.write(&[record::EOF]).unwrap();
        let n = out.finish();
        let stream = &buf[..n];
        let checked: Vec<_> = Records4::new(stream).map(|r| r.unwrap()).collect();
        let rewalk: Vec<_> = Records4::verified(stream).map(|r| r.unwrap()).collect();
        assert_eq!(checked.len(), 4);
        assert_eq!(checked, rewalk);
        // The checking walk is the one that catches corruption.
        let mut bad = stream.to_vec();
        bad[checked[1].offset + 20] ^= 1;
        assert!(matches!(
            Records4::new(&bad).nth(1),
            Some(Err(Error::Checksum { .. }))
        ));
    }
}
