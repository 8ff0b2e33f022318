//! Guest RAM out of a stream, for forensics and debugging: a page index built in one pass over
//! the RAM records ([`PageIndex`]), reads of any byte range of a RAM block from it, and the PC
//! machines' guest-physical layout ([`PcLayout`]).
//!
//! # The index
//!
//! One `u64` slot per page of every block in the stream's block list (the caller's buffer, of
//! [`slots_needed`] entries: **8 bytes per page**, 2 MiB per GiB of guest RAM), saying where the
//! page's last version is:
//!
//! * `0`: the stream never sent the page (with `x-ignore-shared` a block's pages are not in the
//!   stream; a complete precopy stream sends every other page at least once);
//! * `0b01 << 62 | fill`: a ZERO record (the page is `fill` repeated);
//! * `0b00 << 62 | offset`, `offset > 0`: a PAGE record, the page's 4096 bytes at `offset` of the
//!   stream;
//! * `0b10 << 62 | link`: an XBZRLE record, a delta against the page's previous version. The
//!   delta's place and that previous slot are a [`Link`], kept by the caller's [`Links`] (16
//!   bytes per XBZRLE record of the stream; none for streams written without the `xbzrle`
//!   capability, which is every `migrate file:`/`exec:` save and every `virsh save`).
//!
//! A later record of a page replaces the slot, as the destination's loader overwrites the page,
//! so after the walk each slot is the page's final content. Reading a page is O(1): one slot, one
//! copy (an XBZRLE page replays its chain of deltas onto the version they apply to).
//!
//! Nothing allocates: the slots and links are the caller's, the block table is
//! [`MAX_BLOCKS`] entries inside the index.

use crate::ram::{BlockList, PAGE_SIZE, RamRecord, xbzrle_apply};
use core::fmt;

/// The most RAM blocks an index takes (QEMU x86 machines have 5–30: RAM, firmware, option
/// ROMs, ACPI tables, video memory).
pub const MAX_BLOCKS: usize = 128;

/// What one page slot costs: the index takes this many bytes per page of guest RAM.
pub const SLOT_BYTES: usize = core::mem::size_of::<u64>();

const TAG_SHIFT: u32 = 62;
const TAG_MASK: u64 = 0b11 << TAG_SHIFT;
const TAG_FILL: u64 = 0b01 << TAG_SHIFT;
const TAG_XBZRLE: u64 = 0b10 << TAG_SHIFT;
const PAGE: u64 = PAGE_SIZE as u64;

/// How many slots a [`PageIndex`] over `blocks` needs: one per page of every block (a block
/// whose length is not a multiple of the page size gets a slot for its last, partial page),
/// none for a block of a mapped-ram file, whose pages are read directly at their file offsets
/// (its bitmap says which are there). `None` if the count overflows `usize` (a block list no
/// machine has).
pub fn slots_needed(blocks: &BlockList<'_>) -> Option<usize> {
    let mut total = 0u64;
    for (b, layout) in blocks.entries() {
        if layout.is_none() {
            total = total.checked_add(b.length.div_ceil(PAGE))?;
        }
    }
    usize::try_from(total).ok()
}

/// Where one page's last version is in the stream (a decoded slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSource {
    /// The stream never sent the page.
    NotSent,
    /// A ZERO record: the page is this byte repeated.
    Fill(u8),
    /// A PAGE record: the 4096 bytes at this stream offset.
    Data(u64),
    /// An XBZRLE record: a delta against the page's previous version.
    Xbzrle(Link),
}

/// An XBZRLE record in the index: where its delta is and the slot it replaced (the version the
/// delta applies to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    /// Stream offset of the encoded delta.
    pub delta: u64,
    /// Its length in bytes (at most one page).
    pub len: u16,
    /// The page's slot before this record.
    pub previous: u64,
}

/// Storage for the index's [`Link`]s, one per XBZRLE record: [`SliceLinks`] over a caller's
/// buffer, or a growable store in a host program.
pub trait Links {
    /// Stores `link` and returns its number, or `None` when full.
    fn push(&mut self, link: Link) -> Option<u64>;
    /// The link numbered `n`.
    fn get(&self, n: u64) -> Option<Link>;
}

/// [`Links`] over a caller's buffer (an empty one for streams without XBZRLE records).
#[derive(Debug, Default)]
pub struct SliceLinks<'s> {
    links: &'s mut [Link],
    used: usize,
}

impl<'s> SliceLinks<'s> {
    /// Links stored in `links`.
    pub fn new(links: &'s mut [Link]) -> Self {
        SliceLinks { links, used: 0 }
    }
}

