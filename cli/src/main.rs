//! `vmstate`: inspect, verify, rewrite, diff and check QEMU migration streams.
//!
//! Exit statuses: see [`vmstate_cli::exit`] (0 success, 1–100 problems found, 101 invalid
//! input, 102 usage, 103 unreadable input, 104 output failure). Every output file is written
//! through [`vmstate_cli::output`].
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmstate_cli::desc::Description;
use vmstate_cli::exit::{Exit, Failure};
use vmstate_cli::input::{Input, Progress};
use vmstate_cli::inspect::{self, Style};
use vmstate_cli::model::{KeepAll, ParseOptions, Visit};
use vmstate_cli::output::{Links, OutputFile, SparseFile};
use vmstate_cli::v4tools::{self, Format};
use vmstate_cli::verify::DestSpec;
use vmstate_cli::{Stream, pretty_json};
use vmstate_devices::machine::QemuBuild;

#[derive(Parser)]
#[command(
    name = "vmstate",
    version,
    about = "Inspect, verify, rewrite and check QEMU migration streams",
    after_help = Exit::HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The file offset of the QEMU stream in each input file, when the file neither starts
    /// with it nor is a libvirt save image and the stream is not at a 4 KiB-aligned offset
    /// (those are found without it).
    #[arg(long, global = true, value_name = "N")]
    offset: Option<u64>,
    /// For a stream without section footers and VMDESCRIPTION trailer (machine types up to
    /// pc-*-2.2): layouts of the sections no typed model reads, from a stream (with trailer)
    /// or desc.json written by the same QEMU build, e.g. for a newer machine type, checked
    /// against the build's `-dump-vmstate` JSON when one is given. May be repeated.
    #[arg(long, global = true, value_name = "FILE")]
    schema: Vec<PathBuf>,
    /// With --schema: the description's stream was written with the same machine options
    /// (-m, -smp, devices) as the stream read, so an array whose length QEMU takes from the
    /// configuration has the length the description shows.
    #[arg(long, global = true, requires = "schema")]
    schema_same_config: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Print a map of a stream (or its state / description as JSON).
    Inspect {
        /// Print the device state as analyze-migration.py `-d state` does.
        #[arg(long, conflicts_with = "desc")]
        json: bool,
        /// Print the VMDESCRIPTION trailer as analyze-migration.py `-d desc` does.
        #[arg(long)]
        desc: bool,
        /// The stream.
        file: PathBuf,
    },
    /// Decode every section, enforce every device invariant and list every problem.
    Verify {
        /// The stream.
        file: PathBuf,
        #[command(flatten)]
        dest: Dest,
    },
    /// Decode a stream, apply edits and write it back (optionally as v3 or v4).
    Rewrite {
        /// The stream to read.
        input: PathBuf,
        /// Where to write.
        output: PathBuf,
        /// An edit: IDSTR[INSTANCE].FIELD=VALUE (decimal or 0x-hex), e.g. i8259[0].imr=0x5a.
        // The text is the `--help` line; its brackets are not links.
        #[allow(rustdoc::broken_intra_doc_links)]
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Output format: v3 (QEMU) or v4 (length-prefixed, see docs/FORMAT.md).
        #[arg(long, value_name = "v3|v4")]
        format: Option<Format>,
        /// With --format v4: leave out the per-section CRC-32C.
        #[arg(long, requires = "format")]
        no_crc: bool,
        #[command(flatten)]
        dest: Dest,
    },
    /// Pass a live migration from a source to a destination QEMU only as far as it verifies
    /// (exit 1 when it does not).
    ///
    /// The source runs `migrate tcp:LISTEN`, the destination `-incoming tcp:TO`. RAM records
    /// stream through as they are checked; the final phase (device sections, EOF, trailer) is
    /// held until it is verified; on any problem the destination connection is closed
    /// without it.
    Proxy {
        /// Where the source connects: HOST:PORT (port 0: any; the address is printed).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The destination's `-incoming tcp:` address, HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        to: String,
        /// The most bytes the held final phase (device sections, EOF, trailer) may have.
        #[arg(long, value_name = "BYTES", default_value_t = vmstate_cli::proxy::DEFAULT_HOLD_LIMIT)]
        hold_limit: usize,
        /// Write a copy of the bytes that passed to FILE (only when all of them passed).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
        /// An edit applied to the held device sections, as `rewrite --set`:
        /// IDSTR[INSTANCE].FIELD=VALUE.
        // The text is the `--help` line; its brackets are not links.
        #[allow(rustdoc::broken_intra_doc_links)]
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
        /// Forward what cannot be validated (multifd channels, postcopy) unchecked instead of
        /// refusing it.
        #[arg(long)]
        pass_through_unvalidated: bool,
        /// Splice the live part from socket to socket (Linux ≥ 6.9: peeked into the checker,
        /// moved by the kernel) instead of reading and writing it. It copies less in the proxy
        /// but made live migrations slower where measured (README, "Proxy performance").
        /// Not with `--record`, `--send-v4` or `--receive-v4`.
        #[arg(long, conflicts_with_all = ["record", "send_v4", "receive_v4"])]
        splice: bool,
        /// Print to stderr how long the final phase was held (its last byte read to its last
        /// byte sent: what the proxy adds to the downtime) and how many bytes were spliced
        /// (moved by the kernel without a copy through the proxy).
        #[arg(long)]
        stats: bool,
        /// Next to the source: send the stream as vmstate v4 to a `proxy --receive-v4` at TO,
        /// checked against the destination that proxy describes.
        #[arg(long, conflicts_with = "receive_v4")]
        send_v4: bool,
        /// Next to the destination: receive v4 from a `proxy --send-v4`, tell it what the
        /// destination loads (--dump, --stream, --machine, --qemu), and pass the v3 stream
        /// on to TO.
        #[arg(long, requires = "caps_source")]
        receive_v4: bool,
        /// With --receive-v4: the destination build's `-dump-vmstate` JSON.
        #[arg(long, value_name = "FILE", group = "caps_source")]
        dump: Option<PathBuf>,
        /// With --receive-v4: a stream the destination build wrote (its sections and, for a
        /// v3 stream, its RAM block list); may be repeated.
        #[arg(long, value_name = "FILE", group = "caps_source")]
        stream: Vec<PathBuf>,
        #[command(flatten)]
        dest: Dest,
    },
    /// Write desc.json, state.json, RAM block images and section bodies into a directory.
    Extract {
        /// The stream.
        input: PathBuf,
        /// Output directory (created if needed).
        dir: PathBuf,
    },
    /// Read guest RAM out of a stream: bytes at a guest-physical address (or of one RAM
    /// block), or a flat guest-physical memory image.
    ///
    /// The stream is indexed in one pass (8 bytes per page of guest RAM). Addresses are those
    /// of the machine's main RAM block laid out by the PC machine rules (RAM below 4 GiB, the
    /// PCI hole, the rest from 4 GiB); an address that is not RAM is an error naming the range.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["addr", "block", "image"])))]
    Ram {
        /// The stream.
        file: PathBuf,
        /// Guest-physical address to read from (decimal or 0x-hex).
        #[arg(long, value_parser = parse_number, requires = "len")]
        addr: Option<u64>,
        /// Read from this RAM block instead (with --block-offset), e.g. pc.bios or vga.vram.
        #[arg(long, requires = "len", conflicts_with = "addr")]
        block: Option<String>,
        /// Offset in --block.
        #[arg(long, value_parser = parse_number, default_value = "0", requires = "block")]
        block_offset: u64,
        /// Bytes to read.
        #[arg(long, value_parser = parse_number)]
        len: Option<u64>,
        /// Print a hexdump instead of the raw bytes.
        #[arg(long)]
        hex: bool,
        /// Write a flat guest-physical image of the main RAM to FILE (sparse: zero pages and
        /// the PCI hole are holes).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["addr", "block", "hex"])]
        image: Option<PathBuf>,
        /// The machine's main RAM block (default pc.ram; a `-machine memory-backend`'s id).
        #[arg(long, value_name = "NAME")]
        ram_block: Option<String>,
        /// The machine type, for a stream without a CONFIGURATION record (or to override it).
        #[arg(long, value_name = "TYPE")]
        machine: Option<String>,
        /// The guest's `max-ram-below-4g` machine property, if it was set.
        #[arg(long, value_name = "BYTES", value_parser = parse_number)]
        max_ram_below_4g: Option<u64>,
        /// The most memory the page index may take (8 bytes per page of the block list).
        #[arg(long, value_name = "BYTES", value_parser = parse_number,
              default_value_t = vmstate_cli::ram::DEFAULT_INDEX_LIMIT)]
        index_limit: u64,
    },
    /// List field-level differences between two streams (exit 1 if they differ).
    Diff {
        /// First stream.
        a: PathBuf,
        /// Second stream.
        b: PathBuf,
    },
    /// Check whether a stream (v3 or v4) can be loaded by a destination QEMU (exit: the number
    /// of incompatibilities, 100 for 100 or more).
    Check {
        /// The stream.
        input: PathBuf,
        /// The destination: a file from `vmstate caps`, the destination build's `-dump-vmstate`
        /// JSON for its machine type, or a stream that build wrote.
        #[arg(long)]
        dest: PathBuf,
        /// The QEMU build that made a `--dest` dump (7.2 or 10.0), when it cannot be inferred.
        #[arg(long, value_name = "X.Y")]
        qemu: Option<String>,
    },
    /// Describe a destination QEMU from its -dump-vmstate JSON and/or streams it wrote.
    Caps {
        /// QEMU's `-dump-vmstate` output of the destination build, for its machine type.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// A stream the destination build wrote (v3 or v4); may be given more than once.
        #[arg(long = "stream", value_name = "STREAM")]
        streams: Vec<PathBuf>,
        /// The QEMU build that made the dump (7.2 or 10.0), when it cannot be inferred.
        #[arg(long, value_name = "X.Y")]
        qemu: Option<String>,
        /// The destination's vendor chain, outermost first (e.g. org.linux-kvm).
        #[arg(long = "vendor", value_name = "ID")]
        vendors: Vec<String>,
        /// A validated migration capability the destination will set (x-ignore-shared,
        /// mapped-ram).
        #[arg(long = "capability", value_name = "NAME")]
        capabilities: Vec<String>,
        /// Where to write the destination (JSON).
        output: PathBuf,
    },
    /// Compare two -dump-vmstate JSON files like QEMU's vmstate-static-checker.py (exit: the
    /// number of problems, 100 for 100 or more).
    #[command(
        override_usage = "vmstate static-check [--reverse] SRC DST\n       \
                          vmstate static-check [--reverse] -s SRC -d DST",
        after_help = "Output and exit status equal QEMU 10.0's \
                      `vmstate-static-checker.py -s SRC -d DST [--reverse]`: everything the \
                      script prints goes to stdout; exit = the number of problems (100 means \
                      100 or more). Where the script stops with an error, stderr has one line \
                      instead of its traceback or usage text, and the exit status is 103 for a \
                      file that cannot be opened (the script: 2), 101 for a file that is not a \
                      dump (the script: 1)."
    )]
    StaticCheck {
        /// The source build's dump (or give it as the first file argument).
        #[arg(short = 's', long = "src", value_name = "SRC")]
        src: Option<PathBuf>,
        /// The destination build's dump (or give it as the last file argument).
        #[arg(short = 'd', long = "dest", visible_alias = "dst", value_name = "DST")]
        dst: Option<PathBuf>,
        /// Swap source and destination.
        #[arg(long)]
        reverse: bool,
        /// SRC and DST, for those not given with -s / -d.
        #[arg(value_name = "FILE", num_args = 0..=2)]
        files: Vec<PathBuf>,
    },
}

