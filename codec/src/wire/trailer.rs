//! The VMDESCRIPTION trailer after EOF: `06 | len be32 | len bytes of JSON`.

use super::{Reader, record};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;

/// A parsed trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer<'a> {
    /// The JSON text (never parsed for decoding; see docs/UNTRUSTED-INPUT.md §5).
    pub json: &'a [u8],
}

impl<'a> Trailer<'a> {
    /// Largest JSON text accepted (QEMU's pc trailers are about 100 KiB). The trailer is
    /// attacker-controlled: every reader refuses a longer one before using it, and
    /// [`Trailer::locate`] looks no further back than this from the end.
    pub const MAX_LEN: usize = 16 << 20;

    /// Reads a trailer (including the `0x06` byte); the declared length must fit the input and
    /// be at most [`Trailer::MAX_LEN`].
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let marker = r.u8()?;
        if marker != record::VMDESCRIPTION {
            return Err(Error::new(
                at,
                ErrorKind::UnexpectedRecord { found: marker },
            ));
        }
        let at = r.offset();
        let len = r.be32()?;
        if len as usize > Self::MAX_LEN {
            return Err(Error::new(
                at,
                ErrorKind::LengthTooLarge {
                    found: len.into(),
                    max: Self::MAX_LEN as u64,
                },
            ));
        }
        let json = r.bytes(len as usize)?;
        Ok(Trailer { json })
    }

    /// Finds a trailer that ends exactly at the end of `stream`: `00 06 len` where `len`
    /// reaches the end, at most [`Trailer::MAX_LEN`] bytes of JSON. Returns the offset of the
    /// `06` byte; of several candidates, the last.
    ///
    /// QEMU's JSON holds no NUL byte, so the last NUL is the EOF byte or inside the length and
    /// is found by scanning back a few bytes per block. A JSON text with a NUL byte is found
    /// by trying every position (a stream without a trailer ends with the EOF byte and is not
    /// searched, so page contents cannot pose as a trailer); the record walk then refuses the
    /// NUL ([`ErrorKind::TrailerAmbiguous`] or the JSON reader), so no reader skips it.
    pub fn locate(stream: &[u8]) -> Option<usize> {
        const REACH: usize = Trailer::MAX_LEN + 5;
        let floor = stream.len().saturating_sub(REACH);
        let is_trailer = |p: usize| {
            p.checked_sub(1)
                .is_some_and(|eof| stream.get(eof) == Some(&record::EOF))
                && stream.get(p) == Some(&record::VMDESCRIPTION)
                && stream
                    .get(p.saturating_add(1)..)
                    .and_then(<[u8]>::first_chunk)
                    .map(|&l| u32::from_be_bytes(l) as usize)
                    == Some(stream.len().saturating_sub(p.saturating_add(5)))
        };
        // Back from the end in blocks: `contains` on bytes is a word-at-a-time memchr, where a
        // byte-by-byte `rposition` over a 100 KiB JSON text costs about a million instructions.
        let mut end = stream.len();
        let nul = loop {
            let start = end.saturating_sub(256).max(floor);
            let block = stream.get(start..end)?;
            if block.contains(&0) {
                break block
                    .iter()
                    .rposition(|&b| b == 0)
                    .map(|i| start.saturating_add(i));
            }
            if start == floor {
                break None;
            }
            end = start;
        };
        if let Some(nul) = nul {
            // The last NUL is either the EOF byte itself or inside the be32 length.
            let lo = nul.saturating_sub(5);
            if let Some(p) = (lo..=nul.saturating_add(1)).rev().find(|&p| is_trailer(p)) {
                return Some(p);
            }
        }
        if stream.last().is_none_or(|&b| b == record::EOF) {
            return None;
        }
        let top = stream.len().checked_sub(5)?;
        (floor.max(1)..=top).rev().find(|&p| is_trailer(p))
    }

    /// Encoded length.
    pub fn buffer_len(&self) -> usize {
        self.json.len().saturating_add(5)
    }

    /// Writes the trailer.
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        emit_head(out, self.json.len())?;
        out.write(self.json)
    }
}

/// Writes what precedes `len` bytes of JSON in a trailer (`06 | len be32`), for a writer that
/// produces the JSON as it goes.
pub fn emit_head<S: Sink + ?Sized>(out: &mut S, len: usize) -> core::result::Result<(), S::Error> {
    let [a, b, c, d] = u32::try_from(len)
        .map_err(|_| {
            Error::new(
                out.position(),
                ErrorKind::LengthTooLarge {
                    found: len as u64,
                    max: u32::MAX as u64,
                },
            )
        })?
        .to_be_bytes();
    out.write(&[record::VMDESCRIPTION, a, b, c, d])
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

    /// A NUL inside the JSON hides the trailer from a search for the last NUL; every
    /// candidate is tried instead, so the walk and the description reader see one trailer.
    #[test]
    fn locate_finds_a_trailer_whose_json_holds_a_nul() {
        let s = b"QEVM\0\0\0\x03\x00\x06\x00\x00\x01\x00{\0\x06  \"x\": 1}";
        let mut s = s.to_vec();
        let len = (s.len() - 14) as u32;
        s[10..14].copy_from_slice(&len.to_be_bytes());
        assert_eq!(Trailer::locate(&s), Some(9));
        // A stream that ends with its EOF byte has no trailer, whatever precedes it.
        let mut eof = s.clone();
        eof.push(0);
        assert_eq!(Trailer::locate(&eof), None);
        // The walk refuses a trailer other than the located one.
        let mut inner = b"QEVM\0\0\0\x03\x00\x06\0\0\0\0[\0\x06\0\0\0\x02{}".to_vec();
        let len = (inner.len() - 14) as u32;
        inner[10..14].copy_from_slice(&len.to_be_bytes());
        assert_eq!(Trailer::locate(&inner), Some(inner.len() - 7));
        let options = crate::stream::Options {
            require_configuration: false,
            ..crate::stream::Options::default()
        };
        let e = crate::stream::Records::with_options(&inner, crate::stream::FooterScan, options)
            .find_map(|r| r.err())
            .unwrap();
        assert_eq!(
            (e.offset, e.kind),
            (
                9,
                ErrorKind::TrailerAmbiguous {
                    located: Some(inner.len() - 7)
                }
            )
        );
    }

    #[test]
    fn a_trailer_longer_than_the_cap_is_refused_before_it_is_read() {
        let mut s = b"\x06".to_vec();
        s.extend_from_slice(&(Trailer::MAX_LEN as u32 + 1).to_be_bytes());
        let e = Trailer::read(&mut Reader::new(&s, 0)).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                1,
                ErrorKind::LengthTooLarge {
                    found: Trailer::MAX_LEN as u64 + 1,
                    max: Trailer::MAX_LEN as u64
                }
            )
        );
    }
}
