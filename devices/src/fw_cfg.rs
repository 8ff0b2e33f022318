//! Firmware configuration device (`fw_cfg`; the pc device is `fw_cfg_io`): QEMU 7.2
//! `hw/nvram/fw_cfg.c`, docs/V3-WIRE.md §16.9, invariants docs/UNTRUSTED-INPUT.md §4.7.
//!
//! Wire layout (version 2, minimum 1): `cur_entry` u16, then `cur_offset`: in a version-1 body a
//! be16 (QEMU's `VMSTATE_UINT16_HACK`, info `int32_as_uint16`, present only when the version is
//! 1), in a version-2 body a be32. They are two table fields with the same name and different
//! storage; the JSON calls them `cur_offset[0]` and `cur_offset[1]`. A post-load hook moves a v1
//! offset into the u32 so that a state loaded from either version reads and re-encodes the same.
//! Subsections: `fw_cfg/dma` (version **0**, `u64 dma_addr`, sent iff DMA is enabled) and
//! `fw_cfg/acpi_mr` (version 1, three u64 region sizes, sent iff `acpi-mr-restore` is on and a
//! size is not host-page aligned).
//!
//! The destination's configuration ([`FwCfgConfig`]: file slots, DMA, `acpi-mr-restore`, the
//! ACPI regions' maximum and current sizes) is stored after the wire fields by [`FwCfg::new`];
//! no table field covers it, so loads never change it and the checks can see it.
//!
//! Load rules (a rejected load leaves the state unchanged; "MUST" is class (a) of
//! docs/UNTRUSTED-INPUT.md §3.3, "should" class (c), rejected by default):
//!
//! | rule | class | error |
//! |---|---|---|
//! | `cur_entry == 0xffff` or `(cur_entry & 0x3fff) < 0x20 + file_slots` (0x40 on pc-7.2) | MUST | `Invalid { Below(limit), found: cur_entry & 0x3fff }`, field `cur_entry` |
//! | each ACPI region size ≤ the destination region's maximum | MUST | `Invalid { AtMost(max) }`, field `table_mr_size` / `linker_mr_size` / `rsdp_mr_size` |
//! | each ACPI region size equals the destination's (when configured, as on pc-7.2) | should | `Invalid { Equal(size) }`, same fields |
//!
//! Accepted: any `cur_offset` (bounded at use by the entry length), any `dma_addr`, the
//! write-channel and arch-local bits of `cur_entry`.

use vmstate::schema::{Field, Subsection, Vmsd};
use vmstate::{
    Expected, State, Violation, assert_layout, check, field, mutate, not_migrated, pred,
};
use zerocopy::byteorder::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `cur_entry` value meaning "no entry selected" (`FW_CFG_INVALID`).
pub const INVALID_ENTRY: u16 = 0xffff;
/// Bits of a key that index the entry table (`FW_CFG_ENTRY_MASK`).
pub const ENTRY_MASK: u16 = 0x3fff;
/// Entries before the file slots (`FW_CFG_FILE_FIRST`).
pub const FILE_FIRST: u16 = 0x20;
/// Host page size the `acpi_mr` needed test aligns to.
pub const HOST_PAGE_SIZE: u64 = 4096;

/// The destination's fw_cfg configuration, an input of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwCfgConfig {
    /// File slots (`x-file-slots`; 0x20 on pc-7.2): entries are `0x20 + file_slots`.
    pub file_slots: u16,
    /// DMA interface enabled (`dma_enabled`; on for pc).
    pub dma_enabled: bool,
    /// `acpi-mr-restore` (false on machines ≤ 4.2).
    pub acpi_mr_restore: bool,
    /// Maximum sizes of the table, linker and RSDP regions (QEMU `acpi_add_rom_blob`).
    pub acpi_mr_max: [u64; 3],
    /// The destination's own current sizes of those regions, if loads must match them exactly.
    pub acpi_mr_sizes: Option<[u64; 3]>,
}

impl FwCfgConfig {
    /// `pc-i440fx-7.2` as in the fixtures: 0x20 file slots, DMA on, `acpi-mr-restore` on,
    /// region maxima 2 MiB / 64 KiB / 4 KiB, current sizes 0x20000 / 0x1000 / 0x14.
    pub const PC_7_2: FwCfgConfig = FwCfgConfig {
        file_slots: 0x20,
        dma_enabled: true,
        acpi_mr_restore: true,
        acpi_mr_max: [0x20_0000, 0x1_0000, 0x1000],
        acpi_mr_sizes: Some([0x2_0000, 0x1000, 0x14]),
    };

