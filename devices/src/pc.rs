//! The modelled devices of QEMU's `pc-i440fx-*` / `pc-q35-*` machines together.
//!
//! [`VMSDS`] lists every top-level table (QEMU 10.0's, which read every body QEMU 7.2's read,
//! for `vmstate::stream::Schemas` and for exporting the tables); [`Pc`] is a typed destination
//! made from a [`PcConfig`] (derived from the machine type and build, see
//! [`crate::machine`]): it routes every FULL section of a modelled device type to its model by
//! idstr and instance ([`Pc::route`]; an instance the configuration does not have is refused,
//! never left to a description), loads it atomically with the build's table (a rejected
//! section changes nothing), refuses a second copy of the same section (QEMU would load it
//! twice; untrusted-input §5), and encodes the modelled sections back. Sections it does not
//! model are reported as such so a host tool can fall back to the description-driven decoder.

use crate::machine::{Destination, QemuBuild};
use crate::{fw_cfg, globalstate, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial, timer};
use vmstate::stream::{SectionRecord, idstr_matches};
use vmstate::{Error, ErrorKind, Result, SectionId, Sink, State, Vmsd};
use zerocopy::{FromZeros, IntoBytes};

/// Every top-level table this crate models.
pub const VMSDS: &[&Vmsd] = &[
    &timer::VMSD,
    &fw_cfg::VMSD,
    &i8259::VMSD,
    &ioapic::VMSD,
    &hpet::VMSD,
    &rtc::VMSD,
    &i8254::VMSD,
    &pcspk::VMSD,
    &serial::VMSD,
    &port92::VMSD,
    &globalstate::VMSD,
];

/// The largest state struct among [`VMSDS`]: scratch space for `Schemas`.
pub const MAX_STATE_SIZE: usize = {
    let mut i = 0;
    let mut m = 0;
    while i < VMSDS.len() {
        if VMSDS[i].table().size > m {
            m = VMSDS[i].table().size;
        }
        i += 1;
    }
    m
};

/// The destination's configuration (what is not on the wire but decides what loads).
///
/// Derive it from a machine type with [`Destination::config`]; the ISA serial ports come from
/// the command line (`-serial`), not the machine type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcConfig {
    /// The build and machine type this configuration was derived from: chooses each device's
    /// table (QEMU 7.2's or 10.0's, see [`Pc::vmsd`]).
    pub destination: Destination,
    /// HPET configuration.
    pub hpet: hpet::HpetConfig,
    /// fw_cfg configuration.
    pub fw_cfg: fw_cfg::FwCfgConfig,
    /// ISA serial ports configured (`-serial …`), at most [`MAX_ISA_SERIAL`]: instances
    /// `0..serial_ports` are loaded by the serial model, any other `serial` instance is refused.
    pub serial_ports: u8,
    /// `isa-pcspk`'s `migrate` property (off on machine types ≤ 2.7: no `pcspk` section is
    /// expected, one that arrives is still checked).
    pub pcspk: bool,
}

/// ISA serial ports a PC can have (QEMU's `MAX_ISA_SERIAL_PORTS`).
pub const MAX_ISA_SERIAL: u8 = 4;

impl PcConfig {
    /// QEMU 7.2's `pc` (`pc-i440fx-7.2`) with `-nodefaults`.
    pub const PC_7_2: PcConfig = Destination::PC_7_2.config();
}

impl Default for PcConfig {
    fn default() -> Self {
        PcConfig::PC_7_2
    }
}

/// Which device a section belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// `timer`.
    Timer,
    /// `fw_cfg`.
    FwCfg,
    /// `i8259` instance 0 or 1.
    Pic(u8),
    /// `ioapic`.
    Ioapic,
    /// `hpet`.
    Hpet,
    /// `mc146818rtc`.
    Rtc,
    /// `i8254`.
    Pit,
    /// `pcspk`.
    Pcspk,
    /// ISA `serial` instance 0..=3.
    Serial(u8),
    /// `port92`.
    Port92,
    /// `globalstate`.
    GlobalState,
}

impl Slot {
    const COUNT: usize = 15;

