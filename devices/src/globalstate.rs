//! Global migration state (`globalstate`): QEMU `migration/global_state.c`, docs/V3-WIRE.md §17,
//! invariants docs/UNTRUSTED-INPUT.md §2.1 and §4.7.
//!
//! The body is 104 bytes in both builds (version 1, minimum 1), laid out differently:
//!
//! * QEMU 7.2 ([`VMSD_7_2`]): `size` u32 (the writer's `strlen + 1`) and `runstate`, a
//!   100-byte buffer holding the run-state name as a C string. The loader forces a NUL into the
//!   last byte if there is none (commit a346af9c) and fails unless the string is a `RunState`
//!   name; it ignores `size` and every byte after the NUL.
//! * QEMU 9.0+ ([`VMSD`], "migration: propagate suspended runstate"): `size` u32,
//!   `runstate[32]`, `has_vm_was_suspended` u8, `vm_was_suspended` u8, `unused[66]`. The writer
//!   zero-pads the name to 32 bytes, sets `has_vm_was_suspended` to 1 and zeroes `unused`, so
//!   byte 32 of the old 100-byte buffer is 0x01 in every 10.0 stream (whatever the machine
//!   type). The loader forces a NUL into `runstate[31]`, fails unless the name is a `RunState`
//!   name, and resumes suspended if `vm_was_suspended` (or the state is `suspended`).
//!
//! Each build reads the other's streams: a 7.2 stream's name sits in the first 32 bytes (every
//! run-state name is shorter) followed by zeros (7.2's static buffer only ever held names), and
//! a 10.0 stream's name is NUL-terminated within 100 bytes. [`GlobalState`] is the 10.0 layout;
//! the 7.2 table reads the same 104 bytes as one buffer, so a round trip is byte-exact with
//! either table.
//!
//! Load rules (a rejected load leaves the state unchanged; "MUST" is class (a) of
//! docs/UNTRUSTED-INPUT.md §3.3, "should" class (c), rejected by default):
//!
//! | rule | destination | class | error |
//! |---|---|---|---|
//! | a NUL within `runstate` (100 bytes on 7.2, 32 on 10.0) | both | MUST | `Invalid`, field `runstate`, found the buffer length |
//! | the name before the NUL is a run-state name (QEMU's own check) | both | MUST | `Invalid`, field `runstate`, found the name's length |
//! | `size == strlen(runstate) + 1` (QEMU does not check it) | both | should | `Invalid { Equal(strlen + 1) }`, field `size` |
//! | `has_vm_was_suspended` and `vm_was_suspended` are 0 or 1 (the writer stores a bool; QEMU does not check) | 10.0 | should | `Invalid { AtMost(1) }`, the field |
//!
//! Accepted as QEMU does: on a 7.2 destination any bytes after the NUL; on a 10.0 destination
//! any bytes after the NUL within `runstate` and any `unused` bytes (kept, so round trips stay
//! byte-exact).

use vmstate::schema::Vmsd;
use vmstate::{Expected, State, Violation, assert_layout, check, field};
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of QEMU 7.2's `runstate` buffer (the whole body after `size`).
pub const RUNSTATE_LEN: usize = 100;
/// Bytes of QEMU 10.0's `runstate` buffer.
pub const RUNSTATE_LEN_10_0: usize = 32;

/// QEMU's `RunState` values (`qapi/run-state.json`; the same list in 7.2 and 10.0), in QAPI
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// `debug`.
    Debug,
    /// `inmigrate`.
    Inmigrate,
    /// `internal-error`.
    InternalError,
    /// `io-error`.
    IoError,
    /// `paused`.
    Paused,
    /// `postmigrate`.
    Postmigrate,
    /// `prelaunch`.
    Prelaunch,
    /// `finish-migrate`.
    FinishMigrate,
    /// `restore-vm`.
    RestoreVm,
    /// `running`.
    Running,
    /// `save-vm`.
    SaveVm,
    /// `shutdown`.
    Shutdown,
    /// `suspended`.
    Suspended,
    /// `watchdog`.
    Watchdog,
    /// `guest-panicked`.
    GuestPanicked,
    /// `colo`.
    Colo,
}

