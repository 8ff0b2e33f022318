//! `vmstate ram`: guest RAM out of a saved stream, for forensics and debugging.
//!
//! The stream is walked once ([`crate::model::Stream::parse_visit`]) and each RAM record goes
//! into the codec's page index ([`vmstate::memory::PageIndex`]): one 8-byte slot per page of
//! the stream's block list, plus 16 bytes per XBZRLE record — nothing else of the RAM is kept,
//! so memory is bounded by the index (2 MiB per GiB of guest RAM), not by the file. A read is
//! then one slot and one copy per page, from the mapped input.
//!
//! Addresses are guest-physical for the machine's main RAM block (`pc.ram`, or the
//! `memory-backend` given to `-machine`: `--ram-block`), laid out by the PC machine rules
//! ([`vmstate::memory::PcLayout`]): the machine type comes from the CONFIGURATION record (or
//! `--machine` for streams without one). Any other block is read by name and offset
//! (`--block`).

use crate::input::Input;
use crate::model::{Entry, ParseOptions, Stream, Visit};
use std::fmt::Write as _;
use std::io::{self, Write};
use vmstate::memory::{
    Link, Links, MemoryError, PageIndex, PageSource, PcLayout, PcMachine, SLOT_BYTES, slots_needed,
};
use vmstate::ram::{PAGE_SIZE, RamRecord};
use vmstate::wire::section::SectionKind;

/// The largest index built unless `--index-limit` allows more: 1 GiB of slots, a guest of
/// 512 GiB of RAM.
pub const DEFAULT_INDEX_LIMIT: u64 = 1 << 30;

/// XBZRLE links in a growable store.
#[derive(Debug, Default)]
pub struct VecLinks(Vec<Link>);

impl Links for VecLinks {
    fn push(&mut self, link: Link) -> Option<u64> {
        self.0.try_reserve(1).ok()?;
        self.0.push(link);
        u64::try_from(self.0.len() - 1).ok()
    }

    fn get(&self, n: u64) -> Option<Link> {
        self.0.get(usize::try_from(n).ok()?).copied()
    }
}

/// The index of one stream's RAM.
pub type Index<'a> = PageIndex<'a, Vec<u64>, VecLinks>;

/// A stream's RAM, indexed: the page index and what the walk found.
#[derive(Debug)]
pub struct GuestRam<'a> {
    /// The page index.
    pub index: Index<'a>,
    /// The machine type of the CONFIGURATION record, if the stream has one.
    pub machine: Option<String>,
    /// Where the walk stopped early, after the last RAM record (a stream without section
    /// footers and trailer, whose device sections nothing can measure): the RAM is complete.
    pub stopped: Option<String>,
    /// The input the index points into (its pages are released behind [`GuestRam::write_image`]).
    input: &'a Input,
}

/// The walk's visitor: builds the index at the block list and feeds it every page record.
struct Indexer<'a> {
    stream: &'a [u8],
    limit: u64,
    index: Option<Index<'a>>,
    error: Option<String>,
    /// The RAM section's END reached its EOS: no page comes after.
    ram_done: bool,
}

impl<'a> Visit<'a> for Indexer<'a> {
    fn ram(&mut self, kind: SectionKind, rec: &RamRecord<'a>) {
        if self.error.is_some() {
            return;
        }
        if let RamRecord::MemSize(list) = rec {
            self.error = self.start(*list).err();
            return;
        }
        if kind == SectionKind::End {
            self.ram_done = matches!(rec, RamRecord::Eos);
        }
        if let Some(index) = &mut self.index
            && let Err(e) = index.add(rec)
        {
            self.error = Some(e.to_string());
        }
    }

    fn entry(&mut self, _: &Stream<'a>, _: Entry<'a>) -> Option<Entry<'a>> {
        None
    }
}

impl<'a> Indexer<'a> {
    fn start(&mut self, list: vmstate::ram::BlockList<'a>) -> Result<(), String> {
        if self.index.is_some() {
            return Err("a second RAM block list".into());
        }
        let n = slots_needed(&list).ok_or("the block list's page count overflows")?;
        let bytes = (n as u64).saturating_mul(SLOT_BYTES as u64);
        if bytes > self.limit {
            return Err(format!(
                "the block list has {n} pages: the index would take {bytes} bytes, over the \
                 limit of {} (--index-limit)",
                self.limit
            ));
        }
        let mut slots = Vec::new();
        slots
            .try_reserve_exact(n)
            .map_err(|e| format!("cannot allocate an index of {bytes} bytes: {e}"))?;
        slots.resize(n, 0);
        let index = PageIndex::new(self.stream, list, slots, VecLinks::default())
            .map_err(|e| e.to_string())?;
        self.index = Some(index);
        Ok(())
    }
}

