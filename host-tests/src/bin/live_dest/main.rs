//! Live-migration destination for `tests/live_migration.rs`.
//!
//! Listens on 127.0.0.1 (an ephemeral port, printed as `LISTEN <addr>`), accepts one source,
//! and loads the stream through `vmstate::io::StreamReader` with a 64 KiB working buffer:
//! RAM records into its own 64 MiB guest memory, device sections into the device models
//! (through their description tables). After EOF it prints `LOADED`, then
//! `HASH ram=<hex> devices=<hex> ...` and exits 0; any error exits 1 with the error.

mod common;

use common::*;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use vmstate::io::{Event, StreamReader};
use vmstate::ram::{PAGE_SIZE, RamRecord};
use vmstate::stream::{Record, Schemas, idstr_matches};

fn main() {
    if let Err(e) = run() {
        eprintln!("live_dest: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("LISTEN {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let (stream, _) = listener.accept().map_err(|e| e.to_string())?;

    let mut mem = vec![0u8; RAM_BYTES];
    let mut dev = Devices::new();
    let mut work = vec![0u8; 64 * 1024];
    let mut scratch = [0u8; 64];
    let vmsds = VMSDS;
    let input = Io(BufReader::with_capacity(256 * 1024, stream));
    let mut sr = StreamReader::new(input, &mut work, Schemas::new(&vmsds, &mut scratch));
    let (mut zero, mut full, mut sections, mut ram_sections) = (0usize, 0usize, 0usize, 0usize);
    let mut block_ok = false;
    loop {
        let ev = sr.next_event().map_err(|e| format!("stream: {e}"))?;
        let Some(ev) = ev else { break };
        match ev {
            Event::RamSection(_) => ram_sections += 1,
            Event::Ram { record, offset } => match record {
                RamRecord::MemSize(list) => {
                    block_ok = list.count == 1 && list.length_of(BLOCK) == Some(RAM_BYTES as u64);
                    if !block_ok {
                        return Err(format!("unexpected block list at {offset}: {list:?}"));
                    }
                }
                RamRecord::Zero {
                    offset: at, fill, ..
                } => {
                    page(&mut mem, at)?.fill(fill);
                    zero += 1;
                }
                RamRecord::Page {
                    offset: at, data, ..
                } => {
                    page(&mut mem, at)?.copy_from_slice(data);
                    full += 1;
                }
                RamRecord::Xbzrle {
                    offset: at, delta, ..
                } => {
                    vmstate::ram::xbzrle_apply(delta, page(&mut mem, at)?)
                        .map_err(|e| e.to_string())?;
                }
                RamRecord::MultifdFlush | RamRecord::Eos => {}
            },
            Event::Record(Record::Section(s)) => {
                sections += 1;
                let r = if idstr_matches(s.idstr, "port92") {
                    vmstate::load_record(&mut dev.port92, &s)
                } else if idstr_matches(s.idstr, "i8259") {
                    let pic = dev
                        .pic
                        .get_mut(s.instance_id as usize)
                        .ok_or(format!("i8259 instance {}", s.instance_id))?;
                    vmstate::load_record(pic, &s)
                } else if idstr_matches(s.idstr, "live-counter") {
                    vmstate::load_record(&mut dev.counter, &s)
                } else {
                    return Err(format!("unknown section {:?}", s.context()));
                };
                r.map_err(|e| e.to_string())?;
            }
            Event::Record(Record::Eof) => {
                println!("LOADED");
                std::io::stdout().flush().map_err(|e| e.to_string())?;
            }
            Event::Record(_) | Event::TrailerStart { .. } | Event::TrailerData { .. } => {}
        }
    }
    if !block_ok {
        return Err("no RAM block list".into());
    }
    let mut h = Hasher::new();
    for w in mem.chunks_exact(8) {
        h.word(u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
    }
    println!(
        "HASH ram={:016x} devices={:016x} zero_records={zero} page_records={full} ram_sections={ram_sections} device_sections={sections}",
        h.finish(),
        dev.hash()
    );
    Ok(())
}

fn page(mem: &mut [u8], offset: u64) -> Result<&mut [u8], String> {
    let at = usize::try_from(offset).map_err(|e| e.to_string())?;
    mem.get_mut(at..at + PAGE_SIZE)
        .ok_or(format!("page {offset:#x} outside guest memory"))
}
