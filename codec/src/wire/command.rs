//! COMMAND records: `08 | cmd be16 | len be16 | len bytes`.
//!
//! A precopy stream to a file carries none. The reader parses them structurally; a loader
//! rejects every command it does not implement (see `untrusted-input.md` §5).

use super::Reader;
use crate::error::{Error, ErrorKind, Result};

/// Command numbers of QEMU 7.2 (`enum qemu_vm_cmd`) plus QEMU 10's SWITCHOVER_START.
pub mod cmd {
    /// Opens the return path (len 0).
    pub const OPEN_RETURN_PATH: u16 = 1;
    /// Ping with a be32 value (len 4).
    pub const PING: u16 = 2;
    /// Postcopy advise (len 0 or 16).
    pub const POSTCOPY_ADVISE: u16 = 3;
    /// Postcopy listen (len 0).
    pub const POSTCOPY_LISTEN: u16 = 4;
    /// Postcopy run (len 0).
    pub const POSTCOPY_RUN: u16 = 5;
    /// Postcopy RAM discard ranges (variable).
    pub const POSTCOPY_RAM_DISCARD: u16 = 6;
    /// A packaged sub-stream follows (len 4: be32 length).
    pub const PACKAGED: u16 = 7;
    /// Enable COLO (len 0).
    pub const ENABLE_COLO: u16 = 8;
    /// Postcopy resume (len 0).
    pub const POSTCOPY_RESUME: u16 = 9;
    /// Receive bitmap request (variable).
    pub const RECV_BITMAP: u16 = 10;
    /// QEMU 10.x switchover start (len 0); QEMU 7.2 rejects it.
    pub const SWITCHOVER_START: u16 = 11;
}

/// A parsed COMMAND record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// Command number.
    pub cmd: u16,
    /// Payload.
    pub data: &'a [u8],
}

impl<'a> Command<'a> {
    /// Reads a command record (including the `0x08` byte); checks fixed lengths of known
    /// commands and rejects unknown command numbers, as QEMU 7.2 does.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let _marker = r.u8()?;
        let cmd = r.be16()?;
        let len = r.be16()?;
        let fixed: Option<&[u16]> = match cmd {
            cmd::OPEN_RETURN_PATH
            | cmd::POSTCOPY_LISTEN
            | cmd::POSTCOPY_RUN
            | cmd::ENABLE_COLO
            | cmd::POSTCOPY_RESUME
            | cmd::SWITCHOVER_START => Some(&[0]),
            cmd::PING | cmd::PACKAGED => Some(&[4]),
            cmd::POSTCOPY_ADVISE => Some(&[0, 16]),
            cmd::POSTCOPY_RAM_DISCARD | cmd::RECV_BITMAP => None,
            _ => return Err(Error::new(at, ErrorKind::UnsupportedCommand { cmd, len })),
        };
        if let Some(ok) = fixed
            && !ok.contains(&len)
        {
            return Err(Error::new(at, ErrorKind::UnsupportedCommand { cmd, len }));
        }
        let data = r.bytes(len as usize)?;
        Ok(Command { cmd, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let mut r = Reader::new(&[8, 0, 2, 0, 4, 0, 0, 0, 9], 0);
        let c = Command::read(&mut r).unwrap();
        assert_eq!((c.cmd, c.data), (2, &[0, 0, 0, 9][..]));
        let mut r = Reader::new(&[8, 0, 2, 0, 3, 0, 0, 0], 0);
        assert!(matches!(
            Command::read(&mut r).unwrap_err().kind,
            ErrorKind::UnsupportedCommand { cmd: 2, len: 3 }
        ));
        let mut r = Reader::new(&[8, 0, 12, 0, 0], 0);
        assert!(Command::read(&mut r).is_err());
        let mut r = Reader::new(&[8, 0, 2, 0, 4, 0], 0);
        assert!(Command::read(&mut r).unwrap_err().is_incomplete());
    }
}
