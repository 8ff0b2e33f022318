//! The device tables' plans, and the typed runner (`vmstate::body::{encode_planned,
//! decode_typed}`: the planned steps inlined for a constant table) against the general entry
//! points (`vmstate::body::{encode_body, decode_body}`) on every modelled section of the real
//! QEMU 7.2 fixtures: the same bytes, the same loaded state, and on every changed body byte the
//! same state or the same refusal.

extern crate std;

use std::vec::Vec;

use vmstate::schema::PlanTail;
use vmstate::stream::{FooterScan, Record, Records};
use vmstate::wire::Reader;
use vmstate::{SliceSink, Vmsd, body};

use crate::pc::{Pc, PcConfig};
use crate::test_fixtures::{BIOS, NODEFAULTS, SERIAL};
use crate::{hpet, i8254, rtc, serial};

#[test]
fn device_tables_compile_into_the_expected_plans() {
    let rtc = rtc::VMSD.plan_for(3).expect("rtc has a copy plan");
    assert_eq!(rtc.zeros().len(), 2, "two VMSTATE_UNUSED ranges");
    let reinject = rtc::REINJECT_VMSD.plan_for(1).expect("its subsection too");
    assert_eq!(
        (reinject.len, reinject.start as usize),
        (2, rtc::VMSD.size - 2)
    );
    let pit = i8254::VMSD.plan_for(3).expect("i8254 has a copy plan");
    assert!(
        pit.hooks[0].is_some_and(|h| h.count == 3),
        "channel checks run on load"
    );
    assert!(rtc::VMSD.plan_for(2).is_none(), "only the current version");
    // hpet: the registers, the "num_timers in range" check, then the timers in one copy.
    assert!(hpet::VMSD.plan_for(2).is_none(), "not a copy plan");
    let hp = hpet::VMSD.plan_at(2).expect("hpet has a fast-path plan");
    assert_eq!(hp.len, 25);
    assert!(hp.checks[0].is_some() && hp.checks[1].is_none());
    assert!(matches!(
        hp.tail,
        Some(PlanTail::VArray { elem_size: 42, .. })
    ));
    // ISA serial: the nested UART (with its seven subsections) is the tail.
    let isa = serial::VMSD
        .plan_at(3)
        .expect("serial has a fast-path plan");
    assert!(
        matches!(isa.tail, Some(PlanTail::Struct { offset: 0, vmsd, .. }) if core::ptr::eq(vmsd, &serial::SERIAL_VMSD))
    );
    assert!(serial::SERIAL_VMSD.plan_for(3).is_some());
}

/// Every modelled FULL section of a fixture: (vmsd, version, body, the destination's state
/// before loading).
fn sections(stream: &[u8], config: PcConfig) -> Vec<(&'static Vmsd, u32, &[u8], Vec<u8>)> {
    let pc = Pc::new(config);
    let mut out = Vec::new();
    for rec in Records::new(stream, FooterScan) {
        if let Record::Section(s) = rec.expect("fixture walks").record
            && let Some(slot) = pc.slot(s.idstr, s.instance_id)
        {
            let (vmsd, init) = pc.state(slot);
            out.push((vmsd, s.version_id, s.body, init.to_vec()));
        }
    }
    out
}

fn fixtures() -> Vec<(&'static Vmsd, u32, &'static [u8], Vec<u8>)> {
    let serial = PcConfig {
        serial_ports: 1,
        ..PcConfig::PC_7_2
    };
    let mut all = sections(NODEFAULTS, PcConfig::PC_7_2);
    all.extend(sections(BIOS, PcConfig::PC_7_2));
    all.extend(sections(SERIAL, serial));
    all
}

/// The general path: decode into a copy of `init`, the body consumed exactly.
fn general_load(vmsd: &Vmsd, version: u32, body: &[u8], init: &[u8]) -> Option<Vec<u8>> {
    let mut state = init.to_vec();
    let mut r = Reader::new(body, 0);
    body::decode_body(vmsd, version, &mut r, &mut state).ok()?;
    (r.remaining() == 0).then_some(state)
}

fn planned_load(vmsd: &Vmsd, version: u32, body: &[u8], init: &[u8]) -> Option<Vec<u8>> {
    let mut state = init.to_vec();
    body::decode_typed(vmsd, version, body, 0, &mut state)
        .ok()
        .map(|()| state)
}

