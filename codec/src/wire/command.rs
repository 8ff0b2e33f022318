//! COMMAND records (`QEMU_VM_COMMAND`, type `0x08`), the one place they are parsed.
//!
//! ```text
//! 08 | cmd be16 | len be16 | payload[len] | packaged[n]   (packaged: PACKAGED only, n = be32 payload)
//! ```
//!
//! QEMU (`migration/savevm.c`, `loadvm_process_command`, identical in 7.2 and 10.0 apart from
//! the table's last entry) refuses a command number of 0 or `>= MIG_CMD_MAX` ("MIG_CMD 0x%x
//! unknown"), then a length that differs from the command's fixed length in `mig_cmd_args`,
//! and leaves variable lengths to each handler. [`CommandId`] is that table;
//! [`CommandRecord`] is a view over the record bytes; [`Command`] is the parsed record, whose
//! [`Command::parse`] applies the table and the handlers' length rules:
//!
//! | cmd | name | payload length |
//! |---|---|---|
//! | 1 | OPEN_RETURN_PATH | 0 |
//! | 2 | PING | 4 (be32 value) |
//! | 3 | POSTCOPY_ADVISE | 0 or 16 (be64 host page summary, be64 target page size) |
//! | 4 | POSTCOPY_LISTEN | 0 |
//! | 5 | POSTCOPY_RUN | 0 |
//! | 6 | POSTCOPY_RAM_DISCARD | 20..=65535: `00`, block name str8, `00`, 16-byte ranges |
//! | 7 | PACKAGED | 4 (be32 `n`; `n` bytes of a packaged sub-stream follow the record) |
//! | 8 | ENABLE_COLO | 0 |
//! | 9 | POSTCOPY_RESUME | 0 |
//! | 10 | RECV_BITMAP | 2..=256: block name str8 filling the payload |
//! | 11 | SWITCHOVER_START | 0 (QEMU 10.0; 7.2's `MIG_CMD_MAX` is 11, so it refuses it) |
//!
//! A PACKAGED record carries its sub-stream as opaque bytes ([`Command::packaged`]); QEMU caps
//! its length at `MAX_VM_CMD_PACKAGED_SIZE` = `UINT32_MAX` ([`PACKAGED_MAX`], the same in 7.2
//! and 10.0), so the operative rule is that the declared bytes are present: a cut record is
//! [`ErrorKind::Truncated`] ("need more input" for a streaming reader), never a guess. The
//! sub-stream is not walked here (docs/UNTRUSTED-INPUT.md §5: no recursive loader).
//!
//! Contract: once [`CommandRecord::new_checked`] succeeded, no accessor panics; [`Command::emit`]
//! never panics. Nothing here allocates.

use super::{Reader, be16, record};
use crate::error::{Error, ErrorKind, Expected, Result};
use crate::sink::Sink;

