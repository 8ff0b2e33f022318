//! Large generated streams for the input and memory tests (written under `target/`, removed by
//! the tests), and the peak resident size of one child process.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};
use vmstate::writer::StreamWriter;

/// A [`vmstate::Sink`] over a file.
pub struct FileSink {
    w: BufWriter<File>,
    n: usize,
}

#[derive(Debug)]
pub enum SinkError {
    Io(#[allow(dead_code)] std::io::Error),
    Codec(#[allow(dead_code)] vmstate::Error),
}

impl From<vmstate::Error> for SinkError {
    fn from(e: vmstate::Error) -> Self {
        SinkError::Codec(e)
    }
}

impl vmstate::Sink for FileSink {
    type Error = SinkError;

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.w.write_all(bytes).map_err(SinkError::Io)?;
        self.n += bytes.len();
        Ok(())
    }

    fn position(&self) -> usize {
        self.n
    }
}

/// A stream writer into a new file at `path`.
pub fn writer(path: &Path) -> StreamWriter<'static, FileSink> {
    let f = File::create(path).unwrap();
    StreamWriter::new(FileSink {
        w: BufWriter::with_capacity(1 << 20, f),
        n: 0,
    })
}

/// Flushes the file of `w`; returns the stream's length.
pub fn finish(w: StreamWriter<'static, FileSink>) -> usize {
    let mut sink = w.into_inner();
    sink.w.flush().unwrap();
    sink.n
}

/// Pages per PART section (QEMU writes RAM in many PART sections, one per iteration).
const PAGES_PER_PART: u64 = 2048;

/// The device section of [`write_stream`] and its description (no typed model has it, so
/// `verify` checks it with the description).
const DEVICE: &[u8] = b"vmstate-test";
const DEVICE_BODY: [u8; 12] = [0, 0, 0, 0, 0, 0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef];
const TRAILER: &str = r#"{"page_size": 4096, "devices": [{"name": "vmstate-test", "instance_id": 0, "vmsd_name": "vmstate-test", "version": 1, "fields": [{"name": "ticks", "type": "int64", "size": 8}, {"name": "id", "type": "uint32", "size": 4}]}]}"#;

/// Writes a v3 stream with one `pc.ram` block of `ram` bytes, every page sent as a PAGE record
/// with non-zero contents (page `p` starts with `p` big-endian, the rest is `p % 251 + 1`),
/// then one described device section and, with `trailer`, the VMDESCRIPTION trailer. Returns
/// the stream's length.
pub fn write_stream(path: &Path, ram: u64, trailer: bool) -> usize {
    let mut w = writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: ram,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut writer = RamWriter::new();
    let mut page = vec![0u8; PAGE_SIZE];
    let pages = ram / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        let end = (next + PAGES_PER_PART).min(pages);
        w.ram_part(1, false, &mut writer, |ram, out| {
            for p in next..end {
                page.fill((p % 251) as u8 + 1);
                page[..8].copy_from_slice(&p.to_be_bytes());
                ram.page(b"pc.ram", p * PAGE_SIZE as u64, &page, out)?;
            }
            Ok(())
        })
        .unwrap();
        next = end;
    }
    w.ram_part(1, true, &mut writer, |_, _| Ok(())).unwrap();
    let h = SectionHeaderRepr {
        kind: SectionKind::Full,
        section_id: 2,
        idstr: DEVICE,
        instance_id: 0,
        version_id: 1,
    };
    w.section_bytes(&h, &DEVICE_BODY).unwrap();
    w.eof().unwrap();
    if trailer {
        w.trailer(TRAILER.as_bytes()).unwrap();
    }
    finish(w)
}

