//! Cortex-M4 firmware that uses the codec where it is meant to live: builds rtc, i8259 (both
//! instances) and i8254 state with `vmstate-devices`, encodes a QEMU v3 stream and a vmstate v4
//! stream into a static buffer, prints each as one line of hex over semihosting and exits with
//! status 0 (1 on an encode error).
//!
//! Run it with `cargo run --release` (QEMU MPS2-AN386, see `.cargo/config.toml`); the host test
//! `host-tests/tests/firmware.rs` does that and decodes the output. No floats: formatting them
//! alone would cost ~11 KiB of `.text`.
#![no_std]
#![no_main]

mod stream;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
#[cfg(feature = "defmt")]
use defmt_semihosting as _;
use panic_semihosting as _;

/// Bytes of the output buffer (each stream is about 600 bytes).
const BUF: usize = 1024;

#[entry]
fn main() -> ! {
    let buf = cortex_m::singleton!(: [u8; BUF] = [0; BUF]).expect("first and only call");
    let states = stream::states();
    let v3 = match stream::encode(&states, buf) {
        Ok(n) => print_hex(&buf[..n]),
        Err(e) => {
            report(&e.into());
            Err(())
        }
    };
    let v4 = match stream::encode_v4(&states, buf) {
        Ok(n) => print_hex(&buf[..n]),
        Err(e) => {
            report(&e);
            Err(())
        }
    };
    debug::exit(if v3.is_ok() && v4.is_ok() {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Writes `bytes` as one line of lowercase hex to the host's stdout.
fn print_hex(bytes: &[u8]) -> Result<(), ()> {
    let mut out = hio::hstdout()?;
    write_hex(&mut out, bytes)?;
    out.write_all(b"\n")
}

fn write_hex(out: &mut hio::HostStream, bytes: &[u8]) -> Result<(), ()> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut line = [0u8; 128];
    for chunk in bytes.chunks(line.len() / 2) {
        for (i, b) in chunk.iter().enumerate() {
            line[2 * i] = DIGITS[(b >> 4) as usize];
            line[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        out.write_all(&line[..2 * chunk.len()])?;
    }
    Ok(())
}

/// Reports an encode error on the host's stderr with its byte offset. No `core::fmt`: the
/// error's `Display` alone would cost about 6 KiB of `.text` (the `defmt` build logs the
/// whole error instead).
#[cfg(not(feature = "defmt"))]
fn report(e: &vmstate::v4::Error) {
    let offset = match e {
        vmstate::v4::Error::Codec(e) => Some(e.offset),
        _ => None,
    };
    if let Ok(mut out) = hio::hstderr() {
        let _ = out.write_all(b"encode failed");
        if let Some(at) = offset {
            let _ = out.write_all(b" at byte 0x");
            let _ = write_hex(&mut out, &(at as u32).to_be_bytes());
        }
        let _ = out.write_all(b"\n");
    }
}

#[cfg(feature = "defmt")]
fn report(e: &vmstate::v4::Error) {
    defmt::error!("encode failed: {}", e);
}
