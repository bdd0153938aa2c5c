//! `headers`: the security headers of a page (HSTS, `nosniff`, framing
//! protection, no server version) and no mixed content in its HTML.
//!
//! The page is fetched once (following at most 5 redirects, judged on the
//! final response) and its first MiB is scanned for `http://` URLs the page
//! loads.

use vantage_proto::spec::HeadersSpec;

use super::fetch::{Fetcher, Response, PAGE_LIMIT};
use super::html;
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::http::redact;

const CHECK: &str = "headers";

/// Redirects followed to reach the page (`/` → `/en/` and the like).
const MAX_REDIRECTS: u32 = 5;

/// Most mixed-content URLs listed in the evidence.
const MAX_LISTED: usize = 10;

const HSTS: Item = Item {
    title: "HSTS is set",
    severity: Severity::High,
    why: "Without Strict-Transport-Security a browser may still try plain HTTP first, and an attacker on the network can keep the visitor on HTTP (SSL stripping).",
    fix: "Send `Strict-Transport-Security: max-age=31536000; includeSubDomains` on every HTTPS response (raise max-age gradually if unsure).",
};

const NOSNIFF: Item = Item {
    title: "X-Content-Type-Options: nosniff",
    severity: Severity::Low,
    why: "Without nosniff a browser may guess a response's type and run an uploaded or user-controlled file as script or HTML.",
    fix: "Send `X-Content-Type-Options: nosniff` on every response.",
};

const FRAMING: Item = Item {
    title: "Framing is restricted",
    severity: Severity::Medium,
    why: "A page that any site may put in a frame can be overlaid with a decoy so visitors click its buttons unknowingly (clickjacking).",
    fix: "Send `Content-Security-Policy: frame-ancestors 'self'` (or 'none'), or `X-Frame-Options: DENY` / `SAMEORIGIN`.",
};

const VERSION_LEAK: Item = Item {
    title: "No server version in headers",
    severity: Severity::Low,
    why: "A version number in Server or X-Powered-By tells attackers which known vulnerabilities to try, without any probing.",
    fix: "Remove version numbers from response headers (nginx `server_tokens off;`, PHP `expose_php = Off`, drop X-Powered-By).",
};

const MIXED_CONTENT: Item = Item {
    title: "No mixed content",
    severity: Severity::Medium,
    why: "Scripts, styles or frames loaded over http:// on an https:// page are blocked by browsers (a broken page) or, where allowed, can be rewritten by anyone on the network.",
    fix: "Load every script, stylesheet, frame and image over https:// (or a relative URL).",
};

/// Response headers whose presence alone names a version.
const VERSION_HEADERS: [&str; 2] = ["x-aspnet-version", "x-aspnetmvc-version"];

/// Runs the `headers` check: one finding each for HSTS, nosniff, framing,
/// version leak and mixed content.
pub async fn run(spec: &HeadersSpec, cx: &AuditContext) -> Vec<Finding> {
    let fetcher = match Fetcher::new(cx, spec.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return vec![not_run(CHECK, e.to_string())],
    };
    let deadline = cx.deadline();
    let chain = fetcher
        .follow(&spec.url, MAX_REDIRECTS, PAGE_LIMIT, &deadline)
        .await;
    let page = match chain.end {
        Ok(page) => page,
        Err(e) => {
            return vec![not_run(
                CHECK,
                format!("fetching {}: {e}", redact(&spec.url)),
            )]
        }
    };
    vec![
        hsts(&page, spec),
        nosniff(&page),
        framing(&page),
        version_leak(&page),
        mixed_content(&page),
    ]
}

fn hsts(page: &Response, spec: &HeadersSpec) -> Finding {
    let min = spec.hsts_min_max_age;
    let mut f = HSTS.judge(CHECK, false, Vec::new());
    f.title = if spec.hsts_include_subdomains {
        format!("HSTS with max-age ≥ {min} and includeSubDomains")
    } else {
        format!("HSTS with max-age ≥ {min}")
    };
    if page.url.scheme() != "https" {
        f.evidence.push(format!(
            "the page is served over plain HTTP ({}), where browsers ignore HSTS",
            redact(&page.url)
        ));
        return f;
    }
    let Some(value) = page.header("strict-transport-security") else {
        f.evidence
            .push("no Strict-Transport-Security header".into());
        return f;
    };
    f.evidence
        .push(format!("Strict-Transport-Security: {value}"));
    let mut max_age = None;
    let mut subdomains = false;
    for directive in value.split(';').map(str::trim) {
        let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
        if name.trim().eq_ignore_ascii_case("max-age") {
            max_age = arg.trim().trim_matches('"').parse::<u64>().ok();
        } else if name.trim().eq_ignore_ascii_case("includesubdomains") {
            subdomains = true;
        }
    }
    match max_age {
        None => f.evidence.push("no valid max-age".into()),
        Some(age) if age < min => f.evidence.push(format!("max-age {age} is below {min}")),
        Some(_) if spec.hsts_include_subdomains && !subdomains => {
            f.evidence.push("includeSubDomains is missing".into())
        }
        Some(_) => f.passed = true,
    }
    f
}

