//! TLS for both listeners (`[server.tls]`): the certificate and key are read
//! once at startup, with errors that name the file; gRPC gets them through
//! tonic's `ServerTlsConfig`, and the HTTP API through [`serve_https`], an
//! accept loop of tokio-rustls plus hyper (`axum::serve` has no TLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
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

/// The loaded identity: PEM for tonic, a rustls acceptor for the HTTP API.
#[derive(Clone)]
pub struct ServerTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls([key redacted])")
    }
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

/// Reads and checks `[server.tls]`.
pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity_err = |reason: String| TlsError::Identity {
        cert: files.cert_file.display().to_string(),
        key: files.key_file.display().to_string(),
        reason,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| identity_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| identity_err(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        cert_pem,
        key_pem,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

impl ServerTls {
    /// The same identity for tonic's server.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// Serves `app` over TLS on `listener` until `shutdown`: each connection
/// gets [`HANDSHAKE_TIMEOUT`] for its handshake, then HTTP/1.1 or HTTP/2
/// (by ALPN), with its peer address as `ConnectInfo` (the API's failed-auth
/// limiter counts by it). On shutdown the listener closes, connections
/// finish their requests in flight, and this returns when all have.
pub async fn serve_https(
    listener: TcpListener,
    tls: ServerTls,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP API: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let acceptor = tls.acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTP API: no TLS handshake within the timeout");
                    return;
                }
            };
            serve_connection(stream, peer, app, shutdown).await;
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
