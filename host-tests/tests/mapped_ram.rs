//! mapped-ram files (QEMU >= 9.0, `file:` URI, capability `mapped-ram`) on the real QEMU 10.0
//! fixtures `q10-pc-i440fx-10.0-mapped-ram` (no multifd) and
//! `q10-pc-q35-10.0-mapped-ram-multifd` (multifd, 2 channels): the walk, the per-block layout
//! and its rules, analyze-migration's output, extract, a sparse byte-identical rewrite, and an
//! edited file loaded by a real QEMU 10.0 with its RAM equal to what extract reads.

use serde_json::json;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use vmstate::ErrorKind;
use vmstate::error::MappedRamFault;
use vmstate::mapped_ram::{ALIGNMENT, BlockLayout, HEADER_LEN};
use vmstate::ram::{BlockList, RamRecord};
use vmstate_cli::extract::Extract;
use vmstate_cli::generic::NoCheck;
use vmstate_cli::model::{Item, ParseOptions, StreamError, find_description};
use vmstate_cli::output::SparseFile;
use vmstate_cli::verify::DestSpec;
use vmstate_cli::{Stream, pretty_json};
use vmstate_host_tests::qemu::{COMMON, LoadOutcome, Qemu};
use vmstate_host_tests::{QemuBuild, fixture};

/// (fixture stem, machine type, capabilities, multifd channels)
const MAPPED: &[(&str, &str, &[&str], u8)] = &[
    (
        "q10-pc-i440fx-10.0-mapped-ram",
        "pc-i440fx-10.0",
        &["mapped-ram"],
        0,
    ),
    (
        "q10-pc-q35-10.0-mapped-ram-multifd",
        "pc-q35-10.0",
        &["mapped-ram", "multifd"],
        2,
    ),
];

/// The guest RAM size the fixtures were made with (`MAPPED_RAM_COMMON` in make-fixtures.py).
const GUEST_RAM: u64 = 4 << 20;

fn stream_of<'a>(bytes: &'a [u8], stem: &str) -> Stream<'a> {
    Stream::parse(bytes).unwrap_or_else(|e| panic!("{stem}: {e}"))
}

/// The block list of the START section.
fn block_list<'a>(s: &Stream<'a>) -> BlockList<'a> {
    s.entries
        .iter()
        .find_map(|e| match &e.item {
            Item::Ram { records, .. } => records.iter().find_map(|r| match r {
                RamRecord::MemSize(list) => Some(list),
                _ => None,
            }),
            _ => None,
        })
        .expect("a block list")
}

fn parse_error(bytes: &[u8]) -> vmstate::Error {
    match Stream::parse(bytes) {
        Err(StreamError::Codec(e)) => *e,
        Err(other) => panic!("not a codec error: {other}"),
        Ok(_) => panic!("accepted"),
    }
}

/// The walk reads the layout QEMU wrote: each block's header right after its list entry, the
/// bitmap right after the header, pages at the next 1 MiB boundary, the next entry right after
/// the pages; EOS after the last block. Before this, the walk read the first header as the
/// next block name ("at byte 114 (0x72) … empty name").
#[test]
fn the_walk_follows_each_block_to_its_pages_region() {
    for (stem, machine, ..) in MAPPED {
        let bytes = fixture(&format!("{stem}.vmstate"));
        let s = stream_of(&bytes, stem);
        let caps = s.configuration.as_ref().unwrap().capabilities.unwrap();
        assert!(caps.iter().any(|c| c == b"mapped-ram"), "{stem}");
        let list = block_list(&s);
        let entries: Vec<_> = list.entries().collect();
        assert_eq!(entries.len(), list.count, "{stem}");
        assert_eq!(list.count, 6, "{stem}");
        let mut next_entry = list.offset();
        for (b, l) in &entries {
            let l = l.expect("a mapped-ram layout per block");
            // The entry (name, length) is right before the header.
            let entry_len = 1 + b.name.len() + 8;
            assert_eq!(l.header_offset as usize, next_entry + entry_len, "{stem}");
            assert_eq!((l.version, l.page_size), (1, 4096));
            assert_eq!(l.bitmap_offset, l.header_offset + HEADER_LEN as u64);
            assert_eq!(l.bitmap_len(), l.pages().div_ceil(64) * 8);
            // QEMU rounds the pages region up to 1 MiB.
            assert_eq!(l.pages_offset, l.bitmap_end().next_multiple_of(ALIGNMENT));
            assert_eq!(l.pages() * 4096, b.length);
            next_entry = l.pages_end().unwrap() as usize;
        }
        // pc.ram first, as QEMU lists it: its header at 0x72 (the old "empty name" offset) after
        // the 14-byte machine name pc-i440fx-10.0.
        assert_eq!(entries[0].0.name, b"pc.ram");
        assert_eq!(entries[0].0.length, GUEST_RAM);
        let pc_ram = entries[0].1.unwrap();
        assert_eq!(pc_ram.header_offset as usize, 0x72 + machine.len() - 14);
        // After the list: EOS, then the footer, where the START record ends.
        assert_eq!(list.offset() + list.bytes().len(), next_entry, "{stem}");
        assert_eq!(
            &bytes[next_entry..next_entry + 8],
            &[0, 0, 0, 0, 0, 0, 0, 0x10]
        );
        let start = s
            .entries
            .iter()
            .find(|e| matches!(e.item, Item::Ram { .. }))
            .unwrap();
        assert_eq!(start.end, next_entry + 8 + 5, "{stem}");
        // verify: the whole file, no problem.
        let r = vmstate_cli::verify::verify(&bytes, &DestSpec::default(), &mut |_| {}).unwrap();
        assert!(r.problems.is_empty(), "{stem}: {:?}", r.problems);
        assert_eq!(r.bytes, bytes.len());
    }
}

