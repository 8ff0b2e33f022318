//! The codec's version-dependent rules against the real destinations: a real stream mutated one
//! way is loaded into QEMU 7.2 and QEMU 10.0 (same machine type, `-incoming "exec:cat FILE"`),
//! and each build's verdict must be what the codec says for that version:
//!
//! * SWITCHOVER_START (`08 00 0b 00 00`) before the RAM END: `CommandId::known_by`;
//! * a ZERO page with fill byte 0x41: `RamOptions::for_qemu(..).allow_nonzero_fill`;
//! * a bare MULTIFD_FLUSH word before a RAM EOS: `RamOptions::for_qemu(..).multifd_flush`.

use vmstate::ram::{RamContext, RamOptions, RamRecord, flags};
use vmstate::stream::{FooterScan, Options, Record, Records};
use vmstate::wire::Reader;
use vmstate::wire::command::CommandId;
use vmstate_host_tests::qemu::{self, LoadOutcome, Qemu, temp_stream};
use vmstate_host_tests::{QemuBuild, fixture};

/// `q10-pc-i440fx-7.2`: written by QEMU 10.0 with a machine type both builds have; both load
/// it as is.
const STREAM: &str = "q10-pc-i440fx-7.2.vmstate";

fn args() -> Vec<&'static str> {
    qemu::fixture_machine("pc-i440fx-7.2")
}

/// Loads `bytes` into `build`; `None` when the build is not installed (outside CI).
fn load(build: QemuBuild, name: &str, bytes: &[u8]) -> Option<LoadOutcome> {
    let path = temp_stream(name, bytes);
    let mut q = Qemu::incoming_on(build, &path, &args())?;
    let out = q.wait_loaded();
    drop(q);
    let _ = std::fs::remove_file(&path);
    Some(out)
}

fn version(build: QemuBuild) -> (u16, u16) {
    let (major, minor) = build.version();
    (major.into(), minor.into())
}

/// RAM records of the stream: (offset, end, record).
fn ram_records(stream: &[u8]) -> Vec<(usize, usize, RamRecord<'_>)> {
    let mut out = Vec::new();
    let mut it = Records::new(stream, FooterScan);
    loop {
        let mut ctx: RamContext<'_> = *it.ram();
        let Some(rec) = it.next() else { break };
        let Record::Section(s) = rec.unwrap().record else {
            continue;
        };
        if !s.is_ram() {
            continue;
        }
        let mut r = Reader::new(stream, 0);
        r.skip(s.body_offset).unwrap();
        while r.offset() < s.body_offset + s.body.len() {
            let start = r.offset();
            let rec = ctx.read_record(&mut r).unwrap();
            out.push((start, r.offset(), rec));
        }
    }
    out
}

/// Whether the codec, with `build`'s rules, reads the whole stream.
fn codec_accepts(bytes: &[u8], build: QemuBuild) -> bool {
    let (major, minor) = version(build);
    let options = Options {
        ram: RamOptions::for_qemu(major, minor),
        allow_commands: true,
        ..Options::default()
    };
    let mut it = Records::with_options(bytes, FooterScan, options);
    it.all(|r| match r {
        Ok(l) => match l.record {
            Record::Command(c) => c.id.known_by(major, minor),
            _ => true,
        },
        Err(_) => false,
    })
}

fn check(name: &str, bytes: &[u8], qemu_refusal: &str, accepted_by: &[QemuBuild]) {
    for build in QemuBuild::ALL {
        let Some(out) = load(build, name, bytes) else {
            continue;
        };
        let want = accepted_by.contains(&build);
        match (&out, want) {
            (LoadOutcome::Completed, true) => {}
            (LoadOutcome::Failed(err), false) => {
                assert!(err.contains(qemu_refusal), "{name} on {build:?}: {err}")
            }
            _ => panic!("{name} on {build:?}: {out:?}, expected accepted={want}"),
        }
        assert_eq!(
            codec_accepts(bytes, build),
            want,
            "{name}: the codec's rules for {build:?} disagree with QEMU"
        );
    }
}

#[test]
fn the_unmodified_stream_loads_on_both() {
    let bytes = fixture(STREAM);
    check("unmodified", &bytes, "", &QemuBuild::ALL);
}

#[test]
fn switchover_start_is_known_from_10_0_on() {
    let real = fixture(STREAM);
    // Right before the RAM END record, where a pc-*-10.0 stream has it.
    let end = ram_records(&real)
        .iter()
        .rfind(|(_, _, r)| *r == RamRecord::Eos)
        .map(|(s, _, _)| *s - 5)
        .unwrap();
    assert_eq!(real[end], 0x03, "RAM END record");
    let bytes = [&real[..end], &[8, 0, 0x0b, 0, 0][..], &real[end..]].concat();
    assert!(!CommandId::SwitchoverStart.known_by(7, 2));
    check(
        "switchover",
        &bytes,
        "MIG_CMD 0xb unknown",
        &[QemuBuild::V10_0],
    );
}

#[test]
fn a_nonzero_zero_page_fill_is_refused_from_8_2_on() {
    let mut bytes = fixture(STREAM);
    let end = ram_records(&bytes)
        .into_iter()
        .find_map(|(_, e, r)| matches!(r, RamRecord::Zero { .. }).then_some(e))
        .unwrap();
    bytes[end - 1] = 0x41;
    check(
        "fill",
        &bytes,
        "Found a zero page with value 65",
        &[QemuBuild::V7_2],
    );
}

#[test]
fn a_bare_multifd_flush_is_accepted_from_8_0_on() {
    let real = fixture(STREAM);
    let eos = ram_records(&real)
        .iter()
        .filter(|(_, _, r)| *r == RamRecord::Eos)
        .nth(1)
        .map(|(s, _, _)| *s)
        .unwrap();
    let flush = (flags::MULTIFD_FLUSH as u64).to_be_bytes();
    let bytes = [&real[..eos], &flush[..], &real[eos..]].concat();
    check(
        "flush",
        &bytes,
        "Unknown combination of migration flags: 0x200",
        &[QemuBuild::V10_0],
    );
}
