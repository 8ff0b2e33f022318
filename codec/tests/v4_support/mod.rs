//! Shared helpers for the v4 tests: a VMDESCRIPTION-based splitter and conversion wrappers.
#![allow(dead_code)]

use serde_json::Value;
use vmstate::v4::convert::{BodySplit, UpgradeOptions, downgrade, upgrade};
use vmstate::wire::Trailer;
use vmstate::{Error, ErrorKind, SectionHead, SliceSink};

#[path = "../fixtures_support/mod.rs"]
mod fixtures_support;
#[allow(unused_imports)] // each test crate uses its own subset
pub use fixtures_support::{FIXTURES, FIXTURES_V2, WITH_COMMAND, fixture};

/// Splits sections using the stream's own VMDESCRIPTION trailer: the description entry with
/// the section's idstr and instance id gives each field's size (array_len × size, nested structs
/// summed with their own subsections) and the top-level subsections in order.
#[derive(Clone)]
pub struct DescSplit {
    devices: Vec<Value>,
}

impl DescSplit {
    pub fn from_stream(v3: &[u8]) -> Self {
        let at = Trailer::locate(v3).expect("stream has a VMDESCRIPTION trailer");
        let json: Value = serde_json::from_slice(&v3[at + 5..]).expect("trailer is JSON");
        DescSplit {
            devices: json["devices"].as_array().expect("devices").clone(),
        }
    }

    fn device(&self, sec: &SectionHead<&[u8]>) -> Option<&Value> {
        self.devices.iter().find(|d| {
            d["name"].as_str().map(str::as_bytes) == Some(sec.idstr)
                && d["instance_id"].as_u64() == Some(sec.instance_id as u64)
        })
    }

    /// Field ends then subsection ends, relative to the body start.
    fn ends(&self, sec: &SectionHead<&[u8]>) -> Option<Vec<usize>> {
        let d = self.device(sec)?;
        let mut ends = vec![fields_size(&d["fields"])];
        let mut at = ends[0];
        for sub in d["subsections"].as_array().into_iter().flatten() {
            let name = sub["vmsd_name"].as_str().unwrap();
            at += 1 + 1 + name.len() + 4 + struct_size(sub);
            ends.push(at);
        }
        Some(ends)
    }
}

fn fields_size(fields: &Value) -> usize {
    fields
        .as_array()
        .into_iter()
        .flatten()
        .map(field_size)
        .sum()
}

fn struct_size(desc: &Value) -> usize {
    let subs: usize = desc["subsections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| 1 + 1 + s["vmsd_name"].as_str().unwrap().len() + 4 + struct_size(s))
        .sum();
    fields_size(&desc["fields"]) + subs
}

fn field_size(f: &Value) -> usize {
    let n = f["array_len"].as_u64().unwrap_or(1) as usize;
    let one = if f.get("struct").is_some() {
        struct_size(&f["struct"])
    } else {
        f["size"].as_u64().unwrap() as usize
    };
    n * one
}

impl BodySplit for DescSplit {
    type Error = vmstate::v4::Error;

    fn split(
        &mut self,
        sec: &SectionHead<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> Result<Option<usize>, Self::Error> {
        let Some(e) = self.ends(sec) else {
            return Ok(None);
        };
        if *e.last().unwrap() > rest.len() {
            let e = Error::new(sec.body_offset(), ErrorKind::BadDescription);
            return Err(e.in_section(sec.context()).into());
        }
        ends[..e.len()].copy_from_slice(&e);
        Ok(Some(e.len()))
    }
}

pub fn to_v4(v3: &[u8], crc: bool) -> Vec<u8> {
    let split = DescSplit::from_stream(v3);
    let mut out = vec![0xa5u8; v3.len() * 2 + 4096];
    let mut sink = SliceSink::new(&mut out);
    let opts = UpgradeOptions { vendors: &[], crc };
    upgrade(v3, split, &opts, &mut sink).expect("upgrade");
    let n = sink.finish();
    out.truncate(n);
    out
}

pub fn to_v3(v4: &[u8]) -> Result<Vec<u8>, vmstate::v4::Error> {
    let mut out = vec![0xa5u8; v4.len() + 4096];
    let mut sink = SliceSink::new(&mut out);
    downgrade(v4, &mut sink)?;
    let n = sink.finish();
    out.truncate(n);
    Ok(out)
}
