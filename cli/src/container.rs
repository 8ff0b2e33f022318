//! What can be around a QEMU stream in a file: a libvirt save image's header, domain XML and
//! padding (`virsh save`), or any bytes before a stream written at an offset
//! (`migrate file:PATH,offset=N`).
//!
//! # libvirt save images
//!
//! libvirt's QEMU driver (`src/qemu/qemu_saveimage.h`) writes, in the host's byte order:
//!
//! ```text
//! file offset  size  field
//!  0           16    magic "LibvirtQemudSave" ("LibvirtQemudPart" until the save completed)
//! 16            4    version (2; 1 for old images, which are never compressed)
//! 20            4    data_len: the bytes after this 92-byte header before the QEMU stream
//! 24            4    was_running (1: the domain runs again when restored)
//! 28            4    format: 0 raw, 1 gzip, 2 bzip2, 3 xz, 4 lzop, 5 zstd, 6 sparse
//! 32            4    cookieOffset: where the cookie starts within data (0: no cookie)
//! 36           56    unused (14 words, zero)
//! 92      data_len    the domain XML, NUL-terminated; the cookie (XML), NUL-terminated;
//!                    zero padding (64 KiB at save, so that an edited XML still fits)
//! 92 + data_len      the QEMU stream: as QEMU wrote it (raw; sparse = mapped-ram, whose
//!                    offsets are file offsets), or through `FORMAT -c` (compressed)
//! ```
//!
//! An image whose version is above 2 is read byte-swapped, as libvirt does. [`parse_libvirt`]
//! checks every field against the file and says at which file offset what is wrong.
//!
//! # Streams at an offset
//!
//! QEMU's `file:PATH,offset=N` truncates the file to N bytes and writes the stream from N on,
//! so the bytes before it are whatever the file held. A file that starts neither with the
//! stream magic nor with a libvirt header is searched for the stream header at every
//! [`SCAN_STEP`]-aligned offset in its first [`SCAN_LIMIT`] bytes ([`find_stream`]); any other
//! offset is given with `--offset N`.
//!
//! # Offsets
//!
//! Errors here give file offsets. The commands walk the stream itself, so the offsets they
//! report are stream offsets; [`Container::note`] names the stream's file offset once.

use std::fmt;
use std::io::{self, Write};

/// The magic of a complete libvirt save image.
pub const LIBVIRT_MAGIC: &[u8; 16] = b"LibvirtQemudSave";
/// The magic of an image libvirt had not finished writing.
pub const LIBVIRT_PARTIAL: &[u8; 16] = b"LibvirtQemudPart";
/// The bytes both magics start with: enough to tell a libvirt image from anything else.
pub const LIBVIRT_PREFIX: &[u8; 12] = b"LibvirtQemud";
/// The size of libvirt's header (magic, five 32-bit fields, 14 unused words).
pub const LIBVIRT_HEADER_LEN: usize = 92;
/// The newest header version libvirt writes and reads.
pub const LIBVIRT_VERSION: u32 = 2;
/// The alignment at which a stream at an unknown offset is looked for.
pub const SCAN_STEP: usize = 4096;
/// How far into a file a stream at an unknown offset is looked for.
pub const SCAN_LIMIT: usize = 64 << 20;

/// The stream magic and the two file versions a stream can have.
const STREAM_HEADERS: [&[u8; 8]; 2] = [b"QEVM\0\0\0\x03", b"QEVM\0\0\0\x04"];

/// libvirt's `save_image_format` (the header's `format` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// The stream as QEMU wrote it.
    Raw,
    /// Through `gzip -c`.
    Gzip,
    /// Through `bzip2 -c`.
    Bzip2,
    /// Through `xz -c`.
    Xz,
    /// Through `lzop -c` (not read: no decoder here).
    Lzop,
    /// Through `zstd -c`.
    Zstd,
    /// A mapped-ram stream (`--image-format sparse`): RAM pages at fixed file offsets.
    Sparse,
}

impl SaveFormat {
    /// The format of a header `format` word.
    pub fn from_word(w: u32) -> Option<SaveFormat> {
        Some(match w {
            0 => SaveFormat::Raw,
            1 => SaveFormat::Gzip,
            2 => SaveFormat::Bzip2,
            3 => SaveFormat::Xz,
            4 => SaveFormat::Lzop,
            5 => SaveFormat::Zstd,
            6 => SaveFormat::Sparse,
            _ => return None,
        })
    }

