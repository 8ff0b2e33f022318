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
//! struct, subsections over the same struct, names well-formed. There is no second list to keep
//! in sync.

use crate::error::Violation;

/// A scalar wire type.
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
        be.get_mut(4 - b.len()..)?.copy_from_slice(b);
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
            Kind::Array { elem, len } => elem.width() * len,
            Kind::Buffer { len } | Kind::Unused { len } => len,
            Kind::Struct { vmsd, len } => vmsd.table.size * len,
            Kind::VArray { elem, count } => elem.size() * count.capacity,
            Kind::VBuffer { size } => size.capacity,
            Kind::Validate { .. } | Kind::NullPtr => 0,
        }
    }

    /// Wire size when the field is present and does not depend on state (no varrays, no
    /// nested structs with subsections); `None` otherwise.
    pub const fn fixed_wire_size(&self) -> Option<usize> {
        match self.kind {
            Kind::Struct { vmsd, len } => match vmsd.fixed_wire_len() {
                Some(n) if vmsd.table.subsections.is_empty() => Some(n * len),
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
/// ([`crate::v4::wire::Vendor`]), in a subsection's [`VendorTag`] and in
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
                    labels += 1;
                    len = 0;
                }
                b'a'..=b'z' | b'0'..=b'9' | b'-' => {
                    if len == 0 && *b == b'-' {
                        return false;
                    }
                    len += 1;
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

/// A subsection of a description: sent only when `needed` says so.
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
}

impl Subsection {
    /// A subsection sent when `needed` is true.
    pub const fn new(vmsd: &'static Vmsd, needed: fn(&[u8]) -> bool) -> Subsection {
        Subsection {
            vmsd,
            needed: Some(needed),
            absent: None,
            vendor: None,
        }
    }

    /// Sets the default applied when the subsection is absent on load.
    pub const fn absent(mut self, f: fn(&mut [u8])) -> Subsection {
        self.absent = Some(f);
        self
    }

    /// Tags the subsection as a vendor feature (v4).
    pub const fn vendor(mut self, tag: VendorTag) -> Subsection {
        self.vendor = Some(tag);
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

    /// Checks the table against a struct of `size` bytes; panics (a compile error when called
    /// in a const item) with the reason if they disagree.
    pub const fn check(&self, size: usize) {
        if self.table.size != size {
            panic!("vmsd size differs from the state struct's size");
        }
        if self.table.minimum_version_id > self.table.version_id {
            panic!("minimum_version_id > version_id");
        }
        if self.table.name.is_empty() || self.table.name.len() > 255 {
            panic!("vmsd name must be 1..=255 bytes");
        }
        if self.table.subsections.len() > MAX_SUBSECTIONS {
            panic!("too many subsections");
        }
        let mut i = 0;
        while i < self.table.fields.len() {
            let f = &self.table.fields[i];
            let end = f.offset + f.storage_size();
            if end > size {
                panic!("field storage lies outside the state struct");
            }
            if f.since > self.table.version_id {
                panic!("field is gated on a version newer than the vmsd");
            }
            match f.kind {
                Kind::Struct { vmsd, .. } => vmsd.check(vmsd.table.size),
                Kind::VArray { elem, count } => {
                    if count.offset + count.ty.width() > size {
                        panic!("varray count lies outside the state struct");
                    }
                    if let Elem::Struct(v) = elem {
                        v.check(v.table.size)
                    }
                }
                Kind::VBuffer { size: count } if count.offset + count.ty.width() > size => {
                    panic!("vbuffer size lies outside the state struct");
                }
                _ => {}
            }
            // Storage ranges of two fields must not overlap.
            let mut j = 0;
            while j < i {
                let g = &self.table.fields[j];
                let g_end = g.offset + g.storage_size();
                if f.storage_size() > 0
                    && g.storage_size() > 0
                    && f.offset < g_end
                    && g.offset < end
                {
                    panic!("two fields share storage");
                }
                j += 1;
            }
            i += 1;
        }
        let mut s = 0;
        while s < self.table.subsections.len() {
            let sub = self.table.subsections[s].vmsd;
            if !starts_with(sub.table.name, self.table.name)
                || sub.table.name.len() <= self.table.name.len()
            {
                panic!("a subsection's name must extend its parent's name");
            }
            sub.check(size);
            s += 1;
        }
    }
}

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

/// Checks at compile time that `$vmsd` describes `$S` (see [`Vmsd::check`]); with `wire`, also
/// that `$S` is exactly the current-version body so it can serve as a zero-copy view; with
/// `body = B`, that the struct `B` at the start of `$S` is exactly the current-version body.
#[macro_export]
macro_rules! assert_layout {
    ($S:ty, $vmsd:expr) => {
        const _: () = $vmsd.check(::core::mem::size_of::<$S>());
    };
    ($S:ty, $vmsd:expr, body = $B:ty) => {
        $crate::assert_layout!(@body $S, $vmsd, $B);
    };
    ($S:ty, $vmsd:expr, wire) => {
        $crate::assert_layout!(@body $S, $vmsd, $S);
    };
    (@body $S:ty, $vmsd:expr, $B:ty) => {
        const _: () = {
            $vmsd.check(::core::mem::size_of::<$S>());
            match $vmsd.storage_plan() {
                Some(p) => assert!(
                    p.len as usize == ::core::mem::size_of::<$B>(),
                    "the struct is not the exact body"
                ),
                None => panic!("the fields are not one copy of the struct in wire order"),
            }
        };
    };
}

/// A typed predicate: `pred!(State, |s| s.x.get() != 0)` gives a `fn(&[u8]) -> bool` over the
/// erased state bytes, for `needed` and similar hooks.
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
}
