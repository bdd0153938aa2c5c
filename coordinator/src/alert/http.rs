//! A small HTTP(S) POST client shared by the `slack` and `webhook` channels.
//!
//! One request per connection: resolve, connect, TLS (rustls with the ring
//! provider, webpki-roots plus an optional `ca_file`), one HTTP/1.1 POST, and
//! the status classified into a [`Delivery`]. No pooling, no redirects, no
//! retries: the outbox owns retries and the per-channel rate limit, and alert
//! traffic is at most about one message per second per channel.
//!
//! # Secrets
//! The URL is the credential (a Slack webhook URL authorizes posting). It is
//! never put in an error, a reason or `Debug` output: reasons say what failed
//! ("slack webhook: connection refused"), never where to. As a last line of
//! defence every reason is passed through [`Redactor`], which removes the URL,
//! its path, its query and every path segment or query value that could be a
//! token, in case a library error or a hostile receiver's body echoes them.
//!
//! # Classification (shared/RELIABILITY.md §5, §6 API10)
//! - 2xx: [`Delivery::Accepted`].
//! - 429: `Retry` with the receiver's `Retry-After`.
//! - 408, 425, 5xx: `Retry`, with `Retry-After` when present.
//! - 3xx: `Permanent` (redirects are not followed: the URL must be updated).
//! - other 4xx and anything else: `Permanent`.
//! - DNS, connect, TLS failures and timeouts before the request was fully
//!   written: `Retry` (the receiver cannot have acted on it).
//! - failures after the request was fully written but before a status line
//!   arrived (connection closed, timeout, garbage): `Ambiguous`.
//!
//! `Retry-After` is read as delta-seconds or an HTTP-date and clamped to
//! [`MAX_RETRY_AFTER`]. At most [`MAX_RESPONSE_BODY`] bytes of a response body
//! are read, and only a short, sanitized excerpt ([`MAX_EXCERPT_CHARS`]) ever
//! reaches a reason.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT,
};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::Delivery;
use crate::secret::Secret;

/// Longest wait a receiver may ask for with `Retry-After`. Slack asks for
/// seconds to minutes; a larger value is a receiver bug or hostile, and the
/// outbox raises a meta-alert when it has to wait this long
/// (shared/RELIABILITY.md §5).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Most response-body bytes read. Slack answers a few bytes (`ok`,
/// `invalid_payload`); anything more is only read for an excerpt, so a huge or
/// endless body cannot use memory (shared/RELIABILITY.md §6 API10).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// Most characters of a response body quoted in a reason: enough for Slack's
/// error codes and a short JSON error, short enough for a log line.
pub const MAX_EXCERPT_CHARS: usize = 120;

/// Largest read buffer, so the largest response head (status line and
/// headers) accepted: real receivers behind CDNs send a few KiB of headers.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most resolved addresses tried; more only dilute each one's share of the
/// timeout.
const MAX_ADDRESSES: usize = 16;

/// `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = concat!("vantage-coordinator/", env!("CARGO_PKG_VERSION"));

/// A POST target built from a secret URL, with its TLS client. `Debug` shows
/// neither the URL nor any part of it.
pub(crate) struct HttpPoster {
    /// What to call the receiver in reasons, e.g. `slack webhook`.
    label: &'static str,
    host: url::Host<String>,
    port: u16,
    /// `Host` header value (host, and port when not the default).
    authority: HeaderValue,
    /// Origin-form request target (path and query): part of the secret.
    target: Uri,
    /// `None` for `http://` (loopback only).
    tls: Option<TlsConnector>,
    timeout: Duration,
    redactor: Redactor,
}

