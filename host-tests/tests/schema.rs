//! `--schema` against the real QEMU 7.2 as peer: the `pc-i440fx-2.2` fixture (no footers, no
//! trailer) walked with QEMU 7.2's `-dump-vmstate` for that machine type and the description
//! of the stream QEMU 7.2 wrote for `-M pc` with the same options, compared with what QEMU 7.2
//! shows after loading the fixture with `-M pc-i440fx-2.2 -incoming "exec:cat FILE"`: the CPU
//! registers decoded with the schema (`info registers`), the PICs after the schema-measured
//! sections (`info pic`, also after an edit made at the offset the walk found), and the guest's
//! RAM (`pmemsave`) against `vmstate ram`'s image.

use serde_json::json;
use std::sync::Once;
use vmstate_cli::generic::{Body, Value};
use vmstate_cli::model::{Item, SectionMeta, Stream};
use vmstate_cli::ram::{self, LayoutOptions};
use vmstate_cli::schema::{self, Schema};
use vmstate_devices::machine::QemuBuild;
use vmstate_host_tests::qemu::{COMMON, LoadOutcome, Qemu, temp_stream};
use vmstate_host_tests::{fixture, fixture_path};

const STREAM: &str = "q72-pc-i440fx-2.2.vmstate";
const MACHINE: &str = "pc-i440fx-2.2";
const GUEST_RAM: u64 = 32 << 20;

/// The schema every walk of this test process uses (installed once).
fn install() -> &'static Schema {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut s = Schema::default();
        for f in [
            "q72-pc-i440fx-2.2.dump-vmstate.json",
            "pc-7.2-nodefaults-S.vmstate",
        ] {
            s.add(&fixture(f), f).unwrap();
        }
        // pc-7.2-nodefaults-S was written with the same options (-m 32, one CPU, -nodefaults).
        s.same_config = true;
        schema::install(s);
    });
    schema::installed().unwrap()
}

/// QEMU 7.2 with the fixture's machine options, loaded from `path`.
fn loaded(path: &std::path::Path) -> Option<Qemu> {
    let args = [COMMON, &["-M", MACHINE]].concat();
    let mut q = Qemu::incoming_on(QemuBuild::V7_2, path, &args)?;
    assert_eq!(q.wait_loaded(), LoadOutcome::Completed, "{}", q.stderr());
    Some(q)
}

