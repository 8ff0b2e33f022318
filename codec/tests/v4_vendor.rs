//! The 2009 proposal's example end to end (docs/FORMAT.md §3, §9, §10, §11): an rtc whose
//! `org.linux-kvm` build adds the `td_hack` feature group (fields `irq_coalesced`, `period`) as
//! the vendor subsection `mc146818rtc/td_hack` under that vendor's minor 1, and a second-level
//! vendor `com.redhat` that backports another feature (`mc146818rtc/rh_quirk`, its minor 1)
//! plus an ancillary, skippable record (`mc146818rtc/rh_stats`, minor 0).
//!
//! The device tables are defined here (three builds of one device); the real rtc model lives in
//! the devices crate.

use vmstate::schema::{NotMigrated, Subsection, VendorId, VendorTag, Vmsd};
use vmstate::v4::StreamWriter;
use vmstate::v4::caps::{
    Capabilities, Incompatibility, Report, SectionRequirement, check, check_stream,
};
use vmstate::v4::convert::{UpgradeOptions, VmsdSplit, downgrade, downgrade_obstacle, upgrade};
use vmstate::v4::minor::section_minors;
use vmstate::v4::wire::Vendor;
use vmstate::v4::wire::{Header, Record4, Records4};
use vmstate::v4::{Error, Refusal};
use vmstate::{SectionId, SliceSink, assert_layout, field, not_migrated, pred};
use zerocopy::byteorder::big_endian::{I32, U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
struct Rtc {
    cmos_data: [u8; 16],
    cmos_index: u8,
    irq_reinject_on_ack_count: U16,
    /// Configuration knob (`-rtc driftfix=slew`), not migrated: whether td_hack is in use.
    td_hack: u8,
    irq_coalesced: I32,
    period: I32,
    /// RHEL configuration knob, not migrated.
    rh_quirk_on: u8,
    rh_quirk_state: U32,
    rh_stats_on: u8,
    rh_stats: U32,
    /// SUSE configuration knob, not migrated.
    suse_on: u8,
    suse_state: u8,
}

const REINJECT: Vmsd = Vmsd::new("mc146818rtc/irq_reinject_on_ack_count", 1, 1, SIZE)
    .fields(&[field!(Rtc, irq_reinject_on_ack_count)]);
const TD_HACK: Vmsd = Vmsd::new("mc146818rtc/td_hack", 1, 1, SIZE)
    .fields(&[field!(Rtc, irq_coalesced), field!(Rtc, period)]);
const RH_QUIRK: Vmsd =
    Vmsd::new("mc146818rtc/rh_quirk", 1, 1, SIZE).fields(&[field!(Rtc, rh_quirk_state)]);
const RH_STATS: Vmsd =
    Vmsd::new("mc146818rtc/rh_stats", 1, 1, SIZE).fields(&[field!(Rtc, rh_stats)]);

const SUSE: Vmsd = Vmsd::new("mc146818rtc/suse", 1, 1, SIZE).fields(&[field!(Rtc, suse_state)]);

const SIZE: usize = core::mem::size_of::<Rtc>();
const FIELDS: &[vmstate::Field] = &[field!(Rtc, cmos_data), field!(Rtc, cmos_index)];

const KVM: VendorTag = VendorTag {
    level: 1,
    minor: 1,
    must_understand: true,
};
const RH: VendorTag = VendorTag {
    level: 2,
    minor: 1,
    must_understand: true,
};
const RH_ANCILLARY: VendorTag = VendorTag {
    level: 2,
    minor: 0,
    must_understand: false,
};
const KVM_ID: VendorId = VendorId::new("org.linux-kvm");
const RH_ID: VendorId = VendorId::new("com.redhat");
const SUSE_ID: VendorId = VendorId::new("com.suse");

/// Another second-level vendor, on the same first level, with its own feature at its minor 1.
const SUSE_TAG: VendorTag = VendorTag {
    level: 2,
    minor: 1,
    must_understand: true,
};

const S_REINJECT: Subsection = Subsection::new(
    &REINJECT,
    pred!(Rtc, |s| s.irq_reinject_on_ack_count.get() != 0),
);
const S_TD_HACK: Subsection =
    Subsection::new(&TD_HACK, pred!(Rtc, |s| s.td_hack != 0)).feature_of(KVM_ID, KVM);
const S_RH_QUIRK: Subsection =
    Subsection::new(&RH_QUIRK, pred!(Rtc, |s| s.rh_quirk_on != 0)).feature_of(RH_ID, RH);
const S_RH_STATS: Subsection =
    Subsection::new(&RH_STATS, pred!(Rtc, |s| s.rh_stats_on != 0)).feature_of(RH_ID, RH_ANCILLARY);

// One struct serves the four builds: each build marks the knobs (never on the wire) and the
// other builds' feature fields as not migrated.
const TD_HACK_ON: NotMigrated = not_migrated!(Rtc, td_hack);
const RH_QUIRK_ON: NotMigrated = not_migrated!(Rtc, rh_quirk_on);
const RH_STATS_ON: NotMigrated = not_migrated!(Rtc, rh_stats_on);
const SUSE_ON: NotMigrated = not_migrated!(Rtc, suse_on);
const IRQ_COALESCED: NotMigrated = not_migrated!(Rtc, irq_coalesced);
const PERIOD: NotMigrated = not_migrated!(Rtc, period);
const RH_QUIRK_STATE: NotMigrated = not_migrated!(Rtc, rh_quirk_state);
const RH_STATS_STATE: NotMigrated = not_migrated!(Rtc, rh_stats);
const SUSE_STATE: NotMigrated = not_migrated!(Rtc, suse_state);

/// Upstream QEMU's rtc.
const RTC_UPSTREAM: Vmsd = Vmsd::new("mc146818rtc", 3, 1, SIZE)
    .fields(FIELDS)
    .subsections(&[S_REINJECT])
    .not_migrated(&[
        TD_HACK_ON,
        RH_QUIRK_ON,
        RH_STATS_ON,
        SUSE_ON,
        IRQ_COALESCED,
        PERIOD,
        RH_QUIRK_STATE,
        RH_STATS_STATE,
        SUSE_STATE,
    ]);
/// qemu-kvm's rtc: upstream plus td_hack.
const RTC_KVM: Vmsd = Vmsd::new("mc146818rtc", 3, 1, SIZE)
    .fields(FIELDS)
    .subsections(&[S_REINJECT, S_TD_HACK])
    .not_migrated(&[
        TD_HACK_ON,
        RH_QUIRK_ON,
        RH_STATS_ON,
        SUSE_ON,
        RH_QUIRK_STATE,
        RH_STATS_STATE,
        SUSE_STATE,
    ]);
/// RHEL's rtc: qemu-kvm's plus a backport and an ancillary record.
const RTC_RHEL: Vmsd = Vmsd::new("mc146818rtc", 3, 1, SIZE)
    .fields(FIELDS)
    .subsections(&[S_REINJECT, S_TD_HACK, S_RH_QUIRK, S_RH_STATS])
    .not_migrated(&[TD_HACK_ON, RH_QUIRK_ON, RH_STATS_ON, SUSE_ON, SUSE_STATE]);
/// SUSE's rtc: qemu-kvm's plus its own level-2 feature.
const RTC_SUSE: Vmsd = Vmsd::new("mc146818rtc", 3, 1, SIZE)
    .fields(FIELDS)
    .subsections(&[
        S_REINJECT,
        S_TD_HACK,
        Subsection::new(&SUSE, pred!(Rtc, |s| s.suse_on != 0)).feature_of(SUSE_ID, SUSE_TAG),
    ])
    .not_migrated(&[
        TD_HACK_ON,
        RH_QUIRK_ON,
        RH_STATS_ON,
        SUSE_ON,
        RH_QUIRK_STATE,
        RH_STATS_STATE,
    ]);
// Each build under the vendor chain its streams carry (upstream: none; qemu-kvm: one; RHEL and
// SUSE: two).
assert_layout!(Rtc, RTC_SUSE, vendors = 2);
assert_layout!(Rtc, RTC_UPSTREAM, vendors = 0);
assert_layout!(Rtc, RTC_KVM, vendors = 1);
assert_layout!(Rtc, RTC_RHEL, vendors = 2);

/// A second device, identical in every build.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
struct Port92 {
    outport: u8,
}
const PORT92: Vmsd = Vmsd::new("port92", 1, 1, 1).fields(&[field!(Port92, outport)]);
assert_layout!(Port92, PORT92, wire);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    Upstream,
    Kvm,
    Rhel,
    Suse,
}

