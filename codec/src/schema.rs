//! Const description tables (QEMU's `VMStateDescription`), checked against the state struct at
//! compile time.
//!
//! A device's state is a `#[repr(C)]` zerocopy struct whose fields are `u8`, `i8`, byte arrays or
//! `zerocopy::byteorder::big_endian` integers, so each table field is a byte range of the struct
//! holding exactly the wire bytes. Encoding copies present fields' ranges out in table order;
//! decoding copies them in (with checks). The [`field!`](crate::field) family of macros derives
//! each field's offset with `offset_of!` and its wire kind from its Rust type, and
//! [`Vmsd::check`] (run in a `const` item by [`assert_layout!`](crate::assert_layout)) proves the
//! table and the struct agree: every range inside the struct, no overlaps, counts inside the
//! struct, subsections over the same struct, names well-formed, vendor levels valid, and every
//! byte of the struct migrated by some table or marked [`not_migrated!`](crate::not_migrated).
//! There is no second list to keep in sync.

use crate::error::Violation;

/// A scalar wire type.
///
/// ```
/// use vmstate::{Kind, Scalar, field};
/// use zerocopy::byteorder::big_endian::U32;
/// #[repr(C)]
/// struct S { flags: u8, count: U32 }
/// // `field!` takes the scalar from the Rust type; the wire is big-endian.
/// assert!(matches!(field!(S, count).kind, Kind::Scalar(Scalar::U32)));
/// assert_eq!(Scalar::U32.width(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Scalar {
    /// `uint8`.
    U8,
    /// `uint16`, big-endian.
    U16,
    /// `uint32`, big-endian.
    U32,
    /// `uint64`, big-endian.
    U64,
    /// `int8`.
    I8,
    /// `int16`, big-endian.
    I16,
    /// `int32`, big-endian.
    I32,
    /// `int64`, big-endian.
    I64,
    /// `bool`: one byte, 0 or 1 (other values are rejected on load).
    Bool,
    /// `timer`: be64 expiry in ns, all-ones when not armed.
    Timer,
}

impl Scalar {
    /// Width on the wire (and in the state struct).
    pub const fn width(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 | Scalar::Bool => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::Timer => 8,
        }
    }

    /// QEMU's VMStateInfo name, as the JSON description spells it.
    pub const fn json_type(self) -> &'static str {
        match self {
            Scalar::U8 => "uint8",
            Scalar::U16 => "uint16",
            Scalar::U32 => "uint32",
            Scalar::U64 => "uint64",
            Scalar::I8 => "int8",
            Scalar::I16 => "int16",
            Scalar::I32 => "int32",
            Scalar::I64 => "int64",
            Scalar::Bool => "bool",
            Scalar::Timer => "timer",
        }
    }

    /// The name of the matching `_EQUAL` VMStateInfo (QEMU names the uint64 one "int64 equal").
    pub const fn equal_json_type(self) -> &'static str {
        match self {
            Scalar::U8 | Scalar::Bool => "uint8 equal",
            Scalar::U16 => "uint16 equal",
            Scalar::I16 => "int16 equal",
            Scalar::I8 => "int8 equal",
            Scalar::U32 => "uint32 equal",
            Scalar::I32 => "int32 equal",
            Scalar::U64 | Scalar::I64 | Scalar::Timer => "int64 equal",
        }
    }

    /// Whether the type is signed (for error reporting and generic decoding).
    pub const fn is_signed(self) -> bool {
        matches!(self, Scalar::I8 | Scalar::I16 | Scalar::I32 | Scalar::I64)
    }
}

/// The integer type of a variable-array count or buffer size field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CountType {
    /// `VMS_VARRAY_UINT8`.
    U8,
    /// `VMS_VARRAY_UINT16`.
    U16,
    /// `VMS_VARRAY_UINT32`.
    U32,
    /// `VMS_VARRAY_INT32` (and VBUFFER sizes, which QEMU reads as int32).
    I32,
}

impl CountType {
    /// Width of the count field.
    pub const fn width(self) -> usize {
        match self {
            CountType::U8 => 1,
            CountType::U16 => 2,
            CountType::U32 | CountType::I32 => 4,
        }
    }
}

/// Where a variable count lives and how much storage backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Offset of the count field in the same struct.
    pub offset: usize,
    /// Its integer type.
    pub ty: CountType,
    /// Elements (or bytes) of storage in the struct: the bound checked before the count is used.
    pub capacity: usize,
}

impl Count {
    /// The count's value in `state` (an `I32` sign-extended), or `None` when its bytes lie
    /// outside `state`.
    #[inline(always)]
    pub fn value(&self, state: &[u8]) -> Option<i64> {
        let b = state.get(self.offset..self.offset.checked_add(self.ty.width())?)?;
        let mut be = [0u8; 4];
        be.get_mut(4usize.saturating_sub(b.len())..)?
            .copy_from_slice(b);
        let n = u32::from_be_bytes(be);
        Some(match self.ty {
            CountType::I32 => n as i32 as i64,
            _ => n as i64,
        })
    }

    /// The count in `state` when it is within the storage bound: the one check before a count
    /// from the stream bounds a loop or a copy over fixed storage (CVE-2013-4527 class).
    #[inline(always)]
    pub fn bounded(&self, state: &[u8]) -> Option<usize> {
        self.value(state)
            .filter(|&n| (0..=self.capacity as i64).contains(&n))
            .map(|n| n as usize)
    }
}

/// The element of a variable array.
#[derive(Debug, Clone, Copy)]
pub enum Elem {
    /// Scalar elements.
    Scalar(Scalar),
    /// Nested struct elements, each with its own subsections.
    Struct(&'static Vmsd),
}

impl Elem {
    /// Storage size of one element.
    pub const fn size(&self) -> usize {
        match self {
            Elem::Scalar(s) => s.width(),
            Elem::Struct(v) => v.table.size,
        }
    }
}

/// How a field is encoded.
///
/// ```
/// use vmstate::{Kind, Scalar, field, varray};
/// use zerocopy::byteorder::big_endian::U16;
/// #[repr(C)]
/// struct S { regs: [U16; 4], n: u8, fifo: [u8; 8] }
/// assert!(matches!(field!(S, regs).kind, Kind::Array { elem: Scalar::U16, len: 4 }));
/// // A byte array is a buffer; a count field makes an array variable.
/// assert!(matches!(field!(S, fifo).kind, Kind::Buffer { len: 8 }));
/// assert!(matches!(varray!(S, fifo, count = n).kind, Kind::VArray { .. }));
/// ```
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// One scalar.
    Scalar(Scalar),
    /// A fixed array of scalars (`VMSTATE_*_ARRAY`).
    Array {
        /// Element type.
        elem: Scalar,
        /// Number of elements.
        len: usize,
    },
    /// Raw bytes (`VMSTATE_BUFFER`).
    Buffer {
        /// Length.
        len: usize,
    },
    /// Bytes written as zeros and skipped on read (`VMSTATE_UNUSED`). The struct keeps zeroed
    /// storage for them so a body struct stays the exact wire layout.
    Unused {
        /// Length.
        len: usize,
    },
    /// A scalar that must equal the destination's value (`VMSTATE_*_EQUAL`).
    Equal(Scalar),
    /// A nested struct (`len == 1`) or a fixed array of them, each read with the nested
    /// description's own current version (QEMU 7.2 behaviour).
    Struct {
        /// The nested description.
        vmsd: &'static Vmsd,
        /// Number of elements.
        len: usize,
    },
    /// A variable array whose count is another field of the struct (`VMS_VARRAY_*`).
    VArray {
        /// Element type.
        elem: Elem,
        /// The count and the storage bound.
        count: Count,
    },
    /// A variable-length buffer whose size is another field (`VMS_VBUFFER`).
    VBuffer {
        /// The size and the storage bound.
        size: Count,
    },
    /// A zero-width check over the state decoded so far (`VMSTATE_VALIDATE`).
    Validate {
        /// The check; false fails the load.
        test: fn(&[u8], u32) -> bool,
    },
    /// A NULL pointer element of a pointer array: the single byte `0x30`.
    NullPtr,
}

/// One entry of a description table.
///
/// Made by [`field!`](crate::field) (and `varray!`, `vbuffer!`, `struct_field!`, …), which
/// take the offset, size and kind from the struct:
///
/// ```
/// use vmstate::{Field, field};
/// use zerocopy::byteorder::big_endian::U32;
/// #[repr(C)]
/// struct S { a: u8, b: U32 }
/// const F: Field = field!(S, b).since(2); // sent from section version 2 on
/// assert_eq!((F.name, F.offset, F.since), ("b", 1, 2));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Name as the JSON description spells it.
    pub name: &'static str,
    /// Offset of the field's storage in the state struct.
    pub offset: usize,
    /// Wire kind.
    pub kind: Kind,
    /// Present only when the stream version is at least this (`_V` macros).
    pub since: u32,
    /// Presence predicate over (state so far, stream version); overrides `since`.
    pub exists: Option<fn(&[u8], u32) -> bool>,
    /// JSON `type` override (e.g. `"pci config"`); `None` derives it from the kind.
    pub json_type: Option<&'static str>,
}

impl Field {
    /// A field of `kind` at `offset`, present in every version.
    pub const fn new(name: &'static str, offset: usize, kind: Kind) -> Field {
        Field {
            name,
            offset,
            kind,
            since: 0,
            exists: None,
            json_type: None,
        }
    }

    /// A zero-width `VMSTATE_VALIDATE` entry.
    pub const fn validate(name: &'static str, test: fn(&[u8], u32) -> bool) -> Field {
        Field::new(name, 0, Kind::Validate { test })
    }

    /// A NULL pointer marker byte.
    pub const fn null_ptr(name: &'static str) -> Field {
        Field::new(name, 0, Kind::NullPtr)
    }

    /// Gates the field on the stream version (`_V`).
    pub const fn since(mut self, version: u32) -> Field {
        self.since = version;
        self
    }

    /// Gates the field on a predicate (`_TEST`).
    pub const fn exists(mut self, test: fn(&[u8], u32) -> bool) -> Field {
        self.exists = Some(test);
        self
    }

    /// Renames the field (the macros use the last path segment).
    pub const fn named(mut self, name: &'static str) -> Field {
        self.name = name;
        self
    }

    /// Overrides the JSON type name.
    pub const fn json_type(mut self, ty: &'static str) -> Field {
        self.json_type = Some(ty);
        self
    }

    /// Turns a scalar or byte-buffer field into `VMSTATE_UNUSED` bytes.
    pub const fn unused(mut self) -> Field {
        self.kind = Kind::Unused {
            len: self.storage_size(),
        };
        self.name = "unused";
        self
    }

    /// Turns a scalar field into an `_EQUAL` field.
    pub const fn equal(mut self) -> Field {
        if let Kind::Scalar(s) = self.kind {
            self.kind = Kind::Equal(s);
        } else {
            panic!("equal(): only scalar fields can be EQUAL");
        }
        self
    }

    /// Turns a `u64` field into a timer.
    pub const fn timer(mut self) -> Field {
        match self.kind {
            Kind::Scalar(Scalar::U64) | Kind::Scalar(Scalar::I64) => {
                self.kind = Kind::Scalar(Scalar::Timer)
            }
            _ => panic!("timer(): the field must be 8 bytes"),
        }
        self
    }

    /// Turns a `u8` field into a bool.
    pub const fn boolean(mut self) -> Field {
        match self.kind {
            Kind::Scalar(Scalar::U8) => self.kind = Kind::Scalar(Scalar::Bool),
            _ => panic!("boolean(): the field must be one byte"),
        }
        self
    }

    /// Turns a byte buffer into a `uint8` array (QEMU `VMSTATE_UINT8_ARRAY`: same bytes,
    /// another JSON shape).
    pub const fn u8_array(mut self) -> Field {
        match self.kind {
            Kind::Buffer { len } => {
                self.kind = Kind::Array {
                    elem: Scalar::U8,
                    len,
                }
            }
            _ => panic!("u8_array(): the field must be a byte buffer"),
        }
        self
    }

    /// Bytes of struct storage the field occupies.
    pub const fn storage_size(&self) -> usize {
        match self.kind {
            Kind::Scalar(s) | Kind::Equal(s) => s.width(),
            Kind::Array { elem, len } => elem.width().saturating_mul(len),
            Kind::Buffer { len } | Kind::Unused { len } => len,
            Kind::Struct { vmsd, len } => vmsd.table.size.saturating_mul(len),
            Kind::VArray { elem, count } => elem.size().saturating_mul(count.capacity),
            Kind::VBuffer { size } => size.capacity,
            Kind::Validate { .. } | Kind::NullPtr => 0,
        }
    }

