//! vmstate v4: the savevm protocol proposed on qemu-devel in September 2009 (non-linear device
//! versions with vendor ids and minors), with length-prefixed records and subsections and an
//! optional per-section CRC-32C. The wire format is specified in `docs/FORMAT.md`; section
//! numbers below (§n) refer to it.
//!
//! * [`wire`]: the stream header with its vendor chain (§1), the record frame (§2), section
//!   records (§4, §5), subsection frames (§6) and a record iterator ([`wire::Records4`]) that
//!   checks frames and checksums before handing out any body byte.
//! * [`convert`]: v3 → v4 ([`convert::upgrade`]) with a [`convert::BodySplit`] telling where
//!   each body and its top-level subsections end, and v4 → v3 ([`convert::downgrade`]), which
//!   refuses when a vendor minor or a must-understand vendor feature is in use.
//! * [`minor`]: a section's emitted minor per vendor level, computed from which vendor-tagged
//!   subsections are `needed`.
//! * [`StreamWriter`]: writes a v4 stream of typed device state (the header's vendor chain and
//!   CRC choice taken once); [`max_record_len`] sizes a buffer for one section of a table.
//! * [`load_section`]: loading a typed device straight from a v4 section record.
//! * [`crc32c`]: the CRC-32C of the section checksums (our own slicing tables, built at
//!   compile time).
//! * [`caps`]: what a destination supports ([`caps::Capabilities`], postcard-encodable), what a
//!   stream or a live device set requires ([`caps::SectionRequirement`]) and
//!   [`caps::check`], which lists every incompatibility.
//!
//! Contract (as for the v3 codec): no input makes any function here panic, read out of bounds
//! or loop without consuming input; nothing allocates; errors carry the absolute byte offset and
//! the section.

// The codec's `Error` is `Copy` and carries names by value (no allocation, no borrow of the
// input), so it is large by design.

pub mod caps;
pub mod convert;
pub mod crc32c;
mod load;
pub mod minor;
pub mod wire;
mod writer;

pub use load::load_section;
pub use writer::{StreamWriter, max_record_len, max_record_len_for};

use crate::error::{Name, SectionContext};
use core::fmt;

/// The file version a v4 stream carries after the magic.
///
/// ```
/// let mut buf = [0u8; 16];
/// let header = vmstate::v4::wire::Header::new(&[], false)?;
/// header.emit(&mut vmstate::SliceSink::new(&mut buf))?;
/// assert_eq!(buf[4..8], vmstate::v4::VERSION.to_be_bytes()); // "QEVM" 00 00 00 04
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub const VERSION: u32 = crate::wire::header::VERSION_V4;

/// Most downstream vendor levels a stream may declare (the protocol minor's upper bound).
///
/// ```
/// use vmstate::v4::{MAX_LEVELS, wire::{Header, Vendor}};
/// let v = Vendor { id: vmstate::VendorId::new("com.example"), protocol_minor: 0 };
/// assert!(Header::new(&[v; MAX_LEVELS], true).is_ok());
/// assert!(Header::new(&[v; MAX_LEVELS + 1], true).is_err());
/// ```
pub const MAX_LEVELS: usize = 8;

/// A section's minor per downstream vendor level (index 0 = level 1).
///
/// ```
/// use vmstate::v4::{Minors, wire::Section};
/// // A section of a stream with two vendor levels, using the second vendor's minor 3.
/// let minors = Minors::from_slice(&[0, 3]).unwrap();
/// assert_eq!(minors.len(), 2);
/// assert_eq!(minors[1], 3);
/// ```
pub type Minors = heapless::Vec<u16, MAX_LEVELS>;

