//! `timer` (to be written).
