//! The configuration record: `07 | len be32 | machine name | subsections`.
//!
//! It has no section id, idstr, version or footer (docs/V3-WIRE.md §4). Its subsections are
//! `configuration/target-page-bits` (be32), `configuration/capabilities` (be32 count, then that
//! many `str8` names) and `configuration/uuid` (16 bytes), all version 1, in that order.
//!
//! Hardening (docs/UNTRUSTED-INPUT.md §5): QEMU allocates the machine-name length before reading it;
//! here it is capped at [`MAX_MACHINE_NAME`] and borrowed. The capability count is capped at the
//! number of capabilities QEMU can validate, and every name must be one of them.

use super::{Reader, SubsectionHeader, record};
use crate::error::{Error, ErrorKind, Result};
use crate::sink::Sink;

/// Longest machine name accepted.
pub const MAX_MACHINE_NAME: u32 = 255;

/// Capabilities QEMU validates through the configuration record (7.2: `x-ignore-shared`;
/// 10.x adds `mapped-ram`).
pub const KNOWN_CAPABILITIES: &[&str] = &["x-ignore-shared", "mapped-ram"];

const TARGET_PAGE_BITS: &str = "configuration/target-page-bits";
const CAPABILITIES: &str = "configuration/capabilities";
const UUID: &str = "configuration/uuid";

/// The capability names listed in the record (borrowed, already validated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MigrationCapabilities<'a> {
    count: u32,
    raw: &'a [u8],
}

impl<'a> MigrationCapabilities<'a> {
    /// Number of capabilities.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The names, in stream order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut raw = self.raw;
        core::iter::from_fn(move || {
            let (&n, rest) = raw.split_first()?;
            let (name, rest) = rest.split_at_checked(n as usize)?;
            raw = rest;
            Some(name)
        })
    }
}

/// A parsed configuration record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configuration<'a> {
    /// Machine type name, e.g. `pc-i440fx-7.2`.
    pub machine: &'a [u8],
    /// `configuration/target-page-bits`, if sent.
    pub target_page_bits: Option<u32>,
    /// `configuration/capabilities`, if sent.
    pub capabilities: Option<MigrationCapabilities<'a>>,
    /// `configuration/uuid`, if sent.
    pub uuid: Option<[u8; 16]>,
}

impl<'a> Configuration<'a> {
    /// A record with only a machine name.
    pub const fn new(machine: &'a [u8]) -> Self {
        Configuration {
            machine,
            target_page_bits: None,
            capabilities: None,
            uuid: None,
        }
    }

    /// Reads the record, starting at its `0x07` byte.
    pub fn read(r: &mut Reader<'a>) -> Result<Self> {
        let at = r.offset();
        let marker = r.u8()?;
        if marker != record::CONFIGURATION {
            return Err(Error::new(
                at,
                ErrorKind::ConfigurationMissing { found: marker },
            ));
        }
        Self::read_body(r)
    }

    /// Reads the record after its `0x07` byte (the v4 configuration record's payload, FORMAT.md
    /// §2: the same bytes, so the same rules).
    pub fn read_body(r: &mut Reader<'a>) -> Result<Self> {
        let len_at = r.offset();
        let len = r.be32()?;
        if len > MAX_MACHINE_NAME {
            return Err(Error::new(
                len_at,
                ErrorKind::LengthTooLarge {
                    found: len as u64,
                    max: MAX_MACHINE_NAME as u64,
                },
            )
            .in_field("name"));
        }
        let machine = r.bytes(len as usize)?;
        let bad = machine.iter().enumerate();
        if let Some((i, &found)) = bad.clone().find(|(_, b)| !(0x20..0x7f).contains(*b)) {
            let at = len_at.saturating_add(4).saturating_add(i);
            return Err(Error::new(at, ErrorKind::BadNameByte { found }).in_field("name"));
        }
        let mut cfg = Configuration::new(machine);
        while let Some(name) = SubsectionHeader::peek_name(r, "configuration") {
            let at = r.offset();
            let dup = |f: &'static str| Error::new(at, ErrorKind::DuplicateSubsection { name: f });
            let h = SubsectionHeader::read(r)?;
            let name_str = match name {
                n if n == TARGET_PAGE_BITS.as_bytes() => TARGET_PAGE_BITS,
                n if n == CAPABILITIES.as_bytes() => CAPABILITIES,
                n if n == UUID.as_bytes() => UUID,
                n => {
                    return Err(Error::new(
                        at,
                        ErrorKind::UnknownSubsection {
                            name: crate::Name::new(n),
                        },
                    ));
                }
            };
            if h.version != 1 {
                let kind = if h.version > 1 {
                    ErrorKind::VersionTooNew {
                        found: h.version,
                        max: 1,
                    }
                } else {
                    ErrorKind::VersionTooOld {
                        found: h.version,
                        min: 1,
                    }
                };
                return Err(Error::new(at, kind).in_field(name_str));
            }
            match name_str {
                TARGET_PAGE_BITS => {
                    if cfg.target_page_bits.is_some() {
                        return Err(dup(TARGET_PAGE_BITS));
                    }
                    cfg.target_page_bits = Some(r.be32()?);
                }
                CAPABILITIES => {
                    if cfg.capabilities.is_some() {
                        return Err(dup(CAPABILITIES));
                    }
                    let count_at = r.offset();
                    let count = r.be32()?;
                    let max = KNOWN_CAPABILITIES.len() as u32;
                    if count > max {
                        return Err(Error::new(
                            count_at,
                            ErrorKind::LengthTooLarge {
                                found: count as u64,
                                max: max as u64,
                            },
                        )
                        .in_field("caps_count"));
                    }
                    let start = r.position();
                    for _ in 0..count {
                        let at = r.offset();
                        let cap = r.name()?;
                        if !KNOWN_CAPABILITIES.iter().any(|k| k.as_bytes() == cap) {
                            return Err(Error::new(
                                at,
                                ErrorKind::UnknownSubsection {
                                    name: crate::Name::new(cap),
                                },
                            )
                            .in_field("capabilities"));
                        }
                    }
                    let raw = r.buffer().get(start..r.position()).unwrap_or_default();
                    cfg.capabilities = Some(MigrationCapabilities { count, raw });
                }
                _ => {
                    if cfg.uuid.is_some() {
                        return Err(dup(UUID));
                    }
                    cfg.uuid = Some(r.array()?);
                }
            }
        }
        Ok(cfg)
    }

