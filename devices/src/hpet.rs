//! `hpet` (to be written).
