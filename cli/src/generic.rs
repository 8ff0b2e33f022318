//! A description-driven decoder for any VMState section body.
//!
//! The stream's own VMDESCRIPTION ([`crate::desc`]) says, for every FULL section, which fields
//! were written, their type names and sizes, nested structs and the subsections sent. That is
//! enough to split a body into an ordered value tree ([`Body`]) without knowing the device, and
//! to write the tree back byte for byte ([`Body::encode`]). Decoding checks the structure: every
//! struct element must take exactly the `size` the description states, integer widths must match
//! their type names, every listed subsection must be there with its name and version, and a
//! section body must be used up exactly.
//!
//! The tree does not interpret values beyond their width and signedness: it is the generic
//! fallback for sections no typed device in `vmstate-devices` models. [`EditCheck`] is the hook
//! through which typed devices re-validate an edited body.

use crate::desc::{BodyDesc, FieldDesc, FieldKind, Repeat, SubsectionDesc, Text};
use std::fmt;
use vmstate::ErrorKind;
use vmstate::wire::Reader;

/// A body that does not match its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Absolute byte offset where the mismatch is.
    pub offset: usize,
    /// The field path inside the section, e.g. `env.fpregs.fpregs[3]` (empty at top level).
    pub path: String,
    /// The codec's classification (truncation, subsection, ...).
    pub kind: ErrorKind,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {} (0x{:x})", self.offset, self.offset)?;
        if !self.path.is_empty() {
            write!(f, ", field {}", vmstate::Escaped(self.path.as_bytes()))?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DecodeError {}

/// An integer scalar: its width on the wire and the raw (zero-extended) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int {
    /// Bytes on the wire: 1, 2, 4 or 8.
    pub width: u8,
    /// Whether the declared type is signed (`int32`, `int64 equal`, ...).
    pub signed: bool,
    /// The big-endian value read, zero-extended.
    pub raw: u64,
}

impl Int {
    /// The value as a signed number (sign-extended from `width`).
    pub fn as_signed(&self) -> i64 {
        let shift = 64 - 8 * u32::from(self.width);
        ((self.raw << shift) as i64) >> shift
    }

    /// Largest raw value that fits the width.
    pub fn max_raw(width: u8) -> u64 {
        if width >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * u32::from(width))) - 1
        }
    }
}

/// One decoded element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// An integer (`uint8` … `int64`, `* equal`, `int32 le`).
    Int(Int),
    /// A `bool` byte (kept raw so a non-canonical byte writes back unchanged).
    Bool(u8),
    /// A `timer`: the be64 expiry in ns on its clock, `u64::MAX` when not armed.
    Timer(u64),
    /// `unused_buffer` bytes (QEMU writes zeros and ignores them on load; kept as sent).
    Unused(Vec<u8>),
    /// Bytes the tree does not split: `buffer`, `pci config`, `pci irq state`, ... The
    /// field's type name says which.
    Bytes(Vec<u8>),
    /// A nested struct (`struct`, `vstruct`, `tmp`) with its own subsections (boxed: most
    /// values are integers, and the tree is as large as the values it holds).
    Struct(Box<Body<'a>>),
    /// An array (`array_len`, or several field objects of one name), one value per element.
    Array(Vec<Value<'a>>),
    /// A `nullptr` element: a NULL pointer of a pointer array, sent as the byte `'0'`.
    Null,
    /// A `capability` (configuration record): the name, sent after a length byte.
    Capability(Vec<u8>),
}

/// A field of a body. Name and type name are the description's (borrowing the trailer's
/// text, like the description itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldValue<'a> {
    /// Name as the description spells it.
    pub name: Text<'a>,
    /// The declared type name.
    pub type_name: Text<'a>,
    /// The value.
    pub value: Value<'a>,
}

/// A subsection sent after a body's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsectionValue<'a> {
    /// Full name on the wire, e.g. `fw_cfg/dma`.
    pub name: String,
    /// Version sent.
    pub version: u32,
    /// Its body (fields, then its own subsections).
    pub body: Body<'a>,
}

/// A decoded body: fields in wire order, then subsections in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Body<'a> {
    /// The fields.
    pub fields: Vec<FieldValue<'a>>,
    /// The subsections.
    pub subsections: Vec<SubsectionValue<'a>>,
}

/// How a type name reads on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    Int { signed: bool, width: u8 },
    Bool,
    Timer,
    Unused,
    Bytes,
    Null,
    Capability,
}

/// The byte QEMU sends for a NULL pointer of a pointer array (`VMS_NULLPTR_MARKER`).
const NULLPTR_MARKER: u8 = b'0';

/// How `type_name` reads. Integer type names are `[u]int{8,16,32,64}` with an optional suffix
/// (`equal`, `le`); they are most leaves, so they are tried first.
#[inline]
fn leaf_kind(type_name: &str) -> Leaf {
    // Called per element: a byte scan, not a `str` pattern search.
    let end = type_name
        .bytes()
        .position(|b| b == b' ')
        .unwrap_or(type_name.len());
    let base = type_name.get(..end).unwrap_or_default();
    let (signed, bits) = match base.strip_prefix('u') {
        Some(rest) => (false, rest.strip_prefix("int")),
        None => (true, base.strip_prefix("int")),
    };
    match bits {
        Some("8") => Leaf::Int { signed, width: 1 },
        Some("16") => Leaf::Int { signed, width: 2 },
        Some("32") => Leaf::Int { signed, width: 4 },
        Some("64") => Leaf::Int { signed, width: 8 },
        _ => other_leaf(type_name),
    }
}

/// The leaf kinds that are not integers.
fn other_leaf(type_name: &str) -> Leaf {
    match type_name {
        "bool" => Leaf::Bool,
        "timer" => Leaf::Timer,
        "unused_buffer" => Leaf::Unused,
        "nullptr" => Leaf::Null,
        "capability" => Leaf::Capability,
        _ => Leaf::Bytes,
    }
}

/// Elements a body may hold beyond one per byte: a hostile description can nest arrays of
/// empty structs, which take no bytes, so work is bounded by this budget instead.
const ZERO_SIZE_BUDGET: usize = 1 << 16;

/// Finds the layout of a subsection the stream names, by the vmsd it belongs to and its wire
/// name: `Err` says why there is none.
pub type FindSubsection<'d> =
    &'d dyn Fn(&str, &[u8]) -> Result<&'d SubsectionDesc<'static>, String>;

