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

use crate::model::{Entry, Item, Stream, Visit};
use crate::output::{Links, OutputError, OutputFile};
use crate::pretty_json;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use vmstate::ram::{PAGE_SIZE, RamRecord};
use vmstate::wire::section::SectionKind;

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

/// `extract` as the visitor of the walk ([`crate::model::Stream::parse_visit`]): each RAM
/// block's image is created at its MEM_SIZE record and each page is written into it as the
/// walk reads the page, so no RAM record is read twice; [`Extract::finish`] then writes the
/// rest from the decoded stream. Nothing is in place before `finish` succeeds: the images are
/// temporary files until then, and an error writing them is reported where `finish` reaches
/// their section (after `desc.json`, `state.json` and the sections before it), so an invalid
/// input is reported first; [`Extract::abandon`] removes what a refused walk left.
pub struct Extract<'p, 'a> {
    out: Extraction<'p>,
    images: HashMap<&'a [u8], (PathBuf, OutputFile)>,
    order: Vec<&'a [u8]>,
    names: HashSet<String>,
    /// Entries the walk has handed over: the index of the section whose records come next.
    entries: usize,
    /// The first error writing an image, and the index of its section's entry.
    failed: Option<(usize, OutputError)>,
    /// Directories this extraction created, outermost first.
    created: Vec<PathBuf>,
}

impl<'p, 'a> Extract<'p, 'a> {
    /// An extraction into `dir` (created when first needed) of the stream read from `input`
    /// (never overwritten; empty: none).
    pub fn new(dir: &'p Path, input: &'p Path) -> Self {
        Extract {
            out: Extraction {
                dir,
                inputs: if input.as_os_str().is_empty() {
                    vec![]
                } else {
                    vec![input]
                },
                written: Vec::new(),
                index_ram: Vec::new(),
                index_sections: Vec::new(),
            },
            images: HashMap::new(),
            order: Vec::new(),
            names: HashSet::new(),
            entries: 0,
            failed: None,
            created: Vec::new(),
        }
    }

    /// Creates the output directory and its missing parents (remembered for
    /// [`Extract::abandon`]).
    fn create_dir(&mut self) -> Result<(), OutputError> {
        let dir = self.out.dir;
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(dir)
            .map_err(|e| self.out.error(dir, "cannot create the directory", e))?;
        missing.reverse();
        self.created.extend(missing);
        Ok(())
    }

    /// Takes one RAM record: a block list creates the images, a page is written into its
    /// image.
    fn record(&mut self, rec: &RamRecord<'a>) -> Result<(), OutputError> {
        match *rec {
            RamRecord::MemSize(list) => {
                self.create_dir()?;
                let (ram, new) = self.out.subdir("ram")?;
                if new {
                    self.created.push(ram.clone());
                }
                for (b, layout) in list.entries() {
                    let name = safe_name(b.name);
                    if !self.names.insert(name.clone()) {
                        return Err(self
                            .out
                            .refused(&ram, format!("two RAM blocks map to the file name {name}")));
                    }
                    let p = ram.join(format!("{name}.bin"));
                    let mut f = self.out.create(&p)?;
                    f.file()
                        .set_len(b.length)
                        .map_err(|e| self.out.error(&p, "cannot size the image", e))?;
                    let mut entry = json!({
                        "name": String::from_utf8_lossy(b.name),
                        "name_escaped": escaped(b.name),
                        "file": format!("ram/{name}.bin"),
                        "length": b.length,
                    });
                    if let Some(l) = layout {
                        let present = list.bitmap(&l).map_or(0, |bm| l.present_pages(bm));
                        entry["mapped_ram"] = json!({
                            "header_offset": l.header_offset,
                            "version": l.version,
                            "page_size": l.page_size,
                            "bitmap_offset": l.bitmap_offset,
                            "bitmap_len": l.bitmap_len(),
                            "pages_offset": l.pages_offset,
                            "pages": l.pages(),
                            "present": present,
                        });
                    }
                    self.out.index_ram.push(entry);
                    self.order.push(b.name);
                    self.images.insert(b.name, (p, f));
                    if let Some(l) = layout {
                        self.mapped_pages(&list, b.name, &l)?;
                    }
                }
                Ok(())
            }
            RamRecord::Page {
                block,
                offset,
                data,
                ..
            } => self.write_at(block, offset, data),
            RamRecord::Zero {
                block,
                offset,
                fill,
                ..
            } if fill != 0 => self.write_at(block, offset, &[fill; PAGE_SIZE]),
            _ => Ok(()),
        }
    }