/// Byte ranges of the record *after* its type byte (the type byte is framing: `08` in v3, the
/// record frame in v4).
mod field {
    pub const CMD: usize = 0;
    pub const LEN: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// Length of the v3 record header: type byte, command number, payload length.
pub const HEADER_LEN: usize = 1 + field::PAYLOAD;

/// QEMU's cap on a PACKAGED sub-stream (`MAX_VM_CMD_PACKAGED_SIZE`, `UINT32_MAX` in QEMU 7.2 and
/// 10.0): every be32 length is within it, so a PACKAGED record is bounded by the input only.
pub const PACKAGED_MAX: u32 = u32::MAX;

/// A command number QEMU knows (`enum qemu_vm_cmd`, QEMU 10.0), with its `mig_cmd_args` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u16)]
pub enum CommandId {
    /// `MIG_CMD_OPEN_RETURN_PATH` (1): open the return path to the source.
    OpenReturnPath = 1,
    /// `MIG_CMD_PING` (2): answer a be32 value on the return path.
    Ping = 2,
    /// `MIG_CMD_POSTCOPY_ADVISE` (3): postcopy may follow.
    PostcopyAdvise = 3,
    /// `MIG_CMD_POSTCOPY_LISTEN` (4): start listening for postcopy pages.
    PostcopyListen = 4,
    /// `MIG_CMD_POSTCOPY_RUN` (5): start the guest (postcopy).
    PostcopyRun = 5,
    /// `MIG_CMD_POSTCOPY_RAM_DISCARD` (6): ranges of one block to discard.
    PostcopyRamDiscard = 6,
    /// `MIG_CMD_PACKAGED` (7): a packaged sub-stream follows.
    Packaged = 7,
    /// `MIG_CMD_ENABLE_COLO` (8): enable COLO.
    EnableColo = 8,
    /// `MIG_CMD_POSTCOPY_RESUME` (9): resume a paused postcopy.
    PostcopyResume = 9,
    /// `MIG_CMD_RECV_BITMAP` (10): ask for a block's received bitmap.
    RecvBitmap = 10,
    /// `MIG_CMD_SWITCHOVER_START` (11, QEMU 10.0): the source starts switchover. Machine types
    /// 10.0 and later send `08 00 0b 00 00` right before the RAM section's END record.
    SwitchoverStart = 11,
}

/// What a command's payload length may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PayloadLen {
    /// Exactly this many bytes (`mig_cmd_args[cmd].len`).
    Fixed(u16),
    /// One of two lengths (POSTCOPY_ADVISE: 0 or 16).
    Either(u16, u16),
    /// Within this inclusive range (the handler's bounds; `mig_cmd_args` says -1).
    Range(u16, u16),
}

impl PayloadLen {
    /// Whether `len` is allowed.
    pub const fn allows(self, len: u16) -> bool {
        match self {
            PayloadLen::Fixed(n) => len == n,
            PayloadLen::Either(a, b) => len == a || len == b,
            PayloadLen::Range(lo, hi) => lo <= len && len <= hi,
        }
    }

    /// As an [`Expected`], for errors.
    pub const fn expected(self) -> Expected {
        match self {
            PayloadLen::Fixed(n) => Expected::Equal(n as u64),
            PayloadLen::Either(0, 16) => Expected::OneOf(&[0, 16]),
            PayloadLen::Either(..) => Expected::Rule("one of two lengths"),
            PayloadLen::Range(lo, hi) => Expected::Range(lo as u64, hi as u64),
        }
    }
}

impl CommandId {
    /// Every command, in number order.
    pub const ALL: [CommandId; 11] = [
        CommandId::OpenReturnPath,
        CommandId::Ping,
        CommandId::PostcopyAdvise,
        CommandId::PostcopyListen,
        CommandId::PostcopyRun,
        CommandId::PostcopyRamDiscard,
        CommandId::Packaged,
        CommandId::EnableColo,
        CommandId::PostcopyResume,
        CommandId::RecvBitmap,
        CommandId::SwitchoverStart,
    ];

