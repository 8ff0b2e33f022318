//! `port92` (to be written).
