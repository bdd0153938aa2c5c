//! Typed check specifications, shared by the coordinator (which builds them from
//! its TOML config) and the agent (which receives them in an `Assignment`).
//!
//! A [`Check`] is valid by construction only through [`Check::validate`] or
//! `TryFrom<v1::Check>`, which report every problem with the field it concerns.

use std::time::Duration;

use crate::v1;

/// Probe kinds. The string form is the `kind` key of a `[[check]]` table
/// (contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// HTTP(S) request with k6 phase timings.
    Http,
    /// TCP connect.
    Tcp,
    /// TLS handshake and certificate facts.
    Tls,
    /// Audit: HTTP→HTTPS and alias→canonical redirects ([`RedirectSpec`]).
    Redirect,
    /// Audit: security headers and mixed content ([`HeadersSpec`]).
    Headers,
    /// Audit: a hostile origin is not trusted ([`CorsSpec`]).
    Cors,
    /// Audit: protected routes refuse anonymous requests ([`AuthRequiredSpec`]).
    AuthRequired,
    /// Audit: a login route is rate limited ([`RateLimitSpec`]).
    RateLimit,
    /// Audit: SPF, DMARC, DKIM and MX of a mail domain ([`EmailDnsSpec`]).
    EmailDns,
    /// Audit: no credentials in a page and its scripts ([`ExposedSecretsSpec`]).
    ExposedSecrets,
}

impl ProbeKind {
    /// Every kind, for generic tests and `Hello.capabilities`.
    pub const ALL: [ProbeKind; 10] = [
        ProbeKind::Http,
        ProbeKind::Tcp,
        ProbeKind::Tls,
        ProbeKind::Redirect,
        ProbeKind::Headers,
        ProbeKind::Cors,
        ProbeKind::AuthRequired,
        ProbeKind::RateLimit,
        ProbeKind::EmailDns,
        ProbeKind::ExposedSecrets,
    ];

    /// The contract name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Tls => "tls",
            ProbeKind::Redirect => "redirect",
            ProbeKind::Headers => "headers",
            ProbeKind::Cors => "cors",
            ProbeKind::AuthRequired => "auth_required",
            ProbeKind::RateLimit => "rate_limit",
            ProbeKind::EmailDns => "email_dns",
            ProbeKind::ExposedSecrets => "exposed_secrets",
        }
    }

    /// Parses a contract name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether this is one of the launch-readiness audit kinds, whose
    /// attempts fail with class `audit`.
    pub fn is_audit(self) -> bool {
        !matches!(self, ProbeKind::Http | ProbeKind::Tcp | ProbeKind::Tls)
    }
}

/// Shortest accepted check interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Longest accepted check interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Longest accepted probe timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);
/// Most redirects a probe may follow.
pub const MAX_REDIRECTS: u32 = 20;

/// One check: what to probe and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Unique name ([`crate::is_valid_name`]).
    pub name: String,
    /// Time between two probe starts.
    pub interval: Duration,
    /// Deadline for one whole probe attempt.
    pub timeout: Duration,
    /// What to run.
    pub probe: ProbeSpec,
}

/// The kind-specific part of a check.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeSpec {
    /// See [`HttpSpec`].
    Http(HttpSpec),
    /// See [`TcpSpec`].
    Tcp(TcpSpec),
    /// See [`TlsSpec`].
    Tls(TlsSpec),
    /// See [`RedirectSpec`].
    Redirect(RedirectSpec),
    /// See [`HeadersSpec`].
    Headers(HeadersSpec),
    /// See [`CorsSpec`].
    Cors(CorsSpec),
    /// See [`AuthRequiredSpec`].
    AuthRequired(AuthRequiredSpec),
    /// See [`RateLimitSpec`].
    RateLimit(RateLimitSpec),
    /// See [`EmailDnsSpec`].
    EmailDns(EmailDnsSpec),
    /// See [`ExposedSecretsSpec`].
    ExposedSecrets(ExposedSecretsSpec),
}

impl ProbeSpec {
    /// The kind of this spec.
    pub fn kind(&self) -> ProbeKind {
        match self {
            ProbeSpec::Http(_) => ProbeKind::Http,
            ProbeSpec::Tcp(_) => ProbeKind::Tcp,
            ProbeSpec::Tls(_) => ProbeKind::Tls,
            ProbeSpec::Redirect(_) => ProbeKind::Redirect,
            ProbeSpec::Headers(_) => ProbeKind::Headers,
            ProbeSpec::Cors(_) => ProbeKind::Cors,
            ProbeSpec::AuthRequired(_) => ProbeKind::AuthRequired,
            ProbeSpec::RateLimit(_) => ProbeKind::RateLimit,
            ProbeSpec::EmailDns(_) => ProbeKind::EmailDns,
            ProbeSpec::ExposedSecrets(_) => ProbeKind::ExposedSecrets,
        }
    }
}

