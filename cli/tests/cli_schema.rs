//! `--schema`: the QEMU 7.2 `pc-i440fx-2.2` fixture (no CONFIGURATION, no section footers, no
//! VMDESCRIPTION trailer) walked with the build's `-dump-vmstate` for that machine type and the
//! description of a stream the same build wrote for `pc` (7.2); and where the walk stops, and
//! why, when the files given cannot tell a section's layout (dump variants made here from the
//! real one).

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::{fixture, vmstate};

const STREAM: &str = "q72-pc-i440fx-2.2.vmstate";
const DUMP: &str = "q72-pc-i440fx-2.2.dump-vmstate.json";
/// QEMU 7.2, `-M pc` (pc-i440fx-7.2), the same devices as the 2.2 fixture.
const DESC: &str = "pc-7.2-nodefaults-S.desc.json";
const LEN: usize = 284_192;
/// The description's stream had the same machine options (-m 32, one CPU, no devices added).
const SAME: &str = "--schema-same-config";
/// Where the walk stops without a schema: the body of `cpu_common`, the first section no typed
/// model reads.
const CPU_COMMON_BODY: usize = 271_753;
/// The body of `0000:00:00.0/I440FX`; its `parent_obj.config` follows `version_id` (4 bytes).
const I440FX_BODY: usize = 274_096;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(name: &str) -> String {
    fixture(name).display().to_string()
}

/// `vmstate CMD STREAM [ARGS…] --schema S…` on the 2.2 fixture.
fn run(cmd: &str, args: &[&str], schema: &[&str]) -> std::process::Output {
    let stream = path(STREAM);
    let mut v = vec![cmd, &stream];
    v.extend_from_slice(args);
    for s in schema {
        v.extend_from_slice(&["--schema", s]);
    }
    vmstate(&v)
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// Writes `v` to a file of the scratch directory.
fn write(dir: &Path, name: &str, v: &Value) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
    p.display().to_string()
}

/// The dump's description object of the device class `class`.
fn class<'v>(dump: &'v mut Value, class: &str) -> &'v mut Value {
    &mut dump[class]["Description"]
}

#[test]
fn with_the_dump_and_a_description_the_walk_reaches_eof_without_it_stops_at_cpu_common() {
    let out = run("verify", &[], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "at byte {CPU_COMMON_BODY} (0x42589), section 'cpu_common'"
        )),
        "{stdout}"
    );

    let (dump, desc) = (path(DUMP), path(DESC));
    let out = run("verify", &[SAME], &[&dump, &desc]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // Every byte walked, to the EOF record that ends the file.
    assert!(
        stdout.contains(&format!("RAM records, {LEN} bytes")),
        "{stdout}"
    );

    // The map lists every section QEMU 7.2 sent for pc-i440fx-2.2, the last one before EOF.
    let out = run("inspect", &[SAME], &[&dump, &desc]);
    let map = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!map.contains("stop at"), "{map}");
    let ids: Vec<&str> = map
        .lines()
        .filter(|l| l.contains("kind=full"))
        .filter_map(|l| l.split('\t').find_map(|f| f.strip_prefix("idstr=")))
        .collect();
    for want in ["cpu_common", "cpu", "0000:00:01.3/piix4_pm", "acpi_build"] {
        assert!(ids.contains(&want), "{want} not in {ids:?}");
    }
    assert_eq!(ids.last(), Some(&"globalstate"), "{ids:?}");
    let eof = map
        .lines()
        .find(|l| l.contains("kind=eof"))
        .unwrap_or_default();
    assert!(eof.contains(&format!("0x{:08x}", LEN - 1)), "{eof}\n{map}");
}

