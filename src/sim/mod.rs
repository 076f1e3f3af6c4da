//! SMSC simulator (in progress).
