//! TLS on either leg (architecture §9): the `[listen.tls]` / `[upstream.tls]` settings, the rustls
//! configurations built from their PEM files (swapped in by [`TlsServer::reload`] /
//! [`TlsClient::reload`] on SIGHUP; a bad file is refused and the previous certificates keep
//! serving), with the notAfter of the certificate chain each presents ([`TlsServer::not_after`],
//! [`TlsClient::not_after`]: the gateway's expiry gauge, read by [`super::x509`]), and
//! [`TlsStream`], the connection the session loop drives by hand.
//!
//! Why by hand rather than `tokio_rustls`: the session serves both legs from one task with
//! non-blocking reads and writes on readiness (`session/mod.rs`), and socket readiness is not
//! plaintext readiness. So [`TlsStream`] answers "may read" when the socket is readable *or*
//! decrypted bytes are waiting, reads ciphertext with `try_read` into rustls, and tells the
//! loop when rustls has records of its own to send ([`TlsStream::wants_write`]: handshake
//! messages, session tickets, KeyUpdate, alerts) so they leave even when no SMPP bytes are
//! queued. The handshake itself completes before the session starts (bounded by the bind
//! timeout), so the bind phase and the relay see an established channel.
//!
//! The crypto provider is `ring`; TLS 1.2 and 1.3 with rustls's safe defaults. What the
//! session records with `[capture]` is the plaintext SMPP.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `[listen.tls]`: the certificate the ESME-facing TLS listener presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates: when set, ESMEs must present a certificate issued by one of them.
    pub client_ca: Option<PathBuf>,
}

/// `[upstream.tls]`: TLS towards the SMSC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTlsConfig {
    /// PEM CA certificates the SMSC's certificate must chain to (no system store is read:
    /// a carrier core names its own CA).
    pub ca: PathBuf,
    /// The name the SMSC's certificate must carry (DNS name or IP address).
    pub server_name: String,
    /// Client certificate and key, when the SMSC asks for one (both or neither).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{0}")]
    Rustls(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file = |message: String| TlsError::File { path: path.to_owned(), message };
    let it = CertificateDer::pem_file_iter(path).map_err(|e| file(e.to_string()))?;
    let v = it.collect::<Result<Vec<_>, _>>().map_err(|e| file(e.to_string()))?;
    if v.is_empty() {
        return Err(file("no PEM certificate in the file".into()));
    }
    Ok(v)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File { path: path.to_owned(), message: e.to_string() })
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    for c in certs(path)? {
        store.add(c).map_err(|e| TlsError::File { path: path.to_owned(), message: e.to_string() })?;
    }
    Ok(store)
}

/// The rustls server configuration for `cfg` (reads its files).
pub fn server_config(cfg: &ServerTlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_loaded(cfg).map(|l| l.config)
}

/// [`server_config`] and the expiry of the chain it presents.
fn server_loaded(cfg: &ServerTlsConfig) -> Result<Loaded<Arc<rustls::ServerConfig>>, TlsError> {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let b = match &cfg.client_ca {
        None => b.with_no_client_auth(),
        Some(ca) => {
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::File { path: ca.clone(), message: e.to_string() })?;
            b.with_client_cert_verifier(v)
        }
    };
    let chain = certs(&cfg.cert)?;
    let not_after = chain_not_after(&cfg.cert, &chain);
    let c = b.with_single_cert(chain, key(&cfg.key)?).map_err(|e| TlsError::File {
        path: cfg.key.clone(),
        message: format!("does not match the certificate: {e}"),
    })?;
    Ok(Loaded { config: Arc::new(c), not_after })
}

/// The rustls client configuration and server name for `cfg` (reads its files).
pub fn client_config(cfg: &ClientTlsConfig) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), TlsError> {
    client_loaded(cfg).map(|l| l.config)
}

/// [`client_config`] and the expiry of the client chain it presents, if it has one.
fn client_loaded(cfg: &ClientTlsConfig) -> Result<Loaded<(Arc<rustls::ClientConfig>, ServerName<'static>)>, TlsError> {
    let name = ServerName::try_from(cfg.server_name.clone())
        .map_err(|e| TlsError::Rustls(format!("upstream.tls.server_name `{}`: {e}", cfg.server_name)))?;
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(&cfg.ca)?);
    let (c, not_after) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => {
            let chain = certs(c)?;
            let not_after = chain_not_after(c, &chain);
            let config = b.with_client_auth_cert(chain, key(k)?).map_err(|e| TlsError::File {
                path: k.clone(),
                message: format!("does not match the certificate: {e}"),
            })?;
            (config, not_after)
        }
        _ => (b.with_no_client_auth(), None),
    };
    Ok(Loaded { config: (Arc::new(c), name), not_after })
}

/// A configuration built from its files, with the notAfter (Unix seconds) of the
/// certificate chain it presents: the earliest of the chain's certificates, since a peer
/// refuses the chain once any of them has expired. None when it presents none (a client
/// without a certificate) or one could not be read (logged).
struct Loaded<C> {
    config: C,
    not_after: Option<i64>,
}

