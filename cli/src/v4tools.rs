//! Library entry points for the v4 subcommands: `rewrite --format v3|v4`, `check IN --dest
//! CAPS`, `caps …` (docs/FORMAT.md §8–§11). Each takes paths or bytes and returns the text to
//! print and the exit status, or a typed result, so the binary only parses arguments.
//!
//! v3 → v4 needs to know where each section body's top-level subsections start; here that comes
//! from the stream's own VMDESCRIPTION trailer ([`TrailerSplit`]). Any other
//! [`SubsectionSplit`] (e.g. a generic description decoder, or `VmsdSplit` over our device
//! tables) can be passed to [`upgrade_with`].

// The codec's v4 error is `Copy` and carries names by value; returning it unboxed is deliberate.

use crate::desc::Description;
use crate::exit::Failure;
use crate::generic;
use crate::input::{Input, scratch_file};
use crate::model::find_description;
use std::io::{self, Write};
use std::path::Path;
use std::rc::Rc;
use vmstate::SliceSink;
use vmstate::stream::{BodyLength, Next, SectionInfo};
use vmstate::v4::caps::Capabilities;
use vmstate::v4::convert::{SubsectionSplit, UpgradeOptions, downgrade, upgrade};
use vmstate::v4::wire::{Records4, Vendor};
use vmstate::{Error, ErrorKind};

/// Device capacity of capabilities files written by the CLI.
pub const CAPS_DEVICES: usize = 1024;
/// Known-subsection capacity of capabilities files written by the CLI.
pub const CAPS_SUBSECTIONS: usize = 4096;
/// The capabilities type the CLI reads and writes.
pub type HostCaps<'a> = Capabilities<'a, CAPS_DEVICES, CAPS_SUBSECTIONS>;

/// Output stream format of `rewrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// QEMU's savevm stream, file version 3.
    V3,
    /// vmstate v4.
    V4,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v3" | "3" => Ok(Format::V3),
            "v4" | "4" => Ok(Format::V4),
            _ => Err(format!("unknown format {s:?} (expected v3 or v4)")),
        }
    }
}

/// The file version of a stream (bytes 4..8), if it has a `QEVM` header.
pub fn stream_version(bytes: &[u8]) -> Option<u32> {
    if bytes.get(..4) != Some(b"QEVM") {
        return None;
    }
    let v = bytes.get(4..8)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// Splits sections (and finds v3 body lengths) from a stream's VMDESCRIPTION trailer.
///
/// Each FULL section is decoded with its description entry ([`Description::device`]: idstr
/// and instance id, the one matching rule) by the generic decoder ([`crate::generic`]), which
/// gives the end of the top-level fields and of each top-level subsection. Sections the
/// description does not list are left to the converter (it refuses them).
#[derive(Debug, Clone)]
pub struct TrailerSplit<'a> {
    desc: Rc<Description<'a>>,
    /// The ends of the last body decoded, by its absolute offset: `BodyLength` and
    /// `SubsectionSplit` ask about the same body one after the other.
    last: Option<(usize, Vec<usize>)>,
    /// Why the last body was refused, in full (the codec's error keeps only the kind).
    error: Option<String>,
}

impl<'a> TrailerSplit<'a> {
    /// Reads the trailer of the v3 stream `v3`.
    pub fn from_stream(v3: &'a [u8]) -> Result<Self, String> {
        let desc = find_description(v3)
            .map_err(|e| e.to_string())?
            .ok_or(crate::model::NO_DESCRIPTION)?
            .1;
        Ok(TrailerSplit::new(desc))
    }

    /// A splitter over `desc`.
    pub fn new(desc: Description<'a>) -> Self {
        TrailerSplit {
            desc: Rc::new(desc),
            last: None,
            error: None,
        }
    }

    /// The detailed reason of the last refusal, if any.
    pub fn take_error(&mut self) -> Option<String> {
        self.error.take()
    }