/// The destination the typed models check against: a QEMU build and a machine type.
#[derive(clap::Args)]
struct Dest {
    /// The destination's machine type: pc-i440fx-X.Y, pc-q35-X.Y, or pc / q35 (the newest of
    /// the build). Default: the one the stream's CONFIGURATION record names (pc-i440fx-7.2
    /// for a stream without one). A stream of another machine type is reported: QEMU refuses
    /// it.
    #[arg(long, value_name = "TYPE")]
    machine: Option<String>,
    /// The destination's QEMU build. Default: the newest that has the machine type (10.0 for
    /// every modelled one; 7.2 refuses what only newer builds send, e.g. i8259/ltim).
    #[arg(long, value_name = "7.2|10.0", value_parser = parse_qemu)]
    qemu: Option<QemuBuild>,
    /// HPET timers configured on the destination (QEMU's `timers` property; default 3).
    #[arg(long, value_name = "N")]
    hpet_timers: Option<u8>,
    /// ISA serial ports on the destination (-serial, at most 4). Default: every port the
    /// stream carries; with N, a port past the N-th is reported.
    #[arg(long, value_name = "N")]
    serial_ports: Option<u8>,
}

fn parse_number(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    parsed.map_err(|e| format!("'{s}': not a number (decimal or 0x-hex): {e}"))
}

