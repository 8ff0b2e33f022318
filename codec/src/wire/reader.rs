//! A bounds-checked forward reader over a byte slice.
//!
//! Every read returns a [`Result`]; running off the end yields
//! [`ErrorKind::Truncated`] with the absolute offset, so "need more bytes" is distinct from
//! malformed input. Nothing here can panic: all indexing goes through `get`.

use crate::error::{Error, ErrorKind, Result};

/// Reads big-endian primitives from `buf`, tracking the absolute offset of `buf[0]` (`base`) so
/// errors point into the whole stream.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, whose first byte is at absolute offset `base`.
    pub const fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    /// Absolute offset of the next byte.
    pub const fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// Position relative to the start of this reader's slice.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub const fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The unread bytes.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// The whole underlying slice.
    pub const fn buffer(&self) -> &'a [u8] {
        self.buf
    }

    /// An error of `kind` at the current offset.
    pub const fn error(&self, kind: ErrorKind) -> Error {
        Error::new(self.offset(), kind)
    }

    fn truncated(&self, needed: usize) -> Error {
        self.error(ErrorKind::Truncated {
            needed,
            available: self.remaining(),
        })
    }

    /// Takes `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.truncated(n))?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| self.truncated(n))?;
        self.pos = end;
        Ok(out)
    }

    /// Takes `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a be16.
    pub fn be16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    /// Reads a be32.
    pub fn be32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a be64.
    pub fn be64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Peeks at the byte `ahead` bytes past the current one, if present.
    pub fn peek(&self, ahead: usize) -> Option<u8> {
        self.buf.get(self.pos.checked_add(ahead)?).copied()
    }

    /// Peeks at `n` bytes starting `ahead` bytes past the current one, if all present.
    pub fn peek_bytes(&self, ahead: usize, n: usize) -> Option<&'a [u8]> {
        let start = self.pos.checked_add(ahead)?;
        self.buf.get(start..start.checked_add(n)?)
    }

    /// Reads a counted string (`u8` length + bytes) and checks it is a valid name: non-empty,
    /// no NUL, printable ASCII only.
    pub fn name(&mut self) -> Result<&'a [u8]> {
        let at = self.offset();
        let len = self.u8()? as usize;
        let bytes = self.bytes(len)?;
        check_name(bytes, at)?;
        Ok(bytes)
    }
}

/// Checks a name read at absolute offset `at` (of its length byte): 1..=255 printable bytes.
pub fn check_name(bytes: &[u8], at: usize) -> Result<()> {
    if bytes.is_empty() {
        return Err(Error::new(at, ErrorKind::EmptyName));
    }
    match bytes
        .iter()
        .enumerate()
        .find(|(_, b)| !(0x20..0x7f).contains(*b))
    {
        Some((i, &found)) => Err(Error::new(
            at.saturating_add(1).saturating_add(i),
            ErrorKind::BadNameByte { found },
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_reports_truncation_offsets() {
        let mut r = Reader::new(&[0, 1, 0x11, 0x70, 0xff], 100);
        assert_eq!(r.be32().unwrap(), 70000);
        assert_eq!(r.offset(), 104);
        let e = r.be16().unwrap_err();
        assert_eq!(e.offset, 104);
        assert_eq!(
            e.kind,
            ErrorKind::Truncated {
                needed: 2,
                available: 1
            }
        );
        assert!(e.is_incomplete());
        assert_eq!(r.u8().unwrap(), 0xff);
        assert!(r.bytes(usize::MAX).is_err());
    }

    #[test]
    fn names_must_be_printable_and_non_empty() {
        assert_eq!(Reader::new(b"\x03abc", 0).name().unwrap(), b"abc");
        assert_eq!(
            Reader::new(b"\x00", 7).name().unwrap_err().kind,
            ErrorKind::EmptyName
        );
        let e = Reader::new(b"\x03a\x00c", 10).name().unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadNameByte { found: 0 });
        assert_eq!(e.offset, 12);
    }
}
