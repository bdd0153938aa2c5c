//! `vantage-agent audit URL`: which checks run for a site ([`AuditPlan`],
//! built from the command line's [`AuditOptions`]), running them
//! ([`run_all`]) and the scorecard of one audit ([`audit`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use url::Url;
use vantage_proto::spec::{
    self, AuthRequiredSpec, CorsSpec, EmailDnsSpec, ExposedSecretsSpec, HeadersSpec, RateLimitSpec,
    RedirectSpec, TlsSpec, MAX_TIMEOUT,
};

use super::latency::{self, LatencySpec};
use super::scorecard::{Scorecard, Skipped};
use super::{email_dns, tls, AuditContext, Finding};
use crate::egress::EgressPolicy;
use crate::probe::tcp::url_host;

/// Every check an audit can run, in the order it runs them.
pub const CHECK_NAMES: [&str; 9] = [
    "tls",
    "latency",
    "redirect",
    "headers",
    "cors",
    "auth_required",
    "rate_limit",
    "exposed_secrets",
    "email_dns",
];

/// HSTS `max-age` asked of the site (see [`spec::DEFAULT_HSTS_MIN_MAX_AGE`]).
pub const HSTS_MIN_MAX_AGE: u64 = spec::DEFAULT_HSTS_MIN_MAX_AGE;
/// The origin the CORS check claims.
pub const HOSTILE_ORIGIN: &str = spec::DEFAULT_HOSTILE_ORIGIN;
/// Redirects allowed from the bare or plain-HTTP address to the canonical
/// page (see [`spec::DEFAULT_MAX_REDIRECT_HOPS`]).
pub const MAX_REDIRECT_HOPS: u32 = spec::DEFAULT_MAX_REDIRECT_HOPS;
/// Login attempts in the rate-limit burst before a 429 must have come.
pub const RATE_LIMIT_REQUESTS: u32 = spec::DEFAULT_RATE_LIMIT_REQUESTS;
/// Longest rate-limit burst.
pub const RATE_LIMIT_WITHIN: Duration = spec::DEFAULT_RATE_LIMIT_WITHIN;
/// The wrong login sent in the burst (a reserved `.invalid` address).
pub const LOGIN_BODY: &str = spec::DEFAULT_LOGIN_BODY;
/// Files the secrets scan may fetch.
pub const SECRETS_MAX_FILES: u32 = spec::DEFAULT_SECRETS_MAX_FILES;
/// Bytes read per file by the secrets scan.
pub const SECRETS_MAX_FILE_BYTES: u64 = spec::DEFAULT_SECRETS_MAX_FILE_BYTES;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditOptions {
    /// The site (`https://example.com/`).
    pub url: String,
    /// Routes that must refuse anonymous requests (`--protected`).
    pub protected: Vec<String>,
    /// A login route that must be rate limited (`--login`).
    pub login: Option<String>,
    /// Mail domain (`--domain`); default: the URL's host without `www.`.
    pub domain: Option<String>,
    /// DKIM selectors that must publish a key (`--dkim-selector`).
    pub dkim_selectors: Vec<String>,
    /// DNS server for the mail records (`--dns-server IP[:PORT]`).
    pub dns_server: Option<String>,
    /// Host names answered without DNS (`--resolve HOST:ADDR`).
    pub resolve: HashMap<String, IpAddr>,
    /// Extra trust anchors (`--ca-file PEM`).
    pub ca_file: Option<String>,
    /// Port of the plain-HTTP listener (`--http-port`, default 80).
    pub http_port: u16,
    /// Deadline of each check (`--timeout`, default 10 s).
    pub timeout: Duration,
    /// Checks left out (`--skip`), by contract name.
    pub skip: Vec<String>,
}

