//! Writes the VMDESCRIPTION JSON (docs/V3-WIRE.md §8.2) for sections encoded from description
//! tables, without allocation, byte-identical to QEMU 7.2's compact `JSONWriter` output.
//!
//! QEMU's rules reproduced here:
//! * a field name used more than once in a table becomes `name[k]` for every occurrence;
//! * a present field with more than one element is one object with `"array_len"` when it is
//!   compressible (no `exists` predicate; a struct only if all its fields are compressible and it
//!   has no subsections), otherwise one object per element with `"index"`;
//! * zero-element fields and `VALIDATE` entries are absent;
//! * struct elements nest their description under `"struct"`; `"size"` is the bytes written,
//!   subsections included;
//! * a `"subsections"` array appears only if at least one subsection was sent.

use crate::body::{bounded_count, encode_body, encode_subsections, is_present};
use crate::error::Result;
use crate::schema::{Elem, Field, Kind, Vmsd};
use crate::sink::{CountingSink, Sink};

/// Writes `s` as a JSON string (names are printable ASCII; `"` and `\` are escaped).
fn string<S: Sink>(out: &mut S, s: &[u8]) -> Result<(), S::Error> {
    out.write(b"\"")?;
    for chunk in s.split_inclusive(|&b| b == b'"' || b == b'\\' || b < 0x20) {
        let (last, head) = chunk
            .split_last()
            .map_or((None, chunk), |(l, h)| (Some(*l), h));
        match last {
            Some(b) if b == b'"' || b == b'\\' => {
                out.write(head)?;
                out.write(&[b'\\', b])?;
            }
            Some(b) if b < 0x20 => {
                out.write(head)?;
                // `b < 0x20`: the high digit is 0 or 1, the low one a hex digit.
                let low = b"0123456789abcdef".get(usize::from(b & 15)).copied();
                out.write(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    b'0' | (b >> 4),
                    low.unwrap_or(b'0'),
                ])?;
            }
            _ => out.write(chunk)?,
        }
    }
    out.write(b"\"")
}

/// Writes a decimal integer.
fn int<S: Sink>(out: &mut S, v: i64) -> Result<(), S::Error> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = v < 0;
    let mut u = v.unsigned_abs();
    // 20 digits hold `u64::MAX`: the buffer never runs out before `u` does.
    loop {
        i = i.saturating_sub(1);
        if let Some(d) = buf.get_mut(i) {
            *d = b'0' | (u % 10) as u8;
        }
        u /= 10;
        if u == 0 || i == 0 {
            break;
        }
    }
    if neg {
        out.write(b"-")?;
    }
    out.write(buf.get(i..).unwrap_or_default())
}

fn key<S: Sink>(out: &mut S, comma: bool, k: &str) -> Result<(), S::Error> {
    if comma {
        out.write(b", ")?;
    }
    string(out, k.as_bytes())?;
    out.write(b": ")
}

/// Writes the opening of the trailer JSON: `{"page_size": N, "devices": [`.
pub fn begin<S: Sink>(out: &mut S, page_size: u32) -> Result<(), S::Error> {
    out.write(b"{")?;
    key(out, false, "page_size")?;
    int(out, page_size as i64)?;
    key(out, true, "devices")?;
    out.write(b"[")
}

/// Writes the closing `]}`.
pub fn end<S: Sink>(out: &mut S) -> Result<(), S::Error> {
    out.write(b"]}")
}

/// Writes one device object (prefix it with `, ` yourself for all but the first).
pub fn device<S: Sink>(
    out: &mut S,
    idstr: &[u8],
    instance_id: u32,
    vmsd: &Vmsd,
    state: &[u8],
) -> Result<(), S::Error> {
    out.write(b"{")?;
    key(out, false, "name")?;
    string(out, idstr)?;
    key(out, true, "instance_id")?;
    int(out, instance_id as i64)?;
    out.write(b", ")?;
    vmsd_body(out, vmsd, vmsd.version_id, state)?;
    out.write(b"}")
}

/// `"vmsd_name": …, "version": …, "fields": […]` and the optional `"subsections"`.
fn vmsd_body<S: Sink>(
    out: &mut S,
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
) -> Result<(), S::Error> {
    key(out, false, "vmsd_name")?;
    string(out, vmsd.name.as_bytes())?;
    key(out, true, "version")?;
    int(out, version as i64)?;
    key(out, true, "fields")?;
    out.write(b"[")?;
    let mut first = true;
    for f in vmsd.fields {
        if is_present(f, state, version) {
            field(out, vmsd, f, state, &mut first)?;
        }
    }
    out.write(b"]")?;
    let mut any = false;
    for sub in vmsd.subsections {
        if sub.needed.is_none_or(|n| n(state)) {
            out.write(if any {
                b", " as &[u8]
            } else {
                b", \"subsections\": ["
            })?;
            any = true;
            out.write(b"{")?;
            vmsd_body(out, sub.vmsd, sub.vmsd.version_id, state)?;
            out.write(b"}")?;
        }
    }
    if any {
        out.write(b"]")?;
    }
    Ok(())
}

