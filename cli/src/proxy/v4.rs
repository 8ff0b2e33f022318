//! The v4 pair: `vmstate proxy --send-v4` next to the source and `vmstate proxy --receive-v4`
//! next to the destination carry a live migration as vmstate v4 between them (length-prefixed
//! records, a CRC-32C on every record: docs/FORMAT.md), and the destination receives exactly
//! the v3 bytes the source sent.
//!
//! ```text
//! source QEMU ──v3──▶ proxy --send-v4 ──v4──▶ proxy --receive-v4 ──v3──▶ destination QEMU
//!             ◀──────────────── return path (bytes as they are) ◀────────────────
//! ```
//!
//! * **At connection time** the receiving side sends the destination's **hello**
//!   (docs/FORMAT.md §14): its v4 capabilities (§11: devices, versions, minors, subsections),
//!   its machine type and QEMU build (and the `--hpet-timers` / `--serial-ports` options
//!   shared with `verify`), and its RAM block list when known. They come from the destination
//!   options of `verify` and `caps`: `--dump` (the build's `-dump-vmstate`), `--stream` (a
//!   stream it wrote), `--machine`, `--qemu`.
//! * **The sending side** is the validating proxy of [`super`] checking against that
//!   destination: the machine type is refused at once (the stream's CONFIGURATION record, before
//!   any RAM), the RAM block list as soon as it arrives (a block the destination lacks, or a
//!   length it cannot take), each RAM record is checked and passed on as it comes
//!   ([`super::read_live`] with a [`Forward`] that writes v4: [`SendV4`]), and the held final
//!   phase is checked by `verify`'s code, converted to v4 with the stream's own trailer
//!   (`convert::upgrade_from`) and checked against the capabilities (`caps::check_stream`: an
//!   instance whose version, subsection or vendor minor the destination lacks is named) before
//!   any of it is sent.
//! * **The receiving side** reads one v4 record at a time (at most `--hold-limit` bytes each),
//!   verifies its frame and CRC-32C with the codec's reader ([`Records4`]) and writes its v3
//!   form ([`Downgrader`], the conversion `downgrade` uses) to the destination at once. A
//!   corrupt record, or a stream that ends before its EOF record, closes the destination
//!   connection (its load fails) and exits 1.
//!
//! RAM is never held: the live part of a v3 section becomes a v4 section head followed by DATA
//! records (§13) of the bytes passed, each at most [`DATA_CHUNK`] plus one RAM record.

use super::{Forward, Live, Outcome, ProxyOptions, Stop, connect, pipe, read_live};
use crate::dest::{self, CapsArgs, host_caps};
use crate::exit::Failure;
use crate::v4tools::{HostCaps, WRITE_BUFFER, WriteSink, upgrade_v3_from};
use crate::verify::{DestSpec, Problem};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use vmstate::Sink;
use vmstate::io::{Decoder, Event, Status};
use vmstate::ram::RamRecord;
use vmstate::stream::{FooterScan, Options, Record, probe_section_footers};
use vmstate::v4::caps::Report as CapsReport;
use vmstate::v4::convert::{Downgrader, UpgradeOptions, live_head, upgrade_record};
use vmstate::v4::wire::{Header, Record4, Records4, emit_data, record4};
use vmstate::wire::section::SectionHeaderRepr;
use vmstate::wire::{Reader, record};
use vmstate_devices::machine::QemuBuild;

/// The first word of the destination hello (docs/FORMAT.md §14).
pub const HELLO_MAGIC: [u8; 4] = *b"QEVD";
/// The hello's version: a reader refuses any other.
pub const HELLO_VERSION: u32 = 1;
/// The most bytes a hello's postcard body may have.
pub const HELLO_MAX: usize = 16 << 20;
/// How long the sending side waits for the hello.
pub const HELLO_WAIT: Duration = Duration::from_secs(10);
/// RAM data is sent in DATA records of this many bytes (plus at most one RAM record).
pub const DATA_CHUNK: usize = 256 << 10;

/// One RAM block of the destination (docs/FORMAT.md §14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RamBlock<'a> {
    /// The block's idstr (`pc.ram`).
    pub name: &'a str,
    /// Its used length in bytes.
    pub length: u64,
}

