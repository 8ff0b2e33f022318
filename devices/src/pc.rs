//! The modelled devices of QEMU's `pc-i440fx-*` / `pc-q35-*` machines together.
//!
//! The device list is declared once, in the `pc_devices!` invocation below: each row names a
//! device's [`Slot`], its field in [`Pc`] and power-on state, its tables (QEMU 10.0's and, where
//! they differ, QEMU 7.2's), its wire instance ids and which instances the configuration has.
//! Everything else here is generated from that list: [`VMSDS`] (every top-level table, QEMU
//! 10.0's, which read every body QEMU 7.2's read, for `vmstate::stream::Schemas` and for
//! exporting the tables), [`Slot`], the fields of [`Pc`], and the routing, loading, encoding
//! and missing-section checks.
//!
//! [`Pc`] is a typed destination made from a [`PcConfig`] (derived from the machine type and
//! build, see [`crate::machine`]): it routes every FULL section of a modelled device type to its
//! model by idstr and instance ([`Pc::route`]; an instance the configuration does not have is
//! refused, never left to a description), loads it atomically with the build's table (a
//! rejected section changes nothing), refuses a second copy of the same section (QEMU would
//! load it twice; docs/UNTRUSTED-INPUT.md §5), and encodes the modelled sections back. Sections
//! it does not model are reported as such so a host tool can fall back to the
//! description-driven decoder.

use crate::machine::{Destination, QemuBuild};
use crate::{fw_cfg, globalstate, hpet, i8254, i8259, ioapic, pcspk, port92, rtc, serial, timer};
use vmstate::stream::{SectionRecord, idstr_matches};
use vmstate::{Error, ErrorKind, Result, SectionId, Sink, State, Vmsd};
use zerocopy::{FromZeros, IntoBytes};

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

