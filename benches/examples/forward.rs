//! A plain TCP forwarder for `benches/proxy_migrate.py`: accepts one connection on `--listen`,
//! connects to `--to`, and copies bytes both ways (1 MiB reads, written whole) until each side
//! ends; nothing is looked at. It is what a hop that copies costs at least, the yardstick for
//! `vmstate proxy`, which does the same reads and writes and checks every record in between.
//!
//! ```text
//! cargo build --release -p vmstate-benches --example forward
//! target/release/examples/forward --listen 127.0.0.1:0 --to 127.0.0.1:4445
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing side.
fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| {
                eprintln!("usage: forward --listen HOST:PORT --to HOST:PORT");
                std::process::exit(2)
            })
    };
    let (listen, to) = (value("--listen"), value("--to"));
    let listener = TcpListener::bind(&listen).unwrap_or_else(|e| {
        eprintln!("forward: --listen {listen}: {e}");
        std::process::exit(1)
    });
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    eprintln!("forward: listening on {local}, destination {to}");
    let Ok((src, _)) = listener.accept() else {
        std::process::exit(1)
    };
    let Ok(dest) = TcpStream::connect(&to) else {
        eprintln!("forward: --to {to}: cannot connect");
        std::process::exit(1)
    };
    let _ = dest.set_nodelay(true);
    let (Ok(src2), Ok(dest2)) = (src.try_clone(), dest.try_clone()) else {
        std::process::exit(1)
    };
    let back = std::thread::spawn(move || copy(dest2, src2));
    copy(src, dest);
    let _ = back.join();
}
