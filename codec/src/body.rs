//! Encoding and decoding of VMState bodies driven by a [`Vmsd`] table (docs/V3-WIRE.md §6, §7).
//!
//! The state is the erased bytes of the struct the table describes. Encoding copies each
//! present field's storage range to the sink, then emits the subsections whose `needed` holds.
//! Decoding copies the wire bytes into the state, checking as it goes (bools, `_EQUAL` values,
//! counts against capacity, NULL markers, `VALIDATE` entries), follows QEMU 7.2's subsection
//! rules (peek, prefix match, unknown name is an error) plus two hardenings (duplicates and
//! versions above 255 are rejected), applies defaults for absent subsections, and finally runs
//! the table's validation hook.
//!
//! One runner per direction (`encode_run`, `decode_run`) takes a body's steps in order.
//! The fields step is a fast case when the table compiled into a [`Plan`] (one copy, its
//! checks, its tail); where the plan declines (a check or a count refuses, the input is short,
//! a bool is bad) the general step runs field by field from the same place, which writes the
//! same bytes or reports the exact error. Nested bodies (a struct tail, subsection bodies) run
//! through a `Nested` strategy: the general entry points ([`encode_body_v`],
//! [`decode_body_mode`]) call themselves; the typed entry points of the crate root
//! ([`encode_typed`], [`decode_typed`]) inline two more levels of the runner, so with a
//! device's constant table the body becomes straight-line code.
//!
//! Decoding writes into whatever state slice it is given: callers that need "a failed load
//! changes nothing" decode into a staging copy and commit it on success (see [`crate::load`]).
//! Nothing here panics: state ranges are fetched with `get`, and a state slice of the wrong
//! size is an error.

use crate::copy::copy;
use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Count, Elem, Field, Kind, MAX_SUBSECTIONS, Plan, PlanTail, Scalar, Vmsd};
use crate::sink::Sink;
use crate::wire::{Reader, SubsectionHeader, record};

fn state_err(offset: usize) -> Error {
    Error::new(
        offset,
        ErrorKind::BufferTooSmall {
            needed: offset,
            capacity: 0,
        },
    )
}

/// `state[off..off + len]`, or `None`.
#[inline(always)]
fn span(state: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    state.get(off..off.checked_add(len)?)
}

/// `state[off..off + len]`, or `None`.
#[inline(always)]
fn span_mut(state: &mut [u8], off: usize, len: usize) -> Option<&mut [u8]> {
    state.get_mut(off..off.checked_add(len)?)
}

fn range(state: &[u8], off: usize, len: usize, at: usize) -> Result<&[u8]> {
    span(state, off, len).ok_or_else(|| state_err(at))
}

fn range_mut(state: &mut [u8], off: usize, len: usize, at: usize) -> Result<&mut [u8]> {
    span_mut(state, off, len).ok_or_else(|| state_err(at))
}

/// The state offset of element `i` of `size` bytes stored from `off` (saturates: an offset
/// past the state is refused by [`range`] as any other).
fn elem_at(off: usize, i: usize, size: usize) -> usize {
    off.saturating_add(i.saturating_mul(size))
}

/// Reads a count and checks it against the storage capacity ([`Count::bounded`]), with the
/// error a caller reports.
pub(crate) fn bounded_count(state: &[u8], c: &Count, at: usize) -> Result<usize> {
    if let Some(n) = c.bounded(state) {
        return Ok(n);
    }
    let count = c.value(state).ok_or_else(|| state_err(at))?;
    Err(Error::new(
        at,
        ErrorKind::CountOverCapacity {
            count,
            capacity: c.capacity as u64,
        },
    ))
}

/// Whether field `f` is present in a body of `version` given the state so far.
#[inline]
pub fn is_present(f: &Field, state: &[u8], version: u32) -> bool {
    match f.exists {
        Some(test) => test(state, version),
        None => f.since <= version,
    }
}

/// Reads a scalar's bytes as u64 (sign-extended for signed types), for errors and JSON.
pub fn scalar_value(s: Scalar, b: &[u8]) -> u64 {
    let w = s.width().min(b.len()).min(8);
    let mut a = [0u8; 8];
    if let (Some(dst), Some(src)) = (a.get_mut(8usize.saturating_sub(w)..), b.get(..w)) {
        dst.copy_from_slice(src);
    }
    let v = u64::from_be_bytes(a);
    // Below 8 bytes the shift is 8..=56 (none for 0 bytes, whose value is 0).
    let shift = 64u32.saturating_sub(8u32.saturating_mul(w as u32)) % 64;
    if s.is_signed() {
        ((v.wrapping_shl(shift) as i64).wrapping_shr(shift)) as u64
    } else {
        v
    }
}

/// Runs `$body` with `$sub` bound to each subsection of `$subs` and `$i` to its index, in
/// order. When `$unroll` (a constant: the nested bodies are inlined), the first eight are
/// written out one by one: with a constant table the compiler then sees each subsection (its
/// `needed` predicate becomes a direct, usually inlined, call), which it does not do for a loop
/// it declines to unroll. Otherwise one loop, which keeps the general path small.
macro_rules! each_subsection {
    ($unroll:expr, $subs:expr, |$i:ident, $sub:ident| $body:block) => {{
        let subs: &[crate::schema::Subsection] = $subs;
        if $unroll {
            each_subsection!(@one subs, $i, $sub, $body, 0 1 2 3 4 5 6 7);
            for ($i, $sub) in subs.iter().enumerate().skip(8) $body
        } else {
            for ($i, $sub) in subs.iter().enumerate() $body
        }
    }};
    (@one $subs:ident, $i:ident, $sub:ident, $body:block, $($k:literal)*) => {
        $(
            if let Some($sub) = $subs.get($k) {
                let $i: usize = $k;
                $body
            }
        )*
    };
}

/// The bit of subsection `i` in a mask of those seen (none past [`MAX_SUBSECTIONS`], which
/// `Vmsd::check` refuses).
#[inline(always)]
fn bit(i: usize) -> u32 {
    u32::try_from(i)
        .ok()
        .and_then(|i| 1u32.checked_shl(i))
        .unwrap_or(0)
}

/// The header of a subsection described by `v`, at its current version.
#[inline(always)]
fn header(v: &Vmsd) -> SubsectionHeader<'static> {
    SubsectionHeader {
        name: v.name.as_bytes(),
        version: v.version_id,
    }
}

/// What the planned fields step leaves to follow the copy.
enum Tail<'s> {
    /// Nothing, or the bytes of a variable-array tail.
    Bytes(&'s [u8]),
    /// The body of a nested struct: its description, its state and the field's name.
    Struct(&'static Vmsd, usize, &'static str),
}

/// The plan's checks pass on `state` (when `checks`) and its tail is within it: the tail (see [`Tail`]), or
/// `None` when the plan declines.
#[inline(always)]
fn tail<'s>(p: &Plan, version: u32, state: &'s [u8], at: usize, checks: bool) -> Option<Tail<'s>> {
    if checks && !p.checks.iter().flatten().all(|check| check(state, version)) {
        return None;
    }
    match p.tail {
        None => Some(Tail::Bytes(&[])),
        Some(PlanTail::VArray { count, elem_size }) => {
            let n = count.bounded(state)?.checked_mul(elem_size as usize)?;
            span(state, at, n).map(Tail::Bytes)
        }
        Some(PlanTail::Struct { offset, vmsd, name }) => {
            span(state, offset as usize, vmsd.size)?;
            Some(Tail::Struct(vmsd, offset as usize, name))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Encodes the body of `vmsd` at its current version from `state`: fields, then the needed
/// subsections (each with its header and its own subsections).
#[inline(always)]
pub fn encode_body<S: Sink + ?Sized>(
    vmsd: &Vmsd,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    encode_body_v(vmsd, vmsd.version_id, state, out)
}

/// Encodes the body of `vmsd` as `version` (older layouts leave out the fields gated above it).
/// The general encoder: one instance per sink type, nested bodies are calls of itself.
pub fn encode_body_v<S: Sink + ?Sized>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    erased(out, |out| general_body(vmsd, version, state, out))
}

/// [`encode_body_v`] over the one sink type of the general encoder.
fn general_body(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    mut out: &mut dyn Sink<Error = Error>,
) -> Result<()> {
    encode_run(vmsd, version, state, &mut out, Call, Call)
}

/// A sink seen as `dyn Sink<Error = Error>`: the general encoder ([`encode_body_v`],
/// [`encode_fields`]) is one function for every sink type (on a firmware: one copy, not one per
/// sink), while the typed path stays generic and inlined. A failure of the sink itself is kept
/// here; the codec error that carries it up is only a marker, which [`erased`] replaces by it.
struct Erased<'a, S: Sink + ?Sized> {
    sink: &'a mut S,
    failed: Option<S::Error>,
}

impl<S: Sink + ?Sized> Erased<'_, S> {
    /// Keeps the sink's error `e` and returns the marker that carries it up.
    #[cold]
    fn keep(&mut self, e: S::Error) -> Error {
        self.failed = Some(e);
        state_err(self.sink.position())
    }
}