    fn index(self) -> usize {
        match self {
            Slot::Timer => 0,
            Slot::FwCfg => 1,
            Slot::Pic(i) => 2 + (i & 1) as usize,
            Slot::Ioapic => 4,
            Slot::Hpet => 5,
            Slot::Rtc => 6,
            Slot::Pit => 7,
            Slot::Pcspk => 8,
            Slot::Serial(i) => 9 + (i & 3) as usize,
            Slot::Port92 => 13,
            Slot::GlobalState => 14,
        }
    }
}

/// Where a section goes on this destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Route {
    /// Into the model of this slot.
    Model(Slot),
    /// A modelled device type, but an instance the configuration does not have (a third
    /// serial port with two configured, a second hpet): QEMU has no such section and refuses
    /// the stream ("Unknown savevm section or instance").
    Unexpected,
    /// No model covers this device type.
    NotModelled,
}

/// The typed state of the modelled `pc` devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pc {
    /// Configuration.
    pub config: PcConfig,
    /// `timer`.
    pub timer: timer::Timers,
    /// `fw_cfg`.
    pub fw_cfg: fw_cfg::FwCfg,
    /// `i8259` master (0) and slave (1).
    pub pic: [i8259::Pic; 2],
    /// `ioapic`.
    pub ioapic: ioapic::Ioapic,
    /// `hpet`.
    pub hpet: hpet::Hpet,
    /// `mc146818rtc`.
    pub rtc: rtc::Rtc,
    /// `i8254`.
    pub pit: i8254::Pit,
    /// `pcspk`.
    pub pcspk: pcspk::Pcspk,
    /// ISA `serial` ports (only the configured ones are loaded).
    pub serial: [serial::IsaSerial; MAX_ISA_SERIAL as usize],
    /// `port92`.
    pub port92: port92::Port92,
    /// `globalstate`.
    pub globalstate: globalstate::GlobalState,
    loaded: u16,
}

impl Pc {
    /// Devices at their power-on state for `config`.
    pub fn new(config: PcConfig) -> Pc {
        Pc {
            config,
            timer: timer::Timers::DEFAULT,
            fw_cfg: fw_cfg::FwCfg::new(config.fw_cfg),
            pic: [i8259::Pic::MASTER, i8259::Pic::SLAVE],
            ioapic: ioapic::Ioapic::DEFAULT,
            hpet: hpet::Hpet::new(config.hpet),
            rtc: rtc::Rtc::new_zeroed(),
            pit: i8254::Pit::DEFAULT,
            pcspk: pcspk::Pcspk::DEFAULT,
            serial: [serial::IsaSerial::new(); MAX_ISA_SERIAL as usize],
            port92: port92::Port92::DEFAULT,
            globalstate: globalstate::GlobalState::new(globalstate::RunState::Prelaunch),
            loaded: 0,
        }
    }

    /// Where a section goes: every instance of a modelled device type is either a model's or
    /// [`Route::Unexpected`], never left to a description alone.
    pub fn route(&self, idstr: &[u8], instance_id: u32) -> Route {
        let Some(name) = VMSDS
            .iter()
            .find(|v| idstr_matches(idstr, v.name))
            .map(|v| v.name)
        else {
            return Route::NotModelled;
        };
        let one = |s: Slot| (instance_id == 0).then_some(s);
        let slot = match name {
            "timer" => one(Slot::Timer),
            "fw_cfg" => one(Slot::FwCfg),
            // Legacy alias: the iobase (format §5.5).
            "i8259" => match instance_id {
                0 | 0x20 => Some(Slot::Pic(0)),
                1 | 0xa0 => Some(Slot::Pic(1)),
                _ => None,
            },
            "ioapic" => one(Slot::Ioapic),
            "hpet" => one(Slot::Hpet),
            "mc146818rtc" => (instance_id == 0 || instance_id == 0x70).then_some(Slot::Rtc),
            "i8254" => (instance_id == 0 || instance_id == 0x40).then_some(Slot::Pit),
            "pcspk" => one(Slot::Pcspk),
            // Legacy aliases: COM1-COM4's iobases.
            "serial" => match instance_id {
                0 | 0x3f8 => Some(0),
                1 | 0x2f8 => Some(1),
                2 | 0x3e8 => Some(2),
                3 | 0x2e8 => Some(3),
                _ => None,
            }
            .filter(|&i| i < self.config.serial_ports.min(MAX_ISA_SERIAL))
            .map(Slot::Serial),
            "port92" => one(Slot::Port92),
            "globalstate" => one(Slot::GlobalState),
            _ => None,
        };
        slot.map_or(Route::Unexpected, Route::Model)
    }

