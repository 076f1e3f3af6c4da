//! consentgate — a carrier-side inline SMPP gateway filter.
//!
//! ```text
//!  sender platforms (ESMEs) ──SMPP──► consentgate ──SMPP──► carrier core SMSC
//!                           ◄──────              ◄──────   (responses, DLRs, MO)
//! ```
//!
//! Module map (architecture §6), by layer; each layer imports only the layers above it in this list
//! (`tests/layers.rs` checks it):
//!
//! | layer | modules |
//! |---|---|
//! | 0 leaves | [`time`] clocks, calendar days, local time, timestamp parsing; [`smpp`] framing, header, field peeking, text (GSM-7, UCS-2), PDU builders, statuses; [`cmpp`] the CMPP 2.0/3.0 wire (framing, views, builders, Msg_Id, Msg_Fmt text) on top of `smpp`'s text folding; [`telemetry`] logging and metric names; [`pcap`] capture reading and packet writing |
//! | 1 data | [`consent`] statements, MSISDNs, source CSVs, the snapshot (format, builder, loader, lookup), journal, live delta, store |
//! | 2 decisions, sinks | [`policy`] the decision pipeline (`Engine`, `SessionPolicy`); [`optout`] MO keyword capture; [`audit`] the decision audit log; [`capture`] the pcapng recorder |
//! | 3 connections | [`relay`] legs and transports, the upstream SMSC, sequence tables, the plain baseline relay; [`session`] one task per ESME connection |
//! | 4 process | [`admin`] the HTTP API through a narrow handle; [`gateway`] listener, lifecycle, control channel, the composed config type |
//! | 5 composition | [`config`] TOML → each owner's validated type; [`demo`] everything on loopback |
//! | tools | [`sim`] the SMSC simulator; [`load`] the ESME load generator and pcap replay |
//!
//! "architecture §N" in the code's comments is section N of the design document,
//! `docs/src/architecture.md` (the book's Architecture chapter).
//!
//! The library entry point is [`run`] (or [`Gateway::bind`] + [`Gateway::serve`] when the
//! caller needs the bound address first, as tests and the demo do).

// `unsafe` is allowed only where a module says why: `consent::snapshot::{image, table}` and
// the host name lookup in `consent::statement`, the frequency tables' allocation in
// `policy::frequency` and the UCS-2 fold in `smpp::text`, each block with a `SAFETY` comment.
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod capture;
pub mod cmpp;
pub mod complaints;
pub mod config;
pub mod consent;
pub mod demo;
pub mod dlt;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod load;
pub mod optout;
pub mod pcap;
pub mod policy;
pub mod relay;
pub mod replication;
pub mod session;
pub mod sim;
pub mod smpp;
pub mod telemetry;
pub mod time;

pub use gateway::{run, Gateway};
