//! Library entry points for the v4 subcommands: `rewrite --format v3|v4`, `check IN --dest
//! CAPS`, `caps …` (docs/FORMAT.md §8–§11). Each takes paths or bytes and returns the text to
//! print and the exit status, or a typed result, so the binary only parses arguments.
//!
//! v3 → v4 needs to know where each section body and its top-level subsections end; here that
//! comes from the stream's own VMDESCRIPTION trailer, each body decoded once.

// The codec's v4 error is `Copy` and carries names by value; returning it unboxed is deliberate.

use crate::desc::Description;
use crate::exit::Failure;
use crate::generic;
use crate::input::{Input, scratch_file, write_releasing};
use crate::model::find_description;
use std::io::{self, Write};
use std::path::Path;
use vmstate::SliceSink;
use vmstate::stream::Next;
use vmstate::v4::caps::Capabilities;
use vmstate::v4::convert::{
    BodySplit, UpgradeOptions, downgrade, downgrade_observed, upgrade_from_at,
};
use vmstate::v4::wire::{Records4, Vendor};
use vmstate::{Error, ErrorKind, SectionHead};

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

/// Measures and splits section bodies for the converter from a stream's VMDESCRIPTION trailer.
///
/// Each FULL section is decoded once with its description entry ([`Description::device`]:
/// idstr and instance id, the one matching rule) by the generic decoder ([`crate::generic`]),
/// which gives the end of the top-level fields and of each top-level subsection. Sections the
/// description does not list are left to the converter (it refuses them).
struct TrailerSplit<'a> {
    desc: Description<'a>,
}

impl TrailerSplit<'_> {
    /// Field end, then each top-level subsection's end, relative to the body start, for the
    /// body of `head` whose bytes (and maybe more) are `rest`; `None` for a section that is
    /// not FULL or not described. The error says why the body does not match its entry.
    fn decode_ends(
        &self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
    ) -> Result<Option<Vec<usize>>, String> {
        if head.kind != vmstate::wire::section::SectionKind::Full {
            return Ok(None);
        }
        let Some((_, dev)) = self.desc.device(head.idstr, head.instance_id) else {
            return Ok(None);
        };
        let label = format!(
            "section '{}' instance {}",
            vmstate::Escaped(head.idstr),
            head.instance_id
        );
        let base = head.body_offset();
        if let Some((_, v)) = dev.vmsd.as_ref().filter(|(_, v)| *v != head.version_id) {
            return Err(format!(
                "at byte {base} (0x{base:x}), {label}: version {} but the description says {v}",
                head.version_id
            ));
        }
        let (body, _) =
            generic::decode_prefix(&dev.body, rest, base).map_err(|e| format!("{label}: {e}"))?;
        Ok(Some(body.part_ends()))
    }
}

