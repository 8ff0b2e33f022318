//! Section headers (START/PART/END/FULL) and the section footer.
//!
//! ```text
//! START/FULL: type u8 | section_id be32 | idstr str8 | instance_id be32 | version_id be32
//! PART/END:   type u8 | section_id be32
//! footer:     7e | section_id be32
//! ```

use super::{Reader, be32, byte, check_len, record};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;

mod field {
    pub const TYPE: usize = 0;
    pub const SECTION_ID: usize = 1;
    pub const IDSTR_LEN: usize = 5;
    pub const IDSTR: usize = 6;
    /// Length of a PART/END header.
    pub const SHORT_LEN: usize = 5;
    /// Fixed part of a START/FULL header (plus the idstr).
    pub const FULL_FIXED_LEN: usize = 14;
    pub const FOOTER_LEN: usize = 5;
}

/// The four section record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SectionKind {
    /// `0x01`, first part of a live section.
    Start,
    /// `0x02`, a middle part.
    Part,
    /// `0x03`, the last part.
    End,
    /// `0x04`, a whole VMState section.
    Full,
}

impl SectionKind {
    /// Maps a record byte to a section kind.
    pub const fn from_byte(b: u8) -> Option<SectionKind> {
        match b {
            record::SECTION_START => Some(SectionKind::Start),
            record::SECTION_PART => Some(SectionKind::Part),
            record::SECTION_END => Some(SectionKind::End),
            record::SECTION_FULL => Some(SectionKind::Full),
            _ => None,
        }
    }

    /// The record byte.
    pub const fn byte(self) -> u8 {
        match self {
            SectionKind::Start => record::SECTION_START,
            SectionKind::Part => record::SECTION_PART,
            SectionKind::End => record::SECTION_END,
            SectionKind::Full => record::SECTION_FULL,
        }
    }

    /// Whether the header carries idstr, instance and version (START and FULL).
    pub const fn has_full_header(self) -> bool {
        matches!(self, SectionKind::Start | SectionKind::Full)
    }

    /// Lower-case name, as `inspect` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            SectionKind::Start => "start",
            SectionKind::Part => "part",
            SectionKind::End => "end",
            SectionKind::Full => "full",
        }
    }
}

/// A view over a section header.
#[derive(Debug, Clone, Copy)]
pub struct SectionHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SectionHeader<T> {
    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        SectionHeader { buffer }
    }

    /// Wraps `buffer`, checking the type byte, the length for that type and the idstr.
    /// `base` is the absolute offset of `buffer[0]`, used in errors.
    pub fn new_checked(buffer: T, base: usize) -> Result<Self> {
        let b = buffer.as_ref();
        check_len(b, 1, base)?;
        let found = byte(b, field::TYPE);
        let kind = SectionKind::from_byte(found).ok_or(Error::new(
            base,
            ErrorKind::UnknownRecordType {
                found,
                expected: crate::error::RecordPosition::SectionHeader,
            },
        ))?;
        let view = SectionHeader { buffer };
        if kind.has_full_header() {
            check_len(view.buffer.as_ref(), field::IDSTR, base)?;
            check_len(view.buffer.as_ref(), view.header_len(), base)?;
            super::reader::check_name(view.idstr(), base.saturating_add(field::IDSTR_LEN))?;
        } else {
            check_len(view.buffer.as_ref(), field::SHORT_LEN, base)?;
        }
        Ok(view)
    }

    /// The record kind.
    pub fn kind(&self) -> SectionKind {
        SectionKind::from_byte(byte(self.buffer.as_ref(), field::TYPE)).unwrap_or(SectionKind::Full)
    }

    /// The section id.
    pub fn section_id(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SECTION_ID)
    }

    fn idstr_len(&self) -> usize {
        if self.kind().has_full_header() {
            byte(self.buffer.as_ref(), field::IDSTR_LEN) as usize
        } else {
            0
        }
    }

    fn idstr_end(&self) -> usize {
        field::IDSTR.saturating_add(self.idstr_len())
    }

    /// The idstr (empty for PART/END).
    pub fn idstr(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(field::IDSTR..self.idstr_end()).unwrap_or_default()
    }

    /// The instance id (0 for PART/END).
    pub fn instance_id(&self) -> u32 {
        if !self.kind().has_full_header() {
            return 0;
        }
        be32(self.buffer.as_ref(), self.idstr_end())
    }

    /// The version id (0 for PART/END).
    pub fn version_id(&self) -> u32 {
        if !self.kind().has_full_header() {
            return 0;
        }
        be32(self.buffer.as_ref(), self.idstr_end().saturating_add(4))
    }

    /// Length of this header in bytes: 14 + idstr length, or 5.
    pub fn header_len(&self) -> usize {
        if self.kind().has_full_header() {
            field::FULL_FIXED_LEN.saturating_add(self.idstr_len())
        } else {
            field::SHORT_LEN
        }
    }
}

