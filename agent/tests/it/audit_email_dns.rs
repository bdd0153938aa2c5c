//! The `email_dns` audit check against a real DNS server (dnsmasq): a
//! well-configured domain passes every finding, and each defect of a bad
//! domain is found.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vantage_agent::audit::{email_dns, AuditContext, Finding, Severity};
use vantage_agent::egress::EgressPolicy;
use vantage_proto::spec::EmailDnsSpec;

use crate::dns::{mail_domain, rrs, Dnsmasq, Kind, Rr, DKIM_KEY};

const GOOD_SPF: &str = "v=spf1 ip4:192.0.2.0/24 include:_spf.good.test -all";

fn cx() -> AuditContext {
    AuditContext {
        timeout: Duration::from_secs(5),
        egress: Arc::new(EgressPolicy::unrestricted()),
        resolve: HashMap::new(),
    }
}

async fn audit(dns: &Dnsmasq, domain: &str, selectors: &[&str]) -> Vec<Finding> {
    let spec = EmailDnsSpec {
        domain: domain.into(),
        dkim_selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
        dns_server: Some(dns.server()),
    };
    email_dns::run(&spec, &cx()).await
}

fn failed(findings: &[Finding]) -> Vec<(&str, Severity)> {
    findings
        .iter()
        .filter(|f| !f.passed)
        .map(|f| (f.title.as_str(), f.severity))
        .collect()
}

fn evidence(findings: &[Finding], title: &str) -> String {
    findings
        .iter()
        .find(|f| f.title == title)
        .unwrap_or_else(|| panic!("no finding {title:?} in {findings:#?}"))
        .evidence
        .join("\n")
}

/// Every domain of the test, each one defect away from `good.test`.
fn records() -> Vec<(String, String, Kind)> {
    let mut all = mail_domain("good.test", GOOD_SPF);
    all.push((
        "_spf.good.test".into(),
        "v=spf1 ip4:198.51.100.0/24 ~all".into(),
        Kind::Txt,
    ));
    all.extend(mail_domain("open.test", "v=spf1 mx +all"));
    // 2 includes + 5 + 5 lookups = 12.
    all.extend(mail_domain(
        "many.test",
        "v=spf1 include:a.many.test include:b.many.test -all",
    ));
    for sub in ["a.many.test", "b.many.test"] {
        all.push((
            sub.into(),
            "v=spf1 a mx ptr exists:e.many.test a:h.many.test -all".into(),
            Kind::Txt,
        ));
    }
    all.extend(
        mail_domain("nodmarc.test", "v=spf1 mx -all")
            .into_iter()
            .filter(|(n, _, _)| !n.starts_with("_dmarc.")),
    );
    all.extend(
        mail_domain("monitor.test", "v=spf1 mx -all")
            .into_iter()
            .map(|(n, v, k)| {
                if n.starts_with("_dmarc.") {
                    (n, "v=DMARC1; p=none; rua=mailto:d@monitor.test".into(), k)
                } else {
                    (n, v, k)
                }
            }),
    );
    all.extend(
        mail_domain("nodkim.test", "v=spf1 mx -all")
            .into_iter()
            .filter(|(n, _, _)| !n.contains("._domainkey.")),
    );
    all.extend(
        mail_domain("nomx.test", "v=spf1 ip4:192.0.2.1 -all")
            .into_iter()
            .filter(|(_, _, k)| *k != Kind::Mx),
    );
    all.extend(mail_domain("weak.test", "v=spf1 mx ?all"));
    all.extend(mail_domain("dup.test", "v=spf1 mx -all"));
    all.push(("dup.test".into(), "v=spf1 a -all".into(), Kind::Txt));
    // Subdomains without their own DMARC record: good.test's (p=reject)
    // applies to mail.good.test; spt.test's sp=none to news.spt.test.
    let no_dmarc = |d: &str| {
        mail_domain(d, "v=spf1 mx -all")
            .into_iter()
            .filter(|(n, _, _)| !n.starts_with("_dmarc."))
            .collect::<Vec<_>>()
    };
    all.extend(no_dmarc("mail.good.test"));
    all.extend(no_dmarc("news.spt.test"));
    all.push((
        "_dmarc.spt.test".into(),
        "v=DMARC1; p=reject; sp=none".into(),
        Kind::Txt,
    ));
    all
}