/// What the receiving side tells the sending side at connection time (docs/FORMAT.md §14),
/// encoded with postcard after the magic, version and length: the capabilities of §11
/// first, then the fields that name the destination's machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// Devices, versions, minors and subsections the destination loads (§11).
    #[serde(borrow)]
    pub caps: Box<HostCaps<'a>>,
    /// Its machine type (`pc-i440fx-7.2`).
    pub machine: Option<&'a str>,
    /// Its QEMU build (`7.2`, `10.0`).
    pub qemu: Option<&'a str>,
    /// Its HPET `timers` property (`--hpet-timers`), if not the machine type's.
    pub hpet_timers: Option<u8>,
    /// Its ISA serial ports (`--serial-ports`), if stated.
    pub serial_ports: Option<u8>,
    /// Its RAM blocks, when known (from a stream it wrote); `None`: not checked.
    #[serde(borrow)]
    pub ram: Option<Vec<RamBlock<'a>>>,
}

impl Hello<'_> {
    /// The hello on the wire: magic, version, length, postcard body.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let body = postcard::to_allocvec(self).map_err(|e| format!("hello: {e}"))?;
        let mut out = Vec::with_capacity(12 + body.len());
        out.extend_from_slice(&HELLO_MAGIC);
        out.extend_from_slice(&HELLO_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Reads the postcard body of a hello (after its 12-byte head).
    pub fn from_body(body: &[u8]) -> Result<Hello<'_>, String> {
        let (hello, rest) = postcard::take_from_bytes::<Hello<'_>>(body)
            .map_err(|e| format!("destination hello: the body does not decode ({e})"))?;
        if !rest.is_empty() {
            let at = 12 + body.len() - rest.len();
            return Err(format!(
                "destination hello: at byte {at} (0x{at:x}): {} bytes after the body",
                rest.len()
            ));
        }
        Ok(hello)
    }

    /// The destination as `verify` checks against it.
    fn spec(&self) -> Result<DestSpec, String> {
        let qemu = match self.qemu {
            Some(q) => Some(QemuBuild::parse(q).ok_or_else(|| {
                format!("destination hello: QEMU build {q:?} is not modelled (7.2, 10.0)")
            })?),
            None => None,
        };
        Ok(DestSpec {
            machine: self.machine.map(str::to_owned),
            qemu,
            hpet_timers: self.hpet_timers,
            serial_ports: self.serial_ports,
        })
    }
}

/// Reads the destination hello from the receiving side.
fn read_hello(conn: &mut impl Read) -> Result<Vec<u8>, String> {
    let failed = |at: usize, e: io::Error| {
        let e = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("none within {} s", HELLO_WAIT.as_secs())
            }
            _ => e.to_string(),
        };
        format!("destination hello: at byte {at}: {e} (is --to a `vmstate proxy --receive-v4`?)")
    };
    let mut head = [0u8; 12];
    conn.read_exact(&mut head[..4]).map_err(|e| failed(0, e))?;
    if head[..4] != HELLO_MAGIC {
        return Err(format!(
            "destination hello: at byte 0: {:02x?} is not the hello magic \"QEVD\" (is --to a \
             `vmstate proxy --receive-v4`?)",
            &head[..4]
        ));
    }
    conn.read_exact(&mut head[4..]).map_err(|e| failed(4, e))?;
    let version = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    if version != HELLO_VERSION {
        return Err(format!(
            "destination hello: at byte 4: version {version}, this proxy reads version \
             {HELLO_VERSION}"
        ));
    }
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
    if len > HELLO_MAX {
        return Err(format!(
            "destination hello: at byte 8: a body of {len} bytes, at most {HELLO_MAX}"
        ));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)
        .map_err(|e| format!("destination hello: at byte 12: {e}"))?;
    Ok(body)
}

/// What the receiving side knows of the destination: the options of `verify` and `caps`.
#[derive(Debug, Clone, Default)]
pub struct DestFiles {
    /// `--dump FILE`: the destination build's `-dump-vmstate`.
    pub dump: Option<PathBuf>,
    /// `--stream FILE`: streams the destination build wrote.
    pub streams: Vec<PathBuf>,
}

/// The RAM block list of a v3 stream (its first MEM_SIZE record), `None` if it has none.
fn ram_blocks(stream: &[u8]) -> Result<Option<Vec<(String, u64)>>, String> {
    let options = Options {
        section_footers: probe_section_footers(stream),
        ..Options::for_stream(stream)
    };
    let mut buf = vec![0u8; super::WINDOW];
    let mut d = Decoder::with_options(&mut buf, FooterScan, options);
    let mut fed = 0;
    loop {
        if fed < stream.len() {
            let space = d.space();
            let n = space.len().min(stream.len() - fed);
            space[..n].copy_from_slice(&stream[fed..fed + n]);
            d.fill(n);
            fed += n;
        } else {
            d.finish();
        }
        match d.poll().map_err(|e| e.to_string())? {
            Status::Done => return Ok(None),
            Status::Partial => {}
            Status::Ready => {
                if let Some(Event::Ram {
                    record: RamRecord::MemSize(list),
                    ..
                }) = d.event()
                {
                    return Ok(Some(
                        list.iter()
                            .map(|b| (String::from_utf8_lossy(b.name).into_owned(), b.length))
                            .collect(),
                    ));
                }
            }
        }
    }
}

