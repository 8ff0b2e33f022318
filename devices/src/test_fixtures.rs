//! Test support shared by the device files: the real QEMU 7.2 streams and QEMU's own
//! analysis of them, with tiny lookups. Declared `#[cfg(test)]` in `lib.rs` (test builds only;
//! not part of the library).
#![allow(dead_code)]

extern crate std;

use std::vec::Vec;
use vmstate::stream::{FooterScan, Options, Record, Records, SectionRecord};
use vmstate::{SectionId, State};

macro_rules! v2 {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../host-tests/fixtures/", $name, ".vmstate")),
            Some(include_str!(concat!(
                "../../host-tests/fixtures/",
                $name,
                ".state.json"
            ))),
        )
    };
}

/// `-S` stream: the guest never ran.
pub const NODEFAULTS: &[u8] =
    include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
/// SeaBIOS ran for about a second.
pub const BIOS: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-bios.vmstate");
/// `scripts/analyze-migration.py` output for [`NODEFAULTS`].
pub const NODEFAULTS_STATE: &str =
    include_str!("../../host-tests/fixtures/pc-7.2-nodefaults-S.state.json");
/// `scripts/analyze-migration.py` output for [`BIOS`].
pub const BIOS_STATE: &str = include_str!("../../host-tests/fixtures/pc-7.2-bios.state.json");

/// Like [`NODEFAULTS`] plus `-serial null`: adds the ISA `serial` section.
pub const SERIAL: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-serial.vmstate");
/// `scripts/analyze-migration.py` output for [`SERIAL`].
pub const SERIAL_STATE: &str = include_str!("../../host-tests/fixtures/pc-7.2-serial.state.json");

/// Both streams with their analysis.
pub const STREAMS: [(&[u8], &str); 2] = [(NODEFAULTS, NODEFAULTS_STATE), (BIOS, BIOS_STATE)];
/// All three streams with their analysis, [`SERIAL`] last.
pub const ALL_STREAMS: [(&[u8], &str); 3] = [
    (NODEFAULTS, NODEFAULTS_STATE),
    (BIOS, BIOS_STATE),
    (SERIAL, SERIAL_STATE),
];

/// The second-generation fixtures (QEMU 7.2 and 10.0, pc and q35, `-smp 2`, two ISA serial
/// ports, e1000, virtio-net, virtio-blk): (name, stream, `analyze-migration.py -d state` of
/// the build that wrote it, if the script could read it).
pub const V2: [(&str, &[u8], Option<&str>); 9] = [
    v2!("q72-pc-i440fx-7.2"),
    v2!("q72-pc-q35-7.2"),
    v2!("q10-pc-i440fx-10.0"),
    v2!("q10-pc-q35-10.0"),
    v2!("q10-pc-i440fx-7.2"),
    v2!("q10-pc-q35-7.2"),
    v2!("q10-pc-i440fx-7.2-ltim"),
    (
        "q72-pc-i440fx-7.2-ignore-shared",
        include_bytes!("../../host-tests/fixtures/q72-pc-i440fx-7.2-ignore-shared.vmstate"),
        None,
    ),
    v2!("q10-pc-i440fx-10.0-ignore-shared"),
];

/// A second-generation fixture by name.
pub fn v2(name: &str) -> &'static [u8] {
    V2.iter().find(|f| f.0 == name).expect("fixture").1
}

/// The FULL section `idstr`/`instance` of `stream`.
pub fn section<'a>(stream: &'a [u8], idstr: &str, instance: u32) -> SectionRecord<'a> {
    for rec in records(stream) {
        if let Record::Section(s) = rec.expect("fixture walks cleanly").record
            && s.idstr == idstr.as_bytes()
            && s.instance_id == instance
        {
            return s;
        }
    }
    panic!("section {idstr} ({instance}) not in fixture");
}

/// The records of a real stream (QEMU 10.0's COMMAND records allowed).
pub fn records(stream: &[u8]) -> Records<'_, FooterScan> {
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    Records::with_options(stream, FooterScan, options)
}

/// The whole section (header, body, footer) as it sits in the stream.
pub fn section_bytes<'a>(stream: &'a [u8], rec: &SectionRecord<'a>) -> &'a [u8] {
    &stream[rec.offset..rec.end()]
}

/// The VMDESCRIPTION JSON of `stream`.
pub fn trailer_json(stream: &[u8]) -> &str {
    let mut json = None;
    for rec in records(stream) {
        if let Record::Trailer(t) = rec.expect("fixture walks cleanly").record {
            json = Some(t.json);
        }
    }
    std::str::from_utf8(json.expect("fixture has a trailer")).expect("JSON is UTF-8")
}