    /// The command with number `n`, if QEMU 10.0 knows it (0 is `MIG_CMD_INVALID`).
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "n is 1..=11 in this arm (a const fn has no `get`)"
    )]
    pub const fn from_u16(n: u16) -> Option<CommandId> {
        match n {
            1..=11 => Some(CommandId::ALL[n as usize - 1]),
            _ => None,
        }
    }

    /// The command number on the wire.
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// QEMU's name (`mig_cmd_args[cmd].name`), e.g. `SWITCHOVER_START`.
    pub const fn name(self) -> &'static str {
        match self {
            CommandId::OpenReturnPath => "OPEN_RETURN_PATH",
            CommandId::Ping => "PING",
            CommandId::PostcopyAdvise => "POSTCOPY_ADVISE",
            CommandId::PostcopyListen => "POSTCOPY_LISTEN",
            CommandId::PostcopyRun => "POSTCOPY_RUN",
            CommandId::PostcopyRamDiscard => "POSTCOPY_RAM_DISCARD",
            CommandId::Packaged => "PACKAGED",
            // Missing from QEMU's `mig_cmd_args`, so its length is checked against 0.
            CommandId::EnableColo => "ENABLE_COLO",
            CommandId::PostcopyResume => "POSTCOPY_RESUME",
            CommandId::RecvBitmap => "RECV_BITMAP",
            CommandId::SwitchoverStart => "SWITCHOVER_START",
        }
    }

    /// The payload lengths QEMU's loader accepts: `mig_cmd_args` for fixed lengths (ENABLE_COLO
    /// has no entry there, so its length must be 0), the handler's bounds for variable ones.
    pub const fn payload_len(self) -> PayloadLen {
        match self {
            CommandId::Ping | CommandId::Packaged => PayloadLen::Fixed(4),
            CommandId::PostcopyAdvise => PayloadLen::Either(0, 16),
            // version, name length, name (>= 1 byte), NUL, at least one be64 pair:
            // `len < 1 + 1 + 1 + 1 + 2 * 8` is refused.
            CommandId::PostcopyRamDiscard => PayloadLen::Range(20, u16::MAX),
            // A counted block name filling the payload (`len != cnt + 1` is refused).
            CommandId::RecvBitmap => PayloadLen::Range(2, 256),
            CommandId::OpenReturnPath
            | CommandId::PostcopyListen
            | CommandId::PostcopyRun
            | CommandId::EnableColo
            | CommandId::PostcopyResume
            | CommandId::SwitchoverStart => PayloadLen::Fixed(0),
        }
    }

    /// The first QEMU version `(major, minor)` whose loader knows this command, among the
    /// versions this project models (7.2 and later): `(10, 0)` for SWITCHOVER_START (QEMU 7.2
    /// refuses it: "MIG_CMD 0xb unknown (len 0x0)"), `(7, 2)` for every other command (they are
    /// all older than 7.2). A destination QEMU `v` accepts the command number when
    /// `v >= first_qemu_version()`; see [`CommandId::known_by`].
    pub const fn first_qemu_version(self) -> (u16, u16) {
        match self {
            CommandId::SwitchoverStart => (10, 0),
            _ => (7, 2),
        }
    }

    /// Whether the loader of QEMU `major.minor` knows this command number (compares with
    /// [`CommandId::first_qemu_version`]).
    pub const fn known_by(self, major: u16, minor: u16) -> bool {
        let (m, n) = self.first_qemu_version();
        major > m || (major == m && minor >= n)
    }
}

impl core::fmt::Display for CommandId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A view over a COMMAND record after its type byte: command number, payload length, payload
/// and, for PACKAGED, the packaged bytes. (v3 frames it with the byte `08`, v4 with a record
/// frame, docs/FORMAT.md §12.)
#[derive(Debug, Clone, Copy)]
pub struct CommandRecord<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CommandRecord<T> {
    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        CommandRecord { buffer }
    }

    /// Wraps `buffer`, checking that the command number and length, the declared payload and
    /// (for PACKAGED with a 4-byte payload) the packaged bytes are all present. `base` is the
    /// absolute offset of `buffer[0]` (the command number); a short buffer is
    /// [`ErrorKind::Truncated`] at the offset where bytes are missing. The command itself is
    /// judged by [`Command::parse`].
    pub fn new_checked(buffer: T, base: usize) -> Result<Self> {
        let b = buffer.as_ref();
        let mut r = Reader::new(b, base);
        r.skip(2)?;
        let len = r.be16()?;
        r.skip(len as usize)?;
        let n = CommandRecord::new_unchecked(b).packaged_len_field();
        if n > PACKAGED_MAX as u64 || usize::try_from(n).is_err() {
            return Err(Error::new(
                base.saturating_add(field::PAYLOAD),
                ErrorKind::LengthTooLarge {
                    found: n,
                    max: PACKAGED_MAX as u64,
                },
            ));
        }
        r.skip(n as usize)?;
        Ok(CommandRecord { buffer })
    }

    /// The command number.
    pub fn cmd(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CMD)
    }

    /// The declared payload length.
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LEN)
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD..field::PAYLOAD.saturating_add(self.payload_len().into())
    }

    /// The be32 length of a PACKAGED record's sub-stream, 0 for any other record.
    fn packaged_len_field(&self) -> u64 {
        match (self.cmd(), self.buffer.as_ref().get(self.payload_range())) {
            (7, Some(&[a, b, c, d])) => u32::from_be_bytes([a, b, c, d]) as u64,
            _ => 0,
        }
    }

    /// Length of what this view covers: command number, length, payload, packaged bytes.
    pub fn len(&self) -> usize {
        self.payload_range()
            .end
            .saturating_add(self.packaged_len_field() as usize)
    }

    /// Never true: a checked view holds at least the command number and length.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<'a> CommandRecord<&'a [u8]> {
    /// The payload, borrowed from the buffer.
    pub fn payload(&self) -> &'a [u8] {
        self.buffer.get(self.payload_range()).unwrap_or_default()
    }

    /// A PACKAGED record's sub-stream (empty for other records), borrowed from the buffer.
    pub fn packaged(&self) -> &'a [u8] {
        let start = self.payload_range().end;
        let end = start.saturating_add(self.packaged_len_field() as usize);
        self.buffer.get(start..end).unwrap_or_default()
    }
}

