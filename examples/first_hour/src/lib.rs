//! The embedder's first hour (issue 15), as one program: a UART-like device with mixed-width
//! fields, a receive FIFO and one optional subsection, encoded as one section, loaded back in
//! one call, and streamed as a whole migration stream over `embedded_io::Write`; then in v4
//! terms: the subsection is a vendor feature of `com.example`, written with the typed v4 writer,
//! and the migratability decision made with and without the feature in use.
//!
//! `#![no_std]` and allocation-free: `host-tests/tests/first_hour.rs` builds this library for
//! `thumbv7em-none-eabihf`; `tests/first_hour.rs` runs every step on the host, and checks that
//! the README's example is this file's device definition.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

// ANCHOR: device
use vmstate::schema::Subsection;
use vmstate::{
    Expected, State, VendorTag, Violation, Vmsd, assert_layout, check, field, mutate, pred,
};
use zerocopy::byteorder::big_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes in the receive FIFO.
pub const FIFO_LEN: usize = 16;

/// The UART's migrated state. `#[repr(C)]`, big-endian fields and `Unaligned`: the struct
/// holds the wire bytes, so encoding is a copy and loading validates in place.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq,
)]
pub struct Uart {
    /// Baud divisor latch (16 bits).
    pub divisor: U16,
    /// Interrupt enable register.
    pub ier: u8,
    /// Line status register.
    pub lsr: u8,
    /// Index of the oldest byte in `rx_fifo`.
    pub rx_head: u8,
    /// Bytes held in `rx_fifo`.
    pub rx_count: u8,
    /// Receive FIFO storage.
    pub rx_fifo: [u8; FIFO_LEN],
    /// Character-timeout deadline in ns, `u64::MAX` when not armed: sent in the subsection
    /// `example-uart/timeout` only when armed.
    pub timeout: U64,
}

impl Uart {
    /// The state after reset.
    pub const RESET: Uart = Uart {
        divisor: U16::new(12),
        ier: 0,
        lsr: 0x60,
        rx_head: 0,
        rx_count: 0,
        rx_fifo: [0; FIFO_LEN],
        timeout: U64::new(u64::MAX),
    };
}

/// A subsection's table describes fields of the parent's struct.
const TIMEOUT: Vmsd =
    Vmsd::new("example-uart/timeout", 1, 1, size_of::<Uart>()).fields(&[field!(Uart, timeout)]);

const SUBSECTIONS: &[Subsection] = &[
    // Sent only when `needed` (a typed predicate) says so; on a load whose body does not carry
    // it, `absent` resets the fields it would have set.
    Subsection::new(&TIMEOUT, pred!(Uart, |s| s.timeout.get() != u64::MAX))
        .absent(mutate!(Uart, |s| s.timeout = U64::new(u64::MAX)))
        // v4: the timeout is a feature of `com.example` (COM_EXAMPLE, below), the vendor at
        // level 1 of the stream's vendor chain: a section carrying it has minor 1 at that
        // level, and a chain with another vendor there is refused, not credited with it.
        .feature_of(
            COM_EXAMPLE,
            VendorTag {
                level: 1,
                minor: 1,
                must_understand: true,
            },
        ),
];

/// The section's table: name, version 1 (oldest accepted 1), the fields in wire order.
pub const UART: Vmsd = Vmsd::new("example-uart", 1, 1, size_of::<Uart>())
    .fields(&[
        field!(Uart, divisor),
        field!(Uart, ier),
        field!(Uart, lsr),
        field!(Uart, rx_head),
        field!(Uart, rx_count),
        field!(Uart, rx_fifo),
    ])
    .subsections(SUBSECTIONS)
    // Runs after the whole body and its subsections; an error refuses the load.
    .validate(check!(Uart, |s, _version| {
        if usize::from(s.rx_head) >= FIFO_LEN {
            return Err(Violation {
                field: "rx_head",
                expected: Expected::Below(FIFO_LEN as u64),
                found: s.rx_head.into(),
            });
        }
        if usize::from(s.rx_count) > FIFO_LEN {
            return Err(Violation {
                field: "rx_count",
                expected: Expected::AtMost(FIFO_LEN as u64),
                found: s.rx_count.into(),
            });
        }
        Ok(())
    }));
// Compile-time: each field's offset, size and kind come from the struct, the table fits it, and
// every byte of the struct is in the table or its subsection (or marked `not_migrated!`), and
// vendor tags name a level of a one-vendor chain.
assert_layout!(Uart, UART, vendors = 1);

impl State for Uart {
    const VMSD: &'static Vmsd = &UART;
}
// ANCHOR_END: device

use vmstate::embedded_io::Write;
use vmstate::wire::Configuration;
use vmstate::writer::StreamWriter;
use vmstate::{IoError, IoSink, SectionId};

/// The UART's identity on the wire.
pub const ID: SectionId<'static> = SectionId {
    section_id: 3,
    idstr: b"example-uart",
    instance_id: 0,
};