    /// The slot for a section, if modelled and configured (see [`Pc::route`]).
    pub fn slot(&self, idstr: &[u8], instance_id: u32) -> Option<Slot> {
        match self.route(idstr, instance_id) {
            Route::Model(s) => Some(s),
            _ => None,
        }
    }

    /// Whether a slot was loaded from a stream.
    pub fn is_loaded(&self, slot: Slot) -> bool {
        self.loaded & (1 << slot.index()) != 0
    }

    /// The table a slot loads and encodes with on this destination's build: QEMU 10.0's
    /// tables know `i8259/ltim`, name the hpet count `num_timers_save` and split globalstate's
    /// buffer; QEMU 7.2's do not.
    pub fn vmsd(&self, slot: Slot) -> &'static Vmsd {
        let new = self.config.destination.build == QemuBuild::V10_0;
        match slot {
            Slot::Timer => &timer::VMSD,
            Slot::FwCfg => &fw_cfg::VMSD,
            Slot::Pic(_) if new => &i8259::VMSD,
            Slot::Pic(_) => &i8259::VMSD_7_2,
            Slot::Ioapic => &ioapic::VMSD,
            Slot::Hpet if new => &hpet::VMSD,
            Slot::Hpet => &hpet::VMSD_7_2,
            Slot::Rtc => &rtc::VMSD,
            Slot::Pit => &i8254::VMSD,
            Slot::Pcspk => &pcspk::VMSD,
            Slot::Serial(_) => &serial::VMSD,
            Slot::Port92 => &port92::VMSD,
            Slot::GlobalState if new => &globalstate::VMSD,
            Slot::GlobalState => &globalstate::VMSD_7_2,
        }
    }

    /// Loads a FULL section record into its model. Returns `Ok(false)` when the device type is
    /// not modelled here (the caller decides what to do with it), `Ok(true)` when loaded, and
    /// an error (state unchanged) when it is rejected, was already loaded, or is an instance
    /// the configuration does not have (`UnknownSection`).
    pub fn load_section(&mut self, rec: &SectionRecord<'_>) -> Result<bool> {
        let slot = match self.route(rec.idstr, rec.instance_id) {
            Route::Model(s) => s,
            Route::NotModelled => return Ok(false),
            Route::Unexpected => {
                return Err(
                    Error::new(rec.offset, ErrorKind::UnknownSection).in_section(rec.context())
                );
            }
        };
        if self.is_loaded(slot) {
            return Err(
                Error::new(rec.offset, ErrorKind::DuplicateSection).in_section(rec.context())
            );
        }
        fn load<T: State>(vmsd: &Vmsd, s: &mut T, rec: &SectionRecord<'_>) -> Result<()> {
            vmstate::load_with(vmsd, s, rec.version_id, rec.body, rec.body_offset)
                .map_err(|e| e.in_section(rec.context()))
        }
        let vmsd = self.vmsd(slot);
        match slot {
            Slot::Timer => load(vmsd, &mut self.timer, rec),
            Slot::FwCfg => load(vmsd, &mut self.fw_cfg, rec),
            Slot::Pic(i) => load(vmsd, &mut self.pic[(i & 1) as usize], rec),
            Slot::Ioapic => load(vmsd, &mut self.ioapic, rec),
            Slot::Hpet => load(vmsd, &mut self.hpet, rec),
            Slot::Rtc => load(vmsd, &mut self.rtc, rec),
            Slot::Pit => load(vmsd, &mut self.pit, rec),
            Slot::Pcspk => load(vmsd, &mut self.pcspk, rec),
            Slot::Serial(i) => load(vmsd, &mut self.serial[(i & 3) as usize], rec),
            Slot::Port92 => load(vmsd, &mut self.port92, rec),
            Slot::GlobalState => load(vmsd, &mut self.globalstate, rec),
        }?;
        self.loaded |= 1 << slot.index();
        Ok(true)
    }

    /// The table (for this destination's build, see [`Pc::vmsd`]) and state bytes of a slot.
    pub fn state(&self, slot: Slot) -> (&'static Vmsd, &[u8]) {
        let bytes = match slot {
            Slot::Timer => self.timer.as_bytes(),
            Slot::FwCfg => self.fw_cfg.as_bytes(),
            Slot::Pic(i) => self.pic[(i & 1) as usize].as_bytes(),
            Slot::Ioapic => self.ioapic.as_bytes(),
            Slot::Hpet => self.hpet.as_bytes(),
            Slot::Rtc => self.rtc.as_bytes(),
            Slot::Pit => self.pit.as_bytes(),
            Slot::Pcspk => self.pcspk.as_bytes(),
            Slot::Serial(i) => self.serial[(i & 3) as usize].as_bytes(),
            Slot::Port92 => self.port92.as_bytes(),
            Slot::GlobalState => self.globalstate.as_bytes(),
        };
        (self.vmsd(slot), bytes)
    }

    /// Encodes the FULL section for `slot` with the given wire identity.
    pub fn encode_section<S: Sink>(
        &self,
        slot: Slot,
        id: SectionId<'_>,
        out: &mut S,
    ) -> Result<(), S::Error> {
        let (vmsd, state) = self.state(slot);
        vmstate::encode_section_raw(id, vmsd, state, out)
    }

    /// Slots expected in a full `pc` stream for this configuration but not loaded (QEMU
    /// silently keeps reset state for a missing section; a strict loader asks).
    pub fn missing(&self) -> impl Iterator<Item = Slot> + '_ {
        let c = self.config;
        [
            Slot::Timer,
            Slot::FwCfg,
            Slot::Pic(0),
            Slot::Pic(1),
            Slot::Ioapic,
            Slot::Hpet,
            Slot::Rtc,
            Slot::Pit,
            Slot::Pcspk,
            Slot::Serial(0),
            Slot::Serial(1),
            Slot::Serial(2),
            Slot::Serial(3),
            Slot::Port92,
            Slot::GlobalState,
        ]
        .into_iter()
        .filter(move |s| match *s {
            Slot::Serial(i) => i < c.serial_ports,
            Slot::Pcspk => c.pcspk,
            _ => true,
        })
        .filter(move |s| !self.is_loaded(*s))
    }
}

