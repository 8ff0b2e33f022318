//! Runs the first hour on the host: prints the encoded section and the stream as hex.

use vmstate_first_hour::{FIFO_LEN, Uart, round_trip, stream};

fn main() {
    let mut uart = Uart::RESET;
    uart.rx_fifo[..3].copy_from_slice(b"abc");
    uart.rx_count = 3;
    uart.timeout = 1_000_000.into();
    let mut back = Uart::RESET;
    let n = round_trip(&uart, &mut back).expect("round trip");
    assert_eq!(back, uart);
    println!("section: {n} bytes, loaded back equal (FIFO of {FIFO_LEN})");
    let mut buf = [0u8; 256];
    let rest = stream(&mut buf[..], &uart).expect("stream").len();
    let used = buf.len() - rest;
    let hex: String = buf[..used].iter().map(|b| format!("{b:02x}")).collect();
    println!("stream: {used} bytes: {hex}");
}
