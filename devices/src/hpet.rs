//! HPET (`hpet`, `hpet_timer`): QEMU 7.2 `hw/timer/hpet.c`, docs/V3-WIRE.md §16.6, invariants
//! docs/UNTRUSTED-INPUT.md §4.6.
//!
//! Wire layout (version 2, minimum 1): `config` u64, `isr` u64, `hpet_counter` u64,
//! `num_timers` u8 (since 2), the zero-width check "num_timers in range", then `num_timers`
//! 42-byte `hpet_timer` bodies; subsections `hpet/rtc_irq_level` and `hpet/offset`. A version-1
//! body has no `num_timers` byte: `pre_load` sets it to 3, so a v1 body is 24 + 3 × 42 = 150
//! bytes.
//!
//! QEMU 10.0 renamed the count field `num_timers_save` (same byte; "hpet: do not overwrite
//! properties on post_load") and replaced 7.2's range check with `VMSTATE_VALIDATE("num_timers
//! must match")`: the stream's count must equal the configured `timers` property. [`VMSD`] is
//! QEMU 10.0's table, [`VMSD_7_2`] QEMU 7.2's; they read the same bytes. Both enforce the
//! equality (below): for a QEMU 10.0 destination it is QEMU's own rule, for a QEMU 7.2
//! destination it is this model's hardening (7.2 accepts any count in 3..=32 and rewrites the
//! guest-visible NUM_TIM capability from it).
//!
//! The destination's configuration (configured timer count, `hpet-intcap`, `msi`,
//! `hpet-offset-saved`) is an input of the model: [`Hpet::new`] stores it in the state struct
//! after the wire fields, where no table field covers it, so the `needed` predicates and the
//! load checks see it and a load never changes it.
//!
//! Load rules (a rejected load leaves the state unchanged, see [`vmstate::load`]; "MUST" is
//! class (a) of docs/UNTRUSTED-INPUT.md §3.3, "should" class (c), rejected by default):
//!
//! | rule | class | error |
//! |---|---|---|
//! | 3 ≤ `num_timers` ≤ 32 before the timers are read (QEMU 7.2's VALIDATE) | MUST | `ValidationFailed { check: "num_timers in range" }` |
//! | `num_timers` equals the configured count (QEMU 10.0's rule; this model's hardening against a 7.2 destination, class c there) | MUST | `Invalid { Equal(configured) }`, field `num_timers` (7.2 table) / `num_timers_save` (10.0 table) |
//! | `timer[i].tn == i` | MUST | `Invalid { Equal(i), found: tn }`, field `timer` |
//! | `timer[i].config` read-only bits equal the destination's reset value | should | `Invalid`, field `timer` |
//! | `timer[i].wrap_flag` ≤ 1 | should | `Invalid`, field `timer` |
//! | `isr` has no bit at or above `num_timers` | should | `Invalid`, field `isr` |
//! | global `config` has only ENABLE/LEGACY (0x3) | should | `Invalid`, field `config` |
//! | `rtc_irq_level` ≤ 1 | should | `Invalid`, field `rtc_irq_level` |
//!
//! Accepted as QEMU does: any interrupt route in a timer's config (bits 9-13, even outside
//! `intcap`: guest writes are masked only by the writable-bit mask), any `hpet_counter`,
//! `hpet_offset`, `cmp`, `period`, `fsb`.

use vmstate::schema::{Field, Subsection, Vmsd};
use vmstate::{
    Expected, State, Violation, assert_layout, check, field, mutate, not_migrated, pred,
    struct_varray,
};
use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Timer slots every HPET has storage for (`HPET_MAX_TIMERS`).
pub const MAX_TIMERS: usize = 32;
/// Fewest timers an HPET can be configured with (`HPET_MIN_TIMERS`).
pub const MIN_TIMERS: u8 = 3;

/// Timer config bits a guest can write (`HPET_TN_CFG_WRITE_MASK`); the others are read-only.
pub const TN_CFG_WRITE_MASK: u64 = 0x7f4e;
/// `HPET_TN_PERIODIC_CAP`.
pub const TN_PERIODIC_CAP: u64 = 1 << 4;
/// `HPET_TN_SIZE_CAP`.
pub const TN_SIZE_CAP: u64 = 1 << 5;
/// `HPET_TN_FSB_CAP` (set when the device has the `msi` property).
pub const TN_FSB_CAP: u64 = 1 << 15;
/// Global config bits a guest can write: ENABLE (bit 0) and LEGACY (bit 1).
pub const CFG_WRITE_MASK: u64 = 0x3;
/// Global config ENABLE bit.
pub const CFG_ENABLE: u64 = 1;

