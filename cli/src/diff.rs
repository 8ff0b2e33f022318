//! `vmstate diff`: field-level differences between two decoded streams.
//!
//! Device sections are matched by idstr and instance id and compared leaf by leaf (paths use
//! the edit syntax, e.g. `i8254[0].channels[1].count`). RAM is compared page by page through
//! borrowed slices; a page no record mentions counts as zero-filled.

use crate::generic::{Body, Value};
use crate::model::{Item, Stream};
use std::collections::BTreeMap;
use vmstate::ram::RamRecord;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where (`IDSTR[INSTANCE].FIELD`, `ram:BLOCK@OFFSET`, or a record name such as
    /// `configuration.machine` or `commands`).
    pub path: String,
    /// The value in the first stream (`-` when absent).
    pub a: String,
    /// The value in the second stream (`-` when absent).
    pub b: String,
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
        Value::Capability(name) => {
            out.push((
                prefix.to_string(),
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
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
        body_leaves(&format!("{prefix}.{}", s.name), &s.body, out);
    }
}

fn device_leaves(s: &Stream<'_>) -> BTreeMap<String, Vec<(String, String)>> {
    let mut m = BTreeMap::new();
    for (sec, body) in s.devices() {
        let key = format!("{}[{}]", sec.name(), sec.instance_id);
        let mut v = vec![(format!("{key}#version"), sec.version_id.to_string())];
        body_leaves(&key, body, &mut v);
        m.insert(key, v);
    }
    m
}

fn pages<'a>(s: &Stream<'a>) -> BTreeMap<(&'a [u8], u64), Option<&'a [u8]>> {
    let mut m = BTreeMap::new();
    for e in &s.entries {
        let Item::Ram { records, .. } = &e.item else {
            continue;
        };
        for r in records {
            match r {
                RamRecord::Zero {
                    block,
                    offset,
                    fill: 0,
                    ..
                } => {
                    m.insert((block, offset), None);
                }
                RamRecord::Page {
                    block,
                    offset,
                    data,
                    ..
                } => {
                    m.insert((block, offset), Some(data));
                }
                _ => {}
            }
        }
    }
    m
}

/// All differences between `a` and `b`.
pub fn diff(a: &Stream<'_>, b: &Stream<'_>) -> Vec<Difference> {
    let mut out = Vec::new();
    let push = |out: &mut Vec<Difference>, path: String, a: Option<&str>, b: Option<&str>| {
        out.push(Difference {
            path,
            a: a.unwrap_or("-").to_string(),
            b: b.unwrap_or("-").to_string(),
        })
    };
    let ma = |s: &Stream<'_>| {
        s.configuration
            .map(|c| String::from_utf8_lossy(c.machine).into_owned())
    };
    if ma(a) != ma(b) {
        push(
            &mut out,
            "configuration.machine".into(),
            ma(a).as_deref(),
            ma(b).as_deref(),
        );
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
            &mut out,
            "commands".into(),
            commands(a).as_deref(),
            commands(b).as_deref(),
        );
    }
    let (da, db) = (device_leaves(a), device_leaves(b));
    for (key, la) in &da {
        let Some(lb) = db.get(key) else {
            push(&mut out, key.clone(), Some("present"), None);
            continue;
        };
        let mb: BTreeMap<&str, &str> = lb.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
        let ma: BTreeMap<&str, &str> = la.iter().map(|(p, v)| (p.as_str(), v.as_str())).collect();
        for (p, va) in la {
            let vb = mb.get(p.as_str()).copied();
            if vb != Some(va.as_str()) {
                push(&mut out, p.clone(), Some(va), vb);
            }
        }
        for (p, vb) in lb {
            if !ma.contains_key(p.as_str()) {
                push(&mut out, p.clone(), None, Some(vb));
            }
        }
    }
    for key in db.keys().filter(|k| !da.contains_key(*k)) {
        push(&mut out, key.clone(), None, Some("present"));
    }
    let (pa, pb) = (pages(a), pages(b));
    let describe = |p: Option<&Option<&[u8]>>| match p {
        None => "absent".to_string(),
        Some(None) => "zero page".to_string(),
        Some(Some(_)) => "data page".to_string(),
    };
    for (k, va) in &pa {
        let vb = pb.get(k);
        if vb == Some(va) {
            continue;
        }
        let path = format!("ram:{}@{:#x}", String::from_utf8_lossy(k.0), k.1);
        // Two data pages: say where they start to differ and by how many bytes.
        if let (Some(x), Some(Some(y))) = (va, vb) {
            let n = x.iter().zip(y.iter()).filter(|(a, b)| a != b).count();
            if let Some(i) = x.iter().zip(y.iter()).position(|(a, b)| a != b) {
                push(
                    &mut out,
                    format!("{path}+{i:#x}"),
                    Some(&format!("{:#04x}", x[i])),
                    Some(&format!("{:#04x} ({n} bytes of the page differ)", y[i])),
                );
            }
            continue;
        }
        push(
            &mut out,
            path,
            Some(&describe(Some(va))),
            Some(&describe(vb)),
        );
    }
    for (k, vb) in pb.iter().filter(|(k, _)| !pa.contains_key(*k)) {
        let path = format!("ram:{}@{:#x}", String::from_utf8_lossy(k.0), k.1);
        push(&mut out, path, Some("absent"), Some(&describe(Some(vb))));
    }
    out
}