/// Walks `input` once and indexes its RAM. `label` names the input in errors; `limit` bounds
/// the index ([`DEFAULT_INDEX_LIMIT`]).
pub fn index<'a>(input: &'a Input, label: &str, limit: u64) -> Result<GuestRam<'a>, String> {
    let bytes = input.bytes();
    let description = crate::model::find_description(bytes)
        .map_err(|e| format!("{label}: {e}"))?
        .map(|(_, d)| d);
    let mut indexer = Indexer {
        stream: bytes,
        limit,
        index: None,
        error: None,
        ram_done: false,
    };
    let options = ParseOptions {
        stop_at_unmeasured: true,
        file_offset: input.stream_start() as u64,
        ..ParseOptions::default()
    };
    let mut progress = crate::input::Progress::new("ram", bytes.len());
    let walked = Stream::parse_visit(
        bytes,
        description,
        options,
        &mut |at| {
            progress.update(at);
            input.release_before(at);
        },
        &mut indexer,
    );
    progress.finish();
    if let Some(e) = indexer.error {
        return Err(format!("{label}: {e}"));
    }
    let stream = walked.map_err(|e| {
        if indexer.ram_done {
            format!("{label}: {e} (after the RAM, which is complete)")
        } else {
            format!("{label}: {e}")
        }
    })?;
    let stopped = stream.unmeasured.as_ref().map(|u| {
        format!(
            "the walk stopped at byte {} (section {}): {}",
            u.offset,
            u.section,
            u.why
                .as_deref()
                .unwrap_or("no section footers, no trailer, no typed model")
        )
    });
    if stopped.is_some() && !indexer.ram_done {
        return Err(format!(
            "{label}: {} before the RAM's last record",
            stopped.unwrap_or_default()
        ));
    }
    let index = indexer
        .index
        .ok_or_else(|| format!("{label}: the stream has no RAM block list"))?;
    Ok(GuestRam {
        input,
        index,
        machine: stream
            .configuration
            .map(|c| String::from_utf8_lossy(c.machine).into_owned()),
        stopped,
    })
}

/// What to read: a guest-physical range of the main RAM, or a range of one block.
#[derive(Debug, Clone)]
pub enum Place {
    /// Guest-physical `addr`, `len` bytes.
    Physical {
        /// The address.
        addr: u64,
        /// Bytes.
        len: u64,
    },
    /// `len` bytes of block `name` from `offset`.
    Block {
        /// Block idstr.
        name: String,
        /// Offset in the block.
        offset: u64,
        /// Bytes.
        len: u64,
    },
}

/// How the main RAM block maps to guest-physical addresses.
#[derive(Debug, Clone, Copy)]
pub struct Physical {
    /// The main RAM block's number in the block list.
    pub block: usize,
    /// The split below and above 4 GiB.
    pub layout: PcLayout,
}

/// Options that decide the guest-physical layout.
#[derive(Debug, Clone, Default)]
pub struct LayoutOptions {
    /// `--ram-block`: the main RAM block (default `pc.ram`).
    pub ram_block: Option<String>,
    /// `--machine`: the machine type, for a stream without a CONFIGURATION record or to
    /// override it.
    pub machine: Option<String>,
    /// `--max-ram-below-4g`: the guest's machine property, if it was set.
    pub max_below_4g: Option<u64>,
}

