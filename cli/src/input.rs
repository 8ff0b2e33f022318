//! Input files, memory-mapped so that a multi-GiB stream is never copied into memory, and a
//! progress line for long walks.
//!
//! A mapped file still becomes resident as it is read. Every pass over an input calls
//! [`Input::release_before`] with the offset it reached, which drops the mapping's pages
//! behind that point from this process (they are read back from the page cache or the file if
//! touched again): the model's walks and writes per record, the codec's conversions and v4
//! checksum walks through their `reached` callbacks (per record, and inside a v3 RAM section
//! every 256 KiB), and a piece written straight from the mapping through
//! [`write_releasing`]. So each input's resident part is a few MiB whatever its size, and that is
//! deterministic: it does not depend on how threads are scheduled. What a pass reads as one
//! piece stays resident until it is done with it (a v4 record, whose checksum covers it
//! whole). A governor thread is a backstop for what would still escape: every 5 ms it reads
//! the process's resident file-backed memory (`/proc/self/statm`), and above
//! [`RESIDENT_BUDGET`] it releases every input mapping (the pages in use are faulted back in
//! from the page cache). Setting [`NO_GOVERNOR`] keeps it from starting; the memory tests do,
//! so that the bounds they show are the passes' own.
//!
//! # What can be an input
//!
//! * A regular file is mapped as it is.
//! * A pipe, FIFO, socket or character device (`<(cat f)`, `/dev/stdin`) cannot be mapped: it
//!   is copied ("spooled") into an unlinked temporary file in `$TMPDIR` as it is read, and that
//!   file is mapped. Disk use is the stream's size; memory stays bounded as for a file. What is
//!   read must start with the `QEVM` magic ([`Expect::Stream`]) — so `/dev/zero` is refused
//!   after its first bytes instead of being copied until the disk is full — or, for inputs that
//!   may also be JSON ([`Expect::StreamOrText`]), be a stream or at most [`MAX_TEXT_INPUT`]
//!   bytes. A stream that starts well and turns into garbage is refused early too: a v3 stream
//!   is followed by the codec's push decoder as it arrives, and a v4 stream's records are
//!   walked each time the copy doubled in size.
//! * A directory is refused ("is a directory").
//!
//! # Containers
//!
//! A stream need not start the file ([`crate::container`]): a libvirt save image (`virsh
//! save`) is recognised by its header, whose fields are checked, and [`Input::bytes`] is the
//! QEMU stream after it; a compressed image's stream is decompressed into an unlinked
//! temporary file (like a pipe's spool) and mapped. A file that starts with neither is
//! searched for a stream at a 4 KiB-aligned offset (`migrate file:PATH,offset=N`), or the
//! offset is given ([`Input::open_at`]). [`Input::container`] says what was found and
//! [`Input::prefix`] gives the bytes before the stream (what `rewrite` keeps). A pipe may
//! carry a libvirt image too (it is spooled first); an offset is looked for in files only, and
//! given with `--offset` it is honoured for a pipe too: that many bytes are spooled as they
//! are, then the stream must start.
//!
//! A mapped-ram stream (libvirt's `sparse` image, `migrate file:` with the capability) needs
//! random access: its pages are at file offsets, read after the block list. A pipe's spool
//! gives it (the zero pages, holes in the file, arrive as zeros and are spooled as holes
//! again), so every command reads such a stream from a pipe as from the file.
//!
//! # An input that changes while it is read
//!
//! A mapped file that another process truncates makes the pages past its new end fault with
//! `SIGBUS`, which would kill the process without a word. This module installs (once) a
//! `SIGBUS` handler that checks the faulting address lies in one of the mappings made here; if
//! so it maps a page of zeros over the faulting page and records that the input was truncated,
//! and the walk goes on reading zeros. A fault anywhere else gets the default action (the
//! process dies as it would without the handler). Every command asks [`Input::unchanged`]
//! before it reports a verdict or commits an output: that fails when a truncation was caught,
//! or when the file's size or modification time differs from when it was opened (a file
//! rewritten in place, without shrinking). The answer computed from a changed input is never
//! reported.
//!
//! This is the only `unsafe` code of the crate; each block states why it is sound.

