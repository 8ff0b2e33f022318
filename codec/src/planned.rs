//! Straight-line encode and load of bodies whose description, and the descriptions of their
//! subsections, compiled into copy [`Plan`]s.
//!
//! The typed entry points ([`crate::encode_body_into`], [`crate::encode_section_into`],
//! [`crate::decode`], [`crate::load`]) try these first. They are `#[inline(always)]`: called with
//! a device's `T::VMSD`, a constant, the compiler sees the plan's length, runs and hooks and
//! the subsection table, and the body becomes a fixed-size copy, a few stores and direct
//! (usually inlined) calls of the device's predicates and checks.
//!
//! Used directly they are a cheaper first attempt for a caller that keeps its own fallback;
//! they never produce an error. Whenever something is not the common case (no plan, a short
//! buffer or body, a subsection out of table order or at another version, a bad bool, a
//! refused check), they return `None`/`false` and the caller runs the general path of
//! [`crate::body`] from the original state, which writes the same bytes or reports the exact
//! error. Tests compare the two paths byte for byte on every device.

use crate::body::each_subsection;
use crate::copy::copy;
use crate::schema::{Plan, PlanTail, Subsection, Vmsd};
use crate::wire::record;

/// The plan of `vmsd` at its current version (any shape).
#[inline(always)]
fn current_plan(vmsd: &Vmsd) -> Option<&Plan> {
    vmsd.plan_at(vmsd.version_id)
}

/// The nested struct tail of `p`, if that is its tail.
#[inline(always)]
fn struct_tail(p: &Plan) -> Option<(usize, &'static Vmsd)> {
    match p.tail {
        Some(PlanTail::Struct { offset, vmsd }) => Some((offset as usize, vmsd)),
        _ => None,
    }
}

/// Bytes of the variable-array tail of `p` for `state` (0 without one), or `None` when its
/// count is out of bounds.
#[inline(always)]
fn tail_len(p: &Plan, state: &[u8]) -> Option<usize> {
    match p.tail {
        Some(PlanTail::VArray { count, elem_size }) => {
            count.bounded(state)?.checked_mul(elem_size as usize)
        }
        _ => Some(0),
    }
}

/// Runs the `VMSTATE_VALIDATE` checks of `p`.
#[inline(always)]
fn checks_pass(p: &Plan, version: u32, state: &[u8]) -> bool {
    p.checks.iter().flatten().all(|check| check(state, version))
}

// ---------------------------------------------------------------------------------------------
// Loading

