//! Writing a whole stream record by record: header, configuration, sections (typed, from a
//! table, or as given bytes), RAM records, commands, EOF and the VMDESCRIPTION trailer (verbatim
//! or generated from the description tables). Used by the slice and the streaming paths alike.
//!
//! The writer tracks nothing but the sink, so the caller decides section ids, order and what to
//! send, exactly as QEMU's handler list does. [`StreamWriter::trailer_for`] writes the trailer
//! for a list of sections in two passes (count, then write), because the JSON's length precedes
//! it on the wire; no buffer is needed.

use crate::error::{Error, ErrorKind, Result};
use crate::ram::{BlockEntry, RamRecord, RamWriter};
use crate::schema::Vmsd;
use crate::sink::{CountingSink, Sink};
use crate::stream::Record;
use crate::wire::header::header_bytes;
use crate::wire::section::{SectionHeaderRepr, SectionKind, footer_bytes};
use crate::wire::{Command, Configuration, Trailer, record, trailer};
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

/// Most blocks a block list re-encoded by [`StreamWriter::ram_record`] may hold.
pub const MAX_RAM_BLOCKS: usize = 64;

/// Writes a stream record by record into a [`Sink`] (a caller slice, an `embedded_io::Write`
/// through [`IoSink`](crate::IoSink), or a counter): the same bytes whatever the sink.
///
/// `'n` is the lifetime of the RAM block names its [`RamWriter`] remembers for CONTINUE.
#[derive(Debug)]
pub struct StreamWriter<'n, S> {
    out: S,
    ram: RamWriter<'n>,
}

impl<'n, S: Sink> StreamWriter<'n, S> {
    /// A writer over `out`.
    pub const fn new(out: S) -> Self {
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

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.out.position()
    }

    /// The RAM record writer and the sink together, for [`crate::dirty::encode_round`].
    pub fn ram_parts(&mut self) -> (&mut RamWriter<'n>, &mut S) {
        (&mut self.ram, &mut self.out)
    }

    /// The file header (`QEVM` + version).
    pub fn header(&mut self, version: u32) -> core::result::Result<(), S::Error> {
        self.out.write(&header_bytes(version))
    }

    /// The configuration record.
    pub fn configuration(&mut self, c: &Configuration<'_>) -> core::result::Result<(), S::Error> {
        c.emit(&mut self.out)
    }

    /// A section header (START/FULL with idstr, instance and version; PART/END with the id).
    pub fn section_header(
        &mut self,
        h: &SectionHeaderRepr<'_>,
    ) -> core::result::Result<(), S::Error> {
        h.emit(&mut self.out)
    }

    /// A section footer.
    pub fn footer(&mut self, section_id: u32) -> core::result::Result<(), S::Error> {
        self.out.write(&footer_bytes(section_id))
    }

    /// A whole section: header, `body` as given, footer.
    pub fn section_bytes(
        &mut self,
        h: &SectionHeaderRepr<'_>,
        body: &[u8],
    ) -> core::result::Result<(), S::Error> {
        self.section_header(h)?;
        self.out.write(body)?;
        self.footer(h.section_id)
    }

    /// One RAM record through [`RamWriter`] (so CONTINUE follows QEMU's rule). A ZERO record
    /// with a non-zero fill is [`ErrorKind::RamNonZeroFill`] and XBZRLE is [`ErrorKind::RamFlags`]
    /// (this writer emits neither). The block name must live as long as the encoder (the
    /// writer remembers the last block for CONTINUE), so records borrowed from a streaming
    /// decoder's buffer cannot be passed here directly.
    pub fn ram_record(&mut self, rec: &RamRecord<'n>) -> core::result::Result<(), S::Error> {
        let out = &mut self.out;
        match *rec {
            RamRecord::MemSize(list) => {
                let mut blocks: heapless::Vec<BlockEntry<'_>, MAX_RAM_BLOCKS> =
                    heapless::Vec::new();
                for b in list.iter() {
                    blocks.push(b).map_err(|_| {
                        Error::new(
                            out.position(),
                            ErrorKind::BufferTooSmall {
                                needed: list.count,
                                capacity: MAX_RAM_BLOCKS,
                            },
                        )
                    })?;
                }
                self.ram.block_list(&blocks, out)
            }
            RamRecord::Zero {
                block,
                offset,
                fill: 0,
                ..
            } => self.ram.zero(block, offset, out),
            RamRecord::Page {
                block,
                offset,
                data,
                ..
            } => self.ram.page(block, offset, data, out),
            RamRecord::Eos => self.ram.eos(out),
            RamRecord::MultifdFlush => self.ram.multifd_flush(out),
            RamRecord::Zero { fill, block, .. } => Err(Error::new(
                out.position(),
                ErrorKind::RamNonZeroFill {
                    block: crate::Name::new(block),
                    fill,
                },
            )
            .into()),
            RamRecord::Xbzrle { .. } => Err(Error::new(
                out.position(),
                ErrorKind::RamFlags {
                    flags: crate::ram::flags::XBZRLE,
                },
            )
            .into()),
        }
    }