/// What went wrong in the v4 layer.
///
/// ```
/// use vmstate::v4::{Error, wire::Records4};
/// // A header declaring nine vendor levels: refused at the protocol minor's offset.
/// let bytes = b"QEVM\0\0\0\x04\0\0\0\0\x09";
/// let e = Records4::new(bytes).next().unwrap().unwrap_err();
/// assert_eq!(e, Error::TooManyLevels { offset: 12, found: 9 });
/// assert_eq!(e.to_string(), "offset 12: 9 vendor levels declared, at most 8 supported");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A problem the v3 codec reports (truncation, bad names, buffer sizes, v3 structure).
    Codec(crate::Error),
    /// A section record's CRC-32C does not match its bytes: the record is corrupt and none of
    /// its state may be used.
    Checksum {
        /// Offset of the record's type byte.
        offset: usize,
        /// The record's type byte (a section kind, or `07` for the configuration record…).
        kind: u8,
        /// The section (as far as its header could be read; empty for other records).
        section: SectionContext,
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },
    /// Reserved flag bits are set (header flags or a subsection's flags).
    ReservedFlags {
        /// Offset of the flags.
        offset: usize,
        /// The flags read.
        found: u32,
    },
    /// A vendor id in the header is not a reverse FQDN ([`crate::VendorId`]).
    BadVendorId {
        /// Offset of the id's length byte.
        offset: usize,
        /// The id read.
        found: Name,
    },
    /// The header declares more vendor levels than [`MAX_LEVELS`].
    TooManyLevels {
        /// Offset of the protocol minor byte.
        offset: usize,
        /// The protocol minor read.
        found: u8,
    },
    /// A vendor tag names level 0 (upstream has no vendor slot) or a level above the stream's
    /// protocol minor.
    BadVendorLevel {
        /// Offset of the level byte.
        offset: usize,
        /// The level read.
        level: u8,
        /// Levels the stream declares.
        levels: u8,
    },
    /// A vendor subsection claims a minor above its section's minor for that vendor level.
    MinorInconsistent {
        /// Offset of the subsection's minor.
        offset: usize,
        /// The subsection's vendor level.
        level: u8,
        /// The subsection's minor.
        minor: u16,
        /// The section's minor at that level.
        section_minor: u16,
    },
    /// A record's length does not match its contents (a field runs past the frame, or bytes
    /// are left over).
    FrameLength {
        /// Offset of the inconsistency.
        offset: usize,
        /// The length the frame declared.
        declared: usize,
    },
    /// The v3 → v4 splitter does not know this section, so its subsections cannot be framed.
    NotSplit {
        /// The section.
        section: SectionContext,
    },
    /// Downgrade to v3 refused: the stream uses a vendor feature a v3 (upstream) reader cannot
    /// load.
    Refused(Refusal),
    /// Load refused: the section uses a vendor minor this build does not support (another
    /// vendor at that level, or a higher minor than its description knows).
    Unsupported(Refusal),
}

/// Why a v4 stream cannot become a v3 stream (see [`convert::downgrade`]).
///
/// ```
/// use vmstate::schema::Subsection;
/// use vmstate::v4::{StreamWriter, convert::downgrade_obstacle, wire::{Header, Vendor}};
/// use vmstate::{SectionId, SliceSink, State, VendorId, VendorTag, Vmsd, field};
/// # #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
/// # #[repr(C)]
/// # struct Dev { a: u8, td: u8 }
/// const TD: Vmsd = Vmsd::new("dev/td", 1, 1, 2).fields(&[field!(Dev, td)]);
/// const KVM: VendorTag = VendorTag { level: 1, minor: 1, must_understand: true };
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, 2)
///     .fields(&[field!(Dev, a)])
///     .subsections(&[Subsection::new(&TD, |s| s[1] != 0).feature_of(VendorId::new("org.linux-kvm"), KVM)]);
/// # impl State for Dev { const VMSD: &'static Vmsd = &DEV; }
/// let kvm = Vendor { id: VendorId::new("org.linux-kvm"), protocol_minor: 0 };
/// let mut buf = [0u8; 128];
/// let mut w = StreamWriter::new(&Header::new(&[kvm], true)?, SliceSink::new(&mut buf))?;
/// let id = SectionId { section_id: 1, idstr: b"dev", instance_id: 0 };
/// w.section(id, &Dev { a: 1, td: 7 })?; // td in use: minor 1 at level 1
/// w.eof()?;
/// let n = w.into_inner().finish();
/// let r = downgrade_obstacle(&buf[..n])?.expect("upstream cannot load dev/td");
/// assert_eq!((r.level, r.minor), (1, 1));
/// assert!(r.vendor.eq_bytes(b"org.linux-kvm"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Refusal {
    /// Offset of the section record (or subsection frame) in the v4 stream.
    pub offset: usize,
    /// The device section.
    pub section: SectionContext,
    /// The vendor level (1-based) whose feature is in use.
    pub level: u8,
    /// That level's vendor id.
    pub vendor: Name,
    /// The section's minor at that level.
    pub minor: u16,
    /// The vendor subsection (feature) responsible, when the stream names one.
    pub feature: Option<Name>,
}

