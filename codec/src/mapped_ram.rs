//! mapped-ram (QEMU >= 9.0): RAM at fixed file offsets instead of page records.
//!
//! With the `mapped-ram` capability and a seekable `file:` channel, QEMU writes each RAM
//! block's list entry (`u8 len, idstr, be64 used_length[, be64 addr]`) followed by a 28-byte
//! big-endian [`MappedRamHeader`], then moves its write position to the end of the block's
//! pages region, where the next entry follows. Between them lie:
//!
//! * the **bitmap**, at `bitmap_offset` (right after the header): `ceil(pages / 64)` host
//!   `unsigned long` words, written at completion; bit `i` set means page `i` is in the file.
//!   On x86-64 hosts (the only writer this reads) the words are little-endian, so bit `i` is
//!   bit `i % 8` of byte `i / 8`;
//! * a gap up to `pages_offset`, which QEMU rounds up to 1 MiB ([`ALIGNMENT`]);
//! * the **pages region**, `used_length` bytes: page `i` at `pages_offset + i * page_size`.
//!   Zero pages are never written (holes in a sparse file); with multifd the channels write the
//!   same regions with `pwritev`, so the file is the same.
//!
//! The stream continues at `pages_offset + used_length` of the last block (a file offset): the
//! `ram` START body therefore spans every block's bitmap and pages, and a reader that keeps the
//! body's bytes ([`crate::ram::BlockList`]) rewrites the file byte for byte.
//!
//! The header's offsets are **file** offsets: QEMU writes the stream with `file:PATH,offset=N`
//! (libvirt's `sparse` save image puts the stream after its header and XML that way), and the
//! regions are where they are in that file. A reader is told `N`
//! ([`RamOptions::file_offset`](crate::ram::RamOptions::file_offset), the file offset of the
//! stream's byte 0) and keeps [`BlockLayout`]'s offsets as file offsets, converting to stream
//! offsets only to find the bytes ([`BlockLayout::stream_offset`]); errors are at stream
//! offsets, as every other error of the reader.
//!
//! Rules checked on read ([`BlockLayout::read`]), each an [`ErrorKind::MappedRam`] naming the
//! block, at the offset of the header field at fault (docs/UNTRUSTED-INPUT.md §5):
//! version 1, page size 4096 (the target page size), the bitmap right after the header and
//! wholly before the pages, pages page-aligned in the file (QEMU's loader checks only that,
//! not the 1 MiB rounding), no bit set in the bitmap past the block's last page. The pages region must lie
//! inside the input, which the reader finds when it moves past it ([`ErrorKind::Truncated`]).
//! Regions cannot overlap: every block's region starts after the previous one's end, where the
//! stream continued.
//!
//! The loader (ram.c `parse_ramblock_mapped_ram`) declares PAGE, ZERO, XBZRLE, HOOK and
//! MULTIFD_FLUSH records invalid in such a stream; [`crate::ram::RamContext`] refuses them too.
//!
//! Read such a stream from a slice ([`crate::stream::Records`], a mapped file): the push
//! decoder ([`crate::io::Decoder`]) keeps a block list whole in its working buffer, and here the
//! list spans every pages region, so it reports [`ErrorKind::BufferTooSmall`].
//!
//! Nothing here allocates or panics; lookups borrow the caller's buffer.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, ErrorKind, MappedRamFault, Name, Result};
use crate::ram::PAGE_SIZE;
use crate::wire::{Configuration, Reader};

/// The capability name in `configuration/capabilities`.
pub const CAPABILITY: &[u8] = b"mapped-ram";
/// The only header version (`MAPPED_RAM_HDR_VERSION`).
pub const VERSION: u32 = 1;
/// The writer's alignment of each pages region (`MAPPED_RAM_FILE_OFFSET_ALIGNMENT`).
pub const ALIGNMENT: u64 = 0x10_0000;
/// Bytes of a bitmap word (`unsigned long` on a 64-bit host).
const WORD: u64 = 8;

/// Whether a CONFIGURATION record lists the `mapped-ram` capability.
pub fn announced(c: &Configuration<'_>) -> bool {
    c.capabilities
        .iter()
        .flat_map(|c| c.iter())
        .any(|cap| cap == CAPABILITY)
}