impl<S: Sink + ?Sized> Sink for Erased<'_, S> {
    type Error = Error;

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.sink.write(bytes).map_err(|e| self.keep(e))
    }

    fn position(&self) -> usize {
        self.sink.position()
    }

    fn write_zeros(&mut self, n: usize) -> Result<()> {
        self.sink.write_zeros(n).map_err(|e| self.keep(e))
    }

    fn write_with_zeros(&mut self, bytes: &[u8], zeros: &[(u32, u32)]) -> Result<()> {
        self.sink
            .write_with_zeros(bytes, zeros)
            .map_err(|e| self.keep(e))
    }
}

/// Runs the general encoder `f` over `out` seen as one sink type ([`Erased`]): its result, the
/// sink's own error where the sink failed.
#[inline(always)]
fn erased<S: Sink + ?Sized>(
    out: &mut S,
    f: impl FnOnce(&mut dyn Sink<Error = Error>) -> Result<()>,
) -> Result<(), S::Error> {
    let mut e = Erased {
        sink: out,
        failed: None,
    };
    match (f(&mut e), e.failed) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(failed)) => Err(failed),
        (Err(codec), None) => Err(codec.into()),
    }
}

/// [`encode_body`] into `buf` for the typed entry points, returning the bytes written: the
/// runner and the bodies nested in it two levels deep inlined over a sink that declines with no
/// detail ([`encode_planned`]; with a device's constant table: straight-line code), and where it
/// declines the general encoder from the start, which writes the same bytes or the exact error.
#[inline(always)]
pub fn encode_typed(vmsd: &Vmsd, state: &[u8], buf: &mut [u8]) -> Result<usize> {
    if let Some(n) = encode_planned(vmsd, state, buf) {
        return Ok(n);
    }
    let mut sink = crate::SliceSink::new(buf);
    encode_body(vmsd, state, &mut sink)?;
    Ok(sink.finish())
}

/// The inlined half of [`encode_typed`]: the body's bytes in `buf` and their length, or `None`
/// where the general encoder would report an error (or `buf` is too small).
#[inline(always)]
pub fn encode_planned(vmsd: &Vmsd, state: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut fits = Fits { buf, pos: 0 };
    encode_run(
        vmsd,
        vmsd.version_id,
        state,
        &mut fits,
        Inline(Call, LEAF),
        LEAF,
    )
    .ok()?;
    Some(fits.pos)
}

/// A sink over a caller slice that declines with no detail where [`crate::SliceSink`] reports:
/// a failure costs the inlined runner nothing to carry. It lends itself by value
/// ([`Sink::lend`]), so nothing takes its address and it lives in registers.
struct Fits<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

/// A [`Fits`] declined.
struct Declined;

impl From<Error> for Declined {
    #[inline(always)]
    fn from(_: Error) -> Declined {
        Declined
    }
}

impl Fits<'_> {
    /// The next `n` bytes of the slice, advancing past them.
    #[inline(always)]
    fn next(&mut self, n: usize) -> Result<&mut [u8], Declined> {
        let end = self.pos.checked_add(n).ok_or(Declined)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(Declined)?;
        self.pos = end;
        Ok(dst)
    }
}

impl Sink for Fits<'_> {
    type Error = Declined;

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) -> Result<(), Declined> {
        copy(self.next(bytes.len())?, bytes);
        Ok(())
    }

    #[inline(always)]
    fn position(&self) -> usize {
        self.pos
    }

    #[inline(always)]
    fn write_zeros(&mut self, n: usize) -> Result<(), Declined> {
        self.next(n)?.fill(0);
        Ok(())
    }

    #[inline(always)]
    fn write_with_zeros(&mut self, bytes: &[u8], zeros: &[(u32, u32)]) -> Result<(), Declined> {
        crate::copy::copy_with_zeros(self.next(bytes.len())?, bytes, zeros);
        Ok(())
    }

    #[inline(always)]
    fn lend<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut lent = Fits {
            buf: core::mem::take(&mut self.buf),
            pos: self.pos,
        };
        let out = f(&mut lent);
        *self = lent;
        out
    }
}

/// How a runner reaches the bodies nested in the one it runs (a struct tail, subsection
/// bodies): [`Call`] the general entry points, [`Inline`] the runner itself one level down.
/// The typed entry points inline a struct tail's body and the subsection bodies of both (the
/// bodies nested in those are calls): [`LEAF`] and `Inline(Call, LEAF)`.
trait Nested: Copy {
    /// Whether the runner writes the subsections out one by one ([`each_subsection!`]).
    const UNROLL: bool;
    /// Encodes the body of `v` at its current version.
    fn encode<S: Sink>(self, v: &'static Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error>;
    /// Decodes a body of `v` at its current version.
    fn decode(
        self,
        v: &'static Vmsd,
        r: &mut Reader<'_>,
        state: &mut [u8],
        mode: Mode,
    ) -> Result<()>;
}

/// Nested bodies through the general entry points ([`encode_body`], [`decode_body_mode`]).
#[derive(Clone, Copy)]
struct Call;

/// Nested bodies through the runner inlined: theirs through `T` (a struct tail) and `U`
/// (subsections).
#[derive(Clone, Copy)]
struct Inline<T, U>(T, U);

/// A nested body inlined, the bodies nested in it called.
const LEAF: Inline<Call, Call> = Inline(Call, Call);

impl Nested for Call {
    const UNROLL: bool = false;

    #[inline(always)]
    fn encode<S: Sink>(self, v: &'static Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error> {
        out.lend(|out| encode_body(v, state, out))
    }

    #[inline(always)]
    fn decode(
        self,
        v: &'static Vmsd,
        r: &mut Reader<'_>,
        state: &mut [u8],
        mode: Mode,
    ) -> Result<()> {
        lend(r, |r| decode_body_mode(v, v.version_id, r, state, mode))
    }
}

impl<T: Nested, U: Nested> Nested for Inline<T, U> {
    const UNROLL: bool = true;

    #[inline(always)]
    fn encode<S: Sink>(self, v: &'static Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error> {
        encode_run(v, v.version_id, state, out, self.0, self.1)
    }

    #[inline(always)]
    fn decode(
        self,
        v: &'static Vmsd,
        r: &mut Reader<'_>,
        state: &mut [u8],
        mode: Mode,
    ) -> Result<()> {
        decode_run(v, v.version_id, r, state, mode, self.0, self.1)
    }
}

/// The encode runner: the state's size, the fields (the plan's copy when the table has a plan
/// at `version` and it takes this state, field by field otherwise), the nested struct tail
/// through `tail_body`, then each needed subsection: its header ([`SubsectionHeader::emit`])
/// and its body through `sub_body`.
#[inline(always)]
fn encode_run<S: Sink, T: Nested, U: Nested>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
    tail_body: T,
    sub_body: U,
) -> Result<(), S::Error> {
    if state.len() != vmsd.size {
        return Err(state_err(out.position()).in_field(vmsd.name).into());
    }
    match vmsd.plan_at(version).and_then(|p| {
        let (start, len) = (p.start as usize, p.len as usize);
        let end = start.checked_add(len)?;
        Some((
            p,
            state.get(start..end)?,
            tail(p, version, state, end, true)?,
        ))
    }) {
        Some((p, fields, tail)) => {
            out.write_with_zeros(fields, p.zeros())?;
            match tail {
                Tail::Bytes([]) => {}
                Tail::Bytes(b) => out.write(b)?,
                Tail::Struct(v, at, _) => {
                    tail_body.encode(v, span(state, at, v.size).unwrap_or(&[]), out)?
                }
            }
        }
        None => out.lend(|out| encode_fields(vmsd, version, state, out))?,
    }
    each_subsection!(U::UNROLL, vmsd.subsections, |_i, sub| {
        if sub.needed.is_none_or(|needed| needed(state)) {
            header(sub.vmsd).emit(out)?;
            sub_body.encode(sub.vmsd, state, out)?;
        }
    });
    Ok(())
}

/// Encodes the subsections of `vmsd` whose `needed` holds, in table order.
pub fn encode_subsections<S: Sink>(vmsd: &Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error> {
    for sub in vmsd.subsections {
        if sub.needed.is_none_or(|needed| needed(state)) {
            header(sub.vmsd).emit(out)?;
            encode_body(sub.vmsd, state, out)?;
        }
    }
    Ok(())
}

/// Encodes only the fields of `vmsd` (no subsections).
///
/// Present fields that are plain copies of adjacent storage go out as one write per run (the
/// same bytes; one sink call per run instead of one per field, which dominated the encode time
/// of tables made of many small scalars).
pub fn encode_fields<S: Sink + ?Sized>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    erased(out, |out| fields(vmsd, version, state, out))
}

