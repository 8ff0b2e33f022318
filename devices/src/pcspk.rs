//! `pcspk` (to be written).
