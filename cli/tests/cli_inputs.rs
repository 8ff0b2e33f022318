//! Inputs that are not plain, unchanging regular files: a file truncated or rewritten while
//! it is read (an I/O error, never a signal death), pipes, FIFOs, character devices and
//! directories.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vmstate_cli::exit::Exit;

fn vmstate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vmstate"))
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../host-tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The output of `vmstate ARGS` with `name` in place of every `path` (so a file and a pipe
/// can be compared).
fn output(cmd: &mut Command, path: &str, name: &str) -> (Option<i32>, String, String) {
    let o = cmd.output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).replace(path, name);
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// Waits at most `limit` for `child`; kills it (and fails) if it is still running.
fn wait_limited(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `cat STREAM | vmstate check /dev/stdin --dest DEST`, which must succeed.
fn check_through_a_pipe(stream: &Path, dest: &str) -> std::process::Output {
    let mut cat = Command::new("cat")
        .arg(stream)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = vmstate()
        .args(["check", "/dev/stdin", "--dest", dest])
        .stdin(cat.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(cat.wait().unwrap().success());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    o
}

#[test]
fn pipes_fifos_and_stdin_are_read_as_streams() {
    let dir = support::scratch("vmstate-inputs-pipes");
    for name in [
        "q10-pc-q35-10.0.vmstate",
        "q72-pc-i440fx-7.2.vmstate",
        // No section footers: the guard decoder cannot follow it, the parse can.
        "q72-pc-i440fx-2.2.vmstate",
    ] {
        let file = fixture(name);
        for args in [&["verify"][..], &["inspect"], &["inspect", "--json"]] {
            let want = output(vmstate().args(args).arg(&file), &file, "IN");
            // (The pc-*-2.2 stream has no trailer: `inspect --json` refuses it, as the script
            // does; the pipe must give the same answer, whatever it is.)
            assert!(
                matches!(want.0, Some(0 | 1)) || want.0 == Some(Exit::Invalid.status()),
                "{name} {args:?}: {:?} {}",
                want.0,
                want.2
            );

            // stdin from a spawned `cat` (a pipe).
            let mut cat = Command::new("cat")
                .arg(&file)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let got = output(
                vmstate()
                    .args(args)
                    .arg("/dev/stdin")
                    .stdin(cat.stdout.take().unwrap()),
                "/dev/stdin",
                "IN",
            );
            assert!(cat.wait().unwrap().success());
            assert_eq!(got, want, "{name} {args:?} through a pipe");

            // A FIFO another thread writes into.
            let fifo = dir.join("fifo");
            let _ = std::fs::remove_file(&fifo);
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: `c` is a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let (f, bytes) = (fifo.clone(), std::fs::read(&file).unwrap());
            let writer = std::thread::spawn(move || {
                let mut w = OpenOptions::new().write(true).open(f).unwrap();
                let _ = w.write_all(&bytes);
            });
            let fifo_s = fifo.to_str().unwrap();
            let got = output(vmstate().args(args).arg(fifo_s), fifo_s, "IN");
            writer.join().unwrap();
            assert_eq!(got, want, "{name} {args:?} through a FIFO");
        }
    }
    // check and caps read their streams (and a destination) the same way.
    let file = fixture("q10-pc-q35-10.0.vmstate");
    let o = check_through_a_pipe(Path::new(&file), &file);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("compatible"));

    // A v4 stream through a pipe (followed by the v4 guard: checked as it doubles).
    let v4 = dir.join("s.v4");
    let o = vmstate()
        .args(["rewrite", &file])
        .arg(&v4)
        .args(["--format", "v4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    check_through_a_pipe(&v4, &file);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_directory_is_refused_as_a_directory() {
    let dir = support::scratch("vmstate-inputs-dir");
    let d = dir.to_str().unwrap();
    let out = dir.join("out");
    let out = out.to_str().unwrap();
    for args in [
        vec!["verify", d],
        vec!["inspect", d],
        vec!["rewrite", d, out],
        vec!["check", d, "--dest", d],
    ] {
        let o = vmstate().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("{d}: is a directory")),
            "{args:?}: {err}"
        );
        assert_ne!(o.status.code(), Some(0), "{args:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endless_garbage_is_refused_at_its_first_bytes() {
    // /dev/zero is not a stream: refused after its first read, for every command.
    for args in [
        vec!["verify", "/dev/zero"],
        vec!["inspect", "/dev/zero"],
        vec!["check", "/dev/zero", "--dest", "/dev/zero"],
        vec!["caps", "--stream", "/dev/zero", "/dev/null"],
    ] {
        let child = vmstate()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = wait_limited(child, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("/dev/zero: not a migration stream") && err.contains("QEVM"),
            "{args:?}: {err}"
        );
        assert_ne!(o.status.code(), Some(0), "{args:?}");
    }
    // Inputs that may also be JSON (a destination, a dump) stop at 64 MiB.
    let dump = fixture("pc-7.2.dump-vmstate.json");
    for args in [
        vec!["static-check", "/dev/zero", &dump],
        vec!["check", &dump, "--dest", "/dev/zero"],
        vec!["caps", "--dump", "/dev/zero", "/dev/null"],
    ] {
        let child = vmstate()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = wait_limited(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("/dev/zero: neither a migration stream (no QEVM magic) nor a text of at most 67108864 bytes")
                || err.contains("/dev/zero: not a migration stream"),
            "{args:?}: {err}"
        );
        assert_ne!(o.status.code(), Some(0), "{args:?}");
    }
    // A real stream's first megabyte, then zeros without end: refused at the first invalid
    // record (the guard decoder follows the stream as it is spooled), not after the disk is
    // full.
    let file = fixture("q10-pc-q35-10.0.vmstate");
    let child = Command::new("sh")
        .args([
            "-c",
            &format!(
                "head -c 1000000 {file} | cat - /dev/zero | {} verify /dev/stdin",
                env!("CARGO_BIN_EXE_vmstate")
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_limited(child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(Exit::Invalid.status()), "{err}");
    assert!(
        err.contains("not a valid migration stream: at byte 1000607 (0xf449f), section 'ram'"),
        "{err}"
    );

    // The same for v4: a v4 header then zeros, and a real v4 stream's first 1.5 MB then zeros.
    let dir = support::scratch("vmstate-inputs-garbage");
    let v4 = dir.join("s.v4");
    let o = vmstate()
        .args(["rewrite", &file])
        .arg(&v4)
        .args(["--format", "v4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    for (head, says) in [
        (
            "printf 'QEVM\\0\\0\\0\\4'".to_string(),
            "not a valid migration stream: at byte 14 (0xe)",
        ),
        (
            format!("head -c 1500000 {}", v4.display()),
            "not a valid migration stream: offset 1446277: section '0000:00:01.0/e1000' (id 42, \
             instance 0): CRC-32C mismatch",
        ),
    ] {
        let child = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "{head} | cat - /dev/zero | {} check /dev/stdin --dest {file}",
                    env!("CARGO_BIN_EXE_vmstate")
                ),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let o = wait_limited(child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{err}");
        assert!(err.contains(says), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What one run over a file changed under it did: its output, and whether the change began
/// before it exited. The change is made `after` the command has `victim` open (a file
/// changed before it is opened is just another file, whatever the command says about it),
/// or once it has exited if it never had.
fn race(
    args: &[String],
    victim: &Path,
    change: impl FnOnce() + Send + 'static,
    after: Duration,
) -> (std::process::Output, bool) {
    let child = vmstate()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fds = format!("/proc/{}/fd", child.id());
    let victim = victim.canonicalize().unwrap();
    let reaped = Arc::new(AtomicBool::new(false));
    let gone = reaped.clone();
    let changer = std::thread::spawn(move || {
        let open = || {
            std::fs::read_dir(&fds)
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to == victim))
        };
        while !gone.load(Ordering::SeqCst) && !open() {
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(after);
        // When the change starts: truncating a file with dirty pages can take a while.
        let at = Instant::now();
        change();
        at
    });
    let o = child.wait_with_output().unwrap();
    let exited = Instant::now();
    reaped.store(true, Ordering::SeqCst);
    let changed_at = changer.join().unwrap();
    (o, changed_at < exited)
}

#[test]
fn an_input_changed_while_it_is_read_is_an_io_error_not_a_crash() {
    let dir = support::scratch("vmstate-inputs-race");
    let original = dir.join("original.vmstate");
    let len = support::write_stream(&original, 300 << 20, true);
    let victim = dir.join("victim.vmstate");
    let out = dir.join("out");
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // How long a run takes: changes land at random points inside it.
    std::fs::copy(&original, &victim).unwrap();
    let t = Instant::now();
    let o = vmstate().arg("verify").arg(&victim).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let want_verify = String::from_utf8(o.stdout).unwrap();
    let took = t.elapsed();

    let commands: [&[&str]; 6] = [
        &["verify", "IN"],
        &["inspect", "IN"],
        &["inspect", "--json", "IN"],
        &["rewrite", "IN", "OUT"],
        &["rewrite", "IN", "OUT", "--format", "v4"],
        &["check", "IN", "--dest", "ORIGINAL"],
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut caught, mut during) = (0, 0);
    for round in 0..36 {
        std::fs::copy(&original, &victim).unwrap();
        let _ = std::fs::remove_file(&out);
        let command = commands[round % commands.len()];
        let args: Vec<String> = command
            .iter()
            .map(|a| match *a {
                "IN" => s(&victim),
                "OUT" => s(&out),
                "ORIGINAL" => s(&original),
                a => a.to_string(),
            })
            .collect();
        // At a random point of the run after the command opened the file.
        let after = took.mul_f64((next() % 900) as f64 / 1000.0);
        let v = victim.clone();
        let shrink = round % 4 != 3;
        let cut = next() % len as u64;
        let (o, changed_during) = race(
            &args,
            &victim,
            move || {
                let f = OpenOptions::new().write(true).open(v).unwrap();
                if shrink {
                    // Another process rewriting the file: it shrinks first.
                    f.set_len(cut).unwrap();
                } else {
                    // Rewritten in place without changing its size.
                    f.write_all_at(b"\xff\xff\xff\xff", cut).unwrap();
                    f.sync_all().unwrap();
                }
            },
            after,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code().is_some(),
            "round {round} {command:?}: killed by a signal: {:?} {err}",
            o.status
        );
        // Every command reports an input it cannot read (it changed) with one status.
        if o.status.code() == Some(Exit::Unreadable.status()) {
            assert!(
                err.contains("the input changed while it was read"),
                "round {round} {command:?}: {err}"
            );
            // Nothing was committed from it.
            assert!(!out.exists(), "round {round} {command:?}: output written");
            caught += 1;
        } else {
            // Only a run that ended before the change (or between its last check and its
            // exit) reports a verdict, and it is the verdict of the unchanged bytes.
            assert_eq!(o.status.code(), Some(0), "round {round} {command:?}: {err}");
            if command[0] == "verify" {
                assert_eq!(
                    String::from_utf8_lossy(&o.stdout).replace(&s(&victim), ""),
                    want_verify.replace(&s(&victim), ""),
                );
            }
            if command == ["rewrite", "IN", "OUT"] {
                assert!(
                    support::same_contents(&original, &out),
                    "round {round}: exit 0, but the output is not the original input (equal to \
                     the changed one: {})",
                    support::same_contents(&victim, &out)
                );
            }
        }
        during += usize::from(changed_during);
    }
    println!("{caught} runs reported the change, of {during} changed while running");
    assert!(
        caught >= during / 2 && caught >= 9,
        "{caught} runs reported the change, of {during} changed while running"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sigbus_that_is_not_a_vanished_input_page_still_kills() {
    // The handler repairs faults inside input mappings only; any other SIGBUS (here one sent
    // with kill(2) while the tool waits for more of a piped v4 stream, after its first MiB was
    // mapped and checked) keeps the default action.
    let dir = support::scratch("vmstate-inputs-sigbus");
    let file = fixture("q10-pc-q35-10.0.vmstate");
    let v4 = dir.join("s.v4");
    let o = vmstate()
        .args(["rewrite", &file])
        .arg(&v4)
        .args(["--format", "v4"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let bytes = std::fs::read(&v4).unwrap();
    let mut child = vmstate()
        .args(["check", "/dev/stdin", "--dest", &file])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A pipe holds 64 KiB: once this returns, the tool has read most of it.
    stdin.write_all(&bytes[..1_200_000]).unwrap();
    // And the handler is installed (SIGBUS caught, not default): otherwise this test would
    // pass by the default action whatever the handler does.
    let status = format!("/proc/{}/status", child.id());
    let caught = || {
        let text = std::fs::read_to_string(&status).unwrap();
        let mask = text
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .unwrap();
        u64::from_str_radix(mask.trim(), 16).unwrap() & (1 << (libc::SIGBUS - 1)) != 0
    };
    let start = Instant::now();
    while !caught() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no SIGBUS handler"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) has no memory effects; `pid` is our child, not yet reaped.
    let sent = unsafe { libc::kill(pid, libc::SIGBUS) };
    assert_eq!(sent, 0);
    // Had the signal been swallowed, the end of input would let the run finish normally.
    std::thread::sleep(Duration::from_millis(300));
    drop(stdin);
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGBUS), "{status:?}");
}
