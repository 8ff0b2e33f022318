//! `IoSink` over an `embedded_io::Write` that counts its `write` calls: unbuffered, every piece
//! the encoder produces is a call; buffered, the writer sees only whole multiples of the buffer
//! and one short tail, with the same bytes as the slice encoder.

use vmstate::embedded_io::{self, ErrorType, Write};
use vmstate::schema::{Subsection, Vmsd};
use vmstate::{IoError, IoSink, SectionId, Sink, assert_layout, field, pred};
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A UART-like device: mixed-width registers, a FIFO array, a timer and one optional
/// subsection.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
struct Uart {
    divider: U16,
    rbr: u8,
    thr: u8,
    ier: u8,
    iir: u8,
    lcr: u8,
    mcr: u8,
    lsr: u8,
    msr: u8,
    scr: u8,
    fcr: u8,
    fifo: [u8; 16],
    fifo_len: U32,
    baud: U16,
    timeout: U64,
    recv_fifo: [u8; 16],
    xmit_fifo: [u8; 16],
    // The subsection's field.
    thr_ipending: U32,
}

const UART_TIMEOUT: Vmsd =
    Vmsd::new("uart/timeout", 1, 1, size_of::<Uart>()).fields(&[field!(Uart, thr_ipending)]);

const UART: Vmsd = Vmsd::new("uart", 3, 2, size_of::<Uart>())
    .fields(&[
        field!(Uart, divider),
        field!(Uart, rbr),
        field!(Uart, thr),
        field!(Uart, ier),
        field!(Uart, iir),
        field!(Uart, lcr),
        field!(Uart, mcr),
        field!(Uart, lsr),
        field!(Uart, msr),
        field!(Uart, scr),
        field!(Uart, fcr).since(3),
        field!(Uart, fifo),
        field!(Uart, fifo_len),
        field!(Uart, baud),
        field!(Uart, timeout).timer(),
        field!(Uart, recv_fifo),
        field!(Uart, xmit_fifo),
    ])
    .subsections(&[Subsection::new(
        &UART_TIMEOUT,
        pred!(Uart, |s| s.thr_ipending.get() != 0),
    )]);
assert_layout!(Uart, UART);

impl vmstate::State for Uart {
    const VMSD: &'static Vmsd = &UART;
}

/// A writer that keeps what it is given and the size of every `write` call.
#[derive(Default)]
struct Counting {
    out: Vec<u8>,
    calls: Vec<usize>,
    /// Fail the call with this index.
    fail_at: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Broken;

impl core::fmt::Display for Broken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("broken pipe")
    }
}

impl core::error::Error for Broken {}

impl embedded_io::Error for Broken {
    fn kind(&self) -> embedded_io::ErrorKind {
        embedded_io::ErrorKind::BrokenPipe
    }
}

impl ErrorType for Counting {
    type Error = Broken;
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Broken> {
        if self.fail_at == Some(self.calls.len()) {
            return Err(Broken);
        }
        self.calls.push(buf.len());
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Broken> {
        Ok(())
    }
}

fn uart() -> Uart {
    let mut u = Uart::new_zeroed();
    u.divider = U16::new(12);
    u.lsr = 0x60;
    u.fifo = *b"hello, world!\r\n\0";
    u.fifo_len = U32::new(15);
    u.baud = U16::new(9600);
    u.timeout = U64::new(0x0123_4567_89ab_cdef);
    u.recv_fifo[0] = 0x41;
    u.thr_ipending = U32::new(1);
    u
}

const ID: SectionId<'static> = SectionId {
    section_id: 5,
    idstr: b"serial",
    instance_id: 0,
};

/// The section as the slice encoder writes it.
fn expected(u: &Uart) -> Vec<u8> {
    let mut buf = [0u8; 512];
    let n = vmstate::encode_section_into(ID, u, &mut buf).unwrap();
    buf[..n].to_vec()
}

/// Each write but the last is a whole multiple of `n` bytes.
fn whole_buffers(calls: &[usize], n: usize) -> bool {
    calls
        .split_last()
        .is_none_or(|(last, rest)| *last > 0 && rest.iter().all(|&c| c > 0 && c % n == 0))
}