impl Links for SliceLinks<'_> {
    fn push(&mut self, link: Link) -> Option<u64> {
        let n = self.used;
        *self.links.get_mut(n)? = link;
        self.used = n.checked_add(1)?;
        u64::try_from(n).ok()
    }

    fn get(&self, n: u64) -> Option<Link> {
        let n = usize::try_from(n).ok()?;
        self.links.get(..self.used)?.get(n).copied()
    }
}

/// Why the index could not be built or read. Blocks are named by their number in the stream's
/// block list ([`PageIndex::block_name`] gives the name), offsets are bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    /// The slot buffer is shorter than [`slots_needed`].
    SlotsTooFew {
        /// Slots the block list needs.
        needed: u64,
        /// Slots given.
        have: usize,
    },
    /// The block list has more than [`MAX_BLOCKS`] blocks.
    TooManyBlocks {
        /// Blocks in the list.
        found: usize,
    },
    /// A record names a block the list does not have (the RAM parser refuses those first).
    UnknownBlock,
    /// A record's page or a read lies beyond its block's length.
    OutOfBlock {
        /// Block number.
        block: usize,
        /// The offset in the block.
        offset: u64,
        /// The block's length.
        length: u64,
    },
    /// A record's bytes are not inside the stream the index was made over.
    NotInStream,
    /// The [`Links`] store is full.
    LinksFull {
        /// Links stored when it refused one more.
        stored: u64,
    },
    /// A read touched a page the stream never sent.
    NotSent {
        /// Block number.
        block: usize,
        /// Offset of the page in the block.
        page: u64,
    },
    /// A slot names a link the store does not have, or an XBZRLE chain longer than the stream's
    /// records (an index not built by [`PageIndex::add`]).
    BadLink,
    /// An XBZRLE delta does not apply (it runs past the page or ends inside a run).
    BadDelta {
        /// Stream offset of the delta.
        delta: u64,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemoryError::SlotsTooFew { needed, have } => {
                write!(
                    f,
                    "page index too small: {needed} slots needed, {have} given"
                )
            }
            MemoryError::TooManyBlocks { found } => {
                write!(
                    f,
                    "{found} RAM blocks: the index takes at most {MAX_BLOCKS}"
                )
            }
            MemoryError::UnknownBlock => f.write_str("a RAM record names a block not in the list"),
            MemoryError::OutOfBlock {
                block,
                offset,
                length,
            } => write!(
                f,
                "offset {offset:#x} is outside block {block} ({length:#x} bytes)"
            ),
            MemoryError::NotInStream => f.write_str("a record's bytes are not in the stream"),
            MemoryError::LinksFull { stored } => {
                write!(f, "XBZRLE link store full after {stored} links")
            }
            MemoryError::NotSent { block, page } => {
                write!(f, "page {page:#x} of block {block} is not in the stream")
            }
            MemoryError::BadLink => f.write_str("the index names an XBZRLE link it does not have"),
            MemoryError::BadDelta { delta } => {
                write!(
                    f,
                    "the XBZRLE delta at byte {delta} does not apply to its page"
                )
            }
        }
    }
}

/// A page index over one stream (see the module docs): built by [`PageIndex::add`] from the
/// stream's RAM records in order, read by [`PageIndex::read`].
#[derive(Debug)]
pub struct PageIndex<'a, S, L> {
    stream: &'a [u8],
    blocks: BlockList<'a>,
    /// Each block's first slot, then the total (`count + 1` entries used).
    starts: [u64; MAX_BLOCKS + 1],
    /// The slots: `&mut [u64]` or any storage of them (a `Vec<u64>` in a host program).
    slots: S,
    links: L,
    /// The block of the last record and its name, for the records that follow it (CONTINUE
    /// records repeat it), so a run of one block's pages looks its block up once.
    last: usize,
    last_name: &'a [u8],
}

impl<'a, S: AsRef<[u64]> + AsMut<[u64]>, L: Links> PageIndex<'a, S, L> {
    /// An index of `stream`'s pages for the blocks of `blocks` (its START record's list), every
    /// slot "not sent". `slots` needs [`slots_needed`] entries (a `&mut [u64]`, or storage that
    /// lends one).
    pub fn new(
        stream: &'a [u8],
        blocks: BlockList<'a>,
        mut slots: S,
        links: L,
    ) -> Result<Self, MemoryError> {
        if blocks.count > MAX_BLOCKS {
            return Err(MemoryError::TooManyBlocks {
                found: blocks.count,
            });
        }
        let mut starts = [0u64; MAX_BLOCKS + 1];
        let mut total = 0u64;
        for (i, (b, layout)) in blocks.entries().enumerate() {
            let pages = if layout.is_some() {
                0
            } else {
                b.length.div_ceil(PAGE)
            };
            total = total
                .checked_add(pages)
                .ok_or(MemoryError::TooManyBlocks { found: i })?;
            if let Some(s) = starts.get_mut(i.saturating_add(1)) {
                *s = total;
            }
        }
        let have = slots.as_ref().len();
        usize::try_from(total)
            .ok()
            .and_then(|n| slots.as_mut().get_mut(..n))
            .ok_or(MemoryError::SlotsTooFew {
                needed: total,
                have,
            })?
            .fill(0);
        Ok(PageIndex {
            stream,
            blocks,
            starts,
            slots,
            links,
            last: 0,
            last_name: blocks.iter().next().map_or(&[], |b| b.name),
        })
    }

