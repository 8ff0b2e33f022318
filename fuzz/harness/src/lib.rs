//! The properties the cargo-fuzz targets in `fuzz/` assert, as plain functions over bytes.
//!
//! Each target in `fuzz/fuzz_targets/` is one line calling a function here, and the stable test
//! `host-tests/tests/fuzz_corpus.rs` replays every committed corpus file through the same
//! function, so a crash found by fuzzing stays covered by `cargo test`. Every function panics
//! (the fuzzer's "crash") when a property fails; it never panics for an input the codec refuses
//! cleanly.
//!
//! | target | input | asserts |
//! |---|---|---|
//! | `stream` | a whole stream | [`Records`] with [`FooterScan`], with [`Schemas`] over every device table and with both: records are contiguous, inside the input, errors point inside it, the iterator stops after an error and a clean end consumed everything; a body [`Schemas`] measured loads or fails only on a device rule |
//! | `device_section` | device index, version, body | load into the default state: Ok and the re-encoding equals the body (unused bytes zeroed, subsections the state does not need dropped) and loads to the same state; or Err with the state unchanged; the permissive table agrees |
//! | `round_trip` | device index, state bytes | arbitrary bytes in every described field (configuration from the default state), encoded into a fixed buffer, walked as a stream and decoded: a state that passes the device rules comes back (every field byte for byte) and the decoded state is a fixed point; a refused state may not come back (its encoding can be ambiguous) but never panics |
//! | `ram` | options byte, RAM records | records lie inside the input, pages inside their block, the parser always advances |
//! | `configuration` | a configuration record | the parsed record re-emits to bytes that parse to the same record, and to the input itself when the input was in canonical order |
//! | `v4_stream` | a v4 stream | [`Records4`] keeps the iterator contract; per FULL section of a modelled device, the header-only requirement check agrees with a full typed load |
//! | `v4_caps` | a postcard capabilities record | decode → encode → decode is the identity; checking each device's requirement refuses exactly what the record lacks |
//! | `description` | a VMDESCRIPTION trailer's JSON | [`Description::from_json_bytes`] refuses or reads it; what it reads, written back as JSON ([`Description::to_json`]), reads again to the same description (a fixed point) |
//! | `v4_convert` | a v3 or v4 stream | v3: an upgrade that succeeds gives a v4 stream that reads cleanly and downgrades; v4: `downgrade_obstacle` and `downgrade` agree (an obstacle means a refusal), a downgrade that succeeds gives a v3 stream that reads cleanly; errors point inside the input |
//! | `dest_check` | be16 length, a destination (caps file, dump or stream), a stream | [`Destination::read`] and [`dest::check`] refuse or answer; a destination that reads writes back (JSON) to one that reads the same; the problems of `check` are the same when asked twice |
//! | `command` | a COMMAND record after its type byte | [`Command::read_body`] refuses it or parses it; a parsed record re-emits to exactly the bytes it was read from and parses to the same command; a refusal points inside the input |

use vmstate::body::{encode_body_v, encode_fields, is_present};
use vmstate::schema::{CountType, Elem, Kind};
use vmstate::stream::{BodyLength, FooterScan, Record, Records, Schemas, idstr_matches};
use vmstate::v4;
use vmstate::v4::caps::{Capabilities, Incompatibility, Report, SectionRequirement, check};
use vmstate::v4::wire::{Record4, Records4, Vendor};
use vmstate::wire::command::Command;
use vmstate::wire::{Configuration, Reader, SubsectionHeader};
use vmstate::{CountingSink, Error, ErrorKind, SectionId, SliceSink, State, Vmsd};
use vmstate_cli::desc::Description;
use vmstate_cli::dest::{self, Destination};
use vmstate_cli::v4tools::{downgrade_v4, stream_version, upgrade_v3};
use vmstate_devices::fw_cfg::{FwCfg, FwCfgConfig};
use vmstate_devices::globalstate::{GlobalState, RunState};
use vmstate_devices::hpet::{Hpet, HpetConfig};
use vmstate_devices::i8254::Pit;
use vmstate_devices::i8259::Pic;
use vmstate_devices::ioapic::Ioapic;
use vmstate_devices::pcspk::Pcspk;
use vmstate_devices::port92::Port92;
use vmstate_devices::rtc::Rtc;
use vmstate_devices::serial::IsaSerial;
use vmstate_devices::timer::Timers;
use vmstate_devices::{fw_cfg, i8254, i8259, ioapic, rtc};
use zerocopy::{FromZeros, IntoBytes};

/// Absolute offset given to typed loads, so error offsets are checked against a nonzero base.
const BASE: usize = 1000;

/// One fuzz target: its name (the corpus directory) and the property it checks.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order of `fuzz/Cargo.toml`.
pub const TARGETS: &[Target] = &[
    ("stream", stream),
    ("device_section", device_section),
    ("round_trip", round_trip),
    ("ram", ram),
    ("configuration", configuration),
    ("v4_stream", v4_stream),
    ("v4_caps", v4_caps),
    ("description", description),
    ("v4_convert", v4_convert),
    ("dest_check", dest_check),
    ("command", command),
];