    /// One past the largest valid entry index.
    pub const fn max_entry(&self) -> u32 {
        FILE_FIRST as u32 + self.file_slots as u32
    }
}

impl Default for FwCfgConfig {
    fn default() -> Self {
        FwCfgConfig::PC_7_2
    }
}

/// fw_cfg's migrated state plus the destination configuration (not on the wire).
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct FwCfg {
    /// Selected key (`FW_CFG_INVALID` when none).
    pub cur_entry: U16,
    // Storage of the v1-only be16 `cur_offset`; moved into `cur_offset` after a v1 load.
    cur_offset_v1: U16,
    /// Read offset into the selected entry.
    pub cur_offset: U32,
    /// DMA descriptor address (subsection `fw_cfg/dma`).
    pub dma_addr: U64,
    /// ACPI tables region size (subsection `fw_cfg/acpi_mr`).
    pub table_mr_size: U64,
    /// ACPI linker/loader region size.
    pub linker_mr_size: U64,
    /// ACPI RSDP region size.
    pub rsdp_mr_size: U64,
    // Destination configuration: no table field covers these bytes.
    dest_file_slots: U16,
    dest_dma_enabled: u8,
    dest_acpi_mr_restore: u8,
    dest_acpi_mr_max: [U64; 3],
    dest_acpi_mr_exact: u8,
    dest_acpi_mr_sizes: [U64; 3],
}

const SIZE: usize = core::mem::size_of::<FwCfg>();

impl FwCfg {
    /// A reset fw_cfg (`fw_cfg_reset` selects the signature entry, key 0) with configuration
    /// `cfg`; the ACPI sizes are the configured current sizes (zero if not configured).
    pub fn new(cfg: FwCfgConfig) -> FwCfg {
        let mut s = FwCfg::new_zeroed();
        let sizes = cfg.acpi_mr_sizes.unwrap_or([0; 3]);
        s.table_mr_size = sizes[0].into();
        s.linker_mr_size = sizes[1].into();
        s.rsdp_mr_size = sizes[2].into();
        s.dest_file_slots = cfg.file_slots.into();
        s.dest_dma_enabled = cfg.dma_enabled as u8;
        s.dest_acpi_mr_restore = cfg.acpi_mr_restore as u8;
        s.dest_acpi_mr_max = cfg.acpi_mr_max.map(U64::new);
        s.dest_acpi_mr_exact = cfg.acpi_mr_sizes.is_some() as u8;
        s.dest_acpi_mr_sizes = sizes.map(U64::new);
        s
    }

    /// The destination configuration this state was made with.
    pub fn dest_config(&self) -> FwCfgConfig {
        FwCfgConfig {
            file_slots: self.dest_file_slots.get(),
            dma_enabled: self.dest_dma_enabled != 0,
            acpi_mr_restore: self.dest_acpi_mr_restore != 0,
            acpi_mr_max: self.dest_acpi_mr_max.map(|v| v.get()),
            acpi_mr_sizes: (self.dest_acpi_mr_exact != 0)
                .then(|| self.dest_acpi_mr_sizes.map(|v| v.get())),
        }
    }

    /// The entry-table index `cur_entry` selects, or `None` when no entry is selected.
    pub fn entry_index(&self) -> Option<u16> {
        let e = self.cur_entry.get();
        (e != INVALID_ENTRY).then_some(e & ENTRY_MASK)
    }

    /// The three ACPI region sizes (table, linker, RSDP).
    pub fn acpi_mr_sizes(&self) -> [u64; 3] {
        [
            self.table_mr_size.get(),
            self.linker_mr_size.get(),
            self.rsdp_mr_size.get(),
        ]
    }

    /// The `cur_entry` rule (module docs).
    pub fn check(&self) -> Result<(), Violation> {
        // CVE-2013-6399 class (a stream-selected index used by later guest accesses):
        // `fw_cfg_data_read` indexes `entries[arch][cur_entry & 0x3fff]`, and the load path,
        // unlike the guest's select path, never maps an out-of-range key to FW_CFG_INVALID.
        let e = self.cur_entry.get();
        let limit = self.dest_config().max_entry();
        if e != INVALID_ENTRY && (e & ENTRY_MASK) as u32 >= limit {
            return Err(Violation {
                field: "cur_entry",
                expected: Expected::Below(limit as u64),
                found: (e & ENTRY_MASK) as u64,
            });
        }
        Ok(())
    }

