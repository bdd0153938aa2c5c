//! The `http` probe: one request over a connection it sets up itself, so that
//! every phase is timed (k6 names): `dns`, `connect`, `tls` (https only),
//! `waiting` (request sent → response headers) and `total`.
//!
//! - **Redirects** (301, 302, 303, 307, 308) are followed when the spec says so,
//!   each hop on a fresh connection. The phases are those of the **last hop**;
//!   `total` covers the whole attempt. Following more than `max_redirects` is a
//!   `status` failure (a redirect loop is a broken site, not a success).
//! - **TLS**: the handshake always completes so the certificate facts are
//!   recorded; unless `insecure_skip_verify`, a chain that does not pass fails
//!   the attempt with class `tls` *before* the request is sent. ALPN offers
//!   `h2` and `http/1.1`.
//! - **Body**: at most [`BODY_LIMIT`] bytes are read (streamed; reading stops
//!   once `body_contains` is found), so `total` includes receiving that prefix.
//! - URLs in messages and `final_url` never carry userinfo (credentials).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, USER_AGENT};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::{Position, Url};
use vantage_proto::spec::{HttpSpec, ProbeKind};
use vantage_proto::v1::{ErrorClass, TlsFacts};

use super::tcp::{connect_host, url_host};
use super::tls::{self, TlsClient};
use super::{
    describe_error, run_attempt, Attempt, BoxFuture, BuildError, Deadline, Phases, Probe,
    ProbeError, ProbeOutcome,
};
use crate::egress::EgressPolicy;

/// Most bytes of a response body that are read; `body_contains` is searched
/// in this prefix only (shared/RELIABILITY.md §6, API4/API10: bounded reads).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The `User-Agent` sent unless the spec sets one.
pub const USER_AGENT_VALUE: &str = concat!("vantage-agent/", env!("CARGO_PKG_VERSION"));

/// ALPN protocols offered on https, preferred first.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Runs an [`HttpSpec`]: one request (plus redirects) whose response must
/// have an accepted status and, optionally, contain a string.
#[derive(Debug)]
pub struct HttpProbe {
    spec: HttpSpec,
    timeout: Duration,
    method: Method,
    headers: HeaderMap,
    tls: TlsClient,
    egress: Arc<EgressPolicy>,
    /// Host names connected to without DNS (see [`HttpProbe::with_resolve`]).
    resolve: HashMap<String, IpAddr>,
}

impl HttpProbe {
    /// A probe of `spec` whose attempts (all hops) end after `timeout`, and
    /// whose every hop connects only where `egress` allows.
    ///
    /// Fails when `ca_file` cannot be read, or when the URL, method or a header
    /// cannot be sent.
    pub fn new(
        spec: HttpSpec,
        timeout: Duration,
        egress: Arc<EgressPolicy>,
    ) -> Result<Self, BuildError> {
        let method = Method::from_bytes(spec.method.as_bytes())
            .map_err(|_| BuildError::Invalid(format!("{:?} is not an HTTP method", spec.method)))?;
        let headers = request_headers(&spec.headers)?;
        let target = Target::parse(&spec.url).map_err(|e| BuildError::Invalid(e.message))?;
        for h2 in [false, true] {
            target.uri(h2).map_err(|e| BuildError::Invalid(e.message))?;
        }
        let tls = TlsClient::new(spec.ca_file.as_deref(), &ALPN)?;
        Ok(HttpProbe {
            spec,
            timeout,
            method,
            headers,
            tls,
            egress,
            resolve: HashMap::new(),
        })
    }

    /// Connects to the given address for these host names instead of
    /// resolving them (curl's `--resolve`), on every hop; the URL's host
    /// stays the TLS name and the `Host` header. The egress policy still
    /// applies to the address.
    pub fn with_resolve(mut self, resolve: HashMap<String, IpAddr>) -> Self {
        self.resolve = resolve;
        self
    }

    /// One request to `url` on a fresh connection.
    async fn hop(
        &self,
        url: &Url,
        req: &RequestParts,
        deadline: &Deadline,
        out: &mut ProbeOutcome,
    ) -> Result<Hop, ProbeError> {
        let target = Target::parse(url)?;
        let (mut sender, mut driver) = self.open(&target, deadline, out).await?;
        let request = target.request(sender.is_h2(), &req.method, &req.headers, Empty::new())?;
        let sent = Instant::now();
        let response = deadline
            .run("waiting", driver.drive(sender.send(request)))
            .await?
            .map_err(response_error)?;
        out.phases.waiting = Some(sent.elapsed());
        let status = response.status();
        out.status = Some(status.as_u16());
        out.http_version = Some(version_name(response.version()));

        if let Some(next) = self.redirect(url, &response, out.redirects)? {
            return Ok(Hop::Redirect(next, status));
        }
        self.judge(response, &mut driver, deadline).await?;
        Ok(Hop::Done)
    }