/// A modelled device with its destination state and the checks run on it.
pub struct Device {
    /// Label (corpus file names).
    pub name: &'static str,
    /// The section idstr.
    pub idstr: &'static str,
    /// The instance this entry's default state is for (`None`: any).
    pub instance: Option<u32>,
    /// The description table.
    pub vmsd: &'static Vmsd,
    /// Loads a body of a version into the default state.
    pub load: fn(u32, &[u8]) -> Result<(), Error>,
    /// The `device_section` property.
    pub check: fn(u32, &[u8]),
    /// The `round_trip` property.
    pub round_trip: fn(&[u8]),
    /// The default state's bytes.
    pub state: fn() -> Vec<u8>,
    /// Loads a v4 FULL section into the default state (destination vendor chain = the
    /// stream's).
    pub load_v4: fn(&v4::wire::Section<'_>, &[Vendor<'_>]) -> Result<(), v4::Error>,
}

macro_rules! device {
    ($name:literal, $inst:expr, $T:ty, $init:expr, [$($p:expr),*]) => {
        Device {
            name: $name,
            idstr: <$T as State>::VMSD.table().name,
            instance: $inst,
            vmsd: <$T as State>::VMSD,
            load: |v, b| {
                let mut s: $T = $init;
                vmstate::load(&mut s, v, b, BASE)
            },
            check: |v, b| check_load::<$T>($init, &[$(&$p),*], v, b),
            round_trip: |d| round_trip_state::<$T>($init, d),
            state: || {
                let s: $T = $init;
                s.as_bytes().to_vec()
            },
            load_v4: |sec, vendors| {
                let mut s: $T = $init;
                let mut scratch = vec![0u8; 8192];
                v4::load_section(&mut s, sec, vendors, vendors, &mut scratch)
            },
        }
    };
}

/// The modelled devices; the first input byte of `device_section` and `round_trip` indexes
/// this list (append only, so committed corpus files keep their meaning).
pub const DEVICES: &[Device] = &[
    device!("rtc", None, Rtc, Rtc::new_zeroed(), [rtc::PERMISSIVE_VMSD]),
    device!(
        "i8259-master",
        Some(0),
        Pic,
        Pic::MASTER,
        [i8259::PERMISSIVE_VMSD]
    ),
    device!(
        "i8259-slave",
        Some(1),
        Pic,
        Pic::SLAVE,
        [i8259::PERMISSIVE_VMSD]
    ),
    device!("i8254", None, Pit, Pit::DEFAULT, [i8254::PERMISSIVE_VMSD]),
    device!(
        "ioapic",
        None,
        Ioapic,
        Ioapic::DEFAULT,
        [ioapic::PERMISSIVE_VMSD]
    ),
    device!("pcspk", None, Pcspk, Pcspk::DEFAULT, []),
    device!("port92", None, Port92, Port92::DEFAULT, []),
    device!("timer", None, Timers, Timers::DEFAULT, []),
    device!("hpet", None, Hpet, Hpet::new(HpetConfig::PC_7_2), []),
    device!("serial", None, IsaSerial, IsaSerial::new(), []),
    device!("fw_cfg", None, FwCfg, FwCfg::new(FwCfgConfig::PC_7_2), []),
    device!(
        "globalstate",
        None,
        GlobalState,
        GlobalState::new(RunState::Running),
        []
    ),
];

/// Every device table once (the resolver the `stream` target gives [`Schemas`]).
pub const VMSDS: &[&Vmsd] = &[
    &rtc::VMSD,
    &i8259::VMSD,
    &i8254::VMSD,
    &ioapic::VMSD,
    &vmstate_devices::pcspk::VMSD,
    &vmstate_devices::port92::VMSD,
    &vmstate_devices::timer::VMSD,
    &vmstate_devices::hpet::VMSD,
    &vmstate_devices::serial::VMSD,
    &fw_cfg::VMSD,
    &vmstate_devices::globalstate::VMSD,
];

/// The device entry whose default state fits section `idstr`/`instance`.
pub fn device_for(idstr: &[u8], instance: u32) -> Option<&'static Device> {
    DEVICES
        .iter()
        .find(|d| idstr_matches(idstr, d.idstr) && d.instance.is_none_or(|i| i == instance))
}

fn scratch() -> Vec<u8> {
    vec![0; VMSDS.iter().map(|v| v.size).max().unwrap_or(0)]
}

/// Whether an error comes from a device rule (a validation hook, a `VALIDATE` entry, an
/// `_EQUAL` field) rather than from the structure of the bytes.
pub fn is_rule_error(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::Invalid { .. } | ErrorKind::ValidationFailed { .. } | ErrorKind::NotEqual { .. }
    )
}

// ---------------------------------------------------------------------------------------------
// stream

/// Whole-stream decode: see the module table.
pub fn stream(data: &[u8]) {
    walk(data, FooterScan);
    let mut scratch_a = scratch();
    let sections = walk(data, Schemas::new(VMSDS, &mut scratch_a));
    for (idstr, instance, version, body) in sections {
        if let Some(d) = device_for(idstr, instance)
            && let Err(e) = (d.load)(version, body)
        {
            // The resolver measured this body structurally; a loader may refuse it only for
            // a device rule, never for its shape or length.
            assert!(
                is_rule_error(&e),
                "{}: Schemas measured {} bytes but the typed load fails: {e}",
                d.name,
                body.len()
            );
        }
    }
    let mut scratch_b = scratch();
    walk(data, (Schemas::new(VMSDS, &mut scratch_b), FooterScan));
}

