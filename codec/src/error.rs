//! The codec's one error type.
//!
//! Every error says *where* (absolute byte offset into the input, the section and instance being
//! decoded, the field) and *what* (expected versus found). The type is `Copy` and small enough to
//! return by value; names read from the input are kept as a bounded [`Name`] copy so the error
//! does not borrow the input.

use core::fmt;

/// A short, `Copy` copy of a name read from the stream (idstr, subsection or block name).
///
/// Names on the wire are at most 255 bytes; errors keep the first [`Name::CAPACITY`] bytes and
/// remember whether the name was cut.
///
/// ```
/// use vmstate::Name;
/// let n = Name::new(b"0000:00:03.0/virtio-net-device");
/// assert!(n.is_truncated());
/// assert_eq!(n.as_bytes().len(), Name::CAPACITY);
/// assert!(Name::new(b"i8259").eq_bytes(b"i8259"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    len: u8,
    truncated: bool,
    bytes: [u8; Name::CAPACITY],
}

impl Name {
    /// How many bytes of a name an error keeps.
    pub const CAPACITY: usize = 24;

    /// An empty name.
    pub const EMPTY: Name = Name {
        len: 0,
        truncated: false,
        bytes: [0; Name::CAPACITY],
    };

    /// Copies (a prefix of) `name`.
    pub const fn new(name: &[u8]) -> Name {
        let mut out = Name::EMPTY;
        let n = if name.len() > Name::CAPACITY {
            out.truncated = true;
            Name::CAPACITY
        } else {
            name.len()
        };
        if let (Some((kept, _)), Some((to, _))) =
            (name.split_at_checked(n), out.bytes.split_at_mut_checked(n))
        {
            to.copy_from_slice(kept);
        }
        out.len = n as u8;
        out
    }

    /// The kept bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len as usize).unwrap_or_default()
    }

    /// Whether the original name was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// Whether the kept bytes equal `other` (and nothing was cut).
    pub fn eq_bytes(&self, other: &[u8]) -> bool {
        !self.truncated && self.as_bytes() == other
    }
}

/// Displays bytes from the input as text that cannot drive a terminal: the one escaping rule
/// for every name a stream or trailer supplies (idstrs, field, subsection and RAM block names,
/// JSON paths) on its way to a terminal or a log.
///
/// Printable ASCII and printable UTF-8 pass as they are. Escaped: C0 controls (`\n`, `\r`,
/// `\t`, ESC, BEL…), DEL and the backslash as `\xNN`; every byte of invalid UTF-8 as `\xNN`;
/// C1 controls (U+0080–U+009F), bidirectional controls (U+061C, U+200E, U+200F,
/// U+202A–U+202E, U+2066–U+2069), the line and paragraph separators (U+2028, U+2029) and
/// U+FEFF as `\u{NNNN}`. An escape sequence, a carriage return or a bidi override read from a
/// stream can therefore neither forge an output line nor reorder one. No allocation.
///
/// ```
/// use vmstate::Escaped;
/// assert_eq!(Escaped(b"evil\x1b[2J\n").to_string(), "evil\\x1b[2J\\x0a");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Escaped<'a>(pub &'a [u8]);

impl Escaped<'_> {
    /// Whether `c` is shown as a `\u{…}` escape rather than as itself (non-ASCII only).
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{061c}'
                    | '\u{200e}'
                    | '\u{200f}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{feff}'
            )
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let valid = chunk.valid();
            let mut from = 0;
            for (i, c) in valid.char_indices() {
                let ascii_shown = (' '..'\x7f').contains(&c) && c != '\\';
                if ascii_shown || (!c.is_ascii() && !Self::hidden(c)) {
                    continue;
                }
                f.write_str(&valid[from..i])?;
                if c.is_ascii() {
                    write!(f, "\\x{:02x}", c as u32)?;
                } else {
                    write!(f, "\\u{{{:04x}}}", c as u32)?;
                }
                from = i.saturating_add(c.len_utf8());
            }
            f.write_str(&valid[from..])?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(self.as_bytes()).fmt(f)?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Name {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "{=[u8]:a}", self.as_bytes())
    }
}