    /// Wire size when the field is present and does not depend on state (no varrays, no
    /// nested structs with subsections); `None` otherwise.
    pub const fn fixed_wire_size(&self) -> Option<usize> {
        match self.kind {
            Kind::Struct { vmsd, len } => match vmsd.fixed_wire_len() {
                Some(n) if vmsd.table.subsections.is_empty() => n.checked_mul(len),
                _ => None,
            },
            Kind::VArray { .. } | Kind::VBuffer { .. } => None,
            Kind::NullPtr => Some(1),
            _ => Some(self.storage_size()),
        }
    }
}

/// A vmstate v4 vendor id: a reverse FQDN such as `org.linux-kvm` or `com.example`
/// (`docs/FORMAT.md` §1). The one type for a vendor in the header's chain
/// ([`crate::v4::wire::Vendor`]), in a subsection's [`Subsection::feature_of`] and in
/// [`crate::v4::caps::Capabilities::vendors`].
///
/// Valid: at most 255 bytes (it travels as a `str8`), at least two labels separated by `.`,
/// each label 1 to 63 bytes of `a`–`z`, `0`–`9` and `-`, not starting or ending with `-`.
/// Lowercase only, so one vendor has one spelling and ids compare bytewise.
///
/// [`VendorId::new`] is a `const fn` that panics on an invalid id, so a bad id in a `const` is
/// a compile error; [`VendorId::parse`] checks one at run time (a header read from a stream,
/// a command line).
///
/// ```
/// use vmstate::VendorId;
/// const KVM: VendorId = VendorId::new("org.linux-kvm");
/// assert_eq!(KVM.as_str(), "org.linux-kvm");
/// assert_eq!(VendorId::parse(b"com.example"), Some(VendorId::new("com.example")));
/// assert_eq!(VendorId::parse(b"Com.Example"), None); // lowercase only
/// assert_eq!(VendorId::parse(b"example"), None); // one label is not a reverse FQDN
/// ```
///
/// ```compile_fail
/// // Not a reverse FQDN: refused when the constant is evaluated.
/// const BAD: vmstate::VendorId = vmstate::VendorId::new("kvm");
/// # let _ = BAD;
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VendorId<'a>(&'a str);

impl<'a> VendorId<'a> {
    /// The id `id`; panics (at compile time in a `const`) when it is not a valid reverse FQDN.
    pub const fn new(id: &'a str) -> VendorId<'a> {
        if !Self::is_valid(id.as_bytes()) {
            panic!(
                "vendor id: not a reverse FQDN (labels of a-z, 0-9 and '-' separated by '.', \
                 at least two, at most 255 bytes)"
            );
        }
        VendorId(id)
    }

    /// The id in `bytes`, if they are a valid reverse FQDN.
    pub const fn parse(bytes: &'a [u8]) -> Option<VendorId<'a>> {
        if !Self::is_valid(bytes) {
            return None;
        }
        // A valid id is ASCII.
        match core::str::from_utf8(bytes) {
            Ok(s) => Some(VendorId(s)),
            Err(_) => None,
        }
    }

    /// The id as text.
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// The id's bytes, as on the wire.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0.as_bytes()
    }

    /// Whether `id` is a valid reverse FQDN (see the type's documentation).
    pub const fn is_valid(id: &[u8]) -> bool {
        if id.len() > 255 {
            return false;
        }
        let (mut labels, mut len, mut prev) = (1usize, 0usize, b'.');
        let mut rest = id;
        while let [b, tail @ ..] = rest {
            match *b {
                b'.' => {
                    if len == 0 || prev == b'-' {
                        return false;
                    }
                    labels = labels.saturating_add(1);
                    len = 0;
                }
                b'a'..=b'z' | b'0'..=b'9' | b'-' => {
                    if len == 0 && *b == b'-' {
                        return false;
                    }
                    len = len.saturating_add(1);
                    if len > 63 {
                        return false;
                    }
                }
                _ => return false,
            }
            prev = *b;
            rest = tail;
        }
        labels >= 2 && len > 0 && prev != b'-'
    }
}

impl core::fmt::Debug for VendorId<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.0, f)
    }
}

impl core::fmt::Display for VendorId<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// Serialized as its text; deserializing checks it (an invalid id is a decode error).
#[cfg(feature = "caps")]
impl serde::Serialize for VendorId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

#[cfg(feature = "caps")]
impl<'de: 'a, 'a> serde::Deserialize<'de> for VendorId<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <&'de str as serde::Deserialize<'de>>::deserialize(d)?;
        VendorId::parse(s.as_bytes()).ok_or_else(|| {
            <D::Error as serde::de::Error>::invalid_value(
                serde::de::Unexpected::Str(s),
                &"a reverse-FQDN vendor id",
            )
        })
    }
}

/// Tag of a vendor-owned subsection (vmstate v4; see `docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct VendorTag {
    /// Vendor level in the stream's vendor chain (0 = upstream QEMU, 1 = first downstream, …).
    pub level: u8,
    /// The device minor version this feature bumps that vendor's slot to.
    pub minor: u16,
    /// Whether a reader that does not know it must refuse the stream (otherwise it may skip it).
    pub must_understand: bool,
}

/// Storage of the state struct that a table deliberately does not migrate: destination
/// configuration or host-side state. Built by [`not_migrated!`](crate::not_migrated) and listed
/// with [`Vmsd::not_migrated`], it only tells [`assert_layout!`](crate::assert_layout) that
/// leaving these bytes out of the table is intended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotMigrated {
    /// The struct field's name.
    pub name: &'static str,
    /// Its offset in the state struct.
    pub offset: usize,
    /// Its size.
    pub len: usize,
}

/// A subsection of a description: sent only when `needed` says so.
///
/// ```
/// use vmstate::{State, Subsection, Vmsd, field, mutate, pred};
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// #[repr(C)]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// struct Dev { ctrl: u8, extra: u8 }
/// const EXTRA: Vmsd = Vmsd::new("dev/extra", 1, 1, 2).fields(&[field!(Dev, extra)]);
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, 2)
///     .fields(&[field!(Dev, ctrl)])
///     .subsections(&[Subsection::new(&EXTRA, pred!(Dev, |d| d.extra != 0))
///         .absent(mutate!(Dev, |d| d.extra = 0))]);
/// impl State for Dev { const VMSD: &'static Vmsd = &DEV; }
/// let mut buf = [0u8; 32];
/// // Not needed: the body is the one field.
/// assert_eq!(vmstate::encode_body_into(&Dev { ctrl: 1, extra: 0 }, &mut buf)?, 1);
/// // Needed: 05, the name "dev/extra" (str8), version (be32), its field.
/// assert_eq!(vmstate::encode_body_into(&Dev { ctrl: 1, extra: 7 }, &mut buf)?, 1 + 1 + 10 + 4 + 1);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Subsection {
    /// The subsection's description; its fields index the parent's struct.
    pub vmsd: &'static Vmsd,
    /// Whether the writer sends it (`None`: always).
    pub needed: Option<fn(&[u8]) -> bool>,
    /// Sets the subsection's fields to their defaults when a loaded body omits it. QEMU leaves
    /// whatever the destination had; an explicit default keeps loads independent of prior state.
    pub absent: Option<fn(&mut [u8])>,
    /// Vendor feature tag (v4).
    pub vendor: Option<VendorTag>,
    /// The vendor whose feature this is ([`Subsection::feature_of`]): the writer
    /// ([`crate::v4::StreamWriter`]) and [`crate::v4::caps::Capabilities::add_vmsd`] check
    /// that the vendor chain has this vendor at the tag's level. `None`: the tag is checked by
    /// its level only (a level is a position in the chain, so any vendor there passes).
    pub vendor_id: Option<VendorId<'static>>,
}

impl Subsection {
    /// A subsection sent when `needed` is true.
    pub const fn new(vmsd: &'static Vmsd, needed: fn(&[u8]) -> bool) -> Subsection {
        Subsection {
            vmsd,
            needed: Some(needed),
            absent: None,
            vendor: None,
            vendor_id: None,
        }
    }

    /// Sets the default applied when the subsection is absent on load.
    pub const fn absent(mut self, f: fn(&mut [u8])) -> Subsection {
        self.absent = Some(f);
        self
    }

    /// Tags the subsection as a vendor feature (v4) by level only: whichever vendor the
    /// stream's chain lists at `tag.level`. Prefer [`Subsection::feature_of`], which names it.
    pub const fn vendor(mut self, tag: VendorTag) -> Subsection {
        self.vendor = Some(tag);
        self
    }

    /// Tags the subsection as `vendor`'s feature (v4), at `tag.level` of the vendor chain. The
    /// writer and [`crate::v4::caps::Capabilities::add_vmsd`] refuse a chain that has another
    /// vendor at that level ([`crate::ErrorKind::VendorMismatch`]), so a chain in another
    /// order than the table assumes does not credit this feature to another vendor. The wire
    /// is unchanged: a frame's tag carries the level only.
    ///
    /// ```
    /// use vmstate::{VendorId, VendorTag, schema::Subsection};
    /// # use vmstate::Vmsd;
    /// # const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, 1);
    /// const TAG: VendorTag = VendorTag { level: 1, minor: 1, must_understand: false };
    /// const SUB: Subsection =
    ///     Subsection::new(&FEATURE, |s| s[0] != 0).feature_of(VendorId::new("com.example"), TAG);
    /// assert_eq!(SUB.vendor_id, Some(VendorId::new("com.example")));
    /// assert_eq!(SUB.vendor, Some(TAG));
    /// ```
    pub const fn feature_of(mut self, vendor: VendorId<'static>, tag: VendorTag) -> Subsection {
        self.vendor = Some(tag);
        self.vendor_id = Some(vendor);
        self
    }
}

/// Validation hook: checks device invariants after the whole body (all subsections included).
pub type ValidateFn = fn(&[u8], u32) -> Result<(), Violation>;

/// Post-load hook: normalises a validated staging state, given the stream version.
pub type PostLoadFn = fn(&mut [u8], u32);

/// A test over the state and the stream version (`VMSTATE_VALIDATE`, field predicates).
pub type TestFn = fn(&[u8], u32) -> bool;

/// A description table (QEMU's `VMStateDescription`): its data ([`Table`], read through
/// `Deref`: `vmsd.name`, `vmsd.fields`, …) and the [`Plan`] its fields compile into.
///
/// Built only by the const builder (`Vmsd::new(..).fields(..).subsections(..)…`), which compiles
/// the plan whenever the fields or the version change, and never changed afterwards (there is no
/// `DerefMut`): the plan cannot disagree with the table.
///
/// ```
/// use vmstate::{State, Vmsd, assert_layout, field};
/// use zerocopy::byteorder::big_endian::U16;
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};
/// #[repr(C)]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
/// struct Timer { ctrl: u8, count: U16 }
/// // Name, version 2, oldest version accepted 1, the struct's size; fields in wire order.
/// const TIMER: Vmsd = Vmsd::new("timer", 2, 1, size_of::<Timer>())
///     .fields(&[field!(Timer, ctrl), field!(Timer, count).since(2)]);
/// assert_layout!(Timer, TIMER);
/// impl State for Timer { const VMSD: &'static Vmsd = &TIMER; }
/// assert_eq!((TIMER.name, TIMER.version_id, TIMER.fields.len()), ("timer", 2, 2));
/// let mut buf = [0u8; 8];
/// let n = vmstate::encode_body_into(&Timer { ctrl: 1, count: 300.into() }, &mut buf)?;
/// assert_eq!(&buf[..n], [1, 0x01, 0x2c]);
/// # Ok::<(), vmstate::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Vmsd {
    table: Table,
    plan: Option<Plan>,
}

impl core::ops::Deref for Vmsd {
    type Target = Table;

    #[inline(always)]
    fn deref(&self) -> &Table {
        &self.table
    }
}

