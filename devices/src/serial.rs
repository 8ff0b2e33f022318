//! `serial` (to be written).