/// The section an error happened in.
///
/// ```
/// use vmstate::{Error, ErrorKind, Name, SectionContext};
/// let ctx = SectionContext { idstr: Name::new(b"i8259"), instance_id: 1, section_id: 22 };
/// let e = Error::new(100, ErrorKind::DuplicateSection).in_section(ctx);
/// assert_eq!(e.to_string(), "at byte 100 (0x64), section 'i8259' instance 1 (id 22): section occurs twice");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SectionContext {
    /// The section's idstr as read from the stream.
    pub idstr: Name,
    /// The section's instance id.
    pub instance_id: u32,
    /// The section id of the record.
    pub section_id: u32,
}

/// What a value should have been (the "expected" half of an invariant error).
///
/// ```
/// use vmstate::Expected;
/// assert_eq!(Expected::Range(1, 4).to_string(), "0x1..=0x4");
/// assert_eq!(Expected::OneOf(&[0, 1]).to_string(), "one of [0x0, 0x1]");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Expected {
    /// Exactly this value.
    Equal(u64),
    /// At most this value.
    AtMost(u64),
    /// Strictly below this value.
    Below(u64),
    /// Within this inclusive range.
    Range(u64, u64),
    /// No bit of this mask set.
    MaskClear(u64),
    /// One of these values.
    OneOf(&'static [u64]),
    /// A rule stated in words (for relations between fields).
    Rule(&'static str),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Expected::Equal(v) => write!(f, "{v:#x}"),
            Expected::AtMost(v) => write!(f, "<= {v:#x}"),
            Expected::Below(v) => write!(f, "< {v:#x}"),
            Expected::Range(a, b) => write!(f, "{a:#x}..={b:#x}"),
            Expected::MaskClear(m) => write!(f, "no bits of {m:#x} set"),
            Expected::OneOf(vs) => {
                f.write_str("one of [")?;
                for (i, v) in vs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v:#x}")?;
                }
                f.write_str("]")
            }
            Expected::Rule(r) => f.write_str(r),
        }
    }
}

/// An invariant that a decoded state breaks, as reported by a device's validation hook.
///
/// ```
/// use vmstate::{Expected, Violation};
/// // What a `check!` hook returns for a FIFO index out of range.
/// let v = Violation { field: "head", expected: Expected::Below(16), found: 16 };
/// assert_eq!(v.expected.to_string(), "< 0x10");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Violation {
    /// The field (as named in the description table) that holds the bad value.
    pub field: &'static str,
    /// What the value should be.
    pub expected: Expected,
    /// What the stream carried.
    pub found: u64,
}

