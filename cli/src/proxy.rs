//! `vmstate proxy`: a validating firewall between a source QEMU (`migrate tcp:LISTEN`) and a
//! destination QEMU (`-incoming tcp:TO`), letting through only what `verify` accepts.
//!
//! The stream is read in two parts, by two pieces of code that know nothing of sockets beyond
//! [`Read`] and [`Forward`] (so another encoding, v4, can replace the forwarding side):
//!
//! * **The live part** ([`read_live`]): the file header, the CONFIGURATION record, and every
//!   record up to the final phase: the RAM sections (START with the block list, PART
//!   iterations, the END with the last dirty pages) and COMMAND records. It is read with the
//!   codec's push decoder ([`Decoder`], the stream machine over a fixed buffer): each RAM
//!   record is checked against the block list (bounds, flags, fill byte, CONTINUE rules of the
//!   destination build) as it arrives and passed on at once, written from the decoder's own
//!   buffer ([`Decoder::consumed`]: the kernel copies each byte in and out, the proxy none);
//!   nothing is buffered beyond the decoder's window. A COMMAND must be one a live
//!   destination accepts. With `--splice` the live part is peeked and spliced from socket to
//!   socket instead ([`splice`]): fewer copies, yet slower migrations where measured (README,
//!   "Proxy performance").
//! * **The held final phase**: from the first record that is not RAM or a command (the
//!   device FULL sections QEMU sends once the guest is stopped) to EOF and the VMDESCRIPTION
//!   trailer. It is held, at most `--hold-limit` bytes (more is a refusal, not an
//!   allocation), then checked as a whole by [`verify_resumed`] — the code of `verify`:
//!   typed models for modelled devices, the stream's description for the rest — over a view
//!   of the stream whose offsets are the live stream's (the header and CONFIGURATION at their
//!   place, the held bytes at theirs, nothing between: a sparse scratch file). Only then does
//!   the destination receive any of it, edited by `--set` first if asked (the same code as
//!   `rewrite --set`, the trailer rewritten to match) and checked again.
//!
//! On any problem the destination connection is closed without the held bytes (its load
//! fails having parsed no device section), the problems are printed as `verify` prints them,
//! and the exit status is 1. Bytes from the destination (the return path) go to the source
//! as they come; a source with a return path (`return-path` capability) then sees the failed
//! migration, one without has written its last byte and reports it completed (its guest stays
//! stopped: `cont` resumes it).
//!
//! What cannot be validated is refused unless `--pass-through-unvalidated`: a multifd channel
//! (a connection starting with the multifd magic, or any further connection of the source:
//! its pages bypass the main stream) and postcopy (a POSTCOPY command: pages come later, on
//! demand). Neither is recorded in the CONFIGURATION record (it lists only the capabilities
//! QEMU validates, x-ignore-shared and mapped-ram), so they are recognised where they show.
//! With `--pass-through-unvalidated` the rest of the stream is forwarded unchecked from there
//! on (extra channels as they are), with a warning.

use crate::Stream;
use crate::exit::Failure;
use crate::input::{Input, scratch_file};
use crate::model::{KeepAll, ParseOptions, find_description};
use crate::output::{Links, OutputFile};
use crate::verify::{
    DestSpec, Problem, Report, command_problem, stream_machine, verify_resumed, walk_problem,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vmstate::io::{Decoder, Event, Status};
use vmstate::machine::{Head, IdstrBuf, Machine, Step};
use vmstate::ram::RamOptions;
use vmstate::stream::{BodyLength, FooterScan, Options, Record, probe_section_footers};
use vmstate::wire::command::CommandId;

#[cfg(target_os = "linux")]
pub mod splice;
pub mod v4;

/// The default `--hold-limit`: the held final phase of a pc or q35 guest is tens of KiB (with
/// its trailer); a few MiB leave room for many more devices.
pub const DEFAULT_HOLD_LIMIT: usize = 8 << 20;

/// The live decoder's window: a device section of the final phase must fit in it (with the
/// decoder's lookahead) to be measured on the way.
const WINDOW: usize = 1 << 20;

/// Checked bytes are passed on once this many are waiting (and whenever the input pauses).
const PASS_CHUNK: usize = 256 << 10;

/// How long the source may take after the EOF record to start the trailer it always sends
/// (QEMU writes both in one flush; only `suppress-vmdesc` machines, Xen's, send none).
pub const TRAILER_WAIT: Duration = Duration::from_secs(2);

/// The first word of a multifd channel (`MULTIFD_MAGIC`); the main channel starts `QEVM`.
const MULTIFD_MAGIC: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// What `vmstate proxy` is asked to do.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// `--listen ADDR`: where the source connects (`migrate tcp:ADDR`).
    pub listen: String,
    /// `--to ADDR`: the destination's `-incoming tcp:ADDR`.
    pub to: String,
    /// The destination the typed models check against (shared with `verify`).
    pub dest: DestSpec,
    /// `--hold-limit BYTES`: the most the held final phase may be.
    pub hold_limit: usize,
    /// `--set EDIT`: edits applied to the held device sections (as `rewrite --set`).
    pub edits: Vec<String>,
    /// `--record FILE`: a copy of the bytes that passed, put in place only on success.
    pub record: Option<PathBuf>,
    /// `--pass-through-unvalidated`: forward multifd channels and postcopy unchecked.
    pub pass_through_unvalidated: bool,
    /// `--splice`: splice the live part ([`Tap`]) instead of reading and writing it.
    pub splice: bool,
}

