//! A live migration between two processes over TCP on 127.0.0.1.
//!
//! Source (this test): a simulated guest with 64 MiB of RAM held in atomic words, two vCPU
//! threads storing into pages at a steady rate and marking them in a `DirtyLog`, and a device
//! thread updating three device models through `SnapshotCell`s. The migration thread sends the
//! RAM START (block list), then iterative RAM PART rounds (the first with every page, then the
//! pages harvested since the previous round) until a round has fewer than `THRESHOLD` dirty
//! pages; then it stops the guest, sends the last pages in the RAM END, the device sections
//! (copied from their cells) and EOF. Destination: the `live_dest` binary, a second process,
//! decoding with the streaming reader.
//!
//! Check: the destination's RAM and device hashes equal the source's at the stop point. The
//! test prints rounds, bytes sent and downtime; it asserts nothing about time.

#[path = "../src/bin/live_dest/common.rs"]
mod common;

use common::*;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use vmstate::dirty::{DirtyLog, encode_round, words_for};
use vmstate::ram::{BlockEntry, PAGE_SIZE};
use vmstate::snapshot::SnapshotCell;
use vmstate::wire::Configuration;
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};
use vmstate::writer::StreamWriter;
use vmstate::{IoSink, SectionId};

/// Stop iterating once a round has fewer dirty pages than this.
const THRESHOLD: usize = 64;
/// Stop iterating after this many rounds even if the dirty set has not converged.
const MAX_ROUNDS: usize = 30;
const WRITERS: usize = 2;
/// Pages each writer stores into per millisecond tick.
const PAGES_PER_TICK: usize = 48;
/// Each writer's hot set (pages); one store in 16 goes anywhere in RAM.
const HOT_PAGES: usize = 1024;
const WORDS_PER_PAGE: usize = PAGE_SIZE / 8;

struct Guest {
    ram: Vec<AtomicU64>,
    dirty: Vec<AtomicU64>,
}

