//! Migratability: what a destination supports ([`Capabilities`]), what a stream or a live
//! device set requires ([`SectionRequirement`]), and [`check`], which lists every
//! incompatibility before any byte of state is sent (`docs/FORMAT.md` §11).
//!
//! [`Capabilities`] is a serde type meant to be exchanged with postcard
//! (`postcard::to_slice` / `postcard::from_bytes`): names are borrowed from the encoded bytes and
//! lists are `heapless` vectors whose capacities are const parameters, so nothing allocates.
//! The serde derives and the postcard encoding (`Capabilities::to_postcard`,
//! `Capabilities::from_postcard`, `CapsDecodeError`) need the crate feature `caps` (on by
//! default); without it neither serde nor postcard is built, and [`check`] still decides
//! migratability from capabilities built in code ([`Capabilities::add_vmsd`]).
//!
//! The rules, for each section the source will send:
//! * the destination must speak protocol 4 (or 3, for a stream [`downgrade`](super::convert)
//!   can convert);
//! * it must know the device (by vmsd name, the idstr without a qdev path) and accept its
//!   version;
//! * for every vendor level `L` whose minor `m` is not 0, the destination's vendor at level `L`
//!   must be the stream's and its `max_minor` for the device at `L` must be at least `m`: a
//!   different vendor at that level supports minor 0 only. The incompatibility names the
//!   vendor subsection (feature) that raised the minor;
//! * every must-understand subsection must be known to the destination; unknown skippable
//!   subsections are fine.

use super::wire::{Record4, Records4, Section, Vendor};
use super::{MAX_LEVELS, Minors, Result};
use crate::SectionId;
use crate::schema::{MAX_SUBSECTIONS, VendorId, VendorTag, Vmsd};
use crate::stream::idstr_matches;
use core::fmt;
#[cfg(feature = "caps")]
use serde::{Deserialize, Serialize};

/// Default device capacity of [`Capabilities`]: a firmware's device set. A host tool describing
/// a whole QEMU machine names bigger capacities (the CLI uses 1024 devices and 4096
/// subsections).
pub const MAX_DEVICES: usize = 32;
/// Default known-subsection capacity of [`Capabilities`].
pub const MAX_KNOWN_SUBSECTIONS: usize = 64;
/// Most protocol versions a capabilities record lists.
pub const MAX_PROTOCOLS: usize = 4;

/// What a destination build can load, per device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "caps", derive(Serialize, Deserialize))]
pub struct DeviceCaps<'a> {
    /// The vmsd name (`mc146818rtc`).
    pub name: &'a str,
    /// Oldest section version accepted.
    pub min_version: u32,
    /// Newest section version accepted.
    pub max_version: u32,
    /// Highest minor accepted per vendor level (index 0 = level 1); missing entries are 0.
    pub max_minor: heapless::Vec<u16, MAX_LEVELS>,
}

/// What a destination build supports, exchanged before migration.
///
/// It holds its lists inline: `D` devices (48 bytes each on 64-bit targets, 36 on 32-bit) and
/// `K` subsection names (16 bytes each, 8 on 32-bit). With the default parameters it is
/// 2,736 bytes on 64-bit targets and 1,760 on 32-bit ([`crate::sizes`]); it was 10,416 with the
/// earlier defaults of 128 devices and 256 subsections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "caps", derive(Serialize, Deserialize))]
pub struct Capabilities<'a, const D: usize = MAX_DEVICES, const K: usize = MAX_KNOWN_SUBSECTIONS> {
    /// Savevm protocol versions accepted (3, 4).
    pub protocols: heapless::Vec<u32, MAX_PROTOCOLS>,
    /// The destination's vendor chain, level 1 first.
    #[cfg_attr(feature = "caps", serde(borrow))]
    pub vendors: heapless::Vec<VendorId<'a>, MAX_LEVELS>,
    /// Devices.
    #[cfg_attr(feature = "caps", serde(borrow))]
    pub devices: heapless::Vec<DeviceCaps<'a>, D>,
    /// Full names of every subsection the destination can load (`mc146818rtc/td_hack`).
    #[cfg_attr(feature = "caps", serde(borrow))]
    pub subsections: heapless::Vec<&'a str, K>,
}