    /// The stream the index is over (page offsets are into it).
    pub fn stream(&self) -> &'a [u8] {
        self.stream
    }

    /// The block list the index covers.
    pub fn blocks(&self) -> BlockList<'a> {
        self.blocks
    }

    /// The number of the block called `name`.
    pub fn block(&self, name: &[u8]) -> Option<usize> {
        self.blocks.iter().position(|b| b.name == name)
    }

    /// The name and length of block `n`.
    pub fn block_entry(&self, n: usize) -> Option<(&'a [u8], u64)> {
        self.blocks.iter().nth(n).map(|b| (b.name, b.length))
    }

    /// The name of block `n` (empty if there is none).
    pub fn block_name(&self, n: usize) -> &'a [u8] {
        self.block_entry(n).map_or(&[], |(name, _)| name)
    }

    /// The links the XBZRLE records took.
    pub fn links(&self) -> &L {
        &self.links
    }

    /// Records one RAM record of the stream, read in stream order: a ZERO, PAGE or XBZRLE
    /// record sets its page's slot; the others change nothing.
    pub fn add(&mut self, rec: &RamRecord<'a>) -> Result<(), MemoryError> {
        match *rec {
            RamRecord::Zero {
                block,
                offset,
                fill,
                ..
            } => {
                let slot = self.slot_of(block, offset)?;
                *slot = TAG_FILL | u64::from(fill);
            }
            RamRecord::Page {
                block,
                offset,
                data,
                ..
            } => {
                let at = self.offset_of(data)?;
                *self.slot_of(block, offset)? = at;
            }
            RamRecord::Xbzrle {
                block,
                offset,
                delta,
                ..
            } => {
                let at = self.offset_of(delta)?;
                let len =
                    u16::try_from(delta.len()).map_err(|_| MemoryError::BadDelta { delta: at })?;
                let previous = *self.slot_of(block, offset)?;
                let link = Link {
                    delta: at,
                    len,
                    previous,
                };
                let n = self.links.push(link).ok_or(MemoryError::LinksFull {
                    stored: self.links_stored(),
                })?;
                *self.slot_of(block, offset)? = TAG_XBZRLE | (n & !TAG_MASK);
            }
            RamRecord::MemSize(_) | RamRecord::MultifdFlush | RamRecord::Eos => {}
        }
        Ok(())
    }

    /// Where page `page` (a page number) of block `block` is.
    ///
    /// A page of a mapped-ram file's block is found directly: at its file offset when its
    /// bitmap bit is set, else a zero page (QEMU never writes one).
    pub fn source(&self, block: usize, page: u64) -> Result<PageSource, MemoryError> {
        if let Some((length, layout)) = self.mapped(block) {
            if page >= layout.pages() {
                return Err(MemoryError::OutOfBlock {
                    block,
                    offset: page.saturating_mul(PAGE),
                    length,
                });
            }
            return match self.blocks.mapped_page(&layout, page) {
                Some(bytes) => Ok(PageSource::Data(self.offset_of(bytes)?)),
                None => Ok(PageSource::Fill(0)),
            };
        }
        let slot = *self.slot(block, page)?;
        self.decode(slot)
    }

    /// The page's 4096 bytes (`buf`), XBZRLE deltas applied.
    pub fn page(
        &self,
        block: usize,
        page: u64,
        buf: &mut [u8; PAGE_SIZE],
    ) -> Result<(), MemoryError> {
        let slot = match self.source(block, page)? {
            // A mapped-ram page is one of these, never a slot.
            PageSource::Data(o) if self.mapped(block).is_some() => o,
            PageSource::Fill(b) if self.mapped(block).is_some() => TAG_FILL | u64::from(b),
            _ => *self.slot(block, page)?,
        };
        self.materialise(slot, buf).map_err(|e| match e {
            MemoryError::NotSent { .. } => MemoryError::NotSent {
                block,
                page: page.saturating_mul(PAGE),
            },
            e => e,
        })
    }

    /// Fills `out` with the bytes of block `block` from `offset` on. Every page touched must
    /// have been sent ([`MemoryError::NotSent`] names the first one that was not); nothing is
    /// read past the block's length.
    pub fn read(&self, block: usize, offset: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let (_, length) = self.block_entry(block).ok_or(MemoryError::UnknownBlock)?;
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&e| e <= length)
            .ok_or(MemoryError::OutOfBlock {
                block,
                offset: offset.saturating_add(out.len() as u64),
                length,
            })?;
        let mut at = offset;
        let mut rest = out;
        let mut page_buf = [0u8; PAGE_SIZE];
        while at < end {
            let page = at / PAGE;
            let within = usize::try_from(at % PAGE).unwrap_or(0);
            let n = rest.len().min(PAGE_SIZE.saturating_sub(within));
            let (chunk, tail) = rest.split_at_mut(n);
            match self.source(block, page)? {
                PageSource::Fill(b) => chunk.fill(b),
                PageSource::Data(o) => {
                    let from = usize::try_from(o)
                        .unwrap_or(usize::MAX)
                        .saturating_add(within);
                    let bytes = self
                        .stream
                        .get(from..from.saturating_add(n))
                        .ok_or(MemoryError::NotInStream)?;
                    chunk.copy_from_slice(bytes);
                }
                PageSource::NotSent | PageSource::Xbzrle(_) => {
                    self.page(block, page, &mut page_buf)?;
                    let bytes = page_buf
                        .get(within..within.saturating_add(n))
                        .ok_or(MemoryError::BadLink)?;
                    chunk.copy_from_slice(bytes);
                }
            }
            at = at.saturating_add(n as u64);
            rest = tail;
        }
        Ok(())
    }

    /// Block `block`'s length and mapped-ram layout, if it is a mapped-ram file's block.
    /// (A stream's blocks are all mapped or none: the list answers for the common case
    /// without walking its entries.)
    fn mapped(&self, block: usize) -> Option<(u64, crate::mapped_ram::BlockLayout)> {
        if !self.blocks.is_mapped_ram() {
            return None;
        }
        let (entry, layout) = self.blocks.entries().nth(block)?;
        Some((entry.length, layout?))
    }

    fn links_stored(&self) -> u64 {
        let mut n = 0u64;
        while self.links.get(n).is_some() {
            n = n.saturating_add(1);
        }
        n
    }

    fn decode(&self, slot: u64) -> Result<PageSource, MemoryError> {
        Ok(match slot & TAG_MASK {
            TAG_FILL => PageSource::Fill((slot & 0xff) as u8),
            TAG_XBZRLE => PageSource::Xbzrle(
                self.links
                    .get(slot & !TAG_MASK)
                    .ok_or(MemoryError::BadLink)?,
            ),
            _ if slot == 0 => PageSource::NotSent,
            0 => PageSource::Data(slot),
            _ => return Err(MemoryError::BadLink),
        })
    }

    /// The page a slot stands for, into `buf`. An XBZRLE chain is replayed oldest delta first:
    /// its depth is found by walking it, then each delta is found again from the newest (the
    /// chains are short: one link per XBZRLE record of that page).
    fn materialise(&self, slot: u64, buf: &mut [u8; PAGE_SIZE]) -> Result<(), MemoryError> {
        let mut depth = 0usize;
        let mut base = slot;
        while let PageSource::Xbzrle(link) = self.decode(base)? {
            base = link.previous;
            depth = depth.checked_add(1).ok_or(MemoryError::BadLink)?;
            if depth > self.slots.as_ref().len().saturating_add(self.stream.len()) {
                return Err(MemoryError::BadLink);
            }
        }
        match self.decode(base)? {
            PageSource::NotSent => return Err(MemoryError::NotSent { block: 0, page: 0 }),
            PageSource::Fill(b) => buf.fill(b),
            PageSource::Data(o) => {
                let from = usize::try_from(o).unwrap_or(usize::MAX);
                let bytes = self
                    .stream
                    .get(from..from.saturating_add(PAGE_SIZE))
                    .ok_or(MemoryError::NotInStream)?;
                buf.copy_from_slice(bytes);
            }
            PageSource::Xbzrle(_) => return Err(MemoryError::BadLink),
        }
        // Apply the deltas from the oldest (depth - 1 links from the newest) to the newest.
        for k in (0..depth).rev() {
            let mut s = slot;
            for _ in 0..k {
                s = match self.decode(s)? {
                    PageSource::Xbzrle(l) => l.previous,
                    _ => return Err(MemoryError::BadLink),
                };
            }
            let PageSource::Xbzrle(link) = self.decode(s)? else {
                return Err(MemoryError::BadLink);
            };
            let from = usize::try_from(link.delta).unwrap_or(usize::MAX);
            let delta = self
                .stream
                .get(from..from.saturating_add(usize::from(link.len)))
                .ok_or(MemoryError::NotInStream)?;
            xbzrle_apply(delta, buf).map_err(|_| MemoryError::BadDelta { delta: link.delta })?;
        }
        Ok(())
    }

    fn slot(&self, block: usize, page: u64) -> Result<&u64, MemoryError> {
        let i = self.slot_number(block, page)?;
        self.slots.as_ref().get(i).ok_or(MemoryError::UnknownBlock)
    }

    fn slot_number(&self, block: usize, page: u64) -> Result<usize, MemoryError> {
        let first = *self.starts.get(block).ok_or(MemoryError::UnknownBlock)?;
        let end = *self
            .starts
            .get(block.saturating_add(1))
            .filter(|_| block < self.blocks.count)
            .ok_or(MemoryError::UnknownBlock)?;
        let i = first
            .checked_add(page)
            .filter(|&i| i < end)
            .ok_or_else(|| MemoryError::OutOfBlock {
                block,
                offset: page.saturating_mul(PAGE),
                length: self.block_entry(block).map_or(0, |(_, l)| l),
            })?;
        usize::try_from(i).map_err(|_| MemoryError::UnknownBlock)
    }

    /// The slot of the page at byte `offset` of the block called `name`.
    fn slot_of(&mut self, name: &'a [u8], offset: u64) -> Result<&mut u64, MemoryError> {
        if self.last_name != name {
            self.last = self.block(name).ok_or(MemoryError::UnknownBlock)?;
            self.last_name = name;
        }
        let i = self.slot_number(self.last, offset / PAGE)?;
        self.slots
            .as_mut()
            .get_mut(i)
            .ok_or(MemoryError::UnknownBlock)
    }

    /// Where `part` (a slice of the stream) starts in the stream.
    fn offset_of(&self, part: &[u8]) -> Result<u64, MemoryError> {
        let base = self.stream.as_ptr() as usize;
        let at = (part.as_ptr() as usize)
            .checked_sub(base)
            .filter(|&o| {
                o > 0
                    && o.checked_add(part.len())
                        .is_some_and(|e| e <= self.stream.len())
            })
            .ok_or(MemoryError::NotInStream)?;
        u64::try_from(at)
            .ok()
            .filter(|&o| o & TAG_MASK == 0)
            .ok_or(MemoryError::NotInStream)
    }
}

