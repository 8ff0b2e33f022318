//! `vmstate inspect`: a human-readable map of a stream.
//!
//! On a terminal the columns are aligned and coloured; otherwise each record is one line of
//! tab-separated `key=value` cells, stable for scripts and diffs.

use crate::exit::Failure;
use crate::generic::Body;
use crate::model::{BlockCount, Entry, Item, Stream, Visit};
use crate::output::Spool;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::io;
use vmstate::mapped_ram::BlockLayout;
use vmstate::ram::RamRecord;
use vmstate::wire::section::SectionKind;

/// Output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Pad columns to a common width.
    pub align: bool,
    /// Use ANSI colours.
    pub colour: bool,
}

impl Style {
    /// Plain output (not a terminal).
    pub const PLAIN: Style = Style {
        align: false,
        colour: false,
    };
    /// Terminal output.
    pub const TERMINAL: Style = Style {
        align: true,
        colour: true,
    };

    fn paint(&self, code: &str, s: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// Page counts of one RAM block.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockPages {
    /// Length of the block in bytes.
    pub length: u64,
    /// ZERO records.
    pub zero: u64,
    /// PAGE records.
    pub normal: u64,
    /// XBZRLE records.
    pub xbzrle: u64,
    /// mapped-ram: the block's header (where its bitmap and pages lie). Its pages are then
    /// counted from the bitmap: `normal` present in the file, `zero` absent (never written).
    pub mapped: Option<BlockLayout>,
}

/// Per-block page counts over all RAM sections, in block-list order (read from the kept
/// entries; `inspect` counts while it walks, [`MapWriter`]).
pub fn ram_summary(stream: &Stream<'_>) -> Vec<(String, BlockPages)> {
    let mut t = RamTally::default();
    for e in &stream.entries {
        if let Item::Ram { section, records } = &e.item {
            for r in records {
                t.record(section.kind, &r);
            }
            t.end_section();
        }
    }
    t.finish()
}

/// Page counts per block over the RAM records of a walk, taken record by record, and the
/// counts of the section being read (for its row).
#[derive(Debug, Default)]
struct RamTally<'a> {
    order: Vec<String>,
    map: BTreeMap<String, BlockPages>,
    /// The section being read: its page records per block, and its block count.
    section: Vec<BlockCount<'a>>,
    blocks: usize,
}

impl<'a> RamTally<'a> {
    /// Takes one RAM record of a section of kind `kind` (only START carries the block list).
    fn record(&mut self, kind: SectionKind, rec: &RamRecord<'a>) {
        if let RamRecord::MemSize(list) = rec
            && kind == SectionKind::Start
        {
            self.blocks = list.count;
            for (b, layout) in list.entries() {
                let n = vmstate::Escaped(b.name).to_string();
                if !self.map.contains_key(&n) {
                    self.order.push(n.clone());
                }
                let e = self.map.entry(n).or_default();
                e.length = b.length;
                if let Some(l) = layout {
                    // The bitmap lies inside the list's bytes (checked when it was read).
                    let present = list.bitmap(&l).map_or(0, |bm| l.present_pages(bm));
                    e.normal = present;
                    e.zero = l.pages().saturating_sub(present);
                    e.mapped = Some(l);
                }
            }
        }
        BlockCount::add(&mut self.section, rec);
    }

    /// Ends the section being read: adds its counts to its blocks' and returns the detail
    /// cell of its row.
    fn end_section(&mut self) -> String {
        let (mut z, mut p, mut x) = (0, 0, 0);
        for c in self.section.drain(..) {
            z += c.zero;
            p += c.page;
            x += c.xbzrle;
            let b = self
                .map
                .entry(vmstate::Escaped(c.block).to_string())
                .or_default();
            b.zero += c.zero;
            b.normal += c.page;
            b.xbzrle += c.xbzrle;
        }
        let mut detail = Vec::new();
        if self.blocks > 0 {
            detail.push(format!("{} blocks", self.blocks));
        }
        self.blocks = 0;
        if z + p + x > 0 {
            detail.push(format!("{z} zero, {p} normal pages"));
        }
        if x > 0 {
            detail.push(format!("{x} xbzrle"));
        }
        detail.join(", ")
    }

    fn finish(mut self) -> Vec<(String, BlockPages)> {
        self.order
            .into_iter()
            .map(|n| {
                let p = self.map.remove(&n).unwrap_or_default();
                (n, p)
            })
            .collect()
    }
}

fn subsection_names(body: &Body<'_>, out: &mut Vec<String>) {
    for f in &body.fields {
        value_subsections(&f.value, out);
    }
    for s in &body.subsections {
        out.push(vmstate::Escaped(s.name.as_bytes()).to_string());
        subsection_names(&s.body, out);
    }
}