    /// The ACPI region size rules (module docs), checked when `fw_cfg/acpi_mr` was loaded.
    pub fn check_acpi_mr(&self) -> Result<(), Violation> {
        const NAMES: [&str; 3] = ["table_mr_size", "linker_mr_size", "rsdp_mr_size"];
        let cfg = self.dest_config();
        for (i, size) in self.acpi_mr_sizes().into_iter().enumerate() {
            // CVE-2014-0182 class (a stream length beyond the destination's allocation): QEMU's
            // post_load resizes the region with &error_abort, so a size above the region's
            // maximum aborts the destination process.
            if size > cfg.acpi_mr_max[i] {
                return Err(Violation {
                    field: NAMES[i],
                    expected: Expected::AtMost(cfg.acpi_mr_max[i]),
                    found: size,
                });
            }
            // Should reject (class c, no CVE): tables of another size than the destination
            // built.
            if let Some(sizes) = cfg.acpi_mr_sizes
                && size != sizes[i]
            {
                return Err(Violation {
                    field: NAMES[i],
                    expected: Expected::Equal(sizes[i]),
                    found: size,
                });
            }
        }
        Ok(())
    }
}

/// Present only in version-1 bodies (QEMU's `is_version_1`).
fn is_version_1(_state: &[u8], version: u32) -> bool {
    version == 1
}

/// After a v1 load, the be16 offset becomes the current u32 one. The v1 storage then mirrors
/// the offset's low 16 bits (what QEMU's `int32_as_uint16` writes), so a loaded state encodes
/// as a version-1 body too instead of sending offset 0.
fn post_load(state: &mut [u8], version: u32) {
    if let Ok((s, _)) = FwCfg::mut_from_prefix(state) {
        if version == 1 {
            s.cur_offset = u32::from(s.cur_offset_v1.get()).into();
        }
        s.cur_offset_v1 = (s.cur_offset.get() as u16).into();
    }
}

const DMA_VMSD: Vmsd = Vmsd::new("fw_cfg/dma", 0, 0, SIZE).fields(&[field!(FwCfg, dma_addr)]);

const ACPI_MR_VMSD: Vmsd = Vmsd::new("fw_cfg/acpi_mr", 1, 1, SIZE)
    .fields(&[
        field!(FwCfg, table_mr_size),
        field!(FwCfg, linker_mr_size),
        field!(FwCfg, rsdp_mr_size),
    ])
    .validate(check!(FwCfg, |s, _v| s.check_acpi_mr()));

const FIELDS: &[Field] = &[
    field!(FwCfg, cur_entry),
    field!(FwCfg, cur_offset_v1)
        .named("cur_offset")
        .exists(is_version_1)
        .json_type("int32_as_uint16"),
    field!(FwCfg, cur_offset).since(2),
];

/// `fw_cfg` description (version 2, minimum 1).
pub const VMSD: Vmsd = Vmsd::new("fw_cfg", 2, 1, SIZE)
    .fields(FIELDS)
    .subsections(&[
        Subsection::new(&DMA_VMSD, pred!(FwCfg, |s| s.dest_dma_enabled != 0))
            .absent(mutate!(FwCfg, |s| s.dma_addr = 0.into())),
        Subsection::new(
            &ACPI_MR_VMSD,
            pred!(FwCfg, |s| s.dest_acpi_mr_restore != 0
                && s.acpi_mr_sizes().iter().any(|v| v % HOST_PAGE_SIZE != 0)),
        )
        // Absent: the destination keeps its own regions (its configured sizes, if known).
        .absent(mutate!(FwCfg, |s| if s.dest_acpi_mr_exact != 0 {
            s.table_mr_size = s.dest_acpi_mr_sizes[0];
            s.linker_mr_size = s.dest_acpi_mr_sizes[1];
            s.rsdp_mr_size = s.dest_acpi_mr_sizes[2];
        })),
    ])
    .pre_load(mutate!(FwCfg, |s| s.cur_offset_v1 = 0.into()))
    .validate(check!(FwCfg, |s, _v| s.check()))
    .post_load(post_load)
    .not_migrated(&[
        not_migrated!(FwCfg, dest_file_slots),
        not_migrated!(FwCfg, dest_dma_enabled),
        not_migrated!(FwCfg, dest_acpi_mr_restore),
        not_migrated!(FwCfg, dest_acpi_mr_max),
        not_migrated!(FwCfg, dest_acpi_mr_exact),
        not_migrated!(FwCfg, dest_acpi_mr_sizes),
    ]);
assert_layout!(FwCfg, VMSD);

impl State for FwCfg {
    const VMSD: &'static Vmsd = &VMSD;
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixtures::{ALL_STREAMS, BIOS, NODEFAULTS, body_of, section};
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;
    use vmstate::{Error, ErrorKind, load};