/// The receiving side's destination: its hello, built from the destination options.
pub fn destination_hello(spec: &DestSpec, files: &DestFiles) -> Result<Vec<u8>, Failure> {
    if files.dump.is_none() && files.streams.is_empty() {
        return Err(Failure::Usage(
            "--receive-v4 needs the destination's capabilities: --dump FILE (its \
             -dump-vmstate) and/or --stream FILE (a stream it wrote)"
                .into(),
        ));
    }
    let qemu = spec.qemu.map(|q| {
        let (major, minor) = q.version();
        format!("{major}.{minor}")
    });
    let args = CapsArgs {
        dump: files.dump.as_deref(),
        streams: files.streams.iter().map(PathBuf::as_path).collect(),
        qemu: qemu.as_deref(),
        ..CapsArgs::default()
    };
    let d = dest::destination(&args)?;
    let machine = match (&spec.machine, &d.machine) {
        (Some(m), Some(dm)) if m != dm => {
            return Err(Failure::Usage(format!(
                "--machine {m}, but the destination's capabilities are for {dm}"
            )));
        }
        (Some(m), _) => Some(m.clone()),
        (None, dm) => dm.clone(),
    };
    let mut ram = None;
    for p in &files.streams {
        let input = crate::input::Input::open(p).map_err(|e| Failure::io(p, e))?;
        if crate::v4tools::stream_version(input.bytes()) == Some(3) {
            ram = ram_blocks(input.bytes())
                .map_err(|e| Failure::Invalid(format!("{}: {e}", p.display())))?;
            if ram.is_some() {
                break;
            }
        }
    }
    let caps = host_caps(&d).map_err(Failure::Invalid)?;
    let hello = Hello {
        caps,
        machine: machine.as_deref(),
        qemu: d.qemu.as_deref().or(qemu.as_deref()),
        hpet_timers: spec.hpet_timers,
        serial_ports: spec.serial_ports,
        ram: ram.as_ref().map(|r| {
            r.iter()
                .map(|(name, length)| RamBlock {
                    name,
                    length: *length,
                })
                .collect()
        }),
    };
    hello.to_bytes().map_err(Failure::Invalid)
}

/// How the receiving side ended.
#[derive(Debug)]
pub enum Received {
    /// The whole v4 stream arrived, checked, and its v3 form went to the destination.
    Complete {
        /// v4 bytes read.
        v4: usize,
        /// v4 records read.
        records: usize,
        /// v3 bytes written to the destination.
        v3: usize,
    },
    /// Refused: the destination connection was closed at `v3` bytes.
    Refused {
        /// What and where (v4 offsets).
        problem: String,
        /// v3 bytes the destination got.
        v3: usize,
    },
}

/// Why reading the v4 stream stopped.
enum Bad {
    /// The stream is refused (message with v4 offsets).
    Stream(String),
    /// Writing to the destination failed.
    Dest(io::Error),
}

/// `vmstate proxy --receive-v4`: accepts the sending proxy on `--listen`, connects to the
/// destination (`--to`), sends `hello`, then converts the v4 stream to v3 record by record
/// (module docs). The return path goes back as it comes.
pub fn run_receive(
    options: &ProxyOptions,
    hello: &[u8],
    listening: &mut dyn FnMut(SocketAddr),
) -> Result<(String, Received), Failure> {
    let (_listener, mut src, name, dest) = connect(options, listening)?;
    src.write_all(hello)
        .map_err(|e| Failure::Output(format!("{name}: sending the hello: {e}")))?;
    let clone = |s: &TcpStream, what: &str| {
        s.try_clone()
            .map_err(|e| Failure::Output(format!("{what}: {e}")))
    };
    let back = {
        let (d, s) = (clone(&dest, "--to")?, clone(&src, "source")?);
        std::thread::spawn(move || pipe(d, s))
    };
    let mut out = WriteSink::new(clone(&dest, "--to")?);
    // Small records come through the buffer; a large payload is read past it (`receive`).
    let mut reader = io::BufReader::with_capacity(WRITE_BUFFER, &mut src);
    let limit = options.hold_limit.max(DATA_CHUNK * 2);
    let result = receive(&mut reader, &mut out, limit);
    let written = |out: &WriteSink<TcpStream>| out.position();
    match result {
        Ok((v4, records)) => {
            out.flush()
                .map_err(|e| Failure::Output(format!("--to {}: {e}", options.to)))?;
            let v3 = written(&out);
            let _ = dest.shutdown(Shutdown::Write);
            // The destination closes once it has loaded (and answered on the return path).
            let _ = back.join();
            Ok((name, Received::Complete { v4, records, v3 }))
        }
        Err(Bad::Stream(problem)) => {
            // What was converted before the bad record goes out; the rest never does.
            let _ = out.flush();
            let v3 = written(&out);
            let _ = dest.shutdown(Shutdown::Both);
            let _ = src.shutdown(Shutdown::Both);
            Ok((name, Received::Refused { problem, v3 }))
        }
        Err(Bad::Dest(e)) => {
            let _ = dest.shutdown(Shutdown::Both);
            Err(Failure::Output(format!("--to {}: {e}", options.to)))
        }
    }
}