/// The checks of one audit, each `None` when it does not apply.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPlan {
    /// The site as given (credentials removed when shown).
    pub target: Url,
    /// The certificate of the HTTPS host.
    pub tls: Option<TlsSpec>,
    /// A short latency sample of the page.
    pub latency: Option<LatencySpec>,
    /// See [`RedirectSpec`].
    pub redirect: Option<RedirectSpec>,
    /// See [`HeadersSpec`].
    pub headers: Option<HeadersSpec>,
    /// See [`CorsSpec`].
    pub cors: Option<CorsSpec>,
    /// See [`AuthRequiredSpec`]; needs `--protected`.
    pub auth_required: Option<AuthRequiredSpec>,
    /// See [`RateLimitSpec`]; needs `--login`.
    pub rate_limit: Option<RateLimitSpec>,
    /// See [`EmailDnsSpec`]; needs a domain name.
    pub email_dns: Option<EmailDnsSpec>,
    /// See [`ExposedSecretsSpec`].
    pub exposed_secrets: Option<ExposedSecretsSpec>,
    /// Checks left out, and why.
    pub skipped: Vec<Skipped>,
}

impl AuditPlan {
    /// The plan for `opts`; `Err` says which flag is wrong and why.
    pub fn new(opts: &AuditOptions) -> Result<AuditPlan, String> {
        let url = Url::parse(&opts.url).map_err(|e| format!("{:?}: {e}", opts.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "the URL must be http:// or https://, not {}://",
                url.scheme()
            ));
        }
        let host = url_host(&url).ok_or("the URL has no host")?;
        let is_ip = host.parse::<IpAddr>().is_ok();
        // The canonical page is HTTPS; an http:// URL is audited as the
        // https:// page it should redirect to (default port).
        let mut https = url.clone();
        if url.scheme() == "http" {
            // Both are special schemes, so neither call can fail.
            let _ = https.set_scheme("https");
            let _ = https.set_port(None);
        }
        let ca_file = opts.ca_file.clone();
        let mut skipped = Vec::new();

