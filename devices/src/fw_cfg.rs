//! `fw_cfg` (to be written).