/// An HTTP(S) request and what its response must look like.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// `http://` or `https://` URL.
    pub url: url::Url,
    /// Request method, upper case.
    pub method: String,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Accepted status codes; empty means 200-399.
    pub expect_status: Vec<u16>,
    /// Substring the body must contain.
    pub body_contains: Option<String>,
    /// Follow 3xx responses.
    pub follow_redirects: bool,
    /// Most redirects followed.
    pub max_redirects: u32,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
    /// Do not fail on an untrusted certificate.
    pub insecure_skip_verify: bool,
}

impl HttpSpec {
    /// A GET of `url` with the defaults of a `[[check]]` table.
    pub fn get(url: url::Url) -> Self {
        HttpSpec {
            url,
            method: "GET".into(),
            headers: Vec::new(),
            expect_status: Vec::new(),
            body_contains: None,
            follow_redirects: true,
            max_redirects: 10,
            ca_file: None,
            insecure_skip_verify: false,
        }
    }

    /// Whether `status` counts as success.
    pub fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..400).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }
}

/// A TCP connect.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpSpec {
    /// Host name or IP address.
    pub host: String,
    /// Port, 1-65535.
    pub port: u16,
}

/// A TLS handshake whose certificate facts are reported.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSpec {
    /// Host name or IP address to connect to.
    pub host: String,
    /// Port, 1-65535.
    pub port: u16,
    /// SNI and name to match; `None` means `host`.
    pub server_name: Option<String>,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

impl TlsSpec {
    /// The name sent as SNI and matched against the certificate.
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

// ---------------------------------------------------------------------------
// Launch-readiness audit checks (`redirect`, `headers`, `cors`,
// `auth_required`, `rate_limit`, `email_dns`, `exposed_secrets`). Each is a
// check kind of its own, run continuously by the coordinator's agents or
// once by `vantage-agent audit`.

/// `redirect`: plain HTTP goes to HTTPS, and the bare domain to the
/// canonical host, without a downgrade hop and within `max_hops`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectSpec {
    /// The canonical `https://` URL (its host is the canonical host).
    pub url: url::Url,
    /// Port of the plain-HTTP listener tried for the HTTP→HTTPS redirect
    /// (80 unless the site serves plain HTTP elsewhere).
    pub http_port: u16,
    /// Other host names that must redirect to the canonical host (the bare
    /// domain for a `www.` site, or the reverse).
    pub aliases: Vec<String>,
    /// Most redirects in one chain before it counts as too long.
    pub max_hops: u32,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// `headers`: security headers of a page and no mixed content in its HTML.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadersSpec {
    /// The `https://` page to fetch.
    pub url: url::Url,
    /// Smallest accepted HSTS `max-age`, seconds (default 15552000, 180 days).
    pub hsts_min_max_age: u64,
    /// Whether HSTS must carry `includeSubDomains`.
    pub hsts_include_subdomains: bool,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// `cors`: a hostile `Origin` is not reflected in
/// `Access-Control-Allow-Origin`, and no wildcard comes with credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsSpec {
    /// The URL to send the cross-origin requests to (an API route).
    pub url: url::Url,
    /// The origin claimed by the requests (default `https://evil.example`).
    pub hostile_origin: String,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// `auth_required`: each protected route refuses a request without
/// credentials and with a malformed or expired token (401 or 403, never 2xx).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthRequiredSpec {
    /// Base URL the paths are resolved against.
    pub url: url::Url,
    /// Paths (or absolute URLs on the same origin) that must refuse.
    pub paths: Vec<String>,
    /// Request method (default GET).
    pub method: String,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// `rate_limit`: a bounded burst against a login-like route gets a 429
/// before `max_requests` requests.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSpec {
    /// The route to send the burst to.
    pub url: url::Url,
    /// Request method (default POST).
    pub method: String,
    /// Request body (default a JSON login with a wrong password).
    pub body: Option<String>,
    /// `Content-Type` of the body.
    pub content_type: Option<String>,
    /// A 429 must come at or before this many requests (default 20; at most
    /// [`MAX_RATE_LIMIT_BURST`]).
    pub max_requests: u32,
    /// The burst stops after this long whatever happened (default 10 s).
    pub within: Duration,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// Most requests one `rate_limit` burst may send.
pub const MAX_RATE_LIMIT_BURST: u32 = 500;

// Defaults of the audit specs, shared by `vantage-agent audit` and the
// coordinator's `[[check]]` tables so both judge a site alike.

/// Default `redirect` `http_port`.
pub const DEFAULT_HTTP_PORT: u16 = 80;
/// Default `redirect` `max_hops`: http→https then apex→www is 2; 5 leaves
/// room without hiding loops.
pub const DEFAULT_MAX_REDIRECT_HOPS: u32 = 5;
/// Default `headers` `hsts_min_max_age`: 180 days, the floor of the HSTS
/// preload list's older rule and of most audit tools.
pub const DEFAULT_HSTS_MIN_MAX_AGE: u64 = 180 * 24 * 3600;
/// Default `cors` `hostile_origin`.
pub const DEFAULT_HOSTILE_ORIGIN: &str = "https://evil.example";
/// Default `rate_limit` `max_requests`.
pub const DEFAULT_RATE_LIMIT_REQUESTS: u32 = 20;
/// Default `rate_limit` `within` (capped at the check's timeout).
pub const DEFAULT_RATE_LIMIT_WITHIN: Duration = Duration::from_secs(10);
/// Default `rate_limit` `body`: a wrong login for a reserved `.invalid`
/// address, so no real account is ever locked out.
pub const DEFAULT_LOGIN_BODY: &str =
    r#"{"username":"vantage-audit@example.invalid","password":"vantage-audit-wrong-password"}"#;
/// Default `rate_limit` `content_type` (that of [`DEFAULT_LOGIN_BODY`]).
pub const DEFAULT_LOGIN_CONTENT_TYPE: &str = "application/json";
/// Default `exposed_secrets` `max_files`.
pub const DEFAULT_SECRETS_MAX_FILES: u32 = 30;
/// Default `exposed_secrets` `max_file_bytes` (5 MiB).
pub const DEFAULT_SECRETS_MAX_FILE_BYTES: u64 = 5 * 1024 * 1024;

impl RedirectSpec {
    /// The default `aliases` of a canonical URL: the bare domain for a
    /// `www.` host, else the `www.` name; none for an IP address.
    pub fn default_aliases(url: &url::Url) -> Vec<String> {
        match url.host() {
            Some(url::Host::Domain(host)) => match host.strip_prefix("www.") {
                Some(bare) => vec![bare.to_owned()],
                None => vec![format!("www.{host}")],
            },
            _ => Vec::new(),
        }
    }
}
/// Shortest `interval` of a `rate_limit` check: every attempt sends a burst
/// of failed logins, so a continuous check must not hammer the route.
pub const MIN_RATE_LIMIT_INTERVAL: Duration = Duration::from_secs(60);
/// Most files one `exposed_secrets` scan may fetch.
pub const MAX_SECRETS_FILES: u32 = 1000;
/// Most bytes one `exposed_secrets` scan may read per file (64 MiB).
pub const MAX_SECRETS_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// `email_dns`: SPF, DMARC, DKIM and MX of a mail domain.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailDnsSpec {
    /// The mail domain (`example.com`).
    pub domain: String,
    /// DKIM selectors that must be published (`<selector>._domainkey.<domain>`);
    /// empty means the common ones are tried and one must answer.
    pub dkim_selectors: Vec<String>,
    /// DNS server to ask (`IP` or `IP:PORT`); `None` means the system's.
    pub dns_server: Option<String>,
}

