//! Bounded memory on a large mapped-ram file: a 512 MiB `pc.ram` block with every page in the
//! file (so nothing is a hole), written in QEMU's mapped-ram layout (CONFIGURATION capability
//! `mapped-ram`, header, bitmap, 1 MiB-aligned pages region). `inspect` and `verify` read only
//! the header and bitmap; `extract`, `rewrite` and `diff` (two such files, page by page) read
//! every page through the mapping. Each
//! command's own peak resident set, without the input governor (`run_ungoverned`), stays
//! within the bound README.md documents for walks (the passes' own releases keep a few MiB of
//! each mapped input; plus the program), far below the file.

mod support;

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use support::{run_ungoverned, same_contents};
use vmstate::mapped_ram::{ALIGNMENT, bitmap_len};

const MIB: u64 = 1 << 20;
const RAM: u64 = 512 << 20;
/// README's bound for commands that walk the input (as in cli_memory.rs).
const WALK: u64 = 48 * MIB;

/// Writes the file; page `p` starts with `p` big-endian, the rest is `p % 251 + 1`. Returns
/// the pages region's offset.
fn write_mapped_ram(path: &Path) -> u64 {
    let mut f = BufWriter::with_capacity(1 << 20, File::create(path).unwrap());
    let mut head = Vec::new();
    head.extend_from_slice(b"QEVM\0\0\0\x03");
    head.push(0x07);
    head.extend_from_slice(&14u32.to_be_bytes());
    head.extend_from_slice(b"pc-i440fx-10.0");
    head.push(0x05);
    head.push(26);
    head.extend_from_slice(b"configuration/capabilities");
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(&1u32.to_be_bytes());
    head.push(10);
    head.extend_from_slice(b"mapped-ram");
    head.push(0x01);
    head.extend_from_slice(&1u32.to_be_bytes());
    head.push(3);
    head.extend_from_slice(b"ram");
    head.extend_from_slice(&0u32.to_be_bytes());
    head.extend_from_slice(&4u32.to_be_bytes());
    head.extend_from_slice(&(RAM | 4).to_be_bytes());
    head.push(6);
    head.extend_from_slice(b"pc.ram");
    head.extend_from_slice(&RAM.to_be_bytes());
    let bitmap_at = head.len() as u64 + 28;
    let pages_at = (bitmap_at + bitmap_len(RAM)).next_multiple_of(ALIGNMENT);
    head.extend_from_slice(&1u32.to_be_bytes());
    head.extend_from_slice(&4096u64.to_be_bytes());
    head.extend_from_slice(&bitmap_at.to_be_bytes());
    head.extend_from_slice(&pages_at.to_be_bytes());
    // Every page present (512 Mi / 4 Ki pages is a multiple of 64: no padding bits).
    head.resize(head.len() + bitmap_len(RAM) as usize, 0xff);
    f.write_all(&head).unwrap();
    f.seek(SeekFrom::Start(pages_at)).unwrap();
    let mut page = vec![0u8; 4096];
    for p in 0..RAM / 4096 {
        page.fill((p % 251) as u8 + 1);
        page[..8].copy_from_slice(&p.to_be_bytes());
        f.write_all(&page).unwrap();
    }
    f.write_all(&0x10u64.to_be_bytes()).unwrap();
    f.write_all(&[0x7e, 0, 0, 0, 1, 0x00]).unwrap();
    f.flush().unwrap();
    pages_at
}

#[test]
fn mapped_ram_commands_run_in_bounded_memory() {
    let dir = support::scratch("vmstate-mapped-memory");
    let d = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let big = d("mapped.vmstate");
    let pages_at = write_mapped_ram(Path::new(&big));
    let measured = |label: &str, args: &[&str]| {
        let r = run_ungoverned(&dir, args);
        assert_eq!(r.code, Some(0), "{label}: {}{}", r.stderr, r.stdout);
        assert!(
            r.peak < WALK,
            "{label}: peak RSS {:.1} MiB, bound {:.1} MiB",
            r.peak as f64 / MIB as f64,
            WALK as f64 / MIB as f64
        );
        println!("{label}: peak {:.1} MiB", r.peak as f64 / MIB as f64);
        r
    };
    let r = measured("inspect", &["inspect", &big]);
    assert!(
        r.stdout.contains(&format!(
            "block=pc.ram\theader=0x{:x}\tversion=1\tpage_size=4096\tbitmap=0x{:x}..0x{:x}\t\
             pages=0x{pages_at:x}..0x{:x}\tpresent=131072\tpages_total=131072",
            0x72,
            0x72 + 28,
            0x72 + 28 + bitmap_len(RAM),
            pages_at + RAM
        )),
        "{}",
        r.stdout
    );
    let r = measured("verify", &["verify", &big]);
    assert!(r.stdout.contains(": ok: "), "{}", r.stdout);
    let parts = d("parts");
    measured("extract", &["extract", &big, &parts]);
    // A few pages, read in place: a child's peak includes this process's at spawn time.
    let mut image = File::open(dir.join("parts/ram/pc.ram.bin")).unwrap();
    assert_eq!(image.metadata().unwrap().len(), RAM);
    for p in [0u64, 1, 77_777, RAM / 4096 - 1] {
        let mut got = [0u8; 9];
        image.seek(SeekFrom::Start(p * 4096)).unwrap();
        std::io::Read::read_exact(&mut image, &mut got).unwrap();
        assert_eq!(&got[..8], &p.to_be_bytes());
        assert_eq!(got[8], (p % 251) as u8 + 1);
    }
    std::fs::remove_dir_all(&parts).unwrap();
    let copy = d("copy.vmstate");
    measured("rewrite", &["rewrite", &big, &copy]);
    assert!(same_contents(Path::new(&big), Path::new(&copy)));
    // diff compares every page of both files (mapped-ram pages are compared as pages).
    let r = measured("diff", &["diff", &big, &copy]);
    assert!(
        r.stderr
            .contains("and 131072 pages by content, 0 pages in one stream only; no"),
        "{}",
        r.stderr
    );
    // One byte of page 77777 changed in the copy: one difference, at its block and page.
    let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
    f.seek(SeekFrom::Start(pages_at + 77_777 * 4096 + 0x64))
        .unwrap();
    f.write_all(&[0]).unwrap();
    drop(f);
    let r = run_ungoverned(&dir, &["diff", &big, &copy]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.peak < WALK, "diff: peak RSS {} bytes", r.peak);
    let want = format!(
        "ram:pc.ram@{:#x}+0x64: {:#04x} -> 0x00 (1 bytes of the page differ)\n",
        77_777 * 4096,
        77_777 % 251 + 1
    );
    assert_eq!(r.stdout, want);
}
