//! `vmstate diff`: the differences between two decoded streams, and what was compared.
//!
//! * Device sections are matched by idstr and instance id. Where both streams decoded the
//!   section with their description, it is compared leaf by leaf (paths use the edit syntax,
//!   e.g. `i8254[0].channels[1].count`); otherwise (no trailer, or an iterative section no
//!   description covers) its body bytes are compared and the first differing byte is shown
//!   (`cpu[0]#body+0x1c`), with both lengths. Versions are compared either way.
//! * RAM: the block lists are compared (names, lengths, order), then the pages, block by
//!   block. A page is compared by content (a ZERO record equals a PAGE record of its fill
//!   byte); a page one stream sends and the other does not is reported as absent, and an
//!   XBZRLE page (a delta against an earlier copy) is reported as not compared. A mapped-ram
//!   file's block (pages at file offsets, [`vmstate::mapped_ram`]) is read as the page records
//!   a stream without mapped-ram sends for it: every page of the block in order, a page whose
//!   bitmap bit is set as its bytes in the file, any other as a zero page (QEMU never writes
//!   one, and its loader leaves it zero). So two mapped-ram files, or a mapped-ram file and a
//!   stream of the same guest, are compared page by page, differences named
//!   `ram:BLOCK@PAGE+BYTE` as for any stream.
//! * The configuration record, COMMAND records and the file version. The trailer is not
//!   compared as such: it describes the sections, which are.
//!
//! Nothing is reported as equal that was not compared: [`Compared`] lists what was.
//!
//! Memory: pages are not collected. `vmstate diff` walks both streams side by side
//! ([`diff_walked`], each RAM record read once) and merges their pages by (block, offset) as the
//! walks read them, which is exact when each stream sends every block's pages in one increasing
//! run (a snapshot does); the page differences wait in a temporary file until the sections
//! after the pages are compared. A stream that sends a page twice or out of order is compared
//! block by block instead, from the kept entries (its pages read again), holding one block's
//! page index (not its data) at a time. Differences are handed to the caller one by one.

use crate::desc::Description;
use crate::generic::{Body, Value};
use crate::model::{Entry, Item, ParseOptions, Stream, Visit, Walk};
use crate::output::Spool;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use vmstate::Escaped;
use vmstate::ram::{PAGE_SIZE, RamRecord};
use vmstate::wire::section::SectionKind;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where (`IDSTR[INSTANCE].FIELD`, `IDSTR[INSTANCE]#body+OFFSET`, `ram:BLOCK@OFFSET`,
    /// `ram:BLOCK#length`, or a record name such as `configuration.machine` or `commands`).
    /// Names from the streams are escaped ([`vmstate::Escaped`]).
    pub path: String,
    /// The value in the first stream (`-` when absent).
    pub a: String,
    /// The value in the second stream (`-` when absent).
    pub b: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.path, self.a, self.b)
    }
}

/// What a diff compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compared {
    /// Device sections present in both streams and compared field by field.
    pub decoded: usize,
    /// Device sections present in both streams and compared as body bytes (not decoded in
    /// at least one of them).
    pub as_bytes: usize,
    /// Sections present in one stream only.
    pub one_sided: usize,
    /// RAM blocks listed by either stream.
    pub blocks: usize,
    /// RAM pages (block, offset) compared by content.
    pub pages: u64,
    /// RAM pages one stream sends and the other does not.
    pub pages_one_sided: u64,
    /// XBZRLE pages, which are not compared.
    pub xbzrle: u64,
    /// Differences found.
    pub differences: u64,
}

impl fmt::Display for Compared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "compared: file version, configuration, commands; {} device \
             sections field by field, {} as bytes (not decoded), {} in one stream only; RAM \
             block lists ({} blocks) and {} pages by content, {} pages in one stream only",
            self.decoded,
            self.as_bytes,
            self.one_sided,
            self.blocks,
            self.pages,
            self.pages_one_sided
        )?;
        if self.xbzrle > 0 {
            write!(f, "; not compared: {} XBZRLE pages", self.xbzrle)?;
        }
        match self.differences {
            0 => write!(f, "; no differences"),
            1 => write!(f, "; 1 difference"),
            n => write!(f, "; {n} differences"),
        }
    }
}

fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), item, out);
            }
        }
        Value::Struct(b) => body_leaves(prefix, b, out),
        Value::Int(i) => out.push((prefix.to_string(), format!("{:#x}", i.raw))),
        Value::Bool(b) => out.push((prefix.to_string(), format!("{b}"))),
        Value::Null => out.push((prefix.to_string(), "nullptr".into())),
        Value::Capability(name) => out.push((prefix.to_string(), Escaped(name).to_string())),
        // A timer is one be64 expiry (all ones: not armed).
        Value::Timer(t) => {
            let text = if *t == u64::MAX {
                "not armed".to_string()
            } else {
                format!("{t:#x}")
            };
            out.push((prefix.to_string(), text));
        }
        // Per byte, so a one-byte change in a 256-byte buffer reads as one line.
        Value::Bytes(bytes) | Value::Unused(bytes) => {
            for (i, b) in bytes.iter().enumerate() {
                out.push((format!("{prefix}[{i}]"), format!("{b:#04x}")));
            }
        }
    }
}