    /// libvirt's name of the format (`virsh save --image-format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            SaveFormat::Raw => "raw",
            SaveFormat::Gzip => "gzip",
            SaveFormat::Bzip2 => "bzip2",
            SaveFormat::Xz => "xz",
            SaveFormat::Lzop => "lzop",
            SaveFormat::Zstd => "zstd",
            SaveFormat::Sparse => "sparse",
        }
    }

    /// Whether the stream went through a compressor.
    pub fn compressed(self) -> bool {
        !matches!(self, SaveFormat::Raw | SaveFormat::Sparse)
    }

    /// The magic the compressor's output starts with.
    fn magic(self) -> &'static [u8] {
        match self {
            SaveFormat::Raw | SaveFormat::Sparse => b"QEVM",
            SaveFormat::Gzip => b"\x1f\x8b",
            SaveFormat::Bzip2 => b"BZh",
            SaveFormat::Xz => b"\xfd7zXZ\0",
            SaveFormat::Lzop => b"\x89LZO\0\r\n\x1a\n",
            SaveFormat::Zstd => b"\x28\xb5\x2f\xfd",
        }
    }
}

/// A problem with a container, at a file offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerError {
    /// The file offset of the field or byte that is wrong.
    pub offset: usize,
    /// What is wrong: expected vs found.
    pub message: String,
}

impl fmt::Display for ContainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "libvirt save image: at file offset {} (0x{:x}): {}",
            self.offset, self.offset, self.message
        )
    }
}

impl std::error::Error for ContainerError {}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, ContainerError> {
    Err(ContainerError {
        offset,
        message: message.into(),
    })
}

/// libvirt's header, in host order (swapped back when it was written in the other order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtHeader {
    /// The version word (1 or 2).
    pub version: u32,
    /// The bytes of XML, cookie and padding after the header.
    pub data_len: u32,
    /// The was_running word (1: the domain is resumed when restored).
    pub was_running: u32,
    /// The save format.
    pub format: SaveFormat,
    /// The cookie's offset within the data (0: none).
    pub cookie_offset: u32,
    /// Whether the header was written in big-endian order (read byte-swapped).
    pub big_endian: bool,
    /// How many of the 14 unused words are not zero.
    pub unused_nonzero: usize,
}

/// What the domain XML says about the guest (absent elements are `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSummary {
    /// `<domain type=…>` (qemu for TCG, kvm).
    pub kind: Option<String>,
    /// `<name>`.
    pub name: Option<String>,
    /// `<uuid>`.
    pub uuid: Option<String>,
    /// `<os><type arch=…>`.
    pub arch: Option<String>,
    /// `<os><type machine=…>`: the machine type QEMU was started with.
    pub machine: Option<String>,
    /// `<memory>` in bytes.
    pub memory: Option<u64>,
    /// `<vcpu>`.
    pub vcpus: Option<u32>,
    /// `<devices><emulator>`.
    pub emulator: Option<String>,
}

/// A parsed libvirt save image (everything before the QEMU stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtImage {
    /// The header.
    pub header: LibvirtHeader,
    /// The domain XML (without its NUL).
    pub xml: String,
    /// The cookie XML (without its NUL), when there is one.
    pub cookie: Option<String>,
    /// Bytes after the XML's and the cookie's NULs up to the stream.
    pub padding: usize,
    /// How many of those are not zero.
    pub padding_nonzero: usize,
    /// What the XML says.
    pub domain: DomainSummary,
    /// The file offset of the QEMU stream (or of the compressed data).
    pub stream_start: usize,
}

/// Where the stream of a file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// A stream at a file offset, found at an aligned offset or given with `--offset`.
    Offset {
        /// The file offset of the stream.
        start: usize,
        /// Given by the user (`--offset`) rather than found.
        given: bool,
    },
    /// A libvirt save image.
    Libvirt(Box<LibvirtImage>),
}

fn word(bytes: &[u8], at: usize, swap: bool) -> u32 {
    let w = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if swap { w.swap_bytes() } else { w }
}