/// The per-block header as on the wire (`struct MappedRamHeader`, `QEMU_PACKED`).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct MappedRamHeader {
    /// Header version ([`VERSION`]).
    pub version: U32,
    /// Target page size.
    pub page_size: U64,
    /// File offset of the bitmap.
    pub bitmap_offset: U64,
    /// File offset of page 0.
    pub pages_offset: U64,
}

/// Length of [`MappedRamHeader`] on the wire.
pub const HEADER_LEN: usize = 28;
const _: () = assert!(core::mem::size_of::<MappedRamHeader>() == HEADER_LEN);

/// Bytes of the bitmap QEMU writes for a block of `length` bytes: one bit per whole page,
/// rounded up to 64-bit words (`BITS_TO_LONGS(pages) * sizeof(unsigned long)`).
pub const fn bitmap_len(length: u64) -> u64 {
    pages_in(length).div_ceil(64).saturating_mul(WORD)
}

/// Whole pages in `length` bytes.
const fn pages_in(length: u64) -> u64 {
    // PAGE_SIZE is not 0.
    match length.checked_div(PAGE_SIZE as u64) {
        Some(n) => n,
        None => 0,
    }
}

/// The mask of the low `bits` (< 8) bits of a byte.
fn low_bits(bits: u64) -> u8 {
    u8::MAX
        .checked_shr(8u32.saturating_sub(bits as u32))
        .unwrap_or(0)
}

/// Where one block's data lies in the file: its header, checked. Every offset is a file
/// offset (as the header holds them); the stream's byte 0 is at file offset
/// [`BlockLayout::file_offset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockLayout {
    /// File offset of the stream's byte 0 (0 for a file that holds only the stream).
    pub file_offset: u64,
    /// File offset of the header.
    pub header_offset: u64,
    /// The block's used length (from its list entry).
    pub length: u64,
    /// Header version (1).
    pub version: u32,
    /// Page size (4096).
    pub page_size: u64,
    /// Offset of the bitmap (the header's end).
    pub bitmap_offset: u64,
    /// Offset of page 0 (page-aligned, at or after the bitmap's end).
    pub pages_offset: u64,
}

impl BlockLayout {
    /// Reads and checks the header of the block `name` (`length` bytes) at `r`, and leaves `r`
    /// at the header's end. `file_offset` is the file offset of the stream's byte 0 (`r`'s
    /// offsets are stream offsets). The bitmap and pages are not read.
    pub fn read(
        r: &mut Reader<'_>,
        name: &[u8],
        length: u64,
        file_offset: u64,
    ) -> Result<BlockLayout> {
        let at = r.offset();
        let bytes = r.bytes(HEADER_LEN)?;
        let h = MappedRamHeader::read_from_bytes(bytes).map_err(|_| {
            r.error(ErrorKind::Truncated {
                needed: HEADER_LEN,
                available: bytes.len(),
            })
        })?;
        let fault = |field: usize, fault, found: u64| {
            Error::new(
                at.saturating_add(field),
                ErrorKind::MappedRam {
                    block: Name::new(name),
                    fault,
                    found: u8::try_from(found).unwrap_or(u8::MAX),
                },
            )
        };
        // The header's own file offset; one past u64 cannot be reached by a real file.
        let header_offset = file_offset.checked_add(at as u64).ok_or(Error::new(
            at,
            ErrorKind::MappedRam {
                block: Name::new(name),
                fault: MappedRamFault::BitmapOffset,
                found: 0,
            },
        ))?;
        let l = BlockLayout {
            file_offset,
            header_offset,
            length,
            version: h.version.get(),
            page_size: h.page_size.get(),
            bitmap_offset: h.bitmap_offset.get(),
            pages_offset: h.pages_offset.get(),
        };
        if l.version != VERSION {
            return Err(fault(0, MappedRamFault::Version, l.version.into()));
        }
        if l.page_size != PAGE_SIZE as u64 {
            return Err(fault(4, MappedRamFault::PageSize, 0));
        }
        let header_end = header_offset.saturating_add(HEADER_LEN as u64);
        if l.bitmap_offset != header_end {
            return Err(fault(12, MappedRamFault::BitmapOffset, 0));
        }
        if !l.pages_offset.is_multiple_of(PAGE_SIZE as u64) || l.pages_offset < l.bitmap_end() {
            return Err(fault(20, MappedRamFault::PagesOffset, 0));
        }
        // The region's end must be representable: the reader moves there next.
        if l.pages_end().is_none() {
            return Err(fault(20, MappedRamFault::PagesOffset, 0));
        }
        Ok(l)
    }