fn body_leaves(prefix: &str, body: &Body, out: &mut Vec<(String, String)>) {
    for f in &body.fields {
        leaves(&format!("{prefix}.{}", f.name), &f.value, out);
    }
    for s in &body.subsections {
        body_leaves(
            &format!("{prefix}.{}", Escaped(s.name.as_bytes())),
            &s.body,
            out,
        );
    }
}

/// A device section as one stream carries it.
struct SectionView<'s, 'a> {
    version: u32,
    /// The decoded tree, when the stream's description covers the section.
    body: Option<&'s Body<'a>>,
    /// The body bytes, record by record (an iterative section has several).
    bytes: Vec<&'a [u8]>,
}

impl SectionView<'_, '_> {
    fn bytes(&self) -> Vec<u8> {
        match self.body {
            Some(b) => b.to_bytes(),
            None => self.bytes.concat(),
        }
    }
}

type SectionKey<'a> = (&'a [u8], u32);

fn sections<'s, 'a>(
    s: &'s Stream<'a>,
) -> (
    Vec<SectionKey<'a>>,
    HashMap<SectionKey<'a>, SectionView<'s, 'a>>,
) {
    let mut order = Vec::new();
    let mut m: HashMap<SectionKey<'a>, SectionView<'s, 'a>> = HashMap::new();
    for e in &s.entries {
        let (section, body, bytes) = match &e.item {
            Item::Device { section, body, .. } => (section, Some(body), None),
            Item::Opaque { section, body } => (section, None, Some(*body)),
            _ => continue,
        };
        let key = (section.idstr, section.instance_id);
        let v = m.entry(key).or_insert_with(|| {
            order.push(key);
            SectionView {
                version: section.version_id,
                body: None,
                bytes: Vec::new(),
            }
        });
        if body.is_some() {
            v.body = body;
        }
        v.bytes.extend(bytes);
    }
    (order, m)
}

fn section_path(key: &SectionKey<'_>) -> String {
    format!("{}[{}]", Escaped(key.0), key.1)
}

/// The first index where `a` and `b` differ, if they differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    let common = a.len().min(b.len());
    let at = a[..common]
        .chunks(64)
        .zip(b[..common].chunks(64))
        .position(|(x, y)| x != y);
    match at {
        Some(chunk) => {
            let start = chunk * 64;
            let i = a[start..]
                .iter()
                .zip(&b[start..])
                .position(|(x, y)| x != y)?;
            Some(start + i)
        }
        None if a.len() != b.len() => Some(common),
        None => None,
    }
}

/// What a stream says a RAM page holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Page<'a> {
    Fill(u8),
    Data(&'a [u8]),
    Xbzrle,
}

impl Page<'_> {
    fn describe(&self) -> &'static str {
        match self {
            Page::Fill(_) => "zero page",
            Page::Data(_) => "data page",
            Page::Xbzrle => "XBZRLE page (a delta, not compared)",
        }
    }

    fn byte(&self, i: usize) -> Option<u8> {
        match self {
            Page::Fill(f) => Some(*f),
            Page::Data(d) => d.get(i).copied(),
            Page::Xbzrle => None,
        }
    }
}

/// Compares two pages' contents: `None` when equal, else the first differing byte and how
/// many bytes differ.
fn page_difference(a: &Page<'_>, b: &Page<'_>) -> Option<(usize, usize)> {
    match (a, b) {
        (Page::Fill(x), Page::Fill(y)) if x == y => None,
        (Page::Data(x), Page::Data(y)) if x == y => None,
        (Page::Fill(f), Page::Data(d)) | (Page::Data(d), Page::Fill(f)) => {
            let first = d.iter().position(|b| b != f)?;
            Some((first, d.iter().filter(|b| *b != f).count()))
        }
        (Page::Data(x), Page::Data(y)) => {
            let first = first_difference(x, y)?;
            let n =
                x.iter().zip(y.iter()).filter(|(p, q)| p != q).count() + x.len().abs_diff(y.len());
            Some((first, n))
        }
        // Different fill bytes: every byte differs (the page size is not known here).
        _ => Some((0, 0)),
    }
}

/// A RAM block list: names and lengths.
type Blocks<'a> = [(&'a [u8], u64)];

/// A page record: block, offset, what it holds.
type PageRecord<'a> = (&'a [u8], u64, Page<'a>);

/// What a RAM record says about a page, if it is a page record.
fn page_record<'a>(rec: &RamRecord<'a>) -> Option<PageRecord<'a>> {
    match *rec {
        RamRecord::Zero {
            block,
            offset,
            fill,
            ..
        } => Some((block, offset, Page::Fill(fill))),
        RamRecord::Page {
            block,
            offset,
            data,
            ..
        } => Some((block, offset, Page::Data(data))),
        RamRecord::Xbzrle { block, offset, .. } => Some((block, offset, Page::Xbzrle)),
        _ => None,
    }
}

