//! `i8254`: the programmable interval timer (QEMU 7.2 `hw/timer/i8254_common.c`,
//! `hw/timer/i8254.c`; docs/V3-WIRE.md §16.3, docs/UNTRUSTED-INPUT.md §4.3).
//!
//! idstr `i8254`, instance 0, **version 3, minimum 2**. Body (108 bytes; 104 in version 2):
//!
//! | off | field | JSON name |
//! |---|---|---|
//! | 0 | u32, since 3 | `channels[0].irq_disabled` |
//! | 4 | 3 × `pit channel` (version 2, 32 bytes each, no subsections) | `channels` |
//! | 100 | i64 | `channels[0].next_transition_time` |
//!
//! # The two copies of channel 0's `next_transition_time`
//!
//! In QEMU the first and last fields are not separate storage: they name
//! `channels[0].irq_disabled` and `channels[0].next_transition_time` again (the trailing i64
//! was "formerly irq_timer"). A QEMU writer therefore always sends the same value twice, and a
//! QEMU loader stores the channel's copy and then overwrites it with the trailing copy, which
//! is the one `pit_post_load` arms channel 0's timer with.
//!
//! Here both copies have their own bytes ([`Pit::next_transition_time`] and
//! `channels[0].next_transition_time`), so the struct is exactly the wire body and a round
//! trip is byte-identical. The validation hook requires the two copies to be equal: a mismatch
//! cannot come from a QEMU writer (should reject, class (c)), and accepting it would leave two
//! answers to "when does channel 0 fire". [`Pit::channel0_next_transition_time`] returns the
//! trailing copy, the one QEMU uses, and [`Pit::set_channel0_next_transition_time`] writes both.
//!
//! # Invariants checked on load
//!
//! QEMU 7.2 checks nothing (the KVM variant pushes everything to `KVM_SET_PIT2`).
//!
//! | field (per channel) | accepted | why |
//! |---|---|---|
//! | `count` | 1..=0x10000 | **MUST**: a divisor in `pit_get_count`, `pit_get_out` and `pit_get_next_transition_time`; 0 is a host divide by zero (SIGFPE) reachable without guest action through channel 0's timer (CVE-2015-7513 class) |
//! | `mode` | 0..=7 | accept 6 and 7 (the guest writes `(val >> 1) & 7`); should reject above |
//! | `rw_mode` | 0..=3 | accept 0 (the reset state, in real streams); should reject above |
//! | `read_state`, `write_state` | 0..=4 | accept 0 (reset); should reject above |
//! | `count_latched` | 0..=3 | should reject above: guest cannot produce it |
//! | `status_latched`, `bcd`, `gate` | 0 or 1 | should reject above: guest cannot produce it |
//! | `status`, `write_latch`, `latched_count`, times | any | accept |
//!
//! | top-level field | accepted | why |
//! |---|---|---|
//! | `channels[0].irq_disabled` | 0 or 1 | should reject: only toggled by the HPET legacy mode |
//! | `channels[0].next_transition_time` | equal to channel 0's copy | should reject: one storage in QEMU |
//!
//! [`VMSD`] enforces every rule. [`PERMISSIVE_VMSD`] is the same table enforcing only the MUST
//! rule; load with it through [`vmstate::load_with`].

