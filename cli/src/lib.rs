//! Host-side tooling for vmstate streams.
#![deny(missing_docs)]