impl From<crate::Error> for Error {
    fn from(e: crate::Error) -> Self {
        Error::Codec(e)
    }
}

impl Error {
    /// This error with every offset at or past `from` moved by `to - from`: for an error found
    /// in a copy of a record placed at `from` in a buffer, the offsets in the stream the record
    /// came from (at `to`). A live reader uses it.
    ///
    /// ```
    /// use vmstate::v4::Error;
    /// let e = Error::FrameLength { offset: 20, declared: 4 };
    /// assert_eq!(e.relocated(13, 1000), Error::FrameLength { offset: 1007, declared: 4 });
    /// ```
    #[must_use]
    pub fn relocated(mut self, from: usize, to: usize) -> Self {
        let moved = |o: &mut usize| {
            if *o >= from {
                *o = o.saturating_sub(from).saturating_add(to);
            }
        };
        match &mut self {
            Error::Codec(e) => moved(&mut e.offset),
            Error::Checksum { offset, .. }
            | Error::ReservedFlags { offset, .. }
            | Error::BadVendorId { offset, .. }
            | Error::TooManyLevels { offset, .. }
            | Error::BadVendorLevel { offset, .. }
            | Error::MinorInconsistent { offset, .. }
            | Error::FrameLength { offset, .. } => moved(offset),
            Error::Refused(r) | Error::Unsupported(r) => moved(&mut r.offset),
            Error::NotSplit { .. } => {}
        }
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device {} (instance {}) uses vendor {} (level {}) minor {}",
            self.section.idstr, self.section.instance_id, self.vendor, self.level, self.minor
        )?;
        match &self.feature {
            Some(n) => write!(f, " through subsection {n}"),
            None => Ok(()),
        }?;
        write!(f, " at offset {}", self.offset)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Codec(e) => write!(f, "{e}"),
            Error::Checksum {
                offset,
                kind,
                section,
                stored,
                computed,
            } => {
                write!(f, "offset {offset}: ")?;
                match *kind {
                    k if crate::wire::section::SectionKind::from_byte(k).is_some() => write!(
                        f,
                        "section '{}' (id {}, instance {})",
                        section.idstr, section.section_id, section.instance_id
                    )?,
                    crate::wire::record::CONFIGURATION => f.write_str("configuration record")?,
                    crate::wire::record::COMMAND => f.write_str("COMMAND record")?,
                    k => write!(f, "record type {k:#04x}")?,
                }
                write!(
                    f,
                    ": CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
            Error::ReservedFlags { offset, found } => {
                write!(f, "offset {offset}: reserved flag bits set in {found:#x}")
            }
            Error::BadVendorId { offset, found } => write!(
                f,
                "offset {offset}: vendor id {found} is not a reverse FQDN (labels of a-z, 0-9 \
                 and '-' separated by '.')"
            ),
            Error::TooManyLevels { offset, found } => write!(
                f,
                "offset {offset}: {found} vendor levels declared, at most {MAX_LEVELS} supported"
            ),
            Error::BadVendorLevel {
                offset,
                level,
                levels,
            } => write!(
                f,
                "offset {offset}: vendor level {level} outside 1..={levels}"
            ),
            Error::MinorInconsistent {
                offset,
                level,
                minor,
                section_minor,
            } => write!(
                f,
                "offset {offset}: subsection minor {minor} at vendor level {level} exceeds the \
                 section's minor {section_minor}"
            ),
            Error::FrameLength { offset, declared } => write!(
                f,
                "offset {offset}: contents disagree with the record length {declared}"
            ),
            Error::NotSplit { section } => write!(
                f,
                "section {} (id {}, instance {}): no description says where its subsections \
                 start",
                section.idstr, section.section_id, section.instance_id
            ),
            Error::Refused(r) => write!(f, "cannot write as v3: {r}"),
            Error::Unsupported(r) => write!(f, "cannot load: {r}"),
        }
    }
}

impl core::error::Error for Error {}

/// Result of the v4 layer.
///
/// ```
/// fn header_levels(bytes: &[u8]) -> vmstate::v4::Result<usize> {
///     let mut r = vmstate::wire::reader::Reader::new(bytes, 0);
///     Ok(vmstate::v4::wire::Header::read(&mut r)?.levels())
/// }
/// assert_eq!(header_levels(b"QEVM\0\0\0\x04\0\0\0\0\0"), Ok(0));
/// ```
pub type Result<T> = core::result::Result<T, Error>;