/// Reads the v4 stream from `src` and writes its v3 form to `out`, one record at a time;
/// records are at most `limit` bytes. Returns the v4 bytes and records read.
fn receive<W: Write>(
    src: &mut impl Read,
    out: &mut WriteSink<W>,
    limit: usize,
) -> Result<(usize, usize), Bad> {
    let cut = |at: usize, e: io::Error| {
        Bad::Stream(format!(
            "at v4 byte {at} (0x{at:x}): the sending side's stream ended before its EOF record \
             ({e})"
        ))
    };
    // The header, read until the codec's reader takes it whole.
    let mut header = Vec::new();
    loop {
        let mut b = [0u8; 1];
        src.read_exact(&mut b).map_err(|e| cut(header.len(), e))?;
        header.push(b[0]);
        if header.len() > 4096 {
            return Err(Bad::Stream("at v4 byte 0: not a v4 header".into()));
        }
        match Records4::new(&header).next() {
            Some(Ok(r)) => match r.record {
                Record4::Header(_) => break,
                _ => return Err(Bad::Stream("at v4 byte 0: not a v4 header".into())),
            },
            Some(Err(vmstate::v4::Error::Codec(e))) if e.is_incomplete() => {}
            Some(Err(e)) => return Err(Bad::Stream(format!("v4 header: {e}"))),
            None => {}
        }
    }
    let mut down = Downgrader::new();
    convert(&header, 0, 0, &mut down, out)?;
    let mut at = header.len();
    let mut records = 1;
    // Each record is read whole into `buf` after a copy of the header (and, for a record
    // continuing a live section, of that section's START record), so the codec's reader
    // checks it with the state it needs; offsets are moved back to the stream's. The record
    // is read straight into `buf`: its payload is copied only by the kernel, in and out.
    // `buf[..whole]` is the walk's input; `buf` keeps its length from record to record, so
    // its bytes are written over, not zeroed again.
    let mut starts: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut ended: Vec<u32> = Vec::new();
    let mut buf = Vec::new();
    let mut after_eof = false;
    loop {
        let mut used = 0;
        put(&mut buf, &mut used, &header);
        let mut kind = [0u8; 1];
        if after_eof {
            // After EOF: the trailer to the end of the connection, or nothing.
            let mut buf = header.clone();
            buf.push(record::EOF);
            let prefix = buf.len();
            src.take(limit as u64 + 5)
                .read_to_end(&mut buf)
                .map_err(|e| cut(at, e))?;
            if buf.len() == prefix {
                break;
            }
            convert(&buf, prefix, at, &mut down, out)?;
            at += buf.len() - prefix;
            records += 1;
            break;
        }
        if let Err(e) = src.read_exact(&mut kind) {
            // Cut between records (the sending side refused what follows): the records
            // before are whole, the last section's footer with them.
            down.finish(out).map_err(|e| Bad::Stream(e.to_string()))?;
            return Err(cut(at, e));
        }
        // The frame's type and length, and the section id its payload starts with.
        let mut head = [kind[0], 0, 0, 0, 0, 0, 0, 0, 0];
        // `frame`: the record's length (EOF is one unframed byte).
        let (mut frame, mut head_len) = (1, 1);
        if kind[0] != record::EOF {
            src.read_exact(&mut head[1..5])
                .map_err(|e| cut(at + 1, e))?;
            let n = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if n > limit {
                return Err(Bad::Stream(format!(
                    "at v4 byte {at} (0x{at:x}): a record of {n} bytes, over the limit of \
                     {limit} (--hold-limit)"
                )));
            }
            (frame, head_len) = (5 + n, 5 + n.min(4));
            src.read_exact(&mut head[5..head_len])
                .map_err(|e| cut(at + 5, e))?;
        }
        let head = &head[..head_len];
        let id = head
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        let continues = matches!(kind[0], 0x02 | 0x03 | record4::DATA);
        // A section goes on only until its END (and that END's DATA records).
        if matches!(kind[0], 0x02 | 0x03)
            && let Some(id) = id.filter(|id| ended.contains(id))
        {
            return Err(Bad::Stream(format!(
                "at v4 byte {at} (0x{at:x}): section {id} continues after its END record"
            )));
        }
        if continues && let Some(start) = starts.iter().find(|(i, _)| Some(*i) == id) {
            put(&mut buf, &mut used, &start.1);
        }
        let prefix = used;
        put(&mut buf, &mut used, head);
        let whole = prefix + frame;
        if whole > used {
            if buf.len() < whole {
                buf.resize(whole, 0);
            }
            src.read_exact(&mut buf[used..whole])
                .map_err(|e| cut(at + head_len, e))?;
        }
        let buf = &buf[..whole];
        convert(buf, prefix, at, &mut down, out)?;
        if kind[0] == 0x01
            && let Some(id) = id
        {
            starts.retain(|(i, _)| *i != id);
            ended.retain(|i| *i != id);
            starts.push((id, buf[prefix..].to_vec()));
        } else if kind[0] == 0x03
            && let Some(id) = id
        {
            ended.push(id);
        }
        at += buf.len() - prefix;
        records += 1;
        after_eof = kind[0] == record::EOF;
        out.flush().map_err(Bad::Dest)?;
    }
    down.finish(out).map_err(|e| Bad::Stream(e.to_string()))?;
    out.flush().map_err(Bad::Dest)?;
    Ok((at, records))
}

