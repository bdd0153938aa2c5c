//! The audit's one way to make a request: a single HTTP(S) request that
//! never follows a redirect by itself, connects only where the egress policy
//! allows (to a pinned address for names in [`AuditContext::resolve`]),
//! verifies the certificate before sending, reads at most a given number of
//! body bytes, and ends by the check's deadline.
//!
//! Connection setup is the `http` probe's ([`open_http`]); only the request
//! body and the body reading differ.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use url::Url;
use vantage_proto::v1::ErrorClass;

use super::AuditContext;
use crate::egress::EgressPolicy;
use crate::probe::http::{
    is_redirect, open_http, redact, response_error, Target, ALPN, USER_AGENT_VALUE,
};
use crate::probe::tcp::connect_host;
use crate::probe::tls::TlsClient;
use crate::probe::{describe_error, BuildError, Deadline, Phases, ProbeError};

/// Body bytes read of responses whose body only matters as a sample (HTML
/// pages scanned for mixed content, redirects): the http probe's limit.
pub(crate) const PAGE_LIMIT: usize = crate::probe::http::BODY_LIMIT;

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
    /// Most body bytes read (0: the body is not read at all).
    pub(crate) body_limit: usize,
}

impl Request {
    /// A GET of `url` reading at most `body_limit` bytes of the body.
    pub(crate) fn get(url: &Url, body_limit: usize) -> Self {
        Request {
            method: Method::GET,
            url: url.clone(),
            headers: Vec::new(),
            body: Bytes::new(),
            body_limit,
        }
    }

    /// Adds a header (names and values are the checks' own, always valid).
    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// A response: status, headers and the first bytes of the body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// The URL requested.
    pub(crate) url: Url,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// At most the request's `body_limit` bytes.
    pub(crate) body: Vec<u8>,
    /// Whether the body went on past `body_limit`.
    pub(crate) truncated: bool,
}

impl Response {
    /// The first value of header `name` as text (`None` when absent or not
    /// visible ASCII).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Where a redirect points (resolved against the request URL), for a
    /// redirect status with a usable `Location`.
    pub(crate) fn location(&self) -> Option<Url> {
        if !is_redirect(self.status) {
            return None;
        }
        let text = self.headers.get(LOCATION)?.to_str().ok()?;
        self.url
            .join(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
    }
}

/// A redirect chain as followed by [`Fetcher::follow`].
#[derive(Debug)]
pub(crate) struct Chain {
    /// Each redirect response, in order.
    pub(crate) hops: Vec<Response>,
    /// The response that was not followed (not a redirect, or the hop limit
    /// was reached), or the error that ended the chain.
    pub(crate) end: Result<Response, ProbeError>,
}

impl Chain {
    /// The chain for humans: `URL → 301 → URL → 200` (URLs without userinfo).
    pub(crate) fn describe(&self) -> String {
        let mut text = String::new();
        for hop in &self.hops {
            text.push_str(&format!(
                "{} → {} → ",
                redact(&hop.url),
                hop.status.as_u16()
            ));
        }
        match &self.end {
            Ok(end) => text.push_str(&format!("{} → {}", redact(&end.url), end.status.as_u16())),
            Err(e) if self.hops.is_empty() => text.push_str(&e.to_string()),
            Err(e) => text.push_str(&format!("({e})")),
        }
        text
    }

    /// Every URL requested, in order.
    pub(crate) fn urls(&self) -> impl Iterator<Item = &Url> {
        self.hops
            .iter()
            .map(|h| &h.url)
            .chain(self.end.as_ref().ok().map(|e| &e.url))
    }
}

/// Sends the audit's requests; built once per check run.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    tls: TlsClient,
    egress: Arc<EgressPolicy>,
    /// [`AuditContext::resolve`] with lower-case names.
    resolve: HashMap<String, IpAddr>,
}

impl Fetcher {
    /// A fetcher for `cx`, trusting webpki-roots plus `ca_file`.
    pub(crate) fn new(cx: &AuditContext, ca_file: Option<&str>) -> Result<Self, BuildError> {
        Ok(Fetcher {
            tls: TlsClient::new(ca_file, &ALPN)?,
            egress: Arc::clone(&cx.egress),
            resolve: cx
                .resolve
                .iter()
                .map(|(name, ip)| (name.to_ascii_lowercase(), *ip))
                .collect(),
        })
    }