    /// Field end, then each top-level subsection's end, relative to the body start, for the
    /// body at `base` whose bytes (and maybe more) are `rest`; `None` for a section that is
    /// not FULL or not described. The error says why the body does not match its entry.
    pub fn decode_ends(
        &self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> Result<Option<Vec<usize>>, Box<(Error, String)>> {
        if sec.kind != vmstate::wire::section::SectionKind::Full {
            return Ok(None);
        }
        let Some((_, dev)) = self.desc.device(sec.idstr, sec.instance_id) else {
            return Ok(None);
        };
        let label = || {
            format!(
                "section '{}' instance {}",
                vmstate::Escaped(sec.idstr),
                sec.instance_id
            )
        };
        if let Some((_, v)) = dev.vmsd.as_ref().filter(|(_, v)| *v != sec.version_id) {
            let message = format!(
                "at byte {base} (0x{base:x}), {}: version {} but the description says {v}",
                label(),
                sec.version_id
            );
            return Err(Box::new((
                Error::new(base, ErrorKind::BadDescription),
                message,
            )));
        }
        let (body, _) = generic::decode_prefix(&dev.body, rest, base)
            .map_err(|e| Box::new((Error::new(e.offset, e.kind), format!("{}: {e}", label()))))?;
        Ok(Some(body.part_ends()))
    }

    /// [`TrailerSplit::decode_ends`] for the converter, which asks about the same body twice
    /// (its length, then its split) through traits that return codec errors: the ends are
    /// kept for the second question and the full reason for [`TrailerSplit::take_error`].
    fn ends(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> vmstate::Result<Option<&[usize]>> {
        if self.last.as_ref().is_none_or(|(at, _)| *at != base) {
            match self.decode_ends(sec, rest, base) {
                Ok(Some(ends)) => self.last = Some((base, ends)),
                Ok(None) => return Ok(None),
                Err(refusal) => {
                    let (e, message) = *refusal;
                    self.error = Some(message);
                    return Err(e);
                }
            }
        }
        Ok(self.last.as_ref().map(|(_, e)| e.as_slice()))
    }
}

impl SubsectionSplit for TrailerSplit<'_> {
    fn split(
        &mut self,
        sec: &SectionInfo<'_>,
        body: &[u8],
        base: usize,
        ends: &mut [usize],
    ) -> vmstate::Result<Option<usize>> {
        let Some(e) = self.ends(sec, body, base)? else {
            return Ok(None);
        };
        let slots = ends.get_mut(..e.len()).ok_or(Error::new(
            base,
            ErrorKind::TooManySubsections {
                limit: vmstate::schema::MAX_SUBSECTIONS as u16,
            },
        ))?;
        let n = e.len();
        slots.copy_from_slice(e);
        Ok(Some(n))
    }
}

impl BodyLength for TrailerSplit<'_> {
    fn body_len(
        &mut self,
        sec: &SectionInfo<'_>,
        rest: &[u8],
        base: usize,
    ) -> vmstate::Result<Option<usize>> {
        Ok(self.ends(sec, rest, base)?.and_then(|e| e.last().copied()))
    }
}