/// The pages of a mapped-ram block list, as the page records a stream without mapped-ram
/// sends for them (see the module docs), each with the stream offset of its place in the pages
/// region (the walk reports it as reached, so the input behind it is released); nothing for
/// another list. One page at a time: the bytes stay in the mapped input.
fn mapped_pages<'a>(
    list: vmstate::ram::BlockList<'a>,
) -> impl Iterator<Item = (PageRecord<'a>, Option<usize>)> {
    list.entries()
        .filter_map(|(b, layout)| Some((b.name, layout?)))
        .flat_map(move |(name, layout)| {
            (0..layout.pages()).map(move |i| {
                let page = list
                    .mapped_page(&layout, i)
                    .map_or(Page::Fill(0), Page::Data);
                let at = layout
                    .page_offset(i)
                    .and_then(|at| layout.stream_offset(at))
                    .and_then(|at| usize::try_from(at).ok());
                ((name, i.saturating_mul(PAGE_SIZE as u64), page), at)
            })
        })
}

/// The page records one RAM record stands for (each with where the walk reached, see
/// [`mapped_pages`]): itself if it is one, a mapped-ram block list's pages.
fn pages_of<'a>(
    rec: &RamRecord<'a>,
) -> impl Iterator<Item = (PageRecord<'a>, Option<usize>)> + use<'a> {
    let mapped = match rec {
        RamRecord::MemSize(list) if list.is_mapped_ram() => Some(mapped_pages(*list)),
        _ => None,
    };
    page_record(rec)
        .map(|p| (p, None))
        .into_iter()
        .chain(mapped.into_iter().flatten())
}

/// One kept stream's page records in stream order, read again from its entries.
fn kept_pages<'s, 'a>(s: &'s Stream<'a>) -> impl Iterator<Item = PageRecord<'a>> + 's {
    s.entries
        .iter()
        .filter_map(|e| match &e.item {
            Item::Ram { records, .. } => Some(records.iter()),
            _ => None,
        })
        .flatten()
        .flat_map(|r| pages_of(&r).map(|(p, _)| p))
}

/// The RAM block list a stream declares, gathered record by record: every block of the
/// MEM_SIZE records of a START section before its first page.
#[derive(Debug, Default)]
struct BlockList<'a> {
    blocks: Vec<(&'a [u8], u64)>,
    /// A page was read in the START section being read.
    paged: bool,
}

impl<'a> BlockList<'a> {
    fn record(&mut self, kind: SectionKind, rec: &RamRecord<'a>) {
        if kind != SectionKind::Start || self.paged {
            return;
        }
        match rec {
            RamRecord::MemSize(list) => {
                for b in list.iter() {
                    if !self.blocks.iter().any(|(n, _)| *n == b.name) {
                        self.blocks.push((b.name, b.length));
                    }
                }
            }
            RamRecord::Zero { .. } | RamRecord::Page { .. } => self.paged = true,
            _ => {}
        }
    }

    /// The list of a kept stream (reading its START sections' records again).
    fn of(s: &Stream<'a>) -> Self {
        let mut l = BlockList::default();
        for e in &s.entries {
            if let Item::Ram { section, records } = &e.item {
                records.iter().for_each(|r| l.record(section.kind, &r));
                l.paged = false;
            }
        }
        l
    }
}

/// Which stream an input offset belongs to, for [`diff_walked`]'s progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first stream.
    A,
    /// The second stream.
    B,
}

/// All differences between two decoded streams, collected.
pub fn diff(a: &Stream<'_>, b: &Stream<'_>) -> Vec<Difference> {
    let mut out = Vec::new();
    compare(a, b, &mut |d| out.push(d), false);
    out
}

/// [`diff`] handing each difference to `found`; `by_block` forces the block-by-block page
/// comparison (for tests).
fn compare<'a>(
    a: &Stream<'a>,
    b: &Stream<'a>,
    found: &mut dyn FnMut(Difference),
    by_block: bool,
) -> Compared {
    let mut c = Compared::default();
    let lists = (BlockList::of(a).blocks, BlockList::of(b).blocks);
    let infallible = &mut |d| {
        found(d);
        Ok::<(), std::convert::Infallible>(())
    };
    let Ok(names) = heads(a, b, (&lists.0, &lists.1), &mut c, infallible);
    let rank = ranks(&names);
    let mut pages = Vec::new();
    let mut merged = Compared::default();
    let (mut xs, mut ys) = (kept_pages(a), kept_pages(b));
    let (x, y) = (xs.next(), ys.next());
    if !by_block
        && merge(x, &mut xs, y, &mut ys, &rank, &mut merged, &mut |d| {
            pages.push(d)
        })
    {
        c.add_pages(&merged);
        pages.into_iter().for_each(found);
    } else {
        let Ok(()) = by_blocks(a, b, &names, &rank, &mut c, infallible);
    }
    c
}

