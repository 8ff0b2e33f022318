//! Runs the first hour on the host: prints the encoded section and the stream as hex, then the
//! v4 stream's length and the migratability verdicts with and without the vendor feature.

use vmstate_first_hour::{
    FIFO_LEN, Uart, destination, migratable, round_trip, stream, stream_migratable, stream_v4,
    v4_header,
};

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

    let header = v4_header().expect("v4 header");
    let mut v4 = [0u8; 256];
    let rest = stream_v4(&mut v4[..], &header, &uart)
        .expect("v4 stream")
        .len();
    let v4 = &v4[..v4.len() - rest];
    println!("v4 stream: {} bytes", v4.len());
    let mut quiet = uart;
    quiet.timeout = u64::MAX.into();
    for with_feature in [false, true] {
        let dest = destination(with_feature).expect("destination");
        let in_use = migratable(&uart, &dest).expect("check");
        let unused = migratable(&quiet, &dest).expect("check");
        let stream = stream_migratable(v4, &dest).expect("check_stream");
        assert_eq!(stream, in_use);
        println!(
            "destination {} com.example's feature: migratable with it in use: {}, without: {}",
            if with_feature { "with" } else { "without" },
            in_use.is_compatible(),
            unused.is_compatible(),
        );
        for why in &in_use.found {
            println!("  refused: {why}");
        }
    }
}
