//! Every file the CLI writes goes through [`OutputFile`]: nothing a command was given is ever
//! destroyed, half-written or made readable to more people than before.
//!
//! What happens depends on what the output path names (symlinks are followed to their final
//! target first, so a link to a regular file keeps being a link and its target is replaced):
//!
//! * **a regular file, or nothing**: the bytes go to a new temporary file in the target's
//!   folder, named `.vmstate-XXXXXXXXXXXXXXXX.tmp` (16 random hex digits: short, so any
//!   output name that fits in the folder works, and unpredictable). It is created exclusively
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600), so a file or symlink already at that name —
//!   planted or left by a concurrent run — is never opened or followed; another name is drawn.
//!   When the command finishes, the temporary file gets the old file's owner and group (where
//!   permitted, see below) and mode, is fsync'd, renamed over the target, and the folder is
//!   fsync'd. A new file gets the default mode (0666 minus the umask). On any failure the
//!   temporary file is removed and the target is untouched. Two runs writing one output each
//!   use their own temporary file: the output is always one complete result (the last rename
//!   wins).
//! * **a regular file with more than one hard link**: a rename would detach the name from
//!   the other links. The temporary file is completed and fsync'd as above, then copied into
//!   the existing file (same inode, so every link sees the new bytes), which is truncated to
//!   the new length and fsync'd; then the temporary file is removed. If that copy fails, the
//!   complete output is kept in the temporary file and the error names it.
//! * **a character or block device or a FIFO** (e.g. `/dev/null`, `/dev/stdout` on a pipe,
//!   `/proc/self/fd/1`): the bytes are written straight through (opened for writing, not
//!   created, not truncated); the node is never replaced by a regular file.
//! * **a directory or a socket**: refused with a message; nothing is written.
//!
//! Owner and group: a new file belongs to whoever runs the command. Replacing an existing
//! file, its owner and group are kept where the system permits (`fchown`; a non-root user
//! cannot give a file away, so an owner that cannot be kept becomes the user's). If the group
//! cannot be kept either, the group's permission bits are cleared rather than granted to the
//! user's group.
//!
//! An output is never one of the command's inputs: [`OutputFile::create`] compares device and
//! inode of the output's final target with those of every input (after following symlinks,
//! so hard links and symlinks to an input are caught) and refuses before anything is written.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why an output could not be written.
#[derive(Debug)]
pub enum OutputError {
    /// The output is one of the command's inputs (same device and inode).
    IsInput {
        /// The output path as given.
        output: PathBuf,
        /// The input it names.
        input: PathBuf,
    },
    /// The output names something that cannot receive a file (a directory, a socket, a
    /// symlink to nothing).
    Refused {
        /// The output path as given.
        output: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing failed; the target is unchanged unless `reason` says otherwise.
    Io {
        /// The output path as given.
        output: PathBuf,
        /// What failed.
        reason: String,
        /// The system error.
        error: io::Error,
    },
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputError::IsInput { output, input } => write!(
                f,
                "{}: the output is the input {} (same file); refusing to overwrite it \
                 (write to another name)",
                output.display(),
                input.display()
            ),
            OutputError::Refused { output, reason } => {
                write!(f, "{}: {reason}; nothing written", output.display())
            }
            OutputError::Io {
                output,
                reason,
                error,
            } => write!(f, "{}: {reason}: {error}", output.display()),
        }
    }
}

impl std::error::Error for OutputError {}

/// A file's identity: device and inode (after following symlinks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity of what `path` names, following symlinks; `None` if it does not exist or
    /// cannot be examined.
    pub fn of(path: &Path) -> Option<FileId> {
        fs::metadata(path).ok().map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// How symlinks at the output name are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow them to the final target and write that (a command's OUT argument).
    Follow,
    /// Replace whatever directory entry is at the name, never following a symlink, and keep
    /// nothing of it (no mode, owner or hard link): files a command names itself inside an
    /// output directory, e.g. `extract`.
    Replace,
}

/// An output being written: write into [`OutputFile::file`], then [`OutputFile::commit`].
/// Dropping it without committing removes the temporary file and leaves the target as it
/// was (a write-through output keeps what was already written).
#[derive(Debug)]
pub struct OutputFile {
    output: PathBuf,
    file: File,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// Write straight into a device or FIFO.
    Through,
    /// Write a temporary file and put it in place of `target` when done.
    Replace {
        target: PathBuf,
        tmp: PathBuf,
        /// The existing target.
        old: Option<Old>,
    },
}