impl GuestRam<'_> {
    /// The main RAM block and its guest-physical layout.
    pub fn physical(&self, opts: &LayoutOptions) -> Result<Physical, String> {
        let name = opts.ram_block.as_deref().unwrap_or("pc.ram");
        let block = self.index.block(name.as_bytes()).ok_or_else(|| {
            format!(
                "no RAM block '{name}' in the stream (blocks: {}); name the machine's main RAM \
                 block with --ram-block (a -machine memory-backend's id)",
                self.block_names().join(", ")
            )
        })?;
        let (_, size) = self.index.block_entry(block).unwrap_or_default();
        let machine = opts.machine.as_deref().or(self.machine.as_deref());
        let family = match machine {
            Some(m) => PcMachine::from_name(m.as_bytes()).ok_or_else(|| {
                format!(
                    "machine type '{m}': {}",
                    vmstate::memory::LayoutError::UnknownMachine
                )
            })?,
            // Without a machine type, only a size that every PC machine keeps below 4 GiB.
            None if size < 0xb000_0000 => PcMachine::Q35,
            None => {
                return Err(format!(
                    "the stream names no machine type and its {size:#x} bytes of RAM are split \
                     below and above 4 GiB by a machine-specific rule: give --machine"
                ));
            }
        };
        let layout = PcLayout::new(family, size, opts.max_below_4g).map_err(|e| e.to_string())?;
        Ok(Physical { block, layout })
    }

    /// The stream's block names, in list order.
    pub fn block_names(&self) -> Vec<String> {
        self.index
            .blocks()
            .iter()
            .map(|b| String::from_utf8_lossy(b.name).into_owned())
            .collect()
    }

    /// Writes the bytes at `place` to `out` in chunks of at most 1 MiB. An unbacked range is
    /// an error naming it, before anything of it is written.
    pub fn copy(
        &self,
        place: &Place,
        physical: Option<&Physical>,
        out: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
    ) -> Result<(), RamError> {
        let pieces = self.pieces(place, physical)?;
        let total: u64 = pieces.iter().map(|p| p.3).sum();
        let mut buf = vec![0u8; total.min(1 << 20) as usize];
        for (start, block, offset, len) in pieces {
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                let chunk = &mut buf[..n];
                self.index
                    .read(block, offset + done, chunk)
                    .map_err(|e| RamError::Read(self.describe(e, physical)))?;
                out(start + done, chunk).map_err(RamError::Output)?;
                done += n as u64;
            }
        }
        Ok(())
    }

    /// `place` as runs of one block: `(address shown, block, offset, len)`, checked whole
    /// before anything is read.
    fn pieces(
        &self,
        place: &Place,
        physical: Option<&Physical>,
    ) -> Result<Vec<(u64, usize, u64, u64)>, RamError> {
        match place {
            Place::Block { name, offset, len } => {
                let block = self.index.block(name.as_bytes()).ok_or_else(|| {
                    RamError::Range(format!(
                        "no RAM block '{name}' (blocks: {})",
                        self.block_names().join(", ")
                    ))
                })?;
                let (_, size) = self.index.block_entry(block).unwrap_or_default();
                if offset.checked_add(*len).is_none_or(|end| end > size) {
                    return Err(RamError::Range(format!(
                        "{offset:#x}+{len:#x} is outside block '{name}' ({size:#x} bytes)"
                    )));
                }
                Ok(vec![(*offset, block, *offset, *len)])
            }
            Place::Physical { addr, len } => {
                let p = physical.ok_or_else(|| RamError::Range("no layout".into()))?;
                let end = addr.checked_add(*len).ok_or_else(|| {
                    RamError::Range(format!("{addr:#x}+{len:#x} overflows the address space"))
                })?;
                let mut at = *addr;
                let mut pieces = Vec::new();
                while at < end {
                    let (offset, run) = p.layout.locate(at).ok_or_else(|| {
                        RamError::Range(format!(
                            "guest-physical {:#x}..{:#x} is not RAM: {}",
                            at,
                            self.unbacked_end(p, at).min(end),
                            ranges_text(p)
                        ))
                    })?;
                    let n = run.min(end - at);
                    pieces.push((at, p.block, offset, n));
                    at += n;
                }
                Ok(pieces)
            }
        }
    }

    /// Where the unbacked range starting at `at` ends (the next RAM, or the end of memory).
    fn unbacked_end(&self, p: &Physical, at: u64) -> u64 {
        p.layout
            .ranges()
            .iter()
            .filter(|(start, len, _)| *len > 0 && *start > at)
            .map(|(start, _, _)| *start)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A read error with block names and, for the main RAM, guest-physical addresses.
    fn describe(&self, e: MemoryError, physical: Option<&Physical>) -> String {
        match e {
            MemoryError::NotSent { block, page } => {
                let name = String::from_utf8_lossy(self.index.block_name(block)).into_owned();
                let gpa = physical
                    .filter(|p| p.block == block)
                    .and_then(|p| {
                        p.layout
                            .ranges()
                            .iter()
                            .find(|(_, len, off)| page >= *off && page < off + len)
                            .map(|(start, _, off)| start + (page - off))
                    })
                    .map(|a| format!(" (guest-physical {a:#x})"))
                    .unwrap_or_default();
                format!(
                    "page {page:#x} of block '{name}'{gpa} is not in the stream (never sent; \
                     with x-ignore-shared a shared block's RAM stays in its backing file)"
                )
            }
            e => e.to_string(),
        }
    }

    /// Writes a flat guest-physical image of the main RAM to `out` (positioned writes, holes
    /// where pages are zero and in the PCI hole): the file is `layout.end()` bytes long.
    /// Every page must be in the stream. The input is released behind each page read (in
    /// guest order, which is stream order but for pages sent again: those start a new pass).
    pub fn write_image(&self, p: &Physical, out: &std::fs::File) -> Result<u64, RamError> {
        use std::os::unix::fs::FileExt;
        out.set_len(p.layout.end()).map_err(RamError::Output)?;
        let mut page = [0u8; PAGE_SIZE];
        let mut written = 0u64;
        for (start, len, offset) in p.layout.ranges() {
            let pages = len.div_ceil(PAGE_SIZE as u64);
            for i in 0..pages {
                let at = offset + i * PAGE_SIZE as u64;
                let n = (len - i * PAGE_SIZE as u64).min(PAGE_SIZE as u64) as usize;
                let gpa = start + i * PAGE_SIZE as u64;
                let source = self.index.source(p.block, at / PAGE_SIZE as u64);
                let bytes: &[u8] = match source {
                    Ok(PageSource::Fill(0)) => continue,
                    Ok(PageSource::Data(o)) => usize::try_from(o)
                        .ok()
                        .and_then(|o| self.index.stream().get(o..o.checked_add(n)?))
                        .ok_or_else(|| RamError::Read(MemoryError::NotInStream.to_string()))?,
                    Ok(_) => {
                        self.index
                            .page(p.block, at / PAGE_SIZE as u64, &mut page)
                            .map_err(|e| RamError::Read(self.describe(e, Some(p))))?;
                        if page.iter().all(|&b| b == 0) {
                            continue;
                        }
                        &page[..n]
                    }
                    Err(e) => return Err(RamError::Read(self.describe(e, Some(p)))),
                };
                out.write_all_at(bytes, gpa).map_err(RamError::Output)?;
                if let Ok(PageSource::Data(o)) = source {
                    self.input
                        .release_before(usize::try_from(o).unwrap_or(usize::MAX));
                }
                written += n as u64;
            }
        }
        Ok(written)
    }
}