/// Where a PC machine (QEMU's `pc-i440fx-*`, `pc-q35-*`, `isapc`) puts its main RAM block
/// (`pc.ram`, or the `memory-backend` given to `-machine`) in guest-physical memory: the first
/// `below_4g` bytes at address 0, the rest at 4 GiB. The split is the machine's own rule
/// (QEMU's `pc_init1`/`pc_q35_init`, the same in 7.2 and 10.0):
///
/// * i440fx and isapc: everything below 4 GiB up to `max-ram-below-4g` (default 3.5 GiB);
///   from that size on, machine types newer than 1.7 split at 3 GiB instead
///   ("gigabyte alignment"), older ones and isapc at `max-ram-below-4g`.
/// * q35: everything below 4 GiB up to 2.75 GiB; from that size on, split at 2 GiB; a smaller
///   `max-ram-below-4g` lowers either.
///
/// `max-ram-below-4g` is a machine property the stream does not carry: give it when the guest
/// was started with one ([`PcLayout::new`]). Guests whose RAM above 4 GiB would reach AMD's
/// HyperTransport hole below 1 TiB are relocated above 1 TiB by QEMU on AMD hosts only; the
/// stream cannot tell, so such sizes are refused ([`LayoutError::NearOneTerabyte`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcLayout {
    /// Bytes of the RAM block mapped at guest-physical 0.
    pub below_4g: u64,
    /// Bytes mapped at guest-physical 4 GiB (the rest of the block).
    pub above_4g: u64,
}

