//! Who may call the HTTP API (RELIABILITY.md API2/API5).
//!
//! Every route but `/healthz` needs `Authorization: Bearer TOKEN`. Reading
//! (`GET`, `HEAD`) needs the `viewer` or `admin` role; every other method
//! needs `admin`. One layer around the whole router applies the rule and
//! derives the role from the method, so a route added later cannot skip it.
//!
//! Tokens are kept as SHA-256 digests and compared in constant time. Failed
//! attempts are limited per client address (an IPv6 client by its /64): a
//! burst of [`FAILURE_BURST`], then one every [`FAILURE_REFILL`]; past that a
//! failing request gets 429 with `Retry-After`. A valid token is never
//! limited, so a brute-force run from one address does not lock out a
//! legitimate client behind the same address.
//!
//! Every response carries `x-request-id`; error bodies repeat it, and the
//! request's log lines carry it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::ApiError;

/// Failed attempts an address may make at once.
pub const FAILURE_BURST: u32 = 10;
/// One more failed attempt is allowed per this interval.
pub const FAILURE_REFILL: Duration = Duration::from_secs(6);
/// Addresses tracked for failures; past this, the ones back to a full
/// allowance are forgotten, and if none is, a new failing address is
/// limited at once (an attacker with many addresses cannot grow the map).
const MAX_TRACKED: usize = 10_000;

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Reads and changes (silences, load runs).
    Admin,
}

