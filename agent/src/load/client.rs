//! The load HTTP client: one persistent HTTP/1.1 keep-alive connection per VU
//! and origin, reconnecting when the server closes it. Requests are
//! serialized once per run ([`Prepared`]) and exchanged by [`super::h1`]
//! inside the VU's own task (no connection task, no channel). Each request is
//! timed in k6's phases: connecting, TLS handshaking, waiting (to the first
//! response byte) and duration (send to last body byte).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use super::file::RequestSpec;
use super::h1::{self, ExchangeError, ReadBuf};
use crate::egress::EgressPolicy;

/// Deadline for connecting (TCP + TLS + HTTP handshake), as k6's default
/// dial timeout order of magnitude: long enough for a loaded target, short
/// enough that a dead one does not hold a VU for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one request and its body (k6's default `timeout`, 60s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where requests go: a scheme, host and port shared by one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `https`.
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// The addresses to dial, once [`resolve`] checked them against the
    /// egress policy (the run is pinned to them); empty: resolve `host` at
    /// every connect.
    pub addrs: Vec<SocketAddr>,
}

/// A request prepared once and sent many times.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Index into the run's origins.
    pub origin: usize,
    /// The whole request as written on the wire.
    wire: Bytes,
    /// `HEAD`: the response has no body whatever its headers say.
    head: bool,
    /// `checks.status`.
    pub check_status: Option<u16>,
    /// `checks.body_contains`.
    pub check_body: Option<Bytes>,
}

/// Prepares `specs`; returns the requests and the distinct origins they use.
pub fn prepare(specs: &[RequestSpec]) -> Result<(Vec<Prepared>, Vec<Origin>), String> {
    let mut origins: Vec<Origin> = Vec::new();
    let mut out = Vec::new();
    for spec in specs {
        let url = &spec.url;
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err(format!("{url}: no host")),
        };
        let origin = Origin {
            tls: url.scheme() == "https",
            host,
            port: url.port_or_known_default().unwrap_or(80),
            addrs: Vec::new(),
        };
        let index = match origins.iter().position(|o| *o == origin) {
            Some(i) => i,
            None => {
                origins.push(origin);
                origins.len() - 1
            }
        };
        let mut path = url.path().to_owned();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        // The request target must be a valid URI path (as hyper checked).
        let _: http::Uri = path.parse().map_err(|e| format!("{url}: {e}"))?;
        let mut headers = http::HeaderMap::new();
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let host_value = HeaderValue::from_str(&authority).map_err(|e| format!("{url}: {e}"))?;
        headers.insert(http::header::HOST, host_value);
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("vantage-load/0.1"),
        );
        for (k, v) in &spec.headers {
            headers.insert(k.clone(), v.clone());
        }
        if !spec.body.is_empty() {
            headers.insert(
                http::header::CONTENT_LENGTH,
                HeaderValue::from(spec.body.len()),
            );
        }
        out.push(Prepared {
            origin: index,
            wire: h1::serialize(&spec.method, &path, &headers, &spec.body),
            head: spec.method == http::Method::HEAD,
            check_status: spec.check_status,
            check_body: spec.check_body.as_ref().map(|s| Bytes::from(s.clone())),
        });
    }
    Ok((out, origins))
}

/// With `egress`, resolves every origin once, before the first request, and
/// pins it to the addresses the policy allows: a run can neither reach a
/// non-public address nor be moved to one by a DNS answer that changes
/// mid-run. Without, nothing is done (names are resolved at each connect).
pub async fn resolve(
    origins: &mut [Origin],
    egress: Option<&EgressPolicy>,
) -> Result<(), super::LoadError> {
    let Some(egress) = egress else {
        return Ok(());
    };
    for origin in origins {
        let found = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((origin.host.as_str(), origin.port)),
        )
        .await
        .map_err(|_| format!("resolving {}: no answer", origin.host))
        .and_then(|r| r.map_err(|e| format!("resolving {}: {e}", origin.host)))
        .map_err(super::LoadError::Other)?;
        origin.addrs = crate::probe::tcp::permitted(&origin.host, found.collect(), egress)
            .map_err(|e| super::LoadError::Input(e.message))?;
        if origin.addrs.is_empty() {
            return Err(super::LoadError::Other(format!(
                "resolving {}: no addresses",
                origin.host
            )));
        }
    }
    Ok(())
}

