//! `globalstate` (to be written).
