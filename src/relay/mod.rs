//! Connections to peers: a session's legs ([`LegState`]: buffers and framing state, apart from
//! the [`Transport`] that moves the bytes), the upstream SMSC (its config, the paired upstream bind
//! and the reachability probe: [`upstream`]), sequence remapping ([`seq`]) and the plain frame
//! relay used as the benchmark baseline ([`plain`]), and TLS on either leg ([`tls`]; the
//! certificates' expiry read by [`x509`]).

pub mod fds;
pub mod leg;
pub mod plain;
pub mod seq;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod x509;

pub use leg::{LegState, OUT_HIGH_WATER, READ_CHUNK};
pub use tls::{ClientTlsConfig, ServerTlsConfig, TlsClient, TlsServer};
pub use transport::Transport;
pub use upstream::{bind_upstream, CmppUpstreamConfig, UpstreamBind, UpstreamBindError, UpstreamConfig};
