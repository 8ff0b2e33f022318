//! Every example in docs/FORMAT.md is a test: this file reads the spec, decodes each `hex v4`
//! block and compares it with its `text decoded` block, converts it to v3 and back against the
//! `hex v3` block, checks `text refused` and `text check` blocks, and decodes and re-encodes the
//! `hex caps` blocks with postcard.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use vmstate::schema::{Subsection, VendorTag, Vmsd};
use vmstate::stream::{BodyLength, FooterScan};
use vmstate::v4::Error;
use vmstate::v4::caps::{Capabilities, Report, check_stream};
use vmstate::v4::convert::{BodySplit, UpgradeOptions, VmsdSplit, downgrade, upgrade};
use vmstate::v4::wire::{Body, Header, Record4, Records4};
use vmstate::{SectionHead, SectionId, SliceSink, assert_layout, field, not_migrated, pred};
use zerocopy::byteorder::big_endian::U16;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
struct Dev {
    a: u8,
    extra: U16,
    td_on: u8,
    td: u8,
}

const EXTRA: Vmsd = Vmsd::new("dev/extra", 1, 1, 5).fields(&[field!(Dev, extra)]);
const TD: Vmsd = Vmsd::new("dev/td", 1, 1, 5).fields(&[field!(Dev, td)]);
/// The `org.linux-kvm` build of the spec's example device.
const DEV_KVM: Vmsd = Vmsd::new("dev", 1, 1, 5)
    .fields(&[field!(Dev, a)])
    .subsections(&[
        Subsection::new(&EXTRA, pred!(Dev, |s| s.extra.get() != 0)),
        Subsection::new(&TD, pred!(Dev, |s| s.td_on != 0)).feature_of(
            vmstate::VendorId::new("org.linux-kvm"),
            VendorTag {
                level: 1,
                minor: 1,
                must_understand: true,
            },
        ),
    ])
    // Whether the feature is in use: the sender's own state, not on the wire.
    .not_migrated(&[not_migrated!(Dev, td_on)]);
assert_layout!(Dev, DEV_KVM);

struct Block {
    info: Vec<String>,
    text: String,
}

fn blocks() -> Vec<Block> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    let md = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut lines = md.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut text = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push(Block {
            info: info.split_whitespace().map(String::from).collect(),
            text,
        });
    }
    out
}

fn hex(text: &str) -> Vec<u8> {
    text.lines()
        .flat_map(|l| l.split('#').next().unwrap().split_whitespace())
        .map(|t| u8::from_str_radix(t, 16).unwrap_or_else(|_| panic!("bad hex {t:?}")))
        .collect()
}

fn hexs(b: &[u8]) -> String {
    b.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn render_v4(bytes: &[u8]) -> String {
    let mut out = String::new();
    let vendors_of = |h: &Header<'_>| {
        h.vendors
            .iter()
            .map(|v| format!("{}/{}", v.id, v.protocol_minor))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for rec in Records4::new(bytes) {
        match rec.unwrap().record {
            Record4::Header(h) => {
                writeln!(out, "header flags={} vendors=[{}]", h.flags, vendors_of(&h)).unwrap()
            }
            Record4::Configuration(p) => writeln!(out, "configuration {}", hexs(p)).unwrap(),
            Record4::Section(sec) => {
                let minors = sec
                    .minors
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let kind = sec.kind.name();
                match sec.body {
                    Body::Structured { fields, .. } => writeln!(
                        out,
                        "{kind} id={} idstr={} instance={} version={} minors=[{minors}] fields={}",
                        sec.section_id,
                        s(sec.idstr),
                        sec.instance_id,
                        sec.version_id,
                        hexs(fields)
                    )
                    .unwrap(),
                    Body::Opaque { data, .. } if sec.kind.has_full_header() => writeln!(
                        out,
                        "{kind} id={} idstr={} instance={} version={} minors=[{minors}] data={}",
                        sec.section_id,
                        s(sec.idstr),
                        sec.instance_id,
                        sec.version_id,
                        hexs(data)
                    )
                    .unwrap(),
                    Body::Opaque { data, .. } => writeln!(
                        out,
                        "{kind} id={} idstr={} data={}",
                        sec.section_id,
                        s(sec.idstr),
                        hexs(data)
                    )
                    .unwrap(),
                }
                for sub in sec.subsections() {
                    let sub = sub.unwrap();
                    let vendor = sub
                        .vendor
                        .map(|t| format!(" vendor={}/{}", t.level, t.minor))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  subsection {} flags={}{vendor} version={} body={}",
                        s(sub.name),
                        sub.flags,
                        sub.version,
                        hexs(sub.body)
                    )
                    .unwrap();
                }
            }
            Record4::Command(c) => writeln!(
                out,
                "command {} payload={} packaged={}",
                c.id,
                hexs(c.payload),
                hexs(c.packaged)
            )
            .unwrap(),
            Record4::Ancillary { kind, payload } => {
                writeln!(out, "ancillary type={kind:#04x} payload={}", hexs(payload)).unwrap()
            }
            Record4::Data {
                section_id, data, ..
            } => writeln!(out, "data id={section_id} data={}", hexs(data)).unwrap(),
            Record4::Eof => out.push_str("eof\n"),
            Record4::Trailer(j) => writeln!(out, "trailer {}", s(j)).unwrap(),
        }
    }
    out
}

