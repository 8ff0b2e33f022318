//! The `ram` section (version 4): block list, page records, EOS (docs/V3-WIRE.md §10).
//!
//! Every record starts with a be64 word: the low 12 bits are flags, the rest is a page-aligned
//! offset in the current block (or, for MEM_SIZE, the total byte count).
//!
//! Hardened rules (docs/UNTRUSTED-INPUT.md §5): the MEM_SIZE total must equal the sum of the
//! listed lengths (checked arithmetic, no underflow); every page record must name a listed block (or
//! CONTINUE a previous one) and lie wholly inside it; ZERO fill bytes must be 0 unless
//! [`RamOptions::allow_nonzero_fill`]; XBZRLE deltas are at most one page; a bare
//! MULTIFD_FLUSH word is accepted only with [`RamOptions::multifd_flush`]; COMPRESS_PAGE, HOOK
//! and unknown combinations are rejected; every body ends with EOS.
//!
//! With [`RamOptions::mapped_ram`] each block entry is followed by its mapped-ram header, bitmap
//! and pages region ([`crate::mapped_ram`]): the block list spans them, and page records are
//! refused.
//!
//! What a destination QEMU accepts differs by version ([`RamOptions::for_qemu`]): 7.2 fills a
//! ZERO page with any byte and refuses MULTIFD_FLUSH ("Unknown combination of migration
//! flags"); 8.0 added MULTIFD_FLUSH; 8.2 refuses a fill byte other than 0 ("Found a zero page
//! with value %d").

use crate::error::{Error, ErrorKind, Name, Result};
use crate::mapped_ram::BlockLayout;
use crate::sink::Sink;
use crate::wire::Reader;

/// Record flags (low 12 bits of the record word).
pub mod flags {
    /// Obsolete full-page flag; never written, rejected.
    pub const FULL: u16 = 0x001;
    /// An all-`fill` page: `[block] + u8 fill`.
    pub const ZERO: u16 = 0x002;
    /// The block list (START body).
    pub const MEM_SIZE: u16 = 0x004;
    /// A raw page: `[block] + 4096 bytes`.
    pub const PAGE: u16 = 0x008;
    /// End of this section's RAM data.
    pub const EOS: u16 = 0x010;
    /// Same block as the previous page record; the name is omitted.
    pub const CONTINUE: u16 = 0x020;
    /// An XBZRLE delta: `[block] + u8 0x01 + be16 len + len bytes`.
    pub const XBZRLE: u16 = 0x040;
    /// RDMA hook; rejected.
    pub const HOOK: u16 = 0x080;
    /// Compressed page; rejected (compression is not supported).
    pub const COMPRESS_PAGE: u16 = 0x100;
    /// Multifd sync point, written as the bare word `0x200` (QEMU >= 8.0, multifd only); QEMU
    /// 7.2 refuses it. Accepted with [`RamOptions::multifd_flush`](super::RamOptions).
    pub const MULTIFD_FLUSH: u16 = 0x200;
}

/// Target page size of x86 (and the flag mask width).
pub const PAGE_SIZE: usize = 4096;
const FLAG_MASK: u64 = (PAGE_SIZE as u64) - 1;
/// XBZRLE encoding byte.
pub const ENCODING_FLAG_XBZRLE: u8 = 0x01;

/// What the reader accepts: the destination's rules for RAM records.
///
/// The default is the strict intersection of QEMU 7.2 and 10.0: fill bytes 0 only (as 8.2 and
/// later require), no MULTIFD_FLUSH (as 7.2 requires). [`RamOptions::for_qemu`] gives one
/// version's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RamOptions {
    /// Accept ZERO records with a non-zero fill byte, as a QEMU 7.2 destination does (it fills
    /// the page with that byte); QEMU >= 8.2 refuses them ("Found a zero page with value %d"),
    /// and so does this reader by default ([`ErrorKind::RamNonZeroFill`]).
    pub allow_nonzero_fill: bool,
    /// Accept a bare MULTIFD_FLUSH record (the word `0x200`), as QEMU >= 8.0 destinations do;
    /// QEMU 7.2 refuses it ("Unknown combination of migration flags: 0x200"), and so does this
    /// reader by default ([`ErrorKind::RamFlags`]).
    pub multifd_flush: bool,
    /// The block list carries a be64 `mr->addr` per block (capability `x-ignore-shared`).
    pub ignore_shared: bool,
    /// The mapped-ram layout (capability `mapped-ram`, QEMU >= 9.0): each block entry is
    /// followed by a [`MappedRamHeader`](crate::mapped_ram::MappedRamHeader), the bitmap and the
    /// pages region, and the stream continues after it; PAGE, ZERO, XBZRLE and MULTIFD_FLUSH
    /// records are refused ([`ErrorKind::RamFlags`]), as QEMU's loader refuses them.
    pub mapped_ram: bool,
    /// The file offset of the stream's byte 0: 0 for a file that is only the stream, `N` for
    /// a stream QEMU wrote with `file:PATH,offset=N` (libvirt's save images, whose `sparse`
    /// format is mapped-ram after the image's header and XML). mapped-ram headers hold file
    /// offsets ([`crate::mapped_ram`]); nothing else depends on it.
    pub file_offset: u64,
}

