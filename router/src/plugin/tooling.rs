//! CLI support (filled in below).
