//! Writing a v4 stream record by record with typed device state (`docs/FORMAT.md` §1–§7, §12),
//! and the largest section record a description table can make.
//!
//! [`StreamWriter`] writes the header when it is made and keeps what every later record depends
//! on: the vendor chain (how many minors a section carries, which tags are valid) and
//! whether records carry a CRC-32C. It is the v4 counterpart of [`crate::writer::StreamWriter`]
//! and works over any [`Sink`]: a caller slice, a counter, or an `embedded_io::Write` through
//! [`IoSink`](crate::IoSink).

use super::wire::{CrcSink, Header, SubsectionFrame, emit_frame};
use super::{MAX_LEVELS, minor};
use crate::schema::{Elem, Kind, VendorId, Vmsd};
use crate::sink::{CountingSink, Sink};
use crate::wire::{Command, Configuration, record};
use crate::{SectionId, State};

/// Writes a v4 stream: the header once, then sections, COMMAND records, EOF and the trailer.
///
/// ```
/// use vmstate::v4::{wire::Header, wire::Records4, wire::Record4, StreamWriter};
/// use vmstate::{SectionId, SliceSink};
/// # use vmstate::{State, Vmsd, field, assert_layout};
/// # use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};
/// # #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
/// # #[repr(C)]
/// # struct Timer { count: zerocopy::big_endian::U32 }
/// # const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
/// # impl State for Timer { const VMSD: &'static Vmsd = &TIMER; }
/// let timer = Timer { count: 7.into() };
/// let mut buf = [0u8; vmstate::v4::max_record_len(&TIMER) + 64];
/// let header = Header::new(&[], true)?; // no vendor, CRC-32C on
/// let mut w = StreamWriter::new(&header, SliceSink::new(&mut buf))?;
/// let id = SectionId { section_id: 1, idstr: b"timer", instance_id: 0 };
/// w.section(id, &timer)?;
/// w.eof()?;
/// let n = w.into_inner().finish();
/// let records: Vec<_> = Records4::new(&buf[..n]).collect::<Result<_, _>>()?;
/// assert!(matches!(records[1].record, Record4::Section(ref s) if s.idstr == b"timer"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StreamWriter<'a, S> {
    out: S,
    /// The header's vendor ids, level 1 first.
    chain: heapless::Vec<VendorId<'a>, MAX_LEVELS>,
    crc: bool,
}