impl RamOptions {
    /// The record rules of a QEMU `major.minor` destination's precopy loader (`ram_load_precopy`):
    /// non-zero fill bytes before 8.2, MULTIFD_FLUSH from 8.0 on. `ignore_shared` is off (it
    /// comes from the stream's configuration record).
    pub const fn for_qemu(major: u16, minor: u16) -> Self {
        RamOptions {
            allow_nonzero_fill: major < 8 || (major == 8 && minor < 2),
            multifd_flush: major >= 8,
            ignore_shared: false,
            mapped_ram: false,
            file_offset: 0,
        }
    }
}

/// The block list of a START body, borrowed from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockList<'a> {
    raw: &'a [u8],
    /// Number of blocks.
    pub count: usize,
    /// The MEM_SIZE total.
    pub total: u64,
    ignore_shared: bool,
    mapped_ram: bool,
    /// Stream offset of `raw[0]`.
    base: usize,
    /// File offset of the stream's byte 0 ([`RamOptions::file_offset`]).
    file_offset: u64,
}

/// One entry of the block list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEntry<'a> {
    /// Block idstr, e.g. `pc.ram`.
    pub name: &'a [u8],
    /// Its used length in bytes.
    pub length: u64,
    /// `mr->addr`, when `x-ignore-shared` is on.
    pub addr: Option<u64>,
}

impl<'a> BlockList<'a> {
    /// The entries in stream order.
    pub fn iter(&self) -> impl Iterator<Item = BlockEntry<'a>> + 'a {
        self.entries().map(|(entry, _)| entry)
    }

    /// The entries in stream order, each with its mapped-ram layout when the list has one
    /// ([`RamOptions::mapped_ram`]).
    pub fn entries(&self) -> impl Iterator<Item = (BlockEntry<'a>, Option<BlockLayout>)> + use<'a> {
        let mut r = Reader::new(self.raw, self.base);
        let (shared, mapped, file) = (self.ignore_shared, self.mapped_ram, self.file_offset);
        core::iter::from_fn(move || {
            if r.remaining() == 0 {
                return None;
            }
            let name = r.name().ok()?;
            let length = r.be64().ok()?;
            let addr = if shared { Some(r.be64().ok()?) } else { None };
            let layout = if mapped {
                let l = BlockLayout::read(&mut r, name, length, file).ok()?;
                let to = usize::try_from(l.stream_offset(l.pages_end()?)?).ok()?;
                r.skip(to.checked_sub(r.offset())?).ok()?;
                Some(l)
            } else {
                None
            };
            Some((BlockEntry { name, length, addr }, layout))
        })
    }

    /// The list's bytes as in the stream (with mapped-ram: every block's bitmap and pages).
    pub const fn bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether the list is a mapped-ram file's ([`RamOptions::mapped_ram`]): every block's
    /// pages are then in its pages region, none in records.
    pub const fn is_mapped_ram(&self) -> bool {
        self.mapped_ram
    }

    /// Stream offset of the list's first byte (after the MEM_SIZE word).
    pub const fn offset(&self) -> usize {
        self.base
    }

    /// File offset of the stream's byte 0 ([`RamOptions::file_offset`]; mapped-ram layouts
    /// are in file offsets).
    pub const fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// The bitmap of a block of this list (`layout` from [`BlockList::entries`]).
    pub fn bitmap(&self, layout: &BlockLayout) -> Option<&'a [u8]> {
        layout.bitmap(self.raw, self.base)
    }

    /// `count` pages from page `index` of a mapped-ram block of this list, whatever its bitmap
    /// says ([`BlockLayout::pages_bytes`]).
    pub fn mapped_pages(&self, layout: &BlockLayout, index: u64, count: u64) -> Option<&'a [u8]> {
        layout.pages_bytes(self.raw, self.base, index, count)
    }

    /// Page `index` of a mapped-ram block of this list: `Some` when the file holds it, `None`
    /// for a zero page (never written) or an index past the block.
    pub fn mapped_page(&self, layout: &BlockLayout, index: u64) -> Option<&'a [u8]> {
        layout.page(self.raw, self.base, index)
    }

    /// The same list read from `raw`, a copy of the bytes this list was read from (the
    /// list's shape kept apart from its bytes by a reader that moves them, `crate::io`).
    pub(crate) const fn rebind<'b>(&self, raw: &'b [u8]) -> BlockList<'b> {
        BlockList {
            raw,
            count: self.count,
            total: self.total,
            ignore_shared: self.ignore_shared,
            mapped_ram: self.mapped_ram,
            base: self.base,
            file_offset: self.file_offset,
        }
    }

    /// Finds a block's length by name.
    pub fn length_of(&self, name: &[u8]) -> Option<u64> {
        self.iter().find(|b| b.name == name).map(|b| b.length)
    }
}

/// One RAM record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamRecord<'a> {
    /// The block list (START body).
    MemSize(BlockList<'a>),
    /// A page filled with `fill`.
    Zero {
        /// Block name (repeated from the previous record for CONTINUE).
        block: &'a [u8],
        /// Page offset in the block.
        offset: u64,
        /// Fill byte.
        fill: u8,
        /// Whether the record used CONTINUE (no name on the wire).
        continued: bool,
    },
    /// A raw page.
    Page {
        /// Block name.
        block: &'a [u8],
        /// Page offset in the block.
        offset: u64,
        /// The 4096 page bytes.
        data: &'a [u8],
        /// Whether the record used CONTINUE.
        continued: bool,
    },
    /// An XBZRLE delta against the destination's current page.
    Xbzrle {
        /// Block name.
        block: &'a [u8],
        /// Page offset in the block.
        offset: u64,
        /// The encoded delta (at most one page long).
        delta: &'a [u8],
        /// Whether the record used CONTINUE.
        continued: bool,
    },
    /// A multifd sync point (the bare word `0x200`; only with [`RamOptions::multifd_flush`]).
    MultifdFlush,
    /// End of this section's RAM data.
    Eos,
}