/// Walks `data`, checking the iterator's contract; returns the FULL sections' (idstr,
/// instance, version, body).
fn walk<L: BodyLength>(data: &[u8], lengths: L) -> Vec<(&[u8], u32, u32, &[u8])> {
    // COMMAND records on, so the fuzzer reaches `wire::command` (QEMU 10.0 streams carry one).
    let options = vmstate::stream::Options {
        allow_commands: true,
        ..Default::default()
    };
    let mut records = Records::with_options(data, lengths, options);
    let mut end = 0;
    let mut sections = Vec::new();
    while let Some(item) = records.next() {
        match item {
            Ok(l) => {
                assert_eq!(l.offset, end, "records are contiguous");
                assert!(l.end > l.offset, "every record consumes input");
                assert!(l.end <= data.len(), "record ends past the input");
                if let Record::Section(s) = l.record {
                    assert_eq!((s.offset, s.end()), (l.offset, l.end));
                    assert_eq!(
                        data.get(s.body_offset..s.body_offset + s.body.len()),
                        Some(s.body),
                        "the body is the input at body_offset"
                    );
                    if s.kind.has_full_header() {
                        sections.push((s.idstr, s.instance_id, s.version_id, s.body));
                    }
                }
                end = l.end;
            }
            Err(e) => {
                assert!(
                    e.offset <= data.len(),
                    "error offset {} past the input ({} bytes): {e}",
                    e.offset,
                    data.len()
                );
                assert!(e.offset >= end, "error before the record it is about");
                assert!(
                    records.next().is_none(),
                    "the iterator is fused after an error"
                );
                return sections;
            }
        }
    }
    assert_eq!(end, data.len(), "a clean end consumed the whole input");
    sections
}

// ---------------------------------------------------------------------------------------------
// device_section

/// Typed decode of one section body: `[device index, version, body...]`.
pub fn device_section(data: &[u8]) {
    let [index, version, body @ ..] = data else {
        return;
    };
    if let Some(d) = DEVICES.get(*index as usize) {
        (d.check)(*version as u32, body);
    }
}

fn check_load<T: State + Copy + PartialEq + core::fmt::Debug>(
    init: T,
    permissive: &[&Vmsd],
    version: u32,
    body: &[u8],
) {
    let mut state = init;
    let strict = vmstate::load(&mut state, version, body, BASE);
    // The typed load tries the planned fast path first: it must agree with the general table
    // walk, state for state and error for error.
    let mut general = init;
    match (
        &strict,
        general_load(T::VMSD, version, body, general.as_mut_bytes()),
    ) {
        (Ok(()), Ok(())) => assert_eq!(general, state, "fast and general paths load the same"),
        (Err(a), Err(b)) => assert_eq!(*a, b, "fast and general paths fail the same"),
        (a, b) => panic!("typed load {a:?}, general walk {b:?}"),
    }
    match &strict {
        Ok(()) => {
            let mut out = vec![0xa5u8; body.len() + 4096];
            let mut sink = SliceSink::new(&mut out);
            encode_body_v(T::VMSD, version, state.as_bytes(), &mut sink)
                .unwrap_or_else(|e| panic!("a loaded state re-encodes: {e}"));
            let n = sink.finish();
            let out = &out[..n];
            if let Some(expected) = expected_reencoding(T::VMSD, version, state.as_bytes(), body) {
                assert_eq!(out, &expected[..], "re-encoding equals the body");
            }
            let mut again = init;
            vmstate::load(&mut again, version, out, BASE)
                .unwrap_or_else(|e| panic!("the re-encoding loads: {e}"));
            assert_eq!(again, state, "the re-encoding loads to the same state");
        }
        Err(e) => {
            assert_eq!(state, init, "a failed load changes nothing");
            assert!(
                (BASE..=BASE + body.len()).contains(&e.offset),
                "error offset {} outside the body: {e}",
                e.offset
            );
        }
    }
    for table in permissive {
        let mut loose = init;
        match (
            &strict,
            vmstate::load_with(table, &mut loose, version, body, BASE),
        ) {
            (Ok(()), Ok(())) => assert_eq!(loose, state, "both tables load the same state"),
            (Ok(()), Err(e)) => {
                panic!("the permissive table refuses what the strict one loads: {e}")
            }
            (Err(e), Ok(())) => assert!(is_rule_error(e), "only a rule separates them: {e}"),
            (Err(_), Err(_)) => assert_eq!(loose, init, "a failed load changes nothing"),
        }
    }
}

/// The general path alone ([`vmstate::body::decode_body`]), the body consumed exactly.
fn general_load(vmsd: &Vmsd, version: u32, body: &[u8], state: &mut [u8]) -> Result<(), Error> {
    let mut r = Reader::new(body, BASE);
    vmstate::body::decode_body(vmsd, version, &mut r, state)?;
    match r.peek(0) {
        Some(found) => Err(r.error(ErrorKind::MissingFooter { found })),
        None => Ok(()),
    }
}