/// The fields of a section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeaderRepr<'a> {
    /// Record kind.
    pub kind: SectionKind,
    /// Section id.
    pub section_id: u32,
    /// idstr (START/FULL only).
    pub idstr: &'a [u8],
    /// Instance id (START/FULL only).
    pub instance_id: u32,
    /// Version id (START/FULL only).
    pub version_id: u32,
}

impl<'a> SectionHeaderRepr<'a> {
    /// Parses a header from a checked view.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(h: &'a SectionHeader<&'a T>) -> Self {
        SectionHeaderRepr {
            kind: h.kind(),
            section_id: h.section_id(),
            idstr: h.idstr(),
            instance_id: h.instance_id(),
            version_id: h.version_id(),
        }
    }

    /// Parses a header from a reader, advancing it.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let base = r.offset();
        let rest = r.rest();
        let view = SectionHeader::new_checked(rest, base)?;
        let repr = SectionHeaderRepr {
            kind: view.kind(),
            section_id: view.section_id(),
            idstr: rest.get(field::IDSTR..view.idstr_end()).unwrap_or_default(),
            instance_id: view.instance_id(),
            version_id: view.version_id(),
        };
        r.skip(view.header_len())?;
        Ok(repr)
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        if self.kind.has_full_header() {
            field::FULL_FIXED_LEN.saturating_add(self.idstr.len())
        } else {
            field::SHORT_LEN
        }
    }

    /// Writes the header. A START/FULL idstr outside 1..=255 bytes is refused before anything
    /// is written.
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        let [a, b, c, d] = self.section_id.to_be_bytes();
        if !self.kind.has_full_header() {
            return out.write(&[self.kind.byte(), a, b, c, d]);
        }
        let len = super::name_len(self.idstr, out.position())?;
        out.write(&[self.kind.byte(), a, b, c, d, len])?;
        out.write(self.idstr)?;
        let [e, f, g, h] = self.instance_id.to_be_bytes();
        let [i, j, k, l] = self.version_id.to_be_bytes();
        out.write(&[e, f, g, h, i, j, k, l])
    }
}

/// A view over the 5-byte section footer.
#[derive(Debug, Clone, Copy)]
pub struct SectionFooter<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SectionFooter<T> {
    /// Footer length.
    pub const LEN: usize = field::FOOTER_LEN;

    /// Wraps `buffer` after checking its length; `base` is its absolute offset.
    pub fn new_checked(buffer: T, base: usize) -> Result<Self> {
        check_len(buffer.as_ref(), field::FOOTER_LEN, base)?;
        Ok(SectionFooter { buffer })
    }

    /// The marker byte (must be `0x7e`).
    pub fn marker(&self) -> u8 {
        byte(self.buffer.as_ref(), 0)
    }

    /// The section id the footer repeats.
    pub fn section_id(&self) -> u32 {
        be32(self.buffer.as_ref(), 1)
    }

    /// Checks marker and id; `base` is the footer's absolute offset.
    pub fn validate(&self, expected_id: u32, base: usize) -> Result<()> {
        if self.marker() != record::SECTION_FOOTER {
            return Err(Error::new(
                base,
                ErrorKind::MissingFooter {
                    found: self.marker(),
                },
            ));
        }
        if self.section_id() != expected_id {
            return Err(Error::new(
                base.saturating_add(1),
                ErrorKind::FooterMismatch {
                    expected: expected_id,
                    found: self.section_id(),
                },
            ));
        }
        Ok(())
    }
}

/// Reads and checks a footer for `section_id` from `r`.
pub fn read_footer(r: &mut Reader<'_>, section_id: u32) -> Result<()> {
    let base = r.offset();
    // A missing marker is reported as such even when fewer than 5 bytes are left.
    match r.peek(0) {
        Some(b) if b != record::SECTION_FOOTER => {
            return Err(Error::new(base, ErrorKind::MissingFooter { found: b }));
        }
        _ => {}
    }
    let bytes = r.bytes(field::FOOTER_LEN)?;
    SectionFooter::new_checked(bytes, base)?.validate(section_id, base)
}

/// Footer bytes for `section_id`.
pub const fn footer_bytes(section_id: u32) -> [u8; 5] {
    let id = section_id.to_be_bytes();
    [record::SECTION_FOOTER, id[0], id[1], id[2], id[3]]
}

