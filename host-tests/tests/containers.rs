//! The stream inside a libvirt save image and a stream written at a file offset, loaded by
//! real QEMU from the offset vmstate found (issue 17, item 2): QEMU 10.0 reads the file
//! itself (`-incoming defer`, `migrate-incoming file:PATH,offset=N`), QEMU 7.2 (no `file:`
//! transport) reads `exec:tail -c +N+1 PATH`. A load that completes proves that the offset is
//! where the stream really starts; one byte later it fails. A compressed image's stream, as
//! vmstate decompressed it, loads too.
//!
//! The destinations get the options libvirt 11.3 started the saving QEMU with (its domain log:
//! `-machine TYPE,usb=off,memory-backend=pc.ram[,acpi=on]`, a 32 MiB `memory-backend-ram`,
//! `-cpu qemu64,hypervisor=on,lahf-lm=on`, one vCPU, `-nodefaults`).

use serde_json::json;
use std::path::Path;
use vmstate_cli::container::Container;
use vmstate_cli::input::Input;
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
