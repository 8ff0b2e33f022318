//! The VMDESCRIPTION trailer (docs/V3-WIRE.md §8.2) as a typed tree.
//!
//! QEMU appends a JSON description of every VMState section it wrote.
//! [`Description::from_json_bytes`] reads the text straight into the typed tree (no
//! intermediate JSON value; names and type names borrow the trailer's bytes, see [`Text`]) and
//! checks its shape strictly: known keys only, in any order; integers where integers belong; a
//! key given twice counts with its last value, as in a JSON object. [`Description::to_json`]
//! writes it back with QEMU's key order, so the tree can stand in for the JSON (`vmstate
//! inspect --desc` prints it, the same value as analyze-migration.py `-d desc`).
//!
//! The trailer is attacker-controlled (docs/UNTRUSTED-INPUT.md §5): its length is capped
//! ([`MAX_DESCRIPTION_LEN`]), nesting is capped at [`MAX_DEPTH`] levels (serde_json's limit),
//! and every error names the JSON path and, for malformed JSON, the byte offset in the text.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;

/// A malformed description: where in the JSON (a path like `devices[3].fields[2].size`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescError {
    /// JSON path of the offending item.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VMDESCRIPTION {}: {}", self.path, self.message)
    }
}

impl std::error::Error for DescError {}

/// A string of the description: borrowed from the trailer's text, owned only when the JSON
/// spells it with escapes (QEMU never does). Reads as a `&str`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A copy that owns its bytes.
    pub fn into_owned(self) -> Text<'static> {
        Text(Cow::Owned(self.0.into_owned()))
    }
}

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// Shows the name escaped ([`vmstate::Escaped`]): the text comes from the input, and a
/// terminal must not see its control characters. [`Text::as_str`] is the name itself.
impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        vmstate::Escaped(self.0.as_bytes()).fmt(f)
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Text<'_> {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(Cow::Borrowed(s))
    }
}

impl From<String> for Text<'_> {
    fn from(s: String) -> Self {
        Text(Cow::Owned(s))
    }
}

/// The whole trailer.
///
/// Both writers' conventions read into the same tree:
///
/// * QEMU ≥ 8.2 starts the object with `"configuration"` (the `configuration` vmsd's own
///   description: machine name, and the `configuration/capabilities` subsection whose
///   `capabilities` field has type `capability`, a `size` that counts the first element only
///   and no `array_len` when one capability is listed). 7.2 has only `page_size` and
///   `devices`.
/// * An array that cannot be described once (structs with subsections or optional fields) is
///   written as one field object per element, all with the array's name. QEMU 7.2 gives each
///   an `"index": i`; 10.0 gives it to every element but the last; 10.0 also writes a `NULL`
///   pointer of a pointer array as type `nullptr` and splits mixed arrays into several
///   same-name objects (some with `array_len`). The reader keeps the objects as written and
///   checks that an `index`, where there is one, counts the elements of that name before it;
///   [`crate::generic`] reads consecutive same-name objects as one array, as QEMU 10.0's
///   analyze-migration.py does (on what 7.2 writes, both scripts give the same result).
///   Shapes QEMU never writes are read as written, not as either script would guess: an
///   `array_len` below 2 is an array of that many elements, and same-name objects that are
///   not adjacent (a vmsd's field names are unique, QEMU appends `[n]` to repeats) stay
///   separate fields.
///
/// Stream sections are matched to their entry by [`Description::device`], the one rule every
/// command uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description<'a> {
    /// QEMU ≥ 8.2: the configuration record's layout, written before `page_size`.
    pub configuration: Option<SubsectionDesc<'a>>,
    /// Target page size (4096 on x86).
    pub page_size: u64,
    /// One entry per FULL section, in the order QEMU saved them. [`Description::device`]
    /// indexes them when the trailer is read: treat the list as read-only.
    pub devices: Vec<Device<'a>>,
    /// Indices of `devices` sorted by (name, instance id), for [`Description::device`].
    by_key: Vec<usize>,
}

/// A device object: one FULL section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device<'a> {
    /// The section idstr.
    pub name: Text<'a>,
    /// The section instance id.
    pub instance_id: u32,
    /// VMState devices: the vmsd name and the version written. Old-style (`save_state`)
    /// devices have none.
    pub vmsd: Option<(Text<'a>, u32)>,
    /// Old-style devices: the body size.
    pub size: Option<u64>,
    /// The body layout.
    pub body: BodyDesc<'a>,
}

/// Fields and subsections of one body (a section, a nested struct or a subsection).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyDesc<'a> {
    /// Fields in wire order.
    pub fields: Vec<FieldDesc<'a>>,
    /// Subsections in wire order; `None` when the JSON has no `subsections` key.
    pub subsections: Option<Vec<SubsectionDesc<'a>>>,
}

/// A nested vmsd: a `struct` field's `"struct"` object, or a subsection object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsectionDesc<'a> {
    /// Full vmsd name (for subsections, the name on the wire, e.g. `fw_cfg/dma`).
    pub vmsd_name: Text<'a>,
    /// Version written.
    pub version: u32,
    /// Its body.
    pub body: BodyDesc<'a>,
}

/// How a field object covers array elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// A single element.
    One,
    /// `"array_len": n`: n elements described once.
    ArrayLen(u64),
    /// `"index": i`: element i of an array described per element.
    Index(u64),
}

/// What a field's elements are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind<'a> {
    /// Bytes interpreted by the type name alone (integers, buffers, timers, ...).
    Leaf,
    /// `"type": "struct"` with a `"struct"` object.
    Struct(Box<SubsectionDesc<'a>>),
    /// `vstruct` / `tmp`: the child's keys written into the field object itself.
    Inline(Box<SubsectionDesc<'a>>),
}

/// A field object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDesc<'a> {
    /// Name as QEMU spells it (may hold dots and brackets, e.g. `env.regs`, `unused[1]`).
    pub name: Text<'a>,
    /// Array form.
    pub repeat: Repeat,
    /// VMStateInfo name, `struct`, `vstruct` or `tmp`.
    pub type_name: Text<'a>,
    /// Nested description, if any.
    pub kind: FieldKind<'a>,
    /// Bytes written for one element (for structs, including their subsections).
    pub size: u64,
    /// Whether this object continues the array of the object before it (same name): QEMU
    /// writes an array that cannot be described once as one object per element (or per run
    /// of NULL / non-NULL pointers). Set by the reader, not written back.
    pub continues: bool,
}

#[cold]
fn err(path: &Path<'_>, message: impl Into<String>) -> DescError {
    DescError {
        path: path.to_string(),
        message: message.into(),
    }
}

/// The error for `key` of the object at `path`.
#[cold]
fn key_err(path: &Path<'_>, key: &str, message: &str) -> DescError {
    let path = match path {
        Path::Root => key.to_string(),
        _ => format!("{path}.{key}"),
    };
    DescError {
        path,
        message: message.to_string(),
    }
}

/// The order of [`Description::device`]'s index: length first, which settles most
/// comparisons without comparing the names' bytes.
fn device_key<'d>(d: &'d Device<'_>) -> (usize, &'d [u8], u32) {
    (d.name.len(), d.name.as_bytes(), d.instance_id)
}

/// An `index` that does not count the same-name elements before it.
#[cold]
fn index_err(path: &Path<'_>, index: u64, before: u64) -> DescError {
    key_err(
        path,
        "index",
        &format!("element {index}, but {before} elements of this name come before it"),
    )
}

