//! The destination: a QEMU build and a `pc` machine type, and the device configuration they
//! imply.
//!
//! What a typed model checks a section against (the HPET's interrupt routing capability, how
//! many fw_cfg file slots exist, whether `fw_cfg/dma` or `hpet/offset` may be sent, which
//! subsections the destination knows) is not on the wire: QEMU derives it from the machine type
//! (`-M`, its compat properties) and from the build itself. [`Destination`] names both and
//! [`Destination::config`] derives the [`PcConfig`] of every modelled device from them.
//!
//! Facts, from QEMU 7.2.0 and 10.0.2 (`hw/i386/pc.c`, `pc_piix.c`, `pc_q35.c`,
//! `hw/core/machine.c`):
//!
//! | configuration | value | source |
//! |---|---|---|
//! | `hpet-intcap` | 0x4 (IRQ2) on `pc-i440fx-*`, 0xff0104 (IRQ2, 8, 16–23) on `pc-q35-*` | `pc_basic_device_init(…, hpet_irqs)` in `pc_piix.c` / `pc_q35.c` |
//! | HPET `timers` | 3 on every machine type | `DEFINE_PROP_UINT8("timers", …, HPET_MIN_TIMERS)` |
//! | `hpet-offset-saved` | false on ≤ 2.11 | `hw_compat_2_11` |
//! | fw_cfg `x-file-slots` | 0x10 on ≤ 2.8, else 0x20 | `hw_compat_2_8` |
//! | fw_cfg `dma_enabled` | off on ≤ 2.4 | `hw_compat_2_4` |
//! | fw_cfg `acpi-mr-restore` | false on ≤ 4.2 | `hw_compat_4_2` |
//! | `isa-pcspk` `migrate` | off on ≤ 2.7 (no `pcspk` section) | `pc_compat_2_7` |
//! | `i8259/ltim` subsection | known to QEMU ≥ 8.0 builds only, on every machine type | `i8259_common.c` |
//!
//! Machine types each build defines: QEMU 7.2 has `pc-i440fx-1.4` … `7.2` and `pc-q35-2.4` …
//! `7.2` (plus `pc-q35-4.0.1`); QEMU 10.0 has `pc-i440fx-2.4` … `10.0` and `pc-q35-2.4` … `10.0`
//! (plus `pc-q35-4.0.1`). The aliases `pc` and `q35` name the newest of the build. Machine
//! types older than 2.4 (only QEMU 7.2 has them: `pc-i440fx-1.4` … `2.3`) have further compat
//! properties this crate does not model (no section footers before 2.3, no CONFIGURATION
//! record, other ACPI sizes), so they are refused as [`MachineError::NotModelled`] rather than
//! guessed; a name neither build defines is [`MachineError::NotInBuild`] and a non-`pc`
//! machine is [`MachineError::NotPc`].

use crate::pc::PcConfig;
use crate::{fw_cfg, hpet};
use core::fmt;

/// A QEMU build the destination runs (the two builds this crate is checked against).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum QemuBuild {
    /// QEMU 7.2 (Debian bookworm).
    V7_2,
    /// QEMU 10.0 (Debian trixie, bookworm-backports).
    V10_0,
}

impl QemuBuild {
    /// Both builds, oldest first.
    pub const ALL: [QemuBuild; 2] = [QemuBuild::V7_2, QemuBuild::V10_0];

    /// `(major, minor)`.
    pub const fn version(self) -> (u8, u8) {
        match self {
            QemuBuild::V7_2 => (7, 2),
            QemuBuild::V10_0 => (10, 0),
        }
    }

    /// Parses `7.2` or `10.0`.
    pub fn parse(s: &str) -> Option<QemuBuild> {
        QemuBuild::ALL.into_iter().find(
            |b| matches!(parse_version(s.as_bytes()), Some((ma, mi, 0)) if (ma, mi) == b.version()),
        )
    }