/// [`encode_fields`] over the one sink type of the general encoder.
fn fields(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut dyn Sink<Error = Error>,
) -> Result<()> {
    let mut run: Option<Run> = None;
    for f in vmsd.fields {
        if !is_present(f, state, version) {
            continue;
        }
        if let Some(len) = copy_len(f) {
            match run.as_mut() {
                Some(r) if r.end == f.offset => r.end = r.end.saturating_add(len),
                _ => {
                    write_run(run.take(), state, out)?;
                    run = Some(Run {
                        start: f.offset,
                        end: f.offset.saturating_add(len),
                        name: f.name,
                    });
                }
            }
            continue;
        }
        write_run(run.take(), state, out)?;
        encode_field(f, version, state, out)?;
    }
    write_run(run, state, out)
}

/// Adjacent state bytes that go to the wire unchanged; `name` is the first field's.
#[derive(Clone, Copy)]
struct Run {
    start: usize,
    end: usize,
    name: &'static str,
}

fn write_run(run: Option<Run>, state: &[u8], out: &mut dyn Sink<Error = Error>) -> Result<()> {
    if let Some(r) = run {
        let at = out.position();
        let bytes = state
            .get(r.start..r.end)
            .ok_or_else(|| state_err(at).in_field(r.name))?;
        out.write(bytes)?;
    }
    Ok(())
}

/// Wire bytes of a present field that are exactly its storage bytes (scalars, arrays,
/// buffers, `_EQUAL` values, nested structs whose body is their storage), or `None`.
#[inline]
fn copy_len(f: &Field) -> Option<usize> {
    match f.kind {
        Kind::Scalar(s) | Kind::Equal(s) => Some(s.width()),
        Kind::Array { elem, len } => elem.width().checked_mul(len),
        Kind::Buffer { len } => Some(len),
        Kind::Struct { vmsd, len } => struct_copy_len(vmsd, len),
        _ => None,
    }
}

/// Wire bytes of `len` nested bodies of `vmsd` that are exactly their storage (its
/// [`Vmsd::storage_plan`] covers the whole struct, writes no zeros and no subsection follows).
#[inline(never)]
fn struct_copy_len(vmsd: &Vmsd, len: usize) -> Option<usize> {
    match vmsd.storage_plan() {
        Some(p) if p.len as usize == vmsd.size && p.n_zeros == 0 && vmsd.subsections.is_empty() => {
            vmsd.size.checked_mul(len)
        }
        _ => None,
    }
}

fn encode_field(
    f: &Field,
    version: u32,
    state: &[u8],
    out: &mut dyn Sink<Error = Error>,
) -> Result<()> {
    let at = out.position();
    let ctx = |e: Error| e.in_field(f.name);
    let structs = |vmsd: &Vmsd, n: usize, out: &mut dyn Sink<Error = Error>| -> Result<()> {
        for i in 0..n {
            let s = range(state, elem_at(f.offset, i, vmsd.size), vmsd.size, at).map_err(ctx)?;
            encode_body(vmsd, s, out)?;
        }
        Ok(())
    };
    let n = match f.kind {
        Kind::Scalar(_) | Kind::Array { .. } | Kind::Buffer { .. } | Kind::Equal(_) => {
            f.storage_size()
        }
        Kind::Unused { len } => return out.write_zeros(len),
        Kind::Struct { vmsd, len } => return structs(vmsd, len, out),
        Kind::VArray { elem, count } => {
            let n = bounded_count(state, &count, at).map_err(ctx)?;
            match elem {
                Elem::Scalar(s) => n.saturating_mul(s.width()),
                Elem::Struct(vmsd) => return structs(vmsd, n, out),
            }
        }
        Kind::VBuffer { size } => bounded_count(state, &size, at).map_err(ctx)?,
        Kind::Validate { test } if !test(state, version) => {
            return Err(ctx(Error::new(
                at,
                ErrorKind::ValidationFailed { check: f.name },
            )));
        }
        Kind::Validate { .. } => return Ok(()),
        Kind::NullPtr => return out.write(&[crate::NULL_PTR_MARKER]),
    };
    out.write(range(state, f.offset, n, at).map_err(ctx)?)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes a body of `vmsd` at stream `version` from `r` into `state` (the staging copy).
///
/// Checks `minimum_version_id <= version <= version_id`, runs `pre_load`, decodes the present
/// fields, the subsections, applies absent-subsection defaults, runs the validation hook and then
/// the post-load hook.
pub fn decode_body(vmsd: &Vmsd, version: u32, r: &mut Reader<'_>, state: &mut [u8]) -> Result<()> {
    decode_body_mode(vmsd, version, r, state, Mode::Load)
}

/// How strictly a body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A real load: `_EQUAL` fields must match the state, `VALIDATE` entries and the
    /// validation hooks run.
    Load,
    /// Structure only (finding where a body ends): `_EQUAL` values are stored rather than
    /// compared and device invariants are not checked; counts are still bounded by capacity.
    Structure,
}

/// [`decode_body`] with an explicit [`Mode`]. The general decoder: nested bodies are calls of
/// itself.
pub fn decode_body_mode(
    vmsd: &Vmsd,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    decode_run(vmsd, version, r, state, mode, Call, Call)
}

/// Loads the whole `body` of `vmsd` at `version` into `state` (a staging copy; `base` is the
/// absolute offset of `body[0]`), the body consumed exactly, for the typed entry points of the
/// crate root: the runner and the bodies nested in it two levels deep inlined (with a device's
/// constant table: straight-line code). The state and any error are [`decode_body`]'s.
#[inline(always)]
pub fn decode_typed(
    vmsd: &Vmsd,
    version: u32,
    body: &[u8],
    base: usize,
    state: &mut [u8],
) -> Result<()> {
    let mut r = Reader::new(body, base);
    decode_run(
        vmsd,
        version,
        &mut r,
        state,
        Mode::Load,
        Inline(Call, LEAF),
        LEAF,
    )?;
    match r.peek(0) {
        // QEMU: "Missing section footer" — the body holds bytes the description does not.
        Some(b) => Err(r.error(ErrorKind::MissingFooter { found: b })),
        None => Ok(()),
    }
}

/// The decode runner: the version and the state's size, `pre_load`, the fields (the plan's
/// copy when the table has a plan at `version` and it takes this input, field by field from
/// the same place otherwise), the nested struct tail through `tail_body`, the subsections
/// (those in table order at their current version through `sub_body`, any other the general
/// way), the
/// defaults of the absent ones, then (on loads) `validate` and `post_load`.
#[inline(always)]
fn decode_run<T: Nested, U: Nested>(
    vmsd: &Vmsd,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
    tail_body: T,
    sub_body: U,
) -> Result<()> {
    let start = r.offset();
    check_version(vmsd, version, r)?;
    if state.len() != vmsd.size {
        return Err(state_err(start).in_field(vmsd.name));
    }
    if let Some(pre) = vmsd.pre_load {
        pre(state);
    }
    match vmsd
        .plan_at(version)
        .filter(|p| !(p.has_equal && mode == Mode::Load))
        .and_then(|p| planned_in(p, version, r.rest(), state, mode))
    {
        Some((n, tail)) => {
            lend(r, |r| r.skip(n))?;
            if let Tail::Struct(v, at, name) = tail {
                let s = span_mut(state, at, v.size).ok_or_else(|| state_err(r.offset()))?;
                tail_body
                    .decode(v, r, s, mode)
                    .map_err(|e| e.in_field(name))?;
            }
        }
        None => lend(r, |r| decode_fields(vmsd.fields, version, r, state, mode))?,
    }
    let mut starts = [usize::MAX; MAX_SUBSECTIONS];
    let mut seen = 0u32;
    each_subsection!(U::UNROLL, vmsd.subsections, |i, sub| {
        if let Some(n) = exact_header(vmsd.name, sub.vmsd, r.rest()) {
            lend(r, |r| r.skip(n))?;
            seen |= bit(i);
            if let Some(s) = starts.get_mut(i) {
                *s = r.offset();
            }
            let v = sub.vmsd;
            sub_body
                .decode(v, r, state, mode)
                .map_err(|e| e.in_field(v.name))?;
        }
    });
    if r.peek(0) == Some(record::SUBSECTION) {
        lend(r, |r| {
            decode_subsections(vmsd, r, state, &mut starts, &mut seen, mode)
        })?;
    }
    each_subsection!(U::UNROLL, vmsd.subsections, |i, sub| {
        if seen & bit(i) == 0
            && let Some(absent) = sub.absent
        {
            absent(state);
        }
    });
    if let (Some(validate), Mode::Load) = (vmsd.validate, mode)
        && let Err(v) = validate(state, version)
    {
        // Only a table with subsections reads `starts` (and, with a constant table, keeps it).
        let starts = if vmsd.subsections.is_empty() {
            &[][..]
        } else {
            &starts[..]
        };
        return Err(invalid(vmsd, version, state, start, starts, v));
    }
    if let (Some(post), Mode::Load) = (vmsd.post_load, mode) {
        post(state, version);
    }
    Ok(())
}

/// `f` over a copy of `r`, whose position `r` then takes: the runner lends its reader to no
/// call, so inlined with a local reader (the typed entry points) it stays in registers.
#[inline(always)]
fn lend<'a, T>(r: &mut Reader<'a>, f: impl FnOnce(&mut Reader<'a>) -> T) -> T {
    let mut lent = *r;
    let out = f(&mut lent);
    *r = lent;
    out
}