/// The data of a [`Vmsd`].
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The vmsd name (and, for top-level sections, the idstr without a qdev path).
    pub name: &'static str,
    /// Current version, written by the encoder.
    pub version_id: u32,
    /// Oldest version the decoder accepts.
    pub minimum_version_id: u32,
    /// Size of the state struct the offsets index.
    pub size: usize,
    /// Fields in wire order.
    pub fields: &'static [Field],
    /// Subsections in emission order.
    pub subsections: &'static [Subsection],
    /// Storage of the state struct that this table deliberately does not migrate (destination
    /// configuration, host-side state): named so [`assert_layout!`](crate::assert_layout) can
    /// prove every byte is either migrated or marked. Never read by the encoder or decoder.
    pub not_migrated: &'static [NotMigrated],
    /// Runs on the staging state before fields are decoded (QEMU `pre_load`: sentinels).
    pub pre_load: Option<fn(&mut [u8])>,
    /// Device invariants checked after the body and all its subsections (QEMU's `post_load`
    /// checks, hardened per docs/UNTRUSTED-INPUT.md §4).
    pub validate: Option<ValidateFn>,
    /// Runs on the staging state after `validate` passed, with the stream version (QEMU's
    /// `post_load` normalisations, e.g. moving a v1-only field into its current storage).
    pub post_load: Option<PostLoadFn>,
}

/// Most zero runs, bool runs or hooked nested elements a [`Plan`] holds (more: no plan).
pub const MAX_PLAN_RUNS: usize = 8;

/// A byte range `(offset, len)` of the state (and of the body, which is the same bytes).
pub type PlanRun = (u32, u32);

/// A nested struct inlined into a [`Plan`] whose description has `validate` or `post_load`
/// hooks: on load they run on each of its `count` elements (of `vmsd.size` bytes from
/// `offset`) after the copy.
#[derive(Debug, Clone, Copy)]
pub struct PlanHooks {
    /// Offset of the first element in the state.
    pub offset: u32,
    /// Number of elements.
    pub count: u32,
    /// The nested description whose hooks run.
    pub vmsd: &'static Vmsd,
}

/// Most `VMSTATE_VALIDATE` checks a [`Plan`] holds.
pub const MAX_PLAN_CHECKS: usize = 2;

/// What follows the copied fields of a [`Plan`] (its last field).
#[derive(Debug, Clone, Copy)]
pub enum PlanTail {
    /// A variable array stored right after the copied fields whose elements are plain copies
    /// (scalars other than bool, or structs whose description is a copy plan without hooks,
    /// bools, unused bytes or `_EQUAL`): `count` elements of `elem_size` bytes, one copy.
    VArray {
        /// The count field and the storage bound.
        count: Count,
        /// Bytes per element.
        elem_size: u32,
    },
    /// A nested struct (one element) stored at `offset` whose description has a plan without a
    /// tail but may have subsections and hooks: its body, subsections included, follows.
    Struct {
        /// State offset of the nested struct.
        offset: u32,
        /// Its description.
        vmsd: &'static Vmsd,
        /// The field's name (for errors).
        name: &'static str,
    },
}

/// The fields of a description at one version compiled (at const time) into one copy: the body
/// is `state[start..start + len]` with the `zeros` ranges written as zeros (`VMSTATE_UNUSED`),
/// `bools` the ranges that must hold 0 or 1 on load (both relative to the body), and `hooks`
/// the inlined nested structs whose hooks run after the copy on load.
///
/// A plan exists iff, at `version`, every field is present without a predicate and is a scalar,
/// array, buffer, `_EQUAL`, unused bytes or a nested struct (single or fixed array) whose own
/// description has a plan, covers its whole struct and has no subsections, no `pre_load` and
/// no hooks of its own nested structs; and the fields are stored contiguously in wire order
/// from the first field's offset (`start`: 0 for a device body, the field's offset for a
/// subsection over a few fields of the device state); and the runs fit in [`MAX_PLAN_RUNS`].
///
/// Such a plan is a *copy plan* ([`Plan::is_copy`]), which the general decoder and encoder
/// use. Two more shapes compile into plans used only by the typed fast paths
/// (`vmstate::encode_body_into`, `vmstate::decode`, …): `VMSTATE_VALIDATE` entries between the
/// fields (`checks`), and a last field that is a [`PlanTail`].
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Offset in the state of the first body byte.
    pub start: u32,
    /// Body length.
    pub len: u32,
    /// Ranges (relative to the body) written as zeros and skipped on read.
    pub zeros: [PlanRun; MAX_PLAN_RUNS],
    /// How many of `zeros` are used.
    pub n_zeros: u8,
    /// Ranges (relative to the body) of bools.
    pub bools: [PlanRun; MAX_PLAN_RUNS],
    /// How many of `bools` are used.
    pub n_bools: u8,
    /// Inlined nested structs with hooks.
    pub hooks: [Option<PlanHooks>; MAX_PLAN_RUNS],
    /// Whether an `_EQUAL` field is part of the body (compared on load: no load fast path).
    pub has_equal: bool,
    /// `VMSTATE_VALIDATE` tests, run after the copied fields and before the tail.
    pub checks: [Option<TestFn>; MAX_PLAN_CHECKS],
    /// The last field, when it is not part of the copy.
    pub tail: Option<PlanTail>,
}

impl Plan {
    /// The zero runs in use.
    pub fn zeros(&self) -> &[PlanRun] {
        self.zeros.get(..self.n_zeros as usize).unwrap_or(&[])
    }

    /// The bool runs in use.
    pub fn bools(&self) -> &[PlanRun] {
        self.bools.get(..self.n_bools as usize).unwrap_or(&[])
    }

    /// Whether the body is exactly the copy (no checks, no tail).
    pub const fn is_copy(&self) -> bool {
        self.checks[0].is_none() && self.tail.is_none()
    }

    /// Compiles `fields` at `version` over a state of `size` bytes (see [`Plan`]).
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn"
    )]
    pub(crate) const fn compile(fields: &[Field], version: u32, size: usize) -> Option<Plan> {
        let mut p = Plan {
            start: 0,
            len: 0,
            zeros: [(0, 0); MAX_PLAN_RUNS],
            n_zeros: 0,
            bools: [(0, 0); MAX_PLAN_RUNS],
            n_bools: 0,
            hooks: [None; MAX_PLAN_RUNS],
            has_equal: false,
            checks: [None; MAX_PLAN_CHECKS],
            tail: None,
        };
        // `at` is the offset of the next field in the body (its state offset is `start + at`).
        let start = if fields.is_empty() {
            0
        } else {
            fields[0].offset
        };
        let mut at = 0usize;
        let mut i = 0;
        while i < fields.len() {
            let f = &fields[i];
            i += 1;
            if p.tail.is_some() || f.exists.is_some() || f.since > version {
                return None;
            }
            if let Kind::Validate { test } = f.kind {
                let mut c = 0;
                while c < MAX_PLAN_CHECKS && p.checks[c].is_some() {
                    c += 1;
                }
                if c == MAX_PLAN_CHECKS {
                    return None;
                }
                p.checks[c] = Some(test);
                continue;
            }
            let contiguous = f.offset == start + at;
            if contiguous
                && p.checks[0].is_none()
                && let Kind::Struct { vmsd, len } = f.kind
            {
                // A nested struct that is a plain copy joins the copy; otherwise it may be
                // the tail.
                let mut q = p;
                if inline(&mut q, start, at, vmsd, len) {
                    p = q;
                    at += f.storage_size();
                    continue;
                }
            }
            if let Some(t) = tail(f) {
                // A variable array joins the copy's storage: it must follow it directly.
                if let PlanTail::VArray { .. } = t
                    && !contiguous
                {
                    return None;
                }
                p.tail = Some(t);
                continue;
            }
            if !contiguous || p.checks[0].is_some() {
                return None;
            }
            let n = f.storage_size();
            let ok = match f.kind {
                Kind::Scalar(Scalar::Bool)
                | Kind::Array {
                    elem: Scalar::Bool, ..
                } => push_run(&mut p.bools, &mut p.n_bools, at, n),
                Kind::Scalar(_) | Kind::Array { .. } | Kind::Buffer { .. } => true,
                Kind::Equal(_) => {
                    p.has_equal = true;
                    true
                }
                Kind::Unused { len } => push_run(&mut p.zeros, &mut p.n_zeros, at, len),
                _ => false,
            };
            if !ok {
                return None;
            }
            at += n;
        }
        if start + at > u32::MAX as usize || start + at > size {
            return None;
        }
        p.start = start as u32;
        p.len = at as u32;
        Some(p)
    }
}