fn parse_qemu(s: &str) -> Result<QemuBuild, String> {
    QemuBuild::parse(s).ok_or_else(|| format!("'{s}': the modelled builds are 7.2 and 10.0"))
}

impl Dest {
    fn spec(&self) -> DestSpec {
        DestSpec {
            machine: self.machine.clone(),
            qemu: self.qemu,
            hpet_timers: self.hpet_timers,
            serial_ports: self.serial_ports,
        }
    }
}

/// Opens `output` for a command that reads `inputs` (checked before any input is read).
fn create_output(output: &Path, inputs: &[&Path]) -> Result<OutputFile, Failure> {
    Ok(OutputFile::create(output, inputs, Links::Follow)?)
}

/// Writes `bytes` into `out` and puts it in place.
fn finish_output(mut out: OutputFile, output: &Path, bytes: &[u8]) -> Result<(), Failure> {
    out.file()
        .write_all(bytes)
        .map_err(|e| Failure::Output(format!("{}: {e}", output.display())))?;
    Ok(out.commit()?)
}

/// Opens a stream (in its container, the stream at `offset` when given); what cannot be one
/// (a pipe that does not start with the magic, a refused libvirt header) is invalid input, an
/// offset given for a pipe a usage error, anything else that fails is an I/O error.
fn open(path: &Path, offset: Option<u64>) -> Result<Input, Failure> {
    let input = Input::open_at(path, vmstate_cli::input::Expect::Stream, offset).map_err(|e| {
        match e.kind() {
            std::io::ErrorKind::InvalidData => Failure::Invalid(format!("{}: {e}", path.display())),
            // `--offset` on a pipe.
            std::io::ErrorKind::Unsupported => Failure::Usage(format!("{}: {e}", path.display())),
            _ => Failure::io(path, e),
        }
    })?;
    Ok(input)
}