fn value_subsections(v: &crate::generic::Value<'_>, out: &mut Vec<String>) {
    match v {
        crate::generic::Value::Struct(b) => subsection_names(b, out),
        crate::generic::Value::Array(items) => items.iter().for_each(|i| value_subsections(i, out)),
        _ => {}
    }
}

/// Renders the map of `stream` (`name` is the file name shown in the first line), from the
/// kept entries.
pub fn render(stream: &Stream<'_>, name: &str, style: Style) -> String {
    let mut m = MapWriter::new(style, io::Cursor::new(Vec::new()));
    for e in &stream.entries {
        if let Item::Ram { section, records } = &e.item {
            for r in records {
                m.ram(section.kind, &r);
            }
        }
        m.entry(stream, e.clone());
    }
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = m.finish(stream, name, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The row of one record: offset, kind, id, idstr, instance, version, body length, detail.
/// A RAM section's detail comes from `ram`, which has just read its records.
fn row(e: &Entry<'_>, ram: &mut RamTally<'_>) -> [String; 8] {
    let offset = format!("0x{:08x}", e.offset);
    match &e.item {
        Item::Eof => [
            offset,
            "eof".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ],
        Item::Command(c) => [
            offset,
            "command".into(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            (c.payload.len() + c.packaged.len()).to_string(),
            format!("COMMAND {}", c.id.name()),
        ],
        Item::Ram { section, .. } => section_row(offset, section, ram.end_section()),
        Item::Device { section, body, .. } => {
            let mut subs = Vec::new();
            subsection_names(body, &mut subs);
            let detail = if subs.is_empty() {
                String::new()
            } else {
                format!("subsections: {}", subs.join(", "))
            };
            section_row(offset, section, detail)
        }
        Item::Opaque { section, .. } => {
            section_row(offset, section, "no description: body not decoded".into())
        }
    }
}

/// The column titles of the map.
const HEADER: [&str; 8] = [
    "offset", "kind", "id", "idstr", "instance", "version", "body", "detail",
];

/// Writes the map from one walk ([`crate::model::Stream::parse_visit`]): each record's row is
/// measured (column widths for the aligned style; RAM page counts from its records as they
/// are read) and written to `spool` as it comes; [`MapWriter::finish`] writes the head, the
/// spooled rows in their measured widths, and the tail. Nothing is kept per record, so memory
/// does not grow with the number of sections; `inspect` spools to an unlinked temporary file
/// ([`crate::input::scratch_file`]), and prints nothing for a stream it refuses.
#[derive(Debug)]
pub struct MapWriter<'a, S: io::Read + io::Write + io::Seek> {
    style: Style,
    width: [usize; 8],
    ram: RamTally<'a>,
    spool: Spool<S>,
}

impl<'a, S: io::Read + io::Write + io::Seek> MapWriter<'a, S> {
    /// A writer in `style` spooling rows to `spool` (empty), nothing measured yet.
    pub fn new(style: Style, spool: S) -> Self {
        MapWriter {
            style,
            width: HEADER.map(str::len),
            ram: RamTally::default(),
            spool: Spool::new(spool),
        }
    }

    /// Writes the map into `out` (standard output, for the messages): head, every spooled
    /// row, tail.
    pub fn finish(
        self,
        stream: &Stream<'_>,
        name: &str,
        out: &mut dyn io::Write,
    ) -> Result<(), Failure> {
        let spool_error = |e: io::Error| Failure::Output(format!("temporary file: {e}"));
        let stdout_error = |e: io::Error| Failure::Output(format!("stdout: {e}"));
        out.write_all(self.head(stream, name).as_bytes())
            .map_err(stdout_error)?;
        let (style, width) = (self.style, self.width);
        let mut line = String::new();
        let mut failed = None;
        let read = self.spool.rows(8, &mut |cells| {
            line.clear();
            if let Ok(cells) = <[String; 8]>::try_from(cells) {
                line_into(style, &width, &cells, &mut line, false);
            }
            out.write_all(line.as_bytes()).map_err(|e| {
                failed = Some(e);
                io::Error::other("stdout")
            })
        });
        if let Some(e) = failed {
            return Err(stdout_error(e));
        }
        read.map_err(spool_error)?;
        let tail = tail(self.style, self.ram, stream);
        out.write_all(tail.as_bytes())
            .and_then(|()| out.flush())
            .map_err(stdout_error)
    }

    /// The lines before the records: file, header, configuration, column titles.
    fn head(&self, stream: &Stream<'_>, name: &str) -> String {
        let style = self.style;
        let mut o = String::new();
        let head = |k: &str| style.paint("1", k);
        let _ = writeln!(o, "{} {name} ({} bytes)", head("file"), stream.len);
        let _ = writeln!(
            o,
            "{} at 0x00000000: magic QEVM, file version {}",
            head("header"),
            stream.version
        );
        match &stream.configuration {
            Some(c) => {
                let mut line = format!(
                    "{} at 0x00000008: machine {}",
                    head("configuration"),
                    vmstate::Escaped(c.machine)
                );
                if let Some(b) = c.target_page_bits {
                    let _ = write!(line, ", target-page-bits {b}");
                }
                if let Some(caps) = &c.capabilities {
                    let names: Vec<String> = caps
                        .iter()
                        .map(|c| vmstate::Escaped(c).to_string())
                        .collect();
                    let _ = write!(line, ", capabilities [{}]", names.join(", "));
                }
                if c.uuid.is_some() {
                    line.push_str(", uuid");
                }
                let _ = writeln!(o, "{line}");
            }
            None => {
                let _ = writeln!(o, "{} none", head("configuration"));
            }
        }
        let _ = writeln!(o);
        if style.align {
            line_into(style, &self.width, &HEADER.map(String::from), &mut o, true);
        }
        o
    }
}

impl<'a, S: io::Read + io::Write + io::Seek> Visit<'a> for MapWriter<'a, S> {
    fn ram(&mut self, kind: SectionKind, record: &RamRecord<'a>) {
        self.ram.record(kind, record);
    }

    /// Measures the row of `entry` and spools it; nothing is kept.
    fn entry(&mut self, _: &Stream<'a>, entry: Entry<'a>) -> Option<Entry<'a>> {
        let cells = row(&entry, &mut self.ram);
        if self.style.align {
            for (w, c) in self.width.iter_mut().zip(&cells) {
                *w = (*w).max(c.len());
            }
        }
        self.spool.push(&cells.each_ref().map(String::as_str));
        None
    }
}

