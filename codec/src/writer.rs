//! Writing a whole v3 stream: header, configuration, sections, RAM, EOF and the VMDESCRIPTION
//! trailer generated from the description tables.
//!
//! The writer tracks nothing but the sink, so the caller decides section ids, order and what to
//! send, exactly as QEMU's handler list does. [`StreamWriter::trailer_for`] writes the trailer
//! for a list of sections in two passes (count, then write), because the JSON's length precedes
//! it on the wire; no buffer is needed.

use crate::error::{Error, ErrorKind, Result};
use crate::ram::{BlockEntry, RamWriter};
use crate::schema::Vmsd;
use crate::sink::{CountingSink, Sink};
use crate::wire::Configuration;
use crate::wire::header::{MAGIC, VERSION_V3};
use crate::wire::record;
use crate::wire::section::{SectionHeaderRepr, SectionKind, footer_bytes};
use crate::{SectionId, State};

/// One FULL section to describe in the trailer: where it went and what state it carried.
#[derive(Debug, Clone, Copy)]
pub struct Described<'a> {
    /// idstr.
    pub idstr: &'a [u8],
    /// Instance id.
    pub instance_id: u32,
    /// Its table.
    pub vmsd: &'a Vmsd,
    /// The state bytes it was encoded from.
    pub state: &'a [u8],
}

/// Writes a v3 stream into a [`Sink`].
#[derive(Debug)]
pub struct StreamWriter<S> {
    out: S,
    ram: RamWriter<'static>,
}

impl<S: Sink> StreamWriter<S> {
    /// A writer over `out`.
    pub fn new(out: S) -> Self {
        StreamWriter {
            out,
            ram: RamWriter::new(),
        }
    }

    /// The sink.
    pub fn sink(&mut self) -> &mut S {
        &mut self.out
    }

    /// Returns the sink.
    pub fn into_inner(self) -> S {
        self.out
    }

    /// Writes `QEVM` and file version 3.
    pub fn header(&mut self) -> Result<(), S::Error> {
        self.out.write(&MAGIC.to_be_bytes())?;
        self.out.write(&VERSION_V3.to_be_bytes())
    }

    /// Writes the configuration record.
    pub fn configuration(&mut self, c: &Configuration<'_>) -> Result<(), S::Error> {
        let mut buf = [0u8; 512];
        let mut n = 0;
        c.emit(&mut buf, &mut n)
            .map_err(|e| Error::new(self.out.position(), e.kind))?;
        self.out.write(&buf[..n])
    }

    /// Writes a FULL section of a typed state.
    pub fn section<T: State>(&mut self, id: SectionId<'_>, state: &T) -> Result<(), S::Error> {
        crate::encode_section(id, state, &mut self.out)
    }

    /// Writes a FULL section from a table and raw state bytes.
    pub fn section_raw(
        &mut self,
        id: SectionId<'_>,
        vmsd: &Vmsd,
        state: &[u8],
    ) -> Result<(), S::Error> {
        crate::encode_section_raw(id, vmsd, state, &mut self.out)
    }

    fn live_header(&mut self, kind: SectionKind, section_id: u32) -> Result<(), S::Error> {
        let h = SectionHeaderRepr {
            kind,
            section_id,
            idstr: b"ram",
            instance_id: 0,
            version_id: 4,
        };
        let mut buf = [0u8; 32];
        let mut n = 0;
        h.emit(&mut buf, &mut n)
            .map_err(|e| Error::new(self.out.position(), e.kind))?;
        self.out.write(&buf[..n])
    }

    /// Writes the RAM START section: block list, EOS, footer.
    pub fn ram_start(
        &mut self,
        section_id: u32,
        blocks: &[BlockEntry<'_>],
    ) -> Result<(), S::Error> {
        self.live_header(SectionKind::Start, section_id)?;
        self.ram.block_list(blocks, &mut self.out)?;
        self.ram.eos(&mut self.out)?;
        self.out.write(&footer_bytes(section_id))
    }

    /// Writes a RAM PART (or END, with `end`) section whose page records `pages` writes
    /// through the given [`RamWriter`]; EOS and the footer are added here.
    pub fn ram_part<'n>(
        &mut self,
        section_id: u32,
        end: bool,
        ram: &mut RamWriter<'n>,
        pages: impl FnOnce(&mut RamWriter<'n>, &mut S) -> Result<(), S::Error>,
    ) -> Result<(), S::Error> {
        let kind = if end {
            SectionKind::End
        } else {
            SectionKind::Part
        };
        let mut h = [0u8; 5];
        h[0] = kind.byte();
        h[1..].copy_from_slice(&section_id.to_be_bytes());
        self.out.write(&h)?;
        pages(ram, &mut self.out)?;
        ram.eos(&mut self.out)?;
        self.out.write(&footer_bytes(section_id))
    }

    /// Writes `QEMU_VM_EOF`.
    pub fn eof(&mut self) -> Result<(), S::Error> {
        self.out.write(&[record::EOF])
    }

    /// Writes the VMDESCRIPTION trailer for `sections` (in the order they were written), with
    /// QEMU's x86 page size.
    pub fn trailer_for(&mut self, sections: &[Described<'_>]) -> Result<(), S::Error> {
        let mut counter = CountingSink::new();
        write_json(&mut counter, sections)?;
        let len = u32::try_from(counter.count()).map_err(|_| {
            Error::new(
                self.out.position(),
                ErrorKind::LengthTooLarge {
                    found: counter.count() as u64,
                    max: u32::MAX as u64,
                },
            )
        })?;
        self.out.write(&[record::VMDESCRIPTION])?;
        self.out.write(&len.to_be_bytes())?;
        write_json(&mut self.out, sections)
    }

    /// Writes a trailer holding `json` verbatim.
    pub fn trailer_raw(&mut self, json: &[u8]) -> Result<(), S::Error> {
        let len = u32::try_from(json.len()).map_err(|_| {
            Error::new(
                self.out.position(),
                ErrorKind::LengthTooLarge {
                    found: json.len() as u64,
                    max: u32::MAX as u64,
                },
            )
        })?;
        self.out.write(&[record::VMDESCRIPTION])?;
        self.out.write(&len.to_be_bytes())?;
        self.out.write(json)
    }
}

/// Writes the trailer JSON for `sections`.
pub fn write_json<S: Sink>(out: &mut S, sections: &[Described<'_>]) -> Result<(), S::Error> {
    crate::vmdesc::begin(out, crate::ram::PAGE_SIZE as u32)?;
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.write(b", ")?;
        }
        crate::vmdesc::device(out, s.idstr, s.instance_id, s.vmsd, s.state)?;
    }
    crate::vmdesc::end(out)
}