/// The balanced `{...}` object starting at `text[start]` (braces inside strings are skipped;
/// the JSON here has no escaped quotes).
fn object_at(text: &str, start: usize) -> &str {
    let (mut depth, mut in_str) = (0usize, false);
    for (i, &c) in text.as_bytes().iter().enumerate().skip(start) {
        match c {
            b'"' => in_str = !in_str,
            b'{' if !in_str => depth += 1,
            b'}' if !in_str => {
                depth -= 1;
                if depth == 0 {
                    return &text[start..=i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced JSON object");
}

/// The analysis object of section `key` (e.g. `"hpet (18)"`) as QEMU printed it (indented).
pub fn state_object<'a>(state_json: &'a str, key: &str) -> &'a str {
    let at = state_json
        .find(&std::format!("\"{key}\": {{"))
        .expect("section in analysis");
    object_at(state_json, at + key.len() + 4)
}

/// `text` without whitespace outside strings, to compare with a compact rendering of
/// [`state_object`].
pub fn compact(text: &str) -> std::string::String {
    let mut in_str = false;
    text.chars()
        .filter(|&c| {
            if c == '"' {
                in_str = !in_str;
            }
            in_str || !c.is_whitespace()
        })
        .collect()
}

/// The device object QEMU wrote for `idstr`/`instance` in the trailer of `stream`.
pub fn qemu_device_json<'a>(stream: &'a [u8], idstr: &str, instance: u32) -> &'a str {
    let json = trailer_json(stream);
    let key = std::format!("{{\"name\": \"{idstr}\", \"instance_id\": {instance}, ");
    let start = json.find(&key).expect("device in trailer");
    object_at(json, start)
}

/// Our JSON description of `state` as section `idstr`/`instance`.
pub fn our_device_json<T: State>(idstr: &str, instance: u32, state: &T) -> std::string::String {
    our_device_json_with(T::VMSD, idstr, instance, state)
}

/// [`our_device_json`] with another table of the same state (e.g. QEMU 7.2's).
pub fn our_device_json_with<T: State>(
    vmsd: &vmstate::Vmsd,
    idstr: &str,
    instance: u32,
    state: &T,
) -> std::string::String {
    let mut buf = [0u8; 8192];
    let mut sink = vmstate::SliceSink::new(&mut buf);
    vmstate::vmdesc::device(
        &mut sink,
        idstr.as_bytes(),
        instance,
        vmsd,
        state.as_bytes(),
    )
    .expect("JSON fits");
    let n = sink.finish();
    std::string::String::from_utf8(buf[..n].to_vec()).expect("JSON is UTF-8")
}

/// Checks `state`, decoded from section `idstr` (instance 0) of `stream`, against QEMU's own
/// view of it: `analyzed` (the state rendered the way `analyze-migration.py` prints it, without
/// whitespace) equals the section's object in `state_json`, and our JSON description equals
/// the device object in the stream's trailer.
pub fn describes_like_qemu<T: State>(
    stream: &[u8],
    state_json: &str,
    idstr: &str,
    state: &T,
    analyzed: &str,
) {
    describes_like_qemu_with(T::VMSD, stream, state_json, idstr, state, analyzed)
}

/// [`describes_like_qemu`] with another table of the same state (e.g. QEMU 7.2's).
pub fn describes_like_qemu_with<T: State>(
    vmsd: &vmstate::Vmsd,
    stream: &[u8],
    state_json: &str,
    idstr: &str,
    state: &T,
    analyzed: &str,
) {
    let key = std::format!("{idstr} ({})", section(stream, idstr, 0).section_id);
    assert_eq!(analyzed, compact(state_object(state_json, &key)), "{key}");
    assert_eq!(
        our_device_json_with(vmsd, idstr, 0, state),
        qemu_device_json(stream, idstr, 0),
        "{key} description"
    );
}

/// The string values of every `"field": "..."` inside the analysis object of section `key`
/// (e.g. `"i8259 (16)"`), in document order.
pub fn state_values<'a>(state_json: &'a str, key: &str, field: &str) -> Vec<&'a str> {
    let obj = state_object(state_json, key);
    let pat = std::format!("\"{field}\": \"");
    let mut out = Vec::new();
    let mut rest = obj;
    while let Some(i) = rest.find(&pat) {
        rest = &rest[i + pat.len()..];
        let end = rest.find('"').expect("closed string");
        out.push(&rest[..end]);
    }
    out
}

/// The single hex value of `field` in section `key` of the analysis.
pub fn state_hex(state_json: &str, key: &str, field: &str) -> u64 {
    let v = state_values(state_json, key, field);
    assert_eq!(v.len(), 1, "{key}.{field} occurs once");
    parse_hex(v[0])
}

/// Parses `0x...`.
pub fn parse_hex(s: &str) -> u64 {
    u64::from_str_radix(s.strip_prefix("0x").expect("0x prefix"), 16).expect("hex")
}

/// Parses QEMU's buffer rendering `"32 00 55 ..."`.
pub fn parse_bytes(s: &str) -> Vec<u8> {
    s.split(' ')
        .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
        .collect()
}

/// Decodes section `idstr`/`instance` of `stream` into a copy of `init`, re-encodes it into a
/// buffer pre-filled with 0xa5 and checks the bytes equal the original section exactly.
/// Returns the decoded state.
pub fn round_trip<T: State + Copy>(stream: &[u8], idstr: &str, instance: u32, init: T) -> T {
    round_trip_with(T::VMSD, stream, idstr, instance, init)
}