use crate::container::{self, Container, LIBVIRT_HEADER_LEN, LIBVIRT_PREFIX};
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

/// Granularity of [`Input::release_before`], and how far behind the offset it is given the
/// release stops: a caller reports an offset once it has read a record, and may still read
/// that record's bytes (a page it compares, a body it writes) after it. Without the lag such
/// bytes, faulted back in just behind a release point, would stay resident for the rest of the
/// pass (with large folios up to 512 KiB at each release point, 32 MiB over a 512 MiB walk).
const RELEASE_STEP: usize = 4 << 20;

/// Resident file-backed memory (the mapped inputs, the program's own code) above which the
/// governor releases the input mappings.
pub const RESIDENT_BUDGET: usize = 32 << 20;

/// An environment variable that, when set, keeps the governor from starting.
pub const NO_GOVERNOR: &str = "VMSTATE_NO_GOVERNOR";

/// How often the governor looks.
const GOVERNOR_TICK: Duration = Duration::from_millis(5);

/// The largest non-stream input read from a pipe or accepted from a file when
/// [`Expect::StreamOrText`] is given (a `-dump-vmstate` JSON is about 1 MiB).
pub const MAX_TEXT_INPUT: u64 = 64 << 20;

/// The stream magic every migration stream (v3 and v4) starts with.
const MAGIC: &[u8; 4] = b"QEVM";

/// What an input must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A migration stream (v3 or v4): a pipe's bytes must start with `QEVM`.
    Stream,
    /// A stream, or a text (JSON) of at most [`MAX_TEXT_INPUT`] bytes.
    StreamOrText,
}

/// Size and modification time of an input when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// A read-only view of an input file: the stream it holds ([`Input::bytes`]) and what is
/// around it ([`Input::container`]).
#[derive(Debug)]
pub struct Input {
    map: Option<Guarded>,
    file: File,
    stamp: Stamp,
    /// Where the stream starts in the mapping.
    start: usize,
    container: Option<Container>,
    /// For a decompressed stream: the image it was decompressed from.
    origin: Option<Box<Input>>,
}

impl Input {
    /// Opens a migration stream ([`Expect::Stream`]): maps a regular file, spools anything
    /// else that can be read (see the module docs). An empty file is an empty input.
    pub fn open(path: &Path) -> io::Result<Input> {
        Input::open_as(path, Expect::Stream)
    }

    /// Opens `path` as [`Input::open`] does, with `expect` deciding what a non-stream may be.
    pub fn open_as(path: &Path, expect: Expect) -> io::Result<Input> {
        Input::open_at(path, expect, None)
    }

    /// Opens `path` as [`Input::open_as`] does, the stream at file offset `offset` when it is
    /// given (`--offset`; what is before it is kept as the container), else wherever the
    /// module docs say it is looked for.
    pub fn open_at(path: &Path, expect: Expect, offset: Option<u64>) -> io::Result<Input> {
        Input::open_file(path, expect, offset)?.locate(expect, offset)
    }

