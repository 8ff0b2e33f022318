//! The analyze-migration.py `-d state` text, written straight into a buffer.
//!
//! [`crate::Stream::analyze_state`] builds the same object as a `serde_json::Value` and
//! [`crate::pretty_json`] prints it. That tree costs an allocation and a hash per key and a
//! formatted `String` per value; `vmstate inspect --json` spends most of its time there. This
//! writer walks the decoded stream once and appends the identical bytes: serde_json's pretty
//! layout with a four-space indent, and a JSON object's rule for a repeated key (the first
//! position keeps the last value).

use crate::desc::string_run;
use crate::generic::{Body, Leaf, Value, analyze_reader};
use crate::model::{Item, SectionMeta, Stream};
use vmstate::ram::RamRecord;
use vmstate::wire::section::SectionKind;

/// Appends the `-d state` text of `stream` (with the final newline) to `out`. `false` when the
/// stream has no description (nothing is written then).
pub fn write_state(stream: &Stream<'_>, out: &mut Vec<u8>) -> bool {
    write_chunked(stream, out, &mut |_| {})
}

/// Bytes [`write_state_to`] collects before handing them to the writer: small enough that
/// the buffer's pages are few and stay warm (a 100 KiB text in one buffer costs a page fault
/// per 4 KiB), large enough that the writes are few.
const CHUNK: usize = 16 << 10;

/// Writes the `-d state` text of `stream` (with the final newline) to `out` in chunks.
/// `Ok(false)` when the stream has no description (nothing is written then).
pub fn write_state_to(stream: &Stream<'_>, out: &mut dyn std::io::Write) -> std::io::Result<bool> {
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    let mut failed = None;
    let mut flush = |b: &mut Vec<u8>| {
        if failed.is_none()
            && let Err(e) = out.write_all(b)
        {
            failed = Some(e);
        }
        b.clear();
    };
    if !write_chunked(stream, &mut buf, &mut flush) {
        return Ok(false);
    }
    flush(&mut buf);
    match failed {
        Some(e) => Err(e),
        None => Ok(true),
    }
}

/// [`write_state`], calling `flush` with the buffer whenever it holds [`CHUNK`] bytes or more
/// at the end of a line (`flush` empties it, or leaves it to grow).
fn write_chunked(
    stream: &Stream<'_>,
    out: &mut Vec<u8>,
    flush: &mut dyn FnMut(&mut Vec<u8>),
) -> bool {
    if stream.description.is_none() {
        return false;
    }
    let mut w = Writer {
        out,
        depth: 0,
        flush,
    };
    let entries: Vec<(String, Top<'_, '_>)> = stream
        .entries
        .iter()
        .filter_map(|e| match &e.item {
            Item::Ram { section, records } if section.kind == SectionKind::Start => {
                Some((key(section), Top::Ram(records)))
            }
            Item::Device { section, body, .. } => Some((key(section), Top::Device(body))),
            _ => None,
        })
        .collect();
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    w.object(&keys, |w, i| match &entries[i].1 {
        Top::Device(body) => w.body(body),
        Top::Ram(records) => {
            let mut sizes: Vec<(String, u64)> = Vec::new();
            for r in *records {
                if let RamRecord::MemSize(list) = r {
                    for b in list.iter() {
                        sizes.push((String::from_utf8_lossy(b.name).into_owned(), b.length));
                    }
                }
            }
            w.object(&["section sizes"], |w, _| {
                let keys: Vec<&str> = sizes.iter().map(|(k, _)| k.as_str()).collect();
                w.object(&keys, |w, j| {
                    w.int(sizes[j].1, 8, false);
                });
            });
        }
    });
    w.out.push(b'\n');
    true
}

/// The `-d state` text of one body (no final newline), as [`write_state`] writes it.
#[cfg(test)]
pub(crate) fn write_body(body: &Body<'_>, out: &mut Vec<u8>) {
    Writer {
        out,
        depth: 0,
        flush: &mut |_| {},
    }
    .body(body);
}

enum Top<'s, 'a> {
    Device(&'s Body<'a>),
    Ram(&'s crate::model::RamRecords<'a>),
}

fn key(s: &SectionMeta<'_>) -> String {
    format!("{} ({})", String::from_utf8_lossy(s.idstr), s.section_id)
}

struct Writer<'o> {
    out: &'o mut Vec<u8>,
    depth: usize,
    flush: &'o mut dyn FnMut(&mut Vec<u8>),
}

