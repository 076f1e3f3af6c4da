//! The one-command demo (filled in below).
