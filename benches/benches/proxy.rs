//! `vmstate proxy` alone: RAM records per second through the validating proxy
//! ([`vmstate_cli::proxy::run`], the library entry of the command) between a replay source and
//! a null sink, both over loopback TCP in this process.
//!
//! The stream is 512 MiB of non-zero pages (random contents, one `pc.ram` block, 2048 pages
//! per PART section as QEMU sends them in its iterations), then one described device section,
//! EOF and the VMDESCRIPTION trailer; it is generated once in memory by the codec's writers.
//! `VMSTATE_PROXY_STREAM=FILE` replays a real stream instead (for example the one
//! `benches/proxy_migrate.py` saves from QEMU 7.2 into `target/proxy-bench/`).
//!
//! Each run: the proxy listens, the source thread connects and writes the whole stream, the
//! sink thread reads and drops everything; the time is from the source's connect to the
//! sink's last byte (the proxy's own exit, the held final phase checked and sent, included).
//! Reported: median, min and max over the runs of GB/s (10⁹ bytes of stream per second),
//! beside the same source and sink connected directly (the loopback limit on this machine).
//!
//! ```text
//! cargo bench -p vmstate-benches --bench proxy            # 7 runs each
//! cargo bench -p vmstate-benches --bench proxy -- 15      # 15 runs each
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};
use vmstate::writer::StreamWriter;
use vmstate_cli::proxy::{DEFAULT_HOLD_LIMIT, Outcome, ProxyOptions, run};
use vmstate_cli::verify::DestSpec;

/// RAM in the generated stream.
const RAM: u64 = 512 << 20;
/// Pages per PART section.
const PAGES_PER_PART: u64 = 2048;
/// The issue's target for RAM through the proxy alone.
const TARGET_GBS: f64 = 2.0;

/// A described device (no typed model has it; `verify` checks it with the trailer).
const DEVICE: &[u8] = b"vmstate-bench";
const DEVICE_BODY: [u8; 12] = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef];
const TRAILER: &str = r#"{"page_size": 4096, "devices": [{"name": "vmstate-bench", "instance_id": 0, "vmsd_name": "vmstate-bench", "version": 1, "fields": [{"name": "ticks", "type": "int64", "size": 8}, {"name": "id", "type": "uint32", "size": 4}]}]}"#;

/// A [`vmstate::Sink`] appending to a `Vec`.
struct VecSink(Vec<u8>);

impl vmstate::Sink for VecSink {
    type Error = vmstate::Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), vmstate::Error> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn position(&self) -> usize {
        self.0.len()
    }
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// The generated stream (module docs).
fn generate() -> Result<Vec<u8>, vmstate::Error> {
    let pages = RAM / PAGE_SIZE as u64;
    let mut w = StreamWriter::new(VecSink(Vec::with_capacity(
        (RAM + RAM / 400 + (1 << 20)) as usize,
    )));
    w.header(vmstate::wire::header::VERSION_V3)?;
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: RAM,
        addr: None,
    }];
    w.ram_start(1, &blocks)?;
    let mut writer = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    let mut x = 0x2545_f491_4f6c_dd1d;
    let mut next = 0;
    while next < pages {
        let end = (next + PAGES_PER_PART).min(pages);
        w.ram_part(1, false, &mut writer, |ram, out| {
            for p in next..end {
                for word in page.chunks_exact_mut(8) {
                    word.copy_from_slice(&xorshift(&mut x).to_ne_bytes());
                }
                ram.page(b"pc.ram", p * PAGE_SIZE as u64, &page, out)?;
            }
            Ok(())
        })?;
        next = end;
    }
    w.ram_part(1, true, &mut writer, |_, _| Ok(()))?;
    let h = SectionHeaderRepr {
        kind: SectionKind::Full,
        section_id: 2,
        idstr: DEVICE,
        instance_id: 0,
        version_id: 1,
    };
    w.section_bytes(&h, &DEVICE_BODY)?;
    w.eof()?;
    w.trailer(TRAILER.as_bytes())?;
    Ok(w.into_inner().0)
}

