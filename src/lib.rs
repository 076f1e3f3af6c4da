//! consentgate — a carrier-side inline SMPP gateway filter.
//!
//! ```text
//!  sender platforms (ESMEs) ──SMPP──► consentgate ──SMPP──► carrier core SMSC
//!                           ◄──────              ◄──────   (responses, DLRs, MO)
//! ```
//!
//! Module map (DESIGN §6): [`config`] raw TOML → validated [`config::Config`]; [`smpp`] framing,
//! header, field peeking, PDU builders; [`session`] one task per ESME connection (bind,
//! window, enquire_link, unbind, drain); [`relay`] the paired upstream leg, sequence
//! remapping and the plain baseline relay; [`sim`] the SMSC simulator; [`load`] the ESME load
//! generator; [`capture`] the gateway's pcapng recorder; [`pcap`] capture reading (replay) and
//! packet writing; [`demo`] everything wired together on loopback.
//!
//! The library entry point is [`run`] (or [`Gateway::bind`] + [`Gateway::serve`] when the
//! caller needs the bound address first, as tests and the demo do).

// `unsafe` is allowed only where a module says why: `consent::snapshot::{image, table}` and
// the host name lookup in `consent::statement`, each block with a `SAFETY` comment.
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod capture;
pub mod config;
pub mod consent;
pub mod demo;
pub mod gateway;
pub mod load;
pub mod optout;
pub mod pcap;
pub mod policy;
pub mod relay;
pub mod session;
pub mod sim;
pub mod smpp;
pub mod telemetry;
pub mod time;

pub use gateway::{run, Gateway};