struct Decoder<'r, 'd> {
    r: Reader<'r>,
    /// Names of the fields and subsections being decoded, outermost first.
    path: Vec<&'d str>,
    /// Elements left to decode (input length + [`ZERO_SIZE_BUDGET`]).
    budget: usize,
    /// Subsections as the stream names them ([`decode_prefix_open`]) instead of as the
    /// description lists them.
    open: Option<FindSubsection<'d>>,
}

impl<'d> Decoder<'_, 'd> {
    fn fail(&self, offset: usize, kind: ErrorKind, message: String) -> DecodeError {
        DecodeError {
            offset,
            path: self.path.join("."),
            kind,
            message,
        }
    }

    fn codec(&self, e: vmstate::Error) -> DecodeError {
        self.fail(e.offset, e.kind, e.kind.to_string())
    }

    /// Decodes fields and subsections. `vmsd` names the body's vmsd for nested bodies, which
    /// QEMU's loader follows by peeking for further subsections of that name.
    fn body<'a>(
        &mut self,
        desc: &'d BodyDesc<'a>,
        vmsd: Option<&str>,
    ) -> Result<Body<'a>, DecodeError> {
        let mut fields = Vec::with_capacity(desc.fields.len());
        let mut i = 0;
        while let Some(f) = desc.fields.get(i) {
            self.path.push(&f.name);
            // Consecutive objects of one name are one array, whatever their `index` says (QEMU
            // 10.0 leaves it off the last element) and whatever their types (`nullptr` runs
            // among structs): QEMU 10.0's analyze-migration.py rule (see `crate::desc`).
            let run = desc.fields[i..]
                .iter()
                .skip(1)
                .take_while(|e| e.continues)
                .count()
                + 1;
            let value = match (run, f.repeat) {
                (1, Repeat::ArrayLen(n)) => self.array_len(f, n)?,
                (1, _) => self.sized_element(f)?,
                _ => {
                    let mut items = Vec::with_capacity(run);
                    for e in &desc.fields[i..i + run] {
                        match e.repeat {
                            Repeat::ArrayLen(n) => match self.array_len(e, n)? {
                                Value::Array(more) => items.extend(more),
                                one => items.push(one),
                            },
                            _ => items.push(self.sized_element(e)?),
                        }
                    }
                    Value::Array(items)
                }
            };
            // The elements' own type: a run may start with `nullptr` elements.
            let typed = desc.fields[i..i + run]
                .iter()
                .find(|e| e.type_name != "nullptr")
                .unwrap_or(f);
            i += run;
            self.path.pop();
            fields.push(FieldValue {
                name: f.name.clone(),
                type_name: typed.type_name.clone(),
                value,
            });
        }
        let mut subsections = Vec::new();
        if let Some(find) = self.open {
            // QEMU's loader: every `05 len name…` whose name extends this vmsd's is one of its
            // subsections, in any order; each must be known.
            while let Some(vmsd) = vmsd
                && let Some(name) = vmstate::wire::SubsectionHeader::peek_name(&self.r, vmsd)
            {
                let at = self.r.offset();
                let s = find(vmsd, name).map_err(|message| {
                    self.fail(
                        at,
                        ErrorKind::UnknownSubsection {
                            name: vmstate::Name::new(name),
                        },
                        message,
                    )
                })?;
                let value = self.subsection(s)?;
                subsections.push(value);
            }
            return Ok(Body {
                fields,
                subsections,
            });
        }
        for s in desc.subsections() {
            let at = self.r.offset();
            match self.r.peek(0) {
                Some(vmstate::wire::record::SUBSECTION) => {}
                found => {
                    let kind = match found {
                        Some(found) => ErrorKind::UnexpectedRecord { found },
                        None => ErrorKind::Truncated {
                            needed: 1,
                            available: 0,
                        },
                    };
                    return Err(self.fail(
                        at,
                        kind,
                        format!(
                            "expected subsection {} (byte 0x05), found {}",
                            s.vmsd_name,
                            found.map_or("end of body".into(), |b| format!("{b:#04x}"))
                        ),
                    ));
                }
            }
            let h =
                vmstate::wire::SubsectionHeader::read(&mut self.r).map_err(|e| self.codec(e))?;
            if h.name != s.vmsd_name.as_bytes() {
                let name = vmstate::Escaped(h.name);
                return Err(self.fail(
                    at,
                    ErrorKind::UnknownSubsection {
                        name: vmstate::Name::new(h.name),
                    },
                    format!("expected subsection {}, found {name}", s.vmsd_name),
                ));
            }
            if h.version != s.version {
                return Err(self.fail(
                    at,
                    ErrorKind::BadDescription,
                    format!(
                        "subsection {}: expected version {}, found {}",
                        s.vmsd_name, s.version, h.version
                    ),
                ));
            }
            self.path.push(&s.vmsd_name);
            let body = self.body(&s.body, Some(&s.vmsd_name))?;
            self.path.pop();
            subsections.push(SubsectionValue {
                name: s.vmsd_name.as_str().to_owned(),
                version: h.version,
                body,
            });
        }
        // QEMU's loader takes any `05 len name…` whose name starts with this vmsd's name for
        // another subsection (docs/V3-WIRE.md §7.2): if the bytes that follow (the parent's next
        // field) look like that, QEMU would fail or misread them, whatever the description says.
        if let Some(name) = vmsd
            && let Some(found) = vmstate::wire::SubsectionHeader::peek_name(&self.r, name)
        {
            return Err(self.fail(
                self.r.offset(),
                ErrorKind::UnknownSubsection {
                    name: vmstate::Name::new(found),
                },
                format!(
                    "the bytes after {name} read as subsection {} to QEMU, which the \
                     description does not list",
                    vmstate::Escaped(found)
                ),
            ));
        }
        Ok(Body {
            fields,
            subsections,
        })
    }

    /// A subsection the stream names, read with `s` (header checked against it).
    fn subsection<'b>(
        &mut self,
        s: &'d SubsectionDesc<'b>,
    ) -> Result<SubsectionValue<'b>, DecodeError> {
        let at = self.r.offset();
        let h = vmstate::wire::SubsectionHeader::read(&mut self.r).map_err(|e| self.codec(e))?;
        if h.version != s.version {
            return Err(self.fail(
                at,
                ErrorKind::BadDescription,
                format!(
                    "subsection {}: the schema describes version {}, the stream sends {}",
                    s.vmsd_name, s.version, h.version
                ),
            ));
        }
        self.path.push(&s.vmsd_name);
        let body = self.body(&s.body, Some(&s.vmsd_name))?;
        self.path.pop();
        Ok(SubsectionValue {
            name: s.vmsd_name.as_str().to_owned(),
            version: h.version,
            body,
        })
    }

    /// An element that must take exactly `f.size` bytes.
    fn sized_element<'a>(&mut self, f: &'d FieldDesc<'a>) -> Result<Value<'a>, DecodeError> {
        let start = self.r.offset();
        let v = self.element(f)?;
        let used = (self.r.offset() - start) as u64;
        // A struct's `size` counts the subsections the describing stream sent; in another
        // stream they are the ones it names.
        let open_struct = self.open.is_some() && !matches!(f.kind, FieldKind::Leaf);
        if used != f.size && !open_struct {
            return Err(self.fail(
                start,
                ErrorKind::BadDescription,
                format!(
                    "{} element: description says {} bytes, decoding took {used}",
                    f.type_name, f.size
                ),
            ));
        }
        Ok(v)
    }

    fn array_len<'a>(&mut self, f: &'d FieldDesc<'a>, n: u64) -> Result<Value<'a>, DecodeError> {
        // Each element takes `size` bytes or more: refuse counts the body cannot hold before
        // allocating for them.
        // A capability's `size` is its first element's (names differ in length); any
        // element takes a byte at least.
        let least = match f.kind {
            FieldKind::Leaf if f.type_name == "capability" => f.size.min(1),
            _ => f.size,
        };
        let fits = match least {
            0 => n <= 1 << 16,
            s => n
                .checked_mul(s)
                .is_some_and(|t| t <= self.r.remaining() as u64),
        };
        if !fits {
            return Err(self.fail(
                self.r.offset(),
                ErrorKind::Truncated {
                    needed: usize::try_from(n.saturating_mul(f.size)).unwrap_or(usize::MAX),
                    available: self.r.remaining(),
                },
                format!(
                    "array of {n} x {} bytes does not fit in the {} bytes left",
                    f.size,
                    self.r.remaining()
                ),
            ));
        }
        let mut items = Vec::with_capacity(n as usize);
        for k in 0..n {
            // QEMU describes a compressed array by its first element.
            items.push(if k == 0 {
                self.sized_element(f)?
            } else {
                self.element(f)?
            });
        }
        Ok(Value::Array(items))
    }

    fn element<'a>(&mut self, f: &'d FieldDesc<'a>) -> Result<Value<'a>, DecodeError> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            self.fail(
                self.r.offset(),
                ErrorKind::BadDescription,
                "description asks for more elements than the body can hold".into(),
            )
        })?;
        let s = match &f.kind {
            FieldKind::Struct(s) | FieldKind::Inline(s) => s,
            FieldKind::Leaf => return self.leaf(f),
        };
        Ok(Value::Struct(Box::new(
            self.body(&s.body, Some(&s.vmsd_name))?,
        )))
    }

    /// Refuses a description whose `size` for a fixed-width type is not `width`.
    fn width_is(
        &self,
        at: usize,
        f: &FieldDesc<'_>,
        what: &str,
        width: u64,
    ) -> Result<(), DecodeError> {
        if f.size == width {
            return Ok(());
        }
        Err(self.fail(
            at,
            ErrorKind::BadDescription,
            format!("{what} wide, description says {}", f.size),
        ))
    }

    fn leaf<'a>(&mut self, f: &FieldDesc<'_>) -> Result<Value<'a>, DecodeError> {
        let at = self.r.offset();
        let size = usize::try_from(f.size).unwrap_or(usize::MAX);
        match leaf_kind(&f.type_name) {
            Leaf::Int { signed, width } => {
                if f.size != u64::from(width) {
                    return Err(self.fail(
                        at,
                        ErrorKind::BadDescription,
                        format!(
                            "type {} is {width} bytes wide, description says {}",
                            f.type_name, f.size
                        ),
                    ));
                }
                let b = self.r.bytes(size).map_err(|e| self.codec(e))?;
                let raw = b.iter().fold(0u64, |a, &x| a << 8 | u64::from(x));
                Ok(Value::Int(Int { width, signed, raw }))
            }
            Leaf::Bool => {
                self.width_is(at, f, "bool is 1 byte", 1)?;
                Ok(Value::Bool(self.r.u8().map_err(|e| self.codec(e))?))
            }
            Leaf::Timer => {
                self.width_is(at, f, "timer is 8 bytes", 8)?;
                Ok(Value::Timer(self.r.be64().map_err(|e| self.codec(e))?))
            }
            Leaf::Unused => Ok(Value::Unused(
                self.r.bytes(size).map_err(|e| self.codec(e))?.to_vec(),
            )),
            Leaf::Bytes => Ok(Value::Bytes(
                self.r.bytes(size).map_err(|e| self.codec(e))?.to_vec(),
            )),
            Leaf::Null => {
                self.width_is(at, f, "nullptr is 1 byte", 1)?;
                match self.r.u8().map_err(|e| self.codec(e))? {
                    NULLPTR_MARKER => Ok(Value::Null),
                    found => Err(self.fail(
                        at,
                        ErrorKind::BadDescription,
                        format!("nullptr: expected the byte 0x30 ('0'), found {found:#04x}"),
                    )),
                }
            }
            // `size` counts the first element only: each name has its own length byte.
            Leaf::Capability => {
                let len = self.r.u8().map_err(|e| self.codec(e))?;
                let name = self.r.bytes(usize::from(len)).map_err(|e| self.codec(e))?;
                Ok(Value::Capability(name.to_vec()))
            }
        }
    }
}

