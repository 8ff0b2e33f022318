//! Typed, hardened models of QEMU 7.2 and 10.0 `pc-i440fx` / `pc-q35` device state for the
//! `vmstate` codec; [`machine`] derives their destination configuration from a machine type.
//!
//! One file per device: the zerocopy state struct(s), the const description table(s) checked
//! against them at compile time, the `needed` predicates, the invariants enforced on load (each
//! naming the CVE class it prevents, per docs/UNTRUSTED-INPUT.md §4) and tests on real bytes.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fw_cfg;
pub mod globalstate;
pub mod hpet;
pub mod i8254;
pub mod i8259;
pub mod ioapic;
pub mod machine;
pub mod pc;
pub mod pcspk;
pub mod port92;
pub mod rtc;
pub mod serial;
pub mod timer;

#[cfg(test)]
mod test_fixtures;

#[cfg(test)]
mod plan_tests;