/// `exposed_secrets`: a page, its same-origin scripts and their source maps
/// hold no credential-like strings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSecretsSpec {
    /// The page to start from.
    pub url: url::Url,
    /// Most files fetched (the page included; default 30).
    pub max_files: u32,
    /// Most bytes read per file (default 5 MiB).
    pub max_file_bytes: u64,
    /// Extra trust anchors (PEM path on the agent host).
    pub ca_file: Option<String>,
}

/// One problem with a check spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// The field concerned, as named in the config (`interval`, `url` ...).
    pub field: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl SpecError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        SpecError {
            field,
            message: message.into(),
        }
    }
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Check {
    /// Every problem with this check, empty when it is valid.
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errs = Vec::new();
        if !crate::is_valid_name(&self.name) {
            errs.push(SpecError::new(
                "name",
                format!(
                    "{:?} is not a valid name: use 1-64 characters from A-Z a-z 0-9 . _ -",
                    self.name
                ),
            ));
        }
        if self.interval < MIN_INTERVAL || self.interval > MAX_INTERVAL {
            errs.push(SpecError::new(
                "interval",
                format!(
                    "{} is out of range: use {} to {}",
                    humanize(self.interval),
                    humanize(MIN_INTERVAL),
                    humanize(MAX_INTERVAL)
                ),
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            errs.push(SpecError::new(
                "timeout",
                format!(
                    "{} is out of range: use more than 0s and at most {}",
                    humanize(self.timeout),
                    humanize(MAX_TIMEOUT)
                ),
            ));
        }
        match &self.probe {
            ProbeSpec::Http(h) => {
                if !matches!(h.url.scheme(), "http" | "https") {
                    errs.push(SpecError::new(
                        "url",
                        format!(
                            "scheme {:?} is not supported: use http or https",
                            h.url.scheme()
                        ),
                    ));
                }
                if h.url.host_str().is_none_or(str::is_empty) {
                    errs.push(SpecError::new("url", "the URL has no host"));
                }
                if h.body_contains.as_deref() == Some("") {
                    errs.push(SpecError::new(
                        "body_contains",
                        "must not be empty: give the text the body must contain, or leave the key out",
                    ));
                }
                check_ca_file(&mut errs, h.ca_file.as_deref());
                if !METHODS.contains(&h.method.as_str()) {
                    errs.push(SpecError::new(
                        "method",
                        format!(
                            "{:?} is not supported: use one of {}",
                            h.method,
                            METHODS.join(", ")
                        ),
                    ));
                }
                for s in &h.expect_status {
                    if !(100..=599).contains(s) {
                        errs.push(SpecError::new(
                            "expect_status",
                            format!("{s} is not an HTTP status code (100-599)"),
                        ));
                    }
                }
                if h.max_redirects > MAX_REDIRECTS {
                    errs.push(SpecError::new(
                        "max_redirects",
                        format!("{} is above the limit of {MAX_REDIRECTS}", h.max_redirects),
                    ));
                }
                for (name, value) in &h.headers {
                    if http_token_invalid(name) {
                        errs.push(SpecError::new(
                            "headers",
                            format!("{name:?} is not a valid header name"),
                        ));
                    }
                    // RFC 9110 field-value: visible characters, space, tab and obs-text;
                    // no other control characters (the `http` crate's rule too).
                    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                        errs.push(SpecError::new(
                            "headers",
                            format!(
                                "the value of {name:?} contains a control character (line break, NUL ...)"
                            ),
                        ));
                    }
                }
            }
            ProbeSpec::Tcp(t) => check_host_port(&mut errs, &t.host, t.port),
            ProbeSpec::Tls(t) => {
                check_host_port(&mut errs, &t.host, t.port);
                if t.server_name.as_deref() == Some("") {
                    errs.push(SpecError::new(
                        "server_name",
                        "must not be empty: give the name to send as SNI, or leave the key out to use the host",
                    ));
                }
                check_ca_file(&mut errs, t.ca_file.as_deref());
            }
            ProbeSpec::Redirect(r) => {
                if r.url.scheme() != "https" {
                    errs.push(SpecError::new(
                        "url",
                        format!(
                            "scheme {:?} is not supported: give the canonical https:// URL",
                            r.url.scheme()
                        ),
                    ));
                }
                check_url_host(&mut errs, &r.url);
                if r.http_port == 0 {
                    errs.push(SpecError::new(
                        "http_port",
                        "0 is not a valid port: use 1-65535",
                    ));
                }
                for a in &r.aliases {
                    if !is_host_name(a) {
                        errs.push(SpecError::new(
                            "aliases",
                            format!("{a:?} is not a host name (like www.example.com)"),
                        ));
                    }
                }
                if r.max_hops == 0 || r.max_hops > MAX_REDIRECTS {
                    errs.push(SpecError::new(
                        "max_hops",
                        format!("{} is out of range: use 1 to {MAX_REDIRECTS}", r.max_hops),
                    ));
                }
                check_ca_file(&mut errs, r.ca_file.as_deref());
            }
            ProbeSpec::Headers(h) => {
                check_http_url(&mut errs, &h.url);
                check_ca_file(&mut errs, h.ca_file.as_deref());
            }
            ProbeSpec::Cors(c) => {
                check_http_url(&mut errs, &c.url);
                let origin_ok = url::Url::parse(&c.hostile_origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.origin().ascii_serialization() == c.hostile_origin
                });
                if !origin_ok {
                    errs.push(SpecError::new(
                        "hostile_origin",
                        format!(
                            "{:?} is not an origin: use scheme://host[:port] without a path, like \"https://evil.example\"",
                            c.hostile_origin
                        ),
                    ));
                }
                check_ca_file(&mut errs, c.ca_file.as_deref());
            }
            ProbeSpec::AuthRequired(a) => {
                check_http_url(&mut errs, &a.url);
                if a.paths.is_empty() {
                    errs.push(SpecError::new(
                        "paths",
                        "must list at least one route that must refuse anonymous requests, like [\"/admin\"]",
                    ));
                }
                for p in &a.paths {
                    let same_origin = a.url.join(p).is_ok_and(|u| u.origin() == a.url.origin());
                    if p.is_empty() || !same_origin {
                        errs.push(SpecError::new(
                            "paths",
                            format!("{p:?} is not a path (or URL) on the origin of url"),
                        ));
                    }
                }
                check_method(&mut errs, &a.method);
                check_ca_file(&mut errs, a.ca_file.as_deref());
            }
            ProbeSpec::RateLimit(r) => {
                check_http_url(&mut errs, &r.url);
                check_method(&mut errs, &r.method);
                if r.max_requests == 0 || r.max_requests > MAX_RATE_LIMIT_BURST {
                    errs.push(SpecError::new(
                        "max_requests",
                        format!(
                            "{} is out of range: use 1 to {MAX_RATE_LIMIT_BURST}",
                            r.max_requests
                        ),
                    ));
                }
                if r.within.is_zero() || r.within > self.timeout {
                    errs.push(SpecError::new(
                        "within",
                        format!(
                            "{} is out of range: use more than 0s and at most the timeout ({})",
                            humanize(r.within),
                            humanize(self.timeout)
                        ),
                    ));
                }
                if self.interval < MIN_RATE_LIMIT_INTERVAL {
                    errs.push(SpecError::new(
                        "interval",
                        format!(
                            "{} is too short for a rate_limit check, which sends a burst of logins on every attempt: use at least {}",
                            humanize(self.interval),
                            humanize(MIN_RATE_LIMIT_INTERVAL)
                        ),
                    ));
                }
                if let Some(ct) = &r.content_type {
                    if ct.is_empty() || ct.bytes().any(|b| b < 0x20 || b == 0x7f) {
                        errs.push(SpecError::new(
                            "content_type",
                            format!("{ct:?} is not a header value: use a media type like \"application/json\""),
                        ));
                    }
                }
                check_ca_file(&mut errs, r.ca_file.as_deref());
            }
            ProbeSpec::EmailDns(e) => {
                if !is_mail_domain(&e.domain) {
                    errs.push(SpecError::new(
                        "domain",
                        format!(
                            "{:?} is not a domain name: use at least two DNS labels, like \"example.com\"",
                            e.domain
                        ),
                    ));
                }
                for s in &e.dkim_selectors {
                    if !is_dkim_selector(s) {
                        errs.push(SpecError::new(
                            "dkim_selectors",
                            format!(
                                "{s:?} is not a selector: use DNS labels (letters, digits, - and _) separated by dots"
                            ),
                        ));
                    }
                }
                if let Some(server) = &e.dns_server {
                    let ok = server.parse::<std::net::SocketAddr>().is_ok()
                        || server.parse::<std::net::IpAddr>().is_ok();
                    if !ok {
                        errs.push(SpecError::new(
                            "dns_server",
                            format!("{server:?} is not IP, IP:PORT or [IPv6]:PORT"),
                        ));
                    }
                }
            }
            ProbeSpec::ExposedSecrets(x) => {
                check_http_url(&mut errs, &x.url);
                if x.max_files == 0 || x.max_files > MAX_SECRETS_FILES {
                    errs.push(SpecError::new(
                        "max_files",
                        format!(
                            "{} is out of range: use 1 to {MAX_SECRETS_FILES}",
                            x.max_files
                        ),
                    ));
                }
                if x.max_file_bytes == 0 || x.max_file_bytes > MAX_SECRETS_FILE_BYTES {
                    errs.push(SpecError::new(
                        "max_file_bytes",
                        format!(
                            "{} is out of range: use 1 to {MAX_SECRETS_FILE_BYTES}",
                            x.max_file_bytes
                        ),
                    ));
                }
                check_ca_file(&mut errs, x.ca_file.as_deref());
            }
        }
        errs
    }
}

