//! `vmstate`: inspect, verify, rewrite, diff and check QEMU migration streams.
//!
//! Exit status: 0 success, 1 invalid input (or, for `diff`, the streams differ), 2 usage or
//! I/O error; `check` and `static-check` exit with the number of problems found (255 when the
//! inputs cannot be read).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmstate_cli::generic::PcCheck;
use vmstate_cli::input::{Input, Progress};
use vmstate_cli::inspect::{self, Style};
use vmstate_cli::model::ParseOptions;
use vmstate_cli::v4tools::{self, Format};
use vmstate_cli::verify::DestSpec;
use vmstate_cli::{Stream, pretty_json};
use vmstate_devices::machine::QemuBuild;
use vmstate_devices::pc::{MAX_ISA_SERIAL, Pc};

#[derive(Parser)]
#[command(
    name = "vmstate",
    version,
    about = "Inspect, verify, rewrite and check QEMU migration streams",
    after_help = "Exit status: 0 success, 1 invalid input (diff: the streams differ), \
                  2 usage or I/O error; check and static-check: the number of problems \
                  (255: unreadable input)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Write desc.json, state.json, RAM block images and section bodies into a directory.
    Extract {
        /// The stream.
        input: PathBuf,
        /// Output directory (created if needed).
        dir: PathBuf,
    },
    /// List field-level differences between two streams (exit 1 if they differ).
    Diff {
        /// First stream.
        a: PathBuf,
        /// Second stream.
        b: PathBuf,
    },
    /// Check whether a stream (v3 or v4) can migrate to a destination (exit: the number of
    /// incompatibilities).
    Check {
        /// The stream.
        input: PathBuf,
        /// The destination's capabilities file (from `vmstate caps`).
        #[arg(long)]
        dest: PathBuf,
    },
    /// Write a destination's capabilities file from a -dump-vmstate JSON and/or a stream.
    Caps {
        /// QEMU's `-dump-vmstate` output of the destination build.
        #[arg(long)]
        dump: Option<PathBuf>,
        /// A stream the destination build wrote (v3 or v4).
        #[arg(long)]
        stream: Option<PathBuf>,
        /// The destination's vendor chain, outermost first (e.g. org.linux-kvm).
        #[arg(long = "vendor", value_name = "ID")]
        vendors: Vec<String>,
        /// Where to write the capabilities (postcard).
        output: PathBuf,
    },
    /// Compare two -dump-vmstate JSON files like QEMU's vmstate-static-checker.py (exit: the
    /// number of problems).
    StaticCheck {
        /// The source build's dump.
        #[arg(long)]
        src: PathBuf,
        /// The destination build's dump.
        #[arg(long)]
        dst: PathBuf,
        /// Swap source and destination.
        #[arg(long)]
        reverse: bool,
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

/// What went wrong, and the exit status it maps to.
enum Failure {
    Invalid(String),
    Usage(String),
}

impl Failure {
    fn io(path: &Path, e: std::io::Error) -> Failure {
        Failure::Usage(format!("{}: {e}", path.display()))
    }
}

fn open(path: &Path) -> Result<Input, Failure> {
    Input::open(path).map_err(|e| Failure::io(path, e))
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
    let bytes = input.bytes();
    let invalid =
        |e: vmstate_cli::model::StreamError| Failure::Invalid(format!("{}: {e}", path.display()));
    let description = vmstate_cli::model::find_description(bytes)
        .map_err(invalid)?
        .map(|(_, d)| d);
    let mut progress = Progress::new(label, bytes.len());
    let s = Stream::parse_observed(bytes, description, options, &mut |at| {
        progress.update(at);
        input.release_before(at);
    })
    .map_err(invalid)?;
    progress.finish();
    Ok(s)
}

fn emit(text: &str) -> Result<(), Failure> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(text: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text)
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Usage(format!("stdout: {e}")))
}

/// Writes `output` through a temporary file beside it and a rename, so a failed write (or
/// OUT == IN) never leaves a half-written file under the output name.
fn write_atomically(
    output: &Path,
    write: impl FnOnce(std::fs::File) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let mut tmp = output.to_path_buf().into_os_string();
    tmp.push(".vmstate-tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp)
        .and_then(write)
        .and_then(|_| std::fs::rename(&tmp, output));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Failure::io(output, e));
    }
    Ok(())
}

