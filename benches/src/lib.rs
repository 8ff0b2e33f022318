//! Shared inputs for the vmstate benchmarks: the real QEMU 7.2 fixtures, typed device states
//! loaded from them, a large synthetic device, and serde mirror structs of every state so
//! postcard and bincode encode the same values the codec does.
//!
//! The mirrors are what a user of a serde format would write: native integers, fixed arrays,
//! `heapless::Vec` for variable arrays (no allocation on either side), byte arrays serialized
//! as byte strings (serde's fastest path for them).

use serde::{Deserialize, Serialize};
use vmstate::stream::{FooterScan, Record, Records, SectionRecord};
use vmstate::{State, Vmsd, assert_layout, field, struct_field};
use vmstate_devices::{
    fw_cfg, globalstate, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial, timer,
};
use zerocopy::byteorder::big_endian::{I64, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `-S` stream: the guest never ran.
pub const NODEFAULTS: &[u8] =
    include_bytes!("../../host-tests/fixtures/pc-7.2-nodefaults-S.vmstate");
/// SeaBIOS ran for about a second.
pub const BIOS: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-bios.vmstate");
/// `-S` with `-serial null` (adds the ISA serial section).
pub const SERIAL: &[u8] = include_bytes!("../../host-tests/fixtures/pc-7.2-serial.vmstate");

/// Every fixture with a short name.
pub const FIXTURES: [(&str, &[u8]); 3] = [
    ("nodefaults-S", NODEFAULTS),
    ("bios", BIOS),
    ("serial", SERIAL),
];

/// The description tables of every device model, for a [`vmstate::stream::Schemas`] resolver.
pub const DEVICE_TABLES: [&Vmsd; 11] = [
    &timer::VMSD,
    &fw_cfg::VMSD,
    &i8259::VMSD,
    &ioapic::VMSD,
    &hpet::VMSD,
    &rtc::VMSD,
    &i8254::VMSD,
    &pcspk::VMSD,
    &port92::VMSD,
    &globalstate::VMSD,
    &serial::VMSD,
];

/// Scratch bytes a `Schemas` resolver over [`DEVICE_TABLES`] needs (the largest state).
pub const SCRATCH_LEN: usize = 1 << 16;

/// The FULL section `idstr`/`instance` of `stream`.
///
/// # Panics
/// If the fixture does not walk or lacks the section (a broken benchmark input).
pub fn section<'a>(stream: &'a [u8], idstr: &str, instance: u32) -> SectionRecord<'a> {
    Records::new(stream, FooterScan)
        .map(|r| r.expect("fixture walks cleanly").record)
        .find_map(|r| match r {
            Record::Section(s) if s.idstr == idstr.as_bytes() && s.instance_id == instance => {
                Some(s)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("section {idstr} ({instance}) not in fixture"))
}

/// Loads the section `idstr` of `stream` into a copy of `init`.
///
/// # Panics
/// If the real QEMU bytes do not load (a codec or model bug the device tests would catch).
pub fn loaded<T: State>(init: T, stream: &[u8], idstr: &str) -> T {
    let rec = section(stream, idstr, 0);
    let mut s = init;
    vmstate::load_record(&mut s, &rec).expect("fixture section loads");
    s
}

/// One benchmarked device: its loaded state, the fresh state decoding starts from, and the
/// version its body is written at.
pub struct Device<T> {
    /// Short name for benchmark ids.
    pub name: &'static str,
    /// The state (from a real QEMU stream where one exists).
    pub state: T,
    /// The destination's state before loading (`_EQUAL` values, configuration).
    pub init: T,
}

impl<T: State + Copy> Device<T> {
    /// The body the codec encodes for `state` (fields and needed subsections).
    pub fn body(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 16];
        let n = vmstate::encode_body_into(&self.state, &mut buf).expect("state encodes");
        buf.truncate(n);
        buf
    }

    /// The current version of the device's table.
    pub fn version(&self) -> u32 {
        T::VMSD.version_id
    }
}

/// `mc146818rtc` from the `bios` stream (the clock ran).
pub fn rtc() -> Device<rtc::Rtc> {
    let init = rtc::Rtc::new_zeroed();
    Device {
        name: "rtc",
        state: loaded(init, BIOS, "mc146818rtc"),
        init,
    }
}

/// `i8254` from the `bios` stream.
pub fn i8254() -> Device<i8254::Pit> {
    let init = i8254::Pit::new_zeroed();
    Device {
        name: "i8254",
        state: loaded(init, BIOS, "i8254"),
        init,
    }
}

/// `hpet` from the `bios` stream (3 timers, pc-7.2 configuration).
pub fn hpet() -> Device<hpet::Hpet> {
    let init = hpet::Hpet::new(hpet::HpetConfig::PC_7_2);
    Device {
        name: "hpet",
        state: loaded(init, BIOS, "hpet"),
        init,
    }
}