impl Build {
    fn rtc(self) -> &'static Vmsd {
        match self {
            Build::Upstream => &RTC_UPSTREAM,
            Build::Kvm => &RTC_KVM,
            Build::Rhel => &RTC_RHEL,
            Build::Suse => &RTC_SUSE,
        }
    }

    fn vendor_ids(self) -> &'static [VendorId<'static>] {
        const RHEL: &[VendorId] = &[KVM_ID, RH_ID];
        const SUSE: &[VendorId] = &[KVM_ID, SUSE_ID];
        match self {
            Build::Upstream => &[],
            Build::Kvm => &[KVM_ID],
            Build::Rhel => RHEL,
            Build::Suse => SUSE,
        }
    }

    fn vendors(self) -> Vec<Vendor<'static>> {
        self.vendor_ids()
            .iter()
            .map(|id| Vendor {
                id: *id,
                protocol_minor: 0,
            })
            .collect()
    }

    fn caps(self) -> Capabilities<'static, 8, 16> {
        let mut c = Capabilities::new(&[3, 4], self.vendor_ids()).unwrap();
        c.add_vmsd(self.rtc()).unwrap();
        c.add_vmsd(&PORT92).unwrap();
        c
    }
}

const RTC_ID: SectionId<'static> = SectionId {
    section_id: 19,
    idstr: b"mc146818rtc",
    instance_id: 0,
};
const PORT92_ID: SectionId<'static> = SectionId {
    section_id: 27,
    idstr: b"port92",
    instance_id: 0,
};