/// The length of the header of subsection `v` of the description named `parent` when `input`
/// starts with exactly it at its current version: what the general loop would read.
#[inline(always)]
fn exact_header(parent: &str, v: &Vmsd, input: &[u8]) -> Option<usize> {
    let name = v.name.as_bytes();
    let (head, rest) = input.split_at_checked(2)?;
    let (n, rest) = rest.split_at_checked(name.len())?;
    let ok = name.len() > parent.len()
        && name.starts_with(parent.as_bytes())
        && v.version_id <= 0xff
        && head == [record::SUBSECTION, u8::try_from(name.len()).ok()?]
        && n == name
        && rest.get(..4)? == v.version_id.to_be_bytes();
    ok.then_some(name.len().saturating_add(6))
}

/// The error of a refused `validate`, at the field it names.
#[cold]
fn invalid(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    start: usize,
    starts: &[usize],
    v: crate::Violation,
) -> Error {
    let at = locate_field(vmsd, version, state, start, starts, v.field);
    let e = Error::new(
        at,
        ErrorKind::Invalid {
            expected: v.expected,
            found: v.found,
        },
    );
    if v.field.is_empty() {
        e
    } else {
        e.in_field(v.field)
    }
}

/// The planned fields step of a load: the copied fields at the front of `body` into `state`
/// ([`copy_fields_in`]), the checks (on loads), the variable-array tail. The bytes read and the
/// nested struct tail that follows ([`Tail::Struct`]), or `None` when the
/// plan declines: the input is short, a bool is bad, a check, a count or a nested hook refuses.
/// Nothing is consumed then, and the field-by-field step that runs instead writes every byte
/// of the state the copy touched again first.
#[inline(always)]
fn planned_in(
    p: &Plan,
    version: u32,
    body: &[u8],
    state: &mut [u8],
    mode: Mode,
) -> Option<(usize, Tail<'static>)> {
    let len = copy_fields_in(p, body, state, mode == Mode::Load)?;
    let at = (p.start as usize).checked_add(len)?;
    match tail(p, version, state, at, mode == Mode::Load)? {
        Tail::Bytes(b) => {
            let n = b.len();
            copy(span_mut(state, at, n)?, body.get(len..len.checked_add(n)?)?);
            Some((len.checked_add(n)?, Tail::Bytes(&[])))
        }
        Tail::Struct(v, off, name) => Some((len, Tail::Struct(v, off, name))),
    }
}

/// The copied fields of `p` at the front of `body` into `state`: checks the bools in the
/// input, copies, clears the unused ranges and, when `hooks`, runs the `validate`/`post_load`
/// hooks of the inlined nested structs. `_EQUAL` values are copied, not compared (loads
/// exclude such plans). The bytes read, or `None` when the input is short, a bool is bad or a
/// hook refuses (the state may then be partly written).
#[inline(always)]
fn copy_fields_in(p: &Plan, body: &[u8], state: &mut [u8], hooks: bool) -> Option<usize> {
    let len = p.len as usize;
    let src = body.get(..len)?;
    for &(o, n) in p.bools() {
        if !span(src, o as usize, n as usize)?.iter().all(|&b| b <= 1) {
            return None;
        }
    }
    let dst = span_mut(state, p.start as usize, len)?;
    copy(dst, src);
    for &(o, n) in p.zeros() {
        // Unused bytes arrive as zeros from QEMU: only clear them when they are not. Testing
        // the input rather than writing the state keeps the state's stores whole, so a copy
        // of the fresh state right after does not wait on partly overlapping stores.
        if span(src, o as usize, n as usize)?
            .iter()
            .fold(0, |acc, &b| acc | b)
            != 0
        {
            span_mut(dst, o as usize, n as usize)?.fill(0);
        }
    }
    if hooks {
        // The plan fills `hooks` from the front: the first `None` ends them.
        for h in p.hooks.iter().map_while(Option::as_ref) {
            let v = h.vmsd;
            for i in 0..h.count as usize {
                let s = span_mut(state, elem_at(h.offset as usize, i, v.size), v.size)?;
                if v.validate
                    .is_some_and(|validate| validate(s, v.version_id).is_err())
                {
                    return None;
                }
                if let Some(post) = v.post_load {
                    post(s, v.version_id);
                }
            }
        }
    }
    Some(len)
}

/// Best-effort absolute offset of a field named `name` in a body that started at `start`:
/// walks the present fields of the body and of the subsections that were decoded.
fn locate_field(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    start: usize,
    sub_starts: &[usize],
    name: &str,
) -> usize {
    fn walk(vmsd: &Vmsd, version: u32, state: &[u8], start: usize, name: &str) -> Option<usize> {
        let mut counter = crate::sink::CountingSink::new();
        for f in vmsd.fields {
            if !is_present(f, state, version) {
                continue;
            }
            if f.name == name {
                return start.checked_add(counter.count());
            }
            encode_field(f, version, state, &mut counter).ok()?;
        }
        None
    }
    if let Some(at) = walk(vmsd, version, state, start, name) {
        return at;
    }
    for (sub, &s) in vmsd.subsections.iter().zip(sub_starts) {
        if s != usize::MAX
            && let Some(at) = walk(sub.vmsd, sub.vmsd.version_id, state, s, name)
        {
            return at;
        }
    }
    start
}

/// The general subsection loop (docs/V3-WIRE.md §7.2): reads the subsections of `vmsd` at the
/// reader while the input looks like one (any order, any accepted version), recording where
/// each body began; `seen` holds those already read.
#[inline(never)]
fn decode_subsections(
    vmsd: &Vmsd,
    r: &mut Reader<'_>,
    state: &mut [u8],
    starts: &mut [usize; MAX_SUBSECTIONS],
    seen: &mut u32,
    mode: Mode,
) -> Result<()> {
    while let Some(name) = SubsectionHeader::peek_name(r, vmsd.name) {
        let at = r.offset();
        let Some((idx, sub)) = vmsd.subsection(name) else {
            return Err(Error::new(
                at,
                ErrorKind::UnknownSubsection {
                    name: crate::Name::new(name),
                },
            ));
        };
        let field = sub.vmsd.name;
        if *seen & bit(idx) != 0 {
            return Err(Error::new(
                at,
                ErrorKind::DuplicateSubsection { name: field },
            ));
        }
        *seen |= bit(idx);
        let h = SubsectionHeader::read(r)?;
        if h.version > 0xff {
            return Err(Error::new(
                r.offset().saturating_sub(4),
                ErrorKind::SubsectionVersionOverflow { found: h.version },
            )
            .in_field(field));
        }
        if let Some(s) = starts.get_mut(idx) {
            *s = r.offset();
        }
        decode_body_mode(sub.vmsd, h.version, r, state, mode).map_err(|e| e.in_field(field))?;
    }
    if SubsectionHeader::is_cut(r, vmsd.name) {
        return Err(r.error(ErrorKind::Truncated {
            needed: r.peek(1).map_or(0, usize::from).saturating_add(2),
            available: r.remaining(),
        }));
    }
    Ok(())
}

/// Decodes the present `fields`. Adjacent plain fields (no per-byte check) are read as one
/// run with one bounds check and one copy; when the input or the state is too short for a run,
/// its fields are decoded one by one so the error names the exact field and offset.
fn decode_fields(
    fields: &[Field],
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    // Indices into `fields` and the storage range they cover.
    let mut run: Option<(usize, usize, Run)> = None;
    for (i, f) in fields.iter().enumerate() {
        if f.exists.is_some() {
            // The predicate may read fields of the pending run.
            read_run(fields, run.take(), version, r, state, mode)?;
        }
        if !is_present(f, state, version) {
            continue;
        }
        if let Some(len) = plain_read_len(f) {
            match run.as_mut() {
                Some((_, last, s)) if s.end == f.offset => {
                    *last = i;
                    s.end = s.end.saturating_add(len);
                }
                _ => {
                    read_run(fields, run.take(), version, r, state, mode)?;
                    let s = Run {
                        start: f.offset,
                        end: f.offset.saturating_add(len),
                        name: f.name,
                    };
                    run = Some((i, i, s));
                }
            }
            continue;
        }
        read_run(fields, run.take(), version, r, state, mode)?;
        decode_field(f, version, r, state, mode).map_err(|e| e.in_field(f.name))?;
    }
    read_run(fields, run, version, r, state, mode)
}

fn read_run(
    fields: &[Field],
    run: Option<(usize, usize, Run)>,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    let Some((first, last, s)) = run else {
        return Ok(());
    };
    let len = s.end.saturating_sub(s.start);
    if r.remaining() >= len
        && let Some(dst) = state.get_mut(s.start..s.end)
    {
        copy(dst, r.bytes(len)?);
        return Ok(());
    }
    for f in fields.get(first..=last).unwrap_or(&[]) {
        if is_present(f, state, version) {
            decode_field(f, version, r, state, mode).map_err(|e| e.in_field(f.name))?;
        }
    }
    Ok(())
}