impl<'a, S: Sink> StreamWriter<'a, S> {
    /// Writes `header` to `out` and returns a writer whose records follow it: as many minors
    /// per section as the header has vendors, a CRC-32C when its flags say so. The writer
    /// keeps the header's vendor ids to check the tags of the tables it writes
    /// ([`StreamWriter::section`]).
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::{Header, Vendor}};
    /// use vmstate::{SliceSink, VendorId};
    /// let kvm = Vendor { id: VendorId::new("org.linux-kvm"), protocol_minor: 0 };
    /// let header = Header::new(&[kvm], true)?;
    /// let mut buf = [0u8; 64];
    /// let w = StreamWriter::new(&header, SliceSink::new(&mut buf))?;
    /// assert_eq!((w.levels(), w.crc()), (1, true));
    /// assert_eq!(w.position(), header.buffer_len()); // the header is written
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(header: &Header<'a>, mut out: S) -> Result<Self, S::Error> {
        header.emit(&mut out)?;
        // `Header` holds at most MAX_LEVELS vendors: nothing is dropped.
        let chain = header.vendors.iter().map(|v| v.id).collect();
        Ok(StreamWriter {
            out,
            chain,
            crc: header.crc(),
        })
    }

    /// The number of vendor levels of the header written.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// let mut buf = [0u8; 16];
    /// let w = StreamWriter::new(&Header::new(&[], false)?, vmstate::SliceSink::new(&mut buf))?;
    /// assert_eq!(w.levels(), 0); // upstream: no vendor level, sections carry no minor
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn levels(&self) -> usize {
        self.chain.len()
    }

    /// Whether records carry a CRC-32C.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// let mut buf = [0u8; 16];
    /// let w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// assert!(w.crc());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn crc(&self) -> bool {
        self.crc
    }

    /// The sink.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// use vmstate::Sink;
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::CountingSink::new())?;
    /// w.sink().write(&[0])?; // bytes of your own (here an EOF byte) go to the same sink
    /// assert_eq!(w.into_inner().count(), 14);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn sink(&mut self) -> &mut S {
        &mut self.out
    }

    /// Returns the sink.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// let mut buf = [0u8; 16];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// w.eof()?;
    /// let n = w.into_inner().finish(); // a SliceSink says how much of the buffer it filled
    /// assert_eq!(&buf[..n], b"QEVM\0\0\0\x04\0\0\0\x01\0\0");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn into_inner(self) -> S {
        self.out
    }

    /// Bytes written so far.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// let w = StreamWriter::new(&Header::new(&[], true)?, vmstate::CountingSink::new())?;
    /// assert_eq!(w.position(), 13); // magic, version, flags, no vendor
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn position(&self) -> usize {
        self.out.position()
    }

    /// Writes a FULL section of a typed state: its fields, one frame per needed top-level
    /// subsection, the minors from its needed vendor subsections.
    ///
    /// A vendor tag of the table whose level is not in `1..=levels` (level 0, or a vendor the
    /// header does not declare) is [`ErrorKind::VendorLevel`](crate::ErrorKind::VendorLevel);
    /// a tag that names its vendor ([`Subsection::feature_of`](crate::Subsection::feature_of))
    /// while the
    /// header has another vendor at its level is
    /// [`ErrorKind::VendorMismatch`](crate::ErrorKind::VendorMismatch). Either names the
    /// section, its instance and the subsection, whether or not the subsection is needed;
    /// nothing is written then.
    ///
    /// ```
    /// # use vmstate::{State, Vmsd, field};
    /// # #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
    /// # #[repr(C)]
    /// # struct Timer { count: zerocopy::big_endian::U32 }
    /// # const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
    /// # impl State for Timer { const VMSD: &'static Vmsd = &TIMER; }
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// use vmstate::{SectionId, SliceSink};
    /// let mut buf = [0u8; 128];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, SliceSink::new(&mut buf))?;
    /// let id = SectionId { section_id: 1, idstr: b"timer", instance_id: 0 };
    /// w.section(id, &Timer { count: 7.into() })?;
    /// assert_eq!(w.position(), 13 + vmstate::v4::max_record_len_for(&TIMER, 5, 0, true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn section<T: State>(&mut self, id: SectionId<'_>, state: &T) -> Result<(), S::Error> {
        self.section_raw(id, T::VMSD, state.as_bytes())
    }

    /// [`StreamWriter::section`] from a table and raw state bytes (`state.len()` must be the
    /// table's size).
    ///
    /// ```
    /// # use vmstate::{State, Vmsd, field};
    /// # #[derive(zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::KnownLayout, zerocopy::Immutable)]
    /// # #[repr(C)]
    /// # struct Timer { count: zerocopy::big_endian::U32 }
    /// # const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
    /// # impl State for Timer { const VMSD: &'static Vmsd = &TIMER; }
    /// use vmstate::v4::{StreamWriter, wire::Header};
    /// use vmstate::{ErrorKind, SectionId, SliceSink};
    /// use zerocopy::IntoBytes;
    /// let mut buf = [0u8; 128];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, SliceSink::new(&mut buf))?;
    /// let id = SectionId { section_id: 1, idstr: b"timer", instance_id: 0 };
    /// // One call site for several devices: the table and the state's bytes.
    /// w.section_raw(id, &TIMER, Timer { count: 7.into() }.as_bytes())?;
    /// // A state that is not the table's struct is refused, naming the table.
    /// let e = w.section_raw(id, &TIMER, &[0u8; 3]).unwrap_err();
    /// assert!(matches!(e.kind, ErrorKind::BufferTooSmall { needed: 4, capacity: 3 }));
    /// assert_eq!(e.field, Some("timer"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn section_raw(
        &mut self,
        id: SectionId<'_>,
        vmsd: &Vmsd,
        state: &[u8],
    ) -> Result<(), S::Error> {
        minor::write_section(id, vmsd, state, &self.chain, self.crc, &mut self.out)
    }

    /// The configuration record (§2: the v3 record's bytes in a v4 frame).
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::{Header, Record4, Records4}};
    /// use vmstate::wire::Configuration;
    /// let mut buf = [0u8; 64];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// w.configuration(&Configuration::new(b"pc-i440fx-7.2"))?;
    /// w.eof()?;
    /// let n = w.into_inner().finish();
    /// let second = Records4::new(&buf[..n]).nth(1).unwrap()?;
    /// assert!(matches!(second.record, Record4::Configuration(_)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn configuration(&mut self, c: &Configuration<'_>) -> Result<(), S::Error> {
        self.v3_record(record::CONFIGURATION, c)
    }

    /// A COMMAND record (§12: the v3 record's bytes in a v4 frame).
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::{Header, Record4, Records4}};
    /// use vmstate::wire::Command;
    /// use vmstate::wire::command::CommandId;
    /// let mut buf = [0u8; 64];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// let ping = Command { id: CommandId::Ping, payload: &[0, 0, 0, 1], packaged: &[] };
    /// w.command(&ping)?;
    /// w.eof()?;
    /// let n = w.into_inner().finish();
    /// let second = Records4::new(&buf[..n]).nth(1).unwrap()?;
    /// assert!(matches!(second.record, Record4::Command(c) if c.id == CommandId::Ping));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn command(&mut self, c: &Command<'_>) -> Result<(), S::Error> {
        self.v3_record(record::COMMAND, c)
    }

    /// The EOF record.
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::{Header, Record4, Records4}};
    /// let mut buf = [0u8; 16];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// w.eof()?;
    /// let n = w.into_inner().finish();
    /// assert_eq!(buf[n - 1], 0); // the one unframed record
    /// assert!(matches!(Records4::new(&buf[..n]).last().unwrap()?.record, Record4::Eof));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn eof(&mut self) -> Result<(), S::Error> {
        self.out.write(&[record::EOF])
    }

    /// The VMDESCRIPTION trailer (after [`StreamWriter::eof`]).
    ///
    /// ```
    /// use vmstate::v4::{StreamWriter, wire::{Header, Record4, Records4}};
    /// let mut buf = [0u8; 64];
    /// let mut w = StreamWriter::new(&Header::new(&[], true)?, vmstate::SliceSink::new(&mut buf))?;
    /// w.eof()?;
    /// w.trailer(br#"{"devices": []}"#)?;
    /// let n = w.into_inner().finish();
    /// let last = Records4::new(&buf[..n]).last().unwrap()?;
    /// assert!(matches!(last.record, Record4::Trailer(json) if json == br#"{"devices": []}"#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn trailer(&mut self, json: &[u8]) -> Result<(), S::Error> {
        emit_frame(&mut self.out, record::VMDESCRIPTION, json.len())?;
        self.out.write(json)
    }

    /// Frames the v3 record `rec` (type byte first) as a v4 record of `kind`: counted first,
    /// since the length precedes it.
    fn v3_record(&mut self, kind: u8, rec: &impl V3Record) -> Result<(), S::Error> {
        let mut count = CountingSink::new();
        rec.emit_v3(&mut count)?;
        let payload = count.count().saturating_sub(1);
        let crc_len = if self.crc { 4 } else { 0 };
        let mut c = CrcSink::new(&mut self.out, self.crc);
        emit_frame(&mut c, kind, payload.saturating_add(crc_len))?;
        rec.emit_v3(&mut SkipFirst {
            inner: &mut c,
            skip: true,
        })?;
        if let Some(sum) = c.crc() {
            self.out.write(&sum.to_be_bytes())?;
        }
        Ok(())
    }
}