    /// The newest machine type of `chipset` this build has (what `pc` / `q35` resolve to).
    pub const fn newest(self, chipset: Chipset) -> MachineType {
        let (major, minor) = self.version();
        MachineType {
            chipset,
            major,
            minor,
            micro: 0,
        }
    }

    /// Whether this build knows the `i8259/ltim` subsection (QEMU ≥ 8.0).
    pub const fn has_pic_ltim(self) -> bool {
        matches!(self, QemuBuild::V10_0)
    }

    /// Whether this build defines machine type `m` (see the module docs).
    pub const fn defines(self, m: MachineType) -> bool {
        let (bmaj, bmin) = self.version();
        let v = (m.major, m.minor);
        // Not newer than the build.
        if v.0 > bmaj || (v.0 == bmaj && v.1 > bmin) {
            return false;
        }
        if m.micro != 0 {
            // The only bug-fix machine type: pc-q35-4.0.1.
            return matches!(m.chipset, Chipset::Q35) && v.0 == 4 && v.1 == 0 && m.micro == 1;
        }
        let max_minor = match v.0 {
            1 => 7,
            2 => 12,
            3 => 1,
            4..=9 => 2,
            10 => 0,
            _ => return false,
        };
        if v.1 > max_minor {
            return false;
        }
        let oldest = match (self, m.chipset) {
            (QemuBuild::V7_2, Chipset::I440fx) => (1, 4),
            _ => (2, 4),
        };
        v.0 > oldest.0 || (v.0 == oldest.0 && v.1 >= oldest.1)
    }
}

impl fmt::Display for QemuBuild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.version();
        write!(f, "QEMU {a}.{b}")
    }
}

/// The chipset family of a `pc` machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Chipset {
    /// `pc-i440fx-*` (alias `pc`): i440FX + PIIX3.
    I440fx,
    /// `pc-q35-*` (alias `q35`): Q35 + ICH9.
    Q35,
}

/// A versioned `pc` machine type, e.g. `pc-q35-7.2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MachineType {
    /// The chipset family.
    pub chipset: Chipset,
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Bug-fix version (only `pc-q35-4.0.1` has one).
    pub micro: u8,
}

/// The oldest machine type version modelled (see the module docs).
pub const OLDEST_MODELLED: (u8, u8) = (2, 4);

/// Why a machine type name gives no destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum MachineError {
    /// Not `pc-i440fx-X.Y`, `pc-q35-X.Y`, `pc` or `q35`: only the PC machines are modelled.
    NotPc,
    /// A `pc` machine type the build does not define (QEMU would refuse `-M` with it).
    NotInBuild {
        /// The machine type.
        machine: MachineType,
        /// The build.
        build: QemuBuild,
    },
    /// A machine type the build defines, but older than [`OLDEST_MODELLED`].
    NotModelled {
        /// The machine type.
        machine: MachineType,
    },
}

impl fmt::Display for MachineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MachineError::NotPc => f.write_str(
                "not a pc-i440fx-X.Y or pc-q35-X.Y machine type (nor the alias pc or q35); \
                 only those are modelled",
            ),
            MachineError::NotInBuild { machine, build } => {
                write!(f, "{build} has no machine type {machine}")
            }
            MachineError::NotModelled { machine } => write!(
                f,
                "{machine} is older than the oldest modelled machine type ({}.{}): its compat \
                 properties are not modelled",
                OLDEST_MODELLED.0, OLDEST_MODELLED.1
            ),
        }
    }
}

impl core::error::Error for MachineError {}

/// `X.Y` or `X.Y.Z` with small decimal numbers.
fn parse_version(s: &[u8]) -> Option<(u8, u8, u8)> {
    let mut parts = [0u8; 3];
    let mut n = 0;
    for part in s.split(|&b| b == b'.') {
        if n == 3
            || part.is_empty()
            || part.len() > 2
            || !part.iter().all(u8::is_ascii_digit)
            || (part.len() > 1 && part[0] == b'0')
        {
            return None;
        }
        parts[n] = part.iter().fold(0u8, |a, d| a * 10 + (d - b'0'));
        n += 1;
    }
    (n >= 2).then_some((parts[0], parts[1], parts[2]))
}