/// Declares the device list once and generates from it everything that walks the list.
///
/// A row: `Slot(i)? => field: ElementType = power-on state, table (10.0) [, 7.2: table],
/// instances [[wire ids of instance 0], …] [, configured count] [, expected condition];`.
/// A row with `(i)` keeps one state per instance in an array (`Slot::Pic(i)` is `pic[i]`);
/// `configured` (default: every instance) and `expected` (default: true) may read the
/// configuration through the identifier given before the rows.
macro_rules! pc_devices {
    (
        config = $cfg:ident;
        $(
            $(#[$doc:meta])*
            $slot:ident $(($i:ident))? => $field:ident: $ty:ty = $init:expr,
                $vmsd:expr $(, 7.2: $old:expr)?,
                instances $instances:expr
                $(, configured $configured:expr)?
                $(, expected $expected:expr)?;
        )*
    ) => {
        /// Every top-level table this crate models.
        pub const VMSDS: &[&Vmsd] = &[$($vmsd),*];

        /// Which device a section belongs to.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[cfg_attr(feature = "defmt", derive(defmt::Format))]
        pub enum Slot {
            $($(#[$doc])* $slot $((pc_devices!(@u8 $i)))?,)*
        }

        impl Slot {
            const COUNT: usize = 0 $(+ $instances.len())*;

            /// This slot's bit in [`Pc`]'s loaded set: declaration order, instances in turn.
            fn index(self) -> usize {
                let mut base = 0;
                $(
                    if let Slot::$slot $(($i))? = self {
                        return base $(+ usize::from($i) % $instances.len())?;
                    }
                    base += $instances.len();
                )*
                base
            }
        }

        /// The typed state of the modelled `pc` devices.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Pc {
            /// Configuration.
            pub config: PcConfig,
            $($(#[$doc])* pub $field: pc_devices!(@ty $ty, $instances $(, $i)?),)*
            loaded: u16,
        }

        impl Pc {
            /// Devices at their power-on state for `config`.
            pub fn new($cfg: PcConfig) -> Pc {
                Pc { config: $cfg, $($field: $init,)* loaded: 0 }
            }

            /// Where a section goes: every instance of a modelled device type is either a
            /// model's or [`Route::Unexpected`], never left to a description alone.
            pub fn route(&self, idstr: &[u8], instance_id: u32) -> Route {
                #[allow(unused_variables)]
                let $cfg = self.config;
                $(
                    if idstr_matches(idstr, $vmsd.name) {
                        let configured = $instances.len() $(.min(usize::from($configured)))?;
                        return match $instances.iter().position(|ids| ids.contains(&instance_id)) {
                            Some(k) if k < configured => {
                                Route::Model(Slot::$slot $((pc_devices!(@nth k $i)))?)
                            }
                            _ => Route::Unexpected,
                        };
                    }
                )*
                Route::NotModelled
            }

            /// The table a slot loads and encodes with on this destination's build: QEMU 10.0's
            /// tables know `i8259/ltim`, name the hpet count `num_timers_save` and split
            /// globalstate's buffer; QEMU 7.2's do not.
            pub fn vmsd(&self, slot: Slot) -> &'static Vmsd {
                #[allow(unused_variables)]
                let old = self.config.destination.build != QemuBuild::V10_0;
                match slot {
                    $(Slot::$slot { .. } => {
                        $(if old { return $old; })?
                        $vmsd
                    })*
                }
            }

            /// Loads a FULL section record into its model. Returns `Ok(false)` when the device
            /// type is not modelled here (the caller decides what to do with it), `Ok(true)`
            /// when loaded, and an error (state unchanged) when it is rejected, was already
            /// loaded, or is an instance the configuration does not have (`UnknownSection`).
            pub fn load_section(&mut self, rec: &SectionRecord<'_>) -> Result<bool> {
                let slot = match self.route(rec.idstr, rec.instance_id) {
                    Route::Model(s) => s,
                    Route::NotModelled => return Ok(false),
                    Route::Unexpected => {
                        return Err(Error::new(rec.offset, ErrorKind::UnknownSection)
                            .in_section(rec.context()));
                    }
                };
                if self.is_loaded(slot) {
                    return Err(Error::new(rec.offset, ErrorKind::DuplicateSection)
                        .in_section(rec.context()));
                }
                fn load<T: State>(vmsd: &Vmsd, s: &mut T, rec: &SectionRecord<'_>) -> Result<()> {
                    vmstate::load_with(vmsd, s, rec.version_id, rec.body, rec.body_offset)
                        .map_err(|e| e.in_section(rec.context()))
                }
                let vmsd = self.vmsd(slot);
                match slot {
                    $(Slot::$slot $(($i))? => load(
                        vmsd,
                        &mut self.$field $([usize::from($i) % $instances.len()])?,
                        rec,
                    ),)*
                }?;
                self.loaded |= 1 << slot.index();
                Ok(true)
            }

            /// The table (for this destination's build, see [`Pc::vmsd`]) and state bytes of a
            /// slot.
            pub fn state(&self, slot: Slot) -> (&'static Vmsd, &[u8]) {
                let bytes = match slot {
                    $(Slot::$slot $(($i))? => {
                        self.$field $([usize::from($i) % $instances.len()])?.as_bytes()
                    })*
                };
                (self.vmsd(slot), bytes)
            }

            /// Slot number `k` in declaration order, and whether this configuration expects it
            /// in a full stream.
            fn nth(&self, k: usize) -> Option<(Slot, bool)> {
                #[allow(unused_variables)]
                let $cfg = self.config;
                let mut k = k;
                $(
                    if k < $instances.len() {
                        let configured = $instances.len() $(.min(usize::from($configured)))?;
                        let expected = k < configured $(&& $expected)?;
                        return Some((Slot::$slot $((pc_devices!(@nth k $i)))?, expected));
                    }
                    k -= $instances.len();
                )*
                None
            }
        }
    };
    (@u8 $i:ident) => { u8 };
    (@nth $k:ident $i:ident) => { $k as u8 };
    (@ty $ty:ty, $instances:expr) => { $ty };
    (@ty $ty:ty, $instances:expr, $i:ident) => { [$ty; $instances.len()] };
}

pc_devices! {
    config = config;
    /// `timer`.
    Timer => timer: timer::Timers = timer::Timers::DEFAULT,
        &timer::VMSD, instances [[0]];
    /// `fw_cfg`.
    FwCfg => fw_cfg: fw_cfg::FwCfg = fw_cfg::FwCfg::new(config.fw_cfg),
        &fw_cfg::VMSD, instances [[0]];
    /// `i8259` master (0) and slave (1); legacy alias: the iobase (docs/V3-WIRE.md §5.5).
    Pic(i) => pic: i8259::Pic = [i8259::Pic::MASTER, i8259::Pic::SLAVE],
        &i8259::VMSD, 7.2: &i8259::VMSD_7_2, instances [[0, 0x20], [1, 0xa0]];
    /// `ioapic`.
    Ioapic => ioapic: ioapic::Ioapic = ioapic::Ioapic::DEFAULT,
        &ioapic::VMSD, instances [[0]];
    /// `hpet`.
    Hpet => hpet: hpet::Hpet = hpet::Hpet::new(config.hpet),
        &hpet::VMSD, 7.2: &hpet::VMSD_7_2, instances [[0]];
    /// `mc146818rtc`.
    Rtc => rtc: rtc::Rtc = rtc::Rtc::new_zeroed(),
        &rtc::VMSD, instances [[0, 0x70]];
    /// `i8254`.
    Pit => pit: i8254::Pit = i8254::Pit::DEFAULT,
        &i8254::VMSD, instances [[0, 0x40]];
    /// `pcspk` (not expected when the machine type does not migrate it; still checked).
    Pcspk => pcspk: pcspk::Pcspk = pcspk::Pcspk::DEFAULT,
        &pcspk::VMSD, instances [[0]], expected config.pcspk;
    /// ISA `serial` instance 0..=3 (only the configured ones are loaded); legacy aliases:
    /// COM1-COM4's iobases.
    Serial(i) => serial: serial::IsaSerial = [serial::IsaSerial::new(); MAX_ISA_SERIAL as usize],
        &serial::VMSD, instances [[0, 0x3f8], [1, 0x2f8], [2, 0x3e8], [3, 0x2e8]],
        configured config.serial_ports;
    /// `port92`.
    Port92 => port92: port92::Port92 = port92::Port92::DEFAULT,
        &port92::VMSD, instances [[0]];
    /// `globalstate`.
    GlobalState => globalstate: globalstate::GlobalState =
        globalstate::GlobalState::new(globalstate::RunState::Prelaunch),
        &globalstate::VMSD, 7.2: &globalstate::VMSD_7_2, instances [[0]];
}

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

const _: () = assert!(Slot::COUNT <= 16);

impl Pc {
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
        (0..Slot::COUNT)
            .filter_map(|k| self.nth(k))
            .filter(move |&(s, expected)| expected && !self.is_loaded(s))
            .map(|(s, _)| s)
    }
}

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

    /// The unused room `vmstate::v4::max_record_len` leaves for a state of `vmsd`: the bytes
    /// of variable-length arrays and of fields whose presence is tested, at their capacity
    /// (the bound counts every one of them full and present), nested tables and subsections
    /// included.
    fn variable_room(vmsd: &Vmsd) -> usize {
        let fields: usize = vmsd
            .fields
            .iter()
            .filter(|f| f.since <= vmsd.version_id)
            .map(|f| {
                let full = match f.kind {
                    vmstate::Kind::Struct { vmsd, len } => variable_room(vmsd) * len,
                    vmstate::Kind::VArray { .. } | vmstate::Kind::VBuffer { .. } => {
                        f.storage_size()
                    }
                    _ => 0,
                };
                if f.exists.is_some() {
                    f.storage_size().max(full)
                } else {
                    full
                }
            })
            .sum();
        fields
            + vmsd
                .subsections
                .iter()
                .map(|s| variable_room(s.vmsd))
                .sum::<usize>()
    }

    /// `vmsd` with every subsection sent, needed or not, at every depth (nested tables
    /// included): the largest record a state can make.
    fn all_subsections(vmsd: &'static Vmsd) -> &'static Vmsd {
        use std::boxed::Box;
        use vmstate::Kind;
        use vmstate::schema::Elem;
        let fields: Vec<vmstate::Field> = vmsd
            .fields
            .iter()
            .map(|f| {
                let kind = match f.kind {
                    Kind::Struct { vmsd, len } => Kind::Struct {
                        vmsd: all_subsections(vmsd),
                        len,
                    },
                    Kind::VArray {
                        elem: Elem::Struct(v),
                        count,
                    } => Kind::VArray {
                        elem: Elem::Struct(all_subsections(v)),
                        count,
                    },
                    k => k,
                };
                vmstate::Field { kind, ..*f }
            })
            .collect();
        let subsections: Vec<vmstate::Subsection> = vmsd
            .subsections
            .iter()
            .map(|s| vmstate::Subsection {
                needed: None,
                vmsd: all_subsections(s.vmsd),
                ..*s
            })
            .collect();
        Box::leak(Box::new(
            (*vmsd)
                .fields(Box::leak(fields.into_boxed_slice()))
                .subsections(Box::leak(subsections.into_boxed_slice())),
        ))
    }

    /// `vmstate::v4::max_record_len` bounds the v4 record of every device table this crate
    /// models, QEMU 10.0's and 7.2's: each state the second-generation fixtures hold, and
    /// each power-on state, with its subsections as needed and with every subsection sent,
    /// writes through `v4::StreamWriter` into a buffer of exactly `max_record_len(table)`
    /// bytes (no vendor level or eight, CRC off or on). The bound is tight: for the record's
    /// own idstr, levels and CRC it exceeds the largest record written by at most the room
    /// of variable-length and optional fields.
    #[test]
    fn max_record_len_bounds_every_device_table_and_is_tight() {
        use vmstate::v4::wire::{Header, Vendor};
        use vmstate::v4::{StreamWriter, max_record_len, max_record_len_for};
        let vendor = Vendor {
            id: vmstate::VendorId::new("org.example"),
            protocol_minor: 0,
        };
        let headers = [
            Header::new(&[], false).unwrap(),
            Header::new(&[], true).unwrap(),
            Header::new(&[vendor; vmstate::v4::MAX_LEVELS], true).unwrap(),
        ];
        // Per table (by name and version): the smallest gap seen, and the room it may have.
        let mut gaps: std::collections::BTreeMap<(&str, u32), (usize, usize)> =
            std::collections::BTreeMap::new();
        for (name, stream, _) in V2 {
            let build = if name.starts_with("q72") {
                QemuBuild::V7_2
            } else {
                QemuBuild::V10_0
            };
            let fresh = Pc::new(config(stream, build));
            let mut pc = fresh.clone();
            for s in full_sections(stream) {
                pc.load_section(&s).unwrap();
            }
            for s in full_sections(stream) {
                let Some(slot) = pc.slot(s.idstr, s.instance_id) else {
                    continue;
                };
                let id = SectionId {
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                };
                for p in [&fresh, &pc] {
                    let (vmsd, state) = p.state(slot);
                    let bound = max_record_len(vmsd);
                    for table in [vmsd, all_subsections(vmsd)] {
                        assert_eq!(max_record_len(table), bound, "{name}: {}", vmsd.name);
                        for header in &headers {
                            let mut buf = std::vec![0u8; bound];
                            let mut w =
                                StreamWriter::new(header, vmstate::SliceSink::new(&mut buf))
                                    .unwrap();
                            let at = w.position();
                            w.section_raw(id, table, state)
                                .unwrap_or_else(|e| panic!("{name}: {}: {e}", vmsd.name));
                            let n = w.position() - at;
                            let own = max_record_len_for(
                                vmsd,
                                s.idstr.len(),
                                header.levels(),
                                header.crc(),
                            );
                            assert!(n <= own, "{name}: {}: {n} > {own}", vmsd.name);
                            let e = gaps
                                .entry((vmsd.name, vmsd.version_id))
                                .or_insert((usize::MAX, variable_room(vmsd)));
                            e.0 = e.0.min(own - n);
                        }
                    }
                }
            }
        }
        // Every table of both builds was written.
        for vmsd in
            VMSDS
                .iter()
                .copied()
                .chain([&i8259::VMSD_7_2, &hpet::VMSD_7_2, &globalstate::VMSD_7_2])
        {
            assert!(
                gaps.contains_key(&(vmsd.name, vmsd.version_id)),
                "{} version {} not covered",
                vmsd.name,
                vmsd.version_id
            );
        }
        for ((table, version), (gap, room)) in gaps {
            assert!(
                gap <= room,
                "{table} v{version}: bound {gap} bytes above the largest record, room {room}"
            );
        }
    }
}