/// One comparator (`hpet_timer`, version 1, 42 bytes on the wire): this struct is the body.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct HpetTimer {
    /// Timer number; equals the slot index (set at realize, not guest-writable).
    pub tn: u8,
    /// Timer configuration and capability register.
    pub config: U64,
    /// Comparator.
    pub cmp: U64,
    /// FSB (MSI) route: address and data.
    pub fsb: U64,
    /// Period of a periodic timer.
    pub period: U64,
    /// 32-bit wrap pending.
    pub wrap_flag: u8,
    /// The QEMU timer's expiry (ns), all-ones when not armed.
    pub qemu_timer: U64,
}

impl HpetTimer {
    /// The interrupt route selected in `config` (bits 9-13): any of 0-31 is a legal state.
    pub fn route(&self) -> u8 {
        ((self.config.get() >> 9) & 0x1f) as u8
    }

    /// Whether the QEMU timer is armed.
    pub fn is_armed(&self) -> bool {
        self.qemu_timer.get() != u64::MAX
    }
}

/// `hpet_timer` description.
pub const TIMER_VMSD: Vmsd = Vmsd::new("hpet_timer", 1, 1, core::mem::size_of::<HpetTimer>())
    .fields(&[
        field!(HpetTimer, tn),
        field!(HpetTimer, config),
        field!(HpetTimer, cmp),
        field!(HpetTimer, fsb),
        field!(HpetTimer, period),
        field!(HpetTimer, wrap_flag),
        field!(HpetTimer, qemu_timer).timer(),
    ]);
assert_layout!(HpetTimer, TIMER_VMSD, wire);

/// The destination's HPET configuration (QEMU device properties), an input of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpetConfig {
    /// Configured timer count (`timers` property; QEMU clamps it to 3..=32 at realize).
    pub num_timers: u8,
    /// Interrupt routing capability (`hpet-intcap`): the upper half of each timer's config.
    pub intcap: u32,
    /// FSB (MSI) delivery offered (`msi` property).
    pub msi: bool,
    /// `hpet-offset-saved`: whether `hpet/offset` is sent (false on machines ≤ 2.11).
    pub offset_saved: bool,
}

impl HpetConfig {
    /// `pc-i440fx-7.2`: 3 timers, intcap 4 (IRQ2), no MSI, offset saved.
    pub const PC_7_2: HpetConfig = HpetConfig {
        num_timers: 3,
        intcap: 4,
        msi: false,
        offset_saved: true,
    };

    /// A timer's config register after reset: the read-only capability bits.
    pub const fn timer_reset_config(&self) -> u64 {
        let mut c = ((self.intcap as u64) << 32) | TN_PERIODIC_CAP | TN_SIZE_CAP;
        if self.msi {
            c |= TN_FSB_CAP;
        }
        c
    }
}

impl Default for HpetConfig {
    fn default() -> Self {
        HpetConfig::PC_7_2
    }
}

/// The HPET's migrated state plus the destination configuration (not on the wire).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Hpet {
    /// General configuration register (ENABLE, LEGACY).
    pub config: U64,
    /// General interrupt status register.
    pub isr: U64,
    /// Main counter.
    pub hpet_counter: U64,
    /// Timers in the stream (v2; a v1 stream implies 3).
    pub num_timers: u8,
    /// Timer slots; the first `num_timers` are migrated.
    pub timer: [HpetTimer; MAX_TIMERS],
    /// RTC IRQ level in legacy mode (subsection `hpet/rtc_irq_level`).
    pub rtc_irq_level: u8,
    /// Counter offset against the guest clock (subsection `hpet/offset`).
    pub hpet_offset: U64,
    // Destination configuration: no table field covers these bytes.
    dest_num_timers: u8,
    dest_intcap: U32,
    dest_msi: u8,
    dest_offset_saved: u8,
}

const SIZE: usize = core::mem::size_of::<Hpet>();

