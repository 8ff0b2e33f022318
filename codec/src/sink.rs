//! Output sinks: a caller slice, an `embedded_io::Write`, or a byte counter.
//!
//! The encoder is written once against [`Sink`]; each sink decides what a write failure is.

// Tests index freely: a panic there is a failed test.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

use crate::error::{Error, ErrorKind};

/// Where encoded bytes go.
///
/// A slice ([`SliceSink`]), a counter ([`CountingSink`]), an `embedded_io::Write`
/// ([`IoSink`]), or your own:
///
/// ```
/// use vmstate::{Error, Sink};
/// /// Sums the bytes written, e.g. for a checksum.
/// struct Sum { total: u32, n: usize }
/// impl Sink for Sum {
///     type Error = Error;
///     fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
///         self.total += bytes.iter().map(|&b| u32::from(b)).sum::<u32>();
///         self.n += bytes.len();
///         Ok(())
///     }
///     fn position(&self) -> usize { self.n }
/// }
/// let mut sum = Sum { total: 0, n: 0 };
/// sum.write(&[1, 2, 3])?;
/// sum.write_zeros(2)?;
/// assert_eq!((sum.total, sum.position()), (6, 5));
/// # Ok::<(), Error>(())
/// ```
pub trait Sink {
    /// The sink's error; codec errors (bad state, oversized names) convert into it.
    type Error: From<Error>;

    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Bytes written so far (for error offsets and length fields).
    fn position(&self) -> usize;

    /// Appends `n` zero bytes.
    fn write_zeros(&mut self, mut n: usize) -> Result<(), Self::Error> {
        const ZEROS: [u8; 64] = [0; 64];
        while n > 0 {
            let k = n.min(ZEROS.len());
            self.write(ZEROS.get(..k).unwrap_or_default())?;
            n = n.saturating_sub(k);
        }
        Ok(())
    }

    /// Appends `bytes` with the ranges `zeros` (`(offset, len)` into `bytes`, ascending, not
    /// overlapping) written as zeros instead: a body compiled into a [`crate::schema::Plan`].
    /// The default writes the pieces in turn; [`SliceSink`] copies once and clears the ranges.
    fn write_with_zeros(&mut self, bytes: &[u8], zeros: &[(u32, u32)]) -> Result<(), Self::Error> {
        write_pieces(self, bytes, zeros)
    }

    /// Runs `f` on this sink lent as another value, whose position this sink then takes. A
    /// runner inlined over a local sink lends it to the calls it makes ([`SliceSink`] moves its
    /// slice into the lent value), so the local one stays in registers on the inlined path.
    #[inline(always)]
    fn lend<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R
    where
        Self: Sized,
    {
        f(self)
    }
}

/// A borrowed sink is a sink: a writer can own `&mut S` and leave `S` with the caller.
impl<S: Sink + ?Sized> Sink for &mut S {
    type Error = S::Error;

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), S::Error> {
        (**self).write(bytes)
    }

    fn position(&self) -> usize {
        (**self).position()
    }

    fn write_zeros(&mut self, n: usize) -> Result<(), S::Error> {
        (**self).write_zeros(n)
    }

    #[inline]
    fn write_with_zeros(&mut self, bytes: &[u8], zeros: &[(u32, u32)]) -> Result<(), S::Error> {
        (**self).write_with_zeros(bytes, zeros)
    }
}

/// [`Sink::write_with_zeros`] as copy, zeros, copy, …
pub(crate) fn write_pieces<S: Sink + ?Sized>(
    out: &mut S,
    bytes: &[u8],
    zeros: &[(u32, u32)],
) -> Result<(), S::Error> {
    let mut at = 0usize;
    for &(o, l) in zeros {
        let (o, l) = (o as usize, l as usize);
        if let Some(b) = bytes.get(at..o) {
            out.write(b)?;
        }
        out.write_zeros(l)?;
        at = o.saturating_add(l);
    }
    out.write(bytes.get(at..).unwrap_or(&[]))
}

/// Writes into a caller-provided slice; a full slice is [`ErrorKind::BufferTooSmall`].
///
/// ```
/// use vmstate::{ErrorKind, Sink, SliceSink};
/// let mut buf = [0u8; 4];
/// let mut out = SliceSink::new(&mut buf);
/// out.write(b"abc")?;
/// assert_eq!(out.written(), b"abc");
/// let e = out.write(b"de").unwrap_err(); // one byte of room left
/// assert!(matches!(e.kind, ErrorKind::BufferTooSmall { .. }));
/// assert_eq!(out.finish(), 3); // a failed write leaves what was written
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceSink<'a> {
    /// A sink writing from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        SliceSink { buf, pos: 0 }
    }

    /// The bytes written.
    pub fn written(&self) -> &[u8] {
        self.buf.get(..self.pos).unwrap_or_default()
    }

    /// Consumes the sink, returning the number of bytes written.
    pub fn finish(self) -> usize {
        self.pos
    }
}

