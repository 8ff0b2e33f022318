//! The stream inside a libvirt save image and a stream written at a file offset, loaded by
//! real QEMU from the offset vmstate found (issue 17, item 2): QEMU 10.0 reads the file
//! itself (`-incoming defer`, `migrate-incoming file:PATH,offset=N`), QEMU 7.2 (no `file:`
//! transport) reads `exec:tail -c +N+1 PATH`. A load that completes proves that the offset is
//! where the stream really starts; one byte later it fails. A compressed image's stream, as
//! vmstate decompressed it, loads too.
//!
//! libvirt's `sparse` image is a mapped-ram stream at a file offset: its RAM headers hold file
//! offsets. An edited one (as `rewrite --set` writes it) loads, with the RAM vmstate reads from
//! it; `inspect --json` / `--desc` equal what QEMU's analyze-migration.py prints when it reads
//! the file from the stream's offset (`scripts/analyze-at-offset.py`).
//!
//! The destinations get the options libvirt 11.3 started the saving QEMU with (its domain log:
//! `-machine TYPE,usb=off,memory-backend=pc.ram[,acpi=on]`, a 32 MiB `memory-backend-ram`,
//! `-cpu qemu64,hypervisor=on,lahf-lm=on`, one vCPU, `-nodefaults`).

use serde_json::json;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use vmstate_cli::container::Container;
use vmstate_cli::extract::Extract;
use vmstate_cli::generic::NoCheck;
use vmstate_cli::input::Input;
use vmstate_cli::model::{ParseOptions, find_description};
use vmstate_cli::output::SparseFile;
use vmstate_cli::{Stream, pretty_json};
use vmstate_host_tests::qemu::{LoadOutcome, Qemu, temp_stream};
use vmstate_host_tests::{QemuBuild, fixture_path};