/// [`round_trip`] with another table of the same state (e.g. QEMU 7.2's).
pub fn round_trip_with<T: State + Copy>(
    vmsd: &vmstate::Vmsd,
    stream: &[u8],
    idstr: &str,
    instance: u32,
    init: T,
) -> T {
    let rec = section(stream, idstr, instance);
    let mut state = init;
    vmstate::load_with(vmsd, &mut state, rec.version_id, rec.body, rec.body_offset)
        .expect("real section loads");
    let original = section_bytes(stream, &rec);
    let mut buf = [0xa5u8; 4096];
    let id = SectionId {
        section_id: rec.section_id,
        idstr: rec.idstr,
        instance_id: rec.instance_id,
    };
    let mut sink = vmstate::SliceSink::new(&mut buf);
    vmstate::encode_section_raw(id, vmsd, state.as_bytes(), &mut sink).expect("encodes");
    let n = sink.finish();
    assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past its length");
    assert_eq!(
        &buf[..n],
        original,
        "{idstr} ({instance}) re-encodes byte for byte"
    );
    state
}

/// The body `state` encodes to (current version), checking nothing is written past it.
pub fn body_of<T: State>(state: &T) -> Vec<u8> {
    let mut buf = std::vec![0xa5u8; 4096];
    let n = vmstate::encode_body_into(state, &mut buf).expect("encodes");
    assert!(buf[n..].iter().all(|&b| b == 0xa5), "wrote past its length");
    buf.truncate(n);
    buf
}

/// Loads `body` at `version` (base offset 1000) into a copy of `live`, expects an error and
/// checks the failed load changed nothing. Returns the error.
pub fn load_err<T: State + Copy + PartialEq + core::fmt::Debug>(
    live: T,
    version: u32,
    body: &[u8],
) -> vmstate::Error {
    let mut s = live;
    let e = vmstate::load(&mut s, version, body, 1000).expect_err("must be rejected");
    assert_eq!(s, live, "a rejected load changed the state");
    e
}

/// Checks that every strict prefix of `body` fails to load with a clean error and leaves
/// `state` unchanged.
pub fn every_prefix_fails<T: State + Copy + PartialEq + core::fmt::Debug>(
    state: &T,
    version: u32,
    body: &[u8],
) {
    for len in 0..body.len() {
        let mut s = *state;
        let e = vmstate::load(&mut s, version, &body[..len], 1000)
            .expect_err("a truncated body must not load");
        assert!(e.is_incomplete(), "prefix of {len}: {e}");
        assert!(
            e.offset >= 1000 && e.offset <= 1000 + len,
            "error offset {} inside the prefix of {len}",
            e.offset
        );
        assert_eq!(&s, state, "a failed load changes nothing");
    }
}

/// The string elements of the array `"field": [...]` in section `key` of the analysis.
pub fn state_array<'a>(state_json: &'a str, key: &str, field: &str) -> Vec<&'a str> {
    let obj = state_object(state_json, key);
    let pat = std::format!("\"{field}\": [");
    let start = obj.find(&pat).expect("array in section") + pat.len();
    let end = start + obj[start..].find(']').expect("closed array");
    obj[start..end]
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .collect()
}

/// A small deterministic generator (xorshift64*), so property tests need no dependency and
/// always see the same inputs.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (nonzero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            *b = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
        }
    }
}

/// Round-trip property over `rounds` pseudo-random bodies of `len` bytes at the current
/// version: a raw random body either loads and re-encodes to itself (with the `unused`
/// `(from, to)` byte ranges as zeros) or fails leaving the state unchanged; after `fix` makes
/// it valid it must load and re-encode to itself. Returns how many raw bodies loaded.
pub fn random_bodies_round_trip<T: State + Copy + PartialEq + core::fmt::Debug>(
    init: T,
    len: usize,
    unused: &[(usize, usize)],
    fix: fn(&mut [u8]),
    rounds: usize,
) -> usize {
    let mut rng = Rng::new(0x5eed ^ len as u64);
    let mut body = std::vec![0u8; len];
    let mut out = std::vec![0u8; len];
    let mut raw_ok = 0;
    for round in 0..rounds * 2 {
        rng.fill(&mut body);
        let raw = round % 2 == 0;
        if !raw {
            fix(&mut body);
        }
        let mut s = init;
        match vmstate::load(&mut s, T::VMSD.version_id, &body, 0) {
            Ok(()) => {
                raw_ok += raw as usize;
                for &(from, to) in unused {
                    body[from..to].fill(0);
                }
                out.fill(0xa5);
                let n = vmstate::encode_body_into(&s, &mut out).expect("encodes");
                assert_eq!(&out[..n], &body[..], "round {round}");
            }
            Err(e) => {
                assert!(raw, "a fixed-up body must load: {e}");
                assert_eq!(s, init, "a failed load changes nothing");
            }
        }
    }
    raw_ok
}