#[test]
fn a_stream_with_a_trailer_serves_as_the_description_and_rewrite_keeps_the_stream_footerless() {
    let dir = support::scratch("vmstate-schema-rewrite");
    let out_path = dir.join("out.vmstate");
    let out_s = out_path.display().to_string();
    // The stream QEMU 7.2 wrote for `-M pc` itself (its trailer is the description).
    let (dump, stream72) = (path(DUMP), path("pc-7.2-nodefaults-S.vmstate"));
    let out = run("rewrite", &[&out_s, SAME], &[&dump, &stream72]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No footers added: byte for byte the input.
    assert_eq!(
        std::fs::read(&out_path).unwrap(),
        std::fs::read(fixture(STREAM)).unwrap()
    );
}

#[test]
fn ram_and_extract_walk_the_whole_stream_with_the_schema() {
    let (dump, desc) = (path(DUMP), path(DESC));
    // Without: the RAM is complete, but the walk stopped (said on stderr).
    let out = run("ram", &["--block", "pc.bios", "--len", "16"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the walk stopped at byte 271753"),
        "{}",
        text(&out.stderr)
    );
    let out = run(
        "ram",
        &["--block", "pc.bios", "--len", "16", SAME],
        &[&dump, &desc],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    let dir = support::scratch("vmstate-schema-extract");
    let to = dir.join("x").display().to_string();
    let out = run("extract", &[&to, SAME], &[&dump, &desc]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sections = std::fs::read_dir(dir.join("x/sections")).unwrap().count();
    assert_eq!(sections, 28);
    // piix4_pm as pc-i440fx-2.2 sends it: without `acpi_index` (4 bytes), which the 7.2
    // machine type's description has (`x-not-migrate-acpi-index` on ≤ 6.2).
    let piix4 = std::fs::read(dir.join("x/sections/30-0000%3A00%3A01.3%2Fpiix4_pm.0.bin")).unwrap();
    let desc72 = json(DESC);
    let described = desc72["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["vmsd_name"] == "piix4_pm")
        .unwrap();
    let fields = described["fields"].as_array().unwrap();
    let size = |f: &Value| f["size"].as_u64().unwrap() * f["array_len"].as_u64().unwrap_or(1);
    let described_len: u64 = fields.iter().map(size).sum();
    let of = |name: &str| fields.iter().find(|f| f["name"] == name).map(size).unwrap();
    // Also without `smb` (`smbus_no_migration_support` on pc-i440fx ≤ 3.1).
    assert_eq!((of("acpi_pci_hotplug.acpi_index"), of("smb")), (4, 48));
    // The fields end there, and the subsection piix4_pm/memhp follows.
    let fields_end = (described_len - 4 - 48) as usize;
    let memhp = [&[5u8, 14][..], b"piix4_pm/memhp"].concat();
    assert_eq!(piix4.get(fields_end..fields_end + 16), Some(&memhp[..]));
}

#[test]
fn a_description_without_the_dump_is_not_used() {
    let desc = path(DESC);
    let out = run("verify", &[], &[&desc]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "at byte {CPU_COMMON_BODY} (0x42589): section 'cpu_common' instance 0 (id 4) version 1: unchecked layout"
        )),
        "{stdout}"
    );
}

#[test]
fn the_dump_alone_does_not_have_cpu_common() {
    let dump = path(DUMP);
    let out = run("verify", &[], &[&dump]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "at byte {CPU_COMMON_BODY} (0x42589): section 'cpu_common' instance 0 (id 4) version 1: not in the schema (neither a description nor a dump given has vmsd cpu_common)"
        )),
        "{stdout}"
    );
    // inspect's map stops there and says why.
    let out = run("inspect", &[], &[&dump]);
    let map = text(&out.stdout);
    assert!(
        map.contains("stop at 0x00042589: section 'cpu_common' instance 0 (id 4) cannot be measured (version 1: not in the schema"),
        "{map}"
    );
}

#[test]
fn a_conditional_field_the_machine_type_does_not_decide_stops_at_its_byte() {
    let dir = support::scratch("vmstate-schema-conditional");
    let desc = path(DESC);
    // A dump that names no machine type this tool knows: the PCI config test of I440FX is
    // still decided by the device class, the piix4_pm ones are not. Made conditional here:
    // dma's `regs` struct array (instance 0 and 1, before piix4_pm).
    let mut dump = json(DUMP);
    dump["vmschkmachine"]["Name"] = "unknown".into();
    let unknown = write(&dir, "unknown.json", &dump);
    let out = run("verify", &[], &[&unknown, &desc]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "at byte {} (0x{:x}): section '0000:00:00.0/I440FX' instance 0 (id 11) version 3, field parent_obj.config: conditional field",
            I440FX_BODY + 4,
            I440FX_BODY + 4
        )),
        "{stdout}"
    );

    let mut dump = json(DUMP);
    let fields = class(&mut dump, "i8257")["Fields"].as_array_mut().unwrap();
    let regs = fields.iter_mut().find(|f| f["field"] == "regs").unwrap();
    regs["field_exists"] = true.into();
    let tested = write(&dir, "tested.json", &dump);
    let out = run("verify", &[], &[&tested, &desc]);
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .contains("section 'dma' instance 0 (id 12) version 1, field regs: conditional field"),
        "{stdout}"
    );
    // At the field's byte: after dma's fields before `regs`.
    let before: u64 = {
        let d = json(DESC);
        let dma = d["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "dma")
            .cloned();
        let dma = dma.unwrap();
        dma["fields"]
            .as_array()
            .unwrap()
            .iter()
            .take_while(|f| f["name"] != "regs")
            .map(|f| f["size"].as_u64().unwrap() * f["array_len"].as_u64().unwrap_or(1))
            .sum()
    };
    let line = stdout.lines().find(|l| l.contains("field regs")).unwrap();
    let at: usize = line
        .split("at byte ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    // The dma section's body starts after its 19-byte header (kind, id, "dma", instance,
    // version) at the offset inspect gives.
    let map = text(&run("inspect", &[], &[&path(DUMP), &desc]).stdout);
    let dma_at = map
        .lines()
        .find(|l| l.contains("idstr=dma\t") && l.contains("instance=0"))
        .and_then(|l| l.split('\t').next())
        .and_then(|o| o.strip_prefix("offset=0x"))
        .map(|h| usize::from_str_radix(h, 16).unwrap())
        .unwrap();
    assert_eq!(
        at,
        dma_at + 1 + 4 + 1 + 3 + 4 + 4 + before as usize,
        "{line}"
    );
}

#[test]
fn an_array_a_dump_with_lengths_does_not_fix_is_a_variable_array() {
    let dir = support::scratch("vmstate-schema-varray");
    let desc = path(DESC);
    // A dump that gives fixed arrays their `num` (as QEMU 8.0 and later write): kvm-tpr-opt's
    // arrays are fixed; dma's `regs` is left without, as a VMS_VARRAY_* field is dumped.
    fn mark(fields: &mut Value) {
        for f in fields.as_array_mut().into_iter().flatten() {
            if f["field"] == "get_tpr" {
                f["num"] = 8.into();
            }
            if let Some(nested) = f.get_mut("Description") {
                mark(&mut nested["Fields"]);
            }
        }
    }
    let mut dump = json(DUMP);
    mark(&mut class(&mut dump, "kvmvapic")["Fields"]);
    let marked = write(&dir, "marked.json", &dump);
    let out = run("verify", &[], &[&marked, &desc]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("section 'dma' instance 0 (id 12) version 1, field regs: variable array (the description shows 4 elements; the dump gives no fixed length"),
        "{stdout}"
    );

    // A length that differs from the description's is a disagreement.
    let mut dump = json(DUMP);
    mark(&mut class(&mut dump, "kvmvapic")["Fields"]);
    let fields = class(&mut dump, "i8257")["Fields"].as_array_mut().unwrap();
    fields.iter_mut().find(|f| f["field"] == "regs").unwrap()["num"] = 3.into();
    let three = write(&dir, "three.json", &dump);
    let out = run("verify", &[], &[&three, &desc]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("field regs: the description and the dump disagree (the dump's array has 3 elements, the description's 4"),
        "{stdout}"
    );
}

#[test]
fn a_subsection_or_version_no_description_has_stops_the_walk() {
    let dir = support::scratch("vmstate-schema-subsection");
    let dump = path(DUMP);
    // The 2.2 stream's cpu section sends cpu/poll_control_msr; a description without it.
    let mut desc = json(DESC);
    for d in desc["devices"].as_array_mut().unwrap() {
        if d["name"] == "cpu" {
            d["subsections"] = Value::Array(Vec::new());
        }
    }
    let nosub = write(&dir, "nosub.json", &desc);
    let out = run("verify", &[], &[&dump, &nosub]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "at byte 273595 (0x42cbb): section 'cpu' instance 0 (id 5) version 12: subsection \
             cpu/poll_control_msr of cpu: not in the schema (no description given with --schema \
             has it)"
        ),
        "{stdout}"
    );

    // A description of another version of the vmsd is not used.
    let mut desc = json(DESC);
    for d in desc["devices"].as_array_mut().unwrap() {
        if d["name"] == "cpu" {
            d["version"] = 11.into();
        }
    }
    let v11 = write(&dir, "v11.json", &desc);
    let out = run("verify", &[], &[&dump, &v11]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("section 'cpu' instance 0 (id 5) version 12: not in the schema (the descriptions given have vmsd cpu at version 11 only)"),
        "{stdout}"
    );
}

