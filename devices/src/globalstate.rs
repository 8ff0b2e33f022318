//! Global migration state (`globalstate`): QEMU 7.2 `migration/global_state.c`, format §17,
//! invariants `untrusted-input.md` §2.1 and §4.7.
//!
//! Wire layout (version 1, minimum 1; 104 bytes): `size` u32 (the writer's `strlen + 1`) and
//! `runstate`, a 100-byte buffer holding the source's run-state name as a C string. The
//! section itself is sent when `store-global-state` is on or the run state is neither `running`
//! nor `paused` (a section-level decision outside this body codec).
//!
//! QEMU 7.2 loads the buffer raw, forces a NUL into its last byte if it has none (commit
//! a346af9c, "a malicious stream could overflow the qapi_enum_parse() call") and then fails the
//! load unless the string is a `RunState` name. It ignores `size`. The bytes after the NUL are
//! whatever the source's buffer held (`runstate_store` copies only `strlen + 1` bytes into a
//! static buffer, so an earlier, longer name can leave its tail behind): they are accepted and
//! kept, so round trips stay byte-exact.
//!
//! Load rules (a rejected load leaves the state unchanged; "MUST" is class (a) of
//! `untrusted-input.md` §3.3, "should" class (c), rejected by default):
//!
//! | rule | class | error |
//! |---|---|---|
//! | `runstate` has a NUL within its 100 bytes | MUST | `Invalid`, field `runstate`, found 100 |
//! | the name before the NUL is a QEMU 7.2 run-state name (QEMU's own check) | MUST | `Invalid`, field `runstate`, found the name's length |
//! | `size == strlen(runstate) + 1` (QEMU does not check it) | should | `Invalid { Equal(strlen + 1) }`, field `size` |

use vmstate::schema::Vmsd;
use vmstate::{Expected, State, Violation, assert_layout, check, field};
use zerocopy::byteorder::big_endian::U32;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of the `runstate` buffer.
pub const RUNSTATE_LEN: usize = 100;

/// QEMU 7.2's `RunState` values (`qapi/run-state.json`), in QAPI order.
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

/// The `globalstate` body; this struct is the 104-byte wire body.
#[repr(C)]
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
pub struct GlobalState {
    /// `strlen(runstate) + 1` as the writer computed it.
    pub size: U32,
    /// The run-state name, NUL-terminated.
    pub runstate: [u8; RUNSTATE_LEN],
}

impl GlobalState {
    /// The body a source in run state `state` writes (name, NUL, zero padding).
    pub fn new(state: RunState) -> GlobalState {
        let mut s = GlobalState::new_zeroed();
        let name = state.name().as_bytes();
        s.runstate[..name.len()].copy_from_slice(name);
        s.size = (name.len() as u32 + 1).into();
        s
    }

    /// The bytes before the first NUL, or `None` if the buffer has no NUL.
    pub fn name(&self) -> Option<&[u8]> {
        let end = self.runstate.iter().position(|&b| b == 0)?;
        Some(&self.runstate[..end])
    }

    /// The run state the buffer names, if it is a valid one.
    pub fn run_state(&self) -> Option<RunState> {
        self.name().and_then(RunState::from_name)
    }

    /// The load rules (module docs).
    pub fn check(&self) -> Result<(), Violation> {
        // Unterminated string parsed past its buffer (QEMU a346af9c, no CVE): without a NUL,
        // qapi_enum_parse's strcmp reads beyond the 100 bytes.
        let Some(name) = self.name() else {
            return Err(Violation {
                field: "runstate",
                expected: Expected::Rule("a NUL within the 100-byte buffer"),
                found: RUNSTATE_LEN as u64,
            });
        };
        // An enum that selects code (§3.1): QEMU refuses unknown names too.
        if RunState::from_name(name).is_none() {
            return Err(Violation {
                field: "runstate",
                expected: Expected::Rule("a QEMU 7.2 run-state name"),
                found: name.len() as u64,
            });
        }
        // Should reject (class c, no CVE): a writer always sends strlen + 1; QEMU never
        // reads the value.
        let want = name.len() as u64 + 1;
        if self.size.get() as u64 != want {
            return Err(Violation {
                field: "size",
                expected: Expected::Equal(want),
                found: self.size.get() as u64,
            });
        }
        Ok(())
    }
}

