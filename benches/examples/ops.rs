//! Runs one codec path `N` times, for counting instructions under callgrind (deterministic,
//! unlike wall time on a loaded machine):
//!
//! ```text
//! cargo build --release -p vmstate-benches --example ops
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/ops encode_rtc 1000
//! ```
//!
//! Instructions per call = (count at N2 - count at N1) / (N2 - N1), which cancels the setup.

use std::hint::black_box;

use serde::{Deserialize, Serialize};
use vmstate::State;
use vmstate::stream::{FooterScan, Options, Records, Schemas};
use vmstate_benches::{
    BINCODE, BIOS, BigSerde, DEVICE_TABLES, Device, HpetSerde, PitSerde, RtcSerde, SCRATCH_LEN,
    SerialSerde, big, hpet, i8254, rtc, serial,
};

/// QEMU 10.0, `-M pc-q35-10.0`, two CPUs, e1000, two serial ports, virtio-net and virtio-blk.
const Q35: &[u8] = include_bytes!("../../host-tests/fixtures/q10-pc-q35-10.0.vmstate");

/// One whole-stream walk: `Records` with `Schemas` over the device tables (the footer scan
/// for sections no table describes), every record, as `benches/benches/stream.rs` does;
/// COMMAND records allowed (10.0 machine types send SWITCHOVER_START).
fn walk(stream: &[u8], n: usize) {
    let mut scratch = vec![0u8; SCRATCH_LEN];
    let options = Options {
        allow_commands: true,
        ..Options::default()
    };
    for _ in 0..n {
        let lengths = (Schemas::new(&DEVICE_TABLES, &mut scratch), FooterScan);
        let end = Records::with_options(black_box(stream), lengths, options)
            .map(|r| r.expect("fixture walks").end)
            .sum::<usize>();
        black_box(end);
    }
}

fn run<T, M>(d: Device<T>, what: &str, n: usize)
where
    T: State + Copy,
    M: for<'a> From<&'a T> + Serialize + for<'de> Deserialize<'de>,
{
    let body = d.body();
    let mirror = M::from(&d.state);
    let pc = postcard::to_allocvec(&mirror).expect("encodes");
    let mut buf = vec![0u8; 1 << 16];
    let mut live = d.init;
    let init = Box::new(d.init);
    for _ in 0..n {
        match what {
            "encode" => {
                black_box(vmstate::encode_body_into(black_box(&d.state), &mut buf).expect("ok"));
            }
            "load" => vmstate::load(&mut live, d.version(), black_box(&body), 0).expect("ok"),
            "decode" => {
                let r = vmstate::decode(black_box(&*init), d.version(), black_box(&body), 0);
                black_box(&r);
            }
            "memcpy" => {
                buf[..body.len()].copy_from_slice(black_box(&body));
                black_box(&buf);
            }
            "postcard_encode" => {
                black_box(
                    postcard::to_slice(black_box(&mirror), &mut buf)
                        .expect("ok")
                        .len(),
                );
            }
            "postcard_decode" => {
                black_box(postcard::from_bytes::<M>(black_box(&pc)).expect("ok"));
            }
            "bincode_encode" => {
                black_box(
                    bincode::serde::encode_into_slice(black_box(&mirror), &mut buf, BINCODE)
                        .expect("ok"),
                );
            }
            other => panic!("unknown op {other}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(which), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
        eprintln!(
            "usage: ops OP_DEVICE N   (OP: encode load decode memcpy postcard_encode postcard_decode bincode_encode; DEVICE: rtc i8254 hpet serial big4k) | ops walk_STREAM N (STREAM: q35 bios)"
        );
        std::process::exit(2);
    };
    let (op, dev) = which.rsplit_once('_').expect("OP_DEVICE");
    if op == "walk" {
        return match dev {
            "q35" => walk(Q35, n),
            "bios" => walk(BIOS, n),
            other => panic!("unknown stream {other}"),
        };
    }
    match dev {
        "rtc" => run::<_, RtcSerde>(rtc(), op, n),
        "i8254" => run::<_, PitSerde>(i8254(), op, n),
        "hpet" => run::<_, HpetSerde>(hpet(), op, n),
        "serial" => run::<_, SerialSerde>(serial(), op, n),
        "big4k" => run::<_, BigSerde>(big(), op, n),
        other => panic!("unknown device {other}"),
    }
}
