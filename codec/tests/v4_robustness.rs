//! Malformed v4 input: every reader entry point returns an error, never panics, and a
//! malformed stream never downgrades (docs/FORMAT.md §2, §4, §6).

mod v4_support;

use v4_support::{fixture, to_v4};
use vmstate::ErrorKind;
use vmstate::SliceSink;
use vmstate::v4::Error;
use vmstate::v4::caps::{Capabilities, Report, check_stream};
use vmstate::v4::convert::{downgrade, downgrade_obstacle};
use vmstate::v4::wire::{Record4, Records4};

/// xorshift64*: deterministic, so a failure is reproducible from the seed printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn exercise(bytes: &[u8]) -> bool {
    let walked: Result<Vec<_>, Error> = Records4::new(bytes).collect();
    let obstacle = downgrade_obstacle(bytes);
    let mut buf = vec![0u8; bytes.len() + 64];
    let mut out = SliceSink::new(&mut buf);
    let down = downgrade(bytes, &mut out);
    let mut caps: Capabilities<'_, 4, 4> = Capabilities::new(&[4], &[]).unwrap();
    caps.add_device("serial", 1, 3, &[]).unwrap();
    let mut report = Report::<4>::new();
    let checked = check_stream(bytes, &caps, &mut report);
    // The walkers agree on whether the stream is well-formed.
    assert_eq!(walked.is_ok(), checked.is_ok());
    assert_eq!(walked.is_ok(), obstacle.is_ok());
    if walked.is_err() {
        assert!(down.is_err(), "a malformed stream must not downgrade");
    }
    walked.is_ok()
}

#[test]
fn random_mutations_never_panic_and_never_downgrade_when_malformed() {
    let v4 = to_v4(&fixture("pc-7.2-serial.vmstate"), false);
    assert!(exercise(&v4));
    // Mutate everything but the opaque RAM records, which take most of the stream.
    let ram_part = Records4::new(&v4)
        .map(|r| r.unwrap())
        .find(|r| matches!(&r.record, Record4::Section(s) if s.kind == vmstate::wire::SectionKind::Part))
        .map(|r| r.offset..r.end)
        .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rejected = 0;
    for _ in 0..4000 {
        let mut m = v4.clone();
        for _ in 0..1 + rng.below(3) {
            let mut at = rng.below(m.len());
            if ram_part.contains(&at) {
                at = ram_part.end + rng.below(m.len() - ram_part.end);
            }
            match rng.below(4) {
                0 => m[at] ^= 1 << rng.below(8),
                1 => m[at] = rng.next() as u8,
                2 => m.truncate(at),
                _ => m.insert(at, rng.next() as u8),
            }
        }
        if !exercise(&m) {
            rejected += 1;
        }
    }
    // Without checksums some mutations (inside field bytes) are legitimately accepted; most
    // structural ones are not.
    assert!(rejected > 2000, "{rejected}");
}

#[test]
fn duplicate_section_ids_reserved_flags_and_bad_levels_are_refused() {
    let v4 = to_v4(&fixture("pc-7.2-serial.vmstate"), false);
    let serial = Records4::new(&v4)
        .map(|r| r.unwrap())
        .find(|r| matches!(&r.record, Record4::Section(s) if s.idstr == b"serial"))
        .unwrap();
    let mut dup = v4[..serial.end].to_vec();
    dup.extend_from_slice(&v4[serial.offset..]);
    let err = Records4::new(&dup).find_map(|r| r.err()).unwrap();
    assert!(
        matches!(err, Error::Codec(e) if e.kind == ErrorKind::DuplicateSection && e.offset == serial.end + 5),
        "{err:?}"
    );

    let mut flags = v4.clone();
    flags[11] |= 0x80;
    assert_eq!(
        Records4::new(&flags).next().unwrap().unwrap_err(),
        Error::ReservedFlags {
            offset: 8,
            found: 0x80
        }
    );

    let mut levels = v4.clone();
    levels[12] = 9;
    assert_eq!(
        Records4::new(&levels).next().unwrap().unwrap_err(),
        Error::TooManyLevels {
            offset: 12,
            found: 9
        }
    );
}

#[test]
fn a_vendor_tag_above_the_declared_levels_is_refused() {
    // Header with no vendor level, one FULL section whose subsection claims level 1.
    let mut s = b"QEVM\0\0\0\x04\0\0\0\0\0".to_vec();
    let payload: &[u8] = b"\0\0\0\x01\x03dev\0\0\0\0\0\0\0\x01\0\0\0\x01\x2a\x05\x03\x01\x00\x01\x06dev/td\0\0\0\x01\0\0\0\x01\x07";
    s.push(4);
    s.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    s.extend_from_slice(payload);
    s.push(0);
    let err = Records4::new(&s).find_map(|r| r.err()).unwrap();
    assert_eq!(
        err,
        Error::BadVendorLevel {
            offset: 13 + 5 + 21 + 2,
            level: 1,
            levels: 0
        }
    );
    // The same with a level declared but the section's minor left at 0: inconsistent.
    let mut s = b"QEVM\0\0\0\x04\0\0\0\0\x01\x07org.kvm\0\0".to_vec();
    let payload: &[u8] = b"\0\0\0\x01\x03dev\0\0\0\0\0\0\0\x01\0\0\0\0\0\x01\x2a\x05\x03\x01\x00\x01\x06dev/td\0\0\0\x01\0\0\0\x01\x07";
    s.push(4);
    s.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    s.extend_from_slice(payload);
    s.push(0);
    let err = Records4::new(&s).find_map(|r| r.err()).unwrap();
    assert!(
        matches!(
            err,
            Error::MinorInconsistent {
                level: 1,
                minor: 1,
                section_minor: 0,
                ..
            }
        ),
        "{err:?}"
    );
    let mut out = [0u8; 128];
    assert!(downgrade(&s, &mut SliceSink::new(&mut out)).is_err());
}

#[test]
fn a_configuration_record_the_v3_reader_refuses_is_refused_in_v4() {
    // Found by the v4_convert fuzz target: a v4 configuration record (checksum off) whose
    // machine name declares 0x574 bytes, past v3's cap of 255. The v4 reader passed the
    // payload through and the downgrade wrote a v3 stream no reader accepts; now the payload
    // is held to the v3 record's rules.
    let crash: &[u8] =
        include_bytes!("../../fuzz/corpus/v4_convert/crash-configuration-name-too-long");
    let e = Records4::new(crash)
        .find_map(|r| r.err())
        .expect("the fuzzer's input is refused");
    assert!(
        e.to_string()
            .contains("length too large: expected at most 255, found 1396"),
        "{e}"
    );
    let mut out = [0u8; 4096];
    assert!(downgrade(crash, &mut SliceSink::new(&mut out)).is_err());
}

#[test]
fn live_data_holding_its_own_v3_footer_is_not_downgraded() {
    // Found by the v4_convert fuzz target: a START of a live section ('"', not ram) whose
    // opaque data begins with `7e` and the section's own id. In v3 the end of such data is
    // found only by its footer, so the downgraded stream was cut there and did not read.
    let crash: &[u8] =
        include_bytes!("../../fuzz/corpus/v4_convert/crash-live-data-holds-its-footer");
    assert!(Records4::new(crash).all(|r| r.is_ok()), "a valid v4 stream");
    let mut out = [0u8; 4096];
    let e = downgrade(crash, &mut SliceSink::new(&mut out)).unwrap_err();
    assert!(
        e.to_string().contains("at byte 32 (0x20)")
            && e.to_string()
                .contains("live section data holds its own section footer"),
        "{e}"
    );
}