/// A v3 record a v4 frame carries.
trait V3Record {
    fn emit_v3<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error>;
}

impl V3Record for Command<'_> {
    fn emit_v3<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        self.emit(out)
    }
}

impl V3Record for Configuration<'_> {
    fn emit_v3<S: Sink + ?Sized>(&self, out: &mut S) -> Result<(), S::Error> {
        self.emit(out)
    }
}

/// Drops the first byte written (the v3 type byte, which the v4 frame carries).
struct SkipFirst<'s, S> {
    inner: &'s mut S,
    skip: bool,
}

impl<S: Sink> Sink for SkipFirst<'_, S> {
    type Error = S::Error;

    fn write(&mut self, bytes: &[u8]) -> Result<(), S::Error> {
        let bytes = match (self.skip, bytes.split_first()) {
            (true, Some((_, rest))) => {
                self.skip = false;
                rest
            }
            _ => bytes,
        };
        self.inner.write(bytes)
    }

    fn position(&self) -> usize {
        self.inner.position()
    }
}

/// Most bytes the fields of `vmsd` (at its current version) and its nested subsections take in
/// v3 encoding: every field counted as present, every variable array at its capacity, every
/// nested subsection sent.
const fn max_body_len(vmsd: &Vmsd) -> usize {
    let mut n = max_fields_len(vmsd);
    let mut subs = vmsd.table().subsections;
    while let [sub, rest @ ..] = subs {
        // 05 | name str8 | version be32 | body
        n = n
            .saturating_add(1 + 1 + 4)
            .saturating_add(sub.vmsd.table().name.len())
            .saturating_add(max_body_len(sub.vmsd));
        subs = rest;
    }
    n
}

