//! The subsection header inside a VMState body.
//!
//! ```text
//! 05 | name str8 | version be32 | body
//! ```

use super::{Reader, record};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;

/// A parsed subsection header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsectionHeader<'a> {
    /// Full subsection name, e.g. `fw_cfg/dma`.
    pub name: &'a [u8],
    /// The be32 version as sent (QEMU truncates it to 8 bits; this codec rejects values > 255).
    pub version: u32,
}

impl<'a> SubsectionHeader<'a> {
    /// Peeks at the reader: returns the name if the next bytes start a subsection whose name
    /// begins with `parent` and is longer than it, exactly as QEMU 7.2's loader decides
    /// (`vmstate_subsection_load`): otherwise `None` and the bytes belong to the caller.
    pub fn peek_name(r: &Reader<'a>, parent: &str) -> Option<&'a [u8]> {
        if r.peek(0)? != record::SUBSECTION {
            return None;
        }
        let len = r.peek(1)? as usize;
        if len <= parent.len() {
            return None;
        }
        let name = r.peek_bytes(2, len)?;
        name.starts_with(parent.as_bytes()).then_some(name)
    }

    /// Whether the input ends inside what may still become a subsection header of `parent`
    /// (`05`, then a cut length or a cut name that agrees with `parent` so far): more input is
    /// needed before QEMU's peek rule can decide. Call it when [`Self::peek_name`] said `None`.
    pub fn is_cut(r: &Reader<'a>, parent: &str) -> bool {
        if r.peek(0) != Some(record::SUBSECTION) {
            return false;
        }
        let Some(len) = r.peek(1) else {
            return true;
        };
        let len = len as usize;
        if len <= parent.len() {
            return false;
        }
        let avail = r.rest().get(2..).unwrap_or(&[]);
        if avail.len() >= len {
            return false;
        }
        avail.iter().zip(parent.as_bytes()).all(|(a, b)| a == b)
    }

    /// Reads a header (marker, name, version), advancing the reader.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let marker = r.u8()?;
        if marker != record::SUBSECTION {
            return Err(Error::new(
                at,
                ErrorKind::UnexpectedRecord { found: marker },
            ));
        }
        let name = r.name()?;
        let version = r.be32()?;
        Ok(SubsectionHeader { name, version })
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        self.name.len().saturating_add(1 + 1 + 4)
    }

    /// Writes the header (marker, name, version) to `out`: the one place a v3 subsection
    /// header is written. A name outside 1..=255 bytes is refused before anything is written.
    #[inline(always)]
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        let len = super::name_len(self.name, out.position())?;
        out.write(&[record::SUBSECTION, len])?;
        out.write(self.name)?;
        out.write(&self.version.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peek_follows_qemu_prefix_rule() {
        let b = b"\x05\x0afw_cfg/dma\x00\x00\x00\x00";
        let r = Reader::new(b, 0);
        assert_eq!(
            SubsectionHeader::peek_name(&r, "fw_cfg"),
            Some(&b"fw_cfg/dma"[..])
        );
        // Name must be longer than the parent and start with it; the '/' is not checked.
        assert_eq!(SubsectionHeader::peek_name(&r, "fw_cfg/dma"), None);
        assert_eq!(SubsectionHeader::peek_name(&r, "port92"), None);
        // A lone 0x05 whose "length" runs past the end is not a subsection.
        assert_eq!(
            SubsectionHeader::peek_name(&Reader::new(b"\x05\x7e", 0), "port92"),
            None
        );
        let mut r = Reader::new(b, 0);
        let h = SubsectionHeader::read(&mut r).unwrap();
        assert_eq!((h.name, h.version), (&b"fw_cfg/dma"[..], 0));
        let mut out = [0xa5u8; 16];
        let mut sink = crate::sink::SliceSink::new(&mut out);
        h.emit(&mut sink).unwrap();
        assert_eq!(sink.written(), &b[..]);
    }
}