/// Largest encoded section of a [`Uart`]: header (14 + idstr), the 22-byte body, the
/// subsection (2 + name + 4 + 8) and the footer (5).
pub const MAX_SECTION_LEN: usize = 14 + 12 + 22 + (2 + 20 + 4 + 8) + 5;

/// Step 1: one section in a caller buffer, and back in one call ([`vmstate::load_section`]).
pub fn round_trip(uart: &Uart, into: &mut Uart) -> vmstate::Result<usize> {
    let mut buf = [0u8; MAX_SECTION_LEN];
    let n = vmstate::encode_section_into(ID, uart, &mut buf)?;
    let section = buf.get(..n).unwrap_or_default();
    vmstate::load_section(into, ID, section)?;
    Ok(n)
}

/// Step 2: a whole v3 migration stream (header, configuration, the UART's section, EOF) over any
/// `embedded_io::Write`, through a 64-byte buffer so the writer sees few, large writes.
pub fn stream<W: Write>(w: W, uart: &Uart) -> Result<W, IoError<W::Error>> {
    let mut out = StreamWriter::new(IoSink::buffered(w, [0u8; 64]));
    out.header(3)?;
    out.configuration(&Configuration::new(b"example-board"))?;
    out.section(ID, uart)?;
    out.eof()?;
    out.into_inner().finish()
}

// ── v4: a vendor feature of `com.example`, migratability with and without it in use ──────

use vmstate::VendorId;
use vmstate::v4::caps::{Capabilities, Report, SectionRequirement, check, check_stream};
use vmstate::v4::wire::{Header, Vendor};

/// The vendor whose feature the timeout subsection is: level 1 of the v4 header's chain.
pub const COM_EXAMPLE: VendorId<'static> = VendorId::new("com.example");

/// The v4 stream's vendor chain: one downstream vendor, `com.example`.
pub const VENDORS: [Vendor<'static>; 1] = [Vendor {
    id: COM_EXAMPLE,
    protocol_minor: 0,
}];

/// The v4 header: the vendor chain and CRC-32C on every record, given once to the writer.
pub fn v4_header() -> vmstate::v4::Result<Header<'static>> {
    Header::new(&VENDORS, true)
}

/// Largest v4 section record of a [`Uart`] under any header ([`vmstate::v4::max_record_len`]):
/// enough for a stack buffer that holds one section whatever the state.
pub const MAX_RECORD_LEN: usize = vmstate::v4::max_record_len(&UART);

/// Step 3: a v4 stream (`header`, the UART's section with its vendor minor, EOF) over any
/// `embedded_io::Write`, through the same 64-byte buffer as the v3 stream.
pub fn stream_v4<W: Write>(w: W, header: &Header<'_>, uart: &Uart) -> Result<W, IoError<W::Error>> {
    let mut out = vmstate::v4::StreamWriter::new(header, IoSink::buffered(w, [0u8; 64]))?;
    out.section(ID, uart)?;
    out.eof()?;
    out.into_inner().finish()
}

/// Room for the incompatibilities a [`Report`] keeps (the UART has one vendor feature).
pub const REPORT_LEN: usize = 2;

/// What a destination can load: a build without the vendor feature (upstream: no vendor
/// chain, the UART at version 1 with no vendor minor, its subsection unknown) or one with it
/// (the vendor chain `com.example`, the UART's table as this build has it). Small capacities:
/// one device, one subsection.
pub fn destination(
    with_feature: bool,
) -> Result<Capabilities<'static, 1, 1>, vmstate::v4::caps::AddError> {
    if with_feature {
        let mut caps = Capabilities::new(&[4], &[COM_EXAMPLE])?;
        caps.add_vmsd(&UART)?;
        Ok(caps)
    } else {
        let mut caps = Capabilities::new(&[4], &[])?;
        caps.add_device(UART.name, UART.minimum_version_id, UART.version_id, &[])?;
        Ok(caps)
    }
}

/// Step 4a: whether the live `uart` can migrate to `dest`, decided before any byte is sent:
/// what encoding it under [`VENDORS`] would need (minors from the vendor subsections that are
/// needed), checked against the destination.
pub fn migratable(
    uart: &Uart,
    dest: &Capabilities<'static, 1, 1>,
) -> vmstate::v4::Result<Report<'static, REPORT_LEN>> {
    let req = SectionRequirement::from_state(ID, &UART, uart.as_bytes(), &VENDORS)?;
    let mut report = Report::new();
    check(&VENDORS, &req, dest, &mut report);
    Ok(report)
}

/// Step 4b: the same decision from a written v4 stream's headers (no body decoded).
pub fn stream_migratable<'a>(
    v4: &'a [u8],
    dest: &Capabilities<'a, 1, 1>,
) -> vmstate::v4::Result<Report<'a, REPORT_LEN>> {
    let mut report = Report::new();
    check_stream(v4, dest, &mut report)?;
    Ok(report)
}
