//! Zero-copy views over the records of a savevm stream.
//!
//! Each record kind has a *view* over borrowed bytes (`T: AsRef<[u8]>`) in the style of smoltcp's
//! `wire` module, and, where the record is variable-length, a small *repr* with `parse`,
//! `buffer_len` and `emit`.
//!
//! Contract: once `new_checked` succeeded, no accessor of a view panics; `emit` never panics on a
//! buffer of at least `buffer_len()` bytes (it returns [`ErrorKind::BufferTooSmall`] otherwise).
//! Byte ranges are named once in each module's private `field` module.

// Tests index freely: a panic there is a failed test.
#![cfg_attr(
    not(test),
    deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)
)]

pub mod command;
pub mod config;
pub mod header;
pub mod reader;
pub mod section;
pub mod subsection;
pub mod trailer;

pub use command::Command;
pub use config::Configuration;
pub use header::StreamHeader;
pub use reader::Reader;
pub use section::{SectionFooter, SectionHeader, SectionKind};
pub use subsection::SubsectionHeader;
pub use trailer::Trailer;

use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;

/// Record type bytes (QEMU 7.2 `migration/savevm.h`).
pub mod record {
    /// End of the record sequence.
    pub const EOF: u8 = 0x00;
    /// First part of a live (iterative) section: full header.
    pub const SECTION_START: u8 = 0x01;
    /// Middle part of a live section: section id only.
    pub const SECTION_PART: u8 = 0x02;
    /// Last part of a live section: section id only.
    pub const SECTION_END: u8 = 0x03;
    /// A whole VMState section: full header.
    pub const SECTION_FULL: u8 = 0x04;
    /// A subsection inside a VMState body.
    pub const SUBSECTION: u8 = 0x05;
    /// The JSON description trailer after EOF.
    pub const VMDESCRIPTION: u8 = 0x06;
    /// The configuration record right after the file header.
    pub const CONFIGURATION: u8 = 0x07;
    /// A command record.
    pub const COMMAND: u8 = 0x08;
    /// The section footer.
    pub const SECTION_FOOTER: u8 = 0x7e;
}

/// The length byte of a counted name (`str8`) about to be written at `at`: 1..=255 bytes, else
/// [`ErrorKind::EmptyName`] or [`ErrorKind::NameTooLong`].
pub(crate) fn name_len(name: &[u8], at: usize) -> Result<u8> {
    match u8::try_from(name.len()) {
        Ok(0) => Err(Error::new(at, ErrorKind::EmptyName)),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::new(at, ErrorKind::NameTooLong { len: name.len() })),
    }
}

/// Writes a counted name (`len u8 | bytes`), refused as [`name_len`] says before anything is
/// written.
pub(crate) fn emit_name<S: Sink + ?Sized>(
    out: &mut S,
    name: &[u8],
) -> core::result::Result<(), S::Error> {
    out.write(&[name_len(name, out.position())?])?;
    out.write(name)
}

/// Checks that `buf` holds at least `len` bytes, as a `Truncated` error at `base`.
pub(crate) fn check_len(buf: &[u8], len: usize, base: usize) -> Result<()> {
    match len.checked_sub(buf.len()) {
        Some(needed @ 1..) => Err(Error::new(
            base.saturating_add(buf.len()),
            ErrorKind::Truncated {
                needed,
                available: 0,
            },
        )),
        _ => Ok(()),
    }
}

/// The byte at `at` of a view's buffer; 0 past its end, where a checked view never reads.
pub(crate) fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// The be16 at `at` of a view's buffer; 0 past its end, where a checked view never reads.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |&a| u16::from_be_bytes(a))
}

/// The be32 at `at` of a view's buffer; 0 past its end, where a checked view never reads.
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |&a| u32::from_be_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SliceSink;

    /// The counted-name writer behind v4 headers, subsection frames and RAM block names: a
    /// name over 255 bytes is too long, not empty.
    #[test]
    fn counted_names_are_1_to_255_bytes() {
        let mut out = [0xa5u8; 300];
        let mut sink = SliceSink::new(&mut out);
        let e = emit_name(&mut sink, &[b'x'; 300]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NameTooLong { len: 300 });
        assert_eq!(
            emit_name(&mut sink, b"").unwrap_err().kind,
            ErrorKind::EmptyName
        );
        emit_name(&mut sink, b"pc.ram").unwrap();
        assert_eq!(sink.written(), b"\x06pc.ram");
    }
}