/// The RAM ranges of a layout, for error messages.
fn ranges_text(p: &Physical) -> String {
    let mut s = String::from("RAM is at ");
    let mut first = true;
    for (start, len, _) in p.layout.ranges() {
        if len == 0 {
            continue;
        }
        if !first {
            s.push_str(" and ");
        }
        first = false;
        let _ = write!(s, "{start:#x}..{:#x}", start + len);
    }
    s
}

/// Why `vmstate ram` could not give the bytes.
#[derive(Debug)]
pub enum RamError {
    /// The range asked for is not RAM (or not in the block).
    Range(String),
    /// A page of it cannot be read (not sent, a bad delta).
    Read(String),
    /// The output failed.
    Output(io::Error),
}

/// Writes `bytes` at guest address `addr` as a hexdump (`hexdump -C` style, addresses
/// absolute).
pub fn hexdump(addr: u64, bytes: &[u8], out: &mut dyn Write) -> io::Result<()> {
    let mut line = String::with_capacity(80);
    for (i, chunk) in bytes.chunks(16).enumerate() {
        line.clear();
        let _ = write!(line, "{:016x} ", addr + 16 * i as u64);
        for j in 0..16 {
            if j == 8 {
                line.push(' ');
            }
            match chunk.get(j) {
                Some(b) => {
                    let _ = write!(line, " {b:02x}");
                }
                None => line.push_str("   "),
            }
        }
        line.push_str("  |");
        for &b in chunk {
            line.push(if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            });
        }
        line.push_str("|\n");
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}