/// What went wrong.
///
/// ```
/// use vmstate::ErrorKind;
/// let k = ErrorKind::FooterMismatch { expected: 3, found: 4 };
/// assert_eq!(k.to_string(), "mismatched section id in footer: expected 0x3, found 0x4");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input ended inside an item: `needed` more bytes were required at the error offset but
    /// only `available` were left. A streaming reader treats this as "need more input", not as
    /// malformed input.
    Truncated {
        /// Bytes the item needs from the error offset on.
        needed: usize,
        /// Bytes that were available there.
        available: usize,
    },
    /// The caller's output buffer or storage is too small.
    BufferTooSmall {
        /// Bytes (or items) the operation needs.
        needed: usize,
        /// Bytes (or items) the caller provided.
        capacity: usize,
    },
    /// The stream does not start with `QEVM`.
    BadMagic {
        /// The first four bytes, big-endian.
        found: u32,
    },
    /// The stream's file version is not one this reader accepts (2 is obsolete, 3 is QEMU's, 4 is
    /// vmstate's extension).
    UnsupportedFileVersion {
        /// The version read.
        found: u32,
    },
    /// The configuration record (`0x07`) is required but the byte after the header is another.
    ConfigurationMissing {
        /// The byte found instead.
        found: u8,
    },
    /// A byte that is not a record type allowed at this position stands where a record must
    /// start.
    UnknownRecordType {
        /// The byte found.
        found: u8,
        /// What may stand there.
        expected: RecordPosition,
    },
    /// A name (idstr, subsection, block or machine name) is empty.
    EmptyName,
    /// A name to be written is longer than its one length byte can say (255).
    NameTooLong {
        /// The name's length.
        len: usize,
    },
    /// A name holds a NUL or non-printable byte (QEMU would compare it with `strcmp` and silently
    /// ignore what follows a NUL).
    BadNameByte {
        /// The offending byte.
        found: u8,
    },
    /// A length field exceeds the bound this reader allows.
    LengthTooLarge {
        /// The length read.
        found: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// After a section body, the footer byte `0x7e` was expected.
    MissingFooter {
        /// The byte found instead.
        found: u8,
    },
    /// The footer repeats another section id than the header.
    FooterMismatch {
        /// The id from the section header.
        expected: u32,
        /// The id in the footer.
        found: u32,
    },
    /// The section's idstr/instance is not in the destination's schema.
    UnknownSection,
    /// The section is another one than the caller asked for (`vmstate::load_section`): its
    /// idstr (in the error's section context) is not the expected one.
    OtherSection {
        /// The idstr the caller expected.
        expected: Name,
    },
    /// A PART or END record names a section id that no START opened.
    UnknownSectionId {
        /// The id read.
        found: u32,
    },
    /// The same (idstr, instance) or the same section id occurs twice.
    DuplicateSection,
    /// The reader cannot tell where this section's body ends (no schema, no description).
    BodyLengthUnknown,
    /// The section or subsection version is newer than the local description.
    VersionTooNew {
        /// Version in the stream.
        found: u32,
        /// Local `version_id`.
        max: u32,
    },
    /// The section or subsection version is older than the local minimum.
    VersionTooOld {
        /// Version in the stream.
        found: u32,
        /// Local `minimum_version_id`.
        min: u32,
    },
    /// A subsection whose name starts with the device's name is not in the description.
    UnknownSubsection {
        /// The subsection name read.
        name: Name,
    },
    /// A section has more top-level subsections than the format allows
    /// ([`crate::schema::MAX_SUBSECTIONS`]; `docs/FORMAT.md` §8). The offset is the first
    /// subsection past the limit.
    TooManySubsections {
        /// The limit.
        limit: u16,
    },
    /// v4 → v3: the opaque data of a live section other than `ram` holds the v3 footer of its
    /// own section id. A v3 reader finds the end of such data only by its footer, so the v3
    /// stream would be cut there (`docs/FORMAT.md` §9).
    FooterInLiveData,
    /// The same subsection appears twice in one body.
    DuplicateSubsection {
        /// The subsection's name.
        name: &'static str,
    },
    /// A subsection version does not fit in 8 bits (QEMU would silently truncate it).
    SubsectionVersionOverflow {
        /// The be32 version read.
        found: u32,
    },
    /// An "equal" field differs from the destination's value.
    NotEqual {
        /// The destination's value.
        expected: u64,
        /// The stream's value.
        found: u64,
    },
    /// A variable-array count or buffer size exceeds the destination's storage (or is negative).
    CountOverCapacity {
        /// The count or size (as a signed value, so negative counts show as such).
        count: i64,
        /// The capacity of the destination's storage.
        capacity: u64,
    },
    /// A `VMSTATE_VALIDATE` style check failed.
    ValidationFailed {
        /// The check's name.
        check: &'static str,
    },
    /// A decoded value breaks a device invariant.
    Invalid {
        /// What the value should be.
        expected: Expected,
        /// The value found.
        found: u64,
    },
    /// A `bool` field holds something other than 0 or 1.
    BadBool {
        /// The byte found.
        found: u8,
    },
    /// A NULL pointer array element is not the marker byte `0x30`.
    BadNullMarker {
        /// The byte found.
        found: u8,
    },
    /// A COMMAND record whose command number QEMU does not know (0, or above
    /// SWITCHOVER_START = 11); QEMU: "MIG_CMD 0x%x unknown (len 0x%x)".
    UnknownCommand {
        /// The command number.
        cmd: u16,
        /// Its payload length.
        len: u16,
    },
    /// A COMMAND record whose payload length QEMU's loader refuses for that command.
    CommandLength {
        /// The command (its accepted lengths: `cmd.payload_len().expected()`; not stored, so
        /// that `ErrorKind` keeps its size on 32-bit targets).
        cmd: crate::wire::command::CommandId,
        /// The declared length.
        found: u16,
    },
    /// A record that may occur only once or only at a certain place occurs elsewhere.
    UnexpectedRecord {
        /// The record type byte.
        found: u8,
    },
    /// Bytes follow the end of the stream (after EOF and the optional trailer).
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The VMDESCRIPTION trailer's declared length disagrees with the input.
    TrailerLength {
        /// The declared JSON length.
        declared: u32,
        /// Bytes actually left.
        available: usize,
    },
    /// The VMDESCRIPTION JSON is malformed or does not describe the stream.
    BadDescription,
    /// The trailer the walk reaches after EOF is not the one found from the end of the input
    /// ([`crate::wire::Trailer::locate`], as analyze-migration.py finds it): its JSON holds a
    /// NUL byte and what reads as another trailer, so readers would disagree on the
    /// description.
    TrailerAmbiguous {
        /// Offset of the `06` byte found from the end, if any.
        located: Option<usize>,
    },
    /// A RAM record word carries a flag combination this reader does not accept.
    RamFlags {
        /// The flag bits (low 12 bits of the record word).
        flags: u16,
    },
    /// A RAM page record uses CONTINUE with no previous block.
    RamContinueWithoutBlock,
    /// A RAM record names a block that is not in the block list.
    RamUnknownBlock {
        /// The block name read.
        name: Name,
    },
    /// A RAM page lies outside its block.
    RamOffsetOutOfBlock {
        /// Page offset read.
        offset: u64,
        /// Length of the block.
        length: u64,
    },
    /// The MEM_SIZE total differs from the sum of the listed block lengths.
    RamTotalMismatch {
        /// Total in the MEM_SIZE word.
        declared: u64,
        /// Sum of the lengths read so far when the list went past it.
        sum: u64,
    },
    /// A ZERO page record carries a non-zero fill byte: QEMU 7.2 fills the page with it, QEMU
    /// 8.2 and later refuse it ("Found a zero page with value %d"), and so does this reader
    /// unless [`RamOptions::allow_nonzero_fill`](crate::ram::RamOptions::allow_nonzero_fill).
    RamNonZeroFill {
        /// The block the page belongs to (the error's offset is the fill byte's; the page
        /// offset precedes it in the record). No page offset here: it would grow every
        /// `ErrorKind` by 8 bytes on 32-bit targets.
        block: Name,
        /// The fill byte.
        fill: u8,
    },
    /// The RAM section has another version than 4.
    RamVersion {
        /// The version read.
        found: u32,
    },
    /// A mapped-ram block header or bitmap breaks a rule ([`crate::mapped_ram`]); the offset is
    /// the header field's (or the bitmap byte's).
    MappedRam {
        /// The block.
        block: Name,
        /// Which rule.
        fault: MappedRamFault,
        /// The version read (saturated at 255) or the bitmap byte, else 0: a wider field would
        /// grow every [`Error`] on 32-bit targets, so offsets and the page size are told by
        /// the error's offset (the header field) and the rule.
        found: u8,
    },
    /// A vendor-tagged subsection (v4) names a vendor level outside `1..=levels`: level 0 is
    /// upstream, which tags nothing, and a level above the stream's vendor chain has no vendor.
    VendorLevel {
        /// The tag's level.
        level: u8,
        /// Vendor levels the stream's header declares.
        levels: u8,
    },
    /// A vendor-tagged subsection names its vendor ([`crate::Subsection::feature_of`]) and the
    /// vendor chain (the stream's header, or [`crate::v4::caps::Capabilities::vendors`]) has
    /// another vendor at the tag's level: the chain is in another order than the table
    /// assumes, and writing the tag would credit the feature to the wrong vendor. (The
    /// chain's vendor at `level` is not kept: a copy of its id would outgrow `ErrorKind`'s
    /// size budget; `at` says where the chain has the tag's vendor instead.)
    VendorMismatch {
        /// The tag's level.
        level: u8,
        /// The vendor the tag names.
        tag: crate::schema::VendorId<'static>,
        /// The level at which the chain has `tag` (`1..=N`), 0 when it does not have it.
        at: u8,
    },
}