impl RunState {
    /// Every run state, in QAPI order.
    pub const ALL: [RunState; 16] = [
        RunState::Debug,
        RunState::Inmigrate,
        RunState::InternalError,
        RunState::IoError,
        RunState::Paused,
        RunState::Postmigrate,
        RunState::Prelaunch,
        RunState::FinishMigrate,
        RunState::RestoreVm,
        RunState::Running,
        RunState::SaveVm,
        RunState::Shutdown,
        RunState::Suspended,
        RunState::Watchdog,
        RunState::GuestPanicked,
        RunState::Colo,
    ];

    /// The QAPI name, as carried on the wire.
    pub const fn name(self) -> &'static str {
        match self {
            RunState::Debug => "debug",
            RunState::Inmigrate => "inmigrate",
            RunState::InternalError => "internal-error",
            RunState::IoError => "io-error",
            RunState::Paused => "paused",
            RunState::Postmigrate => "postmigrate",
            RunState::Prelaunch => "prelaunch",
            RunState::FinishMigrate => "finish-migrate",
            RunState::RestoreVm => "restore-vm",
            RunState::Running => "running",
            RunState::SaveVm => "save-vm",
            RunState::Shutdown => "shutdown",
            RunState::Suspended => "suspended",
            RunState::Watchdog => "watchdog",
            RunState::GuestPanicked => "guest-panicked",
            RunState::Colo => "colo",
        }
    }

    /// The run state named exactly `name` (no NUL, no padding).
    pub fn from_name(name: &[u8]) -> Option<RunState> {
        RunState::ALL
            .into_iter()
            .find(|r| r.name().as_bytes() == name)
    }
}

/// The `globalstate` body in QEMU 10.0's layout; this struct is the 104-byte wire body.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct GlobalState {
    /// `strlen(runstate) + 1` as the writer computed it.
    pub size: U32,
    /// The run-state name, NUL-terminated (zero-padded by QEMU 10.0).
    pub runstate: [u8; RUNSTATE_LEN_10_0],
    /// 1 when the writer knew `vm_was_suspended` (QEMU ≥ 9.0), 0 in 7.2 streams.
    pub has_vm_was_suspended: u8,
    /// The source was suspended (resume suspended on the destination).
    pub vm_was_suspended: u8,
    /// Zeros from a QEMU ≥ 9.0 writer.
    pub unused: [u8; 66],
}

/// QEMU 7.2's view of the same 104 bytes: `size` and one 100-byte buffer.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct GlobalState72 {
    /// `strlen(runstate) + 1` as the writer computed it.
    pub size: U32,
    /// The run-state name, NUL-terminated.
    pub runstate: [u8; RUNSTATE_LEN],
}

/// The name before the first NUL of `buf`, or `None` without a NUL.
fn c_name(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|&b| b == 0)?;
    Some(&buf[..end])
}

/// The rules both builds share: a NUL in the buffer, a run-state name, `size`.
fn check_name(size: u32, buf: &[u8]) -> Result<(), Violation> {
    // Unterminated string parsed past its buffer (QEMU a346af9c, no CVE): without a NUL,
    // qapi_enum_parse's strcmp reads beyond the buffer.
    let Some(name) = c_name(buf) else {
        return Err(Violation {
            field: "runstate",
            expected: Expected::Rule(if buf.len() == RUNSTATE_LEN {
                "a NUL within the 100-byte buffer"
            } else {
                "a NUL within the 32-byte buffer"
            }),
            found: buf.len() as u64,
        });
    };
    // An enum that selects code (§3.1): QEMU refuses unknown names too.
    if RunState::from_name(name).is_none() {
        return Err(Violation {
            field: "runstate",
            expected: Expected::Rule("a QEMU run-state name"),
            found: name.len() as u64,
        });
    }
    // Should reject (class c, no CVE): a writer always sends strlen + 1; QEMU never reads it.
    let want = name.len() as u64 + 1;
    if size as u64 != want {
        return Err(Violation {
            field: "size",
            expected: Expected::Equal(want),
            found: size as u64,
        });
    }
    Ok(())
}

impl GlobalState72 {
    /// QEMU 7.2's load rules (module docs).
    pub fn check(&self) -> Result<(), Violation> {
        check_name(self.size.get(), &self.runstate)
    }
}