#[test]
fn a_buffered_section_is_a_few_writes() {
    let u = uart();
    let want = expected(&u);
    assert_eq!(want.len(), 121);

    let mut plain = IoSink::new(Counting::default());
    vmstate::encode_section(ID, &u, &mut plain).unwrap();
    assert_eq!(plain.position(), want.len());
    let plain = plain.into_inner();
    assert_eq!(plain.out, want);
    // Unbuffered: header pieces, field runs, subsection and footer each a call.
    assert!(plain.calls.len() >= 5, "{:?}", plain.calls);

    let mut sink = IoSink::buffered(Counting::default(), [0u8; 64]);
    vmstate::encode_section(ID, &u, &mut sink).unwrap();
    assert_eq!(sink.position(), want.len());
    let w = sink.finish().unwrap();
    assert_eq!(w.out, want);
    assert_eq!(w.calls.len(), want.len().div_ceil(64), "{:?}", w.calls);
    assert!(whole_buffers(&w.calls, 64), "{:?}", w.calls);
    assert!(w.calls.len() < plain.calls.len());
}

/// Any sequence of pieces through any buffer size gives the same bytes, in whole buffers.
#[test]
fn buffered_writes_are_whole_buffers_of_the_same_bytes() {
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..200 {
        // Pieces of 0..=150 bytes.
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < data.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let k = ((seed % 151) as usize).min(data.len() - at);
            pieces.push(&data[at..at + k]);
            at += k;
        }
        fn run<const N: usize>(pieces: &[&[u8]], flush_at: usize) -> Counting {
            let mut sink = IoSink::buffered(Counting::default(), [0xa5u8; N]);
            for (i, p) in pieces.iter().enumerate() {
                if i == flush_at {
                    sink.flush().unwrap();
                }
                sink.write(p).unwrap();
            }
            sink.finish().unwrap()
        }
        let no_flush = usize::MAX;
        for w in [
            run::<1>(&pieces, no_flush),
            run::<8>(&pieces, no_flush),
            run::<64>(&pieces, no_flush),
            run::<1024>(&pieces, no_flush),
        ] {
            assert_eq!(w.out, data, "round {round}");
        }
        assert!(whole_buffers(&run::<8>(&pieces, no_flush).calls, 8));
        assert!(whole_buffers(&run::<64>(&pieces, no_flush).calls, 64));
        assert!(run::<64>(&pieces, no_flush).calls.len() <= 1000usize.div_ceil(64));
        assert_eq!(run::<1024>(&pieces, no_flush).calls, [1000]);
        // An explicit flush writes the pending bytes at once; the rest is unchanged.
        let mid = pieces.len() / 2;
        let w = run::<64>(&pieces, mid);
        assert_eq!(w.out, data, "round {round}");
        let before: usize = pieces[..mid].iter().map(|p| p.len()).sum();
        let mut sum = 0;
        assert!(
            w.calls.iter().any(|&c| {
                sum += c;
                sum == before
            }) || before == 0,
            "{round}: {:?} {before}",
            w.calls
        );
    }
}

/// A failing writer's error comes back as `IoError::Io` from the write that reaches it.
#[test]
fn a_failing_writer_is_an_io_error() {
    let u = uart();
    // The first full buffer is written while encoding, the 57-byte tail by `finish`.
    let broken = Counting {
        fail_at: Some(0),
        ..Counting::default()
    };
    let mut sink = IoSink::buffered(broken, [0u8; 64]);
    assert_eq!(
        vmstate::encode_section(ID, &u, &mut sink),
        Err(IoError::Io(Broken))
    );
    let broken = Counting {
        fail_at: Some(1),
        ..Counting::default()
    };
    let mut sink = IoSink::buffered(broken, [0u8; 64]);
    vmstate::encode_section(ID, &u, &mut sink).unwrap();
    assert_eq!(sink.finish().err(), Some(IoError::Io(Broken)));
}