/// The sorted index behind [`Description::device`]; a second entry for one (name, instance
/// id) is an error naming both.
fn section_keys(devices: &[Device<'_>]) -> Result<Vec<usize>, DescError> {
    let mut keys: Vec<usize> = (0..devices.len()).collect();
    let key = |i: &usize| device_key(&devices[*i]);
    keys.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    if let Some(w) = keys.windows(2).find(|w| key(&w[0]) == key(&w[1])) {
        let (first, again) = (w[0].min(w[1]), w[0].max(w[1]));
        let d = &devices[again];
        return Err(err(
            &Path::Top("devices", Some(again)),
            format!(
                "'{}' instance {} is described twice (also devices[{first}]): QEMU describes \
                 each section once",
                d.name, d.instance_id
            ),
        ));
    }
    Ok(keys)
}

#[cold]
fn unexpected(path: &Path<'_>, key: &str) -> DescError {
    err(
        path,
        format!("unexpected key \"{}\"", vmstate::Escaped(key.as_bytes())),
    )
}

#[cold]
fn missing(path: &Path<'_>, key: &str) -> DescError {
    err(path, format!("missing \"{key}\""))
}

/// Where an item is in the JSON, built only when an error names it: the root (""), a
/// top-level member (`devices[3]`, `configuration`), or a member of another item
/// (`devices[3].fields[2]`).
#[derive(Clone, Copy)]
enum Path<'p> {
    Root,
    Top(&'p str, Option<usize>),
    Child(&'p Path<'p>, &'p str, Option<usize>),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, index) = match self {
            Path::Root => return Ok(()),
            Path::Top(name, index) => (name, index),
            Path::Child(parent, name, index) => {
                write!(f, "{parent}.")?;
                (name, index)
            }
        };
        f.write_str(name)?;
        match index {
            Some(i) => write!(f, "[{i}]"),
            None => Ok(()),
        }
    }
}

/// Largest trailer accepted. QEMU's pc trailers are about 100 KiB; the trailer is attacker
/// controlled (docs/UNTRUSTED-INPUT.md §5), so parsing it is capped: the codec's cap, which the
/// record walks and [`vmstate::wire::Trailer::locate`] apply too.
pub const MAX_DESCRIPTION_LEN: usize = vmstate::wire::Trailer::MAX_LEN;

/// Deepest nesting of JSON objects and arrays accepted (serde_json's limit): the reader
/// recurses once per level, so a hostile trailer cannot exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// The length of the run of plain string bytes at the start of `bytes`: up to the first `"`,
/// `\\` or control character (or the end). Eight bytes per step: QEMU's trailer is mostly
/// short strings, and a byte at a time cost more than the rest of the reader.
pub(crate) fn string_run(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // The index of the first stop byte in the word `x` (bytes in little-endian order).
    let first_stop = |x: u64| {
        // A byte of `v` is zero exactly where `x` has the byte looked for; `v - ONES` sets the
        // high bit of such a byte (and, by the borrow, maybe of later ones: only the first
        // hit counts). `x - 0x20..` likewise flags bytes below 0x20 that have no high bit.
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let hits = hits & HIGH;
        (hits != 0).then_some((hits.trailing_zeros() / 8) as usize)
    };
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if let Some(i) = first_stop(u64::from_le_bytes(word)) {
            return at + i;
        }
        at += 8;
    }
    // The last few bytes, padded with a plain byte to make a whole word (a loop, not a
    // copy of a variable length, which costs a call).
    let rest = chunks.remainder();
    let word = rest
        .iter()
        .rev()
        .fold(u64::from_le_bytes([b'a'; 8]), |w, &b| w << 8 | u64::from(b));
    first_stop(word).map_or(bytes.len(), |i| at + i)
}

/// A reader of the trailer's JSON text (RFC 8259) that fills the typed tree as it goes.
///
/// Every value is read as what its key calls for (a string, an unsigned integer, an object of
/// known keys, an array of those), so there is no generic JSON value and nothing to skip: a
/// value of another type is an error where it stands.
struct Scan<'a> {
    /// The text, checked as UTF-8 once, so that strings are slices of it.
    str: &'a str,
    text: &'a [u8],
    at: usize,
    depth: usize,
    /// Emptied field lists to fill, one per nesting level in use: each `fields` array is
    /// read into one of these and copied out at its exact length, so the tree holds no
    /// spare capacity and the lists do not grow by doubling.
    spare: Vec<Vec<FieldDesc<'a>>>,
}

impl<'a> Scan<'a> {
    /// Malformed JSON at the current byte.
    #[cold]
    fn syntax(&self, path: &Path<'_>, expected: &str) -> DescError {
        let found = match self.text.get(self.at) {
            Some(&b) if b.is_ascii_graphic() => format!("'{}'", char::from(b)),
            Some(b) => format!("byte {b:#04x}"),
            None => "the end of the text".into(),
        };
        err(
            path,
            format!(
                "invalid JSON at byte {} of the trailer: expected {expected}, found {found}",
                self.at
            ),
        )
    }

    /// A value of the wrong type for `key` (or not a JSON value at all).
    #[cold]
    fn mistyped(&mut self, path: &Path<'_>, key: &str, expected: &str) -> DescError {
        match self.peek() {
            Some(b'"' | b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                key_err(path, key, &format!("expected {expected}"))
            }
            _ => self.syntax(path, "a value"),
        }
    }