impl Sink for SliceSink<'_> {
    type Error = Error;

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        // Exact: `pos` <= the slice's length and `bytes` is another slice, each at most
        // `isize::MAX` bytes, so the sum cannot wrap (and costs the hot path no saturation).
        let end = self.pos.wrapping_add(bytes.len());
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                crate::copy::copy(dst, bytes);
                self.pos = end;
                Ok(())
            }
            None => Err(Error::new(
                self.pos,
                ErrorKind::BufferTooSmall {
                    needed: end,
                    capacity: self.buf.len(),
                },
            )),
        }
    }

    #[inline]
    fn position(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    fn lend<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut lent = SliceSink {
            buf: core::mem::take(&mut self.buf),
            pos: self.pos,
        };
        let out = f(&mut lent);
        *self = lent;
        out
    }

    #[inline(always)]
    fn write_with_zeros(&mut self, bytes: &[u8], zeros: &[(u32, u32)]) -> Result<(), Error> {
        // Exact: `pos` <= the slice's length and `bytes` is another slice, each at most
        // `isize::MAX` bytes, so the sum cannot wrap (and costs the hot path no saturation).
        let end = self.pos.wrapping_add(bytes.len());
        let Some(dst) = self.buf.get_mut(self.pos..end) else {
            // Too small: piece by piece, failing where the pieces would.
            return self.lend(|s| write_pieces(s, bytes, zeros));
        };
        crate::copy::copy_with_zeros(dst, bytes, zeros);
        self.pos = end;
        Ok(())
    }

    fn write_zeros(&mut self, n: usize) -> Result<(), Error> {
        let end = self.pos.saturating_add(n);
        match self.buf.get_mut(self.pos..end) {
            Some(dst) => {
                dst.fill(0);
                self.pos = end;
                Ok(())
            }
            None => Err(Error::new(
                self.pos,
                ErrorKind::BufferTooSmall {
                    needed: end,
                    capacity: self.buf.len(),
                },
            )),
        }
    }
}

/// Counts bytes without storing them (sizes for length prefixes and JSON `size` keys).
///
/// ```
/// use vmstate::{CountingSink, Sink};
/// let mut count = CountingSink::new();
/// count.write(b"QEVM")?;
/// count.write_zeros(4)?;
/// assert_eq!(count.count(), 8);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingSink {
    n: usize,
}

impl CountingSink {
    /// A counter at zero.
    pub const fn new() -> Self {
        CountingSink { n: 0 }
    }

    /// Bytes counted.
    pub const fn count(&self) -> usize {
        self.n
    }
}

impl Sink for CountingSink {
    type Error = Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        // Wraps only past `usize::MAX` bytes counted, which no output of this codec reaches; a
        // plain add keeps the counting pass as small as the writing one.
        self.n = self.n.wrapping_add(bytes.len());
        Ok(())
    }

    fn position(&self) -> usize {
        self.n
    }

    fn write_zeros(&mut self, n: usize) -> Result<(), Error> {
        self.n = self.n.saturating_add(n);
        Ok(())
    }
}

/// An error from an [`IoSink`]: the transport's, or the codec's.
///
/// ```
/// use vmstate::{IoError, IoSink, Sink};
/// let mut buf = [0u8; 2]; // `&mut [u8]` is an `embedded_io::Write`; full, it fails
/// let mut out = IoSink::new(&mut buf[..]);
/// assert!(matches!(out.write(b"abc"), Err(IoError::Io(_))));
/// // Codec errors (bad state, oversized names) convert into it.
/// let codec = vmstate::Error::new(0, vmstate::ErrorKind::Truncated { needed: 1, available: 0 });
/// let e: IoError<()> = codec.into();
/// assert!(matches!(e, IoError::Codec(_)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum IoError<E> {
    /// The writer failed.
    Io(E),
    /// The codec refused (e.g. invalid state).
    Codec(Error),
}

impl<E> From<Error> for IoError<E> {
    fn from(e: Error) -> Self {
        IoError::Codec(e)
    }
}

impl<E: core::fmt::Debug> core::fmt::Display for IoError<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IoError::Io(e) => write!(f, "I/O error: {e:?}"),
            IoError::Codec(e) => write!(f, "{e}"),
        }
    }
}

impl<E: core::fmt::Debug> core::error::Error for IoError<E> {}