        let aliases = RedirectSpec::default_aliases(&url);
        let auth_required = if opts.protected.is_empty() {
            skipped.push(Skipped {
                check: "auth_required",
                reason: "no --protected PATH given (routes that must refuse anonymous requests)"
                    .into(),
            });
            None
        } else {
            for p in &opts.protected {
                url.join(p).map_err(|e| format!("--protected {p:?}: {e}"))?;
            }
            Some(AuthRequiredSpec {
                url: url.clone(),
                paths: opts.protected.clone(),
                method: "GET".into(),
                ca_file: ca_file.clone(),
            })
        };
        let rate_limit = match &opts.login {
            None => {
                skipped.push(Skipped {
                    check: "rate_limit",
                    reason: "no --login PATH given (a login route that must be rate limited)"
                        .into(),
                });
                None
            }
            Some(path) => Some(RateLimitSpec {
                url: url
                    .join(path)
                    .map_err(|e| format!("--login {path:?}: {e}"))?,
                method: "POST".into(),
                body: Some(LOGIN_BODY.into()),
                content_type: Some("application/json".into()),
                max_requests: RATE_LIMIT_REQUESTS,
                within: RATE_LIMIT_WITHIN,
                ca_file: ca_file.clone(),
            }),
        };
        let domain = match &opts.domain {
            Some(d) => Some(mail_domain(d).map_err(|e| format!("--domain {d:?}: {e}"))?),
            None if is_ip => None,
            None => Some(host.strip_prefix("www.").unwrap_or(&host).to_owned()),
        };
        for s in &opts.dkim_selectors {
            if !is_selector(s) {
                return Err(format!(
                    "--dkim-selector {s:?}: use DNS labels (letters, digits, -, _) separated by dots"
                ));
            }
        }
        if let Some(server) = &opts.dns_server {
            email_dns::parse_dns_server(server).map_err(|e| format!("--dns-server: {e}"))?;
        }
        let email_dns = match domain {
            Some(domain) => Some(EmailDnsSpec {
                domain,
                dkim_selectors: opts.dkim_selectors.clone(),
                dns_server: opts.dns_server.clone(),
            }),
            None => {
                skipped.push(Skipped {
                    check: email_dns::CHECK,
                    reason: "the URL's host is an IP address: give --domain for the mail DNS"
                        .into(),
                });
                None
            }
        };
        let mut plan = AuditPlan {
            tls: Some(TlsSpec {
                host: url_host(&https).unwrap_or(host),
                port: https.port_or_known_default().unwrap_or(443),
                server_name: None,
                ca_file: ca_file.clone(),
            }),
            latency: Some(LatencySpec {
                url: url.clone(),
                requests: latency::DEFAULT_REQUESTS,
                p95_limit: latency::DEFAULT_P95_LIMIT,
                ca_file: ca_file.clone(),
            }),
            redirect: Some(RedirectSpec {
                url: https.clone(),
                http_port: opts.http_port,
                aliases,
                max_hops: MAX_REDIRECT_HOPS,
                ca_file: ca_file.clone(),
            }),
            headers: Some(HeadersSpec {
                url: https,
                hsts_min_max_age: HSTS_MIN_MAX_AGE,
                hsts_include_subdomains: false,
                ca_file: ca_file.clone(),
            }),
            cors: Some(CorsSpec {
                url: url.clone(),
                hostile_origin: HOSTILE_ORIGIN.into(),
                ca_file: ca_file.clone(),
            }),
            auth_required,
            rate_limit,
            email_dns,
            exposed_secrets: Some(ExposedSecretsSpec {
                url: url.clone(),
                max_files: SECRETS_MAX_FILES,
                max_file_bytes: SECRETS_MAX_FILE_BYTES,
                ca_file,
            }),
            target: url,
            skipped,
        };
        for name in &opts.skip {
            plan.leave_out(name)?;
        }
        Ok(plan)
    }

    /// Leaves out the check named `name` (`--skip`).
    fn leave_out(&mut self, name: &str) -> Result<(), String> {
        let was_planned = match name {
            "tls" => self.tls.take().is_some(),
            "latency" => self.latency.take().is_some(),
            "redirect" => self.redirect.take().is_some(),
            "headers" => self.headers.take().is_some(),
            "cors" => self.cors.take().is_some(),
            "auth_required" => self.auth_required.take().is_some(),
            "rate_limit" => self.rate_limit.take().is_some(),
            "exposed_secrets" => self.exposed_secrets.take().is_some(),
            "email_dns" => self.email_dns.take().is_some(),
            other => {
                return Err(format!(
                    "--skip {other:?}: not a check (tls, latency, redirect, headers, cors, auth_required, rate_limit, exposed_secrets, email_dns)"
                ))
            }
        };
        if was_planned {
            self.skipped.push(Skipped {
                check: CHECK_NAMES
                    .iter()
                    .find(|c| **c == name)
                    .copied()
                    .unwrap_or("?"),
                reason: "left out with --skip".into(),
            });
        }
        Ok(())
    }

    /// The checks this plan includes, in the order [`run_all`] runs them
    /// (whether or not they produce findings).
    pub fn planned(&self) -> Vec<&'static str> {
        let mut checks = Vec::new();
        let mut add = |on: bool, name: &'static str| {
            if on {
                checks.push(name);
            }
        };
        add(self.tls.is_some(), tls::CHECK);
        add(self.latency.is_some(), latency::CHECK);
        add(self.redirect.is_some(), "redirect");
        add(self.headers.is_some(), "headers");
        add(self.cors.is_some(), "cors");
        add(self.auth_required.is_some(), "auth_required");
        add(self.rate_limit.is_some(), "rate_limit");
        add(self.exposed_secrets.is_some(), "exposed_secrets");
        add(self.email_dns.is_some(), email_dns::CHECK);
        checks
    }

    /// Checks left out by the options (no `--login`, no `--protected` ...),
    /// for the scorecard.
    pub fn not_run(&self) -> Vec<Skipped> {
        self.skipped.clone()
    }
}