/// Why [`diff_walked`] stopped.
#[derive(Debug)]
pub enum DiffError<E> {
    /// A stream is refused (with the message `vmstate_cli::model::Stream::parse` gives).
    Stream(Side, crate::model::StreamError),
    /// The temporary file holding the page differences failed.
    Spool(std::io::Error),
    /// `found` failed.
    Found(E),
}

/// Walks the streams `a` and `b` (bytes, description, see [`crate::model::find_description`],
/// and the file offset of the stream's byte 0, [`crate::input::Input::stream_start`]) side by
/// side, comparing their pages as the walks read
/// them (each RAM record is read once), and hands each difference to `found`: first the
/// records and sections, then the pages (kept in `spool` until the walks are done, since the
/// sections follow the pages in a stream). Returns what was compared. A refused stream is
/// reported as [`Stream::parse`] reports it, the first stream first. Only a stream that sends a
/// page twice or out of order has its pages read again, block by block (see the module docs).
pub fn diff_walked<'a, E, S: std::io::Read + std::io::Write + std::io::Seek>(
    a: (&'a [u8], Option<Description<'a>>, u64),
    b: (&'a [u8], Option<Description<'a>>, u64),
    spool: S,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
    reached: &mut dyn FnMut(Side, usize),
) -> Result<Compared, DiffError<E>> {
    let options = |file_offset| ParseOptions {
        file_offset,
        ..ParseOptions::default()
    };
    let (mut wa, mut wb) = (
        Walk::new(a.0, a.1.as_ref(), options(a.2)),
        Walk::new(b.0, b.1.as_ref(), options(b.2)),
    );
    let (mut fa, mut fb) = (Feed::default(), Feed::default());
    let reached = std::cell::RefCell::new(reached);
    let mut ra = |at| (reached.borrow_mut())(Side::A, at);
    let mut xs = Walked::new(&mut wa, &mut fa, &mut ra);
    let x = xs.next();
    let mut rb = |at| (reached.borrow_mut())(Side::B, at);
    let mut ys = Walked::new(&mut wb, &mut fb, &mut rb);
    let y = ys.next();
    // Both block lists are complete: each precedes its stream's first page.
    let names = list_names(&xs.feed.list.blocks, &ys.feed.list.blocks);
    let rank = ranks(&names);
    let mut pages = Spool::new(spool);
    let mut merged = Compared::default();
    let in_order = merge(x, &mut xs, y, &mut ys, &rank, &mut merged, &mut |d| {
        pages.push(&[&d.path, &d.a, &d.b]);
    });
    // Out of order: the walks go on to their ends, the pages are compared from the entries.
    xs.by_ref().for_each(drop);
    ys.by_ref().for_each(drop);
    let (ea, eb) = (xs.error.take(), ys.error.take());
    let finish = |walk: Walk<'_, 'a>, error, side| match error {
        Some(e) => Err(DiffError::Stream(side, e)),
        None => walk.finish().map_err(|e| DiffError::Stream(side, e)),
    };
    let lists = (fa.list.blocks, fb.list.blocks);
    // A block listed after the first pages (never by QEMU) was not ranked: block by block.
    let in_order = in_order && list_names(&lists.0, &lists.1) == names;
    let mut sa = finish(wa, ea, Side::A)?;
    sa.description = a.1;
    let mut sb = finish(wb, eb, Side::B)?;
    sb.description = b.1;
    let mut c = Compared::default();
    let found_e = &mut |d| found(d).map_err(DiffError::Found);
    let names = heads(&sa, &sb, (&lists.0, &lists.1), &mut c, found_e)?;
    if in_order {
        c.add_pages(&merged);
        let mut failed = None;
        let read = pages.rows(3, &mut |row| {
            let Ok([path, a, b]) = <[String; 3]>::try_from(row) else {
                return Err(std::io::Error::other(
                    "a spooled difference is not 3 strings",
                ));
            };
            found_e(Difference { path, a, b }).map_err(|e| {
                failed = Some(e);
                std::io::Error::other("found")
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        read.map_err(DiffError::Spool)?;
    } else {
        by_blocks(&sa, &sb, &names, &ranks(&names), &mut c, found_e)?;
    }
    Ok(c)
}

/// The pages of a mapped-ram block list, handed out one at a time ([`mapped_pages`]).
type Pages<'a> = Box<dyn Iterator<Item = (PageRecord<'a>, Option<usize>)> + 'a>;

/// A visitor of one walk for [`diff_walked`]: keeps every entry, gathers the block list and
/// holds the page the walk has just read, or the pages of a mapped-ram block list.
#[derive(Default)]
struct Feed<'a> {
    list: BlockList<'a>,
    page: Option<PageRecord<'a>>,
    mapped: Option<Pages<'a>>,
}

impl<'a> Visit<'a> for Feed<'a> {
    fn ram(&mut self, kind: SectionKind, record: &RamRecord<'a>) {
        self.list.record(kind, record);
        self.page = page_record(record);
        if let RamRecord::MemSize(list) = record
            && list.is_mapped_ram()
        {
            self.mapped = Some(Box::new(mapped_pages(*list)));
        }
    }

    fn entry(&mut self, _: &Stream<'a>, entry: Entry<'a>) -> Option<Entry<'a>> {
        self.list.paged = false;
        Some(entry)
    }
}

