//! `vmstate inspect`: a human-readable map of a stream.
//!
//! On a terminal the columns are aligned and coloured; otherwise each record is one line of
//! tab-separated `key=value` cells, stable for scripts and diffs.

use crate::generic::Body;
use crate::model::{Entry, Item, Stream};
use std::collections::BTreeMap;
use std::fmt::Write;
use vmstate::ram::RamRecord;

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
}

/// Per-block page counts over all RAM sections, in block-list order.
pub fn ram_summary(stream: &Stream<'_>) -> Vec<(String, BlockPages)> {
    let mut t = RamTally::default();
    for e in &stream.entries {
        t.add(e);
    }
    t.finish()
}

/// [`ram_summary`] gathered record by record.
#[derive(Debug, Default)]
struct RamTally {
    order: Vec<String>,
    map: BTreeMap<String, BlockPages>,
}

impl RamTally {
    fn add(&mut self, e: &Entry<'_>) {
        let Item::Ram { section, records } = &e.item else {
            return;
        };
        let name = |b: &[u8]| vmstate::Escaped(b).to_string();
        // Only START carries the block list, and its records are few; page counts were
        // taken while parsing, so the pages are not read again.
        if section.kind == vmstate::wire::section::SectionKind::Start {
            for r in records {
                if let RamRecord::MemSize(list) = r {
                    for b in list.iter() {
                        let n = name(b.name);
                        if !self.map.contains_key(&n) {
                            self.order.push(n.clone());
                        }
                        self.map.entry(n).or_default().length = b.length;
                    }
                }
            }
        }
        for c in records.counts() {
            let p = self.map.entry(name(c.block)).or_default();
            p.zero += c.zero;
            p.normal += c.page;
            p.xbzrle += c.xbzrle;
        }
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

/// Renders the map of `stream` (`name` is the file name shown in the first line).
pub fn render(stream: &Stream<'_>, name: &str, style: Style) -> String {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = render_to(stream, name, style, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The row of one record: offset, kind, id, idstr, instance, version, body length, detail.
fn row(e: &Entry<'_>) -> [String; 8] {
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
        Item::Ram { section, records } => {
            let (mut z, mut p, mut x) = (0, 0, 0);
            for c in records.counts() {
                z += c.zero;
                p += c.page;
                x += c.xbzrle;
            }
            let mut blocks = 0;
            if section.kind == vmstate::wire::section::SectionKind::Start {
                for r in records {
                    if let RamRecord::MemSize(l) = r {
                        blocks = l.count;
                    }
                }
            }
            let mut detail = Vec::new();
            if blocks > 0 {
                detail.push(format!("{blocks} blocks"));
            }
            if z + p + x > 0 {
                detail.push(format!("{z} zero, {p} normal pages"));
            }
            if x > 0 {
                detail.push(format!("{x} xbzrle"));
            }
            section_row(offset, section, detail.join(", "))
        }
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

/// Writes the map in three parts — [`MapWriter::head`], one [`MapWriter::row`] per record,
/// [`MapWriter::tail`] — after every record was [`MapWriter::measure`]d (column widths for the
/// aligned style, RAM page counts). Nothing is kept per record: `inspect` decodes the stream
/// twice (measure, then write) and keeps no entries ([`crate::model::Stream::parse_visit`]).
#[derive(Debug)]
pub struct MapWriter {
    style: Style,
    width: [usize; 8],
    ram: RamTally,
}

impl MapWriter {
    /// A writer in `style`, nothing measured yet.
    pub fn new(style: Style) -> MapWriter {
        MapWriter {
            style,
            width: HEADER.map(str::len),
            ram: RamTally::default(),
        }
    }

    /// Takes the column widths and RAM page counts of one record.
    pub fn measure(&mut self, e: &Entry<'_>) {
        if self.style.align {
            for (w, c) in self.width.iter_mut().zip(&row(e)) {
                *w = (*w).max(c.len());
            }
        }
        self.ram.add(e);
    }

    /// The lines before the records: file, header, configuration, column titles.
    pub fn head(
        &self,
        stream: &Stream<'_>,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
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
            self.line(&HEADER.map(String::from), &mut o, true);
        }
        out.write_all(o.as_bytes())
    }

    /// The line of one record.
    pub fn row(&self, e: &Entry<'_>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut o = String::new();
        self.line(&row(e), &mut o, false);
        out.write_all(o.as_bytes())
    }

    /// The lines after the records: where an unmeasurable stream stopped, the trailer, and the
    /// RAM blocks with their page counts (from every record measured).
    pub fn tail(self, stream: &Stream<'_>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let style = self.style;
        let head = |k: &str| style.paint("1", k);
        let mut o = String::new();
        let ram = self.ram.finish();
        if let Some(u) = &stream.unmeasured {
            let _ = writeln!(
                o,
                "{} at 0x{:08x}: section {} cannot be measured (no section footers, no \
                 VMDESCRIPTION trailer, no typed model): the map stops here, {} bytes before the end",
                head("stop"),
                u.offset,
                u.section,
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
        }
        out.write_all(o.as_bytes())
    }

    fn line(&self, cells: &[String; 8], o: &mut String, title: bool) {
        let (style, width) = (self.style, &self.width);
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
}

/// [`render`] into `out`: measured, then written line by line.
pub fn render_to(
    stream: &Stream<'_>,
    name: &str,
    style: Style,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut m = MapWriter::new(style);
    for e in &stream.entries {
        m.measure(e);
    }
    m.head(stream, name, out)?;
    for e in &stream.entries {
        m.row(e, out)?;
    }
    m.tail(stream, out)
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