/// Loads a whole body of `vmsd` at `version` into `state` (the caller's staging copy): the same
/// steps as [`crate::body::decode_body`] in the same order (`pre_load`, fields, checks, tail,
/// subsections in table order at their current version, absent-subsection defaults,
/// `validate`, `post_load`), and the body must be consumed exactly. False when anything is not
/// the planned case; `state` may then be partly written and must be restored before the
/// general path runs.
#[inline(always)]
pub fn load(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> bool {
    load_consumed(vmsd, version, body, state) == Some(body.len())
}

/// [`load`] returning the bytes consumed.
#[inline(always)]
fn load_consumed(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> Option<usize> {
    let p = current_plan(vmsd)?;
    let Some((offset, inner)) = struct_tail(p) else {
        return load_flat(vmsd, version, body, state);
    };
    if state.len() != vmsd.size || version != vmsd.version_id {
        return None;
    }
    if let Some(pre) = vmsd.pre_load {
        pre(state);
    }
    let mut n = load_fields(p, version, body, state)?;
    let nested = state.get_mut(offset..offset.checked_add(inner.size)?)?;
    n = n.checked_add(load_flat(inner, inner.version_id, body.get(n..)?, nested)?)?;
    n = n.checked_add(load_subsections(vmsd, body.get(n..)?, state)?)?;
    finish(vmsd, version, state).then_some(n)
}

/// [`load_consumed`] for a description whose plan has no nested struct tail.
#[inline(always)]
fn load_flat(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> Option<usize> {
    let n = load_head(vmsd, version, body, state)?;
    let n = n.checked_add(load_subsections(vmsd, body.get(n..)?, state)?)?;
    finish(vmsd, version, state).then_some(n)
}

/// [`load_flat`] for a subsection body (which has no subsections of its own here; a separate
/// function so the fast path does not recurse and inlines whole).
#[inline(always)]
fn load_leaf(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> Option<usize> {
    if !vmsd.subsections.is_empty() {
        return None;
    }
    let n = load_head(vmsd, version, body, state)?;
    finish(vmsd, version, state).then_some(n)
}

/// The checks shared by [`load_flat`] and [`load_leaf`], `pre_load`, then the fields.
#[inline(always)]
fn load_head(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> Option<usize> {
    let p = current_plan(vmsd)?;
    if state.len() != vmsd.size || version != vmsd.version_id || struct_tail(p).is_some() {
        return None;
    }
    if let Some(pre) = vmsd.pre_load {
        pre(state);
    }
    load_fields(p, version, body, state)
}

/// The device's `validate` then `post_load`; false when `validate` refuses.
#[inline(always)]
fn finish(vmsd: &Vmsd, version: u32, state: &mut [u8]) -> bool {
    if let Some(validate) = vmsd.validate
        && validate(state, version).is_err()
    {
        return false;
    }
    if let Some(post) = vmsd.post_load {
        post(state, version);
    }
    true
}

/// The copied fields of `p` at the front of `body` into `state`: checks the bools in the
/// input, copies, clears the unused ranges and, when `hooks`, runs the `validate`/`post_load`
/// hooks of the inlined nested structs. `_EQUAL` values are copied, not compared (callers that
/// load exclude such plans). The bytes read, or `None` when the input is short, a bool is bad
/// or a hook refuses (the state may then be partly written). Shared by the fast paths and the
/// general decoder's copy plans ([`crate::body`]).
#[inline(always)]
pub(crate) fn copy_fields_in(
    p: &Plan,
    body: &[u8],
    state: &mut [u8],
    hooks: bool,
) -> Option<usize> {
    let (start, len) = (p.start as usize, p.len as usize);
    let src = body.get(..len)?;
    for &(o, n) in p.bools() {
        let o = o as usize;
        if !src
            .get(o..o.checked_add(n as usize)?)?
            .iter()
            .all(|&b| b <= 1)
        {
            return None;
        }
    }
    let dst = state.get_mut(start..start.checked_add(len)?)?;
    copy(dst, src);
    for &(o, n) in p.zeros() {
        let o = o as usize;
        let range = o..o.checked_add(n as usize)?;
        // Unused bytes arrive as zeros from QEMU: only clear them when they are not. Testing
        // the input rather than writing the state keeps the state's stores whole, so a copy
        // of the fresh state right after does not wait on partly overlapping stores.
        if src.get(range.clone())?.iter().fold(0, |acc, &b| acc | b) != 0 {
            dst.get_mut(range)?.fill(0);
        }
    }
    if hooks {
        for h in p.hooks.iter().flatten() {
            let v = h.vmsd;
            for i in 0..h.count as usize {
                let off = (h.offset as usize).checked_add(i.checked_mul(v.size)?)?;
                let s = state.get_mut(off..off.checked_add(v.size)?)?;
                if !finish(v, v.version_id, s) {
                    return None;
                }
            }
        }
    }
    Some(len)
}

/// Reads the planned fields at the front of `body` into `state`: the copied fields (see
/// [`copy_fields_in`]), then the checks, then the variable-array tail. The bytes read, or
/// `None` (the state may then be partly written).
#[inline(always)]
fn load_fields(p: &Plan, version: u32, body: &[u8], state: &mut [u8]) -> Option<usize> {
    if p.has_equal {
        return None;
    }
    let len = copy_fields_in(p, body, state, true)?;
    let start = p.start as usize;
    if !checks_pass(p, version, state) {
        return None;
    }
    let extra = tail_len(p, state)?;
    if extra > 0 {
        let at = start.checked_add(len)?;
        copy(
            state.get_mut(at..at.checked_add(extra)?)?,
            body.get(len..len.checked_add(extra)?)?,
        );
    }
    len.checked_add(extra)
}

/// The subsections at the front of `input`, each at most once and in table order (anything
/// else: the general path), then the defaults of the absent ones; the bytes read.
#[inline(always)]
fn load_subsections(vmsd: &Vmsd, input: &[u8], state: &mut [u8]) -> Option<usize> {
    if vmsd.subsections.len() > crate::schema::MAX_SUBSECTIONS {
        return None;
    }
    let mut at = 0usize;
    let mut seen: u32 = 0;
    each_subsection!(vmsd.subsections, |i, sub| {
        if at < input.len()
            && let Some(n) = load_subsection(vmsd.name, sub, input.get(at..)?, state)
        {
            at = at.checked_add(n)?;
            seen |= 1 << i;
        }
    });
    // The general path reads on while the input looks like a subsection of this description
    // (and refuses an unknown, repeated or out-of-order one): leave such input to it.
    if let Some(rest) = input.get(at..)
        && rest.first() == Some(&record::SUBSECTION)
        && rest.get(1).is_none_or(|&len| {
            len as usize > vmsd.name.len()
                && rest.get(2..).is_none_or(|name| {
                    name.len() < vmsd.name.len() || name.starts_with(vmsd.name.as_bytes())
                })
        })
    {
        return None;
    }
    // Defaults for the absent ones after all present ones, as the general path does.
    each_subsection!(vmsd.subsections, |i, sub| {
        if seen & (1 << i) == 0
            && let Some(absent) = sub.absent
        {
            absent(state);
        }
    });
    Some(at)
}

/// A subsection of `sub` (of the description named `parent`) at the front of `input`, at its
/// current version, with a plan and no subsections of its own: loads it and returns its length
/// (header included). `None` when the input does not start with exactly this subsection (the
/// caller treats it as absent; the body is then not consumed and the general path decides), or
/// when its body does not load the planned way.
#[inline(always)]
fn load_subsection(
    parent: &str,
    sub: &Subsection,
    input: &[u8],
    state: &mut [u8],
) -> Option<usize> {
    let v = sub.vmsd;
    let name = v.name.as_bytes();
    let head = 2 + name.len() + 4;
    // QEMU recognises a subsection only by a name longer than and prefixed by its parent's.
    if name.len() <= parent.len() || !name.starts_with(parent.as_bytes()) {
        return None;
    }
    let h = input.get(..head)?;
    if h[0] != record::SUBSECTION
        || h[1] as usize != name.len()
        || h.get(2..2 + name.len())? != name
        || h.get(2 + name.len()..)? != v.version_id.to_be_bytes()
    {
        return None;
    }
    head.checked_add(load_leaf(v, v.version_id, input.get(head..)?, state)?)
}

#[cfg(test)]
mod tests {
    //! The fast paths against the general path on a table of every shape they take: copied
    //! fields with a bool and unused bytes, a check, a scalar variable-array tail, `pre_load`,
    //! `validate`, `post_load`, subsections with defaults, and a wrapper whose nested struct
    //! tail carries them, followed by the wrapper's own subsection.
    extern crate std;
    use std::vec::Vec;

    use super::*;
    use crate::body;
    use crate::schema::Field;
    use crate::sink::SliceSink;
    use crate::wire::Reader;
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
    const Z: Vmsd = Vmsd::new("w/z", 1, 1, W_SIZE).fields(&[field!(W, z)]);
    static WV: Vmsd = Vmsd::new("w", 1, 1, W_SIZE)
        .fields(&[crate::struct_field!(W, d, DV)])
        .subsections(&[Subsection::new(&Z, pred!(W, |s| s.z != 0))]);

    fn general_load(vmsd: &Vmsd, body: &[u8], init: &[u8]) -> Option<Vec<u8>> {
        let mut state = init.to_vec();
        let mut r = Reader::new(body, 0);
        body::decode_body(vmsd, vmsd.version_id, &mut r, &mut state).ok()?;
        (r.remaining() == 0).then_some(state)
    }

    fn planned_load(vmsd: &Vmsd, body: &[u8], init: &[u8]) -> Option<Vec<u8>> {
        let mut state = init.to_vec();
        load(vmsd, vmsd.version_id, body, &mut state).then_some(state)
    }

    fn general_encode(vmsd: &Vmsd, state: &[u8]) -> Option<Vec<u8>> {
        let mut buf = std::vec![0u8; 256];
        let mut sink = SliceSink::new(&mut buf);
        body::encode_body(vmsd, state, &mut sink).ok()?;
        let n = sink.finish();
        buf.truncate(n);
        Some(buf)
    }

    fn planned_encode(vmsd: &Vmsd, state: &[u8]) -> Option<Vec<u8>> {
        let mut buf = std::vec![0xa5u8; 256];
        let n = body::encode_planned_into(vmsd, state, &mut buf)?;
        buf.truncate(n);
        Some(buf)
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
            Some(PlanTail::Struct { .. })
        ));
        assert_eq!(Y.plan_for(2).map(|p| (p.start, p.len)), Some((17, 2)));
    }

    /// Every state: the fast encode writes the general path's bytes (or, for a count over the
    /// check, leaves it to the general path, which refuses); the fast load of those bytes
    /// gives the general path's state.
    #[test]
    fn fast_paths_equal_the_general_path() {
        let mut both = 0;
        for w in states() {
            let d = &w[..D_SIZE];
            for (vmsd, state) in [(&DV, d), (&WV, &w[..])] {
                let general = general_encode(vmsd, state);
                let fast = planned_encode(vmsd, state);
                assert_eq!(fast, general, "encode");
                let Some(bytes) = general else {
                    assert!(state[7] > 3, "only the bad count fails");
                    continue;
                };
                let init = std::vec![0u8; state.len()];
                let loaded = general_load(vmsd, &bytes, &init).expect("loads");
                assert_eq!(planned_load(vmsd, &bytes, &init), Some(loaded));
                both += 1;
            }
        }
        assert_eq!(both, 40);
    }

    /// Changed bytes, cut bodies, swapped and repeated subsections: the fast load either gives
    /// the general path's state or declines; it never loads what the general path refuses.
    #[test]
    fn fast_load_never_disagrees() {
        let (mut fast, mut declined) = (0, 0);
        let mut check = |vmsd: &Vmsd, body: &[u8], init: &[u8]| match planned_load(vmsd, body, init)
        {
            Some(s) => {
                assert_eq!(Some(s), general_load(vmsd, body, init), "{body:02x?}");
                fast += 1;
            }
            None => declined += 1,
        };
        for w in states() {
            for (vmsd, state) in [(&DV, &w[..D_SIZE]), (&WV, &w[..])] {
                let Some(body) = general_encode(vmsd, state) else {
                    continue;
                };
                let init: Vec<u8> = (0..state.len() as u8).collect();
                let mut b = body.clone();
                for i in 0..body.len() {
                    for v in [0, 1, 2, 3, 4, 5, 0x55, 0xef, 0xff, body[i] ^ 0x80] {
                        b[i] = v;
                        check(vmsd, &b, &init);
                    }
                    b[i] = body[i];
                    check(vmsd, &body[..i], &init);
                }
                // The x and y subsections swapped, and one repeated.
                let x = [&[5u8, 3][..], b"d/x", &1u32.to_be_bytes(), &[3]].concat();
                let y = [&[5u8, 3][..], b"d/y", &2u32.to_be_bytes(), &[0, 9]].concat();
                let fields = &body[..8 + 2 * body[7] as usize];
                for subs in [[&y[..], &x[..]], [&x[..], &x[..]], [&x[..], &y[..]]] {
                    let whole = [fields, subs[0], subs[1]].concat();
                    check(vmsd, &whole, &init);
                }
            }
        }
        assert!(
            fast > 100 && declined > 100,
            "{fast} fast, {declined} declined"
        );
        // A count within the storage that the VALIDATE check refuses (4 > 3), with all four
        // elements present: neither path loads it.
        let body = [&[0, 0, 0, 1, 0, 0, 0, 4][..], &[0x22; 8]].concat();
        let init = std::vec![0u8; D_SIZE];
        assert_eq!(general_load(&DV, &body, &init), None);
        assert_eq!(planned_load(&DV, &body, &init), None);
        let mut three = body.clone();
        three[7] = 3;
        three.truncate(14);
        assert!(planned_load(&DV, &three, &init).is_some());
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
            let bytes = general_encode(&MV, &state).expect("encodes");
            assert_eq!(
                planned_encode(&MV, &state).as_ref(),
                Some(&bytes),
                "{mask:#x}"
            );
            let init = std::vec![0x11u8; 11];
            let loaded = general_load(&MV, &bytes, &init).expect("loads");
            assert_eq!(planned_load(&MV, &bytes, &init), Some(loaded), "{mask:#x}");
        }
    }
}