/// What is kept of the file an output replaces.
#[derive(Debug, Clone, Copy)]
struct Old {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
}

/// Length of the random part of a temporary name, in hex digits.
const TMP_RANDOM_DIGITS: usize = 16;
/// Names drawn before giving up (each clash means a file already sits at a random name).
const TMP_ATTEMPTS: u32 = 64;

impl OutputFile {
    /// Prepares to write `output`, refusing if it is one of `inputs` (see the module docs).
    pub fn create(output: &Path, inputs: &[&Path], links: Links) -> Result<Self, OutputError> {
        let io_err = |reason: &str, error: io::Error| OutputError::Io {
            output: output.to_path_buf(),
            reason: reason.to_string(),
            error,
        };
        let refused = |reason: String| OutputError::Refused {
            output: output.to_path_buf(),
            reason,
        };
        let entry = match fs::symlink_metadata(output) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("cannot examine the output", e)),
        };
        let is_link = entry.as_ref().is_some_and(|m| m.file_type().is_symlink());
        // What the name finally refers to.
        let meta = match (&entry, links) {
            (Some(_), Links::Follow) if is_link => match fs::metadata(output) {
                Ok(m) => Some(m),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(refused(
                        "is a symbolic link to a file that does not exist".into(),
                    ));
                }
                Err(e) => return Err(io_err("cannot follow the symbolic link", e)),
            },
            _ => entry.clone(),
        };
        if let Some(m) = &meta {
            let id = FileId {
                dev: m.dev(),
                ino: m.ino(),
            };
            if let Some(input) = inputs.iter().find(|p| FileId::of(p) == Some(id)) {
                return Err(OutputError::IsInput {
                    output: output.to_path_buf(),
                    input: input.to_path_buf(),
                });
            }
            let t = m.file_type();
            if t.is_dir() {
                return Err(refused("is a directory".into()));
            }
            if t.is_socket() {
                return Err(refused(
                    "is a socket (write to a file, FIFO or device)".into(),
                ));
            }
            let node = t.is_char_device() || t.is_block_device() || t.is_fifo();
            if node && links == Links::Follow {
                // Opened by the name as given: the kernel follows the links, including
                // /proc's magic ones to pipes that have no path of their own.
                let file = OpenOptions::new()
                    .write(true)
                    .open(output)
                    .map_err(|e| io_err("cannot open for writing", e))?;
                let now = file
                    .metadata()
                    .map_err(|e| io_err("cannot examine the output", e))?;
                if now.file_type().is_file() {
                    // Swapped for a regular file between the check and the open: writing
                    // into it without truncating would mix old and new bytes.
                    return Err(refused("changed while it was being opened".into()));
                }
                return Ok(OutputFile {
                    output: output.to_path_buf(),
                    file,
                    mode: Mode::Through,
                });
            }
        }
        // A regular file (or a new one): replace it, at the end of the symlink chain.
        let target = if is_link && links == Links::Follow {
            fs::canonicalize(output).map_err(|e| io_err("cannot follow the symbolic link", e))?
        } else {
            output.to_path_buf()
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // A name a command chose itself inside an output directory starts afresh: what was
        // there may have been planted, and its owner, mode or other hard links (a victim's
        // inode) must not carry over.
        let kept = meta.filter(|m| m.file_type().is_file() && links == Links::Follow);
        let old = kept.map(|m| Old {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            nlink: m.nlink(),
        });
        let (tmp, file) = create_temporary(&dir, old.is_some())
            .map_err(|e| io_err("cannot create a temporary file in its folder", e))?;
        Ok(OutputFile {
            output: output.to_path_buf(),
            file,
            mode: Mode::Replace { target, tmp, old },
        })
    }

    /// The file to write into (positioned writes are allowed, except on a write-through
    /// output, which is written in order).
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Whether the bytes go straight into a device or FIFO (no temporary file).
    pub fn is_write_through(&self) -> bool {
        matches!(self.mode, Mode::Through)
    }

    /// Finishes the output: flushes a write-through output; otherwise fsyncs the temporary
    /// file, gives it the old file's owner, group and mode, and puts it in place.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let output = self.output.clone();
        let io_err = |reason: String, error: io::Error| OutputError::Io {
            output: output.clone(),
            reason,
            error,
        };
        let file = &mut self.file;
        let (target, tmp, old) = match &self.mode {
            Mode::Through => {
                return file.flush().map_err(|e| io_err("write failed".into(), e));
            }
            Mode::Replace { target, tmp, old } => (target.clone(), tmp.clone(), *old),
        };
        // From here on, an error drops `self`, which removes the temporary file.
        if let Some(old) = &old {
            keep_owner_and_mode(file, old)
                .map_err(|e| io_err("cannot give the new file the old one's mode".into(), e))?;
        }
        file.sync_all()
            .map_err(|e| io_err("cannot write the data to disk (fsync)".into(), e))?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if old.is_some_and(|m| m.nlink > 1) {
            // Hard links: keep the inode, copy the finished bytes into it.
            let copied = copy_into(file, &target);
            return match copied {
                Ok(()) => {
                    let _ = fs::remove_file(&tmp);
                    self.mode = Mode::Through;
                    Ok(())
                }
                Err(e) => {
                    // The target may be partly overwritten: keep the complete output.
                    self.mode = Mode::Through;
                    Err(io_err(
                        format!(
                            "copying into the hard-linked file failed (it may be partly \
                             overwritten); the complete output is in {}",
                            tmp.display()
                        ),
                        e,
                    ))
                }
            };
        }
        fs::rename(&tmp, &target).map_err(|e| {
            io_err(
                format!("cannot move the temporary file over {}", target.display()),
                e,
            )
        })?;
        // Renamed: nothing left to remove.
        self.mode = Mode::Through;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("cannot write the folder to disk (fsync)".into(), e))
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Mode::Replace { tmp, .. } = &self.mode {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Creates `dir/.vmstate-<random>.tmp` exclusively. An existing file's replacement starts
/// at mode 0600 (its real mode is set after the owner, see `keep_owner_and_mode`); a new file
/// starts at 0666 minus the umask, which is then its mode.
fn create_temporary(dir: &Path, replacing: bool) -> io::Result<(PathBuf, File)> {
    let mut last = io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name");
    for attempt in 0..TMP_ATTEMPTS {
        let name = format!(
            ".vmstate-{:0w$x}.tmp",
            random(attempt),
            w = TMP_RANDOM_DIGITS
        );
        let path = dir.join(name);
        // Readable too: a hard-linked target is filled by copying from it.
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(if replacing { 0o600 } else { 0o666 })
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// 64 unpredictable bits: std's randomly keyed SipHash over the pid, the time and a counter.
fn random(attempt: u32) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(attempt);
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

fn keep_owner_and_mode(file: &File, old: &Old) -> io::Result<()> {
    let mut mode = old.mode & 0o7777;
    let me = file.metadata()?;
    if me.uid() != old.uid || me.gid() != old.gid {
        let eperm = |e: &io::Error| e.raw_os_error() == Some(libc::EPERM);
        match std::os::unix::fs::fchown(file, Some(old.uid), Some(old.gid)) {
            Ok(()) => {}
            Err(e) if eperm(&e) => {
                // Not permitted to give the file away: keep at least the group.
                match std::os::unix::fs::fchown(file, None, Some(old.gid)) {
                    Ok(()) => {}
                    Err(e) if eperm(&e) => mode &= !0o070,
                    Err(e) => return Err(e),
                }
                // set-user-ID of someone else's file must not become ours.
                mode &= !0o6000;
            }
            Err(e) => return Err(e),
        }
    }
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Copies the whole of `from` into the existing file `target` (same inode) and fsyncs it.
fn copy_into(from: &mut File, target: &Path) -> io::Result<()> {
    let mut to = OpenOptions::new().write(true).open(target)?;
    from.seek(SeekFrom::Start(0))?;
    let len = io::copy(from, &mut to)?;
    to.set_len(len)?;
    to.sync_all()
}
/// Rows of text a command prints only once its walk is done (`inspect`'s lines wait for the
/// column widths, `diff`'s page differences for the sections after the pages), kept in an
/// unlinked temporary file ([`crate::input::scratch_file`]) or any other seekable store
/// instead of memory. Each string is written as its length (4 bytes, little-endian) and its
/// bytes.
#[derive(Debug)]
pub struct Spool<S: io::Write> {
    w: io::BufWriter<S>,
    /// The first write error: later rows are dropped and [`Spool::rows`] reports it.
    error: io::Result<()>,
}

impl<S: io::Read + io::Write + io::Seek> Spool<S> {
    /// A spool writing to `store` (empty).
    pub fn new(store: S) -> Self {
        Spool {
            w: io::BufWriter::new(store),
            error: Ok(()),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: &[&str]) {
        if self.error.is_ok() {
            self.error = row.iter().try_for_each(|c| {
                let len = u32::try_from(c.len()).map_err(io::Error::other)?;
                self.w.write_all(&len.to_le_bytes())?;
                self.w.write_all(c.as_bytes())
            });
        }
    }

    /// Reads the rows back in order, each of `cells` strings, handing each to `row`.
    pub fn rows(
        self,
        cells: usize,
        row: &mut dyn FnMut(Vec<String>) -> io::Result<()>,
    ) -> io::Result<()> {
        self.error?;
        let mut store = self
            .w
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        store.rewind()?;
        let mut r = io::BufReader::new(store);
        while !io::BufRead::fill_buf(&mut r)?.is_empty() {
            let mut v = Vec::with_capacity(cells);
            for _ in 0..cells {
                let mut len = [0; 4];
                io::Read::read_exact(&mut r, &mut len)?;
                let mut bytes = vec![0; u32::from_le_bytes(len) as usize];
                io::Read::read_exact(&mut r, &mut bytes)?;
                v.push(String::from_utf8(bytes).map_err(io::Error::other)?);
            }
            row(v)?;
        }
        Ok(())
    }
}

/// Writes into a new, empty regular file and leaves every 4 KiB block (aligned to the file)
/// that is all zeros as a hole: a mapped-ram stream's zero pages and gaps stay sparse through
/// a rewrite, and the bytes read back are the same. A hole at the end is made by
/// [`Write::flush`] setting the length.
#[derive(Debug)]
pub struct SparseFile<'f> {
    file: &'f mut File,
    /// Offset of the next byte.
    pos: u64,
    /// Whether the bytes before `pos` end in a hole not yet covered by the file's length.
    hole_at_end: bool,
}

impl<'f> SparseFile<'f> {
    /// Hole size and alignment (the usual file-system block).
    const BLOCK: u64 = 4096;

    /// A writer at the current position of `file`, a new regular file holding only what was
    /// written to it before (holes read as zeros). Blocks are aligned to the file, not to
    /// that position: a stream after a container's prefix has its holes where the input has.
    pub fn new(file: &'f mut File) -> io::Result<Self> {
        use std::io::Seek;
        Ok(SparseFile {
            pos: file.stream_position()?,
            file,
            hole_at_end: false,
        })
    }
}

impl SparseFile<'_> {
    /// The file written (what is before a trailing hole is in it; [`Write::flush`] sets the
    /// length that covers the hole).
    pub fn file(&self) -> &File {
        self.file
    }
}

impl Write for SparseFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use std::io::{Seek, SeekFrom};
        let mut rest = buf;
        while !rest.is_empty() {
            // Up to the next block boundary.
            let room = Self::BLOCK - self.pos % Self::BLOCK;
            let n = rest.len().min(usize::try_from(room).unwrap_or(usize::MAX));
            let (chunk, after) = rest.split_at(n);
            if n as u64 == Self::BLOCK && vmstate::ram::is_zero(chunk) {
                self.hole_at_end = true;
            } else {
                if self.hole_at_end {
                    self.file.seek(SeekFrom::Start(self.pos))?;
                    self.hole_at_end = false;
                }
                self.file.write_all(chunk)?;
            }
            self.pos += n as u64;
            rest = after;
        }
        Ok(buf.len())
    }

    /// Sets the length over a trailing hole and the file's position to the end of what was
    /// written (where a next writer goes on).
    fn flush(&mut self) -> io::Result<()> {
        if self.hole_at_end {
            use std::io::{Seek, SeekFrom};
            self.file.set_len(self.pos)?;
            self.file.seek(SeekFrom::Start(self.pos))?;
            self.hole_at_end = false;
        }
        self.file.flush()
    }
}