    fn open_file(path: &Path, expect: Expect, offset: Option<u64>) -> io::Result<Input> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        let kind = meta.file_type();
        if kind.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            ));
        }
        if !kind.is_file() {
            return Input::from_file(spool(file, expect, offset.unwrap_or(0))?);
        }
        if expect == Expect::StreamOrText && meta.len() > MAX_TEXT_INPUT {
            let mut head = [0u8; LIBVIRT_PREFIX.len()];
            let n = (&file).read(&mut head)?;
            if !head[..n].starts_with(MAGIC) && head[..n] != LIBVIRT_PREFIX[..] {
                return Err(too_large());
            }
        }
        Input::from_file(file)
    }

    /// Finds the stream in the mapped file (see the module docs).
    fn locate(mut self, expect: Expect, offset: Option<u64>) -> io::Result<Input> {
        let whole = self.bytes();
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let container = if let Some(n) = offset {
            let at = usize::try_from(n).unwrap_or(usize::MAX);
            if !whole.get(at..).is_some_and(|s| s.starts_with(MAGIC)) {
                let found = whole.get(at..).map_or(&[][..], |s| &s[..s.len().min(4)]);
                return Err(invalid(format!(
                    "--offset {n}: expected the QEVM magic at file offset {n} (0x{n:x}), found \
                     {}",
                    if found.is_empty() {
                        "the end of the file".to_string()
                    } else {
                        format!("{found:02x?}")
                    }
                )));
            }
            Container::Offset {
                start: at,
                given: true,
            }
        } else if whole.starts_with(MAGIC) {
            return Ok(self);
        } else if whole.starts_with(LIBVIRT_PREFIX) {
            let image = container::parse_libvirt(whole).map_err(|e| invalid(e.to_string()))?;
            if image.header.format.compressed() {
                let mut out = io::BufWriter::new(scratch_file()?);
                container::decompress(image.header.format, &whole[image.stream_start..], &mut out)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "libvirt save image: {} data at file offset {} (0x{:x}): {e}",
                                image.header.format.name(),
                                image.stream_start,
                                image.stream_start
                            ),
                        )
                    })?;
                let file = out.into_inner().map_err(|e| e.into_error())?;
                let mut inner = Input::from_file(file)?;
                inner.container = Some(Container::Libvirt(Box::new(image)));
                inner.origin = Some(Box::new(self));
                return Ok(inner);
            }
            Container::Libvirt(Box::new(image))
        } else if (expect == Expect::Stream || !starts_like_json(whole))
            && let Some(start) = container::find_stream(whole)
        {
            Container::Offset {
                start,
                given: false,
            }
        } else {
            return Ok(self);
        };
        self.start = container.start();
        self.container = Some(container);
        Ok(self)
    }

    /// Maps `file` (a regular file, e.g. one from [`scratch_file`]) from its start.
    pub fn from_file(file: File) -> io::Result<Input> {
        let stamp = Stamp::of(&file.metadata()?);
        let map = if stamp.len == 0 {
            None
        } else {
            Some(Guarded::map(&file)?)
        };
        Ok(Input {
            map,
            file,
            stamp,
            start: 0,
            container: None,
            origin: None,
        })
    }

    /// The stream's bytes: the whole file, or the stream in its container (decompressed).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |g| &g.map[self.start..])
    }

    /// What is around the stream, when it does not simply fill the file.
    pub fn container(&self) -> Option<&Container> {
        self.container.as_ref()
    }

    /// The file offset where [`Input::bytes`] starts: 0 for a plain stream and for a
    /// decompressed one (whose offsets are in the decompressed stream), else the offset of
    /// the stream in its container. Offsets a stream declares as file offsets (mapped-ram's
    /// bitmap and pages, in a libvirt `sparse` image or a `file:,offset=` stream) are this
    /// plus the stream offset.
    pub fn stream_start(&self) -> usize {
        self.start
    }

    /// The file's bytes before the stream (the libvirt header, XML and padding, or what was
    /// before the offset); empty for a plain or a decompressed stream.
    pub fn prefix(&self) -> &[u8] {
        self.map.as_ref().map_or(&[], |g| &g.map[..self.start])
    }

    /// Fails when the input changed since it was opened: it was truncated under the mapping
    /// (the bytes past its new end read as zeros), or its size or modification time differ.
    /// Call it before reporting anything computed from [`Input::bytes`].
    pub fn unchanged(&self) -> io::Result<()> {
        let changed = |what: String| {
            Err(io::Error::other(format!(
                "the input changed while it was read ({what}); nothing computed from it is \
                 reported"
            )))
        };
        if let Some(origin) = &self.origin {
            origin.unchanged()?;
        }
        let now = Stamp::of(&self.file.metadata()?);
        if self.map.as_ref().is_some_and(Guarded::truncated) || now.len < self.stamp.len {
            return changed(format!(
                "it shrank from {} to {} bytes",
                self.stamp.len, now.len
            ));
        }
        if now != self.stamp {
            return changed(if now.len != self.stamp.len {
                format!("its size went from {} to {} bytes", self.stamp.len, now.len)
            } else {
                "it was modified".into()
            });
        }
        Ok(())
    }

    /// Tells the kernel that the bytes before `offset` (less up to two steps of 4 MiB) are
    /// not needed for now: their pages leave this process's resident set (later reads fault
    /// them back in). Called with increasing offsets during one pass; an offset behind the
    /// last one starts a new pass. Every pass over an input calls it, so the resident part of
    /// a mapped input is about two steps per pass, whatever the file's size: the governor
    /// thread is only a backstop (see the module docs).
    pub fn release_before(&self, offset: usize) {
        if let Some(g) = &self.map {
            // The mapping lives as long as `self`.
            MAPPINGS[g.slot].release_to(offset.saturating_add(self.start));
        }
    }
}