    /// A COMMAND record.
    pub fn command(&mut self, c: &Command<'_>) -> core::result::Result<(), S::Error> {
        c.emit(&mut self.out)
    }

    /// `QEMU_VM_EOF`.
    pub fn eof(&mut self) -> core::result::Result<(), S::Error> {
        self.out.write(&[record::EOF])
    }

    /// The VMDESCRIPTION trailer (write it right after [`StreamWriter::eof`]).
    pub fn trailer(&mut self, json: &[u8]) -> core::result::Result<(), S::Error> {
        Trailer { json }.emit(&mut self.out)
    }

    /// Writes a record as [`Records`](crate::stream::Records) yields it; section bodies are
    /// written as they are (use [`StreamWriter::ram_record`] to re-encode RAM bodies).
    pub fn record(&mut self, rec: &Record<'_>) -> core::result::Result<(), S::Error> {
        match rec {
            Record::Header { version } => self.header(*version),
            Record::Configuration(c) => self.configuration(c),
            Record::Section(s) => self.section_bytes(
                &SectionHeaderRepr {
                    kind: s.kind,
                    section_id: s.section_id,
                    idstr: s.idstr,
                    instance_id: s.instance_id,
                    version_id: s.version_id,
                },
                s.body,
            ),
            Record::Command(c) => self.command(c),
            Record::Eof => self.eof(),
            Record::Trailer(t) => t.emit(&mut self.out),
        }
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

    /// The header of a `ram` section (idstr, instance and version only in a START).
    fn ram_header(&mut self, kind: SectionKind, section_id: u32) -> Result<(), S::Error> {
        self.section_header(&SectionHeaderRepr {
            kind,
            section_id,
            idstr: b"ram",
            instance_id: 0,
            version_id: 4,
        })
    }

    /// Writes the RAM START section: block list, EOS, footer.
    pub fn ram_start(
        &mut self,
        section_id: u32,
        blocks: &[BlockEntry<'_>],
    ) -> Result<(), S::Error> {
        self.ram_header(SectionKind::Start, section_id)?;
        self.ram.block_list(blocks, &mut self.out)?;
        self.ram.eos(&mut self.out)?;
        self.footer(section_id)
    }

    /// Writes a RAM PART (or END, with `end`) section whose page records `pages` writes
    /// through the given [`RamWriter`]; EOS and the footer are added here.
    pub fn ram_part<'m>(
        &mut self,
        section_id: u32,
        end: bool,
        ram: &mut RamWriter<'m>,
        pages: impl FnOnce(&mut RamWriter<'m>, &mut S) -> Result<(), S::Error>,
    ) -> Result<(), S::Error> {
        let kind = if end {
            SectionKind::End
        } else {
            SectionKind::Part
        };
        self.ram_header(kind, section_id)?;
        pages(ram, &mut self.out)?;
        ram.eos(&mut self.out)?;
        self.footer(section_id)
    }

    /// Writes the VMDESCRIPTION trailer for `sections` (in the order they were written), with
    /// QEMU's x86 page size.
    pub fn trailer_for(&mut self, sections: &[Described<'_>]) -> Result<(), S::Error> {
        let mut counter = CountingSink::new();
        write_json(&mut counter, sections)?;
        trailer::emit_head(&mut self.out, counter.count())?;
        write_json(&mut self.out, sections)
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
