//! `tls`: the site's certificate, through the `tls` probe — a trusted chain
//! for the name, and at least [`MIN_DAYS_LEFT`] days before it expires.
//!
//! One finding, "HTTPS certificate valid (21+ days left)": critical when no
//! handshake completes or the certificate is expired, untrusted or for
//! another name; high when it is valid but expires within 21 days.

use vantage_proto::spec::TlsSpec;

use super::{AuditContext, Finding, Severity};
use crate::probe::tls::{rfc3339, verdict, TlsProbe};
use crate::probe::Probe;

/// Contract name of the check.
pub const CHECK: &str = "tls";

/// Fewest days a certificate may have left (Let's Encrypt renews at 30 days
/// left; 21 leaves a week for a renewal that failed silently).
pub const MIN_DAYS_LEFT: i64 = 21;

const TITLE: &str = "HTTPS certificate valid (21+ days left)";
const WHY: &str = "Browsers refuse a site whose certificate is expired, untrusted or for another name; one close to expiry is an outage waiting for a failed renewal.";
const FIX: &str = "Serve a certificate from a public CA covering the site's names with its full chain, and automate renewal (ACME) well before expiry.";

/// Runs the check. A host in `cx.resolve` is connected to at its address,
/// with the host name still sent as SNI and matched.
pub async fn run(spec: &TlsSpec, cx: &AuditContext) -> Vec<Finding> {
    let mut spec = spec.clone();
    if let Some(ip) = cx.resolve.get(&spec.host) {
        spec.server_name.get_or_insert_with(|| spec.host.clone());
        spec.host = ip.to_string();
    }
    let name = format!("{}:{}", spec.server_name(), spec.port);
    let probe = match TlsProbe::new(spec, cx.timeout, cx.egress.clone()) {
        Ok(probe) => probe,
        Err(e) => return vec![finding(false, Severity::Critical, vec![e.to_string()])],
    };
    let out = probe.run().await;
    let Some(facts) = &out.tls else {
        let why = out
            .error
            .as_ref()
            .map_or_else(|| "no certificate".to_owned(), ToString::to_string);
        return vec![finding(
            false,
            Severity::Critical,
            vec![format!("no TLS handshake with {name}: {why}")],
        )];
    };
    let mut evidence = vec![
        format!(
            "chain: {}",
            crate::oneshot::chain_status_name(facts.chain_status())
        ),
        format!(
            "expires {} ({} days left)",
            rfc3339(facts.not_after_unix),
            facts.days_left
        ),
        format!("subject: {}", facts.subject),
        format!("issuer: {}", facts.issuer),
        format!("protocol: {}", facts.protocol_version),
    ];
    if !facts.verify_error.is_empty() {
        evidence.push(format!("error: {}", facts.verify_error));
    }
    if let Err(e) = verdict(facts) {
        evidence.insert(0, e.message);
        return vec![finding(false, Severity::Critical, evidence)];
    }
    if facts.days_left < MIN_DAYS_LEFT {
        evidence.insert(
            0,
            format!(
                "expires in {} days (fewer than {MIN_DAYS_LEFT})",
                facts.days_left
            ),
        );
        return vec![finding(false, Severity::High, evidence)];
    }
    vec![finding(true, Severity::Critical, evidence)]
}

fn finding(passed: bool, severity: Severity, evidence: Vec<String>) -> Finding {
    Finding {
        check: CHECK,
        title: TITLE.to_owned(),
        passed,
        severity,
        evidence,
        why: WHY,
        fix: FIX,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::probe::testkit::{open, CaServer, Validity};

    fn cx(resolve: &[(&str, &str)]) -> AuditContext {
        AuditContext {
            timeout: Duration::from_secs(5),
            egress: open(),
            resolve: resolve
                .iter()
                .map(|(h, a)| ((*h).to_owned(), a.parse().unwrap()))
                .collect::<HashMap<_, _>>(),
        }
    }

    fn spec(server: &CaServer, host: &str) -> TlsSpec {
        TlsSpec {
            host: host.into(),
            port: server.port(),
            server_name: None,
            ca_file: server.ca_file(),
        }
    }

    #[tokio::test]
    async fn valid_expiring_and_untrusted_certificates() {
        let server = CaServer::start(&["site.test"], Validity::Current).await;
        let pinned = cx(&[("site.test", "127.0.0.1")]);
        let f = run(&spec(&server, "site.test"), &pinned).await;
        assert!(f[0].passed, "{f:?}");
        assert!(f[0].evidence[0] == "chain: valid", "{f:?}");

        // The name is checked even when connecting to an address.
        let f = run(
            &spec(&server, "other.test"),
            &cx(&[("other.test", "127.0.0.1")]),
        )
        .await;
        assert!(!f[0].passed);
        assert_eq!(f[0].severity, Severity::Critical);

        let expired = CaServer::start(&["site.test"], Validity::Expired).await;
        let f = run(&spec(&expired, "site.test"), &pinned).await;
        assert_eq!((f[0].passed, f[0].severity), (false, Severity::Critical));
        assert!(f[0].evidence.iter().any(|e| e == "chain: expired"), "{f:?}");

        let soon = CaServer::start(&["site.test"], Validity::ExpiresSoon).await;
        let f = run(&spec(&soon, "site.test"), &pinned).await;
        assert_eq!((f[0].passed, f[0].severity), (false, Severity::High));
        assert_eq!(f[0].evidence[0], "expires in 10 days (fewer than 21)");

        let refused = TlsSpec {
            host: "127.0.0.1".into(),
            port: crate::probe::testkit::closed_port().await.port(),
            server_name: None,
            ca_file: None,
        };
        let f = run(&refused, &cx(&[])).await;
        assert_eq!((f[0].passed, f[0].severity), (false, Severity::Critical));
        assert!(f[0].evidence[0].starts_with("no TLS handshake with 127.0.0.1:"));
    }
}