#[tokio::test]
async fn email_dns_finds_every_defect_and_passes_the_good_domain() {
    let records = records();
    let mut served = rrs(&records);
    // A domain that handles no mail: null MX, SPF -all, p=reject, no DKIM.
    served.extend([
        Rr::Mx("nomail.test", ".", 0),
        Rr::Txt("nomail.test", "v=spf1 -all"),
        Rr::Txt("_dmarc.nomail.test", "v=DMARC1; p=reject"),
        Rr::Txt("s1._domainkey.good.test", DKIM_KEY),
    ]);
    let dns = Dnsmasq::start(&served);

    let good = audit(&dns, "good.test", &[]).await;
    assert_eq!(failed(&good), [], "{good:#?}");
    assert_eq!(good.len(), 9, "{good:#?}");
    assert!(evidence(&good, "SPF needs at most 10 DNS lookups").starts_with("1 DNS lookups"));
    assert!(evidence(&good, "DMARC record published").contains("policy: p=reject"));
    let dkim = evidence(&good, "DKIM key published");
    assert!(
        dkim.contains("selector1._domainkey.good.test: v=DKIM1"),
        "{dkim}"
    );
    assert!(evidence(&good, "MX records published").contains("MX 10 mx.good.test"));
    // Listed selectors: each must publish.
    let listed = audit(&dns, "good.test", &["s1", "selector1"]).await;
    assert_eq!(failed(&listed), []);
    let listed = audit(&dns, "good.test", &["s1", "missing"]).await;
    assert_eq!(failed(&listed), [("DKIM key published", Severity::High)]);
    assert!(
        evidence(&listed, "DKIM key published").contains("missing._domainkey.good.test: no record")
    );

    let open = audit(&dns, "open.test", &[]).await;
    assert_eq!(
        failed(&open),
        [("SPF does not pass every sender", Severity::Critical)]
    );
    assert!(evidence(&open, "SPF does not pass every sender").contains("ends in +all"));

    let many = audit(&dns, "many.test", &[]).await;
    assert_eq!(
        failed(&many),
        [("SPF needs at most 10 DNS lookups", Severity::High)]
    );
    let e = evidence(&many, "SPF needs at most 10 DNS lookups");
    assert!(e.starts_with("12 DNS lookups (limit 10)"), "{e}");
    assert!(e.contains("include:b.many.test: 5"), "{e}");

    let nodmarc = audit(&dns, "nodmarc.test", &[]).await;
    assert_eq!(
        failed(&nodmarc),
        [("DMARC record published", Severity::High)]
    );

    // Subdomains inherit their parent's record (a tree walk, as receivers
    // do), with the parent's sp= when it has one.
    let sub = audit(&dns, "mail.good.test", &[]).await;
    assert_eq!(failed(&sub), [], "{sub:#?}");
    let e = evidence(&sub, "DMARC record published");
    assert!(
        e.starts_with("no record at _dmarc.mail.good.test: the one of good.test applies"),
        "{e}"
    );
    let news = audit(&dns, "news.spt.test", &[]).await;
    assert_eq!(
        failed(&news),
        [(
            "DMARC policy enforces (quarantine or reject)",
            Severity::Medium
        )]
    );
    let e = evidence(&news, "DMARC policy enforces (quarantine or reject)");
    assert!(e.contains("news.spt.test gets sp=none"), "{e}");
    // Nothing at the subdomain nor its parent: both names are reported.
    let orphan = audit(&dns, "mail.nodmarc.test", &[]).await;
    let e = evidence(&orphan, "DMARC record published");
    assert!(
        e.contains("nor at a parent domain: _dmarc.nodmarc.test"),
        "{e}"
    );

    let monitor = audit(&dns, "monitor.test", &[]).await;
    assert_eq!(
        failed(&monitor),
        [(
            "DMARC policy enforces (quarantine or reject)",
            Severity::Medium
        )]
    );
    let e = evidence(&monitor, "DMARC policy enforces (quarantine or reject)");
    assert!(e.contains("p=none") && e.contains("monitoring only"), "{e}");

    let nodkim = audit(&dns, "nodkim.test", &[]).await;
    assert_eq!(failed(&nodkim), [("DKIM key published", Severity::Medium)]);
    assert!(evidence(&nodkim, "DKIM key published").contains("selectors tried: default, google"));

    let nomx = audit(&dns, "nomx.test", &[]).await;
    assert_eq!(failed(&nomx), [("MX records published", Severity::Medium)]);

    let weak = audit(&dns, "weak.test", &[]).await;
    assert_eq!(failed(&weak), [("SPF ends in -all or ~all", Severity::Low)]);

    let dup = audit(&dns, "dup.test", &[]).await;
    assert_eq!(failed(&dup), [("SPF record published", Severity::High)]);
    assert!(evidence(&dup, "SPF record published").starts_with("2 SPF records"));

    let nomail = audit(&dns, "nomail.test", &[]).await;
    assert_eq!(failed(&nomail), [], "{nomail:#?}");
    assert!(evidence(&nomail, "MX records published").contains("null MX"));
    assert!(evidence(&nomail, "DKIM key published").contains("none needed"));

    // A domain with nothing at all: SPF, DMARC, DKIM and MX all missing.
    let nothing = audit(&dns, "nothing.test", &[]).await;
    assert_eq!(
        failed(&nothing),
        [
            ("SPF record published", Severity::High),
            ("DMARC record published", Severity::High),
            ("DKIM key published", Severity::Medium),
            ("MX records published", Severity::Medium),
        ]
    );
}

#[tokio::test]
async fn an_unanswering_server_fails_within_the_timeout() {
    // A UDP port nobody answers on.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = EmailDnsSpec {
        domain: "good.test".into(),
        dkim_selectors: Vec::new(),
        dns_server: Some(socket.local_addr().unwrap().to_string()),
    };
    let cx = AuditContext {
        timeout: Duration::from_secs(2),
        ..cx()
    };
    let start = std::time::Instant::now();
    let findings = email_dns::run(&spec, &cx).await;
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(findings.iter().all(|f| !f.passed), "{findings:#?}");
    assert!(findings[0].evidence[0].contains("failed"), "{findings:#?}");

    let bad = EmailDnsSpec {
        dns_server: Some("not-an-ip".into()),
        ..spec
    };
    let findings = email_dns::run(&bad, &cx).await;
    assert_eq!(findings.len(), 1);
    assert!(findings[0].evidence[0].contains("not IP or IP:PORT"));
}