/// Writes `bytes` into `buf` at `used` (growing it if needed) and moves `used` past them.
fn put(buf: &mut Vec<u8>, used: &mut usize, bytes: &[u8]) {
    let end = *used + bytes.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[*used..end].copy_from_slice(bytes);
    *used = end;
}

/// Checks the last record of `buf` (from `prefix` on; it is at `at` in the stream) with the
/// codec's reader and writes its v3 form.
fn convert<W: Write>(
    buf: &[u8],
    prefix: usize,
    at: usize,
    down: &mut Downgrader,
    out: &mut WriteSink<W>,
) -> Result<(), Bad> {
    let bad = |e: vmstate::v4::Error| Bad::Stream(e.relocated(prefix, at).to_string());
    let mut vendors = vmstate::v4::wire::VendorChain::new();
    for rec in Records4::new(buf) {
        let rec = rec.map_err(bad)?;
        if let Record4::Header(h) = &rec.record {
            vendors = h.vendors.clone();
        }
        if rec.offset >= prefix {
            return down.record(&rec.record, &vendors, out).map_err(bad);
        }
    }
    Err(Bad::Stream(format!(
        "at v4 byte {at} (0x{at:x}): not a record"
    )))
}

/// A [`Forward`] that writes the live part of a v3 stream as v4 (module docs): [`read_live`]
/// tells it where each record starts and what it is ([`Forward::event`]) before it passes the
/// bytes; once an item's bytes are all passed it becomes its v4 record (a RAM section head a
/// v4 head, its RAM records DATA records). Nothing is parsed twice.
pub struct SendV4<W: Write> {
    out: WriteSink<W>,
    header: Header<'static>,
    /// The destination's RAM blocks, when known.
    ram: Option<Vec<(String, u64)>>,
    /// Bytes passed and not yet converted (an item cut by a pass): `raw[0]` is at
    /// `raw_base`, where the bytes of the next pass continue. Empty between most passes: a
    /// pass is converted where it lies and only a cut item's start is copied here.
    raw: Vec<u8>,
    raw_base: usize,
    /// Items announced and not yet converted (start offset, kind), in stream order.
    queue: VecDeque<(usize, Item)>,
    /// Start of the RAM data not yet sent, and its section id.
    run: Option<(usize, u32)>,
    /// Why the stream is refused (a RAM block the destination lacks).
    refused: Option<Problem>,
    /// v4 bytes written.
    sent: usize,
}

/// An item of the live part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// The file header, CONFIGURATION or a COMMAND: converted whole.
    Whole,
    /// A RAM section's header.
    RamHead,
    /// A RAM record.
    Ram,
    /// The EOS record ending a RAM section, with the section's footer.
    Eos,
    /// The first record of the final phase: the live part ends here.
    End,
}

impl<W: Write> SendV4<W> {
    /// A forwarder writing to `out`; `ram` is the destination's RAM blocks, when known.
    pub fn new(out: W, ram: Option<Vec<(String, u64)>>) -> Result<Self, String> {
        Ok(SendV4 {
            out: WriteSink::new(out),
            header: Header::new(&[], true).map_err(|e| e.to_string())?,
            ram,
            raw: Vec::new(),
            raw_base: 0,
            queue: VecDeque::new(),
            run: None,
            refused: None,
            sent: 0,
        })
    }

