//! `Records::resume_at`: a walk continues past bytes another reader checked (the validating
//! proxy's RAM phase), with the live stream's offsets, only between records with no section
//! open, and never backwards.

use vmstate::ErrorKind;
use vmstate::stream::{FooterScan, Options, Record, Records};

mod fixtures_support;
use fixtures_support::fixture;

#[test]
fn a_walk_resumes_at_the_final_phase_with_the_streams_offsets() {
    let stream = fixture("pc-7.2-nodefaults-S.vmstate");
    let all: Vec<_> = Records::with_options(&stream, FooterScan, Options::for_stream(&stream))
        .map(|r| r.unwrap())
        .collect();
    let config_end = all
        .iter()
        .find(|r| matches!(r.record, Record::Configuration(_)))
        .unwrap()
        .end;
    let held = all
        .iter()
        .position(|r| matches!(r.record, Record::Section(s) if !s.is_ram()))
        .unwrap();
    // The view: the stream with every byte between CONFIGURATION and the final phase zeroed
    // (what the proxy's sparse file holds there).
    let mut view = stream.clone();
    view[config_end..all[held].offset].fill(0);
    let mut walk = Records::with_options(&view, FooterScan, Options::for_stream(&view));
    walk.next().unwrap().unwrap();
    // Not inside a record (the CONFIGURATION is not read yet) ...
    assert!(walk.resume_at(all[held].offset).is_err());
    walk.next().unwrap().unwrap();
    assert_eq!(walk.offset(), config_end);
    // ... nor backwards.
    let e = walk.resume_at(config_end - 1).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::TrailingBytes { .. }), "{e}");
    walk.resume_at(all[held].offset).unwrap();
    let rest: Vec<_> = walk.map(|r| r.unwrap()).collect();
    let spans = |v: &[vmstate::stream::Located<'_>]| -> Vec<(usize, usize)> {
        v.iter().map(|r| (r.offset, r.end)).collect()
    };
    assert_eq!(spans(&rest), spans(&all[held..]));
    // The same records, except that ordinals count the sections this walk read (the RAM
    // START, one, was in the hole).
    for (r, a) in rest.iter().zip(&all[held..]) {
        match (r.record, a.record) {
            (Record::Section(r), Record::Section(a)) => {
                assert_eq!(
                    (r.idstr, r.instance_id, r.body),
                    (a.idstr, a.instance_id, a.body)
                );
                assert_eq!(r.ordinal + 1, a.ordinal);
            }
            (r, a) => assert_eq!(r, a),
        }
    }

    // With the RAM section open (after its START record) there is nothing to resume from.
    let mut walk = Records::with_options(&stream, FooterScan, Options::for_stream(&stream));
    for r in walk.by_ref() {
        if matches!(r.unwrap().record, Record::Section(s) if s.is_ram()) {
            break;
        }
    }
    let at = walk.offset();
    let e = walk.resume_at(all[held].offset).unwrap_err();
    assert_eq!(e.offset, at);
}
