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
//!   XBZRLE page (a delta against an earlier copy) is reported as not compared.
//! * The configuration record, COMMAND records and the file version. The trailer is not
//!   compared as such: it describes the sections, which are.
//!
//! Nothing is reported as equal that was not compared: [`Compared`] lists what was.
//!
//! Memory: pages are not collected. Each stream's pages are walked in stream order and merged
//! by (block, offset), which is exact when each stream sends every block's pages in one
//! increasing run (a snapshot does); a stream that sends a page twice or out of order is
//! compared block by block instead, holding one block's page index (not its data) at a time.
//! Differences are handed to the caller one by one ([`diff_to`]), not kept.

use crate::generic::{Body, Value};
use crate::model::{Item, Stream};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use vmstate::Escaped;
use vmstate::ram::RamRecord;

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

/// Walks one stream's page records in stream order: (block rank, offset, page, input offset).
struct Pages<'s, 'a> {
    entries: std::slice::Iter<'s, crate::model::Entry<'a>>,
    current: Option<crate::model::RamIter<'a>>,
    rank: &'s HashMap<&'a [u8], usize>,
}

impl<'s, 'a> Pages<'s, 'a> {
    fn new(s: &'s Stream<'a>, rank: &'s HashMap<&'a [u8], usize>) -> Self {
        Pages {
            entries: s.entries.iter(),
            current: None,
            rank,
        }
    }
}

impl<'a> Iterator for Pages<'_, 'a> {
    type Item = (usize, &'a [u8], u64, Page<'a>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(it) = &mut self.current {
                let at = it.offset();
                match it.next() {
                    Some(RamRecord::Zero {
                        block,
                        offset,
                        fill,
                        ..
                    }) => {
                        let r = self.rank.get(block).copied().unwrap_or(usize::MAX);
                        return Some((r, block, offset, Page::Fill(fill), at));
                    }
                    Some(RamRecord::Page {
                        block,
                        offset,
                        data,
                        ..
                    }) => {
                        let r = self.rank.get(block).copied().unwrap_or(usize::MAX);
                        return Some((r, block, offset, Page::Data(data), at));
                    }
                    Some(RamRecord::Xbzrle { block, offset, .. }) => {
                        let r = self.rank.get(block).copied().unwrap_or(usize::MAX);
                        return Some((r, block, offset, Page::Xbzrle, at));
                    }
                    Some(_) => continue,
                    None => self.current = None,
                }
            }
            let e = self.entries.next()?;
            if let Item::Ram { records, .. } = &e.item {
                self.current = Some(records.iter());
            }
        }
    }
}

/// The RAM block list a stream declares (every MEM_SIZE record, in order).
fn block_list<'a>(s: &Stream<'a>) -> Vec<(&'a [u8], u64)> {
    let mut out: Vec<(&'a [u8], u64)> = Vec::new();
    for e in &s.entries {
        let Item::Ram { section, records } = &e.item else {
            continue;
        };
        if section.kind != vmstate::wire::section::SectionKind::Start {
            continue;
        }
        for r in records {
            if let RamRecord::MemSize(list) = r {
                for b in list.iter() {
                    if !out.iter().any(|(n, _)| *n == b.name) {
                        out.push((b.name, b.length));
                    }
                }
            }
            if matches!(r, RamRecord::Zero { .. } | RamRecord::Page { .. }) {
                break;
            }
        }
    }
    out
}

/// Which stream an input offset belongs to, for [`diff_to`]'s progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first stream.
    A,
    /// The second stream.
    B,
}

/// All differences between `a` and `b`, collected (see [`diff_to`] for large streams).
pub fn diff(a: &Stream<'_>, b: &Stream<'_>) -> Vec<Difference> {
    let mut out = Vec::new();
    diff_to::<std::convert::Infallible>(
        a,
        b,
        &mut |d| {
            out.push(d);
            Ok(())
        },
        &mut |_, _| {},
    )
    .unwrap_or_default();
    out
}

/// Compares `a` and `b`, handing each difference to `found` as it is found (an error from
/// `found` stops the walk and is returned), and calling `reached` with the input offset each
/// walk over the RAM pages has reached (to release input behind it). Returns what was compared.
pub fn diff_to<E>(
    a: &Stream<'_>,
    b: &Stream<'_>,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
    reached: &mut dyn FnMut(Side, usize),
) -> Result<Compared, E> {
    compare(a, b, found, reached, false)
}