/// Whether `bytes` start like a JSON text (`{` or `[` after white space): such an input of
/// [`Expect::StreamOrText`] is not searched for a stream at an offset.
fn starts_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{' || b == b'[')
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "neither a migration stream (no QEVM magic) nor a text of at most {MAX_TEXT_INPUT} \
             bytes"
        ),
    )
}

/// An unlinked read-write temporary file in `$TMPDIR` (`O_TMPFILE`, or a file created
/// exclusively under a unique name and removed at once where the file system lacks it): it
/// disappears when closed, whatever way the process ends.
pub fn scratch_file() -> io::Result<File> {
    let dir = std::env::temp_dir();
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&dir);
    if let Ok(f) = tmpfile {
        return Ok(f);
    }
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".vmstate-spool-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Copies a non-seekable input into a [`scratch_file`], refusing early what cannot be a
/// stream (a pipe's first four bytes decide) or a text too large for [`Expect::StreamOrText`].
/// A v3 stream is also fed to the codec's push decoder as it arrives ([`watch`]), so one that
/// turns into garbage (`QEVM` header, then `/dev/zero`) is refused at its first invalid
/// record instead of being copied until the disk is full. The first `skip` bytes (`--offset`)
/// are copied as they are and the checks start after them. Zero 4 KiB blocks are left as
/// holes ([`SparseFile`](crate::output::SparseFile)): a mapped-ram stream's zero pages take
/// no disk.
fn spool(src: File, expect: Expect, skip: u64) -> io::Result<File> {
    let mut out = scratch_file()?;
    let mut src = src;
    if skip > 0 {
        let mut sparse = crate::output::SparseFile::new(&mut out)?;
        let copied = io::copy(&mut (&mut src).take(skip), &mut sparse)?;
        sparse.flush()?;
        if copied < skip {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("--offset {skip}: the input ended after {copied} bytes"),
            ));
        }
    }
    spool_stream(src, expect, &mut out, skip)?;
    Ok(out)
}

/// [`spool`] from the stream's start (file offset `skip` of `out`) on.
fn spool_stream(mut src: File, expect: Expect, file: &mut File, skip: u64) -> io::Result<()> {
    let mut out = crate::output::SparseFile::new(file)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut work = vec![0u8; WATCH_BUFFER];
    let mut decoder = None;
    // The header (magic and version) and the byte after it.
    let mut head = Vec::with_capacity(HEAD);
    let mut total = 0u64;
    let mut next_v4_check = 1u64 << 20;
    let mut next_libvirt_check = Some(LIBVIRT_HEADER_LEN as u64);
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        let before = head.len();
        if before < HEAD {
            head.extend_from_slice(&chunk[..(HEAD - before).min(n)]);
        }
        // After `--offset` bytes only the stream itself, not a libvirt image.
        let stream = (head.len() >= MAGIC.len())
            .then(|| head.starts_with(MAGIC) || (skip == 0 && LIBVIRT_PREFIX.starts_with(&head)));
        match (stream, expect) {
            (Some(false), Expect::Stream) => return Err(not_a_stream(&head, skip)),
            (Some(false), Expect::StreamOrText) if total + n as u64 > MAX_TEXT_INPUT => {
                return Err(too_large());
            }
            _ => {}
        }
        if before < HEAD && head.len() == HEAD && head[..8] == V3_HEADER[..] {
            // Only v3 has a push decoder; a v4 stream is checked when it is read.
            let mut options = vmstate::stream::Options::for_stream(&head);
            // The stream's file offset (mapped-ram headers hold file offsets).
            options.ram.file_offset = skip;
            let mut d =
                vmstate::io::Decoder::with_options(&mut work, vmstate::stream::FooterScan, options);
            // Everything spooled before this chunk is in `head`.
            watch(&mut d, &head[..before])?;
            decoder = Some(d);
        }
        if let Some(d) = decoder.as_mut()
            && !watch(d, chunk)?
        {
            decoder = None;
        }
        out.write_all(chunk)?;
        total += n as u64;
        if head.len() == HEAD && head[..8] == V4_HEADER[..] && total >= next_v4_check {
            check_v4_prefix(out.file(), skip)?;
            next_v4_check = next_v4_check.saturating_mul(2);
        }
        if skip == 0 && head.len() == HEAD && LIBVIRT_PREFIX.starts_with(&head) {
            check_libvirt_prefix(out.file(), total, &mut next_libvirt_check)?;
        }
    }
    if expect == Expect::Stream
        && total > 0
        && !head.starts_with(MAGIC)
        && !(skip == 0 && LIBVIRT_PREFIX.starts_with(&head))
    {
        return Err(not_a_stream(&head, skip));
    }
    out.flush()
}

