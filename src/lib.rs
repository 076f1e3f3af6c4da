//! consentgate — a carrier-side inline SMPP gateway filter.
pub mod smpp;
pub mod sim;
pub mod load;