fn rtc_state(td_hack: bool, rh_quirk: bool, rh_stats: bool) -> Rtc {
    rtc_state4(td_hack, rh_quirk, rh_stats, false)
}

fn rtc_state4(td_hack: bool, rh_quirk: bool, rh_stats: bool, suse: bool) -> Rtc {
    let mut s = Rtc::new_zeroed();
    s.cmos_data = *b"\x12\x00\x34\x00\x56\x00\x01\x27\x11\x26\x26\x02\x00\x80\x00\x00";
    s.cmos_index = 0x0c;
    s.irq_reinject_on_ack_count = 2.into();
    s.td_hack = td_hack as u8;
    s.irq_coalesced = 5.into();
    s.period = 32.into();
    s.rh_quirk_on = rh_quirk as u8;
    s.rh_quirk_state = 0xdead_beef.into();
    s.rh_stats_on = rh_stats as u8;
    s.rh_stats = 77.into();
    s.suse_on = suse as u8;
    s.suse_state = 9;
    s
}

const PORT: Port92 = Port92 { outport: 0x02 };

/// What a build writes: a v4 stream with the build's vendor chain.
fn v4_stream(build: Build, rtc: &Rtc) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 4096];
    let vendors = build.vendors();
    let header = Header::new(&vendors, true).unwrap();
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    w.section_raw(RTC_ID, build.rtc(), rtc.as_bytes()).unwrap();
    w.section_raw(PORT92_ID, &PORT92, PORT.as_bytes()).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    buf.truncate(n);
    buf
}

/// What a v3 writer with `vmsd` for the rtc makes of the same state.
fn v3_stream(rtc_vmsd: &Vmsd, rtc: &Rtc) -> Vec<u8> {
    let mut buf = vec![0xa5u8; 4096];
    let mut out = SliceSink::new(&mut buf);
    vmstate::Sink::write(&mut out, b"QEVM\0\0\0\x03").unwrap();
    vmstate::encode_section_raw(RTC_ID, rtc_vmsd, rtc.as_bytes(), &mut out).unwrap();
    vmstate::encode_section_raw(PORT92_ID, &PORT92, PORT.as_bytes(), &mut out).unwrap();
    vmstate::Sink::write(&mut out, &[0]).unwrap();
    let n = out.finish();
    buf.truncate(n);
    buf
}

/// The migration the proposal asks for: the check runs on the live devices first; only a
/// compatible destination gets any byte.
fn migrate(
    src: Build,
    rtc: &Rtc,
    dst: &Capabilities<'static, 8, 16>,
    wire: &mut Vec<u8>,
) -> Vec<String> {
    let vendors = src.vendors();
    let mut report = Report::<8>::new();
    let rtc_req =
        SectionRequirement::from_state(RTC_ID, src.rtc(), rtc.as_bytes(), &vendors).unwrap();
    check(&vendors, &rtc_req, dst, &mut report);
    let port_req =
        SectionRequirement::from_state(PORT92_ID, &PORT92, PORT.as_bytes(), &vendors).unwrap();
    check(&vendors, &port_req, dst, &mut report);
    if !report.is_compatible() {
        return report.found.iter().map(|i| i.to_string()).collect();
    }
    wire.extend_from_slice(&v4_stream(src, rtc));
    Vec::new()
}

const TD_HACK_TO_UPSTREAM: &str = "mc146818rtc (instance 0): needs org.linux-kvm minor 1 \
    (vendor level 1) for subsection mc146818rtc/td_hack; destination supports minor 0 (it has no \
    vendor at level 1)";
const RH_QUIRK_TO_UPSTREAM: &str = "mc146818rtc (instance 0): needs com.redhat minor 1 (vendor \
    level 2) for subsection mc146818rtc/rh_quirk; destination supports minor 0 (it has no vendor \
    at level 2)";
const RH_QUIRK_TO_KVM: &str = RH_QUIRK_TO_UPSTREAM;
const RH_QUIRK_TO_SUSE: &str = "mc146818rtc (instance 0): needs com.redhat minor 1 (vendor \
    level 2) for subsection mc146818rtc/rh_quirk; destination supports minor 0 (its vendor at \
    level 2 is com.suse)";
const SUSE_TO_RHEL: &str = "mc146818rtc (instance 0): needs com.suse minor 1 (vendor level 2) \
    for subsection mc146818rtc/suse; destination supports minor 0 (its vendor at level 2 is \
    com.redhat)";