/// A parsed COMMAND record: a command QEMU knows, with a payload length its loader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The command.
    pub id: CommandId,
    /// The payload (`len` bytes).
    pub payload: &'a [u8],
    /// For PACKAGED: the packaged sub-stream that follows the record (opaque); else empty.
    pub packaged: &'a [u8],
}

impl<'a> Command<'a> {
    /// Judges a checked view: the command number must be one QEMU 10.0 knows
    /// ([`ErrorKind::UnknownCommand`]) and the payload must have a length and, for
    /// POSTCOPY_RAM_DISCARD and RECV_BITMAP, the shape QEMU's handler accepts
    /// ([`ErrorKind::CommandLength`], [`ErrorKind::Invalid`]). `base` is the absolute offset of
    /// the view's first byte (the command number).
    pub fn parse(v: &CommandRecord<&'a [u8]>, base: usize) -> Result<Self> {
        let (cmd, len) = (v.cmd(), v.payload_len());
        let id = CommandId::from_u16(cmd)
            .ok_or(Error::new(base, ErrorKind::UnknownCommand { cmd, len }))?;
        let rule = id.payload_len();
        if !rule.allows(len) {
            return Err(Error::new(
                base.saturating_add(field::LEN),
                ErrorKind::CommandLength {
                    cmd: id,
                    found: len,
                },
            ));
        }
        let payload = v.payload();
        let at = base.saturating_add(field::PAYLOAD);
        match id {
            CommandId::PostcopyRamDiscard => check_discard(payload, at)?,
            CommandId::RecvBitmap => {
                let n = payload.first().copied().unwrap_or(0) as usize;
                super::reader::check_name(payload.get(1..).unwrap_or(&[]), at)?;
                // The length rule (>= 2) leaves at least one byte after the name's length.
                let rest = payload.len().saturating_sub(1);
                if n != rest {
                    return Err(Error::new(
                        at,
                        ErrorKind::Invalid {
                            expected: Expected::Equal(rest as u64),
                            found: n as u64,
                        },
                    )
                    .in_field("RECV_BITMAP block name length"));
                }
            }
            _ => {}
        }
        Ok(Command {
            id,
            payload,
            packaged: v.packaged(),
        })
    }

    /// Reads a v3 record from its `0x08` type byte: the type byte, then
    /// [`Command::read_body`].
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let kind = r.u8()?;
        if kind != record::COMMAND {
            return Err(Error::new(at, ErrorKind::UnexpectedRecord { found: kind }));
        }
        Self::read_body(r)
    }

    /// Reads a record after its type byte: [`CommandRecord::new_checked`], then
    /// [`Command::parse`]; advances `r` past the packaged bytes of a PACKAGED record.
    pub fn read_body(r: &mut Reader<'a>) -> Result<Self> {
        let base = r.offset();
        let v = CommandRecord::new_checked(r.rest(), base)?;
        let c = Command::parse(&v, base)?;
        r.skip(v.len())?;
        Ok(c)
    }

    /// Length of the record on the wire: header, payload, packaged bytes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
            .saturating_add(self.payload.len())
            .saturating_add(self.packaged.len())
    }

    /// Writes the record exactly as QEMU does (`qemu_savevm_command_send`, then for PACKAGED
    /// the sub-stream). A payload longer than 65535 bytes is [`ErrorKind::LengthTooLarge`].
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        let len = u16::try_from(self.payload.len()).map_err(|_| {
            Error::new(
                out.position(),
                ErrorKind::LengthTooLarge {
                    found: self.payload.len() as u64,
                    max: u16::MAX as u64,
                },
            )
        })?;
        let [n0, n1] = self.id.number().to_be_bytes();
        let [l0, l1] = len.to_be_bytes();
        out.write(&[record::COMMAND, n0, n1, l0, l1])?;
        out.write(self.payload)?;
        out.write(self.packaged)
    }
}