/// The PC machine families [`PcLayout`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcMachine {
    /// `pc-i440fx-X.Y` (and `pc`): `gigabyte_align` is true for machine types newer than 1.7.
    I440fx {
        /// Whether a split is moved down to 3 GiB.
        gigabyte_align: bool,
    },
    /// `pc-q35-X.Y` (and `q35`).
    Q35,
    /// `isapc`.
    Isapc,
}

/// Why a [`PcLayout`] cannot be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutError {
    /// The machine type is not a PC machine this module knows.
    UnknownMachine,
    /// RAM above 4 GiB would reach the HyperTransport hole at 1012 GiB (see [`PcLayout`]).
    NearOneTerabyte,
    /// `max-ram-below-4g` above 4 GiB (QEMU refuses it).
    BadMaxBelow4g,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::UnknownMachine => {
                "not a PC machine type (pc-i440fx-*, pc-q35-*, isapc): its guest-physical \
                 layout is unknown"
            }
            LayoutError::NearOneTerabyte => {
                "RAM above 4 GiB reaches the 1 TiB HyperTransport hole: QEMU relocates it on AMD \
                 hosts only, which the stream does not tell"
            }
            LayoutError::BadMaxBelow4g => "max-ram-below-4g is above 4 GiB",
        })
    }
}