/// RAM parsing state that lives across sections: the block list and the last block named.
#[derive(Debug, Clone, Copy, Default)]
pub struct RamContext<'a> {
    /// Block list from the START section, once seen.
    pub blocks: Option<BlockList<'a>>,
    last: Option<(&'a [u8], u64)>,
    /// Options.
    pub options: RamOptions,
}

impl<'a> RamContext<'a> {
    /// A context with `options`.
    pub const fn new(options: RamOptions) -> Self {
        RamContext {
            blocks: None,
            last: None,
            options,
        }
    }

    /// The block the last page record named (what a CONTINUE record refers to) and its length.
    pub const fn last_block(&self) -> Option<(&'a [u8], u64)> {
        self.last
    }

    /// Sets the block a CONTINUE record refers to. For readers that keep the block list and
    /// the last block in their own storage across refills of a working buffer (`crate::io`).
    pub const fn set_last_block(&mut self, last: Option<(&'a [u8], u64)>) {
        self.last = last;
    }

    /// Reads one record from `r`.
    pub fn read_record(&mut self, r: &mut Reader<'a>) -> Result<RamRecord<'a>> {
        let at = r.offset();
        let word = r.be64()?;
        let fl = (word & FLAG_MASK) as u16;
        let addr = word & !FLAG_MASK;
        let cont = fl & flags::CONTINUE != 0;
        let bad = |flags| Error::new(at, ErrorKind::RamFlags { flags });
        match fl & !flags::CONTINUE {
            flags::EOS if !cont => Ok(RamRecord::Eos),
            // Written bare (`qemu_put_be64(f, RAM_SAVE_FLAG_MULTIFD_FLUSH)`): an address would
            // not survive a rewrite, so it is refused like an unknown combination.
            // mapped-ram: QEMU's loader refuses page records and MULTIFD_FLUSH.
            flags::ZERO | flags::PAGE | flags::XBZRLE | flags::MULTIFD_FLUSH
                if self.options.mapped_ram =>
            {
                Err(bad(fl))
            }
            flags::MULTIFD_FLUSH if !cont && addr == 0 && self.options.multifd_flush => {
                Ok(RamRecord::MultifdFlush)
            }
            flags::MEM_SIZE if !cont => self.read_block_list(addr, r).map(RamRecord::MemSize),
            flags::ZERO => {
                let (block, offset) = self.page_target(r, addr, cont, at)?;
                let fill_at = r.offset();
                let fill = r.u8()?;
                if fill != 0 && !self.options.allow_nonzero_fill {
                    return Err(Error::new(
                        fill_at,
                        ErrorKind::RamNonZeroFill {
                            block: Name::new(block),
                            fill,
                        },
                    ));
                }
                Ok(RamRecord::Zero {
                    block,
                    offset,
                    fill,
                    continued: cont,
                })
            }
            flags::PAGE => {
                let (block, offset) = self.page_target(r, addr, cont, at)?;
                let data = r.bytes(PAGE_SIZE)?;
                Ok(RamRecord::Page {
                    block,
                    offset,
                    data,
                    continued: cont,
                })
            }
            flags::XBZRLE => {
                let (block, offset) = self.page_target(r, addr, cont, at)?;
                let enc_at = r.offset();
                let enc = r.u8()?;
                if enc != ENCODING_FLAG_XBZRLE {
                    return Err(Error::new(
                        enc_at,
                        ErrorKind::Invalid {
                            expected: crate::Expected::Equal(1),
                            found: enc as u64,
                        },
                    )
                    .in_field("xbzrle encoding"));
                }
                let len_at = r.offset();
                let len = r.be16()? as usize;
                if len > PAGE_SIZE {
                    return Err(Error::new(
                        len_at,
                        ErrorKind::LengthTooLarge {
                            found: len as u64,
                            max: PAGE_SIZE as u64,
                        },
                    )
                    .in_field("xbzrle len"));
                }
                let delta = r.bytes(len)?;
                Ok(RamRecord::Xbzrle {
                    block,
                    offset,
                    delta,
                    continued: cont,
                })
            }
            _ => Err(bad(fl)),
        }
    }

    fn read_block_list(&mut self, total: u64, r: &mut Reader<'a>) -> Result<BlockList<'a>> {
        let start = r.position();
        let base = r.offset();
        let mut remaining = total;
        let mut count: usize = 0;
        while remaining > 0 {
            // With mapped-ram, an entry is where the previous block's pages region said it
            // is: a region that overlaps the next block's lands the walk inside that block.
            let name = r
                .name()
                .map_err(|e| match self.options.mapped_ram && count > 0 {
                    true => e.in_field("RAM block entry after a mapped-ram pages region"),
                    false => e,
                })?;
            let len_at = r.offset();
            let length = r.be64()?;
            if self.options.ignore_shared {
                r.be64()?;
            }
            if self.options.mapped_ram {
                skip_mapped_block(r, name, length, self.options.file_offset)?;
            }
            remaining = remaining.checked_sub(length).ok_or(Error::new(
                len_at,
                ErrorKind::RamTotalMismatch {
                    declared: total,
                    sum: total.saturating_sub(remaining).saturating_add(length),
                },
            ))?;
            count = count.saturating_add(1);
        }
        let list = BlockList {
            raw: r.buffer().get(start..r.position()).unwrap_or_default(),
            count,
            total,
            ignore_shared: self.options.ignore_shared,
            mapped_ram: self.options.mapped_ram,
            base,
            file_offset: self.options.file_offset,
        };
        self.blocks = Some(list);
        // A CONTINUE record after a new block list must not reach a block of the old one: its
        // bounds were checked against the old length (CVE-2014-7840 class).
        self.last = None;
        Ok(list)
    }

    fn page_target(
        &mut self,
        r: &mut Reader<'a>,
        offset: u64,
        cont: bool,
        at: usize,
    ) -> Result<(&'a [u8], u64)> {
        let (name, length) = if cont {
            self.last
                .ok_or(Error::new(at, ErrorKind::RamContinueWithoutBlock))?
        } else {
            let name_at = r.offset();
            let name = r.name()?;
            let length = self
                .blocks
                .as_ref()
                .and_then(|b| b.length_of(name))
                .ok_or(Error::new(
                    name_at,
                    ErrorKind::RamUnknownBlock {
                        name: Name::new(name),
                    },
                ))?;
            (name, length)
        };
        // CVE-2014-7840 class: the whole page must lie inside its block.
        if offset
            .checked_add(PAGE_SIZE as u64)
            .is_none_or(|end| end > length)
        {
            return Err(Error::new(
                at,
                ErrorKind::RamOffsetOutOfBlock { offset, length },
            ));
        }
        self.last = Some((name, length));
        Ok((name, offset))
    }

    /// Length in bytes of the run of records at the start of `rest` (which starts at a record)
    /// that [`RamContext::read_record`] would accept as ZERO or PAGE records continuing the
    /// last block: CONTINUE set, the page wholly inside the block, a ZERO fill the options
    /// accept, the whole record present. Such records leave the context as it was, so skipping
    /// them is the same as reading them.
    ///
    /// The run stops before the first record that is anything else, cut or refused; reading on
    /// from there with `read_record` gives the same records and the same errors as reading
    /// every record with it. Precopy bodies are mostly such runs, which this checks in a few
    /// instructions per record.
    pub fn continued_run_len(&self, rest: &[u8]) -> usize {
        let Some((_, length)) = self.last.filter(|_| !self.options.mapped_ram) else {
            return 0;
        };
        const ZERO: u64 = (flags::ZERO | flags::CONTINUE) as u64;
        const PAGE: u64 = (flags::PAGE | flags::CONTINUE) as u64;
        // The highest page offset whose page still lies wholly inside the block. Offsets are
        // page-aligned, so with the flags in the low bits one compare of the word checks it.
        let Some(last_page) = length.checked_sub(PAGE_SIZE as u64) else {
            return 0;
        };
        let last_page = last_page & !FLAG_MASK;
        let any_fill = self.options.allow_nonzero_fill;
        let mut tail = rest;
        // Every record the loop accepts is at least 9 bytes long (a ZERO record).
        while let Some((head, after_zero)) = tail.split_first_chunk::<9>() {
            let Some((word, &[fill])) = head.split_first_chunk::<8>() else {
                break;
            };
            let word = u64::from_be_bytes(*word);
            tail = match word & FLAG_MASK {
                ZERO if word <= last_page | ZERO && (fill == 0 || any_fill) => after_zero,
                PAGE if word <= last_page | PAGE => match tail.get(8 + PAGE_SIZE..) {
                    Some(next) => next,
                    None => break,
                },
                _ => break,
            };
        }
        rest.len().saturating_sub(tail.len())
    }

    /// Walks a RAM section body up to and including its EOS; returns the body length.
    ///
    /// Accepts and refuses exactly what reading every record with
    /// [`RamContext::read_record`] does, with the same errors; runs of continued ZERO/PAGE
    /// records go through [`RamContext::continued_run_len`] instead of the full parser.
    pub fn measure_body(&mut self, r: &mut Reader<'a>) -> Result<usize> {
        self.measure_body_observed(r, |_| {})
    }

    /// [`RamContext::measure_body`], calling `reached` with the input offset reached after
    /// each record read, at most [`MEASURE_WINDOW`] bytes (and a record) apart: a caller whose
    /// input is a mapped file releases what lies behind, so a large section does not stay
    /// resident.
    pub fn measure_body_observed(
        &mut self,
        r: &mut Reader<'a>,
        mut reached: impl FnMut(usize),
    ) -> Result<usize> {
        let start = r.position();
        loop {
            // A run cut by the window ends before its first record that is not whole in it;
            // `read_record` reads that one.
            let rest = r.rest();
            r.skip(self.continued_run_len(rest.get(..MEASURE_WINDOW).unwrap_or(rest)))?;
            let rec = self.read_record(r)?;
            reached(r.offset());
            if let RamRecord::Eos = rec {
                return Ok(r.position().saturating_sub(start));
            }
        }
    }
}

/// How much of a run of continued records [`RamContext::measure_body_observed`] skips
/// between two reports.
pub const MEASURE_WINDOW: usize = 256 << 10;

/// Reads the mapped-ram header of block `name` at `r`, checks its bitmap, and moves `r` past
/// its pages region (where the stream continues). A region past the input is
/// [`ErrorKind::Truncated`] in field "mapped-ram pages region".
fn skip_mapped_block(r: &mut Reader<'_>, name: &[u8], length: u64, file: u64) -> Result<()> {
    let l = BlockLayout::read(r, name, length, file)?;
    let field = "mapped-ram bitmap";
    let n = usize::try_from(l.bitmap_len()).unwrap_or(usize::MAX);
    let bitmap = r.peek_bytes(0, n).ok_or(
        r.error(ErrorKind::Truncated {
            needed: n,
            available: r.remaining(),
        })
        .in_field(field),
    )?;
    l.check_bitmap(bitmap, name)?;
    // `pages_end` is representable (checked by `read`) and past the bitmap's end, which is
    // where `r` is or after (in file offsets: the stream's are `file` less).
    let end = l
        .pages_end()
        .and_then(|e| l.stream_offset(e))
        .unwrap_or(u64::MAX);
    let n = end.saturating_sub(r.offset() as u64);
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    r.skip(n).map_err(|e| e.in_field("mapped-ram pages region"))
}

/// Applies an XBZRLE delta to `page` in place (QEMU's run-length format: repeated
/// uleb128 unchanged-run, uleb128 changed-run, changed bytes). Bounds are checked; a delta that
/// runs past the page or ends inside a run is an error.
pub fn xbzrle_apply(delta: &[u8], page: &mut [u8]) -> Result<()> {
    let mut r = Reader::new(delta, 0);
    let mut pos = 0usize;
    let uleb = |r: &mut Reader<'_>| -> Result<usize> {
        let mut v = 0usize;
        for shift in [0u32, 7, 14] {
            let b = r.u8()?;
            v |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(r.error(ErrorKind::LengthTooLarge {
            found: v as u64,
            max: PAGE_SIZE as u64,
        }))
    };
    while r.remaining() > 0 {
        let zrun = uleb(&mut r)?;
        pos = pos
            .checked_add(zrun)
            .filter(|&p| p <= page.len())
            .ok_or(r.error(ErrorKind::LengthTooLarge {
                found: zrun as u64,
                max: page.len() as u64,
            }))?;
        if r.remaining() == 0 {
            break;
        }
        let nzrun = uleb(&mut r)?;
        let end = pos
            .checked_add(nzrun)
            .filter(|&p| p <= page.len())
            .ok_or(r.error(ErrorKind::LengthTooLarge {
                found: nzrun as u64,
                max: page.len() as u64,
            }))?;
        let changed = r.bytes(nzrun)?;
        // `pos <= end <= page.len()` was just checked.
        if let Some(dst) = page.get_mut(pos..end) {
            dst.copy_from_slice(changed);
        }
        pos = end;
    }
    Ok(())
}

/// Writes RAM records, tracking the last block for CONTINUE like QEMU's `save_page_header`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RamWriter<'n> {
    last: Option<&'n [u8]>,
}

impl<'n> RamWriter<'n> {
    /// A writer with no previous block.
    pub const fn new() -> Self {
        RamWriter { last: None }
    }

    /// Writes the block list: MEM_SIZE word with the total, then each block, then EOS is
    /// *not* written (call [`RamWriter::eos`]).
    pub fn block_list<S: Sink>(
        &mut self,
        blocks: &[BlockEntry<'_>],
        out: &mut S,
    ) -> Result<(), S::Error> {
        let mut total: u64 = 0;
        for b in blocks {
            total = total.checked_add(b.length).ok_or(Error::new(
                out.position(),
                ErrorKind::LengthTooLarge {
                    found: b.length,
                    max: u64::MAX.saturating_sub(total),
                },
            ))?;
        }
        out.write(&(total | flags::MEM_SIZE as u64).to_be_bytes())?;
        // A reader forgets the previous block at a new list: name it again.
        self.last = None;
        for b in blocks {
            crate::wire::emit_name(out, b.name)?;
            out.write(&b.length.to_be_bytes())?;
            if let Some(a) = b.addr {
                out.write(&a.to_be_bytes())?;
            }
        }
        Ok(())
    }

    fn header<S: Sink>(
        &mut self,
        block: &'n [u8],
        offset: u64,
        fl: u16,
        out: &mut S,
    ) -> Result<(), S::Error> {
        if offset & FLAG_MASK != 0 {
            return Err(Error::new(
                out.position(),
                ErrorKind::RamOffsetOutOfBlock { offset, length: 0 },
            )
            .into());
        }
        let cont = self.last == Some(block);
        let word = offset | fl as u64 | if cont { flags::CONTINUE as u64 } else { 0 };
        out.write(&word.to_be_bytes())?;
        if !cont {
            crate::wire::emit_name(out, block)?;
            self.last = Some(block);
        }
        Ok(())
    }

    /// Writes a ZERO record.
    pub fn zero<S: Sink>(
        &mut self,
        block: &'n [u8],
        offset: u64,
        out: &mut S,
    ) -> Result<(), S::Error> {
        self.header(block, offset, flags::ZERO, out)?;
        out.write(&[0])
    }

    /// Writes a PAGE record; `data` must be one page.
    pub fn page<S: Sink>(
        &mut self,
        block: &'n [u8],
        offset: u64,
        data: &[u8],
        out: &mut S,
    ) -> Result<(), S::Error> {
        if data.len() != PAGE_SIZE {
            return Err(Error::new(
                out.position(),
                ErrorKind::Invalid {
                    expected: crate::Expected::Equal(PAGE_SIZE as u64),
                    found: data.len() as u64,
                },
            )
            .into());
        }
        self.header(block, offset, flags::PAGE, out)?;
        out.write(data)
    }

    /// Writes ZERO if the page is all zeros, PAGE otherwise (QEMU's choice).
    pub fn page_or_zero<S: Sink>(
        &mut self,
        block: &'n [u8],
        offset: u64,
        data: &[u8],
        out: &mut S,
    ) -> Result<(), S::Error> {
        if is_zero(data) {
            self.zero(block, offset, out)
        } else {
            self.page(block, offset, data, out)
        }
    }

    /// Writes `rec` exactly as it was read: a record that used CONTINUE is written with
    /// CONTINUE and without its block name, one that named its block names it again, and a
    /// block list keeps its bytes. A parsed body therefore writes back byte for byte even where
    /// the writer did not make QEMU's CONTINUE choice.
    pub fn record<S: Sink>(&mut self, rec: &RamRecord<'n>, out: &mut S) -> Result<(), S::Error> {
        let (block, offset, fl, continued) = match *rec {
            RamRecord::MemSize(list) => {
                out.write(&(list.total | flags::MEM_SIZE as u64).to_be_bytes())?;
                return out.write(list.raw);
            }
            RamRecord::Eos => return self.eos(out),
            RamRecord::MultifdFlush => return self.multifd_flush(out),
            RamRecord::Zero {
                block,
                offset,
                continued,
                ..
            } => (block, offset, flags::ZERO, continued),
            RamRecord::Page {
                block,
                offset,
                data,
                continued,
            } => {
                if data.len() != PAGE_SIZE {
                    return Err(Error::new(
                        out.position(),
                        ErrorKind::Invalid {
                            expected: crate::Expected::Equal(PAGE_SIZE as u64),
                            found: data.len() as u64,
                        },
                    )
                    .into());
                }
                (block, offset, flags::PAGE, continued)
            }
            RamRecord::Xbzrle {
                block,
                offset,
                delta,
                continued,
            } => {
                if delta.len() > PAGE_SIZE {
                    return Err(Error::new(
                        out.position(),
                        ErrorKind::LengthTooLarge {
                            found: delta.len() as u64,
                            max: PAGE_SIZE as u64,
                        },
                    )
                    .into());
                }
                (block, offset, flags::XBZRLE, continued)
            }
        };
        if offset & FLAG_MASK != 0 {
            return Err(Error::new(
                out.position(),
                ErrorKind::RamOffsetOutOfBlock { offset, length: 0 },
            )
            .into());
        }
        let cont = if continued { flags::CONTINUE } else { 0 };
        out.write(&(offset | (fl | cont) as u64).to_be_bytes())?;
        if !continued {
            crate::wire::emit_name(out, block)?;
        }
        self.last = Some(block);
        match *rec {
            RamRecord::Zero { fill, .. } => out.write(&[fill]),
            RamRecord::Page { data, .. } => out.write(data),
            RamRecord::Xbzrle { delta, .. } => {
                out.write(&[ENCODING_FLAG_XBZRLE])?;
                out.write(&(delta.len() as u16).to_be_bytes())?;
                out.write(delta)
            }
            _ => Ok(()),
        }
    }

    /// Writes a bare MULTIFD_FLUSH record.
    pub fn multifd_flush<S: Sink>(&mut self, out: &mut S) -> Result<(), S::Error> {
        out.write(&(flags::MULTIFD_FLUSH as u64).to_be_bytes())
    }

    /// Writes EOS.
    pub fn eos<S: Sink>(&mut self, out: &mut S) -> Result<(), S::Error> {
        out.write(&(flags::EOS as u64).to_be_bytes())
    }
}

/// Whether a page is all zeros (word-at-a-time).
pub fn is_zero(page: &[u8]) -> bool {
    let (chunks, rest) = page.as_chunks::<16>();
    chunks.iter().all(|c| u128::from_ne_bytes(*c) == 0) && rest.iter().all(|&b| b == 0)
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    use super::*;
    use crate::sink::SliceSink;

    fn blocks() -> [BlockEntry<'static>; 2] {
        [
            BlockEntry {
                name: b"pc.ram",
                length: 0x2000,
                addr: None,
            },
            BlockEntry {
                name: b"pc.rom",
                length: 0x1000,
                addr: None,
            },
        ]
    }

    /// Fuzz regression (`fuzz/corpus/ram/crash-continue-after-new-block-list`): a CONTINUE
    /// record after a second block list reached the block named before it, with the bounds of
    /// the old list: here a page at 0x1000 of a `pc.ram` that the new list makes 0x1000 long.
    /// The writer names the block again after a new list.
    #[test]
    fn continue_does_not_cross_a_new_block_list() {
        let small = [BlockEntry {
            name: b"pc.ram",
            length: 0x1000,
            addr: None,
        }];
        let mut buf = [0u8; 256];
        let mut s = SliceSink::new(&mut buf);
        let mut w = RamWriter::new();
        w.block_list(&blocks(), &mut s).unwrap();
        w.zero(b"pc.ram", 0x1000, &mut s).unwrap();
        w.block_list(&small, &mut s).unwrap();
        let hostile = s.position();
        // Hand-made: ZERO | CONTINUE at 0x1000 (inside the old pc.ram, past the new one).
        s.write(&(0x1000 | (flags::ZERO | flags::CONTINUE) as u64).to_be_bytes())
            .unwrap();
        s.write(&[0]).unwrap();
        let n = s.finish();

        let mut ctx = RamContext::new(RamOptions::default());
        let mut r = Reader::new(&buf[..n], 0);
        for _ in 0..3 {
            ctx.read_record(&mut r).unwrap();
        }
        let e = ctx.read_record(&mut r).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (hostile, ErrorKind::RamContinueWithoutBlock)
        );

        // The writer names the block again after a new list.
        let mut s = SliceSink::new(&mut buf);
        w.block_list(&small, &mut s).unwrap();
        let at = s.position();
        w.zero(b"pc.ram", 0, &mut s).unwrap();
        assert_eq!(
            buf[at + 7],
            flags::ZERO as u8,
            "no CONTINUE after a new list"
        );
    }

    #[test]
    fn golden_records_and_continue() {
        let mut buf = [0xa5u8; 9000];
        let mut s = SliceSink::new(&mut buf);
        let mut w = RamWriter::new();
        w.block_list(&blocks(), &mut s).unwrap();
        w.eos(&mut s).unwrap();
        w.zero(b"pc.ram", 0, &mut s).unwrap();
        w.zero(b"pc.ram", 0x1000, &mut s).unwrap();
        w.page(b"pc.rom", 0, &[7; PAGE_SIZE], &mut s).unwrap();
        w.eos(&mut s).unwrap();
        let n = s.finish();
        let b = &buf[..n];
        // MEM_SIZE total 0x3000|4, first ZERO names the block, the second CONTINUEs.
        assert_eq!(&b[..8], &[0, 0, 0, 0, 0, 0, 0x30, 0x04]);
        let z = 8 + (1 + 6 + 8) * 2 + 8;
        assert_eq!(&b[z..z + 16], b"\0\0\0\0\0\0\0\x02\x06pc.ram\x00");
        assert_eq!(&b[z + 16..z + 25], &[0, 0, 0, 0, 0, 0, 0x10, 0x22, 0]);

        let mut ctx = RamContext::new(RamOptions::default());
        let mut r = Reader::new(b, 0);
        assert_eq!(ctx.measure_body(&mut r).unwrap(), z);
        let mut seen = 0;
        loop {
            match ctx.read_record(&mut r).unwrap() {
                RamRecord::Eos => break,
                RamRecord::Zero { continued, .. } => seen += 1 + continued as usize * 10,
                RamRecord::Page { data, block, .. } => {
                    assert_eq!((data[0], block), (7, &b"pc.rom"[..]));
                    seen += 100
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, 112);
        assert_eq!(r.remaining(), 0);
        // Every prefix is cleanly truncated.
        for k in 0..n {
            let mut ctx = RamContext::new(RamOptions::default());
            let mut r = Reader::new(&b[..k], 0);
            let res = ctx
                .measure_body(&mut r)
                .and_then(|_| ctx.measure_body(&mut r));
            assert!(res.unwrap_err().is_incomplete(), "{k}");
        }
    }

    #[test]
    fn hostile_records_are_refused() {
        let mut ctx = RamContext::new(RamOptions::default());
        let list: &[u8] = b"\0\0\0\0\0\0\x10\x04\x06pc.ram\0\0\0\0\0\0\x10\x00\0\0\0\0\0\0\0\x10";
        ctx.measure_body(&mut Reader::new(list, 0)).unwrap();
        type Case<'a> = (&'a [u8], fn(&ErrorKind) -> bool);
        let cases: &[Case] = &[
            (b"\0\0\0\0\0\0\0\x22\x00", |k| {
                matches!(
                    k,
                    ErrorKind::RamOffsetOutOfBlock { .. } | ErrorKind::RamContinueWithoutBlock
                )
            }),
            (b"\0\0\0\0\0\0\x10\x02\x06pc.ram\x00", |k| {
                matches!(
                    k,
                    ErrorKind::RamOffsetOutOfBlock {
                        offset: 0x1000,
                        length: 0x1000
                    }
                )
            }),
            (b"\0\0\0\0\0\0\0\x02\x06pc.rox\x00", |k| {
                matches!(k, ErrorKind::RamUnknownBlock { .. })
            }),
            (
                b"\0\0\0\0\0\0\0\x02\x06pc.ram\x41",
                |k| matches!(k, ErrorKind::RamNonZeroFill { fill: 0x41, block } if block.eq_bytes(b"pc.ram")),
            ),
            (b"\0\0\0\0\0\0\0\x11", |k| {
                matches!(k, ErrorKind::RamFlags { flags: 0x11 })
            }),
            (b"\0\0\0\0\0\0\x01\x00", |k| {
                matches!(k, ErrorKind::RamFlags { flags: 0x100 })
            }),
        ];
        for (bytes, ok) in cases {
            let mut c = RamContext::new(RamOptions::default());
            c.blocks = ctx.blocks;
            let e = c.read_record(&mut Reader::new(bytes, 0)).unwrap_err();
            assert!(ok(&e.kind), "{:?}", e);
        }
        // Block lengths that overshoot the MEM_SIZE total.
        let bad = b"\0\0\0\0\0\0\x10\x04\x06pc.ram\0\0\0\0\0\0\x20\x00";
        assert!(matches!(
            RamContext::new(RamOptions::default())
                .read_record(&mut Reader::new(bad, 0))
                .unwrap_err()
                .kind,
            ErrorKind::RamTotalMismatch {
                declared: 0x1000,
                ..
            }
        ));
    }

    #[test]
    fn records_write_back_as_read() {
        // A block named again where QEMU would have used CONTINUE survives a read/write cycle,
        // and so do a CONTINUE XBZRLE record and the block list.
        let mut buf = [0xa5u8; 9000];
        let mut s = SliceSink::new(&mut buf);
        let mut w = RamWriter::new();
        w.block_list(&blocks(), &mut s).unwrap();
        w.eos(&mut s).unwrap();
        let n = s.finish();
        let mut b = buf[..n].to_vec();
        b.extend_from_slice(b"\0\0\0\0\0\0\0\x02\x06pc.ram\x00");
        b.extend_from_slice(b"\0\0\0\0\0\0\x10\x02\x06pc.ram\x00");
        b.extend_from_slice(b"\0\0\0\0\0\0\0\x60\x01\x00\x02\x01\x07");
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x10]);
        let mut ctx = RamContext::new(RamOptions::default());
        let mut r = Reader::new(&b, 0);
        let mut out = [0xa5u8; 9000];
        let mut s = SliceSink::new(&mut out);
        let mut w = RamWriter::new();
        for _ in 0..2 {
            loop {
                let rec = ctx.read_record(&mut r).unwrap();
                w.record(&rec, &mut s).unwrap();
                if rec == RamRecord::Eos {
                    break;
                }
            }
        }
        assert_eq!(r.remaining(), 0);
        assert_eq!(s.written(), &b[..]);
    }

    /// Blocks whose length is not a whole number of pages, or less than one: the fast loop
    /// skips exactly the pages that lie wholly inside, and a non-zero fill only when allowed.
    #[test]
    fn continued_runs_stop_where_read_record_refuses() {
        let list: &[u8] =
            b"\0\0\0\0\0\0\x30\x04\x05short\0\0\0\0\0\0\x08\x00\x04long\0\0\0\0\0\0\x28\x00";
        let zero = |addr: u64, fill: u8| {
            let mut rec = (addr | (flags::ZERO | flags::CONTINUE) as u64)
                .to_be_bytes()
                .to_vec();
            rec.push(fill);
            rec
        };
        for allow in [false, true] {
            let mut ctx = RamContext::new(RamOptions {
                allow_nonzero_fill: allow,
                ..RamOptions::default()
            });
            ctx.read_record(&mut Reader::new(list, 0)).unwrap();
            // `short` (0x800) holds no whole page: nothing continues it.
            ctx.set_last_block(Some((b"short", 0x800)));
            assert_eq!(ctx.continued_run_len(&zero(0, 0)), 0);
            // `long` (0x2800) holds the pages at 0 and 0x1000 only.
            ctx.set_last_block(Some((b"long", 0x2800)));
            let mut body = [zero(0, 0), zero(0x1000, 7), zero(0x2000, 0)].concat();
            let n = ctx.continued_run_len(&body);
            assert_eq!(n, if allow { 18 } else { 9 });
            let mut c = ctx;
            let e = c.read_record(&mut Reader::new(&body[n..], n)).unwrap_err();
            let want = if allow {
                ErrorKind::RamOffsetOutOfBlock {
                    offset: 0x2000,
                    length: 0x2800,
                }
            } else {
                ErrorKind::RamNonZeroFill {
                    block: Name::new(b"long"),
                    fill: 7,
                }
            };
            assert_eq!(e.kind, want);
            // Without a last block, nothing is skipped.
            ctx.set_last_block(None);
            assert_eq!(ctx.continued_run_len(&body), 0);
            // A cut page record is left to `read_record`, which says "need more".
            ctx.set_last_block(Some((b"long", 0x2800)));
            body = (((flags::PAGE | flags::CONTINUE) as u64).to_be_bytes()).to_vec();
            body.resize(8 + PAGE_SIZE - 1, 0);
            assert_eq!(ctx.continued_run_len(&body), 0);
            body.push(0);
            assert_eq!(ctx.continued_run_len(&body), 8 + PAGE_SIZE);
        }
    }

    #[test]
    fn xbzrle() {
        let mut page = [1u8; 16];
        xbzrle_apply(&[2, 3, 9, 9, 9, 1, 1, 5], &mut page).unwrap();
        assert_eq!(&page[..7], &[1, 1, 9, 9, 9, 1, 5]);
        assert!(xbzrle_apply(&[15, 3, 9, 9, 9], &mut page).is_err());
        assert!(xbzrle_apply(&[0x80, 0x80, 0x80, 0x80], &mut page).is_err());
    }
}