/// A count-style exit status (`check`, `static-check`): the text goes to stdout, or to stderr
/// when the inputs could not be read.
fn counted(text: String, code: i32) -> Result<u8, Failure> {
    if code == 255 && text.starts_with("error:") {
        eprint!("vmstate: {text}");
    } else {
        emit(&text)?;
    }
    Ok(code.clamp(0, 255) as u8)
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Inspect { json, desc, file } => {
            let input = open(&file)?;
            let bytes = input.bytes();
            if desc {
                let d = vmstate_cli::model::find_description(bytes)
                    .map_err(|e| Failure::Invalid(format!("{}: {e}", file.display())))?
                    .ok_or_else(|| {
                        Failure::Invalid(format!("{}: no VMDESCRIPTION trailer", file.display()))
                    })?;
                emit(&(pretty_json(&d.1.to_json()) + "\n"))?;
                return Ok(0);
            }
            // The state JSON shows no page counts.
            let options = ParseOptions { count_pages: !json };
            let stream = parse_with(&file, &input, "inspect", options)?;
            if json {
                let mut out = std::io::stdout().lock();
                let written = vmstate_cli::analyze::write_state_to(&stream, &mut out)
                    .and_then(|w| out.flush().map(|_| w))
                    .map_err(|e| Failure::Usage(format!("stdout: {e}")))?;
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
            } else {
                let style = if std::io::stdout().is_terminal() {
                    Style::TERMINAL
                } else {
                    Style::PLAIN
                };
                let name = file.display().to_string();
                emit(&inspect::render(&stream, &name, style))?;
            }
            Ok(0)
        }
        Command::Verify { file, dest } => {
            dest.spec().explicit().map_err(Failure::Usage)?;
            let input = open(&file)?;
            let bytes = input.bytes();
            let mut progress = Progress::new("verify", bytes.len());
            let report = vmstate_cli::verify::verify(bytes, &dest.spec(), &mut |at| {
                progress.update(at);
                input.release_before(at);
            })
            .map_err(Failure::Usage)?;
            progress.finish();
            let name = file.display();
            let mut out = String::new();
            if !report.unchecked.is_empty() {
                out.push_str(&format!(
                    "{name}: not checked ({}): {}\n",
                    if report.described {
                        "no typed model and not in the description"
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
            if set.is_empty() && format.is_some() {
                return convert(file.bytes(), &output, format, no_crc);
            }
            let mut stream = parse(&input, &file, "rewrite")?;
            if !set.is_empty() {
                let machine = stream.configuration.as_ref().map(|c| c.machine);
                let resolved = dest.spec().resolve(machine).map_err(Failure::Usage)?;
                // Edits are checked against a known destination only (never a guessed one).
                let Some(mut config) = resolved.config else {
                    let why = resolved.problem.unwrap_or_default();
                    return Err(Failure::Invalid(format!("{}: {why}", input.display())));
                };
                if resolved.serial_from_stream {
                    config.serial_ports = MAX_ISA_SERIAL;
                }
                let check = PcCheck(Pc::new(config));
                for s in &set {
                    stream
                        .set(s, &check)
                        .map_err(|e| Failure::Usage(format!("--set {e}")))?;
                }
            }
            if format.is_some() {
                let bytes = stream
                    .to_bytes()
                    .map_err(|e| Failure::Invalid(format!("{}: {e}", input.display())))?;
                return convert(&bytes, &output, format, no_crc);
            }
            let mut progress = Progress::new("rewrite", file.bytes().len());
            write_atomically(&output, |f| {
                stream.write_observed(f, &mut |at| {
                    progress.update(at);
                    file.release_before(at);
                })
            })?;
            Ok(0)
        }
        Command::Extract { input, dir } => {
            let file = open(&input)?;
            let stream = parse(&input, &file, "extract")?;
            let mut progress = Progress::new("extract", file.bytes().len());
            let files = vmstate_cli::extract::extract_observed(&stream, &dir, &mut |at| {
                progress.update(at);
                file.release_before(at);
            })
            .map_err(|e| Failure::io(&dir, e))?;
            progress.finish();
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            emit(&list)?;
            Ok(0)
        }
        Command::Diff { a, b } => {
            let (fa, fb) = (open(&a)?, open(&b)?);
            let (sa, sb) = (parse(&a, &fa, "diff")?, parse(&b, &fb, "diff")?);
            let d = vmstate_cli::diff::diff(&sa, &sb);
            let mut text = String::new();
            for x in &d {
                text.push_str(&format!("{}: {} -> {}\n", x.path, x.a, x.b));
            }
            emit(&text)?;
            Ok(u8::from(!d.is_empty()))
        }
        Command::Check { input, dest } => {
            let (text, code) = v4tools::check_files(&input, &dest);
            counted(text, code)
        }
        Command::Caps {
            dump,
            stream,
            vendors,
            output,
        } => {
            if dump.is_none() && stream.is_none() {
                return Err(Failure::Usage(
                    "caps: give --dump DUMP.json, --stream STREAM or both".into(),
                ));
            }
            let (text, code) =
                v4tools::caps_files(dump.as_deref(), stream.as_deref(), &vendors, &output);
            let message = || text.trim_start_matches("error: ").trim_end().to_string();
            match code {
                0 => {
                    emit(&text)?;
                    Ok(0)
                }
                1 => Err(Failure::Invalid(message())),
                _ => Err(Failure::Usage(message())),
            }
        }
        Command::StaticCheck { src, dst, reverse } => {
            let (text, code) = vmstate_cli::static_check::run(&src, &dst, reverse);
            counted(text, code)
        }
    }
}

/// `rewrite --format`: v3 ↔ v4 conversion of `bytes` into `output`.
fn convert(
    bytes: &[u8],
    output: &Path,
    format: Option<Format>,
    no_crc: bool,
) -> Result<u8, Failure> {
    let format = format.unwrap_or(Format::V3);
    let out = if no_crc && format == Format::V4 && v4tools::stream_version(bytes) == Some(3) {
        let split = v4tools::TrailerSplit::from_stream(bytes).map_err(Failure::Invalid)?;
        let opts = vmstate::v4::convert::UpgradeOptions {
            vendors: &[],
            crc: false,
        };
        v4tools::upgrade_with(bytes, split.clone(), split, &opts).map_err(|e| e.to_string())
    } else {
        v4tools::rewrite(bytes, format)
    }
    .map_err(Failure::Invalid)?;
    write_atomically(output, |mut f| f.write_all(&out))?;
    Ok(0)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Failure::Invalid(m)) => {
            eprintln!("vmstate: invalid input: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("vmstate: {m}");
            ExitCode::from(2)
        }
    }
}