    fn analyze(s: &FwCfg) -> String {
        format!(
            "{{\"cur_entry\":\"0x{:04x}\",\"cur_offset[1]\":\"0x{:08x}\",\
             \"fw_cfg/dma\":{{\"dma_addr\":\"0x{:016x}\"}},\
             \"fw_cfg/acpi_mr\":{{\"table_mr_size\":\"0x{:016x}\",\
             \"linker_mr_size\":\"0x{:016x}\",\"rsdp_mr_size\":\"0x{:016x}\"}}}}",
            s.cur_entry.get(),
            s.cur_offset.get(),
            s.dma_addr.get(),
            s.table_mr_size.get(),
            s.linker_mr_size.get(),
            s.rsdp_mr_size.get()
        )
    }

    /// A live destination: a rejected load must leave it as it was.
    fn load_err(body: &[u8], version: u32) -> Error {
        let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
        s.cur_entry = 5.into();
        fixtures::load_err(s, version, body)
    }

    #[test]
    fn real_sections_decode_reencode_and_describe_like_qemu() {
        for (stream, state_json) in ALL_STREAMS {
            let rec = section(stream, "fw_cfg", 0);
            assert_eq!((rec.version_id, rec.body.len()), (2, 74));
            let mut init = FwCfg::new(FwCfgConfig::PC_7_2);
            init.cur_entry = INVALID_ENTRY.into(); // a live value the load replaces
            let s = fixtures::round_trip(stream, "fw_cfg", 0, init);
            fixtures::describes_like_qemu(stream, state_json, "fw_cfg", &s, &analyze(&s));
        }
        // The bios run left an entry selected mid-read.
        let rec = section(BIOS, "fw_cfg", 0);
        let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
        vmstate::load_record(&mut s, &rec).unwrap();
        assert_eq!((s.entry_index(), s.cur_offset.get()), (Some(0x0e), 2));
    }

    #[test]
    fn v1_body_reads_a_be16_offset() {
        let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
        load(&mut s, 1, &[0x00, 0x19, 0xab, 0xcd], 0).expect("v1 loads");
        assert_eq!((s.cur_entry.get(), s.cur_offset.get()), (0x19, 0xabcd));
        // Written back as v2 with a be32 offset.
        assert_eq!(&body_of(&s)[..6], &[0x00, 0x19, 0, 0, 0xab, 0xcd]);
        // Same state as the equivalent v2 body.
        let mut t = FwCfg::new(FwCfgConfig::PC_7_2);
        load(&mut t, 2, &body_of(&s), 0).unwrap();
        assert_eq!(t, s);
        // Every prefix of the v1 body is incomplete.
        for n in 0..4 {
            assert!(load_err(&[0x00, 0x19, 0xab, 0xcd][..n], 1).is_incomplete());
        }
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let body = section(BIOS, "fw_cfg", 0).body;
        // Complete shorter bodies: fields only (6) and fields + fw_cfg/dma (30); the absent
        // subsections take their defaults.
        let mut ok = Vec::new();
        for n in 0..body.len() {
            let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
            match load(&mut s, 2, &body[..n], 0) {
                Ok(()) => ok.push(n),
                Err(e) => assert!(
                    e.is_incomplete() || matches!(e.kind, ErrorKind::MissingFooter { found: 5 }),
                    "{n}: {e:?}"
                ),
            }
        }
        assert_eq!(ok, [6, 30]);
    }

