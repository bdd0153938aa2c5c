//! `redirect`: plain HTTP goes to HTTPS, each alias host goes to the
//! canonical host, no chain is longer than `max_hops`, and no hop of any
//! chain goes from HTTPS back to HTTP.
//!
//! Four kinds of chain are followed, one request per hop: from
//! `http://HOST:http_port/` and `http://ALIAS:http_port/` (each must reach
//! HTTPS), from `https://ALIAS/` (the canonical URL's port) for each alias
//! (it must reach the canonical host), and from the canonical URL itself.
//! At most [`MAX_REDIRECTS`] hops are followed per chain.

use url::Url;
use vantage_proto::spec::{RedirectSpec, MAX_REDIRECTS};

use super::fetch::{Chain, Fetcher};
use super::{not_run, AuditContext, Finding, Item, Severity};
use crate::probe::http::{is_redirect, redact};

const CHECK: &str = "redirect";

/// Body bytes read at the end of a chain: only the status matters.
const BODY_LIMIT: usize = 0;

const TO_HTTPS: Item = Item {
    title: "HTTP redirects to HTTPS",
    severity: Severity::High,
    why: "Visitors who type the bare domain or follow an old http:// link reach the site over plain HTTP, where anyone on the network can read or change the page and steal cookies.",
    fix: "Answer every plain-HTTP request with a 301 (or 308) to the same path on https://, and add HSTS so browsers skip the plain-HTTP step next time.",
};

const TO_CANONICAL: Item = Item {
    title: "Alias redirects to the canonical host",
    severity: Severity::Medium,
    why: "A site served under two names splits cookies, sessions and search ranking between them, and each name needs its own certificate and security headers.",
    fix: "Redirect every request to the alias (301, same path) to the canonical https:// host.",
};

const CHAIN_LENGTH: Item = Item {
    title: "Redirect chains are short",
    severity: Severity::Low,
    why: "Each extra redirect costs a round trip (and often a new TLS handshake) before the first byte of the page.",
    fix: "Redirect straight to the final https:// URL on the canonical host in one hop.",
};

const NO_DOWNGRADE: Item = Item {
    title: "No HTTPS to HTTP downgrade in redirects",
    severity: Severity::High,
    why: "A redirect from https:// to http:// sends the visitor (and any cookie without Secure) over plain HTTP, where an attacker can intercept or rewrite the rest of the chain.",
    fix: "Make every Location point at an https:// URL; redirect aliases directly to the canonical https:// host, never through http://.",
};

/// Runs the `redirect` check: one finding for HTTP→HTTPS, one per alias, one
/// for chain length and one for downgrades.
pub async fn run(spec: &RedirectSpec, cx: &AuditContext) -> Vec<Finding> {
    let fetcher = match Fetcher::new(cx, spec.ca_file.as_deref()) {
        Ok(f) => f,
        Err(e) => return vec![not_run(CHECK, e.to_string())],
    };
    let deadline = cx.deadline();
    let canonical = spec.url.host_str().unwrap_or_default().to_ascii_lowercase();
    let follow = |url: Url| {
        let (fetcher, deadline) = (&fetcher, &deadline);
        async move {
            fetcher
                .follow(&url, MAX_REDIRECTS, BODY_LIMIT, deadline)
                .await
        }
    };

    let mut findings = Vec::new();
    let mut chains = Vec::new();

    // Plain HTTP, to the canonical host and to each alias: people type
    // either, and old links use both.
    let mut passed = true;
    let mut evidence = Vec::new();
    let mut hosts = vec![spec.url.clone()];
    for alias in &spec.aliases {
        let mut url = spec.url.clone();
        if url.set_host(Some(alias)).is_ok() {
            hosts.push(url);
        }
    }
    for host in hosts {
        let chain = follow(plain_start(&host, spec.http_port)).await;
        let reached_https = completed(&chain).is_some_and(|end| end.scheme() == "https");
        passed &= reached_https && !chain.hops.is_empty();
        evidence.push(chain.describe());
        if chain.hops.is_empty() && chain.end.is_ok() {
            evidence.push("plain HTTP is answered without a redirect".into());
        }
        chains.push(chain);
    }
    findings.push(TO_HTTPS.judge(CHECK, passed, evidence));

    for alias in &spec.aliases {
        let mut start = spec.url.clone();
        start.set_path("/");
        start.set_query(None);
        if start.set_host(Some(alias)).is_err() {
            let mut f =
                TO_CANONICAL.judge(CHECK, false, vec![format!("{alias:?} is not a host name")]);
            f.title = format!("{alias} redirects to {canonical}");
            findings.push(f);
            continue;
        }
        let chain = follow(start).await;
        let arrived = completed(&chain).is_some_and(|end| {
            end.scheme() == "https"
                && end.host_str().map(str::to_ascii_lowercase) == Some(canonical.clone())
        });
        let mut f = TO_CANONICAL.judge(
            CHECK,
            arrived && !chain.hops.is_empty(),
            vec![chain.describe()],
        );
        f.title = format!("{alias} redirects to {canonical}");
        findings.push(f);
        chains.push(chain);
    }

    chains.push(follow(spec.url.clone()).await);
    findings.push(chain_length(&chains, spec.max_hops));
    findings.push(downgrades(&chains));
    findings
}

