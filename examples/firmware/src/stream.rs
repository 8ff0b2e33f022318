//! The device states the firmware encodes and the v3 and v4 streams it writes, shared verbatim with
//! the host test `host-tests/tests/firmware.rs` (which includes this file), so both sides
//! encode the same states with the same calls and the test compares the bytes.

use vmstate::sink::SliceSink;
use vmstate::wire::Configuration;
use vmstate::writer::StreamWriter;
use vmstate::{Result, SectionId};
use vmstate_devices::i8254::Pit;
use vmstate_devices::i8259::Pic;
use vmstate_devices::rtc::Rtc;
use zerocopy::FromZeros;
use zerocopy::byteorder::big_endian::{I32, I64, U16, U64};

/// The machine type written in the configuration record.
pub const MACHINE: &[u8] = b"pc-i440fx-7.2";

/// Section ids, in the order QEMU 7.2's pc machine registers these devices.
pub const RTC_SECTION: u32 = 2;
/// The master PIC's section id.
pub const PIC0_SECTION: u32 = 3;
/// The slave PIC's section id.
pub const PIC1_SECTION: u32 = 4;
/// The PIT's section id.
pub const PIT_SECTION: u32 = 5;

/// The states: an RTC that has run (time in CMOS, periodic timer armed, two re-injected
/// ticks, so the subsection is sent), both PICs after the BIOS programmed them, and a PIT with
/// channel 0 in rate-generator mode.
pub struct States {
    /// `mc146818rtc`.
    pub rtc: Rtc,
    /// `i8259` instance 0.
    pub pic0: Pic,
    /// `i8259` instance 1.
    pub pic1: Pic,
    /// `i8254`.
    pub pit: Pit,
}

/// Builds the states (no floats, no allocation).
pub fn states() -> States {
    let mut rtc = Rtc::new_zeroed();
    for (i, b) in [
        0x30, 0, 0x15, 0, 0x09, 0, 0x04, 0x26, 0x11, 0x26, 0x26, 0x02, 0, 0x80,
    ]
    .into_iter()
    .enumerate()
    {
        rtc.set_cmos(i, b);
    }
    rtc.set_cmos(0x32, 0x20);
    rtc.body.cmos_index = 0x0b;
    rtc.body.periodic_timer = U64::new(976_562);
    rtc.body.next_periodic_time = I64::new(1_953_124);
    rtc.body.period = 32.into();
    rtc.body.base_rtc = U64::new(1_795_000_000);
    rtc.body.last_update = U64::new(5_000_000_000);
    rtc.body.update_timer = U64::new(u64::MAX);
    rtc.body.next_alarm_time = U64::new(u64::MAX);
    rtc.irq_reinject_on_ack_count = U16::new(2);

    let mut pic0 = Pic::MASTER;
    pic0.body.imr = 0xb8;
    pic0.body.irq_base = 0x08;
    pic0.body.isr = 0x01;
    pic0.body.init4 = 1;
    let mut pic1 = Pic::SLAVE;
    pic1.body.imr = 0x8e;
    pic1.body.irq_base = 0x70;
    pic1.body.init4 = 1;
    pic1.body.elcr = 0x0c;

    let mut pit = Pit::DEFAULT;
    pit.channels[0].count = I32::new(0x4a9c);
    pit.channels[0].mode = 2;
    pit.channels[0].rw_mode = 3;
    pit.channels[0].read_state = 3;
    pit.channels[0].write_state = 3;
    pit.channels[0].count_load_time = I64::new(123_456_789);
    pit.channels[0].next_transition_time = I64::new(138_452_000);
    pit.next_transition_time = pit.channels[0].next_transition_time;

    States {
        rtc,
        pic0,
        pic1,
        pit,
    }
}

/// Encodes the same states as a vmstate v4 stream (header with CRC-32C on and no vendor
/// levels, the four FULL section records, EOF) into `buf`; returns its length.
pub fn encode_v4(s: &States, buf: &mut [u8]) -> core::result::Result<usize, vmstate::v4::Error> {
    use vmstate::State;
    use zerocopy::IntoBytes;
    let header = vmstate::v4::wire::Header::new(&[], true)?;
    let mut w = vmstate::v4::StreamWriter::new(&header, SliceSink::new(buf))?;
    let id = |section_id, idstr: &'static [u8], instance_id| SectionId {
        section_id,
        idstr,
        instance_id,
    };
    // One call site for the four sections: the firmware keeps one copy of the section writer.
    let sections: [(SectionId<'_>, &vmstate::Vmsd, &[u8]); 4] = [
        (
            id(RTC_SECTION, b"mc146818rtc", 0),
            Rtc::VMSD,
            s.rtc.as_bytes(),
        ),
        (id(PIC0_SECTION, b"i8259", 0), Pic::VMSD, s.pic0.as_bytes()),
        (id(PIC1_SECTION, b"i8259", 1), Pic::VMSD, s.pic1.as_bytes()),
        (id(PIT_SECTION, b"i8254", 0), Pit::VMSD, s.pit.as_bytes()),
    ];
    for (id, vmsd, state) in sections {
        w.section_raw(id, vmsd, state)?;
    }
    w.eof()?;
    Ok(w.into_inner().finish())
}

/// Encodes the v3 stream (header, configuration, the four FULL sections, EOF) into `buf`;
/// returns its length.
pub fn encode(s: &States, buf: &mut [u8]) -> Result<usize> {
    let mut w = StreamWriter::new(SliceSink::new(buf));
    w.header(vmstate::wire::header::VERSION_V3)?;
    w.configuration(&Configuration::new(MACHINE))?;
    let id = |section_id, idstr: &'static [u8], instance_id| SectionId {
        section_id,
        idstr,
        instance_id,
    };
    w.section(id(RTC_SECTION, b"mc146818rtc", 0), &s.rtc)?;
    w.section(id(PIC0_SECTION, b"i8259", 0), &s.pic0)?;
    w.section(id(PIC1_SECTION, b"i8259", 1), &s.pic1)?;
    w.section(id(PIT_SECTION, b"i8254", 0), &s.pit)?;
    w.eof()?;
    Ok(w.into_inner().finish())
}