/// The lines after the records: where an unmeasurable stream stopped, the trailer, and the
/// RAM blocks with their page counts (from every record walked).
fn tail(style: Style, ram: RamTally<'_>, stream: &Stream<'_>) -> String {
    let head = |k: &str| style.paint("1", k);
    let mut o = String::new();
    let ram = ram.finish();
    if let Some(u) = &stream.unmeasured {
        let _ = writeln!(
            o,
            "{} at 0x{:08x}: section {} cannot be measured ({}): the map stops here, {} bytes \
             before the end",
            head("stop"),
            u.offset,
            u.section,
            u.why
                .as_deref()
                .unwrap_or("no section footers, no VMDESCRIPTION trailer, no typed model"),
            stream.len - u.offset
        );
    }
    if let Some(json) = stream.trailer {
        let devices = stream.description.as_ref().map_or(0, |d| d.devices.len());
        let _ = writeln!(
            o,
            "{} VMDESCRIPTION at 0x{:08x}: {} bytes of JSON, {devices} devices",
            head("trailer"),
            stream.len - json.len() - 5,
            json.len()
        );
    }

    if !ram.is_empty() {
        let _ = writeln!(o);
        let _ = writeln!(o, "{}", head("RAM blocks"));
        let nw = ram
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        let (mut tz, mut tp) = (0, 0);
        for (n, p) in &ram {
            tz += p.zero;
            tp += p.normal;
            if style.align {
                let _ = writeln!(
                    o,
                    "  {n:<nw$}  {:>#12x} bytes  {:>6} zero  {:>6} normal{}",
                    p.length,
                    p.zero,
                    p.normal,
                    if p.xbzrle > 0 {
                        format!("  {} xbzrle", p.xbzrle)
                    } else {
                        String::new()
                    }
                );
            } else {
                let _ = writeln!(
                    o,
                    "block={n}\tlength={:#x}\tzero={}\tnormal={}\txbzrle={}",
                    p.length, p.zero, p.normal, p.xbzrle
                );
            }
        }
        let _ = writeln!(
            o,
            "{} {} blocks, {tz} zero pages, {tp} normal pages",
            head("RAM total"),
            ram.len()
        );
        mapped_tail(style, &ram, &mut o);
    }
    o
}

