//! v4 tools (filled in below).
