//! `[[check]]` tables → [`CheckConfig`].
//!
//! This module reads and type-checks the keys; the rules about the values
//! (name syntax, interval range, URL scheme, methods, status codes, ports ...)
//! live in [`vantage_proto::spec::Check::validate`], shared with the agent, and
//! its errors are mapped back to the keys here. Only rules that concern the
//! file itself are here: required keys, kinds, regions, unique names, keys of
//! the wrong kind, and `timeout` against `interval`.

use std::collections::HashMap;
use std::time::Duration;

use vantage_proto::spec::{
    self, AuthRequiredSpec, Check, CorsSpec, EmailDnsSpec, ExposedSecretsSpec, HeadersSpec,
    HttpSpec, ProbeKind, ProbeSpec, RateLimitSpec, RedirectSpec, TcpSpec, TlsSpec,
};

use super::alerting;
use super::reader::{self, Ctx, Field, Reported, TableReader};
use super::CheckConfig;

/// Default `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default `timeout`, capped at the interval.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `interval` of a `rate_limit` check: the shortest it may have
/// ([`spec::MIN_RATE_LIMIT_INTERVAL`]), since each attempt sends a burst.
pub const DEFAULT_RATE_LIMIT_INTERVAL: Duration = spec::MIN_RATE_LIMIT_INTERVAL;

/// Keys of every check, whatever its kind.
#[cfg(test)]
const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "regions",
    "interval",
    "timeout",
    "thresholds",
    "quorum",
    "failure_threshold",
    "for",
    "channels",
];
/// Keys of an `http` check (must match [`read_http`]; a test checks).
const HTTP_KEYS: &[&str] = &[
    "url",
    "method",
    "headers",
    "expect_status",
    "body_contains",
    "follow_redirects",
    "max_redirects",
    "insecure_skip_verify",
    "ca_file",
];
/// Keys of a `tcp` check (must match [`read_tcp`]).
const TCP_KEYS: &[&str] = &["host", "port"];
/// Keys of a `tls` check (must match [`read_tls`]).
const TLS_KEYS: &[&str] = &["host", "port", "server_name", "ca_file"];

/// Keys of a `redirect` check (must match [`read_redirect`]).
const REDIRECT_KEYS: &[&str] = &["url", "http_port", "aliases", "max_hops", "ca_file"];
/// Keys of a `headers` check (must match [`read_headers_check`]).
const HEADERS_KEYS: &[&str] = &[
    "url",
    "hsts_min_max_age",
    "hsts_include_subdomains",
    "ca_file",
];
/// Keys of a `cors` check (must match [`read_cors`]).
const CORS_KEYS: &[&str] = &["url", "hostile_origin", "ca_file"];
/// Keys of an `auth_required` check (must match [`read_auth_required`]).
const AUTH_REQUIRED_KEYS: &[&str] = &["url", "paths", "method", "ca_file"];
/// Keys of a `rate_limit` check (must match [`read_rate_limit`]).
const RATE_LIMIT_KEYS: &[&str] = &[
    "url",
    "method",
    "body",
    "content_type",
    "max_requests",
    "within",
    "ca_file",
];
/// Keys of an `email_dns` check (must match [`read_email_dns`]).
const EMAIL_DNS_KEYS: &[&str] = &["domain", "dkim_selectors", "dns_server"];
/// Keys of an `exposed_secrets` check (must match [`read_exposed_secrets`]).
const EXPOSED_SECRETS_KEYS: &[&str] = &["url", "max_files", "max_file_bytes", "ca_file"];