    /// The next byte after white space.
    #[inline(always)]
    fn peek(&mut self) -> Option<u8> {
        // QEMU separates tokens by one space at most: test the first byte before looping.
        match self.text.get(self.at) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => self.skip_space(),
            b => b.copied(),
        }
    }

    fn skip_space(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        self.at += usize::from(found);
        found
    }

    /// Steps into the `{` or `[` just peeked.
    fn enter(&mut self, path: &Path<'_>) -> Result<(), DescError> {
        if self.depth == MAX_DEPTH {
            return Err(err(
                path,
                format!("JSON nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        self.at += 1;
        Ok(())
    }

    /// An object: `member(self, key)` reads the value of each member. `Ok(false)` (nothing
    /// read) when the next value is not an object.
    fn object(
        &mut self,
        path: &Path<'_>,
        mut member: impl FnMut(&mut Self, Text<'a>) -> Result<(), DescError>,
    ) -> Result<bool, DescError> {
        if self.peek() != Some(b'{') {
            return Ok(false);
        }
        self.enter(path)?;
        if self.eat(b'}') {
            self.depth -= 1;
        } else {
            self.member(path, &mut member)?;
            self.rest_of_object(path, member)?;
        }
        Ok(true)
    }

    /// The members of an object after one was read, and its `}` (the object's level is left).
    fn rest_of_object(
        &mut self,
        path: &Path<'_>,
        mut member: impl FnMut(&mut Self, Text<'a>) -> Result<(), DescError>,
    ) -> Result<(), DescError> {
        loop {
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    break;
                }
                _ => return Err(self.syntax(path, "',' or '}'")),
            }
            self.member(path, &mut member)?;
        }
        self.depth -= 1;
        Ok(())
    }

    /// One `"key": value` member.
    fn member(
        &mut self,
        path: &Path<'_>,
        member: &mut impl FnMut(&mut Self, Text<'a>) -> Result<(), DescError>,
    ) -> Result<(), DescError> {
        if self.peek() != Some(b'"') {
            return Err(self.syntax(path, "a key"));
        }
        let key = self.string(path)?;
        if !self.eat(b':') {
            return Err(self.syntax(path, "':'"));
        }
        member(self, key)
    }

    /// An array: `element(self, i)` reads element `i`. `Ok(false)` (nothing read) when the
    /// next value is not an array.
    fn array(
        &mut self,
        path: &Path<'_>,
        mut element: impl FnMut(&mut Self, usize) -> Result<(), DescError>,
    ) -> Result<bool, DescError> {
        if self.peek() != Some(b'[') {
            return Ok(false);
        }
        self.enter(path)?;
        if !self.eat(b']') {
            let mut i = 0;
            loop {
                element(self, i)?;
                i += 1;
                match self.peek() {
                    Some(b',') => self.at += 1,
                    Some(b']') => {
                        self.at += 1;
                        break;
                    }
                    _ => return Err(self.syntax(path, "',' or ']'")),
                }
            }
        }
        self.depth -= 1;
        Ok(true)
    }

    /// The string whose `"` was just peeked: borrowed from the text unless it has escapes.
    fn string(&mut self, path: &Path<'_>) -> Result<Text<'a>, DescError> {
        self.at += 1;
        let start = self.at;
        self.at += string_run(self.text.get(start..).unwrap_or_default());
        match self.text.get(self.at) {
            // Both ends are ASCII quotes, so the slice is on character boundaries.
            Some(b'"') => match self.str.get(start..self.at) {
                Some(s) => {
                    self.at += 1;
                    Ok(Text(Cow::Borrowed(s)))
                }
                None => Err(self.syntax(path, "UTF-8 text")),
            },
            Some(b'\\') => self.escaped(path, start),
            _ => Err(self.syntax(path, "a string character or '\"'")),
        }
    }

    /// The rest of a string from its first `\` on, unescaped into an owned copy.
    #[cold]
    fn escaped(&mut self, path: &Path<'_>, start: usize) -> Result<Text<'a>, DescError> {
        let mut out = self.text[start..self.at].to_vec();
        loop {
            match self.text.get(self.at) {
                Some(b'"') => break,
                Some(b'\\') => {
                    self.at += 1;
                    let c = match self.text.get(self.at) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.at += 1;
                            let c = self.unicode(path)?;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                            continue;
                        }
                        _ => return Err(self.syntax(path, "an escape character")),
                    };
                    self.at += 1;
                    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                Some(&b) if b >= 0x20 => {
                    out.push(b);
                    self.at += 1;
                }
                _ => return Err(self.syntax(path, "a string character or '\"'")),
            }
        }
        self.at += 1;
        // The text is UTF-8 and escapes write whole characters.
        String::from_utf8(out).map(Text::from).map_err(|_| {
            self.at = start;
            self.syntax(path, "UTF-8 text in the string starting here")
        })
    }

    fn hex4(&mut self, path: &Path<'_>) -> Result<u32, DescError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self
                .text
                .get(self.at)
                .and_then(|&b| char::from(b).to_digit(16))
                .ok_or_else(|| self.syntax(path, "a hex digit"))?;
            v = v << 4 | d;
            self.at += 1;
        }
        Ok(v)
    }

    /// The character of a `\uXXXX` escape (a surrogate pair takes two).
    fn unicode(&mut self, path: &Path<'_>) -> Result<char, DescError> {
        let hi = self.hex4(path)?;
        let code = match hi {
            0xd800..=0xdbff => {
                if self.text.get(self.at..self.at + 2) != Some(b"\\u") {
                    return Err(self.syntax(path, "the low surrogate of a \\u pair"));
                }
                self.at += 2;
                let lo = self.hex4(path)?;
                if !(0xdc00..=0xdfff).contains(&lo) {
                    self.at -= 4;
                    return Err(self.syntax(path, "a low surrogate (\\udc00 to \\udfff)"));
                }
                0x10000 + ((hi - 0xd800) << 10 | (lo - 0xdc00))
            }
            0xdc00..=0xdfff => {
                self.at -= 4;
                return Err(self.syntax(path, "a high surrogate before a low one"));
            }
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.syntax(path, "a character"))
    }

    /// The number whose first byte was just peeked: its value when it is an unsigned integer
    /// that fits 64 bits (what serde_json's `as_u64` accepts: no sign, fraction or exponent),
    /// else `None`.
    fn number(&mut self, path: &Path<'_>) -> Result<Option<u64>, DescError> {
        let negative = self.text.get(self.at) == Some(&b'-');
        self.at += usize::from(negative);
        let mut value = Some(0u64);
        match self.text.get(self.at) {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                while let Some(&d @ b'0'..=b'9') = self.text.get(self.at) {
                    value = value
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_add(u64::from(d - b'0')));
                    self.at += 1;
                }
            }
            _ => return Err(self.syntax(path, "a digit")),
        }
        let mut integer = !negative;
        if self.text.get(self.at) == Some(&b'.') {
            self.at += 1;
            integer = false;
            self.digits(path)?;
        }
        if let Some(b'e' | b'E') = self.text.get(self.at) {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.text.get(self.at) {
                self.at += 1;
            }
            self.digits(path)?;
        }
        Ok(value.filter(|_| integer))
    }

    fn digits(&mut self, path: &Path<'_>) -> Result<(), DescError> {
        if !self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            return Err(self.syntax(path, "a digit"));
        }
        while self.text.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        Ok(())
    }

    /// The value of `key` as an unsigned integer.
    fn uint(&mut self, path: &Path<'_>, key: &str) -> Result<u64, DescError> {
        const EXPECTED: &str = "an unsigned integer";
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self
                .number(path)?
                .ok_or_else(|| key_err(path, key, &format!("expected {EXPECTED}"))),
            _ => Err(self.mistyped(path, key, EXPECTED)),
        }
    }

    fn u32(&mut self, path: &Path<'_>, key: &str) -> Result<u32, DescError> {
        u32::try_from(self.uint(path, key)?)
            .map_err(|_| key_err(path, key, "expected a 32-bit value"))
    }

    /// The value of `key` as a string.
    fn text(&mut self, path: &Path<'_>, key: &str) -> Result<Text<'a>, DescError> {
        match self.peek() {
            Some(b'"') => self.string(path),
            _ => Err(self.mistyped(path, key, "a string")),
        }
    }

    /// The whole text: one description object, then only white space.
    fn description(&mut self) -> Result<Description<'a>, DescError> {
        let root = Path::Root;
        let (mut configuration, mut page_size, mut devices) = (None, None, None);
        let found = self.object(&root, |s, key| {
            match key.as_str() {
                "configuration" => {
                    configuration = Some(s.subsection(&Path::Top("configuration", None))?);
                }
                "page_size" => page_size = Some(s.uint(&root, "page_size")?),
                "devices" => {
                    let mut list = Vec::new();
                    let found = s.array(&root, |s, i| {
                        list.push(s.device(&Path::Top("devices", Some(i)))?);
                        Ok(())
                    })?;
                    if !found {
                        return Err(s.mistyped(&root, "devices", "an array"));
                    }
                    devices = Some(list);
                }
                _ => return Err(unexpected(&root, &key)),
            }
            Ok(())
        })?;
        if !found {
            return Err(self.not_an_object(&root));
        }
        if self.peek().is_some() {
            return Err(self.syntax(&root, "the end of the text"));
        }
        let devices = devices.ok_or_else(|| missing(&root, "devices"))?;
        Ok(Description {
            configuration,
            page_size: page_size.ok_or_else(|| missing(&root, "page_size"))?,
            by_key: section_keys(&devices)?,
            devices,
        })
    }

    #[cold]
    fn not_an_object(&mut self, path: &Path<'_>) -> DescError {
        match self.peek() {
            Some(b'"' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                err(path, "expected an object")
            }
            _ => self.syntax(path, "an object"),
        }
    }

    fn device(&mut self, path: &Path<'_>) -> Result<Device<'a>, DescError> {
        let (mut name, mut instance_id, mut vmsd_name, mut version, mut size) =
            (None, None, None, None, None);
        let (mut fields, mut subsections) = (None, None);
        let found = self.object(path, |s, key| {
            match key.as_str() {
                "name" => name = Some(s.text(path, "name")?),
                "instance_id" => instance_id = Some(s.u32(path, "instance_id")?),
                "vmsd_name" => vmsd_name = Some(s.text(path, "vmsd_name")?),
                "version" => version = Some(s.u32(path, "version")?),
                "size" => size = Some(s.uint(path, "size")?),
                "fields" => fields = Some(s.fields(path)?),
                "subsections" => subsections = Some(s.subsections(path)?),
                _ => return Err(unexpected(path, &key)),
            }
            Ok(())
        })?;
        if !found {
            return Err(self.not_an_object(path));
        }
        let vmsd = match (vmsd_name, version) {
            (Some(n), Some(v)) => Some((n, v)),
            (Some(_), None) => return Err(missing(path, "version")),
            (None, Some(_)) => return Err(err(path, "\"version\" without \"vmsd_name\"")),
            (None, None) => None,
        };
        if vmsd.is_none() && size.is_none() {
            return Err(err(path, "neither \"vmsd_name\" nor \"size\""));
        }
        Ok(Device {
            name: name.ok_or_else(|| missing(path, "name"))?,
            instance_id: instance_id.ok_or_else(|| missing(path, "instance_id"))?,
            vmsd,
            size,
            body: BodyDesc {
                fields: fields.ok_or_else(|| missing(path, "fields"))?,
                subsections,
            },
        })
    }

    /// The `fields` array of the object at `path`.
    fn fields(&mut self, path: &Path<'_>) -> Result<Vec<FieldDesc<'a>>, DescError> {
        let mut list = self.spare.pop().unwrap_or_default();
        // Elements of the current run of same-name objects before the next object.
        let mut run = 0u64;
        let found = self.array(path, |s, i| {
            s.peek();
            let mut field = match s.qemu_field(path, i)? {
                Some(f) => f,
                None => s.field(&Path::Child(path, "fields", Some(i)))?,
            };
            field.continues = list
                .last()
                .is_some_and(|l: &FieldDesc<'_>| l.name == field.name);
            if !field.continues {
                run = 0;
            }
            run = match field.repeat {
                Repeat::Index(k) if k != run => {
                    return Err(index_err(&Path::Child(path, "fields", Some(i)), k, run));
                }
                Repeat::ArrayLen(n) => run.saturating_add(n),
                _ => run + 1,
            };
            list.push(field);
            Ok(())
        })?;
        if !found {
            return Err(self.mistyped(path, "fields", "an array"));
        }
        // `append` leaves `list` empty with its capacity, for the next array.
        let mut exact = Vec::with_capacity(list.len());
        exact.append(&mut list);
        self.spare.push(list);
        Ok(exact)
    }

    /// The `subsections` array of the object at `path`.
    fn subsections(&mut self, path: &Path<'_>) -> Result<Vec<SubsectionDesc<'a>>, DescError> {
        let mut list = Vec::new();
        let found = self.array(path, |s, i| {
            list.push(s.subsection(&Path::Child(path, "subsections", Some(i)))?);
            Ok(())
        })?;
        if !found {
            return Err(self.mistyped(path, "subsections", "an array"));
        }
        Ok(list)
    }

    /// A subsection object, a `struct` object or the `configuration` object.
    fn subsection(&mut self, path: &Path<'_>) -> Result<SubsectionDesc<'a>, DescError> {
        self.peek();
        if let Some(s) = self.qemu_subsection(path)? {
            return Ok(s);
        }
        let mut keys = SubsectionKeys::default();
        let found = self.object(path, |s, key| s.subsection_member(path, &mut keys, key))?;
        if !found {
            return Err(self.not_an_object(path));
        }
        keys.finish(path)
    }

    /// Reads the value of `key` of the subsection object at `path` into `keys`.
    fn subsection_member(
        &mut self,
        path: &Path<'_>,
        keys: &mut SubsectionKeys<'a>,
        key: Text<'a>,
    ) -> Result<(), DescError> {
        match key.as_str() {
            "vmsd_name" => keys.vmsd_name = Some(self.text(path, "vmsd_name")?),
            "version" => keys.version = Some(self.u32(path, "version")?),
            "fields" => keys.fields = Some(self.fields(path)?),
            "subsections" => keys.subsections = Some(self.subsections(path)?),
            _ => return Err(unexpected(path, &key)),
        }
        Ok(())
    }

    /// A field object spelled exactly as QEMU writes it,
    /// `{"name": "n", "type": "t", "size": 8}` with `"array_len": n, ` or `"index": i, `
    /// before `"type"` and, for a struct, `"struct": {…}, ` before `"size"`, read by
    /// comparing whole literals: most of the trailer is such objects.
    ///
    /// `Ok(None)`, with nothing consumed, when the text before any nested object is spelled
    /// otherwise (escapes, other spacing or key order, a number the general reader must
    /// judge): [`Scan::field`] then reads it and reports what is wrong. Once a nested object
    /// is read, the rest of the object is read by the general reader from where the literals
    /// stop, never read again: a hostile spelling cannot make nested objects be read once
    /// per enclosing level. Errors are the general reader's, which reads the same keys first.
    fn qemu_field(
        &mut self,
        path: &Path<'_>,
        i: usize,
    ) -> Result<Option<FieldDesc<'a>>, DescError> {
        if self.depth == MAX_DEPTH {
            return Ok(None);
        }
        let mut at = self.at;
        let Some(name) = self.literal_then_string(&mut at, b"{\"name\": \"") else {
            return Ok(None);
        };
        let repeat = if self.literal(&mut at, b", \"array_len\": ") {
            self.plain_uint(&mut at).map(Repeat::ArrayLen)
        } else if self.literal(&mut at, b", \"index\": ") {
            self.plain_uint(&mut at).map(Repeat::Index)
        } else {
            Some(Repeat::One)
        };
        let Some(repeat) = repeat else {
            return Ok(None);
        };
        let Some(type_name) = self.literal_then_string(&mut at, b", \"type\": \"") else {
            return Ok(None);
        };
        let nested = self.literal(&mut at, b", \"struct\": ");
        if !nested && type_name == "struct" {
            return Ok(None);
        }
        // From here on the field object is entered.
        self.depth += 1;
        self.at = at;
        let path = Path::Child(path, "fields", Some(i));
        let strukt = match nested {
            true => Some(self.subsection(&Path::Child(&path, "struct", None))?),
            false => None,
        };
        let mut at = self.at;
        if self.literal(&mut at, b", \"size\": ")
            && let Some(size) = self.plain_uint(&mut at)
            && self.literal(&mut at, b"}")
        {
            self.at = at;
            self.depth -= 1;
            return Ok(Some(FieldDesc {
                name,
                repeat,
                type_name,
                kind: strukt.map_or(FieldKind::Leaf, |s| FieldKind::Struct(Box::new(s))),
                size,
                continues: false,
            }));
        }
        let mut keys = FieldKeys {
            name: Some(name),
            type_name: Some(type_name),
            strukt,
            ..FieldKeys::default()
        };
        match repeat {
            Repeat::One => {}
            Repeat::ArrayLen(n) => keys.array_len = Some(n),
            Repeat::Index(i) => keys.index = Some(i),
        }
        self.rest_of_object(&path, |s, key| s.field_member(&path, &mut keys, key))?;
        keys.finish(&path).map(Some)
    }

    /// A subsection or struct object spelled exactly as QEMU writes it,
    /// `{"vmsd_name": "v", "version": 1, "fields": […]}` with `, "subsections": […]` before
    /// the `}`, read like [`Scan::qemu_field`].
    fn qemu_subsection(
        &mut self,
        path: &Path<'_>,
    ) -> Result<Option<SubsectionDesc<'a>>, DescError> {
        if self.depth == MAX_DEPTH {
            return Ok(None);
        }
        let mut at = self.at;
        let Some(vmsd_name) = self.literal_then_string(&mut at, b"{\"vmsd_name\": \"") else {
            return Ok(None);
        };
        let version = match self.literal(&mut at, b", \"version\": ") {
            true => self.plain_uint(&mut at).and_then(|v| u32::try_from(v).ok()),
            false => None,
        };
        let Some(version) = version.filter(|_| self.literal(&mut at, b", \"fields\": ")) else {
            return Ok(None);
        };
        // From here on the object is entered.
        self.depth += 1;
        self.at = at;
        let fields = self.fields(path)?;
        let mut subsections = None;
        let mut at = self.at;
        if self.literal(&mut at, b", \"subsections\": ") {
            self.at = at;
            subsections = Some(self.subsections(path)?);
            at = self.at;
        }
        if self.literal(&mut at, b"}") {
            self.at = at;
            self.depth -= 1;
            return Ok(Some(SubsectionDesc {
                vmsd_name,
                version,
                body: BodyDesc {
                    fields,
                    subsections,
                },
            }));
        }
        let mut keys = SubsectionKeys {
            vmsd_name: Some(vmsd_name),
            version: Some(version),
            fields: Some(fields),
            subsections,
        };
        self.rest_of_object(path, |s, key| s.subsection_member(path, &mut keys, key))?;
        keys.finish(path).map(Some)
    }

    /// Steps `at` over `literal` if the text has it there.
    #[inline(always)]
    fn literal(&self, at: &mut usize, literal: &[u8]) -> bool {
        let found = self.text.get(*at..*at + literal.len()) == Some(literal);
        *at += if found { literal.len() } else { 0 };
        found
    }

    /// `literal` (ending in the opening `"`), then a string without escapes and its `"`.
    #[inline(always)]
    fn literal_then_string(&self, at: &mut usize, literal: &[u8]) -> Option<Text<'a>> {
        if !self.literal(at, literal) {
            return None;
        }
        let start = *at;
        let end = start + string_run(self.text.get(start..)?);
        if self.text.get(end) != Some(&b'"') {
            return None;
        }
        *at = end + 1;
        // Both ends are ASCII quotes, so the slice is on character boundaries.
        self.str.get(start..end).map(|s| Text(Cow::Borrowed(s)))
    }

    /// Digits without a leading zero that fit 64 bits; what follows is left to the literal
    /// after them.
    #[inline(always)]
    fn plain_uint(&self, at: &mut usize) -> Option<u64> {
        let digits = self.text.get(*at..)?;
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 19 || (n > 1 && digits[0] == b'0') {
            return None;
        }
        *at += n;
        Some(
            digits[..n]
                .iter()
                .fold(0, |v, &d| v * 10 + u64::from(d - b'0')),
        )
    }

    fn field(&mut self, path: &Path<'_>) -> Result<FieldDesc<'a>, DescError> {
        let mut keys = FieldKeys::default();
        let found = self.object(path, |s, key| s.field_member(path, &mut keys, key))?;
        if !found {
            return Err(self.not_an_object(path));
        }
        keys.finish(path)
    }

    /// Reads the value of `key` of the field object at `path` into `keys`.
    fn field_member(
        &mut self,
        path: &Path<'_>,
        keys: &mut FieldKeys<'a>,
        key: Text<'a>,
    ) -> Result<(), DescError> {
        match key.as_str() {
            "name" => keys.name = Some(self.text(path, "name")?),
            "array_len" => keys.array_len = Some(self.uint(path, "array_len")?),
            "index" => keys.index = Some(self.uint(path, "index")?),
            "type" => keys.type_name = Some(self.text(path, "type")?),
            "size" => keys.size = Some(self.uint(path, "size")?),
            "struct" => {
                keys.strukt = Some(self.subsection(&Path::Child(path, "struct", None))?);
            }
            // vstruct / tmp: the child's keys are the field's own.
            "vmsd_name" => keys.vmsd_name = Some(self.text(path, "vmsd_name")?),
            "version" => keys.version = Some(self.u32(path, "version")?),
            "fields" => keys.fields = Some(self.fields(path)?),
            "subsections" => keys.subsections = Some(self.subsections(path)?),
            _ => return Err(unexpected(path, &key)),
        }
        Ok(())
    }
}

/// The keys of a subsection object read so far.
#[derive(Default)]
struct SubsectionKeys<'a> {
    vmsd_name: Option<Text<'a>>,
    version: Option<u32>,
    fields: Option<Vec<FieldDesc<'a>>>,
    subsections: Option<Vec<SubsectionDesc<'a>>>,
}

impl<'a> SubsectionKeys<'a> {
    fn finish(self, path: &Path<'_>) -> Result<SubsectionDesc<'a>, DescError> {
        Ok(SubsectionDesc {
            vmsd_name: self.vmsd_name.ok_or_else(|| missing(path, "vmsd_name"))?,
            version: self.version.ok_or_else(|| missing(path, "version"))?,
            body: BodyDesc {
                fields: self.fields.ok_or_else(|| missing(path, "fields"))?,
                subsections: self.subsections,
            },
        })
    }
}

/// The keys of a field object read so far.
#[derive(Default)]
struct FieldKeys<'a> {
    name: Option<Text<'a>>,
    array_len: Option<u64>,
    index: Option<u64>,
    type_name: Option<Text<'a>>,
    size: Option<u64>,
    strukt: Option<SubsectionDesc<'a>>,
    vmsd_name: Option<Text<'a>>,
    version: Option<u32>,
    fields: Option<Vec<FieldDesc<'a>>>,
    subsections: Option<Vec<SubsectionDesc<'a>>>,
}

impl<'a> FieldKeys<'a> {
    fn finish(self, path: &Path<'_>) -> Result<FieldDesc<'a>, DescError> {
        let type_name = self.type_name.ok_or_else(|| missing(path, "type"))?;
        let inline = self.vmsd_name.is_some();
        let child_keys = [
            ("struct", self.strukt.is_some() && inline),
            ("version", self.version.is_some() && !inline),
            ("fields", self.fields.is_some() && !inline),
            ("subsections", self.subsections.is_some() && !inline),
        ];
        if let Some((key, _)) = child_keys.iter().find(|(_, bad)| *bad) {
            return Err(unexpected(path, key));
        }
        let repeat = match (self.array_len, self.index) {
            (None, None) => Repeat::One,
            (Some(n), None) => Repeat::ArrayLen(n),
            (None, Some(i)) => Repeat::Index(i),
            (Some(_), Some(_)) => return Err(err(path, "both \"array_len\" and \"index\"")),
        };
        let kind = match (self.strukt, self.vmsd_name) {
            (Some(s), _) => FieldKind::Struct(Box::new(s)),
            (None, Some(vmsd_name)) => FieldKind::Inline(Box::new(SubsectionDesc {
                vmsd_name,
                version: self.version.ok_or_else(|| missing(path, "version"))?,
                body: BodyDesc {
                    fields: self.fields.ok_or_else(|| missing(path, "fields"))?,
                    subsections: self.subsections,
                },
            })),
            (None, None) if type_name == "struct" => {
                return Err(err(path, "type \"struct\" without a \"struct\" object"));
            }
            (None, None) => FieldKind::Leaf,
        };
        Ok(FieldDesc {
            name: self.name.ok_or_else(|| missing(path, "name"))?,
            repeat,
            type_name,
            kind,
            size: self.size.ok_or_else(|| missing(path, "size"))?,
            continues: false,
        })
    }
}

impl<'a> Description<'a> {
    /// Parses the trailer's JSON text; names and type names borrow from `json`.
    pub fn from_json_bytes(json: &'a [u8]) -> Result<Description<'a>, DescError> {
        if json.len() > MAX_DESCRIPTION_LEN {
            return Err(err(
                &Path::Root,
                format!(
                    "{} bytes of JSON: expected at most {MAX_DESCRIPTION_LEN}",
                    json.len()
                ),
            ));
        }
        let str = std::str::from_utf8(json).map_err(|e| {
            err(
                &Path::Root,
                format!(
                    "invalid JSON at byte {} of the trailer: expected UTF-8 text",
                    e.valid_up_to()
                ),
            )
        })?;
        Scan {
            str,
            text: json,
            at: 0,
            depth: 0,
            spare: Vec::new(),
        }
        .description()
    }

    /// The description entry of a stream section, and its index in `devices`: the entry with
    /// the section's idstr and instance id.
    ///
    /// This is the one rule that matches stream sections to the description (inspect, verify,
    /// rewrite, diff, extract, v4 conversion). It is how QEMU's loader finds a section's
    /// handler (`find_se(idstr, instance_id)`) and how analyze-migration.py picks the
    /// description of a section (its `section_classes[(name, instance_id)]`); the order of
    /// the entries does not matter. Duplicates: a trailer that describes one (idstr,
    /// instance id) twice is refused when read (QEMU never writes one; the script would
    /// silently take the last), so the answer is unique. A stream that carries the same
    /// section twice gets the same entry for both (QEMU loads both, the later wins); `verify`
    /// reports the repeat. Only FULL sections are described (not `ram` and other iterative
    /// sections).
    pub fn device(&self, idstr: &[u8], instance_id: u32) -> Option<(usize, &Device<'a>)> {
        let key = |i: usize| self.devices.get(i).map(device_key);
        let at = self
            .by_key
            .binary_search_by(|&i| key(i).cmp(&Some((idstr.len(), idstr, instance_id))))
            .ok()?;
        let i = self.by_key[at];
        Some((i, self.devices.get(i)?))
    }

    /// A copy that owns all its strings (independent of the trailer's bytes).
    pub fn into_owned(self) -> Description<'static> {
        Description {
            by_key: self.by_key,
            configuration: self.configuration.map(SubsectionDesc::into_owned),
            page_size: self.page_size,
            devices: self
                .devices
                .into_iter()
                .map(|d| Device {
                    name: d.name.into_owned(),
                    instance_id: d.instance_id,
                    vmsd: d.vmsd.map(|(n, v)| (n.into_owned(), v)),
                    size: d.size,
                    body: d.body.into_owned(),
                })
                .collect(),
        }
    }

    /// The JSON value, keys in QEMU's order.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(c) = &self.configuration {
            m.insert("configuration".into(), c.to_json());
        }
        m.insert("page_size".into(), self.page_size.into());
        m.insert(
            "devices".into(),
            Value::Array(self.devices.iter().map(Device::to_json).collect()),
        );
        Value::Object(m)
    }
}

fn string(t: &Text<'_>) -> Value {
    Value::String(t.as_str().to_owned())
}

impl Device<'_> {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), string(&self.name));
        m.insert("instance_id".into(), self.instance_id.into());
        if let Some((n, v)) = &self.vmsd {
            m.insert("vmsd_name".into(), string(n));
            m.insert("version".into(), (*v).into());
        }
        if let Some(s) = self.size {
            m.insert("size".into(), s.into());
        }
        self.body.write_json(&mut m);
        Value::Object(m)
    }
}

