//! Every step of the first hour on the host, and the README's example kept equal to the
//! program's device definition.

use std::process::Command;
use vmstate::embedded_io::{ErrorType, Write};
use vmstate::stream::{Record, Records, Schemas};
use vmstate::{ErrorKind, Expected};
use vmstate_first_hour::{
    FIFO_LEN, ID, MAX_RECORD_LEN, MAX_SECTION_LEN, UART, Uart, destination, migratable, round_trip,
    stream, stream_migratable, stream_v4, v4_header,
};

fn busy() -> Uart {
    let mut u = Uart::RESET;
    u.divisor = 1.into();
    u.ier = 0x05;
    u.rx_head = 14;
    u.rx_count = 3;
    u.rx_fifo[14] = b'a';
    u.rx_fifo[15] = b'b';
    u.rx_fifo[0] = b'c';
    u.timeout = 123_456_789.into();
    u
}

#[test]
fn a_section_round_trips_with_and_without_its_subsection() {
    // Armed timeout: the subsection is sent, and the section is as long as it gets.
    let mut back = Uart::RESET;
    assert_eq!(round_trip(&busy(), &mut back).unwrap(), MAX_SECTION_LEN);
    assert_eq!(back, busy());
    // Not armed: no subsection, and `.absent()` resets a timeout the destination had armed.
    let mut quiet = busy();
    quiet.timeout = u64::MAX.into();
    let mut armed = busy();
    let n = round_trip(&quiet, &mut armed).unwrap();
    assert_eq!(n, MAX_SECTION_LEN - (2 + 20 + 4 + 8));
    assert_eq!(armed, quiet);
}

#[test]
fn a_refused_load_says_where_and_changes_nothing() {
    let mut bad = busy();
    bad.rx_head = FIFO_LEN as u8;
    let mut buf = [0u8; MAX_SECTION_LEN];
    let n = vmstate::encode_section_into(ID, &bad, &mut buf).unwrap();
    let mut live = Uart::RESET;
    let e = vmstate::load_section(&mut live, ID, &buf[..n]).unwrap_err();
    assert_eq!(e.field, Some("rx_head"));
    assert_eq!(
        e.kind,
        ErrorKind::Invalid {
            expected: Expected::Below(16),
            found: 16
        }
    );
    assert_eq!(e.section.unwrap().idstr.as_bytes(), b"example-uart");
    assert_eq!(live, Uart::RESET);
    // Cut short: located, nothing changed.
    let good = vmstate::encode_section_into(ID, &busy(), &mut buf).unwrap();
    let e = vmstate::load_section(&mut live, ID, &buf[..good - 1]).unwrap_err();
    assert!(e.is_incomplete(), "{e}");
    assert_eq!(live, Uart::RESET);
}

/// An `embedded_io::Write` into a vector that counts its calls.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    writes: usize,
}

impl ErrorType for Wire {
    type Error = core::convert::Infallible;
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.writes += 1;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn a_stream_over_embedded_io_reads_back() {
    let wire = stream(Wire::default(), &busy()).unwrap();
    // Header (8), configuration (5 + "example-board"), the section, EOF (1): 114 bytes in two
    // writes (64 bytes, then the rest at `finish`).
    assert_eq!(wire.bytes.len(), 8 + 18 + MAX_SECTION_LEN + 1);
    assert_eq!(wire.writes, 2);
    // The same bytes into a plain slice (`&mut [u8]` is an `embedded_io::Write` too).
    let mut buf = [0u8; 128];
    let left = stream(&mut buf[..], &busy()).unwrap().len();
    assert_eq!(&buf[..128 - left], &wire.bytes[..]);
    // Walk it with the table as the body-length resolver and load the section.
    let mut scratch = [0u8; size_of::<Uart>()];
    let mut back = Uart::RESET;
    let mut sections = 0;
    for rec in Records::new(&wire.bytes, Schemas::new(&[&UART], &mut scratch)) {
        if let Record::Section(s) = rec.unwrap().record {
            vmstate::load_record(&mut back, &s).unwrap();
            sections += 1;
        }
    }
    assert_eq!((sections, back), (1, busy()));
}

#[test]
fn the_program_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmstate-first-hour"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("section: 87 bytes, loaded back equal"),
        "{text}"
    );
    assert!(
        text.contains("stream: 114 bytes: 5145564d00000003"),
        "{text}"
    );
    assert!(
        text.contains(
            "destination without com.example's feature: migratable with it in use: false, \
             without: true\n  refused: example-uart (instance 0): needs com.example minor 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "destination with com.example's feature: migratable with it in use: true, without: true"
        ),
        "{text}"
    );
}