/// `f` as the tail of a plan, if it can be one (see [`PlanTail`]).
const fn tail(f: &Field) -> Option<PlanTail> {
    match f.kind {
        Kind::VArray { elem, count } => {
            let size = match elem {
                Elem::Scalar(Scalar::Bool) => return None,
                Elem::Scalar(s) => s.width(),
                // Elements copied at once: bodies that are their storage with nothing to run,
                // check or clear.
                Elem::Struct(v) => match inlined(v) {
                    Some(inner)
                        if !inner.has_equal
                            && inner.n_zeros == 0
                            && inner.n_bools == 0
                            && v.table.validate.is_none()
                            && v.table.post_load.is_none() =>
                    {
                        v.table.size
                    }
                    _ => return None,
                },
            };
            if size > u32::MAX as usize {
                return None;
            }
            Some(PlanTail::VArray {
                count,
                elem_size: size as u32,
            })
        }
        Kind::Struct { vmsd, len: 1 } => match vmsd.plan {
            Some(inner)
                if !matches!(inner.tail, Some(PlanTail::Struct { .. }))
                    && f.offset <= u32::MAX as usize =>
            {
                Some(PlanTail::Struct {
                    offset: f.offset as u32,
                    vmsd,
                    name: f.name,
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// The plan of a nested `vmsd` whose body can join its parent's copy: its body is its whole
/// storage ([`Vmsd::storage_plan`]) and nothing runs before its fields or between its elements
/// (no subsections, no `pre_load`, no hooked nested struct of its own).
const fn inlined(vmsd: &Vmsd) -> Option<&Plan> {
    match vmsd.storage_plan() {
        Some(inner)
            if inner.len as usize == vmsd.table.size
                && vmsd.table.subsections.is_empty()
                && vmsd.table.pre_load.is_none()
                && inner.hooks[0].is_none() =>
        {
            Some(inner)
        }
        _ => None,
    }
}

/// Appends `(at, len)` to `runs`, merging with an adjacent last run; false when full.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
const fn push_run(runs: &mut [PlanRun; MAX_PLAN_RUNS], n: &mut u8, at: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    if at > u32::MAX as usize || len > u32::MAX as usize {
        return false;
    }
    let (at, len) = (at as u32, len as u32);
    if *n > 0 {
        let last = &mut runs[*n as usize - 1];
        if last.0 + last.1 == at {
            last.1 += len;
            return true;
        }
    }
    if *n as usize == MAX_PLAN_RUNS {
        return false;
    }
    runs[*n as usize] = (at, len);
    *n += 1;
    true
}

/// Inlines `len` elements of the nested `vmsd` stored from body offset `at` (state offset
/// `start + at`) into `p`; false when the nested body cannot join the copy ([`inlined`]) or
/// the runs do not fit.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
const fn inline(p: &mut Plan, start: usize, at: usize, vmsd: &'static Vmsd, len: usize) -> bool {
    let Some(inner) = inlined(vmsd) else {
        return false;
    };
    if inner.has_equal {
        p.has_equal = true;
    }
    let mut e = 0;
    while e < len {
        let base = at + e * vmsd.table.size;
        let mut k = 0;
        while k < inner.n_zeros as usize {
            let (o, l) = inner.zeros[k];
            if !push_run(&mut p.zeros, &mut p.n_zeros, base + o as usize, l as usize) {
                return false;
            }
            k += 1;
        }
        k = 0;
        while k < inner.n_bools as usize {
            let (o, l) = inner.bools[k];
            if !push_run(&mut p.bools, &mut p.n_bools, base + o as usize, l as usize) {
                return false;
            }
            k += 1;
        }
        e += 1;
    }
    if vmsd.table.validate.is_some() || vmsd.table.post_load.is_some() {
        let mut h = 0;
        while h < MAX_PLAN_RUNS && p.hooks[h].is_some() {
            h += 1;
        }
        if h == MAX_PLAN_RUNS || start + at > u32::MAX as usize || len > u32::MAX as usize {
            return false;
        }
        p.hooks[h] = Some(PlanHooks {
            offset: (start + at) as u32,
            count: len as u32,
            vmsd,
        });
    }
    true
}

/// Most subsections one description may have (a bitmask tracks duplicates on load).
pub const MAX_SUBSECTIONS: usize = 32;

impl Vmsd {
    /// A description named `name` at `version_id`, accepting from `minimum_version_id`, over a
    /// state struct of `size` bytes.
    pub const fn new(
        name: &'static str,
        version_id: u32,
        minimum_version_id: u32,
        size: usize,
    ) -> Vmsd {
        Vmsd {
            table: Table {
                name,
                version_id,
                minimum_version_id,
                size,
                fields: &[],
                subsections: &[],
                not_migrated: &[],
                pre_load: None,
                validate: None,
                post_load: None,
            },
            plan: Plan::compile(&[], version_id, size),
        }
    }

    /// Sets the fields (and compiles them into the [`Plan`] at `version_id`).
    pub const fn fields(mut self, fields: &'static [Field]) -> Vmsd {
        self.table.fields = fields;
        self.plan = Plan::compile(fields, self.table.version_id, self.table.size);
        self
    }

    /// Sets the current and the oldest accepted version (and compiles the fields into the
    /// [`Plan`] at the new `version_id`): a table like another at other versions.
    pub const fn versions(mut self, version_id: u32, minimum_version_id: u32) -> Vmsd {
        self.table.version_id = version_id;
        self.table.minimum_version_id = minimum_version_id;
        self.fields(self.table.fields)
    }

    /// The table's data (what `Deref` gives, for `const` contexts, where `Deref` is not
    /// callable).
    pub const fn table(&self) -> &Table {
        &self.table
    }

    /// The same table without its plan: every body takes the field-by-field path (tests compare
    /// the two).
    #[cfg(test)]
    pub(crate) const fn without_plan(mut self) -> Vmsd {
        self.plan = None;
        self
    }

    /// The plan of any shape (see [`Plan`]), if there is one at `version`: plans describe the
    /// current version only.
    #[inline(always)]
    pub fn plan_at(&self, version: u32) -> Option<&Plan> {
        self.plan
            .as_ref()
            .filter(|_| version == self.table.version_id)
    }

    /// The copy plan at `version`: a plan that is exactly a copy ([`Plan::is_copy`]).
    #[inline]
    pub fn plan_for(&self, version: u32) -> Option<&Plan> {
        self.plan_at(version).filter(|p| p.is_copy())
    }

    /// The plan of the current-version fields when that body is the state's own storage: the
    /// first `plan.len` bytes of the struct as one copy (unused ranges travel as zeros, bools
    /// are checked on load), no check, no tail; subsections not counted. The one answer to "is
    /// this body its storage?": a zero-copy view (`assert_layout!`), a nested struct joining
    /// its parent's copy, struct elements of a variable array copied at once, runs of plain
    /// fields on the field-by-field path.
    pub const fn storage_plan(&self) -> Option<&Plan> {
        match &self.plan {
            Some(p) if p.start == 0 && p.is_copy() => Some(p),
            _ => None,
        }
    }

    /// Sets the subsections.
    pub const fn subsections(mut self, subsections: &'static [Subsection]) -> Vmsd {
        self.table.subsections = subsections;
        self
    }

    /// Marks storage of the state struct as deliberately not migrated by this table (see
    /// [`not_migrated!`](crate::not_migrated)); costs nothing at run time.
    pub const fn not_migrated(mut self, storage: &'static [NotMigrated]) -> Vmsd {
        self.table.not_migrated = storage;
        self
    }

    /// Sets the `pre_load` hook.
    pub const fn pre_load(mut self, f: fn(&mut [u8])) -> Vmsd {
        self.table.pre_load = Some(f);
        self
    }

    /// Sets the validation hook.
    pub const fn validate(mut self, f: ValidateFn) -> Vmsd {
        self.table.validate = Some(f);
        self
    }

    /// Sets the post-load hook (runs after `validate` passed, on loads only).
    pub const fn post_load(mut self, f: PostLoadFn) -> Vmsd {
        self.table.post_load = Some(f);
        self
    }

    /// Wire length of the fields of the current version when it does not depend on state
    /// (subsections not counted); `None` if a field's size varies or is gated by a predicate.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn"
    )]
    pub const fn fixed_wire_len(&self) -> Option<usize> {
        let mut i = 0;
        let mut n = 0;
        while i < self.table.fields.len() {
            let f = &self.table.fields[i];
            if f.exists.is_some() {
                return None;
            }
            if f.since <= self.table.version_id {
                match f.fixed_wire_size() {
                    Some(s) => n += s,
                    None => return None,
                }
            }
            i += 1;
        }
        Some(n)
    }

    /// Finds a subsection by full name.
    pub fn subsection(&self, name: &[u8]) -> Option<(usize, &'static Subsection)> {
        self.subsections
            .iter()
            .enumerate()
            .find(|(_, s)| s.vmsd.name.as_bytes() == name)
    }

    /// Checks the table against the state struct `layout` describes; panics (a compile error
    /// when called in a `const` item, as [`assert_layout!`](crate::assert_layout) does) with
    /// the first [`LayoutProblem`]'s message, which names the table and the field.
    pub const fn check(&self, layout: StateLayout) {
        if let Some(p) = self.layout_problem(layout) {
            let m = p.message();
            panic!("{}", m.as_str());
        }
    }

    /// The first way the table disagrees with the state struct `layout` describes, or `None`
    /// (what [`Vmsd::check`] panics on). In order:
    ///
    /// 1. each table of the tree (this one and its subsections, recursively) on its own: its
    ///    size is the struct's, `minimum_version_id <= version_id`, a name of 1..=255 bytes, at
    ///    most [`MAX_SUBSECTIONS`] subsections, every field's and [`NotMigrated`] entry's
    ///    storage (and every count) inside the struct, no field gated on a newer version, no
    ///    two fields of one table sharing storage, subsection names extending their parent's,
    ///    vendor tags at levels `1..=`[`MAX_LEVELS`](crate::v4::MAX_LEVELS), at most
    ///    `layout.vendors`, and only on the section's own subsections; nested struct
    ///    descriptions checked the same way against their own size (every byte of the nested
    ///    struct included);
    /// 2. no [`NotMigrated`] entry overlaps a field of the tree (storage is migrated or not);
    /// 3. every byte of the struct is the storage of a field or of a [`NotMigrated`] entry of
    ///    the tree (subsections describe the same struct; a nested struct field covers its
    ///    whole storage, its own description proving its inside);
    /// 4. with `layout.body`, the current-version fields are exactly the first `body` bytes of
    ///    the struct, one copy in wire order ([`Vmsd::storage_plan`]).
    ///
    /// ```
    /// use vmstate::schema::{LayoutRule, StateLayout, Vmsd};
    /// use vmstate::{field, not_migrated};
    /// #[repr(C)]
    /// struct S { a: u8, b: u8, c: u8 }
    /// const T: Vmsd = Vmsd::new("s", 1, 1, 3).fields(&[field!(S, a), field!(S, c)]);
    /// let p = T.layout_problem(StateLayout::of(3)).unwrap();
    /// assert!(matches!(p.rule, LayoutRule::Uncovered { start: 1, end: 2, .. }));
    /// assert_eq!(
    ///     p.message().as_str(),
    ///     "vmsd `s`: state bytes 1..2 are in no table (after field `a`, before field `c`): \
    ///      add the struct field to the table or mark it with not_migrated!"
    /// );
    /// const U: Vmsd = T.not_migrated(&[not_migrated!(S, b)]);
    /// assert_eq!(U.layout_problem(StateLayout::of(3)), None);
    /// ```
    pub const fn layout_problem(&self, layout: StateLayout) -> Option<LayoutProblem> {
        self.tree_problem(layout, true)
    }

    /// [`Vmsd::layout_problem`] for a table that is a section (`top`) or a nested struct's.
    const fn tree_problem(&self, layout: StateLayout, top: bool) -> Option<LayoutProblem> {
        if layout.vendors > crate::v4::MAX_LEVELS {
            return problem(
                self,
                "",
                LayoutRule::ChainTooLong {
                    vendors: layout.vendors,
                },
            );
        }
        if let Some(p) = self.table_problem(layout.size, layout.vendors, top) {
            return Some(p);
        }
        if let Some(p) = marker_problem(self, self) {
            return Some(p);
        }
        if let Some(p) = coverage_problem(self, layout.size) {
            return Some(p);
        }
        match layout.body {
            Some(body) => self.body_problem(body),
            None => None,
        }
    }

    /// Rule 1 of [`Vmsd::layout_problem`] for this table and its subsections (vendor tags only
    /// on a section's own subsections: `top`).
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn on table constants (no `get`): indices below tested lengths"
    )]
    const fn table_problem(&self, size: usize, vendors: usize, top: bool) -> Option<LayoutProblem> {
        let t = &self.table;
        if t.size != size {
            let rule = LayoutRule::Size {
                table: t.size,
                state: size,
            };
            return problem(self, "", rule);
        }
        if t.minimum_version_id > t.version_id {
            let rule = LayoutRule::Versions {
                minimum: t.minimum_version_id,
                current: t.version_id,
            };
            return problem(self, "", rule);
        }
        if t.name.is_empty() || t.name.len() > 255 {
            return problem(self, "", LayoutRule::Name { len: t.name.len() });
        }
        if t.subsections.len() > MAX_SUBSECTIONS {
            let rule = LayoutRule::TooManySubsections {
                count: t.subsections.len(),
            };
            return problem(self, "", rule);
        }
        let mut i = 0;
        while i < t.fields.len() + t.not_migrated.len() {
            let (name, start, end) = storage(t, i);
            if end > size {
                return problem(self, name, LayoutRule::Outside { start, end, size });
            }
            // Storage ranges of two fields must not overlap (markers: rule 2).
            let mut j = 0;
            while j < i && i < t.fields.len() {
                let (other, o_start, o_end) = storage(t, j);
                if overlap(start, end, o_start, o_end) {
                    let rule = LayoutRule::Overlap { start, end, other };
                    return problem(self, name, rule);
                }
                j += 1;
            }
            i += 1;
        }
        i = 0;
        while i < t.fields.len() {
            let f = &t.fields[i];
            i += 1;
            if f.since > t.version_id {
                let rule = LayoutRule::FutureVersion {
                    since: f.since,
                    current: t.version_id,
                };
                return problem(self, f.name, rule);
            }
            let (count, nested) = match f.kind {
                Kind::Struct { vmsd, .. } => (None, Some(vmsd)),
                Kind::VArray {
                    elem: Elem::Struct(vmsd),
                    count,
                } => (Some(count), Some(vmsd)),
                Kind::VArray { count, .. } | Kind::VBuffer { size: count } => (Some(count), None),
                _ => (None, None),
            };
            if let Some(c) = count {
                let end = c.offset.saturating_add(c.ty.width());
                if end > size {
                    let rule = LayoutRule::CountOutside {
                        start: c.offset,
                        end,
                        size,
                    };
                    return problem(self, f.name, rule);
                }
            }
            if let Some(v) = nested {
                let layout = StateLayout::of(v.table.size).vendors(vendors);
                if let Some(p) = v.tree_problem(layout, false) {
                    return Some(p);
                }
            }
        }
        i = 0;
        while i < t.subsections.len() {
            let sub = &t.subsections[i];
            i += 1;
            let parent = t.name;
            if !starts_with(sub.vmsd.table.name, parent)
                || sub.vmsd.table.name.len() <= parent.len()
            {
                return problem(sub.vmsd, "", LayoutRule::SubsectionName { parent });
            }
            if let Some(tag) = sub.vendor {
                let level = tag.level as usize;
                if !top {
                    let rule = LayoutRule::NestedVendorTag {
                        parent,
                        level: tag.level,
                    };
                    return problem(sub.vmsd, "", rule);
                }
                if level == 0 || level > crate::v4::MAX_LEVELS {
                    let rule = LayoutRule::VendorLevel {
                        parent,
                        level: tag.level,
                    };
                    return problem(sub.vmsd, "", rule);
                }
                if level > vendors {
                    let rule = LayoutRule::AboveChain {
                        parent,
                        level: tag.level,
                        vendors,
                    };
                    return problem(sub.vmsd, "", rule);
                }
            }
            if let Some(p) = sub.vmsd.table_problem(size, vendors, false) {
                return Some(p);
            }
        }
        None
    }

    /// Rule 4 of [`Vmsd::layout_problem`]: the fields are the first `body` bytes, one copy.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn on table constants (no `get`): indices below tested lengths"
    )]
    const fn body_problem(&self, body: usize) -> Option<LayoutProblem> {
        match self.storage_plan() {
            Some(p) if p.len as usize == body => None,
            Some(p) => {
                let rule = LayoutRule::NotTheBody {
                    body,
                    copy: p.len as usize,
                };
                problem(self, "", rule)
            }
            None => {
                // Name the first field that is not the next bytes of the copy.
                let t = &self.table;
                let mut at = 0;
                let mut i = 0;
                while i < t.fields.len() {
                    let f = &t.fields[i];
                    let plain = f.exists.is_none()
                        && f.since <= t.version_id
                        && !matches!(
                            f.kind,
                            Kind::VArray { .. }
                                | Kind::VBuffer { .. }
                                | Kind::Validate { .. }
                                | Kind::NullPtr
                        );
                    if f.offset != at || !plain {
                        break;
                    }
                    at += f.storage_size();
                    i += 1;
                }
                let name = if i < t.fields.len() {
                    t.fields[i].name
                } else {
                    ""
                };
                problem(self, name, LayoutRule::NotACopy)
            }
        }
    }
}