impl<'a> BodyDesc<'a> {
    fn write_json(&self, m: &mut Map<String, Value>) {
        m.insert(
            "fields".into(),
            Value::Array(self.fields.iter().map(FieldDesc::to_json).collect()),
        );
        if let Some(s) = &self.subsections {
            m.insert(
                "subsections".into(),
                Value::Array(s.iter().map(SubsectionDesc::to_json).collect()),
            );
        }
    }

    /// The subsections (empty when none are listed).
    pub fn subsections(&self) -> &[SubsectionDesc<'a>] {
        self.subsections.as_deref().unwrap_or(&[])
    }

    fn into_owned(self) -> BodyDesc<'static> {
        BodyDesc {
            fields: self
                .fields
                .into_iter()
                .map(|f| FieldDesc {
                    name: f.name.into_owned(),
                    repeat: f.repeat,
                    type_name: f.type_name.into_owned(),
                    kind: match f.kind {
                        FieldKind::Leaf => FieldKind::Leaf,
                        FieldKind::Struct(s) => FieldKind::Struct(Box::new(s.into_owned())),
                        FieldKind::Inline(s) => FieldKind::Inline(Box::new(s.into_owned())),
                    },
                    size: f.size,
                    continues: f.continues,
                })
                .collect(),
            subsections: self
                .subsections
                .map(|s| s.into_iter().map(SubsectionDesc::into_owned).collect()),
        }
    }
}