use vmstate::{Expected, Field, Violation, Vmsd, assert_layout, check, field, struct_field};
use zerocopy::byteorder::big_endian::{I32, I64, U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Number of counter channels.
pub const NUM_CHANNELS: usize = 3;
/// The largest count: a programmed 0 means 0x10000.
pub const MAX_COUNT: i32 = 0x10000;
/// A `next_transition_time` meaning "no transition pending".
pub const NO_TRANSITION: i64 = -1;

/// One `pit channel` body (version 2, 32 bytes; a zero-copy view).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct PitChannel {
    /// Reload value, 1..=0x10000.
    pub count: I32,
    /// Count captured by a latch command.
    pub latched_count: U16,
    /// Pending latched-count read: 0 none, else the access mode (1..=3).
    pub count_latched: u8,
    /// Status byte latched by a read-back command (0/1).
    pub status_latched: u8,
    /// The latched status byte.
    pub status: u8,
    /// Read access state: 0 reset, 1 LSB, 2 MSB, 3 word low, 4 word high.
    pub read_state: u8,
    /// Write access state (same values as `read_state`).
    pub write_state: u8,
    /// Low byte written so far in word mode.
    pub write_latch: u8,
    /// Programmed access mode: 0 reset, 1 LSB, 2 MSB, 3 word.
    pub rw_mode: u8,
    /// Counter mode 0..=7 (6 and 7 alias 2 and 3 in hardware).
    pub mode: u8,
    /// BCD counting (0/1).
    pub bcd: u8,
    /// Gate input (0/1).
    pub gate: u8,
    /// Virtual-clock time the count was loaded (ns).
    pub count_load_time: I64,
    /// Next output transition (ns; -1 for none).
    pub next_transition_time: I64,
}

/// The `i8254` body at version 3, which is also the whole state (a zero-copy view).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Pit {
    /// `channels[0].irq_disabled` (version 3 on): channel 0's interrupt is disabled by the
    /// HPET legacy replacement route.
    pub irq_disabled: U32,
    /// The three channels.
    pub channels: [PitChannel; NUM_CHANNELS],
    /// The trailing copy of `channels[0].next_transition_time` (see the module docs).
    pub next_transition_time: I64,
}

fn at_most(field: &'static str, max: u8, v: u8) -> Result<(), Violation> {
    if v > max {
        return Err(Violation {
            field,
            expected: Expected::AtMost(max as u64),
            found: v as u64,
        });
    }
    Ok(())
}

/// Checks one channel (names are the `pit channel` table's, so errors point at the byte);
/// with `strict` false, only the MUST rule.
fn validate_channel(c: &PitChannel, strict: bool) -> Result<(), Violation> {
    // MUST reject: `count` is a divisor (modes 2, 3, 6, 7) reached from channel 0's timer
    // without guest action; 0 is a host divide by zero (CVE-2015-7513 class). Above 0x10000 is
    // unreachable (a written 0 becomes 0x10000) and breaks the 16-bit counter arithmetic.
    let count = c.count.get();
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(Violation {
            field: "count",
            expected: Expected::Range(1, MAX_COUNT as u64),
            found: count as u32 as u64,
        });
    }
    if !strict {
        return Ok(());
    }
    // Should reject (guest cannot produce it): a latched count read is pending in one of the
    // three access modes.
    at_most("count_latched", 3, c.count_latched)?;
    // Should reject (guest cannot produce it): single flag bits.
    at_most("status_latched", 1, c.status_latched)?;
    // Accept 0 (the reset state) through 4 (word high byte); above is unreachable.
    at_most("read_state", 4, c.read_state)?;
    at_most("write_state", 4, c.write_state)?;
    // Accept 0 (reset) through 3; the guest writes a 2-bit field.
    at_most("rw_mode", 3, c.rw_mode)?;
    // Accept 6 and 7 (the guest writes `(val >> 1) & 7`); above is unreachable.
    at_most("mode", 7, c.mode)?;
    // Should reject (guest cannot produce it): single bits.
    at_most("bcd", 1, c.bcd)?;
    at_most("gate", 1, c.gate)
}

/// Checks the top-level fields (channels were checked as they were decoded); both rules are
/// "should reject", so nothing with `strict` false.
fn validate(s: &Pit, strict: bool) -> Result<(), Violation> {
    if !strict {
        return Ok(());
    }
    // Should reject (guest cannot produce it): the HPET toggles it between 0 and 1.
    let disabled = s.irq_disabled.get();
    if disabled > 1 {
        return Err(Violation {
            field: "channels[0].irq_disabled",
            expected: Expected::AtMost(1),
            found: disabled as u64,
        });
    }
    // Should reject (guest cannot produce it): both copies are one variable in QEMU.
    let inner = s.channels[0].next_transition_time.get();
    let trailing = s.next_transition_time.get();
    if inner != trailing {
        return Err(Violation {
            field: "channels[0].next_transition_time",
            expected: Expected::Equal(inner as u64),
            found: trailing as u64,
        });
    }
    Ok(())
}