/// `inspect --json` / `--desc` equal the analyzer's output (NAME.state.json: 10.0's script
/// with upstream's mapped-ram parsing; NAME.desc.json: 10.0's script), byte for byte.
#[test]
fn state_and_desc_json_equal_the_analyzer() {
    for (stem, ..) in MAPPED {
        let bytes = fixture(&format!("{stem}.vmstate"));
        let s = stream_of(&bytes, stem);
        let state = String::from_utf8(fixture(&format!("{stem}.state.json"))).unwrap();
        assert_eq!(
            pretty_json(&s.analyze_state().unwrap()) + "\n",
            state,
            "{stem}"
        );
        let desc = String::from_utf8(fixture(&format!("{stem}.desc.json"))).unwrap();
        let d = s.description.as_ref().unwrap();
        assert_eq!(pretty_json(&d.to_json()) + "\n", desc, "{stem}");
    }
}

/// The map lists each block's header, bitmap and pages ranges and the pages present, and the
/// counts come from the bitmap (bit set: in the file; clear: a zero page never written).
#[test]
fn inspect_shows_the_map_and_counts_pages_from_the_bitmap() {
    let stem = MAPPED[0].0;
    let bytes = fixture(&format!("{stem}.vmstate"));
    let s = stream_of(&bytes, stem);
    let list = block_list(&s);
    let text = vmstate_cli::inspect::render(&s, stem, vmstate_cli::inspect::Style::PLAIN);
    let summary = vmstate_cli::inspect::ram_summary(&s);
    for ((b, l), (name, pages)) in list.entries().zip(&summary) {
        let l = l.unwrap();
        let bitmap = list.bitmap(&l).unwrap();
        // Count the bits by hand: bit i of the LSB-first words.
        let set = (0..l.pages())
            .filter(|&i| bitmap[(i / 8) as usize] >> (i % 8) & 1 == 1)
            .count() as u64;
        assert_eq!(l.present_pages(bitmap), set);
        assert_eq!(name.as_bytes(), b.name);
        assert_eq!((pages.normal, pages.zero), (set, l.pages() - set), "{name}");
        let line = format!(
            "block={name}\theader={:#x}\tversion=1\tpage_size=4096\tbitmap={:#x}..{:#x}\t\
             pages={:#x}..{:#x}\tpresent={set}\tpages_total={}",
            l.header_offset,
            l.bitmap_offset,
            l.bitmap_end(),
            l.pages_offset,
            l.pages_end().unwrap(),
            l.pages()
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    // pc.ram: the first header at 0x72, bitmap 0x8e..0x10e, pages 0x100000..0x500000.
    assert!(text.contains(
        "block=pc.ram\theader=0x72\tversion=1\tpage_size=4096\tbitmap=0x8e..0x10e\t\
         pages=0x100000..0x500000"
    ));
}

fn set_be64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// Every header and bitmap rule refuses a real file changed in one place, at the offset of the
/// field at fault, naming the block and the rule.
#[test]
fn broken_headers_and_bitmaps_are_refused_where_they_are() {
    let stem = MAPPED[0].0;
    let good = fixture(&format!("{stem}.vmstate"));
    let s = stream_of(&good, stem);
    let list = block_list(&s);
    let layouts: Vec<(Vec<u8>, BlockLayout)> = list
        .entries()
        .map(|(b, l)| (b.name.to_vec(), l.unwrap()))
        .collect();
    let (_, ram) = &layouts[0];
    let h = ram.header_offset as usize;
    let fault = |bytes: &[u8]| {
        let e = parse_error(bytes);
        let ErrorKind::MappedRam { block, fault, .. } = e.kind else {
            panic!("{e}");
        };
        let section = e.section.expect("in a section");
        assert!(section.idstr.eq_bytes(b"ram"), "{e}");
        (
            e.offset,
            vmstate::Escaped(block.as_bytes()).to_string(),
            fault,
        )
    };
    use MappedRamFault::*;
    let pc_ram = "pc.ram".to_string();

    let mut b = good.clone();
    b[h..h + 4].copy_from_slice(&2u32.to_be_bytes());
    assert_eq!(fault(&b), (h, pc_ram.clone(), Version));
    let e = parse_error(&b).to_string();
    assert!(
        e.contains("at byte 114 (0x72)")
            && e.contains("mapped-ram block pc.ram: header version: expected 1, found 2"),
        "{e}"
    );

    let mut b = good.clone();
    set_be64(&mut b, h + 4, 8192);
    assert_eq!(fault(&b), (h + 4, pc_ram.clone(), PageSize));

    let mut b = good.clone();
    set_be64(&mut b, h + 12, ram.bitmap_offset + 8);
    assert_eq!(fault(&b), (h + 12, pc_ram.clone(), BitmapOffset));

    // Pages over the bitmap, and not page-aligned.
    for bad in [ram.bitmap_offset, ram.pages_offset + 0x800] {
        let mut b = good.clone();
        set_be64(&mut b, h + 20, bad);
        assert_eq!(fault(&b), (h + 20, pc_ram.clone(), PagesOffset), "{bad:#x}");
    }

    // A bit past the last page: /rom@etc/table-loader has 1 page and an 8-byte bitmap.
    let (name, one) = layouts.iter().find(|(_, l)| l.pages() == 1).unwrap();
    let mut b = good.clone();
    let at = one.bitmap_offset as usize + 1;
    b[at] = 0x01;
    let e = parse_error(&b);
    assert_eq!(
        fault(&b),
        (at, String::from_utf8(name.clone()).unwrap(), BitmapPadding)
    );
    assert!(e.to_string().contains("found byte 0x01"), "{e}");

    // Pages that overlap the next block: pc.ram's region moved up by 1 MiB runs over the next
    // entry, so the walk continues inside another block's region and stops there.
    let mut b = good.clone();
    set_be64(&mut b, h + 20, ram.pages_offset + ALIGNMENT);
    let e = parse_error(&b);
    let next = (ram.pages_end().unwrap() + ALIGNMENT) as usize;
    assert!((next..next + 256).contains(&e.offset), "{e}");
    assert_eq!(
        e.field,
        Some("RAM block entry after a mapped-ram pages region"),
        "{e}"
    );

    // A region past the end of the file.
    let mut b = good.clone();
    set_be64(&mut b, h + 20, (good.len() as u64).next_multiple_of(4096));
    let e = parse_error(&b);
    assert!(e.is_incomplete(), "{e}");
    assert_eq!(e.field, Some("mapped-ram pages region"), "{e}");
    assert_eq!(e.offset, ram.bitmap_offset as usize, "{e}");

    // A file cut inside pc.ram's pages region.
    let cut = &good[..ram.pages_offset as usize + 4096];
    let e = parse_error(cut);
    assert!(
        e.is_incomplete() && e.field == Some("mapped-ram pages region"),
        "{e}"
    );
}

/// QEMU's loader refuses page records and MULTIFD_FLUSH in a mapped-ram stream; so does the
/// walk (the START body's EOS replaced by such a record word, in place).
#[test]
fn page_records_are_refused_in_a_mapped_ram_stream() {
    let stem = MAPPED[0].0;
    let good = fixture(&format!("{stem}.vmstate"));
    let s = stream_of(&good, stem);
    let list = block_list(&s);
    let eos = list.offset() + list.bytes().len();
    for word in [0x22u64, 0x02, 0x08, 0x28, 0x40, 0x200] {
        let mut b = good.clone();
        set_be64(&mut b, eos, word);
        let e = parse_error(&b);
        assert_eq!(e.offset, eos, "{word:#x}: {e}");
        assert_eq!(
            e.kind,
            ErrorKind::RamFlags { flags: word as u16 },
            "{word:#x}"
        );
    }
}

/// extract writes the present pages at their place in each block's image and leaves the
/// absent ones as holes; the images' bytes equal the file's pages where the bitmap is set and
/// zero elsewhere.
#[test]
fn extract_writes_the_present_pages() {
    for (stem, ..) in MAPPED {
        let bytes = fixture(&format!("{stem}.vmstate"));
        let dir = scratch(&format!("extract-{stem}"));
        let (files, list_bytes) = extract(&bytes, &dir);
        assert!(files.iter().any(|f| f.ends_with("ram/pc.ram.bin")));
        let s = stream_of(list_bytes, stem);
        let list = block_list(&s);
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        for ((b, l), entry) in list.entries().zip(index["ram"].as_array().unwrap()) {
            let l = l.unwrap();
            let image = std::fs::read(dir.join(entry["file"].as_str().unwrap())).unwrap();
            assert_eq!(image.len() as u64, b.length);
            let bitmap = list.bitmap(&l).unwrap();
            for i in 0..l.pages() {
                let got = &image[(i * 4096) as usize..][..4096];
                match list.mapped_page(&l, i) {
                    Some(page) => assert_eq!(got, page),
                    None => assert!(got.iter().all(|&x| x == 0)),
                }
            }
            assert_eq!(
                entry["mapped_ram"],
                json!({
                    "header_offset": l.header_offset,
                    "version": 1,
                    "page_size": 4096,
                    "bitmap_offset": l.bitmap_offset,
                    "bitmap_len": l.bitmap_len(),
                    "pages_offset": l.pages_offset,
                    "pages": l.pages(),
                    "present": l.present_pages(bitmap),
                })
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmstate-mapped-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs `extract` of `bytes` into `dir` (as the command does); returns its files and `bytes`.
fn extract<'b>(bytes: &'b [u8], dir: &Path) -> (Vec<PathBuf>, &'b [u8]) {
    let mut x = Extract::new(dir, Path::new(""));
    let d = find_description(bytes).unwrap().map(|(_, d)| d);
    let s = Stream::parse_visit(bytes, d, ParseOptions::default(), &mut |_| {}, &mut x).unwrap();
    (x.finish(&s).unwrap(), bytes)
}

/// A rewrite without edits is the input byte for byte, and written through [`SparseFile`] as
/// sparse as QEMU wrote it (the gaps and zero pages stay holes).
#[test]
fn rewrite_is_byte_identical_and_sparse() {
    for (stem, ..) in MAPPED {
        let bytes = fixture(&format!("{stem}.vmstate"));
        let s = stream_of(&bytes, stem);
        let path = scratch(&format!("rewrite-{stem}.vmstate"));
        let mut f = std::fs::File::create(&path).unwrap();
        s.write_to(SparseFile::new(&mut f).unwrap()).unwrap();
        drop(f);
        assert!(std::fs::read(&path).unwrap() == bytes, "{stem}");
        // About 0.6 MB of the 10 MB are data (the checkout itself is not sparse).
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 2 << 20, "{stem}: {allocated} bytes allocated");
        let _ = std::fs::remove_file(path);
    }
}

/// The destination options of a fixture, with `-incoming defer`.
fn destination(machine: &str) -> Vec<&str> {
    let mut args: Vec<&str> = COMMON
        .iter()
        .map(|&a| if a == "32" { "4" } else { a })
        .collect();
    args.extend(["-M", machine, "-S", "-incoming", "defer"]);
    args
}

/// Loads `path` into a QEMU 10.0 destination with `caps` (and `channels` multifd channels) set,
/// as make-fixtures.py --mapped-ram --check does; `None` when QEMU 10.0 is not installed
/// locally.
fn load(path: &Path, machine: &str, caps: &[&str], channels: u8) -> Option<Qemu> {
    let mut q = Qemu::start(QemuBuild::V10_0, &destination(machine))?;
    let caps: Vec<_> = caps
        .iter()
        .map(|c| json!({ "capability": c, "state": true }))
        .collect();
    q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    if channels > 0 {
        q.execute(
            "migrate-set-parameters",
            json!({ "multifd-channels": channels }),
        );
    }
    q.execute(
        "migrate-incoming",
        json!({ "uri": format!("file:{}", path.display()) }),
    );
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    Some(q)
}

/// Guest-physical RAM `[0, GUEST_RAM)` of a loaded QEMU (`pmemsave`).
fn guest_ram(q: &mut Qemu) -> Vec<u8> {
    let out = q.dir().join("ram.bin");
    q.execute(
        "pmemsave",
        json!({ "val": 0, "size": GUEST_RAM, "filename": out.display().to_string() }),
    );
    std::fs::read(out).unwrap()
}

/// A mapped-ram file edited by `rewrite --set` (i8259 master IMR) and written sparse loads into
/// a real QEMU 10.0 (`-incoming defer`, the fixture's capabilities, `migrate-incoming file:`),
/// with and without multifd: `info pic` shows the edit, and the guest's RAM equals the pc.ram
/// image `extract` makes from the file (outside the legacy VGA/BIOS hole 0xa0000..0x100000,
/// where guest-physical reads see ROM and MMIO).
#[test]
fn qemu_10_loads_an_edited_mapped_ram_file_with_its_ram() {
    for &(stem, machine, caps, channels) in MAPPED {
        let bytes = fixture(&format!("{stem}.vmstate"));
        let mut s = stream_of(&bytes, stem);
        s.set("i8259[0].imr=0x5a", &NoCheck).unwrap();
        let path = scratch(&format!("edited-{stem}.vmstate"));
        let mut f = std::fs::File::create(&path).unwrap();
        s.write_to(SparseFile::new(&mut f).unwrap()).unwrap();
        drop(f);
        let edited = std::fs::read(&path).unwrap();
        assert_eq!(edited.len(), bytes.len());
        assert_eq!(
            edited.iter().zip(&bytes).filter(|(a, b)| a != b).count(),
            1,
            "{stem}: one byte edited"
        );
        let dir = scratch(&format!("edited-x-{stem}"));
        extract(&edited, &dir);
        let image = std::fs::read(dir.join("ram/pc.ram.bin")).unwrap();

        let Some(mut q) = load(&path, machine, caps, channels) else {
            return;
        };
        let pic = q.hmp("info pic");
        assert!(
            pic.lines()
                .find(|l| l.starts_with("pic0:"))
                .is_some_and(|l| l.contains("imr=5a")),
            "{stem}: {pic}"
        );
        let ram = guest_ram(&mut q);
        assert_eq!(ram.len() as u64, GUEST_RAM);
        assert!(
            ram[..0xa0000] == image[..0xa0000],
            "{stem}: low RAM differs"
        );
        assert!(
            ram[0x10_0000..] == image[0x10_0000..],
            "{stem}: RAM above 1 MiB differs"
        );
        // The guest ran SeaBIOS: its RAM is not all zeros.
        assert!(ram.iter().any(|&b| b != 0));
        drop(q);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every cut of a mapped-ram file inside its RAM START record is "need more bytes" from the
/// codec's record walk (never another error, never a panic): inside the headers and bitmaps
/// byte by byte, inside the pages regions every 64 KiB. (Cuts inside the CONFIGURATION
/// record are that record's business, as for every stream.)
#[test]
fn every_cut_before_the_ram_end_is_incomplete() {
    use vmstate::stream::{FooterScan, Options, Records};
    let stem = MAPPED[0].0;
    let bytes = fixture(&format!("{stem}.vmstate"));
    let s = stream_of(&bytes, stem);
    let list = block_list(&s);
    let ram_end = list.offset() + list.bytes().len() + 8 + 5;
    let dense = list
        .entries()
        .flat_map(|(_, l)| {
            let l = l.unwrap();
            (l.header_offset as usize - 20)..(l.bitmap_end() as usize + 16)
        })
        .chain(0..0x80);
    let start = s.entries[0].offset;
    assert!(matches!(s.entries[0].item, Item::Ram { .. }));
    let sparse = (start..ram_end).step_by(0x1_0000);
    let mut cuts = 0;
    for k in dense
        .chain(sparse)
        .filter(|&k| (start..ram_end).contains(&k))
    {
        let cut = &bytes[..k];
        let mut r = Records::with_options(cut, FooterScan, Options::for_stream(cut));
        let e = r
            .find_map(Result::err)
            .unwrap_or_else(|| panic!("cut at {k}: no error"));
        assert!(e.is_incomplete(), "cut at {k}: {e}");
        cuts += 1;
    }
    assert!(cuts > 300, "{cuts}");
}

/// QEMU 10.0 writes a mapped-ram stream at a file offset (`migrate file:PATH,offset=12288`
/// with the capability, after 12288 bytes of a header of our own): vmstate finds the stream at
/// that 4 KiB-aligned offset without being told, walks it with the headers' file offsets
/// (the bitmap right after each header *in the file*), verifies it, rewrites it with its header
/// byte for byte, and the guest RAM it reads (`ram --image`) equals the guest's own
/// (`pmemsave` before the migration, outside the legacy VGA/BIOS hole); QEMU 10.0 loads it
/// back from that offset.
#[test]
fn qemu_10_writes_mapped_ram_at_a_file_offset_that_vmstate_reads() {
    use std::io::Write;
    use vmstate_cli::container::Container;
    use vmstate_cli::input::Input;
    const AT: usize = 12288;
    let dir = scratch("offset-source");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("at-offset.file");
    let mut head = b"a header of our own before the stream\n".repeat(400);
    head.truncate(AT);
    std::fs::write(&path, &head).unwrap();
    let source: Vec<&str> = destination("pc-i440fx-10.0")
        .into_iter()
        .take_while(|&a| a != "-S")
        .collect();
    let Some(mut q) = Qemu::start(QemuBuild::V10_0, &source) else {
        return;
    };
    std::thread::sleep(std::time::Duration::from_secs(1));
    q.execute("stop", json!({}));
    let guest = guest_ram(&mut q);
    q.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "mapped-ram", "state": true }] }),
    );
    let uri = format!("file:{},offset={AT}", path.display());
    q.execute("migrate", json!({ "uri": uri }));
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    drop(q);

    let input = Input::open(&path).unwrap();
    assert_eq!(
        input.container(),
        Some(&Container::Offset {
            start: AT,
            given: false
        })
    );
    assert_eq!(input.prefix(), &head[..]);
    let bytes = input.bytes();
    let r = vmstate_cli::verify::verify_at(bytes, AT as u64, &DestSpec::default(), &mut |_| {})
        .unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    // Without the file offset the same bytes are refused where the first bitmap offset is.
    let r = vmstate_cli::verify::verify(bytes, &DestSpec::default(), &mut |_| {}).unwrap();
    assert!(
        r.problems[0].message.contains("bitmap offset"),
        "{:?}",
        r.problems
    );
    let d = find_description(bytes).unwrap().map(|(_, d)| d);
    let options = ParseOptions {
        file_offset: AT as u64,
        ..ParseOptions::default()
    };
    let s = Stream::parse_observed(bytes, d, options, &mut |_| {}).unwrap();
    let list = block_list(&s);
    for (_, l) in list.entries() {
        let l = l.unwrap();
        assert_eq!(l.file_offset, AT as u64);
        assert_eq!(l.bitmap_offset, l.header_offset + HEADER_LEN as u64);
        assert_eq!(l.pages_offset % ALIGNMENT, 0);
    }
    let copy = dir.join("copy.file");
    let mut f = std::fs::File::create(&copy).unwrap();
    f.write_all(input.prefix()).unwrap();
    s.write_to(SparseFile::new(&mut f).unwrap()).unwrap();
    drop(f);
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&path).unwrap());
    let image = vmstate_host_tests::ram_image(&input, "at-offset", &dir.join("image.bin"));
    assert_eq!(image.len() as u64, GUEST_RAM);
    assert!(guest[..0xa0000] == image[..0xa0000], "low RAM differs");
    assert!(
        guest[0x10_0000..] == image[0x10_0000..],
        "RAM above 1 MiB differs"
    );
    assert!(image.iter().any(|&b| b != 0));

    let mut q = Qemu::start(QemuBuild::V10_0, &destination("pc-i440fx-10.0")).unwrap();
    q.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "mapped-ram", "state": true }] }),
    );
    q.execute("migrate-incoming", json!({ "uri": uri }));
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    drop(q);
    let _ = std::fs::remove_dir_all(&dir);
}