fn nosniff(page: &Response) -> Finding {
    match page.header("x-content-type-options") {
        Some(v) => NOSNIFF.judge(
            CHECK,
            v.trim().eq_ignore_ascii_case("nosniff"),
            vec![format!("X-Content-Type-Options: {v}")],
        ),
        None => NOSNIFF.judge(
            CHECK,
            false,
            vec!["no X-Content-Type-Options header".into()],
        ),
    }
}

fn framing(page: &Response) -> Finding {
    let mut evidence = Vec::new();
    let mut passed = false;
    if let Some(v) = page.header("x-frame-options") {
        evidence.push(format!("X-Frame-Options: {v}"));
        let v = v.trim();
        passed |= v.eq_ignore_ascii_case("deny") || v.eq_ignore_ascii_case("sameorigin");
    }
    for csp in page.headers.get_all("content-security-policy") {
        let csp = String::from_utf8_lossy(csp.as_bytes());
        let ancestors = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.to_ascii_lowercase().starts_with("frame-ancestors"));
        if let Some(directive) = ancestors {
            evidence.push(format!("Content-Security-Policy: … {directive} …"));
            passed = true;
        }
    }
    if evidence.is_empty() {
        evidence.push("neither X-Frame-Options nor CSP frame-ancestors".into());
    }
    FRAMING.judge(CHECK, passed, evidence)
}

fn version_leak(page: &Response) -> Finding {
    let mut leaks = Vec::new();
    let mut seen = Vec::new();
    for name in ["server", "x-powered-by"] {
        for value in page.headers.get_all(name) {
            let value = String::from_utf8_lossy(value.as_bytes());
            seen.push(format!("{name}: {value}"));
            if names_a_version(&value) {
                leaks.push(format!("{name}: {value}"));
            }
        }
    }
    for name in VERSION_HEADERS {
        if let Some(v) = page.header(name) {
            leaks.push(format!("{name}: {v}"));
        }
    }
    let passed = leaks.is_empty();
    let evidence = match (passed, seen.is_empty()) {
        (false, _) => leaks,
        (true, true) => vec!["no Server or X-Powered-By header".into()],
        (true, false) => seen,
    };
    VERSION_LEAK.judge(CHECK, passed, evidence)
}

/// Whether a header value carries a version number: `product/1...` or a
/// dotted number (`nginx/1.25.3`, `PHP/8.1`, `Apache 2.4.1`).
fn names_a_version(value: &str) -> bool {
    let b = value.as_bytes();
    b.windows(2).any(|w| w[0] == b'/' && w[1].is_ascii_digit())
        || b.windows(3)
            .any(|w| w[0].is_ascii_digit() && w[1] == b'.' && w[2].is_ascii_digit())
}

/// Whether `url` is plain `http://`.
fn is_http(url: &str) -> bool {
    url.len() >= 7 && url[..7].eq_ignore_ascii_case("http://")
}

/// `http://` URLs loaded by CSS in the page (`<style>` elements and `style`
/// attributes): `@import` (a stylesheet: active) and `url()` (images and
/// fonts: passive). Evidence text and whether it is active.
fn css_http_urls(body: &[u8]) -> Vec<(String, bool)> {
    static IMPORT: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r#"(?i-u)@import\s+(?:url\(\s*)?["']?(http://[^"')\s;]{1,2000})"#)
            .expect("valid regex")
    });
    static URL: std::sync::LazyLock<regex::bytes::Regex> = std::sync::LazyLock::new(|| {
        regex::bytes::Regex::new(r#"(?i-u)url\(\s*["']?(http://[^"')\s]{1,2000})"#)
            .expect("valid regex")
    });
    let mut out = Vec::new();
    let mut imported = std::collections::HashSet::new();
    for c in IMPORT.captures_iter(body) {
        let url = String::from_utf8_lossy(&c[1]).into_owned();
        imported.insert(url.clone());
        out.push((format!("CSS @import {url}"), true));
    }
    for c in URL.captures_iter(body) {
        let url = String::from_utf8_lossy(&c[1]).into_owned();
        // `@import url(http://...)` is listed once, as an import.
        if !imported.contains(&url) {
            out.push((format!("CSS url({url})"), false));
        }
    }
    out
}