/// A capabilities list is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full {
    /// Which list: `"protocols"`, `"vendors"`, `"devices"`, `"subsections"`, `"max_minor"`.
    pub list: &'static str,
}

/// Why [`Capabilities::add_vmsd`] refused a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AddError {
    /// A list is full.
    Full(Full),
    /// A vendor tag names a level outside the capabilities' vendor chain
    /// ([`crate::ErrorKind::VendorLevel`], naming the device and the subsection).
    VendorLevel(crate::Error),
}

impl From<Full> for AddError {
    fn from(f: Full) -> Self {
        AddError::Full(f)
    }
}

impl core::fmt::Display for AddError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AddError::Full(full) => write!(f, "capabilities: too many {}", full.list),
            AddError::VendorLevel(e) => write!(f, "capabilities: {e}"),
        }
    }
}

impl core::error::Error for AddError {}

/// Capabilities bytes that do not decode: where the decoder stopped, and why.
#[cfg(feature = "caps")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsDecodeError {
    /// Byte offset into the capabilities bytes at which decoding stopped.
    pub offset: usize,
    /// postcard's reason (e.g. "Hit the end of buffer").
    pub error: postcard::Error,
}

#[cfg(feature = "caps")]
impl core::fmt::Display for CapsDecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "capabilities: at byte {} (0x{:x}): {}",
            self.offset, self.offset, self.error
        )
    }
}

#[cfg(feature = "caps")]
impl core::error::Error for CapsDecodeError {}

impl<'a, const D: usize, const K: usize> Capabilities<'a, D, K> {
    /// Empty capabilities speaking `protocols` with the vendor chain `vendors`.
    pub fn new(protocols: &[u32], vendors: &[VendorId<'a>]) -> core::result::Result<Self, Full> {
        let mut c = Capabilities {
            protocols: heapless::Vec::new(),
            vendors: heapless::Vec::new(),
            devices: heapless::Vec::new(),
            subsections: heapless::Vec::new(),
        };
        for &p in protocols {
            c.protocols
                .push(p)
                .map_err(|_| Full { list: "protocols" })?;
        }
        for &v in vendors {
            c.vendors.push(v).map_err(|_| Full { list: "vendors" })?;
        }
        Ok(c)
    }

    /// Adds a device from its description table: versions from the table, `max_minor` per
    /// level from its vendor-tagged subsections, and every subsection name (top level).
    ///
    /// A vendor tag must name a level of this build's vendor chain (`1..=vendors.len()`), as
    /// when writing a stream ([`super::minor::section_minors`]): level 0 or a level above the
    /// chain is [`AddError::VendorLevel`], and nothing is added; so is a tag that names its
    /// vendor ([`crate::Subsection::feature_of`]) when the chain has another vendor at its level
    /// ([`crate::ErrorKind::VendorMismatch`]).
    pub fn add_vmsd(&mut self, vmsd: &'a Vmsd) -> core::result::Result<(), AddError> {
        let device = crate::machine::ctx(vmsd.name.as_bytes(), 0, 0);
        super::minor::check_tags(vmsd, &self.vendors)
            .map_err(|e| AddError::VendorLevel(e.in_section(device)))?;
        // As many entries as the highest tagged level (levels in range: checked above).
        let mut max_minor: heapless::Vec<u16, MAX_LEVELS> = heapless::Vec::new();
        for t in vmsd.subsections.iter().filter_map(|s| s.vendor) {
            let i = (t.level as usize).saturating_sub(1);
            while max_minor.len() <= i && max_minor.push(0).is_ok() {}
            if let Some(m) = max_minor.get_mut(i) {
                *m = t.minor.max(*m);
            }
        }
        let before = self.subsections.len();
        for sub in vmsd.subsections {
            if self.subsections.push(sub.vmsd.name).is_err() {
                self.subsections.truncate(before);
                return Err(Full {
                    list: "subsections",
                }
                .into());
            }
        }
        self.devices
            .push(DeviceCaps {
                name: vmsd.name,
                min_version: vmsd.minimum_version_id,
                max_version: vmsd.version_id,
                max_minor,
            })
            .map_err(|_| {
                self.subsections.truncate(before);
                Full { list: "devices" }.into()
            })
    }

    /// Adds a device by hand (`max_minor[i]` is the highest minor accepted at level `i + 1`).
    pub fn add_device(
        &mut self,
        name: &'a str,
        min_version: u32,
        max_version: u32,
        max_minor: &[u16],
    ) -> core::result::Result<(), Full> {
        let mut mm = heapless::Vec::new();
        for &m in max_minor {
            mm.push(m).map_err(|_| Full { list: "max_minor" })?;
        }
        self.devices
            .push(DeviceCaps {
                name,
                min_version,
                max_version,
                max_minor: mm,
            })
            .map_err(|_| Full { list: "devices" })
    }

    /// Adds a known subsection name.
    pub fn add_subsection(&mut self, name: &'a str) -> core::result::Result<(), Full> {
        if self.knows_subsection(name.as_bytes()) {
            return Ok(());
        }
        self.subsections.push(name).map_err(|_| Full {
            list: "subsections",
        })
    }

    /// Encodes with postcard into `buf`, returning the used part.
    #[cfg(feature = "caps")]
    pub fn to_postcard<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> core::result::Result<&'b mut [u8], postcard::Error> {
        postcard::to_slice(self, buf)
    }