    /// Writes the pages a mapped-ram block's bitmap marks present, a run of consecutive pages
    /// at a time (they are consecutive in the file too); absent pages stay holes of zeros.
    fn mapped_pages(
        &mut self,
        list: &vmstate::ram::BlockList<'a>,
        block: &'a [u8],
        l: &vmstate::mapped_ram::BlockLayout,
    ) -> Result<(), OutputError> {
        let Some(bitmap) = list.bitmap(l) else {
            return Ok(());
        };
        let present = |i: u64| l.is_present(bitmap, i) == Some(true);
        let mut i = 0;
        while i < l.pages() {
            if !present(i) {
                i += 1;
                continue;
            }
            let run = (i..l.pages()).take_while(|&j| present(j)).count() as u64;
            // The run lies inside the list's bytes: the reader went past the pages region.
            if let Some(data) = list.mapped_pages(l, i, run) {
                self.write_at(block, i * PAGE_SIZE as u64, data)?;
            }
            i += run;
        }
        Ok(())
    }

    fn write_at(&mut self, block: &[u8], offset: u64, data: &[u8]) -> Result<(), OutputError> {
        // The RAM parser only accepts pages of listed blocks, so the image exists.
        let Some((p, f)) = self.images.get_mut(block) else {
            let p = PathBuf::from(vmstate::Escaped(block).to_string());
            let e = io::Error::new(io::ErrorKind::InvalidData, "page for an unlisted block");
            return Err(self.out.error(&p, "write failed", e));
        };
        let f = f.file();
        // A mapped-ram run of pages is written from the mapped input as it is: released
        // behind each piece.
        f.seek(SeekFrom::Start(offset))
            .and_then(|_| crate::input::write_releasing(f, data))
            .map_err(|e| OutputError::Io {
                output: p.clone(),
                reason: "write failed".into(),
                error: e,
            })
    }

    /// Writes the parts of the walked `stream` (its entries kept) and puts every file in
    /// place. Returns the files written.
    pub fn finish(mut self, stream: &Stream<'_>) -> Result<Vec<PathBuf>, OutputError> {
        self.create_dir()?;
        let out = &mut self.out;
        if let Some(d) = &stream.description {
            out.write(
                &out.dir.join("desc.json"),
                (pretty_json(&d.to_json()) + "\n").as_bytes(),
            )?;
        }
        if let Some(v) = stream.analyze_state() {
            out.write(
                &out.dir.join("state.json"),
                (pretty_json(&v) + "\n").as_bytes(),
            )?;
        }
        for (i, e) in stream.entries.iter().enumerate() {
            if let Some((at, _)) = &self.failed
                && *at == i
                && let Some((_, error)) = self.failed.take()
            {
                return Err(error);
            }
            match &e.item {
                Item::Device { section, body, .. } => out.section(section, &body.to_bytes())?,
                Item::Opaque { section, body } => out.section(section, body)?,
                Item::Ram { .. } | Item::Command(_) | Item::Eof => {}
            }
        }
        // Blocks in stream order, each image complete before it takes its name.
        for name in self.order {
            if let Some((p, f)) = self.images.remove(name) {
                f.commit()?;
                out.written.push(p);
            }
        }
        let index = json!({ "ram": out.index_ram, "sections": out.index_sections });
        out.write(
            &out.dir.join("index.json"),
            (pretty_json(&index) + "\n").as_bytes(),
        )?;
        Ok(self.out.written)
    }

