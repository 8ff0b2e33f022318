//! The live part without copying it through the proxy (Linux): the source connection is
//! *peeked* (`recv(MSG_PEEK)` with `SO_PEEK_OFF`, so each peek returns the bytes after those
//! peeked before) into the decoder, and once checked the bytes are moved from the source
//! socket to the destination socket by the kernel (`splice` through a pipe), never copied
//! into the proxy and out again. Of the two copies a forwarder makes of every byte (in with
//! `read`, out with `write`), one is left: the peek, which the checking needs.
//!
//! Peeked bytes stay in the source socket's receive buffer until they are passed or taken
//! out, and the proxy never waits for more input while any are left there
//! ([`super::read_live`]): the source can always send. Linux does not move the peek offset
//! back when `splice` consumes peeked bytes (6.18: `SO_PEEK_OFF` is kept by `recvmsg` only),
//! so [`Splice::pass`] sets it after every move.
//!
//! Not the default (`vmstate proxy --splice`): on the development machine (2026-12-07, Linux
//! 6.18, QEMU 7.2 over loopback) migrations through the spliced proxy took longer than through
//! the copying one (1.44x direct against 1.07x, 25 rounds), the proxy's CPU time was higher
//! (214 against 147 ms per 512 MiB), and the destination QEMU's too: the spliced buffers reach
//! it as many small page fragments. Reading once and writing once from the decoder's buffer
//! is cheaper (benches/README.md, "Third round").

use super::Tap;
use rustix::pipe::{PipeFlags, SpliceFlags, fcntl_setpipe_size, pipe_with, splice};
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The pipe between the sockets: the most one `splice` moves.
const PIPE: usize = 1 << 20;

/// A source connection peeked and spliced on to the destination (module docs).
#[derive(Debug)]
pub struct Splice {
    src: TcpStream,
    dest: TcpStream,
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    /// The pipe's capacity.
    pipe_len: usize,
    /// Bytes peeked and not yet passed (where the next peek starts).
    peeked: usize,
    /// Bytes passed on.
    passed: usize,
}

impl Splice {
    /// Peeking `src` and splicing to `dest`, when this system can (`SO_PEEK_OFF` on TCP:
    /// Linux ≥ 6.9); `None` otherwise (the proxy then copies). The sockets are the proxy's
    /// own, cloned.
    pub fn new(src: &TcpStream, dest: &TcpStream) -> Option<Splice> {
        set_peek_offset(src, 0).ok()?;
        let (pipe_read, pipe_write) = pipe_with(PipeFlags::CLOEXEC).ok()?;
        // The default pipe is 64 KiB; a larger one moves more per call (if allowed).
        let pipe_len = fcntl_setpipe_size(&pipe_write, PIPE).unwrap_or(64 << 10);
        Some(Splice {
            src: src.try_clone().ok()?,
            dest: dest.try_clone().ok()?,
            pipe_read,
            pipe_write,
            pipe_len,
            peeked: 0,
            passed: 0,
        })
    }
}

impl Tap for Splice {
    fn peek(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.peek(buf)?;
        self.peeked += n;
        Ok(n)
    }

    fn pass(&mut self, len: usize) -> io::Result<()> {
        if len > self.peeked {
            return Err(io::Error::other(format!(
                "passing {len} bytes of {} peeked",
                self.peeked
            )));
        }
        let mut left = len;
        while left > 0 {
            let n = move_some(&self.src, &self.pipe_write, left.min(self.pipe_len))?;
            if n == 0 {
                // Peeked bytes are in the socket: they cannot be missing.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the source's peeked bytes are gone",
                ));
            }
            let mut in_pipe = n;
            while in_pipe > 0 {
                let m = move_some(&self.pipe_read, &self.dest, in_pipe)?;
                if m == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                in_pipe -= m;
            }
            left -= n;
        }
        self.peeked -= len;
        self.passed += len;
        set_peek_offset(&self.src, self.peeked)
    }

    fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > self.peeked {
            return Err(io::Error::other(format!(
                "taking {} bytes of {} peeked",
                buf.len(),
                self.peeked
            )));
        }
        self.src.read_exact(buf)?;
        self.peeked -= buf.len();
        set_peek_offset(&self.src, self.peeked)
    }

    fn stop(&mut self) -> io::Result<()> {
        self.peeked = 0;
        // -1: peeking (never done again) starts at the head; plain reads ignore it.
        set_peek_offset_raw(&self.src, -1)
    }

    fn passed(&self) -> usize {
        self.passed
    }
}

/// One `splice` of at most `len` bytes from `from` to `to` (one of them the pipe), again
/// while a signal interrupts it: the bytes moved.
fn move_some(from: impl AsFd, to: impl AsFd, len: usize) -> io::Result<usize> {
    loop {
        match splice(&from, None, &to, None, len, SpliceFlags::MOVE) {
            Err(rustix::io::Errno::INTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Sets where the next peek of `socket` starts, in bytes after the first unread one.
fn set_peek_offset(socket: &TcpStream, offset: usize) -> io::Result<()> {
    let offset = i32::try_from(offset).map_err(io::Error::other)?;
    set_peek_offset_raw(socket, offset)
}

#[allow(unsafe_code)]
fn set_peek_offset_raw(socket: &TcpStream, offset: i32) -> io::Result<()> {
    // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from a pointer to a live `c_int`
    // on the stack, on a descriptor `socket` keeps open for the call.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&raw const offset).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
