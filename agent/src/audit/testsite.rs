//! A small configurable web site for the audit tests: real HTTPS (a test CA
//! and a leaf for `site.test` and `www.site.test`) and plain HTTP, both on
//! `127.0.0.1:0`, reached through [`AuditContext::resolve`] under an egress
//! policy that allows only 127.0.0.0/8.
//!
//! [`SiteConfig::good`] passes every audit check; each other field of
//! [`SiteConfig`] breaks one thing. Servers end with the probe testkit's
//! lifetimes, so a stuck test cannot keep them alive.
//!
//! Routes (`site.test` over HTTPS):
//! - `/`: an HTML page with a same-origin script, stylesheet and image;
//! - `/static/app.js` (+ `/static/app.js.map`): the script bundle;
//! - `/api/data`: JSON, with CORS for `https://site.test` only;
//! - `/api/wildcard`: JSON with `*` and credentials (always wrong);
//! - `/admin`, `/api/account`: 401 unless `Authorization: Bearer <VALID_TOKEN>`;
//! - `/dashboard`: 302 to `/login?next=/dashboard` without a valid token;
//! - `/login`: 401 (wrong password); 429 + `Retry-After` from request
//!   [`LOGIN_LIMIT`] + 1 on;
//! - `/.env`: 404; `/stall`: answers after [`CONNECTION_LIFETIME`];
//! - `www.site.test/*`: 301 to `https://site.test/*`.
//!
//! Plain HTTP (any host): 301 to the same path on `https://site.test`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use url::Url;

use super::AuditContext;
use crate::egress::EgressPolicy;
use crate::probe::testkit::{spawn_accept_loop, Pki, Validity, CONNECTION_LIFETIME};

/// The canonical host.
pub(crate) const HOST: &str = "site.test";
/// The alias that redirects to [`HOST`].
pub(crate) const WWW: &str = "www.site.test";
/// The bearer token the protected routes accept.
pub(crate) const VALID_TOKEN: &str = "valid-test-token";
/// Login attempts answered before the rate limit (when on) answers 429.
pub(crate) const LOGIN_LIMIT: u32 = 5;
/// The fake AWS access key id in the leaky bundle (AKIA + 16).
pub(crate) const FAKE_AWS_KEY_ID: &str = "AKIAQ7FAKE3EXAMPLE42";
/// The fake AWS secret access key in the leaky bundle (40 characters).
pub(crate) const FAKE_AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYFAKEKEY042";

/// What the site gets right; [`SiteConfig::good`] gets everything right.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SiteConfig {
    /// Plain HTTP redirects to HTTPS (else it serves the page).
    pub(crate) http_redirect: bool,
    /// HSTS on every HTTPS response.
    pub(crate) hsts: bool,
    /// CORS for its own origin only (else any origin is reflected, with
    /// credentials).
    pub(crate) cors_strict: bool,
    /// `/admin` requires a token (else it answers anyone).
    pub(crate) admin_protected: bool,
    /// `/login` answers 429 after [`LOGIN_LIMIT`] attempts.
    pub(crate) login_rate_limit: bool,
    /// The bundle holds a fake AWS key pair.
    pub(crate) leaked_secret: bool,
    /// The page loads a script and an image over plain HTTP.
    pub(crate) mixed_content: bool,
    /// `Server: nginx/1.25.3` (else `Server: site`).
    pub(crate) server_version: bool,
    /// `www.site.test` redirects through plain HTTP (a downgrade hop).
    pub(crate) downgrade_hop: bool,
    /// `/.env` serves environment variables.
    pub(crate) env_file: bool,
    /// Plain HTTP to `www.site.test` serves the page instead of
    /// redirecting (the canonical host still redirects).
    pub(crate) www_http_served: bool,
}

impl SiteConfig {
    /// A site that passes every check.
    pub(crate) fn good() -> Self {
        SiteConfig {
            http_redirect: true,
            hsts: true,
            cors_strict: true,
            admin_protected: true,
            login_rate_limit: true,
            leaked_secret: false,
            mixed_content: false,
            server_version: false,
            downgrade_hop: false,
            env_file: false,
            www_http_served: false,
        }
    }
}