/// `url` is http(s) with a host.
fn check_http_url(errs: &mut Vec<SpecError>, url: &url::Url) {
    if !matches!(url.scheme(), "http" | "https") {
        errs.push(SpecError::new(
            "url",
            format!(
                "scheme {:?} is not supported: use http or https",
                url.scheme()
            ),
        ));
    }
    check_url_host(errs, url);
}

fn check_url_host(errs: &mut Vec<SpecError>, url: &url::Url) {
    if url.host_str().is_none_or(str::is_empty) {
        errs.push(SpecError::new("url", "the URL has no host"));
    }
}

fn check_method(errs: &mut Vec<SpecError>, method: &str) {
    if !METHODS.contains(&method) {
        errs.push(SpecError::new(
            "method",
            format!(
                "{method:?} is not supported: use one of {}",
                METHODS.join(", ")
            ),
        ));
    }
}

/// A DNS host name: dot-separated labels of letters, digits and `-`.
fn is_host_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A mail domain: a host name of at least two labels.
pub fn is_mail_domain(d: &str) -> bool {
    d.contains('.') && is_host_name(d)
}

/// A DKIM selector: dot-separated labels of letters, digits, `-` and `_`.
pub fn is_dkim_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63 * 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn check_ca_file(errs: &mut Vec<SpecError>, ca_file: Option<&str>) {
    if ca_file == Some("") {
        errs.push(SpecError::new(
            "ca_file",
            "must not be empty: give the path of a PEM file on the agent's host, or leave the key out",
        ));
    }
}

