//! `drain`: takes a running gateway out of service without stopping it (`POST /v1/drain`),
//! then waits for its ESME sessions to close (`GET /v1/drain`) — what a Kubernetes preStop
//! hook or an operator runs before maintenance; `--cancel` takes binds again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use consentgate::config::parse_duration;
use serde::Deserialize;

use super::{EX_NOPERM, EX_UNAVAILABLE, EX_USAGE};

/// How often the session count is read while waiting.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// The longest one admin request may take (connect and answer): the gateway answers these
/// from memory, so a slower one means it is not there.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the bearer token comes from unless `--token-file` is given (the gateway's default
/// `admin.token_env`).
const TOKEN_ENV: &str = "CONSENTGATE_ADMIN_TOKEN";

/// `drain`: exit 0 when no ESME session is left (or, with --cancel, when binds are taken
/// again), 1 when sessions remain at the end of --wait, 64 on bad usage, 69 when the admin
/// API cannot be reached or answers an error, 77 when it refuses the token.
#[derive(Args)]
pub struct DrainArgs {
    /// The gateway's admin listener (its `listen.admin`) as reached from here.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9775")]
    admin: SocketAddr,
    /// How long to wait for the ESME sessions to close (each is unbound once its in-flight
    /// requests are answered); `0s` asks and reports without waiting.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "25s")]
    wait: Duration,
    /// Take binds again instead of draining (`{"cancel": true}`): ends a drain started
    /// earlier; the sessions closed by it reconnect on their own.
    #[arg(long, conflicts_with = "wait")]
    cancel: bool,
    /// Read the admin bearer token from this file (surrounding whitespace ignored) instead of
    /// the CONSENTGATE_ADMIN_TOKEN environment variable.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// `GET|POST /v1/drain`'s answer.
#[derive(Debug, Deserialize)]
struct Status {
    draining: bool,
    sessions: usize,
}

/// Why an admin request did not give a status.
enum Failure {
    Unreachable(String),
    Refused(u16, String),
    Error(String),
}

impl Failure {
    fn report(self, admin: SocketAddr) -> ExitCode {
        match self {
            Failure::Unreachable(e) => {
                eprintln!("error: cannot reach the admin API at {admin}: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
            Failure::Refused(code, body) => {
                eprintln!("error: {admin} refused the token (HTTP {code}): {}", body.trim());
                ExitCode::from(EX_NOPERM)
            }
            Failure::Error(e) => {
                eprintln!("error: {admin}: {e}");
                ExitCode::from(EX_UNAVAILABLE)
            }
        }
    }
}

fn token(a: &DrainArgs) -> Result<String, String> {
    let (t, from) = match &a.token_file {
        Some(f) => (std::fs::read_to_string(f).map_err(|e| format!("--token-file {}: {e}", f.display()))?, "the file"),
        None => (std::env::var(TOKEN_ENV).unwrap_or_default(), TOKEN_ENV),
    };
    let t = t.trim();
    if t.is_empty() {
        return Err(format!("no admin token: {from} is empty or unset (set {TOKEN_ENV} or give --token-file)"));
    }
    Ok(t.to_owned())
}

async fn call(admin: SocketAddr, method: &str, token: Option<&str>, body: Option<&str>) -> Result<Status, Failure> {
    let answer =
        tokio::time::timeout(REQUEST_TIMEOUT, consentgate::admin::request(admin, method, "/v1/drain", token, body))
            .await
            .map_err(|_| Failure::Unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?;
    let (code, body) = answer.map_err(|e| Failure::Unreachable(e.to_string()))?;
    match code {
        200 | 202 => serde_json::from_str(&body)
            .map_err(|e| Failure::Error(format!("{method} /v1/drain: unexpected answer {body:?}: {e}"))),
        401 | 403 => Err(Failure::Refused(code, body)),
        _ => Err(Failure::Error(format!("{method} /v1/drain answered HTTP {code}: {}", body.trim()))),
    }
}

pub async fn drain(a: DrainArgs) -> anyhow::Result<ExitCode> {
    let token = match token(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(EX_USAGE));
        }
    };
    let t0 = Instant::now();
    let body = if a.cancel { r#"{"cancel": true}"# } else { "{}" };
    let mut s = match call(a.admin, "POST", Some(&token), Some(body)).await {
        Ok(s) => s,
        Err(f) => return Ok(f.report(a.admin)),
    };
    if a.cancel {
        println!("resumed: {} takes binds again ({} ESME session(s) open)", a.admin, s.sessions);
        return Ok(ExitCode::SUCCESS);
    }
    let at_start = s.sessions;
    let deadline = t0 + a.wait;
    loop {
        if !s.draining {
            println!("not drained: the drain of {} was cancelled ({} ESME session(s) open)", a.admin, s.sessions);
            return Ok(ExitCode::FAILURE);
        }
        if s.sessions == 0 {
            println!(
                "drained: {} has no ESME session left ({at_start} at the start, {:.1} s); binds refused until `consentgate drain --cancel`",
                a.admin,
                t0.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::SUCCESS);
        }
        let now = Instant::now();
        if now >= deadline {
            println!(
                "not drained: {} ESME session(s) of {} still open after {:.1} s ({at_start} at the start)",
                s.sessions,
                a.admin,
                t0.elapsed().as_secs_f64()
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
        s = match call(a.admin, "GET", None, None).await {
            Ok(s) => s,
            Err(f) => return Ok(f.report(a.admin)),
        };
    }
}