    /// Decodes from postcard bytes (names borrow from `bytes`). The error says at which byte
    /// the decoder stopped.
    #[cfg(feature = "caps")]
    pub fn from_postcard(bytes: &'a [u8]) -> core::result::Result<Self, CapsDecodeError> {
        use serde::Deserialize;
        let mut de = postcard::Deserializer::from_bytes(bytes);
        Self::deserialize(&mut de).map_err(|error| CapsDecodeError {
            // The slice flavor's remainder cannot fail; where it stopped is the offset.
            offset: de
                .finalize()
                .map_or(0, |rest| bytes.len().saturating_sub(rest.len())),
            error,
        })
    }

    /// The entry for a section idstr (exact vmsd name, or `path/` + name).
    pub fn device(&self, idstr: &[u8]) -> Option<&DeviceCaps<'a>> {
        self.devices.iter().find(|d| idstr_matches(idstr, d.name))
    }

    /// Whether the destination can load a subsection of this full name.
    pub fn knows_subsection(&self, name: &[u8]) -> bool {
        self.subsections.iter().any(|s| s.as_bytes() == name)
    }
}

/// One subsection a section will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubsectionRequirement<'a> {
    /// Full name.
    pub name: &'a [u8],
    /// Version.
    pub version: u32,
    /// Whether a destination that does not know it must refuse.
    pub must_understand: bool,
    /// Vendor tag, for vendor features.
    pub vendor: Option<VendorTag>,
}

/// What one section needs from the destination.
///
/// 1,080 bytes on 64-bit targets, 680 on 32-bit ([`crate::sizes`]): it has room for every
/// top-level subsection one section may carry ([`MAX_SUBSECTIONS`], 32 of 32 bytes each on
/// 64-bit), so no stream the format allows is refused for want of room. Build one per section
/// and drop it after [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRequirement<'a> {
    /// idstr.
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
    /// Version.
    pub version_id: u32,
    /// Minor per vendor level.
    pub minors: Minors,
    /// Top-level subsections the section carries.
    pub subsections: heapless::Vec<SubsectionRequirement<'a>, MAX_SUBSECTIONS>,
}

impl<'a> SectionRequirement<'a> {
    /// From a v4 section record (headers and subsection frames only; no body is decoded).
    pub fn from_section(s: &Section<'a>) -> Result<Self> {
        let mut subsections = heapless::Vec::new();
        for sub in s.subsections() {
            let sub = sub?;
            subsections
                .push(SubsectionRequirement {
                    name: sub.name,
                    version: sub.version,
                    must_understand: sub.must_understand(),
                    vendor: sub.vendor,
                })
                .map_err(|_| {
                    crate::Error::new(
                        sub.offset,
                        crate::ErrorKind::TooManySubsections {
                            limit: MAX_SUBSECTIONS as u16,
                        },
                    )
                    .in_section(s.context())
                })?;
        }
        Ok(SectionRequirement {
            idstr: s.idstr,
            instance_id: s.instance_id,
            version_id: s.version_id,
            minors: s.minors.clone(),
            subsections,
        })
    }

