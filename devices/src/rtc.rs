//! `rtc` (to be written).
