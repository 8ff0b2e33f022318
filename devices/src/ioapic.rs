//! `ioapic` (to be written).