/// The machine options of a libvirt fixture's domain (`machine_opts`: the `-machine` value).
fn libvirt_args(machine_opts: &str) -> Vec<String> {
    [
        "-display",
        "none",
        "-accel",
        "tcg",
        "-nodefaults",
        "-machine",
        machine_opts,
        "-object",
        "memory-backend-ram,id=pc.ram,size=33554432",
        "-m",
        "32",
        "-cpu",
        "qemu64,hypervisor=on,lahf-lm=on",
        "-smp",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

const Q10_MACHINE: &str = "pc-i440fx-10.0,usb=off,memory-backend=pc.ram,acpi=on";
const Q72_MACHINE: &str = "pc-i440fx-7.2,usb=off,memory-backend=pc.ram";

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// QEMU 10.0 loading `path` from file offset `offset` (`caps` set first).
fn load_file_at(path: &Path, offset: usize, args: &[&str], caps: &[&str]) -> Option<LoadOutcome> {
    let mut q = Qemu::start(
        QemuBuild::V10_0,
        &[args, &["-S", "-incoming", "defer"]].concat(),
    )?;
    if !caps.is_empty() {
        let caps: Vec<_> = caps
            .iter()
            .map(|c| json!({ "capability": c, "state": true }))
            .collect();
        q.execute("migrate-set-capabilities", json!({ "capabilities": caps }));
    }
    let uri = format!("file:{},offset={offset}", path.display());
    q.execute("migrate-incoming", json!({ "uri": uri }));
    Some(q.wait_loaded())
}

/// The file offset vmstate gives the stream of `path`, and what it found around it.
fn located(path: &Path) -> (usize, Container) {
    let input = Input::open(path).unwrap();
    let c = input.container().expect("a container").clone();
    (input.stream_start(), c)
}

#[test]
fn qemu_10_loads_a_libvirt_image_from_the_offset_vmstate_found() {
    let path = fixture_path("lv11-q10-pc-i440fx-10.0.save");
    let (start, c) = located(&path);
    assert!(matches!(c, Container::Libvirt(_)));
    let args = libvirt_args(Q10_MACHINE);
    let Some(outcome) = load_file_at(&path, start, &strs(&args), &[]) else {
        return;
    };
    assert_eq!(outcome, LoadOutcome::Completed);
    let after = load_file_at(&path, start + 1, &strs(&args), &[]).unwrap();
    assert!(matches!(after, LoadOutcome::Failed(_)), "{after:?}");
}

#[test]
fn qemu_10_loads_a_sparse_libvirt_image_from_the_offset_vmstate_found() {
    // libvirt's `sparse` format is a mapped-ram stream after the same header; QEMU reads it
    // with the capability set, and its RAM offsets are file offsets.
    let path = fixture_path("lv11-q10-pc-i440fx-10.0-sparse.save");
    let (start, c) = located(&path);
    let Container::Libvirt(i) = c else {
        panic!("not a libvirt image")
    };
    assert_eq!(i.header.format.name(), "sparse");
    let args = libvirt_args(Q10_MACHINE);
    let Some(outcome) = load_file_at(&path, start, &strs(&args), &["mapped-ram"]) else {
        return;
    };
    assert_eq!(outcome, LoadOutcome::Completed);
}

#[test]
fn qemu_10_loads_the_file_offset_stream_from_the_offset_vmstate_found() {
    let path = fixture_path("q10-pc-i440fx-10.0-offset4096.file");
    let (start, c) = located(&path);
    assert_eq!(
        c,
        Container::Offset {
            start: 4096,
            given: false
        }
    );
    let args = [
        "-display",
        "none",
        "-accel",
        "tcg",
        "-m",
        "32",
        "-nodefaults",
        "-M",
        "pc-i440fx-10.0",
    ];
    let Some(outcome) = load_file_at(&path, start, &args, &[]) else {
        return;
    };
    assert_eq!(outcome, LoadOutcome::Completed);
}

#[test]
fn qemu_7_2_loads_a_libvirt_image_from_the_offset_vmstate_found() {
    // libvirt 11.3's and 9.0's image of the same domain.
    for name in ["lv11-q72-pc-i440fx-7.2.save", "lv9-q72-pc-i440fx-7.2.save"] {
        if !load_7_2(&fixture_path(name)) {
            return;
        }
    }
}

/// QEMU 7.2 loads `path` from vmstate's offset and not from one byte later (false: QEMU 7.2
/// is not installed here).
fn load_7_2(path: &Path) -> bool {
    let (start, _) = located(path);
    let args = libvirt_args(Q72_MACHINE);
    let tail = |at: usize| {
        let incoming = format!("exec:tail -c +{} '{}'", at + 1, path.display());
        Qemu::start(
            QemuBuild::V7_2,
            &[&strs(&args)[..], &["-S", "-incoming", &incoming]].concat(),
        )
    };
    let Some(mut q) = tail(start) else {
        return false;
    };
    assert_eq!(
        q.wait_loaded(),
        LoadOutcome::Completed,
        "{}",
        path.display()
    );
    let after = tail(start + 1).unwrap().wait_loaded();
    assert!(matches!(after, LoadOutcome::Failed(_)), "{after:?}");
    true
}

#[test]
fn qemu_10_loads_each_decompressed_stream() {
    let args = libvirt_args(Q10_MACHINE);
    for f in ["gzip", "bzip2", "xz", "zstd"] {
        let path = fixture_path(&format!("lv11-q10-pc-i440fx-10.0-{f}.save"));
        let input = Input::open(&path).unwrap();
        assert!(input.container().is_some_and(Container::compressed), "{f}");
        let stream = temp_stream(&format!("decompressed-{f}"), input.bytes());
        let Some(mut q) = Qemu::incoming_on(QemuBuild::V10_0, &stream, &strs(&args)) else {
            return;
        };
        assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{f}");
        let _ = std::fs::remove_file(&stream);
    }
}

const SPARSE: &str = "lv11-q10-pc-i440fx-10.0-sparse.save";

/// Guest RAM of the libvirt domains (32 MiB).
const DOMAIN_RAM: u64 = 32 << 20;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmstate-containers-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The stream of `input` walked as every command walks it: at its file offset.
fn walk<'a>(input: &'a Input, visit: &mut dyn vmstate_cli::model::Visit<'a>) -> Stream<'a> {
    let bytes = input.bytes();
    let d = find_description(bytes).unwrap().map(|(_, d)| d);
    let options = ParseOptions {
        file_offset: input.stream_start() as u64,
        ..ParseOptions::default()
    };
    Stream::parse_visit(bytes, d, options, &mut |_| {}, visit).unwrap()
}

/// `vmstate rewrite IN OUT --set EDIT` of a container (main.rs): the container's bytes, then
/// the edited stream written sparse after them (cli/tests/cli_containers.rs checks that the
/// command writes these bytes for the sparse image).
fn rewrite_set(input: &Input, edit: &str, out: &Path) {
    let mut s = walk(input, &mut vmstate_cli::model::KeepAll);
    s.set(edit, &NoCheck).unwrap();
    let mut f = std::fs::File::create(out).unwrap();
    f.write_all(input.prefix()).unwrap();
    s.write_to(SparseFile::new(&mut f).unwrap()).unwrap();
}

/// libvirt's sparse image (mapped-ram at file offset 66762) edited as `rewrite --set` edits it
/// (the i8259 master's IMR) loads into QEMU 10.0 from its offset with mapped-ram set: the
/// container is the input's byte for byte, one stream byte changed, holes kept; `info pic`
/// shows the edit, and the guest's 32 MiB (`pmemsave`) equal the flat image `vmstate ram
/// --image` writes of the edited file and the pc.ram image `extract` writes (outside the legacy
/// VGA/BIOS hole 0xa0000..0x100000, where guest-physical reads see ROM and MMIO).
#[test]
fn qemu_10_loads_an_edited_sparse_image_with_the_ram_vmstate_reads() {
    let src = fixture_path(SPARSE);
    let original = Input::open(&src).unwrap();
    let start = original.stream_start();
    let dir = scratch("edited-sparse");
    let path = dir.join("edited.save");
    rewrite_set(&original, "i8259[0].imr=0x5a", &path);
    let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&path).unwrap());
    assert_eq!(a.len(), b.len());
    assert_eq!(&a[..start], &b[..start], "the container");
    assert_eq!(a.iter().zip(&b).filter(|(x, y)| x != y).count(), 1);
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated < 4 << 20,
        "{allocated} bytes allocated of {}",
        b.len()
    );

    let edited = Input::open(&path).unwrap();
    assert_eq!(edited.stream_start(), start);
    // `vmstate ram --image`.
    let image = vmstate_host_tests::ram_image(&edited, "edited", &dir.join("image.bin"));
    assert_eq!(image.len() as u64, DOMAIN_RAM);
    // `extract`.
    let x_dir = dir.join("x");
    let mut x = Extract::new(&x_dir, &path);
    let s = walk(&edited, &mut x);
    x.finish(&s).unwrap();
    let block = std::fs::read(x_dir.join("ram/pc.ram.bin")).unwrap();
    assert!(block == image, "extract's pc.ram and ram --image differ");

    let args = libvirt_args(Q10_MACHINE);
    let mut q = Qemu::start(
        QemuBuild::V10_0,
        &[&strs(&args)[..], &["-S", "-incoming", "defer"]].concat(),
    );
    let Some(q) = q.as_mut() else { return };
    q.execute(
        "migrate-set-capabilities",
        json!({ "capabilities": [{ "capability": "mapped-ram", "state": true }] }),
    );
    let uri = format!("file:{},offset={start}", path.display());
    q.execute("migrate-incoming", json!({ "uri": uri }));
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    let pic = q.hmp("info pic");
    assert!(
        pic.lines()
            .find(|l| l.starts_with("pic0:"))
            .is_some_and(|l| l.contains("imr=5a")),
        "{pic}"
    );
    let dump = q.dir().join("ram.bin");
    q.execute(
        "pmemsave",
        json!({ "val": 0, "size": DOMAIN_RAM, "filename": dump.display().to_string() }),
    );
    let guest = std::fs::read(&dump).unwrap();
    assert_eq!(guest.len() as u64, DOMAIN_RAM);
    assert!(guest[..0xa0000] == image[..0xa0000], "low RAM differs");
    assert!(
        guest[0x10_0000..] == image[0x10_0000..],
        "RAM above 1 MiB differs"
    );
    // SeaBIOS ran: the RAM is not all zeros, and vmstate read it from the pages regions.
    assert!(image[0x10_0000..].iter().any(|&b| b != 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// QEMU 10.0.2's analyze-migration.py (`$VMSTATE_QEMU_SRC/scripts/`) reading `path` from file
/// offset `offset` (`scripts/analyze-at-offset.py`, with upstream's mapped-ram parsing),
/// `-d mode`; `None` without `VMSTATE_QEMU_SRC` or python3.
fn analyzer(path: &Path, offset: usize, mode: &str) -> Option<String> {
    let script =
        PathBuf::from(std::env::var_os("VMSTATE_QEMU_SRC")?).join("scripts/analyze-migration.py");
    let python = Command::new("python3").arg("--version").output();
    if !script.is_file() || !python.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "no python3 or no {}: the analyzer is not run",
            script.display()
        );
        return None;
    }
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/analyze-at-offset.py");
    let out = Command::new("python3")
        .arg(driver)
        .arg(&script)
        .arg(path)
        .arg(offset.to_string())
        .arg(mode)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// What `inspect --json` and `inspect --desc` print for the stream of `input`.
fn state_and_desc(input: &Input) -> (String, String) {
    let s = walk(input, &mut vmstate_cli::model::KeepAll);
    let state = pretty_json(&s.analyze_state().unwrap()) + "\n";
    let desc = pretty_json(&s.description.as_ref().unwrap().to_json()) + "\n";
    (state, desc)
}

/// `inspect --json` and `--desc` of the sparse image (mapped-ram at file offset 66762) equal
/// QEMU's analyze-migration.py reading the file from that offset (NAME.state.json and
/// NAME.desc.json, see host-tests/fixtures/README.md).
#[test]
fn inspect_json_of_the_sparse_image_equals_the_analyzer() {
    let input = Input::open(&fixture_path(SPARSE)).unwrap();
    let (state, desc) = state_and_desc(&input);
    let stem = SPARSE.trim_end_matches(".save");
    let want = |ext: &str| std::fs::read_to_string(fixture_path(&format!("{stem}.{ext}"))).unwrap();
    assert!(state == want("state.json"), "state");
    assert!(desc == want("desc.json"), "desc");
}

/// With `VMSTATE_QEMU_SRC`: the analyzer run live from the stream's offset prints what
/// `inspect --json` / `--desc` print for every stream in a container. The driver is checked
/// first: at offset 0 it prints the committed NAME.state.json of the plain mapped-ram fixtures.
#[test]
fn the_analyzer_from_the_stream_offset_agrees_live() {
    for stem in [
        "q10-pc-i440fx-10.0-mapped-ram",
        "q10-pc-q35-10.0-mapped-ram-multifd",
    ] {
        let path = fixture_path(&format!("{stem}.vmstate"));
        let Some(state) = analyzer(&path, 0, "state") else {
            return;
        };
        let want = std::fs::read_to_string(fixture_path(&format!("{stem}.state.json"))).unwrap();
        assert!(
            state == want,
            "{stem}: the driver's output is not the fixture's"
        );
    }
    for name in [
        SPARSE,
        "lv11-q10-pc-i440fx-10.0.save",
        "lv11-q72-pc-i440fx-7.2.save",
        "lv9-q72-pc-i440fx-7.2.save",
        "q10-pc-i440fx-10.0-offset4096.file",
    ] {
        let path = fixture_path(name);
        let input = Input::open(&path).unwrap();
        let (state, desc) = state_and_desc(&input);
        let start = input.stream_start();
        assert!(start > 0, "{name}");
        assert!(
            analyzer(&path, start, "state").unwrap() == state,
            "{name}: state"
        );
        assert!(
            analyzer(&path, start, "desc").unwrap() == desc,
            "{name}: desc"
        );
    }
}