/// `globalstate` description (version 1).
pub const VMSD: Vmsd = Vmsd::new("globalstate", 1, 1, core::mem::size_of::<GlobalState>())
    .fields(&[field!(GlobalState, size), field!(GlobalState, runstate)])
    .validate(check!(GlobalState, |s, _v| s.check()));
assert_layout!(GlobalState, VMSD, wire);

impl State for GlobalState {
    const VMSD: &'static Vmsd = &VMSD;
}

#[cfg(test)]
use crate::test_fixtures as fixtures;

#[cfg(test)]
mod tests {
    extern crate std;
    use super::fixtures::{ALL_STREAMS, section};
    use super::*;
    use std::format;
    use std::string::String;
    use std::vec::Vec;
    use vmstate::{Error, ErrorKind, load};

    fn analyze(s: &GlobalState) -> String {
        let hex: Vec<String> = s.runstate.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{{\"size\":\"0x{:08x}\",\"runstate\":\"{}\"}}",
            s.size.get(),
            hex.join(" ")
        )
    }

    fn load_err(body: &[u8]) -> Error {
        fixtures::load_err(GlobalState::new(RunState::Running), 1, body)
    }

    #[test]
    fn real_sections_decode_reencode_and_describe_like_qemu() {
        let want = [RunState::Prelaunch, RunState::Paused, RunState::Prelaunch];
        for ((stream, state_json), want) in ALL_STREAMS.into_iter().zip(want) {
            let rec = section(stream, "globalstate", 0);
            assert_eq!((rec.version_id, rec.body.len()), (1, 104));
            let s = fixtures::round_trip(
                stream,
                "globalstate",
                0,
                GlobalState::new(RunState::Running),
            );
            assert_eq!(s.run_state(), Some(want));
            assert_eq!(s, GlobalState::new(want));
            fixtures::describes_like_qemu(stream, state_json, "globalstate", &s, &analyze(&s));
            // Zero-copy view: the struct is the body.
            assert_eq!(s.as_bytes(), rec.body);
        }
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let body = GlobalState::new(RunState::Paused);
        for n in 0..104 {
            assert!(load_err(&body.as_bytes()[..n]).is_incomplete());
        }
    }

    #[test]
    fn every_run_state_round_trips() {
        for r in RunState::ALL {
            let s = GlobalState::new(r);
            let mut d = GlobalState::new(RunState::Running);
            load(&mut d, 1, s.as_bytes(), 0).unwrap();
            assert_eq!((d, d.run_state()), (s, Some(r)));
        }
    }

    #[test]
    fn unterminated_or_unknown_names_are_rejected() {
        let mut b = [b'a'; 104];
        b[..4].copy_from_slice(&101u32.to_be_bytes());
        let e = load_err(&b);
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
        for name in [&b""[..], b"runnin", b"running ", b"RUNNING", b"preconfig"] {
            let mut s = GlobalState::new_zeroed();
            s.runstate[..name.len()].copy_from_slice(name);
            s.size = (name.len() as u32 + 1).into();
            let e = load_err(s.as_bytes());
            assert_eq!(
                (e.kind, e.field, e.offset),
                (
                    ErrorKind::Invalid {
                        expected: Expected::Rule("a QEMU 7.2 run-state name"),
                        found: name.len() as u64
                    },
                    Some("runstate"),
                    1004
                )
            );
        }
    }

    #[test]
    fn size_must_be_strlen_plus_one() {
        let mut s = GlobalState::new(RunState::Paused);
        for bad in [0u32, 6, 8, 100, u32::MAX] {
            s.size = bad.into();
            let e = load_err(s.as_bytes());
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

    #[test]
    fn bytes_after_the_nul_are_accepted_and_kept() {
        // A source that stored "prelaunch" before "paused" leaves "ch\0" behind the name.
        let mut s = GlobalState::new(RunState::Prelaunch);
        s.runstate[..7].copy_from_slice(b"paused\0");
        s.size = 7.into();
        assert_eq!(&s.runstate[..10], b"paused\0ch\0");
        let mut d = GlobalState::new(RunState::Running);
        load(&mut d, 1, s.as_bytes(), 0).expect("reachable");
        assert_eq!((d, d.run_state()), (s, Some(RunState::Paused)));
        let mut out = [0xa5u8; 104];
        assert_eq!(vmstate::encode_body_into(&d, &mut out).unwrap(), 104);
        assert_eq!(&out, s.as_bytes());
    }
}