#[test]
fn a_schema_file_that_is_none_of_the_three_is_refused() {
    let dir = support::scratch("vmstate-schema-refused");
    let other = write(&dir, "other.json", &serde_json::json!({"format": "x"}));
    let out = run("verify", &[], &[&other]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        text(&out.stderr)
            .contains("neither a VMDESCRIPTION (no \"devices\") nor a -dump-vmstate JSON"),
        "{}",
        text(&out.stderr)
    );
    // A stream without a trailer describes nothing.
    let out = run("verify", &[], &[&path(STREAM)]);
    assert_eq!(out.status.code(), Some(101));
    assert!(text(&out.stderr).contains("a stream without a VMDESCRIPTION trailer"));
}

#[test]
fn fields_above_the_section_version_are_not_in_its_layout() {
    let dir = support::scratch("vmstate-schema-version");
    let desc = path(DESC);
    // dma is version 1; a dump whose `command` came with version 2 says version 1 has no
    // `command`, which the description has.
    let mut dump = json(DUMP);
    let fields = class(&mut dump, "i8257")["Fields"].as_array_mut().unwrap();
    fields.iter_mut().find(|f| f["field"] == "command").unwrap()["version_id"] = 2.into();
    let later = write(&dir, "later.json", &dump);
    let out = run("verify", &[], &[&later, &desc]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "section 'dma' instance 0 (id 12) version 1, field mask: the description and the \
             dump disagree (the dump has this field, the description has command here"
        ),
        "{stdout}"
    );
}