    /// From a live device: what encoding `state` with `vmsd` in a stream whose header has the
    /// vendor chain `vendors` would need (minors from the needed vendor subsections). The
    /// table's tags are checked against the chain first, as the writer checks them
    /// ([`super::minor::check_tags`]): a tag whose level is outside the chain, or that names
    /// another vendor than the chain has at its level, is an error naming the subsection, so a
    /// feature is never credited to the wrong vendor. Nothing is encoded.
    pub fn from_state(
        id: SectionId<'a>,
        vmsd: &'a Vmsd,
        state: &[u8],
        vendors: &[Vendor<'_>],
    ) -> Result<Self> {
        let in_section = |e: crate::Error| {
            e.in_section(crate::machine::ctx(id.idstr, id.instance_id, id.section_id))
        };
        let chain: heapless::Vec<VendorId<'_>, MAX_LEVELS> =
            vendors.iter().take(MAX_LEVELS).map(|v| v.id).collect();
        if vendors.len() > MAX_LEVELS {
            return Err(super::Error::TooManyLevels {
                offset: 0,
                found: u8::try_from(vendors.len()).unwrap_or(u8::MAX),
            });
        }
        super::minor::check_tags(vmsd, &chain).map_err(in_section)?;
        let minors = super::minor::section_minors(vmsd, state, chain.len()).map_err(in_section)?;
        let mut subsections = heapless::Vec::new();
        for sub in vmsd.subsections {
            if sub.needed.is_none_or(|needed| needed(state)) {
                // Cannot overflow: Vmsd::check bounds subsections by MAX_SUBSECTIONS.
                let _ = subsections.push(SubsectionRequirement {
                    name: sub.vmsd.name.as_bytes(),
                    version: sub.vmsd.version_id,
                    must_understand: sub.vendor.is_none_or(|t| t.must_understand),
                    vendor: sub.vendor,
                });
            }
        }
        Ok(SectionRequirement {
            idstr: id.idstr,
            instance_id: id.instance_id,
            version_id: vmsd.version_id,
            minors,
            subsections,
        })
    }

    fn minor(&self, level: u8) -> u16 {
        (level as usize)
            .checked_sub(1)
            .and_then(|i| self.minors.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// One reason a stream cannot go to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incompatibility<'a> {
    /// The destination speaks neither protocol 4 nor 3.
    Protocol {
        /// The stream's protocol.
        version: u32,
    },
    /// The destination has no such device.
    UnknownDevice {
        /// idstr.
        idstr: &'a [u8],
        /// Instance id.
        instance_id: u32,
    },
    /// The section's version is outside what the destination accepts.
    Version {
        /// idstr.
        idstr: &'a [u8],
        /// Instance id.
        instance_id: u32,
        /// The stream's version.
        found: u32,
        /// Oldest accepted.
        min: u32,
        /// Newest accepted.
        max: u32,
    },
    /// A vendor minor above what the destination supports at that level.
    Minor {
        /// idstr.
        idstr: &'a [u8],
        /// Instance id.
        instance_id: u32,
        /// Vendor level (1-based).
        level: u8,
        /// The stream's vendor at that level.
        vendor: &'a [u8],
        /// The destination's vendor at that level, if it has one.
        dest_vendor: Option<&'a [u8]>,
        /// Minor needed.
        needed: u16,
        /// Minor the destination supports for this device at that level.
        supported: u16,
        /// The vendor subsection (feature) needing it, if the stream names one.
        feature: Option<&'a [u8]>,
    },
    /// A must-understand subsection the destination does not know.
    UnknownSubsection {
        /// idstr.
        idstr: &'a [u8],
        /// Instance id.
        instance_id: u32,
        /// The subsection.
        subsection: &'a [u8],
        /// Its vendor tag, if any.
        vendor: Option<VendorTag>,
    },
}

fn name(b: &[u8]) -> crate::error::Escaped<'_> {
    crate::error::Escaped(b)
}

impl fmt::Display for Incompatibility<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Incompatibility::Protocol { version } => {
                write!(
                    f,
                    "destination does not speak savevm protocol {version} (nor 3)"
                )
            }
            Incompatibility::UnknownDevice { idstr, instance_id } => write!(
                f,
                "{} (instance {instance_id}): destination has no such device",
                name(idstr)
            ),
            Incompatibility::Version {
                idstr,
                instance_id,
                found,
                min,
                max,
            } => write!(
                f,
                "{} (instance {instance_id}): version {found} outside destination's \
                 {min}..={max}",
                name(idstr)
            ),
            Incompatibility::Minor {
                idstr,
                instance_id,
                level,
                vendor,
                dest_vendor,
                needed,
                supported,
                feature,
            } => {
                write!(
                    f,
                    "{} (instance {instance_id}): needs {} minor {needed} (vendor level {level})",
                    name(idstr),
                    name(vendor)
                )?;
                if let Some(s) = feature {
                    write!(f, " for subsection {}", name(s))?;
                }
                write!(f, "; destination supports minor {supported}")?;
                match dest_vendor {
                    Some(d) if d != vendor => {
                        write!(f, " (its vendor at level {level} is {})", name(d))
                    }
                    Some(_) => Ok(()),
                    None => write!(f, " (it has no vendor at level {level})"),
                }
            }
            Incompatibility::UnknownSubsection {
                idstr,
                instance_id,
                subsection,
                vendor,
            } => {
                write!(
                    f,
                    "{} (instance {instance_id}): destination does not know must-understand \
                     subsection {}",
                    name(idstr),
                    name(subsection)
                )?;
                if let Some(t) = vendor {
                    write!(f, " (vendor level {}, minor {})", t.level, t.minor)?;
                }
                Ok(())
            }
        }
    }
}