impl GlobalState {
    /// The body a QEMU 10.0 source in run state `state` writes (name, zero padding,
    /// `has_vm_was_suspended` 1, not suspended).
    pub fn new(state: RunState) -> GlobalState {
        let mut s = GlobalState::new_zeroed();
        let name = state.name().as_bytes();
        s.runstate[..name.len()].copy_from_slice(name);
        s.size = (name.len() as u32 + 1).into();
        s.has_vm_was_suspended = 1;
        s
    }

    /// The body a QEMU 7.2 source in run state `state` writes (name, zero padding).
    pub fn new_7_2(state: RunState) -> GlobalState {
        let mut s = GlobalState::new(state);
        s.has_vm_was_suspended = 0;
        s
    }

    /// The bytes before the first NUL of the 100 bytes after `size` (QEMU 7.2's reading, which
    /// equals 10.0's for every name that fits its 32 bytes), or `None` if there is no NUL.
    pub fn name(&self) -> Option<&[u8]> {
        c_name(&self.as_bytes()[4..])
    }

    /// The run state the buffer names, if it is a valid one.
    pub fn run_state(&self) -> Option<RunState> {
        self.name().and_then(RunState::from_name)
    }

    /// QEMU 10.0's load rules (module docs).
    pub fn check(&self) -> Result<(), Violation> {
        check_name(self.size.get(), &self.runstate)?;
        // Should reject (class c, no CVE): the writer stores bools.
        for (field, v) in [
            ("has_vm_was_suspended", self.has_vm_was_suspended),
            ("vm_was_suspended", self.vm_was_suspended),
        ] {
            if v > 1 {
                return Err(Violation {
                    field,
                    expected: Expected::AtMost(1),
                    found: v as u64,
                });
            }
        }
        Ok(())
    }
}

/// QEMU 10.0's `globalstate` description (version 1; `runstate[32]` and the suspend fields).
pub const VMSD: Vmsd = Vmsd::new("globalstate", 1, 1, core::mem::size_of::<GlobalState>())
    .fields(&[
        field!(GlobalState, size),
        field!(GlobalState, runstate),
        field!(GlobalState, has_vm_was_suspended),
        field!(GlobalState, vm_was_suspended),
        field!(GlobalState, unused),
    ])
    .validate(check!(GlobalState, |s, _v| s.check()));
assert_layout!(GlobalState, VMSD, wire);

/// QEMU 7.2's `globalstate` description (version 1; `runstate[100]`), over the same bytes.
pub const VMSD_7_2: Vmsd = Vmsd::new("globalstate", 1, 1, core::mem::size_of::<GlobalState72>())
    .fields(&[field!(GlobalState72, size), field!(GlobalState72, runstate)])
    .validate(check!(GlobalState72, |s, _v| s.check()));
assert_layout!(GlobalState72, VMSD_7_2, wire);
const _: () = assert!(core::mem::size_of::<GlobalState72>() == core::mem::size_of::<GlobalState>());

impl State for GlobalState {
    const VMSD: &'static Vmsd = &VMSD;
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixtures::{ALL_STREAMS, V2, section};
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;
    use vmstate::{Error, ErrorKind, load, load_with};

    fn hex(b: &[u8]) -> String {
        let h: Vec<String> = b.iter().map(|b| format!("{b:02x}")).collect();
        h.join(" ")
    }

    /// analyze-migration.py's rendering with QEMU 7.2's table.
    fn analyze_7_2(s: &GlobalState) -> String {
        format!(
            "{{\"size\":\"0x{:08x}\",\"runstate\":\"{}\"}}",
            s.size.get(),
            hex(&s.as_bytes()[4..])
        )
    }

    /// analyze-migration.py's rendering with QEMU 10.0's table.
    fn analyze(s: &GlobalState) -> String {
        format!(
            "{{\"size\":\"0x{:08x}\",\"runstate\":\"{}\",\"has_vm_was_suspended\":\"0x{:02x}\",\
             \"vm_was_suspended\":\"0x{:02x}\",\"unused\":\"{}\"}}",
            s.size.get(),
            hex(&s.runstate),
            s.has_vm_was_suspended,
            s.vm_was_suspended,
            hex(&s.unused)
        )
    }

