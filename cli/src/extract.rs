//! `vmstate extract`: a stream's parts as files, like analyze-migration.py `-x`.
//!
//! ```text
//! DIR/desc.json                     the VMDESCRIPTION (as `inspect --desc`)
//! DIR/state.json                    the device state (as `inspect --json`)
//! DIR/ram/<block>.bin               each RAM block as a memory image (unsent pages are zero)
//! DIR/sections/<id>-<idstr>.<instance>.bin   each device section body
//! ```
//!
//! Names from the stream are made safe for the file system: every byte outside
//! `[A-Za-z0-9._@:-]` becomes `_`, so no name can leave its directory. Pages are written
//! straight from the input buffer with positioned writes; nothing is copied per page.

use crate::model::{Item, Stream};
use crate::pretty_json;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use vmstate::ram::{PAGE_SIZE, RamRecord};

/// A name from the stream as a safe file name component.
pub fn safe_name(name: &[u8]) -> String {
    let s: String = name
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'@' | b':' | b'-' => b as char,
            _ => '_',
        })
        .collect();
    // Leading dots would make `.`, `..` or hidden files.
    s.replacen('.', "_", usize::from(s.starts_with('.')))
}

/// Writes the parts of `stream` under `dir` (created if needed). Returns the files written.
pub fn extract(stream: &Stream<'_>, dir: &Path) -> io::Result<Vec<PathBuf>> {
    extract_observed(stream, dir, &mut |_| {})
}

/// [`extract`], calling `reached` with the input offset of each record before it is written
/// out (for a progress line, or to release the input behind it).
pub fn extract_observed(
    stream: &Stream<'_>,
    dir: &Path,
    reached: &mut dyn FnMut(usize),
) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    fs::create_dir_all(dir)?;
    if let Some(d) = &stream.description {
        let p = dir.join("desc.json");
        fs::write(&p, pretty_json(&d.to_json()) + "\n")?;
        written.push(p);
    }
    if let Some(v) = stream.analyze_state() {
        let p = dir.join("state.json");
        fs::write(&p, pretty_json(&v) + "\n")?;
        written.push(p);
    }
    let mut images: HashMap<Vec<u8>, File> = HashMap::new();
    for e in &stream.entries {
        reached(e.offset);
        match &e.item {
            Item::Ram { records, .. } => {
                for r in records {
                    match r {
                        RamRecord::MemSize(list) => {
                            fs::create_dir_all(dir.join("ram"))?;
                            for b in list.iter() {
                                let p = dir.join("ram").join(safe_name(b.name) + ".bin");
                                let f = File::create(&p)?;
                                f.set_len(b.length)?;
                                images.insert(b.name.to_vec(), f);
                                written.push(p);
                            }
                        }
                        RamRecord::Page {
                            block,
                            offset,
                            data,
                            ..
                        } => write_at(&mut images, block, offset, data)?,
                        RamRecord::Zero {
                            block,
                            offset,
                            fill,
                            ..
                        } if fill != 0 => write_at(&mut images, block, offset, &[fill; PAGE_SIZE])?,
                        _ => {}
                    }
                }
            }
            Item::Device { section, body, .. } => {
                let p = sections_dir(dir)?.join(format!(
                    "{}-{}.{}.bin",
                    section.section_id,
                    safe_name(section.idstr),
                    section.instance_id
                ));
                fs::write(&p, body.to_bytes())?;
                written.push(p);
            }
            Item::Opaque { section, body } => {
                let p = sections_dir(dir)?.join(format!(
                    "{}-{}.{}.bin",
                    section.section_id,
                    safe_name(section.idstr),
                    section.instance_id
                ));
                fs::write(&p, body)?;
                written.push(p);
            }
            Item::Command(_) | Item::Eof => {}
        }
    }
    Ok(written)
}

fn sections_dir(dir: &Path) -> io::Result<PathBuf> {
    let d = dir.join("sections");
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn write_at(
    images: &mut HashMap<Vec<u8>, File>,
    block: &[u8],
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    // The RAM parser only accepts pages of listed blocks, so the image exists.
    let f = images.get_mut(block).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("page for unlisted block {}", vmstate::Escaped(block)),
        )
    })?;
    f.seek(SeekFrom::Start(offset))?;
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_their_directory() {
        assert_eq!(safe_name(b"/rom@etc/acpi/tables"), "_rom@etc_acpi_tables");
        assert_eq!(safe_name(b"0000:00:01.1/ide"), "0000:00:01.1_ide");
        assert_eq!(safe_name(b".."), "_.");
        assert_eq!(safe_name(b"."), "_");
        assert_eq!(safe_name(b"pc.ram"), "pc.ram");
    }
}