impl fmt::Debug for HttpPoster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPoster")
            .field("label", &self.label)
            .field("url", &"[redacted]")
            .field("tls", &self.tls.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpPoster {
    /// Validates `url` and builds the TLS client.
    ///
    /// `what` names the setting in errors (e.g. `slack webhook_url`); `label`
    /// names the receiver in delivery reasons. Fails, without quoting the URL,
    /// when it does not parse, has no host, carries credentials, or is not
    /// `https://` (or `http://` to a loopback host); when `timeout` is zero;
    /// or when `ca_file` cannot be read or holds no certificate.
    pub(crate) fn new(
        what: &str,
        label: &'static str,
        url: &Secret,
        timeout: Duration,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let raw = url.expose();
        let redactor = Redactor::new(raw);
        // url::ParseError's text never quotes the input.
        let parsed = url::Url::parse(raw).map_err(|e| format!("{what}: not a valid URL ({e})"))?;
        let host = parsed
            .host()
            .map(|h| h.to_owned())
            .ok_or_else(|| format!("{what}: the URL has no host"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "{what}: credentials in the URL are not supported (user:password@)"
            ));
        }
        let tls = match parsed.scheme() {
            "https" => true,
            "http" if is_loopback_host(&host) => false,
            "http" => {
                return Err(format!(
                    "{what}: http:// is only allowed to a loopback host (127.0.0.0/8, ::1, localhost); use https://"
                ))
            }
            _ => return Err(format!("{what}: the URL scheme must be https")),
        };
        if timeout.is_zero() {
            return Err(format!("{what}: the timeout must be greater than zero"));
        }
        // A default port (80/443) is left out of the URL by the parser.
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("{what}: the URL has no port"))?;
        let host_text = match &host {
            url::Host::Domain(d) => d.clone(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let authority = match parsed.port() {
            Some(p) => format!("{host_text}:{p}"),
            None => host_text,
        };
        let authority = HeaderValue::from_str(&authority)
            .map_err(|_| format!("{what}: the URL host is not a valid Host header"))?;
        let mut path_and_query = parsed.path().to_owned();
        if let Some(q) = parsed.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        let target = Uri::try_from(path_and_query)
            .map_err(|_| format!("{what}: the URL path is not a valid request target"))?;
        let tls = if tls {
            Some(tls_connector(what, ca_file)?)
        } else {
            None
        };
        Ok(HttpPoster {
            label,
            host,
            port,
            authority,
            target,
            tls,
            timeout,
            redactor,
        })
    }

    /// POSTs `body` as `application/json` with `headers` added, and classifies
    /// the outcome. Completes within the timeout given at construction.
    pub(crate) async fn post_json(
        &self,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Delivery {
        let state = Arc::new(SendState::default());
        let deadline = Instant::now() + self.timeout;
        let outcome =
            match tokio::time::timeout_at(deadline, self.attempt(body, headers, &state, deadline))
                .await
            {
                Ok(Err(d)) => d,
                Ok(Ok((resp, _driver))) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    if status.is_success() {
                        // The body (Slack: `ok`) adds nothing; do not wait for it.
                        Delivery::Accepted
                    } else {
                        // The status decides; the body is only an excerpt, so a
                        // slow one is cut short at the deadline rather than
                        // turning a known status into a timeout.
                        let body = tokio::time::timeout_at(deadline, read_capped(resp.into_body()))
                            .await
                            .unwrap_or_default();
                        classify(self.label, status, retry_after, &excerpt(&body))
                    }
                }
                Err(_) if state.sent() => Delivery::Ambiguous {
                    reason: format!(
                        "{}: no response within {:?} after the request was sent",
                        self.label, self.timeout
                    ),
                },
                Err(_) => Delivery::Retry {
                    after: None,
                    reason: format!(
                        "{}: timed out after {:?} before the request was sent",
                        self.label, self.timeout
                    ),
                },
            };
        self.redactor.delivery(outcome)
    }

    /// Connects and sends the request; returns the response head (and the
    /// connection task, which must live while the body is read), or the
    /// outcome when no status arrived.
    async fn attempt(
        &self,
        body: Bytes,
        headers: &[(HeaderName, HeaderValue)],
        state: &Arc<SendState>,
        deadline: Instant,
    ) -> Result<(http::Response<hyper::body::Incoming>, AbortOnDrop), Delivery> {
        let label = self.label;
        let retry = |what: String| Delivery::Retry {
            after: None,
            reason: format!("{label}: {what}"),
        };
        let tcp = match self.connect(deadline).await {
            Ok(tcp) => tcp,
            Err(e) => return Err(retry(e)),
        };
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let name = match &self.host {
                    url::Host::Domain(d) => ServerName::try_from(d.clone()),
                    url::Host::Ipv4(ip) => Ok(ServerName::from(IpAddr::V4(*ip))),
                    url::Host::Ipv6(ip) => Ok(ServerName::from(IpAddr::V6(*ip))),
                };
                let Ok(name) = name else {
                    return Err(retry("the host is not a valid TLS server name".into()));
                };
                match connector.connect(name, tcp).await {
                    Ok(tls) => Box::new(tls),
                    Err(e) => return Err(retry(format!("TLS handshake failed: {e}"))),
                }
            }
        };
        let io = Tracked {
            inner: io,
            state: Arc::clone(state),
        };
        let (mut sender, conn) = match hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_RESPONSE_HEAD)
            .handshake::<_, TrackedBody>(TokioIo::new(io))
            .await
        {
            Ok(pair) => pair,
            Err(e) => return Err(retry(format!("HTTP handshake failed: {e}"))),
        };
        // The connection task ends with the connection; aborting it on drop
        // (timeout, cancellation) closes the socket.
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));

        let len = body.len();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.target.clone())
            .header(HOST, self.authority.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(CONTENT_LENGTH, HeaderValue::from(len))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let req = match req.body(TrackedBody {
            inner: Full::new(body),
            state: Arc::clone(state),
        }) {
            Ok(r) => r,
            Err(_) => {
                return Err(Delivery::Permanent {
                    reason: format!("{label}: cannot build the request"),
                })
            }
        };

        match sender.send_request(req).await {
            Ok(resp) => Ok((resp, driver)),
            Err(e) if state.sent() => Err(Delivery::Ambiguous {
                reason: format!(
                    "{label}: no response after the request was sent ({})",
                    hyper_error(&e)
                ),
            }),
            Err(e) => Err(retry(format!(
                "sending the request failed ({})",
                hyper_error(&e)
            ))),
        }
    }

    /// Resolves the host and connects to the first address that answers.
    /// `http://` only ever connects to loopback addresses, whatever
    /// `localhost` resolves to.
    ///
    /// Each address gets an equal share of the time left before `deadline`,
    /// so one black-holed address (an unreachable IPv6 route) cannot use the
    /// whole timeout (shared/RELIABILITY.md §4).
    async fn connect(&self, deadline: Instant) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = match &self.host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(*ip), self.port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(*ip), self.port)],
            url::Host::Domain(d) => match tokio::net::lookup_host((d.as_str(), self.port)).await {
                Ok(it) => it.collect(),
                Err(e) => return Err(format!("DNS lookup failed ({e})")),
            },
        };
        let addrs: Vec<SocketAddr> = if self.tls.is_none() {
            addrs.into_iter().filter(|a| a.ip().is_loopback()).collect()
        } else {
            addrs
        };
        if addrs.is_empty() {
            return Err("DNS lookup returned no usable address".into());
        }
        let addrs: Vec<SocketAddr> = addrs.into_iter().take(MAX_ADDRESSES).collect();
        let mut last = "connect failed".to_owned();
        let count = addrs.len();
        for (i, addr) in addrs.into_iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            // count - i is at most MAX_ADDRESSES.
            let share = left / u32::try_from(count - i).unwrap_or(u32::MAX);
            match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = connect_error(&e),
                Err(_) => last = "connect timed out".into(),
            }
        }
        Err(last)
    }
}