/// The rule a mapped-ram block breaks ([`ErrorKind::MappedRam`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MappedRamFault {
    /// The header version is not 1.
    Version,
    /// The header's page size is not the target page size (4096).
    PageSize,
    /// The bitmap does not start right after the header.
    BitmapOffset,
    /// The pages region is not page-aligned, starts before the bitmap's end, or ends past
    /// the largest offset.
    PagesOffset,
    /// A bitmap bit past the block's last page is set.
    BitmapPadding,
}

/// Where a record starts, for [`ErrorKind::UnknownRecordType`]: what may stand there.
///
/// ```
/// use vmstate::stream::{FooterScan, Records};
/// use vmstate::{ErrorKind, RecordPosition};
/// // A QEVM header, then a byte that starts no record.
/// let e = Records::new(b"QEVM\0\0\0\x03\x07\0\0\0\x01x\x09", FooterScan)
///     .find_map(|r| r.err())
///     .unwrap();
/// assert_eq!(e.offset, 14);
/// assert_eq!(
///     e.kind,
///     ErrorKind::UnknownRecordType { found: 9, expected: RecordPosition::V3Records { commands: false } }
/// );
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum RecordPosition {
    /// A section header: START, PART, END or FULL.
    SectionHeader,
    /// The records of a v3 stream (after the header and configuration, before EOF), with or
    /// without COMMAND records accepted (`stream::Options::allow_commands`).
    V3Records {
        /// Whether COMMAND records are accepted.
        commands: bool,
    },
    /// The records of a v4 stream (docs/FORMAT.md §2).
    V4Records,
}