/// Parses the libvirt header, XML, cookie and padding of `file` (the whole file), and checks
/// that the stream (or the compressed data of the header's format) starts where they end.
pub fn parse_libvirt(file: &[u8]) -> Result<LibvirtImage, ContainerError> {
    let header = parse_header(file)?;
    let (data_len, cookie_offset, format) = (header.data_len, header.cookie_offset, header.format);
    let after_header = file.len() - LIBVIRT_HEADER_LEN;
    if data_len as usize > after_header {
        return err(
            20,
            format!(
                "data length {data_len} (XML, cookie and padding): expected 1..={after_header} \
                 (the bytes after the {LIBVIRT_HEADER_LEN}-byte header)"
            ),
        );
    }
    let data_len_us = data_len as usize;
    let data = &file[LIBVIRT_HEADER_LEN..LIBVIRT_HEADER_LEN + data_len_us];
    let xml_len = if cookie_offset == 0 {
        data_len_us
    } else {
        cookie_offset as usize
    };
    let (xml, xml_used) = nul_string(&data[..xml_len], LIBVIRT_HEADER_LEN, "domain XML")?;
    let mut padding_bytes: Vec<&[u8]> = vec![&data[xml_used..xml_len]];
    let cookie = if cookie_offset == 0 {
        None
    } else {
        let at = LIBVIRT_HEADER_LEN + xml_len;
        let (c, used) = nul_string(&data[xml_len..], at, "cookie")?;
        padding_bytes.push(&data[xml_len + used..]);
        Some(c)
    };
    let padding = padding_bytes.iter().map(|p| p.len()).sum();
    let padding_nonzero = padding_bytes
        .iter()
        .map(|p| p.iter().filter(|&&b| b != 0).count())
        .sum();
    let domain = summarize(&xml).map_err(|m| ContainerError {
        offset: LIBVIRT_HEADER_LEN,
        message: format!("domain XML: {m}"),
    })?;
    let stream_start = LIBVIRT_HEADER_LEN + data_len_us;
    let rest = &file[stream_start..];
    let magic = format.magic();
    if !rest.starts_with(magic) {
        let what = if format.compressed() {
            format!("{} data ({})", format.name(), hex(magic))
        } else {
            "the QEMU stream (QEVM)".to_string()
        };
        return err(
            stream_start,
            format!(
                "expected {what} after the header and its data length {data_len}, found {}",
                if rest.is_empty() {
                    "the end of the file".to_string()
                } else {
                    hex(&rest[..rest.len().min(magic.len())])
                }
            ),
        );
    }
    Ok(LibvirtImage {
        header,
        xml,
        cookie,
        padding,
        padding_nonzero,
        domain,
        stream_start,
    })
}