/// Start of the HyperTransport range below 1 TiB (QEMU's `AMD_HT_START`).
const AMD_HT_START: u64 = 0xfd_0000_0000;
const GIB: u64 = 1 << 30;
/// Where the RAM above 4 GiB starts.
pub const ABOVE_4G_START: u64 = 4 * GIB;

impl PcMachine {
    /// The family of a machine type name as the CONFIGURATION record carries it
    /// (`pc-i440fx-7.2`, `pc-q35-10.0`, `isapc`; the aliases `pc` and `q35` too).
    pub fn from_name(name: &[u8]) -> Option<PcMachine> {
        if name == b"isapc" {
            return Some(PcMachine::Isapc);
        }
        if name == b"q35" || name.starts_with(b"pc-q35-") {
            return Some(PcMachine::Q35);
        }
        if name == b"pc" {
            return Some(PcMachine::I440fx {
                gigabyte_align: true,
            });
        }
        let version = name
            .strip_prefix(b"pc-i440fx-")
            .or_else(|| name.strip_prefix(b"pc-"))?;
        let (major, minor) = split_version(version)?;
        Some(PcMachine::I440fx {
            gigabyte_align: (major, minor) > (1, 7),
        })
    }
}

/// `X.Y` (a trailing `.Z` ignored) as numbers.
fn split_version(v: &[u8]) -> Option<(u32, u32)> {
    let mut parts = v.split(|&b| b == b'.');
    let num = |p: Option<&[u8]>| -> Option<u32> {
        let p = p?;
        if p.is_empty() || p.len() > 4 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        p.iter().try_fold(0u32, |n, &d| {
            n.checked_mul(10)?
                .checked_add(u32::from(d.wrapping_sub(b'0')))
        })
    };
    Some((num(parts.next())?, num(parts.next())?))
}

impl PcLayout {
    /// The layout of `machine` with a main RAM block of `ram_size` bytes, `max_below_4g` the
    /// guest's `max-ram-below-4g` when it was set (`None`: the machine's default).
    pub fn new(
        machine: PcMachine,
        ram_size: u64,
        max_below_4g: Option<u64>,
    ) -> Result<PcLayout, LayoutError> {
        if max_below_4g.is_some_and(|m| m > ABOVE_4G_START) {
            return Err(LayoutError::BadMaxBelow4g);
        }
        let lowmem = match machine {
            PcMachine::Q35 => {
                let own = if ram_size >= 0xb000_0000 {
                    0x8000_0000
                } else {
                    0xb000_0000
                };
                own.min(max_below_4g.filter(|&m| m != 0).unwrap_or(ABOVE_4G_START))
            }
            PcMachine::I440fx { gigabyte_align } => {
                i440fx_lowmem(ram_size, max_below_4g, gigabyte_align)
            }
            PcMachine::Isapc => i440fx_lowmem(ram_size, max_below_4g, false),
        };
        let layout = if ram_size >= lowmem {
            PcLayout {
                below_4g: lowmem,
                above_4g: ram_size.saturating_sub(lowmem),
            }
        } else {
            PcLayout {
                below_4g: ram_size,
                above_4g: 0,
            }
        };
        if ABOVE_4G_START.saturating_add(layout.above_4g) > AMD_HT_START {
            return Err(LayoutError::NearOneTerabyte);
        }
        Ok(layout)
    }

    /// The guest-physical ranges of the RAM block: `(address, length, offset in the block)`,
    /// below 4 GiB first; an empty range has length 0.
    pub fn ranges(&self) -> [(u64, u64, u64); 2] {
        [
            (0, self.below_4g, 0),
            (ABOVE_4G_START, self.above_4g, self.below_4g),
        ]
    }

    /// The offset in the RAM block of guest-physical `addr` and how many bytes from there are
    /// contiguous in the block, or `None` when no RAM is there (the PCI hole below 4 GiB, or
    /// past the end).
    pub fn locate(&self, addr: u64) -> Option<(u64, u64)> {
        self.ranges().into_iter().find_map(|(start, len, offset)| {
            let within = addr.checked_sub(start).filter(|&w| w < len)?;
            Some((offset.saturating_add(within), len.saturating_sub(within)))
        })
    }

    /// One past the highest guest-physical address with RAM: the size of a flat image.
    pub fn end(&self) -> u64 {
        if self.above_4g > 0 {
            ABOVE_4G_START.saturating_add(self.above_4g)
        } else {
            self.below_4g
        }
    }
}

