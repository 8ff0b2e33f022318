//! The real QEMU streams in `host-tests/fixtures/`, shared by the codec's integration tests.
#![allow(dead_code)]

/// Every fixture stream.
pub const FIXTURES: [&str; 3] = [
    "pc-7.2-nodefaults-S.vmstate",
    "pc-7.2-bios.vmstate",
    "pc-7.2-serial.vmstate",
];

/// The second-generation streams written by QEMU 7.2 (`q72-`) and 10.0 (`q10-`)
/// (`host-tests/fixtures/make-fixtures.py`).
pub const FIXTURES_V2: [&str; 9] = [
    "q72-pc-i440fx-7.2.vmstate",
    "q72-pc-q35-7.2.vmstate",
    "q10-pc-i440fx-10.0.vmstate",
    "q10-pc-q35-10.0.vmstate",
    "q10-pc-i440fx-7.2.vmstate",
    "q10-pc-q35-7.2.vmstate",
    "q10-pc-i440fx-7.2-ltim.vmstate",
    "q72-pc-i440fx-7.2-ignore-shared.vmstate",
    "q10-pc-i440fx-10.0-ignore-shared.vmstate",
];

/// The streams of machine types >= 10.0: each carries a SWITCHOVER_START COMMAND record.
pub const WITH_COMMAND: [&str; 3] = [
    "q10-pc-i440fx-10.0.vmstate",
    "q10-pc-q35-10.0.vmstate",
    "q10-pc-i440fx-10.0-ignore-shared.vmstate",
];

/// The bytes of fixture `name`.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = format!(
        "{}/../host-tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// One RAM record of a stream: where it is, the RAM state before it, and what it reads as.
pub struct RamAt<'a> {
    /// Offset of its first byte.
    pub start: usize,
    /// Offset just past it.
    pub end: usize,
    /// The RAM state before it (where a reader continues from).
    pub before: vmstate::ram::RamContext<'a>,
    /// The record.
    pub record: vmstate::ram::RamRecord<'a>,
}

/// Every record of every RAM section of `stream` (walked with `options`), each read with
/// `RamContext::read_record` only.
pub fn ram_records(stream: &[u8], options: vmstate::stream::Options) -> Vec<RamAt<'_>> {
    use vmstate::stream::{FooterScan, Record, Records};
    let mut out = Vec::new();
    let mut it = Records::with_options(stream, FooterScan, options);
    loop {
        let mut ctx = *it.ram();
        let Some(rec) = it.next() else { break };
        let Record::Section(s) = rec.unwrap().record else {
            continue;
        };
        if !s.is_ram() {
            continue;
        }
        let mut r = vmstate::wire::Reader::new(stream, 0);
        r.skip(s.body_offset).unwrap();
        while r.offset() < s.body_offset + s.body.len() {
            let before = ctx;
            let start = r.offset();
            let record = ctx.read_record(&mut r).unwrap();
            out.push(RamAt {
                start,
                end: r.offset(),
                before,
                record,
            });
        }
    }
    out
}
