//! TLS for both listeners (`[server.tls]`): the certificate and key are read
//! at startup, with errors that name the file, and again whenever either
//! file changes ([`watch_files`]), so a renewed certificate (cert-manager,
//! certbot) is served without a restart. Both listeners resolve the
//! identity per handshake from one [`ServerTls`] (the agents' client CA,
//! `client_ca_file`, is reloaded the same way): the HTTP API through
//! [`serve_https`], an accept loop of tokio-rustls plus hyper (`axum::serve`
//! has no TLS), and gRPC through [`ServerTls::grpc_incoming`], the same
//! kind of loop feeding tonic finished TLS streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::TlsFiles;

/// Time a client has to finish the TLS handshake. A client that connects
/// and stays silent holds a socket and a task until then; 10 s is ample for
/// a handshake even across continents.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, usually), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Why `[server.tls]` could not be used. Each names the file; none carries
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("server.tls.{key} {path}: {reason}")]
    File {
        /// `cert_file` or `key_file`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The files are readable but do not make a server identity (the key
    /// does not match the certificate, an unsupported key type).
    #[error("server.tls: {cert} with {key}: {reason}")]
    Identity {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls' reason.
        reason: String,
    },
}

/// How often the certificate and key files are looked at.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The identity both listeners serve, replaced in place when its files
/// change; every handshake takes the current one.
#[derive(Debug)]
struct LiveIdentity(RwLock<Arc<CertifiedKey>>);

impl LiveIdentity {
    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server's TLS: the files, the identity read from them, and one
/// acceptor per listener (the API offers HTTP/2 and HTTP/1.1, gRPC only
/// HTTP/2).
pub struct ServerTls {
    files: TlsFiles,
    identity: Arc<LiveIdentity>,
    https: TlsAcceptor,
    /// Replaced when `client_ca_file` changes.
    grpc: RwLock<TlsAcceptor>,
    status: Mutex<CertStatus>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls([key redacted])")
    }
}

/// The served certificate and its reloads (`GET /api/v1/config`, `tls`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertStatus {
    /// SHA-256 (hex) of the leaf certificate being served.
    pub cert_sha256: String,
    /// When it was read, unix ms.
    pub loaded_unix_ms: i64,
    /// Certificates read again after a change of the files.
    pub reloads_total: u64,
    /// SHA-256 (hex) of the `client_ca_file` in use, when there is one.
    pub client_ca_sha256: Option<String>,
    /// Why the files could not be used the last time they changed; the
    /// previous certificate (or client CA) is still in use. Cleared by a
    /// good read.
    pub last_error: Option<String>,
    /// Size and modification time of the certificate and key when last read.
    #[serde(skip)]
    stamp: Option<[(u64, SystemTime); 2]>,
    /// The same of `client_ca_file`.
    #[serde(skip)]
    ca_stamp: Option<(u64, SystemTime)>,
}