/// Whether the non-empty ranges `a..b` and `c..d` share a byte.
const fn overlap(a: usize, b: usize, c: usize, d: usize) -> bool {
    a < b && c < d && a < d && c < b
}

/// The `i`th storage range of `t`: `(name, start, end)`, fields first, then the
/// [`NotMigrated`] entries.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn on table constants (no `get`): indices below tested lengths"
)]
const fn storage(t: &Table, i: usize) -> (&'static str, usize, usize) {
    if i < t.fields.len() {
        let f = &t.fields[i];
        (f.name, f.offset, f.offset.saturating_add(f.storage_size()))
    } else {
        let m = &t.not_migrated[i - t.fields.len()];
        (m.name, m.offset, m.offset.saturating_add(m.len))
    }
}

/// Rule 2 of [`Vmsd::layout_problem`]: a [`NotMigrated`] entry of `v` (a table of `root`'s
/// tree) overlapping a field of the tree.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn on table constants (no `get`): indices below tested lengths"
)]
const fn marker_problem(root: &Vmsd, v: &Vmsd) -> Option<LayoutProblem> {
    let t = &v.table;
    let mut i = t.fields.len();
    while i < t.fields.len() + t.not_migrated.len() {
        let (name, start, end) = storage(t, i);
        if let Some(by) = migrated_in(root, start, end) {
            return problem(v, name, LayoutRule::Migrated { by });
        }
        i += 1;
    }
    let mut s = 0;
    while s < t.subsections.len() {
        if let Some(p) = marker_problem(root, t.subsections[s].vmsd) {
            return Some(p);
        }
        s += 1;
    }
    None
}

/// The name of a field of `v`'s tree whose storage overlaps `start..end`.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn on table constants (no `get`): indices below tested lengths"
)]
const fn migrated_in(v: &Vmsd, start: usize, end: usize) -> Option<&'static str> {
    let t = &v.table;
    let mut i = 0;
    while i < t.fields.len() {
        let (name, s, e) = storage(t, i);
        if overlap(start, end, s, e) {
            return Some(name);
        }
        i += 1;
    }
    let mut s = 0;
    while s < t.subsections.len() {
        if let Some(name) = migrated_in(t.subsections[s].vmsd, start, end) {
            return Some(name);
        }
        s += 1;
    }
    None
}

/// Rule 3 of [`Vmsd::layout_problem`]: the first bytes of `size` no storage range of `root`'s
/// tree covers.
const fn coverage_problem(root: &Vmsd, size: usize) -> Option<LayoutProblem> {
    let mut pos = 0;
    while pos < size {
        let a = around(
            root,
            Around {
                pos,
                reach: pos,
                before: None,
                after: None,
            },
        );
        if a.reach > pos {
            pos = a.reach;
            continue;
        }
        let (after, end) = match a.after {
            Some((name, start)) if start < size => (name, start),
            _ => ("", size),
        };
        let before = match a.before {
            Some((name, _)) => name,
            None => "",
        };
        let rule = LayoutRule::Uncovered {
            start: pos,
            end,
            before,
            after,
        };
        return problem(root, "", rule);
    }
    None
}

/// What the storage ranges of a table tree say about the byte at `pos`.
#[derive(Clone, Copy)]
struct Around {
    pos: usize,
    /// The furthest end of a range holding `pos` (`pos` if none does).
    reach: usize,
    /// The range ending last at or before `pos`: (name, end).
    before: Option<(&'static str, usize)>,
    /// The range starting first after `pos`: (name, start).
    after: Option<(&'static str, usize)>,
}

/// `a` updated with the non-empty storage ranges of `v`'s tree.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn on table constants (no `get`): indices below tested lengths"
)]
const fn around(v: &Vmsd, mut a: Around) -> Around {
    let t = &v.table;
    let mut i = 0;
    while i < t.fields.len() + t.not_migrated.len() {
        let (name, start, end) = storage(t, i);
        i += 1;
        if start >= end {
            continue;
        }
        if start <= a.pos && a.pos < end && end > a.reach {
            a.reach = end;
        }
        if end <= a.pos && !matches!(a.before, Some((_, e)) if e >= end) {
            a.before = Some((name, end));
        }
        if start > a.pos && !matches!(a.after, Some((_, s)) if s <= start) {
            a.after = Some((name, start));
        }
    }
    let mut s = 0;
    while s < t.subsections.len() {
        a = around(t.subsections[s].vmsd, a);
        s += 1;
    }
    a
}

const fn problem(v: &Vmsd, field: &'static str, rule: LayoutRule) -> Option<LayoutProblem> {
    Some(LayoutProblem {
        vmsd: v.table.name,
        field,
        rule,
    })
}

/// What [`assert_layout!`](crate::assert_layout) checks a table against: the state struct's
/// size, optionally the body at its start, and the vendor levels of the streams it is written
/// to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLayout {
    /// `size_of` the state struct.
    pub size: usize,
    /// `size_of` the struct that must be exactly the current-version body (`wire`, `body = B`).
    pub body: Option<usize>,
    /// Vendor levels of the header's chain: vendor tags above it are refused (the v4 writer
    /// checks the actual header at run time).
    pub vendors: usize,
}

impl StateLayout {
    /// A state struct of `size` bytes, no body requirement, any chain
    /// ([`MAX_LEVELS`](crate::v4::MAX_LEVELS) vendor levels).
    pub const fn of(size: usize) -> StateLayout {
        StateLayout {
            size,
            body: None,
            vendors: crate::v4::MAX_LEVELS,
        }
    }

    /// Requires the current-version fields to be exactly the first `len` bytes of the struct.
    pub const fn body(mut self, len: usize) -> StateLayout {
        self.body = Some(len);
        self
    }

    /// Refuses vendor tags above level `levels`.
    pub const fn vendors(mut self, levels: usize) -> StateLayout {
        self.vendors = levels;
        self
    }
}

/// The first disagreement [`Vmsd::layout_problem`] finds between a table and its state struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutProblem {
    /// The table it is in (a subsection's or a nested struct's own table when it is there).
    pub vmsd: &'static str,
    /// The field or [`NotMigrated`] entry concerned (`""`: the table itself).
    pub field: &'static str,
    /// What is wrong.
    pub rule: LayoutRule,
}

/// The rule a [`LayoutProblem`] breaks. Ranges are byte offsets `start..end` in the state
/// struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutRule {
    /// The table's size is not the struct's.
    Size {
        /// The table's `size`.
        table: usize,
        /// The struct's.
        state: usize,
    },
    /// `minimum_version_id > version_id`.
    Versions {
        /// `minimum_version_id`.
        minimum: u32,
        /// `version_id`.
        current: u32,
    },
    /// The table's name is empty or longer than 255 bytes.
    Name {
        /// Its length.
        len: usize,
    },
    /// More than [`MAX_SUBSECTIONS`] subsections.
    TooManySubsections {
        /// How many.
        count: usize,
    },
    /// The field's storage ends past the struct.
    Outside {
        /// Storage start.
        start: usize,
        /// Storage end.
        end: usize,
        /// The struct's size.
        size: usize,
    },
    /// A variable array's count (or buffer's size) field ends past the struct.
    CountOutside {
        /// Count start.
        start: usize,
        /// Count end.
        end: usize,
        /// The struct's size.
        size: usize,
    },
    /// The field is gated on a version newer than the table's.
    FutureVersion {
        /// The field's `since`.
        since: u32,
        /// The table's `version_id`.
        current: u32,
    },
    /// The field shares storage with an earlier field of the same table.
    Overlap {
        /// Storage start.
        start: usize,
        /// Storage end.
        end: usize,
        /// The earlier field.
        other: &'static str,
    },
    /// A subsection's name does not extend its parent's.
    SubsectionName {
        /// The parent's name.
        parent: &'static str,
    },
    /// A [`NotMigrated`] entry's storage is migrated by a field.
    Migrated {
        /// The field.
        by: &'static str,
    },
    /// Bytes of the struct no field or [`NotMigrated`] entry covers: a struct field left out
    /// of the table.
    Uncovered {
        /// First uncovered byte.
        start: usize,
        /// End of the uncovered run.
        end: usize,
        /// The field (or entry) ending last before them (`""`: none).
        before: &'static str,
        /// The field (or entry) starting first after them (`""`: none).
        after: &'static str,
    },
    /// A vendor-tagged subsection at level 0 (upstream) or above
    /// [`MAX_LEVELS`](crate::v4::MAX_LEVELS).
    VendorLevel {
        /// The parent table.
        parent: &'static str,
        /// The tag's level.
        level: u8,
    },
    /// A vendor-tagged subsection above the chain `assert_layout!(…, vendors = N)` names.
    AboveChain {
        /// The parent table.
        parent: &'static str,
        /// The tag's level.
        level: u8,
        /// The chain's vendor levels.
        vendors: usize,
    },
    /// A vendor tag on a subsection that is not a section's own (a subsection's or a nested
    /// struct's): only a section's own subsections are framed and tagged (docs/FORMAT.md §3),
    /// so the tag would be ignored.
    NestedVendorTag {
        /// The parent table.
        parent: &'static str,
        /// The tag's level.
        level: u8,
    },
    /// `vendors = N` with `N` above [`MAX_LEVELS`](crate::v4::MAX_LEVELS).
    ChainTooLong {
        /// `N`.
        vendors: usize,
    },
    /// The fields are one copy, but not of the body's size.
    NotTheBody {
        /// The body struct's size.
        body: usize,
        /// The copy's length.
        copy: usize,
    },
    /// The fields are not one copy of the struct in wire order (the field named, if any, is
    /// the first that breaks it).
    NotACopy,
}