impl SubsectionDesc<'_> {
    fn write_json(&self, m: &mut Map<String, Value>) {
        m.insert("vmsd_name".into(), string(&self.vmsd_name));
        m.insert("version".into(), self.version.into());
        self.body.write_json(m);
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        self.write_json(&mut m);
        Value::Object(m)
    }

    fn into_owned(self) -> SubsectionDesc<'static> {
        SubsectionDesc {
            vmsd_name: self.vmsd_name.into_owned(),
            version: self.version,
            body: self.body.into_owned(),
        }
    }
}

impl FieldDesc<'_> {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("name".into(), string(&self.name));
        match self.repeat {
            Repeat::One => {}
            Repeat::ArrayLen(n) => {
                m.insert("array_len".into(), n.into());
            }
            Repeat::Index(i) => {
                m.insert("index".into(), i.into());
            }
        }
        m.insert("type".into(), string(&self.type_name));
        match &self.kind {
            FieldKind::Leaf => {}
            FieldKind::Struct(s) => {
                m.insert("struct".into(), s.to_json());
            }
            FieldKind::Inline(s) => s.write_json(&mut m),
        }
        m.insert("size".into(), self.size.into());
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FW_CFG: &str = r#"{"page_size": 4096, "devices": [{"name": "fw_cfg", "instance_id": 0, "vmsd_name": "fw_cfg", "version": 2, "fields": [{"name": "cur_entry", "type": "uint16", "size": 2}, {"name": "cur_offset[1]", "type": "uint32", "size": 4}], "subsections": [{"vmsd_name": "fw_cfg/dma", "version": 0, "fields": [{"name": "dma_addr", "type": "uint64", "size": 8}]}]}, {"name": "old", "instance_id": 1, "size": 3, "fields": [{"name": "data", "size": 3, "type": "buffer"}]}]}"#;

    #[test]
    fn parses_and_writes_back_in_qemu_key_order() {
        let d = Description::from_json_bytes(FW_CFG.as_bytes()).unwrap();
        assert_eq!(d.devices.len(), 2);
        let fw = &d.devices[0];
        assert_eq!(fw.vmsd, Some(("fw_cfg".into(), 2)));
        assert_eq!(fw.body.fields[1].name, "cur_offset[1]");
        assert_eq!(fw.body.subsections()[0].vmsd_name, "fw_cfg/dma");
        assert_eq!(d.devices[1].size, Some(3));
        assert_eq!(d.devices[1].vmsd, None);
        // Names borrow the text.
        assert!(matches!(fw.name.0, Cow::Borrowed(_)));
        // QEMU's order for fields is name, type, size; the old-style entry had size before type.
        let out = serde_json::to_string(&d.to_json()).unwrap();
        assert!(out.starts_with(r#"{"page_size":4096,"devices":[{"name":"fw_cfg","instance_id":0,"vmsd_name":"fw_cfg","version":2,"fields":[{"name":"cur_entry","type":"uint16","size":2}"#), "{out}");
        let v: Value = serde_json::from_str(FW_CFG).unwrap();
        assert_eq!(d.to_json(), v);
        assert_eq!(d.clone().into_owned(), d);
    }

    #[test]
    fn qemu_10_configuration_object_is_kept_first() {
        let json = r#"{"configuration": {"vmsd_name": "configuration", "version": 1, "fields": [{"name": "len", "type": "uint32", "size": 4}, {"name": "name", "type": "buffer", "size": 13}]}, "page_size": 4096, "devices": []}"#;
        let d = Description::from_json_bytes(json.as_bytes()).unwrap();
        let c = d.configuration.as_ref().unwrap();
        assert_eq!(
            (c.vmsd_name.as_str(), c.body.fields.len()),
            ("configuration", 2)
        );
        let out = serde_json::to_string(&d.to_json()).unwrap();
        assert_eq!(out, json.replace(": ", ":").replace(", ", ","));
    }

    /// The reader takes what serde_json takes: any white space, escapes (surrogate pairs
    /// too), a repeated key's last value.
    #[test]
    fn reads_any_json_spelling_like_serde_json() {
        let json = concat!(
            " \r\n\t{ \"page_size\" :4096,\"devices\":[ {\"n\\u0061me\":\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\",",
            "\"instance_id\":3,\"instance_id\":7,\"size\":1,\"fields\":[{\"name\":\"é\",",
            "\"type\":\"vstruct\",\"vmsd_name\":\"v\",\"version\":0,\"fields\":[],\"size\":0}],",
            "\"subsections\":[]}] } \n"
        );
        let d = Description::from_json_bytes(json.as_bytes()).unwrap();
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(d.to_json(), v);
        let dev = &d.devices[0];
        assert_eq!(dev.name, "a\"b\\c/\u{8}\u{c}\n\r\té😀");
        assert_eq!(dev.instance_id, 7);
        assert!(matches!(dev.body.fields[0].kind, FieldKind::Inline(_)));
        assert_eq!(dev.body.subsections, Some(vec![]));
    }

    /// An `index` counts the same-name elements before it: 7.2 numbers every element, 10.0
    /// all but the last, a `nullptr` run with `array_len` counts its length; anything else
    /// (a gap, a restart, a number for another array) is refused with its path.
    #[test]
    fn an_index_counts_the_elements_of_its_name_before_it() {
        let fields = |list: &str| {
            format!(
                r#"{{"page_size": 4096, "devices": [{{"name": "x", "instance_id": 0, "size": 1, "fields": [{list}]}}]}}"#
            )
        };
        let f = |name: &str, repeat: &str| {
            format!(r#"{{"name": "{name}", {repeat}"type": "uint8", "size": 1}}"#)
        };
        let ok = [
            [
                f("a", r#""index": 0, "#),
                f("a", r#""index": 1, "#),
                f("b", ""),
            ]
            .join(", "),
            [
                f("a", r#""index": 0, "#),
                f("a", ""),
                f("b", r#""index": 0, "#),
                f("b", ""),
            ]
            .join(", "),
            [
                f("a", r#""index": 0, "#),
                f("a", r#""array_len": 2, "#),
                f("a", r#""index": 3, "#),
                f("a", ""),
            ]
            .join(", "),
        ];
        for json in ok {
            Description::from_json_bytes(fields(&json).as_bytes())
                .unwrap_or_else(|e| panic!("{json}: {e}"));
        }
        let bad = [
            (
                f("a", r#""index": 1, "#),
                "fields[0].index",
                "element 1, but 0",
            ),
            (
                [f("a", r#""index": 0, "#), f("a", r#""index": 2, "#)].join(", "),
                "fields[1].index",
                "element 2, but 1",
            ),
            (
                [
                    f("a", r#""index": 0, "#),
                    f("b", ""),
                    f("a", r#""index": 1, "#),
                ]
                .join(", "),
                "fields[2].index",
                "element 1, but 0",
            ),
        ];
        for (json, path, message) in bad {
            let e = Description::from_json_bytes(fields(&json).as_bytes()).unwrap_err();
            assert_eq!(e.path, format!("devices[0].{path}"), "{json}: {e}");
            assert!(e.message.contains(message), "{json}: {e}");
        }
    }

    #[test]
    fn rejects_malformed_descriptions_with_a_path() {
        let dev = r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "size": 1, "fields": [FIELD]}]}"#;
        let field = |f: &str| dev.replace("FIELD", f);
        let cases = [
            (r#"{"page_size": 4096}"#.to_string(), "", "missing \"devices\""),
            (
                r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 0, "fields": []}]}"#
                    .into(),
                "devices[0]",
                "neither",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": -1}"#),
                "devices[0].fields[0].size",
                "unsigned",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": 1.0}"#),
                "devices[0].fields[0].size",
                "unsigned",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": 18446744073709551616}"#),
                "devices[0].fields[0].size",
                "unsigned",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": "1"}"#),
                "devices[0].fields[0].size",
                "unsigned",
            ),
            (
                field(r#"{"name": 1, "type": "uint8", "size": 1}"#),
                "devices[0].fields[0].name",
                "expected a string",
            ),
            (
                field(r#"{"name": "a", "type": "struct", "size": 1}"#),
                "devices[0].fields[0]",
                "without",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": 1, "fields": []}"#),
                "devices[0].fields[0]",
                "unexpected key \"fields\"",
            ),
            (
                field(r#"{"name": "a", "type": "s", "struct": {"vmsd_name": "s", "version": 1}, "size": 1}"#),
                "devices[0].fields[0].struct",
                "missing \"fields\"",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "array_len": 2, "index": 0, "size": 1}"#),
                "devices[0].fields[0]",
                "both",
            ),
            (field("7"), "devices[0].fields[0]", "expected an object"),
            (
                r#"{"page_size": 4096, "devices": [], "extra": 1}"#.into(),
                "",
                "unexpected key",
            ),
            (
                r#"{"page_size": 4096, "devices": {}}"#.into(),
                "devices",
                "expected an array",
            ),
            (
                r#"{"page_size": 4096, "devices": [{"name": "x", "instance_id": 4294967296, "size": 1, "fields": []}]}"#.into(),
                "devices[0].instance_id",
                "32-bit",
            ),
            (r#"[]"#.into(), "", "expected an object"),
            // Malformed JSON: the byte offset in the text and the item it is in.
            (
                r#"{"page_size": 4096 "devices": []}"#.into(),
                "",
                "invalid JSON at byte 19 of the trailer: expected ',' or '}', found '\"'",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": 01}"#),
                "devices[0].fields[0]",
                "expected ',' or '}', found '1'",
            ),
            (
                field("{\"name\": \"a\u{1}\", \"type\": \"uint8\", \"size\": 1}"),
                "devices[0].fields[0]",
                "expected a string character",
            ),
            (
                field(r#"{"name": "\ud800", "type": "uint8", "size": 1}"#),
                "devices[0].fields[0]",
                "low surrogate",
            ),
            (
                field(r#"{"name": "\udc00", "type": "uint8", "size": 1}"#),
                "devices[0].fields[0]",
                "high surrogate",
            ),
            (
                field(r#"{"name": "\x", "type": "uint8", "size": 1}"#),
                "devices[0].fields[0]",
                "escape",
            ),
            (
                field(r#"{"name": "a", "type": "uint8", "size": 1}"#) + " x",
                "",
                "expected the end of the text",
            ),
            (
                r#"{"page_size": 4096, "devices": [}"#.into(),
                "devices[0]",
                "expected an object, found '}'",
            ),
            (r#"{"page_size": 4096, "#.into(), "", "found the end of the text"),
        ];
        for (json, path, msg) in cases {
            let e = Description::from_json_bytes(json.as_bytes()).unwrap_err();
            assert_eq!(e.path, path, "{json}: {e}");
            assert!(e.message.contains(msg), "{json}: {e}");
            // What this reader calls malformed JSON, serde_json refuses too.
            if e.message.contains("invalid JSON") {
                assert!(serde_json::from_str::<Value>(&json).is_err(), "{json}");
            }
        }
        assert!(Description::from_json_bytes(b"{not json").is_err());
        assert!(Description::from_json_bytes(b"").is_err());
        let mut bad_utf8 = field(r#"{"name": "aX", "type": "uint8", "size": 1}"#).into_bytes();
        let x = bad_utf8.iter().position(|&b| b == b'X').unwrap();
        bad_utf8[x] = 0xff;
        let e = Description::from_json_bytes(&bad_utf8).unwrap_err();
        assert!(
            e.message
                .contains(&format!("at byte {x} of the trailer: expected UTF-8")),
            "{e}"
        );
        let huge = vec![b' '; MAX_DESCRIPTION_LEN + 1];
        let e = Description::from_json_bytes(&huge).unwrap_err();
        assert!(e.message.contains("expected at most"), "{e}");
        let deep = "[".repeat(100_000);
        assert!(Description::from_json_bytes(deep.as_bytes()).is_err());
    }

    /// Differential check against serde_json on mutations of real QEMU trailers (7.2's, and
    /// 10.0's with its configuration object, capability and index-less last elements):
    /// malformed JSON is refused by both, and what both accept is the same value.
    #[test]
    fn agrees_with_serde_json_on_mutated_trailers() {
        for name in ["pc-7.2-bios", "q10-pc-i440fx-10.0-ignore-shared"] {
            agrees_with_serde_json_on_mutations_of(name);
        }
    }

    fn agrees_with_serde_json_on_mutations_of(name: &str) {
        let path = format!(
            "{}/../host-tests/fixtures/{name}.vmstate",
            env!("CARGO_MANIFEST_DIR")
        );
        let stream = std::fs::read(path).unwrap();
        let at = vmstate::wire::Trailer::locate(&stream).unwrap() + 5;
        let trailer = &stream[at..];
        let d = Description::from_json_bytes(trailer).unwrap();
        let v: Value = serde_json::from_slice(trailer).unwrap();
        assert_eq!(d.to_json(), v);
        const BYTES: &[u8] = b"\"{}[],: \\/0123456789-+.eEtfnulrsu\x01\x7f\xc3\xff";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut both_ok, mut both_refused) = (0, 0);
        for _ in 0..1500 {
            let mut t = trailer.to_vec();
            let i = next(t.len());
            let b = BYTES[next(BYTES.len())];
            match next(3) {
                0 => t[i] = b,
                1 => t.insert(i, b),
                _ => {
                    t.remove(i);
                }
            }
            let theirs = serde_json::from_slice::<Value>(&t);
            match (Description::from_json_bytes(&t), theirs) {
                (Ok(d), Ok(v)) => {
                    assert_eq!(d.to_json(), v, "{}", String::from_utf8_lossy(&t));
                    both_ok += 1;
                }
                (Err(e), Ok(_)) => assert!(!e.message.contains("invalid JSON"), "{e}"),
                (Ok(_), Err(e)) => panic!("accepted what serde_json refuses: {e}"),
                (Err(_), Err(_)) => both_refused += 1,
            }
        }
        assert!(
            both_ok > 100 && both_refused > 500,
            "{both_ok} {both_refused}"
        );
    }

    /// QEMU's spelling takes the literal paths; any other spelling of the same JSON takes
    /// the general reader, and both give the same tree.
    #[test]
    fn other_spellings_of_a_real_trailer_give_the_same_tree() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../host-tests/fixtures/pc-7.2-bios.vmstate"
        );
        let stream = std::fs::read(path).unwrap();
        let at = vmstate::wire::Trailer::locate(&stream).unwrap() + 5;
        let trailer = std::str::from_utf8(&stream[at..]).unwrap();
        let qemu = Description::from_json_bytes(trailer.as_bytes()).unwrap();
        for other in [
            trailer.replace("\": ", "\":"),
            trailer.replace(", \"", ",\n \""),
            trailer.replace("\"name\"", "\"n\\u0061me\""),
        ] {
            assert_ne!(other, trailer);
            assert_eq!(
                Description::from_json_bytes(other.as_bytes()).unwrap(),
                qemu
            );
        }
    }

    /// The word-at-a-time scan stops where a byte loop stops, for a stop byte at every
    /// position among bytes on both sides of each threshold.
    #[test]
    fn string_run_stops_at_the_first_quote_backslash_or_control_byte() {
        let plain = [
            b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0xc3, 0xff, b'0', b'~',
        ];
        let stops = [b'"', b'\\', 0x00, 0x1f, 0x0a];
        let slow = |b: &[u8]| {
            b.iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(b.len())
        };
        for len in 0..20 {
            for (k, &p) in plain.iter().enumerate() {
                let mut bytes: Vec<u8> = (0..len).map(|i| plain[(i + k) % plain.len()]).collect();
                assert_eq!(string_run(&bytes), len);
                for at in 0..len {
                    for &stop in &stops {
                        bytes[at] = stop;
                        // A second stop later, which a borrow must not hide the first behind.
                        if at + 1 < len {
                            bytes[at + 1] = stops[(at + k) % stops.len()];
                        }
                        assert_eq!(string_run(&bytes), slow(&bytes), "{bytes:?}");
                        assert_eq!(string_run(&bytes), at);
                        bytes[at] = p;
                    }
                }
            }
        }
    }

    /// Structs nested deeper than the JSON nesting limit are an error, not a stack overflow.
    #[test]
    fn nesting_is_capped() {
        let nest = |levels: usize| {
            let open = r#"{"name": "s", "type": "struct", "struct": {"vmsd_name": "s", "version": 1, "fields": ["#;
            let close = r#"]}, "size": 0}"#;
            format!(
                r#"{{"page_size": 4096, "devices": [{{"name": "x", "instance_id": 0, "size": 0, "fields": [{}{}]}}]}}"#,
                open.repeat(levels),
                close.repeat(levels)
            )
        };
        // 4 levels for root, devices, the device and its fields; 3 per struct.
        let qemu_json = nest(41);
        let deepest = Description::from_json_bytes(qemu_json.as_bytes()).unwrap();
        // QEMU's spelling up to each nested object and another one after it: the literal
        // reader hands over to the general one where the spelling changes instead of
        // reading again (which would take 2^41 reads here), and the tree is the same.
        for (qemu, other) in [
            (r#"]}, "size": 0}"#, r#"]},"size": 0}"#),
            (r#"]}, "size": 0}"#, r#"] }, "size": 0}"#),
            (r#"]}, "size": 0}"#, r#"]}, "size": 0 }"#),
        ] {
            let json = qemu_json.replace(qemu, other);
            assert_ne!(json, qemu_json);
            assert_eq!(
                Description::from_json_bytes(json.as_bytes()).unwrap(),
                deepest
            );
        }
        let e = Description::from_json_bytes(nest(42).as_bytes()).unwrap_err();
        assert!(e.message.contains("nested deeper than 128"), "{e}");
        assert!(serde_json::from_str::<Value>(&nest(42)).is_err());
        assert!(Description::from_json_bytes(nest(100_000).as_bytes()).is_err());
    }
}