    fn err(e: impl std::fmt::Display) -> io::Error {
        io::Error::other(e.to_string())
    }

    /// Sends the RAM data from the run's start to `to` as a DATA record; `buf` holds the
    /// stream from `self.raw_base` on.
    fn data(&mut self, buf: &[u8], to: usize) -> io::Result<()> {
        if let Some((from, id)) = self.run
            && to > from
        {
            let (crc, base) = (self.header.crc(), self.raw_base);
            // A large payload goes from `buf` to the socket: `WriteSink` does not copy it.
            emit_data(&mut self.out, crc, id, &buf[from - base..to - base]).map_err(Self::err)?;
            self.run = Some((to, id));
        }
        Ok(())
    }

    /// The item that started at `start` ends at `end`: writes its v4 form; `buf` holds the
    /// stream from `self.raw_base` on.
    fn finish_item(&mut self, buf: &[u8], start: usize, item: Item, end: usize) -> io::Result<()> {
        let base = self.raw_base;
        match item {
            Item::Whole => {
                upgrade_record(&buf[start - base..end - base], &self.header, &mut self.out)
                    .map_err(Self::err)?;
            }
            Item::RamHead => {
                let bytes = &buf[start - base..end - base];
                let head =
                    SectionHeaderRepr::read(&mut Reader::new(bytes, start)).map_err(Self::err)?;
                live_head(&head, &self.header, &mut self.out).map_err(Self::err)?;
                self.run = Some((end, head.section_id));
            }
            Item::Ram => {
                if let Some((from, _)) = self.run
                    && end - from >= DATA_CHUNK
                {
                    self.data(buf, end)?;
                }
            }
            Item::Eos => {
                // The EOS word is the section's last data; the footer after it is implied.
                self.data(buf, start + 8)?;
                self.run = None;
            }
            // Never converted: the final phase is converted whole.
            Item::End => {}
        }
        Ok(())
    }

