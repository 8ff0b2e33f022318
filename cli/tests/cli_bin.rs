//! The built `vmstate` binary on the QEMU 7.2 fixtures: outputs and exit statuses.

mod support;

use support::{fixture, vmstate};

use std::path::PathBuf;
use std::process::Output;
use vmstate_cli::exit::Exit;

const FIXTURES: &[&str] = &["pc-7.2-nodefaults-S", "pc-7.2-bios", "pc-7.2-serial"];

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmstate-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn inspect_json_and_desc_print_what_analyze_migration_printed() {
    for f in FIXTURES {
        let file = fixture(&format!("{f}.vmstate"));
        let file = file.to_str().unwrap();
        for (flag, ext) in [("--json", "state"), ("--desc", "desc")] {
            let o = vmstate(&["inspect", flag, file]);
            assert_eq!(o.status.code(), Some(0), "{f} {flag}: {}", stderr(&o));
            let want = std::fs::read_to_string(fixture(&format!("{f}.{ext}.json"))).unwrap();
            assert!(stdout(&o) == want, "{f} {flag}: output differs");
        }
    }
}

#[test]
fn inspect_lists_every_record() {
    let file = fixture("pc-7.2-serial.vmstate");
    let o = vmstate(&["inspect", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // Not a terminal: no colour, tab-separated cells.
    assert!(
        out.contains("header at 0x00000000: magic QEVM, file version 3\n"),
        "{out}"
    );
    assert!(!out.contains('\x1b'));
    assert!(
        out.contains("configuration at 0x00000008: machine pc-i440fx-7.2\n"),
        "{out}"
    );
    for line in [
        "offset=0x0000001a\tkind=start\tid=2\tidstr=ram\tinstance=0\tversion=4\tbody=148\tdetail=6 blocks",
        "kind=part\tid=2\tidstr=ram\tinstance=0\tversion=4\tbody=275645\tdetail=8273 zero, 49 normal pages",
        "kind=full\tid=22\tidstr=serial\tinstance=0\tversion=3\tbody=11\n",
        "kind=full\tid=5\tidstr=cpu\tinstance=0\tversion=12",
        "detail=subsections: fw_cfg/dma, fw_cfg/acpi_mr",
        "kind=full\tid=16\tidstr=i8259\tinstance=1",
        "kind=eof",
        "block=pc.bios\tlength=0x40000\tzero=18\tnormal=46\txbzrle=0",
        "RAM total 6 blocks, 8273 zero pages, 49 normal pages",
        "99309 bytes of JSON, 31 devices",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // One line per record: 3 RAM + 31 FULL + EOF.
    assert_eq!(out.lines().filter(|l| l.starts_with("offset=")).count(), 35);
}

#[test]
fn rewrite_is_identical_and_set_edits_show_up_in_diff() {
    let src = fixture("pc-7.2-bios.vmstate");
    let src = src.to_str().unwrap();
    let same = tmp("same.vmstate");
    let o = vmstate(&["rewrite", src, same.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&same).unwrap() == std::fs::read(src).unwrap());
    let o = vmstate(&["diff", src, same.to_str().unwrap()]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));

    let edited = tmp("edited.vmstate");
    let o = vmstate(&[
        "rewrite",
        src,
        edited.to_str().unwrap(),
        "--set",
        "i8259[0].imr=0x5a",
        "--set",
        "i8254[0].channels[1].count=100",
        "--set",
        "mc146818rtc[0].cmos_data[14]=0x42",
        "--set",
        "cpu[0].env.regs[0]=0x12345678",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = vmstate(&["diff", src, edited.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "cpu[0].env.regs[0]: 0x0 -> 0x12345678",
            "i8254[0].channels[1].count: 0x10000 -> 0x64",
            "i8259[0].imr: 0xb8 -> 0x5a",
            "mc146818rtc[0].cmos_data[14]: 0x00 -> 0x42",
        ],
        "{out}"
    );
    std::fs::remove_file(same).unwrap();
    std::fs::remove_file(edited).unwrap();
}

#[test]
fn exit_status_says_what_went_wrong() {
    let src = fixture("pc-7.2-nodefaults-S.vmstate");
    let src = src.to_str().unwrap();
    let out = tmp("x.vmstate");
    let out = out.to_str().unwrap();

    // Invalid input: 1, with the byte offset in the message.
    let bytes = std::fs::read(src).unwrap();
    let cut = tmp("cut.vmstate");
    std::fs::write(&cut, &bytes[..300_000]).unwrap();
    let not_stream = tmp("text.vmstate");
    std::fs::write(&not_stream, b"hello, world").unwrap();
    for f in [&cut, &not_stream] {
        for args in [
            vec!["inspect", f.to_str().unwrap()],
            vec!["inspect", "--json", f.to_str().unwrap()],
            vec!["rewrite", f.to_str().unwrap(), out],
        ] {
            let o = vmstate(&args);
            assert_eq!(
                o.status.code(),
                Some(Exit::Invalid.status()),
                "{args:?}: {}",
                stderr(&o)
            );
            assert!(stderr(&o).contains("invalid input"), "{}", stderr(&o));
            assert!(stderr(&o).contains("at byte "), "{}", stderr(&o));
        }
    }

    // Usage errors 102, unreadable inputs 103, unwritable outputs 104.
    for (args, exit) in [
        (vec!["inspect"], Exit::Usage),
        (vec!["frobnicate", src], Exit::Usage),
        (vec!["inspect", "--json", "--desc", src], Exit::Usage),
        (vec!["inspect", "/nonexistent/stream"], Exit::Unreadable),
        (vec!["rewrite", src, "/nonexistent/dir/out"], Exit::Output),
        (
            vec!["rewrite", src, out, "--set", "i8259[0].imr=0x100"],
            Exit::Usage,
        ),
        (
            vec!["rewrite", src, out, "--set", "nosuch[0].x=1"],
            Exit::Usage,
        ),
        (
            vec!["rewrite", src, out, "--set", "i8259[0].imr"],
            Exit::Usage,
        ),
    ] {
        let o = vmstate(&args);
        assert_eq!(
            o.status.code(),
            Some(exit.status()),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!stderr(&o).is_empty());
    }
    // --help is not an error.
    assert_eq!(vmstate(&["--help"]).status.code(), Some(0));
    std::fs::remove_file(cut).unwrap();
    std::fs::remove_file(not_stream).unwrap();
    let _ = std::fs::remove_file(out);
}

#[test]
fn extract_writes_json_ram_images_and_section_bodies() {
    let src = fixture("pc-7.2-bios.vmstate");
    let dir = tmp("extract");
    let o = vmstate(&["extract", src.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (file, want) in [("desc.json", "desc"), ("state.json", "state")] {
        let got = std::fs::read(dir.join(file)).unwrap();
        let want = std::fs::read(fixture(&format!("pc-7.2-bios.{want}.json"))).unwrap();
        assert!(got == want, "{file}");
    }
    // Every page record's bytes are in the image at its offset; ZERO pages read as zeros.
    let bytes = std::fs::read(&src).unwrap();
    let stream = vmstate_cli::Stream::parse(&bytes).unwrap();
    let mut images = std::collections::HashMap::new();
    let (mut pages, mut zeros) = (0, 0);
    for e in &stream.entries {
        let vmstate_cli::model::Item::Ram { records, .. } = &e.item else {
            continue;
        };
        for r in records {
            let (block, offset, data) = match r {
                vmstate::ram::RamRecord::Page {
                    block,
                    offset,
                    data,
                    ..
                } => (block, offset, Some(data)),
                vmstate::ram::RamRecord::Zero { block, offset, .. } => (block, offset, None),
                _ => continue,
            };
            let name = vmstate_cli::extract::safe_name(block);
            let image = images.entry(name.clone()).or_insert_with(|| {
                std::fs::read(dir.join("ram").join(format!("{name}.bin"))).unwrap()
            });
            let at = offset as usize;
            let got = &image[at..at + 4096];
            match data {
                Some(d) => {
                    assert!(got == d, "{name}@{offset:#x}");
                    pages += 1;
                }
                None => {
                    assert!(got.iter().all(|&b| b == 0), "{name}@{offset:#x}");
                    zeros += 1;
                }
            }
        }
    }
    assert_eq!((pages, zeros), (111, 8211));
    assert_eq!(images["pc.ram"].len(), 32 << 20);
    // One body file per FULL section, byte-identical to the stream's body.
    let sections: Vec<_> = std::fs::read_dir(dir.join("sections")).unwrap().collect();
    assert_eq!(sections.len(), 30);
    for (m, _) in stream.devices() {
        let name = format!(
            "{}-{}.{}.bin",
            m.section_id,
            vmstate_cli::extract::safe_name(m.idstr),
            m.instance_id
        );
        let got = std::fs::read(dir.join("sections").join(&name)).unwrap();
        assert!(
            got == bytes[m.body_offset..m.body_offset + m.body_len],
            "{name}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn terminal_style_aligns_and_colours() {
    use vmstate_cli::inspect::{Style, render};
    let bytes = std::fs::read(fixture("pc-7.2-nodefaults-S.vmstate")).unwrap();
    let stream = vmstate_cli::Stream::parse(&bytes).unwrap();
    let out = render(&stream, "f", Style::TERMINAL);
    assert!(out.contains("\x1b[36mfull"), "{out}");
    // Without the escapes, the idstr column starts at the same place on every record line.
    let plain = render(
        &stream,
        "f",
        Style {
            align: true,
            colour: false,
        },
    );
    assert!(!plain.contains('\x1b'));
    let header = plain.lines().find(|l| l.starts_with("offset")).unwrap();
    let col = header.find("idstr").unwrap();
    let rows: Vec<&str> = plain.lines().filter(|l| l.starts_with("0x")).collect();
    assert_eq!(rows.len(), 3 + 30 + 1);
    for r in &rows[..rows.len() - 1] {
        assert_ne!(&r[col..col + 1], " ", "{r}");
        assert_eq!(&r[col - 2..col], "  ", "{r}");
    }
    assert!(
        rows.iter()
            .any(|r| r[col..].starts_with("0000:00:01.3/piix4_pm"))
    );
}

/// `inspect`'s map counts pages record by record as its one walk reads them (no entry kept);
/// the same map rendered from a kept stream, whose RAM sections count their pages again on
/// demand, is the same text in both styles.
#[test]
fn page_counts_taken_while_walking_equal_the_counts_read_again() {
    use vmstate_cli::inspect::{MapWriter, Style, ram_summary, render};
    use vmstate_cli::model::{Item, ParseOptions};
    for f in ["pc-7.2-bios", "pc-7.2-nodefaults-S", "pc-7.2-serial"] {
        let bytes = std::fs::read(fixture(&format!("{f}.vmstate"))).unwrap();
        let kept = vmstate_cli::Stream::parse(&bytes).unwrap();
        for style in [Style::PLAIN, Style::TERMINAL] {
            let description = vmstate_cli::model::find_description(&bytes)
                .unwrap()
                .map(|(_, d)| d);
            let mut map = MapWriter::new(style, std::io::Cursor::new(Vec::new()));
            let walked = vmstate_cli::Stream::parse_visit(
                &bytes,
                description,
                ParseOptions::default(),
                &mut |_| {},
                &mut map,
            )
            .unwrap();
            assert!(walked.entries.is_empty(), "{f}");
            let mut text = Vec::new();
            map.finish(&walked, "f", &mut text).unwrap();
            assert!(
                String::from_utf8(text).unwrap() == render(&kept, "f", style),
                "{f} {style:?}"
            );
        }
        let mut pages = 0;
        for e in &kept.entries {
            if let Item::Ram { records, .. } = &e.item {
                pages += records
                    .counts()
                    .iter()
                    .map(|c| c.zero + c.page)
                    .sum::<u64>();
            }
        }
        let summary: u64 = ram_summary(&kept)
            .iter()
            .map(|(_, p)| p.zero + p.normal)
            .sum();
        assert_eq!(pages, summary, "{f}");
        assert!(pages > 8000, "{f}: {pages}");
    }
}