fn http_token_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_host_port(errs: &mut Vec<SpecError>, host: &str, port: u16) {
    if host.is_empty() || host.len() > 253 || host.contains(['/', ' ', '@']) {
        errs.push(SpecError::new(
            "host",
            format!("{host:?} is not a host name or IP address"),
        ));
    }
    if port == 0 {
        errs.push(SpecError::new("port", "0 is not a valid port: use 1-65535"));
    }
}

fn humanize(d: Duration) -> String {
    humantime_like(d)
}

/// Formats a duration the way config files write it (`1500ms`, `30s`, `5m`, `2h`).
pub fn humantime_like(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl From<&Check> for v1::Check {
    fn from(c: &Check) -> Self {
        let probe = match &c.probe {
            ProbeSpec::Http(h) => v1::check::Probe::Http(v1::HttpProbe {
                url: h.url.to_string(),
                method: h.method.clone(),
                headers: h
                    .headers
                    .iter()
                    .map(|(n, v)| v1::Header {
                        name: n.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                expect_status: h.expect_status.iter().map(|s| u32::from(*s)).collect(),
                body_contains: h.body_contains.clone(),
                follow_redirects: h.follow_redirects,
                max_redirects: h.max_redirects,
                ca_file: h.ca_file.clone(),
                insecure_skip_verify: h.insecure_skip_verify,
            }),
            ProbeSpec::Tcp(t) => v1::check::Probe::Tcp(v1::TcpProbe {
                host: t.host.clone(),
                port: u32::from(t.port),
            }),
            ProbeSpec::Tls(t) => v1::check::Probe::Tls(v1::TlsProbe {
                host: t.host.clone(),
                port: u32::from(t.port),
                server_name: t.server_name.clone(),
                ca_file: t.ca_file.clone(),
            }),
            ProbeSpec::Redirect(r) => v1::check::Probe::Redirect(v1::RedirectProbe {
                url: r.url.to_string(),
                http_port: u32::from(r.http_port),
                aliases: r.aliases.clone(),
                max_hops: r.max_hops,
                ca_file: r.ca_file.clone(),
            }),
            ProbeSpec::Headers(h) => v1::check::Probe::Headers(v1::HeadersProbe {
                url: h.url.to_string(),
                hsts_min_max_age: h.hsts_min_max_age,
                hsts_include_subdomains: h.hsts_include_subdomains,
                ca_file: h.ca_file.clone(),
            }),
            ProbeSpec::Cors(c) => v1::check::Probe::Cors(v1::CorsProbe {
                url: c.url.to_string(),
                hostile_origin: c.hostile_origin.clone(),
                ca_file: c.ca_file.clone(),
            }),
            ProbeSpec::AuthRequired(a) => v1::check::Probe::AuthRequired(v1::AuthRequiredProbe {
                url: a.url.to_string(),
                paths: a.paths.clone(),
                method: a.method.clone(),
                ca_file: a.ca_file.clone(),
            }),
            ProbeSpec::RateLimit(r) => v1::check::Probe::RateLimit(v1::RateLimitProbe {
                url: r.url.to_string(),
                method: r.method.clone(),
                body: r.body.clone(),
                content_type: r.content_type.clone(),
                max_requests: r.max_requests,
                within_ms: clamp_ms(r.within),
                ca_file: r.ca_file.clone(),
            }),
            ProbeSpec::EmailDns(e) => v1::check::Probe::EmailDns(v1::EmailDnsProbe {
                domain: e.domain.clone(),
                dkim_selectors: e.dkim_selectors.clone(),
                dns_server: e.dns_server.clone(),
            }),
            ProbeSpec::ExposedSecrets(x) => {
                v1::check::Probe::ExposedSecrets(v1::ExposedSecretsProbe {
                    url: x.url.to_string(),
                    max_files: x.max_files,
                    max_file_bytes: x.max_file_bytes,
                    ca_file: x.ca_file.clone(),
                })
            }
        };
        v1::Check {
            name: c.name.clone(),
            interval_ms: clamp_ms(c.interval),
            timeout_ms: clamp_ms(c.timeout),
            probe: Some(probe),
        }
    }
}

fn clamp_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn port_from(field: &'static str, p: u32) -> Result<u16, SpecError> {
    u16::try_from(p).map_err(|_| SpecError::new(field, format!("{p} is not a valid port")))
}

fn url_from(s: &str) -> Result<url::Url, Vec<SpecError>> {
    url::Url::parse(s).map_err(|e| vec![SpecError::new("url", format!("{s:?}: {e}"))])
}

fn method_or(method: String, default: &str) -> String {
    if method.is_empty() {
        default.into()
    } else {
        method
    }
}

impl TryFrom<v1::Check> for Check {
    type Error = Vec<SpecError>;

    fn try_from(c: v1::Check) -> Result<Self, Self::Error> {
        let probe = match c.probe {
            None => return Err(vec![SpecError::new("kind", "the check has no probe")]),
            Some(v1::check::Probe::Http(h)) => {
                let url = url::Url::parse(&h.url)
                    .map_err(|e| vec![SpecError::new("url", format!("{:?}: {e}", h.url))])?;
                let mut expect_status = Vec::new();
                for s in h.expect_status {
                    let s = u16::try_from(s).map_err(|_| {
                        vec![SpecError::new(
                            "expect_status",
                            format!("{s} is not a status"),
                        )]
                    })?;
                    expect_status.push(s);
                }
                ProbeSpec::Http(HttpSpec {
                    url,
                    method: if h.method.is_empty() {
                        "GET".into()
                    } else {
                        h.method
                    },
                    headers: h.headers.into_iter().map(|x| (x.name, x.value)).collect(),
                    expect_status,
                    body_contains: h.body_contains,
                    follow_redirects: h.follow_redirects,
                    max_redirects: h.max_redirects,
                    ca_file: h.ca_file,
                    insecure_skip_verify: h.insecure_skip_verify,
                })
            }
            Some(v1::check::Probe::Tcp(t)) => ProbeSpec::Tcp(TcpSpec {
                host: t.host,
                port: port_from("port", t.port).map_err(|e| vec![e])?,
            }),
            Some(v1::check::Probe::Tls(t)) => ProbeSpec::Tls(TlsSpec {
                host: t.host,
                port: port_from("port", t.port).map_err(|e| vec![e])?,
                server_name: t.server_name,
                ca_file: t.ca_file,
            }),
            Some(v1::check::Probe::Redirect(r)) => ProbeSpec::Redirect(RedirectSpec {
                url: url_from(&r.url)?,
                http_port: port_from("http_port", r.http_port).map_err(|e| vec![e])?,
                aliases: r.aliases,
                max_hops: r.max_hops,
                ca_file: r.ca_file,
            }),
            Some(v1::check::Probe::Headers(h)) => ProbeSpec::Headers(HeadersSpec {
                url: url_from(&h.url)?,
                hsts_min_max_age: h.hsts_min_max_age,
                hsts_include_subdomains: h.hsts_include_subdomains,
                ca_file: h.ca_file,
            }),
            Some(v1::check::Probe::Cors(c)) => ProbeSpec::Cors(CorsSpec {
                url: url_from(&c.url)?,
                hostile_origin: c.hostile_origin,
                ca_file: c.ca_file,
            }),
            Some(v1::check::Probe::AuthRequired(a)) => ProbeSpec::AuthRequired(AuthRequiredSpec {
                url: url_from(&a.url)?,
                paths: a.paths,
                method: method_or(a.method, "GET"),
                ca_file: a.ca_file,
            }),
            Some(v1::check::Probe::RateLimit(r)) => ProbeSpec::RateLimit(RateLimitSpec {
                url: url_from(&r.url)?,
                method: method_or(r.method, "POST"),
                body: r.body,
                content_type: r.content_type,
                max_requests: r.max_requests,
                within: Duration::from_millis(u64::from(r.within_ms)),
                ca_file: r.ca_file,
            }),
            Some(v1::check::Probe::EmailDns(e)) => ProbeSpec::EmailDns(EmailDnsSpec {
                domain: e.domain,
                dkim_selectors: e.dkim_selectors,
                dns_server: e.dns_server,
            }),
            Some(v1::check::Probe::ExposedSecrets(x)) => {
                ProbeSpec::ExposedSecrets(ExposedSecretsSpec {
                    url: url_from(&x.url)?,
                    max_files: x.max_files,
                    max_file_bytes: x.max_file_bytes,
                    ca_file: x.ca_file,
                })
            }
        };
        let check = Check {
            name: c.name,
            interval: Duration::from_millis(u64::from(c.interval_ms)),
            timeout: Duration::from_millis(u64::from(c.timeout_ms)),
            probe,
        };
        let errs = check.validate();
        if errs.is_empty() {
            Ok(check)
        } else {
            Err(errs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Check> {
        let http = HttpSpec {
            headers: vec![("X-Probe".into(), "vantage".into())],
            expect_status: vec![200, 204],
            body_contains: Some("ok".into()),
            ca_file: Some("/etc/ca.pem".into()),
            ..HttpSpec::get("https://example.test/health".parse().unwrap())
        };
        vec![
            Check {
                name: "web".into(),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                probe: ProbeSpec::Http(http),
            },
            Check {
                name: "db".into(),
                interval: Duration::from_secs(30),
                timeout: Duration::from_secs(3),
                probe: ProbeSpec::Tcp(TcpSpec {
                    host: "db.internal".into(),
                    port: 5432,
                }),
            },
            Check {
                name: "cert".into(),
                interval: Duration::from_secs(3600),
                timeout: Duration::from_secs(10),
                probe: ProbeSpec::Tls(TlsSpec {
                    host: "10.0.0.1".into(),
                    port: 443,
                    server_name: Some("example.test".into()),
                    ca_file: None,
                }),
            },
        ]
        .into_iter()
        .chain(audit_samples())
        .collect()
    }

    /// One check of each audit kind, every optional field set.
    fn audit_samples() -> Vec<Check> {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let ca = Some("/etc/ca.pem".to_owned());
        let check = |name: &str, interval: u64, probe| Check {
            name: name.into(),
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(20),
            probe,
        };
        vec![
            check(
                "redirects",
                300,
                ProbeSpec::Redirect(RedirectSpec {
                    url: url("https://www.example.test/"),
                    http_port: 8080,
                    aliases: vec!["example.test".into()],
                    max_hops: 5,
                    ca_file: ca.clone(),
                }),
            ),
            check(
                "headers",
                300,
                ProbeSpec::Headers(HeadersSpec {
                    url: url("https://example.test/"),
                    hsts_min_max_age: 31_536_000,
                    hsts_include_subdomains: true,
                    ca_file: ca.clone(),
                }),
            ),
            check(
                "cors",
                300,
                ProbeSpec::Cors(CorsSpec {
                    url: url("https://example.test/api/me"),
                    hostile_origin: "https://evil.example:8443".into(),
                    ca_file: ca.clone(),
                }),
            ),
            check(
                "auth",
                300,
                ProbeSpec::AuthRequired(AuthRequiredSpec {
                    url: url("https://example.test/"),
                    paths: vec!["/admin".into(), "https://example.test/api/account".into()],
                    method: "POST".into(),
                    ca_file: ca.clone(),
                }),
            ),
            check(
                "login-limit",
                600,
                ProbeSpec::RateLimit(RateLimitSpec {
                    url: url("https://example.test/login"),
                    method: "PUT".into(),
                    body: Some("user=nobody&password=wrong".into()),
                    content_type: Some("application/x-www-form-urlencoded".into()),
                    max_requests: 30,
                    within: Duration::from_millis(12_500),
                    ca_file: ca.clone(),
                }),
            ),
            check(
                "mail",
                3600,
                ProbeSpec::EmailDns(EmailDnsSpec {
                    domain: "example.test".into(),
                    dkim_selectors: vec!["google".into(), "s1.mail".into()],
                    dns_server: Some("[::1]:5353".into()),
                }),
            ),
            check(
                "secrets",
                3600,
                ProbeSpec::ExposedSecrets(ExposedSecretsSpec {
                    url: url("https://example.test/app"),
                    max_files: 10,
                    max_file_bytes: 1 << 20,
                    ca_file: ca,
                }),
            ),
        ]
    }

    #[test]
    fn audit_specs_name_every_bad_field() {
        let mut checks = audit_samples();
        let fields = |c: &Check| c.validate().iter().map(|e| e.field).collect::<Vec<_>>();
        let url = |s: &str| url::Url::parse(s).unwrap();
        for c in &mut checks {
            match &mut c.probe {
                ProbeSpec::Redirect(r) => {
                    r.url = url("http://example.test/");
                    r.http_port = 0;
                    r.aliases = vec!["bad host".into()];
                    r.max_hops = 0;
                }
                ProbeSpec::Headers(h) => {
                    h.url = url("ftp://example.test/");
                    h.ca_file = Some(String::new());
                }
                ProbeSpec::Cors(c) => c.hostile_origin = "https://evil.example/path".into(),
                ProbeSpec::AuthRequired(a) => {
                    a.paths = vec!["https://other.test/admin".into()];
                    a.method = "BREW".into();
                }
                ProbeSpec::RateLimit(r) => {
                    r.max_requests = MAX_RATE_LIMIT_BURST + 1;
                    r.within = Duration::from_secs(21);
                    r.content_type = Some("a\nb".into());
                }
                ProbeSpec::EmailDns(e) => {
                    e.domain = "localhost".into();
                    e.dkim_selectors = vec!["a b".into()];
                    e.dns_server = Some("ns1.example.test".into());
                }
                ProbeSpec::ExposedSecrets(x) => {
                    x.max_files = 0;
                    x.max_file_bytes = MAX_SECRETS_FILE_BYTES + 1;
                }
                _ => unreachable!("audit samples only"),
            }
        }
        let got: Vec<_> = checks.iter().map(fields).collect();
        let want: Vec<Vec<&str>> = vec![
            vec!["url", "http_port", "aliases", "max_hops"],
            vec!["url", "ca_file"],
            vec!["hostile_origin"],
            vec!["paths", "method"],
            vec!["max_requests", "within", "content_type"],
            vec!["domain", "dkim_selectors", "dns_server"],
            vec!["max_files", "max_file_bytes"],
        ];
        assert_eq!(got, want);

        let mut burst = audit_samples().remove(4);
        burst.interval = Duration::from_secs(30);
        let errs = burst.validate();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            errs[0].to_string(),
            "interval: 30s is too short for a rate_limit check, which sends a burst of logins on every attempt: use at least 1m"
        );
    }

    #[test]
    fn every_kind_round_trips_through_the_wire() {
        let checks = sample();
        let kinds: Vec<_> = checks.iter().map(|c| c.probe.kind()).collect();
        assert_eq!(kinds, ProbeKind::ALL.to_vec());
        for c in checks {
            assert!(c.validate().is_empty(), "{:?}", c.validate());
            let wire = v1::Check::from(&c);
            assert_eq!(Check::try_from(wire).unwrap(), c);
        }
    }

    #[test]
    fn invalid_wire_checks_name_the_field() {
        let mut wire = v1::Check::from(&sample()[1]);
        wire.interval_ms = 10;
        if let Some(v1::check::Probe::Tcp(t)) = &mut wire.probe {
            t.port = 70000;
        }
        let errs = Check::try_from(wire).unwrap_err();
        assert_eq!(errs[0].field, "port");

        let mut wire = v1::Check::from(&sample()[1]);
        wire.interval_ms = 10;
        wire.name = "bad name".into();
        let errs = Check::try_from(wire).unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["name", "interval"]);
        assert_eq!(errs[1].message, "10ms is out of range: use 200ms to 24h");
    }

    #[test]
    fn empty_optional_strings_are_invalid() {
        let checks = sample();
        let mut http = checks[0].clone();
        if let ProbeSpec::Http(h) = &mut http.probe {
            h.body_contains = Some(String::new());
            h.ca_file = Some(String::new());
            h.headers = vec![
                ("X-Ok".into(), "tab\tand ü".into()),
                ("X-Bad".into(), "a\u{1}b".into()),
            ];
        }
        let fields: Vec<_> = http.validate().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["body_contains", "ca_file", "headers"]);

        let mut tls = checks[2].clone();
        if let ProbeSpec::Tls(t) = &mut tls.probe {
            t.server_name = Some(String::new());
            t.ca_file = Some(String::new());
        }
        let fields: Vec<_> = tls.validate().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["server_name", "ca_file"]);
    }

    #[test]
    fn status_defaults_to_2xx_and_3xx() {
        let spec = HttpSpec::get("http://x.test/".parse().unwrap());
        assert!(spec.status_ok(200) && spec.status_ok(301) && !spec.status_ok(404));
    }
}