fn render_caps(c: &Capabilities<'_, 4, 4>) -> String {
    let list = |v: &[&str]| v.join(", ");
    let devices = c
        .devices
        .iter()
        .map(|d| {
            format!(
                "{} {}..={} max_minor=[{}]",
                d.name,
                d.min_version,
                d.max_version,
                d.max_minor
                    .iter()
                    .map(|m| m.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "caps protocols=[{}] vendors=[{}] devices=[{devices}] subsections=[{}]\n",
        c.protocols
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        list(&c.vendors.iter().map(|v| v.as_str()).collect::<Vec<_>>()),
        list(&c.subsections)
    )
}

fn to_v3(v4: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0xa5u8; v4.len() + 64];
    let mut out = SliceSink::new(&mut buf);
    downgrade(v4, &mut out)?;
    let n = out.finish();
    buf.truncate(n);
    Ok(buf)
}

/// The spec's `dev` split by its table; the body of any other START/PART/END section (the
/// spec's live data) found by its footer.
struct SpecSplit<'s>(VmsdSplit<'s>);

impl BodySplit for SpecSplit<'_> {
    type Error = Error;

    fn split(
        &mut self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> Result<Option<usize>, Error> {
        if let Some(n) = self.0.split(head, rest, ends)? {
            return Ok(Some(n));
        }
        if head.kind == vmstate::wire::section::SectionKind::Full {
            return Ok(None);
        }
        let len = FooterScan.body_len(&head.info(), rest, head.body_offset())?;
        Ok(len.map(|len| {
            ends[0] = len;
            1
        }))
    }

    fn vendor_tag(&self, head: &SectionHead<&[u8]>, subsection: &[u8]) -> Option<VendorTag> {
        self.0.vendor_tag(head, subsection)
    }

    fn vendor_id(
        &self,
        head: &SectionHead<&[u8]>,
        subsection: &[u8],
    ) -> Option<vmstate::VendorId<'static>> {
        self.0.vendor_id(head, subsection)
    }
}