/// Binds `--listen`, tells `listening` its address, waits for the source and connects to
/// `--to` (without Nagle's delay): the listener (further connections of the source are
/// multifd channels), the source, its name for messages and the connection onwards.
pub(crate) fn connect(
    options: &ProxyOptions,
    listening: &mut dyn FnMut(std::net::SocketAddr),
) -> Result<(TcpListener, TcpStream, String, TcpStream), Failure> {
    let listener = TcpListener::bind(&options.listen)
        .map_err(|e| Failure::Usage(format!("--listen {}: {e}", options.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Usage(format!("--listen {}: {e}", options.listen)))?;
    listening(local);
    let (src, peer) = listener
        .accept()
        .map_err(|e| Failure::Unreadable(format!("--listen {local}: {e}")))?;
    let to = TcpStream::connect(&options.to)
        .map_err(|e| Failure::Output(format!("--to {}: {e}", options.to)))?;
    let _ = to.set_nodelay(true);
    Ok((listener, src, format!("tcp:{peer}"), to))
}

/// A source whose bytes can be read without being taken out (peeked) and later passed on
/// without passing through the proxy ([`splice::Splice`]): [`read_live`] peeks the live
/// part while it can, and copies from where it cannot (module docs of [`splice`]).
pub trait Tap {
    /// Copies bytes after those peeked already into `buf`, leaving them in the source, like
    /// [`Read::read`] (0: the source ended).
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Moves the `len` oldest peeked bytes on to the destination.
    fn pass(&mut self, len: usize) -> io::Result<()>;

    /// Takes the oldest `buf.len()` peeked bytes out of the source into `buf`.
    fn take(&mut self, buf: &mut [u8]) -> io::Result<()>;

    /// Stops peeking: the bytes peeked and not passed are then read (taken out) by `read`.
    fn stop(&mut self) -> io::Result<()>;

    /// Bytes passed on so far.
    fn passed(&self) -> usize;
}

/// No [`Tap`] where there is no `splice` (not Linux): the proxy copies.
#[cfg(not(target_os = "linux"))]
enum NoTap {}

#[cfg(not(target_os = "linux"))]
impl Tap for NoTap {
    fn peek(&mut self, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    fn pass(&mut self, _: usize) -> io::Result<()> {
        match *self {}
    }

    fn take(&mut self, _: &mut [u8]) -> io::Result<()> {
        match *self {}
    }

    fn stop(&mut self) -> io::Result<()> {
        match *self {}
    }

    fn passed(&self) -> usize {
        match *self {}
    }
}

/// Where checked bytes go, in stream order: the destination (and the `--record` copy).
pub trait Forward {
    /// Passes `bytes` on; an error ends the migration.
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Sees each item of the live part as the decoder finds it, at offset `at`, before its
    /// bytes are passed (a forwarder that re-frames the stream, [`v4::SendV4`], needs the
    /// boundaries), and the first item of the final phase; bytes are always passed up to an
    /// item boundary. An error ends the migration. Default: nothing.
    fn event(&mut self, at: usize, event: &Event<'_>) -> io::Result<()> {
        let _ = (at, event);
        Ok(())
    }
}

/// How a proxied migration ended (a failure that is not about the stream is a [`Failure`]).
#[derive(Debug)]
pub enum Outcome {
    /// Everything was checked and passed.
    Passed {
        /// Bytes passed to the destination.
        bytes: usize,
        /// Of them, bytes the kernel moved from the source to the destination without the
        /// proxy copying them ([`Tap`], Linux `splice`); 0 when everything was copied.
        spliced: usize,
        /// RAM records checked and streamed through.
        ram_records: usize,
        /// Bytes of the held final phase (as sent, after `--set`).
        held: usize,
        /// `verify`'s report of the held final phase.
        report: Report,
        /// What holding the final phase added to the migration's downtime: from its last
        /// byte read to its last byte written to the destination (validation, `--set`, the
        /// write).
        hold_time: Duration,
    },
    /// Refused: the destination got none of the held bytes.
    Refused(Vec<Problem>),
    /// Forwarded unchecked from `from` on (`--pass-through-unvalidated`), for `why`.
    Unvalidated {
        /// Bytes passed to the destination.
        bytes: usize,
        /// Offset where checking stopped.
        from: usize,
        /// What could not be checked.
        why: String,
    },
}

/// Why [`read_live`] stopped before the final phase was complete.
#[derive(Debug)]
pub enum Stop {
    /// The stream is refused.
    Problem(Problem),
    /// Something the proxy cannot validate begins at `offset` (multifd, postcopy).
    Unvalidated {
        /// Where.
        offset: usize,
        /// What.
        why: String,
        /// The bytes read from `offset` on (not passed on).
        rest: Vec<u8>,
    },
    /// Reading the source failed.
    Read(io::Error),
    /// Passing bytes on failed.
    Pass(io::Error),
}

/// The live part read and passed on, and the held final phase.
#[derive(Debug)]
pub struct Live {
    /// The file header and CONFIGURATION record (`0..prefix.len()`), already passed on.
    pub prefix: Vec<u8>,
    /// Offset of the final phase's first record.
    pub held_at: usize,
    /// The final phase, to its end (not passed on).
    pub held: Vec<u8>,
    /// RAM records checked.
    pub ram_records: usize,
    /// What the live walk found wrong in the final phase, if it could not follow it: the
    /// walk of `verify` names the problem in its words, and this is the verdict where it
    /// finds none (a rule across the RAM part and the final phase, such as a device section
    /// reusing the RAM section's id).
    pub structure: Option<Problem>,
}

fn problem(offset: usize, message: String) -> Stop {
    Stop::Problem(Problem { offset, message })
}

/// Reads the file header and the CONFIGURATION record (if the stream has one) with the stream
/// machine: the bytes read (at least the whole prefix) and the prefix's length.
fn read_prefix(src: &mut impl Read) -> Result<(Vec<u8>, usize), Stop> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 512];
    // A stream without CONFIGURATION (machine types up to 2.3) is told at byte 8.
    while bytes.len() < 9 {
        let n = src.read(&mut chunk).map_err(Stop::Read)?;
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
    if bytes.starts_with(&MULTIFD_MAGIC) {
        return Err(Stop::Unvalidated {
            offset: 0,
            why: "a multifd channel (its pages bypass the main stream)".into(),
            rest: bytes,
        });
    }
    let mut machine: Machine<IdstrBuf> = Machine::new(Options::for_stream(&bytes));
    let mut at = 0;
    loop {
        let input = bytes.get(at..).unwrap_or_default();
        match machine.step(input, at, false) {
            Ok(Step::Item {
                len,
                head: Head::Header { .. },
            }) => at += len,
            Ok(Step::Item {
                len,
                head: Head::Configuration(_),
            }) => return Ok((bytes, at + len)),
            Ok(Step::Item { .. } | Step::Done) => return Ok((bytes, at)),
            Ok(Step::NeedMore) => {}
            Err(e) => return Err(Stop::Problem(walk_problem(&e))),
        }
        let n = src.read(&mut chunk).map_err(Stop::Read)?;
        if n == 0 {
            let end = bytes.len();
            return Err(
                match machine.step(bytes.get(at..).unwrap_or_default(), at, true) {
                    Err(e) => Stop::Problem(walk_problem(&e)),
                    Ok(_) => problem(
                        end,
                        format!("at byte {end} (0x{end:x}): the stream ended in its header"),
                    ),
                },
            );
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Reads a live v3 stream from `src`, passing each checked record of the live part (module
/// docs) to `forward` as it arrives, and holding the final phase (at most `hold_limit`
/// bytes) until the stream's end: the trailer, or EOF with the source closing (or pausing
/// [`TRAILER_WAIT`]; `pause` sets that read timeout). `dest` gives the destination build's
/// RAM and COMMAND rules; `extra` is set when another channel of the source connected.
///
/// With a `tap` on `src`, the live part after the prefix is peeked and passed by the tap
/// instead (`forward` then sees the events, and passes only the few bytes taken out: those
/// of a record cut by a read); from the final phase on it is read. On return the tap has
/// stopped and what was peeked and not passed is still in `src`.
#[allow(clippy::too_many_arguments)]
pub fn read_live(
    src: &mut impl Read,
    tap: Option<&mut dyn Tap>,
    pause: &mut dyn FnMut(Option<Duration>),
    forward: &mut dyn Forward,
    dest: &DestSpec,
    hold_limit: usize,
    extra: &AtomicBool,
) -> Result<Live, Stop> {
    let mut bytes = Bytes {
        window: Vec::new(),
        base: 0,
        sent: 0,
        fed: 0,
        keep: false,
        tap,
    };
    let (first, prefix_len) = read_prefix(src)?;
    let prefix = first[..prefix_len].to_vec();
    let resolved = dest
        .resolve(stream_machine(&prefix))
        .map_err(|e| problem(8, e))?;
    // A machine type the destination refuses is refused before any RAM goes through.
    if let Some(p) = &resolved.problem {
        return Err(problem(8, format!("at byte 8 (0x8), CONFIGURATION: {p}")));
    }
    let version = resolved.config.map(|c| {
        let (major, minor) = c.destination.build.version();
        (u16::from(major), u16::from(minor))
    });
    let options = Options {
        ram: version.map_or(RamOptions::default(), |(major, minor)| {
            RamOptions::for_qemu(major, minor)
        }),
        section_footers: probe_section_footers(&prefix),
        ..Options::for_stream(&prefix)
    };
    let mut buf = vec![0u8; WINDOW];
    let mut decoder = Decoder::with_options(&mut buf, FooterScan, options);
    bytes.window = first;
    let mut held_at = None;
    let mut ram_records = 0;
    let mut after_eof = false;
    let mut trailer_left = None;
    let mut structure = None;
    // The read timeout last set through `pause` (none set yet).
    let mut timeout = None;
    loop {
        // Bytes read before the decoder has room for them are fed first.
        if bytes.fed < bytes.end() {
            let space = decoder.space();
            let from = bytes.fed - bytes.base;
            let n = space.len().min(bytes.window.len() - from);
            space[..n].copy_from_slice(&bytes.window[from..from + n]);
            decoder.fill(n);
            bytes.fed += n;
        }
        let status = match decoder.poll() {
            Ok(s) => s,
            // In the final phase the decoder only looks for the stream's end; the walk of
            // `verify` judges it (and says what is wrong in its words). A final phase the
            // decoder cannot follow ends where the source stops sending.
            Err(e) if held_at.is_some() => {
                structure = Some(walk_problem(&e));
                read_rest(src, &mut bytes.window, bytes.base, held_at, hold_limit)?;
                break;
            }
            Err(e) => return Err(Stop::Problem(walk_problem(&e))),
        };
        let at = decoder.offset();
        match status {
            Status::Ready => {}
            Status::Done => break,
            Status::Partial => {
                if held_at.is_none() {
                    bytes.pass(forward, &decoder)?;
                }
                bytes.compact();
                if extra.load(Ordering::Relaxed) {
                    bytes.keep_all(&decoder);
                    return Err(Stop::Unvalidated {
                        offset: bytes.base,
                        why: "a second connection of the source (a multifd channel: its \
                              pages bypass the main stream)"
                            .into(),
                        rest: std::mem::take(&mut bytes.window),
                    });
                }
                if bytes.fed < bytes.end() {
                    continue;
                }
                // More input is needed: the source must be able to send it.
                bytes.take_peeked()?;
                let space = decoder.space();
                if space.is_empty() {
                    return Err(problem(
                        at,
                        format!(
                            "at byte {at} (0x{at:x}): a record larger than the proxy's window ({WINDOW} bytes)"
                        ),
                    ));
                }
                // The read timeout is set only when it changes (not one syscall per read).
                let wait = (after_eof && trailer_left.is_none()).then_some(TRAILER_WAIT);
                if timeout != Some(wait) {
                    pause(wait);
                    timeout = Some(wait);
                }
                let n = match bytes.read(src, space) {
                    Ok(n) => n,
                    Err(e)
                        if after_eof
                            && trailer_left.is_none()
                            && matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                    {
                        // No trailer follows EOF: the stream ends there.
                        break;
                    }
                    Err(e) => return Err(Stop::Read(e)),
                };
                decoder.fill(n);
                if n == 0 {
                    decoder.finish();
                }
                held_within(held_at, bytes.end(), hold_limit)?;
                continue;
            }
        }
        let Some(event) = decoder.event() else {
            continue;
        };
        if held_at.is_none() {
            forward.event(at, &event).map_err(Stop::Pass)?;
        }
        let live = match event {
            Event::Record(Record::Header { .. } | Record::Configuration(_)) => true,
            Event::RamSection(_) | Event::Ram { .. } => {
                if let Some(h) = held_at {
                    return Err(problem(
                        at,
                        format!(
                            "at byte {at} (0x{at:x}): a RAM record after the final phase \
                             began at byte {h}: the proxy holds device sections only"
                        ),
                    ));
                }
                if let Event::Ram { .. } = event {
                    ram_records += 1;
                }
                true
            }
            Event::Record(Record::Command(c)) if held_at.is_none() => {
                use CommandId::*;
                match c.id {
                    PostcopyAdvise | PostcopyListen | PostcopyRun | PostcopyRamDiscard
                    | PostcopyResume | Packaged => {
                        let why = format!(
                            "postcopy (COMMAND {}: pages come later, on demand)",
                            c.id.name()
                        );
                        bytes.pass(forward, &decoder)?;
                        bytes.compact();
                        bytes.keep_all(&decoder);
                        return Err(Stop::Unvalidated {
                            offset: at,
                            why,
                            rest: std::mem::take(&mut bytes.window),
                        });
                    }
                    // A live destination has the return path these need.
                    OpenReturnPath | Ping => {}
                    _ => {
                        if let Some(p) = command_problem(&c, at, version) {
                            return Err(Stop::Problem(p));
                        }
                    }
                }
                true
            }
            Event::Record(Record::Eof) => {
                after_eof = true;
                false
            }
            Event::TrailerStart { len, .. } => {
                trailer_left = Some(len as usize);
                false
            }
            Event::TrailerData { data, .. } => {
                trailer_left = trailer_left.map(|l: usize| l.saturating_sub(data.len()));
                false
            }
            _ => false,
        };
        if !live && held_at.is_none() {
            bytes.pass(forward, &decoder)?;
            held_at = Some(at);
            // The final phase is held: read, not peeked, and kept.
            bytes.unpeek()?;
            bytes.keep_all(&decoder);
        }
        if held_at.is_none() && at - bytes.sent >= PASS_CHUNK {
            bytes.pass(forward, &decoder)?;
        }
        if trailer_left == Some(0) {
            // The trailer is the last record; what follows it is checked by the walk.
            break;
        }
    }
    let end = bytes.end().max(bytes.fed);
    let held_at = held_at.ok_or_else(|| {
        problem(
            end,
            format!("at byte {end} (0x{end:x}): the stream ended before its final phase"),
        )
    })?;
    held_within(Some(held_at), bytes.end(), hold_limit)?;
    let held = bytes.window.split_off(held_at - bytes.base);
    Ok(Live {
        prefix,
        held_at,
        held,
        ram_records,
        structure,
    })
}

/// The stream's bytes as [`read_live`] has them: `window` holds offsets `base..end()`; the
/// bytes from `end()` to `fed` are only in the decoder's buffer, and with a `tap` also still
/// in the source (peeked). Bytes before `sent` were passed on, bytes before `fed` fed to the
/// decoder. Without a tap the live part is read straight into the decoder's buffer and passed
/// from there ([`Decoder::consumed`]), not copied into the window; from the final phase on
/// (`keep`) every byte read is also kept in the window. Once bytes past the window were
/// passed, the window is empty and starts at `sent`.
struct Bytes<'t> {
    window: Vec<u8>,
    base: usize,
    sent: usize,
    fed: usize,
    keep: bool,
    tap: Option<&'t mut dyn Tap>,
}

/// The tap stops however [`read_live`] returns (peeking is off for whoever reads on).
impl Drop for Bytes<'_> {
    fn drop(&mut self) {
        if let Some(tap) = self.tap.take() {
            // Plain reads ignore the peek offset: a failure here changes nothing they read.
            let _ = tap.stop();
        }
    }
}

impl Bytes<'_> {
    /// The end of the bytes taken from the source (where the source's next byte is).
    fn end(&self) -> usize {
        self.base + self.window.len()
    }

    /// Reads from `src` into `space` (the decoder's): peeked with a tap, read without (and
    /// kept in the window too once `keep`).
    fn read(&mut self, src: &mut impl Read, space: &mut [u8]) -> io::Result<usize> {
        let n = match self.tap.as_mut() {
            Some(tap) => tap.peek(space)?,
            None => {
                let n = src.read(space)?;
                if self.keep {
                    self.window.extend_from_slice(&space[..n]);
                }
                n
            }
        };
        self.fed += n;
        Ok(n)
    }

    /// Passes the checked bytes from `sent` to the decoder's offset on: those in the window
    /// through `forward`, those after it through the tap, or without one through `forward`
    /// from the decoder's buffer ([`Decoder::consumed`]: passed before each
    /// [`Decoder::space`], they are still there). Those in the window stay there until
    /// [`Bytes::compact`]: dropping them here would move the rest of a full window at every
    /// [`PASS_CHUNK`].
    fn pass<L: BodyLength>(
        &mut self,
        forward: &mut dyn Forward,
        decoder: &Decoder<'_, L>,
    ) -> Result<(), Stop> {
        let (to, end) = (decoder.offset(), self.end());
        if self.sent < end && self.sent < to {
            let upto = to.min(end);
            forward
                .pass(&self.window[self.sent - self.base..upto - self.base])
                .map_err(Stop::Pass)?;
            self.sent = upto;
        }
        if to > self.sent {
            match self.tap.as_mut() {
                Some(tap) => tap.pass(to - self.sent).map_err(Stop::Pass)?,
                None => {
                    let consumed = decoder.consumed();
                    let from = to - consumed.len();
                    if from > self.sent {
                        return Err(Stop::Pass(io::Error::other(format!(
                            "internal: bytes {}..{from} to pass are no longer in the \
                             decoder's buffer",
                            self.sent
                        ))));
                    }
                    forward
                        .pass(&consumed[self.sent - from..])
                        .map_err(Stop::Pass)?;
                }
            }
            self.sent = to;
            self.window.clear();
            self.base = to;
        }
        Ok(())
    }

    /// From here on every byte is kept in the window (the held final phase, or the rest of
    /// a stream passed on unvalidated): without a tap, the bytes fed to the decoder and not
    /// in the window yet are copied from its buffer (all before its offset were passed).
    fn keep_all<L: BodyLength>(&mut self, decoder: &Decoder<'_, L>) {
        if self.keep || self.tap.is_some() {
            return;
        }
        let (at, rest) = (decoder.offset(), decoder.unconsumed());
        if self.end() < at {
            self.window.clear();
            self.base = at;
        }
        let have = self.end() - at;
        self.window.extend_from_slice(&rest[have.min(rest.len())..]);
        self.keep = true;
    }

    /// Drops the bytes passed on from the front of the window, which then starts at `sent`:
    /// done before the window is refilled, when what is left of it is the partial record the
    /// decoder waits on.
    fn compact(&mut self) {
        self.window.drain(..self.sent - self.base);
        self.base = self.sent;
    }

    /// Takes the bytes peeked and not passed (the start of a record cut by the last read) out
    /// of the source into the window, before the proxy waits for more input. Bytes left in
    /// a socket keep the whole packet buffer they arrived in charged to its receive buffer,
    /// and Linux then does not reopen the source's window (6.18: the source's next bytes
    /// never come): a proxy that waits must have taken out everything it peeked.
    fn take_peeked(&mut self) -> Result<(), Stop> {
        let (old, peeked) = (self.window.len(), self.fed.saturating_sub(self.end()));
        let Some(tap) = self.tap.as_mut().filter(|_| peeked > 0) else {
            return Ok(());
        };
        self.window.resize(old + peeked, 0);
        tap.take(&mut self.window[old..]).map_err(Stop::Read)
    }

    /// Stops peeking: the bytes peeked and not passed are taken out, and all later input is
    /// read.
    fn unpeek(&mut self) -> Result<(), Stop> {
        self.take_peeked()?;
        match self.tap.take() {
            Some(tap) => tap.stop().map_err(Stop::Read),
            None => Ok(()),
        }
    }
}

/// Reads the source to its end into `window` (which starts at `base`), within the hold limit.
fn read_rest(
    src: &mut impl Read,
    window: &mut Vec<u8>,
    base: usize,
    held_at: Option<usize>,
    limit: usize,
) -> Result<(), Stop> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        held_within(held_at, base + window.len(), limit)?;
        match src.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => window.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A source that pauses after EOF (the trailer wait) has ended.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(());
            }
            Err(e) => return Err(Stop::Read(e)),
        }
    }
}

