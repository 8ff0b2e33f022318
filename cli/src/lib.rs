//! Host-side tooling for vmstate streams.
#![deny(missing_docs)]
pub mod static_check;
pub mod v4tools;
