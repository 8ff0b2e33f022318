//! QEMU 7.2 loads a stream written by the live-migration RAM path.
//!
//! The stream is header + configuration (`pc-i440fx-7.2`) + RAM START (the block list of the
//! real `pc-7.2-nodefaults-S` fixture, so it matches the destination's blocks exactly) + one
//! RAM PART with a few `pc.ram` pages carrying a recognisable pattern, written by
//! `dirty::encode_round` from a `DirtyLog` round + RAM END (EOS) + EOF, with no device sections
//! (docs/V3-WIRE.md §14: QEMU 7.2 accepts that). A real `qemu-system-x86_64 -M pc -m 32` loads it
//! with `-incoming "exec:cat FILE"`; the test then reads guest memory back over QMP (`xp`) and
//! checks the pattern.
//!
//! Without QEMU the test fails when `CI=true` and otherwise prints a loud skip message.

#[path = "../src/bin/live_dest/common.rs"]
mod common;

use common::{Io, Reaper};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use vmstate::IoSink;
use vmstate::dirty::{DirtyLog, encode_round, words_for};
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamContext, RamOptions, RamRecord};
use vmstate::stream::{FooterScan, Record, Records};
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};
use vmstate::wire::{Configuration, Reader};
use vmstate::writer::StreamWriter;
use vmstate_host_tests::QemuBuild;

/// Guest-physical = `pc.ram` offsets below 640 KiB and from 1 MiB on (pc maps `pc.ram` 1:1
/// there).
const PATTERN_PAGES: [u64; 4] = [0x10_0000, 0x20_0000, 0x7f_f000, 0x1ff_f000];

/// The u32 the guest reads at word `i` of page `addr`.
fn pattern(addr: u64, i: usize) -> u32 {
    0x5a00_0000 | (((addr >> 12) as u32 & 0xfff) << 12) | i as u32
}

struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    fn connect(path: &std::path::Path, qemu: &mut Child) -> Qmp {
        // QEMU creates the socket at start-up; poll for it while QEMU is alive.
        // Bounded so a wedged QEMU fails the test instead of hanging it (not a timing check).
        let mut tries = 0;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    if let Some(st) = qemu.try_wait().unwrap() {
                        panic!("QEMU exited before QMP was up ({st}): {e}");
                    }
                    tries += 1;
                    if tries > 1200 {
                        let _ = qemu.kill();
                        panic!("QMP socket never appeared: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let mut q = Qmp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = q.line();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
        q.call("qmp_capabilities", json!({}));
        q
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        let n = self.r.read_line(&mut l).unwrap();
        assert!(n > 0, "QMP connection closed");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("QMP sent {l:?}: {e}"))
    }

    /// Runs a command and returns its `return` value (events in between are skipped).
    fn call(&mut self, cmd: &str, args: Value) -> Value {
        let msg = json!({ "execute": cmd, "arguments": args });
        writeln!(self.w, "{msg}").unwrap();
        loop {
            let v = self.line();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            if let Some(e) = v.get("error") {
                panic!("QMP {cmd} failed: {e}");
            }
        }
    }
}