/// The `pit channel` table (version 2, minimum 2; always read as version 2).
pub const CHANNEL_VMSD: Vmsd = Vmsd::new("pit channel", 2, 2, core::mem::size_of::<PitChannel>())
    .fields(&[
        field!(PitChannel, count),
        field!(PitChannel, latched_count),
        field!(PitChannel, count_latched),
        field!(PitChannel, status_latched),
        field!(PitChannel, status),
        field!(PitChannel, read_state),
        field!(PitChannel, write_state),
        field!(PitChannel, write_latch),
        field!(PitChannel, rw_mode),
        field!(PitChannel, mode),
        field!(PitChannel, bcd),
        field!(PitChannel, gate),
        field!(PitChannel, count_load_time),
        field!(PitChannel, next_transition_time),
    ])
    .validate(check!(PitChannel, |c, _version| validate_channel(c, true)));

assert_layout!(PitChannel, CHANNEL_VMSD, wire);

// A separate item: the struct field macro expands to a block, which a `&[..]` argument
// would not promote to 'static.
const FIELDS: &[Field] = &[
    field!(Pit, irq_disabled)
        .named("channels[0].irq_disabled")
        .since(3),
    struct_field!(Pit, channels, CHANNEL_VMSD).since(2),
    field!(Pit, next_transition_time).named("channels[0].next_transition_time"),
];

/// The description table of `i8254` (version 3, minimum 2).
pub const VMSD: Vmsd = Vmsd::new("i8254", 3, 2, core::mem::size_of::<Pit>())
    .fields(FIELDS)
    .validate(check!(Pit, |s, _version| validate(s, true)));

/// [`CHANNEL_VMSD`] enforcing only the MUST rule (`count`).
pub const PERMISSIVE_CHANNEL_VMSD: Vmsd =
    CHANNEL_VMSD.validate(check!(PitChannel, |c, _version| validate_channel(c, false)));

const PERMISSIVE_FIELDS: &[Field] = &[
    FIELDS[0],
    struct_field!(Pit, channels, PERMISSIVE_CHANNEL_VMSD).since(2),
    FIELDS[2],
];

/// [`VMSD`] enforcing only the MUST rule (every channel's `count`), for streams from producers
/// known to write unreachable but harmless values; load with [`vmstate::load_with`]. With it,
/// two different copies of channel 0's `next_transition_time` load, and the trailing one is
/// the one that counts (as in QEMU).
pub const PERMISSIVE_VMSD: Vmsd = VMSD
    .fields(PERMISSIVE_FIELDS)
    .validate(check!(Pit, |s, _version| validate(s, false)));

assert_layout!(Pit, VMSD, wire);
assert_layout!(Pit, PERMISSIVE_VMSD, wire);

impl vmstate::State for Pit {
    const VMSD: &'static Vmsd = &VMSD;
}

impl PitChannel {
    /// A channel after reset (QEMU's `pit_reset_common`): mode 3, count 0x10000, access
    /// states 0, times 0, with the given gate.
    pub const fn reset(gate: bool) -> PitChannel {
        PitChannel {
            count: I32::new(MAX_COUNT),
            latched_count: U16::ZERO,
            count_latched: 0,
            status_latched: 0,
            status: 0,
            read_state: 0,
            write_state: 0,
            write_latch: 0,
            rw_mode: 0,
            mode: 3,
            bcd: 0,
            gate: gate as u8,
            count_load_time: I64::ZERO,
            next_transition_time: I64::ZERO,
        }
    }

    /// The reload value, 1..=0x10000 in any loaded state (never 0: safe as a divisor).
    pub fn count(&self) -> u32 {
        self.count.get() as u32
    }
}