fn general_encode(vmsd: &Vmsd, state: &[u8]) -> Option<Vec<u8>> {
    let mut buf = std::vec![0u8; 1 << 16];
    let mut sink = SliceSink::new(&mut buf);
    body::encode_body(vmsd, state, &mut sink).ok()?;
    let n = sink.finish();
    buf.truncate(n);
    Some(buf)
}

fn planned_encode(vmsd: &Vmsd, state: &[u8]) -> Option<Vec<u8>> {
    let mut buf = std::vec![0xa5u8; 1 << 16];
    let n = body::encode_planned(vmsd, state, &mut buf)?;
    buf.truncate(n);
    Some(buf)
}

/// The devices with a fast-path plan take it on every fixture, with the general path's result.
#[test]
fn fast_paths_match_the_general_path_on_the_fixtures() {
    let mut taken = Vec::new();
    for (vmsd, version, body, init) in fixtures() {
        let general = general_load(vmsd, version, body, &init).expect("fixture loads");
        let fast = planned_load(vmsd, version, body, &init);
        let plan = vmsd.plan_at(version).is_some();
        if let Some(fast) = &fast {
            assert_eq!(fast, &general, "{}: same state", vmsd.name);
        }
        let encoded = planned_encode(vmsd, &general);
        if let Some(bytes) = &encoded {
            assert_eq!(bytes.as_slice(), body, "{}: QEMU's bytes", vmsd.name);
        }
        assert_eq!(general_encode(vmsd, &general).as_deref(), Some(body));
        // Every table with a plan, and no `_EQUAL`, takes both fast paths.
        let equal = vmsd.plan_at(version).is_some_and(|p| p.has_equal);
        if plan {
            assert!(encoded.is_some(), "{}: planned encode", vmsd.name);
            assert!(fast.is_some() || equal, "{}: planned load", vmsd.name);
            taken.push(vmsd.name);
        }
    }
    for name in ["mc146818rtc", "i8254", "hpet", "serial"] {
        assert!(taken.contains(&name), "{name} took the fast paths");
    }
}

/// Each body byte changed to several values: the typed runner loads the general path's state
/// or refuses where it refuses. Encoding each such state agrees the same way.
#[test]
fn fast_paths_agree_with_the_general_path_on_every_changed_byte() {
    let mut loads = 0usize;
    let mut refused = 0usize;
    for (vmsd, version, body, init) in fixtures() {
        if vmsd.plan_at(version).is_none() {
            continue;
        }
        let mut changed = body.to_vec();
        for i in 0..body.len() {
            for v in [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, body[i] ^ 0x01] {
                changed[i] = v;
                let general = general_load(vmsd, version, &changed, &init);
                let fast = planned_load(vmsd, version, &changed, &init);
                assert_eq!(fast, general, "{} byte {i} = {v:#x}", vmsd.name);
                match fast {
                    Some(_) => loads += 1,
                    None => refused += 1,
                }
                if let Some(state) = &general {
                    assert_eq!(
                        planned_encode(vmsd, state),
                        general_encode(vmsd, state),
                        "{} byte {i} = {v:#x}",
                        vmsd.name
                    );
                }
            }
            changed[i] = body[i];
        }
        // Cut bodies load (or not) the same way.
        for cut in 0..body.len() {
            assert_eq!(
                planned_load(vmsd, version, &body[..cut], &init),
                general_load(vmsd, version, &body[..cut], &init)
            );
        }
    }
    assert!(
        loads > 1000 && refused > 100,
        "{loads} loads, {refused} refused"
    );
}

/// Encoding states with changed bytes (counts past the storage, checks failing, subsections
/// turned on): the typed runner writes the general path's bytes (or refuses where it does).
#[test]
fn planned_encode_agrees_on_changed_states() {
    let mut encoded = 0usize;
    for (vmsd, version, body, init) in fixtures() {
        if vmsd.plan_at(version).is_none() {
            continue;
        }
        let state = general_load(vmsd, version, body, &init).expect("loads");
        let mut changed = state.clone();
        for i in 0..state.len() {
            for v in [0x00, 0x01, 0x21, 0xff] {
                changed[i] = v;
                let fast = planned_encode(vmsd, &changed);
                assert_eq!(
                    fast,
                    general_encode(vmsd, &changed),
                    "{} state byte {i}",
                    vmsd.name
                );
                encoded += usize::from(fast.is_some());
            }
            changed[i] = state[i];
        }
    }
    assert!(encoded > 1000, "{encoded}");
}