impl Writer<'_> {
    #[inline(always)]
    fn newline(&mut self) {
        if self.out.len() >= CHUNK {
            (self.flush)(self.out);
        }
        // A newline and the indentation of the 32 shallowest levels in one copy; QEMU's
        // structs nest a few levels, deeper ones (hostile descriptions) take the loop.
        const LINE: [u8; 129] = {
            let mut line = [b' '; 129];
            line[0] = b'\n';
            line
        };
        let len = 1 + 4 * self.depth;
        if len <= 33 {
            // A copy of a constant length is a few moves, not a call: copy 33 bytes and keep
            // those of this line.
            let end = self.out.len() + len;
            self.out.extend_from_slice(&LINE[..33]);
            self.out.truncate(end);
        } else if let Some(line) = LINE.get(..len) {
            self.out.extend_from_slice(line);
        } else {
            self.out.extend_from_slice(&LINE);
            for _ in LINE.len() / 4..self.depth {
                self.out.extend_from_slice(b"    ");
            }
        }
    }

    /// An object with `keys`; `value(self, i)` writes the value of entry `i`. A key given
    /// twice stays at its first position with the value of its last entry.
    fn object(&mut self, keys: &[&str], value: impl FnMut(&mut Self, usize)) {
        self.object_with(keys.len(), |i| keys[i], value);
    }

    /// [`Writer::object`] with `n` keys given by `key(i)` (no list of them is built).
    fn object_with<'k>(
        &mut self,
        n: usize,
        key: impl Fn(usize) -> &'k str + Copy,
        mut value: impl FnMut(&mut Self, usize),
    ) {
        if n == 0 {
            self.out.extend_from_slice(b"{}");
            return;
        }
        let order = emit_order(n, key);
        self.out.push(b'{');
        self.depth += 1;
        let mut first = true;
        let mut item = |w: &mut Self, i: usize| {
            if !first {
                w.out.push(b',');
            }
            first = false;
            w.newline();
            w.string(key(i));
            w.out.extend_from_slice(b": ");
            value(w, i);
        };
        match order {
            None => (0..n).for_each(|i| item(self, i)),
            Some(order) => order.into_iter().for_each(|i| item(self, i)),
        }
        self.depth -= 1;
        self.newline();
        self.out.push(b'}');
    }

    fn array(&mut self, n: usize, mut value: impl FnMut(&mut Self, usize)) {
        if n == 0 {
            self.out.extend_from_slice(b"[]");
            return;
        }
        self.out.push(b'[');
        self.depth += 1;
        for i in 0..n {
            if i > 0 {
                self.out.push(b',');
            }
            self.newline();
            value(self, i);
        }
        self.depth -= 1;
        self.newline();
        self.out.push(b']');
    }

    fn string(&mut self, s: &str) {
        // Escaped as the Value printer does (`crate::write_json_string`, Python's rule).
        if string_run(s.as_bytes()) == s.len() && s.is_ascii() && !s.contains('\x7f') {
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            crate::write_json_string(self.out, s);
        }
    }

    fn body(&mut self, body: &Body<'_>) {
        let n = body.fields.len();
        let key = |i: usize| match body.fields.get(i) {
            Some(f) => f.name.as_str(),
            None => body.subsections[i - n].name.as_str(),
        };
        let count = n + body.subsections.len();
        self.object_with(count, key, |w, i| match body.fields.get(i) {
            Some(f) => w.value(&f.type_name, &f.value),
            None => w.body(&body.subsections[i - n].body),
        });
    }

    fn value(&mut self, type_name: &str, v: &Value<'_>) {
        // Once per field, not per array element.
        let reader = analyze_reader(type_name);
        self.element(reader, type_name == "struct", v);
    }

    /// A value of a field whose type `analyze-migration.py` reads with `reader`; `is_struct`
    /// for `struct` fields (printed as objects; `vstruct`/`tmp` print as bytes).
    fn element(&mut self, reader: Option<Leaf>, is_struct: bool, v: &Value<'_>) {
        match v {
            Value::Array(items) => {
                // Integer elements are written here, not by a call per element.
                self.array(items.len(), |w, i| match (&items[i], reader) {
                    (Value::Int(x), Some(Leaf::Int { signed, .. })) => {
                        w.int(x.raw, usize::from(x.width.min(8)), signed);
                    }
                    (item, _) => w.element(reader, is_struct, item),
                });
            }
            Value::Struct(b) if is_struct => self.body(b),
            Value::Int(i) if let Some(Leaf::Int { signed, .. }) = reader => {
                self.int(i.raw, usize::from(i.width.min(8)), signed);
            }
            Value::Int(i) => {
                let bytes = i.raw.to_be_bytes();
                self.leaf(reader, &bytes[8 - usize::from(i.width.min(8))..]);
            }
            Value::Bool(b) => self.leaf(reader, &[*b]),
            Value::Timer(t) => self.leaf(reader, &t.to_be_bytes()),
            Value::Bytes(b) | Value::Unused(b) => self.leaf(reader, b),
            Value::Struct(_) => self.leaf(reader, &v.to_bytes()),
            Value::Null => self.out.extend_from_slice(b"\"nullptr\""),
            Value::Capability(name) => self.string(&String::from_utf8_lossy(name)),
        }
    }

    /// An integer of `width` bytes (at most 8) as analyze-migration.py prints it: `"0x"` and
    /// two digits per byte (`0x0` for none), then ` (value)` if `signed` and negative.
    #[inline(always)]
    fn int(&mut self, raw: u64, width: usize, signed: bool) {
        if width == 0 {
            self.out.extend_from_slice(b"\"0x0\"");
            return;
        }
        let bits = 8 * width as u32;
        // The bytes on the wire, first at the top.
        let top = raw << (64 - bits);
        let mut text = *b"\"0x0000000000000000\"";
        for (d, b) in text[3..19].chunks_exact_mut(2).zip(top.to_be_bytes()) {
            d.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
        }
        let digits = 3 + 2 * width;
        if signed && top >> 63 == 1 {
            self.out.extend_from_slice(&text[..digits]);
            let value = (top as i64) >> (64 - bits);
            self.out
                .extend_from_slice(format!(" ({value})\"").as_bytes());
        } else {
            // A copy of a constant length is a few moves, not a call: copy all 20 bytes and
            // keep the number's.
            text[digits] = b'"';
            let end = self.out.len() + digits + 1;
            self.out.extend_from_slice(&text);
            self.out.truncate(end);
        }
    }

    /// A value analyze-migration.py reads with `reader` (hex bytes when it has none).
    fn leaf(&mut self, reader: Option<Leaf>, bytes: &[u8]) {
        match reader {
            Some(Leaf::Bool) => {
                let set = bytes.first().is_some_and(|&b| b != 0);
                self.out
                    .extend_from_slice(if set { b"true" } else { b"false" });
            }
            Some(Leaf::Int { signed, .. }) if bytes.len() <= 8 => {
                let raw = bytes.iter().fold(0, |v, &b| v << 8 | u64::from(b));
                self.int(raw, bytes.len(), signed);
            }
            _ if bytes.is_empty() => self.out.extend_from_slice(b"\"\""),
            _ => {
                // `"xx xx … xx"`: 3 bytes per byte, the first space and the last turned into
                // quotes.
                let start = self.out.len();
                self.out.resize(start + 3 * bytes.len() + 1, b' ');
                let text = &mut self.out[start..];
                for (d, &b) in text[1..].chunks_exact_mut(3).zip(bytes) {
                    d[..2].copy_from_slice(&HEX_PAIRS[usize::from(b)]);
                }
                text[0] = b'"';
                if let Some(last) = text.last_mut() {
                    *last = b'"';
                }
            }
        }
    }
}