impl LayoutProblem {
    /// The problem in words: `vmsd `NAME`, field `FIELD`: …` (what `assert_layout!` panics
    /// with, at compile time).
    pub const fn message(&self) -> LayoutMessage {
        let mut m = LayoutMessage {
            buf: [0; LAYOUT_MESSAGE_LEN],
            len: 0,
        };
        m.push("vmsd `").push(self.vmsd).push("`");
        if !self.field.is_empty() {
            m.push(", field `").push(self.field).push("`");
        }
        m.push(": ");
        match self.rule {
            LayoutRule::Size { table, state } => {
                m.push("the table's size is ").num(table);
                m.push(" bytes, the state struct's ").num(state);
            }
            LayoutRule::Versions { minimum, current } => {
                m.push("minimum_version_id ").num(minimum as usize);
                m.push(" > version_id ").num(current as usize);
            }
            LayoutRule::Name { len } => {
                m.push("the name is ").num(len).push(" bytes (1..=255)");
            }
            LayoutRule::TooManySubsections { count } => {
                m.push("")
                    .num(count)
                    .push(" subsections, at most ")
                    .num(MAX_SUBSECTIONS);
            }
            LayoutRule::Outside { start, end, size } => {
                m.push("storage ").num(start).push("..").num(end);
                m.push(" lies outside the ")
                    .num(size)
                    .push("-byte state struct");
            }
            LayoutRule::CountOutside { start, end, size } => {
                m.push("count ").num(start).push("..").num(end);
                m.push(" lies outside the ")
                    .num(size)
                    .push("-byte state struct");
            }
            LayoutRule::FutureVersion { since, current } => {
                m.push("gated on version ").num(since as usize);
                m.push(", newer than the table's ").num(current as usize);
            }
            LayoutRule::Overlap { start, end, other } => {
                m.push("storage ").num(start).push("..").num(end);
                m.push(" overlaps field `").push(other).push("`");
            }
            LayoutRule::SubsectionName { parent } => {
                m.push("a subsection's name must extend its parent's `")
                    .push(parent)
                    .push("`");
            }
            LayoutRule::Migrated { by } => {
                m.push("marked not_migrated! but field `")
                    .push(by)
                    .push("` migrates it");
            }
            LayoutRule::Uncovered {
                start,
                end,
                before,
                after,
            } => {
                m.push("state bytes ")
                    .num(start)
                    .push("..")
                    .num(end)
                    .push(" are in no table (");
                if !before.is_empty() {
                    m.push("after field `").push(before).push("`");
                }
                if !before.is_empty() && !after.is_empty() {
                    m.push(", ");
                }
                if !after.is_empty() {
                    m.push("before field `").push(after).push("`");
                }
                if before.is_empty() && after.is_empty() {
                    m.push("the table has no fields");
                }
                m.push("): add the struct field to the table or mark it with not_migrated!");
            }
            LayoutRule::VendorLevel { parent, level } => {
                m.push("subsection of `")
                    .push(parent)
                    .push("` tagged vendor level ");
                m.num(level as usize)
                    .push(", outside 1..=")
                    .num(crate::v4::MAX_LEVELS);
                m.push(" (level 0 is upstream QEMU)");
            }
            LayoutRule::AboveChain {
                parent,
                level,
                vendors,
            } => {
                m.push("subsection of `")
                    .push(parent)
                    .push("` tagged vendor level ");
                m.num(level as usize)
                    .push(", above the chain's ")
                    .num(vendors);
                m.push(" (vendors = ").num(vendors).push(")");
            }
            LayoutRule::NestedVendorTag { parent, level } => {
                m.push("subsection of `")
                    .push(parent)
                    .push("` tagged vendor level ");
                m.num(level as usize);
                m.push(", but only a section's own subsections carry vendor tags");
            }
            LayoutRule::ChainTooLong { vendors } => {
                m.push("vendors = ")
                    .num(vendors)
                    .push(", a chain has at most ");
                m.num(crate::v4::MAX_LEVELS).push(" vendor levels");
            }
            LayoutRule::NotTheBody { body, copy } => {
                m.push("the fields are one copy of ").num(copy);
                m.push(" bytes, not of the ").num(body).push("-byte body");
            }
            LayoutRule::NotACopy => {
                m.push("the fields are not one copy of the struct in wire order");
            }
        }
        m
    }
}

impl core::fmt::Display for LayoutProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message().as_str())
    }
}

/// Bytes a [`LayoutMessage`] holds (a longer message is cut at a character boundary).
pub const LAYOUT_MESSAGE_LEN: usize = 512;

/// A [`LayoutProblem`]'s message, formatted in a `const` context into a fixed buffer.
#[derive(Debug, Clone, Copy)]
pub struct LayoutMessage {
    buf: [u8; LAYOUT_MESSAGE_LEN],
    len: usize,
}

impl LayoutMessage {
    /// The message.
    pub const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.buf.split_at(self.len).0) {
            Ok(s) => s,
            // Unreachable: only whole characters of `&str`s are pushed.
            Err(_) => "layout problem",
        }
    }

    /// Appends `s`, or as many of its leading characters as fit.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn on table constants (no `get`): indices below tested lengths"
    )]
    const fn push(&mut self, s: &str) -> &mut LayoutMessage {
        let b = s.as_bytes();
        let mut n = b.len();
        if n > LAYOUT_MESSAGE_LEN - self.len {
            n = LAYOUT_MESSAGE_LEN - self.len;
            // Cut before a continuation byte's character.
            while n > 0 && b[n] & 0xc0 == 0x80 {
                n -= 1;
            }
        }
        let mut i = 0;
        while i < n {
            self.buf[self.len + i] = b[i];
            i += 1;
        }
        self.len += n;
        self
    }

    /// Appends `n` in decimal.
    #[allow(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        reason = "const fn on table constants (no `get`): indices below tested lengths"
    )]
    const fn num(&mut self, mut n: usize) -> &mut LayoutMessage {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        match core::str::from_utf8(digits.split_at(i).1) {
            Ok(s) => self.push(s),
            Err(_) => self,
        }
    }
}