impl Pit {
    /// The PIT after reset: gates 1, 1, 0 (channel 2's gate belongs to the speaker port).
    pub const DEFAULT: Pit = Pit {
        irq_disabled: U32::ZERO,
        channels: [
            PitChannel::reset(true),
            PitChannel::reset(true),
            PitChannel::reset(false),
        ],
        next_transition_time: I64::ZERO,
    };

    /// Channel `i`, or `None` past the third.
    pub fn channel(&self, i: usize) -> Option<&PitChannel> {
        self.channels.get(i)
    }

    /// Whether channel 0's interrupt is disabled (HPET legacy replacement).
    pub fn irq_disabled(&self) -> bool {
        self.irq_disabled.get() != 0
    }

    /// When channel 0's timer fires next (the trailing copy, which QEMU's `post_load` uses),
    /// or `None` if no transition is pending.
    pub fn channel0_next_transition_time(&self) -> Option<i64> {
        match self.next_transition_time.get() {
            NO_TRANSITION => None,
            t => Some(t),
        }
    }

    /// Sets channel 0's next transition time in both copies.
    pub fn set_channel0_next_transition_time(&mut self, t: i64) {
        self.channels[0].next_transition_time = I64::new(t);
        self.next_transition_time = I64::new(t);
    }
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use vmstate::ErrorKind;

    const KEY: &str = "i8254 (20)";

    fn real_body() -> [u8; 108] {
        let mut b = [0u8; 108];
        b.copy_from_slice(section(BIOS, "i8254", 0).body);
        b
    }

    /// Offset of `name` inside a channel.
    fn rel(name: &str) -> usize {
        CHANNEL_VMSD
            .fields
            .iter()
            .find(|f| f.name == name)
            .unwrap()
            .offset
    }

    #[test]
    fn real_sections_decode_and_re_encode_byte_for_byte() {
        for (stream, analysis) in STREAMS {
            let s = round_trip(stream, "i8254", 0, Pit::DEFAULT);
            assert_eq!(
                s.irq_disabled.get() as u64,
                state_hex(analysis, KEY, "channels[0].irq_disabled")
            );
            assert_eq!(
                s.next_transition_time.get() as u64,
                state_hex(analysis, KEY, "channels[0].next_transition_time")
            );
            for f in CHANNEL_VMSD.fields {
                let want = state_values(analysis, KEY, f.name);
                assert_eq!(want.len(), NUM_CHANNELS, "{}", f.name);
                for (i, c) in s.channels.iter().enumerate() {
                    let b = &c.as_bytes()[f.offset..f.offset + f.storage_size()];
                    let mut v = [0u8; 8];
                    v[8 - b.len()..].copy_from_slice(b);
                    assert_eq!(u64::from_be_bytes(v), parse_hex(want[i]), "{}", f.name);
                }
            }
            // Every channel holds the reset count; channels 1 and 2 were never programmed
            // and carry the reset access states 0.
            for c in &s.channels[1..] {
                assert_eq!(
                    (c.count(), c.rw_mode, c.read_state, c.write_state),
                    (0x10000, 0, 0, 0)
                );
            }
            assert_eq!(
                (s.channels[0].gate, s.channels[1].gate, s.channels[2].gate),
                (1, 1, 0)
            );
        }
        let s = round_trip(NODEFAULTS, "i8254", 0, Pit::DEFAULT);
        assert_eq!(s.channel0_next_transition_time(), Some(0x1a30c2c));
        // SeaBIOS programmed channel 0 as a rate generator with word access.
        let s = round_trip(BIOS, "i8254", 0, Pit::DEFAULT);
        let c0 = s.channel(0).unwrap();
        assert_eq!((c0.mode, c0.rw_mode, c0.read_state), (2, 3, 3));
        assert_eq!(s.channel0_next_transition_time(), Some(0x42a8afb7));
    }

    #[test]
    fn json_description_matches_qemu() {
        for (stream, _) in STREAMS {
            let s = round_trip(stream, "i8254", 0, Pit::DEFAULT);
            assert_eq!(
                our_device_json("i8254", 0, &s),
                qemu_device_json(stream, "i8254", 0)
            );
        }
    }