/// [`diff_to`]; `by_block` forces the block-by-block page comparison (for tests).
fn compare<E>(
    a: &Stream<'_>,
    b: &Stream<'_>,
    found: &mut dyn FnMut(Difference) -> Result<(), E>,
    reached: &mut dyn FnMut(Side, usize),
    by_block: bool,
) -> Result<Compared, E> {
    let mut c = Compared::default();
    let mut push = |c: &mut Compared, path: String, x: Option<&str>, y: Option<&str>| {
        c.differences += 1;
        found(Difference {
            path,
            a: x.unwrap_or("-").to_string(),
            b: y.unwrap_or("-").to_string(),
        })
    };
    if a.version != b.version {
        let (x, y) = (a.version.to_string(), b.version.to_string());
        push(&mut c, "file version".into(), Some(&x), Some(&y))?;
    }
    let machine = |s: &Stream<'_>| s.configuration.map(|c| Escaped(c.machine).to_string());
    if machine(a) != machine(b) {
        push(
            &mut c,
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
            &mut c,
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
            &mut c,
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
                push(&mut c, path, Some("present"), None)?;
                continue;
            }
            (None, Some(_)) => {
                c.one_sided += 1;
                push(&mut c, path, None, Some("present"))?;
                continue;
            }
            (None, None) => continue,
        };
        if x.version != y.version {
            let (vx, vy) = (x.version.to_string(), y.version.to_string());
            push(&mut c, format!("{path}#version"), Some(&vx), Some(&vy))?;
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
                    push(&mut c, p.clone(), Some(va), vb)?;
                }
            }
            for (p, vb) in &lb {
                if !ma.contains_key(p.as_str()) {
                    push(&mut c, p.clone(), None, Some(vb))?;
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
                &mut c,
                format!("{path}#body+{i:#x}"),
                Some(&show(&bx)),
                Some(&show(&by)),
            )?;
        }
    }

    // RAM block lists: names, lengths, order.
    let (la, lb) = (block_list(a), block_list(b));
    let mut names: Vec<&[u8]> = la.iter().map(|(n, _)| *n).collect();
    for (n, _) in &lb {
        if !names.contains(n) {
            names.push(n);
        }
    }
    c.blocks = names.len();
    for n in &names {
        let len = |l: &[(&[u8], u64)]| {
            l.iter()
                .find(|(m, _)| m == n)
                .map(|(_, len)| format!("{len:#x}"))
        };
        let (x, y) = (len(&la), len(&lb));
        if x != y {
            push(
                &mut c,
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
    let (ca, cb) = (common(&la, &lb), common(&lb, &la));
    if ca != cb {
        push(
            &mut c,
            "ram#block-order".into(),
            Some(&ca.join(", ")),
            Some(&cb.join(", ")),
        )?;
    }

    // RAM pages.
    let rank: HashMap<&[u8], usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let merge = !by_block
        && pages_in_order(a, &rank, &mut |at| reached(Side::A, at))
        && pages_in_order(b, &rank, &mut |at| reached(Side::B, at));
    let mut page = |c: &mut Compared,
                    block: &[u8],
                    off: u64,
                    x: Option<Page<'_>>,
                    y: Option<Page<'_>>|
     -> Result<(), E> {
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
    };
    if merge {
        let (mut pa, mut pb) = (Pages::new(a, &rank), Pages::new(b, &rank));
        let (mut x, mut y) = (pa.next(), pb.next());
        loop {
            if let Some(p) = &x {
                reached(Side::A, p.4);
            }
            if let Some(q) = &y {
                reached(Side::B, q.4);
            }
            let order = match (&x, &y) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(p), Some(q)) => (p.0, p.2).cmp(&(q.0, q.2)),
            };
            let (px, py) = (x.filter(|_| order.is_le()), y.filter(|_| order.is_ge()));
            let (block, off) = px.or(py).map(|p| (p.1, p.2)).unwrap_or_default();
            page(&mut c, block, off, px.map(|p| p.3), py.map(|p| p.3))?;
            if order.is_le() {
                x = pa.next();
            }
            if order.is_ge() {
                y = pb.next();
            }
        }
    } else {
        // A page sent twice, or out of order: block by block, the last copy of each page
        // (memory: one block's page references, not its data).
        for (i, name) in names.iter().enumerate() {
            let ia = page_index(a, &rank, i, &mut |at| reached(Side::A, at));
            let ib = page_index(b, &rank, i, &mut |at| reached(Side::B, at));
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
                page(&mut c, name, off, px.map(|p| p.1), py.map(|p| p.1))?;
            }
        }
    }
    Ok(c)
}

/// Whether `s` sends its pages in increasing (block rank, offset) order, each once.
fn pages_in_order<'a>(
    s: &Stream<'a>,
    rank: &HashMap<&'a [u8], usize>,
    reached: &mut dyn FnMut(usize),
) -> bool {
    let mut last: Option<(usize, u64)> = None;
    for (r, _, off, _, at) in Pages::new(s, rank) {
        reached(at);
        if last.is_some_and(|l| l >= (r, off)) {
            return false;
        }
        last = Some((r, off));
    }
    true
}

/// The pages of the block ranked `block` in `s`, by offset, the last copy of each page.
fn page_index<'a>(
    s: &Stream<'a>,
    rank: &HashMap<&'a [u8], usize>,
    block: usize,
    reached: &mut dyn FnMut(usize),
) -> Vec<(u64, Page<'a>)> {
    let mut v = Vec::new();
    for (r, _, off, p, at) in Pages::new(s, rank) {
        reached(at);
        if r == block {
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
                    let c = compare::<std::convert::Infallible>(
                        a,
                        b,
                        &mut |d| {
                            out.push(d);
                            Ok(())
                        },
                        &mut |_, _| {},
                        by_block,
                    )
                    .unwrap();
                    (c, out)
                };
                let (merged, by_block) = (run(false), run(true));
                in_order += usize::from(
                    merged.0.pages > 0 && {
                        let mut names: Vec<&[u8]> = block_list(a).iter().map(|(n, _)| *n).collect();
                        names.extend(block_list(b).iter().map(|(n, _)| *n));
                        let rank: HashMap<&[u8], usize> =
                            names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
                        pages_in_order(a, &rank, &mut |_| {})
                            && pages_in_order(b, &rank, &mut |_| {})
                    },
                );
                assert_eq!(merged, by_block);
                assert_eq!(merged.0.differences as usize, merged.1.len());
            }
        }
        // The merge ran (QEMU's streams send each page once, in order).
        assert!(in_order > 0);
    }
}