impl MachineType {
    /// `pc-i440fx-7.2`.
    pub const I440FX_7_2: MachineType = MachineType::new(Chipset::I440fx, 7, 2);
    /// `pc-q35-7.2`.
    pub const Q35_7_2: MachineType = MachineType::new(Chipset::Q35, 7, 2);
    /// `pc-i440fx-10.0`.
    pub const I440FX_10_0: MachineType = MachineType::new(Chipset::I440fx, 10, 0);
    /// `pc-q35-10.0`.
    pub const Q35_10_0: MachineType = MachineType::new(Chipset::Q35, 10, 0);

    /// `chipset` at `major.minor`.
    pub const fn new(chipset: Chipset, major: u8, minor: u8) -> MachineType {
        MachineType {
            chipset,
            major,
            minor,
            micro: 0,
        }
    }

    /// Parses a full versioned name (`pc-i440fx-X.Y`, `pc-q35-X.Y[.Z]`) as QEMU spells it in
    /// the CONFIGURATION record. The aliases need a build: see [`Destination::parse`].
    pub fn parse(name: &[u8]) -> Result<MachineType, MachineError> {
        let (chipset, rest) = if let Some(r) = name.strip_prefix(b"pc-i440fx-") {
            (Chipset::I440fx, r)
        } else if let Some(r) = name.strip_prefix(b"pc-q35-") {
            (Chipset::Q35, r)
        } else {
            return Err(MachineError::NotPc);
        };
        let (major, minor, micro) = parse_version(rest).ok_or(MachineError::NotPc)?;
        Ok(MachineType {
            chipset,
            major,
            minor,
            micro,
        })
    }

    /// Whether this machine type is `major.minor` or older (QEMU's `hw_compat_X_Y` applies).
    pub const fn at_most(self, major: u8, minor: u8) -> bool {
        self.major < major || (self.major == major && self.minor <= minor)
    }

    /// Whether this machine type's compat properties are modelled (≥ [`OLDEST_MODELLED`]).
    pub const fn is_modelled(self) -> bool {
        !self.at_most(OLDEST_MODELLED.0, OLDEST_MODELLED.1 - 1)
    }

    /// The newest build (of the two) that defines this machine type, if any.
    pub const fn newest_build(self) -> Option<QemuBuild> {
        if QemuBuild::V10_0.defines(self) {
            Some(QemuBuild::V10_0)
        } else if QemuBuild::V7_2.defines(self) {
            Some(QemuBuild::V7_2)
        } else {
            None
        }
    }
}

impl fmt::Display for MachineType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.chipset {
            Chipset::I440fx => "pc-i440fx",
            Chipset::Q35 => "pc-q35",
        };
        write!(f, "{family}-{}.{}", self.major, self.minor)?;
        if self.micro != 0 {
            write!(f, ".{}", self.micro)?;
        }
        Ok(())
    }
}

/// A destination QEMU: its build and machine type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Destination {
    /// The machine type (`-M`).
    pub machine: MachineType,
    /// The build.
    pub build: QemuBuild,
}

impl Destination {
    /// QEMU 7.2 with `pc-i440fx-7.2` (the first-generation fixtures' destination).
    pub const PC_7_2: Destination = Destination {
        machine: MachineType::I440FX_7_2,
        build: QemuBuild::V7_2,
    };

    /// `machine` on `build`, if the build defines it and it is modelled.
    pub const fn new(machine: MachineType, build: QemuBuild) -> Result<Destination, MachineError> {
        if !build.defines(machine) {
            return Err(MachineError::NotInBuild { machine, build });
        }
        if !machine.is_modelled() {
            return Err(MachineError::NotModelled { machine });
        }
        Ok(Destination { machine, build })
    }