    fn load_err(body: &[u8]) -> Error {
        fixtures::load_err(GlobalState::new(RunState::Running), 1, body)
    }

    fn load_err_7_2(body: &[u8]) -> Error {
        let live = GlobalState::new(RunState::Running);
        let mut s = live;
        let e = load_with(&VMSD_7_2, &mut s, 1, body, 1000).expect_err("must be rejected");
        assert_eq!(s, live, "a rejected load changed the state");
        e
    }

    #[test]
    fn real_7_2_sections_decode_reencode_and_describe_like_qemu() {
        let want = [RunState::Prelaunch, RunState::Paused, RunState::Prelaunch];
        for ((stream, state_json), want) in ALL_STREAMS.into_iter().zip(want) {
            let rec = section(stream, "globalstate", 0);
            assert_eq!((rec.version_id, rec.body.len()), (1, 104));
            let init = GlobalState::new(RunState::Running);
            let s = fixtures::round_trip_with(&VMSD_7_2, stream, "globalstate", 0, init);
            assert_eq!(s.run_state(), Some(want));
            assert_eq!(s, GlobalState::new_7_2(want));
            fixtures::describes_like_qemu_with(
                &VMSD_7_2,
                stream,
                state_json,
                "globalstate",
                &s,
                &analyze_7_2(&s),
            );
            // Zero-copy view: the struct is the body.
            assert_eq!(s.as_bytes(), rec.body);
            // QEMU 10.0 reads the same body (the name fits its 32 bytes, zeros follow).
            assert_eq!(fixtures::round_trip(stream, "globalstate", 0, init), s);
        }
    }

    /// Both layouts on the streams of both builds: each build's table describes its own
    /// streams as that build's trailer does, byte 32 of the old buffer is 0x01 in every 10.0
    /// stream (pc-i440fx-7.2 included) and 0x00 in 7.2's, and both tables load and re-encode
    /// every stream byte for byte.
    #[test]
    fn both_layouts_read_both_builds_streams() {
        for (name, stream, state_json) in V2 {
            let rec = section(stream, "globalstate", 0);
            let new_writer = name.starts_with("q10");
            assert_eq!(rec.body[4 + 32], new_writer as u8, "{name}");
            let init = GlobalState::new(RunState::Running);
            let s = fixtures::round_trip(stream, "globalstate", 0, init);
            let s72 = fixtures::round_trip_with(&VMSD_7_2, stream, "globalstate", 0, init);
            assert_eq!(s, s72, "{name}");
            assert!(s.run_state().is_some(), "{name}");
            let want = |r| {
                if new_writer {
                    GlobalState::new(r)
                } else {
                    GlobalState::new_7_2(r)
                }
            };
            assert_eq!(s, want(s.run_state().unwrap()), "{name}");
            if let Some(state_json) = state_json {
                if new_writer {
                    fixtures::describes_like_qemu(
                        stream,
                        state_json,
                        "globalstate",
                        &s,
                        &analyze(&s),
                    );
                } else {
                    fixtures::describes_like_qemu_with(
                        &VMSD_7_2,
                        stream,
                        state_json,
                        "globalstate",
                        &s,
                        &analyze_7_2(&s),
                    );
                }
            }
        }
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let body = GlobalState::new(RunState::Paused);
        for n in 0..104 {
            assert!(load_err(&body.as_bytes()[..n]).is_incomplete());
            assert!(load_err_7_2(&body.as_bytes()[..n]).is_incomplete());
        }
    }

    #[test]
    fn every_run_state_round_trips() {
        for r in RunState::ALL {
            for s in [GlobalState::new(r), GlobalState::new_7_2(r)] {
                for vmsd in [&VMSD, &VMSD_7_2] {
                    let mut d = GlobalState::new(RunState::Running);
                    load_with(vmsd, &mut d, 1, s.as_bytes(), 0).unwrap();
                    assert_eq!((d, d.run_state()), (s, Some(r)));
                }
            }
        }
    }