    /// Sends `req` on a fresh connection and reads its response, all by
    /// `deadline`. Redirects are returned, not followed.
    pub(crate) async fn fetch(
        &self,
        req: &Request,
        deadline: &Deadline,
    ) -> Result<Response, ProbeError> {
        let target = Target::parse(&req.url)?;
        let pinned = self.resolve.get(&target.host.to_ascii_lowercase()).copied();
        let mut phases = Phases::default();
        let host = (target.host.as_str(), target.port);
        let tcp = connect_host(host, pinned, &self.egress, deadline, &mut phases).await?;
        let mut facts = None;
        let tls = (&self.tls, true);
        let (mut sender, mut driver) =
            open_http::<Full<Bytes>>(tcp, &target, tls, deadline, &mut phases, &mut facts).await?;

        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        for (name, value) in &req.headers {
            headers.append(name.clone(), value.clone());
        }
        let body = Full::new(req.body.clone());
        let request = target.request(sender.is_h2(), &req.method, &headers, body)?;
        let response = deadline
            .run("waiting", driver.drive(sender.send(request)))
            .await?
            .map_err(response_error)?;
        let (parts, incoming) = response.into_parts();
        let (body, truncated) = deadline
            .run("body", driver.drive(read_prefix(incoming, req.body_limit)))
            .await?
            .map_err(|e| {
                ProbeError::new(
                    ErrorClass::Body,
                    format!("reading the body: {}", describe_error(&e)),
                )
            })?;
        Ok(Response {
            url: req.url.clone(),
            status: parts.status,
            headers: parts.headers,
            body,
            truncated,
        })
    }

    /// GETs `url` and follows its redirects, at most `max_redirects` of
    /// them, each one request of its own; the final response's body is read
    /// up to `body_limit` bytes.
    pub(crate) async fn follow(
        &self,
        url: &Url,
        max_redirects: u32,
        body_limit: usize,
        deadline: &Deadline,
    ) -> Chain {
        let mut hops = Vec::new();
        let mut req = Request::get(url, body_limit);
        loop {
            let response = match self.fetch(&req, deadline).await {
                Ok(r) => r,
                Err(e) => return Chain { hops, end: Err(e) },
            };
            let next = response.location();
            match next {
                Some(next) if hops.len() < max_redirects as usize => {
                    hops.push(response);
                    req.url = next;
                }
                _ => {
                    return Chain {
                        hops,
                        end: Ok(response),
                    }
                }
            }
        }
    }
}

/// Reads at most `limit` bytes of `body`; whether more followed.
async fn read_prefix(mut body: Incoming, limit: usize) -> Result<(Vec<u8>, bool), hyper::Error> {
    let mut read = Vec::new();
    if limit == 0 {
        return Ok((read, !body.is_end_stream()));
    }
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers
        };
        let room = limit - read.len();
        if data.len() >= room {
            read.extend_from_slice(&data[..room]);
            let more = data.len() > room || !body.is_end_stream();
            return Ok((read, more));
        }
        read.extend_from_slice(&data);
    }
    Ok((read, false))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig};

    #[tokio::test]
    async fn a_pinned_name_is_fetched_over_verified_tls_without_dns() {
        let site = Site::start(SiteConfig::good()).await;
        let cx = site.context(Duration::from_secs(5));
        let fetcher = Fetcher::new(&cx, site.ca_file().as_deref()).unwrap();
        let deadline = cx.deadline();
        let page = fetcher
            .fetch(&Request::get(&site.https_url("/"), 16), &deadline)
            .await
            .unwrap();
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.body.len(), 16, "read up to the limit");
        assert!(page.truncated);

        // Without the CA the certificate does not pass: nothing is sent.
        let untrusting = Fetcher::new(&cx, None).unwrap();
        let err = untrusting
            .fetch(&Request::get(&site.https_url("/"), 16), &deadline)
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Tls, "{err:?}");
    }

    #[tokio::test]
    async fn the_egress_policy_applies_to_pinned_addresses() {
        let site = Site::start(SiteConfig::good()).await;
        let mut cx = site.context(Duration::from_secs(5));
        cx.egress = Arc::new(EgressPolicy::default());
        let fetcher = Fetcher::new(&cx, site.ca_file().as_deref()).unwrap();
        let err = fetcher
            .fetch(&Request::get(&site.https_url("/"), 16), &cx.deadline())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Egress, "{err:?}");
    }

    #[tokio::test]
    async fn a_redirect_is_returned_not_followed_and_follow_stops_at_the_limit() {
        let site = Site::start(SiteConfig::good()).await;
        let cx = site.context(Duration::from_secs(5));
        let fetcher = Fetcher::new(&cx, site.ca_file().as_deref()).unwrap();
        let deadline = cx.deadline();
        let first = fetcher
            .fetch(&Request::get(&site.http_url("/"), 0), &deadline)
            .await
            .unwrap();
        assert_eq!(first.status, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(first.location(), Some(site.https_url("/")));

        let chain = fetcher.follow(&site.http_url("/"), 5, 64, &deadline).await;
        assert_eq!(chain.hops.len(), 1);
        assert_eq!(chain.end.as_ref().unwrap().status, StatusCode::OK);
        let cut = fetcher.follow(&site.http_url("/"), 0, 64, &deadline).await;
        assert_eq!(cut.hops.len(), 0);
        assert_eq!(cut.end.unwrap().status, StatusCode::MOVED_PERMANENTLY);
    }

    #[tokio::test]
    async fn a_stalled_response_ends_at_the_deadline() {
        let site = Site::start(SiteConfig::good()).await;
        let cx = site.context(Duration::from_millis(300));
        let fetcher = Fetcher::new(&cx, site.ca_file().as_deref()).unwrap();
        let started = tokio::time::Instant::now();
        let err = fetcher
            .fetch(&Request::get(&site.https_url("/stall"), 16), &cx.deadline())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Timeout, "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