impl Guest {
    fn log(&self) -> DirtyLog<'_> {
        DirtyLog::new(&self.dirty, PAGES).expect("bitmap sized for PAGES")
    }

    fn read_page(&self, p: usize, out: &mut [u8; PAGE_SIZE]) {
        let words = &self.ram[p * WORDS_PER_PAGE..(p + 1) * WORDS_PER_PAGE];
        for (o, w) in out.chunks_exact_mut(8).zip(words) {
            o.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
    }

    fn hash(&self) -> u64 {
        let mut h = Hasher::new();
        for w in &self.ram {
            h.word(w.load(Ordering::Relaxed));
        }
        h.finish()
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

struct Cells {
    port92: SnapshotCell<Port92, 1>,
    pic: [SnapshotCell<Pic, 3>; 2],
    counter: SnapshotCell<Counter, 2>,
}

impl Cells {
    fn read(&self) -> Devices {
        Devices {
            port92: self.port92.read(),
            pic: [self.pic[0].read(), self.pic[1].read()],
            counter: self.counter.read(),
        }
    }
}

#[test]
fn live_migration_to_a_second_process_converges_and_matches() {
    let mut dest = Reaper(
        Command::new(env!("CARGO_BIN_EXE_live_dest"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn live_dest"),
    );
    let mut dest_out = BufReader::new(dest.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    dest_out.read_line(&mut line).expect("LISTEN line");
    let addr = line
        .strip_prefix("LISTEN ")
        .unwrap_or_else(|| panic!("destination said {line:?}"))
        .trim()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    // The guest: the first 8 MiB hold a pattern, the rest is zero.
    let guest = Arc::new(Guest {
        ram: (0..RAM_BYTES / 8)
            .map(|i| {
                AtomicU64::new(if i < (8 << 20) / 8 {
                    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                } else {
                    0
                })
            })
            .collect(),
        dirty: (0..words_for(PAGES)).map(|_| AtomicU64::new(0)).collect(),
    });
    let cells = Arc::new(Cells {
        port92: SnapshotCell::new(&Port92::DEFAULT),
        pic: [
            SnapshotCell::new(&Pic::MASTER),
            SnapshotCell::new(&Pic::SLAVE),
        ],
        counter: SnapshotCell::new(&Devices::new().counter),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stores = Arc::new(AtomicUsize::new(0));

    let mut vcpus = Vec::new();
    for t in 0..WRITERS {
        let (guest, stop, stores) = (guest.clone(), stop.clone(), stores.clone());
        vcpus.push(std::thread::spawn(move || {
            let log = guest.log();
            let mut s = 0x1234_5678_9abc_def1u64 ^ ((t as u64 + 1) << 32);
            let hot = 2048 + t * HOT_PAGES; // from 8 MiB on, past the pattern
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..PAGES_PER_TICK {
                    let r = xorshift(&mut s);
                    let page = if r.is_multiple_of(16) {
                        (r >> 8) as usize % PAGES
                    } else {
                        hot + (r >> 8) as usize % HOT_PAGES
                    };
                    let word = page * WORDS_PER_PAGE + (r >> 40) as usize % WORDS_PER_PAGE;
                    // Store, then mark: the dirty log's contract.
                    guest.ram[word].store(xorshift(&mut s), Ordering::Relaxed);
                    log.mark(page);
                    stores.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }));
    }
    let device = {
        let (cells, stop) = (cells.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                cells.port92.write(&Port92 { outport: k as u8 });
                cells.pic[0].write(&pic_at(Pic::MASTER, k));
                cells.pic[1].write(&pic_at(Pic::SLAVE, k.wrapping_mul(7)));
                cells.counter.write(&Counter {
                    ticks: k.into(),
                    phase: ((k % 1000) as u32).into(),
                });
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };

    let stream = TcpStream::connect(&addr).expect("connect to destination");
    stream.set_nodelay(true).expect("nodelay");
    let mut enc = StreamWriter::new(IoSink::new(Io(BufWriter::with_capacity(
        256 * 1024,
        stream,
    ))));
    let started = Instant::now();
    enc.header(3).unwrap();
    enc.configuration(&Configuration::new(b"vmstate-live"))
        .unwrap();
    let ram_header = |kind| SectionHeaderRepr {
        kind,
        section_id: RAM_SECTION,
        idstr: b"ram",
        instance_id: 0,
        version_id: 4,
    };
    enc.section_header(&ram_header(SectionKind::Start)).unwrap();
    {
        let (w, out) = enc.ram_parts();
        w.block_list(
            &[BlockEntry {
                name: BLOCK,
                length: RAM_BYTES as u64,
                addr: None,
            }],
            out,
        )
        .unwrap();
        w.eos(out).unwrap();
    }
    enc.footer(RAM_SECTION).unwrap();

    let log = guest.log();
    log.mark_all();
    let mut bitmap = vec![0u64; log.words()];
    let mut rounds = Vec::new();
    let converged = loop {
        let n = log.harvest(&mut bitmap).unwrap();
        if !rounds.is_empty() && n < THRESHOLD {
            break true;
        }
        if rounds.len() == MAX_ROUNDS {
            break false;
        }
        let t = Instant::now();
        let before = enc.position();
        enc.section_header(&ram_header(SectionKind::Part)).unwrap();
        let (w, out) = enc.ram_parts();
        let stats = encode_round(w, BLOCK, &bitmap, |p, b| guest.read_page(p, b), out).unwrap();
        w.eos(out).unwrap();
        enc.footer(RAM_SECTION).unwrap();
        // The device models are copied while their owner runs: never torn.
        let pic = cells.pic[0].read();
        assert!(pic_consistent(&pic), "torn i8259 snapshot {pic:?}");
        rounds.push((n, stats, enc.position() - before, t.elapsed()));
    };

    // Stop-and-copy.
    let stopped = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for v in vcpus {
        v.join().unwrap();
    }
    device.join().unwrap();
    let mut last = vec![0u64; log.words()];
    log.harvest(&mut last).unwrap();
    for (a, b) in last.iter_mut().zip(&bitmap) {
        *a |= b;
    }
    let final_pages: usize = last.iter().map(|w| w.count_ones() as usize).sum();
    let src_ram = guest.hash();
    let src_dev = cells.read();
    enc.section_header(&ram_header(SectionKind::End)).unwrap();
    let (w, out) = enc.ram_parts();
    encode_round(w, BLOCK, &last, |p, b| guest.read_page(p, b), out).unwrap();
    w.eos(out).unwrap();
    enc.footer(RAM_SECTION).unwrap();
    let sections: [(u32, &[u8], u32); 4] = [
        (PORT92_SECTION, b"port92", 0),
        (PIC_SECTIONS[0], b"i8259", 0),
        (PIC_SECTIONS[1], b"i8259", 1),
        (COUNTER_SECTION, b"live-counter", 0),
    ];
    for (section_id, idstr, instance_id) in sections {
        let id = SectionId {
            section_id,
            idstr,
            instance_id,
        };
        let r = match idstr {
            b"port92" => vmstate::encode_section(id, &src_dev.port92, enc.sink()),
            b"i8259" => vmstate::encode_section(id, &src_dev.pic[instance_id as usize], enc.sink()),
            _ => vmstate::encode_section(id, &src_dev.counter, enc.sink()),
        };
        r.unwrap();
    }
    enc.eof().unwrap();
    let total = enc.position();
    let mut conn = enc.into_inner().into_inner().0;
    conn.flush().expect("flush");
    drop(conn); // closes the connection

    line.clear();
    dest_out.read_line(&mut line).unwrap();
    let downtime = stopped.elapsed();
    assert_eq!(line.trim(), "LOADED", "destination: {line:?}");
    line.clear();
    dest_out.read_line(&mut line).unwrap();
    let status = dest.wait().unwrap();
    assert!(status.success(), "destination failed: {status} {line}");

    println!(
        "live migration: {} MiB guest, {WRITERS} vCPU writers",
        RAM_BYTES >> 20
    );
    for (i, (n, s, bytes, t)) in rounds.iter().enumerate() {
        println!(
            "  round {:2}: {n:6} dirty pages ({} zero, {} page) {bytes:10} bytes {t:?}",
            i + 1,
            s.zero,
            s.full
        );
    }
    println!(
        "  converged: {converged} (threshold {THRESHOLD}); stop-and-copy: {final_pages} pages + 4 device sections"
    );
    println!(
        "  rounds: {}, bytes sent: {total}, guest stores: {}, total time {:?}, downtime {downtime:?}",
        rounds.len(),
        stores.load(Ordering::Relaxed),
        started.elapsed()
    );
    println!("  destination: {}", line.trim());

    let want = format!("HASH ram={src_ram:016x} devices={:016x} ", src_dev.hash());
    assert!(
        line.starts_with(&want),
        "destination differs from the source at the stop point:\n  source {want}\n  dest   {line}"
    );
    // The devices really ran, and the guest really wrote while migrating.
    assert!(src_dev.counter.ticks.get() > 0);
    assert!(src_dev.pic.iter().all(pic_consistent));
    assert!(rounds.len() >= 2, "only {} round(s)", rounds.len());
}