impl Hpet {
    /// The state of a freshly reset HPET with configuration `cfg` (the timer count clamped to
    /// 3..=32 as QEMU's realize does).
    pub fn new(cfg: HpetConfig) -> Hpet {
        let n = cfg.num_timers.clamp(MIN_TIMERS, MAX_TIMERS as u8);
        let mut s = Hpet::new_zeroed();
        s.num_timers = n;
        for (i, t) in s.timer.iter_mut().enumerate() {
            t.tn = i as u8;
            if i < n as usize {
                t.config = cfg.timer_reset_config().into();
                t.cmp = u64::MAX.into();
                t.qemu_timer = u64::MAX.into();
            }
        }
        s.dest_num_timers = n;
        s.dest_intcap = cfg.intcap.into();
        s.dest_msi = cfg.msi as u8;
        s.dest_offset_saved = cfg.offset_saved as u8;
        s
    }

    /// The destination configuration this state was made with.
    pub fn dest_config(&self) -> HpetConfig {
        HpetConfig {
            num_timers: self.dest_num_timers,
            intcap: self.dest_intcap.get(),
            msi: self.dest_msi != 0,
            offset_saved: self.dest_offset_saved != 0,
        }
    }

    /// The migrated timers (`timer[..num_timers]`, bounded by the storage).
    pub fn timers(&self) -> &[HpetTimer] {
        &self.timer[..(self.num_timers as usize).min(MAX_TIMERS)]
    }

    /// Whether the main counter runs (global config ENABLE).
    pub fn is_enabled(&self) -> bool {
        self.config.get() & CFG_ENABLE != 0
    }

    /// The load-time invariants (module docs); `Ok` for every state a guest can reach.
    /// `count_field` is the count's name in the table in use (`num_timers` in QEMU 7.2's,
    /// `num_timers_save` in QEMU 10.0's).
    pub fn check(&self, count_field: &'static str) -> Result<(), Violation> {
        // CVE-2013-4527 class (stream count used as a loop bound over `timer[32]`), tightened
        // as in QEMU commit 1433e38cc840: the stream must not reconfigure the device, because
        // QEMU 7.2 rewrites the guest-visible NUM_TIM capability from this count (QEMU 10.0
        // refuses the stream: "num_timers must match").
        if self.num_timers != self.dest_num_timers {
            return Err(Violation {
                field: count_field,
                expected: Expected::Equal(self.dest_num_timers as u64),
                found: self.num_timers as u64,
            });
        }
        let reset_config = self.dest_config().timer_reset_config();
        for (i, t) in self.timers().iter().enumerate() {
            // Stream value used as a shift count / index: QEMU computes `1 << tn` on an int
            // (tn ≥ 32 is undefined behaviour) and tn ≤ 1 selects legacy routing (§3.1).
            if t.tn as usize != i {
                return Err(Violation {
                    field: "timer",
                    expected: Expected::Equal(i as u64),
                    found: t.tn as u64,
                });
            }
            // Should reject (class c, no CVE; the 1433e38cc840 class of a stream reconfiguring
            // the device): the read-only capability bits (intcap, FSB_CAP, PERIODIC_CAP,
            // SIZE_CAP) would let a stream offer the guest features the destination lacks
            // (QEMU 7.2 derives its MSI flag from timer[0]'s FSB_CAP).
            let ro = t.config.get() & !TN_CFG_WRITE_MASK;
            if ro != reset_config {
                return Err(Violation {
                    field: "timer",
                    expected: Expected::Equal(reset_config),
                    found: ro,
                });
            }
            // Should reject (class c, no CVE): a flag the device model only sets to 0 or 1.
            if t.wrap_flag > 1 {
                return Err(Violation {
                    field: "timer",
                    expected: Expected::AtMost(1),
                    found: t.wrap_flag as u64,
                });
            }
        }
        // Should reject (class c, no CVE): status bits of timers that do not exist.
        let isr_mask = !((1u64 << self.num_timers.min(63)) - 1);
        if self.isr.get() & isr_mask != 0 {
            return Err(Violation {
                field: "isr",
                expected: Expected::MaskClear(isr_mask),
                found: self.isr.get(),
            });
        }
        // Should reject (class c, no CVE): bits the guest's register writes cannot set.
        if self.config.get() & !CFG_WRITE_MASK != 0 {
            return Err(Violation {
                field: "config",
                expected: Expected::MaskClear(!CFG_WRITE_MASK),
                found: self.config.get(),
            });
        }
        // Should reject (class c, no CVE): a level is 0 or 1.
        if self.rtc_irq_level > 1 {
            return Err(Violation {
                field: "rtc_irq_level",
                expected: Expected::AtMost(1),
                found: self.rtc_irq_level as u64,
            });
        }
        Ok(())
    }
}

