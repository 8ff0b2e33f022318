//! The typed v4 writer: round trip through `Records4` and `v4::load_section`, the same bytes
//! over an embedded-io writer, vendor levels checked against the header, `max_record_len`.

use vmstate::schema::Subsection;
use vmstate::v4::StreamWriter;
use vmstate::v4::caps::SectionRequirement;
use vmstate::v4::wire::{Header, Record4, Records4, Vendor};
use vmstate::{ErrorKind, IoSink, SectionId, SliceSink, State, VendorTag, Vmsd, field};
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Debug, PartialEq)]
struct Dev {
    a: U32,
    on: u8,
    extra: U32,
}

fn on(s: &[u8]) -> bool {
    s[4] != 0
}

const EXTRA: Vmsd = Vmsd::new("dev/extra", 1, 1, 9).fields(&[field!(Dev, extra)]);
const TAG2: VendorTag = VendorTag {
    level: 2,
    minor: 1,
    must_understand: true,
};
const TAG1: VendorTag = VendorTag {
    level: 1,
    minor: 1,
    must_understand: true,
};
const SUB1: &[Subsection] = &[Subsection::new(&EXTRA, on).feature_of(KVM[0].id, TAG1)];
const SUB2: &[Subsection] = &[Subsection::new(&EXTRA, on).vendor(TAG2)];
const DEV: Vmsd = Vmsd::new("dev", 1, 1, 9)
    .fields(&[field!(Dev, a), field!(Dev, on)])
    .subsections(SUB1);
const DEV2: Vmsd = Vmsd::new("dev", 1, 1, 9)
    .fields(&[field!(Dev, a), field!(Dev, on)])
    .subsections(SUB2);
const FIXED: Vmsd =
    Vmsd::new("dev", 1, 1, 9).fields(&[field!(Dev, a), field!(Dev, on), field!(Dev, extra)]);
impl State for Dev {
    const VMSD: &'static Vmsd = &DEV;
}

const ID: SectionId<'static> = SectionId {
    section_id: 1,
    idstr: b"dev",
    instance_id: 3,
};
const KVM: [Vendor<'static>; 1] = [Vendor {
    id: vmstate::VendorId::new("org.linux-kvm"),
    protocol_minor: 0,
}];

fn write(vmsd: &Vmsd, state: &Dev, buf: &mut [u8]) -> vmstate::Result<usize> {
    let header = Header::new(&KVM, true).unwrap();
    let mut w = StreamWriter::new(&header, SliceSink::new(buf))?;
    w.section_raw(ID, vmsd, state.as_bytes())?;
    w.eof()?;
    Ok(w.into_inner().finish())
}

#[test]
fn a_typed_section_round_trips_through_records4_and_load_section() {
    let dev = Dev {
        a: 7.into(),
        on: 1,
        extra: 9.into(),
    };
    let mut buf = [0u8; 256];
    let header = Header::new(&KVM, true).unwrap();
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    w.section(ID, &dev).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    let recs: Vec<_> = Records4::new(&buf[..n]).map(|r| r.unwrap()).collect();
    let Record4::Section(sec) = &recs[1].record else {
        panic!("{recs:?}")
    };
    assert_eq!(
        sec.minor(1),
        1,
        "the needed level-1 feature raises the minor"
    );
    let mut out = Dev::new_zeroed();
    let mut scratch = [0u8; 64];
    vmstate::v4::load_section(&mut out, sec, &KVM, &KVM, &mut scratch).unwrap();
    assert_eq!(out, dev);
    assert!(matches!(recs[2].record, Record4::Eof));
}

struct Uart(Vec<u8>);
impl vmstate::embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}
impl vmstate::embedded_io::Write for Uart {
    fn write(&mut self, b: &[u8]) -> Result<usize, Self::Error> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn the_writer_works_over_an_embedded_io_sink_with_the_same_bytes() {
    let dev = Dev {
        a: 7.into(),
        on: 1,
        extra: 9.into(),
    };
    let mut buf = [0u8; 256];
    let n = write(&DEV, &dev, &mut buf).unwrap();
    let header = Header::new(&KVM, true).unwrap();
    let mut w = StreamWriter::new(&header, IoSink::new(Uart(Vec::new()))).unwrap();
    w.section(ID, &dev).unwrap();
    w.eof().unwrap();
    assert_eq!(w.into_inner().into_inner().0, &buf[..n]);
}

#[test]
fn a_tag_above_the_header_chain_is_refused_naming_section_instance_and_subsection() {
    // Needed or not, and nothing of the section is written.
    for on in [0, 1] {
        let dev = Dev {
            a: 7.into(),
            on,
            extra: 9.into(),
        };
        let mut buf = [0u8; 256];
        let e = write(&DEV2, &dev, &mut buf).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::VendorLevel {
                level: 2,
                levels: 1
            }
        );
        let s = e.section.unwrap();
        assert!(s.idstr.eq_bytes(b"dev") && s.instance_id == 3);
        assert_eq!(e.field, Some("dev/extra"));
    }
}

