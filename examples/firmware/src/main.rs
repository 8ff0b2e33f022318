//! Cortex-M4 firmware that uses the codec where it is meant to live: builds rtc, i8259 (both
//! instances) and i8254 state with `vmstate-devices`, encodes a QEMU v3 stream into a static
//! buffer, prints it as hex over semihosting and exits with status 0 (1 on an encode error).
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

/// Bytes of the output buffer (the stream is about 400 bytes).
const BUF: usize = 1024;

#[entry]
fn main() -> ! {
    let buf = cortex_m::singleton!(: [u8; BUF] = [0; BUF]).expect("first and only call");
    let status = match stream::encode(&stream::states(), buf) {
        Ok(n) => match print_hex(&buf[..n]) {
            Ok(()) => debug::EXIT_SUCCESS,
            Err(()) => debug::EXIT_FAILURE,
        },
        Err(e) => {
            report(&e);
            debug::EXIT_FAILURE
        }
    };
    debug::exit(status);
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Writes `bytes` as one line of lowercase hex to the host's stdout.
fn print_hex(bytes: &[u8]) -> Result<(), ()> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = hio::hstdout()?;
    let mut line = [0u8; 128];
    for chunk in bytes.chunks(line.len() / 2) {
        for (i, b) in chunk.iter().enumerate() {
            line[2 * i] = DIGITS[(b >> 4) as usize];
            line[2 * i + 1] = DIGITS[(b & 15) as usize];
        }
        out.write_all(&line[..2 * chunk.len()])?;
    }
    out.write_all(b"\n")
}

#[cfg(not(feature = "defmt"))]
fn report(e: &vmstate::Error) {
    cortex_m_semihosting::hprintln!("encode failed: {}", e);
}

#[cfg(feature = "defmt")]
fn report(e: &vmstate::Error) {
    defmt::error!("encode failed: {}", e);
}
