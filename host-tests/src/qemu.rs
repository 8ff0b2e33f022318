//! QEMU as a live peer: start `qemu-system-x86_64` as a migration destination reading a stream
//! with `-incoming "exec:cat FILE"`, wait for the load, and ask it questions over QMP.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::QemuBuild;

/// The device options of the second-generation fixtures (`DEVICES` in
/// `host-tests/fixtures/make-fixtures.py`): two CPUs, an e1000, two ISA serial ports, virtio-net
/// and virtio-blk on a null block device.
pub const DEVICES: &[&str] = &[
    "-smp",
    "2",
    "-device",
    "e1000",
    "-serial",
    "null",
    "-serial",
    "null",
    "-device",
    "virtio-net-pci",
    "-blockdev",
    "driver=null-co,node-name=vd0,size=16777216",
    "-device",
    "virtio-blk-pci,drive=vd0",
];

/// Guest RAM in a shared file, as the x-ignore-shared fixtures had it (`SHARED` in
/// make-fixtures.py). The destination maps the same (or any same-sized) file.
pub const SHARED_RAM: &[&str] = &[
    "-object",
    "memory-backend-file,id=pc.ram,size=32M,mem-path=/dev/shm/vmstate-fixture-shared-ram,share=on",
    "-machine",
    "memory-backend=pc.ram",
];

/// The options every source and destination of the fixtures shared (`COMMON`).
pub const COMMON: &[&str] = &[
    "-display",
    "none",
    "-accel",
    "tcg",
    "-m",
    "32",
    "-nodefaults",
];

/// The options of a destination for a second-generation fixture: [`COMMON`], the machine type,
/// [`DEVICES`].
pub fn fixture_machine(machine: &str) -> Vec<&str> {
    [COMMON, &["-M", machine], DEVICES].concat()
}

/// A running QEMU with a QMP connection. Killed on drop.
pub struct Qemu {
    child: Child,
    qmp: BufReader<UnixStream>,
    dir: PathBuf,
}

/// How a destination's load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// `query-migrate` reported `completed`.
    Completed,
    /// It reported `failed` (or QEMU exited); the text holds QEMU's stderr.
    Failed(String),
}

impl Qemu {
    /// Starts QEMU 7.2's `qemu-system-x86_64 <COMMON> -M pc <extra> -S -incoming "exec:cat
    /// STREAM"` (how the first-generation fixtures were made). Returns `None` (after a loud message) when the build is not installed locally;
    /// panics in CI.
    pub fn incoming(stream: &Path, extra: &[&str]) -> Option<Qemu> {
        Qemu::incoming_on(
            QemuBuild::V7_2,
            stream,
            &[COMMON, &["-M", "pc"], extra].concat(),
        )
    }

    /// Starts `build`'s `qemu-system-x86_64 <args> -S -incoming "exec:cat STREAM"` with a QMP
    /// socket. `args` are all machine options (see [`fixture_machine`] for the usual ones).
    pub fn incoming_on(build: QemuBuild, stream: &Path, args: &[&str]) -> Option<Qemu> {
        let incoming = format!("exec:cat {}", shell_quote(stream));
        Qemu::start(build, &[args, &["-S", "-incoming", &incoming]].concat())
    }

    /// Starts `build`'s `qemu-system-x86_64 <args>` with a QMP socket and no other monitor.
    pub fn start(build: QemuBuild, args: &[&str]) -> Option<Qemu> {
        let bin = crate::require_qemu(build, "qemu-system-x86_64")?;
        let dir = std::env::temp_dir().join(format!(
            "vmstate-qemu-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("qmp.sock");
        let mut child = Command::new(bin)
            .args(args)
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("start qemu-system-x86_64");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                // A destination whose load fails at once may exit before it accepts QMP: a
                // connection whose peer is gone reads as closed, and `wait_loaded` reports
                // the failed load with QEMU's messages.
                Err(_) if matches!(child.try_wait(), Ok(Some(_))) => {
                    break UnixStream::pair().expect("socket pair").0;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("QMP socket {}: {e}", sock.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut q = Qemu {
            child,
            qmp: BufReader::new(stream),
            dir,
        };
        // A destination whose load fails at once may exit during the handshake; `wait_loaded`
        // then reports the failed load with QEMU's messages.
        // QEMU 7.2 has been seen to send a MIGRATION event ahead of the greeting when the
        // incoming migration starts as the client connects: events before it are skipped.
        let greeting = loop {
            match q.try_read_message() {
                Ok(m) if m.get("event").is_some() => continue,
                other => break other,
            }
        };
        match greeting {
            Ok(greeting) => {
                assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
                if let Err(e) = q.try_execute("qmp_capabilities", json!({})) {
                    q.expect_exited(&e);
                }
            }
            Err(e) => q.expect_exited(&e),
        }
        Some(q)
    }

    /// The next QMP message, or why there is none (QEMU closed the connection: it exited).
    fn try_read_message(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        self.qmp
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if line.is_empty() {
            return Err("QEMU closed QMP".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP JSON: {e}"))
    }

    /// A QMP failure is acceptable only when QEMU has exited.
    fn expect_exited(&mut self, e: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("QMP handshake: {e}; stderr: {}", self.stderr());
    }

    /// Runs a QMP command and returns its `return` value (events are skipped).
    pub fn execute(&mut self, cmd: &str, args: Value) -> Value {
        self.try_execute(cmd, args)
            .unwrap_or_else(|e| panic!("QMP {cmd}: {e}; stderr: {}", self.stderr()))
    }

    /// [`Qemu::execute`], with a connection QEMU closed (it exited) or a QMP error as `Err`.
    fn try_execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = json!({ "execute": cmd, "arguments": args });
        writeln!(self.qmp.get_mut(), "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.try_read_message()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e.to_string());
            }
        }
    }

    /// Runs a human monitor command and returns its text.
    pub fn hmp(&mut self, cmd: &str) -> String {
        self.execute("human-monitor-command", json!({ "command-line": cmd }))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the incoming migration completed or failed (60 s at most).
    pub fn wait_loaded(&mut self) -> LoadOutcome {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return LoadOutcome::Failed(self.stderr());
            }
            let s = match self.try_execute("query-migrate", json!({})) {
                Ok(s) => s,
                // QEMU exits when a load fails; the connection may close under the query.
                Err(e) => {
                    let _ = self.child.wait();
                    return LoadOutcome::Failed(format!("{e}\n{}", self.stderr()));
                }
            };
            match s.get("status").and_then(|s| s.as_str()) {
                Some("completed") => return LoadOutcome::Completed,
                Some("failed") => return LoadOutcome::Failed(self.stderr()),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        panic!(
            "incoming migration did not finish in 60 s; stderr: {}",
            self.stderr()
        );
    }

    /// QEMU's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// A scratch directory that lives as long as this QEMU.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Writes `bytes` to a fresh temporary file and returns its path.
pub fn temp_stream(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "vmstate-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Asserts what the edit used by the interop tests shows in a QEMU that loaded it: i8259
/// master IMR 0x5a, slave IRQ base 0x70 (`info pic`), RTC CMOS year 131 (`rtc-time`).
pub fn assert_pic_and_rtc_edits(q: &mut Qemu) {
    let pic = q.hmp("info pic");
    let line = |prefix: &str| {
        pic.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("pic0:").contains("imr=5a"), "{pic}");
    assert!(line("pic1:").contains("irq_base=70"), "{pic}");
    let tm = q.execute(
        "qom-get",
        serde_json::json!({ "path": "/machine", "property": "rtc-time" }),
    );
    assert_eq!(tm["tm_year"], 131, "{tm}");
}
