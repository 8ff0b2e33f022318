//! `i8254` (to be written).