/// Largest PEM file read: a chain of a few certificates is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_pem(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read as _;
    let err = |reason: String| TlsError::File {
        key,
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(|e| err(format!("cannot read: {e}")))?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

/// Size and modification time of the certificate and key files.
fn stamp(files: &TlsFiles) -> Option<[(u64, SystemTime); 2]> {
    Some([
        crate::reload::stamp(&files.cert_file)?,
        crate::reload::stamp(&files.key_file)?,
    ])
}

/// An acceptor serving `identity` with `alpn`, asking for client
/// certificates when `clients` is given.
fn acceptor(
    files: &TlsFiles,
    identity: &Arc<LiveIdentity>,
    alpn: &[&[u8]],
    clients: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Identity {
            cert: files.cert_file.display().to_string(),
            key: files.key_file.display().to_string(),
            reason: e.to_string(),
        })?;
    let builder = match clients {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::clone(identity) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The gRPC acceptor: HTTP/2 only, and agents may present a client
/// certificate when `client_ca_file` is set (one is not required, a token
/// will do, but one that is presented must verify). With it, the SHA-256
/// of the client CA file.
fn grpc_acceptor(
    files: &TlsFiles,
    identity: &Arc<LiveIdentity>,
) -> Result<(TlsAcceptor, Option<String>), TlsError> {
    let (clients, sha) = match &files.client_ca_file {
        Some(path) => {
            let (verifier, sha) = client_verifier(path)?;
            (Some(verifier), Some(sha))
        }
        None => (None, None),
    };
    Ok((acceptor(files, identity, &[b"h2"], clients)?, sha))
}

/// Reads and checks `[server.tls]`.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
    let stamp = stamp(files);
    let ca_stamp = files
        .client_ca_file
        .as_deref()
        .and_then(crate::reload::stamp);
    let certified = read_identity(files)?;
    let identity = Arc::new(LiveIdentity(RwLock::new(Arc::new(certified))));
    let (grpc, client_ca_sha256) = grpc_acceptor(files, &identity)?;
    let status = CertStatus {
        cert_sha256: leaf_sha256(&identity.current()),
        loaded_unix_ms: crate::now_ms(),
        reloads_total: 0,
        client_ca_sha256,
        last_error: None,
        stamp,
        ca_stamp,
    };
    Ok(Arc::new(ServerTls {
        files: files.clone(),
        https: acceptor(files, &identity, &[b"h2", b"http/1.1"], None)?,
        grpc: RwLock::new(grpc),
        identity,
        status: Mutex::new(status),
    }))
}

/// The verifier of agents' client certificates: issued by a CA in `path`.
/// A client without a certificate is let through to token authentication.
/// With the SHA-256 of the file.
fn client_verifier(path: &Path) -> Result<(Arc<dyn ClientCertVerifier>, String), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let err = |reason: String| TlsError::File {
        key: "client_ca_file",
        path: path.display().to_string(),
        reason,
    };
    let pem = read_pem("client_ca_file", path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| err(format!("bad PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| err(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err(
            "no CERTIFICATE block: give the PEM of the CA that issues agent certificates".into(),
        ));
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| err(e.to_string()))?;
    Ok((verifier, crate::api::auth::digest_hex(&pem)))
}

/// The DNS subject alternative names of a client certificate that the
/// handshake verified: the agent names it may speak for. None when it
/// does not parse (the handshake would not have accepted it).
pub fn dns_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(leaf.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect()
}

/// SHA-256 (hex) of the leaf certificate.
fn leaf_sha256(k: &CertifiedKey) -> String {
    k.cert
        .first()
        .map(|c| crate::api::auth::digest_hex(c.as_ref()))
        .unwrap_or_default()
}

/// The certificate chain and key of `files`, checked to belong together.
fn read_identity(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read_pem("cert_file", &files.cert_file)?;
    let key_pem = read_pem("key_file", &files.key_file)?;
    let file_err = |key, path: &std::path::Path, reason: String| TlsError::File {
        key,
        path: path.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err("cert_file", &files.cert_file, format!("bad PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_err(
            "cert_file",
            &files.cert_file,
            "no CERTIFICATE block: give the PEM certificate chain, leaf first".into(),
        ));
    }
    // The parser's error never quotes the key; say only what kind it was.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        file_err(
            "key_file",
            &files.key_file,
            "no usable PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        )
    })?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Identity {
        cert: files.cert_file.display().to_string(),
        key: files.key_file.display().to_string(),
        reason: e.to_string(),
    })
}

impl ServerTls {
    /// The served certificate and its reloads.
    pub fn status(&self) -> CertStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CertStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the files again if their size or modification time changed
    /// since the last read, and uses what they hold if it is valid: the
    /// certificate and key for both listeners, the client CA for gRPC.
    /// Otherwise keeps the current ones and records why. Blocks on the
    /// files; async callers use `spawn_blocking`.
    pub fn reload_if_changed(&self) {
        self.reload_identity();
        self.reload_client_ca();
    }