const SUSE_TO_KVM: &str = "mc146818rtc (instance 0): needs com.suse minor 1 (vendor level 2) \
    for subsection mc146818rtc/suse; destination supports minor 0 (it has no vendor at level 2)";

/// (source build, td_hack used, rh_quirk used, destination) → the reasons the check gives,
/// written out by hand from the proposal's rules.
#[allow(clippy::type_complexity)]
const MATRIX: &[(Build, bool, bool, Build, &[&str])] = {
    use Build::*;
    &[
        // Upstream source: nothing vendor-specific can be in use.
        (Upstream, false, false, Upstream, &[]),
        (Upstream, false, false, Kvm, &[]),
        (Upstream, false, false, Rhel, &[]),
        // qemu-kvm source.
        (Kvm, false, false, Upstream, &[]),
        (Kvm, false, false, Kvm, &[]),
        (Kvm, false, false, Rhel, &[]),
        (Kvm, true, false, Upstream, &[TD_HACK_TO_UPSTREAM]),
        (Kvm, true, false, Kvm, &[]),
        (Kvm, true, false, Rhel, &[]),
        // RHEL source (RHEL→upstream and RHEL→kvm matrices).
        (Rhel, false, false, Upstream, &[]),
        (Rhel, false, false, Kvm, &[]),
        (Rhel, false, false, Rhel, &[]),
        (Rhel, true, false, Upstream, &[TD_HACK_TO_UPSTREAM]),
        (Rhel, true, false, Kvm, &[]),
        (Rhel, true, false, Rhel, &[]),
        (Rhel, false, true, Upstream, &[RH_QUIRK_TO_UPSTREAM]),
        (Rhel, false, true, Kvm, &[RH_QUIRK_TO_KVM]),
        (Rhel, false, true, Rhel, &[]),
        (
            Rhel,
            true,
            true,
            Upstream,
            &[TD_HACK_TO_UPSTREAM, RH_QUIRK_TO_UPSTREAM],
        ),
        (Rhel, true, true, Kvm, &[RH_QUIRK_TO_KVM]),
        (Rhel, true, true, Rhel, &[]),
        // Two second-level vendors on one first level: each one's level-2 minor means nothing
        // to the other, but unused features and the shared level 1 still migrate.
        (Rhel, false, false, Suse, &[]),
        (Rhel, true, false, Suse, &[]),
        (Rhel, false, true, Suse, &[RH_QUIRK_TO_SUSE]),
        (Rhel, true, true, Suse, &[RH_QUIRK_TO_SUSE]),
    ]
};

#[test]
fn migratability_matrix_live_check_refuses_before_any_byte() {
    for &(src, td, rh, dst, expected) in MATRIX {
        for rh_stats in [false, true] {
            if rh_stats && src != Build::Rhel {
                continue;
            }
            let rtc = rtc_state(td, rh, rh_stats);
            // Capabilities travel as postcard bytes before migration.
            let caps = dst.caps();
            let mut wire_caps = [0u8; 1024];
            let n = postcard::to_slice(&caps, &mut wire_caps).unwrap().len();
            let caps: Capabilities<'_, 8, 16> = postcard::from_bytes(&wire_caps[..n]).unwrap();
            assert_eq!(caps, dst.caps());
            // `caps` borrows `wire_caps`; the matrix needs 'static, so compare via the build.
            let dst_caps = dst.caps();
            let mut wire = Vec::new();
            let reasons = migrate(src, &rtc, &dst_caps, &mut wire);
            let case = format!("{src:?} td_hack={td} rh_quirk={rh} rh_stats={rh_stats} -> {dst:?}");
            assert_eq!(reasons, expected, "{case}");
            assert_eq!(
                wire.is_empty(),
                !expected.is_empty(),
                "{case}: bytes sent on refusal"
            );
            // The same verdict from the stream's headers alone, with the exchanged caps.
            let v4 = v4_stream(src, &rtc);
            let mut report = Report::<8>::new();
            check_stream(&v4, &caps, &mut report).unwrap();
            let from_stream: Vec<String> = report.found.iter().map(|i| i.to_string()).collect();
            assert_eq!(from_stream, expected, "{case} (stream headers)");
        }
    }
}

#[test]
fn sibling_vendor_matrix() {
    // (td_hack, suse feature, destination) -> reasons, for a SUSE source.
    let cases: &[(bool, bool, Build, &[&str])] = &[
        (false, false, Build::Upstream, &[]),
        (false, false, Build::Rhel, &[]),
        (true, false, Build::Rhel, &[]),
        (true, false, Build::Upstream, &[TD_HACK_TO_UPSTREAM]),
        (false, true, Build::Rhel, &[SUSE_TO_RHEL]),
        (false, true, Build::Kvm, &[SUSE_TO_KVM]),
        (false, true, Build::Suse, &[]),
    ];
    for &(td, suse, dst, expected) in cases {
        let rtc = rtc_state4(td, false, false, suse);
        let mut wire = Vec::new();
        let reasons = migrate(Build::Suse, &rtc, &dst.caps(), &mut wire);
        assert_eq!(reasons, expected, "suse td={td} suse={suse} -> {dst:?}");
        assert_eq!(wire.is_empty(), !expected.is_empty());
    }
}