    /// Encoded length: what [`Configuration::emit`] writes (0 for a record it refuses).
    pub fn buffer_len(&self) -> usize {
        let mut n = crate::sink::CountingSink::new();
        let _ = self.emit(&mut n);
        n.count()
    }

    /// Writes the record; a machine name longer than [`MAX_MACHINE_NAME`] is refused before
    /// anything is written.
    pub fn emit<S: Sink + ?Sized>(&self, out: &mut S) -> core::result::Result<(), S::Error> {
        let len = u32::try_from(self.machine.len())
            .ok()
            .filter(|&l| l <= MAX_MACHINE_NAME)
            .ok_or_else(|| {
                Error::new(
                    out.position(),
                    ErrorKind::LengthTooLarge {
                        found: self.machine.len() as u64,
                        max: MAX_MACHINE_NAME as u64,
                    },
                )
            })?;
        let [a, b, c, d] = len.to_be_bytes();
        out.write(&[record::CONFIGURATION, a, b, c, d])?;
        out.write(self.machine)?;
        let sub = |name: &'static str| SubsectionHeader {
            name: name.as_bytes(),
            version: 1,
        };
        if let Some(bits) = self.target_page_bits {
            sub(TARGET_PAGE_BITS).emit(out)?;
            out.write(&bits.to_be_bytes())?;
        }
        if let Some(c) = &self.capabilities {
            sub(CAPABILITIES).emit(out)?;
            out.write(&c.count.to_be_bytes())?;
            out.write(c.raw)?;
        }
        if let Some(u) = &self.uuid {
            sub(UUID).emit(out)?;
            out.write(u)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Sink, SliceSink};

    const PC: &[u8] = b"\x07\x00\x00\x00\x0dpc-i440fx-7.2";

    #[test]
    fn golden_pc_configuration() {
        let mut r = Reader::new(PC, 8);
        let c = Configuration::read(&mut r).unwrap();
        assert_eq!(c, Configuration::new(b"pc-i440fx-7.2"));
        let mut out = [0xa5u8; 18];
        let mut sink = SliceSink::new(&mut out);
        c.emit(&mut sink).unwrap();
        assert_eq!(sink.finish(), c.buffer_len());
        assert_eq!(&out[..], PC);
        for n in 0..PC.len() {
            assert!(
                Configuration::read(&mut Reader::new(&PC[..n], 0))
                    .unwrap_err()
                    .is_incomplete()
            );
        }
    }

    #[test]
    fn subsections_round_trip_and_are_checked() {
        let mut s = [0u8; 128];
        let mut sink = SliceSink::new(&mut s);
        sink.write(PC).unwrap();
        let sub = |name: &'static str| SubsectionHeader {
            name: name.as_bytes(),
            version: 1,
        };
        sub(CAPABILITIES).emit(&mut sink).unwrap();
        sink.write(b"\x00\x00\x00\x01\x0fx-ignore-shared").unwrap();
        sub(UUID).emit(&mut sink).unwrap();
        sink.write(&[7; 16]).unwrap();
        let n = sink.finish();
        let c = Configuration::read(&mut Reader::new(&s[..n], 0)).unwrap();
        assert_eq!(c.uuid, Some([7; 16]));
        let caps = c.capabilities.unwrap();
        assert_eq!(
            caps.iter().collect::<heapless::Vec<_, 2>>().as_slice(),
            &[b"x-ignore-shared"]
        );
        let mut out = [0u8; 128];
        let mut sink = SliceSink::new(&mut out);
        c.emit(&mut sink).unwrap();
        assert_eq!(sink.written(), &s[..n]);

        // An unknown capability, an oversized count and an unknown subsection are rejected.
        let mut bad = s;
        bad[PC.len() + 2 + CAPABILITIES.len() + 4 + 4 + 1] = b'y';
        assert!(Configuration::read(&mut Reader::new(&bad[..n], 0)).is_err());
        let mut bad = s;
        bad[PC.len() + 2 + CAPABILITIES.len() + 4 + 3] = 9;
        assert!(matches!(
            Configuration::read(&mut Reader::new(&bad[..n], 0))
                .unwrap_err()
                .kind,
            ErrorKind::LengthTooLarge { found: 9, max: 2 }
        ));
        let mut bad = s;
        bad[PC.len() + 2 + 14] = b'X'; // "configuration/Xapabilities"
        assert!(matches!(
            Configuration::read(&mut Reader::new(&bad[..n], 0))
                .unwrap_err()
                .kind,
            ErrorKind::UnknownSubsection { .. }
        ));
    }

    #[test]
    fn huge_machine_name_is_refused_without_reading_it() {
        let b = b"\x07\xff\xff\xff\xffpc";
        let e = Configuration::read(&mut Reader::new(b, 8)).unwrap_err();
        assert_eq!(e.offset, 9);
        assert!(matches!(e.kind, ErrorKind::LengthTooLarge { .. }));
    }
}