    #[test]
    fn version_2_body_has_no_irq_disabled() {
        let body = real_body();
        let mut s = Pit::DEFAULT;
        s.irq_disabled = U32::new(1);
        vmstate::load(&mut s, 2, &body[4..], 0).unwrap();
        // Not on the wire in version 2: the destination keeps its value, as QEMU does.
        assert!(s.irq_disabled());
        assert_eq!(s.channels[0].mode, 2);
        assert_eq!(s.channel0_next_transition_time(), Some(0x42a8afb7));
        let e = vmstate::load(&mut s, 1, &body[4..], 0).unwrap_err();
        assert_eq!(e.kind, ErrorKind::VersionTooOld { found: 1, min: 2 });
    }

    #[test]
    fn count_outside_1_to_0x10000_is_rejected_in_every_channel() {
        let before = Pit::DEFAULT;
        for ch in 0..NUM_CHANNELS {
            for bad in [0i32, 0x10001, -1, i32::MIN, i32::MAX] {
                for (version, skip) in [(3, 0), (2, 4)] {
                    let mut body = real_body();
                    let at = 4 + 32 * ch + rel("count");
                    body[at..at + 4].copy_from_slice(&bad.to_be_bytes());
                    let mut s = before;
                    let e = vmstate::load(&mut s, version, &body[skip..], 7000).unwrap_err();
                    assert_eq!(
                        e.kind,
                        ErrorKind::Invalid {
                            expected: Expected::Range(1, 0x10000),
                            found: bad as u32 as u64
                        }
                    );
                    assert_eq!((e.field, e.offset), (Some("count"), 7000 + at - skip));
                    assert_eq!(s.as_bytes(), before.as_bytes());
                    // A MUST rule: the permissive table enforces it too.
                    let r =
                        vmstate::load_with(&PERMISSIVE_VMSD, &mut s, version, &body[skip..], 7000);
                    assert_eq!(r.unwrap_err(), e);
                    assert_eq!(s, before);
                }
            }
        }
    }