#[test]
fn unused_features_leave_minors_at_zero() {
    let unused = rtc_state(false, false, false);
    assert_eq!(
        section_minors(&RTC_RHEL, unused.as_bytes(), 2).unwrap(),
        [0, 0]
    );
    let td = rtc_state(true, false, false);
    assert_eq!(section_minors(&RTC_RHEL, td.as_bytes(), 2).unwrap(), [1, 0]);
    let rh = rtc_state(false, true, true);
    assert_eq!(section_minors(&RTC_RHEL, rh.as_bytes(), 2).unwrap(), [0, 1]);
    // The ancillary record alone does not raise the minor.
    let stats = rtc_state(false, false, true);
    assert_eq!(
        section_minors(&RTC_RHEL, stats.as_bytes(), 2).unwrap(),
        [0, 0]
    );
    // A build with fewer levels than its tags cannot compute them, whatever the state: the
    // first tag above the chain is named.
    for state in [rh, unused] {
        let e = section_minors(&RTC_RHEL, state.as_bytes(), 1).unwrap_err();
        assert_eq!(
            (e.kind, e.field),
            (
                vmstate::ErrorKind::VendorLevel {
                    level: 2,
                    levels: 1
                },
                Some("mc146818rtc/rh_quirk")
            )
        );
    }
}

#[test]
fn downgrade_to_v3_iff_no_vendor_feature_is_used() {
    for src in [Build::Upstream, Build::Kvm, Build::Rhel] {
        for (td, rh, stats) in [
            (false, false, false),
            (false, false, true),
            (true, false, false),
            (false, true, false),
            (true, true, true),
        ] {
            if (td && src == Build::Upstream) || ((rh || stats) && src != Build::Rhel) {
                continue;
            }
            let rtc = rtc_state(td, rh, stats);
            let v4 = v4_stream(src, &rtc);
            let mut buf = vec![0xa5u8; 4096];
            let mut out = SliceSink::new(&mut buf);
            let res = downgrade(&v4, &mut out);
            let case = format!("{src:?} td={td} rh={rh} stats={stats}");
            if !td && !rh {
                res.unwrap_or_else(|e| panic!("{case}: {e}"));
                // Byte-identical to what upstream's v3 writer makes of the same state (the
                // skippable rh_stats record is dropped, upstream never sends it).
                let n = out.finish();
                assert!(buf[..n] == v3_stream(&RTC_UPSTREAM, &rtc)[..], "{case}");
            } else {
                assert_eq!(out.finish(), 0, "{case}: nothing written on refusal");
                let Err(Error::Refused(r)) = res else {
                    panic!("{case}: {res:?}")
                };
                let (level, vendor, feature): (u8, &[u8], &[u8]) = if td {
                    (1, b"org.linux-kvm", b"mc146818rtc/td_hack")
                } else {
                    (2, b"com.redhat", b"mc146818rtc/rh_quirk")
                };
                assert!(r.section.idstr.eq_bytes(b"mc146818rtc"), "{case}");
                assert_eq!((r.level, r.minor), (level, 1), "{case}");
                assert!(r.vendor.eq_bytes(vendor), "{case}");
                assert!(r.feature.unwrap().eq_bytes(feature), "{case}");
                assert_eq!(Some(r), downgrade_obstacle(&v4).unwrap());
                let msg = Error::Refused(r).to_string();
                assert!(
                    msg.contains(core::str::from_utf8(feature).unwrap()),
                    "{msg}"
                );
            }
        }
    }
}

#[test]
fn refusal_message_names_device_vendor_minor_and_feature() {
    let v4 = v4_stream(Build::Kvm, &rtc_state(true, false, false));
    let r: Refusal = downgrade_obstacle(&v4).unwrap().unwrap();
    let text = r.to_string();
    assert!(
        text.starts_with(
            "device mc146818rtc (instance 0) uses vendor org.linux-kvm (level 1) minor 1 through \
             subsection mc146818rtc/td_hack at offset "
        ),
        "{text}"
    );
}