/// Bytes read before the decoder starts: magic, version and the record type after the header
/// (whether it is a CONFIGURATION record decides what the walk requires).
const HEAD: usize = 9;
/// The v3 file header.
const V3_HEADER: [u8; 8] = *b"QEVM\0\0\0\x03";
/// The v4 file header's first bytes.
const V4_HEADER: [u8; 8] = *b"QEVM\0\0\0\x04";

/// The libvirt guard: an image arriving through a pipe is refused as soon as what arrived
/// shows it is not one: its header once its 92 bytes are in, the XML, the cookie and the
/// start of the stream once the header's data length and 16 bytes more are in. (The stream
/// after a valid start is not followed: it is read when the command runs.)
fn check_libvirt_prefix(out: &File, total: u64, next: &mut Option<u64>) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let invalid =
        |e: container::ContainerError| io::Error::new(io::ErrorKind::InvalidData, e.to_string());
    while let Some(at) = *next {
        if total < at {
            return Ok(());
        }
        if at == LIBVIRT_HEADER_LEN as u64 {
            let mut h = [0u8; LIBVIRT_HEADER_LEN];
            out.read_exact_at(&mut h, 0)?;
            let header = container::parse_header(&h).map_err(invalid)?;
            *next = Some(at + u64::from(header.data_len) + 16);
        } else {
            let spooled = Input::from_file(out.try_clone()?)?;
            container::parse_libvirt(spooled.bytes()).map_err(invalid)?;
            *next = None;
        }
    }
    Ok(())
}

/// The v4 guard: v4 has no push decoder, so the records spooled so far are walked (checksums
/// included) whenever the spool doubled in size, from 1 MiB on — twice the stream's size in
/// work overall. Only a record cut off at the end of what arrived is accepted; anything else
/// refuses the input, so garbage after a valid start is copied at most until the spool has
/// doubled (or until a frame it declares is complete).
fn check_v4_prefix(out: &File, skip: u64) -> io::Result<()> {
    let spooled = Input::from_file(out.try_clone()?)?;
    let at = usize::try_from(skip).unwrap_or(usize::MAX);
    for r in vmstate::v4::wire::Records4::new(spooled.bytes().get(at..).unwrap_or_default()) {
        match r {
            Ok(_) => {}
            Err(vmstate::v4::Error::Codec(e))
                if matches!(e.kind, vmstate::ErrorKind::Truncated { .. }) =>
            {
                break;
            }
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a valid migration stream: {e}"),
                ));
            }
        }
    }
    Ok(())
}
/// Working buffer of the guard decoder: the largest VMState section it follows whole.
const WATCH_BUFFER: usize = 1 << 20;