/// The header of a libvirt image from its first [`LIBVIRT_HEADER_LEN`] bytes: the start of
/// [`parse_libvirt`], which also checks the data length against the file (a pipe's spool
/// checks the header with this before the data has arrived).
pub fn parse_header(file: &[u8]) -> Result<LibvirtHeader, ContainerError> {
    if file.len() < LIBVIRT_HEADER_LEN {
        return err(
            file.len(),
            format!(
                "header ends early: expected {LIBVIRT_HEADER_LEN} bytes, found {}",
                file.len()
            ),
        );
    }
    if file[..16] == LIBVIRT_PARTIAL[..] {
        return err(
            0,
            "the image is incomplete: magic \"LibvirtQemudPart\" (libvirt writes \
             \"LibvirtQemudSave\" only once QEMU finished the stream; libvirt refuses to \
             restore it)",
        );
    }
    if file[..16] != LIBVIRT_MAGIC[..] {
        return err(
            0,
            format!(
                "expected magic \"LibvirtQemudSave\", found {}",
                vmstate::Escaped(&file[..16])
            ),
        );
    }
    // libvirt writes the host's order; a version above its own means the other order.
    let mut swap = false;
    let mut version = word(file, 16, false);
    if version > LIBVIRT_VERSION {
        swap = true;
        version = word(file, 16, true);
    }
    if version == 0 || version > LIBVIRT_VERSION {
        return err(
            16,
            format!(
                "version {:#x}: expected 1 or 2 (in either byte order)",
                word(file, 16, false)
            ),
        );
    }
    let data_len = word(file, 20, swap);
    let was_running = word(file, 24, swap);
    let format_word = word(file, 28, swap);
    let cookie_offset = word(file, 32, swap);
    // Version 1 images are never compressed (libvirt ignores the word).
    let format = if version == 1 {
        SaveFormat::Raw
    } else {
        SaveFormat::from_word(format_word).ok_or_else(|| ContainerError {
            offset: 28,
            message: format!(
                "format {format_word}: expected 0..=6 (raw, gzip, bzip2, xz, lzop, zstd, sparse)"
            ),
        })?
    };
    let unused_nonzero = (0..14)
        .filter(|i| word(file, 36 + 4 * i, false) != 0)
        .count();
    if data_len == 0 {
        return err(20, "data length 0: expected at least the domain XML's NUL");
    }
    if cookie_offset >= data_len {
        return err(
            32,
            format!("cookie offset {cookie_offset}: expected below the data length {data_len}"),
        );
    }
    Ok(LibvirtHeader {
        version,
        data_len,
        was_running,
        format,
        cookie_offset,
        big_endian: swap,
        unused_nonzero,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The NUL-terminated UTF-8 text at the start of `region` (at file offset `at`) and the bytes
/// it takes with its NUL.
fn nul_string(region: &[u8], at: usize, what: &str) -> Result<(String, usize), ContainerError> {
    let Some(nul) = region.iter().position(|&b| b == 0) else {
        return err(
            at,
            format!(
                "the {what} is not NUL-terminated within its {} bytes",
                region.len()
            ),
        );
    };
    match std::str::from_utf8(&region[..nul]) {
        Ok(s) => Ok((s.to_string(), nul + 1)),
        Err(e) => err(
            at + e.valid_up_to(),
            format!("the {what} is not UTF-8 text"),
        ),
    }
}

/// The guest facts of a domain XML.
pub fn summarize(xml: &str) -> Result<DomainSummary, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !root.has_tag_name("domain") {
        return Err(format!(
            "expected a <domain> element, found <{}>",
            root.tag_name().name()
        ));
    }
    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
        n.children()
            .find(|c| c.is_element() && c.has_tag_name(name))
    }
    let text =
        |n: Option<roxmltree::Node<'_, '_>>| n.and_then(|n| n.text()).map(|t| t.trim().to_string());
    let os_type = child(root, "os").and_then(|os| child(os, "type"));
    let memory = match child(root, "memory") {
        None => None,
        Some(m) => Some(memory_bytes(
            m.text().unwrap_or("").trim(),
            m.attribute("unit").unwrap_or("KiB"),
        )?),
    };
    let vcpus = match text(child(root, "vcpu")) {
        None => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| format!("<vcpu>{v}</vcpu>: expected a number"))?,
        ),
    };
    Ok(DomainSummary {
        kind: root.attribute("type").map(str::to_string),
        name: text(child(root, "name")),
        uuid: text(child(root, "uuid")),
        arch: os_type
            .and_then(|t| t.attribute("arch"))
            .map(str::to_string),
        machine: os_type
            .and_then(|t| t.attribute("machine"))
            .map(str::to_string),
        memory,
        vcpus,
        emulator: text(child(root, "devices").and_then(|d| child(d, "emulator"))),
    })
}

/// A libvirt `<memory unit=…>` value in bytes.
fn memory_bytes(value: &str, unit: &str) -> Result<u64, String> {
    let scale: u64 = match unit {
        "b" | "bytes" => 1,
        "KB" => 1000,
        "k" | "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "M" | "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "G" | "GiB" => 1 << 30,
        "TB" => 1_000_000_000_000,
        "T" | "TiB" => 1 << 40,
        _ => return Err(format!("<memory unit='{unit}'>: unknown unit")),
    };
    value
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(|| format!("<memory>{value}</memory>: expected a number of {unit}"))
}

