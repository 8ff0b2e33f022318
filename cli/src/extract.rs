//! `vmstate extract`: a stream's parts as files, like analyze-migration.py `-x`.
//!
//! ```text
//! DIR/desc.json                     the VMDESCRIPTION (as `inspect --desc`)
//! DIR/state.json                    the device state (as `inspect --json`)
//! DIR/ram/<block>.bin               each RAM block as a memory image (unsent pages are zero)
//! DIR/sections/<id>-<idstr>.<instance>.bin   each device section body
//! DIR/index.json                    every RAM block and section: its name and its file
//! ```
//!
//! Names from the stream become file names by [`safe_name`]: every byte outside
//! `[A-Za-z0-9._-]`, `%` itself and a leading `.` are written `%XX` (two upper-case hex digits),
//! so no name can leave its directory or hide, two names never share a file
//! (`/rom@etc/acpi/rsdp` is `%2From%40etc%2Facpi%2Frsdp`, `_rom@etc_acpi_rsdp` is
//! `_rom%40etc_acpi_rsdp`) and [`name_from_file`] gives the exact name back. A name whose
//! encoding is longer than [`MAX_ENCODED`] bytes (a file name has at most 255) is cut there and
//! ends in `~` and 16 hex digits of a hash of the whole name; `~` never occurs otherwise, and
//! `index.json` holds the full name of every file.
//!
//! Every file is written through [`crate::output`]: a temporary file created exclusively and
//! renamed into place, so a symlink or hard link planted in the output directory (at a file
//! name, at a temporary name, or as `ram`/`sections`) is never followed or written through. Pages are written straight from
//! the input buffer with positioned writes; nothing is copied per page.

use crate::model::{Item, Stream};
use crate::output::{Links, OutputError, OutputFile};
use crate::pretty_json;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use vmstate::ram::{PAGE_SIZE, RamRecord};

/// The longest encoded name kept whole (longer ones are cut and hashed, see the module docs).
pub const MAX_ENCODED: usize = 200;

/// A name from the stream as a file name component (see the module docs): unique, reversible
/// with [`name_from_file`] unless it ends in `~` and a hash.
pub fn safe_name(name: &[u8]) -> String {
    let mut s = String::with_capacity(name.len());
    for (i, &b) in name.iter().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.len() > MAX_ENCODED {
        let mut cut = MAX_ENCODED;
        // Never cut inside a %XX.
        while s.as_bytes()[cut - 1] == b'%' || s.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(&format!("~{:016x}", fnv1a(name)));
    }
    s
}