    /// Whole pages in the block (`length / page_size`, as QEMU counts them).
    pub const fn pages(&self) -> u64 {
        pages_in(self.length)
    }

    /// Bytes of the bitmap.
    pub const fn bitmap_len(&self) -> u64 {
        bitmap_len(self.length)
    }

    /// Offset just past the bitmap.
    pub const fn bitmap_end(&self) -> u64 {
        self.bitmap_offset.saturating_add(self.bitmap_len())
    }

    /// File offset just past the pages region (where the stream continues), if representable.
    pub const fn pages_end(&self) -> Option<u64> {
        self.pages_offset.checked_add(self.length)
    }

    /// The stream offset of file offset `file` (`None` before the stream's start).
    pub const fn stream_offset(&self, file: u64) -> Option<u64> {
        file.checked_sub(self.file_offset)
    }

    /// File offset of page `index`, if the block has that page.
    pub const fn page_offset(&self, index: u64) -> Option<u64> {
        if index >= self.pages() {
            return None;
        }
        // index < pages, so index * PAGE_SIZE < length and the sum is below pages_end.
        Some(
            self.pages_offset
                .saturating_add(index.saturating_mul(PAGE_SIZE as u64)),
        )
    }

    /// The bitmap's bytes in `stream` (stream bytes whose byte 0 is at stream offset `base`).
    pub fn bitmap<'f>(&self, stream: &'f [u8], base: usize) -> Option<&'f [u8]> {
        self.slice_at(stream, base, self.bitmap_offset, self.bitmap_len())
    }

    /// `len` bytes at file offset `at` of `stream` (whose byte 0 is at stream offset `base`).
    fn slice_at<'f>(&self, stream: &'f [u8], base: usize, at: u64, len: u64) -> Option<&'f [u8]> {
        let start = usize::try_from(self.stream_offset(at)?)
            .ok()?
            .checked_sub(base)?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        stream.get(start..end)
    }

    /// Whether page `index` is in the file (its bit is set in `bitmap`, the bitmap's bytes);
    /// `None` past the last page or the bitmap.
    pub fn is_present(&self, bitmap: &[u8], index: u64) -> Option<bool> {
        if index >= self.pages() {
            return None;
        }
        let byte = bitmap.get(usize::try_from(index >> 3).ok()?)?;
        Some(byte & (1 << (index & 7)) != 0)
    }

    /// Pages whose bit is set in `bitmap`.
    pub fn present_pages(&self, bitmap: &[u8]) -> u64 {
        let whole = usize::try_from(self.pages() >> 3).unwrap_or(usize::MAX);
        let (full, rest) = bitmap.split_at(whole.min(bitmap.len()));
        let mut n: u64 = full.iter().map(|b| u64::from(b.count_ones())).sum();
        if let Some(&last) = rest.first() {
            n = n.saturating_add(u64::from((last & low_bits(self.pages() & 7)).count_ones()));
        }
        n
    }

    /// Checks that no bit past the last page is set in `bitmap` (QEMU clears them; a set one
    /// would name a page outside the block). The error is at the first such byte.
    pub fn check_bitmap(&self, bitmap: &[u8], name: &[u8]) -> Result<()> {
        let pages = self.pages();
        let first = usize::try_from(pages >> 3).unwrap_or(usize::MAX);
        for (i, &b) in bitmap.iter().enumerate().skip(first) {
            let keep = if i == first { low_bits(pages & 7) } else { 0 };
            if b & !keep != 0 {
                let at = self
                    .bitmap_offset
                    .saturating_add(i as u64)
                    .saturating_sub(self.file_offset);
                return Err(Error::new(
                    usize::try_from(at).unwrap_or(usize::MAX),
                    ErrorKind::MappedRam {
                        block: Name::new(name),
                        fault: MappedRamFault::BitmapPadding,
                        found: b,
                    },
                ));
            }
        }
        Ok(())
    }

    /// Page `index` in `stream` (byte 0 at stream offset `base`): `Some(bytes)` when
    /// present, `None` when absent (a zero page) or outside the block or the input.
    pub fn page<'f>(&self, stream: &'f [u8], base: usize, index: u64) -> Option<&'f [u8]> {
        let bitmap = self.bitmap(stream, base)?;
        if !self.is_present(bitmap, index)? {
            return None;
        }
        self.slice_at(stream, base, self.page_offset(index)?, PAGE_SIZE as u64)
    }
}