/// The file offset of a stream in a file that does not start with one: the first
/// [`SCAN_STEP`]-aligned offset (after 0) in the first [`SCAN_LIMIT`] bytes where a v3 or v4
/// stream header is.
pub fn find_stream(file: &[u8]) -> Option<usize> {
    (SCAN_STEP..file.len().min(SCAN_LIMIT))
        .step_by(SCAN_STEP)
        .find(|&at| {
            STREAM_HEADERS
                .iter()
                .any(|h| file[at..].starts_with(&h[..]))
        })
}

/// Copies the `format`-compressed `data` decompressed into `out`; the decompressed bytes must
/// start with the stream magic (checked before more is written, so a wrong image is not
/// decompressed whole). `lzop` has no decoder here and is refused. An error of the compressed
/// data (cut short, corrupt) is [`io::ErrorKind::InvalidData`]; an error writing `out` keeps
/// its kind.
pub fn decompress(format: SaveFormat, data: &[u8], out: &mut dyn Write) -> io::Result<u64> {
    let mut out = MagicFirst {
        out,
        head: Vec::new(),
        format,
        write_failed: false,
    };
    let copied = match format {
        SaveFormat::Gzip => io::copy(&mut flate2::read::MultiGzDecoder::new(data), &mut out),
        SaveFormat::Bzip2 => io::copy(&mut bzip2::read::MultiBzDecoder::new(data), &mut out),
        SaveFormat::Zstd => {
            let mut d = ruzstd::decoding::StreamingDecoder::new(data)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            io::copy(&mut d, &mut out)
        }
        SaveFormat::Xz => {
            let mut r = io::BufReader::new(data);
            let mut counted = Counted {
                out: &mut out,
                n: 0,
            };
            lzma_rs::xz_decompress(&mut r, &mut counted)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            Ok(counted.n)
        }
        SaveFormat::Lzop => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the stream is lzop-compressed (format 4), which vmstate does not read: \
                 decompress it first (lzop -dc, after the header) or save with another \
                 --image-format",
            ));
        }
        SaveFormat::Raw | SaveFormat::Sparse => {
            out.write_all(data)?;
            Ok(data.len() as u64)
        }
    }
    .map_err(|e| {
        let kind = if out.write_failed {
            e.kind()
        } else {
            io::ErrorKind::InvalidData
        };
        io::Error::new(
            kind,
            format!("{} decompression of the stream: {e}", format.name()),
        )
    })?;
    out.flush()?;
    if out.head.len() < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the {}-decompressed stream has {} bytes: expected a QEMU stream",
                format.name(),
                out.head.len()
            ),
        ));
    }
    Ok(copied)
}

/// A writer that refuses output not starting with the stream magic.
struct MagicFirst<'w> {
    out: &'w mut dyn Write,
    head: Vec<u8>,
    format: SaveFormat,
    /// Whether writing to `out` failed (not the data).
    write_failed: bool,
}

impl Write for MagicFirst<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.head.len() < 4 {
            let k = (4 - self.head.len()).min(buf.len());
            self.head.extend_from_slice(&buf[..k]);
            if !b"QEVM".starts_with(&self.head) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the {}-decompressed data starts with {}, expected the QEVM magic",
                        self.format.name(),
                        hex(&self.head)
                    ),
                ));
            }
        }
        let r = self.out.write(buf);
        self.write_failed |= r.is_err();
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A writer that counts what passes.
struct Counted<'w, W: Write> {
    out: &'w mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.out.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Whether `rewrite` can write a stream in `container` back into the same container: the