    /// Connects to `target` (TCP, TLS for https, then HTTP/1.1 or HTTP/2 as
    /// ALPN decides), recording phases and TLS facts in `out`.
    async fn open(
        &self,
        target: &Target,
        deadline: &Deadline,
        out: &mut ProbeOutcome,
    ) -> Result<(Sender<Empty<Bytes>>, Driver), ProbeError> {
        let host = (target.host.as_str(), target.port);
        let pinned = self.resolve.get(&target.host).copied();
        let tcp = connect_host(host, pinned, &self.egress, deadline, &mut out.phases).await?;
        let verify = !self.spec.insecure_skip_verify;
        let tls = (&self.tls, verify);
        open_http(tcp, target, tls, deadline, &mut out.phases, &mut out.tls).await
    }

    /// Checks the final response: its status, then its body.
    async fn judge(
        &self,
        response: Response<Incoming>,
        driver: &mut Driver,
        deadline: &Deadline,
    ) -> Result<(), ProbeError> {
        let status = response.status().as_u16();
        if !self.spec.status_ok(status) {
            return Err(ProbeError::new(
                ErrorClass::Status,
                format!(
                    "status {status} is not accepted (expected {})",
                    expected_status(&self.spec.expect_status)
                ),
            ));
        }
        let needle = self.spec.body_contains.as_deref().map(str::as_bytes);
        let read = deadline
            .run(
                "body",
                driver.drive(read_body(response.into_body(), needle)),
            )
            .await?
            .map_err(|e| {
                ProbeError::new(
                    ErrorClass::Body,
                    format!("reading the body: {}", describe_error(&e)),
                )
            })?;
        match (&self.spec.body_contains, read) {
            (Some(text), BodyRead::Missing { bytes }) => Err(ProbeError::new(
                ErrorClass::Body,
                format!("the body does not contain {text:?} (searched the first {bytes} bytes)"),
            )),
            _ => Ok(()),
        }
    }

    /// Where to go next, when `response` is a redirect to follow.
    fn redirect(
        &self,
        url: &Url,
        response: &Response<Incoming>,
        followed: u32,
    ) -> Result<Option<Url>, ProbeError> {
        let status = response.status();
        if !self.spec.follow_redirects || !is_redirect(status) {
            return Ok(None);
        }
        // A 3xx without Location is a final response.
        let Some(location) = response.headers().get(LOCATION) else {
            return Ok(None);
        };
        let next = location
            .to_str()
            .ok()
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| {
                ProbeError::new(
                    ErrorClass::Status,
                    format!(
                        "status {} from {} has an invalid Location",
                        status.as_u16(),
                        redact(url)
                    ),
                )
            })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(ProbeError::new(
                ErrorClass::Status,
                format!("redirect to unsupported scheme {:?}", next.scheme()),
            ));
        }
        if followed >= self.spec.max_redirects {
            return Err(ProbeError::new(
                ErrorClass::Status,
                format!(
                    "too many redirects: status {} to {} after {followed} followed (max_redirects = {})",
                    status.as_u16(),
                    redact(&next),
                    self.spec.max_redirects
                ),
            ));
        }
        Ok(Some(next))
    }
}

impl Attempt for HttpProbe {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn attempt(&self, deadline: &Deadline, out: &mut ProbeOutcome) -> Result<(), ProbeError> {
        let mut url = self.spec.url.clone();
        let mut req = RequestParts {
            method: self.method.clone(),
            headers: self.headers.clone(),
        };
        loop {
            // Every field describing a hop is that of the last hop.
            out.phases = Phases::default();
            out.tls = None;
            out.status = None;
            out.http_version = None;
            out.final_url = Some(redact(&url));
            match self.hop(&url, &req, deadline, out).await? {
                Hop::Done => return Ok(()),
                Hop::Redirect(next, status) => {
                    out.redirects += 1;
                    req.follow(status, &url, &next);
                    url = next;
                }
            }
        }
    }
}

impl Probe for HttpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Http
    }

    fn run(&self) -> BoxFuture<'_, ProbeOutcome> {
        run_attempt(self)
    }
}