#[test]
fn v3_from_a_vendor_build_upgrades_with_its_tables_to_the_direct_v4_bytes() {
    for (td, rh) in [(false, false), (true, false), (false, true), (true, true)] {
        let rtc = rtc_state(td, rh, false);
        // The RHEL build's own v3 writer (what it would send a v3-only peer).
        let v3 = v3_stream(&RTC_RHEL, &rtc);
        let vmsds: [&'static Vmsd; 2] = [&RTC_RHEL, &PORT92];
        let mut scratch = [0u8; 64];
        let split = VmsdSplit::new(&vmsds, &mut scratch);
        let vendors = Build::Rhel.vendors();
        let opts = UpgradeOptions {
            vendors: &vendors,
            crc: true,
        };
        let mut buf = vec![0xa5u8; 4096];
        let mut out = SliceSink::new(&mut buf);
        upgrade(&v3, split, &opts, &mut out).unwrap();
        let n = out.finish();
        assert!(
            buf[..n] == v4_stream(Build::Rhel, &rtc)[..],
            "td={td} rh={rh}"
        );
        // The same tables under a header with the chain reversed: each feature present names
        // its vendor, which the reversed chain has at another level, so the conversion is
        // refused instead of crediting it to the vendor at the tag's level.
        let reversed: Vec<_> = vendors.iter().rev().copied().collect();
        let opts = UpgradeOptions {
            vendors: &reversed,
            crc: true,
        };
        let split = VmsdSplit::new(&vmsds, &mut scratch);
        let mut out = SliceSink::new(&mut buf);
        let res = upgrade(&v3, split, &opts, &mut out);
        if !td && !rh {
            res.unwrap();
            continue;
        }
        let Err(vmstate::v4::Error::Codec(e)) = res else {
            panic!("td={td} rh={rh}: {res:?}")
        };
        let (level, tag, at) = if td { (1, KVM_ID, 2) } else { (2, RH_ID, 1) };
        assert_eq!(
            e.kind,
            vmstate::ErrorKind::VendorMismatch { level, tag, at }
        );
        assert!(e.section.unwrap().idstr.eq_bytes(b"mc146818rtc"), "{e}");
    }
}

#[test]
fn incompatibilities_are_all_listed() {
    // A destination that lacks port92, accepts only rtc version 1..=2, and knows no subsection.
    let mut caps: Capabilities<'static, 8, 16> =
        Capabilities::new(&[4], &[VendorId::new("org.example")]).unwrap();
    caps.devices
        .push(vmstate::v4::caps::DeviceCaps {
            name: "mc146818rtc",
            min_version: 1,
            max_version: 2,
            max_minor: heapless::Vec::new(),
        })
        .unwrap();
    let v4 = v4_stream(Build::Rhel, &rtc_state(true, true, true));
    let mut report = Report::<3>::new();
    check_stream(&v4, &caps, &mut report).unwrap();
    assert_eq!(report.total, 5);
    assert_eq!(report.found.len(), 3, "storage for 3 keeps the first 3");
    assert_eq!(
        report.found[0],
        Incompatibility::Version {
            idstr: b"mc146818rtc",
            instance_id: 0,
            found: 3,
            min: 1,
            max: 2
        }
    );
    let texts: Vec<String> = report.found.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        texts[1],
        "mc146818rtc (instance 0): needs org.linux-kvm minor 1 (vendor level 1) for subsection \
         mc146818rtc/td_hack; destination supports minor 0 (its vendor at level 1 is org.example)"
    );
    let mut all = Report::<8>::new();
    check_stream(&v4, &caps, &mut all).unwrap();
    let texts: Vec<String> = all.found.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        texts[3..],
        [
            "mc146818rtc (instance 0): destination does not know must-understand subsection \
             mc146818rtc/irq_reinject_on_ack_count",
            "port92 (instance 0): destination has no such device",
        ]
    );
    // The skippable rh_stats is never a reason.
    assert!(!texts.iter().any(|t| t.contains("rh_stats")));
}

// ---------------------------------------------------------------------------------------------
// Loading typed state straight from v4 sections.

macro_rules! build_state {
    ($name:ident, $vmsd:expr) => {
        #[repr(transparent)]
        #[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
        struct $name(Rtc);
        impl vmstate::State for $name {
            const VMSD: &'static Vmsd = &$vmsd;
        }
    };
}
build_state!(RtcUpstream, RTC_UPSTREAM);
build_state!(RtcKvm, RTC_KVM);
build_state!(RtcRhel, RTC_RHEL);

fn rtc_section(v4: &[u8]) -> vmstate::v4::wire::Section<'_> {
    vmstate::v4::wire::Records4::new(v4)
        .map(|r| r.unwrap().record)
        .find_map(|r| match r {
            vmstate::v4::wire::Record4::Section(s) if s.idstr == b"mc146818rtc" => Some(s),
            _ => None,
        })
        .unwrap()
}

fn wire_fields(r: &Rtc) -> (Vec<u8>, u8, u16, i32, i32, u32, u32) {
    (
        r.cmos_data.to_vec(),
        r.cmos_index,
        r.irq_reinject_on_ack_count.get(),
        r.irq_coalesced.get(),
        r.period.get(),
        r.rh_quirk_state.get(),
        r.rh_stats.get(),
    )
}

