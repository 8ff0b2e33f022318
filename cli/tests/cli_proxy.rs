//! `vmstate proxy` (the built binary) between a replayed real stream and a plain TCP
//! destination: what passes is byte-identical, a refused stream's final phase never reaches
//! the destination, problems are printed as `verify` prints them, exit statuses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;

mod support;

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

/// What one run showed: exit status, stdout, stderr, the bytes the destination received.
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
    received: Vec<u8>,
}

/// Replays `stream` through `vmstate proxy ARGS` into a destination that reads everything.
fn replay(stream: &[u8], args: &[&str]) -> Run {
    replay_in(stream, args, None)
}

/// [`replay`], the stream written at once or, with `pieces`, that many bytes at a time with a
/// pause after each (so the proxy's reads end inside records).
fn replay_in(stream: &[u8], args: &[&str], pieces: Option<usize>) -> Run {
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = dest.local_addr().unwrap().to_string();
    let receiver = thread::spawn(move || {
        let (mut c, _) = dest.accept().unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        v
    });
    let (child, mut err, addr, line) = start_proxy(&to, args);
    let mut src = TcpStream::connect(&addr).unwrap();
    let stream = stream.to_vec();
    let writer = thread::spawn(move || {
        // A refused stream may be cut off while it is written.
        match pieces {
            None => {
                let _ = src.write_all(&stream);
            }
            Some(n) => {
                src.set_nodelay(true).unwrap();
                for piece in stream.chunks(n) {
                    if src.write_all(piece).is_err() {
                        break;
                    }
                    thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
        let _ = src.shutdown(std::net::Shutdown::Write);
    });
    // A proxy that stops moving fails the test (it does not hang it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut child = child;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the proxy did not finish within 60 s (args {args:?}, pieces {pieces:?})");
        }
        thread::sleep(std::time::Duration::from_millis(5));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    Run {
        status: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: line + &rest,
        received: receiver.join().unwrap(),
    }
}

/// Where the final phase of a stream starts: its first FULL section (after the RAM END).
/// `vmstate verify`'s report on `stream`, written to `path` first.
fn verify_file(path: &std::path::Path, stream: &[u8]) -> String {
    std::fs::write(path, stream).unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(["verify", path.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8(verify.stdout).unwrap()
}

fn final_phase(stream: &[u8]) -> usize {
    vmstate::stream::Records::with_options(
        stream,
        vmstate::stream::FooterScan,
        vmstate::stream::Options::for_stream(stream),
    )
    .map(|r| r.unwrap())
    .find_map(|r| match r.record {
        vmstate::stream::Record::Section(s) if !s.is_ram() => Some(r.offset),
        _ => None,
    })
    .unwrap()
}

#[test]
fn a_valid_stream_passes_byte_for_byte_and_is_recorded() {
    for name in ["q72-pc-i440fx-7.2.vmstate", "q10-pc-q35-10.0.vmstate"] {
        let stream = fixture(name);
        let dir = std::env::temp_dir().join(format!("vmstate-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let record = dir.join(format!("{name}.rec"));
        let run = replay(&stream, &["--record", record.to_str().unwrap()]);
        assert_eq!(run.status, 0, "{name}: {}{}", run.stdout, run.stderr);
        assert!(
            run.received == stream,
            "{name}: the destination got other bytes"
        );
        assert!(std::fs::read(&record).unwrap() == stream, "{name}: record");
        assert!(
            run.stdout
                .contains(&format!("passed {} bytes", stream.len())),
            "{}",
            run.stdout
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The bytes `--stats` says were spliced and passed in all.
fn spliced(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .find(|l| l.contains("bytes spliced"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "of").unwrap();
    (
        words[at - 1].parse().unwrap(),
        words[at + 1].parse().unwrap(),
    )
}

/// With `--splice`, the live part is spliced (Linux ≥ 6.9: peeked, checked, and moved from
/// socket to socket by the kernel, never copied through the proxy); what arrives is the
/// same, also when the source's pieces end inside records (the proxy then takes the peeked
/// start of the cut record out of the socket before it waits: left there, Linux would not
/// reopen the source's window and the migration would hang). Without it nothing is, and
/// `--splice` does not go with `--record`.
#[test]
fn with_splice_the_live_part_is_spliced_and_arrives_byte_for_byte() {
    for name in ["q72-pc-i440fx-7.2.vmstate", "q10-pc-q35-10.0.vmstate"] {
        let stream = fixture(name);
        let held = final_phase(&stream);
        for pieces in [None, Some(1000), Some(4099), Some(65537)] {
            let run = replay_in(&stream, &["--stats", "--splice"], pieces);
            assert_eq!(
                run.status, 0,
                "{name} {pieces:?}: {}{}",
                run.stdout, run.stderr
            );
            assert!(
                run.received == stream,
                "{name} {pieces:?}: the destination got other bytes"
            );
            let (spliced, total) = spliced(&run.stderr);
            assert_eq!(total, stream.len(), "{name} {pieces:?}");
            assert!(
                spliced <= held,
                "{name} {pieces:?}: the final phase is sent, not spliced"
            );
            if pieces.is_none() {
                assert!(
                    spliced > held * 9 / 10,
                    "{name}: {spliced} of the live part's {held} bytes spliced"
                );
            }
        }
        let run = replay(&stream, &["--stats"]);
        assert_eq!(run.status, 0, "{name}: {}{}", run.stdout, run.stderr);
        assert!(run.received == stream, "{name}: copied");
        assert_eq!(spliced(&run.stderr), (0, stream.len()), "{name}: copied");
    }
    let dir = support::scratch("vmstate-proxy-splice-record");
    let usage = support::run(
        &dir,
        &[
            "proxy",
            "--splice",
            "--record",
            "r",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:1",
        ],
    );
    assert_eq!(usage.code, Some(102), "a usage error: {}", usage.stderr);
    assert!(usage.stderr.contains("--record"), "{}", usage.stderr);
}

#[test]
fn a_bad_device_section_is_refused_before_the_destination_sees_the_final_phase() {
    let mut stream = fixture("q72-pc-i440fx-7.2.vmstate");
    // cmos_index 0x80 in the rtc section: out-of-bounds CMOS access (verify's model refuses).
    let rtc = vmstate::stream::Records::new(&stream, vmstate::stream::FooterScan)
        .map(|r| r.unwrap())
        .find_map(|r| match r.record {
            vmstate::stream::Record::Section(s) if s.idstr == b"mc146818rtc" => Some(s.body_offset),
            _ => None,
        })
        .unwrap();
    stream[rtc + 128] = 0x80;
    let dir = std::env::temp_dir().join(format!("vmstate-proxy-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let record = dir.join("rec");
    std::fs::write(&record, b"kept").unwrap();
    let run = replay(&stream, &["--record", record.to_str().unwrap()]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    // The same problem, at the same offset, as `verify` reports for the file.
    let verified = verify_file(&dir.join("bad.vmstate"), &stream);
    let problem = verified
        .lines()
        .find(|l| l.contains("cmos_index"))
        .and_then(|l| l.split_once(": "))
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("{verified}"));
    assert!(run.stdout.contains(problem), "{}\n{verified}", run.stdout);
    assert!(run.stdout.contains(&format!("at byte {}", rtc + 128)));
    // The destination got the live part only: none of the device sections.
    let held = final_phase(&stream);
    assert_eq!(run.received.len(), held, "{}", run.stdout);
    assert!(run.received == stream[..held]);
    // --record leaves an existing file alone when the stream is refused.
    assert_eq!(std::fs::read(&record).unwrap(), b"kept");
    // The same spliced: the final phase still held back.
    let run = replay(&stream, &["--splice"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(problem), "{}", run.stdout);
    assert!(run.received == stream[..held], "{}", run.received.len());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn set_edits_the_held_sections_like_rewrite() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    let dir = std::env::temp_dir().join(format!("vmstate-proxy-set-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, rewritten) = (dir.join("in"), dir.join("out"));
    std::fs::write(&input, &stream).unwrap();
    let edits = [
        "--set",
        "i8259[0].imr=0x5a",
        "--set",
        "i8259[1].irq_base=0x70",
    ];
    let st = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .arg("rewrite")
        .args([&input, &rewritten])
        .args(edits)
        .status()
        .unwrap();
    assert!(st.success());
    let run = replay(&stream, &edits);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.received == std::fs::read(&rewritten).unwrap());
    assert!(run.received != stream);
    // A bad edit is a usage error (the one exit status for it), the destination gets nothing
    // of the final phase.
    let run = replay(&stream, &["--set", "i8259[0].priority_add=9"]);
    assert_eq!(run.status, 102, "{}{}", run.stdout, run.stderr);
    assert_eq!(run.received.len(), final_phase(&stream));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_hold_limit_and_the_machine_type_are_enforced() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    let run = replay(&stream, &["--hold-limit", "1000"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("hold limit (1000 bytes"),
        "{}",
        run.stdout
    );
    assert_eq!(run.received.len(), final_phase(&stream));
    // A machine type the destination does not have: refused at its CONFIGURATION record,
    // before any RAM goes through.
    let run = replay(&stream, &["--machine", "pc-q35-7.2"]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("at byte 8 (0x8), CONFIGURATION"),
        "{}",
        run.stdout
    );
    assert!(run.received.is_empty());
}

#[test]
fn postcopy_and_multifd_are_refused_unless_passed_through() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    // A POSTCOPY_ADVISE (no payload) right after the CONFIGURATION record.
    let at = final_phase(&stream);
    let config_end = vmstate::stream::Records::with_options(
        &stream,
        vmstate::stream::FooterScan,
        vmstate::stream::Options::for_stream(&stream),
    )
    .map(|r| r.unwrap())
    .find(|r| matches!(r.record, vmstate::stream::Record::Configuration(_)))
    .unwrap()
    .end;
    assert!(config_end < at);
    let mut postcopy = stream[..config_end].to_vec();
    postcopy.extend_from_slice(&[0x08, 0x00, 0x03, 0x00, 0x00]);
    postcopy.extend_from_slice(&stream[config_end..]);
    let run = replay(&postcopy, &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("postcopy (COMMAND POSTCOPY_ADVISE"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--pass-through-unvalidated"));
    assert_eq!(run.received.len(), config_end);
    let run = replay(&postcopy, &["--pass-through-unvalidated"]);
    assert_eq!(run.status, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.received == postcopy);
    assert!(run.stderr.contains("forwarded unchecked"), "{}", run.stderr);
    // A multifd channel starts with its own magic.
    let mut multifd = vec![0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1];
    multifd.extend_from_slice(&[0; 64]);
    let run = replay(&multifd, &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("multifd channel"), "{}", run.stdout);
    assert!(run.received.is_empty());
}

/// FNV-1a over everything `r` yields, and its length.
fn digest(mut r: impl Read) -> (u64, u64) {
    let (mut h, mut n) = (0xcbf2_9ce4_8422_2325u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            return (h, n);
        }
        for &b in &buf[..k] {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        n += k as u64;
    }
}

/// The address a proxy whose stderr goes to `stderr` listens on, once it says so.
fn listening_on(stderr: &std::path::Path) -> String {
    loop {
        let text = std::fs::read_to_string(stderr).unwrap_or_default();
        if let Some(a) = text
            .strip_prefix("vmstate proxy: listening on ")
            .and_then(|l| l.split(',').next())
            .filter(|_| text.contains('\n'))
        {
            return a.to_string();
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn ram_streams_through_the_v4_pair_in_bounded_memory() {
    // The same 256 MiB of RAM pages through --send-v4 and --receive-v4: neither side holds
    // RAM (the sending side writes it as DATA records as it comes, the receiving side converts
    // one record at a time), and the destination gets every byte of the v3 stream.
    let dir = support::scratch("vmstate-proxy-v4-memory");
    let stream = dir.join("big.vmstate");
    let len = support::write_stream(&stream, 256 << 20, true);
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = dest.local_addr().unwrap().to_string();
    let receiver = thread::spawn(move || digest(dest.accept().unwrap().0));
    let (rdir, sdir) = (dir.join("receive"), dir.join("send"));
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::create_dir_all(&sdir).unwrap();
    // The destination: a dump with the stream's one device (the stream has no machine type:
    // it is checked as pc-i440fx-7.2).
    let dump = dir.join("dump.json");
    let device = r#"{"name": "vmstate-test", "version_id": 1, "minimum_version_id": 1}"#;
    let json = format!(
        r#"{{"vmschkmachine": {{"Name": "pc-i440fx-7.2"}}, "vmstate-test": {{"Description": {device}}}}}"#
    );
    std::fs::write(&dump, json).unwrap();
    let recv = {
        let (rdir, dump) = (rdir.clone(), dump.to_str().unwrap().to_string());
        thread::spawn(move || {
            let args = [
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--to",
                &to,
                "--receive-v4",
            ];
            support::run(
                &rdir,
                &[&args[..], &["--dump", &dump, "--qemu", "7.2"]].concat(),
            )
        })
    };
    let raddr = listening_on(&rdir.join("stderr"));
    let send = {
        let sdir = sdir.clone();
        thread::spawn(move || {
            let args = [
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--to",
                &raddr,
                "--send-v4",
            ];
            support::run(&sdir, &args)
        })
    };
    let mut c = TcpStream::connect(listening_on(&sdir.join("stderr"))).unwrap();
    std::io::copy(&mut std::fs::File::open(&stream).unwrap(), &mut c).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let (send, recv) = (send.join().unwrap(), recv.join().unwrap());
    assert_eq!(send.code, Some(0), "{}{}", send.stdout, send.stderr);
    assert_eq!(recv.code, Some(0), "{}{}", recv.stdout, recv.stderr);
    assert_eq!(
        receiver.join().unwrap(),
        digest(std::fs::File::open(&stream).unwrap())
    );
    assert!(
        recv.stdout.contains(&format!("passed {len} v3 bytes")),
        "{}",
        recv.stdout
    );
    for (side, run) in [("--send-v4", &send), ("--receive-v4", &recv)] {
        let mib = run.peak as f64 / f64::from(1 << 20);
        eprintln!("proxy {side}: peak RSS {mib:.1} MiB for a {len}-byte stream");
        assert!(
            mib < 32.0,
            "{side}: peak RSS {mib:.1} MiB for a {len}-byte stream"
        );
    }
}

#[test]
fn ram_streams_through_in_bounded_memory() {
    // 256 MiB of non-zero RAM pages, a described device and the trailer: the proxy's peak
    // resident set stays far below the stream (RAM is never held), and the destination gets
    // every byte. Spliced (no --record): a proxy that waited for input with peeked bytes
    // left in the socket stalls here (the source's window never reopens) and is killed.
    let dir = support::scratch("vmstate-proxy-memory");
    let stream = dir.join("big.vmstate");
    let len = support::write_stream(&stream, 256 << 20, true);
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = dest.local_addr().unwrap().to_string();
    let receiver = thread::spawn(move || digest(dest.accept().unwrap().0));
    let source = {
        let (stderr, stream) = (dir.join("stderr"), stream.clone());
        thread::spawn(move || {
            let addr = listening_on(&stderr);
            let mut c = TcpStream::connect(addr).unwrap();
            std::io::copy(&mut std::fs::File::open(stream).unwrap(), &mut c).unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let run = support::run(&dir, &["proxy", "--listen", "127.0.0.1:0", "--to", &to]);
    source.join().unwrap();
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_eq!(
        receiver.join().unwrap(),
        digest(std::fs::File::open(&stream).unwrap())
    );
    assert!(
        run.stdout.contains(&format!("passed {len} bytes")),
        "{}",
        run.stdout
    );
    let mib = run.peak as f64 / f64::from(1 << 20);
    eprintln!("proxy: peak RSS {mib:.1} MiB for a {len}-byte stream");
    assert!(mib < 24.0, "peak RSS {mib:.1} MiB for a {len}-byte stream");
}

#[test]
fn a_device_section_reusing_the_ram_sections_id_is_refused_like_verify_does() {
    // A rule across the RAM part (streamed) and the final phase (held): section ids are
    // unique in a stream.
    let mut stream = fixture("q72-pc-i440fx-7.2.vmstate");
    let ram_id = vmstate::stream::Records::new(&stream, vmstate::stream::FooterScan)
        .map(|r| r.unwrap())
        .find_map(|r| match r.record {
            vmstate::stream::Record::Section(s) if s.is_ram() => Some(s.section_id),
            _ => None,
        })
        .unwrap();
    // The second device section: the final phase is held by then, and the walk of `verify`
    // over it does not see the RAM section's id (it is in the part that streamed through).
    let held = final_phase(&stream);
    let (at, end) = vmstate::stream::Records::new(&stream, vmstate::stream::FooterScan)
        .map(|r| r.unwrap())
        .find_map(|r| match r.record {
            vmstate::stream::Record::Section(_) if r.offset > held => Some((r.offset, r.end)),
            _ => None,
        })
        .unwrap();
    // The id in the header and in the footer.
    stream[at + 1..at + 5].copy_from_slice(&ram_id.to_be_bytes());
    stream[end - 4..end].copy_from_slice(&ram_id.to_be_bytes());
    let dir = std::env::temp_dir().join(format!("vmstate-proxy-id-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let verified = verify_file(&dir.join("dup.vmstate"), &stream);
    let problem = verified
        .lines()
        .next()
        .and_then(|l| l.split_once(": "))
        .map(|(_, p)| p)
        .unwrap();
    assert!(
        problem.contains(&format!("at byte {}", at + 1)),
        "{verified}"
    );
    let run = replay(&stream, &[]);
    assert_eq!(run.status, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(problem), "{}\n{verified}", run.stdout);
    assert_eq!(run.received.len(), held);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One side of the v4 pair: exit status, stdout, stderr.
struct Side {
    status: i32,
    stdout: String,
    stderr: String,
}

/// Starts `vmstate proxy --listen 127.0.0.1:0 --to TO ARGS`; returns it, its stderr after
/// the first line, its address and that first line ("listening on …").
fn start_proxy(
    to: &str,
    args: &[&str],
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--to", to])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("vmstate proxy: listening on ")
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, err, addr, line)
}

fn side(child: std::process::Child, mut err: BufReader<std::process::ChildStderr>) -> Side {
    let out = child.wait_with_output().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    Side {
        status: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: rest,
    }
}

/// Replays `stream` through `proxy --send-v4 SEND` and `proxy --receive-v4 RECEIVE` into a
/// destination that reads everything. `tamper` may change the v4 bytes between the two
/// (a relay in the middle); the destination's bytes are returned with both sides.
fn replay_pair(
    stream: &[u8],
    send: &[&str],
    receive: &[&str],
    tamper: Option<fn(&mut Vec<u8>)>,
) -> (Side, Side, Vec<u8>) {
    let dest = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = dest.local_addr().unwrap().to_string();
    let receiver = thread::spawn(move || {
        let (mut c, _) = dest.accept().unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        v
    });
    let mut args = vec!["--receive-v4"];
    args.extend_from_slice(receive);
    let (recv, recv_err, recv_addr, _) = start_proxy(&to, &args);
    // A relay between the two proxies that may change the v4 stream (whole, then sent on).
    let relay_addr = match tamper {
        None => recv_addr,
        Some(f) => {
            let relay = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = relay.local_addr().unwrap().to_string();
            thread::spawn(move || {
                let (mut a, _) = relay.accept().unwrap();
                let mut b = TcpStream::connect(&recv_addr).unwrap();
                let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                // The hello and the return path go back as they are.
                thread::spawn(move || {
                    let _ = std::io::copy(&mut b2, &mut a2);
                });
                let mut v4 = Vec::new();
                let _ = a.read_to_end(&mut v4);
                f(&mut v4);
                let _ = b.write_all(&v4);
                let _ = b.shutdown(std::net::Shutdown::Write);
                let _ = std::io::copy(&mut b, &mut std::io::sink());
            });
            addr
        }
    };
    let mut args = vec!["--send-v4"];
    args.extend_from_slice(send);
    let (sender, send_err, send_addr, _) = start_proxy(&relay_addr, &args);
    let mut src = TcpStream::connect(&send_addr).unwrap();
    let _ = src.write_all(stream);
    let _ = src.shutdown(std::net::Shutdown::Write);
    let s = side(sender, send_err);
    let r = side(recv, recv_err);
    (s, r, receiver.join().unwrap())
}

fn fixture_path(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_v4_pair_delivers_the_exact_v3_bytes_of_every_second_generation_fixture() {
    for name in [
        "q72-pc-i440fx-7.2",
        "q72-pc-q35-7.2",
        "q10-pc-i440fx-10.0",
        "q10-pc-q35-10.0",
        "q10-pc-i440fx-7.2",
        "q10-pc-q35-7.2",
        "q10-pc-i440fx-7.2-ltim",
        "q72-pc-i440fx-7.2-ignore-shared",
        "q10-pc-i440fx-10.0-ignore-shared",
    ] {
        let stream = fixture(&format!("{name}.vmstate"));
        let own = fixture_path(&format!("{name}.vmstate"));
        let (send, recv, received) = replay_pair(&stream, &[], &["--stream", &own], None);
        assert_eq!(send.status, 0, "{name}: {}{}", send.stdout, send.stderr);
        assert_eq!(recv.status, 0, "{name}: {}{}", recv.stdout, recv.stderr);
        assert!(
            received == stream,
            "{name}: the destination got other bytes ({} of {})",
            received.len(),
            stream.len()
        );
        assert!(
            recv.stdout
                .contains(&format!("passed {} v3 bytes", stream.len())),
            "{}",
            recv.stdout
        );
    }
}

/// Where the RAM block list of a stream ends (the offset of its first page record).
fn first_page(stream: &[u8]) -> usize {
    let start = vmstate::stream::Records::with_options(
        stream,
        vmstate::stream::FooterScan,
        vmstate::stream::Options::for_stream(stream),
    )
    .map(|r| r.unwrap())
    .find(|r| matches!(r.record, vmstate::stream::Record::Section(ref s) if s.is_ram()))
    .unwrap();
    // The START section holds the block list (and EOS): pages come after it.
    start.end
}

#[test]
fn the_v4_pair_refuses_a_machine_type_or_ram_block_the_destination_lacks_at_once() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    // A q35 destination: refused at the CONFIGURATION record, before any RAM.
    let q35 = fixture_path("q72-pc-q35-7.2.dump-vmstate.json");
    let (send, recv, received) = replay_pair(&stream, &[], &["--dump", &q35], None);
    assert_eq!(send.status, 1, "{}{}", send.stdout, send.stderr);
    assert!(
        send.stdout.contains("at byte 8 (0x8), CONFIGURATION: stream machine type pc-i440fx-7.2, destination pc-q35-7.2"),
        "{}",
        send.stdout
    );
    assert_eq!(recv.status, 1, "{}{}", recv.stdout, recv.stderr);
    assert!(
        recv.stdout.contains("ended before its EOF record"),
        "{}",
        recv.stdout
    );
    assert!(
        received.is_empty(),
        "{} bytes reached the destination",
        received.len()
    );

    // A destination whose stream (same machine type, other devices and -m) has other RAM
    // blocks: refused at the block list, before any page.
    let other = fixture_path("pc-7.2-nodefaults-S.vmstate");
    let (send, recv, received) = replay_pair(&stream, &[], &["--stream", &other], None);
    assert_eq!(send.status, 1, "{}{}", send.stdout, send.stderr);
    assert!(
        send.stdout
            .contains("section 'ram' block list: RAM block pc.ram is 33554432 bytes")
            || send.stdout.contains("section 'ram' block list: RAM block"),
        "{}",
        send.stdout
    );
    assert_eq!(recv.status, 1, "{}{}", recv.stdout, recv.stderr);
    assert!(
        received.len() < first_page(&stream),
        "{} bytes reached the destination",
        received.len()
    );
    assert!(stream.starts_with(&received));
}

#[test]
fn the_v4_pair_refuses_the_final_phase_when_the_destination_lacks_a_subsection_or_version() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    // The 7.2 build's dump, without e1000/mit_state and with mc146818rtc at version 2 only:
    // the typed models accept the stream (it is valid for the real 7.2), the capabilities not.
    let dump = fixture_path("q72-pc-i440fx-7.2.dump-vmstate.json");
    let mut d: serde_json::Value = serde_json::from_slice(&std::fs::read(&dump).unwrap()).unwrap();
    // Every QOM type with these vmsds (e1000, e1000-82544gc, e1000-82545em share "e1000").
    for (_, t) in d.as_object_mut().unwrap() {
        let Some(desc) = t.get_mut("Description") else {
            continue;
        };
        if desc["name"] == "e1000" {
            let subs = desc["Subsections"].as_array_mut().unwrap();
            subs.retain(|s| s["name"] != "e1000/mit_state");
        }
        if desc["name"] == "mc146818rtc" {
            desc["version_id"] = 2.into();
        }
    }
    let dir = std::env::temp_dir().join(format!("vmstate-proxy-v4caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let edited = dir.join("dump.json");
    std::fs::write(&edited, serde_json::to_vec(&d).unwrap()).unwrap();
    let (send, recv, received) = replay_pair(
        &stream,
        &[],
        &["--dump", edited.to_str().unwrap(), "--qemu", "7.2"],
        None,
    );
    assert_eq!(send.status, 1, "{}{}", send.stdout, send.stderr);
    assert!(
        send.stdout.contains("e1000 (instance 0): destination does not know must-understand subsection e1000/mit_state"),
        "{}",
        send.stdout
    );
    assert!(
        send.stdout
            .contains("mc146818rtc (instance 0): version 3 outside destination's 1..=2"),
        "{}",
        send.stdout
    );
    assert_eq!(recv.status, 1, "{}{}", recv.stdout, recv.stderr);
    // Everything before the final phase went through, nothing of it.
    assert!(
        received == stream[..final_phase(&stream)],
        "{} of {}",
        received.len(),
        final_phase(&stream)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupted_v4_byte_between_the_proxies_is_refused_by_the_receiving_side() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    let own = fixture_path("q72-pc-i440fx-7.2.vmstate");
    // One bit of a RAM page in the middle of the v4 stream.
    let (send, recv, received) = replay_pair(
        &stream,
        &[],
        &["--stream", &own],
        Some(|v4: &mut Vec<u8>| {
            let mid = v4.len() / 2;
            v4[mid] ^= 0x10;
        }),
    );
    assert_eq!(send.status, 0, "{}{}", send.stdout, send.stderr);
    assert_eq!(recv.status, 1, "{}{}", recv.stdout, recv.stderr);
    assert!(recv.stdout.contains("CRC-32C mismatch"), "{}", recv.stdout);
    assert!(
        recv.stdout.contains("refused; the destination got"),
        "{}",
        recv.stdout
    );
    // The destination got the records before the corrupt one, intact, and not the rest.
    assert!(received.len() < stream.len() / 2 + 4096 && stream.starts_with(&received));
}

#[test]
fn send_v4_refuses_a_peer_that_is_not_a_receiving_proxy() {
    // A peer that answers something else than the hello (here: bytes of a v3 stream, as if
    // --to were a plain `proxy`'s destination): refused before any byte of the stream goes.
    let peer = TcpListener::bind("127.0.0.1:0").unwrap();
    let to = peer.local_addr().unwrap().to_string();
    let got = thread::spawn(move || {
        let (mut c, _) = peer.accept().unwrap();
        c.write_all(b"QEVM\0\0\0\x03").unwrap();
        let mut v = Vec::new();
        let _ = c.read_to_end(&mut v);
        v
    });
    let (child, err, addr, _) = start_proxy(&to, &["--send-v4"]);
    let mut src = TcpStream::connect(&addr).unwrap();
    let _ = src.write_all(&fixture("q72-pc-i440fx-7.2.vmstate"));
    let _ = src.shutdown(std::net::Shutdown::Write);
    let s = side(child, err);
    assert_eq!(s.status, 1, "{}{}", s.stdout, s.stderr);
    assert!(
        s.stdout.contains("destination hello: at byte 0") && s.stdout.contains("--receive-v4"),
        "{}",
        s.stdout
    );
    assert!(got.join().unwrap().is_empty());
}

#[test]
fn the_v4_pair_refuses_postcopy_and_multifd() {
    let stream = fixture("q72-pc-i440fx-7.2.vmstate");
    let dump = fixture_path("q72-pc-i440fx-7.2.dump-vmstate.json");
    // A POSTCOPY_ADVISE right after the CONFIGURATION record: what came before goes through.
    let config_end = vmstate::stream::Records::with_options(
        &stream,
        vmstate::stream::FooterScan,
        vmstate::stream::Options::for_stream(&stream),
    )
    .map(|r| r.unwrap())
    .find(|r| matches!(r.record, vmstate::stream::Record::Configuration(_)))
    .unwrap()
    .end;
    let mut postcopy = stream[..config_end].to_vec();
    postcopy.extend_from_slice(&[0x08, 0x00, 0x03, 0x00, 0x00]);
    postcopy.extend_from_slice(&stream[config_end..]);
    let (send, recv, received) = replay_pair(&postcopy, &[], &["--dump", &dump], None);
    assert_eq!(send.status, 1, "{}{}", send.stdout, send.stderr);
    assert!(
        send.stdout.contains("postcopy (COMMAND POSTCOPY_ADVISE"),
        "{}",
        send.stdout
    );
    assert_eq!(recv.status, 1, "{}{}", recv.stdout, recv.stderr);
    assert!(
        received == stream[..config_end],
        "{} of {config_end}: {}",
        received.len(),
        recv.stdout
    );
    // A multifd channel: nothing goes through.
    let mut multifd = vec![0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1];
    multifd.extend_from_slice(&[0; 64]);
    let (send, _, received) = replay_pair(&multifd, &[], &["--dump", &dump], None);
    assert_eq!(send.status, 1, "{}{}", send.stdout, send.stderr);
    assert!(send.stdout.contains("multifd channel"), "{}", send.stdout);
    assert!(received.is_empty());
}