/// Writes to any `embedded_io::Write` ([`embedded_io`] 0.7, re-exported as
/// [`crate::embedded_io`]), directly or through an inline buffer of `N` bytes.
///
/// The encoder writes a section in many small pieces (header, each field run, footer): over a
/// UART or a socket every piece is a `write` call. [`IoSink::buffered`] gathers them in an
/// `N`-byte buffer kept in the sink, so the writer sees only writes of whole multiples of `N`
/// bytes and one last short one from [`IoSink::finish`] (or [`IoSink::flush`]): a 121-byte
/// section through a 64-byte buffer is 2 writes instead of one per piece (9 for the UART of
/// `codec/tests/io_sink.rs`). `N = 0` (the default, [`IoSink::new`]) writes
/// every piece through at once.
///
/// Size: the writer, a `usize` and `N` bytes.
///
/// ```
/// use vmstate::embedded_io::{ErrorType, Write};
/// use vmstate::{IoSink, Sink};
///
/// /// A writer that counts its `write` calls.
/// struct Uart { calls: usize, out: [u8; 256], len: usize }
/// impl ErrorType for Uart { type Error = core::convert::Infallible; }
/// impl Write for Uart {
///     fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
///         self.calls += 1;
///         self.out[self.len..self.len + buf.len()].copy_from_slice(buf);
///         self.len += buf.len();
///         Ok(buf.len())
///     }
///     fn flush(&mut self) -> Result<(), Self::Error> { Ok(()) }
/// }
///
/// let mut sink = IoSink::buffered(Uart { calls: 0, out: [0; 256], len: 0 }, [0u8; 64]);
/// for piece in [&b"QEVM"[..], &[0, 0, 0, 3], &[0x42; 113]] {
///     sink.write(piece)?;
/// }
/// assert_eq!(sink.position(), 121);
/// let uart = sink.finish()?;
/// assert_eq!((uart.calls, uart.len), (2, 121));
/// # Ok::<(), vmstate::IoError<core::convert::Infallible>>(())
/// ```
///
/// Bytes still buffered when the sink is dropped are lost: end with [`IoSink::finish`].
#[derive(Debug)]
pub struct IoSink<W, const N: usize = 0> {
    w: W,
    /// Bytes accepted so far (written through or buffered).
    n: usize,
    /// The buffer; its first `used` bytes are pending.
    buf: [u8; N],
    /// Bytes pending in `buf`.
    used: usize,
}

impl<W: embedded_io::Write> IoSink<W> {
    /// Wraps a writer; every piece the encoder writes goes through at once.
    pub const fn new(w: W) -> Self {
        IoSink {
            w,
            n: 0,
            buf: [],
            used: 0,
        }
    }

    /// Returns the writer (nothing is buffered without a buffer).
    pub fn into_inner(self) -> W {
        self.w
    }
}

impl<W: embedded_io::Write, const N: usize> IoSink<W, N> {
    /// Wraps a writer with the `N`-byte buffer `buf` (its contents do not matter): pieces are
    /// gathered there and written `N` bytes at a time.
    pub const fn buffered(w: W, buf: [u8; N]) -> Self {
        IoSink {
            w,
            n: 0,
            buf,
            used: 0,
        }
    }

    /// Writes out the buffered bytes, then flushes the writer.
    pub fn flush(&mut self) -> Result<(), IoError<W::Error>> {
        self.drain()?;
        self.w.flush().map_err(IoError::Io)
    }

    /// Writes out the buffered bytes, flushes the writer and returns it.
    pub fn finish(mut self) -> Result<W, IoError<W::Error>> {
        self.flush()?;
        Ok(self.w)
    }

    /// Writes the pending bytes of the buffer to the writer.
    fn drain(&mut self) -> Result<(), IoError<W::Error>> {
        let pending = self.buf.get(..self.used).unwrap_or_default();
        self.used = 0;
        self.w.write_all(pending).map_err(IoError::Io)
    }
}

impl<W: embedded_io::Write, const N: usize> Sink for IoSink<W, N> {
    type Error = IoError<W::Error>;

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), Self::Error> {
        if N == 0 {
            self.w.write_all(bytes).map_err(IoError::Io)?;
            self.n = self.n.saturating_add(bytes.len());
            return Ok(());
        }
        self.n = self.n.saturating_add(bytes.len());
        // Fill the buffer; each time it is full, write it whole. Once it is empty, a run of
        // whole buffers goes straight from `bytes` (the same writes, without the copy).
        loop {
            if self.used == 0 {
                let whole = bytes
                    .len()
                    .saturating_sub(bytes.len().checked_rem(N).unwrap_or(0));
                if let Some((whole, rest)) = bytes.split_at_checked(whole)
                    && !whole.is_empty()
                {
                    self.w.write_all(whole).map_err(IoError::Io)?;
                    bytes = rest;
                }
            }
            let free = self.buf.get_mut(self.used..).unwrap_or_default();
            let k = free.len().min(bytes.len());
            if let (Some(to), Some((now, rest))) = (free.get_mut(..k), bytes.split_at_checked(k)) {
                to.copy_from_slice(now);
                bytes = rest;
                self.used = self.used.saturating_add(k);
            }
            if self.used < N {
                return Ok(());
            }
            self.drain()?;
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    fn position(&self) -> usize {
        self.n
    }
}