/// The client TLS configuration: Mozilla roots (webpki-roots) plus the
/// certificates of `ca_file`, ring, and session resumption (a VU
/// reconnecting resumes, as a browser would).
pub fn tls_config(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let roots = crate::probe::tls::root_store(ca_file).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One request's timings in µs (k6 phases).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// TCP connect (0 on a reused connection).
    pub connecting: u64,
    /// TLS handshake (0 on a reused or plain connection).
    pub tls: u64,
    /// Send to first response byte.
    pub waiting: u64,
    /// Send to last body byte.
    pub duration: u64,
    /// Request bytes written (0 when nothing could be sent).
    pub sent: u64,
}

/// What came back.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A full response.
    Response {
        /// Status code.
        status: u16,
        /// Body bytes read.
        bytes: u64,
        /// Whether `checks.body_contains` was found (None: no such check).
        body_matched: Option<bool>,
    },
    /// DNS, TCP, TLS or HTTP handshake failed: nothing was sent.
    ConnectFailed,
    /// The request or the response failed or timed out.
    Failed,
}

/// A plain or TLS connection.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

/// One open connection and its read buffer.
struct Conn {
    io: Stream,
    buf: ReadBuf,
}

/// The connections of one VU, one per origin.
pub struct VuClient {
    origins: Arc<[Origin]>,
    tls: Option<Arc<ClientConfig>>,
    conns: Vec<Option<Conn>>,
    /// The request deadline, created on first use and moved forward only when
    /// a request would outlive it (at most about once a second), so a request
    /// costs no timer registration: a request times out between
    /// [`REQUEST_TIMEOUT`] and one second more.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl VuClient {
    /// A VU with no connection yet.
    pub fn new(origins: Arc<[Origin]>, tls: Option<Arc<ClientConfig>>) -> Self {
        let conns = origins.iter().map(|_| None).collect();
        VuClient {
            origins,
            tls,
            conns,
            deadline: None,
        }
    }

    async fn connect(&self, index: usize, t: &mut Timings) -> Result<Conn, ()> {
        let origin = &self.origins[index];
        let start = Instant::now();
        let dial = if origin.addrs.is_empty() {
            Either::Left(TcpStream::connect((origin.host.as_str(), origin.port)))
        } else {
            Either::Right(TcpStream::connect(origin.addrs.as_slice()))
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, dial)
            .await
            .map_err(drop)?
            .map_err(drop)?;
        let _ = tcp.set_nodelay(true);
        t.connecting = micros(start.elapsed());
        let io = if origin.tls {
            let tls = self.tls.clone().ok_or(())?;
            let name = ServerName::try_from(origin.host.clone()).map_err(drop)?;
            let hs = Instant::now();
            let stream = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
            )
            .await
            .map_err(drop)?
            .map_err(drop)?;
            t.tls = micros(hs.elapsed());
            Either::Right(stream)
        } else {
            Either::Left(tcp)
        };
        Ok(Conn {
            io,
            buf: ReadBuf::default(),
        })
    }

    /// The deadline for a request sent now, moved forward if needed.
    fn deadline(&mut self, sent: Instant) -> Pin<&mut Sleep> {
        let want = tokio::time::Instant::from_std(sent + REQUEST_TIMEOUT);
        let sleep = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(want)));
        if sleep.deadline() < want {
            sleep.as_mut().reset(want + Duration::from_secs(1));
        }
        sleep.as_mut()
    }

    /// Sends `req`, connecting first when needed, and reads the whole body.
    pub async fn send(&mut self, req: &Prepared) -> (Outcome, Timings) {
        let mut t = Timings::default();
        for attempt in 0..2 {
            let (mut conn, reused) = match self.conns[req.origin].take() {
                Some(c) => (c, true),
                None => match self.connect(req.origin, &mut t).await {
                    Ok(c) => (c, false),
                    Err(()) => return (Outcome::ConnectFailed, t),
                },
            };
            let sent = Instant::now();
            let result = {
                let exchange = h1::exchange(
                    &mut conn.io,
                    &mut conn.buf,
                    &req.wire,
                    req.head,
                    req.check_body.as_deref(),
                );
                let deadline = self.deadline(sent);
                tokio::select! {
                    biased;
                    r = exchange => Some(r),
                    () = deadline => None,
                }
            };
            t.duration = micros(sent.elapsed());
            if !matches!(result, Some(Err(ExchangeError::NoResponse))) {
                t.sent += req.wire.len() as u64;
            }
            match result {
                Some(Ok(resp)) => {
                    t.waiting = micros(resp.first_byte.saturating_duration_since(sent));
                    if resp.reusable {
                        self.conns[req.origin] = Some(conn);
                    }
                    return (
                        Outcome::Response {
                            status: resp.status,
                            bytes: resp.bytes,
                            body_matched: resp.body_matched,
                        },
                        t,
                    );
                }
                // A kept-alive connection the server closed before answering:
                // the request never ran, so it is sent again once on a fresh
                // connection.
                Some(Err(ExchangeError::NoResponse)) if reused && attempt == 0 => continue,
                Some(Err(_)) | None => return (Outcome::Failed, t),
            }
        }
        (Outcome::Failed, t)
    }
}

