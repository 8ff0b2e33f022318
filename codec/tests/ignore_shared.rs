//! A stream whose configuration record carries `x-ignore-shared`: its RAM block list has a
//! be64 `mr->addr` after each block's length, and the iterator must read it that way (and
//! refuse the same bytes when the capability is not announced).

use vmstate::ram::{RamContext, RamRecord};
use vmstate::stream::{FooterScan, Record, Records};
use vmstate::wire::Reader;

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn be64(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Header, configuration (with or without the capability), RAM START/PART/END over one
/// 4 KiB block whose list entry carries an `mr->addr`, EOF.
fn stream(announce: bool) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"QEVM\x00\x00\x00\x03");
    s.push(0x07);
    s.extend_from_slice(&be32(13));
    s.extend_from_slice(b"pc-i440fx-7.2");
    if announce {
        let name = b"configuration/capabilities";
        s.extend_from_slice(&[0x05, name.len() as u8]);
        s.extend_from_slice(name);
        s.extend_from_slice(&be32(1));
        s.extend_from_slice(&be32(1));
        s.push(15);
        s.extend_from_slice(b"x-ignore-shared");
    }
    // START: block list (total | MEM_SIZE), "pc.ram" 0x1000 at mr->addr 0x1234_0000, EOS.
    s.push(0x01);
    s.extend_from_slice(&be32(2));
    s.extend_from_slice(&[3]);
    s.extend_from_slice(b"ram");
    s.extend_from_slice(&be32(0));
    s.extend_from_slice(&be32(4));
    s.extend_from_slice(&be64(0x1000 | 0x004));
    s.push(6);
    s.extend_from_slice(b"pc.ram");
    s.extend_from_slice(&be64(0x1000));
    s.extend_from_slice(&be64(0x1234_0000));
    s.extend_from_slice(&be64(0x010));
    s.push(0x7e);
    s.extend_from_slice(&be32(2));
    // PART: one ZERO page of pc.ram, EOS.
    s.push(0x02);
    s.extend_from_slice(&be32(2));
    s.extend_from_slice(&be64(0x002));
    s.push(6);
    s.extend_from_slice(b"pc.ram");
    s.push(0);
    s.extend_from_slice(&be64(0x010));
    s.push(0x7e);
    s.extend_from_slice(&be32(2));
    // END: EOS.
    s.push(0x03);
    s.extend_from_slice(&be32(2));
    s.extend_from_slice(&be64(0x010));
    s.push(0x7e);
    s.extend_from_slice(&be32(2));
    s.push(0x00); // QEMU_VM_EOF
    s
}

#[test]
fn announced_ignore_shared_block_lists_walk() {
    let s = stream(true);
    let records: Vec<_> = Records::new(&s, FooterScan)
        .collect::<Result<_, _>>()
        .expect("the stream walks");
    assert_eq!(records.last().map(|r| r.end), Some(s.len()));
    let Record::Section(start) = records[2].record else {
        panic!("third record is the RAM START section");
    };
    // The START body read with the capability on: the entry carries its mr->addr.
    let mut ram = RamContext::new(vmstate::ram::RamOptions {
        ignore_shared: true,
        ..Default::default()
    });
    let mut r = Reader::new(start.body, start.body_offset);
    let RamRecord::MemSize(list) = ram.read_record(&mut r).expect("block list") else {
        panic!("START begins with the block list");
    };
    let blocks: Vec<_> = list.iter().collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (blocks[0].name, blocks[0].length, blocks[0].addr),
        (&b"pc.ram"[..], 0x1000, Some(0x1234_0000))
    );
}

#[test]
fn the_same_block_list_without_the_capability_is_refused() {
    let s = stream(false);
    let err = Records::new(&s, FooterScan)
        .find_map(Result::err)
        .expect("without x-ignore-shared the mr->addr bytes are not a block entry");
    // The error is inside the START section's body (after its 19-byte header at 0x1b).
    assert!((0x1b..0x1b + 19 + 39).contains(&err.offset), "{err}");
}