fn sized<F>(capacity: usize, f: F) -> Result<Vec<u8>, vmstate::v4::Error>
where
    F: FnOnce(&mut SliceSink<'_>) -> Result<(), vmstate::v4::Error>,
{
    let mut buf = vec![0u8; capacity];
    let mut sink = SliceSink::new(&mut buf);
    f(&mut sink)?;
    let n = sink.finish();
    buf.truncate(n);
    Ok(buf)
}

/// Why a conversion written to an [`io::Write`] failed.
#[derive(Debug)]
pub enum ConvertError {
    /// The input is malformed or the conversion is refused (the message says where and why).
    Invalid(String),
    /// Writing the output failed.
    Io(io::Error),
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvertError::Invalid(m) => f.write_str(m),
            ConvertError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A [`vmstate::Sink`] over an [`io::Write`] (buffered here): the codec's conversions write
/// straight into a file, never into a whole-stream buffer. A write error is kept (the codec
/// sees a "buffer too small" at that position) and reported by [`WriteSink::result`].
struct WriteSink<W: Write> {
    w: io::BufWriter<W>,
    n: usize,
    error: Option<io::Error>,
}

impl<W: Write> WriteSink<W> {
    fn new(w: W) -> Self {
        WriteSink {
            w: io::BufWriter::with_capacity(1 << 20, w),
            n: 0,
            error: None,
        }
    }

    /// The conversion's outcome, the writer's error first; flushes on success.
    fn result(mut self, r: Result<(), String>) -> Result<(), ConvertError> {
        if let Some(e) = self.error.take() {
            return Err(ConvertError::Io(e));
        }
        r.map_err(ConvertError::Invalid)?;
        self.w.flush().map_err(ConvertError::Io)
    }
}

impl<W: Write> vmstate::Sink for WriteSink<W> {
    type Error = Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Err(e) = self.w.write_all(bytes) {
            self.error = Some(e);
            return Err(Error::new(
                self.n,
                ErrorKind::BufferTooSmall {
                    needed: bytes.len(),
                    capacity: 0,
                },
            ));
        }
        self.n += bytes.len();
        Ok(())
    }

    fn position(&self) -> usize {
        self.n
    }
}

/// Bytes of v4 framing per v3 byte are bounded: each record grows by at most its frame, CRC,
/// minors and subsection frames; 2× + 64 KiB is ample for any stream.
fn v4_capacity(v3_len: usize) -> usize {
    v3_len.saturating_mul(2).saturating_add(1 << 16)
}

/// Converts a v3 stream to v4 with `split` telling where subsections start (body lengths come
/// from `lengths`).
pub fn upgrade_with<L: BodyLength, P: SubsectionSplit>(
    v3: &[u8],
    lengths: L,
    split: P,
    opts: &UpgradeOptions<'_>,
) -> Result<Vec<u8>, vmstate::v4::Error> {
    sized(v4_capacity(v3.len()), |out| {
        upgrade(v3, lengths, split, opts, out)
    })
}

/// Converts a v3 stream to v4 using its own VMDESCRIPTION trailer, with checksums.
pub fn upgrade_v3(v3: &[u8]) -> Result<Vec<u8>, String> {
    upgrade_v3_with(v3, &UpgradeOptions::default())
}

/// [`upgrade_v3`] with `opts`; a body that does not match its description is refused with
/// the description decoder's message (section, byte, field, expected and found).
pub fn upgrade_v3_with(v3: &[u8], opts: &UpgradeOptions<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    upgrade_v3_to(v3, opts, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`upgrade_v3_with`] writing into `out` as it goes (memory: the description and a write
/// buffer, not the stream).
pub fn upgrade_v3_to(
    v3: &[u8],
    opts: &UpgradeOptions<'_>,
    out: impl Write,
) -> Result<(), ConvertError> {
    let mut split = TrailerSplit::from_stream(v3).map_err(ConvertError::Invalid)?;
    let mut lengths = split.clone();
    let mut sink = WriteSink::new(out);
    let r = upgrade(v3, &mut lengths, &mut split, opts, &mut sink).map_err(|e| {
        lengths
            .take_error()
            .or_else(|| split.take_error())
            .unwrap_or_else(|| e.to_string())
    });
    sink.result(r)
}

/// Converts a v4 stream to v3 (refusing, with the reason, when a vendor feature is in use).
pub fn downgrade_v4(v4: &[u8]) -> Result<Vec<u8>, vmstate::v4::Error> {
    sized(v4.len(), |out| downgrade(v4, out))
}

/// [`downgrade_v4`] writing into `out` as it goes.
pub fn downgrade_v4_to(v4: &[u8], out: impl Write) -> Result<(), ConvertError> {
    let mut sink = WriteSink::new(out);
    let r = downgrade(v4, &mut sink).map_err(|e| e.to_string());
    sink.result(r)
}

/// The stream `v3` as v4, in an unlinked temporary file ([`scratch_file`]) mapped as an
/// [`Input`]: disk use is the v4 stream's size, memory stays bounded.
pub fn upgrade_v3_spooled(v3: &[u8], opts: &UpgradeOptions<'_>) -> Result<Input, ConvertError> {
    let mut file = scratch_file().map_err(ConvertError::Io)?;
    upgrade_v3_to(v3, opts, &mut file)?;
    Input::from_file(file).map_err(ConvertError::Io)
}

/// Walks the v3 stream `v3` decoding every FULL section with its own trailer, as `upgrade_v3`
/// (and so `rewrite --format v3` of a v3 stream) does: a v4 → v3 conversion is held to the
/// same rules as the decoders (a subsection the description does not list, a frame nested in
/// a subsection's body, bytes left after the body), so it never writes a v3 stream that
/// `verify` refuses. A stream without a trailer has only its structure checked (the walk).
pub fn check_v3(v3: &[u8]) -> Result<(), String> {
    check_v3_observed(v3, &mut |_| {})
}

/// [`check_v3`], calling `observe` with the offset reached after each record (to release
/// the input behind the walk).
pub fn check_v3_observed(v3: &[u8], observe: &mut dyn FnMut(usize)) -> Result<(), String> {
    let Some((_, desc)) = find_description(v3).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let split = TrailerSplit::new(desc);
    let mut walk = vmstate::Records::with_options(v3, (), vmstate::stream::Options::for_stream(v3));
    while let Some(next) = walk.next_head() {
        if let Next::Section(head) = next.map_err(|e| e.to_string())? {
            let rest = walk.body_rest(&head);
            let ends = split
                .decode_ends(&head.info(), rest, head.body_offset())
                .map_err(|refusal| refusal.1)?;
            let len = match ends.as_ref().and_then(|e| e.last()) {
                Some(&n) => Ok(n),
                // RAM records; anything else the description does not cover is refused.
                None => walk.measure(&head),
            };
            len.and_then(|n| walk.commit(&head, n))
                .map_err(|e| e.to_string())?;
        }
        observe(walk.offset());
    }
    Ok(())
}

/// Rewrites `input` (v3 or v4) in `format`. Same-format rewrites go through the other format
/// and back, so they also validate the stream.
pub fn rewrite(input: &[u8], format: Format) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    rewrite_to(input, format, &UpgradeOptions::default(), &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`rewrite`] into `out` as it goes, with `opts` for an upgrade: memory stays bounded by the
/// description and write buffers. A v3 → v3 rewrite goes through a v4 copy in a temporary
/// file (disk: the v4 stream's size).
pub fn rewrite_to(
    input: &[u8],
    format: Format,
    opts: &UpgradeOptions<'_>,
    mut out: impl Write,
) -> Result<(), ConvertError> {
    match (stream_version(input), format) {
        (Some(3), Format::V4) => upgrade_v3_to(input, opts, out),
        (Some(3), Format::V3) => downgrade_v4_to(upgrade_v3_spooled(input, opts)?.bytes(), out),
        (Some(4), Format::V3) => {
            // Converted into a temporary file first: the v3 result is checked like the
            // decoders check a stream before any of it reaches the output.
            let mut file = scratch_file().map_err(ConvertError::Io)?;
            downgrade_v4_to(input, &mut file)?;
            let v3 = Input::from_file(file).map_err(ConvertError::Io)?;
            check_v3_observed(v3.bytes(), &mut |at| v3.release_before(at)).map_err(|e| {
                ConvertError::Invalid(format!("the stream converted to v3 would not load: {e}"))
            })?;
            // Copied in steps, releasing the copy's pages behind each one.
            let mut at = 0;
            for chunk in v3.bytes().chunks(8 << 20) {
                out.write_all(chunk).map_err(ConvertError::Io)?;
                at += chunk.len();
                v3.release_before(at);
            }
            Ok(())
        }
        (Some(4), Format::V4) => {
            for r in Records4::new(input) {
                r.map_err(|e| ConvertError::Invalid(e.to_string()))?;
            }
            out.write_all(input).map_err(ConvertError::Io)
        }
        (Some(v), _) => Err(ConvertError::Invalid(format!(
            "unsupported file version {v}"
        ))),
        (None, _) => Err(ConvertError::Invalid("not a QEVM stream".into())),
    }
}

/// `vmstate rewrite IN OUT --format v3|v4` on whole files: the summary line, or
/// [`Failure::Unreadable`] (the input cannot be read), [`Failure::Invalid`] (the input is
/// malformed or the conversion is refused), [`Failure::Output`] (the output cannot be written).
pub fn rewrite_files(input: &Path, output: &Path, format: Format) -> Result<String, Failure> {
    let bytes = std::fs::read(input).map_err(|e| Failure::io(input, e))?;
    let out = rewrite(&bytes, format).map_err(Failure::Invalid)?;
    std::fs::write(output, &out)
        .map_err(|e| Failure::Output(format!("{}: {e}", output.display())))?;
    Ok(format!(
        "{}: {} bytes -> {}: {} bytes ({})\n",
        input.display(),
        bytes.len(),
        output.display(),
        out.len(),
        match format {
            Format::V3 => "v3",
            Format::V4 => "v4",
        }
    ))
}

/// A vendor chain from ids (protocol minors 0).
pub fn vendors_from(ids: &[String]) -> Vec<Vendor<'_>> {
    ids.iter()
        .map(|id| Vendor {
            id: id.as_bytes(),
            protocol_minor: 0,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../host-tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn rewrite_round_trips_every_fixture() {
        for name in [
            "pc-7.2-nodefaults-S.vmstate",
            "pc-7.2-bios.vmstate",
            "pc-7.2-serial.vmstate",
        ] {
            let v3 = fixture(name);
            let v4 = rewrite(&v3, Format::V4).unwrap();
            assert_eq!(stream_version(&v4), Some(4));
            assert!(rewrite(&v4, Format::V3).unwrap() == v3, "{name}");
            assert!(rewrite(&v3, Format::V3).unwrap() == v3, "{name}");
            assert!(rewrite(&v4, Format::V4).unwrap() == v4, "{name}");
        }
        assert!(rewrite(b"QEVM\0\0\0\x02", Format::V4).is_err());
        assert!(rewrite(b"nope", Format::V3).is_err());
    }

    #[test]
    fn rewrite_files_reports_and_writes() {
        let dir = std::env::temp_dir().join(format!("vmstate-v4tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = format!(
            "{}/../host-tests/fixtures/pc-7.2-serial.vmstate",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = dir.join("serial.v4");
        let text = rewrite_files(Path::new(&input), &out, Format::V4).unwrap();
        assert!(text.ends_with("bytes (v4)\n"), "{text}");
        let back = dir.join("serial.v3");
        rewrite_files(&out, &back, Format::V3).unwrap();
        assert!(std::fs::read(&back).unwrap() == fixture("pc-7.2-serial.vmstate"));
        let e = rewrite_files(&dir.join("missing"), &back, Format::V3).unwrap_err();
        assert!(matches!(e, Failure::Unreadable(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