fn compressible(f: &Field) -> bool {
    if f.exists.is_some() {
        return false;
    }
    let v = match f.kind {
        Kind::Struct { vmsd, .. } => vmsd,
        Kind::VArray {
            elem: Elem::Struct(vmsd),
            ..
        } => vmsd,
        _ => return true,
    };
    v.subsections.is_empty() && v.fields.iter().all(compressible)
}

fn type_name(f: &Field) -> &'static str {
    if let Some(t) = f.json_type {
        return t;
    }
    match f.kind {
        Kind::Scalar(s) | Kind::Array { elem: s, .. } => s.json_type(),
        Kind::VArray {
            elem: Elem::Scalar(s),
            ..
        } => s.json_type(),
        Kind::Struct { .. }
        | Kind::VArray {
            elem: Elem::Struct(_),
            ..
        } => "struct",
        Kind::Buffer { .. } | Kind::VBuffer { .. } => "buffer",
        Kind::Unused { .. } => "unused_buffer",
        Kind::Equal(s) => s.equal_json_type(),
        Kind::NullPtr => "uint64",
        Kind::Validate { .. } => "validate",
    }
}

fn field<S: Sink>(
    out: &mut S,
    vmsd: &Vmsd,
    f: &Field,
    state: &[u8],
    first: &mut bool,
) -> Result<(), S::Error> {
    // (element count, element storage size, nested vmsd, element wire size if scalar)
    let (n, esize, nested): (usize, usize, Option<&Vmsd>) = match f.kind {
        Kind::Validate { .. } => return Ok(()),
        Kind::Scalar(s) | Kind::Equal(s) => (1, s.width(), None),
        Kind::Array { elem, len } => (len, elem.width(), None),
        Kind::Buffer { len } | Kind::Unused { len } => (1, len, None),
        Kind::NullPtr => (1, 1, None),
        Kind::Struct { vmsd, len } => (len, vmsd.size, Some(vmsd)),
        Kind::VArray { elem, count } => {
            let c = bounded_count(state, &count, 0)?;
            match elem {
                Elem::Scalar(s) => (c, s.width(), None),
                Elem::Struct(v) => (c, v.size, Some(v)),
            }
        }
        Kind::VBuffer { size } => (1, bounded_count(state, &size, 0)?, None),
    };
    let name_total = vmsd.fields.iter().filter(|g| g.name == f.name).count();
    let name_index = vmsd
        .fields
        .iter()
        .take_while(|g| !core::ptr::eq(*g, f))
        .filter(|g| g.name == f.name)
        .count();
    let compress = compressible(f);
    for i in 0..n {
        if i > 0 && compress {
            break;
        }
        if !*first {
            out.write(b", ")?;
        }
        *first = false;
        out.write(b"{")?;
        key(out, false, "name")?;
        if name_total > 1 {
            out.write(b"\"")?;
            out.write(f.name.as_bytes())?;
            out.write(b"[")?;
            int(out, name_index as i64)?;
            out.write(b"]\"")?;
        } else {
            string(out, f.name.as_bytes())?;
        }
        if n > 1 {
            key(out, true, if compress { "array_len" } else { "index" })?;
            int(out, if compress { n as i64 } else { i as i64 })?;
        }
        key(out, true, "type")?;
        string(out, type_name(f).as_bytes())?;
        let off = f.offset.saturating_add(i.saturating_mul(esize));
        let size = match nested {
            Some(v) => {
                let s = state.get(off..off.saturating_add(v.size)).unwrap_or(&[]);
                key(out, true, "struct")?;
                out.write(b"{")?;
                vmsd_body(out, v, v.version_id, s)?;
                out.write(b"}")?;
                let mut c = CountingSink::new();
                encode_body(v, s, &mut c)?;
                c.count()
            }
            None => esize,
        };
        key(out, true, "size")?;
        int(out, size as i64)?;
        out.write(b"}")?;
    }
    Ok(())
}

/// The wire size of a whole body (fields and subsections), as the JSON reports it.
pub fn body_size(vmsd: &Vmsd, state: &[u8]) -> Result<usize> {
    let mut c = CountingSink::new();
    encode_body(vmsd, state, &mut c)?;
    Ok(c.count())
}

/// Size of the subsections part alone.
pub fn subsections_size(vmsd: &Vmsd, state: &[u8]) -> Result<usize> {
    let mut c = CountingSink::new();
    encode_subsections(vmsd, state, &mut c)?;
    Ok(c.count())
}