/// Reads everything from one connection accepted on `listener` and drops it: the bytes.
fn null_sink(listener: TcpListener) -> thread::JoinHandle<(usize, Instant)> {
    thread::spawn(move || {
        let Ok((mut c, _)) = listener.accept() else {
            return (0, Instant::now());
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0;
        while let Ok(k @ 1..) = c.read(&mut buf) {
            n += k;
        }
        (n, Instant::now())
    })
}

/// Writes `stream` to `addr` and closes the writing side: the time of the connect.
fn replay(stream: &'static [u8], addr: String) -> thread::JoinHandle<Instant> {
    thread::spawn(move || {
        let mut c = TcpStream::connect(addr).expect("connect to the proxy");
        let start = Instant::now();
        let _ = c.write_all(stream);
        let _ = c.shutdown(Shutdown::Write);
        // Hold the connection until the proxy ends it (its return path).
        let _ = c.read(&mut [0u8; 1]);
        start
    })
}

/// One run through the proxy: seconds from connect to the sink's last byte, the CPU seconds
/// of the proxy's thread, the seconds the final phase was held (`Outcome::Passed`'s
/// `hold_time`), and the seconds the proxy's thread waited for a CPU.
/// `splice`: the proxy's `--splice`.
fn through_proxy(stream: &'static [u8], splice: bool) -> (f64, f64, f64, f64) {
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let to = sink.local_addr().expect("sink address").to_string();
    let received = null_sink(sink);
    let options = ProxyOptions {
        listen: "127.0.0.1:0".into(),
        to,
        dest: DestSpec::default(),
        hold_limit: DEFAULT_HOLD_LIMIT,
        edits: Vec::new(),
        record: None,
        pass_through_unvalidated: false,
        splice,
    };
    let (tx, rx) = mpsc::channel();
    // Named, for profilers (`perf report --comm vmstate-proxy`).
    let proxy = thread::Builder::new()
        .name("vmstate-proxy".into())
        .spawn(move || {
            let (cpu, waited) = thread_cpu();
            let outcome = run(&options, &mut |addr| {
                let _ = tx.send(addr);
            });
            let (cpu2, waited2) = thread_cpu();
            (outcome, cpu2 - cpu, waited2 - waited)
        })
        .expect("spawn the proxy thread");
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the proxy listens");
    let source = replay(stream, addr.to_string());
    let (outcome, cpu, waited) = proxy.join().expect("proxy thread");
    let start = source.join().expect("source thread");
    let (n, end) = received.join().expect("sink thread");
    let held = match outcome {
        Ok((
            _,
            Outcome::Passed {
                bytes, hold_time, ..
            },
        )) if bytes == stream.len() => hold_time.as_secs_f64(),
        other => panic!("the proxy did not pass the stream: {other:?}"),
    };
    assert_eq!(n, stream.len(), "bytes at the sink");
    ((end - start).as_secs_f64(), cpu, held, waited)
}

/// CPU time of the calling thread so far and the time it waited, runnable, for a CPU, in
/// seconds (the first two fields of `/proc/thread-self/schedstat`, in nanoseconds; 0 where
/// there is no such file).
fn thread_cpu() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().map_or(0.0, |ns| ns as f64 / 1e9));
    (fields.next().unwrap_or(0.0), fields.next().unwrap_or(0.0))
}

/// One run from the source straight to the sink (the loopback limit).
fn direct(stream: &'static [u8]) -> f64 {
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let to = sink.local_addr().expect("sink address").to_string();
    let received = null_sink(sink);
    let start = Instant::now();
    let mut c = TcpStream::connect(to).expect("connect to the sink");
    let _ = c.write_all(stream);
    let _ = c.shutdown(Shutdown::Write);
    let (n, end) = received.join().expect("sink thread");
    assert_eq!(n, stream.len(), "bytes at the sink");
    (end - start).as_secs_f64()
}

/// Median, min and max.
fn summary(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench` (and whatever follows `--`, criterion's options for the
    // other benches among them); a bare number that is not an option's value is the run count.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| {
            let option_value = i > 0 && args[i - 1].starts_with("--") && args[i - 1] != "--bench";
            a.parse::<usize>().ok().filter(|_| !option_value)
        })
        .unwrap_or(7)
        .max(1);
    let stream: &'static [u8] = match std::env::var_os("VMSTATE_PROXY_STREAM") {
        Some(p) => Vec::leak(std::fs::read(&p).expect("VMSTATE_PROXY_STREAM")),
        None => Vec::leak(generate().expect("generate the stream")),
    };
    let len = stream.len() as f64;
    println!(
        "proxy alone: a {:.1} MiB stream, {runs} runs each, loopback TCP",
        len / f64::from(1 << 20)
    );
    // One of each first: page the stream in, warm the sockets.
    let _ = direct(stream);
    let _ = through_proxy(stream, false);
    let gbs = |t: f64| len / t / 1e9;
    let row = |name: &str, v: Vec<f64>| {
        let (median, min, max) = summary(v);
        println!(
            "{name:>10}: {median:.2} GB/s median (min {min:.2}, max {max:.2}), {:.0} ms",
            len / median / 1e6
        );
        median
    };
    let direct = row("direct", (0..runs).map(|_| gbs(direct(stream))).collect());
    // The proxy as it runs by default (reading and writing), then with --splice.
    let mut default = (0.0, 0.0);
    for (name, splice) in [("proxy", false), ("--splice", true)] {
        let runs: Vec<_> = (0..runs).map(|_| through_proxy(stream, splice)).collect();
        let proxy = row(name, runs.iter().map(|r| gbs(r.0)).collect());
        let cpu = row("cpu", runs.iter().map(|r| gbs(r.1)).collect());
        let ms = |f: fn(&(f64, f64, f64, f64)) -> f64| {
            summary(runs.iter().map(|r| f(r) * 1e3).collect())
        };
        let (held, held_min, held_max) = ms(|r| r.2);
        println!(
            "      held: {held:.3} ms median (min {held_min:.3}, max {held_max:.3}): the \
             final phase's last byte read to its last byte sent"
        );
        let (waited, waited_min, waited_max) = ms(|r| r.3);
        println!(
            "    waited: {waited:.0} ms median (min {waited_min:.0}, max {waited_max:.0}): \
             the proxy's thread runnable but not running (the machine's load)"
        );
        if !splice {
            default = (proxy, cpu);
        }
    }
    let (proxy, cpu) = default;
    println!(
        "target: ≥ {TARGET_GBS} GB/s through the proxy: {proxy:.2} GB/s {} ({:.2}x the direct \
         loopback; {cpu:.2} GB/s of the proxy thread's own CPU time)",
        if proxy >= TARGET_GBS { "✅" } else { "❌" },
        proxy / direct
    );
}
