//! `[upstream]` and `[upstream.tls]`: the SMSC leg.

use std::path::PathBuf;

use serde::Deserialize;

use super::raw::*;
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub address: Option<String>,
    pub connect_timeout: Option<String>,
    pub bind_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub response_timeout_status: Option<u32>,
    pub enquire_link_interval: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub cmpp: Option<RawUpstreamCmpp>,
}

/// `[upstream.cmpp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamCmpp {
    pub address: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub active_test_interval: Option<String>,
    pub active_test_retries: Option<i64>,
    pub window: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub enabled: Option<bool>,
    pub ca: Option<String>,
    pub server_name: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

pub(super) fn validate_upstream(u: RawUpstream, p: &mut Problems) -> UpstreamConfig {
    let address = match u.address {
        Some(a) if a.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()) => a,
        Some(a) => {
            p.push("upstream.address", format!("`{a}` is not host:port"));
            a
        }
        None => {
            p.push("upstream.address", "required: the SMSC to relay to (host:port)");
            String::new()
        }
    };
    UpstreamConfig {
        connect_timeout: p.duration("upstream.connect_timeout", u.connect_timeout.as_deref(), DEFAULT_CONNECT_TIMEOUT),
        bind_timeout: p.duration("upstream.bind_timeout", u.bind_timeout.as_deref(), DEFAULT_UPSTREAM_BIND_TIMEOUT),
        response_timeout: p.duration(
            "upstream.response_timeout",
            u.response_timeout.as_deref(),
            DEFAULT_UPSTREAM_RESPONSE_TIMEOUT,
        ),
        response_timeout_status: match u.response_timeout_status {
            // The ESME would read a request the SMSC never answered as delivered.
            Some(0) => {
                p.push(
                    "upstream.response_timeout_status",
                    "0 (ESME_ROK) would report an unanswered request as accepted",
                );
                crate::smpp::status::ESME_RSYSERR
            }
            s => s.unwrap_or(crate::smpp::status::ESME_RSYSERR),
        },
        enquire_link_interval: p.duration(
            "upstream.enquire_link_interval",
            u.enquire_link_interval.as_deref(),
            DEFAULT_UPSTREAM_ENQUIRE_LINK_INTERVAL,
        ),
        tls: u.tls.and_then(|t| validate_upstream_tls(t, &address, p)),
        cmpp: u.cmpp.map(|c| validate_upstream_cmpp(c, p)),
        address,
    }
}

fn validate_upstream_cmpp(c: RawUpstreamCmpp, p: &mut Problems) -> crate::relay::CmppUpstreamConfig {
    use crate::relay::upstream as u;
    let address = match c.address {
        Some(a) if a.rsplit_once(':').is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok()) => a,
        Some(a) => {
            p.push("upstream.cmpp.address", format!("`{a}` is not host:port"));
            a
        }
        None => {
            p.push("upstream.cmpp.address", "required: the ISMG to relay CMPP to (host:port)");
            String::new()
        }
    };
    crate::relay::CmppUpstreamConfig {
        address,
        connect_timeout: p.duration(
            "upstream.cmpp.connect_timeout",
            c.connect_timeout.as_deref(),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        response_timeout: p.duration(
            "upstream.cmpp.response_timeout",
            c.response_timeout.as_deref(),
            u::CMPP_RESPONSE_TIMEOUT,
        ),
        active_test_interval: p.duration(
            "upstream.cmpp.active_test_interval",
            c.active_test_interval.as_deref(),
            u::CMPP_ACTIVE_TEST_INTERVAL,
        ),
        active_test_retries: p.range(
            "upstream.cmpp.active_test_retries",
            c.active_test_retries,
            u::CMPP_ACTIVE_TEST_RETRIES as usize,
            1,
            100,
        ) as u32,
        window: p.range("upstream.cmpp.window", c.window, u::CMPP_WINDOW as usize, 1, 1024) as u32,
    }
}

pub(super) fn validate_upstream_tls(
    t: RawUpstreamTls,
    address: &str,
    p: &mut Problems,
) -> Option<crate::relay::ClientTlsConfig> {
    if t.enabled == Some(false) {
        return None;
    }
    let ca = p.required("upstream.tls.ca", t.ca)?;
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let server_name = t.server_name.unwrap_or_else(|| host.to_owned());
    if t.cert.is_some() != t.key.is_some() {
        p.push("upstream.tls.cert", "cert and key go together (a client certificate for the SMSC)");
        return None;
    }
    let cfg = crate::relay::ClientTlsConfig {
        ca: ca.into(),
        server_name,
        cert: t.cert.map(PathBuf::from),
        key: t.key.map(PathBuf::from),
    };
    // A file that cannot be read is a warning here; the start refuses it.
    let files = [("upstream.tls.ca", Some(&cfg.ca)), ("upstream.tls.cert", cfg.cert.as_ref())];
    let files = files.into_iter().chain([("upstream.tls.key", cfg.key.as_ref())]);
    let readable = files.filter_map(|(k, f)| Some((k, f?))).fold(true, |ok, (k, f)| p.readable(k, f) && ok);
    if !readable {
        return Some(cfg);
    }
    if let Err(e) = crate::relay::tls::client_config(&cfg) {
        let key = match &e {
            crate::relay::tls::TlsError::File { path, .. } if Some(path) == cfg.cert.as_ref() => "cert",
            crate::relay::tls::TlsError::File { path, .. } if Some(path) == cfg.key.as_ref() => "key",
            crate::relay::tls::TlsError::File { .. } => "ca",
            crate::relay::tls::TlsError::Rustls(_) => "server_name",
        };
        p.push(format!("upstream.tls.{key}"), e.to_string());
    }
    Some(cfg)
}