/// The kept section `idstr` instance `instance`: its header and body.
fn section<'a>(s: &'a Stream<'_>, idstr: &str, instance: u32) -> (SectionMeta<'a>, &'a [u8]) {
    s.entries
        .iter()
        .find_map(|e| match &e.item {
            Item::Opaque { section, body }
                if section.idstr == idstr.as_bytes() && section.instance_id == instance =>
            {
                Some((*section, *body))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no section {idstr} {instance}"))
}

fn int(body: &Body<'_>, name: &str) -> u64 {
    match body
        .fields
        .iter()
        .find(|f| f.name == name)
        .map(|f| &f.value)
    {
        Some(Value::Int(i)) => i.raw,
        other => panic!("{name}: {other:?}"),
    }
}

/// `NAME=hex` of QEMU's `info registers` text.
fn register(text: &str, name: &str) -> u64 {
    let at = text
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("{name} in {text}"));
    let hex: String = text[at + name.len() + 1..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    u64::from_str_radix(&hex, 16).unwrap()
}

#[test]
fn qemu_7_2_shows_what_the_schema_walk_decoded() {
    let schema = install();
    let bytes = fixture(STREAM);
    let s = Stream::parse(&bytes).expect("the walk with --schema");
    // Exactly to the EOF record that ends the file.
    let last = s.entries.last().unwrap();
    assert!(matches!(last.item, Item::Eof), "{:?}", last.item);
    assert_eq!(last.end, bytes.len());

    let Some(mut q) = loaded(&fixture_path(STREAM)) else {
        return;
    };

    // The CPU, decoded with the layout of the 7.2 description (cpu is in no dump).
    let (meta, body) = section(&s, "cpu", 0);
    let (cpu, used) = schema.decode(&meta, body).unwrap();
    assert_eq!(used, body.len());
    let regs = q.hmp("info registers");
    assert_eq!(int(&cpu, "env.eip"), register(&regs, "EIP"), "{regs}");
    assert_eq!(int(&cpu, "env.eflags"), register(&regs, "EFL"), "{regs}");
    assert_eq!(int(&cpu, "env.cr[0]"), register(&regs, "CR0"), "{regs}");
    assert_eq!(int(&cpu, "env.efer"), register(&regs, "EFER"), "{regs}");
    assert_eq!(int(&cpu, "env.fpuc"), register(&regs, "FCW"), "{regs}");
    assert_eq!(int(&cpu, "env.mxcsr"), register(&regs, "MXCSR"), "{regs}");
    let Some(Value::Array(gprs)) = cpu
        .fields
        .iter()
        .find(|f| f.name == "env.regs")
        .map(|f| &f.value)
    else {
        panic!("env.regs")
    };
    for (i, name) in ["EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI"]
        .iter()
        .enumerate()
    {
        let Value::Int(r) = &gprs[i] else {
            panic!("{name}")
        };
        assert_eq!(r.raw & 0xffff_ffff, register(&regs, name), "{name}: {regs}");
    }

    // The PICs (typed model) after the schema-measured sections: every field `info pic` shows.
    let pic = q.hmp("info pic");
    for (instance, line) in [(0, "pic0:"), (1, "pic1:")] {
        let (_, b) = section(&s, "i8259", instance);
        let want = format!(
            "{line} irr={:02x} imr={:02x} isr={:02x} hprio={} irq_base={:02x} rr_sel={} elcr={:02x} fnm={}",
            b[1], b[2], b[3], b[4], b[5], b[6], b[15], b[12]
        );
        assert!(pic.lines().any(|l| l.trim() == want), "{want}\n{pic}");
    }

    // The guest's RAM: `vmstate ram`'s image of pc.ram, outside the legacy VGA/BIOS hole
    // 0xa0000..0x100000 (guest-physical reads see ROM and MMIO there); in it, the isa-bios
    // alias shows the last 128 KiB of the pc.bios block as the stream carries it.
    let dump = q.dir().join("ram.bin");
    q.execute(
        "pmemsave",
        json!({ "val": 0, "size": GUEST_RAM, "filename": dump.display().to_string() }),
    );
    let guest = std::fs::read(&dump).unwrap();
    let input = vmstate_cli::input::Input::open(&fixture_path(STREAM)).unwrap();
    let index = ram::index(&input, STREAM, ram::DEFAULT_INDEX_LIMIT).unwrap();
    let options = LayoutOptions {
        machine: Some(MACHINE.into()),
        ..LayoutOptions::default()
    };
    let physical = index.physical(&options).unwrap();
    let image_path = q.dir().join("image.bin");
    let image_file = std::fs::File::create(&image_path).unwrap();
    index.write_image(&physical, &image_file).unwrap();
    let image = std::fs::read(&image_path).unwrap();
    assert_eq!(image.len() as u64, GUEST_RAM);
    assert!(guest[..0xa0000] == image[..0xa0000]);
    assert!(guest[0x100000..] == image[0x100000..]);
    let mut bios = Vec::new();
    index
        .copy(
            &ram::Place::Block {
                name: "pc.bios".into(),
                offset: 0x20000,
                len: 0x20000,
            },
            None,
            &mut |_, b| {
                bios.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
    assert!(guest[0xe0000..0x100000] == bios[..]);
}

/// An edit made at the offset the schema walk found for the master PIC's IMR (after cpu,
/// kvm-tpr-opt, apic, PCIBUS, I440FX, dma and PIIX3, which only the schema measures) is what
/// QEMU 7.2 loads there.
#[test]
fn an_edit_at_the_offset_the_walk_found_is_what_qemu_loads() {
    install();
    let mut bytes = fixture(STREAM);
    let s = Stream::parse(&bytes).unwrap();
    let (master, _) = section(&s, "i8259", 0);
    let (slave, _) = section(&s, "i8259", 1);
    let (imr, irq_base) = (master.body_offset + 2, slave.body_offset + 5);
    drop(s);
    bytes[imr] = 0x5a;
    bytes[irq_base] = 0x70;
    let edited = temp_stream("schema-edited.vmstate", &bytes);
    let Some(mut q) = loaded(&edited) else {
        return;
    };
    let pic = q.hmp("info pic");
    let line = |p: &str| pic.lines().find(|l| l.starts_with(p)).unwrap_or_default();
    assert!(line("pic0:").contains("imr=5a"), "{pic}");
    assert!(line("pic1:").contains("irq_base=70"), "{pic}");
    let _ = std::fs::remove_file(edited);
}