/// A running site.
pub(crate) struct Site {
    /// Port of the HTTPS listener.
    pub(crate) https_port: u16,
    /// Port of the plain-HTTP listener.
    pub(crate) http_port: u16,
    ca: tempfile::NamedTempFile,
    state: Arc<State>,
}

struct State {
    config: SiteConfig,
    https_port: u16,
    http_port: u16,
    login_attempts: AtomicU32,
}

impl Site {
    /// Starts both listeners.
    pub(crate) async fn start(config: SiteConfig) -> Self {
        let pki = Pki::new();
        let cert = pki.leaf(&[HOST, WWW], Validity::Current);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
        let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(State {
            config,
            https_port: https.local_addr().unwrap().port(),
            http_port: http.local_addr().unwrap().port(),
            login_attempts: AtomicU32::new(0),
        });
        let st = Arc::clone(&state);
        spawn_accept_loop(https, move |tcp| {
            let (acceptor, st) = (acceptor.clone(), Arc::clone(&st));
            async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, st, true).await;
                }
            }
        });
        let st = Arc::clone(&state);
        spawn_accept_loop(http, move |tcp| serve(tcp, Arc::clone(&st), false));
        Site {
            https_port: state.https_port,
            http_port: state.http_port,
            ca: pki.ca_file(),
            state,
        }
    }

    /// The CA file that makes the site's certificate valid.
    pub(crate) fn ca_file(&self) -> Option<String> {
        self.ca.path().to_str().map(Into::into)
    }

    /// `https://site.test:PORT{path}`.
    pub(crate) fn https_url(&self, path: &str) -> Url {
        format!("https://{HOST}:{}{path}", self.https_port)
            .parse()
            .unwrap()
    }

    /// `http://site.test:PORT{path}` (the plain listener).
    pub(crate) fn http_url(&self, path: &str) -> Url {
        format!("http://{HOST}:{}{path}", self.http_port)
            .parse()
            .unwrap()
    }

    /// Login attempts the site received.
    pub(crate) fn login_attempts(&self) -> u32 {
        self.state.login_attempts.load(Ordering::SeqCst)
    }

    /// An audit context for this site: both names pinned to 127.0.0.1, the
    /// egress policy allowing 127.0.0.0/8 only.
    pub(crate) fn context(&self, timeout: Duration) -> AuditContext {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        AuditContext {
            timeout,
            egress: Arc::new(
                EgressPolicy::from_flags_and_env(&["127.0.0.0/8".into()], None).unwrap(),
            ),
            resolve: HashMap::from([(HOST.to_owned(), loopback), (WWW.to_owned(), loopback)]),
        }
    }
}