/// POSTCOPY_RAM_DISCARD's payload as `loadvm_postcopy_ram_handle_discard` reads it: version 0,
/// a counted block name, a NUL, then whole be64 (start, length) pairs.
fn check_discard(p: &[u8], at: usize) -> Result<()> {
    let bad = |off: usize, field, expected, found: u64| {
        Error::new(
            at.saturating_add(off),
            ErrorKind::Invalid { expected, found },
        )
        .in_field(field)
    };
    let version = p.first().copied().unwrap_or(0xff);
    if version != 0 {
        return Err(bad(
            0,
            "POSTCOPY_RAM_DISCARD version",
            Expected::Equal(0),
            version as u64,
        ));
    }
    let mut r = Reader::new(p.get(1..).unwrap_or(&[]), at.saturating_add(1));
    // The length rule (>= 20) guarantees the name's length byte and a few bytes after it.
    let name = r
        .name()
        .map_err(|e| e.in_field("POSTCOPY_RAM_DISCARD block"))?;
    let nul_at = name.len().saturating_add(2);
    match p.get(nul_at) {
        Some(0) => {}
        other => {
            return Err(bad(
                nul_at,
                "POSTCOPY_RAM_DISCARD terminator",
                Expected::Equal(0),
                other.map_or(u64::MAX, |&b| b as u64),
            ));
        }
    }
    // The terminator was found at `nul_at`, so `p` is longer than that.
    let ranges = p.len().saturating_sub(nul_at).saturating_sub(1);
    if !ranges.is_multiple_of(16) {
        return Err(bad(
            nul_at.saturating_add(1),
            "POSTCOPY_RAM_DISCARD ranges",
            Expected::Rule("whole 16-byte (start, length) pairs"),
            ranges as u64,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sink::SliceSink;

    fn read(bytes: &[u8], base: usize) -> Result<(Command<'_>, usize)> {
        let mut r = Reader::new(bytes, base);
        let c = Command::read(&mut r)?;
        Ok((c, r.position()))
    }

    #[test]
    fn the_table_is_qemus() {
        for (i, id) in CommandId::ALL.iter().enumerate() {
            assert_eq!(id.number() as usize, i + 1);
            assert_eq!(CommandId::from_u16(id.number()), Some(*id));
        }
        assert_eq!(CommandId::from_u16(0), None);
        assert_eq!(CommandId::from_u16(12), None);
        assert_eq!(CommandId::SwitchoverStart.first_qemu_version(), (10, 0));
        assert!(!CommandId::SwitchoverStart.known_by(7, 2));
        assert!(!CommandId::SwitchoverStart.known_by(9, 2));
        assert!(CommandId::SwitchoverStart.known_by(10, 0));
        assert!(CommandId::SwitchoverStart.known_by(11, 0));
        assert!(CommandId::Packaged.known_by(7, 2));
        assert_eq!(CommandId::Packaged.first_qemu_version(), (7, 2));
    }

    #[test]
    fn fixed_and_variable_lengths() {
        let (c, n) = read(&[8, 0, 2, 0, 4, 0, 0, 0, 9, 0xee], 0).unwrap();
        assert_eq!(
            (c.id, c.payload, c.packaged, n),
            (CommandId::Ping, &[0, 0, 0, 9][..], &[][..], 9)
        );
        let e = read(&[8, 0, 2, 0, 3, 0, 0, 0], 100).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                103,
                ErrorKind::CommandLength {
                    cmd: CommandId::Ping,
                    found: 3
                }
            )
        );
        let e = read(&[8, 0, 11, 0, 1, 0], 0).unwrap_err();
        assert!(matches!(
            e.kind,
            ErrorKind::CommandLength {
                cmd: CommandId::SwitchoverStart,
                found: 1,
                ..
            }
        ));
        // POSTCOPY_ADVISE: 0 or 16.
        assert!(read(&[8, 0, 3, 0, 0], 0).is_ok());
        let mut advise = std::vec![8, 0, 3, 0, 16];
        advise.extend_from_slice(&[0; 16]);
        assert!(read(&advise, 0).is_ok());
        assert!(read(&[8, 0, 3, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
        // RECV_BITMAP: a counted name filling the payload.
        assert!(read(b"\x08\x00\x0a\x00\x07\x06pc.ram", 0).is_ok());
        assert!(read(b"\x08\x00\x0a\x00\x07\x05pc.ram", 0).is_err());
        // POSTCOPY_RAM_DISCARD: version, name, NUL, whole pairs.
        let mut d = std::vec![8, 0, 6, 0, 25, 0, 6];
        d.extend_from_slice(b"pc.ram\0");
        d.extend_from_slice(&[0; 16]);
        let (c, _) = read(&d, 0).unwrap();
        assert_eq!(c.id, CommandId::PostcopyRamDiscard);
        d[5] = 1;
        assert_eq!(
            read(&d, 0).unwrap_err().field,
            Some("POSTCOPY_RAM_DISCARD version")
        );
    }

    #[test]
    fn unknown_numbers_are_refused_with_number_and_offset() {
        for cmd in [0u16, 12, 0x100, 0xffff] {
            let b = [&[8u8][..], &cmd.to_be_bytes(), &[0, 0]].concat();
            let e = read(&b, 40).unwrap_err();
            // At the command number, right after the type byte.
            assert_eq!(
                (e.offset, e.kind),
                (41, ErrorKind::UnknownCommand { cmd, len: 0 })
            );
        }
    }

    #[test]
    fn packaged_data_must_be_present() {
        let rec = [8, 0, 7, 0, 4, 0, 0, 0, 3, 0xaa, 0xbb, 0xcc, 0x00];
        let (c, n) = read(&rec, 0).unwrap();
        assert_eq!(
            (c.id, c.packaged, n),
            (CommandId::Packaged, &[0xaa, 0xbb, 0xcc][..], 12)
        );
        assert_eq!(c.buffer_len(), 12);
        // Every prefix is "need more input", at the offset where bytes are missing.
        for k in 0..12 {
            let e = read(&rec[..k], 1000).unwrap_err();
            assert!(e.is_incomplete(), "{k}: {e}");
            assert!(e.offset >= 1000 && e.offset <= 1000 + k, "{k}: {e}");
        }
        // The largest length QEMU allows, announced in a short input.
        let e = read(&[8, 0, 7, 0, 4, 0xff, 0xff, 0xff, 0xff, 1], 0).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (
                9,
                ErrorKind::Truncated {
                    needed: u32::MAX as usize,
                    available: 1
                }
            )
        );
        // A PACKAGED record whose payload is not 4 bytes has no packaged data; its length is
        // refused.
        assert!(matches!(
            read(&[8, 0, 7, 0, 0], 0).unwrap_err().kind,
            ErrorKind::CommandLength {
                cmd: CommandId::Packaged,
                found: 0,
                ..
            }
        ));
    }

    #[test]
    fn emit_writes_back_what_was_read() {
        let rec = [8, 0, 7, 0, 4, 0, 0, 0, 2, 0x01, 0x02];
        let (c, _) = read(&rec, 0).unwrap();
        let mut buf = [0xa5u8; 16];
        let mut s = SliceSink::new(&mut buf);
        c.emit(&mut s).unwrap();
        assert_eq!(s.finish(), c.buffer_len());
        assert_eq!(buf[..rec.len()], rec);
        assert_eq!(buf[rec.len()], 0xa5);
        let mut small = [0u8; 4];
        assert!(c.emit(&mut SliceSink::new(&mut small)).is_err());
    }
}