#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
const fn starts_with(s: &str, prefix: &str) -> bool {
    let (s, p) = (s.as_bytes(), prefix.as_bytes());
    if p.len() > s.len() {
        return false;
    }
    let mut i = 0;
    while i < p.len() {
        if s[i] != p[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Maps a Rust field type to its wire kind. Implemented for `u8`, `i8`, the zerocopy big-endian
/// integers, byte arrays and arrays of big-endian integers.
pub trait WireType {
    /// The kind a field of this type has by default.
    const KIND: Kind;
}

/// Maps a Rust field type to the integer type of a count.
pub trait CountWire {
    /// The count type.
    const TYPE: CountType;
}

macro_rules! wire_types {
    ($($t:ty => $s:ident),* $(,)?) => {$(
        impl WireType for $t {
            const KIND: Kind = Kind::Scalar(Scalar::$s);
        }
        impl<const N: usize> WireType for [$t; N] {
            const KIND: Kind = Kind::Array { elem: Scalar::$s, len: N };
        }
    )*};
}

use zerocopy::byteorder::big_endian as be;

wire_types! {
    i8 => I8,
    be::U16 => U16,
    be::U32 => U32,
    be::U64 => U64,
    be::I16 => I16,
    be::I32 => I32,
    be::I64 => I64,
}

impl WireType for u8 {
    const KIND: Kind = Kind::Scalar(Scalar::U8);
}

impl<const N: usize> WireType for [u8; N] {
    const KIND: Kind = Kind::Buffer { len: N };
}

impl CountWire for u8 {
    const TYPE: CountType = CountType::U8;
}
impl CountWire for be::U16 {
    const TYPE: CountType = CountType::U16;
}
impl CountWire for be::U32 {
    const TYPE: CountType = CountType::U32;
}
impl CountWire for be::I32 {
    const TYPE: CountType = CountType::I32;
}

/// The kind of the field `f` selects (type inference helper for [`field!`](crate::field)).
pub const fn kind_of<S, F: WireType>(_f: fn(&S) -> &F) -> Kind {
    F::KIND
}

/// The size of the field `f` selects.
pub const fn size_of_field<S, F>(_f: fn(&S) -> &F) -> usize {
    core::mem::size_of::<F>()
}

/// The count type of the field `f` selects.
pub const fn count_type_of<S, F: CountWire>(_f: fn(&S) -> &F) -> CountType {
    F::TYPE
}

/// The last `.`-separated segment of a stringified field path (`"a . b"` → `"b"`).
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
pub const fn last_segment(path: &str) -> &str {
    let b = path.as_bytes();
    let mut i = b.len();
    while i > 0 {
        if b[i - 1] == b'.' || b[i - 1] == b' ' {
            break;
        }
        i -= 1;
    }
    path.split_at(i).1
}

/// A table field for `State.path`, its kind derived from the field's Rust type.
///
/// ```
/// use vmstate::{field, schema::Field};
/// use zerocopy::byteorder::big_endian::U32;
/// #[repr(C)]
/// struct S { a: u8, b: U32 }
/// const F: &[Field] = &[field!(S, a), field!(S, b).since(2)];
/// assert_eq!(F[1].offset, 1);
/// ```
#[macro_export]
macro_rules! field {
    ($S:ty, $($p:ident).+) => {
        $crate::schema::Field::new(
            $crate::schema::last_segment(stringify!($($p).+)),
            ::core::mem::offset_of!($S, $($p).+),
            $crate::schema::kind_of::<$S, _>(|s: &$S| &s.$($p).+),
        )
    };
}

/// A nested struct field (`VMSTATE_STRUCT`) or fixed struct array (`VMSTATE_STRUCT_ARRAY`):
/// the element count is the field's size over the nested description's size, checked exact.
///
/// ```
/// use vmstate::{Kind, Vmsd, field, struct_field};
/// #[repr(C)]
/// struct Chan { mode: u8 }
/// #[repr(C)]
/// struct Pit { chans: [Chan; 3] }
/// const CHAN: Vmsd = Vmsd::new("chan", 1, 1, 1).fields(&[field!(Chan, mode)]);
/// assert!(matches!(struct_field!(Pit, chans, CHAN).kind, Kind::Struct { len: 3, .. }));
/// ```
#[macro_export]
macro_rules! struct_field {
    ($S:ty, $($p:ident).+, $vmsd:expr) => {
        $crate::schema::Field::new(
            $crate::schema::last_segment(stringify!($($p).+)),
            ::core::mem::offset_of!($S, $($p).+),
            $crate::schema::struct_kind(
                $crate::schema::size_of_field::<$S, _>(|s: &$S| &s.$($p).+),
                &$vmsd,
            ),
        )
    };
}

/// A variable array of nested structs whose count is another field of the same struct
/// (`VMSTATE_STRUCT_VARRAY_*`); capacity is the storage array's length.
///
/// ```
/// use vmstate::{Kind, Vmsd, field, struct_varray};
/// #[repr(C)]
/// struct Entry { v: u8 }
/// #[repr(C)]
/// struct Table { n: u8, entries: [Entry; 4] }
/// const ENTRY: Vmsd = Vmsd::new("entry", 1, 1, 1).fields(&[field!(Entry, v)]);
/// let f = struct_varray!(Table, entries, ENTRY, count = n);
/// assert!(matches!(f.kind, Kind::VArray { count, .. } if count.capacity == 4));
/// ```
#[macro_export]
macro_rules! struct_varray {
    ($S:ty, $($p:ident).+, $vmsd:expr, count = $($c:ident).+) => {
        $crate::schema::Field::new(
            $crate::schema::last_segment(stringify!($($p).+)),
            ::core::mem::offset_of!($S, $($p).+),
            $crate::schema::struct_varray_kind(
                $crate::schema::size_of_field::<$S, _>(|s: &$S| &s.$($p).+),
                &$vmsd,
                ::core::mem::offset_of!($S, $($c).+),
                $crate::schema::count_type_of::<$S, _>(|s: &$S| &s.$($c).+),
            ),
        )
    };
}

/// A variable array of scalars whose count is another field (`VMSTATE_VARRAY_*`).
///
/// ```
/// use vmstate::{Kind, varray};
/// use zerocopy::byteorder::big_endian::U32;
/// #[repr(C)]
/// struct S { n: U32, vals: [u8; 16] }
/// // On load, a count above the storage (16) is refused before any element is read.
/// let f = varray!(S, vals, count = n);
/// assert!(matches!(f.kind, Kind::VArray { count, .. } if count.offset == 0 && count.capacity == 16));
/// ```
#[macro_export]
macro_rules! varray {
    ($S:ty, $($p:ident).+, count = $($c:ident).+) => {
        $crate::schema::Field::new(
            $crate::schema::last_segment(stringify!($($p).+)),
            ::core::mem::offset_of!($S, $($p).+),
            $crate::schema::varray_kind(
                $crate::schema::kind_of::<$S, _>(|s: &$S| &s.$($p).+),
                ::core::mem::offset_of!($S, $($c).+),
                $crate::schema::count_type_of::<$S, _>(|s: &$S| &s.$($c).+),
            ),
        )
    };
}

/// A variable-size byte buffer whose size is another field (`VMSTATE_VBUFFER*`).
///
/// ```
/// use vmstate::{Kind, vbuffer};
/// #[repr(C)]
/// struct S { len: u8, data: [u8; 32] }
/// let f = vbuffer!(S, data, size = len);
/// assert!(matches!(f.kind, Kind::VBuffer { size } if size.capacity == 32));
/// ```
#[macro_export]
macro_rules! vbuffer {
    ($S:ty, $($p:ident).+, size = $($c:ident).+) => {
        $crate::schema::Field::new(
            $crate::schema::last_segment(stringify!($($p).+)),
            ::core::mem::offset_of!($S, $($p).+),
            $crate::schema::Kind::VBuffer {
                size: $crate::schema::Count {
                    offset: ::core::mem::offset_of!($S, $($c).+),
                    ty: $crate::schema::count_type_of::<$S, _>(|s: &$S| &s.$($c).+),
                    capacity: $crate::schema::size_of_field::<$S, _>(|s: &$S| &s.$($p).+),
                },
            },
        )
    };
}

/// The kind of a struct field of `size` bytes holding elements described by `vmsd`.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
pub const fn struct_kind(size: usize, vmsd: &'static Vmsd) -> Kind {
    if vmsd.table.size == 0 || size == 0 || !size.is_multiple_of(vmsd.table.size) {
        panic!("struct field size is not a multiple of the nested vmsd size");
    }
    Kind::Struct {
        vmsd,
        len: size / vmsd.table.size,
    }
}

/// The kind of a struct varray of `size` bytes of storage counted by the field at
/// `count_offset`.
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "const fn"
)]
pub const fn struct_varray_kind(
    size: usize,
    vmsd: &'static Vmsd,
    count_offset: usize,
    ty: CountType,
) -> Kind {
    if vmsd.table.size == 0 || !size.is_multiple_of(vmsd.table.size) {
        panic!("varray storage is not a multiple of the element size");
    }
    Kind::VArray {
        elem: Elem::Struct(vmsd),
        count: Count {
            offset: count_offset,
            ty,
            capacity: size / vmsd.table.size,
        },
    }
}

/// The kind of a scalar varray whose storage has kind `storage` (an array or byte buffer).
pub const fn varray_kind(storage: Kind, count_offset: usize, ty: CountType) -> Kind {
    let (elem, capacity) = match storage {
        Kind::Array { elem, len } => (elem, len),
        Kind::Buffer { len } => (Scalar::U8, len),
        _ => panic!("varray storage must be an array"),
    };
    Kind::VArray {
        elem: Elem::Scalar(elem),
        count: Count {
            offset: count_offset,
            ty,
            capacity,
        },
    }
}

/// Storage of the state struct a table deliberately does not migrate: `not_migrated!(S, path)`
/// gives a [`NotMigrated`](crate::schema::NotMigrated) for `S.path`, listed with
/// [`Vmsd::not_migrated`](crate::schema::Vmsd::not_migrated) so that
/// [`assert_layout!`](crate::assert_layout) accepts leaving it out of the table.
///
/// ```
/// use vmstate::{assert_layout, field, not_migrated, Vmsd};
/// #[repr(C)]
/// struct Pic { irr: u8, imr: u8, elcr_mask: u8 }
/// // `elcr_mask` is the destination's configuration, not part of the wire state.
/// const PIC: Vmsd = Vmsd::new("pic", 1, 1, size_of::<Pic>())
///     .fields(&[field!(Pic, irr), field!(Pic, imr)])
///     .not_migrated(&[not_migrated!(Pic, elcr_mask)]);
/// assert_layout!(Pic, PIC);
/// ```
#[macro_export]
macro_rules! not_migrated {
    ($S:ty, $($p:ident).+) => {
        $crate::schema::NotMigrated {
            name: $crate::schema::last_segment(stringify!($($p).+)),
            offset: ::core::mem::offset_of!($S, $($p).+),
            len: $crate::schema::size_of_field::<$S, _>(|s: &$S| &s.$($p).+),
        }
    };
}

/// Checks at compile time that `$vmsd` describes the state struct `$S` (every rule of
/// [`Vmsd::layout_problem`](crate::schema::Vmsd::layout_problem)); a disagreement fails the
/// build with a message naming the table and the field.
///
/// * `assert_layout!(S, T)`: the table fits the struct, and every byte of `S` is the storage of
///   a field of `T` or of its subsections (recursively; nested struct fields through their own
///   tables) or is marked with [`not_migrated!`](crate::not_migrated): a struct field cannot be
///   left out of the table by accident. Vendor tags must be at levels `1..=8`.
/// * `assert_layout!(S, T, wire)`: also, the current-version fields are exactly `S`, one copy in
///   wire order (what makes `vmstate::view` a zero-copy read).
/// * `assert_layout!(S, T, body = B)`: also, the current-version fields are exactly the struct
///   `B` at the start of `S`.
/// * `, vendors = N` after any of these: vendor tags above level `N` are refused, for tables
///   written under a header whose vendor chain has `N` levels. The table cannot see the
///   header: the v4 writer checks each tag against the actual header at run time.
///
/// ```
/// use vmstate::schema::{Subsection, VendorTag};
/// use vmstate::{assert_layout, field, not_migrated, pred, Vmsd};
/// use zerocopy::byteorder::big_endian::U16;
/// use zerocopy::{FromBytes, Immutable, KnownLayout};
/// #[repr(C)]
/// #[derive(FromBytes, KnownLayout, Immutable)]
/// struct Dev { ctrl: U16, status: u8, feature: u8, host_fd: u8 }
/// const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, size_of::<Dev>())
///     .fields(&[field!(Dev, feature)]);
/// const TAG: VendorTag = VendorTag { level: 1, minor: 1, must_understand: false };
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, size_of::<Dev>())
///     .fields(&[field!(Dev, ctrl), field!(Dev, status)])
///     .subsections(&[Subsection::new(&FEATURE, pred!(Dev, |d| d.feature != 0)).vendor(TAG)])
///     .not_migrated(&[not_migrated!(Dev, host_fd)]);
/// assert_layout!(Dev, DEV, vendors = 1);
/// ```
///
/// A struct field missing from the table ("vmsd `dev`: state bytes 2..3 are in no table (after
/// field `ctrl`, before field `feature`): add the struct field to the table or mark it with
/// not_migrated!"):
///
/// ```compile_fail
/// # use vmstate::{assert_layout, field, Vmsd};
/// # use zerocopy::byteorder::big_endian::U16;
/// #[repr(C)]
/// struct Dev { ctrl: U16, status: u8, feature: u8 }
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, size_of::<Dev>())
///     .fields(&[field!(Dev, ctrl), field!(Dev, feature)]);
/// assert_layout!(Dev, DEV);
/// ```
///
/// A field missing from a subsection's table ("vmsd `dev`: state bytes 4..5 are in no table
/// (after field `feature`) …"):
///
/// ```compile_fail
/// # use vmstate::schema::Subsection;
/// # use vmstate::{assert_layout, field, Vmsd};
/// # fn used(_: &[u8]) -> bool { true }
/// # use zerocopy::byteorder::big_endian::U16;
/// #[repr(C)]
/// struct Dev { ctrl: U16, status: u8, feature: u8, feature_arg: u8 }
/// const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, size_of::<Dev>())
///     .fields(&[field!(Dev, feature)]);
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, size_of::<Dev>())
///     .fields(&[field!(Dev, ctrl), field!(Dev, status)])
///     .subsections(&[Subsection::new(&FEATURE, used)]);
/// assert_layout!(Dev, DEV);
/// ```
///
/// A vendor tag at level 0, which is upstream QEMU ("vmsd `dev/feature`: subsection of `dev`
/// tagged vendor level 0, outside 1..=8 …"):
///
/// ```compile_fail
/// # use vmstate::schema::{Subsection, VendorTag};
/// # use vmstate::{assert_layout, field, Vmsd};
/// # fn used(_: &[u8]) -> bool { true }
/// # #[repr(C)]
/// # struct Dev { status: u8, feature: u8 }
/// # const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, 2).fields(&[field!(Dev, feature)]);
/// const TAG: VendorTag = VendorTag { level: 0, minor: 1, must_understand: false };
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, 2)
///     .fields(&[field!(Dev, status)])
///     .subsections(&[Subsection::new(&FEATURE, used).vendor(TAG)]);
/// assert_layout!(Dev, DEV);
/// ```
///
/// A vendor tag at level 9 (a chain has at most 8 levels: "… tagged vendor level 9, outside
/// 1..=8 …"):
///
/// ```compile_fail
/// # use vmstate::schema::{Subsection, VendorTag};
/// # use vmstate::{assert_layout, field, Vmsd};
/// # fn used(_: &[u8]) -> bool { true }
/// # #[repr(C)]
/// # struct Dev { status: u8, feature: u8 }
/// # const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, 2).fields(&[field!(Dev, feature)]);
/// const TAG: VendorTag = VendorTag { level: 9, minor: 1, must_understand: false };
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, 2)
///     .fields(&[field!(Dev, status)])
///     .subsections(&[Subsection::new(&FEATURE, used).vendor(TAG)]);
/// assert_layout!(Dev, DEV);
/// ```
///
/// A vendor tag above the chain the table is written under ("… tagged vendor level 2, above
/// the chain's 1 (vendors = 1)"):
///
/// ```compile_fail
/// # use vmstate::schema::{Subsection, VendorTag};
/// # use vmstate::{assert_layout, field, Vmsd};
/// # fn used(_: &[u8]) -> bool { true }
/// # #[repr(C)]
/// # struct Dev { status: u8, feature: u8 }
/// # const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, 2).fields(&[field!(Dev, feature)]);
/// const TAG: VendorTag = VendorTag { level: 2, minor: 1, must_understand: false };
/// const DEV: Vmsd = Vmsd::new("dev", 1, 1, 2)
///     .fields(&[field!(Dev, status)])
///     .subsections(&[Subsection::new(&FEATURE, used).vendor(TAG)]);
/// assert_layout!(Dev, DEV, vendors = 1);
/// ```
#[macro_export]
macro_rules! assert_layout {
    (@check $vmsd:expr, $layout:expr) => {
        const _: () = $vmsd.check($layout);
    };
    ($S:ty, $vmsd:expr $(, vendors = $n:expr)?) => {
        $crate::assert_layout!(@check $vmsd, $crate::schema::StateLayout::of(
            ::core::mem::size_of::<$S>()) $(.vendors($n))?);
    };
    ($S:ty, $vmsd:expr, body = $B:ty $(, vendors = $n:expr)?) => {
        $crate::assert_layout!(@check $vmsd, $crate::schema::StateLayout::of(
            ::core::mem::size_of::<$S>()).body(::core::mem::size_of::<$B>()) $(.vendors($n))?);
    };
    ($S:ty, $vmsd:expr, wire $(, vendors = $n:expr)?) => {
        $crate::assert_layout!($S, $vmsd, body = $S $(, vendors = $n)?);
    };
}

/// A typed predicate: `pred!(State, |s| s.x.get() != 0)` gives a `fn(&[u8]) -> bool` over the
/// erased state bytes, for `needed` and similar hooks.
///
/// ```
/// use zerocopy::{FromBytes, Immutable, KnownLayout};
/// #[repr(C)]
/// #[derive(FromBytes, KnownLayout, Immutable)]
/// struct S { armed: u8 }
/// let needed: fn(&[u8]) -> bool = vmstate::pred!(S, |s| s.armed != 0);
/// assert!(needed(&[1]) && !needed(&[0]));
/// assert!(!needed(&[])); // bytes that are not an `S`: false
/// ```
#[macro_export]
macro_rules! pred {
    ($S:ty, |$s:ident| $body:expr) => {
        (|bytes: &[u8]| -> bool {
            match <$S as $crate::zerocopy::FromBytes>::ref_from_prefix(bytes) {
                Ok(($s, _)) => $body,
                Err(_) => false,
            }
        }) as fn(&[u8]) -> bool
    };
}

/// A typed mutator: `mutate!(State, |s| s.x = 0.into())` gives a `fn(&mut [u8])`, for `pre_load`
/// and subsection defaults.
///
/// ```
/// use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
/// #[repr(C)]
/// #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// struct S { armed: u8 }
/// let disarm: fn(&mut [u8]) = vmstate::mutate!(S, |s| s.armed = 0);
/// let mut state = [1u8];
/// disarm(&mut state);
/// assert_eq!(state, [0]);
/// ```
#[macro_export]
macro_rules! mutate {
    ($S:ty, |$s:ident| $body:expr) => {
        (|bytes: &mut [u8]| {
            if let Ok(($s, _)) = <$S as $crate::zerocopy::FromBytes>::mut_from_prefix(bytes) {
                $body;
            }
        }) as fn(&mut [u8])
    };
}