// Every fallible codec function returns an `Error` by value: a variant that outgrows four
// u64 words plus a pointer grows every one of them (the Cortex-M firmware's `.text` grew by
// 1.4 KiB when one did).
const _: () = assert!(
    core::mem::size_of::<ErrorKind>()
        <= 4 * core::mem::size_of::<u64>() + core::mem::size_of::<usize>()
);

impl fmt::Display for RecordPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SECTIONS: &str = "0x01-0x04 (section START/PART/END/FULL)";
        match self {
            RecordPosition::SectionHeader => write!(f, "a section header, {SECTIONS}"),
            RecordPosition::V3Records { commands: true } => {
                write!(f, "a v3 record: 0x00 (EOF), {SECTIONS} or 0x08 (COMMAND)")
            }
            RecordPosition::V3Records { commands: false } => write!(
                f,
                "a v3 record: 0x00 (EOF) or {SECTIONS}; this reader does not accept COMMAND \
                 records (stream::Options::allow_commands is off)"
            ),
            RecordPosition::V4Records => write!(
                f,
                "a v4 record: 0x00 (EOF), {SECTIONS}, 0x07 (configuration, first only), \
                 0x08 (COMMAND) or 0x80-0xff (ancillary)"
            ),
        }
    }
}

/// QEMU's name of a record type byte (`QEMU_VM_*`), if it is one.
const fn record_name(b: u8) -> Option<&'static str> {
    Some(match b {
        0x00 => "EOF",
        0x01 => "SECTION_START",
        0x02 => "SECTION_PART",
        0x03 => "SECTION_END",
        0x04 => "SECTION_FULL",
        0x05 => "SUBSECTION",
        0x06 => "VMDESCRIPTION",
        0x07 => "CONFIGURATION",
        0x08 => "COMMAND",
        0x7e => "SECTION_FOOTER",
        _ => return None,
    })
}

/// A codec error: where and what.
///
/// # Size
///
/// 104 bytes on 64-bit targets, 80 on 32-bit ones ([`crate::sizes`]): more than the 32 bytes a
/// value that every call returns should ideally be, for a documented reason. It holds by value
/// what "where and what" needs, because it does not borrow the input:
///
/// * `offset`: 8 bytes (4 on 32-bit);
/// * `kind`: 40 bytes (32): the largest kinds carry three `u64` (a value against an expected
///   range, [`ErrorKind::Invalid`] with [`Expected::Range`]) or two (a RAM page offset and its
///   block's length);
/// * `section`: 36 bytes: the first [`Name::CAPACITY`] (24) bytes of the idstr — QEMU's
///   `0000:00:03.0/virtio-net` is 23 — its length and whether it was cut, the instance and the
///   section id;
/// * `field`: 16 bytes (8), the description table's `&'static str`.
///
/// Reaching 32 bytes would mean borrowing the idstr from the input (a lifetime on every
/// `Result`, and no error that outlives the buffer) or dropping values the messages print.
/// A `Result<T, Error>` this large is returned in a stack slot of the caller, so the cost is
/// that stack space in each frame that holds one, not a copy on success; the assertion below
/// keeps it from growing.
///
/// ```
/// use vmstate::{Error, ErrorKind};
/// let e = Error::new(40, ErrorKind::BadBool { found: 2 }).in_field("enabled");
/// assert_eq!(e.to_string(), "at byte 40 (0x28), field enabled: bool out of range: expected 0 or 1, found 0x02");
/// assert!(!e.is_incomplete());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub struct Error {
    /// Absolute byte offset in the input (or output, for encode errors) where the problem is.
    pub offset: usize,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The section being processed, if any.
    pub section: Option<SectionContext>,
    /// The description-table field (or subsection) being processed, if any.
    pub field: Option<&'static str>,
}

