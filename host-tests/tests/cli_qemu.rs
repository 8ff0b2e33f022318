//! The CLI's edit path (`vmstate rewrite IN OUT --set …`: parse the whole stream, apply each
//! `--set` through the typed-device check, write it back) produces a stream QEMU 7.2 loads with
//! the edits visible in its monitor.

use vmstate_cli::Stream;
use vmstate_cli::generic::PcCheck;
use vmstate_devices::pc::Pc;
use vmstate_host_tests::fixture;
use vmstate_host_tests::qemu::{LoadOutcome, Qemu, assert_pic_and_rtc_edits, temp_stream};

#[test]
fn qemu_loads_a_cli_edited_stream_with_the_edits_visible() {
    let original = fixture("pc-7.2-nodefaults-S.vmstate");
    let mut stream = Stream::parse(&original).expect("parse");
    let check = PcCheck(Pc::default());
    for edit in [
        "i8259[0].imr=0x5a",
        "i8259[1].irq_base=0x70",
        // CMOS year (BCD) 2031: with `-rtc clock=rt` QEMU recomputes the time from CMOS on load.
        "mc146818rtc[0].cmos_data[9]=0x31",
    ] {
        stream
            .set(edit, &check)
            .unwrap_or_else(|e| panic!("{edit}: {e}"));
    }
    // A typed device refuses an edit its invariants reject (i8259 priority_add <= 7).
    assert!(stream.set("i8259[0].priority_add=9", &check).is_err());
    let edited = stream.to_bytes().expect("write");
    assert_eq!(edited.len(), original.len());
    let changed = original.iter().zip(&edited).filter(|(a, b)| a != b).count();
    assert!((1..=3).contains(&changed), "{changed} bytes changed");
    let path = temp_stream("cli-edited.vmstate", &edited);

    let Some(mut q) = Qemu::incoming(&path, &["-rtc", "clock=rt"]) else {
        return;
    };
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    assert_pic_and_rtc_edits(&mut q);
    drop(q);
    let _ = std::fs::remove_file(path);
}