/// The incompatibilities found, kept in caller storage (`N` of them; `total` counts all).
///
/// `16 + 80 N` bytes on 64-bit targets, `8 + 44 N` on 32-bit (an [`Incompatibility`] is 80
/// bytes, 44); `Report<8>` is in [`crate::sizes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report<'a, const N: usize> {
    /// The first `N` incompatibilities.
    pub found: heapless::Vec<Incompatibility<'a>, N>,
    /// How many there were in all.
    pub total: usize,
}

impl<'a, const N: usize> Report<'a, N> {
    /// An empty report.
    pub fn new() -> Self {
        Report {
            found: heapless::Vec::new(),
            total: 0,
        }
    }

    /// Whether nothing stands in the way.
    pub fn is_compatible(&self) -> bool {
        self.total == 0
    }

    fn add(&mut self, i: Incompatibility<'a>) {
        self.total = self.total.saturating_add(1);
        let _ = self.found.push(i);
    }
}

/// Checks one section's requirement against `caps`, adding every incompatibility to `report`.
/// `vendors` is the source stream's vendor chain.
pub fn check<'a, const D: usize, const K: usize, const N: usize>(
    vendors: &[Vendor<'a>],
    req: &SectionRequirement<'a>,
    caps: &Capabilities<'a, D, K>,
    report: &mut Report<'a, N>,
) {
    let (idstr, instance_id) = (req.idstr, req.instance_id);
    let Some(dev) = caps.device(idstr) else {
        report.add(Incompatibility::UnknownDevice { idstr, instance_id });
        return;
    };
    if req.version_id < dev.min_version || req.version_id > dev.max_version {
        report.add(Incompatibility::Version {
            idstr,
            instance_id,
            found: req.version_id,
            min: dev.min_version,
            max: dev.max_version,
        });
    }
    // Bitmask of subsections already reported through a minor.
    let mut reported: u64 = 0;
    for (i, &needed) in req.minors.iter().enumerate() {
        if needed == 0 {
            continue;
        }
        let level = (i as u8).saturating_add(1);
        let vendor = vendors.get(i).map_or(&[][..], |v| v.id.as_bytes());
        let dest_vendor = caps.vendors.get(i).map(|v| v.as_bytes());
        let supported = if dest_vendor == Some(vendor) {
            dev.max_minor.get(i).copied().unwrap_or(0)
        } else {
            0
        };
        if needed <= supported {
            continue;
        }
        let mut named = false;
        for (j, sub) in req.subsections.iter().enumerate() {
            if let Some(t) = sub.vendor
                && t.level == level
                && t.minor > supported
            {
                named = true;
                reported |= 1 << j;
                report.add(Incompatibility::Minor {
                    idstr,
                    instance_id,
                    level,
                    vendor,
                    dest_vendor,
                    needed: t.minor,
                    supported,
                    feature: Some(sub.name),
                });
            }
        }
        if !named {
            report.add(Incompatibility::Minor {
                idstr,
                instance_id,
                level,
                vendor,
                dest_vendor,
                needed: req.minor(level),
                supported,
                feature: None,
            });
        }
    }
    for (j, sub) in req.subsections.iter().enumerate() {
        if reported & (1 << j) == 0 && sub.must_understand && !caps.knows_subsection(sub.name) {
            report.add(Incompatibility::UnknownSubsection {
                idstr,
                instance_id,
                subsection: sub.name,
                vendor: sub.vendor,
            });
        }
    }
}