/// What encoding the loaded `state` at `version` must give for `body`: the body with unused
/// bytes zeroed and subsections the state does not need dropped, subsections in table order.
/// `None` where that cannot be predicted from the body alone (a subsection sent at another
/// version, or one the state needs that the body lacked).
fn expected_reencoding(vmsd: &Vmsd, version: u32, state: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let mut r = Reader::new(body, 0);
    let mut out = Vec::new();
    normalize(vmsd, version, state, &mut r, &mut out)?;
    (r.remaining() == 0).then_some(out)
}

fn count_of(state: &[u8], offset: usize, ty: CountType) -> Option<usize> {
    let b = state.get(offset..offset + ty.width())?;
    let v = match ty {
        CountType::U8 => b[0] as i64,
        CountType::U16 => u16::from_be_bytes([b[0], b[1]]) as i64,
        CountType::U32 => u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
        CountType::I32 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
    };
    usize::try_from(v).ok()
}

fn copy(r: &mut Reader<'_>, n: usize, out: &mut Vec<u8>) -> Option<()> {
    out.extend_from_slice(r.bytes(n).ok()?);
    Some(())
}

fn normalize(
    vmsd: &Vmsd,
    version: u32,
    state: &[u8],
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
) -> Option<()> {
    let nested = |n: &Vmsd, i: usize, base: usize| state.get(base + i * n.size..)?.get(..n.size);
    for f in vmsd.fields {
        if !is_present(f, state, version) {
            continue;
        }
        match f.kind {
            Kind::Unused { len } => {
                r.skip(len).ok()?;
                out.resize(out.len() + len, 0);
            }
            Kind::Struct { vmsd: n, len } => {
                for i in 0..len {
                    normalize(n, n.version_id, nested(n, i, f.offset)?, r, out)?;
                }
            }
            Kind::VArray { elem, count } => {
                let k = count_of(state, count.offset, count.ty)?;
                match elem {
                    Elem::Struct(n) => {
                        for i in 0..k {
                            normalize(n, n.version_id, nested(n, i, f.offset)?, r, out)?;
                        }
                    }
                    Elem::Scalar(s) => copy(r, k * s.width(), out)?,
                }
            }
            Kind::VBuffer { size } => copy(r, count_of(state, size.offset, size.ty)?, out)?,
            Kind::Validate { .. } => {}
            Kind::NullPtr => copy(r, 1, out)?,
            _ => copy(r, f.storage_size(), out)?,
        }
    }
    let mut kept: Vec<Option<Vec<u8>>> = vec![None; vmsd.subsections.len()];
    while let Some(name) = SubsectionHeader::peek_name(r, vmsd.name) {
        let (idx, sub) = vmsd.subsection(name)?;
        let at = r.position();
        let h = SubsectionHeader::read(r).ok()?;
        if h.version != sub.vmsd.version_id {
            return None;
        }
        let mut bytes = r.buffer()[at..r.position()].to_vec();
        normalize(sub.vmsd, h.version, state, r, &mut bytes)?;
        if sub.needed.is_none_or(|needed| needed(state)) {
            kept[idx] = Some(bytes);
        }
    }
    for (sub, bytes) in vmsd.subsections.iter().zip(kept) {
        if sub.needed.is_none_or(|needed| needed(state)) {
            out.extend_from_slice(&bytes?);
        }
    }
    Some(())
}

// ---------------------------------------------------------------------------------------------
// round_trip

/// Typed state → encode → decode: `[device index, state bytes...]`.
pub fn round_trip(data: &[u8]) {
    let [index, bytes @ ..] = data else {
        return;
    };
    if let Some(d) = DEVICES.get(*index as usize) {
        (d.round_trip)(bytes);
    }
}

/// Zeroes the unused runs of the top-level fields (they are written as zeros and read as
/// nothing, so they are not state).
fn zero_unused(vmsd: &Vmsd, state: &mut [u8]) {
    for f in vmsd.fields {
        if let Kind::Unused { len } = f.kind
            && let Some(b) = state.get_mut(f.offset..f.offset + len)
        {
            b.fill(0);
        }
    }
}

/// Whether `state` passes every rule of `vmsd` at `version`: the validation hooks of the table,
/// of its nested structs and of the subsections the state needs, and its `VALIDATE` entries.
pub fn state_valid(vmsd: &Vmsd, version: u32, state: &[u8]) -> bool {
    let nested_ok = vmsd.fields.iter().all(|f| {
        if !is_present(f, state, version) {
            return true;
        }
        let each = |n: &Vmsd, k: usize| {
            (0..k).all(|i| {
                state
                    .get(f.offset + i * n.size..)
                    .and_then(|s| s.get(..n.size))
                    .is_some_and(|s| state_valid(n, n.version_id, s))
            })
        };
        match f.kind {
            Kind::Struct { vmsd: n, len } => each(n, len),
            Kind::VArray {
                elem: Elem::Struct(n),
                count,
            } => count_of(state, count.offset, count.ty)
                .is_some_and(|k| k <= count.capacity && each(n, k)),
            Kind::Validate { test } => test(state, version),
            _ => true,
        }
    });
    nested_ok
        && vmsd
            .subsections
            .iter()
            .filter(|sub| sub.needed.is_none_or(|needed| needed(state)))
            .all(|sub| state_valid(sub.vmsd, sub.vmsd.version_id, state))
        && vmsd.validate.is_none_or(|v| v(state, version).is_ok())
}