    /// `machine` on `build`, or, without a build, on the newest build that defines it (so a
    /// `pc-i440fx-7.2` destination defaults to QEMU 10.0).
    pub fn for_machine(
        machine: MachineType,
        build: Option<QemuBuild>,
    ) -> Result<Destination, MachineError> {
        match build.or(machine.newest_build()) {
            Some(b) => Destination::new(machine, b),
            None => Err(MachineError::NotInBuild {
                machine,
                build: QemuBuild::V10_0,
            }),
        }
    }

    /// Parses a machine type name as `-M` takes it: a versioned name or the alias `pc` / `q35`
    /// (the newest of `build`, or of QEMU 10.0 without one). See [`Destination::for_machine`].
    pub fn parse(name: &[u8], build: Option<QemuBuild>) -> Result<Destination, MachineError> {
        let alias = match name {
            b"pc" => Some(Chipset::I440fx),
            b"q35" => Some(Chipset::Q35),
            _ => None,
        };
        let machine = match alias {
            Some(c) => build.unwrap_or(QemuBuild::V10_0).newest(c),
            None => MachineType::parse(name)?,
        };
        Destination::for_machine(machine, build)
    }

    /// The configuration of every modelled device on this destination (module docs), with no
    /// ISA serial port configured (set [`PcConfig::serial_ports`] from `-serial`).
    pub const fn config(self) -> PcConfig {
        let m = self.machine;
        PcConfig {
            destination: self,
            hpet: hpet::HpetConfig {
                num_timers: hpet::MIN_TIMERS,
                intcap: match m.chipset {
                    Chipset::I440fx => 0x4,
                    Chipset::Q35 => 0xff_0104,
                },
                msi: false,
                offset_saved: !m.at_most(2, 11),
            },
            fw_cfg: fw_cfg::FwCfgConfig {
                file_slots: if m.at_most(2, 8) { 0x10 } else { 0x20 },
                dma_enabled: !m.at_most(2, 4),
                acpi_mr_restore: !m.at_most(4, 2),
                ..fw_cfg::FwCfgConfig::PC_7_2
            },
            serial_ports: 0,
            pcspk: !m.at_most(2, 7),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.machine, self.build)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    fn dest(name: &str, build: Option<&str>) -> Result<Destination, MachineError> {
        Destination::parse(name.as_bytes(), build.map(|b| QemuBuild::parse(b).unwrap()))
    }

    #[test]
    fn names_parse_and_print_as_qemu_spells_them() {
        for name in [
            "pc-i440fx-7.2",
            "pc-q35-7.2",
            "pc-i440fx-10.0",
            "pc-q35-10.0",
            "pc-q35-4.0.1",
            "pc-i440fx-2.4",
            "pc-i440fx-2.12",
        ] {
            let m = MachineType::parse(name.as_bytes()).unwrap();
            assert_eq!(m.to_string(), name);
        }
        for bad in [
            "pc",
            "q35",
            "microvm",
            "isapc",
            "none",
            "pc-i440fx-",
            "pc-i440fx-7",
            "pc-i440fx-7.",
            "pc-i440fx-07.2",
            "pc-i440fx-7.2.0.1",
            "pc-i440fx-7.2 ",
            "pc-q35-x.y",
            "pc-i440fx-100.0",
        ] {
            assert_eq!(
                MachineType::parse(bad.as_bytes()),
                Err(MachineError::NotPc),
                "{bad}"
            );
        }
    }

    #[test]
    fn aliases_name_the_newest_of_the_build_and_builds_default_to_the_newest() {
        let d = dest("pc", Some("7.2")).unwrap();
        assert_eq!(
            (d.machine, d.build),
            (MachineType::I440FX_7_2, QemuBuild::V7_2)
        );
        let d = dest("q35", None).unwrap();
        assert_eq!(
            (d.machine, d.build),
            (MachineType::Q35_10_0, QemuBuild::V10_0)
        );
        let d = dest("pc-q35-7.2", None).unwrap();
        assert_eq!(
            d.build,
            QemuBuild::V10_0,
            "7.2 machine types default to QEMU 10.0"
        );
        assert_eq!(d.to_string(), "pc-q35-7.2 on QEMU 10.0");
        assert_eq!(QemuBuild::parse("10"), None);
        assert_eq!(QemuBuild::parse("8.2"), None);
    }

    #[test]
    fn machine_types_a_build_lacks_or_too_old_are_refused_not_guessed() {
        let e = dest("pc-i440fx-10.0", Some("7.2")).unwrap_err();
        assert_eq!(e.to_string(), "QEMU 7.2 has no machine type pc-i440fx-10.0");
        let e = dest("pc-i440fx-2.0", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "pc-i440fx-2.0 is older than the oldest modelled machine type (2.4): its compat properties are not modelled"
        );
        let e = dest("pc-i440fx-2.0", Some("10.0")).unwrap_err();
        assert_eq!(e.to_string(), "QEMU 10.0 has no machine type pc-i440fx-2.0");
        for missing in [
            "pc-q35-2.3",
            "pc-i440fx-2.13",
            "pc-i440fx-3.2",
            "pc-i440fx-10.1",
            "pc-i440fx-4.0.1",
            "pc-q35-11.0",
        ] {
            assert!(
                matches!(dest(missing, None), Err(MachineError::NotInBuild { .. })),
                "{missing}"
            );
        }
        assert!(matches!(dest("microvm", None), Err(MachineError::NotPc)));
        // Every machine type both builds list in their sources (≥ 2.4) is a destination.
        for b in QemuBuild::ALL {
            let (bmaj, bmin) = b.version();
            let mut n = 0;
            for major in 2..=bmaj {
                for minor in 0..=12 {
                    for c in [Chipset::I440fx, Chipset::Q35] {
                        let m = MachineType::new(c, major, minor);
                        if (major, minor) >= (2, 4)
                            && (major, minor) <= (bmaj, bmin)
                            && b.defines(m)
                        {
                            Destination::new(m, b).unwrap();
                            n += 1;
                        }
                    }
                }
            }
            // 2.4–2.12, 3.0–3.1, 4.0–4.2, 5.x, 6.x, 7.x (+ 8.x, 9.x, 10.0) for both chipsets.
            assert_eq!(n, if b == QemuBuild::V7_2 { 2 * 23 } else { 2 * 30 }, "{b}");
        }
    }

    #[test]
    fn configuration_follows_the_machine_type() {
        let pc = Destination::parse(b"pc-i440fx-7.2", Some(QemuBuild::V7_2))
            .unwrap()
            .config();
        assert_eq!(pc.hpet, hpet::HpetConfig::PC_7_2);
        assert_eq!(pc.fw_cfg, fw_cfg::FwCfgConfig::PC_7_2);
        let q35 = dest("pc-q35-10.0", None).unwrap().config();
        assert_eq!(q35.hpet.intcap, 0xff_0104);
        assert_eq!(q35.hpet.timer_reset_config(), 0x00ff_0104_0000_0030);
        let old = dest("pc-i440fx-2.4", None).unwrap().config();
        assert_eq!(
            (
                old.fw_cfg.file_slots,
                old.fw_cfg.dma_enabled,
                old.fw_cfg.acpi_mr_restore
            ),
            (0x10, false, false)
        );
        assert!(!old.hpet.offset_saved && !old.pcspk);
        let c = dest("pc-q35-2.12", None).unwrap().config();
        assert!(c.hpet.offset_saved && c.pcspk && c.fw_cfg.dma_enabled);
        assert_eq!(
            (c.fw_cfg.file_slots, c.fw_cfg.acpi_mr_restore),
            (0x20, false)
        );
        assert!(
            dest("pc-i440fx-5.0", None)
                .unwrap()
                .config()
                .fw_cfg
                .acpi_mr_restore
        );
    }
}