    /// Checks the source's RAM block list against the destination's (QEMU's `ram_load`:
    /// every block must exist there, with the same length unless it is a resizable ACPI blob).
    fn check_blocks(&self, at: usize, list: &vmstate::ram::BlockList<'_>) -> Option<Problem> {
        let dest = self.ram.as_ref()?;
        for b in list.iter() {
            let name = String::from_utf8_lossy(b.name);
            let found = dest.iter().find(|(n, _)| *n == name);
            let message = match found {
                None => format!(
                    "RAM block {} ({} bytes) does not exist at the destination (QEMU: \
                     \"Unknown ramblock\"); its blocks: {}",
                    vmstate::Escaped(b.name),
                    b.length,
                    dest.iter()
                        .map(|(n, l)| format!("{n} ({l})"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some((_, l)) if *l != b.length && !name.starts_with("/rom@etc/") => format!(
                    "RAM block {} is {} bytes, {} at the destination (QEMU: \"Size \
                     mismatch\"; only ACPI blobs are resizable)",
                    vmstate::Escaped(b.name),
                    b.length,
                    l
                ),
                Some(_) => continue,
            };
            return Some(Problem {
                offset: at,
                message: format!("at byte {at} (0x{at:x}), section 'ram' block list: {message}"),
            });
        }
        None
    }

    /// The live part ended at `held_at` (all of it passed): every item of it was written.
    fn end_live(&mut self, held_at: usize) -> io::Result<()> {
        let at = self.raw_base + self.raw.len();
        let rest = self.queue.front().copied();
        if at != held_at || !matches!(rest, None | Some((_, Item::End))) {
            return Err(Self::err(format!(
                "internal: the v4 writer is at byte {at} ({rest:?} pending), the final phase \
                 begins at {held_at}"
            )));
        }
        self.out.flush()
    }
}

impl<W: Write> SendV4<W> {
    /// Converts `buf`, the stream from `self.raw_base` on, as far as its items are known
    /// to end; returns the offset from which the bytes must be kept for the next pass.
    fn convert(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self.raw_base + buf.len();
        // `read_live` passes up to a record boundary: every item announced before `end`
        // ends at the next one's start or at `end`.
        while let Some(&(start, item)) = self.queue.front() {
            if start >= end {
                break;
            }
            let stop = self.queue.get(1).map_or(end, |n| n.0.min(end));
            self.queue.pop_front();
            self.finish_item(buf, start, item, stop)?;
        }
        // The RAM data of an open section is sent.
        self.data(buf, end)?;
        let keep = self.run.map_or(end, |(from, _)| from).min(end);
        Ok(self.queue.front().map_or(keep, |&(s, _)| s.min(keep)))
    }
}

impl<W: Write> Forward for SendV4<W> {
    fn pass(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Converted where they lie unless an earlier pass left the start of an item.
        let keep = if self.raw.is_empty() {
            let keep = self.convert(bytes)?;
            self.raw.extend_from_slice(&bytes[keep - self.raw_base..]);
            keep
        } else {
            let mut raw = std::mem::take(&mut self.raw);
            raw.extend_from_slice(bytes);
            let keep = self.convert(&raw);
            self.raw = raw;
            let keep = keep?;
            self.raw.drain(..keep - self.raw_base);
            keep
        };
        self.raw_base = keep;
        self.out.flush()?;
        self.sent = self.out.position();
        Ok(())
    }

    fn event(&mut self, at: usize, event: &Event<'_>) -> io::Result<()> {
        let item = match *event {
            Event::Record(
                Record::Header { .. } | Record::Configuration(_) | Record::Command(_),
            ) => Item::Whole,
            Event::RamSection(_) => Item::RamHead,
            Event::Ram {
                record: RamRecord::Eos,
                ..
            } => Item::Eos,
            Event::Ram {
                record: RamRecord::MemSize(list),
                offset,
            } => {
                if let Some(p) = self.check_blocks(offset, &list) {
                    let m = p.message.clone();
                    self.refused = Some(p);
                    return Err(Self::err(m));
                }
                Item::Ram
            }
            Event::Ram { .. } => Item::Ram,
            _ => Item::End,
        };
        self.queue.push_back((at, item));
        Ok(())
    }
}

/// `vmstate proxy --send-v4`: accepts the source on `--listen`, connects to the receiving
/// proxy (`--to`), reads its hello, and passes the stream through as v4 (module docs).
pub fn run_send(
    options: &ProxyOptions,
    listening: &mut dyn FnMut(SocketAddr),
) -> Result<(String, Outcome), Failure> {
    if !options.edits.is_empty() || options.record.is_some() || options.pass_through_unvalidated {
        return Err(Failure::Usage(
            "--send-v4 does not take --set, --record or --pass-through-unvalidated".into(),
        ));
    }
    if options.dest != DestSpec::default() {
        return Err(Failure::Usage(
            "--send-v4 checks against the destination the receiving side describes: give \
             --machine, --qemu, --hpet-timers and --serial-ports to the --receive-v4 side"
                .into(),
        ));
    }
    let (listener, mut src, name, mut to) = connect(options, listening)?;
    let refuse = |to: &TcpStream, offset: usize, message: String| {
        let _ = to.shutdown(Shutdown::Both);
        (
            name.clone(),
            Outcome::Refused(vec![Problem { offset, message }]),
        )
    };
    // The receiving side answers at once; a peer that does not (a QEMU) is not one.
    let _ = to.set_read_timeout(Some(HELLO_WAIT));
    let body = read_hello(&mut to);
    let _ = to.set_read_timeout(None);
    let body = match body {
        Ok(b) => b,
        Err(e) => return Ok(refuse(&to, 0, e)),
    };
    let hello = match Hello::from_body(&body) {
        Ok(h) => h,
        Err(e) => return Ok(refuse(&to, 0, e)),
    };
    let spec = match hello.spec() {
        Ok(s) => s,
        Err(e) => return Ok(refuse(&to, 0, e)),
    };
    let ram = hello.ram.as_ref().map(|r| {
        r.iter()
            .map(|b| (b.name.to_owned(), b.length))
            .collect::<Vec<_>>()
    });
    let clone = |s: &TcpStream, what: &str| {
        s.try_clone()
            .map_err(|e| Failure::Output(format!("{what}: {e}")))
    };
    let back = {
        let (d, s) = (clone(&to, "--to")?, clone(&src, "source")?);
        std::thread::spawn(move || pipe(d, s))
    };
    let src_timeout = clone(&src, "source")?;
    let mut pause = |t: Option<Duration>| {
        let _ = src_timeout.set_read_timeout(t);
    };
    let mut forward = SendV4::new(clone(&to, "--to")?, ram).map_err(Failure::Invalid)?;
    // A second connection of the source (a multifd channel) is refused like the v3 proxy
    // does: `read_live` stops at the next pause.
    let extra = Arc::new(AtomicBool::new(false));
    {
        let extra = Arc::clone(&extra);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                extra.store(true, Ordering::Relaxed);
                drop(conn);
            }
        });
    }
    let live = read_live(
        &mut src,
        None,
        &mut pause,
        &mut forward,
        &spec,
        options.hold_limit,
        &extra,
    );
    let live = match live {
        Ok(l) => l,
        Err(Stop::Problem(p)) => {
            return Ok(refuse(&to, p.offset, p.message));
        }
        Err(Stop::Pass(e)) => {
            if let Some(p) = forward.refused.take() {
                return Ok(refuse(&to, p.offset, p.message));
            }
            let _ = to.shutdown(Shutdown::Both);
            return Err(Failure::Output(format!("--to {}: {e}", options.to)));
        }
        Err(Stop::Unvalidated { offset, why, .. }) => {
            return Ok(refuse(
                &to,
                offset,
                format!("at byte {offset} (0x{offset:x}): {why}: cannot be validated; refused"),
            ));
        }
        Err(Stop::Read(e)) => {
            let _ = to.shutdown(Shutdown::Both);
            return Err(Failure::Unreadable(format!("{name}: {e}")));
        }
    };
    // The final phase's last byte is in: the destination waits from here on.
    let received = std::time::Instant::now();
    if let Err(e) = forward.end_live(live.held_at) {
        let _ = to.shutdown(Shutdown::Both);
        return Err(Failure::Output(format!("--to {}: {e}", options.to)));
    }
    let Live {
        prefix,
        held_at,
        held,
        ram_records,
        structure,
    } = live;
    let mut report = super::check_held(&prefix, held_at, &held, &spec)?;
    if report.problems.is_empty()
        && let Some(p) = structure
    {
        report.problems.push(p);
    }
    if !report.problems.is_empty() {
        let _ = to.shutdown(Shutdown::Both);
        return Ok((name, Outcome::Refused(report.problems)));
    }
    // The final phase as v4, checked against the destination's capabilities.
    let v4 = match held_v4(&prefix, held_at, &held) {
        Ok(v) => v,
        Err(m) => return Ok(refuse(&to, held_at, m)),
    };
    let problems = capability_problems(&v4, &hello.caps, held_at);
    if !problems.is_empty() {
        let _ = to.shutdown(Shutdown::Both);
        return Ok((name, Outcome::Refused(problems)));
    }
    let header_len = forward.header.buffer_len();
    let sent = to.write_all(&v4[header_len..]).and_then(|()| to.flush());
    if let Err(e) = sent {
        let _ = to.shutdown(Shutdown::Both);
        return Err(Failure::Output(format!("--to {}: {e}", options.to)));
    }
    let hold_time = received.elapsed();
    let bytes = forward.sent + v4.len() - header_len;
    let _ = to.shutdown(Shutdown::Write);
    let _ = back.join();
    Ok((
        name,
        Outcome::Passed {
            bytes,
            spliced: 0,
            ram_records,
            held: held.len(),
            report,
            hold_time,
        },
    ))
}