/// ISA `serial` from the `serial` stream.
pub fn serial() -> Device<serial::IsaSerial> {
    let init = serial::IsaSerial::new();
    Device {
        name: "serial",
        state: loaded(init, SERIAL, "serial"),
        init,
    }
}

/// The synthetic 4 KiB device, filled with deterministic pseudo-random values.
pub fn big() -> Device<Big> {
    let mut state = Big::new_zeroed();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in state.as_mut_bytes() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Device {
        name: "big4k",
        state,
        init: Big::new_zeroed(),
    }
}

// ---------------------------------------------------------------------------------------------
// A large synthetic device: 4096 bytes in 326 fields of every scalar width, a nested struct
// array and byte buffers, described by a table like any device.

/// One channel of the synthetic device (64 bytes, 10 fields).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct BigChannel {
    /// Control byte.
    pub ctrl: u8,
    /// Status byte.
    pub status: u8,
    /// Flags.
    pub flags: U16,
    /// Count.
    pub count: U32,
    /// Base address.
    pub base: U64,
    /// Limit.
    pub limit: U64,
    /// Cursor.
    pub cursor: U32,
    /// Identifier.
    pub id: U32,
    /// Timestamp.
    pub stamp: I64,
    /// Latched bytes.
    pub latched: [u8; 24],
}

/// The synthetic device: exactly its wire body (4096 bytes).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct Big {
    /// Identifier.
    pub id: U32,
    /// Revision.
    pub revision: U32,
    /// Control word.
    pub ctrl: U64,
    /// Register file.
    pub regs: [U64; 128],
    /// Channels.
    pub channels: [BigChannel; 32],
    /// Buffer.
    pub ring: [u8; 1008],
}

/// The table of one [`BigChannel`].
pub const BIG_CHANNEL_VMSD: Vmsd =
    Vmsd::new("big channel", 1, 1, core::mem::size_of::<BigChannel>()).fields(&[
        field!(BigChannel, ctrl),
        field!(BigChannel, status),
        field!(BigChannel, flags),
        field!(BigChannel, count),
        field!(BigChannel, base),
        field!(BigChannel, limit),
        field!(BigChannel, cursor),
        field!(BigChannel, id),
        field!(BigChannel, stamp),
        field!(BigChannel, latched),
    ]);
assert_layout!(BigChannel, BIG_CHANNEL_VMSD, wire);

const BIG_FIELDS: &[vmstate::Field] = &[
    field!(Big, id),
    field!(Big, revision),
    field!(Big, ctrl),
    field!(Big, regs),
    struct_field!(Big, channels, BIG_CHANNEL_VMSD),
    field!(Big, ring),
];

/// The synthetic device's table.
pub const BIG_VMSD: Vmsd = Vmsd::new("big4k", 1, 1, core::mem::size_of::<Big>()).fields(BIG_FIELDS);
assert_layout!(Big, BIG_VMSD, wire);

impl State for Big {
    const VMSD: &'static Vmsd = &BIG_VMSD;
}

// ---------------------------------------------------------------------------------------------
// serde mirrors

/// `[u8; N]` as a serde byte string (serde derives arrays only up to 32 elements).
pub mod byte_array {
    use core::fmt;
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Serializes the array as bytes.
    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct V<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for V<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
            v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, b) in out.iter_mut().enumerate() {
                *b = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }

    /// Deserializes the array from bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        d.deserialize_bytes(V::<N>)
    }
}

/// serde mirror of [`rtc::Rtc`] (the unused runs are not state and are left out).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RtcSerde {
    #[serde(with = "byte_array")]
    pub cmos_data: [u8; 128],
    pub cmos_index: u8,
    pub periodic_timer: u64,
    pub next_periodic_time: i64,
    pub irq_coalesced: u32,
    pub period: u32,
    pub base_rtc: u64,
    pub last_update: u64,
    pub offset: i64,
    pub update_timer: u64,
    pub next_alarm_time: u64,
    pub irq_reinject_on_ack_count: u16,
}

impl From<&rtc::Rtc> for RtcSerde {
    fn from(s: &rtc::Rtc) -> Self {
        let b = &s.body;
        RtcSerde {
            cmos_data: b.cmos_data,
            cmos_index: b.cmos_index,
            periodic_timer: b.periodic_timer.get(),
            next_periodic_time: b.next_periodic_time.get(),
            irq_coalesced: b.irq_coalesced.get(),
            period: b.period.get(),
            base_rtc: b.base_rtc.get(),
            last_update: b.last_update.get(),
            offset: b.offset.get(),
            update_timer: b.update_timer.get(),
            next_alarm_time: b.next_alarm_time.get(),
            irq_reinject_on_ack_count: s.irq_reinject_on_ack_count.get(),
        }
    }
}