    fn reload_client_ca(&self) {
        let Some(path) = &self.files.client_ca_file else {
            return;
        };
        let now = crate::reload::stamp(path);
        if now.is_none() || now == self.lock().ca_stamp {
            return;
        }
        let built = grpc_acceptor(&self.files, &self.identity);
        let mut s = self.lock();
        s.ca_stamp = now;
        match built {
            Ok((grpc, sha)) => {
                *self.grpc.write().unwrap_or_else(|p| p.into_inner()) = grpc;
                s.last_error = None;
                if sha != s.client_ca_sha256 {
                    tracing::info!(client_ca_sha256 = ?sha, client_ca_file = %path.display(),
                        "agents' client CA reloaded; new connections are checked against it");
                    s.client_ca_sha256 = sha;
                }
            }
            Err(e) => {
                tracing::error!(error = %e,
                    "client_ca_file changed but cannot be used; still checking agents against the previous one");
                s.last_error = Some(e.to_string());
            }
        }
    }

    fn reload_identity(&self) {
        let now = stamp(&self.files);
        if now.is_none() || now == self.lock().stamp {
            return;
        }
        let read = read_identity(&self.files);
        let mut s = self.lock();
        s.stamp = now;
        match read {
            Ok(certified) => {
                let sha = leaf_sha256(&certified);
                *self.identity.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
                s.last_error = None;
                if sha != s.cert_sha256 {
                    s.cert_sha256 = sha;
                    s.loaded_unix_ms = crate::now_ms();
                    s.reloads_total += 1;
                    tracing::info!(cert_sha256 = %s.cert_sha256, cert_file = %self.files.cert_file.display(),
                        "server certificate reloaded; new connections get it");
                }
            }
            Err(e) => {
                tracing::error!(error = %e,
                    "server certificate files changed but cannot be used; still serving the previous certificate");
                s.last_error = Some(e.to_string());
            }
        }
    }

    /// gRPC connections on `listener` as finished TLS streams, for tonic's
    /// `serve_with_incoming`: each handshake runs in its own task with
    /// [`HANDSHAKE_TIMEOUT`], so a silent client holds up no one. Ends on
    /// `shutdown`.
    pub fn grpc_incoming(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> tokio_stream::wrappers::ReceiverStream<
        Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            while let Some((tcp, peer)) = next_connection(&listener, &shutdown, "gRPC").await {
                // The acceptor of the moment: client_ca_file may have changed.
                let acceptor = tls.grpc.read().unwrap_or_else(|p| p.into_inner()).clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(stream) = handshake(acceptor, tcp, peer, "gRPC").await {
                        let _ = tx.send(Ok(stream)).await;
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The next connection on `listener`; `None` once `shutdown` is cancelled.
/// A failed accept (out of file descriptors, usually) is logged and tried
/// again after a pause.
async fn next_connection(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// The TLS handshake of `tcp` within [`HANDSHAKE_TIMEOUT`]; a failed or
/// late one is logged at debug level and gives `None`.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    what: &str,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{what}: TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "{what}: no TLS handshake within the timeout");
            None
        }
    }
}

/// Reads the certificate and key again whenever they change, every
/// [`FILE_POLL_INTERVAL`], until `stop`.
pub async fn watch_files(tls: Arc<ServerTls>, stop: CancellationToken) {
    let mut poll = tokio::time::interval(FILE_POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = poll.tick() => {}
        }
        let tls = Arc::clone(&tls);
        if let Err(e) = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await {
            tracing::warn!(error = %e, "certificate reload task failed");
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`: each connection
/// gets [`HANDSHAKE_TIMEOUT`] for its handshake, then HTTP/1.1 or HTTP/2
/// (by ALPN), with its peer address as `ConnectInfo` (the API's failed-auth
/// limiter counts by it). On shutdown the listener closes, connections
/// finish their requests in flight, and this returns when all have.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    while let Some((tcp, peer)) = next_connection(&listener, &shutdown, "HTTP API").await {
        let acceptor = tls.https.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            if let Some(stream) = handshake(acceptor, tcp, peer, "HTTP API").await {
                serve_connection(stream, peer, app, shutdown).await;
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    stream: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    peer: SocketAddr,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    use tower_service::Service as _;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { app.call(req).await }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP API: connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