    #[test]
    fn unterminated_or_unknown_names_are_rejected() {
        let mut b = [b'a'; 104];
        b[..4].copy_from_slice(&101u32.to_be_bytes());
        let e = load_err_7_2(&b);
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::Rule("a NUL within the 100-byte buffer"),
                    found: 100
                },
                Some("runstate"),
                1004
            )
        );
        // QEMU 10.0 looks for the NUL within 32 bytes (and forces one into byte 31: no name is
        // 31 bytes long, so the name is refused either way).
        let mut s = GlobalState::new(RunState::Paused);
        s.runstate.fill(b'a');
        s.runstate[..6].copy_from_slice(b"paused");
        let e = load_err(s.as_bytes());
        assert_eq!(
            (e.kind, e.field, e.offset),
            (
                ErrorKind::Invalid {
                    expected: Expected::Rule("a NUL within the 32-byte buffer"),
                    found: 32
                },
                Some("runstate"),
                1004
            )
        );
        // ... which QEMU 7.2 reads as a 33-byte name, not a run state.
        let e = load_err_7_2(s.as_bytes());
        assert_eq!(
            e.kind,
            ErrorKind::Invalid {
                expected: Expected::Rule("a QEMU run-state name"),
                found: 33
            }
        );
        for name in [&b""[..], b"runnin", b"running ", b"RUNNING", b"preconfig"] {
            let mut s = GlobalState::new_zeroed();
            s.runstate[..name.len()].copy_from_slice(name);
            s.size = (name.len() as u32 + 1).into();
            for e in [load_err(s.as_bytes()), load_err_7_2(s.as_bytes())] {
                assert_eq!(
                    (e.kind, e.field, e.offset),
                    (
                        ErrorKind::Invalid {
                            expected: Expected::Rule("a QEMU run-state name"),
                            found: name.len() as u64
                        },
                        Some("runstate"),
                        1004
                    )
                );
            }
        }
    }

    #[test]
    fn size_must_be_strlen_plus_one() {
        let mut s = GlobalState::new(RunState::Paused);
        for bad in [0u32, 6, 8, 100, u32::MAX] {
            s.size = bad.into();
            for e in [load_err(s.as_bytes()), load_err_7_2(s.as_bytes())] {
                assert_eq!(
                    (e.kind, e.field, e.offset),
                    (
                        ErrorKind::Invalid {
                            expected: Expected::Equal(7),
                            found: bad as u64
                        },
                        Some("size"),
                        1000
                    )
                );
            }
        }
    }

    #[test]
    fn suspend_flags_are_bools_for_qemu_10_0_and_ignored_by_7_2() {
        let mut s = GlobalState::new(RunState::Paused);
        s.vm_was_suspended = 1;
        let mut d = GlobalState::new(RunState::Running);
        load(&mut d, 1, s.as_bytes(), 0).expect("a suspended source");
        assert_eq!(d, s);
        for (at, field) in [(36, "has_vm_was_suspended"), (37, "vm_was_suspended")] {
            let mut b = s.as_bytes().to_vec();
            b[at] = 2;
            let e = load_err(&b);
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::AtMost(1),
                        found: 2
                    },
                    Some(field),
                    1000 + at
                )
            );
            // After QEMU 7.2's NUL: any byte.
            let mut d = GlobalState::new(RunState::Running);
            load_with(&VMSD_7_2, &mut d, 1, &b, 0).expect("7.2 ignores it");
            assert_eq!(d.as_bytes(), &b[..]);
        }
    }

    #[test]
    fn bytes_after_the_nul_are_accepted_and_kept() {
        // A source that stored "prelaunch" before "paused" leaves "ch\0" behind the name.
        let mut s = GlobalState::new(RunState::Prelaunch);
        s.runstate[..7].copy_from_slice(b"paused\0");
        s.size = 7.into();
        s.unused[65] = 0x5a;
        assert_eq!(&s.runstate[..10], b"paused\0ch\0");
        for vmsd in [&VMSD, &VMSD_7_2] {
            let mut d = GlobalState::new(RunState::Running);
            load_with(vmsd, &mut d, 1, s.as_bytes(), 0).expect("reachable");
            assert_eq!((d, d.run_state()), (s, Some(RunState::Paused)));
            let mut out = [0xa5u8; 104];
            let mut sink = vmstate::SliceSink::new(&mut out);
            vmstate::body::encode_body(vmsd, d.as_bytes(), &mut sink).unwrap();
            assert_eq!(sink.finish(), 104);
            assert_eq!(&out, s.as_bytes());
        }
    }
}