#[test]
fn a_subsection_is_read_at_the_version_described_and_checked_against_the_dump() {
    let dir = support::scratch("vmstate-schema-subsection-version");
    let dump = path(DUMP);
    let mut desc = json(DESC);
    for d in desc["devices"].as_array_mut().unwrap() {
        if d["name"] == "cpu" {
            d["subsections"][0]["version"] = 2.into();
        }
    }
    let v2 = write(&dir, "v2.json", &desc);
    let out = run("verify", &[], &[&dump, &v2]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "subsection cpu/poll_control_msr: the schema describes version 2, the stream sends 1"
        ),
        "{stdout}"
    );

    // piix4_pm/memhp (in the dump, as piix4_pm's subsection) with a field test.
    let mut dump = json(DUMP);
    let subs = class(&mut dump, "PIIX4_PM")["Subsections"]
        .as_array_mut()
        .unwrap();
    let memhp = subs
        .iter_mut()
        .find(|s| s["name"] == "piix4_pm/memhp")
        .unwrap();
    memhp["Fields"][0]["field_exists"] = true.into();
    let tested = write(&dir, "tested.json", &dump);
    let out = run("verify", &[], &[&tested, &path(DESC)]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("section '0000:00:01.3/piix4_pm' instance 0 (id 30) version 3: subsection piix4_pm/memhp, field ")
            && stdout.contains(": conditional field ("),
        "{stdout}"
    );
}

#[test]
fn diff_walks_both_streams_with_the_schema() {
    let (dump, desc, stream) = (path(DUMP), path(DESC), path(STREAM));
    let out = vmstate(&["diff", &stream, &stream]);
    assert_eq!(out.status.code(), Some(101), "{}", text(&out.stderr));
    let out = vmstate(&[
        "diff", &stream, &stream, "--schema", &dump, "--schema", &desc, SAME,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("28 as bytes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_array_the_description_has_no_element_of_is_variable_unless_the_options_are_the_same() {
    let (dump, desc) = (path(DUMP), path(DESC));
    // piix4_pm/memhp's `devs` has one element per memory slot (-m slots=N): the 7.2 stream
    // had none, so its description has no object for it.
    let out = run("verify", &[], &[&dump, &desc]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "at byte 284013 (0x4556d): section '0000:00:01.3/piix4_pm' instance 0 (id 30) \
             version 3: subsection piix4_pm/memhp, field acpi_memory_hotplug.devs: variable \
             array (the description's stream sent no element of it"
        ),
        "{stdout}"
    );
    let out = run("inspect", &[], &[&dump, &desc]);
    assert!(text(&out.stdout).contains("stop at 0x0004556d: section '0000:00:01.3/piix4_pm'"));
    // Only with --schema.
    let out = vmstate(&["verify", &path(STREAM), SAME]);
    assert_eq!(out.status.code(), Some(102), "{}", text(&out.stderr));
}