/// Feeds `data` to the guard decoder and reads every item it completes. An error that the
/// parse of the whole stream reports too (an unknown record type, a bad section id, a
/// malformed RAM record) refuses the input at once; errors that only mean the decoder cannot
/// follow the stream (a body whose end needs the description: no section footers; a section
/// larger than its buffer) stop the guard (`Ok(false)`), and the full parse decides later.
fn watch<L: vmstate::stream::BodyLength>(
    d: &mut vmstate::io::Decoder<'_, L>,
    mut data: &[u8],
) -> io::Result<bool> {
    use vmstate::ErrorKind as K;
    use vmstate::io::Status;
    loop {
        loop {
            match d.poll() {
                Ok(Status::Ready) => continue,
                Ok(Status::Partial) => break,
                Ok(Status::Done) => return Ok(false),
                Err(e) => {
                    return match e.kind {
                        K::BodyLengthUnknown
                        | K::BufferTooSmall { .. }
                        | K::MissingFooter { .. }
                        | K::FooterMismatch { .. } => Ok(false),
                        _ => Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("not a valid migration stream: {e}"),
                        )),
                    };
                }
            }
        }
        if data.is_empty() {
            return Ok(true);
        }
        let space = d.space();
        let k = space.len().min(data.len());
        space[..k].copy_from_slice(&data[..k]);
        d.fill(k);
        data = &data[k..];
    }
}

/// A pipe's bytes (from `--offset` `skip` on) that do not start a stream.
fn not_a_stream(head: &[u8], skip: u64) -> io::Error {
    let message = if skip > 0 {
        format!(
            "--offset {skip}: expected the QEVM magic at offset {skip} (0x{skip:x}) of the \
             input, found {head:02x?}"
        )
    } else {
        format!(
            "not a migration stream: it starts with {head:02x?}, expected the QEVM magic \
             {MAGIC:02x?} or a libvirt save image (a stream after other bytes, as `migrate \
             file:PATH,offset=N` writes it, is looked for in a regular file only: give the \
             file, or --offset N)"
        )
    };
    io::Error::new(io::ErrorKind::InvalidData, message)
}

// ------------------------------------------------------------------------------------------
// Mappings and the SIGBUS guard

/// How many inputs can be mapped at once (`diff` maps two, a conversion one more).
const SLOTS: usize = 32;

/// One mapping the `SIGBUS` handler may repair. Only atomics: the handler reads them.
struct Slot {
    used: AtomicBool,
    start: AtomicUsize,
    end: AtomicUsize,
    truncated: AtomicBool,
    /// Offset in the mapping up to which the current pass has released it.
    released: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    truncated: AtomicBool::new(false),
    released: AtomicUsize::new(0),
};

impl Slot {
    /// [`Input::release_before`] at `pos`, an offset in this slot's mapping. The caller keeps
    /// the mapping alive for the call (it owns it, or holds [`REGISTRY`]).
    fn release_to(&self, pos: usize) {
        let (start, end) = (
            self.start.load(Ordering::Acquire),
            self.end.load(Ordering::Acquire),
        );
        if start >= end {
            return;
        }
        let to = (pos.min(end - start) & !(RELEASE_STEP - 1)).saturating_sub(RELEASE_STEP);
        let from = self.released.load(Ordering::Acquire);
        if to > from {
            release_range(start + from, to - from);
        }
        // Behind `from`: a new pass over the input (e.g. writing after parsing) started
        // behind the last release point: release from here on again.
        self.released.store(to, Ordering::Release);
    }
}

/// How much [`write_releasing`] writes at a time.
const WRITE_PIECE: usize = 1 << 20;

/// Writes `bytes` into `w` in pieces; when they lie in a mapped input (a page region a
/// command copies out as it is), that input is released behind each piece as
/// [`Input::release_before`] would be — so a write of hundreds of MiB straight from the
/// mapping (a mapped-ram pages region) does not make them all resident.
pub fn write_releasing(w: &mut (impl Write + ?Sized), bytes: &[u8]) -> io::Result<()> {
    for piece in bytes.chunks(WRITE_PIECE) {
        w.write_all(piece)?;
        let end = piece.as_ptr() as usize + piece.len();
        let _registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let slot = MAPPINGS.iter().find(|s| {
            s.used.load(Ordering::Acquire)
                && s.start.load(Ordering::Acquire) < end
                && end <= s.end.load(Ordering::Acquire)
        });
        if let Some(s) = slot {
            s.release_to(end - s.start.load(Ordering::Acquire));
        }
    }
    Ok(())
}