// The sizes stated above: growing `Error` is a compile error, not a silent cost on every call.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(core::mem::size_of::<Error>() <= 104);
#[cfg(target_pointer_width = "32")]
const _: () = assert!(core::mem::size_of::<Error>() <= 80);

impl Error {
    /// An error of `kind` at `offset` with no context yet.
    pub const fn new(offset: usize, kind: ErrorKind) -> Error {
        Error {
            offset,
            kind,
            section: None,
            field: None,
        }
    }

    /// Adds the section context unless one is already set.
    pub fn in_section(mut self, section: SectionContext) -> Error {
        if self.section.is_none() {
            self.section = Some(section);
        }
        self
    }

    /// Adds the field name unless one is already set (the innermost field wins).
    pub fn in_field(mut self, field: &'static str) -> Error {
        if self.field.is_none() {
            self.field = Some(field);
        }
        self
    }

    /// Whether the error only means "the input ended early": more bytes may make it succeed.
    pub fn is_incomplete(&self) -> bool {
        matches!(self.kind, ErrorKind::Truncated { .. })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ErrorKind::*;
        match *self {
            Truncated { needed, available } => write!(
                f,
                "input ends early: expected {needed} more bytes, found {available}"
            ),
            BufferTooSmall { needed, capacity } => write!(
                f,
                "output buffer too small: expected room for {needed}, found {capacity}"
            ),
            BadMagic { found } => write!(
                f,
                "not a migration stream: expected magic 0x5145564d (QEVM), found {found:#010x}"
            ),
            UnsupportedFileVersion { found: 2 } => {
                f.write_str("file version 2 is obsolete: expected 3 (or 4)")
            }
            // A v3 reader given a v4 stream, or the v4 reader given a v3 stream: say which
            // reader reads it rather than listing the found version as expected.
            UnsupportedFileVersion { found: 3 } => f.write_str(
                "file version 3 (QEMU's format) where vmstate v4 was expected (convert it to \
                 v4 first)",
            ),
            UnsupportedFileVersion { found: 4 } => f.write_str(
                "file version 4 (vmstate v4) where QEMU's version 3 was expected (convert it \
                 first: vmstate rewrite IN OUT --format v3)",
            ),
            UnsupportedFileVersion { found } => write!(
                f,
                "unsupported file version: expected 3 or 4, found {found}"
            ),
            ConfigurationMissing { found } => write!(
                f,
                "configuration record missing: expected 0x07, found {found:#04x}"
            ),
            UnknownRecordType { found, expected } => match record_name(found) {
                Some(name) => write!(
                    f,
                    "record type {found:#04x} ({name}) is not allowed here: expected {expected}"
                ),
                None => write!(f, "unknown record type {found:#04x}: expected {expected}"),
            },
            EmptyName => f.write_str("empty name: expected 1..=255 bytes"),
            NameTooLong { len } => write!(f, "name too long: expected 1..=255 bytes, found {len}"),
            BadNameByte { found } => {
                write!(f, "name holds byte {found:#04x}: expected printable ASCII")
            }
            LengthTooLarge { found, max } => {
                write!(f, "length too large: expected at most {max}, found {found}")
            }
            MissingFooter { found } => write!(
                f,
                "missing section footer: expected 0x7e, found {found:#04x}"
            ),
            FooterMismatch { expected, found } => write!(
                f,
                "mismatched section id in footer: expected {expected:#x}, found {found:#x}"
            ),
            UnknownSection => f.write_str("unknown section or instance for this destination"),
            OtherSection { expected } => {
                write!(
                    f,
                    "another section than expected: expected idstr '{expected}'"
                )
            }
            UnknownSectionId { found } => write!(
                f,
                "PART/END for section id {found:#x}, which no START opened"
            ),
            DuplicateSection => f.write_str("section occurs twice"),
            BodyLengthUnknown => f.write_str(
                "cannot tell where the section body ends (no schema or description for it)",
            ),
            VersionTooNew { found, max } => {
                write!(f, "version {found} is too new: expected at most {max}")
            }
            VersionTooOld { found, min } => {
                write!(f, "version {found} is too old: expected at least {min}")
            }
            UnknownSubsection { name } => write!(f, "unknown subsection {name}"),
            TooManySubsections { limit } => write!(
                f,
                "too many subsections: expected at most {limit} top-level subsections in one \
                 section"
            ),
            FooterInLiveData => f.write_str(
                "live section data holds its own section footer: a v3 reader would end the \
                 section there, so it has no v3 form",
            ),
            DuplicateSubsection { name } => write!(f, "subsection {name} occurs twice"),
            SubsectionVersionOverflow { found } => write!(
                f,
                "subsection version {found:#x} does not fit in 8 bits: expected at most 255"
            ),
            NotEqual { expected, found } => write!(
                f,
                "value must equal the destination's: expected {expected:#x}, found {found:#x}"
            ),
            CountOverCapacity { count, capacity } => write!(
                f,
                "count out of range: expected 0..={capacity}, found {count}"
            ),
            ValidationFailed { check } => write!(f, "input validation failed: {check}"),
            Invalid { expected, found } => {
                write!(f, "invalid value: expected {expected}, found {found:#x}")
            }
            BadBool { found } => {
                write!(f, "bool out of range: expected 0 or 1, found {found:#04x}")
            }
            BadNullMarker { found } => {
                write!(f, "NULL pointer marker: expected 0x30, found {found:#04x}")
            }
            UnknownCommand { cmd, len } => write!(
                f,
                "unknown COMMAND {cmd:#06x} (len {len}): expected 0x0001..=0x000b \
                 (OPEN_RETURN_PATH..SWITCHOVER_START)"
            ),
            CommandLength { cmd, found } => write!(
                f,
                "COMMAND {cmd} payload length: expected {}, found {found:#x}",
                cmd.payload_len().expected()
            ),
            UnexpectedRecord { found } => write!(f, "record {found:#04x} is not allowed here"),
            TrailingBytes { count } => write!(
                f,
                "{count} bytes after the end of the stream: expected none"
            ),
            TrailerLength {
                declared,
                available,
            } => write!(
                f,
                "description trailer length: declared {declared}, found {available} bytes"
            ),
            BadDescription => f.write_str("malformed or mismatching VMDESCRIPTION JSON"),
            TrailerAmbiguous { located: Some(at) } => write!(
                f,
                "VMDESCRIPTION trailer: the JSON holds a NUL byte and another trailer at byte \
                 {at} (0x{at:x}); expected one trailer of JSON text"
            ),
            TrailerAmbiguous { located: None } => f.write_str(
                "VMDESCRIPTION trailer: not found from the end of the input; expected JSON text \
                 without NUL bytes",
            ),
            RamFlags { flags } => write!(f, "unknown combination of RAM flags {flags:#x}"),
            RamContinueWithoutBlock => f.write_str("RAM CONTINUE record with no previous block"),
            RamUnknownBlock { name } => write!(f, "unknown RAM block {name}"),
            RamOffsetOutOfBlock { offset, length } => write!(
                f,
                "RAM page offset {offset:#x} outside block of length {length:#x}"
            ),
            RamTotalMismatch { declared, sum } => write!(
                f,
                "RAM block list: MEM_SIZE total {declared:#x}, but block lengths sum to {sum:#x}"
            ),
            RamNonZeroFill { block, fill } => write!(
                f,
                "ZERO page of block {block}: fill byte expected 0x00 (QEMU >= 8.2 refuses any \
                 other), found {fill:#04x}"
            ),
            RamVersion { found } => write!(f, "RAM section version: expected 4, found {found}"),
            MappedRam {
                block,
                fault,
                found,
            } => {
                write!(f, "mapped-ram block {block}: ")?;
                match fault {
                    MappedRamFault::Version => write!(
                        f,
                        "header version: expected 1, found {found}{}",
                        if found == u8::MAX { " or more" } else { "" }
                    ),
                    MappedRamFault::PageSize => {
                        f.write_str("header page size: expected 4096 (the target page size)")
                    }
                    MappedRamFault::BitmapOffset => f.write_str(
                        "bitmap offset: expected the offset right after the 28-byte header",
                    ),
                    MappedRamFault::PagesOffset => f.write_str(
                        "pages offset: expected a page-aligned offset at or after the bitmap's \
                         end (QEMU writes it rounded up to 1 MiB)",
                    ),
                    MappedRamFault::BitmapPadding => write!(
                        f,
                        "bitmap: bits past the block's last page must be 0, found byte \
                         {found:#04x}"
                    ),
                }
            }
            VendorLevel { level, levels } => write!(
                f,
                "vendor level {level} outside 1..={levels} (the header's vendor chain; level 0 \
                 is upstream, which tags nothing)"
            ),
            VendorMismatch { level, tag, at: 0 } => write!(
                f,
                "vendor level {level}: the tag names {tag}, which is not in the vendor chain"
            ),
            VendorMismatch { level, tag, at } => write!(
                f,
                "vendor level {level}: the tag names {tag}, which the vendor chain has at level \
                 {at} (another vendor is at level {level})"
            ),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {} (0x{:x})", self.offset, self.offset)?;
        if let Some(s) = &self.section {
            write!(
                f,
                ", section '{}' instance {} (id {})",
                s.idstr, s.instance_id, s.section_id
            )?;
        }
        if let Some(field) = self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl core::error::Error for Error {}

/// Shorthand for results of this crate.
///
/// ```
/// fn body_len(body: &[u8]) -> vmstate::Result<usize> {
///     Ok(body.len())
/// }
/// assert_eq!(body_len(b"ab"), Ok(2));
/// ```
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// The size `Error`'s rustdoc states is its size.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn documented_size_is_current() {
        let n = core::mem::size_of::<Error>();
        let doc = std::format!("/// {n} bytes on 64-bit targets, 80 on 32-bit ones");
        assert!(include_str!("error.rs").contains(&doc), "{doc}");
    }

    /// Terminal controls from the input never reach the output as themselves.
    #[test]
    fn escaped_shows_text_and_escapes_controls() {
        let show = |b: &[u8]| std::format!("{}", Escaped(b));
        assert_eq!(show(b"cpu/xsave 0000:00:01.1"), "cpu/xsave 0000:00:01.1");
        assert_eq!(show("gr\u{fc}n \u{65e5}".as_bytes()), "gr\u{fc}n \u{65e5}");
        assert_eq!(
            show(b"a\x1b[2J\r\n\x07\t\x7f\\z"),
            "a\\x1b[2J\\x0d\\x0a\\x07\\x09\\x7f\\x5cz"
        );
        assert_eq!(show(b"\xff\xc3x\xe2\x80"), "\\xff\\xc3x\\xe2\\x80");
        assert_eq!(
            show("x\u{85}\u{9b}\u{202e}\u{2066}\u{2069}\u{200f}\u{2028}y".as_bytes()),
            "x\\u{0085}\\u{009b}\\u{202e}\\u{2066}\\u{2069}\\u{200f}\\u{2028}y"
        );
        for b in 0..=255u8 {
            let s = show(&[b]);
            assert!(s.chars().all(|c| !c.is_control()), "{b:#x}: {s:?}");
        }
    }

    /// No message lists the value it found among the ones it expected.
    #[test]
    fn messages_do_not_contradict_themselves() {
        let kinds = [
            ErrorKind::UnknownRecordType {
                found: 8,
                expected: RecordPosition::V3Records { commands: false },
            },
            ErrorKind::UnknownRecordType {
                found: 9,
                expected: RecordPosition::V3Records { commands: true },
            },
            ErrorKind::UnknownRecordType {
                found: 5,
                expected: RecordPosition::V4Records,
            },
            ErrorKind::UnknownRecordType {
                found: 8,
                expected: RecordPosition::SectionHeader,
            },
            ErrorKind::UnsupportedFileVersion { found: 3 },
            ErrorKind::UnsupportedFileVersion { found: 4 },
        ];
        for k in kinds {
            let msg = k.to_string();
            let (found, expected) = msg.split_once("expected").unwrap();
            let value = match k {
                ErrorKind::UnknownRecordType { found, .. } => std::format!("{found:#04x}"),
                ErrorKind::UnsupportedFileVersion { found } => std::format!("version {found}"),
                _ => unreachable!(),
            };
            assert!(found.contains(&value), "{msg}");
            assert!(!expected.contains(&value), "{msg}");
        }
        assert!(
            ErrorKind::UnknownRecordType {
                found: 8,
                expected: RecordPosition::V3Records { commands: false }
            }
            .to_string()
            .starts_with("record type 0x08 (COMMAND) is not allowed here")
        );
    }
}
