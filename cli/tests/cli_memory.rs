//! Bounded memory: every command that reads streams runs over a stream of more than 500 MB
//! (512 MiB of RAM pages, a described device and a VMDESCRIPTION trailer) and its own peak
//! resident set (`wait4`'s rusage of that one child) stays within the bound README.md
//! documents for it, far below the stream's size. Also: a stream of 4 Mi ZERO records and one
//! of 2 Mi small device sections, where what the model keeps per record or section is what
//! counts.
//!
//! The commands run without the input governor (`run_ungoverned`): the bounds are what every
//! pass's own releases keep, independent of how a thread is scheduled (on a loaded machine the
//! governor's 5 ms ticks come late, and the conversions, which relied on it, went past their
//! bound). The streams are generated under `target/` and removed at the end.

mod support;

use std::path::Path;
use support::{Run, run_ungoverned, same_contents};
use vmstate::ram::PAGE_SIZE;

const MIB: u64 = 1 << 20;
const RAM: u64 = 512 << 20;

/// README's bound for commands that walk the input with the model: the mapped inputs' few
/// resident MiB per pass, the program and a model of a few sections.
const WALK: u64 = 48 * MIB;
/// README's bound for the conversions (`rewrite --format`, `check`, `caps`): the same plus
/// the codec's working buffers, the description, write buffers and a temporary copy's mapping.
const CONVERT: u64 = 64 * MIB;
/// What the model may keep per section record (README: about 120 bytes; `verify` also names
/// each section it could not check).
const PER_SECTION: u64 = 160;

/// Runs `vmstate ARGS`, asserts it succeeds with a peak resident size below `bound`, and
/// returns the run.
fn measured(
    dir: &Path,
    table: &mut Vec<(String, u64)>,
    label: &str,
    args: &[&str],
    bound: u64,
) -> Run {
    let r = run_ungoverned(dir, args);
    assert_eq!(r.code, Some(0), "{label}: {}{}", r.stderr, r.stdout);
    assert!(
        r.peak < bound,
        "{label}: peak RSS {:.1} MiB, bound {:.1} MiB",
        r.peak as f64 / MIB as f64,
        bound as f64 / MIB as f64
    );
    table.push((label.to_string(), r.peak));
    r
}