/// Checks a whole v4 stream against `caps` from its headers (section headers and subsection
/// frames; checksums are verified, no body is decoded). PART/END records share their START's
/// requirement and are not checked again.
pub fn check_stream<'a, const D: usize, const K: usize, const N: usize>(
    v4: &'a [u8],
    caps: &Capabilities<'a, D, K>,
    report: &mut Report<'a, N>,
) -> Result<()> {
    let mut vendors = super::wire::VendorChain::new();
    for rec in Records4::new(v4) {
        match rec?.record {
            Record4::Header(h) => {
                if !caps.protocols.contains(&super::VERSION) && !caps.protocols.contains(&3) {
                    report.add(Incompatibility::Protocol {
                        version: super::VERSION,
                    });
                }
                vendors = h.vendors;
            }
            Record4::Section(s) if s.kind.has_full_header() => {
                check(
                    &vendors,
                    &SectionRequirement::from_section(&s)?,
                    caps,
                    report,
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// The sizes the rustdoc above states are the types' (the 32-bit ones are checked with the
/// table in [`crate::sizes`]).
#[cfg(all(test, target_pointer_width = "64"))]
#[test]
fn documented_sizes_are_current() {
    extern crate std;
    let documented = |n: usize| {
        include_str!("caps.rs").contains(&std::format!(
            "{},{:03} bytes on 64-bit targets",
            n / 1000,
            n % 1000
        ))
    };
    assert!(documented(core::mem::size_of::<SectionRequirement<'_>>()));
    assert!(documented(core::mem::size_of::<Capabilities<'_>>()));
    assert_eq!(core::mem::size_of::<Incompatibility<'_>>(), 80);
    assert_eq!(core::mem::size_of::<Report<'_, 3>>(), 16 + 80 * 3);
}

#[cfg(all(test, feature = "caps"))]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failed test"
)]
mod tests {
    use super::*;

    /// Every cut of a valid encoding names the byte where decoding stopped (the start of the
    /// item that does not fit, at most the end of what it was given: "Hit the end of
    /// buffer"), never an unplaced error.
    #[test]
    fn cut_capabilities_say_where_they_end() {
        let mut caps: Capabilities<'_, 4, 4> =
            Capabilities::new(&[3, 4], &[crate::VendorId::new("org.qemu")]).unwrap();
        caps.add_subsection("i8259/ltim").unwrap();
        let mut buf = [0u8; 256];
        let bytes = caps.to_postcard(&mut buf).unwrap();
        let back: Capabilities<'_, 4, 4> = Capabilities::from_postcard(bytes).unwrap();
        assert_eq!(back, caps);
        let mut last = 0;
        for cut in 0..bytes.len() {
            let e = Capabilities::<'_, 4, 4>::from_postcard(&bytes[..cut]).unwrap_err();
            assert_eq!(e.error, postcard::Error::DeserializeUnexpectedEnd, "{cut}");
            // Within what was given, and further along the more was given.
            assert!(e.offset <= cut && e.offset >= last, "{cut}: {e}");
            last = e.offset;
        }
        assert!(last > bytes.len() / 2, "{last} of {}", bytes.len());
        // A length that points past the end is reported where the decoder stood.
        let mut bad = [0u8; 64];
        let n = bytes.len();
        bad[..n].copy_from_slice(bytes);
        bad[0] = 0x7f;
        let e = Capabilities::<'_, 4, 4>::from_postcard(&bad[..n]).unwrap_err();
        assert!(e.offset <= n, "{e:?}");
    }
}