    #[test]
    fn cur_entry_outside_the_table_is_rejected() {
        let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
        s.cur_entry = 0.into();
        let good = body_of(&s);
        for (key, index) in [
            (0x40u16, 0x40u64),
            (0x3fff, 0x3fff),
            (0x8040, 0x40),
            (0x7fff, 0x3fff),
        ] {
            let mut b = good.clone();
            b[..2].copy_from_slice(&key.to_be_bytes());
            let e = load_err(&b, 2);
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::Below(0x40),
                        found: index
                    },
                    Some("cur_entry"),
                    1000
                ),
                "{key:#x}"
            );
        }
        // Accepted: no entry, the last file slot, and the write/arch bits over a valid index.
        for key in [0xffffu16, 0x3f, 0x4019, 0x8000, 0xc03f] {
            let mut b = good.clone();
            b[..2].copy_from_slice(&key.to_be_bytes());
            let mut d = FwCfg::new(FwCfgConfig::PC_7_2);
            load(&mut d, 2, &b, 0).expect("valid key");
            assert_eq!(d.cur_entry.get(), key);
        }
        // More file slots, a larger table.
        let mut d = FwCfg::new(FwCfgConfig {
            file_slots: 0x100,
            ..FwCfgConfig::PC_7_2
        });
        let mut b = good.clone();
        b[..2].copy_from_slice(&0x11fu16.to_be_bytes());
        load(&mut d, 2, &b, 0).unwrap();
    }

    #[test]
    fn acpi_region_sizes_are_bounded_and_must_match() {
        let rec = section(NODEFAULTS, "fw_cfg", 0);
        let acpi = 30 + 1 + 1 + 14 + 4; // acpi_mr body start
        let mut b = rec.body.to_vec();
        b[acpi..acpi + 8].copy_from_slice(&0x20_0001u64.to_be_bytes());
        let e = load_err(&b, 2);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::AtMost(0x20_0000),
                    found: 0x20_0001
                },
                Some("table_mr_size"),
                1000 + acpi
            )
        );
        let mut b = rec.body.to_vec();
        b[acpi + 16..acpi + 24].copy_from_slice(&u64::MAX.to_be_bytes());
        let e = load_err(&b, 2);
        assert_eq!(
            (e.field, e.offset),
            (Some("rsdp_mr_size"), 1000 + acpi + 16)
        );
        // Within the maximum but not the destination's size: rejected by default...
        let mut b = rec.body.to_vec();
        b[acpi + 8..acpi + 16].copy_from_slice(&0x2000u64.to_be_bytes());
        let e = load_err(&b, 2);
        assert_eq!(
            (e.kind, e.field),
            (
                ErrorKind::Invalid {
                    expected: Expected::Equal(0x1000),
                    found: 0x2000
                },
                Some("linker_mr_size")
            )
        );
        // ...and accepted by a destination that does not pin its sizes.
        let mut d = FwCfg::new(FwCfgConfig {
            acpi_mr_sizes: None,
            ..FwCfgConfig::PC_7_2
        });
        load(&mut d, 2, &b, 0).unwrap();
        assert_eq!(d.acpi_mr_sizes(), [0x2_0000, 0x2000, 0x14]);
    }

    #[test]
    fn subsections_follow_the_configuration() {
        let mut s = FwCfg::new(FwCfgConfig {
            dma_enabled: false,
            acpi_mr_restore: false,
            ..FwCfgConfig::PC_7_2
        });
        s.cur_entry = 0x19.into();
        s.cur_offset = u32::MAX.into(); // any offset: bounded at use
        assert_eq!(body_of(&s), [0, 0x19, 0xff, 0xff, 0xff, 0xff]);
        // Page-aligned sizes are not sent either.
        let mut s = FwCfg::new(FwCfgConfig {
            acpi_mr_sizes: Some([0x2_0000, 0x1000, 0x1000]),
            ..FwCfgConfig::PC_7_2
        });
        s.dma_addr = 0x1234.into();
        let b = body_of(&s);
        assert_eq!(
            &b[6..],
            b"\x05\x0afw_cfg/dma\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x12\x34"
        );
        // A destination with old values: absent subsections reset them.
        let mut d = FwCfg::new(FwCfgConfig::PC_7_2);
        d.dma_addr = 99.into();
        d.table_mr_size = 0.into();
        load(&mut d, 2, &[0, 0, 0, 0, 0, 0], 0).unwrap();
        assert_eq!(d, FwCfg::new(FwCfgConfig::PC_7_2));
    }

    /// Fuzz regression (`fuzz/corpus/device_section/crash-fw_cfg-v1-offset`): a version-1 body
    /// loaded and encoded again as version 1 lost its 16-bit offset (the v1 storage was zeroed
    /// after the load, so the encoder sent 0).
    #[test]
    fn v1_body_reencodes_as_v1() {
        let body = [0x00, 0x01, 0x01, 0x00];
        let mut s = FwCfg::new(FwCfgConfig::PC_7_2);
        load(&mut s, 1, &body, 0).unwrap();
        assert_eq!((s.cur_entry.get(), s.cur_offset.get()), (1, 0x100));
        let mut buf = [0xa5u8; 256];
        let mut sink = vmstate::SliceSink::new(&mut buf);
        vmstate::body::encode_body_v(&VMSD, 1, s.as_bytes(), &mut sink).unwrap();
        let n = sink.finish();
        assert_eq!(&buf[..4], &body, "the v1 fields come back");
        let mut again = FwCfg::new(FwCfgConfig::PC_7_2);
        load(&mut again, 1, &buf[..n], 0).unwrap();
        assert_eq!(again, s);
    }
}
