//! The exit statuses of `vmstate`, in one place. Each number means one thing for every
//! command, so a script can tell an answer from a failure:
//!
//! | status | meaning |
//! |--------|---------|
//! | 0 | success: written; `verify`: valid; `diff`: no differences; `check`, `static-check`: no problems |
//! | 1–100 | the answer is "no": `check` and `static-check`: the number of problems (100 means 100 or more); `verify`: problems found (1); `diff`: the streams differ (1) |
//! | 101 | invalid input: an input is not a valid stream, dump or destination file (`verify` reports an undecodable stream as problems, 1) |
//! | 102 | usage: bad arguments, or an output that would overwrite an input, a directory or a socket |
//! | 103 | an input cannot be read (missing, permission denied, read error) |
//! | 104 | an output cannot be written (output file, standard output) |
//!
//! `static-check` keeps the exit status of QEMU's vmstate-static-checker.py where that is a
//! problem count below 100; where the script stops (exit 1 for a file that is not a dump,
//! 2 for a file it cannot open) `vmstate` exits 101 and 103, which cannot be mistaken for
//! counts.

use crate::output::OutputError;
use std::fmt;
use std::path::Path;

/// Why `vmstate` exits: [`Exit::code`] is the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command succeeded and found nothing wrong.
    Success,
    /// 1–100: the number of problems (or differences) found, capped at [`Exit::MAX_COUNT`].
    Problems(usize),
    /// 101: an input is not what it should be.
    Invalid,
    /// 102: bad arguments, or an output the command refuses to write.
    Usage,
    /// 103: an input cannot be read.
    Unreadable,
    /// 104: an output (file or standard output) cannot be written.
    Output,
}

impl Exit {
    /// The largest problem count an exit status carries: 100 means 100 or more.
    pub const MAX_COUNT: u8 = 100;

    /// The process exit status.
    pub const fn code(self) -> u8 {
        match self {
            Exit::Success | Exit::Problems(0) => 0,
            Exit::Problems(n) if n >= Self::MAX_COUNT as usize => Self::MAX_COUNT,
            Exit::Problems(n) => n as u8,
            Exit::Invalid => 101,
            Exit::Usage => 102,
            Exit::Unreadable => 103,
            Exit::Output => 104,
        }
    }

    /// [`Exit::code`] as `std::process::ExitStatus::code` reports it.
    pub const fn status(self) -> i32 {
        self.code() as i32
    }

    /// One line per status for `--help`.
    pub const HELP: &'static str = "Exit status: 0 success (valid, no differences, no \
        problems); 1-100 the answer is no: check and static-check exit with the number of \
        problems (100: 100 or more), verify 1 (problems found), diff 1 (the streams differ); \
        101 invalid input; 102 usage error or refused output; 103 an input cannot be read; \
        104 an output cannot be written.";
}

/// Why a command failed: the error every library function of a command returns. The kind
/// decides the exit status ([`Failure::exit`], the one place it is mapped) and the message is
/// what `vmstate` prints after `vmstate: ` ([`fmt::Display`]).
#[derive(Debug)]
pub enum Failure {
    /// An input is not what it should be ([`Exit::Invalid`]; printed as `invalid input: …`).
    Invalid(String),
    /// Bad arguments, or an output the command refuses to write ([`Exit::Usage`]).
    Usage(String),
    /// An input cannot be read ([`Exit::Unreadable`]).
    Unreadable(String),
    /// An output cannot be written ([`Exit::Output`]).
    Output(String),
}

impl Failure {
    /// An input at `path` that cannot be read.
    pub fn io(path: &Path, e: std::io::Error) -> Failure {
        Failure::Unreadable(format!("{}: {e}", path.display()))
    }

    /// The exit status this failure ends `vmstate` with.
    pub const fn exit(&self) -> Exit {
        match self {
            Failure::Invalid(_) => Exit::Invalid,
            Failure::Usage(_) => Exit::Usage,
            Failure::Unreadable(_) => Exit::Unreadable,
            Failure::Output(_) => Exit::Output,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(m) => write!(f, "invalid input: {m}"),
            Failure::Usage(m) | Failure::Unreadable(m) | Failure::Output(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

impl From<OutputError> for Failure {
    fn from(e: OutputError) -> Failure {
        match e {
            OutputError::Io { .. } => Failure::Output(e.to_string()),
            OutputError::IsInput { .. } | OutputError::Refused { .. } => {
                Failure::Usage(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_never_overlap() {
        assert_eq!(Exit::Problems(0).code(), 0);
        assert_eq!(Exit::Problems(1).code(), 1);
        assert_eq!(Exit::Problems(100).code(), 100);
        assert_eq!(Exit::Problems(255).code(), 100);
        assert_eq!(Exit::Problems(usize::MAX).code(), 100);
        let reserved = [Exit::Invalid, Exit::Usage, Exit::Unreadable, Exit::Output];
        for (i, a) in reserved.iter().enumerate() {
            assert!(a.code() > Exit::MAX_COUNT);
            for b in &reserved[i + 1..] {
                assert_ne!(a.code(), b.code());
            }
        }
    }
}