/// Writes a stream whose `pc.ram` block of `ram` bytes is sent as ZERO records only: 9 bytes
/// on the wire per 4 KiB page.
pub fn write_zero_stream(path: &Path, ram: u64) -> usize {
    let mut w = writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: ram,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut writer = RamWriter::new();
    let pages = ram / PAGE_SIZE as u64;
    let mut next = 0;
    while next < pages {
        let end = (next + (1 << 16)).min(pages);
        w.ram_part(1, false, &mut writer, |ram, out| {
            for p in next..end {
                ram.zero(b"pc.ram", p * PAGE_SIZE as u64, out)?;
            }
            Ok(())
        })
        .unwrap();
        next = end;
    }
    w.ram_part(1, true, &mut writer, |_, _| Ok(())).unwrap();
    w.eof().unwrap();
    finish(w)
}

/// Writes a stream of `n` small FULL sections (`dev` instance i, 4-byte body) and no trailer.
pub fn write_small_sections(path: &Path, n: u32) -> usize {
    let mut w = writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    for i in 0..n {
        let h = SectionHeaderRepr {
            kind: SectionKind::Full,
            section_id: i,
            idstr: b"dev",
            instance_id: i,
            version_id: 1,
        };
        w.section_bytes(&h, &i.to_be_bytes()).unwrap();
    }
    w.eof().unwrap();
    finish(w)
}

/// A scratch folder under `target/` (never in git, on the same disk as builds), removed when
/// dropped — also when a test fails, so no half-gigabyte stream is left behind.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A new [`Scratch`] folder.
pub fn scratch(name: &str) -> Scratch {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Whether two files hold the same bytes (compared in chunks).
pub fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (File::open(a).unwrap(), File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// What one `vmstate` run did: exit code (`None`: killed by a signal), stdout, stderr, and
/// its own peak resident set in bytes (`wait4`'s rusage of that child alone).
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub peak: u64,
}

/// The first 256 KiB of a file as text. A child's peak resident size includes this process's
/// peak at the time it was spawned (Linux carries the parent's high-water mark across
/// `exec`), so the measuring process never holds a large output.
fn head(path: &Path) -> String {
    use std::io::Read;
    let mut v = Vec::new();
    let _ = File::open(path).map(|f| f.take(256 << 10).read_to_end(&mut v));
    String::from_utf8_lossy(&v).into_owned()
}

/// The longest [`run`] waits for the binary (the largest streams of the tests take seconds).
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs `vmstate ARGS` with stdout and stderr in files under `dir` and measures it.
pub fn run(dir: &Path, args: &[&str]) -> Run {
    run_in(dir, args, Command::new(env!("CARGO_BIN_EXE_vmstate")))
}

/// [`run`] without the input governor (`vmstate_cli::input::NO_GOVERNOR`): the peak resident
/// size is what the passes' own releases leave, not what a thread's timing allows.
pub fn run_ungoverned(dir: &Path, args: &[&str]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vmstate"));
    c.env(vmstate_cli::input::NO_GOVERNOR, "1");
    run_in(dir, args, c)
}

fn run_in(dir: &Path, args: &[&str], mut command: Command) -> Run {
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // A run that stops moving is killed after RUN_LIMIT (it fails its test, not hangs it):
    // polled, so the child is never signalled after it was reaped.
    let deadline = std::time::Instant::now() + RUN_LIMIT;
    let rc = loop {
        // SAFETY: `status` and `usage` are valid and writable; `pid` is our child, not yet
        // waited for (`child` is dropped without `wait`, which does not reap it).
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, usage.as_mut_ptr()) };
        if rc != 0 {
            break rc;
        }
        if std::time::Instant::now() > deadline {
            eprintln!("{args:?}: still running after {RUN_LIMIT:?}: killed");
            // SAFETY: a plain signal to our own child, which is not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_eq!(rc, pid);
    // SAFETY: zero-initialised and filled in by the successful call above.
    let usage = unsafe { usage.assume_init() };
    drop(child);
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout: head(&out),
        stderr: head(&err),
        // Linux reports KiB.
        peak: usage.ru_maxrss as u64 * 1024,
    }
}

/// A fixture of `host-tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../host-tests/fixtures")
        .join(name)
}

/// Runs the built `vmstate` with `args` (nothing on stdin) and waits for it.
pub fn vmstate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmstate")
}
