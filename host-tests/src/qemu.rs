//! QEMU as a live peer: start `qemu-system-x86_64` as a migration destination reading a stream
//! with `-incoming "exec:cat FILE"`, wait for the load, and ask it questions over QMP.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::QemuBuild;

/// The machine options every fixture was made with (see `host-tests/fixtures/README.md`).
pub const PC_OPTIONS: &[&str] = &[
    "-display",
    "none",
    "-accel",
    "tcg",
    "-m",
    "32",
    "-nodefaults",
    "-M",
    "pc",
];

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
    /// Starts QEMU 7.2's `qemu-system-x86_64 <PC_OPTIONS> <extra> -S -incoming "exec:cat
    /// STREAM"`. Returns `None` (after a loud message) when the build is not installed locally;
    /// panics in CI.
    pub fn incoming(stream: &Path, extra: &[&str]) -> Option<Qemu> {
        Qemu::incoming_on(QemuBuild::V7_2, stream, &[PC_OPTIONS, extra].concat())
    }

    /// Starts `build`'s `qemu-system-x86_64 <args> -S -incoming "exec:cat STREAM"` with a QMP
    /// socket. `args` are all machine options (see [`PC_OPTIONS`] for the usual ones).
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
        let child = Command::new(bin)
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
        let greeting = q.read_message();
        assert!(greeting.get("QMP").is_some(), "QMP greeting: {greeting}");
        q.execute("qmp_capabilities", json!({}));
        Some(q)
    }

    fn read_message(&mut self) -> Value {
        self.try_read_message().unwrap_or_else(|| {
            panic!("QEMU closed QMP; stderr: {}", self.stderr());
        })
    }

    /// The next QMP message, `None` when QEMU closed the connection (it exits after a failed
    /// incoming migration, possibly between two `query-migrate`s).
    fn try_read_message(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.qmp.read_line(&mut line) {
            Ok(n) if n > 0 => Some(serde_json::from_str(&line).expect("QMP JSON")),
            _ => None,
        }
    }

    /// Runs a QMP command and returns its `return` value (events are skipped).
    pub fn execute(&mut self, cmd: &str, args: Value) -> Value {
        let msg = json!({ "execute": cmd, "arguments": args });
        writeln!(self.qmp.get_mut(), "{msg}").expect("QMP write");
        loop {
            let v = self.read_message();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            if let Some(e) = v.get("error") {
                panic!("QMP {cmd}: {e}");
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
            let msg = json!({ "execute": "query-migrate" });
            let sent = writeln!(self.qmp.get_mut(), "{msg}").is_ok();
            let reply = loop {
                match sent.then(|| self.try_read_message()).flatten() {
                    Some(v) if v.get("return").is_some() => break Some(v["return"].clone()),
                    Some(v) if v.get("error").is_some() => panic!("QMP query-migrate: {v}"),
                    Some(_) => continue, // an event
                    None => break None,
                }
            };
            let Some(s) = reply else {
                // QEMU closed QMP: it exited after a failed load.
                let _ = self.child.wait();
                return LoadOutcome::Failed(self.stderr());
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