/// The classification of a response status (see the module docs).
fn classify(
    label: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: &str,
) -> Delivery {
    let code = status.as_u16();
    let mut reason = format!("{label}: HTTP {code}");
    if let Some(text) = status.canonical_reason() {
        reason.push(' ');
        reason.push_str(text);
    }
    if !excerpt.is_empty() {
        reason.push_str(&format!(" ({excerpt})"));
    }
    match code {
        200..=299 => Delivery::Accepted,
        300..=399 => Delivery::Permanent {
            reason: format!("{reason}: redirects are not followed; update the URL"),
        },
        429 | 408 | 425 | 500..=599 => Delivery::Retry {
            after: retry_after,
            reason,
        },
        _ => Delivery::Permanent { reason },
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (IMF-fixdate,
/// RFC 850 or asctime, RFC 9110 §10.2.3). A date in the past is zero. The
/// result is clamped to [`MAX_RETRY_AFTER`]; `None` when it does not parse.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Any number of digits: an absurdly long value clamps, not fails.
        match value.parse::<u64>() {
            Ok(secs) => Duration::from_secs(secs),
            Err(_) => MAX_RETRY_AFTER,
        }
    } else {
        let at = parse_http_date(value)?;
        let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let now = i64::try_from(now).ok()?;
        Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Seconds since the epoch of an HTTP-date in any of the three forms.
fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = |m: &str| {
        MONTHS
            .iter()
            .position(|n| n.eq_ignore_ascii_case(m))
            .and_then(|i| u8::try_from(i + 1).ok())
            .and_then(|m| time::Month::try_from(m).ok())
    };
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let (year, mon, day, clock) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') => {
            (y.parse::<i32>().ok()?, month(m)?, d.parse::<u8>().ok()?, *t)
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut it = dmy.split('-');
            let (d, m, y) = (it.next()?, it.next()?, it.next()?);
            let y = y.parse::<i32>().ok()?;
            // Two-digit years: RFC 9110 says a date more than 50 years in the
            // future is in the past century; 19xx/20xx by a 70 pivot is close
            // enough for a wait that is clamped to 15 minutes anyway.
            let y = if y < 70 {
                2000 + y
            } else if y < 100 {
                1900 + y
            } else {
                y
            };
            (y, month(m)?, d.parse::<u8>().ok()?, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (y.parse::<i32>().ok()?, month(m)?, d.parse::<u8>().ok()?, *t),
        _ => return None,
    };
    let mut hms = clock.split(':');
    let (h, mi, se) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let date = time::Date::from_calendar_date(year, mon, day).ok()?;
    let time = time::Time::from_hms(h.parse().ok()?, mi.parse().ok()?, se.parse().ok()?).ok()?;
    Some(
        time::PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// Reads at most [`MAX_RESPONSE_BODY`] bytes of a body; stops at the cap or
/// at the first error (the excerpt is best effort).
async fn read_capped(mut body: hyper::body::Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < MAX_RESPONSE_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_RESPONSE_BODY - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    out
}

/// A short, printable, single-line excerpt of a response body: control and
/// non-ASCII characters become `?`, runs of whitespace one space, at most
/// [`MAX_EXCERPT_CHARS`] characters (then `…`). The caller's reason still goes
/// through the [`Redactor`].
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let words = text
        .split_whitespace()
        .map(|w| {
            w.chars()
                .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ");
    if words.chars().count() <= MAX_EXCERPT_CHARS {
        return words;
    }
    let mut out: String = words.chars().take(MAX_EXCERPT_CHARS).collect();
    out.push('…');
    out
}

/// A hyper error's text, with its source (hyper's own text is terse).
fn hyper_error(e: &hyper::Error) -> String {
    match std::error::Error::source(e) {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

/// A connect error in a few words.
fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut => "connect timed out".into(),
        _ => format!("connect failed ({e})"),
    }
}

/// Loopback per the scheme rule: 127.0.0.0/8, ::1 (and its IPv4-mapped
/// form), `localhost`.
fn is_loopback_host(host: &url::Host<String>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            d.eq_ignore_ascii_case("localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The TLS client: webpki-roots plus the certificates in `ca_file`, the ring
/// provider explicitly (never a process-wide default), HTTP/1.1 by ALPN.
fn tls_connector(what: &str, ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let err = |reason: String| format!("{what}: ca_file {}: {reason}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{what}: TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Removes every part of the secret URL that could appear in a text.
#[derive(Clone)]
pub(crate) struct Redactor {
    needles: Vec<String>,
}

/// Shorter path segments and query values are not redacted: they are
/// words like `api` or `v1`, and redacting them would garble reasons.
const MIN_REDACTED_LEN: usize = 4;

impl Redactor {
    /// A redactor for `url` (which need not parse).
    pub(crate) fn new(url: &str) -> Self {
        let mut needles = vec![url.to_owned()];
        let mut add = |s: &str| {
            if s.chars().count() >= MIN_REDACTED_LEN {
                needles.push(s.to_owned());
                let decoded = percent_decode(s);
                if decoded != s {
                    needles.push(decoded);
                }
            }
        };
        // Everything after the authority, then each piece of it.
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        if let Some(i) = after_scheme.find(['/', '?', '#']) {
            let tail = &after_scheme[i..];
            add(tail);
            for piece in tail.split(['/', '?', '&', '=', '#', ';']) {
                add(piece);
            }
        }
        // Longest first, so a shorter needle cannot split a longer one.
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor { needles }
    }

    /// `text` with every needle replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "[redacted]");
            }
        }
        out
    }

    /// `d` with its reason redacted.
    pub(crate) fn delivery(&self, d: Delivery) -> Delivery {
        match d {
            Delivery::Accepted => Delivery::Accepted,
            Delivery::Retry { after, reason } => Delivery::Retry {
                after,
                reason: self.redact(&reason),
            },
            Delivery::Permanent { reason } => Delivery::Permanent {
                reason: self.redact(&reason),
            },
            Delivery::Ambiguous { reason } => Delivery::Ambiguous {
                reason: self.redact(&reason),
            },
        }
    }
}

/// `%XX` sequences decoded (lossy); anything else kept.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| char::from(b).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                // Two hex digits: at most 0xff.
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the request has been handed to the network in full: the body was
/// given to hyper, then a flush of the connection succeeded. From then on the
/// receiver may act on the request, so a lost response is ambiguous.
#[derive(Default)]
struct SendState {
    body_taken: AtomicBool,
    sent: AtomicBool,
}

impl SendState {
    fn sent(&self) -> bool {
        self.sent.load(Ordering::Acquire)
    }
}

/// The request body, marking [`SendState::body_taken`] when hyper has taken
/// its last frame.
struct TrackedBody {
    inner: Full<Bytes>,
    state: Arc<SendState>,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_ready() && self.inner.is_end_stream() {
            self.state.body_taken.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Plain TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The connection, marking [`SendState::sent`] on the first successful flush
/// after the body was taken (hyper flushes after writing a message).
struct Tracked {
    inner: Box<dyn Io>,
    state: Arc<SendState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) && self.state.body_taken.load(Ordering::Acquire) {
            self.state.sent.store(true, Ordering::Release);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix)
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = at(1_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_is_clamped_to_15_minutes() {
        let now = at(1_000_000);
        assert_eq!(parse_retry_after("900", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("901", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        // More digits than a u64 holds still clamps.
        assert_eq!(
            parse_retry_after("99999999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_http_dates() {
        // 784111777 = Sun, 06 Nov 1994 08:49:37 GMT
        let now = at(784_111_777 - 30);
        let thirty = Some(Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            thirty
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now),
            thirty
        );
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), thirty);
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at(784_111_777 + 5)),
            Some(Duration::ZERO)
        );
        // A day ahead clamps.
        assert_eq!(
            parse_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        // Garbage and impossible dates.
        assert_eq!(
            parse_retry_after("Sun, 31 Feb 1994 08:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 25:49:37 GMT", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 PST", now),
            None
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now),
            None
        );
    }

    #[test]
    fn status_classification() {
        let s = |c: u16| StatusCode::from_u16(c).unwrap();
        let seven = Some(Duration::from_secs(7));
        assert_eq!(classify("x", s(200), None, ""), Delivery::Accepted);
        assert_eq!(classify("x", s(204), None, ""), Delivery::Accepted);
        for c in [429, 408, 425, 500, 502, 503, 504] {
            match classify("x", s(c), seven, "") {
                Delivery::Retry { after, reason } => {
                    assert_eq!(after, seven);
                    assert!(reason.contains(&c.to_string()), "{reason}");
                }
                other => panic!("{c}: {other:?}"),
            }
        }
        for c in [301, 302, 307, 308, 400, 401, 403, 404, 410, 413, 422, 499] {
            assert!(
                matches!(classify("x", s(c), seven, ""), Delivery::Permanent { .. }),
                "{c}"
            );
        }
        let Delivery::Permanent { reason } = classify("slack webhook", s(302), None, "") else {
            panic!()
        };
        assert!(reason.contains("redirects are not followed"), "{reason}");
        let Delivery::Permanent { reason } =
            classify("slack webhook", s(404), None, "channel_not_found")
        else {
            panic!()
        };
        assert_eq!(
            reason,
            "slack webhook: HTTP 404 Not Found (channel_not_found)"
        );
    }

    #[test]
    fn excerpts_are_short_single_line_and_printable() {
        assert_eq!(excerpt(b"invalid_payload"), "invalid_payload");
        assert_eq!(excerpt(b"  a\r\n\tb\x1b[31m  "), "a b?[31m");
        assert_eq!(excerpt("é".as_bytes()), "?");
        let long = excerpt(&[b'x'; 1000]);
        assert_eq!(long.chars().count(), MAX_EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(excerpt(b""), "");
    }

    #[test]
    fn redactor_removes_path_query_and_segments() {
        let r = Redactor::new(
            "https://hooks.example.com/services/T0/B0/CANARY%2DX?token=SECRETTOKEN&a=1",
        );
        for text in [
            "https://hooks.example.com/services/T0/B0/CANARY%2DX?token=SECRETTOKEN&a=1",
            "error at /services/T0/B0/CANARY%2DX",
            "CANARY-X and CANARY%2DX",
            "token=SECRETTOKEN",
        ] {
            let out = r.redact(text);
            assert!(!out.contains("CANARY"), "{out}");
            assert!(!out.contains("SECRETTOKEN"), "{out}");
        }
        assert_eq!(r.redact("connection refused"), "connection refused");
    }

    #[test]
    fn scheme_rule() {
        let mk = |u: &str| {
            HttpPoster::new(
                "url",
                "webhook",
                &Secret::new(u),
                Duration::from_secs(1),
                None,
            )
        };
        for ok in [
            "https://hooks.slack.com/services/T/B/X",
            "http://127.0.0.1:8080/x",
            "http://127.1.2.3/x",
            "http://[::1]:9/x",
            "http://localhost:9/x",
            "http://LOCALHOST./x",
        ] {
            assert!(mk(ok).is_ok(), "{ok}: {:?}", mk(ok).err());
        }
        for bad in [
            "http://hooks.slack.com/services/T/B/CANARY",
            "http://10.0.0.1/CANARY",
            "http://[::2]/CANARY",
            "http://localhost.example.com/CANARY",
            "ftp://127.0.0.1/CANARY",
            "https://user:CANARY@example.com/x",
            "not a url CANARY",
            "/services/CANARY",
        ] {
            let e = mk(bad).unwrap_err();
            assert!(!e.contains("CANARY"), "{bad}: {e}");
        }
        let e = HttpPoster::new(
            "url",
            "webhook",
            &Secret::new("https://x.example/"),
            Duration::ZERO,
            None,
        )
        .unwrap_err();
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not pem").unwrap();
        let e = HttpPoster::new(
            "url",
            "webhook",
            &Secret::new("https://x.example/CANARY"),
            Duration::from_secs(1),
            Some(&p),
        )
        .unwrap_err();
        assert!(
            e.contains("ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = HttpPoster::new(
            "url",
            "webhook",
            &Secret::new("https://x.example/CANARY"),
            Duration::from_secs(1),
            Some(&dir.path().join("missing.pem")),
        )
        .unwrap_err();
        assert!(e.contains("missing.pem") && !e.contains("CANARY"), "{e}");
    }

    #[test]
    fn debug_hides_the_url() {
        let p = HttpPoster::new(
            "url",
            "webhook",
            &Secret::new("https://x.example/CANARY?k=CANARY"),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        let d = format!("{p:?}");
        assert!(!d.contains("CANARY") && !d.contains("x.example"), "{d}");
    }
}