fn mixed_content(page: &Response) -> Finding {
    let mut f = MIXED_CONTENT.judge(CHECK, true, Vec::new());
    if page.url.scheme() != "https" {
        f.passed = false;
        f.evidence.push(format!(
            "the page itself is served over plain HTTP ({})",
            redact(&page.url)
        ));
        return f;
    }
    let tags = html::start_tags(
        &page.body,
        &[
            "script", "link", "img", "iframe", "source", "video", "audio", "object", "embed",
            "base",
        ],
    );
    let mut active = false;
    let mut found = Vec::new();
    for tag in &tags {
        // The attributes that load something, and whether what they load
        // is "active" (can change the page: scripts, styles, frames,
        // plugins) or "passive" (images, media).
        let attrs: &[(&str, bool)] = match tag.name.as_str() {
            "link" => {
                let rel = tag.attr("rel").unwrap_or_default().to_ascii_lowercase();
                if !rel.split_ascii_whitespace().any(|r| r == "stylesheet") {
                    continue;
                }
                &[("href", true)]
            }
            "img" | "source" => &[("src", false), ("srcset", false)],
            "video" => &[("src", false), ("poster", false)],
            "audio" => &[("src", false)],
            "object" => &[("data", true)],
            // Every relative URL on the page resolves against it.
            "base" => &[("href", true)],
            _ => &[("src", true)],
        };
        for (attr, is_active) in attrs {
            let Some(value) = tag.attr(attr).map(str::trim) else {
                continue;
            };
            let mut urls: Vec<&str> = if *attr == "srcset" {
                // "URL 1x, URL 2x": the first word of each candidate.
                value
                    .split(',')
                    .filter_map(|c| c.split_ascii_whitespace().next())
                    .collect()
            } else {
                vec![value]
            };
            urls.retain(|u| is_http(u));
            if !urls.is_empty() {
                active |= is_active;
                found.push(format!("<{} {attr}=\"{value}\">", tag.name));
            }
        }
    }
    for (css, is_active) in css_http_urls(&page.body) {
        active |= is_active;
        found.push(css);
    }
    if found.is_empty() {
        let mut note = format!(
            "no http:// script, stylesheet, frame, media, base or CSS url() among {} tag(s)",
            tags.len()
        );
        if page.truncated {
            note.push_str(&format!(" (first {PAGE_LIMIT} bytes scanned)"));
        }
        f.evidence.push(note);
        return f;
    }
    f.passed = false;
    // Images alone are "passive" mixed content: shown with a warning.
    f.severity = if active {
        Severity::Medium
    } else {
        Severity::Low
    };
    let total = found.len();
    f.evidence.extend(found.into_iter().take(MAX_LISTED));
    if total > MAX_LISTED {
        f.evidence
            .push(format!("… and {} more", total - MAX_LISTED));
    }
    f
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig};

    async fn audit(config: SiteConfig) -> Vec<Finding> {
        let site = Site::start(config).await;
        let spec = HeadersSpec {
            url: site.https_url("/"),
            hsts_min_max_age: 15_552_000,
            hsts_include_subdomains: true,
            ca_file: site.ca_file(),
        };
        run(&spec, &site.context(Duration::from_secs(5))).await
    }

    fn failed(findings: &[Finding]) -> Vec<&Finding> {
        findings.iter().filter(|f| !f.passed).collect()
    }

    #[tokio::test]
    async fn a_good_site_passes_every_item() {
        let findings = audit(SiteConfig::good()).await;
        assert_eq!(findings.len(), 5, "{findings:#?}");
        assert!(failed(&findings).is_empty(), "{findings:#?}");
    }

    #[tokio::test]
    async fn missing_hsts_fails_high() {
        let findings = audit(SiteConfig {
            hsts: false,
            ..SiteConfig::good()
        })
        .await;
        let failed = failed(&findings);
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert!(failed[0].title.starts_with("HSTS"));
        assert_eq!(failed[0].severity, Severity::High);
        assert_eq!(failed[0].evidence, ["no Strict-Transport-Security header"]);
    }

    #[tokio::test]
    async fn a_version_in_server_fails_low() {
        let findings = audit(SiteConfig {
            server_version: true,
            ..SiteConfig::good()
        })
        .await;
        let failed = failed(&findings);
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert_eq!(failed[0].title, VERSION_LEAK.title);
        assert_eq!(failed[0].severity, Severity::Low);
        assert_eq!(failed[0].evidence, ["server: nginx/1.25.3"]);
    }

    #[tokio::test]
    async fn mixed_script_and_image_fail_medium_but_links_do_not() {
        let findings = audit(SiteConfig {
            mixed_content: true,
            ..SiteConfig::good()
        })
        .await;
        let failed = failed(&findings);
        assert_eq!(failed.len(), 1, "{failed:#?}");
        assert_eq!(failed[0].title, MIXED_CONTENT.title);
        assert_eq!(failed[0].severity, Severity::Medium);
        assert_eq!(
            failed[0].evidence,
            [
                "<script src=\"http://cdn.site.test/lib.js\">",
                "<img src=\"http://cdn.site.test/banner.png\">"
            ]
        );
    }

    #[test]
    fn media_srcset_base_and_css_urls_count_as_mixed_content() {
        let page = |body: &str| {
            let mut r = response(&[]);
            r.body = body.as_bytes().to_vec();
            mixed_content(&r)
        };
        // Passive only: images and media from srcset, <source>, <video
        // poster> and CSS url().
        let f = page(concat!(
            r#"<img src="/a.png" srcset="/a-1x.png 1x, http://cdn.test/a-2x.png 2x">"#,
            r#"<picture><source srcset="http://cdn.test/b.webp"></picture>"#,
            r#"<video poster="http://cdn.test/p.jpg"><source src="/v.mp4"></video>"#,
            r#"<style>body { background: URL( 'http://cdn.test/bg.png' ) }</style>"#,
            r#"<div style="background-image:url(http://cdn.test/d.png)"></div>"#,
        ));
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Low, "{f:#?}");
        assert_eq!(
            f.evidence,
            [
                r#"<img srcset="/a-1x.png 1x, http://cdn.test/a-2x.png 2x">"#,
                r#"<source srcset="http://cdn.test/b.webp">"#,
                r#"<video poster="http://cdn.test/p.jpg">"#,
                "CSS url(http://cdn.test/bg.png)",
                "CSS url(http://cdn.test/d.png)",
            ]
        );
        // Active: a <base> that turns every relative URL into http://, a
        // CSS @import, an <object>.
        let f = page(r#"<base href="http://site.test/"><script src="/app.js"></script>"#);
        assert_eq!(
            (f.passed, f.severity, f.evidence.clone()),
            (
                false,
                Severity::Medium,
                vec![r#"<base href="http://site.test/">"#.to_owned()]
            )
        );
        let f = page(r#"<style>@import url("http://cdn.test/x.css");</style>"#);
        assert_eq!(
            (f.severity, f.evidence.clone()),
            (
                Severity::Medium,
                vec!["CSS @import http://cdn.test/x.css".to_owned()]
            )
        );
        let f = page(r#"<object data="http://cdn.test/x.swf"></object>"#);
        assert_eq!(f.severity, Severity::Medium);
        // https:// and relative URLs everywhere: clean.
        let f = page(concat!(
            r#"<base href="https://site.test/"><img srcset="/a.png 1x, https://cdn.test/a.png 2x">"#,
            r#"<style>@import "https://cdn.test/x.css"; p { background: url(/bg.png) }</style>"#,
        ));
        assert!(f.passed, "{f:#?}");
    }

    fn response(headers: &[(&'static str, &'static str)]) -> Response {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        Response {
            url: "https://site.test/".parse().unwrap(),
            status: http::StatusCode::OK,
            headers: map,
            body: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn hsts_directives_are_judged_against_the_spec() {
        let spec = HeadersSpec {
            url: "https://site.test/".parse().unwrap(),
            hsts_min_max_age: 15_552_000,
            hsts_include_subdomains: true,
            ca_file: None,
        };
        let judged = |value: &'static str| {
            let f = hsts(&response(&[("strict-transport-security", value)]), &spec);
            (f.passed, f.evidence.last().cloned().unwrap_or_default())
        };
        assert!(judged("max-age=31536000; includeSubDomains; preload").0);
        assert!(judged("Max-Age=\"31536000\" ; INCLUDESUBDOMAINS").0);
        assert_eq!(
            judged("max-age=300; includeSubDomains"),
            (false, "max-age 300 is below 15552000".into())
        );
        assert_eq!(
            judged("max-age=31536000"),
            (false, "includeSubDomains is missing".into())
        );
        assert_eq!(
            judged("includeSubDomains"),
            (false, "no valid max-age".into())
        );
    }

    #[test]
    fn framing_is_restricted_by_either_header() {
        let judged = |h: &[(&'static str, &'static str)]| framing(&response(h)).passed;
        assert!(judged(&[("x-frame-options", "SAMEORIGIN")]));
        assert!(judged(&[(
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'"
        )]));
        assert!(!judged(&[("x-frame-options", "ALLOW-FROM https://x.test")]));
        assert!(!judged(&[(
            "content-security-policy",
            "default-src 'self'"
        )]));
        assert!(!judged(&[]));
    }

    #[test]
    fn version_numbers_are_told_from_product_names() {
        for leak in [
            "nginx/1.25.3",
            "PHP/8.1",
            "Apache/2.4.41 (Ubuntu)",
            "Express 4.18",
        ] {
            assert!(names_a_version(leak), "{leak}");
        }
        for fine in ["nginx", "cloudflare", "Express", "AmazonS3", "gws"] {
            assert!(!names_a_version(fine), "{fine}");
        }
    }
}
