//! Typed models of QEMU 7.2 `pc` device state.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