/// Runs every check of `plan`, one after the other (so the latency sample
/// and the rate-limit burst never overlap), each within `cx.timeout`.
pub async fn run_all(plan: &AuditPlan, cx: &AuditContext) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(spec) = &plan.tls {
        findings.extend(tls::run(spec, cx).await);
    }
    if let Some(spec) = &plan.latency {
        findings.extend(latency::run(spec, cx).await);
    }
    if let Some(spec) = &plan.redirect {
        findings.extend(super::redirect::run(spec, cx).await);
    }
    if let Some(spec) = &plan.headers {
        findings.extend(super::headers::run(spec, cx).await);
    }
    if let Some(spec) = &plan.cors {
        findings.extend(super::cors::run(spec, cx).await);
    }
    if let Some(spec) = &plan.auth_required {
        findings.extend(super::auth_required::run(spec, cx).await);
    }
    if let Some(spec) = &plan.rate_limit {
        findings.extend(super::rate_limit::run(spec, cx).await);
    }
    if let Some(spec) = &plan.exposed_secrets {
        findings.extend(super::exposed_secrets::run(spec, cx).await);
    }
    if let Some(spec) = &plan.email_dns {
        findings.extend(email_dns::run(spec, cx).await);
    }
    findings
}

/// Plans and runs one audit of `opts`, with no egress restriction (the
/// operator's own command, as `probe` and `load`). `Err` is bad input.
pub async fn audit(opts: &AuditOptions) -> Result<Scorecard, String> {
    if opts.timeout.is_zero() || opts.timeout > MAX_TIMEOUT {
        return Err(format!(
            "--timeout must be more than 0 and at most {}",
            humantime::format_duration(MAX_TIMEOUT)
        ));
    }
    let plan = AuditPlan::new(opts)?;
    let cx = AuditContext {
        timeout: opts.timeout,
        egress: Arc::new(EgressPolicy::unrestricted()),
        resolve: opts.resolve.clone(),
    };
    let started_at = SystemTime::now();
    let start = std::time::Instant::now();
    let findings = run_all(&plan, &cx).await;
    Ok(Scorecard {
        target: crate::probe::http::redact(&plan.target),
        started_at,
        duration: start.elapsed(),
        findings,
        skipped: plan.not_run(),
    })
}

/// Parses `--resolve HOST:ADDR` (`ADDR` an IPv4 or IPv6 address, brackets
/// allowed); the host is lower-cased.
pub fn parse_resolve(s: &str) -> Result<(String, IpAddr), String> {
    let usage = || format!("--resolve {s:?}: use HOST:ADDR (www.example.com:192.0.2.10)");
    let (host, addr) = s.split_once(':').ok_or_else(usage)?;
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let ip = addr.parse::<IpAddr>().map_err(|_| usage())?;
    if host.is_empty() {
        return Err(usage());
    }
    Ok((host.to_ascii_lowercase(), ip))
}

/// A mail domain: at least two DNS labels; lower-cased, no trailing dot.
fn mail_domain(d: &str) -> Result<String, String> {
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    let ok = d.contains('.')
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err("not a domain name".into())
    }
}