async fn serve<IO>(io: IO, state: Arc<State>, tls: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(&state, tls, req).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn route(state: &State, tls: bool, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let c = state.config;
    let path = req.uri().path().to_owned();
    let canonical = format!("https://{HOST}:{}{path}", state.https_port);
    if !tls {
        let www = host(&req).as_deref() == Some(WWW);
        return if c.http_redirect && !(www && c.www_http_served) {
            redirect(StatusCode::MOVED_PERMANENTLY, &canonical)
        } else {
            page(c)
        };
    }
    if host(&req).as_deref() == Some(WWW) {
        let to = if c.downgrade_hop {
            format!("http://{HOST}:{}{path}", state.http_port)
        } else {
            canonical
        };
        return secured(c, redirect(StatusCode::MOVED_PERMANENTLY, &to));
    }
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == format!("Bearer {VALID_TOKEN}").as_bytes());
    let response = match path.as_str() {
        "/" => page(c),
        "/static/app.js" => text(StatusCode::OK, "text/javascript", &bundle(c)),
        "/static/app.js.map" => text(
            StatusCode::OK,
            "application/json",
            r#"{"version":3,"sources":["app.ts"],"names":[],"mappings":"AAAA"}"#,
        ),
        "/static/site.css" => text(StatusCode::OK, "text/css", "body { margin: 0 }\n"),
        "/logo.png" => text(StatusCode::OK, "image/png", "png"),
        "/api/data" => cors(c, &req, text(StatusCode::OK, "application/json", "{}")),
        "/api/wildcard" => {
            let mut r = text(StatusCode::OK, "application/json", "{}");
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            r
        }
        "/admin" if !c.admin_protected => text(StatusCode::OK, "text/html", "admin panel"),
        "/admin" | "/api/account" if !authorized => {
            text(StatusCode::UNAUTHORIZED, "text/plain", "sign in\n")
        }
        "/admin" | "/api/account" => text(StatusCode::OK, "text/plain", "secret stuff\n"),
        "/dashboard" if !authorized => redirect(StatusCode::FOUND, "/login?next=/dashboard"),
        "/login" if req.method() == Method::POST => {
            let n = state.login_attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if c.login_rate_limit && n > LOGIN_LIMIT {
                let mut r = text(StatusCode::TOO_MANY_REQUESTS, "text/plain", "slow down\n");
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
                r
            } else {
                text(StatusCode::UNAUTHORIZED, "text/plain", "wrong password\n")
            }
        }
        "/.env" if c.env_file => text(
            StatusCode::OK,
            "text/plain",
            "# production\nDATABASE_URL=postgres://app:hunter2hunter2@db.internal/app\nSESSION_SECRET=0123456789abcdef0123\n",
        ),
        "/stall" => {
            tokio::time::sleep(CONNECTION_LIFETIME).await;
            text(StatusCode::OK, "text/plain", "late\n")
        }
        _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    secured(c, response)
}

/// The host a request was sent to, without port.
fn host(req: &Request<Incoming>) -> Option<String> {
    let from_header = || {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    };
    let authority = req.uri().host().map(str::to_owned).or_else(from_header)?;
    Some(authority.split(':').next().unwrap_or_default().to_owned())
}

/// Adds the site's security headers to an HTTPS response.
fn secured(c: SiteConfig, mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = r.headers_mut();
    if c.hsts {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let server = if c.server_version {
        "nginx/1.25.3"
    } else {
        "site"
    };
    h.insert(header::SERVER, HeaderValue::from_static(server));
    r
}

/// CORS headers: for the site's own origin only, or (broken) for any
/// origin with credentials.
fn cors(
    c: SiteConfig,
    req: &Request<Incoming>,
    mut r: Response<Full<Bytes>>,
) -> Response<Full<Bytes>> {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let allowed = match origin {
        Some(o) if !c.cors_strict => Some(o),
        Some(o)
            if o.as_bytes()
                .starts_with(format!("https://{HOST}").as_bytes()) =>
        {
            Some(o)
        }
        _ => None,
    };
    if let Some(origin) = allowed {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    if req.method() == Method::OPTIONS {
        *r.status_mut() = StatusCode::NO_CONTENT;
    }
    r
}

fn page(c: SiteConfig) -> Response<Full<Bytes>> {
    let mut html = String::from(
        "<!doctype html>\n<html><head><title>Site</title>\n\
         <link rel=\"stylesheet\" href=\"/static/site.css\">\n\
         <script src=\"/static/app.js\" defer></script>\n",
    );
    if c.mixed_content {
        html.push_str("<script src=\"http://cdn.site.test/lib.js\"></script>\n");
    }
    html.push_str("</head><body>\n<img src=\"/logo.png\" alt=\"logo\">\n");
    if c.mixed_content {
        html.push_str("<img src='http://cdn.site.test/banner.png'>\n");
    }
    // A link is navigation, not loaded content: never mixed content.
    html.push_str("<a href=\"http://example.com/\">elsewhere</a>\n</body></html>\n");
    text(StatusCode::OK, "text/html; charset=utf-8", &html)
}

fn bundle(c: SiteConfig) -> String {
    let mut js = String::from("(function(){var api=\"/api/data\";console.log(api);\n");
    if c.leaked_secret {
        js.push_str(&format!(
            "var s3={{accessKeyId:\"{FAKE_AWS_KEY_ID}\",secretAccessKey:\"{FAKE_AWS_SECRET}\"}};\n"
        ));
    }
    js.push_str("})();\n//# sourceMappingURL=app.js.map\n");
    js
}

fn text(status: StatusCode, content_type: &'static str, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn redirect(status: StatusCode, location: &str) -> Response<Full<Bytes>> {
    let mut r = text(status, "text/plain", "");
    r.headers_mut()
        .insert(header::LOCATION, location.parse().unwrap());
    r
}