/// Most bytes the fields of `vmsd` at its current version take (subsections not counted).
const fn max_fields_len(vmsd: &Vmsd) -> usize {
    let t = vmsd.table();
    let mut n = 0usize;
    let mut fields = t.fields;
    while let [f, rest @ ..] = fields {
        if f.since <= t.version_id {
            n = n.saturating_add(max_field_len(&f.kind));
        }
        fields = rest;
    }
    n
}

/// Most bytes one field of `kind` takes on the wire.
const fn max_field_len(kind: &Kind) -> usize {
    match *kind {
        Kind::Scalar(s) | Kind::Equal(s) => s.width(),
        Kind::Array { elem, len } => elem.width().saturating_mul(len),
        Kind::Buffer { len } | Kind::Unused { len } => len,
        Kind::Struct { vmsd, len } => max_body_len(vmsd).saturating_mul(len),
        Kind::VArray { elem, count } => match elem {
            Elem::Scalar(s) => s.width().saturating_mul(count.capacity),
            Elem::Struct(v) => max_body_len(v).saturating_mul(count.capacity),
        },
        Kind::VBuffer { size } => size.capacity,
        Kind::Validate { .. } => 0,
        Kind::NullPtr => 1,
    }
}

/// Most bytes a FULL v4 section record of `vmsd` takes in a stream of `levels` vendor levels,
/// with an idstr of `idstr_len` bytes and, with `crc`, a CRC-32C: every field present, every
/// variable array at its capacity, every subsection sent. Equal to the record's length when
/// nothing in the table varies (no variable array, no predicate, no subsection).
///
/// ```
/// # use vmstate::{Vmsd, field};
/// # #[repr(C)] struct Timer { count: zerocopy::big_endian::U32 }
/// const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
/// // idstr "timer", no vendor level, CRC-32C: frame and head (22), idstr (5), CRC (4), field (4)
/// assert_eq!(vmstate::v4::max_record_len_for(&TIMER, 5, 0, true), 22 + 5 + 4 + 4);
/// ```
pub const fn max_record_len_for(vmsd: &Vmsd, idstr_len: usize, levels: usize, crc: bool) -> usize {
    // type | len | section_id | idstr length | instance | version | fields_len, then the
    // idstr, the minors and the CRC.
    let levels = if levels < MAX_LEVELS {
        levels
    } else {
        MAX_LEVELS
    };
    let mut n: usize = 1 + 4 + 4 + 1 + 4 + 4 + 4;
    n = n
        .saturating_add(levels.saturating_mul(2))
        .saturating_add(if crc { 4 } else { 0 })
        .saturating_add(idstr_len)
        .saturating_add(max_fields_len(vmsd));
    let mut subs = vmsd.table().subsections;
    while let [sub, rest @ ..] = subs {
        n = n.saturating_add(SubsectionFrame::frame_len(
            sub.vmsd.table().name.len(),
            sub.vendor.is_some(),
            max_body_len(sub.vmsd),
        ));
        subs = rest;
    }
    n
}

/// Most bytes any FULL v4 section record of `vmsd` takes: [`max_record_len_for`] with the
/// longest idstr (255 bytes), [`MAX_LEVELS`] vendor levels and a CRC-32C. A `const`, to size a
/// stack buffer that holds one section of the device whatever its state and stream:
///
/// ```
/// # use vmstate::{Vmsd, field};
/// # #[repr(C)] struct Timer { count: zerocopy::big_endian::U32 }
/// const TIMER: Vmsd = Vmsd::new("timer", 1, 1, 4).fields(&[field!(Timer, count)]);
/// let buf = [0u8; vmstate::v4::max_record_len(&TIMER)];
/// // frame and head (22), idstr (255), minors (2 × 8), CRC (4), the field (4)
/// assert_eq!(buf.len(), 22 + 255 + 2 * 8 + 4 + 4);
/// ```
pub const fn max_record_len(vmsd: &Vmsd) -> usize {
    max_record_len_for(vmsd, 255, MAX_LEVELS, true)
}
