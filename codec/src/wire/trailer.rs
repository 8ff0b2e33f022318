//! The VMDESCRIPTION trailer after EOF: `06 | len be32 | len bytes of JSON`.

use super::{Reader, put, record};
use crate::error::{Error, ErrorKind, Result};

/// A parsed trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer<'a> {
    /// The JSON text (never parsed for decoding; see `untrusted-input.md` §5).
    pub json: &'a [u8],
}

impl<'a> Trailer<'a> {
    /// Reads a trailer (including the `0x06` byte); the declared length must fit the input.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let marker = r.u8()?;
        if marker != record::VMDESCRIPTION {
            return Err(Error::new(
                at,
                ErrorKind::UnexpectedRecord { found: marker },
            ));
        }
        let len = r.be32()?;
        let json = r.bytes(len as usize)?;
        Ok(Trailer { json })
    }

    /// Finds a trailer that ends exactly at the end of `stream` by looking for `00 06 len`
    /// where `len` reaches the end, scanning back from the end (the JSON holds no NUL byte).
    /// Returns the offset of the `06` byte.
    pub fn locate(stream: &[u8]) -> Option<usize> {
        // Back from the end in blocks: `contains` on bytes is a word-at-a-time memchr, where a
        // byte-by-byte `rposition` over a 100 KiB JSON text costs about a million instructions.
        let mut end = stream.len();
        let nul = loop {
            let start = end.saturating_sub(256);
            let block = stream.get(start..end)?;
            if block.contains(&0) {
                break start + block.iter().rposition(|&b| b == 0)?;
            }
            if start == 0 {
                return None;
            }
            end = start;
        };
        // The last NUL is either the EOF byte itself or inside the be32 length.
        let lo = nul.saturating_sub(5);
        (lo..=nul + 1).rev().find(|&p| {
            p >= 1
                && stream.get(p - 1) == Some(&record::EOF)
                && stream.get(p) == Some(&record::VMDESCRIPTION)
                && stream
                    .get(p + 1..p + 5)
                    .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
                    == Some(stream.len().saturating_sub(p + 5))
        })
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        5 + self.json.len()
    }

    /// Writes the trailer at `out[*pos..]`.
    pub fn emit(&self, out: &mut [u8], pos: &mut usize) -> Result<()> {
        let len = u32::try_from(self.json.len()).map_err(|_| {
            Error::new(
                *pos,
                ErrorKind::LengthTooLarge {
                    found: self.json.len() as u64,
                    max: u32::MAX as u64,
                },
            )
        })?;
        put(out, pos, &[record::VMDESCRIPTION])?;
        put(out, pos, &len.to_be_bytes())?;
        put(out, pos, self.json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_locate() {
        let s = b"QEVM\0\0\0\x03\x00\x06\x00\x00\x00\x02{}";
        assert_eq!(Trailer::locate(s), Some(9));
        let mut r = Reader::new(&s[9..], 9);
        assert_eq!(Trailer::read(&mut r).unwrap().json, b"{}");
        let mut r = Reader::new(&s[9..s.len() - 1], 9);
        assert!(Trailer::read(&mut r).unwrap_err().is_incomplete());
        assert_eq!(Trailer::locate(&s[..s.len() - 1]), None);
    }

    #[test]
    fn locate_scans_back_over_texts_longer_than_a_block() {
        // 1000 bytes of JSON: the last NUL (in the length) is four blocks back from the end.
        let mut s = [b'x'; 14 + 1000];
        s[..14].copy_from_slice(b"QEVM\0\0\0\x03\x00\x06\x00\x00\x03\xe8");
        assert_eq!(Trailer::locate(&s), Some(9));
        assert_eq!(Trailer::locate(&s[..s.len() - 1]), None);
        assert_eq!(Trailer::locate(&s[14..]), None);
        assert_eq!(Trailer::locate(&[]), None);
    }
}