#[test]
fn max_record_len_bounds_every_record_and_is_exact_for_a_fixed_table() {
    let dev = Dev {
        a: 7.into(),
        on: 1,
        extra: 9.into(),
    };
    let long = [b'x'; 255];
    let vendors = [KVM[0]; 8];
    let header = Header::new(&vendors, true).unwrap();
    let id = SectionId { idstr: &long, ..ID };
    let mut buf = vec![0u8; 1024];
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    let at = w.position();
    w.section_raw(id, &FIXED, dev.as_bytes()).unwrap();
    assert_eq!(w.position() - at, vmstate::v4::max_record_len(&FIXED));
    let at = w.position();
    w.section(id, &dev).unwrap();
    assert!(w.position() - at <= vmstate::v4::max_record_len(&DEV));
}

const TAG0: VendorTag = VendorTag {
    level: 0,
    minor: 1,
    must_understand: true,
};
const SUB0: &[Subsection] = &[Subsection::new(&EXTRA, on).vendor(TAG0)];
const DEV0: Vmsd = Vmsd::new("dev", 1, 1, 9)
    .fields(&[field!(Dev, a), field!(Dev, on)])
    .subsections(SUB0);

#[test]
fn level_0_is_never_a_vendor_tag_for_the_writer_the_capabilities_or_the_reader() {
    // The writer: refused needed or not, at the offset where the section would start, and
    // nothing of it is written.
    for on in [0, 1] {
        let dev = Dev {
            a: 7.into(),
            on,
            extra: 9.into(),
        };
        let mut buf = [0u8; 256];
        let header = Header::new(&KVM, true).unwrap();
        let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
        let at = w.position();
        let e = w.section_raw(ID, &DEV0, dev.as_bytes()).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::VendorLevel {
                level: 0,
                levels: 1
            }
        );
        assert_eq!((e.offset, e.field), (at, Some("dev/extra")));
        assert!(e.section.unwrap().idstr.eq_bytes(b"dev"));
        assert_eq!(w.position(), at, "nothing of the section is written");
    }
    // The capabilities: refused, nothing added.
    let mut caps: vmstate::v4::caps::Capabilities<'_, 4, 4> =
        vmstate::v4::caps::Capabilities::new(&[4], &[KVM[0].id]).unwrap();
    let e = caps.add_vmsd(&DEV0).unwrap_err();
    assert!(
        matches!(e, vmstate::v4::caps::AddError::VendorLevel(e)
            if e.kind == ErrorKind::VendorLevel { level: 0, levels: 1 }),
        "{e:?}"
    );
    assert!(caps.devices.is_empty() && caps.subsections.is_empty());
    // The reader: a frame whose tag says level 0 is refused at the level byte.
    let dev = Dev {
        a: 7.into(),
        on: 1,
        extra: 9.into(),
    };
    let header = Header::new(&KVM, false).unwrap();
    let mut buf = [0u8; 256];
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    w.section(ID, &dev).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    // The frame: 05 | flags 03 | level 01 | minor 00 01 | name "dev/extra".
    let frame = buf[..n]
        .windows(5)
        .position(|w| w == [0x05, 0x03, 0x01, 0x00, 0x01])
        .unwrap();
    buf[frame + 2] = 0;
    let e = Records4::new(&buf[..n])
        .find_map(Result::err)
        .expect("refused");
    assert_eq!(
        e,
        vmstate::v4::Error::BadVendorLevel {
            offset: frame + 2,
            level: 0,
            levels: 1
        }
    );
}

const REDHAT: vmstate::VendorId<'static> = vmstate::VendorId::new("com.redhat");

