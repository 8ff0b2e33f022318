//! `i8259` (to be written).