/// The pages of a walk, stepped as they are asked for; ends early (keeping the error) when
/// the stream is refused.
struct Walked<'w, 'd, 'a> {
    walk: &'w mut Walk<'d, 'a>,
    feed: &'w mut Feed<'a>,
    reached: &'w mut dyn FnMut(usize),
    error: Option<crate::model::StreamError>,
}

impl<'w, 'd, 'a> Walked<'w, 'd, 'a> {
    /// One side of the comparison, before its first page.
    fn new(
        walk: &'w mut Walk<'d, 'a>,
        feed: &'w mut Feed<'a>,
        reached: &'w mut dyn FnMut(usize),
    ) -> Self {
        Walked {
            walk,
            feed,
            reached,
            error: None,
        }
    }
}

impl<'a> Iterator for Walked<'_, '_, 'a> {
    type Item = PageRecord<'a>;

    fn next(&mut self) -> Option<PageRecord<'a>> {
        loop {
            if let Some(p) = self.feed.page.take() {
                return Some(p);
            }
            if let Some((p, reached)) = self.feed.mapped.as_mut().and_then(Iterator::next) {
                if let Some(at) = reached {
                    (self.reached)(at);
                }
                return Some(p);
            }
            self.feed.mapped = None;
            match self.walk.step(self.reached, self.feed) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            }
        }
    }
}

/// The block names of both lists: the first stream's, then the second's others.
fn list_names<'a>(la: &[(&'a [u8], u64)], lb: &[(&'a [u8], u64)]) -> Vec<&'a [u8]> {
    let mut names: Vec<&[u8]> = la.iter().map(|(n, _)| *n).collect();
    for (n, _) in lb {
        if !names.contains(n) {
            names.push(n);
        }
    }
    names
}

/// Each block name's rank: pages are ordered by (rank, offset).
fn ranks<'a>(names: &[&'a [u8]]) -> HashMap<&'a [u8], usize> {
    names.iter().enumerate().map(|(i, n)| (*n, i)).collect()
}

impl Compared {
    fn add_pages(&mut self, pages: &Compared) {
        self.pages += pages.pages;
        self.pages_one_sided += pages.pages_one_sided;
        self.xbzrle += pages.xbzrle;
        self.differences += pages.differences;
    }
}

/// Counts a difference and hands it to `found`.
fn push<E>(
    c: &mut Compared,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
    path: String,
    x: Option<&str>,
    y: Option<&str>,
) -> Result<(), E> {
    c.differences += 1;
    found(Difference {
        path,
        a: x.unwrap_or("-").to_string(),
        b: y.unwrap_or("-").to_string(),
    })
}