/// The README's "Using the library" example starts with this program's device definition,
/// line for line, so the two cannot drift apart.
#[test]
fn the_readme_shows_this_device() {
    let lib = include_str!("../src/lib.rs");
    let readme = include_str!("../../../README.md");
    let start = lib.find("// ANCHOR: device\n").unwrap() + "// ANCHOR: device\n".len();
    let end = lib.find("// ANCHOR_END: device").unwrap();
    let device = &lib[start..end];
    assert!(
        readme.contains(device),
        "README.md must contain src/lib.rs's device definition verbatim:\n{device}"
    );
}

#[test]
fn a_v4_stream_over_embedded_io_reads_back_with_its_vendor_minor() {
    use vmstate::v4::wire::{Record4, Records4};
    let header = v4_header().unwrap();
    let wire = stream_v4(Wire::default(), &header, &busy()).unwrap();
    let records: Vec<_> = Records4::new(&wire.bytes).map(|r| r.unwrap()).collect();
    let Record4::Header(h) = &records[0].record else {
        panic!("{:?}", records[0].record)
    };
    assert_eq!(h.vendors.len(), 1);
    assert_eq!(h.vendors[0].id.as_str(), "com.example");
    let Record4::Section(s) = &records[1].record else {
        panic!("{:?}", records[1].record)
    };
    // The timeout is armed: its vendor subsection is sent, so the minor at level 1 is 1.
    assert_eq!((s.idstr, &s.minors[..]), (&b"example-uart"[..], &[1][..]));
    assert!(records[1].end - records[1].offset <= MAX_RECORD_LEN);
    let mut back = Uart::RESET;
    let mut scratch = [0u8; 64];
    vmstate::v4::load_section(&mut back, s, &h.vendors, &h.vendors, &mut scratch).unwrap();
    assert_eq!(back, busy());
    assert!(matches!(records[2].record, Record4::Eof));
    assert_eq!(records.len(), 3);
    // Not armed: no vendor subsection, minor 0.
    let mut quiet = busy();
    quiet.timeout = u64::MAX.into();
    let wire = stream_v4(Wire::default(), &header, &quiet).unwrap();
    let Record4::Section(s) = Records4::new(&wire.bytes).nth(1).unwrap().unwrap().record else {
        panic!()
    };
    assert_eq!(&s.minors[..], &[0]);
}

#[test]
fn migratability_with_and_without_the_vendor_feature_in_use() {
    use vmstate::v4::caps::Incompatibility;
    let upstream = destination(false).unwrap();
    let vendor = destination(true).unwrap();
    let mut quiet = busy();
    quiet.timeout = u64::MAX.into();
    // Feature not in use (timeout not armed): both destinations can load the UART.
    assert!(migratable(&quiet, &upstream).unwrap().is_compatible());
    assert!(migratable(&quiet, &vendor).unwrap().is_compatible());
    // In use: only the destination with `com.example`'s feature can; the other is refused,
    // naming the device, the vendor, the level, the minor and the feature.
    assert!(migratable(&busy(), &vendor).unwrap().is_compatible());
    let refused = migratable(&busy(), &upstream).unwrap();
    assert_eq!(refused.total, 1);
    let expected = Incompatibility::Minor {
        idstr: b"example-uart",
        instance_id: 0,
        level: 1,
        vendor: b"com.example",
        dest_vendor: None,
        needed: 1,
        supported: 0,
        feature: Some(b"example-uart/timeout"),
    };
    assert_eq!(refused.found[0], expected);
    assert_eq!(
        refused.found[0].to_string(),
        "example-uart (instance 0): needs com.example minor 1 (vendor level 1) for subsection \
         example-uart/timeout; destination supports minor 0 (it has no vendor at level 1)"
    );
    // The same verdicts from the written streams' headers.
    let header = v4_header().unwrap();
    let used = stream_v4(Wire::default(), &header, &busy()).unwrap().bytes;
    let unused = stream_v4(Wire::default(), &header, &quiet).unwrap().bytes;
    assert!(
        stream_migratable(&unused, &upstream)
            .unwrap()
            .is_compatible()
    );
    assert!(stream_migratable(&unused, &vendor).unwrap().is_compatible());
    assert!(stream_migratable(&used, &vendor).unwrap().is_compatible());
    let refused = stream_migratable(&used, &upstream).unwrap();
    assert_eq!((refused.total, refused.found[0]), (1, expected));
}