/// `pc_init1`'s low-memory size: `max-ram-below-4g` (default 3.5 GiB), moved down to 3 GiB
/// when the RAM does not fit below it and the machine aligns to gigabytes.
fn i440fx_lowmem(ram_size: u64, max_below_4g: Option<u64>, gigabyte_align: bool) -> u64 {
    let max = max_below_4g.filter(|&m| m != 0).unwrap_or(0xe000_0000);
    if ram_size >= max && gigabyte_align {
        max.min(0xc000_0000)
    } else {
        max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::{BlockEntry, RamContext, RamOptions, RamWriter};
    use crate::sink::{Sink, SliceSink};
    use crate::wire::Reader;

    const RAM: &[u8] = b"pc.ram";
    const ROM: &[u8] = b"pc.rom";

    /// A RAM record stream (after an 8-byte stand-in for the file header, so no page is at
    /// offset 0): RAM 5 pages (page 4 never sent), ROM 1 page.
    /// Page 0: data `a`; page 1: ZERO fill 0; page 2: data `b`, later data `c` (the later one
    /// wins); page 3: data `d`, then two XBZRLE deltas (bytes 10..12 := 1, 2; then byte 4095
    /// := 9). ROM page 0: ZERO with fill 0xff.
    fn stream(buf: &mut [u8]) -> usize {
        let blocks = [
            BlockEntry {
                name: RAM,
                length: 5 * 4096,
                addr: None,
            },
            BlockEntry {
                name: ROM,
                length: 4096,
                addr: None,
            },
        ];
        let (a, b, c, d) = (
            [0xaau8; 4096],
            [0xbbu8; 4096],
            [0xccu8; 4096],
            [0xddu8; 4096],
        );
        let mut out = SliceSink::new(buf);
        out.write(b"QEVM\0\0\0\x03").unwrap();
        let mut w = RamWriter::default();
        w.block_list(&blocks, &mut out).unwrap();
        w.page(RAM, 0, &a, &mut out).unwrap();
        w.zero(RAM, 0x1000, &mut out).unwrap();
        w.page(RAM, 0x2000, &b, &mut out).unwrap();
        w.page(RAM, 0x3000, &d, &mut out).unwrap();
        let rom = RamRecord::Zero {
            block: ROM,
            offset: 0,
            fill: 0xff,
            continued: false,
        };
        w.record(&rom, &mut out).unwrap();
        w.page(RAM, 0x2000, &c, &mut out).unwrap();
        let deltas: [&[u8]; 2] = [&[10, 2, 1, 2], &[0xff, 0x1f, 1, 9]];
        for delta in deltas {
            let rec = RamRecord::Xbzrle {
                block: RAM,
                offset: 0x3000,
                delta,
                continued: false,
            };
            w.record(&rec, &mut out).unwrap();
        }
        w.eos(&mut out).unwrap();
        out.finish()
    }

    /// Indexes `s` (as a caller does: the records in order).
    fn index<'a, 's>(
        s: &'a [u8],
        slots: &'s mut [u64],
        links: &'s mut [Link],
    ) -> Result<PageIndex<'a, &'s mut [u64], SliceLinks<'s>>, MemoryError> {
        let mut ctx = RamContext::new(RamOptions {
            allow_nonzero_fill: true,
            ..RamOptions::default()
        });
        let mut r = Reader::new(s.get(8..).unwrap(), 8);
        let RamRecord::MemSize(list) = ctx.read_record(&mut r).unwrap() else {
            panic!()
        };
        let mut index = PageIndex::new(s, list, slots, SliceLinks::new(links))?;
        while r.remaining() > 0 {
            let rec = ctx.read_record(&mut r).unwrap();
            index.add(&rec)?;
        }
        Ok(index)
    }

    #[test]
    fn each_page_reads_as_its_last_record_left_it() {
        let mut buf = [0u8; 8 * 4200];
        let n = stream(&mut buf);
        let s = &buf[..n];
        let (mut slots, mut links) = ([7u64; 6], [Link::default(); 2]);
        let ix = index(s, &mut slots[..], &mut links).unwrap();
        assert_eq!(slots_needed(&ix.blocks()), Some(6));
        let mut page = [0u8; PAGE_SIZE];
        let expect = |fill: u8| [fill; PAGE_SIZE];
        for (p, fill) in [(0u64, 0xaa), (1, 0), (2, 0xcc)] {
            ix.page(0, p, &mut page).unwrap();
            assert!(page == expect(fill), "page {p}");
        }
        let mut d = expect(0xdd);
        d[10..12].copy_from_slice(&[1, 2]);
        d[4095] = 9;
        ix.page(0, 3, &mut page).unwrap();
        assert!(page == d, "both deltas applied, oldest first");
        assert!(matches!(ix.source(0, 3), Ok(PageSource::Xbzrle(_))));
        assert_eq!(ix.source(0, 1), Ok(PageSource::Fill(0)));
        assert_eq!(ix.source(1, 0), Ok(PageSource::Fill(0xff)));
        assert_eq!(ix.source(0, 4), Ok(PageSource::NotSent));
        // A read across pages: the end of page 2 and the start of page 3.
        let mut out = [0u8; 20];
        ix.read(0, 0x3000 - 8, &mut out).unwrap();
        assert_eq!(out[..8], [0xcc; 8]);
        assert_eq!(out[8..], d[..12]);
        // The ROM page, and no byte past its end.
        let mut rom = [0u8; 100];
        ix.read(1, 0, &mut rom).unwrap();
        assert_eq!(rom, [0xff; 100]);
        assert_eq!(
            ix.read(1, 3997, &mut rom),
            Err(MemoryError::OutOfBlock {
                block: 1,
                offset: 4097,
                length: 4096
            })
        );
        // Page 4 was never sent: named, nothing read past it.
        assert_eq!(
            ix.read(0, 0x3ffe, &mut out),
            Err(MemoryError::NotSent {
                block: 0,
                page: 0x4000
            })
        );
        assert_eq!((ix.block(ROM), ix.block_name(0)), (Some(1), RAM));
    }

    #[test]
    fn short_storage_is_refused_not_overrun() {
        let mut buf = [0u8; 8 * 4200];
        let n = stream(&mut buf);
        let (mut slots, mut links) = ([0u64; 5], [Link::default(); 2]);
        assert_eq!(
            index(&buf[..n], &mut slots, &mut links).err(),
            Some(MemoryError::SlotsTooFew { needed: 6, have: 5 })
        );
        let (mut slots, mut links) = ([0u64; 6], [Link::default(); 1]);
        assert_eq!(
            index(&buf[..n], &mut slots, &mut links).err(),
            Some(MemoryError::LinksFull { stored: 1 })
        );
    }

    #[test]
    fn a_record_from_another_buffer_is_refused() {
        let mut buf = [0u8; 8 * 4200];
        let n = stream(&mut buf);
        let (mut slots, mut links) = ([0u64; 6], [Link::default(); 2]);
        let mut ix = index(&buf[..n], &mut slots, &mut links).unwrap();
        let elsewhere = [0u8; 4096];
        let rec = RamRecord::Page {
            block: RAM,
            offset: 0,
            data: &elsewhere,
            continued: false,
        };
        assert_eq!(ix.add(&rec), Err(MemoryError::NotInStream));
        let rec = RamRecord::Zero {
            block: b"vga.vram",
            offset: 0,
            fill: 0,
            continued: false,
        };
        assert_eq!(ix.add(&rec), Err(MemoryError::UnknownBlock));
    }

    #[test]
    fn pc_layouts_follow_the_machine_rules() {
        let i440 = PcMachine::from_name(b"pc-i440fx-7.2").unwrap();
        let old = PcMachine::from_name(b"pc-i440fx-1.7").unwrap();
        let q35 = PcMachine::from_name(b"pc-q35-10.0").unwrap();
        assert_eq!(
            old,
            PcMachine::I440fx {
                gigabyte_align: false
            }
        );
        assert_eq!(PcMachine::from_name(b"pc-1.3"), Some(old));
        assert_eq!(PcMachine::from_name(b"virt-9.0"), None);
        assert_eq!(PcMachine::from_name(b"pc-i440fx-x.2"), None);
        let gib = 1u64 << 30;
        let l = |m, ram, max| PcLayout::new(m, ram, max).map(|l| (l.below_4g, l.above_4g));
        // QEMU's own examples (pc_piix.c) and q35's two splits.
        assert_eq!(
            l(i440, 3 * gib + 512 * 1024 * 1024, None),
            Ok((3 * gib, gib / 2))
        );
        assert_eq!(
            l(i440, 3 * gib + 256 * 1024 * 1024, None),
            Ok((3 * gib + gib / 4, 0))
        );
        assert_eq!(l(old, 4 * gib, None), Ok((3 * gib + gib / 2, gib / 2)));
        assert_eq!(l(i440, 4 * gib, Some(2 * gib)), Ok((2 * gib, 2 * gib)));
        assert_eq!(l(q35, 2 * gib + gib / 2, None), Ok((2 * gib + gib / 2, 0)));
        assert_eq!(l(q35, 3 * gib, None), Ok((2 * gib, gib)));
        assert_eq!(
            l(q35, 2 * gib + gib / 2, Some(gib)),
            Ok((gib, gib + gib / 2))
        );
        assert_eq!(l(i440, 2000 * gib, None), Err(LayoutError::NearOneTerabyte));
        let layout = PcLayout::new(q35, 3 * gib, None).unwrap();
        assert_eq!(layout.locate(0x1000), Some((0x1000, 2 * gib - 0x1000)));
        assert_eq!(layout.locate(2 * gib), None, "the PCI hole");
        assert_eq!(layout.locate(4 * gib + 5), Some((2 * gib + 5, gib - 5)));
        assert_eq!(layout.locate(5 * gib), None);
        assert_eq!(layout.end(), 5 * gib);
    }
}