/// The name a [`safe_name`] component stands for; `None` for a cut (`~`-hashed) or malformed
/// component.
pub fn name_from_file(component: &str) -> Option<Vec<u8>> {
    let b = component.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'~' => return None,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// FNV-1a, 64 bits: a hash that is the same on every run and machine.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Writes the parts of `stream` under `dir` (created if needed). Returns the files written.
pub fn extract(stream: &Stream<'_>, dir: &Path) -> Result<Vec<PathBuf>, OutputError> {
    extract_observed(stream, dir, Path::new(""), &mut |_| {})
}

/// [`extract`] of the stream read from `input` (never overwritten), calling `reached` with the
/// input offset of each record before it is written out (for a progress line, or to release
/// the input behind it).
pub fn extract_observed(
    stream: &Stream<'_>,
    dir: &Path,
    input: &Path,
    reached: &mut dyn FnMut(usize),
) -> Result<Vec<PathBuf>, OutputError> {
    let mut out = Extraction {
        dir,
        inputs: if input.as_os_str().is_empty() {
            vec![]
        } else {
            vec![input]
        },
        written: Vec::new(),
        index_ram: Vec::new(),
        index_sections: Vec::new(),
    };
    fs::create_dir_all(dir).map_err(|e| out.error(dir, "cannot create the directory", e))?;
    if let Some(d) = &stream.description {
        out.write(
            &dir.join("desc.json"),
            (pretty_json(&d.to_json()) + "\n").as_bytes(),
        )?;
    }
    if let Some(v) = stream.analyze_state() {
        out.write(&dir.join("state.json"), (pretty_json(&v) + "\n").as_bytes())?;
    }
    let mut images: HashMap<Vec<u8>, (PathBuf, OutputFile)> = HashMap::new();
    let mut order = Vec::new();
    let mut names = HashSet::new();
    for e in &stream.entries {
        reached(e.offset);
        match &e.item {
            Item::Ram { records, .. } => {
                for r in records {
                    match r {
                        RamRecord::MemSize(list) => {
                            let ram = out.subdir("ram")?;
                            for b in list.iter() {
                                let name = safe_name(b.name);
                                if !names.insert(name.clone()) {
                                    return Err(out.refused(
                                        &ram,
                                        format!("two RAM blocks map to the file name {name}"),
                                    ));
                                }
                                let p = ram.join(format!("{name}.bin"));
                                let mut f = out.create(&p)?;
                                f.file()
                                    .set_len(b.length)
                                    .map_err(|e| out.error(&p, "cannot size the image", e))?;
                                out.index_ram.push(json!({
                                    "name": String::from_utf8_lossy(b.name),
                                    "name_escaped": escaped(b.name),
                                    "file": format!("ram/{name}.bin"),
                                    "length": b.length,
                                }));
                                order.push(b.name.to_vec());
                                images.insert(b.name.to_vec(), (p, f));
                            }
                        }
                        RamRecord::Page {
                            block,
                            offset,
                            data,
                            ..
                        } => write_at(&mut images, block, offset, data)
                            .map_err(|(p, e)| out.error(&p, "write failed", e))?,
                        RamRecord::Zero {
                            block,
                            offset,
                            fill,
                            ..
                        } if fill != 0 => write_at(&mut images, block, offset, &[fill; PAGE_SIZE])
                            .map_err(|(p, e)| out.error(&p, "write failed", e))?,
                        _ => {}
                    }
                }
            }
            Item::Device { section, body, .. } => {
                out.section(section, &body.to_bytes())?;
            }
            Item::Opaque { section, body } => {
                out.section(section, body)?;
            }
            Item::Command(_) | Item::Eof => {}
        }
    }
    // Blocks in stream order, each image complete before it takes its name.
    for name in order {
        if let Some((p, f)) = images.remove(&name) {
            f.commit()?;
            out.written.push(p);
        }
    }
    let index = json!({ "ram": out.index_ram, "sections": out.index_sections });
    out.write(
        &dir.join("index.json"),
        (pretty_json(&index) + "\n").as_bytes(),
    )?;
    Ok(out.written)
}

/// A name as an escaped JSON-safe string: `safe_name` without the cut, always reversible.
fn escaped(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Extraction<'a> {
    dir: &'a Path,
    inputs: Vec<&'a Path>,
    written: Vec<PathBuf>,
    index_ram: Vec<Value>,
    index_sections: Vec<Value>,
}

impl Extraction<'_> {
    fn error(&self, p: &Path, reason: &str, error: io::Error) -> OutputError {
        OutputError::Io {
            output: p.to_path_buf(),
            reason: reason.into(),
            error,
        }
    }

    fn refused(&self, p: &Path, reason: String) -> OutputError {
        OutputError::Refused {
            output: p.to_path_buf(),
            reason,
        }
    }

    fn create(&self, p: &Path) -> Result<OutputFile, OutputError> {
        OutputFile::create(p, &self.inputs, Links::Replace)
    }

    fn write(&mut self, p: &Path, bytes: &[u8]) -> Result<(), OutputError> {
        let mut f = self.create(p)?;
        f.file()
            .write_all(bytes)
            .map_err(|e| self.error(p, "write failed", e))?;
        f.commit()?;
        self.written.push(p.to_path_buf());
        Ok(())
    }

    /// `DIR/name`, created if needed; a symlink or a non-directory there is refused.
    fn subdir(&self, name: &str) -> Result<PathBuf, OutputError> {
        let d = self.dir.join(name);
        match fs::create_dir(&d) {
            Ok(()) => return Ok(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.error(&d, "cannot create the directory", e)),
        }
        match fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_dir() => Ok(d),
            Ok(_) => {
                Err(self.refused(&d, "exists and is not a directory (or is a symlink)".into()))
            }
            Err(e) => Err(self.error(&d, "cannot examine", e)),
        }
    }

    fn section(
        &mut self,
        section: &crate::model::SectionMeta<'_>,
        body: &[u8],
    ) -> Result<(), OutputError> {
        let file = format!(
            "{}-{}.{}.bin",
            section.section_id,
            safe_name(section.idstr),
            section.instance_id
        );
        let p = self.subdir("sections")?.join(&file);
        self.write(&p, body)?;
        self.index_sections.push(json!({
            "section_id": section.section_id,
            "name": String::from_utf8_lossy(section.idstr),
            "name_escaped": escaped(section.idstr),
            "instance_id": section.instance_id,
            "version_id": section.version_id,
            "file": format!("sections/{file}"),
            "length": body.len(),
        }));
        Ok(())
    }
}

fn write_at(
    images: &mut HashMap<Vec<u8>, (PathBuf, OutputFile)>,
    block: &[u8],
    offset: u64,
    data: &[u8],
) -> Result<(), (PathBuf, io::Error)> {
    // The RAM parser only accepts pages of listed blocks, so the image exists.
    let Some((p, f)) = images.get_mut(block) else {
        return Err((
            PathBuf::from(vmstate::Escaped(block).to_string()),
            io::Error::new(io::ErrorKind::InvalidData, "page for an unlisted block"),
        ));
    };
    let f = f.file();
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(data))
        .map_err(|e| (p.clone(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_directory_and_come_back() {
        assert_eq!(
            safe_name(b"/rom@etc/acpi/tables"),
            "%2From%40etc%2Facpi%2Ftables"
        );
        assert_eq!(safe_name(b"_rom@etc_acpi_tables"), "_rom%40etc_acpi_tables");
        assert_eq!(safe_name(b"0000:00:01.1/ide"), "0000%3A00%3A01.1%2Fide");
        assert_eq!(safe_name(b".."), "%2E.");
        assert_eq!(safe_name(b"."), "%2E");
        assert_eq!(safe_name(b"%41"), "%2541");
        assert_eq!(safe_name(b"pc.ram"), "pc.ram");
        for name in [
            &b"/rom@etc/acpi/rsdp"[..],
            b"..",
            b"%41",
            b"\xff\x00a/b",
            b"",
        ] {
            assert_eq!(name_from_file(&safe_name(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn long_names_are_cut_and_stay_unique() {
        let a = [b'/'; 255];
        let mut b = a;
        b[254] = b'x';
        let (ea, eb) = (safe_name(&a), safe_name(&b));
        assert_ne!(ea, eb);
        assert!(ea.len() <= MAX_ENCODED + 17 && eb.len() <= MAX_ENCODED + 17);
        assert!(ea.contains('~') && name_from_file(&ea).is_none());
        // The cut never splits a %XX.
        assert!(ea.split('~').next().unwrap().ends_with("%2F"));
    }
}