/// container is copied as it is and the stream follows, so a compressed image (which would
/// need compressing again) and a format change (libvirt and `file:` readers expect QEMU's
/// stream) are refused.
pub fn rewritable(container: Option<&Container>, format: bool) -> Result<(), String> {
    match container {
        Some(Container::Libvirt(i)) if i.header.format.compressed() => Err(format!(
            "rewrite of a {}-compressed libvirt save image is not supported (vmstate does not \
             compress): save the domain with --image-format raw, or extract the stream",
            i.header.format.name()
        )),
        Some(_) if format => Err(
            "--format with a stream inside a container (libvirt save image or offset): the \
             container's reader expects QEMU's stream; rewrite without --format"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

impl Container {
    /// The file offset of the stream (of the compressed data, for a compressed image).
    pub fn start(&self) -> usize {
        match self {
            Container::Offset { start, .. } => *start,
            Container::Libvirt(i) => i.stream_start,
        }
    }

    /// Whether the stream was decompressed (its offsets are then offsets in the decompressed
    /// stream, not in the file).
    pub fn compressed(&self) -> bool {
        matches!(self, Container::Libvirt(i) if i.header.format.compressed())
    }

    /// One line naming the container and where the stream starts, and what the offsets the
    /// commands report are.
    pub fn note(&self) -> String {
        let start = self.start();
        match self {
            Container::Offset { given, .. } => format!(
                "QEMU stream at file offset {start} (0x{start:x}, {}); byte offsets below are \
                 stream offsets (file offset = {start} + stream offset)",
                if *given {
                    "given with --offset"
                } else {
                    "found at a 4 KiB-aligned offset"
                }
            ),
            Container::Libvirt(i) if i.header.format.compressed() => format!(
                "libvirt save image, {} compressed from file offset {start} (0x{start:x}); \
                 byte offsets below are offsets in the decompressed QEMU stream",
                i.header.format.name()
            ),
            Container::Libvirt(i) => format!(
                "libvirt save image ({}), QEMU stream at file offset {start} (0x{start:x}); \
                 byte offsets below are stream offsets (file offset = {start} + stream \
                 offset)",
                i.header.format.name()
            ),
        }
    }

    /// What the byte offsets of an error in the stream are, in a few words (errors name the
    /// file with it).
    pub fn offsets(&self) -> String {
        let start = self.start();
        if self.compressed() {
            "offsets in the decompressed QEMU stream".into()
        } else {
            format!("stream at file offset {start} (0x{start:x}); offsets in the stream")
        }
    }

    /// One line for `verify`: the container's checked parts and [`Container::note`].
    pub fn summary(&self) -> String {
        let Container::Libvirt(i) = self else {
            return self.note();
        };
        let d = &i.domain;
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!(
            "libvirt header (version {}, format {}), domain XML ({} bytes: {}, {}, {}, {} \
             vCPUs){} and padding ({} bytes) checked; {}",
            i.header.version,
            i.header.format.name(),
            i.xml.len(),
            or(&d.name),
            or(&d.machine),
            d.memory.map_or("-".into(), size),
            d.vcpus.map_or("-".into(), |v| v.to_string()),
            i.cookie
                .as_ref()
                .map_or(String::new(), |c| format!(", cookie ({} bytes)", c.len())),
            i.padding,
            self.note()
        )
    }

    /// The lines `inspect` prints before its map: the header and the domain summary.
    pub fn describe(&self) -> String {
        let Container::Libvirt(i) = self else {
            return format!("container: {}\n", self.note());
        };
        let h = &i.header;
        let d = &i.domain;
        let mut s = format!(
            "libvirt save image: magic LibvirtQemudSave, version {}{}, format {} ({}), \
             was_running {}\n",
            h.version,
            if h.big_endian { " (big-endian)" } else { "" },
            h.format.name(),
            h.format as u32,
            h.was_running
        );
        s.push_str(&format!(
            "  data at 0x{LIBVIRT_HEADER_LEN:08x}: {} bytes: domain XML {} bytes",
            h.data_len,
            i.xml.len()
        ));
        if let Some(c) = &i.cookie {
            s.push_str(&format!(
                ", cookie at 0x{:08x} {} bytes",
                LIBVIRT_HEADER_LEN + h.cookie_offset as usize,
                c.len()
            ));
        }
        s.push_str(&format!(
            ", padding {} bytes{}\n",
            i.padding,
            if i.padding_nonzero == 0 {
                " (zero)".to_string()
            } else {
                format!(" ({} not zero)", i.padding_nonzero)
            }
        ));
        if h.unused_nonzero > 0 {
            s.push_str(&format!(
                "  unused header words not zero: {}\n",
                h.unused_nonzero
            ));
        }
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "  domain: name {}, uuid {}, type {}, arch {}, machine {}, memory {}, vCPUs {}\n",
            or(&d.name),
            or(&d.uuid),
            or(&d.kind),
            or(&d.arch),
            or(&d.machine),
            d.memory.map_or("-".into(), size),
            d.vcpus.map_or("-".into(), |v| v.to_string()),
        ));
        s.push_str(&format!("  emulator: {}\n", or(&d.emulator)));
        s.push_str(&format!("  {}\n", self.note()));
        s
    }

    /// Writes `DIR/container.json` ([`Container::to_json`]) and, for a libvirt image,
    /// `DIR/domain.xml` and `DIR/cookie.xml` (when there is a cookie); `input` is never
    /// overwritten. Returns the files written.
    pub fn extract(
        &self,
        dir: &std::path::Path,
        input: &std::path::Path,
    ) -> Result<Vec<std::path::PathBuf>, crate::exit::Failure> {
        use crate::output::{Links, OutputFile};
        let mut files = vec![(
            dir.join("container.json"),
            crate::pretty_json(&self.to_json()) + "\n",
        )];
        if let Container::Libvirt(i) = self {
            files.push((dir.join("domain.xml"), i.xml.clone() + "\n"));
            if let Some(c) = &i.cookie {
                files.push((dir.join("cookie.xml"), c.clone() + "\n"));
            }
        }
        let mut written = Vec::new();
        for (path, text) in files {
            let mut out = OutputFile::create(&path, &[input], Links::Replace)?;
            out.file()
                .write_all(text.as_bytes())
                .map_err(|e| crate::exit::Failure::Output(format!("{}: {e}", path.display())))?;
            out.commit()?;
            written.push(path);
        }
        Ok(written)
    }

    /// The container as JSON (`extract` writes it as `container.json`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Container::Offset { start, given } => json!({
                "kind": "offset",
                "stream_offset": start,
                "given": given,
            }),
            Container::Libvirt(i) => {
                let h = &i.header;
                let d = &i.domain;
                json!({
                    "kind": "libvirt-save-image",
                    "magic": "LibvirtQemudSave",
                    "version": h.version,
                    "big_endian": h.big_endian,
                    "data_len": h.data_len,
                    "was_running": h.was_running,
                    "format": h.format.name(),
                    "cookie_offset": h.cookie_offset,
                    "unused_nonzero_words": h.unused_nonzero,
                    "xml_bytes": i.xml.len(),
                    "cookie_bytes": i.cookie.as_ref().map(String::len),
                    "padding": i.padding,
                    "padding_nonzero": i.padding_nonzero,
                    "stream_offset": i.stream_start,
                    "domain": {
                        "type": d.kind, "name": d.name, "uuid": d.uuid, "arch": d.arch,
                        "machine": d.machine, "memory": d.memory, "vcpus": d.vcpus,
                        "emulator": d.emulator,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(xml: &str, cookie: Option<&str>, pad: usize, format: u32, stream: &[u8]) -> Vec<u8> {
        let mut data = xml.as_bytes().to_vec();
        data.push(0);
        let cookie_offset = if let Some(c) = cookie {
            let at = data.len() as u32;
            data.extend_from_slice(c.as_bytes());
            data.push(0);
            at
        } else {
            0
        };
        data.resize(data.len() + pad, 0);
        let mut f = LIBVIRT_MAGIC.to_vec();
        for w in [2, data.len() as u32, 1, format, cookie_offset] {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f.resize(LIBVIRT_HEADER_LEN, 0);
        f.extend_from_slice(&data);
        f.extend_from_slice(stream);
        f
    }

    const XML: &str = "<domain type='kvm'><name>g</name><memory unit='MiB'>16</memory>\
                       <vcpu>2</vcpu><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\
                       </os></domain>";

    #[test]
    fn reads_every_field() {
        let f = image(XML, Some("<cookie/>"), 10, 0, b"QEVM\0\0\0\x03");
        let i = parse_libvirt(&f).unwrap();
        assert_eq!(i.stream_start, f.len() - 8);
        assert_eq!(i.cookie.as_deref(), Some("<cookie/>"));
        assert_eq!(i.padding, 10);
        assert_eq!(i.domain.memory, Some(16 << 20));
        assert_eq!(i.domain.vcpus, Some(2));
        assert_eq!(i.domain.machine.as_deref(), Some("pc-q35-7.2"));
        assert_eq!(i.domain.kind.as_deref(), Some("kvm"));
    }

    #[test]
    fn big_endian_header_is_swapped() {
        let mut f = image(XML, None, 4, 0, b"QEVM\0\0\0\x03");
        for at in (16..36).step_by(4) {
            f[at..at + 4].reverse();
        }
        let i = parse_libvirt(&f).unwrap();
        assert!(i.header.big_endian);
        assert_eq!(i.header.version, 2);
    }

    #[test]
    fn each_bad_field_is_named_at_its_offset() {
        let good = image(XML, Some("<c/>"), 4, 0, b"QEVM\0\0\0\x03");
        let at = |f: &[u8]| parse_libvirt(f).unwrap_err().offset;
        let mut f = good.clone();
        f[..16].copy_from_slice(LIBVIRT_PARTIAL);
        assert_eq!(at(&f), 0);
        let mut f = good.clone();
        f[16..20].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(at(&f), 16);
        let mut f = good.clone();
        f[28..32].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(at(&f), 28);
        let mut f = good.clone();
        f[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(at(&f), 20);
        let mut f = good.clone();
        f[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(at(&f), 32);
        // The XML's NUL gone: it runs into the cookie, which then has no start tag of its own.
        let mut f = good.clone();
        f[LIBVIRT_HEADER_LEN + XML.len()] = b' ';
        assert!(parse_libvirt(&f).is_err());
        // A data length one short: the stream magic is not where it ends.
        let mut f = good.clone();
        let n = u32::from_le_bytes(f[20..24].try_into().unwrap());
        f[20..24].copy_from_slice(&(n - 1).to_le_bytes());
        assert_eq!(at(&f), LIBVIRT_HEADER_LEN + n as usize - 1);
        // Compressed formats look for their compressor's magic.
        let f = image(XML, None, 0, 1, b"QEVM");
        let e = parse_libvirt(&f).unwrap_err();
        assert!(e.message.contains("gzip data"), "{e}");
        assert!(parse_libvirt(&good[..50]).is_err());
    }

    #[test]
    fn version_1_is_raw_and_odd_padding_is_counted() {
        let mut f = image(XML, None, 6, 5, b"QEVM\0\0\0\x03");
        f[16..20].copy_from_slice(&1u32.to_le_bytes());
        // A non-zero unused word and two non-zero padding bytes: shown, not refused.
        f[40] = 1;
        let pad = LIBVIRT_HEADER_LEN + XML.len() + 1;
        f[pad] = 0xff;
        f[pad + 5] = 0xff;
        let i = parse_libvirt(&f).unwrap();
        assert_eq!(i.header.format, SaveFormat::Raw);
        assert_eq!(i.header.unused_nonzero, 1);
        assert_eq!((i.padding, i.padding_nonzero), (6, 2));
        let text = Container::Libvirt(Box::new(i)).describe();
        assert!(text.contains("padding 6 bytes (2 not zero)"), "{text}");
        assert!(text.contains("unused header words not zero: 1"), "{text}");
    }

    #[test]
    fn decompressed_data_must_be_a_stream() {
        use flate2::write::GzEncoder;
        let gz = |data: &[u8]| {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let mut out = Vec::new();
        let n = decompress(SaveFormat::Gzip, &gz(b"QEVM\0\0\0\x03rest"), &mut out).unwrap();
        assert_eq!((n, &out[..]), (12, &b"QEVM\0\0\0\x03rest"[..]));
        let mut out = Vec::new();
        let e = decompress(SaveFormat::Gzip, &gz(b"hello, world"), &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(
            e.to_string()
                .contains("starts with 68 65 6c 6c, expected the QEVM magic"),
            "{e}"
        );
        assert!(out.is_empty(), "nothing written past the check");
        let e = decompress(SaveFormat::Gzip, &gz(b"QE"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("has 2 bytes"), "{e}");
    }

    #[test]
    fn streams_are_found_at_aligned_offsets_only() {
        let mut f = vec![0u8; 3 * SCAN_STEP + 8];
        f[100..108].copy_from_slice(b"QEVM\0\0\0\x03");
        assert_eq!(find_stream(&f), None);
        f[2 * SCAN_STEP..2 * SCAN_STEP + 8].copy_from_slice(b"QEVM\0\0\0\x03");
        assert_eq!(find_stream(&f), Some(2 * SCAN_STEP));
    }
}