/// The held final phase `held` (at `held_at` of the stream after `prefix`) as v4 records
/// after a v4 header: converted with the stream's own trailer, as `rewrite --format v4` does.
fn held_v4(prefix: &[u8], held_at: usize, held: &[u8]) -> Result<Vec<u8>, String> {
    let input = super::view(prefix, held_at, held).map_err(|e| format!("temporary file: {e}"))?;
    let mut v4 = Vec::new();
    Header::new(&[], true)
        .map_err(|e| e.to_string())?
        .emit(&mut VecSink(&mut v4))
        .map_err(|e| e.to_string())?;
    upgrade_v3_from(
        input.bytes(),
        Some(held_at),
        &UpgradeOptions::default(),
        &mut v4,
    )
    .map_err(|e| format!("final phase: {e}"))?;
    Ok(v4)
}

/// Every feature of the final phase `v4` (a v4 header and the final phase's records) that
/// the destination of `caps` lacks, each naming the device and the feature.
fn capability_problems(v4: &[u8], caps: &HostCaps<'_>, held_at: usize) -> Vec<Problem> {
    let mut report = Box::new(CapsReport::<64>::new());
    if let Err(e) = vmstate::v4::caps::check_stream(v4, caps, &mut report) {
        return vec![Problem {
            offset: held_at,
            message: format!("final phase as v4: {e}"),
        }];
    }
    let mut problems: Vec<Problem> = report
        .found
        .iter()
        .map(|i| Problem {
            offset: held_at,
            message: format!(
                "at byte {held_at} (0x{held_at:x}), final phase: the destination cannot load \
                 it: {i}"
            ),
        })
        .collect();
    if report.total > report.found.len() {
        problems.push(Problem {
            offset: held_at,
            message: format!("… and {} more", report.total - report.found.len()),
        });
    }
    problems
}

/// A [`vmstate::Sink`] appending to a vector.
struct VecSink<'v>(&'v mut Vec<u8>);

impl vmstate::Sink for VecSink<'_> {
    type Error = vmstate::Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), vmstate::Error> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn position(&self) -> usize {
        self.0.len()
    }
}