impl BlockLayout {
    /// The bytes of `count` pages from page `index` in `stream` (byte 0 at stream offset `base`),
    /// whatever the bitmap says (an absent page's bytes are a hole, or stale data QEMU left
    /// when the page became zero later); `None` past the block or the input.
    pub fn pages_bytes<'f>(
        &self,
        stream: &'f [u8],
        base: usize,
        index: u64,
        count: u64,
    ) -> Option<&'f [u8]> {
        if index.checked_add(count)? > self.pages() {
            return None;
        }
        self.slice_at(
            stream,
            base,
            self.page_offset(index)?,
            count.checked_mul(PAGE_SIZE as u64)?,
        )
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    use super::*;

    fn header(version: u32, page: u64, bitmap: u64, pages: u64) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&version.to_be_bytes());
        h[4..12].copy_from_slice(&page.to_be_bytes());
        h[12..20].copy_from_slice(&bitmap.to_be_bytes());
        h[20..].copy_from_slice(&pages.to_be_bytes());
        h
    }

    fn read(h: &[u8], at: usize) -> Result<BlockLayout> {
        BlockLayout::read(&mut Reader::new(h, at), b"pc.ram", 0x40_0000, 0)
    }

    #[test]
    fn header_rules() {
        // The fixture's pc.ram header: at 0x72, bitmap 0x8e, pages 0x100000.
        let ok = read(&header(1, 4096, 0x8e, 0x10_0000), 0x72).unwrap();
        assert_eq!(
            (ok.pages(), ok.bitmap_len(), ok.bitmap_end()),
            (1024, 128, 0x10e)
        );
        assert_eq!(ok.page_offset(1023), Some(0x10_0000 + 1023 * 4096));
        assert_eq!(ok.page_offset(1024), None);
        let fault = |h: [u8; HEADER_LEN]| {
            let e = read(&h, 0x72).unwrap_err();
            match e.kind {
                ErrorKind::MappedRam { fault, block, .. } => {
                    assert!(block.eq_bytes(b"pc.ram"));
                    (e.offset, fault)
                }
                other => panic!("{other:?}"),
            }
        };
        use MappedRamFault::*;
        assert_eq!(fault(header(2, 4096, 0x8e, 0x10_0000)), (0x72, Version));
        assert_eq!(fault(header(0, 4096, 0x8e, 0x10_0000)), (0x72, Version));
        assert_eq!(fault(header(1, 8192, 0x8e, 0x10_0000)), (0x76, PageSize));
        assert_eq!(
            fault(header(1, 4096, 0x90, 0x10_0000)),
            (0x7e, BitmapOffset)
        );
        // Pages over the bitmap, unaligned, or past u64.
        assert_eq!(fault(header(1, 4096, 0x8e, 0)), (0x86, PagesOffset));
        assert_eq!(fault(header(1, 4096, 0x8e, 0x10_0800)), (0x86, PagesOffset));
        assert_eq!(fault(header(1, 4096, 0x8e, !0xfff)), (0x86, PagesOffset));
        // A page-aligned offset below 1 MiB is accepted (QEMU checks page alignment only).
        assert!(read(&header(1, 4096, 0x8e, 0x1000), 0x72).is_ok());
        // Every cut header is "need more".
        let h = header(1, 4096, 0x8e, 0x10_0000);
        for k in 0..HEADER_LEN {
            assert!(read(&h[..k], 0x72).unwrap_err().is_incomplete());
        }
    }

    /// A stream at file offset 66762 (libvirt's sparse image): the header's offsets are file
    /// offsets, the page alignment is the file's, errors and slices are in stream offsets.
    #[test]
    fn header_offsets_are_file_offsets() {
        const AT: u64 = 66762;
        let read_at = |h: &[u8], file: u64| {
            BlockLayout::read(&mut Reader::new(h, 0x72), b"pc.ram", 0x40_0000, file)
        };
        // The sparse fixture's pc.ram: header at stream 0x72 = file 0x1053c.
        let h = header(1, 4096, 0x1053c + 28, 0x10_0000);
        let l = read_at(&h, AT).unwrap();
        assert_eq!((l.file_offset, l.header_offset), (AT, 0x1053c));
        assert_eq!(l.stream_offset(l.bitmap_offset), Some(0x72 + 28));
        // The same header read as if the stream started the file: the bitmap is not after it.
        let e = read_at(&h, 0).unwrap_err();
        assert!(matches!(
            e.kind,
            ErrorKind::MappedRam {
                fault: MappedRamFault::BitmapOffset,
                ..
            }
        ));
        assert_eq!(e.offset, 0x72 + 12);
        // Pages page-aligned in the file (their stream offset is not); one that is aligned in
        // the stream only is refused.
        assert_ne!((0x10_0000 - AT) % 4096, 0);
        let e = read_at(&header(1, 4096, 0x1053c + 28, 0x10_0000 + AT), AT).unwrap_err();
        assert_eq!(e.offset, 0x72 + 20);
        // Bytes are found at stream offsets: the bitmap right after the header in `stream`,
        // page 1 at pages_offset + 4096 - AT, and a padding error at its stream offset.
        extern crate std;
        let pages_at = (0x10_0000 - AT) as usize;
        let mut stream = std::vec![0u8; pages_at + 2 * 4096];
        stream[0x72 + 28] = 0b10;
        stream[pages_at + 4096] = 0xaa;
        assert_eq!(l.bitmap(&stream, 0).unwrap().len(), 128);
        assert_eq!(l.page(&stream, 0, 1).unwrap()[0], 0xaa);
        assert_eq!(l.page(&stream, 0, 0), None);
        assert_eq!(l.pages_bytes(&stream, 0, 1, 1).unwrap()[0], 0xaa);
        let short = BlockLayout {
            length: 70 * 4096,
            ..l
        };
        let mut bm = [0u8; 16];
        bm[9] = 1;
        assert_eq!(
            short.check_bitmap(&bm, b"b").unwrap_err().offset,
            0x72 + 28 + 9
        );
    }

    #[test]
    fn bitmap_lookups_and_padding() {
        let l = BlockLayout {
            file_offset: 0,
            header_offset: 0,
            length: 70 * 4096,
            version: 1,
            page_size: 4096,
            bitmap_offset: 28,
            pages_offset: 4096,
        };
        assert_eq!(l.bitmap_len(), 16);
        let mut bm = [0u8; 16];
        bm[0] = 0b1000_0001;
        bm[8] = 0b0010_0000; // page 69, the last
        assert_eq!(l.is_present(&bm, 0), Some(true));
        assert_eq!(l.is_present(&bm, 1), Some(false));
        assert_eq!(l.is_present(&bm, 69), Some(true));
        assert_eq!(l.is_present(&bm, 70), None);
        assert_eq!(l.present_pages(&bm), 3);
        l.check_bitmap(&bm, b"b").unwrap();
        bm[8] |= 0b0100_0000; // page 70: past the block
        assert_eq!(l.present_pages(&bm), 3);
        let e = l.check_bitmap(&bm, b"b").unwrap_err();
        assert_eq!(e.offset, 28 + 8);
        bm[8] = 0;
        bm[15] = 0x80;
        assert_eq!(l.check_bitmap(&bm, b"b").unwrap_err().offset, 28 + 15);
    }
}