/// How an error in the stream of `input` names it: the path, and for a stream in a container
/// where the stream starts (the error's byte offsets are in the stream).
fn stream_name(path: &Path, input: &Input) -> String {
    match input.container() {
        None => path.display().to_string(),
        Some(c) => format!("{} ({})", path.display(), c.offsets()),
    }
}

/// Names the container of `input` and where its stream starts on stderr (for the commands
/// whose stdout does not show it).
fn note(path: &Path, input: &Input) {
    if let Some(c) = input.container() {
        eprintln!("vmstate: {}: {}", path.display(), c.note());
    }
}

/// An I/O error when `input` changed while it was read (see [`Input::unchanged`]); called
/// before anything computed from it is reported or committed.
fn unchanged(path: &Path, input: &Input) -> Result<(), Failure> {
    input.unchanged().map_err(|e| Failure::io(path, e))
}

/// `result`, unless `input` changed while it was read: an error found in (or an answer
/// computed from) bytes that changed under the walk is not reported.
fn checked<T>(path: &Path, input: &Input, result: Result<T, Failure>) -> Result<T, Failure> {
    unchanged(path, input)?;
    result
}

/// Parses the whole stream, releasing the input behind the walk and showing progress.
fn parse<'a>(path: &Path, input: &'a Input, label: &'static str) -> Result<Stream<'a>, Failure> {
    parse_with(path, input, label, ParseOptions::default())
}

fn parse_with<'a>(
    path: &Path,
    input: &'a Input,
    label: &'static str,
    options: ParseOptions,
) -> Result<Stream<'a>, Failure> {
    parse_visit(path, input, label, options, &mut KeepAll)
}

/// The stream's own description, if it ends with one.
fn description<'a>(path: &Path, input: &'a Input) -> Result<Option<Description<'a>>, Failure> {
    let found = vmstate_cli::model::find_description(input.bytes())
        .map_err(|e| Failure::Invalid(format!("{}: {e}", stream_name(path, input))));
    checked(path, input, found).map(|d| d.map(|(_, d)| d))
}

/// [`parse_with`] handing each RAM record and each entry to `visit` (see `Stream::parse_visit`).
fn parse_visit<'a>(
    path: &Path,
    input: &'a Input,
    label: &'static str,
    options: ParseOptions,
    visit: &mut dyn Visit<'a>,
) -> Result<Stream<'a>, Failure> {
    let bytes = input.bytes();
    let options = ParseOptions {
        file_offset: input.stream_start() as u64,
        ..options
    };
    let invalid = |e: vmstate_cli::model::StreamError| {
        Failure::Invalid(format!("{}: {e}", stream_name(path, input)))
    };
    let description = description(path, input)?;
    let mut progress = Progress::new(label, bytes.len());
    let s = Stream::parse_visit(
        bytes,
        description,
        options,
        &mut |at| {
            progress.update(at);
            input.release_before(at);
        },
        visit,
    )
    .map_err(invalid);
    progress.finish();
    checked(path, input, s)
}

fn emit(text: &str) -> Result<(), Failure> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(text: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Output(format!("stdout: {e}")))
}

/// Reads the `--schema` files and makes them the walks' ([`vmstate_cli::schema::install`]).
fn install_schema(paths: &[PathBuf], same_config: bool) -> Result<(), Failure> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut schema = vmstate_cli::schema::Schema::default();
    schema.same_config = same_config;
    for p in paths {
        let bytes = std::fs::read(p).map_err(|e| Failure::io(p, e))?;
        schema
            .add(&bytes, &p.display().to_string())
            .map_err(Failure::Invalid)?;
    }
    vmstate_cli::schema::install(schema);
    Ok(())
}