/// The hold limit: the final phase from `held_at` to `end` (what was read) is at most
/// `limit` bytes.
fn held_within(held_at: Option<usize>, end: usize, limit: usize) -> Result<(), Stop> {
    match held_at {
        Some(h) if end - h > limit => Err(problem(
            h,
            format!(
                "at byte {h} (0x{h:x}): the final phase from here is over the hold limit \
                 ({limit} bytes, --hold-limit)"
            ),
        )),
        _ => Ok(()),
    }
}

/// A view of the live stream with its offsets: the prefix at 0, `held` at `held_at`, a hole
/// between, so nothing of the RAM part is stored.
enum View {
    /// An anonymous mapping (`MAP_NORESERVE`): only the pages written are ever backed, and
    /// making and dropping it costs tens of microseconds, not the hundreds of a file.
    Anon(memmap2::MmapMut),
    /// A sparse scratch file, where the system refuses a mapping that large.
    File(Input),
}

impl View {
    fn bytes(&self) -> &[u8] {
        match self {
            View::Anon(m) => m,
            View::File(f) => f.bytes(),
        }
    }
}

fn view(prefix: &[u8], held_at: usize, held: &[u8]) -> io::Result<View> {
    let len = held_at + held.len();
    if let Ok(mut m) = memmap2::MmapOptions::new()
        .len(len)
        .no_reserve_swap()
        .map_anon()
    {
        m[..prefix.len()].copy_from_slice(prefix);
        m[held_at..].copy_from_slice(held);
        return Ok(View::Anon(m));
    }
    let f = scratch_file()?;
    f.write_all_at(prefix, 0)?;
    f.write_all_at(held, held_at as u64)?;
    Input::from_file(f).map(View::File)
}