/// Starts HTTP over a connected `tcp` to `target`: the TLS handshake first
/// for https (its facts stored in `facts`, and, when `verify`, a chain that
/// does not pass ends here with class `tls` before anything is sent), then
/// HTTP/1.1 or HTTP/2 as ALPN decides.
///
/// Shared by the `http` probe and the audit's bounded fetch.
pub(crate) async fn open_http<B>(
    tcp: TcpStream,
    target: &Target,
    (client, verify): (&TlsClient, bool),
    deadline: &Deadline,
    phases: &mut Phases,
    facts: &mut Option<TlsFacts>,
) -> Result<(Sender<B>, Driver), ProbeError>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if !target.https {
        return Sender::handshake(tcp, false, deadline).await;
    }
    let name = tls::server_name(&target.host)?;
    let (stream, presented) = client.handshake(tcp, &name, deadline, phases).await?;
    let verdict = tls::verdict(&presented);
    *facts = Some(presented);
    if verify {
        // Nothing has been sent yet: an untrusted peer gets no request.
        verdict?;
    }
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    Sender::handshake(stream, h2, deadline).await
}

/// What a hop led to.
enum Hop {
    /// An accepted final response.
    Done,
    /// A redirect to follow, and its status.
    Redirect(Url, StatusCode),
}

/// The method and headers of the next request.
struct RequestParts {
    method: Method,
    headers: HeaderMap,
}

impl RequestParts {
    /// Adjusts the request for a redirect from `from` to `to`, as browsers
    /// do: 303 (and 301/302 after a POST) becomes GET; credentials and cookies
    /// are not sent to another origin.
    fn follow(&mut self, status: StatusCode, from: &Url, to: &Url) {
        let post_to_get = matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
            && self.method == Method::POST;
        if status == StatusCode::SEE_OTHER || post_to_get {
            self.method = Method::GET;
        }
        if from.origin() != to.origin() {
            self.headers.remove(AUTHORIZATION);
            self.headers.remove(COOKIE);
        }
    }
}

/// Where one request goes, taken apart from its URL.
pub(crate) struct Target {
    /// Host to resolve or IP literal, without brackets.
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) https: bool,
    /// `host[:port]` as in the URL (brackets kept), without userinfo.
    authority: String,
    /// `/path?query`.
    path_and_query: String,
    scheme: &'static str,
}

impl Target {
    pub(crate) fn parse(url: &Url) -> Result<Self, ProbeError> {
        let (https, scheme) = match url.scheme() {
            "http" => (false, "http"),
            "https" => (true, "https"),
            other => {
                return Err(ProbeError::new(
                    ErrorClass::Status,
                    format!("scheme {other:?} is not supported: use http or https"),
                ))
            }
        };
        let no_host = || ProbeError::new(ErrorClass::Dns, format!("{} has no host", redact(url)));
        let host = url_host(url).ok_or_else(no_host)?;
        let port = url.port_or_known_default().ok_or_else(no_host)?;
        let host_str = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_owned(),
        };
        Ok(Target {
            host,
            port,
            https,
            authority,
            path_and_query: url[Position::BeforePath..Position::AfterQuery].to_owned(),
            scheme,
        })
    }

    /// The request URI: origin form (`/path?q`) for HTTP/1.1, absolute for
    /// HTTP/2 (where it gives `:scheme` and `:authority`).
    fn uri(&self, h2: bool) -> Result<Uri, ProbeError> {
        let text = if h2 {
            format!(
                "{}://{}{}",
                self.scheme, self.authority, self.path_and_query
            )
        } else {
            self.path_and_query.clone()
        };
        text.parse().map_err(|e| {
            ProbeError::new(
                ErrorClass::Status,
                format!(
                    "cannot request {}{}: {e}",
                    self.authority, self.path_and_query
                ),
            )
        })
    }

    /// A request for this target with `method`, `headers` (plus `Host` on
    /// HTTP/1.1 unless given) and `body`.
    pub(crate) fn request<B>(
        &self,
        h2: bool,
        method: &Method,
        headers: &HeaderMap,
        body: B,
    ) -> Result<Request<B>, ProbeError> {
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = self.uri(h2)?;
        *request.headers_mut() = headers.clone();
        if h2 {
            *request.version_mut() = Version::HTTP_2;
        } else if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(&self.authority).map_err(|e| {
                ProbeError::new(
                    ErrorClass::Status,
                    format!("Host {:?}: {e}", self.authority),
                )
            })?;
            request.headers_mut().insert(HOST, host);
        }
        Ok(request)
    }
}

/// The spec's headers plus `User-Agent` (unless set).
fn request_headers(spec: &[(String, String)]) -> Result<HeaderMap, BuildError> {
    let mut headers = HeaderMap::new();
    for (name, value) in spec {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| BuildError::Invalid(format!("{name:?} is not a valid header name")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| BuildError::Invalid(format!("the value of {name:?} is not valid")))?;
        headers.append(header, value);
    }
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    }
    Ok(headers)
}

/// The request half of a hyper client connection, sending bodies of type `B`.
pub(crate) enum Sender<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