const _: () = assert!(Slot::COUNT <= 16);

impl Default for Pc {
    fn default() -> Self {
        Pc::new(PcConfig::PC_7_2)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::machine::{MachineType, QemuBuild};
    use crate::test_fixtures::{V2, records, section, section_bytes};
    use std::vec::Vec;
    use vmstate::stream::Record;
    use vmstate::wire::SectionKind;

    fn full_sections(stream: &[u8]) -> Vec<SectionRecord<'_>> {
        records(stream)
            .filter_map(|r| match r.unwrap().record {
                Record::Section(s) if s.kind == SectionKind::Full => Some(s),
                _ => None,
            })
            .collect()
    }

    /// The machine type a fixture's CONFIGURATION names, and its stream.
    fn machine_of(stream: &[u8]) -> MachineType {
        for r in records(stream) {
            if let Record::Configuration(c) = r.unwrap().record {
                return MachineType::parse(c.machine).unwrap();
            }
        }
        panic!("no CONFIGURATION");
    }

    fn config(stream: &[u8], build: QemuBuild) -> PcConfig {
        let mut c = Destination::new(machine_of(stream), build)
            .unwrap()
            .config();
        c.serial_ports = 2;
        c
    }

    /// Every section of a modelled type in both builds' pc and q35 streams (both serial ports
    /// included) loads into its model with the configuration the stream's machine type gives,
    /// re-encodes byte for byte, and none is missing.
    #[test]
    fn both_builds_streams_load_into_their_machine_types_models() {
        for (name, stream, _) in V2 {
            let mut pc = Pc::new(config(stream, QemuBuild::V10_0));
            let mut typed = 0;
            for s in full_sections(stream) {
                match pc.load_section(&s) {
                    Ok(true) => typed += 1,
                    Ok(false) => {}
                    Err(e) => panic!("{name}: {e}"),
                }
            }
            assert_eq!(
                typed, 13,
                "{name}: every modelled section, two serial ports"
            );
            assert_eq!(pc.missing().count(), 0, "{name}");
            for s in full_sections(stream) {
                let Some(slot) = pc.slot(s.idstr, s.instance_id) else {
                    continue;
                };
                let mut buf = std::vec![0xa5u8; 4096];
                let mut sink = vmstate::SliceSink::new(&mut buf);
                let id = SectionId {
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                };
                pc.encode_section(slot, id, &mut sink).unwrap();
                let n = sink.finish();
                assert_eq!(&buf[..n], section_bytes(stream, &s), "{name} {slot:?}");
            }
            // QEMU 7.2's tables (on the same devices, whether or not 7.2 has the machine type)
            // load all but the ltim fixture's master PIC.
            let mut c = config(stream, QemuBuild::V10_0);
            c.destination.build = QemuBuild::V7_2;
            let mut old = Pc::new(c);
            let refused: Vec<_> = full_sections(stream)
                .iter()
                .filter_map(|s| old.load_section(s).err())
                .collect();
            if name.ends_with("-ltim") {
                assert_eq!(refused.len(), 1, "{name}");
                assert!(matches!(
                    refused[0].kind,
                    ErrorKind::UnknownSubsection { .. }
                ));
                assert_eq!(refused[0].section.unwrap().instance_id, 0);
            } else {
                assert!(refused.is_empty(), "{name}: {refused:?}");
            }
        }
    }