/// Offset of the first footer of `section_id` in `bytes`: the footer byte is searched for and
/// the id compared only there (this search is the whole cost of walking a section no table
/// describes).
pub fn find_footer(bytes: &[u8], section_id: u32) -> Option<usize> {
    let footer = footer_bytes(section_id);
    let (&first, id) = footer.split_first()?;
    let mut from = 0usize;
    loop {
        let at = from.saturating_add(bytes.get(from..)?.iter().position(|&b| b == first)?);
        if bytes.get(at.saturating_add(1)..at.saturating_add(5)) == Some(id) {
            return Some(at);
        }
        from = at.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // port92 from the real pc-i440fx-7.2 stream (docs/V3-WIRE.md §15.3).
    const PORT92: &[u8] = &[
        0x04, 0, 0, 0, 0x1b, 6, b'p', b'o', b'r', b't', b'9', b'2', 0, 0, 0, 0, 0, 0, 0, 1, 0x00,
        0x7e, 0, 0, 0, 0x1b,
    ];

    #[test]
    fn golden_full_header_and_footer() {
        let mut r = Reader::new(PORT92, 0);
        let h = SectionHeaderRepr::read(&mut r).unwrap();
        assert_eq!(h.kind, SectionKind::Full);
        assert_eq!(h.section_id, 27);
        assert_eq!(h.idstr, b"port92");
        assert_eq!((h.instance_id, h.version_id), (0, 1));
        assert_eq!(r.offset(), 20);
        assert_eq!(r.u8().unwrap(), 0);
        read_footer(&mut r, 27).unwrap();
        let mut out = [0xa5u8; 21];
        let mut sink = crate::sink::SliceSink::new(&mut out);
        h.emit(&mut sink).unwrap();
        assert_eq!(sink.finish(), h.buffer_len());
        assert_eq!(&out[..20], &PORT92[..20]);
        assert_eq!(out[20], 0xa5);
        assert_eq!(footer_bytes(27), PORT92[21..]);
    }

    /// An idstr its length byte cannot carry is refused as too long (it used to be reported as
    /// empty), an empty one as empty; nothing is written either way.
    #[test]
    fn an_idstr_outside_1_to_255_bytes_is_refused_before_writing() {
        extern crate std;
        use crate::sink::{Sink, SliceSink};
        use std::string::ToString;
        let long = [b'a'; 256];
        let mut h = SectionHeaderRepr {
            kind: SectionKind::Full,
            section_id: 1,
            idstr: &long,
            instance_id: 0,
            version_id: 1,
        };
        let mut out = [0xa5u8; 300];
        let mut sink = SliceSink::new(&mut out);
        sink.write(b"QE").unwrap();
        let e = h.emit(&mut sink).unwrap_err();
        assert_eq!((e.offset, e.kind), (2, ErrorKind::NameTooLong { len: 256 }));
        assert_eq!(
            e.kind.to_string(),
            "name too long: expected 1..=255 bytes, found 256"
        );
        h.idstr = b"";
        assert_eq!(h.emit(&mut sink).unwrap_err().kind, ErrorKind::EmptyName);
        assert_eq!(sink.position(), 2);
        h.idstr = &long[..255];
        h.emit(&mut sink).unwrap();
        assert_eq!(sink.position(), 2 + h.buffer_len());
        assert_eq!(sink.written()[2 + 5], 255);
    }

    #[test]
    fn every_prefix_of_a_header_is_truncated() {
        for n in 0..20 {
            let mut r = Reader::new(&PORT92[..n], 0);
            assert!(
                SectionHeaderRepr::read(&mut r).unwrap_err().is_incomplete(),
                "{n}"
            );
        }
    }

    #[test]
    fn footer_errors_say_what() {
        let mut r = Reader::new(&[0x7e, 0, 0, 0, 0x63], 40);
        let e = read_footer(&mut r, 0x1b).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::FooterMismatch {
                expected: 0x1b,
                found: 0x63
            }
        );
        assert_eq!(e.offset, 41);
        let mut r = Reader::new(&[0x00], 0);
        assert_eq!(
            read_footer(&mut r, 1).unwrap_err().kind,
            ErrorKind::MissingFooter { found: 0 }
        );
    }

    #[test]
    fn short_header() {
        let b = [0x02, 0, 0, 0, 2];
        let v = SectionHeader::new_checked(&b[..], 0).unwrap();
        assert_eq!(v.kind(), SectionKind::Part);
        assert_eq!(v.section_id(), 2);
        assert_eq!(v.header_len(), 5);
        assert_eq!(v.idstr(), b"");
        let bad = [0x09, 0, 0, 0, 2];
        assert_eq!(
            SectionHeader::new_checked(&bad[..], 3).unwrap_err().kind,
            ErrorKind::UnknownRecordType {
                found: 9,
                expected: crate::error::RecordPosition::SectionHeader
            }
        );
    }
}
