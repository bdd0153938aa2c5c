//! Test fixtures: real servers on `127.0.0.1:0` (plain HTTP, HTTPS with
//! rcgen certificates, silent, refusing, SYN-dropping) for the probe tests.
//!
//! Every server task ends after [`SERVER_LIFETIME`] and every connection after
//! [`CONNECTION_LIFETIME`], so a stuck test cannot keep them alive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::http::BODY_LIMIT;
use crate::egress::EgressPolicy;

/// The policy of probe tests against these loopback servers: every address.
pub(crate) fn open() -> Arc<EgressPolicy> {
    Arc::new(EgressPolicy::unrestricted())
}

/// Longest a test server accepts connections.
pub(crate) const SERVER_LIFETIME: Duration = Duration::from_secs(60);
/// Longest a test server keeps one connection.
pub(crate) const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);
/// How long `/slow` waits before answering: far above any probe timeout used
/// against it, below [`CONNECTION_LIFETIME`].
pub(crate) const SLOW: Duration = Duration::from_secs(5);

/// A name that cannot resolve, rejected by the resolver itself without a
/// network query: its first label is longer than the 63 bytes DNS allows, and
/// `.invalid` is reserved (RFC 6761) in case a resolver tried anyway.
pub(crate) const UNRESOLVABLE: &str =
    "this-label-is-longer-than-the-sixty-three-bytes-that-dns-allows-in-one-label.invalid";

/// An address where nothing listens (bound, then released).
pub(crate) async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A server that accepts connections and never reads or writes.
pub(crate) async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_accept_loop(listener, |tcp| async move {
        tokio::time::sleep(CONNECTION_LIFETIME).await;
        drop(tcp);
    });
    addr
}

/// A server that accepts connections and closes them at once.
pub(crate) async fn closing_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_accept_loop(listener, |tcp| async move { drop(tcp) });
    addr
}

/// A server on every local address (`[::]`, dual-stack: it also takes
/// 127.0.0.0/8 and `::ffff:127.0.0.1`) that counts the connections it
/// accepts: the victim of the egress tests, whose count must stay 0.
pub(crate) struct Victim {
    pub(crate) port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Victim {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("[::]:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        spawn_accept_loop(listener, move |tcp| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { drop(tcp) }
        });
        Victim { port, accepted }
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (at most 5 s) until `n` connections were accepted; the count.
    pub(crate) async fn until_accepted(&self, n: usize) -> usize {
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.accepted() < n && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.accepted()
    }
}

/// A listening port whose accept queue is full, so the kernel drops new SYNs
/// and a connect hangs: a black-holed address, on loopback.
pub(crate) struct Blackhole {
    /// Where connects hang.
    pub(crate) addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl Blackhole {
    pub(crate) async fn new() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let listener = socket.listen(1).unwrap();
        let mut queued = Vec::new();
        for _ in 0..16 {
            let attempt = TcpStream::connect(addr);
            match tokio::time::timeout(Duration::from_millis(200), attempt).await {
                Ok(Ok(tcp)) => queued.push(tcp),
                _ => break,
            }
        }
        assert!(queued.len() < 16, "the accept queue never filled");
        Blackhole {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}

/// A plain HTTP/1.1 server running [`app`].
pub(crate) async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_accept_loop(listener, serve_http);
    addr
}

/// An HTTPS server presenting `cert` and running [`app`] over HTTP/1.1 or
/// HTTP/2, as ALPN decides.
pub(crate) async fn https_server(cert: ServerCert) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    spawn_accept_loop(listener, move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                serve_http(tls).await;
            }
        }
    });
    addr
}

pub(crate) fn spawn_accept_loop<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(tokio::time::timeout(SERVER_LIFETIME, async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(tokio::time::timeout(CONNECTION_LIFETIME, handle(tcp)));
        }
    }));
}

async fn serve_http<IO>(io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), hyper::service::service_fn(app))
        .await;
}

/// The routes of the test servers.
///
/// - `/` and `/health`: 200 `hello from the target`
/// - `/status/500`: 500
/// - `/slow`: 200 after [`SLOW`]
/// - `/echo`: 200, the method, version and request headers, one per line
/// - `/big`: 200, [`BODY_LIMIT`] bytes of `a`, then `needle`
/// - `/redirect/N`: 302 to `/redirect/N-1`; `/redirect/0` goes to `/`
/// - `/see-other`: 303 to `/echo`
/// - `/loop`: 302 to itself
/// - `/to?URL`: 307 to `URL`
/// - `/no-location`: 302 without `Location`
/// - anything else: 404
async fn app(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    Ok(match path {
        "/" | "/health" => text(StatusCode::OK, "hello from the target\n"),
        "/status/500" => text(StatusCode::INTERNAL_SERVER_ERROR, "boom\n"),
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            text(StatusCode::OK, "late\n")
        }
        "/echo" => {
            let mut body = format!("method: {}\nversion: {:?}\n", req.method(), req.version());
            for (name, value) in req.headers() {
                body.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
            }
            text(StatusCode::OK, body)
        }
        "/big" => {
            let mut body = vec![b'a'; BODY_LIMIT];
            body.extend_from_slice(b"needle");
            Response::new(Full::new(Bytes::from(body)))
        }
        "/see-other" => redirect(StatusCode::SEE_OTHER, "/echo"),
        "/loop" => redirect(StatusCode::FOUND, "/loop"),
        "/to" => redirect(
            StatusCode::TEMPORARY_REDIRECT,
            req.uri().query().unwrap_or("/"),
        ),
        "/no-location" => text(StatusCode::FOUND, "nowhere\n"),
        _ => match path.strip_prefix("/redirect/").map(str::parse::<u32>) {
            Some(Ok(0)) => redirect(StatusCode::FOUND, "/"),
            Some(Ok(n)) => redirect(StatusCode::FOUND, &format!("/redirect/{}", n - 1)),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    })
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp
}

fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    let mut resp = text(status, "");
    resp.headers_mut()
        .insert(hyper::header::LOCATION, location.parse().unwrap());
    resp
}

/// Validity windows of generated certificates.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Validity {
    /// Valid from yesterday for 30 days.
    Current,
    /// Expired 10 days and 1 hour ago.
    Expired,
    /// Valid from tomorrow.
    NotYetValid,
    /// Valid, with 10 days and 12 hours left.
    ExpiresSoon,
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let (from, to) = match self {
            Validity::Current => (now - day, now + day * 30),
            Validity::Expired => (now - day * 100, now - day * 10 - time::Duration::hours(1)),
            Validity::NotYetValid => (now + day, now + day * 30),
            Validity::ExpiresSoon => (now - day * 80, now + day * 10 + time::Duration::hours(12)),
        };
        params.not_before = from;
        params.not_after = to;
    }
}

fn params(names: &[&str], common_name: &str, validity: Validity) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    validity.apply(&mut params);
    params
}

/// A test CA issuing leaf certificates.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    /// A CA named `CN=vantage test CA`, valid for 10 years.
    pub(crate) fn new() -> Self {
        let mut params = params(&[], "vantage test CA", Validity::Current);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki { ca }
    }

    /// The CA certificate as a PEM file, for `ca_file`.
    pub(crate) fn ca_file(&self) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), self.ca.pem()).unwrap();
        file
    }

    /// A leaf `CN=vantage test leaf` for `names` (DNS names or IP
    /// addresses), served with the CA certificate as its chain.
    pub(crate) fn leaf(&self, names: &[&str], validity: Validity) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let cert = params(names, "vantage test leaf", validity)
            .signed_by(&key, &self.ca)
            .unwrap();
        ServerCert::new(vec![cert.der().clone(), self.ca.der().clone()], &key)
    }
}

/// An HTTPS server presenting a leaf from a fresh test CA, and that CA as a
/// `ca_file`.
pub(crate) struct CaServer {
    /// Where the server listens.
    pub(crate) addr: SocketAddr,
    ca: tempfile::NamedTempFile,
}

impl CaServer {
    /// A server for `names` (DNS names or IP addresses).
    pub(crate) async fn start(names: &[&str], validity: Validity) -> Self {
        Self::start_with(names, validity, |_| {}).await
    }

    /// A server for `names` whose certificate and settings `adjust` changes.
    pub(crate) async fn start_with(
        names: &[&str],
        validity: Validity,
        adjust: impl FnOnce(&mut ServerCert),
    ) -> Self {
        let pki = Pki::new();
        let mut cert = pki.leaf(names, validity);
        adjust(&mut cert);
        CaServer {
            addr: https_server(cert).await,
            ca: pki.ca_file(),
        }
    }

    /// The port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The path of the CA file, as a spec's `ca_file`.
    pub(crate) fn ca_file(&self) -> Option<String> {
        self.ca.path().to_str().map(Into::into)
    }
}

/// What an HTTPS test server presents and negotiates.
pub(crate) struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// ALPN protocols offered, preferred first (default `h2`, `http/1.1`).
    pub(crate) alpn: Vec<Vec<u8>>,
    /// Only TLS 1.2 (default: 1.3 and 1.2).
    pub(crate) tls12_only: bool,
}

impl ServerCert {
    fn new(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Self {
        ServerCert {
            chain,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            tls12_only: false,
        }
    }

    /// A self-signed certificate `CN=common_name` for `names`.
    pub(crate) fn self_signed(common_name: &str, names: &[&str], validity: Validity) -> Self {
        let key = KeyPair::generate().unwrap();
        let cert = params(names, common_name, validity)
            .self_signed(&key)
            .unwrap();
        ServerCert::new(vec![cert.der().clone()], &key)
    }

    pub(crate) fn server_config(self) -> rustls::ServerConfig {
        let versions: &[&rustls::SupportedProtocolVersion] = if self.tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .unwrap();
        config.alpn_protocols = self.alpn;
        config
    }
}