/// The mapped-ram layout of each block: header, bitmap and pages ranges (file offsets, end
/// exclusive) and how many pages the file holds.
fn mapped_tail(style: Style, ram: &[(String, BlockPages)], o: &mut String) {
    let mapped: Vec<_> = ram
        .iter()
        .filter_map(|(n, p)| p.mapped.map(|l| (n, p.normal, l)))
        .collect();
    if mapped.is_empty() {
        return;
    }
    let _ = writeln!(o);
    // The offsets are the file's (a stream in a container starts further in).
    let start = match mapped.first().map_or(0, |(_, _, l)| l.file_offset) {
        0 => String::new(),
        n => format!(", the stream at file offset {n} ({n:#x})"),
    };
    let _ = writeln!(
        o,
        "{} (pages at fixed file offsets{start}; zero pages are not in the file)",
        style.paint("1", "mapped-ram")
    );
    let nw = mapped
        .iter()
        .map(|(n, ..)| n.chars().count())
        .max()
        .unwrap_or(0);
    for (n, present, l) in mapped {
        let end = l.pages_end().unwrap_or(u64::MAX);
        if style.align {
            let _ = writeln!(
                o,
                "  {n:<nw$}  header {:#x} v{} page {}  bitmap {:#x}..{:#x}  pages {:#x}..{end:#x}  \
                 {present}/{} present",
                l.header_offset,
                l.version,
                l.page_size,
                l.bitmap_offset,
                l.bitmap_end(),
                l.pages_offset,
                l.pages()
            );
        } else {
            let _ = writeln!(
                o,
                "block={n}\theader={:#x}\tversion={}\tpage_size={}\tbitmap={:#x}..{:#x}\t\
                 pages={:#x}..{end:#x}\tpresent={present}\tpages_total={}",
                l.header_offset,
                l.version,
                l.page_size,
                l.bitmap_offset,
                l.bitmap_end(),
                l.pages_offset,
                l.pages()
            );
        }
    }
}

/// One line of the map: `cells` in the measured `width`s (aligned) or as `key=value` cells.
fn line_into(style: Style, width: &[usize; 8], cells: &[String; 8], o: &mut String, title: bool) {
    let mut parts = Vec::new();
    // No padding after the last non-empty cell (colour codes would keep it from trimming).
    let last = cells.iter().rposition(|c| !c.is_empty()).unwrap_or(0);
    for (i, c) in cells.iter().enumerate().take(last + 1) {
        if style.align {
            let padded = if i == last && !(i == 2 || i == 4 || i == 5 || i == 6) {
                c.clone()
            } else if i == 2 || i == 4 || i == 5 || i == 6 {
                format!("{c:>w$}", w = width[i])
            } else {
                format!("{c:<w$}", w = width[i])
            };
            let code = match (title, i) {
                (true, _) => "1",
                (false, 0) => "2",
                (false, 1) => "36",
                (false, 3) => "33",
                _ => "",
            };
            parts.push(if code.is_empty() {
                padded
            } else {
                style.paint(code, &padded)
            });
        } else if !c.is_empty() {
            parts.push(format!("{}={c}", HEADER[i]));
        }
    }
    let sep = if style.align { "  " } else { "\t" };
    let _ = writeln!(o, "{}", parts.join(sep).trim_end());
}

fn section_row(offset: String, s: &crate::model::SectionMeta<'_>, detail: String) -> [String; 8] {
    [
        offset,
        s.kind.name().to_string(),
        s.section_id.to_string(),
        s.name(),
        s.instance_id.to_string(),
        s.version_id.to_string(),
        s.body_len.to_string(),
        detail,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ParseOptions, find_description, reads};

    /// `inspect`'s map is one walk, as `vmstate inspect` runs it (the visitor, then
    /// `finish`): on real streams each FULL body is decoded once, each RAM record read once,
    /// and none read again from a kept entry (the map keeps none).
    #[test]
    fn the_map_decodes_each_section_once_and_reads_each_ram_record_once() {
        for name in ["pc-7.2-bios", "q72-pc-i440fx-7.2", "q10-pc-q35-10.0"] {
            let bytes = std::fs::read(format!(
                "{}/../host-tests/fixtures/{name}.vmstate",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            // What the stream holds, counted on a kept parse.
            let kept = Stream::parse(&bytes).unwrap();
            let (records, devices) = reads::held(&kept);
            assert!(
                devices > 20 && records > 1000,
                "{name}: {devices} {records}"
            );
            for style in [Style::PLAIN, Style::TERMINAL] {
                reads::take();
                let mut map = MapWriter::new(style, io::Cursor::new(Vec::new()));
                let description = find_description(&bytes).unwrap().map(|(_, d)| d);
                let options = ParseOptions {
                    stop_at_unmeasured: true,
                    ..ParseOptions::default()
                };
                let walked =
                    Stream::parse_visit(&bytes, description, options, &mut |_| {}, &mut map)
                        .unwrap();
                let mut out = Vec::new();
                map.finish(&walked, name, &mut out).unwrap();
                assert_eq!(
                    reads::take(),
                    (records, 0, devices),
                    "{name} {style:?}: (RAM records walked, read again, bodies decoded)"
                );
                assert_eq!(String::from_utf8(out).unwrap(), render(&kept, name, style));
            }
        }
    }
}