fn kind_keys(kind: ProbeKind) -> &'static [&'static str] {
    match kind {
        ProbeKind::Http => HTTP_KEYS,
        ProbeKind::Tcp => TCP_KEYS,
        ProbeKind::Tls => TLS_KEYS,
        ProbeKind::Redirect => REDIRECT_KEYS,
        ProbeKind::Headers => HEADERS_KEYS,
        ProbeKind::Cors => CORS_KEYS,
        ProbeKind::AuthRequired => AUTH_REQUIRED_KEYS,
        ProbeKind::RateLimit => RATE_LIMIT_KEYS,
        ProbeKind::EmailDns => EMAIL_DNS_KEYS,
        ProbeKind::ExposedSecrets => EXPOSED_SECRETS_KEYS,
    }
}

/// "an http check", "a tcp check".
fn a_kind(kind: ProbeKind) -> String {
    let article = match kind {
        ProbeKind::Http
        | ProbeKind::AuthRequired
        | ProbeKind::EmailDns
        | ProbeKind::ExposedSecrets => "an",
        _ => "a",
    };
    format!("{article} {} check", kind.as_str())
}

/// Reads the top-level `check` key: an array of tables.
/// Most `[[check]]` tables one config may hold (RELIABILITY.md API4): each
/// costs memory, evaluation time and agent work.
pub const MAX_CHECKS: usize = 10_000;

pub(super) fn read_checks(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    channels: &[String],
) -> Vec<CheckConfig> {
    let Some(field) = root.field("check") else {
        return Vec::new();
    };
    let expected = "an array of tables ([[check]])";
    let Ok(elements) = field.array(cx, expected) else {
        return Vec::new();
    };
    let mut names = HashMap::new();
    let mut checks = Vec::new();
    if let Some(first_over) = elements.get(MAX_CHECKS) {
        first_over.error(
            cx,
            format!(
                "{} checks: at most {MAX_CHECKS} per config (split the fleet across coordinators)",
                elements.len()
            ),
        );
    }
    for (i, element) in elements.iter().enumerate().take(MAX_CHECKS) {
        let Ok(r) = element.table(cx, "a table ([[check]])") else {
            continue;
        };
        checks.push(read_check(cx, r, i, &mut names, channels));
    }
    checks
}