/// Decodes one body (fields and subsections) from the start of `bytes`, whose first byte is at
/// absolute offset `base`. Returns the tree and the number of bytes it took.
pub fn decode_prefix<'a>(
    desc: &BodyDesc<'a>,
    bytes: &[u8],
    base: usize,
) -> Result<(Body<'a>, usize), DecodeError> {
    let mut d = Decoder {
        r: Reader::new(bytes, base),
        path: Vec::new(),
        budget: bytes.len().saturating_add(ZERO_SIZE_BUDGET),
        open: None,
    };
    // A section body is followed by its footer, never by a subsection.
    let body = d.body(desc, None)?;
    Ok((body, d.r.position()))
}

/// [`decode_prefix`] for a layout that did not come from the stream itself (`--schema`,
/// [`crate::schema`]): the subsections are the ones the stream names, as QEMU's loader reads
/// them (any `05 len name…` whose name extends the vmsd's `vmsd`, nested structs' too), each
/// read with the layout `find` gives (the subsections `desc` lists are not used); one `find`
/// does not know stops the decode with its reason.
pub fn decode_prefix_open<'d>(
    desc: &'d BodyDesc<'static>,
    vmsd: &'d str,
    bytes: &[u8],
    base: usize,
    find: FindSubsection<'d>,
) -> Result<(Body<'static>, usize), DecodeError> {
    let mut d = Decoder {
        r: Reader::new(bytes, base),
        path: Vec::new(),
        budget: bytes.len().saturating_add(ZERO_SIZE_BUDGET),
        open: Some(find),
    };
    let body = d.body(desc, Some(vmsd))?;
    Ok((body, d.r.position()))
}