/// A typed validation hook: `check!(State, |s, version| { ...; Ok(()) })` gives a
/// [`ValidateFn`].
///
/// ```
/// use vmstate::{Expected, Violation, check, schema::ValidateFn};
/// use zerocopy::{FromBytes, Immutable, KnownLayout};
/// #[repr(C)]
/// #[derive(FromBytes, KnownLayout, Immutable)]
/// struct Fifo { head: u8 }
/// let valid: ValidateFn = check!(Fifo, |s, _version| {
///     if s.head < 16 {
///         return Ok(());
///     }
///     Err(Violation { field: "head", expected: Expected::Below(16), found: s.head.into() })
/// });
/// assert!(valid(&[3], 1).is_ok());
/// assert_eq!(valid(&[16], 1).unwrap_err().field, "head");
/// ```
#[macro_export]
macro_rules! check {
    ($S:ty, |$s:ident, $v:ident| $body:expr) => {
        (|bytes: &[u8], $v: u32| -> ::core::result::Result<(), $crate::Violation> {
            match <$S as $crate::zerocopy::FromBytes>::ref_from_prefix(bytes) {
                Ok(($s, _)) => $body,
                Err(_) => Err($crate::Violation {
                    field: "",
                    expected: $crate::Expected::Rule("state of the described size"),
                    found: bytes.len() as u64,
                }),
            }
        }) as $crate::schema::ValidateFn
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use zerocopy::byteorder::big_endian::{U16, U32};

    #[repr(C)]
    struct Inner {
        x: [u8; 3],
        y: U16,
    }

    #[repr(C)]
    struct S {
        a: u8,
        inner: Inner,
        n: U32,
    }

    const INNER: Vmsd = Vmsd::new("inner", 1, 1, 5).fields(&[field!(Inner, x), field!(Inner, y)]);
    const T: Vmsd = Vmsd::new("s", 2, 1, 8).fields(&[
        field!(S, a),
        field!(S, inner.y).named("y"),
        field!(S, n).since(2),
    ]);
    assert_layout!(Inner, INNER, wire);

    #[test]
    fn macros_derive_offsets_kinds_and_names() {
        assert_eq!(T.fields[1].offset, 4);
        assert_eq!(T.fields[1].name, "y");
        assert!(matches!(T.fields[1].kind, Kind::Scalar(Scalar::U16)));
        assert!(matches!(INNER.fields[0].kind, Kind::Buffer { len: 3 }));
        assert_eq!(last_segment("inner . y"), "y");
        assert_eq!(T.fixed_wire_len(), Some(7));
        assert!(
            T.storage_plan().is_none(),
            "the struct has a gap before `y`"
        );
        assert!(INNER.storage_plan().is_some_and(|p| p.len == 5));
    }

    /// A device with a count, a variable array, a nested struct, a subsection and a host-side
    /// byte: every shape `layout_problem` walks.
    #[repr(C)]
    struct Dev {
        n: u8,
        fifo: [u8; 4],
        inner: Inner,
        feature: U16,
        host: u8,
    }

    const SIZE: usize = size_of::<Dev>();
    const TAG: VendorTag = VendorTag {
        level: 2,
        minor: 1,
        must_understand: false,
    };
    const FEATURE: Vmsd = Vmsd::new("dev/feature", 1, 1, SIZE).fields(&[field!(Dev, feature)]);
    const SUBS: &[Subsection] = &[Subsection::new(&FEATURE, |_| true).vendor(TAG)];
    const HOST: &[NotMigrated] = &[not_migrated!(Dev, host)];
    const FIELDS: &[Field] = &[
        field!(Dev, n),
        varray!(Dev, fifo, count = n),
        struct_field!(Dev, inner, INNER),
    ];
    const DEV: Vmsd = Vmsd::new("dev", 1, 1, SIZE)
        .fields(FIELDS)
        .subsections(SUBS)
        .not_migrated(HOST);
    assert_layout!(Dev, DEV, vendors = 2);
    // Every form of the macro takes the chain.
    assert_layout!(Inner, INNER, wire, vendors = 0);
    assert_layout!(Inner, INNER, body = Inner, vendors = 8);

    /// The problem and its message (what `assert_layout!` would panic with).
    fn problem(v: &Vmsd, layout: StateLayout) -> (LayoutProblem, std::string::String) {
        let p = v.layout_problem(layout).expect("a problem");
        (p, std::string::ToString::to_string(&p))
    }

    #[test]
    fn every_byte_is_migrated_or_marked() {
        assert_eq!(DEV.layout_problem(StateLayout::of(SIZE)), None);
        // A struct field left out of the table: the bytes, the fields around them.
        const NO_N: Vmsd = DEV.fields(FIELDS.split_at(1).1);
        let (p, m) = problem(&NO_N, StateLayout::of(SIZE));
        assert_eq!(
            p.rule,
            LayoutRule::Uncovered {
                start: 0,
                end: 1,
                before: "",
                after: "fifo"
            }
        );
        assert_eq!(
            m,
            "vmsd `dev`: state bytes 0..1 are in no table (before field `fifo`): add the struct \
             field to the table or mark it with not_migrated!"
        );
        // The host-side byte, not marked.
        let (_, m) = problem(&DEV.not_migrated(&[]), StateLayout::of(SIZE));
        assert_eq!(
            m,
            "vmsd `dev`: state bytes 12..13 are in no table (after field `feature`): add the \
             struct field to the table or mark it with not_migrated!"
        );
        // A subsection's field left out of its table (the subsection covers the parent's
        // struct: its bytes count for the parent).
        const EMPTY_FEATURE: Vmsd = FEATURE.fields(&[]);
        const NO_FEATURE: Vmsd = DEV.subsections(&[Subsection::new(&EMPTY_FEATURE, |_| true)]);
        let (p, m) = problem(&NO_FEATURE, StateLayout::of(SIZE));
        assert!(matches!(
            p.rule,
            LayoutRule::Uncovered {
                start: 10,
                end: 12,
                before: "inner",
                after: "host"
            }
        ));
        assert!(m.starts_with("vmsd `dev`: state bytes 10..12 are in no table (after field "));
        // A field missing inside a nested struct's table is named in that table.
        const HALF_INNER: Vmsd = INNER.fields(&[field!(Inner, y)]);
        const NESTED: Vmsd = DEV.fields(&[
            field!(Dev, n),
            varray!(Dev, fifo, count = n),
            struct_field!(Dev, inner, HALF_INNER),
        ]);
        let (p, m) = problem(&NESTED, StateLayout::of(SIZE));
        assert_eq!(p.vmsd, "inner");
        assert!(m.starts_with("vmsd `inner`: state bytes 0..3 are in no table (before field `y`)"));
    }

    #[test]
    fn not_migrated_storage_is_not_migrated() {
        // Marking a byte some table of the tree migrates (here the subsection) is refused.
        const LIE: Vmsd =
            DEV.not_migrated(&[not_migrated!(Dev, host), not_migrated!(Dev, feature)]);
        let (p, m) = problem(&LIE, StateLayout::of(SIZE));
        assert_eq!(
            (p.field, p.rule),
            ("feature", LayoutRule::Migrated { by: "feature" })
        );
        assert_eq!(
            m,
            "vmsd `dev`, field `feature`: marked not_migrated! but field `feature` migrates it"
        );
        // ... and a mark outside the struct.
        const OUT: Vmsd = DEV.not_migrated(&[NotMigrated {
            name: "ghost",
            offset: SIZE,
            len: 1,
        }]);
        let (p, _) = problem(&OUT, StateLayout::of(SIZE));
        assert_eq!(p.field, "ghost");
    }

    #[test]
    fn vendor_levels_are_checked_against_1_to_8_and_the_chain() {
        const ZERO: Vmsd = DEV.subsections(&[
            Subsection::new(&FEATURE, |_| true).vendor(VendorTag { level: 0, ..TAG })
        ]);
        let (p, m) = problem(&ZERO, StateLayout::of(SIZE));
        assert_eq!(p.vmsd, "dev/feature");
        assert_eq!(
            p.rule,
            LayoutRule::VendorLevel {
                parent: "dev",
                level: 0
            }
        );
        assert_eq!(
            m,
            "vmsd `dev/feature`: subsection of `dev` tagged vendor level 0, outside 1..=8 (level \
             0 is upstream QEMU)"
        );
        const NINE: Vmsd = DEV.subsections(&[
            Subsection::new(&FEATURE, |_| true).vendor(VendorTag { level: 9, ..TAG })
        ]);
        let (p, _) = problem(&NINE, StateLayout::of(SIZE));
        assert_eq!(
            p.rule,
            LayoutRule::VendorLevel {
                parent: "dev",
                level: 9
            }
        );
        // Level 2 under a one-vendor chain; accepted under two or the default (eight).
        let (p, m) = problem(&DEV, StateLayout::of(SIZE).vendors(1));
        assert_eq!(
            p.rule,
            LayoutRule::AboveChain {
                parent: "dev",
                level: 2,
                vendors: 1
            }
        );
        assert_eq!(
            m,
            "vmsd `dev/feature`: subsection of `dev` tagged vendor level 2, above the chain's 1 \
             (vendors = 1)"
        );
        assert_eq!(DEV.layout_problem(StateLayout::of(SIZE).vendors(2)), None);
        let (p, _) = problem(&DEV, StateLayout::of(SIZE).vendors(9));
        assert_eq!(p.rule, LayoutRule::ChainTooLong { vendors: 9 });
        // A tag on a nested struct's subsection would never be written: refused.
        #[repr(C)]
        struct Outer {
            dev: Dev,
        }
        const OUTER: Vmsd =
            Vmsd::new("outer", 1, 1, SIZE).fields(&[struct_field!(Outer, dev, DEV)]);
        let (p, m) = problem(&OUTER, StateLayout::of(SIZE));
        assert_eq!(
            p.rule,
            LayoutRule::NestedVendorTag {
                parent: "dev",
                level: 2
            }
        );
        assert_eq!(
            m,
            "vmsd `dev/feature`: subsection of `dev` tagged vendor level 2, but only a section's \
             own subsections carry vendor tags"
        );
    }

    #[test]
    fn table_rules_name_the_field() {
        let (p, m) = problem(&DEV, StateLayout::of(SIZE + 1));
        assert_eq!(
            p.rule,
            LayoutRule::Size {
                table: SIZE,
                state: SIZE + 1
            }
        );
        assert_eq!(
            m,
            "vmsd `dev`: the table's size is 13 bytes, the state struct's 14"
        );
        const TWICE: Vmsd = DEV.fields(&[field!(Dev, n), field!(Dev, n).named("n2")]);
        let (_, m) = problem(&TWICE, StateLayout::of(SIZE));
        assert_eq!(m, "vmsd `dev`, field `n2`: storage 0..1 overlaps field `n`");
        const FUTURE: Vmsd = DEV.fields(&[field!(Dev, n).since(2)]);
        let (_, m) = problem(&FUTURE, StateLayout::of(SIZE));
        assert_eq!(
            m,
            "vmsd `dev`, field `n`: gated on version 2, newer than the table's 1"
        );
        const ORPHAN: Vmsd =
            DEV.subsections(&[Subsection::new(&Vmsd::new("other", 1, 1, SIZE), |_| true)]);
        let (_, m) = problem(&ORPHAN, StateLayout::of(SIZE));
        assert_eq!(
            m,
            "vmsd `other`: a subsection's name must extend its parent's `dev`"
        );
        const OLD: Vmsd = DEV.versions(1, 2);
        let (_, m) = problem(&OLD, StateLayout::of(SIZE));
        assert_eq!(m, "vmsd `dev`: minimum_version_id 2 > version_id 1");
    }

    #[test]
    fn body_rules_name_the_first_field_off_the_copy() {
        // `fifo` is a variable array: the fields are not the struct's bytes, one copy.
        let (p, m) = problem(&DEV, StateLayout::of(SIZE).body(SIZE));
        assert_eq!((p.field, p.rule), ("fifo", LayoutRule::NotACopy));
        assert_eq!(
            m,
            "vmsd `dev`, field `fifo`: the fields are not one copy of the struct in wire order"
        );
        // `Inner` is a 5-byte copy, not a 4-byte body.
        let (p, _) = problem(&INNER, StateLayout::of(5).body(4));
        assert_eq!(p.rule, LayoutRule::NotTheBody { body: 4, copy: 5 });
        assert_eq!(INNER.layout_problem(StateLayout::of(5).body(5)), None);
    }

    #[test]
    fn messages_cut_long_names_at_a_character() {
        // 2- and 3-byte characters: 400 bytes each name, cut inside a character.
        let long: &'static str = "é€".repeat(80).leak();
        let p = LayoutProblem {
            vmsd: long,
            field: long,
            rule: LayoutRule::NotACopy,
        };
        let m = p.message();
        assert!(m.as_str().len() > LAYOUT_MESSAGE_LEN - 3);
        assert!(m.as_str().starts_with("vmsd `é€"));
        assert!(m.as_str().len() <= LAYOUT_MESSAGE_LEN);
        let p = LayoutProblem {
            vmsd: "v",
            field: "",
            rule: LayoutRule::Size {
                table: 0,
                state: u32::MAX as usize,
            },
        };
        assert_eq!(
            p.message().as_str(),
            "vmsd `v`: the table's size is 0 bytes, the state struct's 4294967295"
        );
    }
}