/// The problems `verify` finds in the final phase `held` (at `held_at`) after `prefix`, and
/// its report; a section nobody could check is a problem here (nothing passes unchecked).
fn check_held(
    prefix: &[u8],
    held_at: usize,
    held: &[u8],
    dest: &DestSpec,
) -> Result<Report, Failure> {
    let input =
        view(prefix, held_at, held).map_err(|e| Failure::Output(format!("temporary file: {e}")))?;
    let mut report = verify_resumed(
        input.bytes(),
        Some(prefix.len()..held_at),
        dest,
        &mut |_| {},
    )
    .map_err(Failure::Usage)?;
    if report.problems.is_empty() && !report.unchecked.is_empty() {
        let at = held_at;
        report.problems.push(Problem {
            offset: at,
            message: format!(
                "at byte {at} (0x{at:x}): not checked (no typed model and not in the \
                 description): {}",
                report.unchecked.join(", ")
            ),
        });
    }
    Ok(report)
}

/// The final phase with `edits` applied (`rewrite --set`): its bytes after the prefix.
fn edit_held(
    prefix: &[u8],
    held_at: usize,
    held: &[u8],
    dest: &DestSpec,
    edits: &[String],
) -> Result<Vec<u8>, Failure> {
    let input =
        view(prefix, held_at, held).map_err(|e| Failure::Output(format!("temporary file: {e}")))?;
    let bytes = input.bytes();
    let invalid = |e: crate::model::StreamError| Failure::Invalid(format!("final phase: {e}"));
    let description = find_description(bytes).map_err(invalid)?.map(|(_, d)| d);
    let options = ParseOptions {
        resume: Some((prefix.len(), held_at)),
        ..ParseOptions::default()
    };
    let mut stream = Stream::parse_visit(bytes, description, options, &mut |_| {}, &mut KeepAll)
        .map_err(invalid)?;
    dest.apply_edits(&mut stream, edits, "final phase")?;
    let mut out = Vec::with_capacity(prefix.len() + held.len());
    stream
        .write_to(&mut out)
        .map_err(|e| Failure::Invalid(format!("final phase: {e}")))?;
    // The header and CONFIGURATION were passed on already; the edits change neither.
    if out.get(..prefix.len()) != Some(prefix) {
        return Err(Failure::Invalid(
            "final phase: the edited stream does not start with the bytes passed on".into(),
        ));
    }
    Ok(out.split_off(prefix.len()))
}