/// The two lower-case hex digits of every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [HEX[b >> 4], HEX[b & 15]];
        b += 1;
    }
    pairs
};

/// Whether some key is given twice. Objects are small (a device's fields): comparing pairs
/// costs less than sorting a copy, except for long lists.
fn has_repeats<'k>(n: usize, key: impl Fn(usize) -> &'k str) -> bool {
    if n > 64 {
        let mut sorted: Vec<&str> = (0..n).map(key).collect();
        sorted.sort_unstable();
        return sorted.windows(2).any(|w| w[0] == w[1]);
    }
    (0..n).any(|i| {
        let k = key(i);
        (i + 1..n).any(|j| key(j) == k)
    })
}

/// `None` when every key is distinct (entries print in order); otherwise, for each distinct
/// key in order of first appearance, the index of its last entry.
fn emit_order<'k>(n: usize, key: impl Fn(usize) -> &'k str + Copy) -> Option<Vec<usize>> {
    if !has_repeats(n, key) {
        return None;
    }
    let mut order: Vec<usize> = Vec::new();
    for i in 0..n {
        let k = key(i);
        match order.iter_mut().find(|j| key(**j) == k) {
            Some(j) => *j = i,
            None => order.push(i),
        }
    }
    Some(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::{FieldValue, Int, SubsectionValue};

    fn field<'a>(name: &'a str, type_name: &'a str, value: Value<'a>) -> FieldValue<'a> {
        FieldValue {
            name: name.into(),
            type_name: type_name.into(),
            value,
        }
    }

    fn int(width: u8, raw: u64) -> Value<'static> {
        Value::Int(Int {
            width,
            signed: false,
            raw,
        })
    }

    /// The writer against the `Value` tree printed by serde_json, on every kind of value,
    /// repeated keys and names that need escaping.
    #[test]
    fn writes_what_the_value_tree_prints() {
        let inner = Body {
            fields: vec![field("b", "uint8", int(1, 0x80))],
            subsections: vec![],
        };
        let mut deep = Value::Struct(Box::new(inner.clone()));
        for _ in 0..40 {
            deep = Value::Struct(Box::new(Body {
                fields: vec![field("d", "struct", deep)],
                subsections: vec![],
            }));
        }
        let body = Body {
            fields: vec![
                field("x", "int32", int(4, 0xffff_fffe)),
                field("x16", "int16", int(2, 0x7fff)),
                field("u", "uint64", int(8, u64::MAX)),
                field("flag", "bool", Value::Bool(2)),
                field("t", "timer", Value::Timer(5)),
                field("pad", "unused_buffer", Value::Unused(vec![0, 1])),
                field("buf", "buffer", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
                field("empty", "buffer", Value::Bytes(vec![])),
                field("arr", "uint16", Value::Array(vec![int(2, 1), int(2, 2)])),
                field("none", "uint16", Value::Array(vec![])),
                field("s", "struct", Value::Struct(Box::new(inner.clone()))),
                field(
                    "ss",
                    "struct",
                    Value::Array(vec![Value::Struct(Box::new(inner.clone()))]),
                ),
                field("v", "vstruct", Value::Struct(Box::new(inner.clone()))),
                field("x", "uint8", int(1, 7)),
                field("quote\"\u{1}é", "uint8", int(1, 1)),
                // An integer type over no bytes, and structs nested past the indentation
                // the writer copies whole.
                field("no bytes", "uint8", Value::Bytes(vec![])),
                field("big", "buffer", Value::Bytes((0..=255).collect())),
                field("deep", "struct", deep),
            ],
            subsections: vec![
                SubsectionValue {
                    name: "dev/sub".into(),
                    version: 1,
                    body: Body::default(),
                },
                SubsectionValue {
                    name: "s".into(),
                    version: 1,
                    body: inner,
                },
            ],
        };
        let mut out = Vec::new();
        Writer {
            out: &mut out,
            depth: 0,
            flush: &mut |_| {},
        }
        .body(&body);
        let expected = crate::pretty_json(&body.to_analyze_json());
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        assert!(expected.contains("\"x\": \"0x07\""), "{expected}");
        assert!(expected.contains("\"no bytes\": \"0x0\""), "{expected}");
        let indent = |l: &str| l.len() - l.trim_start().len();
        assert!(expected.lines().any(|l| indent(l) > 4 * 40), "{expected}");
    }

    /// Chunked writing gives the same text as one buffer, and reports a failing writer.
    #[test]
    fn chunks_add_up_to_the_whole_text() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../host-tests/fixtures/pc-7.2-bios.vmstate"
        );
        let bytes = std::fs::read(path).unwrap();
        let stream = Stream::parse(&bytes).unwrap();
        let mut whole = Vec::new();
        assert!(write_state(&stream, &mut whole));
        assert!(whole.len() > 4 * CHUNK, "{}", whole.len());
        let mut sizes = Vec::new();
        let mut chunked = Vec::new();
        let mut sink = Chunks(&mut chunked, &mut sizes);
        assert!(write_state_to(&stream, &mut sink).unwrap());
        assert!(chunked == whole);
        assert!(
            sizes.len() > 4 && sizes.iter().all(|&n| n < CHUNK + 4096),
            "{sizes:?}"
        );

        struct Chunks<'v>(&'v mut Vec<u8>, &'v mut Vec<usize>);
        impl std::io::Write for Chunks<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.extend_from_slice(b);
                self.1.push(b.len());
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        struct Full;
        impl std::io::Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::StorageFull.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = write_state_to(&stream, &mut Full).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
    }

    #[test]
    fn repeated_keys_keep_the_first_place_and_the_last_value() {
        let emit_order = |keys: &[&str]| emit_order(keys.len(), |i| keys[i]);
        assert_eq!(emit_order(&["a", "b", "c"]), None);
        assert_eq!(emit_order(&["a", "b", "a", "c", "b"]), Some(vec![2, 4, 3]));
        // Long lists take the sorting path.
        let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let mut keys: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(emit_order(&keys), None);
        keys.push("f3");
        let order = emit_order(&keys).unwrap();
        assert_eq!((order.len(), order[3]), (100, 100));
    }
}