/// serde mirror of [`i8254::PitChannel`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PitChannelSerde {
    pub count: i32,
    pub latched_count: u16,
    pub count_latched: u8,
    pub status_latched: u8,
    pub status: u8,
    pub read_state: u8,
    pub write_state: u8,
    pub write_latch: u8,
    pub rw_mode: u8,
    pub mode: u8,
    pub bcd: u8,
    pub gate: u8,
    pub count_load_time: i64,
    pub next_transition_time: i64,
}

/// serde mirror of [`i8254::Pit`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PitSerde {
    pub irq_disabled: u32,
    pub channels: [PitChannelSerde; 3],
    pub next_transition_time: i64,
}

impl From<&i8254::Pit> for PitSerde {
    fn from(s: &i8254::Pit) -> Self {
        let ch = |c: &i8254::PitChannel| PitChannelSerde {
            count: c.count.get(),
            latched_count: c.latched_count.get(),
            count_latched: c.count_latched,
            status_latched: c.status_latched,
            status: c.status,
            read_state: c.read_state,
            write_state: c.write_state,
            write_latch: c.write_latch,
            rw_mode: c.rw_mode,
            mode: c.mode,
            bcd: c.bcd,
            gate: c.gate,
            count_load_time: c.count_load_time.get(),
            next_transition_time: c.next_transition_time.get(),
        };
        PitSerde {
            irq_disabled: s.irq_disabled.get(),
            channels: [ch(&s.channels[0]), ch(&s.channels[1]), ch(&s.channels[2])],
            next_transition_time: s.next_transition_time.get(),
        }
    }
}

/// serde mirror of [`hpet::HpetTimer`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct HpetTimerSerde {
    pub tn: u8,
    pub config: u64,
    pub cmp: u64,
    pub fsb: u64,
    pub period: u64,
    pub wrap_flag: u8,
    pub qemu_timer: u64,
}

/// serde mirror of [`hpet::Hpet`] (the migrated part; timers as a bounded vector).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct HpetSerde {
    pub config: u64,
    pub isr: u64,
    pub hpet_counter: u64,
    pub timers: heapless::Vec<HpetTimerSerde, 32>,
    pub rtc_irq_level: u8,
    pub hpet_offset: u64,
}

impl From<&hpet::Hpet> for HpetSerde {
    fn from(s: &hpet::Hpet) -> Self {
        HpetSerde {
            config: s.config.get(),
            isr: s.isr.get(),
            hpet_counter: s.hpet_counter.get(),
            timers: s
                .timers()
                .iter()
                .map(|t| HpetTimerSerde {
                    tn: t.tn,
                    config: t.config.get(),
                    cmp: t.cmp.get(),
                    fsb: t.fsb.get(),
                    period: t.period.get(),
                    wrap_flag: t.wrap_flag,
                    qemu_timer: t.qemu_timer.get(),
                })
                .collect(),
            rtc_irq_level: s.rtc_irq_level,
            hpet_offset: s.hpet_offset.get(),
        }
    }
}

/// serde mirror of [`serial::Fifo8`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Fifo8Serde {
    pub data: [u8; 16],
    pub head: u32,
    pub num: u32,
}

/// serde mirror of [`serial::Serial`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SerialSerde {
    pub divider: u16,
    pub rbr: u8,
    pub ier: u8,
    pub iir: u8,
    pub lcr: u8,
    pub mcr: u8,
    pub lsr: u8,
    pub msr: u8,
    pub scr: u8,
    pub fcr_vmstate: u8,
    pub thr_ipending: i32,
    pub tsr_retry: u32,
    pub thr: u8,
    pub tsr: u8,
    pub recv_fifo: Fifo8Serde,
    pub xmit_fifo: Fifo8Serde,
    pub fifo_timeout_timer: u64,
    pub timeout_ipending: i32,
    pub poll_msl: i32,
    pub modem_status_poll: u64,
}

impl From<&serial::IsaSerial> for SerialSerde {
    fn from(s: &serial::IsaSerial) -> Self {
        let s = &s.state;
        let fifo = |f: &serial::Fifo8| Fifo8Serde {
            data: f.data,
            head: f.head.get(),
            num: f.num.get(),
        };
        SerialSerde {
            divider: s.divider.get(),
            rbr: s.rbr,
            ier: s.ier,
            iir: s.iir,
            lcr: s.lcr,
            mcr: s.mcr,
            lsr: s.lsr,
            msr: s.msr,
            scr: s.scr,
            fcr_vmstate: s.fcr_vmstate,
            thr_ipending: s.thr_ipending.get(),
            tsr_retry: s.tsr_retry.get(),
            thr: s.thr,
            tsr: s.tsr,
            recv_fifo: fifo(&s.recv_fifo),
            xmit_fifo: fifo(&s.xmit_fifo),
            fifo_timeout_timer: s.fifo_timeout_timer.get(),
            timeout_ipending: s.timeout_ipending.get(),
            poll_msl: s.poll_msl.get(),
            modem_status_poll: s.modem_status_poll.get(),
        }
    }
}

