//! `vmstate proxy` between real QEMUs (issue 16 items 1-4): a source QEMU migrates with
//! `migrate tcp:PROXY`, the proxy passes the stream to a destination QEMU started with
//! `-incoming tcp:DEST`. Valid migrations complete with the source's device state; a refused
//! one never completes; hostile streams replayed over TCP never load, and the proxy names the
//! same problem `verify` names. The v4 pair (`--send-v4` / `--receive-v4`) sits in the middle
//! of every valid migration, and carries a 512 MiB guest of random RAM.

use serde_json::json;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;
use vmstate_cli::exit::Failure;
use vmstate_cli::proxy::v4::{DestFiles, Received, destination_hello, run_receive, run_send};
use vmstate_cli::proxy::{DEFAULT_HOLD_LIMIT, Outcome, ProxyOptions, run};
use vmstate_cli::verify::{DestSpec, verify};
use vmstate_host_tests::QemuBuild;
use vmstate_host_tests::differential;
use vmstate_host_tests::qemu::{LoadOutcome, Qemu, fixture_machine};

type Ran = Result<(String, Outcome), Failure>;

/// A proxy running [`run`] on a thread, and the address it listens on.
type Proxy = Listening<Ran>;

fn options(to: &str, dest: DestSpec) -> ProxyOptions {
    ProxyOptions {
        listen: "127.0.0.1:0".into(),
        to: to.into(),
        dest,
        hold_limit: DEFAULT_HOLD_LIMIT,
        edits: Vec::new(),
        record: None,
        pass_through_unvalidated: false,
        splice: false,
    }
}

fn proxy(options: ProxyOptions) -> Proxy {
    spawn(move |listening| run(&options, listening))
}

/// Runs `f` (a proxy given its `listening` callback) on a thread; returns it once it listens.
fn spawn<T: Send + 'static>(
    f: impl FnOnce(&mut dyn FnMut(SocketAddr)) -> T + Send + 'static,
) -> Listening<T> {
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        f(&mut |a| {
            let _ = tx.send(a);
        })
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the proxy listens");
    Listening { addr, thread }
}

/// A thread listening on `addr`.
struct Listening<T> {
    addr: SocketAddr,
    thread: JoinHandle<T>,
}

/// The v4 pair in front of `to`: `proxy --receive-v4 --dump DUMP` (the destination build's
/// `-dump-vmstate` of the machine type, a fixture) passing v3 to `to`, and `proxy --send-v4`
/// sending to it; the sender's address is where the stream goes.
struct Pair {
    send: Listening<Ran>,
    receive: Listening<Result<(String, Received), Failure>>,
}

fn pair(to: &str, dump: &str) -> Pair {
    let files = DestFiles {
        dump: Some(vmstate_host_tests::fixture_path(dump)),
        streams: Vec::new(),
    };
    let hello = destination_hello(&DestSpec::default(), &files).expect("the destination's hello");
    let recv = options(to, DestSpec::default());
    let receive = spawn(move |l| run_receive(&recv, &hello, l));
    let send = options(&receive.addr.to_string(), DestSpec::default());
    let send = spawn(move |l| run_send(&send, l));
    Pair { send, receive }
}

impl Pair {
    /// Both sides passed everything: the sender's RAM records, the receiver's v3 bytes.
    fn passed(self, case: &str) -> (usize, usize) {
        let ram = match self.send.thread.join().unwrap() {
            Ok((_, Outcome::Passed { ram_records, .. })) => ram_records,
            other => panic!("{case}: --send-v4: {other:?}"),
        };
        let v3 = match self.receive.thread.join().unwrap() {
            Ok((_, Received::Complete { v3, .. })) => v3,
            other => panic!("{case}: --receive-v4: {other:?}"),
        };
        (ram, v3)
    }
}