/// Compares everything but the pages: file version, configuration, commands, device
/// sections, RAM block lists (`la`, `lb`: the first and the second stream's). Returns the block
/// names in rank order.
fn heads<'a, E>(
    a: &Stream<'a>,
    b: &Stream<'a>,
    (la, lb): (&Blocks<'a>, &Blocks<'a>),
    c: &mut Compared,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
) -> Result<Vec<&'a [u8]>, E> {
    let mut push = |c: &mut Compared, path: String, x: Option<&str>, y: Option<&str>| {
        push(c, found, path, x, y)
    };
    if a.version != b.version {
        let (x, y) = (a.version.to_string(), b.version.to_string());
        push(c, "file version".into(), Some(&x), Some(&y))?;
    }
    let machine = |s: &Stream<'_>| s.configuration.map(|c| Escaped(c.machine).to_string());
    if machine(a) != machine(b) {
        push(
            c,
            "configuration.machine".into(),
            machine(a).as_deref(),
            machine(b).as_deref(),
        )?;
    } else if a.configuration != b.configuration {
        // Same machine: the capabilities, page bits or UUID differ.
        let rest = |s: &Stream<'_>| {
            s.configuration.map(|c| {
                let caps: Vec<String> = c
                    .capabilities
                    .iter()
                    .flat_map(|l| l.iter())
                    .map(|n| Escaped(n).to_string())
                    .collect();
                format!(
                    "target-page-bits {:?}, capabilities [{}], uuid {:02x?}",
                    c.target_page_bits,
                    caps.join(", "),
                    c.uuid
                )
            })
        };
        push(
            c,
            "configuration".into(),
            rest(a).as_deref(),
            rest(b).as_deref(),
        )?;
    }
    // COMMAND records (SWITCHOVER_START in streams of machine types >= 10.0), in order.
    let commands = |s: &Stream<'_>| {
        let names: Vec<&str> = s
            .entries
            .iter()
            .filter_map(|e| match &e.item {
                Item::Command(c) => Some(c.id.name()),
                _ => None,
            })
            .collect();
        (!names.is_empty()).then(|| names.join(", "))
    };
    if commands(a) != commands(b) {
        push(
            c,
            "commands".into(),
            commands(a).as_deref(),
            commands(b).as_deref(),
        )?;
    }
    // Device sections.
    let ((order_a, sa), (order_b, sb)) = (sections(a), sections(b));
    let mut keys = order_a.clone();
    keys.sort_unstable();
    let mut keys_b = order_b.clone();
    keys_b.sort_unstable();
    let mut all: Vec<SectionKey<'_>> = keys.iter().chain(&keys_b).copied().collect();
    all.sort_unstable();
    all.dedup();
    for key in &all {
        let path = section_path(key);
        let (x, y) = match (sa.get(key), sb.get(key)) {
            (Some(x), Some(y)) => (x, y),
            (Some(_), None) => {
                c.one_sided += 1;
                push(c, path, Some("present"), None)?;
                continue;
            }
            (None, Some(_)) => {
                c.one_sided += 1;
                push(c, path, None, Some("present"))?;
                continue;
            }
            (None, None) => continue,
        };
        if x.version != y.version {
            let (vx, vy) = (x.version.to_string(), y.version.to_string());
            push(c, format!("{path}#version"), Some(&vx), Some(&vy))?;
        }
        if let (Some(bx), Some(by)) = (x.body, y.body) {
            c.decoded += 1;
            let (mut la, mut lb) = (Vec::new(), Vec::new());
            body_leaves(&path, bx, &mut la);
            body_leaves(&path, by, &mut lb);
            let mb: BTreeMap<&str, &str> =
                lb.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
            let ma: BTreeMap<&str, &str> =
                la.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
            for (p, va) in &la {
                let vb = mb.get(p.as_str()).copied();
                if vb != Some(va.as_str()) {
                    push(c, p.clone(), Some(va), vb)?;
                }
            }
            for (p, vb) in &lb {
                if !ma.contains_key(p.as_str()) {
                    push(c, p.clone(), None, Some(vb))?;
                }
            }
            continue;
        }
        // Not decoded on at least one side: the body bytes.
        c.as_bytes += 1;
        let (bx, by) = (x.bytes(), y.bytes());
        if let Some(i) = first_difference(&bx, &by) {
            let show = |v: &[u8]| {
                let byte = v.get(i).map_or("end".to_string(), |b| format!("{b:#04x}"));
                format!("{byte} ({} bytes, not decoded)", v.len())
            };
            push(
                c,
                format!("{path}#body+{i:#x}"),
                Some(&show(&bx)),
                Some(&show(&by)),
            )?;
        }
    }

    // RAM block lists: names, lengths, order.
    let names = list_names(la, lb);
    c.blocks = names.len();
    for n in &names {
        let len = |l: &[(&[u8], u64)]| {
            l.iter()
                .find(|(m, _)| m == n)
                .map(|(_, len)| format!("{len:#x}"))
        };
        let (x, y) = (len(la), len(lb));
        if x != y {
            push(
                c,
                format!("ram:{}#length", Escaped(n)),
                x.as_deref(),
                y.as_deref(),
            )?;
        }
    }
    let common = |l: &[(&[u8], u64)], other: &[(&[u8], u64)]| -> Vec<String> {
        l.iter()
            .filter(|(n, _)| other.iter().any(|(m, _)| m == n))
            .map(|(n, _)| Escaped(n).to_string())
            .collect()
    };
    let (ca, cb) = (common(la, lb), common(lb, la));
    if ca != cb {
        push(
            c,
            "ram#block-order".into(),
            Some(&ca.join(", ")),
            Some(&cb.join(", ")),
        )?;
    }

    Ok(names)
}

/// Compares one page as the two streams send it (`None`: not sent).
fn page<E>(
    c: &mut Compared,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
    block: &[u8],
    off: u64,
    x: Option<Page<'_>>,
    y: Option<Page<'_>>,
) -> Result<(), E> {
    let mut push = |c: &mut Compared, path: String, x: Option<&str>, y: Option<&str>| {
        push(c, found, path, x, y)
    };
    let path = format!("ram:{}@{off:#x}", Escaped(block));
    match (x, y) {
        (Some(Page::Xbzrle), _) | (_, Some(Page::Xbzrle)) => {
            c.xbzrle += 1;
            let d = |p: Option<Page<'_>>| p.map_or("absent", |p| p.describe());
            push(c, path, Some(d(x)), Some(d(y)))
        }
        (Some(x), Some(y)) => {
            c.pages += 1;
            match page_difference(&x, &y) {
                None => Ok(()),
                Some((i, n)) => {
                    let byte =
                        |p: &Page<'_>| p.byte(i).map_or("end".into(), |b| format!("{b:#04x}"));
                    let many = if n == 0 {
                        "every byte of the page differs".to_string()
                    } else {
                        format!("{n} bytes of the page differ")
                    };
                    push(
                        c,
                        format!("{path}+{i:#x}"),
                        Some(&byte(&x)),
                        Some(&format!("{} ({many})", byte(&y))),
                    )
                }
            }
        }
        (x, y) => {
            c.pages_one_sided += 1;
            let d = |p: Option<Page<'_>>| p.map_or("absent", |p| p.describe());
            push(c, path, Some(d(x)), Some(d(y)))
        }
    }
}