fn run(cli: Cli) -> Result<u8, Failure> {
    let offset = cli.offset;
    install_schema(&cli.schema, cli.schema_same_config)?;
    let open = |path: &Path| open(path, offset);
    match cli.command {
        Command::Inspect { json, desc, file } => {
            let input = open(&file)?;
            if json || desc {
                note(&file, &input);
            }
            if desc {
                // The whole stream is walked, so `--desc` refuses whatever the other commands
                // refuse (one verdict), e.g. a trailer the walk does not end with.
                let stream = parse(&file, &input, "inspect")?;
                unchanged(&file, &input)?;
                let d = stream.description.as_ref().ok_or_else(|| {
                    Failure::Invalid(format!(
                        "{}: {}",
                        file.display(),
                        vmstate_cli::model::NO_DESCRIPTION
                    ))
                })?;
                emit(&(pretty_json(&d.to_json()) + "\n"))?;
                return Ok(0);
            }
            // The map of a stream without footers and trailer shows what the typed models measure.
            let options = ParseOptions {
                stop_at_unmeasured: !json,
                ..ParseOptions::default()
            };
            if !json {
                // One walk: each record's row is measured and spooled to an unlinked temporary
                // file, then written in the measured widths; no entry is kept, so memory does
                // not grow with the number of sections.
                let style = if std::io::stdout().is_terminal() {
                    Style::TERMINAL
                } else {
                    Style::PLAIN
                };
                let spool = vmstate_cli::input::scratch_file()
                    .map_err(|e| Failure::Output(format!("temporary file: {e}")))?;
                let mut map = inspect::MapWriter::new(style, spool);
                let stream = parse_visit(&file, &input, "inspect", options, &mut map)?;
                let name = file.display().to_string();
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                if let Some(c) = input.container() {
                    out.write_all(c.describe().as_bytes())
                        .map_err(|e| Failure::Output(format!("stdout: {e}")))?;
                }
                map.finish(&stream, &name, &mut out)?;
                unchanged(&file, &input)?;
                return Ok(0);
            }
            let stream = parse_with(&file, &input, "inspect", options)?;
            let mut out = std::io::stdout().lock();
            let written = vmstate_cli::analyze::write_state_to(&stream, &mut out)
                .and_then(|w| out.flush().map(|_| w))
                .map_err(|e| Failure::Output(format!("stdout: {e}")));
            let written = checked(&file, &input, written)?;
            if !written {
                return Err(Failure::Invalid(format!(
                    "{}: no VMDESCRIPTION trailer",
                    file.display()
                )));
            }
            // The process ends here: returning the decoded tree to the allocator piece by
            // piece, or unmapping the input ahead of the exit that unmaps everything,
            // would cost more than everything after the parse.
            std::mem::forget(stream);
            std::mem::forget(input);
            Ok(0)
        }
        Command::Verify { file, dest } => {
            dest.spec().explicit().map_err(Failure::Usage)?;
            let input = open(&file)?;
            let bytes = input.bytes();
            let mut progress = Progress::new("verify", bytes.len());
            let start = input.stream_start() as u64;
            let report = vmstate_cli::verify::verify_at(bytes, start, &dest.spec(), &mut |at| {
                progress.update(at);
                input.release_before(at);
            })
            .map_err(Failure::Usage);
            progress.finish();
            let report = checked(&file, &input, report)?;
            let name = file.display();
            let mut out = String::new();
            if let Some(c) = input.container() {
                out.push_str(&format!("{name}: {}\n", c.summary()));
            }
            if !report.unchecked.is_empty() {
                out.push_str(&format!(
                    "{name}: not checked ({}): {}\n",
                    if report.described {
                        "no typed model and not in the description"
                    } else if vmstate::wire::Trailer::locate(bytes).is_some() {
                        "the VMDESCRIPTION trailer is refused and no typed model"
                    } else {
                        "no VMDESCRIPTION trailer and no typed model"
                    },
                    report.unchecked.join(", ")
                ));
            }
            if report.problems.is_empty() {
                out.push_str(&format!("{name}: {}\n", report.summary()));
                emit(&out)?;
                return Ok(0);
            }
            for p in &report.problems {
                out.push_str(&format!("{name}: {p}\n"));
            }
            let n = report.problems.len();
            out.push_str(&format!(
                "{name}: {n} problem{} found\n",
                if n == 1 { "" } else { "s" }
            ));
            emit(&out)?;
            Ok(1)
        }
        Command::Rewrite {
            input,
            output,
            set,
            format,
            no_crc,
            dest,
        } => {
            dest.spec().explicit().map_err(Failure::Usage)?;
            let file = open(&input)?;
            note(&input, &file);
            vmstate_cli::container::rewritable(file.container(), format.is_some())
                .map_err(|m| Failure::Usage(format!("{}: {m}", input.display())))?;
            let mut out = create_output(&output, &[&input])?;
            // The container (libvirt header, XML, cookie and padding, or what is before the
            // offset) is written as it is, the stream after it.
            out.file()
                .write_all(file.prefix())
                .map_err(|e| Failure::Output(format!("{}: {e}", output.display())))?;
            if set.is_empty() && format.is_some() {
                let converted = convert(&file, &file, out, &output, format, no_crc);
                return checked(&input, &file, converted);
            }
            let mut stream = parse(&input, &file, "rewrite")?;
            if !set.is_empty() {
                dest.spec()
                    .apply_edits(&mut stream, &set, &input.display().to_string())?;
            }
            if format.is_some() {
                // The edited stream goes through an unlinked temporary file, not memory.
                let edited = vmstate_cli::input::scratch_file()
                    .and_then(|mut f| stream.write_to(&mut f).map(|_| f))
                    .and_then(Input::from_file)
                    .map_err(|e| Failure::Invalid(format!("{}: {e}", input.display())));
                let edited = checked(&input, &file, edited)?;
                let converted = convert(&edited, &file, out, &output, format, no_crc);
                return checked(&input, &file, converted);
            }
            let mut out = out;
            let mut progress = Progress::new("rewrite", file.bytes().len());
            let mut observe = |at| {
                progress.update(at);
                file.release_before(at);
            };
            // A new regular file keeps the input's zero blocks as holes (mapped-ram files
            // are mostly holes); a pipe or device is written in order.
            let written = if out.is_write_through() {
                stream.write_observed(out.file(), &mut observe)
            } else {
                SparseFile::new(out.file()).and_then(|f| stream.write_observed(f, &mut observe))
            }
            .map_err(|e| Failure::Output(format!("{}: {e}", output.display())));
            progress.finish();
            // Before the output replaces anything.
            checked(&input, &file, written)?;
            out.commit()?;
            Ok(0)
        }
        Command::Proxy {
            listen,
            to,
            hold_limit,
            record,
            set,
            pass_through_unvalidated,
            splice,
            stats,
            send_v4,
            receive_v4,
            dump,
            stream,
            dest,
        } => {
            if !receive_v4 && (dump.is_some() || !stream.is_empty()) {
                return Err(Failure::Usage(
                    "--dump and --stream describe the destination of --receive-v4".into(),
                ));
            }
            dest.spec().explicit().map_err(Failure::Usage)?;
            let options = vmstate_cli::proxy::ProxyOptions {
                listen,
                to: to.clone(),
                dest: dest.spec(),
                hold_limit,
                edits: set,
                record,
                pass_through_unvalidated,
                splice,
            };
            let mut listening = |addr| {
                eprintln!("vmstate proxy: listening on {addr}, destination {to}");
            };
            if receive_v4 {
                use vmstate_cli::proxy::v4::{DestFiles, Received, destination_hello, run_receive};
                let files = DestFiles {
                    dump,
                    streams: stream,
                };
                let hello = destination_hello(&options.dest, &files)?;
                let (name, received) = run_receive(&options, &hello, &mut listening)?;
                return match received {
                    Received::Complete { v4, records, v3 } => {
                        emit(&format!(
                            "{name}: received {v4} v4 bytes ({records} records, each CRC-checked); \
                             passed {v3} v3 bytes to the destination\n"
                        ))?;
                        Ok(0)
                    }
                    Received::Refused { problem, v3 } => {
                        emit(&format!(
                            "{name}: {problem}\n{name}: refused; the destination got {v3} v3 bytes and its connection was closed\n"
                        ))?;
                        Ok(1)
                    }
                };
            }
            let (name, outcome) = if send_v4 {
                vmstate_cli::proxy::v4::run_send(&options, &mut listening)?
            } else {
                vmstate_cli::proxy::run(&options, &mut listening)?
            };
            use vmstate_cli::proxy::Outcome;
            match outcome {
                Outcome::Passed {
                    bytes,
                    spliced,
                    ram_records,
                    held,
                    report,
                    hold_time,
                } => {
                    if stats {
                        eprintln!(
                            "vmstate proxy: final phase held {:.3} ms (last byte read to last \
                             byte sent); {spliced} of {bytes} bytes spliced (moved by the \
                             kernel, not copied through the proxy)",
                            hold_time.as_secs_f64() * 1e3
                        );
                    }
                    let v4 = if send_v4 { " as v4" } else { "" };
                    emit(&format!(
                        "{name}: passed {bytes} bytes{v4}: {ram_records} RAM records streamed, \
                         a final phase of {held} bytes held and checked ({} sections with \
                         typed models, {} with the description only)\n",
                        report.typed, report.generic
                    ))?;
                    Ok(0)
                }
                Outcome::Unvalidated { bytes, from, why } => {
                    emit(&format!(
                        "{name}: passed {bytes} bytes, unchecked from byte {from} on: {why}\n"
                    ))?;
                    Ok(0)
                }
                Outcome::Refused(problems) => {
                    let mut out = String::new();
                    for p in &problems {
                        out.push_str(&format!("{name}: {p}\n"));
                    }
                    let n = problems.len();
                    out.push_str(&format!(
                        "{name}: {n} problem{} found; the destination got none of the final \
                         phase\n",
                        if n == 1 { "" } else { "s" }
                    ));
                    emit(&out)?;
                    Ok(1)
                }
            }
        }
        Command::Extract { input, dir } => {
            let file = open(&input)?;
            note(&input, &file);
            // Pages go into the images as the walk reads them.
            let mut extract = vmstate_cli::extract::Extract::new(&dir, &input);
            let options = ParseOptions::default();
            let stream = match parse_visit(&input, &file, "extract", options, &mut extract) {
                Ok(stream) => stream,
                Err(e) => {
                    extract.abandon();
                    return Err(e);
                }
            };
            let files = extract.finish(&stream).map_err(Failure::from);
            let mut files = checked(&input, &file, files)?;
            if let Some(c) = file.container() {
                files.extend(c.extract(&dir, &input)?);
            }
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            emit(&list)?;
            Ok(0)
        }
        Command::Ram {
            file,
            addr,
            block,
            block_offset,
            len,
            hex,
            image,
            ram_block,
            machine,
            max_ram_below_4g,
            index_limit,
        } => {
            use vmstate_cli::ram::{LayoutOptions, Place, RamError};
            let out_path = image.clone();
            let out = match &out_path {
                Some(path) => Some(create_output(path, &[&file])?),
                None => None,
            };
            if image.is_none() && !hex && std::io::stdout().is_terminal() {
                return Err(Failure::Usage(
                    "stdout is a terminal: redirect the raw bytes, or give --hex".into(),
                ));
            }
            let input = open(&file)?;
            let label = file.display().to_string();
            let ram = vmstate_cli::ram::index(&input, &label, index_limit);
            let ram = checked(&file, &input, ram.map_err(Failure::Invalid))?;
            if let Some(why) = &ram.stopped {
                eprintln!("vmstate ram: {label}: {why}; the RAM before it is complete");
            }
            let opts = LayoutOptions {
                ram_block,
                machine,
                max_below_4g: max_ram_below_4g,
            };
            let physical = match block {
                Some(_) => None,
                None => Some(
                    ram.physical(&opts)
                        .map_err(|e| Failure::Invalid(format!("{label}: {e}")))?,
                ),
            };
            let failed = |e: RamError, output: &str| match e {
                RamError::Range(e) => Failure::Usage(format!("{label}: {e}")),
                RamError::Read(e) => Failure::Invalid(format!("{label}: {e}")),
                RamError::Output(e) => Failure::Output(format!("{output}: {e}")),
            };
            if let (Some(mut out), Some(path), Some(p)) = (out, out_path, physical.as_ref()) {
                let written = ram.write_image(p, out.file());
                let written = written.map_err(|e| failed(e, &path.display().to_string()))?;
                unchanged(&file, &input)?;
                out.commit()?;
                eprintln!(
                    "vmstate ram: {}: {:#x} bytes of guest-physical memory, {} of them from \
                     non-zero pages, the rest holes",
                    path.display(),
                    p.layout.end(),
                    written
                );
                return Ok(0);
            }
            let len = len.unwrap_or(0);
            let place = match block {
                Some(name) => Place::Block {
                    name,
                    offset: block_offset,
                    len,
                },
                None => Place::Physical {
                    addr: addr.unwrap_or(0),
                    len,
                },
            };
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let copied = ram.copy(&place, physical.as_ref(), &mut |at, bytes| {
                if hex {
                    vmstate_cli::ram::hexdump(at, bytes, &mut stdout)
                } else {
                    stdout.write_all(bytes)
                }
            });
            copied
                .and_then(|()| stdout.flush().map_err(RamError::Output))
                .map_err(|e| failed(e, "stdout"))?;
            unchanged(&file, &input)?;
            Ok(0)
        }
        Command::Diff { a, b } => {
            let (fa, fb) = (open(&a)?, open(&b)?);
            note(&a, &fa);
            note(&b, &fb);
            let da = description(&a, &fa)?;
            let db = match description(&b, &fb) {
                Ok(db) => db,
                Err(e) => {
                    // The first stream's verdict comes first.
                    parse(&a, &fa, "diff")?;
                    return Err(e);
                }
            };
            let spool = vmstate_cli::input::scratch_file()
                .map_err(|e| Failure::Output(format!("temporary file: {e}")))?;
            // Both streams are walked side by side, their pages compared as they are read;
            // differences go to stdout once the walks are done, what was compared to stderr.
            let mut progress = Progress::new("diff", fa.bytes().len() + fb.bytes().len());
            let mut at = [0, 0];
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let compared = vmstate_cli::diff::diff_walked(
                (fa.bytes(), da, fa.stream_start() as u64),
                (fb.bytes(), db, fb.stream_start() as u64),
                spool,
                &mut |d| writeln!(out, "{d}"),
                &mut |side, offset| {
                    let (input, i) = match side {
                        vmstate_cli::diff::Side::A => (&fa, 0),
                        vmstate_cli::diff::Side::B => (&fb, 1),
                    };
                    at[i] = offset;
                    progress.update(at[0] + at[1]);
                    input.release_before(offset);
                },
            );
            progress.finish();
            use vmstate_cli::diff::{DiffError, Side};
            let compared = match compared {
                Ok(c) => out.flush().map(|_| c).map_err(DiffError::Found),
                Err(e) => Err(e),
            };
            // An answer computed from bytes that changed under the walk is not an answer.
            unchanged(&a, &fa)?;
            unchanged(&b, &fb)?;
            let compared = compared.map_err(|e| match e {
                DiffError::Stream(side, e) => {
                    let path = if side == Side::A { &a } else { &b };
                    Failure::Invalid(format!("{}: {e}", path.display()))
                }
                DiffError::Spool(e) => Failure::Output(format!("temporary file: {e}")),
                DiffError::Found(e) => Failure::Output(format!("stdout: {e}")),
            })?;
            eprintln!("vmstate: {compared}");
            Ok(u8::from(compared.differences > 0))
        }
        Command::Check { input, dest, qemu } => {
            let (text, n) = vmstate_cli::dest::check_files(&input, &dest, qemu.as_deref())?;
            emit(&text)?;
            Ok(Exit::Problems(n).code())
        }
        Command::Caps {
            dump,
            streams,
            qemu,
            vendors,
            capabilities,
            output,
        } => {
            if dump.is_none() && streams.is_empty() {
                return Err(Failure::Usage(
                    "caps: give --dump DUMP.json, --stream STREAM or both".into(),
                ));
            }
            // Never write the destination over one of the inputs.
            let inputs: Vec<&Path> = dump.iter().chain(&streams).map(PathBuf::as_path).collect();
            let out = create_output(&output, &inputs)?;
            let args = vmstate_cli::dest::CapsArgs {
                dump: dump.as_deref(),
                streams: streams.iter().map(PathBuf::as_path).collect(),
                qemu: qemu.as_deref(),
                vendors,
                capabilities,
            };
            let d = vmstate_cli::dest::destination(&args)?;
            let mut json = serde_json::to_vec_pretty(&d)
                .map_err(|e| Failure::Invalid(format!("destination: {e}")))?;
            json.push(b'\n');
            finish_output(out, &output, &json)?;
            emit(&format!("{} -> {}\n", d.summary(), output.display()))?;
            Ok(0)
        }
        Command::StaticCheck {
            src,
            dst,
            reverse,
            files,
        } => {
            let (src, dst) = static_check_files(src, dst, files)?;
            let out = vmstate_cli::static_check::run(&src, &dst, reverse);
            emit(&shown_lines(&out.stdout))?;
            eprint!("{}", shown_lines(&out.stderr));
            Ok(out.status)
        }
    }
}