/// `d` in whole µs, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::LoadError;
    use crate::probe::testkit::{CaServer, Validity};

    #[tokio::test]
    async fn origins_are_pinned_to_addresses_the_egress_policy_allows() {
        let origin = |host: &str| Origin {
            tls: false,
            host: host.into(),
            port: 8080,
            addrs: Vec::new(),
        };
        let deny = EgressPolicy::default();
        for host in ["localhost", "127.1", "2130706433", "::ffff:127.0.0.1"] {
            let mut origins = vec![origin(host)];
            match resolve(&mut origins, Some(&deny)).await {
                Err(LoadError::Input(m)) => assert!(m.contains("egress policy"), "{host}: {m}"),
                other => panic!("{host}: {other:?}"),
            }
        }
        let allow = EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        let mut origins = vec![origin("127.1"), origin("localhost")];
        resolve(&mut origins, Some(&allow)).await.unwrap();
        for o in &origins {
            assert!(!o.addrs.is_empty(), "{o:?}");
            assert!(
                o.addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.ip().is_ipv4() && a.port() == 8080),
                "only the allowed addresses are kept: {o:?}"
            );
        }
        // Without a policy (a run the operator starts) nothing is resolved.
        let mut untouched = vec![origin("localhost")];
        resolve(&mut untouched, None).await.unwrap();
        assert!(untouched[0].addrs.is_empty());
    }

    #[tokio::test]
    async fn https_keeps_one_tls_connection_per_vu() {
        let server = CaServer::start(&["localhost"], Validity::Current).await;
        let url = format!("https://localhost:{}/", server.port());
        let spec = RequestSpec {
            method: http::Method::GET,
            url: url::Url::parse(&url).unwrap(),
            headers: Vec::new(),
            body: Bytes::new(),
            check_status: Some(200),
            check_body: None,
        };
        let (prepared, origins) = prepare(&[spec]).unwrap();
        let tls = tls_config(server.ca_file().as_deref()).unwrap();
        let mut vu = VuClient::new(origins.into(), Some(tls));
        let (first, t1) = vu.send(&prepared[0]).await;
        assert!(
            matches!(first, Outcome::Response { status: 200, .. }),
            "{first:?}"
        );
        assert!(t1.connecting > 0 && t1.tls > 0, "{t1:?}");
        let (second, t2) = vu.send(&prepared[0]).await;
        assert!(
            matches!(second, Outcome::Response { status: 200, .. }),
            "{second:?}"
        );
        assert_eq!((t2.connecting, t2.tls), (0, 0), "the connection is reused");

        // Without the test CA the certificate is not trusted.
        let mut untrusted = VuClient::new(
            prepare(&[RequestSpec {
                method: http::Method::GET,
                url: url::Url::parse(&url).unwrap(),
                headers: Vec::new(),
                body: Bytes::new(),
                check_status: None,
                check_body: None,
            }])
            .unwrap()
            .1
            .into(),
            Some(tls_config(None).unwrap()),
        );
        let (outcome, _) = untrusted.send(&prepared[0]).await;
        assert!(matches!(outcome, Outcome::ConnectFailed), "{outcome:?}");
    }
}