/// Fields that were missing or invalid and got a stand-in value so the rest
/// of the check can still be validated; spec errors about them are dropped
/// because the real problem was already reported.
#[derive(Default)]
struct StandIns(Vec<&'static str>);

impl StandIns {
    /// The value of an optional key: as given, else `default`.
    fn or<T>(&mut self, key: &'static str, read: Result<Option<T>, Reported>, default: T) -> T {
        match read {
            Ok(v) => v.unwrap_or(default),
            Err(Reported) => {
                self.0.push(key);
                default
            }
        }
    }

    /// The value of a required key, else a stand-in.
    fn req<T>(&mut self, key: &'static str, read: Result<T, Reported>, stand_in: T) -> T {
        read.unwrap_or_else(|Reported| {
            self.0.push(key);
            stand_in
        })
    }
}

fn read_check(
    cx: &mut Ctx<'_>,
    mut r: TableReader<'_, '_>,
    index: usize,
    names: &mut HashMap<String, (usize, usize)>,
    channels: &[String],
) -> CheckConfig {
    let mut stand_ins = StandIns::default();

    let name = r.required(cx, "name", reader::string);
    if let (Ok(name), Some(at)) = (&name, r.key_span("name")) {
        let line = cx.position(at.start).0;
        if let Some((first, first_line)) = names.get(name) {
            cx.error(
                &at,
                &r.key_path("name"),
                format!(
                    "duplicate check name {name:?}: check[{first}] at line {first_line} already uses it"
                ),
            );
        } else {
            names.insert(name.clone(), (index, line));
        }
    }
    let kind = r.required(cx, "kind", read_kind);
    let regions = r.required(cx, "regions", read_regions);
    let interval = r.optional(cx, "interval", reader::duration);
    let timeout = r.optional(cx, "timeout", reader::duration);
    let alerting = alerting::read_check_alerting(
        cx,
        &mut r,
        kind.as_ref().ok().copied(),
        regions.as_ref().map_or(0, Vec::len),
        channels,
    );

    // Read before the probe: the rate_limit default of `within` is capped at
    // the timeout, whose own default depends on the interval.
    let default_interval = match kind {
        Ok(ProbeKind::RateLimit) => DEFAULT_RATE_LIMIT_INTERVAL,
        _ => DEFAULT_INTERVAL,
    };
    let interval = stand_ins.or("interval", interval, default_interval);
    let timeout_or_default = match &timeout {
        Ok(Some(t)) => *t,
        _ => DEFAULT_TIMEOUT.min(interval),
    };
    let probe = match kind {
        Ok(kind) => {
            let (cx2, r2, s2) = (&mut *cx, &mut r, &mut stand_ins);
            let probe = match kind {
                ProbeKind::Http => read_http(cx2, r2, s2).map(ProbeSpec::Http),
                ProbeKind::Tcp => Some(ProbeSpec::Tcp(read_tcp(cx2, r2, s2))),
                ProbeKind::Tls => Some(ProbeSpec::Tls(read_tls(cx2, r2, s2))),
                ProbeKind::Redirect => read_redirect(cx2, r2, s2).map(ProbeSpec::Redirect),
                ProbeKind::Headers => read_headers_check(cx2, r2, s2).map(ProbeSpec::Headers),
                ProbeKind::Cors => read_cors(cx2, r2, s2).map(ProbeSpec::Cors),
                ProbeKind::AuthRequired => {
                    read_auth_required(cx2, r2, s2).map(ProbeSpec::AuthRequired)
                }
                ProbeKind::RateLimit => {
                    read_rate_limit(cx2, r2, s2, timeout_or_default).map(ProbeSpec::RateLimit)
                }
                ProbeKind::EmailDns => Some(ProbeSpec::EmailDns(read_email_dns(cx2, r2, s2))),
                ProbeKind::ExposedSecrets => {
                    read_exposed_secrets(cx2, r2, s2).map(ProbeSpec::ExposedSecrets)
                }
            };
            reject_other_kinds_keys(cx, &mut r, kind);
            probe
        }
        Err(Reported) => {
            // Without a kind its keys cannot be judged: accept them all, and
            // validate the common keys against a stand-in probe.
            for kind in ProbeKind::ALL {
                r.allow(kind_keys(kind));
            }
            None
        }
    };
    let probe = probe.unwrap_or_else(|| {
        for kind in ProbeKind::ALL {
            stand_ins.0.extend_from_slice(kind_keys(kind));
        }
        ProbeSpec::Tcp(TcpSpec {
            host: String::new(),
            port: 0,
        })
    });

    let interval_known = !stand_ins.0.contains(&"interval");
    let timeout = match timeout {
        Ok(Some(t)) => {
            if interval_known && t > interval {
                let at = r.key_span("timeout").unwrap_or_else(|| r.header().clone());
                cx.error(
                    &at,
                    &r.key_path("timeout"),
                    format!(
                        "{} is longer than the interval ({}): use at most the interval",
                        human(t),
                        human(interval)
                    ),
                );
            }
            t
        }
        other => stand_ins.or("timeout", other, DEFAULT_TIMEOUT.min(interval)),
    };
    let name = stand_ins.req("name", name, String::new());
    let regions = stand_ins.req("regions", regions, Vec::new());

    let check = Check {
        name,
        interval,
        timeout,
        probe,
    };
    for e in check.validate() {
        if stand_ins.0.contains(&e.field) {
            continue;
        }
        let at = r.key_span(e.field).unwrap_or_else(|| r.header().clone());
        cx.error(&at, &r.key_path(e.field), e.message);
    }
    r.finish(cx);
    CheckConfig {
        check,
        regions,
        alerting,
    }
}

fn human(d: Duration) -> String {
    vantage_proto::spec::humantime_like(d)
}

/// Reports keys that belong to another kind, naming the keys this kind takes.
fn reject_other_kinds_keys(cx: &mut Ctx<'_>, r: &mut TableReader<'_, '_>, kind: ProbeKind) {
    let own = kind_keys(kind);
    for other in ProbeKind::ALL {
        for key in kind_keys(other) {
            if !own.contains(key) {
                let message = format!(
                    "`{key}` is not a key of {}; {} checks take {}",
                    a_kind(kind),
                    kind.as_str(),
                    own.join(", ")
                );
                r.reject(cx, key, &message);
            }
        }
    }
}

fn read_kind(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<ProbeKind, Reported> {
    let s = reader::string(cx, f)?;
    ProbeKind::parse(&s).ok_or_else(|| {
        let kinds: Vec<_> = ProbeKind::ALL.iter().map(|k| k.as_str()).collect();
        f.error(
            cx,
            format!("{s:?} is not a check kind: use one of {}", kinds.join(", ")),
        )
    })
}

fn read_regions(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Vec<String>, Reported> {
    let elements = f.array(cx, "an array of region names like [\"eu\", \"us\"]")?;
    if elements.is_empty() {
        return Err(f.error(cx, "must list at least one region, like [\"eu\"]"));
    }
    // (element index, name) of the regions read so far.
    let mut regions: Vec<(usize, String)> = Vec::new();
    let mut failed = false;
    for (i, e) in elements.iter().enumerate() {
        let Ok(region) = reader::string(cx, e) else {
            failed = true;
            continue;
        };
        if !vantage_proto::is_valid_name(&region) {
            e.error(
                cx,
                format!(
                    "{region:?} is not a valid region name: use 1-64 characters from A-Z a-z 0-9 . _ -"
                ),
            );
            failed = true;
        } else if let Some((first, _)) = regions.iter().find(|(_, r)| *r == region) {
            e.error(
                cx,
                format!("duplicate region {region:?}: already listed as regions[{first}]"),
            );
            failed = true;
        }
        regions.push((i, region));
    }
    if failed {
        Err(Reported)
    } else {
        Ok(regions.into_iter().map(|(_, r)| r).collect())
    }
}

fn read_http(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<HttpSpec> {
    let url = r.required(cx, "url", read_url);
    let method = r.optional(cx, "method", |cx, f| {
        reader::string(cx, f).map(|m| m.to_ascii_uppercase())
    });
    let headers = r.optional(cx, "headers", read_headers);
    let expect_status = r.optional(cx, "expect_status", read_statuses);
    let body_contains = r.optional(cx, "body_contains", reader::string);
    let follow_redirects = r.optional(cx, "follow_redirects", reader::boolean);
    let max_redirects = r.optional(cx, "max_redirects", |cx, f| {
        let expected = "an integer from 0 to 20";
        let n = reader::integer(cx, f, expected)?;
        u32::try_from(n).map_err(|_| f.error(cx, format!("{n} is out of range: use 0 to 20")))
    });
    let insecure_skip_verify = r.optional(cx, "insecure_skip_verify", reader::boolean);
    let ca_file = r.optional(cx, "ca_file", reader::string);

    let url = match url {
        Ok(url) => url,
        Err(Reported) => {
            stand_ins.0.push("url");
            url::Url::parse("http://stand-in.invalid/").ok()?
        }
    };
    // HttpSpec::get holds the defaults, so they are written down once.
    let d = HttpSpec::get(url);
    Some(HttpSpec {
        method: stand_ins.or("method", method, d.method),
        headers: stand_ins.or("headers", headers, d.headers),
        expect_status: stand_ins.or("expect_status", expect_status, d.expect_status),
        body_contains: stand_ins.or("body_contains", body_contains.map(|b| b.map(Some)), None),
        follow_redirects: stand_ins.or("follow_redirects", follow_redirects, d.follow_redirects),
        max_redirects: stand_ins.or("max_redirects", max_redirects, d.max_redirects),
        insecure_skip_verify: stand_ins.or(
            "insecure_skip_verify",
            insecure_skip_verify,
            d.insecure_skip_verify,
        ),
        ca_file: stand_ins.or("ca_file", ca_file.map(|c| c.map(Some)), None),
        url: d.url,
    })
}

fn read_url(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<url::Url, Reported> {
    let expected = "a string like \"https://example.com/health\"";
    let toml::de::DeValue::String(s) = f.value.get_ref() else {
        return Err(f.type_error(cx, expected));
    };
    url::Url::parse(s).map_err(|e| {
        f.error(
            cx,
            format!("{s:?} is not a URL ({e}): use an http:// or https:// URL"),
        )
    })
}

fn read_headers(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Vec<(String, String)>, Reported> {
    let entries = f.entries(cx, "an inline table like { X-Token = \"abc\" }")?;
    // Entries of the wrong type are reported and left out; the rest are still
    // validated by Check::validate.
    Ok(entries
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), reader::string(cx, &value).ok()?)))
        .collect())
}

fn read_statuses(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Vec<u16>, Reported> {
    let elements = f.array(cx, "an array of status codes like [200, 204]")?;
    if elements.is_empty() {
        return Err(f.error(
            cx,
            "must list at least one status code; leave the key out to accept 200-399",
        ));
    }
    // Bad elements are reported and left out; the rest are still validated by
    // Check::validate, which owns the 100-599 rule.
    let mut statuses = Vec::new();
    for e in &elements {
        let Ok(n) = reader::integer(cx, e, "a status code (100-599)") else {
            continue;
        };
        match u16::try_from(n) {
            Ok(s) => statuses.push(s),
            Err(_) => {
                e.error(cx, format!("{n} is not an HTTP status code (100-599)"));
            }
        }
    }
    Ok(statuses)
}

/// `host` and `port`, shared by tcp and tls.
fn read_host_port(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> (String, u16) {
    let host = r.required(cx, "host", reader::string);
    let port = r.required(cx, "port", |cx, f| {
        let n = reader::integer(cx, f, "a port number (1-65535)")?;
        // Port 0 is Check::validate's to reject.
        u16::try_from(n).map_err(|_| f.error(cx, format!("{n} is not a valid port: use 1-65535")))
    });
    (
        stand_ins.req("host", host, String::new()),
        stand_ins.req("port", port, 0),
    )
}

fn read_tcp(cx: &mut Ctx<'_>, r: &mut TableReader<'_, '_>, stand_ins: &mut StandIns) -> TcpSpec {
    let (host, port) = read_host_port(cx, r, stand_ins);
    TcpSpec { host, port }
}

fn read_tls(cx: &mut Ctx<'_>, r: &mut TableReader<'_, '_>, stand_ins: &mut StandIns) -> TlsSpec {
    let (host, port) = read_host_port(cx, r, stand_ins);
    let server_name = r.optional(cx, "server_name", reader::string);
    let ca_file = r.optional(cx, "ca_file", reader::string);
    TlsSpec {
        host,
        port,
        server_name: stand_ins.or("server_name", server_name.map(|s| s.map(Some)), None),
        ca_file: stand_ins.or("ca_file", ca_file.map(|c| c.map(Some)), None),
    }
}

/// The required `url` of an audit check, or a stand-in.
fn audit_url(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<url::Url> {
    match r.required(cx, "url", read_url) {
        Ok(url) => Some(url),
        Err(Reported) => {
            stand_ins.0.push("url");
            url::Url::parse("https://stand-in.invalid/").ok()
        }
    }
}

/// An optional string whose absence means `None`.
fn optional_string(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
    key: &'static str,
) -> Option<String> {
    let read = r.optional(cx, key, reader::string);
    stand_ins.or(key, read.map(|v| v.map(Some)), None)
}

/// An array of strings.
fn read_strings(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    expected: &str,
) -> Result<Vec<String>, Reported> {
    let elements = f.array(cx, expected)?;
    let mut out = Vec::new();
    let mut failed = false;
    for e in &elements {
        match reader::string(cx, e) {
            Ok(s) => out.push(s),
            Err(Reported) => failed = true,
        }
    }
    if failed {
        Err(Reported)
    } else {
        Ok(out)
    }
}

/// An integer in `range`; Check::validate owns the finer rules.
fn read_count<T: TryFrom<i64>>(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    expected: &str,
) -> Result<T, Reported> {
    let n = reader::integer(cx, f, expected)?;
    T::try_from(n).map_err(|_| f.error(cx, format!("{n} is out of range: expected {expected}")))
}

fn read_redirect(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<RedirectSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let http_port = r.optional(cx, "http_port", |cx, f| {
        read_count(cx, f, "a port number (1-65535)")
    });
    let aliases = r.optional(cx, "aliases", |cx, f| {
        read_strings(cx, f, "an array of host names like [\"www.example.com\"]")
    });
    let max_hops = r.optional(cx, "max_hops", |cx, f| {
        read_count(cx, f, "an integer from 1 to 20")
    });
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    Some(RedirectSpec {
        http_port: stand_ins.or("http_port", http_port, spec::DEFAULT_HTTP_PORT),
        aliases: stand_ins.or("aliases", aliases, RedirectSpec::default_aliases(&url)),
        max_hops: stand_ins.or("max_hops", max_hops, spec::DEFAULT_MAX_REDIRECT_HOPS),
        ca_file,
        url,
    })
}

fn read_headers_check(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<HeadersSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let max_age = r.optional(cx, "hsts_min_max_age", |cx, f| {
        read_count(cx, f, "a number of seconds like 31536000")
    });
    let subdomains = r.optional(cx, "hsts_include_subdomains", reader::boolean);
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    Some(HeadersSpec {
        url,
        hsts_min_max_age: stand_ins.or("hsts_min_max_age", max_age, spec::DEFAULT_HSTS_MIN_MAX_AGE),
        hsts_include_subdomains: stand_ins.or("hsts_include_subdomains", subdomains, false),
        ca_file,
    })
}

fn read_cors(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<CorsSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let origin = r.optional(cx, "hostile_origin", reader::string);
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    Some(CorsSpec {
        url,
        hostile_origin: stand_ins.or(
            "hostile_origin",
            origin,
            spec::DEFAULT_HOSTILE_ORIGIN.into(),
        ),
        ca_file,
    })
}

fn read_method(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
    default: &str,
) -> String {
    let method = r.optional(cx, "method", |cx, f| {
        reader::string(cx, f).map(|m| m.to_ascii_uppercase())
    });
    stand_ins.or("method", method, default.into())
}

fn read_auth_required(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<AuthRequiredSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let paths = r.required(cx, "paths", |cx, f| {
        read_strings(cx, f, "an array of paths like [\"/admin\"]")
    });
    let method = read_method(cx, r, stand_ins, "GET");
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    Some(AuthRequiredSpec {
        url,
        paths: stand_ins.req("paths", paths, Vec::new()),
        method,
        ca_file,
    })
}

fn read_rate_limit(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
    timeout: Duration,
) -> Option<RateLimitSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let method = read_method(cx, r, stand_ins, "POST");
    let body = r.optional(cx, "body", reader::string);
    let content_type = r.optional(cx, "content_type", reader::string);
    let max_requests = r.optional(cx, "max_requests", |cx, f| {
        read_count(cx, f, "an integer from 1 to 500")
    });
    let within = r.optional(cx, "within", reader::duration);
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    // The default login body is JSON; a body of one's own has no default type.
    let body_given = matches!(body, Ok(Some(_)));
    Some(RateLimitSpec {
        url,
        method,
        body: Some(stand_ins.or("body", body, spec::DEFAULT_LOGIN_BODY.into())),
        content_type: stand_ins.or(
            "content_type",
            content_type.map(|c| c.map(Some)),
            (!body_given).then(|| spec::DEFAULT_LOGIN_CONTENT_TYPE.into()),
        ),
        max_requests: stand_ins.or(
            "max_requests",
            max_requests,
            spec::DEFAULT_RATE_LIMIT_REQUESTS,
        ),
        within: stand_ins.or(
            "within",
            within,
            spec::DEFAULT_RATE_LIMIT_WITHIN.min(timeout),
        ),
        ca_file,
    })
}

fn read_email_dns(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> EmailDnsSpec {
    let domain = r.required(cx, "domain", |cx, f| {
        reader::string(cx, f).map(|d| d.trim_end_matches('.').to_ascii_lowercase())
    });
    let selectors = r.optional(cx, "dkim_selectors", |cx, f| {
        read_strings(cx, f, "an array of DKIM selectors like [\"google\"]")
    });
    let dns_server = optional_string(cx, r, stand_ins, "dns_server");
    EmailDnsSpec {
        domain: stand_ins.req("domain", domain, String::new()),
        dkim_selectors: stand_ins.or("dkim_selectors", selectors, Vec::new()),
        dns_server,
    }
}

fn read_exposed_secrets(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    stand_ins: &mut StandIns,
) -> Option<ExposedSecretsSpec> {
    let url = audit_url(cx, r, stand_ins)?;
    let max_files = r.optional(cx, "max_files", |cx, f| {
        read_count(cx, f, "an integer from 1 to 1000")
    });
    let max_file_bytes = r.optional(cx, "max_file_bytes", |cx, f| {
        read_count(cx, f, "a number of bytes from 1 to 67108864")
    });
    let ca_file = optional_string(cx, r, stand_ins, "ca_file");
    Some(ExposedSecretsSpec {
        url,
        max_files: stand_ins.or("max_files", max_files, spec::DEFAULT_SECRETS_MAX_FILES),
        max_file_bytes: stand_ins.or(
            "max_file_bytes",
            max_file_bytes,
            spec::DEFAULT_SECRETS_MAX_FILE_BYTES,
        ),
        ca_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key lists used in "`url` is not a key of a tcp check" messages are
    /// exactly the keys each kind's reader reads.
    #[test]
    fn kind_key_lists_match_the_readers() {
        for kind in ProbeKind::ALL {
            let mut toml = format!(
                "version = 1\n[[check]]\nname = \"x\"\nkind = \"{}\"\nregions = [\"eu\"]\n",
                kind.as_str()
            );
            // A datetime is no key's type, so every key read gives a type error.
            for key in kind_keys(kind) {
                toml.push_str(&format!("{key} = 1979-05-27\n"));
            }
            toml.push_str("bogus = 1\n");
            let errors = crate::config::parse(&toml, std::path::Path::new("t.toml"))
                .expect_err("datetimes are invalid");
            let mut typed: Vec<_> = errors
                .0
                .iter()
                .filter(|e| e.message.starts_with("expected"))
                .map(|e| e.path.trim_start_matches("check[0]."))
                .collect();
            typed.sort_unstable();
            let mut want = kind_keys(kind).to_vec();
            want.sort_unstable();
            assert_eq!(typed, want, "{kind:?}: {errors}");
            assert_eq!(errors.0.len(), want.len() + 1, "{kind:?}: {errors}");
            assert!(errors.0.iter().any(|e| e.path == "check[0].bogus"));
        }
    }

    #[test]
    fn common_keys_are_read_for_every_kind() {
        let mut toml = String::from("version = 1\n[[check]]\n");
        for key in COMMON_KEYS {
            toml.push_str(&format!("{key} = 1979-05-27\n"));
        }
        let errors = crate::config::parse(&toml, std::path::Path::new("t.toml")).unwrap_err();
        let paths: Vec<_> = errors.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            COMMON_KEYS
                .iter()
                .map(|k| format!("check[0].{k}"))
                .collect::<Vec<_>>()
        );
    }
}
