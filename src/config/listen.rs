//! `[listen]` and `[listen.tls]`: the ESME-facing and admin listeners.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::raw::*;
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub smpp: Option<String>,
    pub smpp_tls: Option<String>,
    pub cmpp: Option<String>,
    pub admin: Option<String>,
    pub tls: Option<RawListenTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
}

pub(super) fn validate_listen(l: RawListen, p: &mut Problems) -> ListenConfig {
    let smpp_tls = l.smpp_tls.as_deref().and_then(|a| match a.parse::<SocketAddr>() {
        Ok(v) => Some(v),
        Err(_) => {
            p.push("listen.smpp_tls", format!("`{a}` is not an IP:port socket address"));
            None
        }
    });
    let tls = match (l.tls, smpp_tls) {
        (None, None) => None,
        (None, Some(_)) => {
            p.push("listen.smpp_tls", "needs [listen.tls] with cert and key");
            None
        }
        (Some(_), None) => {
            p.push("listen.tls", "set but listen.smpp_tls (the TLS listener's address) is not");
            None
        }
        (Some(t), Some(_)) => {
            let (cert, key) = (p.required("listen.tls.cert", t.cert), p.required("listen.tls.key", t.key));
            match (cert, key) {
                (Some(cert), Some(key)) => {
                    let cfg = crate::relay::ServerTlsConfig {
                        cert: cert.into(),
                        key: key.into(),
                        client_ca: t.client_ca.map(PathBuf::from),
                    };
                    // Read now, so that `check-config` and a start refuse bad files. A file
                    // that cannot be read is a warning here; the start refuses it.
                    let files = [("listen.tls.cert", Some(&cfg.cert)), ("listen.tls.key", Some(&cfg.key))];
                    let files = files.into_iter().chain([("listen.tls.client_ca", cfg.client_ca.as_ref())]);
                    let readable =
                        files.filter_map(|(k, f)| Some((k, f?))).fold(true, |ok, (k, f)| p.readable(k, f) && ok);
                    if let Some(e) = readable.then(|| crate::relay::tls::server_config(&cfg).err()).flatten() {
                        let key =
                            tls_error_key(&e, &[(&cfg.cert, "cert"), (&cfg.key, "key")], cfg.client_ca.as_deref());
                        p.push(format!("listen.tls.{key}"), e.to_string());
                    }
                    Some(cfg)
                }
                _ => None,
            }
        }
    };
    ListenConfig {
        smpp: p.addr("listen.smpp", l.smpp.as_deref(), "0.0.0.0:2775"),
        smpp_tls,
        cmpp: l.cmpp.as_deref().and_then(|a| match a.parse::<SocketAddr>() {
            Ok(v) => Some(v),
            Err(_) => {
                p.push("listen.cmpp", format!("`{a}` is not an IP:port socket address"));
                None
            }
        }),
        admin: p.addr("listen.admin", l.admin.as_deref(), "127.0.0.1:9775"),
        tls,
    }
}

/// The key (`cert`, `key`, `ca`/`client_ca`) whose file a TLS error names.
pub(super) fn tls_error_key(
    e: &crate::relay::tls::TlsError,
    files: &[(&std::path::Path, &'static str)],
    ca: Option<&std::path::Path>,
) -> &'static str {
    match e {
        crate::relay::tls::TlsError::File { path, .. } => files
            .iter()
            .find(|(f, _)| *f == path.as_path())
            .map(|(_, k)| *k)
            .unwrap_or(if ca.is_some() { "client_ca" } else { "cert" }),
        crate::relay::tls::TlsError::Rustls(_) => "cert",
    }
}