    #[test]
    fn each_should_reject_rule_rejects_with_field_and_offset() {
        let before = Pit::DEFAULT;
        let channel_cases: &[(&str, u8, u64)] = &[
            ("count_latched", 4, 3),
            ("status_latched", 2, 1),
            ("read_state", 5, 4),
            ("write_state", 5, 4),
            ("rw_mode", 4, 3),
            ("mode", 8, 7),
            ("bcd", 2, 1),
            ("gate", 2, 1),
        ];
        for ch in 0..NUM_CHANNELS {
            for &(name, value, max) in channel_cases {
                let mut body = real_body();
                let at = 4 + 32 * ch + rel(name);
                body[at] = value;
                let mut s = before;
                let e = vmstate::load(&mut s, 3, &body, 0).unwrap_err();
                assert_eq!(
                    e.kind,
                    ErrorKind::Invalid {
                        expected: Expected::AtMost(max),
                        found: value as u64
                    },
                    "{name}"
                );
                assert_eq!((e.field, e.offset), (Some(name), at));
                assert_eq!(s, before);
                vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 3, &body, 0).unwrap();
                assert_eq!(s.as_bytes()[at], value, "{name}");
            }
        }
        let mut body = real_body();
        body[..4].copy_from_slice(&2u32.to_be_bytes());
        let mut s = before;
        let e = vmstate::load(&mut s, 3, &body, 0).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::AtMost(1),
                found: 2
            }
        );
        assert_eq!((e.field, e.offset), (Some("channels[0].irq_disabled"), 0));
        assert_eq!(s, before);
    }

    #[test]
    fn the_two_copies_of_channel_0_transition_time_must_agree() {
        let before = Pit::DEFAULT;
        let mut body = real_body();
        body[100..108].copy_from_slice(&5i64.to_be_bytes());
        let mut s = before;
        let e = vmstate::load(&mut s, 3, &body, 0).unwrap_err();
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::Equal(0x42a8afb7),
                found: 5
            }
        );
        assert_eq!(
            (e.field, e.offset),
            (Some("channels[0].next_transition_time"), 100)
        );
        assert_eq!(s, before);
        // In a version-2 body the trailing copy sits at 96.
        let e = vmstate::load(&mut s, 2, &body[4..], 0).unwrap_err();
        assert_eq!(e.offset, 96);
        // Permissive: both copies load and round-trip; the trailing one is the one QEMU uses.
        vmstate::load_with(&PERMISSIVE_VMSD, &mut s, 3, &body, 0).unwrap();
        assert_eq!(s.channel0_next_transition_time(), Some(5));
        assert_eq!(s.channels[0].next_transition_time.get(), 0x42a8afb7);
        let mut out = [0xa5u8; 108];
        vmstate::encode_body_into(&s, &mut out).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn odd_reachable_states_load() {
        for mode in [6u8, 7] {
            let mut body = real_body();
            body[4 + 32 + rel("mode")] = mode;
            let mut s = Pit::DEFAULT;
            vmstate::load(&mut s, 3, &body, 0).unwrap();
            assert_eq!(s.channels[1].mode, mode);
        }
        let mut body = real_body();
        let c2 = 4 + 64;
        body[c2..c2 + 4].copy_from_slice(&1i32.to_be_bytes());
        body[c2 + rel("read_state")] = 4;
        body[c2 + rel("write_state")] = 4;
        body[c2 + rel("count_latched")] = 3;
        body[c2 + rel("status")] = 0xff;
        body[c2 + rel("write_latch")] = 0xff;
        body[c2 + 4..c2 + 6].fill(0xff); // latched_count
        body[c2 + 16..c2 + 32].fill(0x80); // times of another channel: anything
        body[..4].copy_from_slice(&1u32.to_be_bytes());
        body[4 + 24..4 + 32].copy_from_slice(&(-1i64).to_be_bytes());
        body[100..108].copy_from_slice(&(-1i64).to_be_bytes());
        let mut s = Pit::DEFAULT;
        vmstate::load(&mut s, 3, &body, 0).unwrap();
        assert_eq!(s.channels[2].count(), 1);
        assert_eq!(s.channels[2].latched_count.get(), 0xffff);
        assert!(s.irq_disabled());
        assert_eq!(s.channel0_next_transition_time(), None);
    }

    #[test]
    fn truncated_bodies_fail_without_changing_state() {
        let body = real_body();
        every_prefix_fails(&Pit::DEFAULT, 3, &body);
        every_prefix_fails(&Pit::DEFAULT, 2, &body[4..]);
    }

    #[test]
    fn setting_the_transition_time_keeps_both_copies_equal() {
        let mut s = Pit::DEFAULT;
        s.set_channel0_next_transition_time(1234);
        let mut buf = [0xa5u8; 108];
        vmstate::encode_body_into(&s, &mut buf).unwrap();
        let mut back = Pit::DEFAULT;
        vmstate::load(&mut back, 3, &buf, 0).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.channel0_next_transition_time(), Some(1234));
    }

    #[test]
    fn random_bodies_load_and_round_trip_or_fail_cleanly() {
        fn fix(b: &mut [u8]) {
            b[..3].fill(0);
            b[3] &= 1;
            for ch in 0..NUM_CHANNELS {
                let c = &mut b[4 + 32 * ch..4 + 32 * (ch + 1)];
                let count = (u16::from_be_bytes([c[2], c[3]]) as i32) + 1;
                c[..4].copy_from_slice(&count.to_be_bytes());
                c[6] &= 3;
                c[7] &= 1;
                c[9] %= 5;
                c[10] %= 5;
                c[12] &= 3;
                c[13] &= 7;
                c[14] &= 1;
                c[15] &= 1;
            }
            let ntt: [u8; 8] = b[4 + 24..4 + 32].try_into().unwrap();
            b[100..108].copy_from_slice(&ntt);
        }
        random_bodies_round_trip(Pit::DEFAULT, 108, &[], fix, 256);
    }
}