/// QEMU 7.2's `VMSTATE_VALIDATE("num_timers in range")`: checked before the timer array is
/// read, so a count above the 32 slots never becomes a loop bound (CVE-2013-4527).
fn num_timers_in_range(state: &[u8], _version: u32) -> bool {
    Hpet::ref_from_prefix(state)
        .is_ok_and(|(s, _)| (MIN_TIMERS..=MAX_TIMERS as u8).contains(&s.num_timers))
}

const RTC_IRQ_LEVEL_VMSD: Vmsd =
    Vmsd::new("hpet/rtc_irq_level", 1, 1, SIZE).fields(&[field!(Hpet, rtc_irq_level)]);

const OFFSET_VMSD: Vmsd = Vmsd::new("hpet/offset", 1, 1, SIZE).fields(&[field!(Hpet, hpet_offset)]);

const FIELDS_7_2: &[Field] = &[
    field!(Hpet, config),
    field!(Hpet, isr),
    field!(Hpet, hpet_counter),
    field!(Hpet, num_timers).since(2),
    Field::validate("num_timers in range", num_timers_in_range),
    struct_varray!(Hpet, timer, TIMER_VMSD, count = num_timers),
];

// The same bytes with QEMU 10.0's name for the count. The range check stays before the
// timers (the loop bound); the equality QEMU 10.0 checks there is the whole-state check below,
// which names the expected count.
const FIELDS: &[Field] = &[
    field!(Hpet, config),
    field!(Hpet, isr),
    field!(Hpet, hpet_counter),
    field!(Hpet, num_timers).named("num_timers_save").since(2),
    Field::validate("num_timers in range", num_timers_in_range),
    struct_varray!(Hpet, timer, TIMER_VMSD, count = num_timers),
];

/// QEMU 10.0's `hpet` description (version 2, minimum 1; the count is `num_timers_save`).
pub const VMSD: Vmsd = VMSD_7_2
    .fields(FIELDS)
    .validate(check!(Hpet, |s, _version| s.check("num_timers_save")));
assert_layout!(Hpet, VMSD);

/// QEMU 7.2's `hpet` description (version 2, minimum 1; the count is `num_timers`).
pub const VMSD_7_2: Vmsd = Vmsd::new("hpet", 2, 1, SIZE)
    .fields(FIELDS_7_2)
    .subsections(&[
        Subsection::new(&RTC_IRQ_LEVEL_VMSD, pred!(Hpet, |s| s.rtc_irq_level != 0))
            .absent(mutate!(Hpet, |s| s.rtc_irq_level = 0)),
        Subsection::new(
            &OFFSET_VMSD,
            pred!(Hpet, |s| s.is_enabled() && s.dest_offset_saved != 0),
        )
        .absent(mutate!(Hpet, |s| s.hpet_offset = 0.into())),
    ])
    // What a v1 stream (no count byte) implies.
    .pre_load(mutate!(Hpet, |s| s.num_timers = 3))
    .validate(check!(Hpet, |s, _version| s.check("num_timers")))
    .not_migrated(&[
        not_migrated!(Hpet, dest_num_timers),
        not_migrated!(Hpet, dest_intcap),
        not_migrated!(Hpet, dest_msi),
        not_migrated!(Hpet, dest_offset_saved),
    ]);
assert_layout!(Hpet, VMSD_7_2);

impl State for Hpet {
    const VMSD: &'static Vmsd = &VMSD;
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixtures::{ALL_STREAMS, NODEFAULTS, section};
    use super::*;
    use std::string::String;
    use std::vec::Vec;
    use std::{format, vec};
    use vmstate::{Error, ErrorKind, load};

    /// The decoded state as `analyze-migration.py` prints it (compact).
    fn analyze(s: &Hpet) -> String {
        analyze_named(s, "num_timers")
    }