    /// Removes what a walk that was refused left: the temporary images and the (empty)
    /// directories this extraction created.
    pub fn abandon(self) {
        drop(self.images);
        for d in self.created.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

impl<'a> Visit<'a> for Extract<'_, 'a> {
    fn ram(&mut self, _: SectionKind, record: &RamRecord<'a>) {
        if self.failed.is_none()
            && let Err(e) = self.record(record)
        {
            self.failed = Some((self.entries, e));
        }
    }

    fn entry(&mut self, _: &Stream<'a>, entry: Entry<'a>) -> Option<Entry<'a>> {
        self.entries += 1;
        Some(entry)
    }
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

    /// `DIR/name`, created if needed (then `true`); a symlink or a non-directory there is
    /// refused.
    fn subdir(&self, name: &str) -> Result<(PathBuf, bool), OutputError> {
        let d = self.dir.join(name);
        match fs::create_dir(&d) {
            Ok(()) => return Ok((d, true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.error(&d, "cannot create the directory", e)),
        }
        match fs::symlink_metadata(&d) {
            Ok(m) if m.file_type().is_dir() => Ok((d, false)),
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
        let p = self.subdir("sections")?.0.join(&file);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `extract` is one walk, as `vmstate extract` runs it (the visitor, then `finish`): on
    /// real streams each FULL body is decoded once and each RAM record read once, none again
    /// from the kept entries; the images hold every page.
    #[test]
    fn extract_decodes_each_section_once_and_reads_each_ram_record_once() {
        use crate::model::{ParseOptions, find_description, reads};
        let dir = std::env::temp_dir().join(format!("vmstate-extract-once-{}", std::process::id()));
        for name in ["pc-7.2-bios", "q72-pc-i440fx-7.2", "q10-pc-q35-10.0"] {
            let bytes = std::fs::read(format!(
                "{}/../host-tests/fixtures/{name}.vmstate",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            reads::take();
            let out = dir.join(name);
            let mut extract = Extract::new(&out, Path::new(""));
            let description = find_description(&bytes).unwrap().map(|(_, d)| d);
            let options = ParseOptions::default();
            let stream =
                Stream::parse_visit(&bytes, description, options, &mut |_| {}, &mut extract)
                    .unwrap();
            let files = extract.finish(&stream).unwrap();
            let (walked, again, decoded) = reads::take();
            // What the stream holds, counted on the kept entries.
            let mut records = 0;
            let mut pages = 0;
            let mut images = HashMap::new();
            for e in &stream.entries {
                if let Item::Ram { records: r, .. } = &e.item {
                    for rec in r {
                        records += 1;
                        if let RamRecord::Page {
                            block,
                            offset,
                            data,
                            ..
                        } = rec
                        {
                            let image = images.entry(block).or_insert_with(|| {
                                let p = out.join(format!("ram/{}.bin", safe_name(block)));
                                std::fs::read(p).unwrap()
                            });
                            let at = offset as usize;
                            assert!(image[at..at + data.len()] == *data, "{name}");
                            pages += 1;
                        }
                    }
                }
            }
            assert_eq!(
                (walked, again, decoded),
                (records, 0, stream.devices().count() as u64),
                "{name}: (RAM records walked, read again, bodies decoded)"
            );
            assert!(
                pages > 40 && files.len() > 30,
                "{name}: {pages} {}",
                files.len()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A stream refused after its block list was read leaves nothing behind: no image, no
    /// directory (the images and directories were made while it was walked).
    #[test]
    fn a_refused_stream_leaves_no_directory() {
        use crate::model::{ParseOptions, find_description};
        let bytes = std::fs::read(format!(
            "{}/../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let cut = &bytes[..300_000];
        let dir = std::env::temp_dir().join(format!("vmstate-extract-cut-{}", std::process::id()));
        let out = dir.join("a/b");
        let mut extract = Extract::new(&out, Path::new(""));
        let description = find_description(cut).unwrap().map(|(_, d)| d);
        let walked = Stream::parse_visit(
            cut,
            description,
            ParseOptions::default(),
            &mut |_| {},
            &mut extract,
        );
        assert!(walked.is_err());
        assert!(out.join("ram").is_dir(), "the images were begun");
        extract.abandon();
        assert!(!dir.exists());
    }

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
