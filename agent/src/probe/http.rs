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

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE, HOST, LOCATION, USER_AGENT};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use url::{Host, Position, Url};
use vantage_proto::spec::{HttpSpec, ProbeKind};
use vantage_proto::v1::ErrorClass;

use super::tcp::resolve_and_connect;
use super::tls::{self, TlsClient};
use super::{
    describe_error, run_attempt, Attempt, BoxFuture, BuildError, Deadline, Phases, Probe,
    ProbeError, ProbeOutcome,
};

/// Most bytes of a response body that are read; `body_contains` is searched
/// in this prefix only (shared/RELIABILITY.md §6, API4/API10: bounded reads).
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The `User-Agent` sent unless the spec sets one.
pub const USER_AGENT_VALUE: &str = concat!("vantage-agent/", env!("CARGO_PKG_VERSION"));

/// ALPN protocols offered on https, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Runs an [`HttpSpec`]: one request (plus redirects) whose response must
/// have an accepted status and, optionally, contain a string.
#[derive(Debug)]
pub struct HttpProbe {
    spec: HttpSpec,
    timeout: Duration,
    method: Method,
    headers: HeaderMap,
    tls: TlsClient,
}

impl HttpProbe {
    /// A probe of `spec` whose attempts (all hops) end after `timeout`.
    ///
    /// Fails when `ca_file` cannot be read, or when the URL, method or a header
    /// cannot be sent.
    pub fn new(spec: HttpSpec, timeout: Duration) -> Result<Self, BuildError> {
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
        })
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
        let tcp = resolve_and_connect(&target.host, target.port, deadline, &mut out.phases).await?;
        if !target.https {
            return self
                .exchange(tcp, false, &target, url, req, deadline, out)
                .await;
        }
        let name = tls::server_name(&target.host)?;
        let (stream, facts) = self
            .tls
            .handshake(tcp, &name, deadline, &mut out.phases)
            .await?;
        let verdict = tls::verdict(&facts);
        out.tls = Some(facts);
        if !self.spec.insecure_skip_verify {
            // Nothing has been sent yet: an untrusted peer gets no request.
            verdict?;
        }
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
        self.exchange(stream, h2, &target, url, req, deadline, out)
            .await
    }

    /// Sends the request over `io` and judges the response.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<IO>(
        &self,
        io: IO,
        h2: bool,
        target: &Target,
        url: &Url,
        req: &RequestParts,
        deadline: &Deadline,
        out: &mut ProbeOutcome,
    ) -> Result<Hop, ProbeError>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let request = target.request(h2, req)?;
        let (mut sender, mut driver) = Sender::handshake(io, h2, deadline).await?;
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
        if !self.spec.status_ok(status.as_u16()) {
            return Err(ProbeError::new(
                ErrorClass::Status,
                format!(
                    "status {} is not accepted (expected {})",
                    status.as_u16(),
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
            _ => Ok(Hop::Done),
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
struct Target {
    /// Host to resolve or IP literal, without brackets.
    host: String,
    port: u16,
    https: bool,
    /// `host[:port]` as in the URL (brackets kept), without userinfo.
    authority: String,
    /// `/path?query`.
    path_and_query: String,
    scheme: &'static str,
}

impl Target {
    fn parse(url: &Url) -> Result<Self, ProbeError> {
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
        let host = match url.host().ok_or_else(no_host)? {
            Host::Domain(d) => d.to_owned(),
            Host::Ipv4(ip) => ip.to_string(),
            Host::Ipv6(ip) => ip.to_string(),
        };
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

    fn request(&self, h2: bool, parts: &RequestParts) -> Result<Request<Empty<Bytes>>, ProbeError> {
        let mut request = Request::new(Empty::new());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = self.uri(h2)?;
        *request.headers_mut() = parts.headers.clone();
        if h2 {
            *request.version_mut() = Version::HTTP_2;
        } else if !parts.headers.contains_key(HOST) {
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

/// The request half of a hyper client connection.
enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
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
                    http2::handshake(TokioExecutor::new(), io),
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

    async fn send(&mut self, request: Request<Empty<Bytes>>) -> hyper::Result<Response<Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(request).await,
            Sender::H2(s) => s.send_request(request).await,
        }
    }
}

/// The connection half: hyper's connection future, polled only while the
/// probe waits on the connection, and dropped (closing it) with the hop. No
/// task is spawned, so nothing outlives the attempt.
struct Driver(Option<BoxFuture<'static, ()>>);

impl Driver {
    fn new<F>(conn: F) -> Self
    where
        F: Future + Send + 'static,
    {
        Driver(Some(Box::pin(async move {
            // Its error also reaches the request or body future, which reports it.
            let _ = conn.await;
        })))
    }

    /// Awaits `fut` while driving the connection.
    async fn drive<F: Future>(&mut self, fut: F) -> F::Output {
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
    let needle = needle.filter(|n| !n.is_empty());
    let mut prefix: Vec<u8> = Vec::new();
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
        if let Some(needle) = needle {
            // Search only what is new, plus an overlap for a needle split
            // across two frames.
            let from = prefix.len().saturating_sub(needle.len() - 1);
            prefix.extend_from_slice(&data[..take]);
            if prefix[from..].windows(needle.len()).any(|w| w == needle) {
                return Ok(BodyRead::Ok);
            }
        }
    }
    Ok(match needle {
        Some(_) => BodyRead::Missing { bytes: read },
        None => BodyRead::Ok,
    })
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The class of a failure between sending the request and its headers.
fn response_error(e: hyper::Error) -> ProbeError {
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