/// Decodes a whole section body: the description must account for every byte.
pub fn decode_section<'a>(
    desc: &BodyDesc<'a>,
    body: &[u8],
    base: usize,
) -> Result<Body<'a>, DecodeError> {
    let (tree, used) = decode_prefix(desc, body, base)?;
    if used != body.len() {
        return Err(DecodeError {
            offset: base + used,
            path: String::new(),
            kind: ErrorKind::MissingFooter { found: body[used] },
            message: format!(
                "{} bytes left after the described fields and subsections",
                body.len() - used
            ),
        });
    }
    Ok(tree)
}

/// Decodes a CONFIGURATION record's body (the bytes after its `0x07`) with the trailer's
/// `configuration` object (QEMU ≥ 8.2), as QEMU 10.0's analyze-migration.py does: the machine
/// name, then the subsections the description lists. `caps_count` must count the
/// `capabilities` listed (one is described without `array_len`, several with it).
pub fn decode_configuration<'a>(
    desc: &SubsectionDesc<'a>,
    body: &[u8],
    base: usize,
) -> Result<Body<'a>, DecodeError> {
    let tree = decode_section(&desc.body, body, base)?;
    for s in &tree.subsections {
        let field = |name: &str| s.body.fields.iter().find(|f| f.name == name);
        let (Some(count), Some(caps)) = (field("caps_count"), field("capabilities")) else {
            continue;
        };
        let listed = match &caps.value {
            Value::Array(items) => items.len() as u64,
            _ => 1,
        };
        if let Value::Int(n) = count.value
            && n.raw != listed
        {
            return Err(DecodeError {
                offset: base,
                path: format!("{}.caps_count", s.name.as_str()),
                kind: ErrorKind::BadDescription,
                message: format!(
                    "caps_count is {}, the description lists {listed} capabilities",
                    n.raw
                ),
            });
        }
    }
    Ok(tree)
}

impl Value<'_> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => {
                out.extend_from_slice(&i.raw.to_be_bytes()[8 - usize::from(i.width)..]);
            }
            Value::Bool(b) => out.push(*b),
            Value::Timer(t) => out.extend_from_slice(&t.to_be_bytes()),
            Value::Bytes(b) | Value::Unused(b) => out.extend_from_slice(b),
            Value::Struct(b) => b.encode(out),
            Value::Array(items) => items.iter().for_each(|v| v.encode(out)),
            Value::Null => out.push(NULLPTR_MARKER),
            Value::Capability(name) => {
                // Read after a length byte, so at most 255 bytes.
                out.push(name.len() as u8);
                out.extend_from_slice(name);
            }
        }
    }

    /// The bytes this value takes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

impl Body<'_> {
    /// Appends the wire form (fields, then each subsection with its header) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for f in &self.fields {
            f.value.encode(out);
        }
        for s in &self.subsections {
            s.encode(out);
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Where the fields end, then where each subsection ends, relative to the body's start
    /// (the split v4 frames need, docs/FORMAT.md).
    pub fn part_ends(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for f in &self.fields {
            f.value.encode(&mut out);
        }
        let mut ends = vec![out.len()];
        for s in &self.subsections {
            s.encode(&mut out);
            ends.push(out.len());
        }
        ends
    }
}

impl SubsectionValue<'_> {
    /// Appends the subsection with its header (`05 len name version`) to `out`.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(vmstate::wire::record::SUBSECTION);
        // Names came from the wire (≤ 255 bytes); an edit cannot change them.
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        self.body.encode(out);
    }
}

// ---------------------------------------------------------------------------------------------
// analyze-migration.py compatible rendering

/// How QEMU 7.2's `scripts/analyze-migration.py` prints a type: its reader table maps a few
/// type names to integer or bool readers; every other name is printed as hex bytes.
pub(crate) fn analyze_reader(type_name: &str) -> Option<Leaf> {
    let signed = |width| {
        Some(Leaf::Int {
            signed: true,
            width,
        })
    };
    let unsigned = |width| {
        Some(Leaf::Int {
            signed: false,
            width,
        })
    };
    // The width comes from the description's size; 0 here is a placeholder.
    match type_name {
        "bool" => Some(Leaf::Bool),
        "int8" | "int16" | "int32" | "int32 equal" | "int32 le" | "int64" | "int64 equal"
        | "uint8 equal" | "uint16 equal" => signed(0),
        "uint8" | "uint16" | "uint32" | "uint32 equal" | "uint64" => unsigned(0),
        _ => None,
    }
}

fn hex_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn analyze_int(bytes: &[u8], signed: bool) -> serde_json::Value {
    if bytes.len() > 8 {
        return hex_bytes(bytes).into();
    }
    let raw = bytes.iter().fold(0u128, |a, &x| a << 8 | u128::from(x));
    let digits = bytes.len() * 2;
    let neg = signed && bytes.first().is_some_and(|b| b & 0x80 != 0);
    if neg {
        let s = raw as i128 - (1i128 << (8 * bytes.len()));
        format!("0x{raw:0digits$x} ({s})").into()
    } else {
        format!("0x{raw:0digits$x}").into()
    }
}

fn analyze_value(type_name: &str, v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::Array(items) => items.iter().map(|i| analyze_value(type_name, i)).collect(),
        Value::Struct(b) if type_name == "struct" => b.to_analyze_json(),
        Value::Null => "nullptr".into(),
        Value::Capability(name) => String::from_utf8_lossy(name).into_owned().into(),
        _ => {
            let bytes = v.to_bytes();
            match analyze_reader(type_name) {
                Some(Leaf::Bool) => bytes.first().is_some_and(|&b| b != 0).into(),
                Some(Leaf::Int { signed, .. }) => analyze_int(&bytes, signed),
                _ => hex_bytes(&bytes).into(),
            }
        }
    }
}

impl Body<'_> {
    /// The object analyze-migration.py `-d state` prints for this body.
    pub fn to_analyze_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for f in &self.fields {
            m.insert(
                f.name.as_str().to_owned(),
                analyze_value(&f.type_name, &f.value),
            );
        }
        for s in &self.subsections {
            m.insert(s.name.clone(), s.body.to_analyze_json());
        }
        serde_json::Value::Object(m)
    }
}