/// Merges two streams' pages, each in stream order, by (block rank, offset), comparing each
/// page (`x`, `y`: the first of each). Returns `false` as soon as a stream sends a page twice
/// or out of order (what was compared until then is not complete: compare block by block).
fn merge<'a>(
    mut x: Option<PageRecord<'a>>,
    xs: &mut dyn Iterator<Item = PageRecord<'a>>,
    mut y: Option<PageRecord<'a>>,
    ys: &mut dyn Iterator<Item = PageRecord<'a>>,
    rank: &HashMap<&'a [u8], usize>,
    c: &mut Compared,
    found: &mut dyn FnMut(Difference),
) -> bool {
    let key = |p: &PageRecord<'a>| (rank.get(p.0).copied().unwrap_or(usize::MAX), p.1);
    let (mut last_x, mut last_y) = (None, None);
    let found = &mut |d| {
        found(d);
        Ok::<(), std::convert::Infallible>(())
    };
    loop {
        let (kx, ky) = (x.as_ref().map(key), y.as_ref().map(key));
        if kx.is_some_and(|k| last_x >= Some(k)) || ky.is_some_and(|k| last_y >= Some(k)) {
            return false;
        }
        let order = match (kx, ky) {
            (None, None) => return true,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(p), Some(q)) => p.cmp(&q),
        };
        let (px, py) = (x.filter(|_| order.is_le()), y.filter(|_| order.is_ge()));
        let (block, off) = px.or(py).map(|p| (p.0, p.1)).unwrap_or_default();
        let Ok(()) = page(c, found, block, off, px.map(|p| p.2), py.map(|p| p.2));
        if order.is_le() {
            last_x = kx;
            x = xs.next();
        }
        if order.is_ge() {
            last_y = ky;
            y = ys.next();
        }
    }
}

/// Compares the pages of two kept streams block by block, the last copy of each page
/// (memory: one block's page references, not its data).
fn by_blocks<'a, E>(
    a: &Stream<'a>,
    b: &Stream<'a>,
    names: &[&'a [u8]],
    rank: &HashMap<&'a [u8], usize>,
    c: &mut Compared,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
) -> Result<(), E> {
    for (i, name) in names.iter().enumerate() {
        let (ia, ib) = (page_index(a, rank, i), page_index(b, rank, i));
        let (mut ia, mut ib) = (ia.into_iter().peekable(), ib.into_iter().peekable());
        loop {
            let order = match (ia.peek(), ib.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(p), Some(q)) => p.0.cmp(&q.0),
            };
            let px = if order.is_le() { ia.next() } else { None };
            let py = if order.is_ge() { ib.next() } else { None };
            let off = px.or(py).map_or(0, |p| p.0);
            page(c, found, name, off, px.map(|p| p.1), py.map(|p| p.1))?;
        }
    }
    Ok(())
}