/// A DKIM selector: dot-separated labels of letters, digits, `-` and `_`.
fn is_selector(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63 * 2
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(url: &str) -> AuditOptions {
        AuditOptions {
            url: url.into(),
            protected: Vec::new(),
            login: None,
            domain: None,
            dkim_selectors: Vec::new(),
            dns_server: None,
            resolve: HashMap::new(),
            ca_file: None,
            http_port: 80,
            timeout: Duration::from_secs(10),
            skip: Vec::new(),
        }
    }

    #[test]
    fn skip_leaves_a_check_out_and_says_so() {
        let mut o = opts("https://www.example.com/");
        o.skip = vec!["redirect".into(), "email_dns".into()];
        let plan = AuditPlan::new(&o).unwrap();
        assert!(plan.redirect.is_none() && plan.email_dns.is_none());
        assert!(plan.headers.is_some());
        let skipped: Vec<&str> = plan.not_run().iter().map(|s| s.check).collect();
        assert!(skipped.contains(&"redirect") && skipped.contains(&"email_dns"));
        o.skip = vec!["nope".into()];
        let err = AuditPlan::new(&o).unwrap_err();
        assert!(err.contains("--skip \"nope\""), "{err}");
    }

    #[test]
    fn every_check_is_planned_with_its_inputs() {
        let mut o = opts("https://www.example.com/");
        o.protected = vec!["/admin".into()];
        o.login = Some("/login".into());
        let plan = AuditPlan::new(&o).unwrap();
        assert_eq!(
            plan.planned(),
            [
                "tls",
                "latency",
                "redirect",
                "headers",
                "cors",
                "auth_required",
                "rate_limit",
                "exposed_secrets",
                "email_dns"
            ]
        );
        assert!(plan.not_run().is_empty());
    }

    #[test]
    fn specs_follow_the_url_and_flags() {
        let plan = AuditPlan::new(&opts("https://www.example.com/app")).unwrap();
        assert_eq!(plan.email_dns.as_ref().unwrap().domain, "example.com");
        assert_eq!(plan.redirect.as_ref().unwrap().aliases, ["example.com"]);
        let tls = plan.tls.as_ref().unwrap();
        assert_eq!((tls.host.as_str(), tls.port), ("www.example.com", 443));
        assert_eq!(
            plan.skipped.iter().map(|s| s.check).collect::<Vec<_>>(),
            ["auth_required", "rate_limit"]
        );

        let plan = AuditPlan::new(&opts("http://example.com:8080/")).unwrap();
        assert_eq!(plan.redirect.as_ref().unwrap().aliases, ["www.example.com"]);
        assert_eq!(
            plan.headers.as_ref().unwrap().url.as_str(),
            "https://example.com/"
        );
        assert_eq!(plan.tls.as_ref().unwrap().port, 443);
        assert_eq!(
            plan.latency.as_ref().unwrap().url.as_str(),
            "http://example.com:8080/"
        );

        let mut o = opts("https://127.0.0.1:8443/");
        let plan = AuditPlan::new(&o).unwrap();
        assert_eq!(plan.email_dns, None);
        assert!(plan.skipped.iter().any(|s| s.check == "email_dns"));
        assert_eq!(plan.tls.as_ref().unwrap().port, 8443);
        o.domain = Some("Mail.Example.".into());
        o.dkim_selectors = vec!["s1".into()];
        o.dns_server = Some("127.0.0.1:5353".into());
        o.login = Some("/api/login".into());
        let plan = AuditPlan::new(&o).unwrap();
        let mail = plan.email_dns.unwrap();
        assert_eq!(mail.domain, "mail.example");
        assert_eq!(mail.dkim_selectors, ["s1"]);
        assert_eq!(
            plan.rate_limit.unwrap().url.as_str(),
            "https://127.0.0.1:8443/api/login"
        );
    }

    #[test]
    fn bad_flags_are_errors() {
        type Change = fn(&mut AuditOptions);
        let cases: [(Change, &str); 5] = [
            (
                |o| o.url = "ftp://example.com/".into(),
                "http:// or https://",
            ),
            (|o| o.domain = Some("not a domain".into()), "--domain"),
            (|o| o.dkim_selectors = vec!["a b".into()], "--dkim-selector"),
            (
                |o| o.dns_server = Some("dns.example".into()),
                "--dns-server",
            ),
            (|o| o.url = "not a url".into(), "relative URL"),
        ];
        for (change, expected) in cases {
            let mut o = opts("https://example.com/");
            change(&mut o);
            let e = AuditPlan::new(&o).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn resolve_flags() {
        assert_eq!(
            parse_resolve("WWW.example.com:192.0.2.1").unwrap(),
            ("www.example.com".into(), "192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            parse_resolve("h.test:[::1]").unwrap().1,
            "::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            parse_resolve("h.test:2001:db8::1").unwrap().1,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        for bad in [
            "h.test",
            "h.test:999.1.1.1",
            ":127.0.0.1",
            "h.test:443:127.0.0.1",
        ] {
            assert!(parse_resolve(bad).is_err(), "{bad}");
        }
    }
}