/// `http://HOST:http_port/` for the canonical URL.
fn plain_start(canonical: &Url, http_port: u16) -> Url {
    let mut url = canonical.clone();
    // http and https are both "special" schemes: switching cannot fail.
    let _ = url.set_scheme("http");
    let _ = url.set_port(Some(http_port));
    url.set_path("/");
    url.set_query(None);
    url.set_fragment(None);
    url
}

/// The URL a chain ended on, when it ended on a response that is not a
/// redirect (no error, not cut off at the hop limit).
fn completed(chain: &Chain) -> Option<&Url> {
    let end = chain.end.as_ref().ok()?;
    (!is_redirect(end.status)).then_some(&end.url)
}

fn chain_length(chains: &[Chain], max_hops: u32) -> Finding {
    let mut passed = true;
    let mut evidence = Vec::new();
    for chain in chains {
        let hops = chain.hops.len();
        let Some(start) = chain.urls().next() else {
            continue;
        };
        let cut = chain.end.as_ref().is_ok_and(|e| is_redirect(e.status));
        let count = if cut {
            format!("more than {hops} redirects (stopped following)")
        } else {
            format!("{hops} redirect(s)")
        };
        if hops > max_hops as usize || cut {
            passed = false;
        }
        evidence.push(format!("{}: {count}", redact(start)));
    }
    let mut f = CHAIN_LENGTH.judge(CHECK, passed, evidence);
    f.title = format!("Redirect chains have at most {max_hops} hop(s)");
    f
}

