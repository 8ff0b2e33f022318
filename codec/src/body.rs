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
//! Decoding writes into whatever state slice it is given: callers that need "a failed load
//! changes nothing" decode into a staging copy and commit it on success (see [`crate::load`]).
//! Nothing here panics: state ranges are fetched with `get`, and a state slice of the wrong
//! size is an error.

use crate::error::{Error, ErrorKind, Result};
use crate::schema::{Count, Elem, Field, Kind, Plan, PlanTail, Scalar, Vmsd};
use crate::sink::Sink;
use crate::wire::{Reader, SubsectionHeader};

fn state_err(offset: usize) -> Error {
    Error::new(
        offset,
        ErrorKind::BufferTooSmall {
            needed: offset,
            capacity: 0,
        },
    )
}

fn range(state: &[u8], off: usize, len: usize, at: usize) -> Result<&[u8]> {
    off.checked_add(len)
        .and_then(|end| state.get(off..end))
        .ok_or_else(|| state_err(at))
}

fn range_mut(state: &mut [u8], off: usize, len: usize, at: usize) -> Result<&mut [u8]> {
    off.checked_add(len)
        .and_then(|end| state.get_mut(off..end))
        .ok_or_else(|| state_err(at))
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
    let mut a = [0u8; 8];
    let w = s.width().min(b.len());
    a[8 - w..].copy_from_slice(&b[..w]);
    let v = u64::from_be_bytes(a);
    if s.is_signed() && w < 8 {
        let shift = 64 - 8 * w as u32;
        (((v << shift) as i64) >> shift) as u64
    } else {
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Runs `$body` with `$sub` bound to each subsection of `$subs` and `$i` to its index, in
/// order. The first eight are written out one by one: with a constant table the compiler then
/// sees each subsection (its `needed` predicate becomes a direct, usually inlined, call), which
/// it does not do for a loop it declines to unroll.
macro_rules! each_subsection {
    ($subs:expr, |$i:ident, $sub:ident| $body:block) => {{
        let subs: &[crate::schema::Subsection] = $subs;
        each_subsection!(@one subs, $i, $sub, $body, 0 1 2 3 4 5 6 7);
        for ($i, $sub) in subs.iter().enumerate().skip(8) $body
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
pub(crate) use each_subsection;

/// Encodes the body of `vmsd` at its current version from `state`: fields, then the needed
/// subsections (each with its header and its own subsections).
#[inline(always)]
pub fn encode_body<S: Sink>(vmsd: &Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error> {
    encode_body_v(vmsd, vmsd.version_id, state, out)
}

/// Encodes the body of `vmsd` as `version` (older layouts leave out the fields gated above it).
pub fn encode_body_v<S: Sink>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    encode::<S, true>(vmsd, version, state, out)
}

/// The body encoder: the state's size, the fields ([`encode_planned`] when the table has a plan
/// at `version`, field by field otherwise or when the plan declines), then the needed
/// subsections. `#[inline(always)]`: with a device's constant table (the typed entry points)
/// the plan, the predicates and the subsection headers are constants. The bodies nested in it
/// (a struct tail with its subsections, subsection bodies) are inlined one level deep and
/// reached through [`encode_body`] below that.
///
/// Without `GENERAL` it only takes the planned steps and declines (an error) where the general
/// ones would run ([`encode_planned_into`]).
#[inline(always)]
fn encode<S: Sink, const GENERAL: bool>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    if state.len() != vmsd.size {
        return Err(state_err(out.position()).in_field(vmsd.name).into());
    }
    // The general path takes copy plans only, so that it stays small (it runs for any table,
    // once per sink type); the planned steps take every plan.
    let plan = if GENERAL {
        vmsd.plan_for(version)
    } else {
        vmsd.plan_at(version)
    };
    let planned = match plan {
        Some(p) => encode_planned(p, version, state, out)?,
        None => Planned::Declined,
    };
    match planned {
        Planned::Done => {}
        // The general path (any table, one copy per sink) stays small: nested bodies are calls.
        Planned::Struct(inner, nested) if GENERAL => encode_body(inner, nested, out)?,
        Planned::Struct(inner, nested) => {
            if encode_flat_fields::<S, GENERAL>(inner, nested, out)? {
                encode_subsections_of::<S, GENERAL>(inner, nested, out)?;
            } else {
                general::<S, GENERAL>(out)?;
                encode_body(inner, nested, out)?;
            }
        }
        Planned::Declined => {
            general::<S, GENERAL>(out)?;
            encode_fields(vmsd, version, state, out)?;
        }
    }
    encode_subsections_of::<S, GENERAL>(vmsd, state, out)
}

/// `encode` of the current version taking only the planned steps, into `buf`: the bytes
/// written, or `None` where the general path would run or `buf` is short. What the typed entry
/// points try first; [`encode_body`] writes the same bytes or reports the exact error.
#[inline(always)]
pub fn encode_planned_into(vmsd: &Vmsd, state: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut fits = Fits { buf, pos: 0 };
    encode::<_, false>(vmsd, vmsd.version_id, state, &mut fits).ok()?;
    Some(fits.pos)
}

/// Where [`encode`] leaves its planned steps: an error unless `GENERAL`.
#[inline(always)]
fn general<S: Sink, const GENERAL: bool>(out: &S) -> Result<(), S::Error> {
    if GENERAL {
        Ok(())
    } else {
        Err(state_err(out.position()).into())
    }
}

/// A sink over a caller slice that declines (with no detail) where a [`crate::SliceSink`]
/// reports ([`encode_planned_into`]). Nothing takes its address, so it lives in registers.
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
        crate::copy::copy(self.next(bytes.len())?, bytes);
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
}

/// What [`encode_planned`] did.
enum Planned<'s> {
    /// Nothing written: the checks or the count refused, encode field by field.
    Declined,
    /// The body's fields are written.
    Done,
    /// The fields before the nested struct tail are written; the tail's body (this table over
    /// this state) follows.
    Struct(&'static Vmsd, &'s [u8]),
}

/// The fields of a body compiled into `p`: when its checks pass and its count is within the
/// storage, one copy of the fields (unused ranges as zeros), then the variable-array tail.
/// Nothing is written when it declines: the field-by-field path then fails with the exact
/// check, field and offset.
#[inline(always)]
fn encode_planned<'s, S: Sink>(
    p: &Plan,
    version: u32,
    state: &'s [u8],
    out: &mut S,
) -> Result<Planned<'s>, S::Error> {
    if !p.checks.iter().flatten().all(|check| check(state, version)) {
        return Ok(Planned::Declined);
    }
    let (start, len) = (p.start as usize, p.len as usize);
    let (extra, done) = match p.tail {
        None => (0, Planned::Done),
        Some(PlanTail::VArray { count, elem_size }) => {
            match count
                .bounded(state)
                .and_then(|n| n.checked_mul(elem_size as usize))
            {
                Some(extra) => (extra, Planned::Done),
                None => return Ok(Planned::Declined),
            }
        }
        Some(PlanTail::Struct { offset, vmsd }) => {
            let offset = offset as usize;
            match offset
                .checked_add(vmsd.size)
                .and_then(|end| state.get(offset..end))
            {
                Some(nested) => (0, Planned::Struct(vmsd, nested)),
                None => return Ok(Planned::Declined),
            }
        }
    };
    let end = start.checked_add(len);
    let (Some(fields), Some(more)) = (
        end.and_then(|end| state.get(start..end)),
        end.and_then(|end| state.get(end..end.checked_add(extra)?)),
    ) else {
        return Ok(Planned::Declined);
    };
    out.write_with_zeros(fields, p.zeros())?;
    if extra > 0 {
        out.write(more)?;
    }
    Ok(done)
}

