//! ESME load generator (in progress).