/// Marks the state bytes that fields of `vmsd` (at any version), its nested structs and its
/// subsections store.
fn mark_fields(vmsd: &Vmsd, base: usize, covered: &mut [bool]) {
    for f in vmsd.fields {
        let at = base + f.offset;
        match f.kind {
            Kind::Struct { vmsd: n, len } => {
                for i in 0..len {
                    mark_fields(n, at + i * n.size, covered);
                }
            }
            Kind::VArray {
                elem: Elem::Struct(n),
                count,
            } => {
                for i in 0..count.capacity {
                    mark_fields(n, at + i * n.size, covered);
                }
            }
            _ => {
                if let Some(b) = covered.get_mut(at..at + f.storage_size()) {
                    b.fill(true);
                }
            }
        }
    }
    for sub in vmsd.subsections {
        mark_fields(sub.vmsd, base, covered);
    }
}

fn round_trip_state<T: State + Copy + PartialEq + core::fmt::Debug>(init: T, data: &[u8]) {
    // Arbitrary bytes in every field any table describes; the rest of the struct is the
    // destination's configuration and keeps the default state's (valid) values.
    let mut state = init;
    let mut covered = vec![false; T::VMSD.size];
    mark_fields(T::VMSD, 0, &mut covered);
    for ((b, &c), &d) in state.as_mut_bytes().iter_mut().zip(&covered).zip(data) {
        if c {
            *b = d;
        }
    }
    zero_unused(T::VMSD, state.as_mut_bytes());

    // A fixed buffer, as firmware would use: every modelled section fits in 4 KiB.
    let mut buf = [0xa5u8; 4096];
    let id = SectionId {
        section_id: 3,
        idstr: T::VMSD.name.as_bytes(),
        instance_id: 0,
    };
    let mut stream = Vec::from(*b"QEVM\x00\x00\x00\x03\x07\x00\x00\x00\x0dpc-i440fx-7.2");
    // The typed encoders try the planned fast path first: the same bytes (or the same error)
    // as the general table walk.
    let mut general = [0xa5u8; 4096];
    let mut sink = SliceSink::new(&mut general);
    let g = encode_body_v(T::VMSD, T::VMSD.version_id, state.as_bytes(), &mut sink)
        .map(|()| sink.finish());
    let mut typed = [0x5au8; 4096];
    match (vmstate::encode_body_into(&state, &mut typed), g) {
        (Ok(a), Ok(b)) => assert_eq!(&typed[..a], &general[..b], "fast and general encode"),
        (Err(a), Err(b)) => assert_eq!(a, b, "fast and general encode fail the same"),
        (a, b) => panic!("typed encode {a:?}, general {b:?}"),
    }
    let n = match vmstate::encode_section_into(id, &state, &mut buf) {
        Ok(n) => n,
        // Counts beyond their storage and failed VALIDATE entries cannot be encoded.
        Err(e) => {
            assert!(
                matches!(
                    e.kind,
                    ErrorKind::CountOverCapacity { .. } | ErrorKind::ValidationFailed { .. }
                ),
                "encode fails only for a count or a check: {e}"
            );
            return;
        }
    };
    stream.extend_from_slice(&buf[..n]);
    stream.push(0x00); // QEMU_VM_EOF

    // The section walks as a stream with the device's own table as resolver.
    let mut scratch = vec![0u8; T::VMSD.size];
    let tables = [T::VMSD];
    // A state the device rules refuse may encode ambiguously (QEMU's subsection peek: after a
    // nested struct, field bytes that spell `05 len "<struct name>..."` read as a subsection;
    // an i8254 channel count of 0x05d27069 does), so only valid states must come back.
    let valid = state_valid(T::VMSD, T::VMSD.version_id, state.as_bytes());
    let walked: Result<Vec<_>, _> =
        Records::new(&stream, Schemas::new(&tables, &mut scratch)).collect();
    let records = match walked {
        Ok(records) => records,
        Err(e) => {
            assert!(!valid, "the encoded section of a valid state walks: {e}");
            return;
        }
    };
    let Record::Section(rec) = records[2].record else {
        panic!("the third record is the section");
    };
    assert_eq!((rec.section_id, rec.idstr), (3, id.idstr));
    assert_eq!(rec.version_id, T::VMSD.version_id);

    // Decoded into a copy of the state itself (same configuration and _EQUAL values), the body
    // loads unless a device rule refuses it, and every field comes back: the decoded state
    // encodes the same fields. Which subsections follow may change: the device's hooks reset
    // what a body does not carry (fields of subsections not sent) from the configuration, as
    // on a real load. From there on the state is a fixed point.
    let mut counter = CountingSink::new();
    encode_fields(T::VMSD, T::VMSD.version_id, state.as_bytes(), &mut counter)
        .unwrap_or_else(|e| panic!("fields encode: {e}"));
    let fields = rec.header_len..rec.header_len + counter.count();
    assert!(fields.end <= n - 5);
    let mut back = state;
    if let Err(e) = vmstate::load_record(&mut back, &rec) {
        assert!(!valid, "a valid state loads back: {e}");
        assert_eq!(back, state, "a failed load changes nothing");
        return;
    }
    let mut again = [0x5au8; 4096];
    let m = vmstate::encode_section_into(id, &back, &mut again)
        .unwrap_or_else(|e| panic!("a loaded state encodes: {e}"));
    assert_eq!(
        &again[fields.clone()],
        &buf[fields.clone()],
        "every field comes back"
    );
    let mut fixed = back;
    vmstate::load(&mut fixed, rec.version_id, &again[rec.header_len..m - 5], 0)
        .unwrap_or_else(|e| panic!("the re-encoding loads: {e}"));
    assert_eq!(fixed, back, "decode(encode(x)) == x for a decoded x");
    // Decoded into the default state (another configuration), a field the decoder skipped
    // would show in the encoded fields.
    let mut fresh = init;
    if vmstate::load_record(&mut fresh, &rec).is_ok() {
        let m = vmstate::encode_section_into(id, &fresh, &mut again)
            .unwrap_or_else(|e| panic!("a loaded state encodes: {e}"));
        assert!(m >= fields.end);
        assert_eq!(
            &again[fields.clone()],
            &buf[fields],
            "decoded fields encode back"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ram

/// The RAM record parser: `[options, records...]` (bit 0: nonzero ZERO fill allowed, bit 1:
/// `x-ignore-shared`, bit 2: MULTIFD_FLUSH accepted, bit 3: mapped-ram).
pub fn ram(data: &[u8]) {
    use vmstate::ram::{PAGE_SIZE, RamContext, RamOptions, RamRecord, xbzrle_apply};
    let [options, records @ ..] = data else {
        return;
    };
    let mut ctx = RamContext::new(RamOptions {
        allow_nonzero_fill: options & 1 != 0,
        ignore_shared: options & 2 != 0,
        multifd_flush: options & 4 != 0,
        mapped_ram: options & 8 != 0,
        // A stream at a file offset (libvirt's sparse image puts it at 66762).
        file_offset: if options & 16 != 0 { 0x104ca } else { 0 },
    });
    let mut r = Reader::new(records, BASE);
    let mut page = [0u8; PAGE_SIZE];
    while r.remaining() > 0 {
        let before = r.position();
        match ctx.read_record(&mut r) {
            Ok(rec) => {
                assert!(r.position() > before, "every record consumes input");
                let inside = |block: &[u8], offset: u64| {
                    let len = ctx
                        .blocks
                        .and_then(|b| b.length_of(block))
                        .unwrap_or_else(|| panic!("page names an unlisted block"));
                    assert!(offset + PAGE_SIZE as u64 <= len, "page inside its block");
                };
                match rec {
                    RamRecord::MemSize(list) => {
                        let sum: u64 = list.iter().map(|b| b.length).sum();
                        assert_eq!(sum, list.total, "block lengths add up to the total");
                        assert_eq!(list.iter().count(), list.count);
                    }
                    RamRecord::Zero {
                        block,
                        offset,
                        fill,
                        ..
                    } => {
                        inside(block, offset);
                        assert!(fill == 0 || options & 1 != 0);
                    }
                    RamRecord::Page {
                        block,
                        offset,
                        data,
                        ..
                    } => {
                        inside(block, offset);
                        assert_eq!(data.len(), PAGE_SIZE);
                    }
                    RamRecord::Xbzrle {
                        block,
                        offset,
                        delta,
                        ..
                    } => {
                        inside(block, offset);
                        assert!(delta.len() <= PAGE_SIZE);
                        let _ = xbzrle_apply(delta, &mut page);
                    }
                    RamRecord::MultifdFlush => assert!(options & 4 != 0),
                    RamRecord::Eos => {}
                }
            }
            Err(e) => {
                assert!(
                    (BASE + before..=BASE + records.len()).contains(&e.offset),
                    "error offset {} outside the record at {}: {e}",
                    e.offset,
                    BASE + before
                );
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// configuration

/// The configuration record parser: one record from the start of the input.
pub fn configuration(data: &[u8]) {
    let mut r = Reader::new(data, 0);
    let c = match Configuration::read(&mut r) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.offset <= data.len(), "error offset past the input: {e}");
            return;
        }
    };
    let consumed = &data[..r.position()];
    let mut out = vec![0xa5u8; c.buffer_len() + 16];
    let mut sink = SliceSink::new(&mut out);
    c.emit(&mut sink)
        .unwrap_or_else(|e| panic!("a parsed record emits: {e}"));
    let n = sink.finish();
    assert_eq!(n, c.buffer_len(), "buffer_len is the emitted length");
    let emitted = &out[..n];
    let mut again = Reader::new(emitted, 0);
    let c2 = Configuration::read(&mut again).unwrap_or_else(|e| panic!("re-parses: {e}"));
    assert_eq!(c2, c);
    assert_eq!(again.remaining(), 0);
    // The emitter writes the subsections in QEMU's order; an input in that order comes back
    // byte for byte.
    if emitted.len() == consumed.len() && canonical_order(consumed, c.machine.len()) {
        assert_eq!(emitted, consumed, "re-emission equals the input");
    }
}

fn canonical_order(record: &[u8], machine_len: usize) -> bool {
    let mut r = Reader::new(record, 0);
    if r.skip(5 + machine_len).is_err() {
        return false;
    }
    let mut last = 0;
    while let Ok(h) = SubsectionHeader::read(&mut r) {
        let rank = match h.name {
            b"configuration/target-page-bits" => 1,
            b"configuration/capabilities" => 2,
            _ => 3,
        };
        if rank <= last {
            return false;
        }
        last = rank;
        let skip = match rank {
            1 => 4,
            3 => 16,
            _ => {
                let Ok(count) = r.be32() else { return false };
                for _ in 0..count {
                    if r.name().is_err() {
                        return false;
                    }
                }
                0
            }
        };
        if r.skip(skip).is_err() {
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// v4

/// Capacities of the capabilities records the v4 targets use.
pub type Caps<'a> = Capabilities<'a, 32, 64>;

/// A destination that knows every modelled device (its tables' versions, subsections and
/// vendor minors), speaking protocols 3 and 4 with the vendor chain `vendors`.
pub fn device_caps<'a>(vendors: &[vmstate::VendorId<'a>]) -> Caps<'a> {
    let mut caps = Caps::new(&[3, 4], vendors).expect("vendor chain fits");
    for vmsd in VMSDS {
        caps.add_vmsd(vmsd).expect("capacity");
    }
    caps
}

fn v4_offset(e: &v4::Error) -> Option<usize> {
    match e {
        v4::Error::Codec(e) => Some(e.offset),
        v4::Error::Checksum { offset, .. }
        | v4::Error::ReservedFlags { offset, .. }
        | v4::Error::TooManyLevels { offset, .. }
        | v4::Error::BadVendorLevel { offset, .. }
        | v4::Error::MinorInconsistent { offset, .. }
        | v4::Error::FrameLength { offset, .. } => Some(*offset),
        v4::Error::Refused(r) | v4::Error::Unsupported(r) => Some(r.offset),
        _ => None,
    }
}

/// A v4 stream: [`Records4`] keeps the iterator contract (contiguous records inside the input,
/// errors inside it, fused after an error), and for every FULL section of a modelled device the
/// header-only requirement check agrees with a full typed load: a section that loads is
/// compatible with a destination that knows every device, and a section the check refuses for
/// its version, a vendor minor or an unknown must-understand subsection does not load.
pub fn v4_stream(data: &[u8]) {
    let mut records = Records4::new(data);
    let mut end = 0;
    let mut vendors: Vec<Vendor<'_>> = Vec::new();
    let mut names: Vec<vmstate::VendorId<'_>> = Vec::new();
    while let Some(item) = records.next() {
        let l = match item {
            Ok(l) => l,
            Err(e) => {
                if let Some(at) = v4_offset(&e) {
                    assert!(at <= data.len(), "error offset {at} past the input: {e}");
                }
                assert!(
                    records.next().is_none(),
                    "the iterator is fused after an error"
                );
                return;
            }
        };
        assert_eq!(l.offset, end, "records are contiguous");
        assert!(
            l.end > l.offset && l.end <= data.len(),
            "record inside the input"
        );
        end = l.end;
        match &l.record {
            Record4::Header(h) => {
                vendors = h.vendors.iter().copied().collect();
                names = h.vendors.iter().map(|v| v.id).collect();
            }
            Record4::Section(s) if s.kind.has_full_header() => {
                let Some(d) = device_for(s.idstr, s.instance_id) else {
                    continue;
                };
                let full = (d.load_v4)(s, &vendors);
                let req = SectionRequirement::from_section(s);
                let caps = device_caps(&names);
                let mut report: Report<'_, 8> = Report::new();
                if let Ok(req) = &req {
                    check(&vendors, req, &caps, &mut report);
                }
                if full.is_ok() {
                    assert!(
                        req.is_ok(),
                        "{}: loads but its subsection frames do not read",
                        d.name
                    );
                    assert!(
                        report.is_compatible(),
                        "{}: loads but the header check refuses it: {:?}",
                        d.name,
                        report.found
                    );
                }
                let refused = report.found.iter().any(|i| {
                    matches!(
                        i,
                        Incompatibility::Version { .. }
                            | Incompatibility::Minor { .. }
                            | Incompatibility::UnknownSubsection { .. }
                    )
                });
                if refused {
                    assert!(
                        full.is_err(),
                        "{}: the header check refuses what loads",
                        d.name
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(end, data.len(), "a clean end consumed the whole input");
}

/// A capabilities record (postcard): what decodes re-encodes to bytes that decode to the same
/// record, and checking every modelled device's default requirement against it reports an
/// incompatibility exactly when the record lacks the device, its version or a subsection it
/// sends.
pub fn v4_caps(data: &[u8]) {
    let Ok(caps) = Caps::from_postcard(data) else {
        return;
    };
    let mut buf = vec![0u8; data.len() + 64];
    let encoded = caps
        .to_postcard(&mut buf)
        .unwrap_or_else(|e| panic!("decoded capabilities re-encode: {e}"));
    let again = Caps::from_postcard(encoded).unwrap_or_else(|e| panic!("re-decodes: {e}"));
    assert_eq!(again, caps);

    for d in DEVICES {
        let state = (d.state)();
        let id = SectionId {
            section_id: 1,
            idstr: d.idstr.as_bytes(),
            instance_id: d.instance.unwrap_or(0),
        };
        let req = SectionRequirement::from_state(id, d.vmsd, &state, &[])
            .unwrap_or_else(|e| panic!("{}: requirement of the default state: {e}", d.name));
        let mut report: Report<'_, 4> = Report::new();
        check(&[], &req, &caps, &mut report);
        assert_eq!(report.found.len(), report.total.min(4));
        let expected_ok = caps.device(d.idstr.as_bytes()).is_some_and(|dev| {
            (dev.min_version..=dev.max_version).contains(&d.vmsd.version_id)
                && req
                    .subsections
                    .iter()
                    .all(|s| !s.must_understand || caps.knows_subsection(s.name))
        });
        assert_eq!(
            report.is_compatible(),
            expected_ok,
            "{}: {:?}",
            d.name,
            report.found
        );
    }
}

// ---------------------------------------------------------------------------------------------
// description

/// The VMDESCRIPTION reader: see the module table.
pub fn description(data: &[u8]) {
    let Ok(desc) = Description::from_json_bytes(data) else {
        return;
    };
    let json = desc.to_json();
    let text = serde_json::to_vec(&json).expect("a JSON value serializes");
    let again = Description::from_json_bytes(&text)
        .unwrap_or_else(|e| panic!("the reader refuses its own output {json}: {e}"));
    assert_eq!(
        again.to_json(),
        json,
        "read → write → read is not a fixed point"
    );
}

// ---------------------------------------------------------------------------------------------
// v4_convert

/// Walks a v3 stream with the footer scan (COMMAND records allowed): `Err` with the error
/// when it does not read to its end.
fn v3_reads(v3: &[u8]) -> Result<(), Error> {
    // A v4 stream without a configuration record (machine types up to 2.3) downgrades to a
    // v3 stream without one: that is valid v3.
    let options = vmstate::stream::Options {
        allow_commands: true,
        require_configuration: v3.get(8) == Some(&vmstate::wire::record::CONFIGURATION),
        ..Default::default()
    };
    for r in Records::with_options(v3, FooterScan, options) {
        r?;
    }
    Ok(())
}

/// v3 ↔ v4 conversion: see the module table.
pub fn v4_convert(data: &[u8]) {
    match stream_version(data) {
        Some(3) => {
            let Ok(v4) = upgrade_v3(data) else {
                return;
            };
            for r in v4::wire::Records4::new(&v4) {
                if let Err(e) = r {
                    panic!("the upgrade wrote a v4 stream that does not read: {e}");
                }
            }
            downgrade_v4(&v4)
                .unwrap_or_else(|e| panic!("an upgraded v3 stream does not downgrade: {e}"));
        }
        Some(4) => {
            let obstacle = v4::convert::downgrade_obstacle(data);
            let out = downgrade_v4(data);
            if let Ok(Some(refusal)) = &obstacle {
                assert!(
                    out.is_err(),
                    "downgrade_obstacle says {refusal:?}, the downgrade succeeds"
                );
            }
            match out {
                Ok(v3) => {
                    if let Err(e) = v3_reads(&v3) {
                        panic!("the downgrade wrote a v3 stream that does not read: {e}");
                    }
                }
                Err(e) => {
                    if let Some(at) = v4_offset(&e) {
                        assert!(at <= data.len(), "error past the input: {e}");
                    }
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// dest_check

/// Destination file + `check`: see the module table.
pub fn dest_check(data: &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = (u16::from_be_bytes(*len) as usize).min(rest.len());
    let (dest_bytes, stream) = rest.split_at(split);
    let Ok(dest) = Destination::read(dest_bytes, "fuzz", None) else {
        return;
    };
    let written = serde_json::to_vec(&dest).expect("a destination serializes");
    let again = Destination::read(&written, "fuzz", None)
        .unwrap_or_else(|e| panic!("a written destination does not read back: {e}"));
    assert_eq!(again, dest, "write → read changes the destination");
    let first = dest::check(stream, &dest);
    let second = dest::check(stream, &dest);
    assert_eq!(
        first.as_ref().map(|p| dest::reasons(p)),
        second.as_ref().map(|p| dest::reasons(p)),
        "check answers differently twice"
    );
}

// ---------------------------------------------------------------------------------------------
// command

/// COMMAND records: see the module table.
pub fn command(data: &[u8]) {
    const BASE_AT: usize = 77;
    let mut r = Reader::new(data, BASE_AT);
    match Command::read_body(&mut r) {
        Ok(c) => {
            let used = r.offset() - BASE_AT;
            // buffer_len counts the type byte, which `read_body` starts after.
            assert_eq!(used + 1, c.buffer_len(), "consumed = buffer_len");
            let mut out = vec![0u8; c.buffer_len()];
            let mut sink = SliceSink::new(&mut out);
            c.emit(&mut sink)
                .unwrap_or_else(|e| panic!("a parsed command does not emit: {e}"));
            let n = sink.finish();
            assert_eq!(n, c.buffer_len(), "emit writes buffer_len bytes");
            assert_eq!(out[0], vmstate::wire::record::COMMAND);
            assert_eq!(&out[1..n], &data[..used], "emit differs from the input");
            let mut again = Reader::new(&out, 0);
            let c2 = Command::read(&mut again).expect("re-parses");
            assert_eq!(c2, c);
        }
        Err(e) => assert!(
            e.offset >= BASE_AT && e.offset <= BASE_AT + data.len(),
            "error offset {} outside the input ({} bytes at {BASE_AT}): {e}",
            e.offset,
            data.len()
        ),
    }
}