#[test]
fn a_tag_that_names_its_vendor_is_checked_against_the_chain_not_only_its_level() {
    // DEV's tag names org.linux-kvm at level 1. A chain with com.redhat first has a level 1,
    // but it is not kvm's: the writer and the capabilities refuse the table instead of
    // crediting kvm's feature to com.redhat, needed or not, and name where kvm really is.
    let kvm = KVM[0];
    let redhat = Vendor {
        id: REDHAT,
        protocol_minor: 0,
    };
    let reordered = [redhat, kvm];
    for on in [0, 1] {
        let dev = Dev {
            a: 7.into(),
            on,
            extra: 9.into(),
        };
        let mut buf = [0u8; 256];
        let header = Header::new(&reordered, true).unwrap();
        let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
        let at = w.position();
        let e = w.section_raw(ID, &DEV, dev.as_bytes()).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::VendorMismatch {
                level: 1,
                tag: kvm.id,
                at: 2
            }
        );
        assert_eq!((e.offset, e.field), (at, Some("dev/extra")));
        let s = e.section.unwrap();
        assert!(s.idstr.eq_bytes(b"dev") && s.instance_id == 3);
        assert_eq!(w.position(), at, "nothing of the section is written");
        assert!(
            e.to_string().contains(
                "vendor level 1: the tag names org.linux-kvm, which the vendor chain has at \
                 level 2 (another vendor is at level 1)"
            ),
            "{e}"
        );
        // A chain without kvm at all.
        let header = Header::new(&[redhat], true).unwrap();
        let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
        let e = w.section_raw(ID, &DEV, dev.as_bytes()).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::VendorMismatch {
                level: 1,
                tag: kvm.id,
                at: 0
            }
        );
        assert!(
            e.to_string()
                .contains("the tag names org.linux-kvm, which is not in the vendor chain"),
            "{e}"
        );
        // The right order: written, kvm's minor at level 1.
        let header = Header::new(&[kvm, redhat], true).unwrap();
        let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
        w.section_raw(ID, &DEV, dev.as_bytes()).unwrap();
        w.eof().unwrap();
        let n = w.into_inner().finish();
        let records: Vec<_> = Records4::new(&buf[..n]).collect::<Result<_, _>>().unwrap();
        let Record4::Section(ref s) = records[1].record else {
            panic!("{:?}", records[1].record)
        };
        assert_eq!(s.minors, [on as u16, 0]);
        // A live state's requirement (what the migratability check compares): the same rule,
        // so the reordered chain does not credit kvm's feature to com.redhat either.
        let vmstate::v4::Error::Codec(e) =
            SectionRequirement::from_state(ID, &DEV, dev.as_bytes(), &reordered).unwrap_err()
        else {
            panic!("not a codec error")
        };
        assert_eq!(
            (e.kind, e.field),
            (
                ErrorKind::VendorMismatch {
                    level: 1,
                    tag: kvm.id,
                    at: 2
                },
                Some("dev/extra")
            )
        );
        assert!(e.section.unwrap().idstr.eq_bytes(b"dev"));
        let need =
            SectionRequirement::from_state(ID, &DEV, dev.as_bytes(), &[kvm, redhat]).unwrap();
        assert_eq!(need.minors, [on as u16, 0]);
    }
    // The capabilities: the same rule, nothing added on refusal.
    let mut caps: vmstate::v4::caps::Capabilities<'_, 4, 4> =
        vmstate::v4::caps::Capabilities::new(&[4], &[REDHAT, kvm.id]).unwrap();
    let e = caps.add_vmsd(&DEV).unwrap_err();
    assert!(
        matches!(e, vmstate::v4::caps::AddError::VendorLevel(e)
            if e.kind == ErrorKind::VendorMismatch { level: 1, tag: kvm.id, at: 2 }
                && e.field == Some("dev/extra")
                && e.section.is_some_and(|s| s.idstr.eq_bytes(b"dev"))),
        "{e:?}"
    );
    assert!(caps.devices.is_empty() && caps.subsections.is_empty());
    let mut caps: vmstate::v4::caps::Capabilities<'_, 4, 4> =
        vmstate::v4::caps::Capabilities::new(&[4], &[kvm.id, REDHAT]).unwrap();
    caps.add_vmsd(&DEV).unwrap();
    assert_eq!(caps.devices[0].max_minor, [1]);
}

#[test]
fn a_tag_without_a_vendor_is_checked_by_level_only() {
    // DEV2's tag names no vendor: any vendor at level 2 is accepted (positional, as before).
    let dev = Dev {
        a: 7.into(),
        on: 1,
        extra: 9.into(),
    };
    let redhat = Vendor {
        id: REDHAT,
        protocol_minor: 0,
    };
    let header = Header::new(&[redhat, redhat], true).unwrap();
    let mut buf = [0u8; 256];
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    w.section_raw(ID, &DEV2, dev.as_bytes()).unwrap();
}