#[test]
fn a_kvm_build_loads_td_hack_from_v4() {
    let src = rtc_state(true, false, false);
    let v4 = v4_stream(Build::Kvm, &src);
    let sec = rtc_section(&v4);
    let mut dst = RtcKvm(Rtc::new_zeroed());
    let mut scratch = [0u8; 256];
    let kvm = Build::Kvm.vendors();
    vmstate::v4::load_section(&mut dst, &sec, &kvm, &kvm, &mut scratch).unwrap();
    assert_eq!(dst.0.irq_coalesced.get(), 5);
    assert_eq!(dst.0.period.get(), 32);
    assert_eq!(dst.0.cmos_data, src.cmos_data);
    // A RHEL build (same level-1 vendor) loads it too.
    let mut rhel = RtcRhel(Rtc::new_zeroed());
    let chain = Build::Rhel.vendors();
    vmstate::v4::load_section(&mut rhel, &sec, &kvm, &chain, &mut scratch).unwrap();
    assert_eq!(wire_fields(&rhel.0).3, 5);
}

#[test]
fn upstream_loads_a_rhel_stream_without_vendor_features_and_drops_ancillary_data() {
    let src = rtc_state(false, false, true);
    let v4 = v4_stream(Build::Rhel, &src);
    let sec = rtc_section(&v4);
    assert_eq!(sec.subsections().count(), 2, "reinject + rh_stats");
    let mut dst = RtcUpstream(Rtc::new_zeroed());
    let mut scratch = [0u8; 256];
    vmstate::v4::load_section(&mut dst, &sec, &Build::Rhel.vendors(), &[], &mut scratch).unwrap();
    let (cmos, index, reinject, ..) = wire_fields(&dst.0);
    assert_eq!((cmos, index, reinject), (src.cmos_data.to_vec(), 0x0c, 2));
    assert_eq!(
        dst.0.rh_stats.get(),
        0,
        "the skippable record was not loaded"
    );
}

#[test]
fn loads_refuse_unsupported_minors_and_change_nothing() {
    let mut scratch = [0u8; 256];
    // td_hack used → upstream cannot load it.
    let v4 = v4_stream(Build::Kvm, &rtc_state(true, false, false));
    let sec = rtc_section(&v4);
    let before = RtcUpstream(rtc_state(false, false, false));
    let mut dst = before;
    let err = vmstate::v4::load_section(&mut dst, &sec, &Build::Kvm.vendors(), &[], &mut scratch)
        .unwrap_err();
    let Error::Unsupported(r) = err else {
        panic!("{err:?}")
    };
    assert!(r.feature.unwrap().eq_bytes(b"mc146818rtc/td_hack"));
    assert!(r.vendor.eq_bytes(b"org.linux-kvm"));
    assert_eq!(dst.as_bytes(), before.as_bytes());
    // rh_quirk used → a SUSE build (other vendor at level 2) cannot load it, even with a
    // level-2 minor of its own.
    let v4 = v4_stream(Build::Rhel, &rtc_state(false, true, false));
    let sec = rtc_section(&v4);
    build_state!(RtcSuse, RTC_SUSE);
    let mut suse = RtcSuse(Rtc::new_zeroed());
    let err = vmstate::v4::load_section(
        &mut suse,
        &sec,
        &Build::Rhel.vendors(),
        &Build::Suse.vendors(),
        &mut scratch,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported(r) if r.level == 2 && r.vendor.eq_bytes(b"com.redhat")),
        "{err:?}"
    );
    // Too little scratch is an error, not a panic.
    let mut tiny = [0u8; 8];
    let mut rhel = RtcRhel(Rtc::new_zeroed());
    let chain = Build::Rhel.vendors();
    assert!(vmstate::v4::load_section(&mut rhel, &sec, &chain, &chain, &mut tiny).is_err());
}

#[test]
fn load_errors_point_into_the_v4_stream() {
    // A stream without checksums whose td_hack subsection claims a version the description
    // does not accept: the frame is fine, the decoder refuses it.
    // Rebuild the stream without checksums and with td_hack version 9.
    let mut buf = vec![0xa5u8; 4096];
    let kvm = Build::Kvm.vendors();
    let header = Header::new(&kvm, false).unwrap();
    let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf)).unwrap();
    let rtc = rtc_state(true, false, false);
    w.section_raw(RTC_ID, &RTC_KVM, rtc.as_bytes()).unwrap();
    w.eof().unwrap();
    let n = w.into_inner().finish();
    buf.truncate(n);
    let (frame, version_at) = {
        let sec2 = rtc_section(&buf);
        let td2 = sec2
            .subsections()
            .map(|s| s.unwrap())
            .find(|s| s.name == b"mc146818rtc/td_hack")
            .unwrap();
        (
            td2.offset..td2.body_offset + td2.body.len(),
            td2.body_offset - 8,
        )
    };
    buf[version_at + 3] = 9;
    let sec2 = rtc_section(&buf);
    let mut dst = RtcKvm(Rtc::new_zeroed());
    let mut scratch = [0u8; 256];
    let err = vmstate::v4::load_section(&mut dst, &sec2, &kvm, &kvm, &mut scratch).unwrap_err();
    let Error::Codec(e) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        e.kind,
        vmstate::ErrorKind::VersionTooNew { found: 9, max: 1 }
    );
    // The offset lands inside the td_hack frame of the v4 stream.
    assert!(frame.contains(&e.offset), "{e:?} {frame:?}");
}