impl<B> Sender<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// Starts HTTP/1.1 or HTTP/2 over `io`; the [`Driver`] must be polled for
    /// anything to move.
    async fn handshake<IO>(
        io: IO,
        h2: bool,
        deadline: &Deadline,
    ) -> Result<(Self, Driver), ProbeError>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let io = TokioIo::new(io);
        let failed = |e: hyper::Error| {
            ProbeError::new(
                ErrorClass::Connect,
                format!("HTTP handshake: {}", describe_error(&e)),
            )
        };
        if h2 {
            let (sender, conn) = deadline
                .run(
                    "http/2 handshake",
                    http2::handshake(BoundedExecutor::until(deadline), io),
                )
                .await?
                .map_err(failed)?;
            Ok((Sender::H2(sender), Driver::new(conn)))
        } else {
            let (sender, conn) = deadline
                .run("http/1.1 handshake", http1::handshake(io))
                .await?
                .map_err(failed)?;
            Ok((Sender::H1(sender), Driver::new(conn)))
        }
    }

    pub(crate) fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    pub(crate) async fn send(&mut self, request: Request<B>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
    }
}

/// The connection half: hyper's connection future, polled only while the
/// probe waits on the connection, and dropped (closing it) with the hop.
/// HTTP/1.1 spawns nothing; HTTP/2's background tasks run on a
/// [`BoundedExecutor`]. Either way nothing outlives the attempt.
pub(crate) struct Driver(Option<BoxFuture<'static, ()>>);

impl Driver {
    pub(crate) fn new<F>(conn: F) -> Self
    where
        F: Future + Send + 'static,
    {
        Driver(Some(Box::pin(async move {
            // Its error also reaches the request or body future, which reports it.
            let _ = conn.await;
        })))
    }

    /// Awaits `fut` while driving the connection.
    pub(crate) async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
        tokio::pin!(fut);
        if let Some(conn) = self.0.as_mut() {
            tokio::select! {
                out = &mut fut => return out,
                () = conn => self.0 = None,
            }
        }
        // The connection ended: `fut` now resolves (with an error) on its own.
        fut.await
    }
}

/// Spawns hyper's HTTP/2 background tasks (the h2 connection, stream pipes),
/// each cut off shortly after the attempt's deadline so that none outlives it,
/// even against a peer that never lets the connection close.
#[derive(Clone, Copy)]
struct BoundedExecutor {
    until: Instant,
}

impl BoundedExecutor {
    /// Grace after the deadline for a clean shutdown (GOAWAY) of a
    /// connection whose attempt has ended.
    const GRACE: Duration = Duration::from_secs(1);

    fn until(deadline: &Deadline) -> Self {
        BoundedExecutor {
            until: deadline.at() + Self::GRACE,
        }
    }
}

impl<F> hyper::rt::Executor<F> for BoundedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(tokio::time::timeout_at(self.until, fut));
    }
}

/// How much of the body was read and whether the needle was in it.
enum BodyRead {
    /// No needle, or it was found.
    Ok,
    /// The needle is not in the first `bytes` bytes.
    Missing { bytes: usize },
}

/// Reads at most [`BODY_LIMIT`] bytes of `body`, stopping as soon as `needle`
/// (when given) is found.
async fn read_body(mut body: Incoming, needle: Option<&[u8]>) -> Result<BodyRead, hyper::Error> {
    let mut finder = needle.map(Finder::new);
    let mut read = 0;
    while read < BODY_LIMIT {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        let take = data.len().min(BODY_LIMIT - read);
        read += take;
        if let Some(finder) = finder.as_mut() {
            if finder.push(&data[..take]) {
                return Ok(BodyRead::Ok);
            }
        }
    }
    Ok(match finder {
        Some(_) => BodyRead::Missing { bytes: read },
        None => BodyRead::Ok,
    })
}

/// Searches a needle in a body that arrives in chunks.
pub(crate) struct Finder<'n> {
    needle: &'n [u8],
    /// The end of what was seen, kept so that a needle split across two
    /// chunks is found: at most `needle.len() - 1` bytes.
    tail: Vec<u8>,
}

impl<'n> Finder<'n> {
    pub(crate) fn new(needle: &'n [u8]) -> Self {
        Finder {
            needle,
            tail: Vec::new(),
        }
    }

    /// Adds a chunk; whether the needle has now been seen. An empty needle is
    /// found at once.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        let n = self.needle.len();
        if n == 0 {
            return true;
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.windows(n).any(|w| w == self.needle) {
            return true;
        }
        let keep = self.tail.len().min(n - 1);
        self.tail.drain(..self.tail.len() - keep);
        false
    }
}

/// Whether `status` is a redirect with a `Location` to follow.
pub(crate) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The class of a failure between sending the request and its headers.
pub(crate) fn response_error(e: hyper::Error) -> ProbeError {
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        ProbeError::new(
            ErrorClass::Status,
            format!("invalid HTTP response: {}", describe_error(&e)),
        )
    } else {
        ProbeError::new(
            ErrorClass::Connect,
            format!("no response: {}", describe_error(&e)),
        )
    }
}

