//! `[consent]`, `[node]` and `[replication]`: the consent store, this node's id and the
//! sharing of live statements between nodes.

use serde::Deserialize;

use super::raw::*;
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsent {
    pub snapshot: Option<String>,
    pub journal: Option<String>,
    pub watch: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplication {
    pub redis: Option<String>,
    pub password_env: Option<String>,
    pub stream: Option<String>,
    pub on_disconnect: Option<String>,
    pub timeout: Option<String>,
    pub caps: Option<bool>,
    pub caps_interval: Option<String>,
    pub caps_on_disconnect: Option<String>,
}

/// `[replication]` (architecture §8): `redis` required; the journal is the outbox, so
/// `consent.journal` is required too.
pub(super) fn validate_replication(
    r: RawReplication,
    consent: &ConsentConfig,
    p: &mut Problems,
) -> Option<crate::replication::ReplicationConfig> {
    use crate::replication::caps::{CapsConfig, CapsOnDisconnect, DEFAULT_INTERVAL};
    use crate::replication::{OnDisconnect, RedisUrl, ReplicationConfig, DEFAULT_STREAM, DEFAULT_TIMEOUT};
    let redis = match r.redis.as_deref() {
        None => {
            p.push("replication.redis", "required: the Redis server's URL (e.g. redis://127.0.0.1:6379/0)");
            None
        }
        Some(u) => match RedisUrl::parse(u) {
            Ok(u) => Some(u),
            Err(e) => {
                p.push("replication.redis", e);
                None
            }
        },
    };
    // The password from the environment rather than the config file (like the admin token).
    let redis = match (redis, r.password_env.as_deref()) {
        (Some(mut u), Some(var)) => match std::env::var(var).ok().filter(|v| !v.is_empty()) {
            Some(pw) => {
                u.password = Some(pw);
                Some(u)
            }
            None => {
                p.push("replication.password_env", format!("the environment variable {var} is not set or empty"));
                None
            }
        },
        (u, _) => u,
    };
    let stream = r.stream.unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    if stream.is_empty() || stream.len() > 200 || stream.chars().any(|c| c.is_control() || c == ' ') {
        p.push("replication.stream", "must be 1 to 200 characters without spaces or control characters");
    }
    let on_disconnect = match r.on_disconnect.as_deref() {
        None => OnDisconnect::Serve,
        Some(v) => OnDisconnect::parse(v).unwrap_or_else(|| {
            p.push("replication.on_disconnect", format!("`{v}`: expected serve | unready"));
            OnDisconnect::Serve
        }),
    };
    let timeout = p.duration("replication.timeout", r.timeout.as_deref(), DEFAULT_TIMEOUT);
    if consent.journal.is_none() {
        p.push(
            "replication",
            "needs consent.journal: the journal is what the publisher sends from (and what survives Redis losing data)",
        );
    }
    let interval = p.duration("replication.caps_interval", r.caps_interval.as_deref(), DEFAULT_INTERVAL);
    if interval > std::time::Duration::from_secs(10) {
        p.push("replication.caps_interval", "at most 10s: a subscriber can get one interval's messages over a cap");
    }
    let caps_on_disconnect = match r.caps_on_disconnect.as_deref() {
        None => CapsOnDisconnect::Local,
        Some(v) => CapsOnDisconnect::parse(v).unwrap_or_else(|| {
            p.push("replication.caps_on_disconnect", format!("`{v}`: expected local | divide"));
            CapsOnDisconnect::Local
        }),
    };
    let caps = r.caps.unwrap_or(true).then_some(CapsConfig { interval, on_disconnect: caps_on_disconnect });
    Some(ReplicationConfig { redis: redis?, stream, on_disconnect, timeout, caps })
}