/// A writer that writes through [`write_releasing`].
#[derive(Debug)]
pub struct Releasing<W>(pub W);

impl<W: Write> Write for Releasing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        write_releasing(&mut self.0, buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

static MAPPINGS: [Slot; SLOTS] = [FREE; SLOTS];
/// The page size, read once before the handler is installed (`sysconf` is not
/// async-signal-safe).
static PAGE: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();
/// Held while a mapping is registered or unregistered, and while the governor releases the
/// registered ones: a range is never advised after it was unmapped.
static REGISTRY: Mutex<()> = Mutex::new(());

/// A mapping registered with the `SIGBUS` handler for as long as it lives.
struct Guarded {
    map: memmap2::Mmap,
    slot: usize,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("len", &self.map.len())
            .field("slot", &self.slot)
            .finish()
    }
}

impl Guarded {
    fn map(file: &File) -> io::Result<Guarded> {
        INSTALL.call_once(|| {
            install_handler();
            // Without the governor only the walks' own releases bound memory: the memory
            // tests turn it off to show that they do (README, "Large streams").
            if std::env::var_os(NO_GOVERNOR).is_some() {
                return;
            }
            let _ = std::thread::Builder::new()
                .name("vmstate-governor".into())
                .spawn(governor);
        });
        let _registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let slot = MAPPINGS
            .iter()
            .position(|s| {
                s.used
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .ok_or_else(|| io::Error::other(format!("more than {SLOTS} inputs mapped at once")))?;
        let map = match map(file) {
            Ok(m) => m,
            Err(e) => {
                MAPPINGS[slot].used.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let s = &MAPPINGS[slot];
        s.truncated.store(false, Ordering::Release);
        s.released.store(0, Ordering::Release);
        let start = map.as_ptr() as usize;
        // `end` before `start`: the handler never sees a range that is not this mapping's.
        s.end.store(start + map.len(), Ordering::Release);
        s.start.store(start, Ordering::Release);
        Ok(Guarded { map, slot })
    }

    fn truncated(&self) -> bool {
        MAPPINGS[self.slot].truncated.load(Ordering::Acquire)
    }
}

impl Drop for Guarded {
    // Runs before `map` is unmapped: once the range is free it may be reused by another
    // mapping, whose faults are not ours to repair.
    fn drop(&mut self) {
        let _registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let s = &MAPPINGS[self.slot];
        s.start.store(usize::MAX, Ordering::Release);
        s.end.store(0, Ordering::Release);
        s.used.store(false, Ordering::Release);
    }
}

// SAFETY (`map` below): `memmap2` marks mapping a file `unsafe` because the
// mapping aliases the file: another process that writes the file while we read it changes
// memory Rust treats as immutable, and one that truncates it makes reads past the new end
// fault. Faults are repaired by the SIGBUS handler (a page of zeros), and every command checks
// [`Input::unchanged`] before it reports or commits anything, so bytes read from a changed
// file never reach an answer. The mapping is read-only and shared: nothing is written
// through it.
#[allow(unsafe_code)]
fn map(file: &File) -> io::Result<memmap2::Mmap> {
    // SAFETY: see the comment above; the mapping is read-only and shared.
    let m = unsafe { memmap2::Mmap::map(file)? };
    // Walks are front to back.
    let _ = m.advise(memmap2::Advice::Sequential);
    Ok(m)
}

/// Resident file-backed bytes of this process (`/proc/self/statm`, third field, in pages).
fn resident_file_bytes(statm: &File, buf: &mut [u8; 128]) -> Option<usize> {
    use std::os::unix::fs::FileExt;
    let n = statm.read_at(buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: usize = text.split_ascii_whitespace().nth(2)?.parse().ok()?;
    Some(pages.saturating_mul(PAGE.load(Ordering::Acquire)))
}

/// The governor thread (see the module docs).
fn governor() {
    let Ok(statm) = File::open("/proc/self/statm") else {
        return;
    };
    let mut buf = [0u8; 128];
    loop {
        std::thread::sleep(GOVERNOR_TICK);
        if resident_file_bytes(&statm, &mut buf).is_none_or(|n| n <= RESIDENT_BUDGET) {
            continue;
        }
        let _registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        for s in MAPPINGS.iter().filter(|s| s.used.load(Ordering::Acquire)) {
            let (start, end) = (
                s.start.load(Ordering::Acquire),
                s.end.load(Ordering::Acquire),
            );
            if start < end {
                release_range(start, end - start);
            }
        }
    }
}

// `MADV_DONTNEED` is `unsafe` because on a private or anonymous mapping it discards data (the
// next read sees zeros or the file's contents). Our mappings are shared, read-only file
// mappings: there is no private copy to lose, and the next read faults in the same file
// contents, so every `&[u8]` into the mapping stays valid and unchanged. (A page of zeros the
// SIGBUS handler put over a truncated part reads as zeros again.)
/// `MADV_DONTNEED` over (part of) a registered mapping, by address.
#[allow(unsafe_code)]
fn release_range(start: usize, len: usize) {
    // SAFETY: the caller keeps the range's mapping alive (it owns the `Input`, or holds
    // REGISTRY and the range is registered), so it is a live shared read-only file mapping of
    // ours (see above: dropping its pages loses nothing), possibly with private zero pages
    // the SIGBUS handler put there, which read as zeros again after the advice. Failure only
    // costs memory.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

#[allow(unsafe_code)]
fn install_handler() {
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    PAGE.store(usize::try_from(page).unwrap_or(4096), Ordering::Release);
    // SAFETY: a zeroed `sigaction` is a valid value (empty mask, no flags); the handler is an
    // `extern "C"` function of the SA_SIGINFO signature that stays valid for the whole
    // program, and uses only atomics and async-signal-safe calls (`mmap`, `signal`, `raise`).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        // Without the handler a truncated input kills the process as before.
        let _ = libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

#[allow(unsafe_code)]
extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: with SA_SIGINFO the kernel passes a valid `siginfo_t`; for SIGBUS `si_addr` is
    // the faulting address (for a SIGBUS sent with kill(2) it is some number, matched below
    // against our mappings' ranges only).
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Acquire);
    for s in &MAPPINGS {
        let (start, end) = (
            s.start.load(Ordering::Acquire),
            s.end.load(Ordering::Acquire),
        );
        if start <= addr && addr < end && page.is_power_of_two() {
            // SAFETY: the page lies inside a live read-only mapping of ours (registered for
            // as long as it is mapped), which this replaces by a private page of zeros: the
            // faulting read is retried and reads zeros, and nothing else refers to the old
            // page's contents. `mmap` is async-signal-safe.
            let p = unsafe {
                libc::mmap(
                    (addr & !(page - 1)) as *mut libc::c_void,
                    page,
                    libc::PROT_READ,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                s.truncated.store(true, Ordering::Release);
                return;
            }
            break;
        }
    }
    // Not ours (or not repairable): the default action. SIGBUS is blocked while the handler
    // runs, so the raised signal is delivered, and kills the process, when it returns.
    // SAFETY: `signal` and `raise` are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
        libc::raise(libc::SIGBUS);
    }
}

/// A `\r`-updated percentage line on stderr, shown only when stderr is a terminal and at most
/// ten times a second.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: usize,
    enabled: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    /// A progress line for an operation over `total` bytes.
    pub fn new(label: &'static str, total: usize) -> Progress {
        Progress {
            label,
            total,
            enabled: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    /// Reports that `done` bytes are processed.
    pub fn update(&mut self, done: usize) {
        if !self.enabled || self.total == 0 {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let pct = (done.min(self.total) as u128 * 100 / self.total as u128) as u32;
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{}: {pct:3}%", self.label);
        let _ = e.flush();
        self.shown = true;
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.shown {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{:width$}\r", "", width = self.label.len() + 6);
            let _ = e.flush();
            self.shown = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