/// xorshift64*, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn round_trips_hold_for_random_states() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        let mut rtc = Rtc::new_zeroed();
        let mut bytes = [0u8; SIZE];
        for b in bytes.iter_mut() {
            *b = rng.next() as u8;
        }
        rtc.as_mut_bytes().copy_from_slice(&bytes);
        // Knobs are booleans; sometimes no feature at all.
        let r = rng.next();
        rtc.td_hack = (r & 1) as u8;
        rtc.rh_quirk_on = (r >> 1 & 1) as u8;
        rtc.rh_stats_on = (r >> 2 & 1) as u8;
        if r >> 3 & 3 == 0 {
            rtc.irq_reinject_on_ack_count = 0.into();
        }
        // v3 from the RHEL build, upgraded with its tables, is what its v4 writer makes.
        let v3 = v3_stream(&RTC_RHEL, &rtc);
        let vmsds: [&'static Vmsd; 2] = [&RTC_RHEL, &PORT92];
        let mut scratch = [0u8; 64];
        let vendors = Build::Rhel.vendors();
        let opts = UpgradeOptions {
            vendors: &vendors,
            crc: true,
        };
        let mut buf = vec![0xa5u8; 4096];
        let mut out = SliceSink::new(&mut buf);
        upgrade(&v3, VmsdSplit::new(&vmsds, &mut scratch), &opts, &mut out).unwrap();
        let n = out.finish();
        let v4 = v4_stream(Build::Rhel, &rtc);
        assert!(buf[..n] == v4[..]);
        // Down to v3 exactly when no vendor feature is used, to upstream's bytes.
        let mut down = vec![0xa5u8; 4096];
        let mut out = SliceSink::new(&mut down);
        let res = downgrade(&v4, &mut out);
        if rtc.td_hack == 0 && rtc.rh_quirk_on == 0 {
            res.unwrap();
            let n = out.finish();
            assert!(down[..n] == v3_stream(&RTC_UPSTREAM, &rtc)[..]);
        } else {
            assert!(matches!(res, Err(Error::Refused(_))));
        }
    }
}

#[test]
fn a_header_vendor_id_that_is_not_a_reverse_fqdn_is_refused_at_its_offset() {
    // One vendor, "KVM": uppercase and a single label. Nothing after the header is read.
    let mut bytes = b"QEVM\x00\x00\x00\x04\x00\x00\x00\x00\x01\x03KVM\x00\x00".to_vec();
    bytes.push(0); // EOF
    let err = Records4::new(&bytes).next().unwrap().unwrap_err();
    let Error::BadVendorId { offset, found } = err else {
        panic!("{err:?}");
    };
    assert_eq!(offset, 13, "the id's length byte");
    assert!(found.eq_bytes(b"KVM"));
    assert_eq!(
        err.to_string(),
        "offset 13: vendor id KVM is not a reverse FQDN (labels of a-z, 0-9 and '-' separated \
         by '.')"
    );
    // The same header with a valid id reads.
    let good = b"QEVM\x00\x00\x00\x04\x00\x00\x00\x00\x01\x0bcom.example\x00\x00\x00";
    let Record4::Header(h) = Records4::new(good).next().unwrap().unwrap().record else {
        panic!("a header first");
    };
    assert_eq!(h.vendor(1), Some(VendorId::new("com.example")));
}

#[test]
fn capabilities_round_trip_and_an_invalid_vendor_id_does_not_decode() {
    let caps = Build::Rhel.caps();
    let mut buf = [0u8; 512];
    let bytes = caps.to_postcard(&mut buf).unwrap().to_vec();
    let back = Capabilities::<'_, 8, 16>::from_postcard(&bytes).unwrap();
    assert_eq!(back, caps);
    assert_eq!(back.vendors[1].as_str(), "com.redhat");
    // Spell the second vendor "COM.redhat": a decode error, not a capabilities record.
    let at = bytes.windows(10).position(|w| w == b"com.redhat").unwrap();
    let mut bad = bytes.clone();
    bad[at..at + 3].copy_from_slice(b"COM");
    assert!(Capabilities::<'_, 8, 16>::from_postcard(&bad).is_err());
}
