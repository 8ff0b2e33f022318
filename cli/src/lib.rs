//! Host-side tooling for vmstate streams: the library behind the `vmstate` binary.
//!
//! * [`analyze`]: the analyze-migration.py `-d state` text, written without a value tree.
//! * [`desc`]: the VMDESCRIPTION trailer as a typed tree.
//! * [`generic`]: a description-driven decoder/encoder for any VMState section body, the
//!   analyze-migration.py rendering, and field edits.
//! * [`model`]: a whole stream decoded record by record and written back byte for byte.
//! * [`container`]: libvirt save images and streams at an offset around a stream.
//! * [`input`]: inputs memory-mapped (pipes spooled into an unlinked temporary file), guarded
//!   against a file that changes while it is read, released behind the walk; the progress line.
//! * [`inspect`]: the human-readable map.
//! * [`diff`]: field-level comparison of two streams.
//! * [`extract`]: a stream's parts as files.
//! * [`output`]: the one safe writer every output file goes through.
//! * [`exit`]: the exit statuses of the `vmstate` binary.
//! * [`static_check`]: compares `-dump-vmstate` descriptions like QEMU's static checker.
//! * [`proxy`]: the validating migration proxy between two live QEMUs.
//! * [`verify`]: every section decoded and every invariant enforced, all problems listed.
//! * [`v4tools`]: v3 ↔ v4 rewriting, capabilities files and the migratability check.
//!
//! Input is memory-mapped ([`input::Input`]); the decoded stream borrows from it (RAM
//! pages are never copied).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod analyze;
pub mod container;
pub mod desc;
pub mod dest;
pub mod diff;
pub mod exit;
pub mod extract;
pub mod generic;
pub mod input;
pub mod inspect;
pub mod model;
pub mod output;
pub mod proxy;
pub mod ram;
pub mod schema;
pub mod static_check;
pub mod v4tools;
pub mod verify;

pub use model::Stream;

/// Formats JSON exactly as analyze-migration.py prints it (`json.dumps(indent=4,
/// separators=(',', ': '))`), without the trailing newline. Like Python's default
/// `ensure_ascii`, every character outside printable ASCII is written as a `\uXXXX` escape
/// ([`write_json_string`]), so no name from the input reaches a terminal as a control or
/// bidi character.
pub fn pretty_json(v: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = AsciiPretty(serde_json::ser::PrettyFormatter::with_indent(b"    "));
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `s` as a JSON string the way Python's `json.dumps` does by default: `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f`, and `\uXXXX` (lowercase hex; surrogate pairs above
/// U+FFFF) for every other character outside `' '..='~'`.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_json_fragment(out, s);
    out.push(b'"');
}

fn write_json_fragment(out: &mut Vec<u8>, s: &str) {
    use std::io::Write;
    let mut from = 0;
    for (i, c) in s.char_indices() {
        if (' '..='~').contains(&c) && c != '"' && c != '\\' {
            continue;
        }
        out.extend_from_slice(&s.as_bytes()[from..i]);
        from = i + c.len_utf8();
        let _ = match c {
            '"' => out.write_all(b"\\\""),
            '\\' => out.write_all(b"\\\\"),
            '\n' => out.write_all(b"\\n"),
            '\r' => out.write_all(b"\\r"),
            '\t' => out.write_all(b"\\t"),
            '\u{8}' => out.write_all(b"\\b"),
            '\u{c}' => out.write_all(b"\\f"),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
                Ok(())
            }
        };
    }
    out.extend_from_slice(&s.as_bytes()[from..]);
}

/// serde_json's pretty printer with [`write_json_string`]'s escaping.
struct AsciiPretty<'a>(serde_json::ser::PrettyFormatter<'a>);

impl serde_json::ser::Formatter for AsciiPretty<'_> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(fragment.len());
        write_json_fragment(&mut buf, fragment);
        writer.write_all(&buf)
    }

    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    /// Python's `json.dumps` (ensure_ascii) output for the same strings.
    #[test]
    fn json_strings_are_escaped_like_python() {
        let show = |s: &str| {
            let mut out = Vec::new();
            super::write_json_string(&mut out, s);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(show("pc.ram"), r#""pc.ram""#);
        assert_eq!(show("a\"b\\c\n\r\t\u{8}\u{c}"), r#""a\"b\\c\n\r\t\b\f""#);
        assert_eq!(show("\u{1b}[2J\u{7f}"), r#""\u001b[2J\u007f""#);
        assert_eq!(
            show("\u{9b}\u{202e}\u{e9}\u{1f600}"),
            r#""\u009b\u202e\u00e9\ud83d\ude00""#
        );
        let v = serde_json::json!({"k\u{202e}": ["\u{1b}", 1]});
        assert_eq!(
            super::pretty_json(&v),
            "{\n    \"k\\u202e\": [\n        \"\\u001b\",\n        1\n    ]\n}"
        );
    }
}