    #[test]
    fn a_q35_stream_against_pc_is_refused_by_the_hpet_model() {
        let stream = V2[1].1; // q72-pc-q35-7.2
        let mut pc = Pc::new(PcConfig {
            serial_ports: 2,
            ..PcConfig::PC_7_2
        });
        let e = full_sections(stream)
            .iter()
            .find_map(|s| pc.load_section(s).err())
            .expect("refused");
        assert_eq!(e.field, Some("timer"));
        assert_eq!(e.section.unwrap().idstr.as_bytes(), b"hpet");
    }

    /// Every `serial` instance goes to the serial model: with one port configured the second
    /// is refused as an instance the destination lacks; past four ports there is no model.
    #[test]
    fn every_serial_instance_is_the_models() {
        let stream = V2[0].1;
        let second = section(stream, "serial", 1);
        let mut one = Pc::new(PcConfig {
            serial_ports: 1,
            ..config(stream, QemuBuild::V7_2)
        });
        assert!(one.load_section(&section(stream, "serial", 0)).unwrap());
        assert_eq!(one.route(b"serial", 1), Route::Unexpected);
        let e = one.load_section(&second).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownSection);
        assert_eq!(e.section.unwrap().instance_id, 1);
        let mut four = Pc::new(PcConfig {
            serial_ports: 4,
            ..config(stream, QemuBuild::V7_2)
        });
        assert_eq!(four.route(b"serial", 3), Route::Model(Slot::Serial(3)));
        assert_eq!(four.route(b"serial", 4), Route::Unexpected);
        assert_eq!(four.route(b"hpet", 1), Route::Unexpected);
        assert_eq!(four.route(b"i8259", 2), Route::Unexpected);
        assert_eq!(four.route(b"e1000", 0), Route::NotModelled);
        // The second port's body, checked by the model as instance 3.
        let mut third = second;
        third.instance_id = 3;
        assert!(four.load_section(&third).unwrap());
        assert!(four.is_loaded(Slot::Serial(3)));
        assert_eq!(
            four.missing().collect::<Vec<_>>(),
            Vec::from([
                Slot::Timer,
                Slot::FwCfg,
                Slot::Pic(0),
                Slot::Pic(1),
                Slot::Ioapic,
                Slot::Hpet,
                Slot::Rtc,
                Slot::Pit,
                Slot::Pcspk,
                Slot::Serial(0),
                Slot::Serial(1),
                Slot::Serial(2),
                Slot::Port92,
                Slot::GlobalState,
            ])
        );
    }
}