impl BodySplit for TrailerSplit<'_> {
    type Error = ConvertError;

    fn split(
        &mut self,
        head: &SectionHead<&[u8]>,
        rest: &[u8],
        ends: &mut [usize],
    ) -> Result<Option<usize>, ConvertError> {
        let Some(e) = self
            .decode_ends(head, rest)
            .map_err(ConvertError::Invalid)?
        else {
            return Ok(None);
        };
        let too_many = ErrorKind::TooManySubsections {
            limit: vmstate::schema::MAX_SUBSECTIONS as u16,
        };
        let slots = ends
            .get_mut(..e.len())
            .ok_or_else(|| vmstate::v4::Error::from(Error::new(head.body_offset(), too_many)))?;
        slots.copy_from_slice(&e);
        Ok(Some(e.len()))
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

impl From<vmstate::v4::Error> for ConvertError {
    fn from(e: vmstate::v4::Error) -> Self {
        ConvertError::Invalid(e.to_string())
    }
}

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvertError::Invalid(m) => f.write_str(m),
            ConvertError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// [`WriteSink`]'s buffer: writes of this many bytes or more bypass it.
pub(crate) const WRITE_BUFFER: usize = 64 << 10;

/// A [`vmstate::Sink`] over an [`io::Write`] (buffered here): the codec's conversions write
/// straight into a file, never into a whole-stream buffer. A write error is kept (the codec
/// sees a "buffer too small" at that position) and reported by [`WriteSink::result`].
///
/// Small records are gathered in a [`WRITE_BUFFER`]-byte buffer; a write at least that
/// large (a DATA record's payload, a big section) goes to the writer as it is, not copied.
pub(crate) struct WriteSink<W: Write> {
    w: io::BufWriter<W>,
    n: usize,
    error: Option<io::Error>,
}

impl<W: Write> WriteSink<W> {
    pub(crate) fn new(w: W) -> Self {
        WriteSink {
            w: io::BufWriter::with_capacity(WRITE_BUFFER, w),
            n: 0,
            error: None,
        }
    }

    /// Sends what is buffered (a live writer, between records); the writer's error first.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.w.flush()
    }

    /// The conversion's outcome, the writer's error first; flushes on success.
    pub(crate) fn result(mut self, r: Result<(), ConvertError>) -> Result<(), ConvertError> {
        if let Some(e) = self.error.take() {
            return Err(ConvertError::Io(e));
        }
        r?;
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

/// Converts a v3 stream to v4 using its own VMDESCRIPTION trailer, with checksums.
pub fn upgrade_v3(v3: &[u8]) -> Result<Vec<u8>, String> {
    upgrade_v3_with(v3, &UpgradeOptions::default())
}

/// [`upgrade_v3`] with `opts`; a body that does not match its description is refused with
/// the description decoder's message (section, byte, field, expected and found).
pub fn upgrade_v3_with(v3: &[u8], opts: &UpgradeOptions<'_>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    upgrade_v3_at(v3, None, 0, opts, &mut out, &mut |_| {}).map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`upgrade_v3_with`] into `out` of the part of `v3` from offset `from` on, without header and
/// configuration ([`vmstate::v4::convert::upgrade_from`]): the live proxy's held final phase,
/// over a view whose bytes between the configuration and `from` are not there.
pub fn upgrade_v3_from(
    v3: &[u8],
    from: Option<usize>,
    opts: &UpgradeOptions<'_>,
    out: impl Write,
) -> Result<(), ConvertError> {
    upgrade_v3_at(v3, from, 0, opts, out, &mut |_| {})
}

/// [`upgrade_v3_from`] of a stream at file offset `file_offset` of its file, writing into
/// `out` as it goes (memory: the description and a write buffer, not the stream) and calling
/// `reached` with the offset in `v3` it has read up to
/// ([`vmstate::v4::convert::upgrade_from_at`]; a mapped input releases what is behind).
fn upgrade_v3_at(
    v3: &[u8],
    from: Option<usize>,
    file_offset: u64,
    opts: &UpgradeOptions<'_>,
    out: impl Write,
    reached: &mut dyn FnMut(usize),
) -> Result<(), ConvertError> {
    let desc = find_description(v3)
        .map_err(|e| ConvertError::Invalid(e.to_string()))?
        .ok_or(ConvertError::Invalid(crate::model::NO_DESCRIPTION.into()))?
        .1;
    let mut sink = WriteSink::new(out);
    let r = upgrade_from_at(
        v3,
        from,
        file_offset,
        TrailerSplit { desc },
        opts,
        &mut sink,
        reached,
    );
    sink.result(r)
}

/// Converts a v4 stream to v3 (refusing, with the reason, when a vendor feature is in use).
pub fn downgrade_v4(v4: &[u8]) -> Result<Vec<u8>, vmstate::v4::Error> {
    sized(v4.len(), |out| downgrade(v4, out))
}

/// [`downgrade_v4`] writing into `out` as it goes, calling `reached` with the offset in `v4`
/// it has read up to ([`vmstate::v4::convert::downgrade_observed`]).
pub fn downgrade_v4_to(
    v4: &[u8],
    out: impl Write,
    reached: &mut dyn FnMut(usize),
) -> Result<(), ConvertError> {
    let mut sink = WriteSink::new(out);
    let r = downgrade_observed(v4, &mut sink, reached).map_err(ConvertError::from);
    sink.result(r)
}

/// The stream `v3` as v4, in an unlinked temporary file ([`scratch_file`]) mapped as an
/// [`Input`]: disk use is the v4 stream's size, memory stays bounded. `reached` is called
/// with the offset in `v3` the conversion has read up to.
pub fn upgrade_v3_spooled(
    v3: &[u8],
    opts: &UpgradeOptions<'_>,
    reached: &mut dyn FnMut(usize),
) -> Result<Input, ConvertError> {
    upgrade_v3_spooled_at(v3, 0, opts, reached)
}

/// [`upgrade_v3_spooled`] of a stream at file offset `file_offset` of its file
/// ([`Input::stream_start`]; a mapped-ram stream's headers hold file offsets).
pub fn upgrade_v3_spooled_at(
    v3: &[u8],
    file_offset: u64,
    opts: &UpgradeOptions<'_>,
    reached: &mut dyn FnMut(usize),
) -> Result<Input, ConvertError> {
    let mut file = scratch_file().map_err(ConvertError::Io)?;
    upgrade_v3_at(v3, None, file_offset, opts, &mut file, reached)?;
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
    let split = TrailerSplit { desc };
    let mut walk = vmstate::Records::with_options(v3, (), vmstate::stream::Options::for_stream(v3));
    while let Some(next) = walk.next_head() {
        if let Next::Section(head) = next.map_err(|e| e.to_string())? {
            let rest = walk.body_rest(&head);
            let ends = split.decode_ends(&head, rest)?;
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
    rewrite_to(
        input,
        format,
        &UpgradeOptions::default(),
        &mut out,
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// [`rewrite`] into `out` as it goes, with `opts` for an upgrade, calling `reached` with the
/// offset in `input` each pass over it has read up to (a mapped input releases what is
/// behind; temporary files release themselves): memory stays bounded by the description and
/// write buffers. A v3 → v3 rewrite goes through a v4 copy in a temporary file (disk: the v4
/// stream's size).
pub fn rewrite_to(
    input: &[u8],
    format: Format,
    opts: &UpgradeOptions<'_>,
    mut out: impl Write,
    reached: &mut dyn FnMut(usize),
) -> Result<(), ConvertError> {
    match (stream_version(input), format) {
        (Some(3), Format::V4) => upgrade_v3_at(input, None, 0, opts, out, reached),
        (Some(3), Format::V3) => {
            let v4 = upgrade_v3_spooled(input, opts, reached)?;
            downgrade_v4_to(v4.bytes(), out, &mut |at| v4.release_before(at))
        }
        (Some(4), Format::V3) => {
            // Converted into a temporary file first: the v3 result is checked like the
            // decoders check a stream before any of it reaches the output.
            let mut file = scratch_file().map_err(ConvertError::Io)?;
            downgrade_v4_to(input, &mut file, reached)?;
            let v3 = Input::from_file(file).map_err(ConvertError::Io)?;
            check_v3_observed(v3.bytes(), &mut |at| v3.release_before(at)).map_err(|e| {
                ConvertError::Invalid(format!("the stream converted to v3 would not load: {e}"))
            })?;
            // Copied in pieces, releasing the copy's pages behind each one.
            write_releasing(&mut out, v3.bytes()).map_err(ConvertError::Io)
        }
        (Some(4), Format::V4) => {
            for r in Records4::new(input) {
                let r = r.map_err(|e| ConvertError::Invalid(e.to_string()))?;
                reached(r.end);
            }
            // Copied in pieces, releasing the input behind each one (when it is mapped).
            write_releasing(&mut out, input).map_err(ConvertError::Io)
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

/// A vendor chain from ids (protocol minors 0); an id that is not a reverse FQDN is refused.
pub fn vendors_from(ids: &[String]) -> Result<Vec<Vendor<'_>>, String> {
    ids.iter()
        .map(|id| {
            let id = vmstate::VendorId::parse(id.as_bytes())
                .ok_or_else(|| format!("vendor id {id:?} is not a reverse FQDN"))?;
            Ok(Vendor {
                id,
                protocol_minor: 0,
            })
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
