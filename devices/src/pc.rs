//! The modelled devices of QEMU 7.2's `pc` machine together.
//!
//! [`VMSDS`] lists every top-level table (for `vmstate::stream::Schemas` and for exporting the
//! tables); [`Pc`] is a typed destination: it routes each FULL section by idstr and instance to
//! its model, loads it atomically (a rejected section changes nothing), refuses a second copy of
//! the same section (QEMU would load it twice; untrusted-input §5), and encodes the modelled
//! sections back. Sections it does not model are reported as such so a host tool can fall back
//! to the description-driven decoder.

use crate::{fw_cfg, globalstate, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial, timer};
use vmstate::stream::{SectionRecord, idstr_matches};
use vmstate::{Error, ErrorKind, Result, SectionId, Sink, State, Vmsd};
use zerocopy::FromZeros;

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
        if VMSDS[i].size > m {
            m = VMSDS[i].size;
        }
        i += 1;
    }
    m
};

/// The destination's configuration (what is not on the wire but decides what loads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcConfig {
    /// HPET configuration.
    pub hpet: hpet::HpetConfig,
    /// fw_cfg configuration.
    pub fw_cfg: fw_cfg::FwCfgConfig,
    /// Whether an ISA serial port (instance 0) is configured (`-serial …`).
    pub serial: bool,
}

impl PcConfig {
    /// QEMU 7.2's `pc` (`pc-i440fx-7.2`) with `-nodefaults`.
    pub const PC_7_2: PcConfig = PcConfig {
        hpet: hpet::HpetConfig::PC_7_2,
        fw_cfg: fw_cfg::FwCfgConfig::PC_7_2,
        serial: false,
    };
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
    /// ISA `serial` instance 0.
    Serial,
    /// `port92`.
    Port92,
    /// `globalstate`.
    GlobalState,
}

impl Slot {
    const COUNT: usize = 12;

    fn index(self) -> usize {
        match self {
            Slot::Timer => 0,
            Slot::FwCfg => 1,
            Slot::Pic(i) => 2 + i as usize,
            Slot::Ioapic => 4,
            Slot::Hpet => 5,
            Slot::Rtc => 6,
            Slot::Pit => 7,
            Slot::Pcspk => 8,
            Slot::Serial => 9,
            Slot::Port92 => 10,
            Slot::GlobalState => 11,
        }
    }
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
    /// ISA `serial` (only loaded when configured).
    pub serial: serial::IsaSerial,
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
            serial: serial::IsaSerial::new(),
            port92: port92::Port92::DEFAULT,
            globalstate: globalstate::GlobalState::new(globalstate::RunState::Prelaunch),
            loaded: 0,
        }
    }

    /// The slot for a section, if modelled and configured.
    pub fn slot(&self, idstr: &[u8], instance_id: u32) -> Option<Slot> {
        let one = |s: Slot| (instance_id == 0).then_some(s);
        let name = VMSDS.iter().find(|v| idstr_matches(idstr, v.name))?.name;
        match name {
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
            "serial" if self.config.serial => {
                (instance_id == 0 || instance_id == 0x3f8).then_some(Slot::Serial)
            }
            "port92" => one(Slot::Port92),
            "globalstate" => one(Slot::GlobalState),
            _ => None,
        }
    }

    /// Whether a slot was loaded from a stream.
    pub fn is_loaded(&self, slot: Slot) -> bool {
        self.loaded & (1 << slot.index()) != 0
    }

    /// Loads a FULL section record into its model. Returns `Ok(false)` when the section is not
    /// modelled here (the caller decides what to do with it), `Ok(true)` when loaded, and an
    /// error (state unchanged) when it is rejected or was already loaded.
    pub fn load_section(&mut self, rec: &SectionRecord<'_>) -> Result<bool> {
        let Some(slot) = self.slot(rec.idstr, rec.instance_id) else {
            return Ok(false);
        };
        if self.is_loaded(slot) {
            return Err(
                Error::new(rec.offset, ErrorKind::DuplicateSection).in_section(rec.context())
            );
        }
        match slot {
            Slot::Timer => vmstate::load_section(&mut self.timer, rec),
            Slot::FwCfg => vmstate::load_section(&mut self.fw_cfg, rec),
            Slot::Pic(i) => vmstate::load_section(&mut self.pic[i as usize], rec),
            Slot::Ioapic => vmstate::load_section(&mut self.ioapic, rec),
            Slot::Hpet => vmstate::load_section(&mut self.hpet, rec),
            Slot::Rtc => vmstate::load_section(&mut self.rtc, rec),
            Slot::Pit => vmstate::load_section(&mut self.pit, rec),
            Slot::Pcspk => vmstate::load_section(&mut self.pcspk, rec),
            Slot::Serial => vmstate::load_section(&mut self.serial, rec),
            Slot::Port92 => vmstate::load_section(&mut self.port92, rec),
            Slot::GlobalState => vmstate::load_section(&mut self.globalstate, rec),
        }?;
        self.loaded |= 1 << slot.index();
        Ok(true)
    }

    /// The table and state bytes of a slot.
    pub fn state(&self, slot: Slot) -> (&'static Vmsd, &[u8]) {
        fn of<T: State>(t: &T) -> (&'static Vmsd, &[u8]) {
            (T::VMSD, t.as_bytes())
        }
        match slot {
            Slot::Timer => of(&self.timer),
            Slot::FwCfg => of(&self.fw_cfg),
            Slot::Pic(i) => of(&self.pic[(i & 1) as usize]),
            Slot::Ioapic => of(&self.ioapic),
            Slot::Hpet => of(&self.hpet),
            Slot::Rtc => of(&self.rtc),
            Slot::Pit => of(&self.pit),
            Slot::Pcspk => of(&self.pcspk),
            Slot::Serial => of(&self.serial),
            Slot::Port92 => of(&self.port92),
            Slot::GlobalState => of(&self.globalstate),
        }
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

    /// Slots whose count of loaded sections is expected in a full `pc` stream but which were not
    /// loaded (QEMU silently keeps reset state for a missing section; a strict loader asks).
    pub fn missing(&self) -> impl Iterator<Item = Slot> + '_ {
        let serial = self.config.serial;
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
            Slot::Serial,
            Slot::Port92,
            Slot::GlobalState,
        ]
        .into_iter()
        .filter(move |s| (serial || *s != Slot::Serial) && !self.is_loaded(*s))
    }
}

const _: () = assert!(Slot::COUNT <= 16);

impl Default for Pc {
    fn default() -> Self {
        Pc::new(PcConfig::PC_7_2)
    }
}