/// Wire bytes of a field that decode as a plain copy into its storage (no bool or `_EQUAL`
/// check, no nested hooks), or `None`.
#[inline]
fn plain_read_len(f: &Field) -> Option<usize> {
    match f.kind {
        Kind::Scalar(s) | Kind::Array { elem: s, .. } if s == Scalar::Bool => None,
        Kind::Scalar(s) => Some(s.width()),
        Kind::Array { elem, len } => elem.width().checked_mul(len),
        Kind::Buffer { len } => Some(len),
        _ => None,
    }
}

/// Refuses a byte other than 0 or 1 in `src` (bools read from offset `at`).
fn bools(src: &[u8], at: usize) -> Result<()> {
    match src.iter().enumerate().find(|&(_, &b)| b > 1) {
        Some((i, &found)) => Err(Error::new(
            at.saturating_add(i),
            ErrorKind::BadBool { found },
        )),
        None => Ok(()),
    }
}

fn decode_field(
    f: &Field,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    let at = r.offset();
    let structs = |vmsd: &Vmsd, n: usize, r: &mut Reader<'_>, state: &mut [u8]| -> Result<()> {
        for i in 0..n {
            let s = range_mut(state, elem_at(f.offset, i, vmsd.size), vmsd.size, at)?;
            decode_body_mode(vmsd, vmsd.version_id, r, s, mode)?;
        }
        Ok(())
    };
    let (n, bool_elems) = match f.kind {
        Kind::Scalar(s) | Kind::Array { elem: s, .. } => (f.storage_size(), s == Scalar::Bool),
        Kind::Buffer { len } => (len, false),
        Kind::Unused { len } => {
            r.skip(len)?;
            range_mut(state, f.offset, len, at)?.fill(0);
            return Ok(());
        }
        Kind::Equal(s) => {
            let w = s.width();
            let src = r.bytes(w)?;
            let local = range_mut(state, f.offset, w, at)?;
            if mode == Mode::Structure {
                local.copy_from_slice(src);
            } else if src != local {
                return Err(Error::new(
                    at,
                    ErrorKind::NotEqual {
                        expected: scalar_value(s, local),
                        found: scalar_value(s, src),
                    },
                ));
            }
            return Ok(());
        }
        Kind::Struct { vmsd, len } => return structs(vmsd, len, r, state),
        Kind::VArray { elem, count } => {
            let n = bounded_count(state, &count, at)?;
            match elem {
                Elem::Scalar(s) => (n.saturating_mul(s.width()), s == Scalar::Bool),
                Elem::Struct(vmsd) => return structs(vmsd, n, r, state),
            }
        }
        Kind::VBuffer { size } => (bounded_count(state, &size, at)?, false),
        Kind::Validate { test } => {
            if mode == Mode::Load && !test(state, version) {
                return Err(Error::new(
                    at,
                    ErrorKind::ValidationFailed { check: f.name },
                ));
            }
            return Ok(());
        }
        Kind::NullPtr => {
            let b = r.u8()?;
            if b != crate::NULL_PTR_MARKER {
                return Err(Error::new(at, ErrorKind::BadNullMarker { found: b }));
            }
            return Ok(());
        }
    };
    let src = r.bytes(n)?;
    if bool_elems {
        bools(src, at)?;
    }
    range_mut(state, f.offset, n, at)?.copy_from_slice(src);
    Ok(())
}

/// Checks `minimum_version_id <= version <= version_id` (errors at the reader's offset).
#[inline]
fn check_version(vmsd: &Vmsd, version: u32, r: &Reader<'_>) -> Result<()> {
    if version > vmsd.version_id {
        return Err(r.error(ErrorKind::VersionTooNew {
            found: version,
            max: vmsd.version_id,
        }));
    }
    if version < vmsd.minimum_version_id {
        return Err(r.error(ErrorKind::VersionTooOld {
            found: version,
            min: vmsd.minimum_version_id,
        }));
    }
    Ok(())
}

/// The first `vmsd.size` bytes of `scratch`, zeroed, for a structure-only decode.
fn zeroed_scratch<'s>(vmsd: &Vmsd, r: &Reader<'_>, scratch: &'s mut [u8]) -> Result<&'s mut [u8]> {
    let capacity = scratch.len();
    let s = scratch.get_mut(..vmsd.size).ok_or(Error::new(
        r.offset(),
        ErrorKind::BufferTooSmall {
            needed: vmsd.size,
            capacity,
        },
    ))?;
    s.fill(0);
    Ok(s)
}

/// Measures only the top-level fields of a body of `vmsd` at `version` (no subsections), decoding
/// them structurally into `scratch` (at least `vmsd.size` bytes). Returns the length of the
/// fields; the reader stops where the first top-level subsection (if any) begins. Used to split a
/// v3 body into fields and subsections (vmstate v4 conversion).
pub fn measure_fields(
    vmsd: &Vmsd,
    version: u32,
    r: &mut Reader<'_>,
    scratch: &mut [u8],
) -> Result<usize> {
    let start = r.position();
    check_version(vmsd, version, r)?;
    let s = zeroed_scratch(vmsd, r, scratch)?;
    if let Some(pre) = vmsd.pre_load {
        pre(s);
    }
    for f in vmsd.fields {
        if is_present(f, s, version) {
            decode_field(f, version, r, s, Mode::Structure).map_err(|e| e.in_field(f.name))?;
        }
    }
    Ok(r.position().saturating_sub(start))
}