/// The pages of the block ranked `block` in `s`, by offset, the last copy of each page.
fn page_index<'a>(
    s: &Stream<'a>,
    rank: &HashMap<&'a [u8], usize>,
    block: usize,
) -> Vec<(u64, Page<'a>)> {
    let mut v = Vec::new();
    for (name, off, p) in kept_pages(s) {
        if rank.get(name).copied().unwrap_or(usize::MAX) == block {
            v.push((off, p));
        }
    }
    // Stable: the last copy of a page stays last among its equals.
    v.sort_by_key(|(off, _)| *off);
    let mut last: Vec<(u64, Page<'a>)> = Vec::with_capacity(v.len());
    for (off, p) in v {
        match last.last_mut() {
            Some(l) if l.0 == off => l.1 = p,
            _ => last.push((off, p)),
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../host-tests/fixtures/{name}.vmstate",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Both page comparisons (the merge of two in-order walks, and block by block) find the
    /// same differences, in the same order, on real streams.
    /// Whether the merge of the two kept streams' pages runs to the end (both send their pages
    /// in one increasing run against the common block order).
    /// `diff_walked` over two streams (each with its own description, at file offset 0): its
    /// count and the differences it reported.
    fn walked(a: &[u8], b: &[u8]) -> (Compared, Vec<Difference>) {
        let desc = |b| crate::model::find_description(b).unwrap().map(|(_, d)| d);
        let mut got = Vec::new();
        let c = diff_walked::<std::convert::Infallible, _>(
            (a, desc(a), 0),
            (b, desc(b), 0),
            std::io::Cursor::new(Vec::new()),
            &mut |d| {
                got.push(d);
                Ok(())
            },
            &mut |_, _| {},
        )
        .unwrap();
        (c, got)
    }

    fn pages_in_one_run(a: &Stream<'_>, b: &Stream<'_>) -> bool {
        let names = list_names(&BlockList::of(a).blocks, &BlockList::of(b).blocks);
        let rank = ranks(&names);
        let (mut xs, mut ys) = (kept_pages(a), kept_pages(b));
        let (x, y) = (xs.next(), ys.next());
        let mut compared = Compared::default();
        merge(x, &mut xs, y, &mut ys, &rank, &mut compared, &mut |_| {})
    }

    #[test]
    fn merge_and_block_by_block_agree() {
        let names = ["pc-7.2-nodefaults-S", "pc-7.2-bios", "q72-pc-i440fx-7.2"];
        let bytes: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
        let streams: Vec<Stream<'_>> = bytes.iter().map(|b| Stream::parse(b).unwrap()).collect();
        let mut in_order = 0;
        for a in &streams {
            for b in &streams {
                let run = |by_block| {
                    let mut out = Vec::new();
                    let c = compare(a, b, &mut |d| out.push(d), by_block);
                    (c, out)
                };
                let (merged, by_block) = (run(false), run(true));
                in_order += usize::from(merged.0.pages > 0 && pages_in_one_run(a, b));
                assert_eq!(merged, by_block);
                assert_eq!(merged.0.differences as usize, merged.1.len());
            }
        }
        // The merge ran (QEMU's streams send each page once, in order).
        assert!(in_order > 0);
    }

    /// A mapped-ram file's pages (its bitmap and pages regions) are compared as page records:
    /// walked side by side, from the kept streams, merged and block by block, all agree, and
    /// every page of every block is compared.
    #[test]
    fn mapped_ram_pages_are_compared_every_way_alike() {
        let names = [
            "q10-pc-i440fx-10.0-mapped-ram",
            "q10-pc-q35-10.0-mapped-ram-multifd",
            "q10-pc-i440fx-10.0",
        ];
        let bytes: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
        let streams: Vec<Stream<'_>> = bytes.iter().map(|b| Stream::parse(b).unwrap()).collect();
        for (a, (sa, ba)) in streams.iter().zip(&bytes).enumerate() {
            for (sb, bb) in streams.iter().zip(&bytes) {
                let run = |by_block| {
                    let mut out = Vec::new();
                    let c = compare(sa, sb, &mut |d| out.push(d), by_block);
                    (c, out)
                };
                let (merged, by_block) = (run(false), run(true));
                assert_eq!(merged, by_block);
                assert_eq!(walked(ba, bb), merged);
            }
            // Against itself: every page of the block list, no difference.
            let mut out = Vec::new();
            let c = compare(sa, sa, &mut |d| out.push(d), false);
            assert!(out.is_empty());
            let pages: u64 = BlockList::of(sa)
                .blocks
                .iter()
                .map(|(_, len)| len / PAGE_SIZE as u64)
                .sum();
            assert_eq!(c.pages, pages, "{}", names[a]);
        }
    }

    /// `diff` walks both streams side by side (as `vmstate diff` runs it): each FULL body is
    /// decoded once and each RAM record read once, none again from the kept entries when both
    /// send their pages in one increasing run (QEMU's streams of one machine type do; streams
    /// whose block lists differ in order are compared block by block from the entries, as
    /// documented), and it finds what comparing the two decoded streams finds, in order.
    #[test]
    fn diff_walks_each_stream_once_and_finds_what_the_kept_streams_show() {
        use crate::model::reads;
        let names = [
            "pc-7.2-bios",
            "pc-7.2-serial",
            "q72-pc-i440fx-7.2",
            "q10-pc-i440fx-7.2",
        ];
        let bytes: Vec<Vec<u8>> = names.iter().map(|n| fixture(n)).collect();
        let mut merged = 0;
        for (i, a) in bytes.iter().enumerate() {
            for b in &bytes[i..] {
                let (sa, sb) = (Stream::parse(a).unwrap(), Stream::parse(b).unwrap());
                let want = diff(&sa, &sb);
                let in_order = pages_in_one_run(&sa, &sb);
                merged += usize::from(in_order);
                let ((ra, da), (rb, db)) = (reads::held(&sa), reads::held(&sb));
                reads::take();
                let (c, got) = walked(a, b);
                let (walked, again, decoded) = reads::take();
                assert_eq!((walked, decoded), (ra + rb, da + db));
                if in_order {
                    assert_eq!(again, 0);
                } else {
                    assert!(again > 0);
                }
                assert_eq!(got, want);
                assert_eq!(c, compare(&sa, &sb, &mut |_| {}, false));
                assert!(c.pages > 8000, "{c}");
            }
        }
        assert!(merged >= 5, "{merged}");
    }
}