    /// `count` is the count field's name: `num_timers` (7.2) or `num_timers_save` (10.0).
    fn analyze_named(s: &Hpet, count: &str) -> String {
        let timers: Vec<String> = s
            .timers()
            .iter()
            .map(|t| {
                let b = t.qemu_timer.get().to_be_bytes();
                let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "{{\"tn\":\"0x{:02x}\",\"config\":\"0x{:016x}\",\"cmp\":\"0x{:016x}\",\
                     \"fsb\":\"0x{:016x}\",\"period\":\"0x{:016x}\",\"wrap_flag\":\"0x{:02x}\",\
                     \"qemu_timer\":\"{}\"}}",
                    t.tn,
                    t.config.get(),
                    t.cmp.get(),
                    t.fsb.get(),
                    t.period.get(),
                    t.wrap_flag,
                    hex.join(" ")
                )
            })
            .collect();
        format!(
            "{{\"config\":\"0x{:016x}\",\"isr\":\"0x{:016x}\",\"hpet_counter\":\"0x{:016x}\",\
             \"{count}\":\"0x{:02x}\",\"timer\":[{}]}}",
            s.config.get(),
            s.isr.get(),
            s.hpet_counter.get(),
            s.num_timers,
            timers.join(",")
        )
    }

    #[test]
    fn real_sections_decode_reencode_and_describe_like_qemu() {
        for (stream, state_json) in ALL_STREAMS {
            let rec = section(stream, "hpet", 0);
            assert_eq!((rec.version_id, rec.body.len()), (2, 151));
            // Header + body + footer, byte for byte.
            let init = Hpet::new(HpetConfig::PC_7_2);
            let s = fixtures::round_trip_with(&VMSD_7_2, stream, "hpet", 0, init);
            fixtures::describes_like_qemu_with(
                &VMSD_7_2,
                stream,
                state_json,
                "hpet",
                &s,
                &analyze(&s),
            );
            assert_eq!(s.timers()[1].config.get(), 0x0000_0004_0000_0030);
            assert_eq!(s.dest_config(), HpetConfig::PC_7_2);
            // QEMU 10.0's table reads the same bytes.
            assert_eq!(fixtures::round_trip(stream, "hpet", 0, init), s);
        }
    }

    /// pc and q35 streams of both builds: the configuration derived from the stream's machine
    /// type gives each timer's read-only capability bits (intcap 0x4 on pc-i440fx, 0xff0104
    /// on pc-q35); each build's table describes its streams as its trailer does. A q35 stream
    /// against pc's configuration is refused, as before machine types were modelled.
    #[test]
    fn pc_and_q35_streams_of_both_builds_load_with_their_machine_types_configuration() {
        use crate::machine::{Chipset, Destination, MachineType};
        for (name, stream, state_json) in fixtures::V2 {
            let machine = name.split_once('-').unwrap().1.trim_end_matches("-ltim");
            let machine = machine.trim_end_matches("-ignore-shared");
            let m = MachineType::parse(machine.as_bytes()).unwrap();
            let cfg = Destination::for_machine(m, None).unwrap().config().hpet;
            let init = Hpet::new(cfg);
            let s = fixtures::round_trip(stream, "hpet", 0, init);
            let intcap: u64 = if m.chipset == Chipset::Q35 {
                0xff_0104
            } else {
                4
            };
            for t in s.timers() {
                assert_eq!(
                    t.config.get() & !TN_CFG_WRITE_MASK,
                    intcap << 32 | 0x30,
                    "{name}"
                );
            }
            assert_eq!(
                fixtures::round_trip_with(&VMSD_7_2, stream, "hpet", 0, init),
                s
            );
            if let Some(state_json) = state_json {
                let (vmsd, count) = if name.starts_with("q10") {
                    (&VMSD, "num_timers_save")
                } else {
                    (&VMSD_7_2, "num_timers")
                };
                let a = analyze_named(&s, count);
                fixtures::describes_like_qemu_with(vmsd, stream, state_json, "hpet", &s, &a);
            }
            if m.chipset == Chipset::Q35 {
                let rec = section(stream, "hpet", 0);
                let mut pc = Hpet::new(HpetConfig::PC_7_2);
                let e = vmstate::load_record(&mut pc, &rec).unwrap_err();
                assert_eq!(
                    (e.field, e.kind),
                    (
                        Some("timer"),
                        ErrorKind::Invalid {
                            expected: Expected::Equal(0x4_0000_0030),
                            found: 0xff_0104_0000_0030
                        }
                    ),
                    "{name}"
                );
            }
        }
    }

    fn fixture_body() -> (Vec<u8>, usize) {
        let rec = section(NODEFAULTS, "hpet", 0);
        (rec.body.to_vec(), rec.body_offset)
    }

    fn load_err(body: &[u8], version: u32) -> Error {
        fixtures::load_err(Hpet::new(HpetConfig::PC_7_2), version, body)
    }

    #[test]
    fn v1_body_has_no_count_and_implies_three_timers() {
        let (body, _) = fixture_body();
        // v1: the same bytes without the count byte at offset 24.
        let mut v1 = body[..24].to_vec();
        v1.extend_from_slice(&body[25..]);
        assert_eq!(v1.len(), 150);
        let mut s = Hpet::new(HpetConfig::PC_7_2);
        s.num_timers = 0;
        load(&mut s, 1, &v1, 0).expect("v1 loads");
        assert_eq!(s.num_timers, 3);
        assert_eq!(s.timers()[2].tn, 2);
        // Written back as v2: the count byte returns.
        let mut out = vec![0xa5; 151];
        assert_eq!(vmstate::encode_body_into(&s, &mut out).unwrap(), 151);
        assert_eq!(out, body);
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let (body, _) = fixture_body();
        for n in 0..body.len() {
            let e = load_err(&body[..n], 2);
            assert!(e.is_incomplete(), "prefix {n}: {e:?}");
        }
    }

    #[test]
    fn count_outside_3_to_32_fails_the_validate_before_the_timers() {
        let (mut body, _) = fixture_body();
        for bad in [0u8, 2, 33, 255] {
            body[24] = bad;
            let e = load_err(&body, 2);
            assert_eq!(
                e.kind,
                ErrorKind::ValidationFailed {
                    check: "num_timers in range"
                }
            );
            assert_eq!((e.offset, e.field), (1025, Some("num_timers in range")));
        }
    }

    #[test]
    fn count_other_than_configured_is_rejected() {
        let (body, _) = fixture_body();
        // Four timers: in QEMU 7.2's range, but not what the destination has.
        let mut four = body.clone();
        four[24] = 4;
        let mut t3 = body[25 + 2 * 42..25 + 3 * 42].to_vec();
        t3[0] = 3;
        four.extend_from_slice(&t3);
        let e = load_err(&four, 2);
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::Equal(3),
                found: 4
            }
        );
        assert_eq!((e.offset, e.field), (1024, Some("num_timers_save")));
        // QEMU 7.2's table names the same byte `num_timers`.
        let mut s = Hpet::new(HpetConfig::PC_7_2);
        let e7 = vmstate::load_with(&VMSD_7_2, &mut s, 2, &four, 1000).unwrap_err();
        assert_eq!(
            (e7.kind, e7.offset, e7.field),
            (e.kind, 1024, Some("num_timers"))
        );
        // The same bytes load on a destination configured with four timers.
        let mut s = Hpet::new(HpetConfig {
            num_timers: 4,
            ..HpetConfig::PC_7_2
        });
        load(&mut s, 2, &four, 0).expect("matches the configuration");
        assert_eq!(s.timers().len(), 4);
        // A v1 stream implies 3 timers, which a 4-timer destination refuses.
        let mut v1 = body[..24].to_vec();
        v1.extend_from_slice(&body[25..]);
        let mut s4 = Hpet::new(HpetConfig {
            num_timers: 4,
            ..HpetConfig::PC_7_2
        });
        let e = load(&mut s4, 1, &v1, 0).unwrap_err();
        assert_eq!(e.field, Some("num_timers_save"));
    }

    #[test]
    fn timer_number_must_equal_its_slot() {
        let (mut body, _) = fixture_body();
        body[25 + 42] = 33; // timer[1].tn
        let e = load_err(&body, 2);
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::Equal(1),
                found: 33
            }
        );
        assert_eq!((e.offset, e.field), (1025, Some("timer")));
    }

    #[test]
    fn read_only_timer_bits_must_match_the_destination() {
        let (mut body, _) = fixture_body();
        // timer[0].config with FSB_CAP (MSI) set: bit 15, byte 7 of the be64 at 26..34.
        body[26 + 6] |= 0x80;
        let e = load_err(&body, 2);
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::Equal(0x4_0000_0030),
                found: 0x4_0000_8030
            }
        );
        assert_eq!(e.field, Some("timer"));
        // intcap changed.
        let (mut body, _) = fixture_body();
        body[26 + 3] = 0x08;
        assert_eq!(load_err(&body, 2).field, Some("timer"));
    }

    #[test]
    fn wrap_flag_isr_config_and_rtc_level_reject_unreachable_values() {
        let (body, _) = fixture_body();
        let mut b = body.clone();
        b[25 + 33] = 2; // timer[0].wrap_flag
        let e = load_err(&b, 2);
        assert_eq!(
            (e.kind, e.field),
            (
                ErrorKind::Invalid {
                    expected: Expected::AtMost(1),
                    found: 2
                },
                Some("timer")
            )
        );
        let mut b = body.clone();
        b[15] = 0x08; // isr bit 3 with 3 timers
        let e = load_err(&b, 2);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::MaskClear(!7),
                    found: 8
                },
                Some("isr"),
                1008
            )
        );
        let mut b = body.clone();
        b[7] = 0x04; // config bit 2
        let e = load_err(&b, 2);
        assert_eq!((e.field, e.offset), (Some("config"), 1000));
        let mut b = body.clone();
        b.extend_from_slice(b"\x05\x12hpet/rtc_irq_level\x00\x00\x00\x01\x02");
        let e = load_err(&b, 2);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::AtMost(1),
                    found: 2
                },
                Some("rtc_irq_level"),
                1000 + 151 + 1 + 1 + 18 + 4
            )
        );
    }

    #[test]
    fn odd_but_reachable_states_load_and_round_trip() {
        let mut s = Hpet::new(HpetConfig::PC_7_2);
        s.config = 3.into(); // enabled, legacy
        s.isr = 0x5.into();
        s.hpet_counter = u64::MAX.into();
        s.hpet_offset = 0x8000_0000_0000_0001.into();
        s.rtc_irq_level = 1;
        // Route 31 although intcap only offers IRQ2; every writable bit set.
        s.timer[0].config = (s.timer[0].config.get() | TN_CFG_WRITE_MASK).into();
        s.timer[1].fsb = u64::MAX.into();
        s.timer[2].period = 1.into();
        s.timer[2].wrap_flag = 1;
        s.timer[2].qemu_timer = 12345.into();
        assert_eq!(s.timer[0].route(), 31);
        let mut body = vec![0xa5u8; 512];
        let n = vmstate::encode_body_into(&s, &mut body).unwrap();
        body.truncate(n);
        // Both subsections are sent: hpet/rtc_irq_level then hpet/offset.
        let tail = &body[151..];
        assert_eq!(
            &tail[..25],
            b"\x05\x12hpet/rtc_irq_level\x00\x00\x00\x01\x01"
        );
        assert_eq!(
            &tail[25..],
            b"\x05\x0bhpet/offset\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00\x00\x01"
        );
        let mut d = Hpet::new(HpetConfig::PC_7_2);
        load(&mut d, 2, &body, 0).expect("reachable state loads");
        assert_eq!(d, s);
    }

    #[test]
    fn offset_subsection_follows_the_property_and_absent_subsections_reset() {
        let mut s = Hpet::new(HpetConfig {
            offset_saved: false,
            ..HpetConfig::PC_7_2
        });
        s.config = 1.into();
        s.hpet_offset = 7.into();
        let mut body = vec![0u8; 512];
        let n = vmstate::encode_body_into(&s, &mut body).unwrap();
        assert_eq!(n, 151, "hpet-offset-saved=false: no hpet/offset");
        // A destination holding old values: absent subsections reset them.
        let mut d = Hpet::new(HpetConfig::PC_7_2);
        d.rtc_irq_level = 1;
        d.hpet_offset = 9.into();
        load(&mut d, 2, &body[..n], 0).unwrap();
        assert_eq!((d.rtc_irq_level, d.hpet_offset.get()), (0, 0));
    }

    #[test]
    fn configuration_is_clamped_and_never_loaded() {
        let s = Hpet::new(HpetConfig {
            num_timers: 200,
            ..HpetConfig::PC_7_2
        });
        assert_eq!(s.dest_config().num_timers, 32);
        assert_eq!(
            Hpet::new(HpetConfig {
                num_timers: 0,
                ..HpetConfig::PC_7_2
            })
            .timers()
            .len(),
            3
        );
    }
}