fn downgrades(chains: &[Chain]) -> Finding {
    let mut evidence = Vec::new();
    for chain in chains {
        let urls: Vec<&Url> = chain.urls().collect();
        for pair in urls.windows(2) {
            if pair[0].scheme() == "https" && pair[1].scheme() == "http" {
                evidence.push(format!(
                    "downgrade hop {} → {} in {}",
                    redact(pair[0]),
                    redact(pair[1]),
                    chain.describe()
                ));
            }
        }
    }
    let passed = evidence.is_empty();
    if passed {
        evidence.push(format!(
            "{} chain(s) followed, every hop after HTTPS stays on HTTPS",
            chains.len()
        ));
    }
    NO_DOWNGRADE.judge(CHECK, passed, evidence)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::testsite::{Site, SiteConfig, HOST, WWW};

    async fn audit(config: SiteConfig, max_hops: u32) -> Vec<Finding> {
        let site = Site::start(config).await;
        let spec = RedirectSpec {
            url: site.https_url("/"),
            http_port: site.http_port,
            aliases: vec![WWW.into()],
            max_hops,
            ca_file: site.ca_file(),
        };
        run(&spec, &site.context(Duration::from_secs(10))).await
    }

    fn find<'a>(findings: &'a [Finding], title: &str) -> &'a Finding {
        findings
            .iter()
            .find(|f| f.title.starts_with(title))
            .unwrap_or_else(|| panic!("no {title:?} in {findings:#?}"))
    }

    #[tokio::test]
    async fn a_good_site_passes_every_item() {
        let findings = audit(SiteConfig::good(), 3).await;
        assert_eq!(findings.len(), 4, "{findings:#?}");
        assert!(findings.iter().all(|f| f.passed), "{findings:#?}");
        let https = find(&findings, "HTTP redirects to HTTPS");
        assert!(
            https.evidence[0].contains("→ 301 → https://site.test:"),
            "{https:#?}"
        );
        // The alias over plain HTTP is followed too.
        assert!(
            https.evidence[1].starts_with(&format!("http://{WWW}:")),
            "{https:#?}"
        );
        assert_eq!(https.evidence.len(), 2, "{https:#?}");
        let alias = find(&findings, &format!("{WWW} redirects to {HOST}"));
        assert!(alias.evidence[0].ends_with("→ 200"), "{alias:#?}");
    }

    #[tokio::test]
    async fn plain_http_without_a_redirect_fails_high() {
        let config = SiteConfig {
            http_redirect: false,
            ..SiteConfig::good()
        };
        let findings = audit(config, 3).await;
        let f = find(&findings, "HTTP redirects to HTTPS");
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::High);
        assert!(
            f.evidence.iter().any(|e| e.contains("without a redirect")),
            "{f:#?}"
        );
        let failed: Vec<_> = findings.iter().filter(|f| !f.passed).collect();
        assert_eq!(failed.len(), 1, "only that item fails: {failed:#?}");
    }

    #[tokio::test]
    async fn an_alias_served_over_plain_http_fails_the_https_item() {
        let config = SiteConfig {
            www_http_served: true,
            ..SiteConfig::good()
        };
        let findings = audit(config, 3).await;
        let f = find(&findings, "HTTP redirects to HTTPS");
        assert!(!f.passed, "{f:#?}");
        assert!(
            f.evidence[1].starts_with(&format!("http://{WWW}:")),
            "{f:#?}"
        );
        assert_eq!(f.evidence[2], "plain HTTP is answered without a redirect");
        // The canonical host's plain HTTP and the alias over HTTPS are fine.
        assert!(
            f.evidence[0].contains("→ 301 → https://site.test:"),
            "{f:#?}"
        );
        assert!(find(&findings, WWW).passed, "{findings:#?}");
    }

    #[tokio::test]
    async fn a_downgrade_hop_fails_even_when_the_chain_ends_on_https() {
        let config = SiteConfig {
            downgrade_hop: true,
            ..SiteConfig::good()
        };
        let findings = audit(config, 3).await;
        let f = find(&findings, "No HTTPS to HTTP downgrade");
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::High);
        assert!(f.evidence[0].contains(&format!("https://{WWW}")), "{f:#?}");
        assert!(
            find(&findings, WWW).passed,
            "the alias still ends on the canonical host"
        );

        // The same chain has two hops: too long for max_hops = 1.
        let findings = audit(config, 1).await;
        let f = find(&findings, "Redirect chains have at most 1 hop");
        assert!(!f.passed);
        assert_eq!(f.severity, Severity::Low);
    }

    #[tokio::test]
    async fn an_unreachable_http_port_fails_with_the_error() {
        let site = Site::start(SiteConfig::good()).await;
        let closed = crate::probe::testkit::closed_port().await;
        let spec = RedirectSpec {
            url: site.https_url("/"),
            http_port: closed.port(),
            aliases: vec![],
            max_hops: 3,
            ca_file: site.ca_file(),
        };
        let findings = run(&spec, &site.context(Duration::from_secs(5))).await;
        let f = find(&findings, "HTTP redirects to HTTPS");
        assert!(!f.passed);
        assert!(f.evidence[0].contains("connect"), "{f:#?}");
    }
}