impl Role {
    /// The config and log name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// One API token, as configured: who, what role, and the SHA-256 of the
/// token (never the token itself).
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Who holds it; shown in logs.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `bytes` (a token's text, a certificate's DER).
pub fn digest(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// [`digest`] of `bytes` as 64 lower-case hex digits, the form `sha256`
/// config keys take.
pub fn digest_hex(bytes: impl AsRef<[u8]>) -> String {
    digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time independent of where the inputs differ.
pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (256 bits, hex) for `vantage-coordinator token`.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Failures of one address: a token bucket.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    left: f64,
    at: Instant,
}

/// Failed authentications per client address: a burst of
/// [`FAILURE_BURST`], then one every [`FAILURE_REFILL`]. Used by the HTTP
/// API and by agent sessions (each with its own).
#[derive(Default)]
pub struct FailureLimiter {
    by_client: Mutex<HashMap<IpAddr, Allowance>>,
}

impl FailureLimiter {
    /// Counts a failed attempt from `peer` (an IPv6 client by its /64).
    /// `None` while the address has allowance left; once it has not, the
    /// seconds to wait before the next attempt can count.
    pub fn fail(&self, peer: IpAddr, now: Instant) -> Option<u64> {
        let key = client_key(peer);
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        let refill = |a: &Allowance| {
            let earned =
                now.saturating_duration_since(a.at).as_secs_f64() / FAILURE_REFILL.as_secs_f64();
            (a.left + earned).min(f64::from(FAILURE_BURST))
        };
        if !map.contains_key(&key) && map.len() >= MAX_TRACKED {
            map.retain(|_, a| refill(a) < f64::from(FAILURE_BURST));
            if map.len() >= MAX_TRACKED {
                return Some(FAILURE_REFILL.as_secs());
            }
        }
        let a = map.entry(key).or_insert(Allowance {
            left: f64::from(FAILURE_BURST),
            at: now,
        });
        let left = refill(a);
        if left >= 1.0 {
            *a = Allowance {
                left: left - 1.0,
                at: now,
            };
            None
        } else {
            *a = Allowance { left, at: now };
            let wait = (1.0 - left) * FAILURE_REFILL.as_secs_f64();
            Some(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The tokens and the failure limiter.
pub struct Auth {
    /// Replaced whole on a config reload ([`Auth::set_tokens`]).
    tokens: std::sync::RwLock<Arc<Vec<ApiToken>>>,
    failures: FailureLimiter,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// No valid token.
    Unauthorized,
    /// A valid token without the role the method needs.
    Forbidden(Role),
    /// Too many failed attempts from this address; retry after this many
    /// seconds.
    Limited(u64),
}

impl Auth {
    /// An authenticator over `tokens`.
    pub fn new(tokens: Vec<ApiToken>) -> Arc<Self> {
        warn_if_none(&tokens);
        Arc::new(Auth {
            tokens: std::sync::RwLock::new(Arc::new(tokens)),
            failures: FailureLimiter::default(),
        })
    }

    /// Replaces the tokens (a config reload): requests from now on are
    /// checked against `tokens` only, so a removed token stops working at
    /// once.
    pub fn set_tokens(&self, tokens: Vec<ApiToken>) {
        warn_if_none(&tokens);
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
    }

    /// The token matching `header`, compared against every configured
    /// digest so the time taken does not depend on which matched. `Bearer
    /// TOKEN` always; `Basic` (any user name, the token as the password)
    /// only when `basic` is allowed: browsers send Basic credentials by
    /// themselves, also on cross-site requests, so they may only read.
    fn lookup(&self, header: Option<&HeaderValue>, basic: bool) -> Option<ApiToken> {
        let value = header?.to_str().ok()?;
        let presented = match value.strip_prefix("Bearer ") {
            Some(token) => token.trim().to_owned(),
            None if basic => basic_password(value)?,
            None => return None,
        };
        if presented.is_empty() {
            return None;
        }
        let d = digest(&presented);
        let tokens = Arc::clone(&self.tokens.read().unwrap_or_else(|p| p.into_inner()));
        let mut found = None;
        for t in tokens.iter() {
            if ct_eq(&t.sha256, &d) {
                found = Some(t);
            }
        }
        found.cloned()
    }

    /// Decides a request from `peer` with `header`, needing `role`.
    fn decide(
        &self,
        peer: IpAddr,
        header: Option<&HeaderValue>,
        (role, basic): (Role, bool),
        now: Instant,
    ) -> Result<ApiToken, Refusal> {
        match self.lookup(header, basic) {
            Some(t) if t.role >= role => Ok(t),
            Some(_) => Err(Refusal::Forbidden(role)),
            None => Err(match self.failures.fail(peer, now) {
                None => Refusal::Unauthorized,
                Some(retry_after) => Refusal::Limited(retry_after),
            }),
        }
    }
}

fn warn_if_none(tokens: &[ApiToken]) {
    if tokens.is_empty() {
        tracing::warn!("no [[api.token]] configured: every API route but /healthz answers 401 (vantage-coordinator token prints one)");
    }
}

/// The password of a `Basic` credential (`Basic base64(user:password)`).
fn basic_password(value: &str) -> Option<String> {
    use base64::Engine as _;
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_, password) = text.split_once(':')?;
    Some(password.to_owned())
}

/// Paths of the dashboard: a browser asked for them directly, so a 401
/// there also offers `Basic`, which makes the browser ask for the token.
fn is_dashboard(path: &str) -> bool {
    path == "/" || path.starts_with("/assets/")
}

/// The address failures are counted under: IPv4 as is, IPv6 by its /64
/// (one host usually holds a whole /64), IPv4-mapped IPv6 as IPv4.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

tokio::task_local! {
    /// The id of the request being handled, for error bodies.
    pub(super) static REQUEST_ID: String;
}

/// The role a request needs: none for `/healthz`, `viewer` to read, `admin`
/// for anything else and for the audit log.
fn needed(method: &Method, path: &str) -> Option<Role> {
    if path == "/healthz" {
        None
    } else if path == "/api/v1/audit" || path == "/api/v1/config" {
        // Who did what, and config errors (which quote the file), are for
        // administrators.
        Some(Role::Admin)
    } else if method == Method::GET || method == Method::HEAD {
        Some(Role::Viewer)
    } else {
        Some(Role::Admin)
    }
}

/// The layer around the whole router: request id, then authentication.
pub async fn guard(
    State(auth): State<Arc<Auth>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let id = format!("{:016x}", rand::random::<u64>());
    let span = tracing::info_span!("api", request_id = %id, method = %req.method(), path = %req.uri().path());
    let response = REQUEST_ID
        .scope(id.clone(), async {
            let Some(role) = needed(req.method(), req.uri().path()) else {
                return next.run(req).await;
            };
            let read_only = req.method() == Method::GET || req.method() == Method::HEAD;
            match auth.decide(
                peer.ip(),
                req.headers().get(header::AUTHORIZATION),
                (role, read_only),
                Instant::now(),
            ) {
                Ok(token) => {
                    tracing::debug!(token = %token.name, role = token.role.as_str(), "authorized");
                    let mut req = req;
                    req.extensions_mut().insert(super::audit::Caller {
                        name: token.name.clone(),
                        role: token.role,
                    });
                    next.run(req).await
                }
                Err(Refusal::Unauthorized) => {
                    tracing::info!(peer = %peer.ip(), "refused: no valid token");
                    let mut r = refusal(
                        StatusCode::UNAUTHORIZED,
                        "a valid API token is required: Authorization: Bearer TOKEN".into(),
                        Some((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))),
                    );
                    if read_only && is_dashboard(req.uri().path()) {
                        // The browser then asks for a user name (anything)
                        // and the API token as the password.
                        r.headers_mut().append(
                            header::WWW_AUTHENTICATE,
                            HeaderValue::from_static(
                                "Basic realm=\"Vantage dashboard\", charset=\"UTF-8\"",
                            ),
                        );
                    }
                    r
                }
                Err(Refusal::Forbidden(role)) => refusal(
                    StatusCode::FORBIDDEN,
                    format!("this request needs the {} role", role.as_str()),
                    None,
                ),
                Err(Refusal::Limited(secs)) => {
                    tracing::warn!(peer = %peer.ip(), "refused: too many failed authentications");
                    refusal(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too many failed authentications from this address; retry later".into(),
                        Some((header::RETRY_AFTER, HeaderValue::from(secs))),
                    )
                }
            }
        })
        .instrument(span)
        .await;
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// An error response with one extra header.
fn refusal(
    status: StatusCode,
    message: String,
    extra: Option<(header::HeaderName, HeaderValue)>,
) -> Response {
    let mut r = ApiError::new(status, message).into_response();
    if let Some((name, value)) = extra {
        r.headers_mut().insert(name, value);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Arc<Auth> {
        Auth::new(vec![
            ApiToken {
                name: "ops".into(),
                role: Role::Admin,
                sha256: digest("admin-token"),
            },
            ApiToken {
                name: "grafana".into(),
                role: Role::Viewer,
                sha256: digest("viewer-token"),
            },
        ])
    }

    fn bearer(t: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap()
    }

    #[test]
    fn roles_come_from_the_method_and_only_healthz_is_open() {
        assert_eq!(needed(&Method::GET, "/healthz"), None);
        assert_eq!(needed(&Method::GET, "/"), Some(Role::Viewer));
        assert_eq!(needed(&Method::HEAD, "/api/v1/checks"), Some(Role::Viewer));
        for m in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert_eq!(needed(&m, "/api/v1/anything"), Some(Role::Admin), "{m}");
        }
    }

    /// A browser's Basic credentials (the token as the password) open reads
    /// only: browsers attach them by themselves, also to cross-site requests.
    #[test]
    fn basic_credentials_only_read() {
        use base64::Engine as _;
        let a = auth();
        let ip: IpAddr = [10, 0, 0, 2].into();
        let now = Instant::now();
        let basic = |user_pass: &str| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(user_pass);
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap()
        };
        let good = basic("anyone:admin-token");
        assert_eq!(
            a.decide(ip, Some(&good), (Role::Viewer, true), now)
                .unwrap()
                .name,
            "ops"
        );
        assert_eq!(
            a.decide(ip, Some(&good), (Role::Admin, false), now)
                .unwrap_err(),
            Refusal::Unauthorized
        );
        for bad in ["anyone:admin-token-", "admin-token", ":", "x:"] {
            let h = basic(bad);
            assert_eq!(
                a.decide(ip, Some(&h), (Role::Viewer, true), now)
                    .unwrap_err(),
                Refusal::Unauthorized,
                "{bad}"
            );
        }
        let garbage = HeaderValue::from_static("Basic !!!not-base64");
        assert!(a
            .decide(ip, Some(&garbage), (Role::Viewer, true), now)
            .is_err());
    }

    #[test]
    fn tokens_match_by_digest_and_roles_are_enforced() {
        let a = auth();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let now = Instant::now();
        let admin = bearer("admin-token");
        let viewer = bearer("viewer-token");
        assert_eq!(
            a.decide(ip, Some(&admin), (Role::Admin, false), now)
                .unwrap()
                .name,
            "ops"
        );
        assert_eq!(
            a.decide(ip, Some(&viewer), (Role::Viewer, false), now)
                .unwrap()
                .name,
            "grafana"
        );
        assert_eq!(
            a.decide(ip, Some(&viewer), (Role::Admin, false), now)
                .unwrap_err(),
            Refusal::Forbidden(Role::Admin)
        );
        for bad in [
            None,
            Some(bearer("admin-token-")),
            Some(HeaderValue::from_static("admin-token")),
            Some(HeaderValue::from_static("Basic YWRtaW4tdG9rZW4=")),
            Some(HeaderValue::from_static("Bearer ")),
        ] {
            assert_eq!(
                a.decide(ip, bad.as_ref(), (Role::Viewer, false), now)
                    .unwrap_err(),
                Refusal::Unauthorized,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn failures_are_limited_per_address_and_valid_tokens_never_are() {
        let a = auth();
        let attacker: IpAddr = [10, 0, 0, 2].into();
        let other: IpAddr = [10, 0, 0, 3].into();
        let t0 = Instant::now();
        let wrong = bearer("guess");
        // A fresh address has the full burst.
        for i in 0..FAILURE_BURST {
            assert_eq!(
                a.decide(attacker, Some(&wrong), (Role::Viewer, false), t0)
                    .unwrap_err(),
                Refusal::Unauthorized,
                "attempt {i}"
            );
        }
        let Refusal::Limited(retry) = a
            .decide(attacker, Some(&wrong), (Role::Viewer, false), t0)
            .unwrap_err()
        else {
            panic!("expected 429 after the burst")
        };
        assert!((1..=FAILURE_REFILL.as_secs()).contains(&retry), "{retry}");
        // A valid token from the same address still works.
        assert!(a
            .decide(
                attacker,
                Some(&bearer("admin-token")),
                (Role::Admin, false),
                t0
            )
            .is_ok());
        // Another address is not affected.
        assert_eq!(
            a.decide(other, Some(&wrong), (Role::Viewer, false), t0)
                .unwrap_err(),
            Refusal::Unauthorized
        );
        // One refill later, one more attempt.
        let later = t0 + FAILURE_REFILL;
        assert_eq!(
            a.decide(attacker, Some(&wrong), (Role::Viewer, false), later)
                .unwrap_err(),
            Refusal::Unauthorized
        );
        assert!(matches!(
            a.decide(attacker, Some(&wrong), (Role::Viewer, false), later)
                .unwrap_err(),
            Refusal::Limited(_)
        ));
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[test]
    fn debug_never_shows_the_digest() {
        let t = ApiToken {
            name: "ops".into(),
            role: Role::Admin,
            sha256: digest("x"),
        };
        let shown = format!("{t:?}");
        assert!(
            shown.contains("ops") && !shown.contains("sha256"),
            "{shown}"
        );
    }
}
