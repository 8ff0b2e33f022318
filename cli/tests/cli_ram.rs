//! `vmstate ram`: guest RAM out of real streams, checked against `extract`'s block images
//! (another reader of the same records), the PC layout on a generated stream whose RAM is split
//! below and above 4 GiB, and the errors for what is not RAM or not in the stream.

mod support;

use support::{fixture, vmstate};

use std::path::{Path, PathBuf};
use vmstate::ram::{BlockEntry, PAGE_SIZE, RamWriter};
use vmstate::wire::config::Configuration;
use vmstate::wire::section::{SectionHeaderRepr, SectionKind};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The second-generation fixtures with every page in the stream (not the x-ignore-shared ones).
const STREAMS: &[&str] = &[
    "q72-pc-i440fx-7.2.vmstate",
    "q72-pc-q35-7.2.vmstate",
    "q10-pc-i440fx-10.0.vmstate",
    "q10-pc-q35-10.0.vmstate",
    "q10-pc-i440fx-7.2.vmstate",
    "q10-pc-q35-7.2.vmstate",
];

#[test]
fn every_block_reads_as_extract_writes_it_and_the_image_is_pc_ram_at_address_zero() {
    let dir = support::scratch("vmstate-ram");
    for name in STREAMS {
        let stream = fixture(name);
        let s = stream.to_str().unwrap();
        let out = dir.join(name);
        let o = vmstate(&["extract", s, out.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        let blocks = index["ram"]
            .as_array()
            .expect("index.json lists the RAM blocks");
        assert!(blocks.len() >= 4, "{name}: {index}");
        for b in blocks {
            let block = b["name"].as_str().unwrap();
            let image = std::fs::read(out.join(b["file"].as_str().unwrap())).unwrap();
            let len = image.len().to_string();
            let o = vmstate(&["ram", s, "--block", block, "--len", &len]);
            assert!(o.status.success(), "{name} {block}: {}", text(&o.stderr));
            assert!(
                o.stdout == image,
                "{name}: block {block} differs from extract's"
            );
            // A range inside it, across a page boundary.
            if image.len() > 3 * PAGE_SIZE {
                let o = vmstate(&[
                    "ram",
                    s,
                    "--block",
                    block,
                    "--block-offset",
                    "0x1ff8",
                    "--len",
                    "24",
                ]);
                assert_eq!(o.stdout, image[0x1ff8..0x2010], "{name} {block}");
            }
        }
        // The image: pc.ram at guest-physical 0 (32 MiB guests: no split), sparse.
        let flat = dir.join(format!("{name}.img"));
        let o = vmstate(&["ram", s, "--image", flat.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let pc_ram = std::fs::read(out.join("ram/pc.ram.bin")).unwrap();
        let img = std::fs::read(&flat).unwrap();
        assert_eq!(img.len(), 32 << 20, "{name}");
        assert!(img == pc_ram, "{name}: the image is pc.ram");
        // And one address, as a hexdump: the BIOS's reset vector as SeaBIOS left it shadowed
        // in RAM below 1 MiB.
        let o = vmstate(&["ram", s, "--addr", "0xffff0", "--len", "16", "--hex"]);
        let mut expect = format!("{:016x} ", 0xffff0);
        for (j, b) in pc_ram[0xffff0..0x100000].iter().enumerate() {
            expect.push_str(if j == 8 { "  " } else { " " });
            expect.push_str(&format!("{b:02x}"));
        }
        assert!(
            text(&o.stdout).starts_with(&expect),
            "{name}: {}",
            text(&o.stdout)
        );
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_file(&flat).unwrap();
    }
}

#[test]
fn what_is_not_ram_or_not_in_the_stream_is_named() {
    let q35 = fixture("q10-pc-q35-10.0.vmstate");
    let q35 = q35.to_str().unwrap();
    let o = vmstate(&["ram", q35, "--addr", "0x1fffff0", "--len", "32"]);
    assert_eq!(o.status.code(), Some(102));
    assert!(
        text(&o.stderr)
            .contains("guest-physical 0x2000000..0x2000010 is not RAM: RAM is at 0x0..0x2000000"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "nothing of the range is written");
    let o = vmstate(&[
        "ram",
        q35,
        "--block",
        "pc.bios",
        "--block-offset",
        "0x3fff0",
        "--len",
        "17",
    ]);
    assert_eq!(o.status.code(), Some(102));
    assert!(
        text(&o.stderr).contains("0x3fff0+0x11 is outside block 'pc.bios' (0x40000 bytes)"),
        "{}",
        text(&o.stderr)
    );
    let o = vmstate(&["ram", q35, "--block", "nope", "--len", "1"]);
    assert!(
        text(&o.stderr).contains("no RAM block 'nope' (blocks: pc.ram, "),
        "{}",
        text(&o.stderr)
    );
    // x-ignore-shared: pc.ram's pages stay in the shared backing file.
    let shared = fixture("q10-pc-i440fx-10.0-ignore-shared.vmstate");
    let o = vmstate(&[
        "ram",
        shared.to_str().unwrap(),
        "--addr",
        "0x1000",
        "--len",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(101));
    assert!(
        text(&o.stderr).contains(
            "page 0x1000 of block 'pc.ram' (guest-physical 0x1000) is not in the stream (never \
             sent; with x-ignore-shared"
        ),
        "{}",
        text(&o.stderr)
    );
    // A machine's main RAM under another name needs --ram-block.
    let o = vmstate(&["ram", q35, "--ram-block", "m0", "--addr", "0", "--len", "1"]);
    assert!(
        text(&o.stderr).contains("no RAM block 'm0' in the stream"),
        "{}",
        text(&o.stderr)
    );
}

/// A footer-less stream (pc-i440fx-2.2, no CONFIGURATION, no trailer) whose device sections
/// nothing can measure: its RAM comes before them, so it reads whole; the same build's BIOS is
/// byte for byte the 7.2 machine type's.
#[test]
fn an_old_machine_types_ram_reads_although_its_devices_cannot_be_measured() {
    let old = fixture("q72-pc-i440fx-2.2.vmstate");
    let new = fixture("q72-pc-i440fx-7.2.vmstate");
    let args = |f: &PathBuf| {
        vmstate(&[
            "ram",
            f.to_str().unwrap(),
            "--block",
            "pc.bios",
            "--len",
            "0x40000",
        ])
    };
    let (a, b) = (args(&old), args(&new));
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(
        text(&a.stderr).contains(
            "the walk stopped at byte 271753 (section 'cpu_common' instance 0 (id 4)): no section \
             footers, no trailer, no typed model; the RAM before it is complete"
        ),
        "{}",
        text(&a.stderr)
    );
    assert_eq!(a.stdout.len(), 0x40000);
    assert!(a.stdout == b.stdout);
}

/// A generated pc-i440fx-7.2 stream with 4.5 GiB of RAM (3 GiB below 4 GiB, 1.5 GiB from 4 GiB
/// on) in which only a few pages are sent.
fn split_stream(path: &Path) {
    let mut w = support::writer(path);
    w.header(vmstate::wire::header::VERSION_V3).unwrap();
    w.configuration(&Configuration::new(b"pc-i440fx-7.2"))
        .unwrap();
    let ram = (4 << 30) + (512 << 20);
    let blocks = [BlockEntry {
        name: b"pc.ram",
        length: ram,
        addr: None,
    }];
    w.ram_start(1, &blocks).unwrap();
    let mut writer = RamWriter::new();
    w.ram_part(1, true, &mut writer, |ram, out| {
        for (offset, fill) in [
            (0x1000u64, 0x11u8),
            (0xbfff_f000, 0x22),
            (0xc000_0000, 0x33),
        ] {
            ram.page(b"pc.ram", offset, &[fill; PAGE_SIZE], out)?;
        }
        Ok(())
    })
    .unwrap();
    let h = SectionHeaderRepr {
        kind: SectionKind::Full,
        section_id: 2,
        idstr: b"timer",
        instance_id: 0,
        version_id: 2,
    };
    w.section_bytes(&h, &[0u8; 24]).unwrap();
    w.eof().unwrap();
    support::finish(w);
}

#[test]
fn ram_above_the_pci_hole_is_at_4_gib_as_the_machine_type_puts_it() {
    let dir = support::scratch("vmstate-ram-split");
    let f = dir.join("split.vmstate");
    split_stream(&f);
    let f = f.to_str().unwrap();
    // The last page below the split and the first above it, read as one range each.
    let o = vmstate(&["ram", f, "--addr", "0xbffffff8", "--len", "8"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(o.stdout, [0x22; 8]);
    let o = vmstate(&["ram", f, "--addr", "0x100000000", "--len", "8"]);
    assert_eq!(o.stdout, [0x33; 8], "{}", text(&o.stderr));
    // Across the PCI hole: refused, naming the hole and where RAM is.
    let o = vmstate(&["ram", f, "--addr", "0xbffffff8", "--len", "16"]);
    assert_eq!(o.status.code(), Some(102));
    assert!(
        text(&o.stderr).contains(
            "guest-physical 0xc0000000..0xc0000008 is not RAM: RAM is at 0x0..0xc0000000 and \
             0x100000000..0x160000000"
        ),
        "{}",
        text(&o.stderr)
    );
    // The same block under q35 rules (split at 2 GiB): the page at block offset 3 GiB is at
    // guest-physical 4 GiB + 1 GiB.
    let o = vmstate(&[
        "ram",
        f,
        "--machine",
        "pc-q35-7.2",
        "--addr",
        "0x140000000",
        "--len",
        "4",
    ]);
    assert_eq!(o.stdout, [0x33; 4], "{}", text(&o.stderr));
    // With max-ram-below-4g=2G on i440fx, likewise.
    let o = vmstate(&[
        "ram",
        f,
        "--max-ram-below-4g",
        "0x80000000",
        "--addr",
        "0x140000000",
        "--len",
        "4",
    ]);
    assert_eq!(o.stdout, [0x33; 4], "{}", text(&o.stderr));
    // A page never sent, named with its guest-physical address.
    let o = vmstate(&["ram", f, "--addr", "0x100001000", "--len", "1"]);
    assert_eq!(o.status.code(), Some(101));
    assert!(
        text(&o.stderr).contains(
            "page 0xc0001000 of block 'pc.ram' (guest-physical 0x100001000) is not in the stream"
        ),
        "{}",
        text(&o.stderr)
    );
    // A flat image needs every page; nothing is left behind when it fails.
    let img = dir.join("split.img");
    let o = vmstate(&["ram", f, "--image", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(101), "{}", text(&o.stderr));
    assert!(!img.exists());
}

/// The RAM of a stream inside a libvirt save image (plain and compressed) and of one written
/// at an offset (`file:…,offset=4096`): the input layer finds the stream, `ram` reads it.
#[test]
fn ram_reads_the_stream_inside_a_container() {
    let read = |name: &str| {
        let f = fixture(name);
        let o = vmstate(&[
            "ram",
            f.to_str().unwrap(),
            "--block",
            "pc.bios",
            "--len",
            "0x40000",
        ]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        o.stdout
    };
    let raw = read("lv11-q10-pc-i440fx-10.0.save");
    assert_eq!(raw.len(), 0x40000);
    assert_eq!(raw[0x3fff0], 0xea, "the reset vector's far jump");
    for compressed in [
        "lv11-q10-pc-i440fx-10.0-gzip.save",
        "lv11-q10-pc-i440fx-10.0-zstd.save",
    ] {
        assert!(read(compressed) == raw, "{compressed}");
    }
    let at = read("q10-pc-i440fx-10.0-offset4096.file");
    assert_eq!(at[0x3fff0], 0xea);
}

/// A mapped-ram file (QEMU 10.0, with and without multifd) is read directly: each page at its
/// file offset when its bitmap bit is set, zero otherwise; the RAM equals `extract`'s image.
#[test]
fn a_mapped_ram_file_is_read_at_its_pages_offsets() {
    let dir = support::scratch("vmstate-ram-mapped");
    for name in [
        "q10-pc-i440fx-10.0-mapped-ram.vmstate",
        "q10-pc-q35-10.0-mapped-ram-multifd.vmstate",
    ] {
        let f = fixture(name);
        let s = f.to_str().unwrap();
        let out = dir.join(name);
        let o = vmstate(&["extract", s, out.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let image = std::fs::read(out.join("ram/pc.ram.bin")).unwrap();
        assert_eq!(image.len(), 4 << 20, "{name}");
        let o = vmstate(&["ram", s, "--block", "pc.ram", "--len", "0x400000"]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        assert!(o.stdout == image, "{name}");
        assert!(
            image.iter().any(|&b| b != 0),
            "{name}: the guest's RAM is not all zero"
        );
        let flat = dir.join(format!("{name}.img"));
        let o = vmstate(&["ram", s, "--image", flat.to_str().unwrap()]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        assert!(
            std::fs::read(&flat).unwrap() == image,
            "{name}: the flat image"
        );
    }
}
