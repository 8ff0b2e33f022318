//! The 8-byte file header: magic `QEVM` and the file version.

use super::{be32, check_len};
use crate::error::{Error, ErrorKind, Result};

mod field {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const LEN: usize = 8;
}

/// `QEMU_VM_FILE_MAGIC`, "QEVM".
pub const MAGIC: u32 = 0x5145_564d;
/// QEMU's one file version.
pub const VERSION_V3: u32 = 3;
/// vmstate's extension (docs/FORMAT.md). QEMU rejects it.
pub const VERSION_V4: u32 = 4;

/// A view over the file header.
#[derive(Debug, Clone, Copy)]
pub struct StreamHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> StreamHeader<T> {
    /// Length of the header in bytes.
    pub const LEN: usize = field::LEN;

    /// Wraps `buffer` without checks; accessors read bytes past its end as 0.
    pub const fn new_unchecked(buffer: T) -> Self {
        StreamHeader { buffer }
    }

    /// Wraps `buffer` after checking its length (the magic and version are checked by
    /// [`StreamHeader::validate`]).
    pub fn new_checked(buffer: T) -> Result<Self> {
        check_len(buffer.as_ref(), field::LEN, 0)?;
        Ok(StreamHeader { buffer })
    }

    /// The magic number.
    pub fn magic(&self) -> u32 {
        be32(self.buffer.as_ref(), field::MAGIC)
    }

    /// The file version.
    pub fn version(&self) -> u32 {
        be32(self.buffer.as_ref(), field::VERSION)
    }

    /// Checks magic and version (3 or 4); returns the version.
    pub fn validate(&self) -> Result<u32> {
        if self.magic() != MAGIC {
            return Err(Error::new(
                0,
                ErrorKind::BadMagic {
                    found: self.magic(),
                },
            ));
        }
        match self.version() {
            v @ (VERSION_V3 | VERSION_V4) => Ok(v),
            found => Err(Error::new(4, ErrorKind::UnsupportedFileVersion { found })),
        }
    }
}

/// The file header for `version`, as written.
pub const fn header_bytes(version: u32) -> [u8; field::LEN] {
    let [a, b, c, d] = MAGIC.to_be_bytes();
    let [e, f, g, h] = version.to_be_bytes();
    [a, b, c, d, e, f, g, h]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let bytes = [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3];
        let h = StreamHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(h.validate().unwrap(), 3);
        assert_eq!(header_bytes(3), bytes);
    }

    #[test]
    fn rejects_v2_bad_magic_and_short() {
        let v2 = [0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 2];
        assert_eq!(
            StreamHeader::new_checked(&v2[..])
                .unwrap()
                .validate()
                .unwrap_err()
                .kind,
            ErrorKind::UnsupportedFileVersion { found: 2 }
        );
        let bad = [0x51, 0x45, 0x56, 0x4e, 0, 0, 0, 3];
        assert!(matches!(
            StreamHeader::new_checked(&bad[..])
                .unwrap()
                .validate()
                .unwrap_err()
                .kind,
            ErrorKind::BadMagic { found: 0x5145_564e }
        ));
        for n in 0..8 {
            assert!(
                StreamHeader::new_checked(&v2[..n])
                    .unwrap_err()
                    .is_incomplete()
            );
        }
    }
}