/// Skips over a body of `vmsd` at `version` without keeping the result: decodes into `scratch`
/// (at least `vmsd.size` bytes, contents irrelevant) and returns the body length. Used to find
/// body ends when walking a stream.
pub fn measure_body(
    vmsd: &Vmsd,
    version: u32,
    r: &mut Reader<'_>,
    scratch: &mut [u8],
) -> Result<usize> {
    let start = r.position();
    let s = zeroed_scratch(vmsd, r, scratch)?;
    decode_body_mode(vmsd, version, r, s, Mode::Structure)?;
    Ok(r.position().saturating_sub(start))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::sink::SliceSink;
    use crate::{assert_layout, field, struct_field};
    use zerocopy::byteorder::big_endian::{U16, U32};

    #[repr(C)]
    struct Pair {
        x: u8,
        y: U16,
    }

    #[repr(C)]
    struct S {
        a: U32,
        b: U32,
        gap: [u8; 2],
        pairs: [Pair; 2],
        c: u8,
    }

    const PAIR: Vmsd = Vmsd::new("pair", 1, 1, 3).fields(&[field!(Pair, x), field!(Pair, y)]);
    const FIELDS: &[Field] = &[
        field!(S, a),
        field!(S, b),
        field!(S, gap).unused(),
        struct_field!(S, pairs, PAIR),
        field!(S, c).since(2),
    ];
    const T: Vmsd = Vmsd::new("s", 2, 1, 17).fields(FIELDS);
    assert_layout!(S, T, wire);

    /// Runs of plain fields (the nested struct array included) write the same bytes as
    /// field-by-field encoding; unused bytes are zeros whatever the storage holds.
    #[test]
    fn runs_encode_the_same_bytes() {
        let state: [u8; 17] = core::array::from_fn(|i| i as u8 + 1);
        let mut buf = [0xa5u8; 32];
        let mut out = SliceSink::new(&mut buf);
        encode_body(&T, &state, &mut out).unwrap();
        let n = out.finish();
        let mut want = state;
        want[8..10].fill(0);
        assert_eq!(&buf[..n], &want);
        let mut out = SliceSink::new(&mut buf);
        encode_body_v(&T, 1, &state, &mut out).unwrap();
        assert_eq!(out.written(), &want[..16]);
    }

    /// A body cut inside a run of plain fields fails at the exact field and offset, as
    /// field-by-field decoding does; every complete body decodes to the encoded state.
    #[test]
    fn runs_decode_with_exact_errors() {
        let wire: [u8; 17] =
            core::array::from_fn(|i| if (8..10).contains(&i) { 0 } else { i as u8 });
        let mut state = [0u8; 17];
        decode_body(&T, 2, &mut Reader::new(&wire, 100), &mut state).unwrap();
        assert_eq!(state, wire);
        for (cut, offset, field) in [(6, 104, "b"), (3, 100, "a"), (15, 114, "y"), (16, 116, "c")] {
            let e = decode_body(&T, 2, &mut Reader::new(&wire[..cut], 100), &mut [0u8; 17])
                .unwrap_err();
            assert_eq!((e.offset, e.field), (offset, Some(field)), "cut at {cut}");
            assert!(e.is_incomplete(), "cut at {cut}");
        }
    }

    // A table of every kind a plan inlines: scalars, an array, a buffer, a bool, a bool array,
    // an `_EQUAL`, unused bytes and a nested struct array whose description has a hook.
    #[repr(C)]
    struct Ch {
        on: u8,
        v: U16,
        pad: u8,
    }

    #[repr(C)]
    struct P {
        a: U32,
        arr: [U16; 2],
        buf: [u8; 3],
        flag: u8,
        flags: [u8; 2],
        eq: U16,
        gap: [u8; 2],
        ch: [Ch; 2],
        tail: u8,
    }

    fn ch_ok(s: &[u8], _v: u32) -> core::result::Result<(), crate::Violation> {
        if s[1] == 0xee {
            return Err(crate::Violation {
                field: "v",
                expected: crate::Expected::Rule("not 0xee.."),
                found: s[1] as u64,
            });
        }
        Ok(())
    }

    const CH: Vmsd = Vmsd::new("ch", 1, 1, 4)
        .fields(&[
            field!(Ch, on).boolean(),
            field!(Ch, v),
            field!(Ch, pad).unused(),
        ])
        .validate(ch_ok);
    const PF: &[Field] = &[
        field!(P, a),
        field!(P, arr),
        field!(P, buf),
        field!(P, flag).boolean(),
        Field::new(
            "flags",
            12,
            Kind::Array {
                elem: Scalar::Bool,
                len: 2,
            },
        ),
        field!(P, eq),
        field!(P, gap).unused(),
        struct_field!(P, ch, CH),
        field!(P, tail),
    ];
    const PT: Vmsd = Vmsd::new("p", 1, 1, 27).fields(PF);
    const PT_SLOW: Vmsd = PT.without_plan();
    const PF_EQ: &[Field] = &[
        field!(P, a),
        field!(P, arr),
        field!(P, buf),
        field!(P, flag).boolean(),
        Field::new(
            "flags",
            12,
            Kind::Array {
                elem: Scalar::Bool,
                len: 2,
            },
        ),
        field!(P, eq).equal(),
        field!(P, gap).unused(),
        struct_field!(P, ch, CH),
        field!(P, tail),
    ];
    const PE: Vmsd = Vmsd::new("p", 1, 1, 27).fields(PF_EQ);
    const PE_SLOW: Vmsd = PE.without_plan();
    assert_layout!(P, PT, wire);

    fn p_wire() -> [u8; 27] {
        let mut w: [u8; 27] = core::array::from_fn(|i| 0x40 + i as u8);
        w[11] = 1; // flag
        w[12] = 0; // flags
        w[13] = 1;
        w[18] = 1; // ch[0].on
        w[22] = 0; // ch[1].on
        w
    }

    #[test]
    fn plans_exist_only_for_plain_copies() {
        let p = PT.plan_for(1).expect("plain table has a plan");
        assert_eq!(p.len, 27);
        assert_eq!(p.zeros(), &[(16, 2), (21, 1), (25, 1)]);
        assert_eq!(p.bools(), &[(11, 3), (18, 1), (22, 1)]);
        assert!(!p.has_equal && PE.plan_for(1).is_some_and(|p| p.has_equal));
        assert!(p.hooks[0].is_some_and(|h| h.offset == 18 && h.count == 2));
        // T (gap unused, nested pairs, `c` since 2): a plan at version 2, none at 1.
        let t = T.plan_for(2).expect("T has a plan at its version");
        assert_eq!((t.len, t.zeros()), (17, &[(8u32, 2u32)][..]));
        assert!(T.plan_for(1).is_none());
        // The same table at another version compiles its own plan: all fields present at 3.
        let newer = T.versions(3, 1);
        assert!(newer.plan_for(2).is_none() && newer.plan_for(3).is_some_and(|p| p.len == 17));
        // Other fields compile their own plan too (here none: out of wire order).
        const SWAPPED5: &[Field] = &[
            field!(S, b),
            field!(S, a),
            field!(S, gap).unused(),
            struct_field!(S, pairs, PAIR),
            field!(S, c).since(2),
        ];
        assert!(T.fields(SWAPPED5).plan_for(2).is_none());
        // A predicate, a varray, a nested struct with subsections, a field out of wire order.
        fn yes(_: &[u8], _: u32) -> bool {
            true
        }
        const PRED: &[Field] = &[field!(S, a).exists(yes), field!(S, b)];
        assert!(crate::schema::Plan::compile(PRED, 1, 64).is_none());
        const VARR: &[Field] = &[
            field!(S, a),
            Field::new(
                "v",
                4,
                Kind::VArray {
                    elem: Elem::Scalar(Scalar::U8),
                    count: crate::schema::Count {
                        offset: 0,
                        ty: crate::schema::CountType::U8,
                        capacity: 4,
                    },
                },
            ),
        ];
        // A varray is no copy plan; it is the tail of a fast-path plan.
        let varr = crate::schema::Plan::compile(VARR, 1, 64).expect("a tail plan");
        assert!(!varr.is_copy() && (varr.start, varr.len) == (0, 4));
        assert!(matches!(
            varr.tail,
            Some(crate::schema::PlanTail::VArray { elem_size: 1, .. })
        ));
        const SUB: Vmsd = Vmsd::new("pair/sub", 1, 1, 3).fields(&[field!(Pair, x)]);
        static WITH_SUB: Vmsd = Vmsd::new("pair", 1, 1, 3)
            .fields(&[field!(Pair, x), field!(Pair, y)])
            .subsections(&[crate::schema::Subsection::new(&SUB, |_| true)]);
        assert!(WITH_SUB.plan_for(1).is_some(), "its own body is a copy");
        const NESTED: &[Field] = &[Field::new(
            "p",
            0,
            Kind::Struct {
                vmsd: &WITH_SUB,
                len: 1,
            },
        )];
        let nested = crate::schema::Plan::compile(NESTED, 1, 64).expect("a tail plan");
        assert!(!nested.is_copy() && nested.len == 0);
        assert!(matches!(
            nested.tail,
            Some(crate::schema::PlanTail::Struct { offset: 0, .. })
        ));
        // Not where the copy ends, or after a check: no plan.
        const NESTED_FIRST: &[Field] = &[
            Field::new(
                "p",
                0,
                Kind::Struct {
                    vmsd: &WITH_SUB,
                    len: 1,
                },
            ),
            field!(S, c),
        ];
        assert!(crate::schema::Plan::compile(NESTED_FIRST, 1, 64).is_none());
        const VARR_GAP: &[Field] = &[field!(S, a), VARR[1], field!(S, c)];
        assert!(crate::schema::Plan::compile(VARR_GAP, 1, 64).is_none());
        const CHECK_THEN_COPY: &[Field] = &[field!(S, a), Field::validate("ok", yes), field!(S, b)];
        assert!(crate::schema::Plan::compile(CHECK_THEN_COPY, 1, 64).is_none());
        let checked = crate::schema::Plan::compile(&CHECK_THEN_COPY[..2], 1, 64).expect("checks");
        assert!(!checked.is_copy() && checked.checks[0].is_some() && checked.len == 4);
        const SWAPPED: &[Field] = &[field!(S, b), field!(S, a)];
        assert!(crate::schema::Plan::compile(SWAPPED, 1, 64).is_none());
        // More than MAX_PLAN_RUNS zero runs.
        const ONE: Vmsd = Vmsd::new("one", 1, 1, 2).fields(&[
            Field::new("x", 0, Kind::Scalar(Scalar::U8)),
            Field::new("unused", 1, Kind::Unused { len: 1 }),
        ]);
        const MANY: &[Field] = &[Field::new("ones", 0, Kind::Struct { vmsd: &ONE, len: 9 })];
        assert!(crate::schema::Plan::compile(MANY, 1, 64).is_none());
        const EIGHT: &[Field] = &[Field::new("ones", 0, Kind::Struct { vmsd: &ONE, len: 8 })];
        assert!(crate::schema::Plan::compile(EIGHT, 1, 64).is_some());
    }

    fn encode_vec(vmsd: &Vmsd, state: &[u8], cap: usize) -> (Result<usize>, std::vec::Vec<u8>) {
        let mut buf = std::vec![0xa5u8; cap];
        let mut out = SliceSink::new(&mut buf);
        let r = encode_body(vmsd, state, &mut out).map(|()| out.position());
        (r, buf)
    }

    /// The planned encode writes the bytes field-by-field encoding writes (unused ranges as
    /// zeros whatever the storage holds), through a slice, a counter and the piecewise default;
    /// a too-small buffer fails the same way.
    #[test]
    fn planned_encode_matches_field_by_field() {
        let state: [u8; 27] = core::array::from_fn(|i| 0x80 + i as u8);
        let (fast, fb) = encode_vec(&PT, &state, 40);
        let (slow, sb) = encode_vec(&PT_SLOW, &state, 40);
        assert_eq!((fast.unwrap(), &fb), (27, &sb));
        assert_eq!(encode_vec(&PE, &state, 40).1, sb);
        let mut want = state;
        for (o, l) in [(16, 2), (21, 1), (25, 1)] {
            want[o..o + l].fill(0);
        }
        assert_eq!(&fb[..27], &want);
        assert_eq!(slow.unwrap(), 27);
        for cap in 0..27 {
            let (f, _) = encode_vec(&PT, &state, cap);
            let (s, _) = encode_vec(&PT_SLOW, &state, cap);
            assert_eq!(f.unwrap_err(), s.unwrap_err(), "capacity {cap}");
        }
        let mut c = crate::sink::CountingSink::new();
        encode_body(&PT, &state, &mut c).unwrap();
        assert_eq!(c.count(), 27);
        // The provided (piecewise) method of a sink that does not override it.
        struct V(std::vec::Vec<u8>);
        impl Sink for V {
            type Error = Error;
            fn write(&mut self, b: &[u8]) -> Result<()> {
                self.0.extend_from_slice(b);
                Ok(())
            }
            fn position(&self) -> usize {
                self.0.len()
            }
        }
        let mut v = V(std::vec::Vec::new());
        encode_body(&PT, &state, &mut v).unwrap();
        assert_eq!(v.0, &want);
    }

    fn decode_both(wire: &[u8], init: u8) -> (Result<[u8; 27]>, Result<[u8; 27]>) {
        decode_pair(&PT, &PT_SLOW, wire, init)
    }

    fn decode_pair(
        fast: &Vmsd,
        slow: &Vmsd,
        wire: &[u8],
        init: u8,
    ) -> (Result<[u8; 27]>, Result<[u8; 27]>) {
        let run = |vmsd: &Vmsd| {
            let mut st = [init; 27];
            st[14..16].copy_from_slice(&[0x4e, 0x4f]); // the `_EQUAL` value of p_wire()
            decode_body(vmsd, 1, &mut Reader::new(wire, 1000), &mut st).map(|()| st)
        };
        (run(fast), run(slow))
    }

    /// The planned decode gives the state field-by-field decoding gives, and on bad input
    /// (every cut, a bad bool at every bool byte, a wrong `_EQUAL`, a nested hook refusing) the
    /// same error, with the exact offset and field.
    #[test]
    fn planned_decode_matches_field_by_field() {
        let wire = p_wire();
        let (f, s) = decode_both(&wire, 0x77);
        assert_eq!(f.unwrap(), s.unwrap());
        // Unused bytes are skipped on the wire (non-zero here) and zeroed in the state.
        let mut want = wire;
        for (o, l) in [(16, 2), (21, 1), (25, 1)] {
            want[o..o + l].fill(0);
        }
        assert_eq!(decode_both(&wire, 0x77).0.unwrap(), want);
        for cut in 0..27 {
            let (f, s) = decode_both(&wire[..cut], 0);
            assert_eq!(f.unwrap_err(), s.unwrap_err(), "cut at {cut}");
        }
        for (at, field) in [
            (11, "flag"),
            (12, "flags"),
            (13, "flags"),
            (18, "on"),
            (22, "on"),
        ] {
            let mut bad = wire;
            bad[at] = 2;
            let (f, s) = decode_both(&bad, 0);
            let e = f.unwrap_err();
            assert_eq!(e, s.unwrap_err());
            assert_eq!((e.offset, e.field), (1000 + at, Some(field)));
            assert!(matches!(e.kind, ErrorKind::BadBool { found: 2 }));
        }
        let mut bad = wire;
        bad[23] = 0xee; // ch[1].v high byte: the nested hook refuses
        let (f, s) = decode_both(&bad, 0);
        let e = f.unwrap_err();
        assert_eq!(e, s.unwrap_err());
        assert!(matches!(e.kind, ErrorKind::Invalid { .. }), "{e:?}");
        // `_EQUAL`: compared field by field on load, stored by the plan in structure mode.
        let (f, s) = decode_pair(&PE, &PE_SLOW, &wire, 0);
        assert_eq!(f.unwrap(), s.unwrap());
        let mut bad = wire;
        bad[15] = 0;
        let (f, s) = decode_pair(&PE, &PE_SLOW, &bad, 0);
        let e = f.unwrap_err();
        assert_eq!(e, s.unwrap_err());
        assert!(matches!(e.kind, ErrorKind::NotEqual { .. }));
        let mut want = bad;
        for (o, l) in [(16, 2), (21, 1), (25, 1)] {
            want[o..o + l].fill(0);
        }
        for vmsd in [&PE, &PE_SLOW] {
            let mut st = [0u8; 27];
            let mut r = Reader::new(&bad, 0);
            decode_body_mode(vmsd, 1, &mut r, &mut st, Mode::Structure).unwrap();
            assert_eq!((st, r.remaining()), (want, 0));
        }
    }

    /// A load through the plan stops at a bad bool inside a nested struct with the exact offset.
    #[test]
    fn planned_load_reports_bad_bool_offset() {
        let mut wire = p_wire();
        wire[22] = 0x30;
        let e = decode_body(&PT, 1, &mut Reader::new(&wire, 7), &mut [0u8; 27]).unwrap_err();
        assert_eq!((e.offset, e.field), (29, Some("on")));
        assert!(matches!(e.kind, ErrorKind::BadBool { found: 0x30 }));
    }

    /// The runner's fast cases against field-by-field decoding on a table of every shape they
    /// take: copied fields with a bool and unused bytes, a check, a scalar variable-array tail,
    /// `pre_load`, `validate`, `post_load`, subsections with defaults, and a wrapper whose
    /// nested struct tail carries them, followed by the wrapper's own subsection.
    mod runner {
        extern crate std;
        use std::vec::Vec;

        use super::super::*;
        use crate::schema::Subsection;
        use crate::sink::SliceSink;
        use crate::{Expected, Violation, check, field, mutate, pred, varray};
        use zerocopy::byteorder::big_endian::{U16, U32};
        use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

        #[repr(C)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
        struct D {
            a: U32,
            flag: u8,
            gap: [u8; 2],
            n: u8,
            v: [U16; 4],
            x: u8,
            y: U16,
            loads: u8,
        }

        #[repr(C)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone, Copy)]
        struct W {
            d: D,
            z: u8,
        }

        const D_SIZE: usize = core::mem::size_of::<D>();
        const W_SIZE: usize = core::mem::size_of::<W>();

        fn n_ok(s: &[u8], _v: u32) -> bool {
            s[7] <= 3
        }

        const X: Vmsd = Vmsd::new("d/x", 1, 1, D_SIZE).fields(&[field!(D, x)]);
        const Y: Vmsd = Vmsd::new("d/y", 2, 1, D_SIZE).fields(&[field!(D, y)]);
        static DV: Vmsd = Vmsd::new("d", 3, 1, D_SIZE)
            .fields(&[
                field!(D, a),
                field!(D, flag).boolean(),
                field!(D, gap).unused(),
                field!(D, n),
                Field::validate("n ok", n_ok),
                varray!(D, v, count = n),
            ])
            .subsections(&[
                Subsection::new(&X, pred!(D, |s| s.x != 0)).absent(mutate!(D, |s| s.x = 7)),
                Subsection::new(&Y, pred!(D, |s| s.y.get() != 0x55)),
            ])
            .pre_load(mutate!(D, |s| s.y = U16::new(0x55)))
            .validate(check!(D, |s, _v| if s.a.get() == 0xdead_beef {
                Err(Violation {
                    field: "a",
                    expected: Expected::Rule("not dead beef"),
                    found: s.a.get() as u64,
                })
            } else {
                Ok(())
            }))
            .post_load(|s, _v| {
                if let Some(l) = s.get_mut(D_SIZE - 1) {
                    *l = l.wrapping_add(1);
                }
            });
        static DV_SLOW: Vmsd = DV.without_plan();
        const Z: Vmsd = Vmsd::new("w/z", 1, 1, W_SIZE).fields(&[field!(W, z)]);
        static WV: Vmsd = Vmsd::new("w", 1, 1, W_SIZE)
            .fields(&[crate::struct_field!(W, d, DV)])
            .subsections(&[Subsection::new(&Z, pred!(W, |s| s.z != 0))]);
        static WV_SLOW: Vmsd = Vmsd::new("w", 1, 1, W_SIZE)
            .fields(&[crate::struct_field!(W, d, DV_SLOW)])
            .subsections(&[Subsection::new(&Z, pred!(W, |s| s.z != 0))])
            .without_plan();

        /// The typed runner (`fast`) and field-by-field decoding of the same table without
        /// plans (`slow`): the state or the error.
        fn loads(fast: &Vmsd, slow: &Vmsd, body: &[u8], init: &[u8]) -> [Result<Vec<u8>>; 2] {
            let mut state = init.to_vec();
            let typed = decode_typed(fast, fast.version_id, body, 0, &mut state).map(|()| state);
            let mut state = init.to_vec();
            let mut r = Reader::new(body, 0);
            let general = decode_body(slow, slow.version_id, &mut r, &mut state).and_then(|()| {
                match r.peek(0) {
                    Some(b) => Err(r.error(ErrorKind::MissingFooter { found: b })),
                    None => Ok(state),
                }
            });
            [typed, general]
        }

        /// The typed runner and field-by-field encoding without plans: the bytes or the error.
        fn encodes(fast: &Vmsd, slow: &Vmsd, state: &[u8]) -> [Result<Vec<u8>>; 2] {
            let mut buf = std::vec![0xa5u8; 256];
            let typed = encode_typed(fast, state, &mut buf).map(|n| buf[..n].to_vec());
            let mut sink = SliceSink::new(&mut buf);
            let general = encode_body(slow, state, &mut sink).map(|()| sink.written().to_vec());
            [typed, general]
        }

        /// States of `W` over every count (one too many included) and subsection combination.
        fn states() -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for n in 0..=4u8 {
                for (x, y, z) in [
                    (0, 0x55, 0),
                    (3, 0x55, 0),
                    (0, 9, 0),
                    (3, 9, 1),
                    (0, 0x55, 2),
                ] {
                    let mut d = D::new_zeroed();
                    d.a = U32::new(0x0102_0304 + n as u32);
                    d.flag = n & 1;
                    d.n = n;
                    d.v = core::array::from_fn(|i| U16::new(0x1111 * (i as u16 + 1)));
                    d.x = x;
                    d.y = U16::new(y);
                    out.push(W { d, z }.as_bytes().to_vec());
                }
            }
            out
        }

        #[test]
        fn the_table_compiles_into_tail_plans() {
            let d = DV.plan_at(3).expect("d plan");
            assert_eq!(
                (d.start, d.len, d.zeros(), d.bools()),
                (0, 8, &[(5, 2)][..], &[(4, 1)][..])
            );
            assert!(matches!(
                d.tail,
                Some(PlanTail::VArray { elem_size: 2, .. })
            ));
            assert!(matches!(
                WV.plan_at(1).and_then(|p| p.tail),
                Some(PlanTail::Struct { name: "d", .. })
            ));
            assert_eq!(Y.plan_for(2).map(|p| (p.start, p.len)), Some((17, 2)));
        }

        /// Every state: the typed runner writes field-by-field encoding's bytes (or its error,
        /// for a count over the check); loading those bytes gives field-by-field decoding's
        /// state.
        #[test]
        fn the_runner_equals_field_by_field() {
            let mut both = 0;
            for w in states() {
                let d = &w[..D_SIZE];
                for (fast, slow, state) in [(&DV, &DV_SLOW, d), (&WV, &WV_SLOW, &w[..])] {
                    let [typed, general] = encodes(fast, slow, state);
                    assert_eq!(typed, general, "encode");
                    let mut buf = std::vec![0u8; 256];
                    let planned = encode_planned(fast, state, &mut buf).map(|n| buf[..n].to_vec());
                    let Ok(bytes) = general else {
                        assert!(state[7] > 3, "only the bad count fails");
                        assert_eq!(planned, None, "the inlined runner declines");
                        continue;
                    };
                    assert_eq!(planned.as_ref(), Some(&bytes), "the inlined runner's bytes");
                    let init = std::vec![0u8; state.len()];
                    let [typed, general] = loads(fast, slow, &bytes, &init);
                    assert!(general.is_ok());
                    assert_eq!(typed, general);
                    both += 1;
                }
            }
            assert_eq!(both, 40);
        }

        /// A sink with its own error type that fills up after `room` bytes.
        struct Short {
            n: usize,
            room: usize,
        }

        #[derive(Debug, PartialEq)]
        enum Fail {
            Codec(Error),
            Full { at: usize },
        }

        impl From<Error> for Fail {
            fn from(e: Error) -> Fail {
                Fail::Codec(e)
            }
        }

        impl Sink for Short {
            type Error = Fail;

            fn write(&mut self, bytes: &[u8]) -> core::result::Result<(), Fail> {
                if self.n + bytes.len() > self.room {
                    return Err(Fail::Full { at: self.n });
                }
                self.n += bytes.len();
                Ok(())
            }

            fn position(&self) -> usize {
                self.n
            }
        }

        /// The general encoder runs over one sink type (`Erased`): a failing sink's own error
        /// comes back unchanged wherever it fails, and a codec error converts into the sink's
        /// error type as it is.
        #[test]
        fn the_general_encoder_returns_the_sinks_own_error() {
            let (mut full, mut codec) = (0, 0);
            for w in states() {
                for vmsd in [&WV, &WV_SLOW] {
                    let mut buf = std::vec![0u8; 256];
                    let mut sink = SliceSink::new(&mut buf);
                    match encode_body(vmsd, &w, &mut sink) {
                        Ok(()) => {
                            let len = sink.finish();
                            for room in 0..len {
                                let mut short = Short { n: 0, room };
                                let got = encode_body(vmsd, &w, &mut short);
                                assert!(
                                    matches!(got, Err(Fail::Full { at }) if at <= room),
                                    "{got:?}"
                                );
                                full += 1;
                            }
                            let mut enough = Short { n: 0, room: len };
                            assert_eq!(encode_body(vmsd, &w, &mut enough), Ok(()));
                            assert_eq!(enough.n, len);
                        }
                        Err(e) => {
                            let mut short = Short { n: 0, room: 256 };
                            assert_eq!(encode_body(vmsd, &w, &mut short), Err(Fail::Codec(e)));
                            codec += 1;
                        }
                    }
                }
            }
            assert!(full > 100 && codec == 10, "{full} {codec}");
        }

        /// Changed bytes, cut bodies, swapped and repeated subsections: the runner's fast cases
        /// give field-by-field decoding's state or its exact error.
        #[test]
        fn the_runner_never_disagrees() {
            let (mut ok, mut refused) = (0, 0);
            let mut check = |fast: &Vmsd, slow: &Vmsd, body: &[u8], init: &[u8]| {
                let [typed, general] = loads(fast, slow, body, init);
                assert_eq!(typed, general, "{body:02x?}");
                if typed.is_ok() {
                    ok += 1;
                } else {
                    refused += 1;
                }
            };
            for w in states() {
                for (fast, slow, state) in [(&DV, &DV_SLOW, &w[..D_SIZE]), (&WV, &WV_SLOW, &w[..])]
                {
                    let [_, Ok(body)] = encodes(fast, slow, state) else {
                        continue;
                    };
                    let init: Vec<u8> = (0..state.len() as u8).collect();
                    let mut b = body.clone();
                    for i in 0..body.len() {
                        for v in [0, 1, 2, 3, 4, 5, 0x55, 0xef, 0xff, body[i] ^ 0x80] {
                            b[i] = v;
                            check(fast, slow, &b, &init);
                        }
                        b[i] = body[i];
                        check(fast, slow, &body[..i], &init);
                    }
                    // The x and y subsections swapped, and one repeated.
                    let x = [&[5u8, 3][..], b"d/x", &1u32.to_be_bytes(), &[3]].concat();
                    let y = [&[5u8, 3][..], b"d/y", &2u32.to_be_bytes(), &[0, 9]].concat();
                    let fields = &body[..8 + 2 * body[7] as usize];
                    for subs in [[&y[..], &x[..]], [&x[..], &x[..]], [&x[..], &y[..]]] {
                        let whole = [fields, subs[0], subs[1]].concat();
                        check(fast, slow, &whole, &init);
                    }
                }
            }
            assert!(ok > 100 && refused > 100, "{ok} loaded, {refused} refused");
            // A count within the storage that the VALIDATE check refuses (4 > 3), with all
            // four elements present: neither loads it.
            let body = [&[0, 0, 0, 1, 0, 0, 0, 4][..], &[0x22; 8]].concat();
            let init = std::vec![0u8; D_SIZE];
            let [typed, general] = loads(&DV, &DV_SLOW, &body, &init);
            assert_eq!(typed, general);
            assert!(typed.is_err());
            let mut three = body.clone();
            three[7] = 3;
            three.truncate(14);
            assert!(loads(&DV, &DV_SLOW, &three, &init)[0].is_ok());
        }

        /// Past the eight subsections written out one by one, the rest go through the loop.
        #[test]
        fn more_than_eight_subsections() {
            #[repr(C)]
            #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
            struct M {
                head: u8,
                s: [u8; 10],
            }
            macro_rules! sub {
                ($($k:literal $name:literal),*) => {
                    &[$(Subsection::new(
                        &Vmsd::new($name, 1, 1, 11).fields(&[Field::new(
                            "s",
                            1 + $k,
                            crate::schema::Kind::Scalar(crate::Scalar::U8),
                        )]),
                        |st| st[1 + $k] != 0,
                    )
                    .absent(|st| st[1 + $k] = 0xab)),*]
                };
            }
            static MV: Vmsd = Vmsd::new("m", 1, 1, 11)
                .fields(&[field!(M, head)])
                .subsections(
                    sub!(0 "m/0", 1 "m/1", 2 "m/2", 3 "m/3", 4 "m/4", 5 "m/5", 6 "m/6",
                    7 "m/7", 8 "m/8", 9 "m/9"),
                );
            static MV_SLOW: Vmsd = MV.without_plan();
            for mask in [0u16, 1, 0x100, 0x200, 0x3ff, 0x2a5, 0x15a] {
                let state: Vec<u8> = (0..11)
                    .map(|i| {
                        if i == 0 || mask & (1 << (i - 1)) != 0 {
                            i as u8 + 1
                        } else {
                            0
                        }
                    })
                    .collect();
                let [typed, general] = encodes(&MV, &MV_SLOW, &state);
                assert_eq!(typed, general, "{mask:#x}");
                let bytes = general.expect("encodes");
                let init = std::vec![0x11u8; 11];
                let [typed, general] = loads(&MV, &MV_SLOW, &bytes, &init);
                assert!(general.is_ok());
                assert_eq!(typed, general, "{mask:#x}");
            }
        }
    }
}
