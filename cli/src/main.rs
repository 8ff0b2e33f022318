//! `vmstate`: inspect, rewrite and diff QEMU migration streams.
//!
//! Exit status: 0 success, 1 invalid input (or, for `diff`, the streams differ), 2 usage or
//! I/O error.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vmstate_cli::generic::NoCheck;
use vmstate_cli::inspect::{self, Style};
use vmstate_cli::{Stream, pretty_json};

#[derive(Parser)]
#[command(
    name = "vmstate",
    version,
    about = "Inspect and rewrite QEMU migration streams",
    after_help = "Exit status: 0 success, 1 invalid input (diff: the streams differ), \
                  2 usage or I/O error."
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
    /// Decode a stream, apply edits and write it back.
    Rewrite {
        /// The stream to read.
        input: PathBuf,
        /// Where to write.
        output: PathBuf,
        /// An edit: IDSTR[INSTANCE].FIELD=VALUE (decimal or 0x-hex), e.g. i8259[0].imr=0x5a.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        set: Vec<String>,
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

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::io(path, e))
}

fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Stream<'a>, Failure> {
    Stream::parse(bytes).map_err(|e| Failure::Invalid(format!("{}: {e}", path.display())))
}

fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Failure::Usage(format!("stdout: {e}")))
}

fn run(cli: Cli) -> Result<u8, Failure> {
    match cli.command {
        Command::Inspect { json, desc, file } => {
            let bytes = read(&file)?;
            if desc {
                let d = vmstate_cli::model::find_description(&bytes)
                    .map_err(|e| Failure::Invalid(format!("{}: {e}", file.display())))?
                    .ok_or_else(|| {
                        Failure::Invalid(format!("{}: no VMDESCRIPTION trailer", file.display()))
                    })?;
                emit(&(pretty_json(&d.1.to_json()) + "\n"))?;
                return Ok(0);
            }
            let stream = parse(&file, &bytes)?;
            if json {
                let v = stream.analyze_state().ok_or_else(|| {
                    Failure::Invalid(format!("{}: no VMDESCRIPTION trailer", file.display()))
                })?;
                emit(&(pretty_json(&v) + "\n"))?;
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
        Command::Rewrite { input, output, set } => {
            let bytes = read(&input)?;
            let mut stream = parse(&input, &bytes)?;
            for s in &set {
                stream
                    .set(s, &NoCheck)
                    .map_err(|e| Failure::Usage(format!("--set {e}")))?;
            }
            // Write beside the target and rename, so a failed write (or OUT == IN) never
            // leaves a half-written stream under the output name.
            let mut tmp = output.clone().into_os_string();
            tmp.push(".vmstate-tmp");
            let tmp = PathBuf::from(tmp);
            let written = std::fs::File::create(&tmp)
                .and_then(|f| stream.write_to(f))
                .and_then(|_| std::fs::rename(&tmp, &output));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(Failure::io(&output, e));
            }
            Ok(0)
        }
        Command::Extract { input, dir } => {
            let bytes = read(&input)?;
            let stream = parse(&input, &bytes)?;
            let files =
                vmstate_cli::extract::extract(&stream, &dir).map_err(|e| Failure::io(&dir, e))?;
            let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
            emit(&list)?;
            Ok(0)
        }
        Command::Diff { a, b } => {
            let (ba, bb) = (read(&a)?, read(&b)?);
            let (sa, sb) = (parse(&a, &ba)?, parse(&b, &bb)?);
            let d = vmstate_cli::diff::diff(&sa, &sb);
            let mut text = String::new();
            for x in &d {
                text.push_str(&format!("{}: {} -> {}\n", x.path, x.a, x.b));
            }
            emit(&text)?;
            Ok(u8::from(!d.is_empty()))
        }
    }
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