fn expected_status(expect: &[u16]) -> String {
    if expect.is_empty() {
        "200-399".into()
    } else {
        let codes: Vec<String> = expect.iter().map(u16::to_string).collect();
        codes.join(", ")
    }
}

/// "HTTP/1.1", "HTTP/2" ...
fn version_name(v: Version) -> String {
    match v {
        Version::HTTP_09 => "HTTP/0.9".into(),
        Version::HTTP_10 => "HTTP/1.0".into(),
        Version::HTTP_11 => "HTTP/1.1".into(),
        Version::HTTP_2 => "HTTP/2".into(),
        Version::HTTP_3 => "HTTP/3".into(),
        other => format!("{other:?}"),
    }
}

/// `url` without userinfo, for messages and `final_url`.
pub(crate) fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot have userinfo, which then have none.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ChainStatus;

    use super::*;
    use crate::probe::testkit::{self, open, CaServer, ServerCert, Validity};

    const TIMEOUT: Duration = Duration::from_secs(5);
    const SHORT: Duration = Duration::from_millis(400);

    fn spec(url: &str) -> HttpSpec {
        HttpSpec::get(url.parse().unwrap())
    }

    async fn run(spec: HttpSpec) -> ProbeOutcome {
        run_within(spec, TIMEOUT).await
    }

    async fn run_within(spec: HttpSpec, timeout: Duration) -> ProbeOutcome {
        HttpProbe::new(spec, timeout, open()).unwrap().run().await
    }

    fn class(out: &ProbeOutcome) -> ErrorClass {
        out.error.as_ref().expect("the attempt failed").class
    }

    #[tokio::test]
    async fn a_plain_get_times_every_phase_but_dns_and_tls() {
        let addr = testkit::http_server().await;
        let url = format!("http://{addr}/health");
        let out = run(spec(&url)).await;
        assert_eq!(out.error, None);
        assert_eq!(out.status, Some(200));
        assert_eq!(out.http_version.as_deref(), Some("HTTP/1.1"));
        assert_eq!(out.final_url.as_deref(), Some(url.as_str()));
        assert_eq!(out.redirects, 0);
        assert_eq!(out.phases.dns, None, "IP literal");
        assert_eq!(out.phases.tls, None, "plain http");
        assert_eq!(out.tls, None);
        let (connect, waiting) = (out.phases.connect.unwrap(), out.phases.waiting.unwrap());
        assert!(connect + waiting <= out.phases.total);
        let probe = HttpProbe::new(spec(&url), TIMEOUT, open()).unwrap();
        assert_eq!(probe.kind(), ProbeKind::Http);
    }

    #[tokio::test]
    async fn a_host_name_adds_the_dns_phase() {
        let addr = testkit::http_server().await;
        let out = run(spec(&format!("http://localhost:{}/", addr.port()))).await;
        assert_eq!(out.error, None);
        assert!(out.phases.dns.is_some());
    }

    #[tokio::test]
    async fn with_resolve_connects_to_the_given_address_and_keeps_the_name() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://pinned.test:{}/echo", addr.port()));
        s.body_contains = Some(format!("host: pinned.test:{}\n", addr.port()));
        let pinned = HashMap::from([("pinned.test".to_owned(), addr.ip())]);
        let probe = HttpProbe::new(s, TIMEOUT, open())
            .unwrap()
            .with_resolve(pinned);
        let out = probe.run().await;
        assert_eq!(out.error, None);
        assert_eq!(out.phases.dns, None, "nothing resolved");

        // TLS: the name is still the certificate's.
        let server = CaServer::start(&["pinned.test"], Validity::Current).await;
        let mut s = spec(&format!("https://pinned.test:{}/", server.port()));
        s.ca_file = server.ca_file();
        let pinned = HashMap::from([("pinned.test".to_owned(), "127.0.0.1".parse().unwrap())]);
        let probe = HttpProbe::new(s, TIMEOUT, open())
            .unwrap()
            .with_resolve(pinned);
        let out = probe.run().await;
        assert_eq!(out.error, None);
        assert_eq!(out.tls.unwrap().chain_status(), ChainStatus::Valid);
    }

    #[tokio::test]
    async fn headers_user_agent_and_host_are_sent() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/echo"));
        s.headers = vec![("X-Probe".into(), "yes".into())];
        for line in [
            format!("user-agent: {USER_AGENT_VALUE}\n"),
            format!("host: {addr}\n"),
            "x-probe: yes\n".to_owned(),
            "version: HTTP/1.1\n".to_owned(),
        ] {
            s.body_contains = Some(line.clone());
            assert_eq!(run(s.clone()).await.error, None, "the echo shows {line:?}");
        }
        s.body_contains = Some("x-absent".into());
        assert_eq!(class(&run(s).await), ErrorClass::Body);
    }

    #[tokio::test]
    async fn a_500_is_class_status() {
        let addr = testkit::http_server().await;
        let out = run(spec(&format!("http://{addr}/status/500"))).await;
        assert_eq!(class(&out), ErrorClass::Status);
        assert_eq!(out.status, Some(500));
        assert!(out.error.unwrap().message.contains("200-399"));

        let mut s = spec(&format!("http://{addr}/status/500"));
        s.expect_status = vec![500];
        assert_eq!(run(s).await.error, None, "500 was expected");
    }

    #[tokio::test]
    async fn body_contains_is_searched_in_the_first_mebibyte() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/"));
        s.body_contains = Some("from the target".into());
        assert_eq!(run(s.clone()).await.error, None);

        s.body_contains = Some("not there".into());
        let out = run(s).await;
        assert_eq!(class(&out), ErrorClass::Body);
        assert!(out.error.unwrap().message.contains("not there"));

        // `/big` puts the needle right after the first BODY_LIMIT bytes.
        let mut s = spec(&format!("http://{addr}/big"));
        s.body_contains = Some("needle".into());
        let out = run(s).await;
        assert_eq!(class(&out), ErrorClass::Body);
        let message = out.error.unwrap().message;
        assert!(
            message.contains(&format!("first {BODY_LIMIT} bytes")),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_slow_response_is_class_timeout_at_the_deadline() {
        let addr = testkit::http_server().await;
        let out = run_within(spec(&format!("http://{addr}/slow")), SHORT).await;
        assert_eq!(class(&out), ErrorClass::Timeout);
        assert!(out.error.unwrap().message.contains("waiting"));
        assert!(out.phases.connect.is_some());
        assert_eq!(out.phases.waiting, None);
        assert!(out.phases.total >= SHORT && out.phases.total < testkit::SLOW);
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_class_timeout() {
        let addr = testkit::silent_server().await;
        let out = run_within(spec(&format!("http://{addr}/")), SHORT).await;
        assert_eq!(class(&out), ErrorClass::Timeout);
    }

    #[tokio::test]
    async fn a_server_that_closes_at_once_is_class_connect() {
        let addr = testkit::closing_server().await;
        let out = run(spec(&format!("http://{addr}/"))).await;
        assert_eq!(class(&out), ErrorClass::Connect, "{:?}", out.error);
        assert!(out.error.unwrap().message.contains("no response"));
    }

    #[tokio::test]
    async fn a_refused_port_is_class_connect_without_credentials() {
        let addr = testkit::closed_port().await;
        let out = run(spec(&format!("http://user:s3cret@{addr}/"))).await;
        assert_eq!(class(&out), ErrorClass::Connect);
        let shown = format!("{:?} {:?}", out.error, out.final_url);
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        assert_eq!(out.final_url, Some(format!("http://{addr}/")));
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_class_dns() {
        let out = run(spec(&format!("http://{}/", testkit::UNRESOLVABLE))).await;
        assert_eq!(class(&out), ErrorClass::Dns, "{:?}", out.error);
        assert_eq!((out.phases.dns, out.phases.connect), (None, None));
    }

    #[tokio::test]
    async fn redirects_are_followed() {
        let addr = testkit::http_server().await;
        let out = run(spec(&format!("http://{addr}/redirect/3"))).await;
        assert_eq!(out.error, None);
        assert_eq!(out.redirects, 4, "3, 2, 1, 0, then /");
        assert_eq!(out.status, Some(200));
        assert_eq!(out.final_url, Some(format!("http://{addr}/")));
    }

    #[tokio::test]
    async fn redirects_are_capped() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/redirect/5"));
        s.max_redirects = 2;
        let out = run(s).await;
        assert_eq!(class(&out), ErrorClass::Status);
        assert_eq!(out.redirects, 2);
        assert_eq!(out.status, Some(302));
        assert!(out.error.unwrap().message.contains("too many redirects"));

        let out = run(spec(&format!("http://{addr}/loop"))).await;
        assert_eq!(class(&out), ErrorClass::Status);
        assert_eq!(out.redirects, 10, "the default max_redirects");
    }

    #[tokio::test]
    async fn redirects_are_not_followed_when_disabled() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/redirect/1"));
        s.follow_redirects = false;
        let out = run(s).await;
        assert_eq!(out.error, None, "302 is in 200-399");
        assert_eq!((out.status, out.redirects), (Some(302), 0));

        let out = run(spec(&format!("http://{addr}/no-location"))).await;
        assert_eq!((out.status, out.redirects), (Some(302), 0));
    }

    #[tokio::test]
    async fn see_other_turns_a_post_into_a_get() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/see-other"));
        s.method = "POST".into();
        s.body_contains = Some("method: GET".into());
        let out = run(s).await;
        assert_eq!(out.error, None);
        assert_eq!(out.redirects, 1);
    }

    #[tokio::test]
    async fn credentials_are_not_sent_to_another_origin() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/echo"));
        s.headers = vec![("Authorization".into(), "Bearer t0ken".into())];
        s.body_contains = Some("authorization: Bearer t0ken".into());
        assert_eq!(run(s.clone()).await.error, None, "same origin: sent");

        // 127.0.0.1 → localhost is another origin.
        let port = addr.port();
        s.url = format!("http://{addr}/to?http://localhost:{port}/echo")
            .parse()
            .unwrap();
        let out = run(s).await;
        assert_eq!(out.redirects, 1);
        assert_eq!(class(&out), ErrorClass::Body, "not sent after the redirect");
    }

    /// Loopback URLs written many ways, and a redirect from an allowed host
    /// to a refused one: class `egress`, and the victim sees no connection.
    #[tokio::test]
    async fn urls_and_redirects_to_refused_addresses_send_nothing() {
        let victim = testkit::Victim::start().await;
        let port = victim.port;
        let deny = Arc::new(EgressPolicy::default());
        for url in [
            format!("http://127.1:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://[::1]:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://localhost:{port}/"),
            format!("https://127.0.0.1:{port}/"),
        ] {
            let out = HttpProbe::new(spec(&url), TIMEOUT, Arc::clone(&deny))
                .unwrap()
                .run()
                .await;
            assert_eq!(class(&out), ErrorClass::Egress, "{url}: {:?}", out.error);
            assert_eq!((out.status, out.phases.connect), (None, None), "{url}");
        }

        // 127.0.0.1 is allowed; it redirects to 127.0.0.2, which is not.
        let allowed = testkit::http_server().await;
        let only = Arc::new(EgressPolicy::new(vec!["127.0.0.1".parse().unwrap()]));
        let url = format!("http://{allowed}/to?http://127.0.0.2:{port}/");
        let out = HttpProbe::new(spec(&url), TIMEOUT, only)
            .unwrap()
            .run()
            .await;
        assert_eq!(out.redirects, 1, "the allowed hop was fetched");
        assert_eq!(class(&out), ErrorClass::Egress, "{:?}", out.error);
        let err = out.error.unwrap();
        assert!(err.message.contains("127.0.0.2 is loopback"), "{err:?}");
        assert_eq!(victim.accepted(), 0, "nothing reached the victim");

        // The control: the same redirect with 127.0.0.0/8 allowed does reach it.
        let wide = Arc::new(EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let out = HttpProbe::new(spec(&url), TIMEOUT, wide)
            .unwrap()
            .run()
            .await;
        assert_ne!(class(&out), ErrorClass::Egress, "{:?}", out.error);
        assert_eq!(victim.until_accepted(1).await, 1);
    }

    #[tokio::test]
    async fn https_negotiates_http2_and_records_facts() {
        let server = CaServer::start(&["localhost"], Validity::Current).await;
        let mut s = spec(&format!("https://localhost:{}/echo", server.port()));
        s.ca_file = server.ca_file();
        s.body_contains = Some("version: HTTP/2.0".into());
        let out = run(s).await;
        assert_eq!(out.error, None);
        assert_eq!(out.http_version.as_deref(), Some("HTTP/2"));
        assert!(out.phases.dns.is_some() && out.phases.tls.is_some());
        let facts = out.tls.expect("facts");
        assert_eq!(facts.chain_status(), ChainStatus::Valid);
        assert!(facts.san_match);
    }

    #[tokio::test]
    async fn a_slow_http2_response_is_class_timeout() {
        let server = CaServer::start(&["127.0.0.1"], Validity::Current).await;
        let mut s = spec(&format!("https://{}/slow", server.addr));
        s.ca_file = server.ca_file();
        let out = run_within(s, SHORT).await;
        assert_eq!(class(&out), ErrorClass::Timeout);
        assert!(out.phases.tls.is_some() && out.tls.is_some());
        assert!(out.phases.total < testkit::SLOW);
    }

    #[tokio::test]
    async fn https_falls_back_to_http11_without_h2() {
        let server = CaServer::start_with(&["127.0.0.1"], Validity::Current, |cert| {
            cert.alpn = vec![b"http/1.1".to_vec()];
        })
        .await;
        let mut s = spec(&format!("https://{}/", server.addr));
        s.ca_file = server.ca_file();
        let out = run(s).await;
        assert_eq!(out.error, None);
        assert_eq!(out.http_version.as_deref(), Some("HTTP/1.1"));
        assert_eq!(out.phases.dns, None);
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_class_tls_with_facts() {
        let cert = ServerCert::self_signed("self.localhost", &["localhost"], Validity::Current);
        let addr = testkit::https_server(cert).await;
        let url = format!("https://localhost:{}/", addr.port());
        let out = run(spec(&url)).await;
        assert_eq!(class(&out), ErrorClass::Tls);
        assert_eq!(out.status, None, "no request is sent to an untrusted peer");
        assert_eq!(out.phases.waiting, None);
        let facts = out.tls.expect("facts");
        assert_eq!(facts.chain_status(), ChainStatus::SelfSigned);

        let mut s = spec(&url);
        s.insecure_skip_verify = true;
        let out = run(s).await;
        assert_eq!(out.error, None);
        assert_eq!(out.status, Some(200));
        assert_eq!(out.tls.unwrap().chain_status(), ChainStatus::SelfSigned);
    }

    #[tokio::test]
    async fn an_expired_certificate_fails_even_with_the_right_ca() {
        let server = CaServer::start(&["localhost"], Validity::Expired).await;
        let mut s = spec(&format!("https://localhost:{}/", server.port()));
        s.ca_file = server.ca_file();
        let out = run(s).await;
        assert_eq!(class(&out), ErrorClass::Tls);
        assert_eq!(out.tls.unwrap().days_left, -11);
    }

    #[tokio::test]
    async fn a_redirect_to_https_reports_the_last_hop() {
        let server = CaServer::start(&["localhost"], Validity::Current).await;
        let addr = testkit::http_server().await;
        let target = format!("https://localhost:{}/", server.port());
        let mut s = spec(&format!("http://{addr}/to?{target}"));
        s.ca_file = server.ca_file();
        let out = run(s).await;
        assert_eq!(out.error, None);
        assert_eq!(out.redirects, 1);
        assert_eq!(out.final_url, Some(target));
        assert!(out.phases.tls.is_some() && out.tls.is_some());
    }

    #[tokio::test]
    async fn head_requests_have_no_body() {
        let addr = testkit::http_server().await;
        let mut s = spec(&format!("http://{addr}/"));
        s.method = "HEAD".into();
        let out = run(s).await;
        assert_eq!((out.error, out.status), (None, Some(200)));
    }

    #[test]
    fn bad_specs_fail_at_build_time() {
        let mut s = spec("http://example.test/");
        s.method = "GE T".into();
        assert!(matches!(
            HttpProbe::new(s, TIMEOUT, open()),
            Err(BuildError::Invalid(_))
        ));

        let mut s = spec("http://example.test/");
        s.headers = vec![("Bad Name".into(), "x".into())];
        assert!(matches!(
            HttpProbe::new(s, TIMEOUT, open()),
            Err(BuildError::Invalid(_))
        ));

        let mut s = spec("http://example.test/");
        s.headers = vec![("X-Ok".into(), "line\nbreak".into())];
        assert!(matches!(
            HttpProbe::new(s, TIMEOUT, open()),
            Err(BuildError::Invalid(_))
        ));

        let s = spec("ftp://example.test/");
        assert!(matches!(
            HttpProbe::new(s, TIMEOUT, open()),
            Err(BuildError::Invalid(_))
        ));

        let mut s = spec("https://example.test/");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(
            HttpProbe::new(s, TIMEOUT, open()),
            Err(BuildError::CaFile { .. })
        ));
    }

    #[test]
    fn the_finder_sees_a_needle_split_across_chunks() {
        let mut f = Finder::new(b"needle");
        assert!(!f.push(b"xxxnee"));
        assert!(!f.push(b"d"));
        assert!(f.push(b"leyyy"));
        let mut f = Finder::new(b"abc");
        assert!(!f.push(b"ab"));
        assert!(!f.push(b"xc"));
        assert!(Finder::new(b"").push(b""));
    }

    #[test]
    fn redaction_removes_userinfo_only() {
        let url: Url = "https://user:pw@example.test:8443/p?q=1".parse().unwrap();
        assert_eq!(redact(&url), "https://example.test:8443/p?q=1");
        let url: Url = "http://[::1]:8080/".parse().unwrap();
        assert_eq!(redact(&url), "http://[::1]:8080/");
    }

    #[test]
    fn targets_keep_ipv6_brackets_in_the_authority_only() {
        let t = Target::parse(&"http://u:p@[::1]:8080/a?b".parse().unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
        assert_eq!(t.uri(false).unwrap(), "/a?b");
        assert_eq!(t.uri(true).unwrap(), "http://[::1]:8080/a?b");
        let t = Target::parse(&"https://example.test/".parse().unwrap()).unwrap();
        assert_eq!(
            (t.port, t.https, t.authority.as_str()),
            (443, true, "example.test")
        );
    }
}
