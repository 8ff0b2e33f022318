//! Host-side tooling for vmstate streams.
#![doc = ""]
#![deny(missing_docs)]