fn to_v4(v3: &[u8], like: &[u8]) -> Vec<u8> {
    let Some(Ok(first)) = Records4::new(like).next() else {
        panic!()
    };
    let Record4::Header(h) = first.record else {
        panic!()
    };
    let vmsds: [&'static Vmsd; 1] = [&DEV_KVM];
    let mut scratch = [0u8; 16];
    let opts = UpgradeOptions {
        vendors: &h.vendors,
        crc: h.crc(),
    };
    let mut buf = vec![0xa5u8; v3.len() * 2 + 64];
    let mut out = SliceSink::new(&mut buf);
    let split = SpecSplit(VmsdSplit::new(&vmsds, &mut scratch));
    upgrade(v3, split, &opts, &mut out).unwrap();
    let n = out.finish();
    buf.truncate(n);
    buf
}

#[test]
fn every_spec_example_holds() {
    let blocks = blocks();
    let by = |kind: &str, name: &str| {
        blocks
            .iter()
            .find(|b| b.info.len() >= 3 && b.info[1] == kind && b.info[2] == name)
            .map(|b| b.text.clone())
    };
    let mut v4s = BTreeMap::new();
    let mut caps_bytes = BTreeMap::new();
    let mut counts = BTreeMap::<String, usize>::new();
    for b in &blocks {
        let kind = b.info.get(..2).map(|k| k.join(" ")).unwrap_or_default();
        match kind.as_str() {
            "hex v4" => {
                let name = &b.info[2];
                let bytes = hex(&b.text);
                let decoded = by("decoded", name).unwrap_or_else(|| panic!("{name}: no decoding"));
                assert_eq!(render_v4(&bytes), decoded, "example {name}");
                match (by("v3", name), by("refused", name)) {
                    (Some(v3), None) => {
                        let v3 = hex(&v3);
                        assert_eq!(to_v3(&bytes).unwrap(), v3, "example {name}: v4 -> v3");
                        // `upgrade` writes no DATA records (a live writer does, §13).
                        let data = Records4::new(&bytes)
                            .any(|r| matches!(r.map(|r| r.record), Ok(Record4::Data { .. })));
                        if !data {
                            assert_eq!(to_v4(&v3, &bytes), bytes, "example {name}: v3 -> v4");
                        }
                    }
                    (None, Some(why)) => match to_v3(&bytes) {
                        Err(Error::Refused(r)) => assert_eq!(r.to_string(), why.trim_end()),
                        other => panic!("example {name}: {other:?}"),
                    },
                    other => panic!("example {name}: needs a v3 form or a refusal: {other:?}"),
                }
                v4s.insert(name.clone(), bytes);
            }
            "hex caps" => {
                let name = &b.info[2];
                let bytes = hex(&b.text);
                let caps: Capabilities<'_, 4, 4> = postcard::from_bytes(&bytes).unwrap();
                let decoded = by("decoded", name).unwrap_or_else(|| panic!("{name}: no decoding"));
                assert_eq!(render_caps(&caps), decoded, "caps {name}");
                let mut again = [0u8; 256];
                let n = postcard::to_slice(&caps, &mut again).unwrap().len();
                assert_eq!(again[..n], bytes[..], "caps {name}: re-encoding");
                drop(caps);
                caps_bytes.insert(name.clone(), bytes);
            }
            "hex v3" | "text decoded" | "text refused" | "text check" => {}
            "hex" | "text" => panic!("block without a name: {:?}", b.info),
            _ => continue,
        }
        *counts.entry(kind).or_default() += 1;
    }
    for b in blocks
        .iter()
        .filter(|b| b.info.get(1).map(String::as_str) == Some("check"))
    {
        let (stream, caps) = (&v4s[&b.info[2]], &caps_bytes[&b.info[3]]);
        let caps: Capabilities<'_, 4, 4> = postcard::from_bytes(caps).unwrap();
        let mut report = Report::<8>::new();
        check_stream(stream, &caps, &mut report).unwrap();
        let got: String = report.found.iter().map(|i| format!("{i}\n")).collect();
        assert_eq!(got, b.text, "check {} against {}", b.info[2], b.info[3]);
    }
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    assert_eq!(n("hex v4"), 6);
    assert_eq!(n("hex v3"), 5);
    assert_eq!(n("text refused"), 1);
    assert_eq!(n("hex caps"), 2);
    assert_eq!(n("text check"), 4);
    assert_eq!(n("text decoded"), 8);
}

#[test]
fn the_kvm_example_is_what_the_typed_writer_emits() {
    let kvm = blocks()
        .into_iter()
        .find(|b| b.info == ["hex", "v4", "kvm"])
        .map(|b| hex(&b.text))
        .unwrap();
    let state = Dev {
        a: 0x2a,
        extra: 0.into(),
        td_on: 1,
        td: 7,
    };
    let vendors = [vmstate::v4::wire::Vendor {
        id: vmstate::VendorId::new("org.linux-kvm"),
        protocol_minor: 0,
    }];
    let mut buf = [0xa5u8; 128];
    let header = vmstate::v4::wire::Header::new(&vendors, true).unwrap();
    let mut w = vmstate::v4::StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    let id = SectionId {
        section_id: 1,
        idstr: b"dev",
        instance_id: 0,
    };
    w.section_raw(id, &DEV_KVM, state.as_bytes()).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    assert_eq!(buf[..n], kvm[..]);
}