/// serde mirror of [`BigChannel`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BigChannelSerde {
    pub ctrl: u8,
    pub status: u8,
    pub flags: u16,
    pub count: u32,
    pub base: u64,
    pub limit: u64,
    pub cursor: u32,
    pub id: u32,
    pub stamp: i64,
    pub latched: [u8; 24],
}

/// serde mirror of [`Big`] (`regs` as 4 × 32: serde derives arrays up to 32; postcard and
/// bincode write nested fixed arrays exactly like one flat array).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BigSerde {
    pub id: u32,
    pub revision: u32,
    pub ctrl: u64,
    pub regs: [[u64; 32]; 4],
    pub channels: [BigChannelSerde; 32],
    #[serde(with = "byte_array")]
    pub ring: [u8; 1008],
}

impl From<&Big> for BigSerde {
    fn from(s: &Big) -> Self {
        BigSerde {
            id: s.id.get(),
            revision: s.revision.get(),
            ctrl: s.ctrl.get(),
            regs: core::array::from_fn(|i| core::array::from_fn(|j| s.regs[i * 32 + j].get())),
            channels: s.channels.map(|c| BigChannelSerde {
                ctrl: c.ctrl,
                status: c.status,
                flags: c.flags.get(),
                count: c.count.get(),
                base: c.base.get(),
                limit: c.limit.get(),
                cursor: c.cursor.get(),
                id: c.id.get(),
                stamp: c.stamp.get(),
                latched: c.latched,
            }),
            ring: s.ring,
        }
    }
}

/// bincode's configuration for the baseline: fixed-width big-endian integers (the same
/// choices as the vmstate wire format, so the comparison is about the codec, not varints).
pub const BINCODE: bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Fixint,
> = bincode::config::standard()
    .with_big_endian()
    .with_fixed_int_encoding();

#[cfg(test)]
mod tests {
    use super::*;
    use vmstate::stream::Schemas;

    /// The benchmarks' inputs are what they claim: real bytes that round-trip, mirrors that
    /// round-trip through both serde formats.
    #[test]
    fn inputs_round_trip() {
        fn check<T, M>(d: Device<T>)
        where
            T: State + Copy + PartialEq + core::fmt::Debug,
            M: for<'a> From<&'a T>
                + Serialize
                + for<'de> Deserialize<'de>
                + PartialEq
                + core::fmt::Debug,
        {
            let body = d.body();
            let back = vmstate::decode(&d.init, d.version(), &body, 0).expect("body decodes");
            assert_eq!(back, d.state, "{}", d.name);
            let m = M::from(&d.state);
            let pc = postcard::to_allocvec(&m).unwrap();
            assert_eq!(postcard::from_bytes::<M>(&pc).unwrap(), m);
            let bc = bincode::serde::encode_to_vec(&m, BINCODE).unwrap();
            assert_eq!(
                bincode::serde::decode_from_slice::<M, _>(&bc, BINCODE)
                    .unwrap()
                    .0,
                m
            );
        }
        check::<_, RtcSerde>(rtc());
        check::<_, PitSerde>(i8254());
        check::<_, HpetSerde>(hpet());
        check::<_, SerialSerde>(serial());
        check::<_, BigSerde>(big());
        assert_eq!(big().body().len(), 4096);
        assert_eq!(rtc().body().len(), 245);
    }

    /// The body bytes the encode benchmarks produce are QEMU's own bytes for the real devices.
    #[test]
    fn encoded_bodies_are_qemus() {
        assert_eq!(rtc().body(), section(BIOS, "mc146818rtc", 0).body);
        assert_eq!(i8254().body(), section(BIOS, "i8254", 0).body);
        assert_eq!(hpet().body(), section(BIOS, "hpet", 0).body);
        assert_eq!(serial().body(), section(SERIAL, "serial", 0).body);
    }

    /// The Schemas walk the stream benchmark times finds the same records as the footer scan.
    #[test]
    fn schema_walk_matches_footer_scan() {
        for (name, bytes) in FIXTURES {
            let mut scratch = vec![0u8; SCRATCH_LEN];
            let a: Vec<_> = Records::new(
                bytes,
                (Schemas::new(&DEVICE_TABLES, &mut scratch), FooterScan),
            )
            .map(|r| r.expect(name).end)
            .collect();
            let b: Vec<_> = Records::new(bytes, FooterScan)
                .map(|r| r.expect(name).end)
                .collect();
            assert_eq!(a, b, "{name}");
            assert_eq!(a.last(), Some(&bytes.len()), "{name}");
        }
    }
}