// ---------------------------------------------------------------------------------------------
// Editing

/// A failed edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError(pub String);

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EditError {}

/// Re-validates a section body after an edit. Typed devices (`vmstate-devices`) implement this
/// for the sections they model, so an edit cannot produce a state the device would refuse to
/// load; the generic tree only checks widths and ranges.
pub trait EditCheck {
    /// Checks the edited body of section `idstr` / `instance_id` at `version`. `Err` carries a
    /// message for the user; the edit is then not applied.
    fn check(&self, idstr: &str, instance_id: u32, version: u32, body: &[u8])
    -> Result<(), String>;
}

/// Accepts every edit the generic tree accepts.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCheck;

impl EditCheck for NoCheck {
    fn check(&self, _: &str, _: u32, _: u32, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// Re-validates edits of the sections a typed state `T` models (matched by idstr, as the
/// codec's [`vmstate::stream::idstr_matches`]) by loading the edited body with `T`'s
/// description and invariants. `init` is the destination state the load starts from (it
/// supplies the values `_EQUAL` fields must match). Other sections pass.
#[derive(Debug, Clone)]
pub struct TypedCheck<T: vmstate::State> {
    init: T,
}

impl<T: vmstate::State> TypedCheck<T> {
    /// A check loading into copies of `init`.
    pub fn new(init: T) -> Self {
        TypedCheck { init }
    }
}

impl<T: vmstate::State> EditCheck for TypedCheck<T> {
    fn check(&self, idstr: &str, _: u32, version: u32, body: &[u8]) -> Result<(), String> {
        if !vmstate::stream::idstr_matches(idstr.as_bytes(), T::VMSD.name) {
            return Ok(());
        }
        vmstate::decode(&self.init, version, body, 0)
            .map(|_| ())
            .map_err(|e| format!("{} refuses the edited body: {e}", T::VMSD.name))
    }
}

/// Re-validates edits of every section the `pc` device models cover, routed as a destination
/// routes them ([`vmstate_devices::pc::Pc::route`]: by device type and instance, so each i8259
/// is checked against its own reset state and hpet / fw_cfg against the configuration `Pc` was
/// made with, with the destination build's tables): the edited body is loaded into a copy of
/// the machine and must pass the device's description and invariants. An instance of a
/// modelled type the destination does not have is refused; sections of other types pass.
#[derive(Debug, Clone)]
pub struct PcCheck(pub vmstate_devices::pc::Pc);

impl EditCheck for PcCheck {
    fn check(
        &self,
        idstr: &str,
        instance_id: u32,
        version: u32,
        body: &[u8],
    ) -> Result<(), String> {
        match self.0.route(idstr.as_bytes(), instance_id) {
            vmstate_devices::pc::Route::NotModelled => return Ok(()),
            vmstate_devices::pc::Route::Unexpected => {
                return Err(format!(
                    "the destination ({}) has no {idstr} instance {instance_id}",
                    self.0.config.destination
                ));
            }
            vmstate_devices::pc::Route::Model(_) => {}
        }
        let rec = vmstate::stream::SectionRecord {
            offset: 0,
            kind: vmstate::wire::section::SectionKind::Full,
            section_id: 0,
            idstr: idstr.as_bytes(),
            instance_id,
            version_id: version,
            header_len: 0,
            body,
            body_offset: 0,
            ordinal: 0,
        };
        let mut pc = self.0.clone();
        // The record is synthetic (no section id, no stream offset): report field and reason.
        pc.load_section(&rec).map(|_| ()).map_err(|e| {
            let field = e.field.map_or(String::new(), |f| format!("field {f}: "));
            format!(
                "the {idstr} model refuses the edited body: {field}{}",
                e.kind
            )
        })
    }
}

/// Every check in the list must pass (the first refusal wins).
#[derive(Clone, Copy)]
pub struct AllOf<'a>(pub &'a [&'a dyn EditCheck]);

impl EditCheck for AllOf<'_> {
    fn check(
        &self,
        idstr: &str,
        instance_id: u32,
        version: u32,
        body: &[u8],
    ) -> Result<(), String> {
        self.0
            .iter()
            .try_for_each(|c| c.check(idstr, instance_id, version, body))
    }
}

/// Parses a decimal or `0x` hexadecimal number, optionally negative.
pub fn parse_number(s: &str) -> Result<i128, EditError> {
    let bad = || EditError(format!("'{s}' is not a number (decimal or 0x-hex)"));
    let (neg, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let mag = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(h) if !h.is_empty() && !h.starts_with('+') => u64::from_str_radix(h, 16),
        Some(_) => return Err(bad()),
        None if !digits.is_empty() && !digits.starts_with('+') => digits.parse::<u64>(),
        None => return Err(bad()),
    }
    .map_err(|_| bad())?;
    Ok(if neg {
        -i128::from(mag)
    } else {
        i128::from(mag)
    })
}

/// Where a path step leads.
enum Step<'v, 'a> {
    Value(&'v mut Value<'a>, String),
    Body(&'v mut Body<'a>),
}

impl<'a> Body<'a> {
    /// Sets the scalar at `path` (a field name as the description spells it, resolved by
    /// longest match since names may contain dots and brackets, then `[k]` and `.member`
    /// steps) to `value`, checking the range against the field's width and type. A signed
    /// field takes `-2^(w-1) ..= 2^w - 1`: negative numbers, or the raw bit pattern as written
    /// in analyze-migration.py's hex form. `[k]` on a buffer sets one byte; a timer takes
    /// `-1` for "not armed".
    pub fn set(&mut self, path: &str, value: &str) -> Result<(), EditError> {
        let n = parse_number(value)?;
        let mut rest = path;
        let mut step = Step::Body(self);
        loop {
            step = match step {
                Step::Body(b) => {
                    let (next, r) = b.member(rest)?;
                    rest = r;
                    next
                }
                Step::Value(v, ty) if rest.is_empty() => {
                    return assign(v, &ty, n, path).map(|_| ());
                }
                Step::Value(v, type_name) => {
                    let Some(inner) = rest.strip_prefix('[') else {
                        return match (rest.strip_prefix('.'), v) {
                            (Some(r), Value::Struct(b)) => {
                                rest = r;
                                step = Step::Body(b);
                                continue;
                            }
                            _ => Err(EditError(format!(
                                "{path}: cannot step into '{rest}' of a {} value",
                                vmstate::Escaped(type_name.as_bytes())
                            ))),
                        };
                    };
                    let (idx, r) = inner
                        .split_once(']')
                        .ok_or_else(|| EditError("missing ']'".into()))?;
                    let k: usize = idx
                        .parse()
                        .map_err(|_| EditError(format!("bad index '{idx}'")))?;
                    rest = r;
                    match v {
                        Value::Array(items) => {
                            let len = items.len();
                            let item = items.get_mut(k).ok_or_else(|| {
                                EditError(format!("index {k} out of range (length {len})"))
                            })?;
                            Step::Value(item, type_name.clone())
                        }
                        Value::Bytes(bytes) if rest.is_empty() => {
                            let len = bytes.len();
                            let byte = bytes.get_mut(k).ok_or_else(|| {
                                EditError(format!("byte {k} out of range (length {len})"))
                            })?;
                            *byte = u8::try_from(n).map_err(|_| {
                                EditError(format!("{value} does not fit in a byte"))
                            })?;
                            return Ok(());
                        }
                        _ => {
                            return Err(EditError(format!(
                                "{path}: a {} value has no elements",
                                vmstate::Escaped(type_name.as_bytes())
                            )));
                        }
                    }
                }
            };
        }
    }

    /// Resolves the longest field or subsection name that `path` starts with (followed by the
    /// end, `.` or `[`).
    fn member<'s>(&mut self, path: &'s str) -> Result<(Step<'_, 'a>, &'s str), EditError> {
        let fits = |name: &str| {
            path.strip_prefix(name)
                .is_some_and(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['))
        };
        let field = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, f)| fits(&f.name))
            .max_by_key(|(_, f)| f.name.len())
            .map(|(i, f)| (i, f.name.len()));
        let sub = self
            .subsections
            .iter()
            .enumerate()
            .filter(|(_, s)| fits(&s.name))
            .max_by_key(|(_, s)| s.name.len())
            .map(|(i, s)| (i, s.name.len()));
        match (field, sub) {
            (Some((_, fl)), Some((si, sl))) if sl > fl => {
                let rest = &path[sl..];
                let rest = rest.strip_prefix('.').unwrap_or(rest);
                Ok((Step::Body(&mut self.subsections[si].body), rest))
            }
            (Some((fi, fl)), _) => {
                let f = &mut self.fields[fi];
                Ok((
                    Step::Value(&mut f.value, f.type_name.as_str().to_owned()),
                    &path[fl..],
                ))
            }
            (None, Some((si, sl))) => {
                let rest = &path[sl..];
                let rest = rest.strip_prefix('.').unwrap_or(rest);
                Ok((Step::Body(&mut self.subsections[si].body), rest))
            }
            (None, None) => {
                let names: Vec<String> = self.fields.iter().map(|f| f.name.to_string()).collect();
                Err(EditError(format!(
                    "no field matches '{path}' (fields here: {})",
                    names.join(", ")
                )))
            }
        }
    }
}

fn assign(v: &mut Value<'_>, type_name: &str, n: i128, path: &str) -> Result<(), EditError> {
    // The type name comes from the trailer.
    let type_name = vmstate::Escaped(type_name.as_bytes());
    match v {
        Value::Int(i) => {
            let max = i128::from(Int::max_raw(i.width));
            let min = if i.signed { -(max + 1) / 2 } else { 0 };
            if n < min || n > max {
                return Err(EditError(format!(
                    "{path}: {n} out of range for {type_name} ({min}..={max})"
                )));
            }
            i.raw = (n as u64) & Int::max_raw(i.width);
            Ok(())
        }
        Value::Bool(b) => {
            if !(0..=1).contains(&n) {
                return Err(EditError(format!("bool takes 0 or 1, not {n}")));
            }
            *b = n as u8;
            Ok(())
        }
        Value::Timer(t) => {
            *t = if n == -1 {
                u64::MAX
            } else {
                u64::try_from(n)
                    .map_err(|_| EditError(format!("timer takes 0..=2^64-1 or -1, not {n}")))?
            };
            Ok(())
        }
        _ => Err(EditError(format!(
            "{path}: a {type_name} value is not a scalar (index it with [k] or name a member)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::Description;

    // A device with every shape: scalars, a compressed int array, index-expanded structs with
    // a nested subsection, an inline tmp, and a top-level subsection.
    const DESC: &str = r#"{"page_size": 4096, "devices": [{"name": "d", "instance_id": 0, "vmsd_name": "d", "version": 1, "fields": [
        {"name": "a", "type": "int8", "size": 1},
        {"name": "env.regs", "array_len": 2, "type": "uint16", "size": 2},
        {"name": "b", "type": "bool", "size": 1},
        {"name": "s", "index": 0, "type": "struct", "struct": {"vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint32", "size": 4}], "subsections": [{"vmsd_name": "e/sub", "version": 3, "fields": [{"name": "y", "type": "uint8", "size": 1}]}]}, "size": 16},
        {"name": "s", "index": 1, "type": "struct", "struct": {"vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint32", "size": 4}]}, "size": 4},
        {"name": "t", "type": "tmp", "vmsd_name": "t", "version": 0, "fields": [{"name": "z", "type": "uint8", "size": 1}], "size": 1},
        {"name": "timer", "type": "timer", "size": 8}],
        "subsections": [{"vmsd_name": "d/more", "version": 2, "fields": [{"name": "w", "type": "int32", "size": 4}]}]}]}"#;

    fn body_bytes() -> Vec<u8> {
        let mut b = vec![0xfe, 0x12, 0x34, 0x56, 0x78, 1];
        b.extend_from_slice(&[0, 0, 0, 7, 5, 5]);
        b.extend_from_slice(b"e/sub");
        b.extend_from_slice(&[0, 0, 0, 3, 9]);
        b.extend_from_slice(&[0, 0, 0, 8, 0x2a]);
        b.extend_from_slice(&[0xff; 8]);
        b.extend_from_slice(&[5, 6]);
        b.extend_from_slice(b"d/more");
        b.extend_from_slice(&[0, 0, 0, 2, 0xff, 0xff, 0xff, 0xfd]);
        b
    }

    fn desc() -> BodyDesc<'static> {
        Description::from_json_bytes(DESC.as_bytes())
            .unwrap()
            .devices[0]
            .body
            .clone()
    }

    #[test]
    fn decodes_every_shape_and_encodes_back() {
        let bytes = body_bytes();
        let body = decode_section(&desc(), &bytes, 100).unwrap();
        assert_eq!(body.to_bytes(), bytes);
        assert_eq!(body.fields.len(), 6);
        let Value::Array(regs) = &body.fields[1].value else {
            panic!()
        };
        assert_eq!(
            regs[1],
            Value::Int(Int {
                width: 2,
                signed: false,
                raw: 0x5678
            })
        );
        let Value::Array(s) = &body.fields[3].value else {
            panic!()
        };
        let Value::Struct(s0) = &s[0] else { panic!() };
        assert_eq!(s0.subsections[0].name, "e/sub");
        assert_eq!(body.subsections[0].name, "d/more");
        assert_eq!(body.fields[5].value, Value::Timer(u64::MAX));
        let json = body.to_analyze_json();
        assert_eq!(json["a"], "0xfe (-2)");
        assert_eq!(json["env.regs"][1], "0x5678");
        assert_eq!(json["b"], true);
        assert_eq!(json["s"][0]["x"], "0x00000007");
        assert_eq!(json["s"][0]["e/sub"]["y"], "0x09");
        assert_eq!(json["t"], "2a");
        assert_eq!(json["timer"], "ff ff ff ff ff ff ff ff");
        assert_eq!(json["d/more"]["w"], "0xfffffffd (-3)");
    }

    #[test]
    fn every_prefix_and_every_extra_byte_is_refused() {
        let bytes = body_bytes();
        let d = desc();
        for n in 0..bytes.len() {
            let e = decode_section(&d, &bytes[..n], 0).unwrap_err();
            assert!(e.offset <= n, "{n}: {e}");
        }
        let mut long = bytes.clone();
        long.push(0);
        let e = decode_section(&d, &long, 10).unwrap_err();
        assert_eq!(e.offset, 10 + bytes.len());
    }

    /// One body of a device with a two-element array of structs that have a subsection,
    /// described the way `fields` says.
    fn struct_array(fields: &str) -> Description<'static> {
        let json = format!(
            r#"{{"page_size": 4096, "devices": [{{"name": "d", "instance_id": 0, "vmsd_name": "d", "version": 1, "fields": [{fields}, {{"name": "z", "type": "uint8", "size": 1}}]}}]}}"#
        );
        Description::from_json_bytes(json.as_bytes())
            .unwrap()
            .into_owned()
    }

    const ELEMENT: &str = r#""type": "struct", "struct": {"vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint16", "size": 2}], "subsections": []}, "size": 2"#;

    /// QEMU 7.2 gives every element of such an array an `index`; 10.0 leaves it off the last.
    /// Both read as one array of two, and print as analyze-migration.py 10.0 prints them (7.2's
    /// script folds the 10.0 form to its last element).
    #[test]
    fn arrays_of_structs_read_the_same_in_both_conventions() {
        let bytes = [0x12, 0x34, 0x56, 0x78, 9];
        let v72 = struct_array(&format!(
            r#"{{"name": "s", "index": 0, {ELEMENT}}}, {{"name": "s", "index": 1, {ELEMENT}}}"#
        ));
        let v100 = struct_array(&format!(
            r#"{{"name": "s", "index": 0, {ELEMENT}}}, {{"name": "s", {ELEMENT}}}"#
        ));
        let a = decode_section(&v72.devices[0].body, &bytes, 0).unwrap();
        let b = decode_section(&v100.devices[0].body, &bytes, 0).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.to_bytes(), bytes);
        let json = b.to_analyze_json();
        assert_eq!(json["s"][1]["x"], "0x5678");
        assert_eq!(json["z"], "0x09");
        let mut edited = b.clone();
        edited.set("s[1].x", "1").unwrap();
        assert_eq!(edited.to_bytes(), [0x12, 0x34, 0, 1, 9]);
        // A single object is a scalar, as in both scripts.
        let one = struct_array(&format!(r#"{{"name": "s", {ELEMENT}}}"#));
        let c = decode_section(&one.devices[0].body, &bytes[2..], 0).unwrap();
        assert_eq!(c.to_analyze_json()["s"]["x"], "0x5678");
    }

    /// QEMU 10.0 writes a NULL pointer of a pointer array as a `nullptr` object (the byte
    /// `'0'` on the wire) among the struct objects of the same name: one array, the null
    /// element printed as `"nullptr"`; any other byte is refused, as QEMU's loader does.
    #[test]
    fn nullptr_elements_are_part_of_their_array() {
        let desc = struct_array(&format!(
            r#"{{"name": "s", "index": 0, {ELEMENT}}}, {{"name": "s", "index": 1, "type": "nullptr", "size": 1}}, {{"name": "s", {ELEMENT}}}"#
        ));
        let bytes = [0x12, 0x34, b'0', 0x56, 0x78, 9];
        let body = decode_section(&desc.devices[0].body, &bytes, 0).unwrap();
        assert_eq!(body.fields.len(), 2);
        assert_eq!(body.fields[0].type_name, "struct");
        let Value::Array(items) = &body.fields[0].value else {
            panic!()
        };
        assert_eq!(items[1], Value::Null);
        assert_eq!(body.to_bytes(), bytes);
        let json = body.to_analyze_json();
        assert_eq!(json["s"][1], "nullptr");
        assert_eq!(json["s"][2]["x"], "0x5678");
        let mut out = Vec::new();
        crate::analyze::write_body(&body, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            crate::pretty_json(&json),
            "the fast writer prints the same"
        );
        let mut bad = bytes;
        bad[2] = 0;
        let e = decode_section(&desc.devices[0].body, &bad, 100).unwrap_err();
        assert_eq!((e.offset, e.path.as_str()), (102, "s"));
        assert!(e.message.contains("expected the byte 0x30"), "{e}");
    }

    /// The configuration's `capabilities` field: a length byte and a name per element; `size`
    /// is the first element's, and one capability comes without `array_len`. `caps_count` must
    /// count them.
    #[test]
    fn capabilities_are_read_as_a_scalar_or_a_list() {
        let config = |caps: &str| {
            let json = format!(
                r#"{{"configuration": {{"vmsd_name": "configuration", "version": 1, "fields": [{{"name": "len", "type": "uint32", "size": 4}}, {{"name": "name", "type": "buffer", "size": 2}}], "subsections": [{{"vmsd_name": "configuration/capabilities", "version": 1, "fields": [{{"name": "caps_count", "type": "uint32", "size": 4}}, {caps}]}}]}}, "page_size": 4096, "devices": []}}"#
            );
            Description::from_json_bytes(json.as_bytes())
                .unwrap()
                .into_owned()
                .configuration
                .unwrap()
        };
        let record = |caps: &[&[u8]]| {
            let mut b = b"\0\0\0\x02pc\x05\x1aconfiguration/capabilities\0\0\0\x01".to_vec();
            b.extend_from_slice(&(caps.len() as u32).to_be_bytes());
            for c in caps {
                b.push(c.len() as u8);
                b.extend_from_slice(c);
            }
            b
        };
        let one = config(r#"{"name": "capabilities", "type": "capability", "size": 16}"#);
        let bytes = record(&[b"x-ignore-shared"]);
        let tree = decode_configuration(&one, &bytes, 0).unwrap();
        assert_eq!(tree.to_bytes(), bytes);
        let caps = &tree.subsections[0].body.fields[1].value;
        assert_eq!(*caps, Value::Capability(b"x-ignore-shared".to_vec()));
        // Two: the longer first, so `array_len` × `size` overstates what is left.
        let two =
            config(r#"{"name": "capabilities", "array_len": 2, "type": "capability", "size": 16}"#);
        let bytes = record(&[b"x-ignore-shared", b"mapped-ram"]);
        let tree = decode_configuration(&two, &bytes, 0).unwrap();
        assert_eq!(tree.to_bytes(), bytes);
        assert_eq!(
            tree.subsections[0].body.to_analyze_json()["capabilities"],
            serde_json::json!(["x-ignore-shared", "mapped-ram"])
        );
        // caps_count says 2, one capability is described (and sent).
        let mut bytes = record(&[b"x-ignore-shared"]);
        bytes[41] = 2;
        let e = decode_configuration(&one, &bytes, 0).unwrap_err();
        assert!(e.message.contains("caps_count is 2"), "{e}");
        // A first element of another length than described.
        let e = decode_configuration(&one, &record(&[b"mapped-ram"]), 0).unwrap_err();
        assert!(e.message.contains("description says 16 bytes"), "{e}");
    }

    #[test]
    fn nested_empty_arrays_cannot_make_unbounded_work() {
        // 65536 x 65536 empty structs would be 2^32 elements from a 0-byte body.
        let json = r#"{"page_size": 4096, "devices": [{"name": "d", "instance_id": 0, "vmsd_name": "d", "version": 1, "fields": [
            {"name": "o", "array_len": 65536, "type": "struct", "struct": {"vmsd_name": "o", "version": 0, "fields": [
                {"name": "i", "array_len": 65536, "type": "struct", "struct": {"vmsd_name": "i", "version": 0, "fields": []}, "size": 0}]}, "size": 0}]}]}"#;
        let d = Description::from_json_bytes(json.as_bytes()).unwrap();
        let e = decode_section(&d.devices[0].body, &[], 0).unwrap_err();
        assert!(e.message.contains("more elements"), "{e}");
        assert_eq!(e.path, "o.i");
    }

    #[test]
    fn field_bytes_that_qemu_would_take_for_a_subsection_are_refused() {
        // Struct `e` (no subsections listed) is followed by a 12-byte buffer that starts like
        // a subsection of `e`: QEMU's loader would read it as one.
        let json = r#"{"page_size": 4096, "devices": [{"name": "d", "instance_id": 0, "vmsd_name": "d", "version": 1, "fields": [
            {"name": "s", "type": "struct", "struct": {"vmsd_name": "e", "version": 1, "fields": [{"name": "x", "type": "uint8", "size": 1}]}, "size": 1},
            {"name": "buf", "type": "buffer", "size": 12}]}]}"#;
        let d = Description::from_json_bytes(json.as_bytes()).unwrap();
        let d = &d.devices[0].body;
        let mut bytes = vec![7u8, 5, 5];
        bytes.extend_from_slice(b"e/sub\0\0\0\x01\x09");
        let e = decode_section(d, &bytes, 0).unwrap_err();
        assert!(e.message.contains("read as subsection e/sub"), "{e}");
        assert_eq!((e.offset, e.path.as_str()), (1, "s"));
        // Same bytes, but a name that does not start with `e`: plain data.
        bytes[3] = b'f';
        let body = decode_section(d, &bytes, 0).unwrap();
        assert_eq!(body.to_bytes(), bytes);
    }

    #[test]
    fn subsection_mismatches_are_reported_with_path() {
        let d = desc();
        let mut bytes = body_bytes();
        let at = bytes.windows(5).position(|w| w == b"e/sub").unwrap();
        bytes[at + 2] = b'X';
        let e = decode_section(&d, &bytes, 0).unwrap_err();
        assert_eq!(e.path, "s");
        assert!(
            e.message.contains("expected subsection e/sub, found e/Xub"),
            "{e}"
        );
        let mut bytes = body_bytes();
        let v = bytes.len() - 5;
        bytes[v] = 9;
        let e = decode_section(&d, &bytes, 0).unwrap_err();
        assert!(e.message.contains("expected version 2, found 9"), "{e}");
    }

    #[test]
    fn edits_resolve_dotted_names_and_check_ranges() {
        let bytes = body_bytes();
        let mut body = decode_section(&desc(), &bytes, 0).unwrap();
        body.set("env.regs[0]", "0xbeef").unwrap();
        body.set("s[1].x", "4294967295").unwrap();
        body.set("a", "-128").unwrap();
        body.set("d/more.w", "-1").unwrap();
        body.set("s[0].e/sub.y", "7").unwrap();
        body.set("timer", "0x10").unwrap();
        let out = body.to_bytes();
        assert_eq!(out.len(), bytes.len());
        assert_eq!(&out[..3], &[0x80, 0xbe, 0xef]);
        let reread = decode_section(&desc(), &out, 0).unwrap();
        let json = reread.to_analyze_json();
        assert_eq!(json["s"][1]["x"], "0xffffffff");
        assert_eq!(json["s"][0]["e/sub"]["y"], "0x07");
        assert_eq!(json["d/more"]["w"], "0xffffffff (-1)");
        assert_eq!(json["timer"], "00 00 00 00 00 00 00 10");
        for (path, value, msg) in [
            // Signed fields take their negative range and, as raw bits, the unsigned range.
            ("a", "256", "out of range"),
            ("a", "-129", "out of range"),
            ("env.regs[0]", "0x10000", "out of range"),
            ("env.regs[2]", "1", "index 2 out of range"),
            ("env.regs", "1", "not a scalar"),
            ("env", "1", "no field matches"),
            ("b", "2", "bool"),
            ("s[0].nope", "1", "no field matches"),
            ("a", "12x", "not a number"),
        ] {
            let Err(e) = body.clone().set(path, value) else {
                panic!("{path}={value} was accepted");
            };
            assert!(e.0.contains(msg), "{path}={value}: {e}");
        }
    }
}