/// The fixture dump of the destination `build`'s `machine` (as the migrations below name it).
fn dump_of(build: QemuBuild, machine: &str) -> String {
    let full = match machine {
        "pc" | "q35" => {
            let v = if build == QemuBuild::V7_2 {
                "7.2"
            } else {
                "10.0"
            };
            let chipset = if machine == "pc" { "i440fx" } else { "q35" };
            format!("pc-{chipset}-{v}")
        }
        m => m.to_owned(),
    };
    let b = if build == QemuBuild::V7_2 {
        "q72"
    } else {
        "q10"
    };
    format!("{b}-{full}.dump-vmstate.json")
}

/// A TCP port nobody listens on now (for a destination's `-incoming`).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A destination QEMU `build` of `machine` waiting on `-incoming tcp:127.0.0.1:PORT`.
fn destination(build: QemuBuild, machine: &str, extra: &[&str]) -> Option<(Qemu, String)> {
    let to = format!("127.0.0.1:{}", free_port());
    let incoming = format!("tcp:{to}");
    let args = [
        fixture_machine(machine).as_slice(),
        extra,
        &["-S", "-incoming", &incoming],
    ]
    .concat();
    Some((Qemu::start(build, &args)?, to))
}

fn status(q: &mut Qemu) -> String {
    let s = q.execute("query-migrate", json!({}));
    s["status"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the source's outgoing migration is no longer active.
fn source_done(q: &mut Qemu) -> String {
    for _ in 0..600 {
        let s = status(q);
        if s == "completed" || s == "failed" || s == "cancelled" {
            return s;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("the source's migration did not end");
}

fn set_return_path(q: &mut Qemu) {
    q.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "return-path", "state": true }] }),
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmstate-proxy-host-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Where the final phase of `stream` starts: its first non-RAM section.
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

/// A file of `mib` MiB of pseudo-random bytes (different for each `seed`), made once and kept
/// in the temp dir for later runs (the same bytes each time).
fn random_ram(seed: u64, mib: usize) -> PathBuf {
    let dir = std::env::temp_dir().join("vmstate-proxy-host-ram");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("ram-{seed}-{mib}M"));
    if !path.exists() {
        let mut x = seed | 1;
        let mut bytes = Vec::with_capacity(mib << 20);
        while bytes.len() < mib << 20 {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let tmp = scratch(&format!("ram-{seed}.{:?}", thread::current().id()));
        // Same file system as `path` (both under the temp dir): the rename is atomic.
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(tmp, &path).unwrap();
    }
    path
}

/// Guest RAM (`-m 32` of the fixture options) from a file of random bytes, private to the
/// guest: a source whose RAM is mostly non-zero, a destination whose RAM starts different.
const RAM_MIB: usize = 32;

fn guest(machine: &str, seed: u64) -> Vec<String> {
    let backend = format!(
        "memory-backend-file,id=m0,size={RAM_MIB}M,mem-path={},share=off",
        random_ram(seed, RAM_MIB).display()
    );
    fixture_machine(machine)
        .into_iter()
        .map(String::from)
        .chain([
            "-object".into(),
            backend,
            "-machine".into(),
            "memory-backend=m0".into(),
        ])
        .collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The guest's RAM as QMP `pmemsave` writes it.
fn ram(q: &mut Qemu, name: &str) -> Vec<u8> {
    let path = scratch(name);
    q.execute(
        "pmemsave",
        json!({ "val": 0, "size": RAM_MIB << 20, "filename": path.display().to_string() }),
    );
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(path);
    bytes
}

/// One migration source → proxy A (`--record a`) → the v4 pair → proxy B (`--record b`) →
/// proxy C (`--splice`) → destination, with the checks of item 4; returns the recorded stream. A's recording (what
/// entered the pair) equals B's (what left it): byte-identical through v4.
fn migrate_through(src_build: QemuBuild, dst_build: QemuBuild, machine: &str) -> Option<Vec<u8>> {
    let case = format!("{src_build:?} -> {dst_build:?} {machine}");
    let dst_guest = guest(machine, 2);
    let (mut dst, to) = destination(
        dst_build,
        machine,
        &strs(&dst_guest[fixture_machine(machine).len()..]),
    )?;
    let spec = DestSpec {
        qemu: Some(dst_build),
        ..DestSpec::default()
    };
    let (rec_a, rec_b) = (
        scratch(&format!("{case}-a.vmstate")),
        scratch(&format!("{case}-b.vmstate")),
    );
    // Next to the destination, a proxy that splices the live part (`--splice`).
    let c = proxy(ProxyOptions {
        splice: true,
        ..options(&to, spec.clone())
    });
    let b = proxy(ProxyOptions {
        record: Some(rec_b.clone()),
        ..options(&c.addr.to_string(), spec.clone())
    });
    let v4 = pair(&b.addr.to_string(), &dump_of(dst_build, machine));
    let a = proxy(ProxyOptions {
        record: Some(rec_a.clone()),
        ..options(&v4.send.addr.to_string(), spec)
    });
    let src_guest = guest(machine, 1);
    let mut src = Qemu::start(src_build, &[strs(&src_guest).as_slice(), &["-S"]].concat())?;
    // The firmware runs a while (it programs the PIC, PIT, RTC, ... and writes RAM), then
    // the guest is stopped and migrated.
    src.execute("cont", json!({}));
    thread::sleep(Duration::from_millis(700));
    src.execute("stop", json!({}));
    let src_ram = ram(&mut src, &format!("{case}-src.ram"));
    let nonzero = src_ram.iter().filter(|&&b| b != 0).count();
    assert!(
        nonzero > src_ram.len() / 2,
        "{case}: {nonzero} non-zero bytes"
    );
    src.execute("migrate", json!({ "uri": format!("tcp:{}", a.addr) }));
    for (name, p) in [("A", a), ("B", b), ("C", c)] {
        match p.thread.join().unwrap() {
            Ok((
                _,
                Outcome::Passed {
                    ram_records,
                    spliced,
                    bytes,
                    ..
                },
            )) => {
                assert!(ram_records > 1000, "{case} {name}: {ram_records}");
                // A and B record (and so copy); C splices (Linux ≥ 6.9) all but the final
                // phase and the few bytes of records cut by a read.
                let want = if name == "C" { bytes / 2 + 1 } else { 0 };
                assert!(
                    (spliced == 0) == (want == 0) && spliced >= want,
                    "{case} {name}: {spliced} of {bytes} bytes spliced"
                );
            }
            other => panic!("{case}: proxy {name}: {other:?}"),
        }
    }
    let (ram_records, _) = v4.passed(&case);
    assert!(ram_records > 1000, "{case} v4: {ram_records}");
    assert_eq!(source_done(&mut src), "completed", "{case}");
    assert_eq!(
        dst.wait_loaded(),
        LoadOutcome::Completed,
        "{case}: {}",
        dst.stderr()
    );
    // The destination has the source's device state and RAM.
    for cmd in ["info pic", "info registers -a"] {
        assert_eq!(src.hmp(cmd), dst.hmp(cmd), "{case}: {cmd}");
    }
    assert!(
        src.hmp("info pic").contains("imr=")
            && !src.hmp("info pic").contains("pic0: irr=00 imr=00"),
        "{case}: the firmware did not program the PIC"
    );
    assert!(
        src_ram == ram(&mut dst, &format!("{case}-dst.ram")),
        "{case}: RAM differs"
    );
    // And runs.
    dst.execute("cont", json!({}));
    let st = dst.execute("query-status", json!({}));
    assert_eq!(st["status"], "running", "{case}: {st}");
    // Proxy B recorded exactly what proxy A passed: the recording is byte for byte what the
    // destination of A received.
    let recorded = std::fs::read(&rec_a).unwrap();
    assert!(
        recorded == std::fs::read(&rec_b).unwrap(),
        "{case}: the records differ"
    );
    // The recording loads on its own, with the same state.
    let mut again = Qemu::incoming_on(dst_build, &rec_a, &strs(&dst_guest)).expect("installed");
    assert_eq!(again.wait_loaded(), LoadOutcome::Completed, "{case}");
    assert_eq!(src.hmp("info pic"), again.hmp("info pic"), "{case}");
    assert!(
        src_ram == ram(&mut again, &format!("{case}-again.ram")),
        "{case}: RAM differs"
    );
    let _ = std::fs::remove_file(rec_a);
    let _ = std::fs::remove_file(rec_b);
    Some(recorded)
}

#[test]
fn qemu_7_2_to_7_2_through_the_proxy_pc_and_q35() {
    if migrate_through(QemuBuild::V7_2, QemuBuild::V7_2, "pc").is_none() {
        return;
    }
    migrate_through(QemuBuild::V7_2, QemuBuild::V7_2, "q35");
    // `--record` next to a direct capture (`migrate "exec:cat > FILE"`) of an identical
    // paused source (a QEMU migrates once): the same length and the same bytes up to the
    // final phase (header, CONFIGURATION, every RAM record); the device sections carry the
    // clocks of their moment.
    let args = [fixture_machine("pc").as_slice(), &["-S"]].concat();
    let (mut dst, to) = destination(QemuBuild::V7_2, "pc", &[]).expect("installed");
    let record = scratch("proxied.vmstate");
    let p = proxy(ProxyOptions {
        record: Some(record.clone()),
        ..options(&to, DestSpec::default())
    });
    let mut src = Qemu::start(QemuBuild::V7_2, &args).expect("installed");
    src.execute("migrate", json!({ "uri": format!("tcp:{}", p.addr) }));
    assert!(matches!(
        p.thread.join().unwrap(),
        Ok((_, Outcome::Passed { .. }))
    ));
    assert_eq!(dst.wait_loaded(), LoadOutcome::Completed);
    let mut src = Qemu::start(QemuBuild::V7_2, &args).expect("installed");
    let direct = scratch("direct.vmstate");
    src.execute(
        "migrate",
        json!({ "uri": format!("exec:cat > {}", direct.display()) }),
    );
    assert_eq!(source_done(&mut src), "completed");
    let (recorded, direct) = (
        std::fs::read(record).unwrap(),
        std::fs::read(direct).unwrap(),
    );
    assert_eq!(recorded.len(), direct.len());
    let held = final_phase(&direct);
    assert!(recorded[..held] == direct[..held]);
}

#[test]
fn qemu_10_0_to_10_0_through_the_proxy_pc_and_q35() {
    migrate_through(QemuBuild::V10_0, QemuBuild::V10_0, "pc");
    migrate_through(QemuBuild::V10_0, QemuBuild::V10_0, "q35");
}

#[test]
fn qemu_7_2_to_10_0_through_the_proxy_with_pc_i440fx_7_2() {
    migrate_through(QemuBuild::V7_2, QemuBuild::V10_0, "pc-i440fx-7.2");
}

#[test]
fn set_edits_a_live_migration_and_a_refusal_fails_it_on_both_sides() {
    // --set: the destination loads the edited final phase (trailer rewritten to match).
    let Some((mut dst, to)) = destination(QemuBuild::V10_0, "pc", &[]) else {
        return;
    };
    let p = proxy(ProxyOptions {
        edits: vec!["i8259[0].imr=0x5a".into(), "i8259[1].irq_base=0x70".into()],
        ..options(&to, DestSpec::default())
    });
    let mut src = Qemu::start(
        QemuBuild::V10_0,
        &[fixture_machine("pc").as_slice(), &["-S"]].concat(),
    )
    .expect("installed");
    src.execute("migrate", json!({ "uri": format!("tcp:{}", p.addr) }));
    assert!(matches!(
        p.thread.join().unwrap(),
        Ok((_, Outcome::Passed { .. }))
    ));
    assert_eq!(
        dst.wait_loaded(),
        LoadOutcome::Completed,
        "{}",
        dst.stderr()
    );
    let pic = dst.hmp("info pic");
    assert!(
        pic.contains("imr=5a") && pic.contains("irq_base=70"),
        "{pic}"
    );
    assert!(!src.hmp("info pic").contains("imr=5a"));
    drop((src, dst));

    // A destination configured with 4 HPET timers (the source has 3), both with a return
    // path: the final phase is refused (the hpet section), the destination never completes,
    // and the source, told over the forwarded return path, fails its migration.
    let (mut dst, to) =
        destination(QemuBuild::V10_0, "pc", &["-global", "hpet.timers=4"]).expect("installed");
    set_return_path(&mut dst);
    let p = proxy(options(
        &to,
        DestSpec {
            hpet_timers: Some(4),
            ..DestSpec::default()
        },
    ));
    let mut src = Qemu::start(
        QemuBuild::V10_0,
        &[fixture_machine("pc").as_slice(), &["-S"]].concat(),
    )
    .expect("installed");
    set_return_path(&mut src);
    src.execute("migrate", json!({ "uri": format!("tcp:{}", p.addr) }));
    match p.thread.join().unwrap() {
        Ok((_, Outcome::Refused(problems))) => {
            assert!(
                problems.iter().any(|p| p.message.contains("hpet")),
                "{problems:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(dst.wait_loaded(), LoadOutcome::Failed(_)));
    assert_eq!(source_done(&mut src), "failed");
    drop((src, dst));

    // The same through the v4 pair, the receiving side describing the 4-timer destination:
    // the sending side refuses the final phase, and the failure reaches the source across
    // the pair.
    let (mut dst, to) =
        destination(QemuBuild::V10_0, "pc", &["-global", "hpet.timers=4"]).expect("installed");
    set_return_path(&mut dst);
    let files = DestFiles {
        dump: Some(vmstate_host_tests::fixture_path(
            "q10-pc-i440fx-10.0.dump-vmstate.json",
        )),
        streams: Vec::new(),
    };
    let spec = DestSpec {
        hpet_timers: Some(4),
        ..DestSpec::default()
    };
    let hello = destination_hello(&spec, &files).expect("hello");
    let recv = options(&to, spec);
    let receive = spawn(move |l| run_receive(&recv, &hello, l));
    let send = options(&receive.addr.to_string(), DestSpec::default());
    let send = spawn(move |l| run_send(&send, l));
    let mut src = Qemu::start(
        QemuBuild::V10_0,
        &[fixture_machine("pc").as_slice(), &["-S"]].concat(),
    )
    .expect("installed");
    set_return_path(&mut src);
    src.execute("migrate", json!({ "uri": format!("tcp:{}", send.addr) }));
    match send.thread.join().unwrap() {
        Ok((_, Outcome::Refused(problems))) => {
            assert!(
                problems.iter().any(|p| p.message.contains("hpet")),
                "{problems:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        receive.thread.join().unwrap(),
        Ok((_, Received::Refused { .. }))
    ));
    assert!(matches!(dst.wait_loaded(), LoadOutcome::Failed(_)));
    assert_eq!(source_done(&mut src), "failed");
}

/// Replays `bytes` over TCP through a proxy into a real destination QEMU `build` of
/// `machine`; the proxy's outcome and how the destination's load ended.
fn replay(bytes: &[u8], build: QemuBuild, machine: &str) -> Option<(Ran, LoadOutcome)> {
    let (mut dst, to) = destination(build, machine, &[])?;
    let p = proxy(options(
        &to,
        DestSpec {
            machine: Some(machine.into()),
            qemu: Some(build),
            ..DestSpec::default()
        },
    ));
    let src = TcpStream::connect(p.addr).unwrap();
    let writer = {
        let bytes = bytes.to_vec();
        let mut w = src.try_clone().unwrap();
        thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&bytes);
            let _ = w.shutdown(std::net::Shutdown::Write);
        })
    };
    let ran = p.thread.join().unwrap();
    let _ = writer.join();
    let _ = src.shutdown(std::net::Shutdown::Both);
    Some((ran, dst.wait_loaded()))
}

#[test]
fn hostile_streams_replayed_through_the_proxy_never_load_and_valid_ones_do() {
    // The differential campaign's mutants of the real fixtures (hostile values at the
    // boundaries of every device rule, cut and reordered records, ...), each on the oldest
    // build that has its machine type.
    let mut corpus: Vec<(String, &'static str, QemuBuild, Vec<u8>)> = differential::mutants(16, 24)
        .into_iter()
        .map(|m| {
            let what = format!("{} {}", m.kind, m.what);
            (what, m.fixture.machine, m.fixture.builds[0], m.bytes)
        })
        .collect();
    // An out-of-bounds CMOS index (the CVE class of rtc's cmos_index) in a real stream.
    let base = vmstate_host_tests::fixture("q72-pc-i440fx-7.2.vmstate");
    let rtc = vmstate::stream::Records::new(&base, vmstate::stream::FooterScan)
        .map(|r| r.unwrap())
        .find_map(|r| match r.record {
            vmstate::stream::Record::Section(s) if s.idstr == b"mc146818rtc" => Some(s.body_offset),
            _ => None,
        })
        .unwrap();
    let mut bad = base.clone();
    bad[rtc + 128] = 0x80;
    corpus.push((
        "rtc cmos_index 0x80".into(),
        "pc-i440fx-7.2",
        QemuBuild::V7_2,
        bad,
    ));
    corpus.push(("valid".into(), "pc-i440fx-7.2", QemuBuild::V7_2, base));
    let (mut refused, mut loaded) = (0, 0);
    for (what, machine, build, bytes) in &corpus {
        let build = *build;
        let spec = DestSpec {
            machine: Some((*machine).into()),
            qemu: Some(build),
            ..DestSpec::default()
        };
        let verdict = verify(bytes, &spec, &mut |_| {}).unwrap();
        let Some((ran, outcome)) = replay(bytes, build, machine) else {
            return;
        };
        match ran {
            Ok((_, Outcome::Refused(problems))) => {
                assert!(
                    matches!(outcome, LoadOutcome::Failed(_)),
                    "{what}: refused, yet the destination loaded it"
                );
                // The proxy names a problem `verify` names, in the same words and offset
                // (or, where verify finds none, a section nobody could check).
                for p in problems
                    .iter()
                    .filter(|p| !p.message.contains("not checked ("))
                {
                    assert!(
                        verdict.problems.contains(p),
                        "{what}: the proxy says {p}, verify: {:?}",
                        verdict.problems
                    );
                }
                refused += 1;
            }
            Ok((_, Outcome::Passed { .. })) => {
                assert!(
                    verdict.problems.is_empty(),
                    "{what}: passed; verify: {verdict:?}"
                );
                assert_eq!(outcome, LoadOutcome::Completed, "{what}");
                loaded += 1;
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(refused >= corpus.len() / 2, "{refused} refused");
    assert!(loaded >= 1);
}

/// Whether two files have the same bytes (read in pieces: guest RAM images are large).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            match fb.read(&mut bb[nb..na]).unwrap() {
                0 => return false,
                n => nb += n,
            }
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

/// The guest's RTC as QEMU computes it now (`qom-get /machine rtc-time`: the mc146818rtc's
/// date from its migrated base and last update), as seconds since 1970 (a rough count: for a
/// difference).
fn rtc_seconds(q: &mut Qemu) -> (i64, i64) {
    let t = q.execute(
        "qom-get",
        json!({ "path": "/machine", "property": "rtc-time" }),
    );
    let get = |k: &str| t[k].as_i64().unwrap_or_else(|| panic!("rtc-time {t}"));
    let days = (get("tm_year") - 70) * 366 + get("tm_mon") * 31 + get("tm_mday");
    let secs = ((days * 24 + get("tm_hour")) * 60 + get("tm_min")) * 60 + get("tm_sec");
    (get("tm_year") + 1900, secs)
}

#[test]
fn a_512_mib_guest_of_random_ram_and_its_rtc_through_the_v4_pair() {
    const MIB: usize = 512;
    let case = "7.2 pc 512 MiB through the v4 pair";
    let machine = |backend: String| -> Vec<String> {
        let mut v: Vec<String> = [
            "-display",
            "none",
            "-accel",
            "tcg",
            "-m",
            "512",
            "-nodefaults",
        ]
        .into_iter()
        .chain(["-M", "pc"])
        .chain(vmstate_host_tests::qemu::DEVICES.iter().copied())
        .map(String::from)
        .collect();
        v.extend([
            "-object".into(),
            backend,
            "-machine".into(),
            "memory-backend=m0".into(),
        ]);
        v
    };
    // The destination's RAM starts zero and its RTC at today's date; the source's RAM is
    // random bytes from a file and its RTC set to 2006.
    let dst_args = machine(format!("memory-backend-ram,id=m0,size={MIB}M"));
    let to = format!("127.0.0.1:{}", free_port());
    let incoming = format!("tcp:{to}");
    let Some(mut dst) = Qemu::start(
        QemuBuild::V7_2,
        &[strs(&dst_args).as_slice(), &["-S", "-incoming", &incoming]].concat(),
    ) else {
        return;
    };
    set_return_path(&mut dst);
    let v4 = pair(&to, "q72-pc-i440fx-7.2.dump-vmstate.json");
    let backend = format!(
        "memory-backend-file,id=m0,size={MIB}M,mem-path={},share=off",
        random_ram(3, MIB).display()
    );
    let src_args = machine(backend);
    let mut src = Qemu::start(
        QemuBuild::V7_2,
        &[
            strs(&src_args).as_slice(),
            &["-rtc", "base=2006-06-17T16:01:21", "-S"],
        ]
        .concat(),
    )
    .expect("installed");
    set_return_path(&mut src);
    src.execute("cont", json!({}));
    thread::sleep(Duration::from_millis(700));
    src.execute("stop", json!({}));
    src.execute("migrate", json!({ "uri": format!("tcp:{}", v4.send.addr) }));
    let (ram_records, v3) = v4.passed(case);
    assert!(ram_records >= MIB << 8, "{case}: {ram_records} RAM records");
    assert!(v3 > MIB << 19, "{case}: {v3} bytes");
    assert_eq!(source_done(&mut src), "completed", "{case}");
    assert_eq!(
        dst.wait_loaded(),
        LoadOutcome::Completed,
        "{case}: {}",
        dst.stderr()
    );
    // The device state and the RTC: the destination's clock is the source's (2006), not its
    // own (today), within the second or two between the two queries.
    for cmd in ["info pic", "info registers -a"] {
        assert_eq!(src.hmp(cmd), dst.hmp(cmd), "{case}: {cmd}");
    }
    let ((src_year, src_t), (dst_year, dst_t)) = (rtc_seconds(&mut src), rtc_seconds(&mut dst));
    assert_eq!((src_year, dst_year), (2006, 2006), "{case}: RTC years");
    assert!((dst_t - src_t).abs() <= 2, "{case}: RTC {src_t} vs {dst_t}");
    // The same RAM, all 512 MiB of it.
    let (a, b) = (scratch("512-src.ram"), scratch("512-dst.ram"));
    for (q, p) in [(&mut src, &a), (&mut dst, &b)] {
        q.execute(
            "pmemsave",
            json!({ "val": 0, "size": MIB << 20, "filename": p.display().to_string() }),
        );
    }
    let same = same_file(&a, &b);
    let nonzero = std::fs::read(&a)
        .unwrap()
        .iter()
        .filter(|&&b| b != 0)
        .count();
    let _ = (std::fs::remove_file(&a), std::fs::remove_file(&b));
    assert!(
        nonzero > (MIB << 20) / 2,
        "{case}: {nonzero} non-zero bytes"
    );
    assert!(same, "{case}: RAM differs");
    dst.execute("cont", json!({}));
    let st = dst.execute("query-status", json!({}));
    assert_eq!(st["status"], "running", "{case}: {st}");
}