/// Text that quotes names from an input file as they are (static-check prints what
/// vmstate-static-checker.py prints): unchanged when every line is plain text, otherwise each
/// line shown through [`vmstate::Escaped`], so a name cannot drive the terminal.
fn shown_lines(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = |line: &str| vmstate::Escaped(line.as_bytes()).to_string() == line;
    if text.split('\n').all(plain) {
        return std::borrow::Cow::Borrowed(text);
    }
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| vmstate::Escaped(l.as_bytes()).to_string())
        .collect();
    std::borrow::Cow::Owned(lines.join("\n"))
}

/// The source and destination of `static-check`: `-s`/`-d` where given, the file arguments
/// (in that order) for the rest.
fn static_check_files(
    src: Option<PathBuf>,
    dst: Option<PathBuf>,
    files: Vec<PathBuf>,
) -> Result<(PathBuf, PathBuf), Failure> {
    let mut files = files.into_iter();
    let src = src.or_else(|| files.next());
    let dst = dst.or_else(|| files.next());
    match (src, dst, files.next()) {
        (Some(s), Some(d), None) => Ok((s, d)),
        (_, _, Some(extra)) => Err(Failure::Usage(format!(
            "static-check: unexpected argument {} (give SRC and DST once each)",
            extra.display()
        ))),
        (None, _, _) => Err(Failure::Usage(
            "static-check: missing the source dump (SRC or -s SRC)".into(),
        )),
        (_, None, _) => Err(Failure::Usage(
            "static-check: missing the destination dump (DST or -d DST)".into(),
        )),
    }
}

/// `rewrite --format`: v3 ↔ v4 conversion of the stream of `source` (`input`, or a stream
/// written from it) into `out` (the file `output`), written as it is converted (never a
/// whole-stream buffer), releasing `source` behind each pass.
fn convert(
    source: &Input,
    input: &Input,
    mut out: OutputFile,
    output: &Path,
    format: Option<Format>,
    no_crc: bool,
) -> Result<u8, Failure> {
    let format = format.unwrap_or(Format::V3);
    let opts = vmstate::v4::convert::UpgradeOptions {
        vendors: &[],
        crc: !no_crc,
    };
    let reached = &mut |at| source.release_before(at);
    v4tools::rewrite_to(source.bytes(), format, &opts, out.file(), reached).map_err(
        |e| match e {
            v4tools::ConvertError::Io(e) => Failure::Output(format!("{}: {e}", output.display())),
            v4tools::ConvertError::Invalid(m) => Failure::Invalid(m),
        },
    )?;
    // Before the output replaces anything (the caller names the input).
    input
        .unchanged()
        .map_err(|e| Failure::Unreadable(e.to_string()))?;
    out.commit()?;
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return ExitCode::from(exit.code());
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("vmstate: {f}");
            ExitCode::from(f.exit().code())
        }
    }
}