/// Writes the stream; returns its length.
fn write_stream(path: &std::path::Path) -> usize {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/pc-7.2-nodefaults-S.vmstate"
    ))
    .unwrap();
    // The destination's blocks, from the fixture's RAM START.
    let start = Records::new(&fixture, FooterScan)
        .map(|r| r.unwrap().record)
        .find_map(|r| match r {
            Record::Section(s) if s.is_ram() => Some(s),
            _ => None,
        })
        .unwrap();
    let mut ram = RamContext::new(RamOptions::default());
    let RamRecord::MemSize(list) = ram.read_record(&mut Reader::new(start.body, 0)).unwrap() else {
        panic!("RAM START without a block list");
    };
    let blocks: Vec<BlockEntry<'_>> = list.iter().collect();
    let ram_len = list.length_of(b"pc.ram").unwrap() as usize;
    assert_eq!(ram_len, 32 << 20);

    // The pattern pages are dirty in a log over pc.ram, plus one page that is dirty but zero.
    let pages = ram_len / PAGE_SIZE;
    let words: Vec<AtomicU64> = (0..words_for(pages)).map(|_| AtomicU64::new(0)).collect();
    let log = DirtyLog::new(&words, pages).unwrap();
    for a in PATTERN_PAGES {
        assert!(log.mark((a / PAGE_SIZE as u64) as usize));
    }
    log.mark(0x30_0000 / PAGE_SIZE);
    let mut round = vec![0u64; log.words()];
    assert_eq!(log.harvest(&mut round).unwrap(), 5);

    let file = std::fs::File::create(path).unwrap();
    let mut enc = StreamWriter::new(IoSink::new(Io(std::io::BufWriter::new(file))));
    let header = |kind| SectionHeaderRepr {
        kind,
        section_id: start.section_id,
        idstr: b"ram",
        instance_id: 0,
        version_id: 4,
    };
    enc.header(3).unwrap();
    enc.configuration(&Configuration::new(b"pc-i440fx-7.2"))
        .unwrap();
    enc.section_header(&header(SectionKind::Start)).unwrap();
    let (w, out) = enc.ram_parts();
    w.block_list(&blocks, out).unwrap();
    w.eos(out).unwrap();
    enc.footer(start.section_id).unwrap();
    enc.section_header(&header(SectionKind::Part)).unwrap();
    let (w, out) = enc.ram_parts();
    let stats = encode_round(
        w,
        b"pc.ram",
        &round,
        |p, buf| {
            let addr = (p * PAGE_SIZE) as u64;
            if PATTERN_PAGES.contains(&addr) {
                for (i, c) in buf.chunks_exact_mut(4).enumerate() {
                    c.copy_from_slice(&pattern(addr, i).to_le_bytes());
                }
            } else {
                buf.fill(0);
            }
        },
        out,
    )
    .unwrap();
    assert_eq!((stats.full, stats.zero), (4, 1));
    w.eos(out).unwrap();
    enc.footer(start.section_id).unwrap();
    enc.section_header(&header(SectionKind::End)).unwrap();
    let (w, out) = enc.ram_parts();
    w.eos(out).unwrap();
    enc.footer(start.section_id).unwrap();
    enc.eof().unwrap();
    let n = enc.position();
    let mut f = enc.into_inner().into_inner().0;
    f.flush().unwrap();
    n
}

#[test]
fn qemu_loads_a_ram_only_stream_from_the_dirty_log_writer() {
    let Some(qemu_bin) = vmstate_host_tests::require_qemu(QemuBuild::V7_2, "qemu-system-x86_64")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vmstate-live-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ram.vmstate");
    let sock = dir.join("qmp.sock");
    let len = write_stream(&file);

    let mut qemu = Reaper(
        Command::new(&qemu_bin)
            .args(["-M", "pc", "-m", "32", "-nodefaults", "-display", "none"])
            .args(["-accel", "tcg", "-S"])
            .arg("-incoming")
            .arg(format!("exec:cat {}", file.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut qmp = Qmp::connect(&sock, &mut qemu);
    let mut polls = 0;
    let status = loop {
        polls += 1;
        if polls > 1200 {
            let _ = qemu.kill();
            panic!("the incoming migration never finished");
        }
        let r = qmp.call("query-migrate", json!({}));
        match r.get("status").and_then(Value::as_str) {
            Some(s @ ("completed" | "failed" | "cancelled")) => break s.to_string(),
            _ => {
                if let Some(st) = qemu.try_wait().unwrap() {
                    panic!("QEMU exited while loading: {st}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut read = Vec::new();
    if status == "completed" {
        for a in PATTERN_PAGES {
            let out = qmp.call(
                "human-monitor-command",
                json!({ "command-line": format!("xp /4xw {a:#x}") }),
            );
            read.push((a, out.as_str().unwrap_or_default().to_string()));
        }
        let zero = qmp.call(
            "human-monitor-command",
            json!({ "command-line": "xp /2xw 0x300000" }),
        );
        read.push((0x30_0000, zero.as_str().unwrap_or_default().to_string()));
        let _ = qmp.call("quit", json!({}));
    } else {
        let _ = qemu.kill();
    }
    let mut stderr = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let _ = qemu.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        status, "completed",
        "QEMU refused the {len}-byte stream: {}",
        stderr
    );
    println!("QEMU loaded the {len}-byte RAM stream:");
    for (a, text) in &read {
        println!("  {}", text.trim());
        let words: Vec<u32> = text
            .split_once(':')
            .map(|(_, w)| w)
            .unwrap_or_default()
            .split_whitespace()
            .map(|w| u32::from_str_radix(w.trim_start_matches("0x"), 16).unwrap())
            .collect();
        let want: Vec<u32> = if *a == 0x30_0000 {
            vec![0, 0]
        } else {
            (0..4).map(|i| pattern(*a, i)).collect()
        };
        assert_eq!(words, want, "guest memory at {a:#x}: {text}");
    }
}