/// The fields of a body at its current version whose plan has no struct tail, inlined; false
/// (nothing written) for any other body, which the caller encodes with [`encode_body`].
#[inline(always)]
fn encode_flat_fields<S: Sink, const GENERAL: bool>(
    vmsd: &Vmsd,
    state: &[u8],
    out: &mut S,
) -> Result<bool, S::Error> {
    match vmsd.plan_at(vmsd.version_id) {
        Some(p) if state.len() == vmsd.size && !matches!(p.tail, Some(PlanTail::Struct { .. })) => {
            if !matches!(
                encode_planned(p, vmsd.version_id, state, out)?,
                Planned::Done
            ) {
                general::<S, GENERAL>(out)?;
                encode_fields(vmsd, vmsd.version_id, state, out)?;
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// The needed subsections of `vmsd`, in table order: each one's header
/// ([`SubsectionHeader::emit`]), then its body (inlined when it has no subsections of its own).
#[inline(always)]
fn encode_subsections_of<S: Sink, const GENERAL: bool>(
    vmsd: &Vmsd,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    if GENERAL {
        for sub in vmsd.subsections {
            if sub.needed.is_none_or(|needed| needed(state)) {
                header(sub.vmsd).emit(out)?;
                encode_body(sub.vmsd, state, out)?;
            }
        }
        return Ok(());
    }
    each_subsection!(vmsd.subsections, |_i, sub| {
        if sub.needed.is_none_or(|needed| needed(state)) {
            let v = sub.vmsd;
            header(v).emit(out)?;
            if !(v.subsections.is_empty() && encode_flat_fields::<S, GENERAL>(v, state, out)?) {
                general::<S, GENERAL>(out)?;
                encode_body(v, state, out)?;
            }
        }
    });
    Ok(())
}

/// The header of a subsection described by `v`, at its current version.
#[inline(always)]
fn header(v: &Vmsd) -> SubsectionHeader<'static> {
    SubsectionHeader {
        name: v.name.as_bytes(),
        version: v.version_id,
    }
}

/// Encodes the subsections of `vmsd` whose `needed` holds, in table order.
pub fn encode_subsections<S: Sink>(vmsd: &Vmsd, state: &[u8], out: &mut S) -> Result<(), S::Error> {
    encode_subsections_of::<S, true>(vmsd, state, out)
}

/// Encodes only the fields of `vmsd` (no subsections).
///
/// Present fields that are plain copies of adjacent storage go out as one write per run (the
/// same bytes; one sink call per run instead of one per field, which dominated the encode time
/// of tables made of many small scalars).
pub fn encode_fields<S: Sink>(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
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

fn write_run<S: Sink>(run: Option<Run>, state: &[u8], out: &mut S) -> Result<(), S::Error> {
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

fn encode_field<S: Sink>(
    f: &Field,
    version: u32,
    state: &[u8],
    out: &mut S,
) -> Result<(), S::Error> {
    let at = out.position();
    let ctx = |e: Error| e.in_field(f.name);
    match f.kind {
        Kind::Scalar(_) | Kind::Array { .. } | Kind::Buffer { .. } | Kind::Equal(_) => {
            out.write(range(state, f.offset, f.storage_size(), at).map_err(ctx)?)?;
        }
        Kind::Unused { len } => out.write_zeros(len)?,
        Kind::Struct { vmsd, len } => {
            for i in 0..len {
                let off = f.offset + i * vmsd.size;
                let s = range(state, off, vmsd.size, at).map_err(ctx)?;
                encode_body(vmsd, s, out)?;
            }
        }
        Kind::VArray { elem, count } => {
            let n = bounded_count(state, &count, at).map_err(ctx)?;
            match elem {
                Elem::Scalar(s) => {
                    out.write(range(state, f.offset, n * s.width(), at).map_err(ctx)?)?;
                }
                Elem::Struct(vmsd) => {
                    for i in 0..n {
                        let off = f.offset + i * vmsd.size;
                        let s = range(state, off, vmsd.size, at).map_err(ctx)?;
                        encode_body(vmsd, s, out)?;
                    }
                }
            }
        }
        Kind::VBuffer { size } => {
            let n = bounded_count(state, &size, at).map_err(ctx)?;
            out.write(range(state, f.offset, n, at).map_err(ctx)?)?;
        }
        Kind::Validate { test } => {
            if !test(state, version) {
                return Err(ctx(Error::new(
                    at,
                    ErrorKind::ValidationFailed { check: f.name },
                ))
                .into());
            }
        }
        Kind::NullPtr => out.write(&[crate::NULL_PTR_MARKER])?,
    }
    Ok(())
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

/// [`decode_body`] with an explicit [`Mode`].
pub fn decode_body_mode(
    vmsd: &Vmsd,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    let start = r.offset();
    check_version(vmsd, version, r)?;
    if state.len() != vmsd.size {
        return Err(state_err(start).in_field(vmsd.name));
    }
    if let Some(pre) = vmsd.pre_load {
        pre(state);
    }
    let planned = match vmsd.plan_for(version) {
        Some(p) if !(p.has_equal && mode == Mode::Load) => decode_planned(p, r, state, mode)?,
        _ => false,
    };
    if !planned {
        decode_fields(vmsd.fields, version, r, state, mode)?;
    }
    let mut starts = [usize::MAX; crate::schema::MAX_SUBSECTIONS];
    decode_subsections(vmsd, r, state, &mut starts, mode)?;
    if let (Some(validate), Mode::Load) = (vmsd.validate, mode)
        && let Err(v) = validate(state, version)
    {
        let at = locate_field(vmsd, version, state, start, &starts, v.field);
        let mut e = Error::new(
            at,
            ErrorKind::Invalid {
                expected: v.expected,
                found: v.found,
            },
        );
        if !v.field.is_empty() {
            e = e.in_field(v.field);
        }
        return Err(e);
    }
    if let (Some(post), Mode::Load) = (vmsd.post_load, mode) {
        post(state, version);
    }
    Ok(())
}

/// Decodes the fields of a body compiled into `plan` with one copy
/// ([`crate::planned::copy_fields_in`]: bools checked in the input, unused ranges cleared, on
/// loads the hooks of the inlined nested structs). Returns false, with the reader not advanced,
/// when the input is short, a bool is bad or a nested hook refuses: the caller then decodes
/// field by field, which fails with the exact field and offset (every byte of the state the
/// copy touched is written again first).
fn decode_planned(
    plan: &crate::schema::Plan,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<bool> {
    match crate::planned::copy_fields_in(plan, r.rest(), state, mode == Mode::Load) {
        Some(len) => {
            r.skip(len)?;
            Ok(true)
        }
        None => Ok(false),
    }
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
                return Some(start + counter.count());
            }
            encode_field(f, version, state, &mut counter).ok()?;
        }
        None
    }
    if let Some(at) = walk(vmsd, version, state, start, name) {
        return at;
    }
    for (i, sub) in vmsd.subsections.iter().enumerate() {
        let s = sub_starts.get(i).copied().unwrap_or(usize::MAX);
        if s != usize::MAX
            && let Some(at) = walk(sub.vmsd, sub.vmsd.version_id, state, s, name)
        {
            return at;
        }
    }
    start
}

/// Decodes the subsections following a body (docs/V3-WIRE.md §7.2), recording where each body began.
fn decode_subsections(
    vmsd: &Vmsd,
    r: &mut Reader<'_>,
    state: &mut [u8],
    starts: &mut [usize; crate::schema::MAX_SUBSECTIONS],
    mode: Mode,
) -> Result<()> {
    let mut seen: u32 = 0;
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
        if seen & (1 << idx) != 0 {
            return Err(Error::new(
                at,
                ErrorKind::DuplicateSubsection { name: field },
            ));
        }
        seen |= 1 << idx;
        let h = SubsectionHeader::read(r)?;
        if h.version > 0xff {
            return Err(Error::new(
                r.offset() - 4,
                ErrorKind::SubsectionVersionOverflow { found: h.version },
            )
            .in_field(field));
        }
        starts[idx] = r.offset();
        decode_body_mode(sub.vmsd, h.version, r, state, mode).map_err(|e| e.in_field(field))?;
    }
    if SubsectionHeader::is_cut(r, vmsd.name) {
        return Err(r.error(ErrorKind::Truncated {
            needed: 2 + r.peek(1).map_or(0, |l| l as usize),
            available: r.remaining(),
        }));
    }
    for (idx, sub) in vmsd.subsections.iter().enumerate() {
        if seen & (1 << idx) == 0
            && let Some(absent) = sub.absent
        {
            absent(state);
        }
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
    let len = s.end - s.start;
    if r.remaining() >= len
        && let Some(dst) = state.get_mut(s.start..s.end)
    {
        crate::copy::copy(dst, r.bytes(len)?);
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

fn decode_field(
    f: &Field,
    version: u32,
    r: &mut Reader<'_>,
    state: &mut [u8],
    mode: Mode,
) -> Result<()> {
    let at = r.offset();
    match f.kind {
        Kind::Scalar(Scalar::Bool) => {
            let b = r.u8()?;
            if b > 1 {
                return Err(Error::new(at, ErrorKind::BadBool { found: b }));
            }
            range_mut(state, f.offset, 1, at)?[0] = b;
        }
        Kind::Array {
            elem: Scalar::Bool, ..
        } => {
            let n = f.storage_size();
            let src = r.bytes(n)?;
            if let Some(i) = src.iter().position(|&b| b > 1) {
                return Err(Error::new(at + i, ErrorKind::BadBool { found: src[i] }));
            }
            range_mut(state, f.offset, n, at)?.copy_from_slice(src);
        }
        Kind::Scalar(_) | Kind::Array { .. } | Kind::Buffer { .. } => {
            let n = f.storage_size();
            let src = r.bytes(n)?;
            range_mut(state, f.offset, n, at)?.copy_from_slice(src);
        }
        Kind::Unused { len } => {
            r.skip(len)?;
            range_mut(state, f.offset, len, at)?.fill(0);
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
        }
        Kind::Struct { vmsd, len } => {
            for i in 0..len {
                let off = f.offset + i * vmsd.size;
                let s = range_mut(state, off, vmsd.size, at)?;
                decode_body_mode(vmsd, vmsd.version_id, r, s, mode)?;
            }
        }
        Kind::VArray { elem, count } => {
            let n = bounded_count(state, &count, at)?;
            match elem {
                Elem::Scalar(s) => {
                    let len = n * s.width();
                    let src = r.bytes(len)?;
                    if s == Scalar::Bool
                        && let Some(i) = src.iter().position(|&b| b > 1)
                    {
                        return Err(Error::new(at + i, ErrorKind::BadBool { found: src[i] }));
                    }
                    range_mut(state, f.offset, len, at)?.copy_from_slice(src);
                }
                Elem::Struct(vmsd) => {
                    for i in 0..n {
                        let off = f.offset + i * vmsd.size;
                        let s = range_mut(state, off, vmsd.size, at)?;
                        decode_body_mode(vmsd, vmsd.version_id, r, s, mode)?;
                    }
                }
            }
        }
        Kind::VBuffer { size } => {
            let n = bounded_count(state, &size, at)?;
            let src = r.bytes(n)?;
            range_mut(state, f.offset, n, at)?.copy_from_slice(src);
        }
        Kind::Validate { test } => {
            if mode == Mode::Load && !test(state, version) {
                return Err(Error::new(
                    at,
                    ErrorKind::ValidationFailed { check: f.name },
                ));
            }
        }
        Kind::NullPtr => {
            let b = r.u8()?;
            if b != crate::NULL_PTR_MARKER {
                return Err(Error::new(at, ErrorKind::BadNullMarker { found: b }));
            }
        }
    }
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
    Ok(r.position() - start)
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
    Ok(r.position() - start)
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
}