#[test]
fn every_command_runs_in_bounded_memory_on_a_large_stream() {
    let dir = support::scratch("vmstate-memory");
    let d = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut table = Vec::new();

    // 4 Mi ZERO records (16 GiB of RAM) in a 36 MiB stream: nothing is kept per record.
    let zeros = d("zeros.vmstate");
    let zlen = support::write_zero_stream(Path::new(&zeros), 16 << 30);
    let r = measured(
        &dir,
        &mut table,
        "inspect (4 Mi ZERO records)",
        &["inspect", &zeros],
        zlen as u64 / 2,
    );
    assert!(
        r.stdout
            .contains("block=pc.ram\tlength=0x400000000\tzero=4194304\tnormal=0\txbzrle=0"),
        "{}",
        r.stdout
    );
    // `ram`: the index is 8 bytes a page of the block list (32 MiB for these 16 GiB), the
    // walk as any other; pc-i440fx-7.2 puts 13 GiB of it from 4 GiB on.
    let r = measured(
        &dir,
        &mut table,
        "ram --addr (4 Mi ZERO records)",
        &[
            "ram",
            &zeros,
            "--machine",
            "pc-i440fx-7.2",
            "--addr",
            "0x43ffffff0",
            "--len",
            "16",
            "--hex",
        ],
        WALK + (16 << 30) / PAGE_SIZE as u64 * 8,
    );
    assert_eq!(
        r.stdout,
        "000000043ffffff0  00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00  |................|\n"
    );
    std::fs::remove_file(&zeros).unwrap();

    // 2 Mi small device sections (no trailer: kept as bytes): the model's cost per section.
    let small = d("small.vmstate");
    let sections = 2 << 20;
    let slen = support::write_small_sections(Path::new(&small), sections);
    let r = measured(
        &dir,
        &mut table,
        "inspect (2 Mi small sections)",
        &["inspect", &small],
        // The map keeps nothing per section.
        WALK,
    );
    assert!(
        r.stdout
            .contains("kind=full\tid=0\tidstr=dev\tinstance=0\tversion=1\tbody=4"),
        "{}",
        &r.stdout[..400.min(r.stdout.len())]
    );
    println!("a {slen}-byte stream of {sections} sections");
    // Commands that keep the decoded stream: a bounded cost per section.
    let r = measured(
        &dir,
        &mut table,
        "verify (2 Mi small sections)",
        &["verify", &small],
        WALK + PER_SECTION * sections as u64,
    );
    assert!(
        r.stdout.contains("'dev' instance 1000, "),
        "verify lists what it could not check"
    );
    let copy = d("small-copy.vmstate");
    measured(
        &dir,
        &mut table,
        "rewrite (2 Mi small sections)",
        &["rewrite", &small, &copy],
        WALK + PER_SECTION * sections as u64,
    );
    assert!(same_contents(Path::new(&small), Path::new(&copy)));
    std::fs::remove_file(&copy).unwrap();
    std::fs::remove_file(&small).unwrap();

    let big = d("big.vmstate");
    let len = support::write_stream(Path::new(&big), RAM, true) as u64;
    assert!(len > 500_000_000, "{len}");

    // `ram --image`: the index (1 MiB for 512 MiB) and the walk; the pages go from the mapped
    // input to the image by positioned writes.
    let image = d("big.img");
    measured(
        &dir,
        &mut table,
        "ram --image",
        &["ram", &big, "--image", &image],
        WALK + RAM / PAGE_SIZE as u64 * 8,
    );
    {
        use std::os::unix::fs::FileExt;
        let img = std::fs::File::open(&image).unwrap();
        assert_eq!(img.metadata().unwrap().len(), RAM);
        let mut page = vec![0u8; PAGE_SIZE];
        for p in [0u64, 1, 0x1234, RAM / PAGE_SIZE as u64 - 1] {
            img.read_exact_at(&mut page, p * PAGE_SIZE as u64).unwrap();
            assert_eq!(page[..8], p.to_be_bytes(), "page {p}");
            assert!(
                page[8..].iter().all(|&b| b == (p % 251) as u8 + 1),
                "page {p}"
            );
        }
    }
    std::fs::remove_file(&image).unwrap();
    let r = measured(
        &dir,
        &mut table,
        "ram --addr",
        &["ram", &big, "--addr", "0x1234000", "--len", "8", "--hex"],
        WALK + RAM / PAGE_SIZE as u64 * 8,
    );
    assert!(
        r.stdout
            .starts_with("0000000001234000  00 00 00 00 00 00 12 34"),
        "{}",
        r.stdout
    );

    let r = measured(&dir, &mut table, "inspect", &["inspect", &big], WALK);
    assert!(
        r.stdout
            .contains("block=pc.ram\tlength=0x20000000\tzero=0\tnormal=131072\txbzrle=0"),
        "{}",
        r.stdout
    );
    let r = measured(
        &dir,
        &mut table,
        "inspect --json",
        &["inspect", "--json", &big],
        WALK,
    );
    assert!(r.stdout.contains("\"vmstate-test (2)\""), "{}", r.stdout);
    let r = measured(
        &dir,
        &mut table,
        "inspect --desc",
        &["inspect", "--desc", &big],
        WALK,
    );
    assert!(r.stdout.contains("\"vmstate-test\""), "{}", r.stdout);
    let r = measured(&dir, &mut table, "verify", &["verify", &big], WALK);
    assert!(
        r.stdout.contains("1 with the description only"),
        "{}",
        r.stdout
    );

    let copy = d("copy.vmstate");
    measured(&dir, &mut table, "rewrite", &["rewrite", &big, &copy], WALK);
    assert!(
        same_contents(Path::new(&big), Path::new(&copy)),
        "rewrite is byte-identical"
    );
    std::fs::remove_file(&copy).unwrap();

    let v4 = d("big.v4");
    measured(
        &dir,
        &mut table,
        "rewrite --format v4 (v3 in)",
        &["rewrite", &big, &v4, "--format", "v4"],
        CONVERT,
    );
    let back = d("back.vmstate");
    measured(
        &dir,
        &mut table,
        "rewrite --format v3 (v4 in)",
        &["rewrite", &v4, &back, "--format", "v3"],
        CONVERT,
    );
    assert!(
        same_contents(Path::new(&big), Path::new(&back)),
        "v3 -> v4 -> v3"
    );
    std::fs::remove_file(&back).unwrap();
    measured(
        &dir,
        &mut table,
        "rewrite --format v3 (v3 in)",
        &["rewrite", &big, &back, "--format", "v3"],
        CONVERT,
    );
    assert!(same_contents(Path::new(&big), Path::new(&back)), "v3 -> v3");
    std::fs::remove_file(&back).unwrap();
    let v4b = d("again.v4");
    measured(
        &dir,
        &mut table,
        "rewrite --format v4 (v4 in)",
        &["rewrite", &v4, &v4b, "--format", "v4"],
        CONVERT,
    );
    assert!(same_contents(Path::new(&v4), Path::new(&v4b)), "v4 -> v4");
    std::fs::remove_file(&v4b).unwrap();

    let r = measured(
        &dir,
        &mut table,
        "check (v3 in)",
        &["check", &big, "--dest", &big],
        CONVERT,
    );
    assert!(r.stdout.starts_with("compatible"), "{}", r.stdout);
    let r = measured(
        &dir,
        &mut table,
        "check (v4 in)",
        &["check", &v4, "--dest", &v4],
        CONVERT,
    );
    assert!(r.stdout.starts_with("compatible"), "{}", r.stdout);
    let caps = d("caps.json");
    measured(
        &dir,
        &mut table,
        "caps --stream (v3 + v4)",
        &["caps", "--stream", &big, "--stream", &v4, &caps],
        CONVERT,
    );
    std::fs::remove_file(&v4).unwrap();

    let parts = d("parts");
    let r = measured(
        &dir,
        &mut table,
        "extract",
        &["extract", &big, &parts],
        WALK,
    );
    assert!(r.stdout.contains("pc.ram"), "{}", r.stdout);
    let image = Path::new(&parts).join("ram/pc.ram.bin");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), RAM);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&image).unwrap();
        let mut page = vec![0u8; PAGE_SIZE];
        for p in [0u64, 1, 12345, RAM / PAGE_SIZE as u64 - 1] {
            f.read_exact_at(&mut page, p * PAGE_SIZE as u64).unwrap();
            assert_eq!(page[..8], p.to_be_bytes());
            assert!(page[8..].iter().all(|&b| b == (p % 251) as u8 + 1));
        }
    }
    std::fs::remove_dir_all(&parts).unwrap();

    // Pages of both streams are merged in stream order, none kept.
    let r = measured(&dir, &mut table, "diff", &["diff", &big, &big], WALK);
    assert_eq!(r.stdout, "");

    std::fs::remove_dir_all(&dir).unwrap();
    println!("{:<32} peak RSS (stream: {len} bytes)", "command");
    for (label, peak) in &table {
        println!("{label:<32} {:>6.1} MiB", *peak as f64 / MIB as f64);
    }
}