/// The earliest notAfter of `chain` (read from `path`); None, with a warning, if a
/// certificate's DER cannot be walked (rustls accepted it, so this is not a reason to refuse
/// it, only to go without the expiry gauge).
fn chain_not_after(path: &Path, chain: &[CertificateDer<'_>]) -> Option<i64> {
    let mut earliest: Option<i64> = None;
    for c in chain {
        match super::x509::not_after(c) {
            Ok(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a certificate's notAfter; its expiry is not exported");
                return None;
            }
        }
    }
    earliest
}

/// The ESME-facing TLS configuration in force, swapped on reload.
pub struct TlsServer {
    cfg: ServerTlsConfig,
    current: ArcSwap<Loaded<Arc<rustls::ServerConfig>>>,
}

impl TlsServer {
    pub fn new(cfg: ServerTlsConfig) -> Result<TlsServer, TlsError> {
        let c = server_loaded(&cfg)?;
        Ok(TlsServer { cfg, current: ArcSwap::from_pointee(c) })
    }

    /// Re-reads the certificate, key and client CA; on error the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(server_loaded(&self.cfg)?));
        Ok(())
    }

    /// The notAfter (Unix seconds) of the certificate chain served now: its earliest.
    pub fn not_after(&self) -> Option<i64> {
        self.current.load().not_after
    }

    /// Completes the server handshake on `tcp` within `limit`.
    pub async fn accept(&self, tcp: TcpStream, limit: Duration) -> io::Result<TlsStream> {
        let conn = rustls::ServerConnection::new(self.current.load().config.clone()).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, rustls::Connection::Server(conn), limit).await
    }
}

/// The upstream TLS configuration in force, swapped on reload.
pub struct TlsClient {
    cfg: ClientTlsConfig,
    current: ArcSwap<Loaded<(Arc<rustls::ClientConfig>, ServerName<'static>)>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl TlsClient {
    pub fn new(cfg: ClientTlsConfig) -> Result<TlsClient, TlsError> {
        let c = client_loaded(&cfg)?;
        Ok(TlsClient { cfg, current: ArcSwap::from_pointee(c) })
    }

    /// Re-reads the CA (and client certificate); on error the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(client_loaded(&self.cfg)?));
        Ok(())
    }

    /// The notAfter (Unix seconds) of the client certificate chain presented now (its
    /// earliest); None without a client certificate.
    pub fn not_after(&self) -> Option<i64> {
        self.current.load().not_after
    }

    /// Completes the client handshake on `tcp` within `limit`.
    pub async fn connect(&self, tcp: TcpStream, limit: Duration) -> io::Result<TlsStream> {
        let cur = self.current.load();
        let (config, name) = &cur.config;
        let conn = rustls::ClientConnection::new(config.clone(), name.clone()).map_err(io::Error::other)?;
        TlsStream::handshake(tcp, rustls::Connection::Client(conn), limit).await
    }
}

/// `Read`/`Write` over a tokio socket's non-blocking `try_read`/`try_write`, for rustls.
struct TryIo<'a>(&'a TcpStream);

impl Read for TryIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for TryIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An established TLS connection driven by the session loop.
pub struct TlsStream {
    tcp: TcpStream,
    conn: rustls::Connection,
    /// Decrypted bytes rustls holds that have not been read yet.
    plain_left: usize,
    /// The peer sent close_notify (or the socket reached EOF).
    closed: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.tcp).field("plain_left", &self.plain_left).finish()
    }
}

impl TlsStream {
    async fn handshake(tcp: TcpStream, conn: rustls::Connection, limit: Duration) -> io::Result<TlsStream> {
        let _ = tcp.set_nodelay(true);
        let mut s = TlsStream { tcp, conn, plain_left: 0, closed: false };
        let run = async {
            while s.conn.is_handshaking() {
                s.flush_records().await?;
                if !s.conn.is_handshaking() {
                    break;
                }
                s.tcp.readable().await?;
                match s.conn.read_tls(&mut TryIo(&s.tcp)) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed during the TLS handshake",
                        ))
                    }
                    Ok(_) => s.process()?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            // The last flight (the client's Finished, the server's session tickets).
            s.flush_records().await
        };
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(())) => Ok(s),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no TLS handshake within {limit:?}"))),
        }
    }

    /// Lets rustls handle what was read; a protocol error sends its alert and fails.
    fn process(&mut self) -> io::Result<()> {
        match self.conn.process_new_packets() {
            Ok(st) => {
                self.plain_left = st.plaintext_bytes_to_read();
                self.closed |= st.peer_has_closed();
                Ok(())
            }
            Err(e) => {
                let _ = self.conn.write_tls(&mut TryIo(&self.tcp));
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
        }
    }

    /// Writes every record rustls has queued (awaiting the socket).
    async fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut TryIo(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes queued records while the socket takes them.
    pub fn try_flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut TryIo(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether rustls has records to send (the loop then waits for the socket to be writable).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    pub async fn readable(&self) -> io::Result<()> {
        if self.plain_left > 0 || self.closed {
            return Ok(());
        }
        self.tcp.readable().await
    }

    pub async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// Appends decrypted bytes to `buf`: `Ok(0)` = the peer closed; `WouldBlock` = nothing yet.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if self.plain_left > 0 {
                let spare = (buf.capacity() - buf.len()).max(4096);
                let n = self.plain_left.min(spare);
                let start = buf.len();
                buf.resize(start + n, 0);
                let got = match self.conn.reader().read(&mut buf[start..]) {
                    Ok(g) => g,
                    Err(e) => {
                        buf.truncate(start);
                        return Err(e);
                    }
                };
                buf.truncate(start + got);
                self.plain_left -= got.min(self.plain_left);
                if got > 0 {
                    return Ok(got);
                }
                self.plain_left = 0;
            }
            if self.closed {
                return Ok(0);
            }
            match self.conn.read_tls(&mut TryIo(&self.tcp)) {
                Ok(0) => {
                    self.closed = true;
                    return Ok(0);
                }
                Ok(_) => self.process()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts what rustls takes of `bytes` now and sends what the socket takes:
    /// `WouldBlock` = nothing taken.
    pub fn try_write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.try_flush_records()?;
        let n = self.conn.writer().write(bytes)?;
        self.try_flush_records()?;
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        self.flush_records().await
    }

    /// Sends close_notify and closes the write side.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush_records().await?;
        self.tcp.shutdown().await
    }
}