/// The destination connection and the `--record` copy.
struct Pass<'a> {
    dest: &'a mut TcpStream,
    record: Option<&'a mut OutputFile>,
    bytes: usize,
}

impl Forward for Pass<'_> {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.dest.write_all(bytes)?;
        if let Some(r) = self.record.as_mut() {
            r.file().write_all(bytes)?;
        }
        self.bytes += bytes.len();
        Ok(())
    }
}

/// Closes the destination connection without the held bytes (its load fails at the cut).
fn refuse(dest: &TcpStream, name: String, problems: Vec<Problem>) -> (String, Outcome) {
    let _ = dest.shutdown(Shutdown::Both);
    (name, Outcome::Refused(problems))
}

/// Copies `from` into `to` until either ends, then ends `to`'s writing side.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Runs `vmstate proxy` for one migration: accepts the source on `--listen` (after calling
/// `listening` with the bound address), connects to `--to`, and passes the stream through
/// (module docs). The destination connection is closed on return.
pub fn run(
    options: &ProxyOptions,
    listening: &mut dyn FnMut(std::net::SocketAddr),
) -> Result<(String, Outcome), Failure> {
    let mut record = options
        .record
        .as_deref()
        .map(|p| OutputFile::create(p, &[], Links::Follow))
        .transpose()?;
    let (listener, mut src, name, mut dest) = connect(options, listening)?;
    let clone = |s: &TcpStream, what: &str| {
        s.try_clone()
            .map_err(|e| Failure::Output(format!("{what}: {e}")))
    };
    // The return path: whatever the destination sends goes to the source.
    let back = {
        let (d, s) = (clone(&dest, "--to")?, clone(&src, "source")?);
        std::thread::spawn(move || pipe(d, s))
    };
    // Further connections of the source are multifd channels.
    let extra = Arc::new(AtomicBool::new(false));
    {
        let (extra, to, pass) = (
            Arc::clone(&extra),
            options.to.clone(),
            options.pass_through_unvalidated,
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                extra.store(true, Ordering::Relaxed);
                if pass && let Ok(d) = TcpStream::connect(&to) {
                    if let (Ok(c), Ok(d2)) = (conn.try_clone(), d.try_clone()) {
                        std::thread::spawn(move || pipe(d2, c));
                    }
                    std::thread::spawn(move || pipe(conn, d));
                }
            }
        });
    }
    let src_timeout = clone(&src, "source")?;
    let mut pause = |t: Option<Duration>| {
        let _ = src_timeout.set_read_timeout(t);
    };
    // With --splice (and no --record copy to write), the live part does not pass through
    // the proxy.
    #[cfg(target_os = "linux")]
    let mut tap = match (&record, options.splice) {
        (None, true) => splice::Splice::new(&src, &dest),
        _ => None,
    };
    #[cfg(not(target_os = "linux"))]
    let mut tap: Option<NoTap> = None;
    let mut forward = Pass {
        dest: &mut dest,
        record: record.as_mut(),
        bytes: 0,
    };
    let live = read_live(
        &mut src,
        tap.as_mut().map(|t| t as &mut dyn Tap),
        &mut pause,
        &mut forward,
        &options.dest,
        options.hold_limit,
        &extra,
    );
    let live = match live {
        Ok(l) => l,
        Err(Stop::Problem(p)) => return Ok(refuse(forward.dest, name, vec![p])),
        Err(Stop::Unvalidated { offset, why, rest }) => {
            if !options.pass_through_unvalidated {
                let message = format!(
                    "at byte {offset} (0x{offset:x}): {why}: cannot be validated; refused \
                     (--pass-through-unvalidated forwards it unchecked)"
                );
                return Ok(refuse(
                    forward.dest,
                    name,
                    vec![Problem { offset, message }],
                ));
            }
            pause(None);
            eprintln!(
                "vmstate: warning: {name}: from byte {offset} on, forwarded unchecked: {why}"
            );
            // Everything from `offset` goes through as it comes.
            let copied = forward
                .pass(&rest)
                .and_then(|()| io::copy(&mut src, &mut ForwardWriter(&mut forward)));
            if let Err(e) = copied {
                let _ = forward.dest.shutdown(Shutdown::Both);
                return Err(Failure::Output(format!("--to {}: {e}", options.to)));
            }
            let _ = forward.dest.shutdown(Shutdown::Write);
            let bytes = forward.bytes + tap.as_ref().map_or(0, |t| t.passed());
            let _ = back.join();
            if let Some(r) = record {
                r.commit()?;
            }
            return Ok((
                name,
                Outcome::Unvalidated {
                    bytes,
                    from: offset,
                    why,
                },
            ));
        }
        Err(Stop::Read(e)) => {
            let _ = forward.dest.shutdown(Shutdown::Both);
            return Err(Failure::Unreadable(format!("{name}: {e}")));
        }
        Err(Stop::Pass(e)) => {
            let _ = forward.dest.shutdown(Shutdown::Both);
            return Err(Failure::Output(format!("--to {}: {e}", options.to)));
        }
    };
    // The final phase's last byte is in: the destination waits from here on.
    let received = Instant::now();
    let Live {
        prefix,
        held_at,
        mut held,
        ram_records,
        structure,
    } = live;
    let mut report = check_held(&prefix, held_at, &held, &options.dest)?;
    if report.problems.is_empty()
        && let Some(p) = structure
    {
        report.problems.push(p);
    }
    if report.problems.is_empty() && !options.edits.is_empty() {
        held = edit_held(&prefix, held_at, &held, &options.dest, &options.edits)?;
        // What is sent is what is checked.
        report = check_held(&prefix, held_at, &held, &options.dest)?;
    }
    if !report.problems.is_empty() {
        return Ok(refuse(forward.dest, name, report.problems));
    }
    if let Err(e) = forward.pass(&held) {
        let _ = forward.dest.shutdown(Shutdown::Both);
        return Err(Failure::Output(format!("--to {}: {e}", options.to)));
    }
    let hold_time = received.elapsed();
    let spliced = tap.as_ref().map_or(0, |t| t.passed());
    let bytes = forward.bytes + spliced;
    let _ = dest.shutdown(Shutdown::Write);
    // The destination closes once it has loaded (and answered on the return path).
    let _ = back.join();
    if let Some(r) = record {
        r.commit()?;
    }
    Ok((
        name,
        Outcome::Passed {
            bytes,
            spliced,
            ram_records,
            held: held.len(),
            report,
            hold_time,
        },
    ))
}

/// A [`Forward`] as an [`io::Write`], for the unchecked rest.
struct ForwardWriter<'a, 'b>(&'a mut Pass<'b>);

impl Write for ForwardWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.pass(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
