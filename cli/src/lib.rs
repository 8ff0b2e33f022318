//! Host-side tooling for vmstate streams: the library behind the `vmstate` binary.
//!
//! * [`analyze`]: the analyze-migration.py `-d state` text, written without a value tree.
//! * [`desc`]: the VMDESCRIPTION trailer as a typed tree.
//! * [`generic`]: a description-driven decoder/encoder for any VMState section body, the
//!   analyze-migration.py rendering, and field edits.
//! * [`model`]: a whole stream decoded record by record and written back byte for byte.
//! * [`input`]: inputs memory-mapped (pipes spooled into an unlinked temporary file), guarded
//!   against a file that changes while it is read, released behind the walk; the progress line.
//! * [`inspect`]: the human-readable map.
//! * [`diff`]: field-level comparison of two streams.
//! * [`extract`]: a stream's parts as files.
//! * [`output`]: the one safe writer every output file goes through.
//! * [`exit`]: the exit statuses of the `vmstate` binary.
//! * [`static_check`]: compares `-dump-vmstate` descriptions like QEMU's static checker.
//! * [`verify`]: every section decoded and every invariant enforced, all problems listed.
//! * [`v4tools`]: v3 ↔ v4 rewriting, capabilities files and the migratability check.
//!
//! Input is memory-mapped ([`input::Input`]); the decoded stream borrows from it (RAM
//! pages are never copied).
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod analyze;
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
pub mod static_check;
pub mod v4tools;
pub mod verify;

pub use model::Stream;

/// Formats JSON exactly as analyze-migration.py prints it (`json.dumps(indent=4,
/// separators=(',', ': '))`), without the trailing newline.
pub fn pretty_json(v: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // Serializing a Value into a Vec cannot fail.
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}
