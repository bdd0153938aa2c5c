//! `email_dns`: the mail DNS of a domain — SPF, DMARC, DKIM and MX — read
//! with hickory-resolver from the spec's `dns_server` or the system's, all
//! lookups within the context's timeout.
//!
//! Findings, in order (later SPF and DMARC findings only once the earlier
//! ones pass, so one mistake is reported once):
//!
//! | title | fails when | severity |
//! |---|---|---|
//! | SPF record published | no `v=spf1` TXT, or more than one | high |
//! | SPF record parses | a syntax error (receivers: permerror) | high |
//! | SPF needs at most 10 DNS lookups | `include`, `a`, `mx`, `ptr`, `exists`, `redirect` counted through every include; or an include without a record, a loop | high |
//! | SPF does not pass every sender | `+all` (or bare `all`), also through an include or redirect | critical |
//! | SPF ends in -all or ~all | `?all`, or no `all` at all | low |
//! | DMARC record published | no `v=DMARC1` at `_dmarc.DOMAIN`, several, no valid `p=` | high |
//! | DMARC policy enforces | `p=none` (monitoring only) | medium |
//! | DKIM key published | a listed selector without `v=DKIM1` and a non-empty `p=`; without a list, none of [`COMMON_DKIM_SELECTORS`] (unless a null MX says the domain has no mail) | high (listed) / medium |
//! | MX records published | no MX (a null MX `.` passes: the domain takes no mail) | medium |
//!
//! A lookup that fails (timeout, SERVFAIL) fails the finding it feeds, with
//! the error as evidence: the audit could not show the record is right.

pub mod spf;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::Resolver;
use tokio::time::Instant;
use vantage_proto::spec::EmailDnsSpec;

use super::{AuditContext, Finding, Severity};
use spf::Qualifier;

/// Contract name of the check.
pub const CHECK: &str = "email_dns";

/// Most DNS lookups an SPF evaluation may need (RFC 7208 §4.6.4).
pub const MAX_SPF_LOOKUPS: usize = 10;

/// Deepest chain of includes and redirects followed. Within the 10-lookup
/// limit a valid chain is never deeper than 10.
const MAX_SPF_DEPTH: usize = 10;

/// Most records fetched while counting. A record within the limit needs at
/// most 10; the slack lets the evidence say how far past it a record goes,
/// while a hostile tree of includes costs at most this many lookups.
const MAX_SPF_RECORDS: usize = 30;

/// Selectors tried when the spec lists none (cPanel, Google Workspace,
/// Microsoft 365, Mailchimp/Mandrill, and common hand-picked names).
pub const COMMON_DKIM_SELECTORS: [&str; 10] = [
    "default",
    "google",
    "selector1",
    "selector2",
    "k1",
    "k2",
    "mail",
    "dkim",
    "s1",
    "s2",
];

/// Longest wait for one DNS answer (the whole check still ends at the
/// context's timeout); two attempts, so a lost UDP packet is retried.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

const SPF_WHY: &str = "Receivers check SPF to tell your mail servers from forgers; without one valid record, mail from your domain cannot be verified and is more often junked or spoofed.";
const SPF_FIX: &str = "Publish exactly one TXT record at the domain starting with `v=spf1`, listing your senders and ending in `-all` or `~all` (merge duplicates into one).";
const SPF_PARSE_FIX: &str = "Correct the term named in the evidence (RFC 7208 syntax): receivers treat a record with an error as a permanent error, as if it failed.";
const LOOKUPS_WHY: &str = "Receivers stop after 10 DNS lookups (RFC 7208 §4.6.4) and return a permanent error, so even your legitimate mail stops passing SPF.";
const LOOKUPS_FIX: &str = "Remove unused includes, replace `a`/`mx`/`ptr` with `ip4:`/`ip6:` ranges or flatten includes until the total is 10 or less; every include must name a domain that publishes SPF.";
const PASS_ALL_WHY: &str = "`+all` (or a bare `all`) tells receivers that every server on the internet may send as your domain: SPF then vouches for forged mail.";
const PASS_ALL_FIX: &str = "End the record in `-all` (or `~all` while you check your senders), and include no record that ends in `+all`.";
const WEAK_ALL_WHY: &str = "`?all`, or no `all`, leaves mail from unlisted servers neutral: SPF gives receivers no signal against forgers.";
const WEAK_ALL_FIX: &str =
    "End the record in `~all` or `-all` once every legitimate sender is listed.";
const DMARC_WHY: &str = "DMARC tells receivers what to do with mail that fails SPF and DKIM for your domain, and where to send reports; without it, forged mail is left to each receiver's guess.";
const DMARC_FIX: &str = "Publish a TXT record at `_dmarc.<domain>` such as `v=DMARC1; p=quarantine; rua=mailto:dmarc@<domain>`.";
const DMARC_POLICY_WHY: &str = "`p=none` only asks for reports (monitoring only): forged mail from your domain is still delivered.";
const DMARC_POLICY_FIX: &str =
    "Once the reports show your own mail passes, move to `p=quarantine`, then `p=reject`.";
const DKIM_WHY: &str = "A DKIM signature proves a message came from your domain unaltered; with DMARC it keeps forwarded mail passing when SPF breaks.";
const DKIM_FIX: &str = "Publish your mail provider's DKIM key as a TXT record at `<selector>._domainkey.<domain>` (`v=DKIM1; k=rsa; p=...`), or name your provider's selector with --dkim-selector.";
const MX_WHY: &str = "Without MX records, replies and bounces to your domain cannot be delivered, and some receivers refuse mail from a domain that cannot receive any.";
const MX_FIX: &str = "Publish MX records for your mail servers, or a null MX (`0 .`, RFC 7505) if the domain deliberately handles no mail.";
const RESOLVER_WHY: &str =
    "The mail DNS could not be read, so none of SPF, DMARC, DKIM or MX could be verified.";
const RESOLVER_FIX: &str = "Give a reachable name server with --dns-server IP[:PORT], or fix the system's resolver configuration.";

/// Runs the check: every finding about `spec.domain`'s mail DNS.
pub async fn run(spec: &EmailDnsSpec, cx: &AuditContext) -> Vec<Finding> {
    let domain = spec.domain.trim_end_matches('.').to_ascii_lowercase();
    // A name server the check names is a place the agent connects to, so
    // the egress policy applies to it as to any target; the system's own
    // resolver is the agent's infrastructure and is not checked.
    let allowed = match spec.dns_server.as_deref().map(parse_dns_server) {
        Some(Ok(addr)) => cx
            .egress
            .check(addr.ip())
            .map_err(|denied| format!("dns_server: {denied}")),
        _ => Ok(()),
    };
    let dns = match allowed.and_then(|()| Dns::new(spec.dns_server.as_deref(), cx.timeout)) {
        Ok(dns) => dns,
        Err(e) => {
            return vec![finding(
                "Mail DNS can be looked up",
                false,
                Severity::High,
                vec![e],
                RESOLVER_WHY,
                RESOLVER_FIX,
            )]
        }
    };
    let (mut findings, dmarc, dkim, mx) = tokio::join!(
        spf_findings(&dns, &domain),
        dmarc_findings(&dns, &domain),
        dkim_lookups(&dns, &domain, &spec.dkim_selectors),
        mx_lookup(&dns, &domain),
    );
    findings.extend(dmarc);
    let null_mx = matches!(mx, Mx::Null);
    findings.push(dkim_finding(&domain, &spec.dkim_selectors, dkim, null_mx));
    findings.push(mx_finding(&domain, mx));
    findings
}

/// Parses a `dns_server`: `IP` (port 53), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not IP or IP:PORT"))
}

fn finding(
    title: &str,
    passed: bool,
    severity: Severity,
    evidence: Vec<String>,
    why: &'static str,
    fix: &'static str,
) -> Finding {
    Finding {
        check: CHECK,
        title: title.to_owned(),
        passed,
        severity,
        evidence,
        why,
        fix,
    }
}

/// The answer to a TXT query.
enum Txt {
    /// The strings of each record (chunks joined).
    Found(Vec<String>),
    /// No such name, or no TXT record there.
    Missing,
    /// The lookup failed (timeout, SERVFAIL, refused ...).
    Failed(String),
}

/// The resolver and the deadline of the whole check.
struct Dns {
    resolver: Resolver<TokioRuntimeProvider>,
    deadline: Instant,
}

impl Dns {
    fn new(server: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match server {
            Some(s) => {
                let addr = parse_dns_server(s).map_err(|e| format!("dns_server: {e}"))?;
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                ns.connections = vec![udp, tcp];
                Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
            }
            None => Resolver::builder(provider)
                .map_err(|e| format!("reading the system's DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = QUERY_TIMEOUT.min(timeout);
        opts.attempts = 2;
        let resolver = builder
            .build()
            .map_err(|e| format!("starting the resolver: {e}"))?;
        Ok(Dns {
            resolver,
            deadline: Instant::now() + timeout,
        })
    }

    /// The TXT records of `name` (a fully qualified name is queried, so no
    /// search domain is appended).
    async fn txt(&self, name: &str) -> Txt {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match tokio::time::timeout_at(self.deadline, self.resolver.txt_lookup(fqdn)).await {
            Err(_) => Txt::Failed("no answer before the audit's timeout".into()),
            Ok(Err(e)) if e.is_no_records_found() => Txt::Missing,
            Ok(Err(e)) => Txt::Failed(e.to_string()),
            Ok(Ok(lookup)) => {
                let texts: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => {
                            let bytes: Vec<u8> = txt
                                .txt_data
                                .iter()
                                .flat_map(|c| c.iter().copied())
                                .collect();
                            Some(String::from_utf8_lossy(&bytes).into_owned())
                        }
                        _ => None,
                    })
                    .collect();
                if texts.is_empty() {
                    Txt::Missing
                } else {
                    Txt::Found(texts)
                }
            }
        }
    }
}

/// The SPF record of a domain, as far as it could be read.
#[derive(Debug, Clone)]
enum Spf {
    Record(String, Result<spf::Record, spf::SpfError>),
    Missing,
    Several(Vec<String>),
    Failed(String),
}

/// Where SPF records come from: DNS, or a map in tests.
trait SpfSource {
    async fn spf(&self, domain: &str) -> Spf;
}

impl SpfSource for Dns {
    async fn spf(&self, domain: &str) -> Spf {
        match self.txt(domain).await {
            Txt::Missing => Spf::Missing,
            Txt::Failed(e) => Spf::Failed(e),
            Txt::Found(texts) => {
                let mut records: Vec<String> =
                    texts.into_iter().filter(|t| spf::is_spf(t)).collect();
                match records.len() {
                    0 => Spf::Missing,
                    1 => {
                        let text = records.remove(0);
                        let parsed = spf::parse(&text);
                        Spf::Record(text, parsed)
                    }
                    _ => Spf::Several(records),
                }
            }
        }
    }
}

/// What counting the lookups of a record through its includes found.
#[derive(Debug, Default, PartialEq)]
struct Count {
    /// Lookups counted.
    total: usize,
    /// Where they come from: `include:x: 4` ...
    parts: Vec<String>,
    /// Reasons receivers would return a permanent error, or why the count
    /// could not be finished.
    problems: Vec<String>,
    /// Includes (or redirects) whose own record passes everyone.
    passes_all: Vec<String>,
    /// The `all` that ends evaluation of the domain (through `redirect=`).
    effective_all: Option<Qualifier>,
}

/// One record to fetch during counting.
struct Pending {
    domain: String,
    /// `include:x` or `redirect=x`, for evidence.
    via: String,
    depth: usize,
    /// Domains from the root to here (loop detection).
    path: Vec<String>,
    /// Whether a match of this record authorises the sender (a `+include`,
    /// or a redirect).
    passes_through: bool,
    /// Whether it is on the root's redirect chain (its `all` is the root's).
    redirect_chain: bool,
}

/// Counts the lookups `root` (the record of `domain`) needs, following
/// includes and redirects depth first within the bounds.
async fn count_lookups(src: &impl SpfSource, domain: &str, root: &spf::Record) -> Count {
    let mut count = Count {
        total: root.lookups(),
        effective_all: root.all(),
        ..Count::default()
    };
    count.parts.push(format!("{domain}: {}", root.lookups()));
    let mut stack = Vec::new();
    let root_path = [domain.to_owned()];
    push_children(&mut stack, &mut count, root, &root_path, 1, (true, true));
    let mut fetched = 0;
    while let Some(item) = stack.pop() {
        if item.path.contains(&item.domain) {
            count
                .problems
                .push(format!("{} loops back to {}", item.via, item.domain));
            continue;
        }
        if item.depth > MAX_SPF_DEPTH {
            count.problems.push(format!(
                "{} is nested more than {MAX_SPF_DEPTH} deep",
                item.via
            ));
            continue;
        }
        if fetched == MAX_SPF_RECORDS {
            count.problems.push(format!(
                "stopped after {MAX_SPF_RECORDS} records: the total is at least {}",
                count.total
            ));
            break;
        }
        fetched += 1;
        let record = match src.spf(&item.domain).await {
            Spf::Record(_, Ok(record)) => record,
            Spf::Record(_, Err(e)) => {
                count.problems.push(format!("{}: {e}", item.via));
                continue;
            }
            Spf::Missing => {
                count
                    .problems
                    .push(format!("{}: no SPF record there (permerror)", item.via));
                continue;
            }
            Spf::Several(_) => {
                count
                    .problems
                    .push(format!("{}: several SPF records (permerror)", item.via));
                continue;
            }
            Spf::Failed(e) => {
                count
                    .problems
                    .push(format!("{}: lookup failed: {e}", item.via));
                continue;
            }
        };
        count.total += record.lookups();
        count
            .parts
            .push(format!("{}: {}", item.via, record.lookups()));
        if item.redirect_chain {
            count.effective_all = record.all();
        }
        if item.passes_through && record.all() == Some(Qualifier::Pass) {
            count.passes_all.push(item.via.clone());
        }
        let mut path = item.path.clone();
        path.push(item.domain.clone());
        let parent = (item.passes_through, item.redirect_chain);
        push_children(
            &mut stack,
            &mut count,
            &record,
            &path,
            item.depth + 1,
            parent,
        );
    }
    count
}

/// Queues the includes and the applied redirect of `record` (in reverse, so
/// they are visited in written order). Macro targets are counted but not
/// followed: they depend on the sender.
///
/// `(passes, chain)` describe `record`: whether its match authorises the
/// sender, and whether it is on the root's redirect chain. A `+include`
/// inherits the first, a redirect both.
fn push_children(
    stack: &mut Vec<Pending>,
    count: &mut Count,
    record: &spf::Record,
    path: &[String],
    depth: usize,
    (passes, chain): (bool, bool),
) {
    let mut children = Vec::new();
    for (qualifier, target) in record.includes() {
        let through = passes && qualifier == Qualifier::Pass;
        children.push((format!("include:{target}"), target, through, false));
    }
    if let Some(target) = record.applied_redirect() {
        children.push((format!("redirect={target}"), target, passes, chain));
    }
    for (via, target, passes_through, chain) in children.into_iter().rev() {
        if target.contains('%') {
            count
                .parts
                .push(format!("{via}: has macros, counted but not followed"));
            continue;
        }
        stack.push(Pending {
            domain: target.to_owned(),
            via,
            depth,
            path: path.to_vec(),
            passes_through,
            redirect_chain: chain,
        });
    }
}

async fn spf_findings(src: &impl SpfSource, domain: &str) -> Vec<Finding> {
    let published = |passed: bool, evidence: Vec<String>| {
        finding(
            "SPF record published",
            passed,
            Severity::High,
            evidence,
            SPF_WHY,
            SPF_FIX,
        )
    };
    let (text, parsed) = match src.spf(domain).await {
        Spf::Record(text, parsed) => (text, parsed),
        Spf::Missing => {
            return vec![published(
                false,
                vec![format!("no TXT record starting with v=spf1 at {domain}")],
            )]
        }
        Spf::Several(records) => {
            let mut evidence = vec![format!(
                "{} SPF records at {domain} (receivers: permerror)",
                records.len()
            )];
            evidence.extend(records);
            return vec![published(false, evidence)];
        }
        Spf::Failed(e) => {
            return vec![published(
                false,
                vec![format!("TXT lookup of {domain} failed: {e}")],
            )]
        }
    };
    let mut findings = vec![published(true, vec![text.clone()])];
    let record = match parsed {
        Ok(record) => {
            findings.push(finding(
                "SPF record parses",
                true,
                Severity::High,
                vec![format!("{} terms", record.directives.len())],
                SPF_WHY,
                SPF_PARSE_FIX,
            ));
            record
        }
        Err(e) => {
            findings.push(finding(
                "SPF record parses",
                false,
                Severity::High,
                vec![e.to_string()],
                SPF_WHY,
                SPF_PARSE_FIX,
            ));
            return findings;
        }
    };
    let count = count_lookups(src, domain, &record).await;

    let within = count.total <= MAX_SPF_LOOKUPS && count.problems.is_empty();
    let mut evidence = vec![format!(
        "{} DNS lookups (limit {MAX_SPF_LOOKUPS})",
        count.total
    )];
    evidence.extend(count.parts.iter().cloned());
    evidence.extend(count.problems.iter().cloned());
    findings.push(finding(
        "SPF needs at most 10 DNS lookups",
        within,
        Severity::High,
        evidence,
        LOOKUPS_WHY,
        LOOKUPS_FIX,
    ));

    let all_text = |q: Option<Qualifier>| match q {
        Some(q) => format!("ends in {}all", q.symbol()),
        None => "has no all mechanism".to_owned(),
    };
    let passes_everyone = count.effective_all == Some(Qualifier::Pass);
    let mut evidence = vec![format!("the record {}", all_text(count.effective_all))];
    if passes_everyone {
        evidence.push(format!("every server on the internet may send as {domain}"));
    }
    for via in &count.passes_all {
        evidence.push(format!("{via} ends in +all: any sender matches it"));
    }
    findings.push(finding(
        "SPF does not pass every sender",
        !passes_everyone && count.passes_all.is_empty(),
        Severity::Critical,
        evidence,
        PASS_ALL_WHY,
        PASS_ALL_FIX,
    ));
    if !passes_everyone {
        let strict = matches!(
            count.effective_all,
            Some(Qualifier::Fail | Qualifier::SoftFail)
        );
        let mut evidence = vec![format!("the record {}", all_text(count.effective_all))];
        if !strict {
            evidence.push("weak: unlisted senders get a neutral result".into());
        }
        findings.push(finding(
            "SPF ends in -all or ~all",
            strict,
            Severity::Low,
            evidence,
            WEAK_ALL_WHY,
            WEAK_ALL_FIX,
        ));
    }
    findings
}

/// The tags of a DMARC or DKIM record (`k=v; k=v`), names lower-cased.
fn tags(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter_map(|tag| tag.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn tag<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Most `_dmarc` names looked up for one domain: its own, then its parents
/// (the DMARCbis tree walk caps it at eight).
const MAX_DMARC_WALK: usize = 8;

/// The one DMARC record at `name`: `Ok(None)` when there is none, `Err`
/// with the evidence when the lookup failed or there are several.
async fn dmarc_record(dns: &Dns, name: &str) -> Result<Option<String>, Vec<String>> {
    let records: Vec<String> = match dns.txt(name).await {
        Txt::Found(texts) => texts
            .into_iter()
            .filter(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("v=DMARC1"))
            })
            .collect(),
        Txt::Missing => Vec::new(),
        Txt::Failed(e) => return Err(vec![format!("TXT lookup of {name} failed: {e}")]),
    };
    match records.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        several => {
            let mut evidence = vec![format!(
                "{} DMARC records at {name}: receivers ignore them all",
                several.len()
            )];
            evidence.extend(several.iter().cloned());
            Err(evidence)
        }
    }
}

/// The DMARC findings of `domain`. Its own record, else the nearest
/// parent's (not the top-level domain's): receivers apply the
/// organizational domain's record to its subdomains, with its `sp=` policy
/// when it has one.
async fn dmarc_findings(dns: &Dns, domain: &str) -> Vec<Finding> {
    let name = format!("_dmarc.{domain}");
    let published = |passed: bool, evidence: Vec<String>| {
        finding(
            "DMARC record published",
            passed,
            Severity::High,
            evidence,
            DMARC_WHY,
            DMARC_FIX,
        )
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let owners: Vec<String> = (0..labels.len().saturating_sub(1).max(1))
        .take(MAX_DMARC_WALK)
        .map(|start| labels[start..].join("."))
        .collect();
    let mut found = None;
    for owner in &owners {
        match dmarc_record(dns, &format!("_dmarc.{owner}")).await {
            Ok(Some(text)) => {
                found = Some((text, owner.clone()));
                break;
            }
            Ok(None) => {}
            Err(evidence) => return vec![published(false, evidence)],
        }
    }
    let Some((text, owner)) = found else {
        let mut evidence = vec![format!("no TXT record starting with v=DMARC1 at {name}")];
        if owners.len() > 1 {
            evidence.push(format!(
                "nor at a parent domain: {}",
                owners[1..]
                    .iter()
                    .map(|o| format!("_dmarc.{o}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        return vec![published(false, evidence)];
    };
    let inherited = owner != domain;
    let tags = tags(&text);
    let policy = tag(&tags, "p").map(str::to_ascii_lowercase);
    let Some(policy) = policy.filter(|p| matches!(p.as_str(), "none" | "quarantine" | "reject"))
    else {
        return vec![published(
            false,
            vec![text, "no valid p= (none, quarantine or reject)".into()],
        )];
    };
    let mut evidence = Vec::new();
    if inherited {
        evidence.push(format!(
            "no record at {name}: the one of {owner} applies to its subdomains"
        ));
    }
    evidence.extend([text.clone(), format!("policy: p={policy}")]);
    let sp = tag(&tags, "sp").map(str::to_ascii_lowercase);
    if let Some(sp) = &sp {
        evidence.push(format!("subdomain policy: sp={sp}"));
    }
    if let Some(pct) = tag(&tags, "pct").filter(|p| *p != "100") {
        evidence.push(format!("applied to pct={pct}% of failing mail"));
    }
    // A subdomain gets the parent's sp= when it has a valid one, else p=.
    let applied =
        match sp.filter(|s| inherited && matches!(s.as_str(), "none" | "quarantine" | "reject")) {
            Some(sp) => {
                evidence.push(format!("{domain} gets sp={sp}"));
                sp
            }
            None => policy,
        };
    let enforces = applied != "none";
    let mut policy_evidence = evidence.clone();
    if !enforces {
        policy_evidence.push("monitoring only: forged mail is still delivered".into());
    }
    vec![
        published(true, evidence),
        finding(
            "DMARC policy enforces (quarantine or reject)",
            enforces,
            Severity::Medium,
            policy_evidence,
            DMARC_POLICY_WHY,
            DMARC_POLICY_FIX,
        ),
    ]
}

/// What one DKIM selector publishes.
enum Dkim {
    /// A usable key: evidence text.
    Key(String),
    /// Nothing usable: why.
    NoKey(String),
}

/// Looks up each selector (the listed ones, or the common ones) at once.
async fn dkim_lookups(dns: &Dns, domain: &str, listed: &[String]) -> Vec<(String, Dkim)> {
    let selectors: Vec<String> = if listed.is_empty() {
        COMMON_DKIM_SELECTORS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        listed.to_vec()
    };
    let lookups = selectors.iter().map(|sel| async move {
        let name = format!("{sel}._domainkey.{domain}");
        let found = match dns.txt(&name).await {
            Txt::Missing => Dkim::NoKey(format!("{name}: no record")),
            Txt::Failed(e) => Dkim::NoKey(format!("{name}: lookup failed: {e}")),
            Txt::Found(texts) => dkim_key(&name, &texts),
        };
        (sel.clone(), found)
    });
    join_all(lookups).await
}

/// Judges the TXT records at a selector: a key record has `v=DKIM1` (or no
/// `v=`, which defaults to it) and a non-empty `p=` (empty means revoked).
fn dkim_key(name: &str, texts: &[String]) -> Dkim {
    let mut why = format!("{name}: no v=DKIM1 record with a key");
    for text in texts {
        let tags = tags(text);
        if tag(&tags, "v").is_some_and(|v| !v.eq_ignore_ascii_case("DKIM1")) {
            continue;
        }
        match tag(&tags, "p") {
            Some(p) if !p.trim().is_empty() => {
                let key_type = tag(&tags, "k").unwrap_or("rsa");
                let len = p.chars().filter(|c| !c.is_whitespace()).count();
                return Dkim::Key(format!(
                    "{name}: v=DKIM1, k={key_type}, key of {len} base64 characters"
                ));
            }
            Some(_) => why = format!("{name}: p= is empty (the key is revoked)"),
            None => why = format!("{name}: no p= tag"),
        }
    }
    Dkim::NoKey(why)
}

fn dkim_finding(
    domain: &str,
    listed: &[String],
    results: Vec<(String, Dkim)>,
    null_mx: bool,
) -> Finding {
    let title = "DKIM key published";
    if listed.is_empty() {
        let found: Vec<String> = results
            .iter()
            .filter_map(|(_, r)| match r {
                Dkim::Key(e) => Some(e.clone()),
                Dkim::NoKey(_) => None,
            })
            .collect();
        let tried = COMMON_DKIM_SELECTORS.join(", ");
        let (passed, mut evidence) = if !found.is_empty() {
            (true, found)
        } else if null_mx {
            (
                true,
                vec![format!(
                    "no key at the common selectors; none needed: {domain} publishes a null MX (no mail)"
                )],
            )
        } else {
            (
                false,
                vec![format!(
                    "no key at any common selector of {domain} (give yours with --dkim-selector)"
                )],
            )
        };
        evidence.extend(results.into_iter().filter_map(|(_, r)| match r {
            Dkim::NoKey(e) if e.contains("lookup failed") => Some(e),
            _ => None,
        }));
        evidence.push(format!("selectors tried: {tried}"));
        return finding(
            title,
            passed,
            Severity::Medium,
            evidence,
            DKIM_WHY,
            DKIM_FIX,
        );
    }
    let passed = results.iter().all(|(_, r)| matches!(r, Dkim::Key(_)));
    let evidence = results
        .into_iter()
        .map(|(_, r)| match r {
            Dkim::Key(e) | Dkim::NoKey(e) => e,
        })
        .collect();
    finding(title, passed, Severity::High, evidence, DKIM_WHY, DKIM_FIX)
}

/// The MX answer of a domain.
enum Mx {
    /// Exchanges with their preference, in order.
    Hosts(Vec<(u16, String)>),
    /// A single `.` exchange (RFC 7505): the domain takes no mail.
    Null,
    Missing,
    Failed(String),
}

async fn mx_lookup(dns: &Dns, domain: &str) -> Mx {
    let fqdn = format!("{domain}.");
    match tokio::time::timeout_at(dns.deadline, dns.resolver.mx_lookup(fqdn)).await {
        Err(_) => Mx::Failed("no answer before the audit's timeout".into()),
        Ok(Err(e)) if e.is_no_records_found() => Mx::Missing,
        Ok(Err(e)) => Mx::Failed(e.to_string()),
        Ok(Ok(lookup)) => {
            let mut hosts: Vec<(u16, String, bool)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((
                        mx.preference,
                        mx.exchange.to_string().trim_end_matches('.').to_owned(),
                        mx.exchange.is_root(),
                    )),
                    _ => None,
                })
                .collect();
            hosts.sort();
            match hosts.as_slice() {
                [] => Mx::Missing,
                [(_, _, true)] => Mx::Null,
                _ => Mx::Hosts(hosts.into_iter().map(|(p, h, _)| (p, h)).collect()),
            }
        }
    }
}

fn mx_finding(domain: &str, mx: Mx) -> Finding {
    let (passed, evidence) = match mx {
        Mx::Hosts(hosts) => (
            true,
            hosts
                .into_iter()
                .map(|(pref, host)| format!("MX {pref} {host}"))
                .collect(),
        ),
        Mx::Null => (
            true,
            vec![format!(
                "null MX (.): {domain} declares it sends and receives no mail (RFC 7505)"
            )],
        ),
        Mx::Missing => (false, vec![format!("no MX record at {domain}")]),
        Mx::Failed(e) => (false, vec![format!("MX lookup of {domain} failed: {e}")]),
    };
    finding(
        "MX records published",
        passed,
        Severity::Medium,
        evidence,
        MX_WHY,
        MX_FIX,
    )
}

/// A future of [`join_all`] and its output once ready.
type Slot<F> = (Pin<Box<F>>, Option<<F as Future>::Output>);

/// Runs `futs` concurrently on this task and returns their outputs in
/// order: `join_all` of the futures crate for a handful of DKIM lookups.
async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut slots: Vec<Slot<F>> = futs.into_iter().map(|f| (Box::pin(f), None)).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (fut, out) in &mut slots {
            if out.is_none() {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    slots.into_iter().filter_map(|(_, out)| out).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// SPF records from a map (no entry: no record).
    struct Map(HashMap<&'static str, &'static str>);

    impl SpfSource for Map {
        async fn spf(&self, domain: &str) -> Spf {
            match self.0.get(domain) {
                Some(text) => Spf::Record((*text).to_owned(), spf::parse(text)),
                None => Spf::Missing,
            }
        }
    }

    async fn count(records: &[(&'static str, &'static str)]) -> Count {
        let map = Map(records.iter().copied().collect());
        let root = spf::parse(records[0].1).unwrap();
        count_lookups(&map, records[0].0, &root).await
    }

    #[tokio::test]
    async fn a_named_dns_server_is_held_to_the_egress_policy() {
        let spec = EmailDnsSpec {
            domain: "example.com".into(),
            dkim_selectors: Vec::new(),
            dns_server: Some("127.0.0.1:5353".into()),
        };
        let cx = AuditContext {
            timeout: Duration::from_secs(2),
            egress: std::sync::Arc::new(crate::egress::EgressPolicy::new(Vec::new())),
            resolve: HashMap::new(),
        };
        let findings = run(&spec, &cx).await;
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(!findings[0].passed);
        let said = findings[0].evidence.join(" ");
        assert!(
            said.contains("dns_server: 127.0.0.1") && said.contains("--egress-allow 127.0.0.1/32"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn includes_are_counted_recursively() {
        let c = count(&[
            ("x.test", "v=spf1 include:a.x.test include:b.x.test mx -all"),
            ("a.x.test", "v=spf1 a mx ptr include:c.x.test -all"),
            ("b.x.test", "v=spf1 exists:e.x.test a:h.x.test -all"),
            ("c.x.test", "v=spf1 ip4:192.0.2.1 a -all"),
        ])
        .await;
        assert_eq!(c.total, 3 + 4 + 2 + 1);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            c.parts,
            [
                "x.test: 3",
                "include:a.x.test: 4",
                "include:c.x.test: 1",
                "include:b.x.test: 2"
            ]
        );
        assert_eq!(c.effective_all, Some(Qualifier::Fail));
    }

    #[tokio::test]
    async fn loops_missing_includes_and_depth_are_problems() {
        let c = count(&[
            ("x.test", "v=spf1 include:y.x.test include:gone.x.test -all"),
            ("y.x.test", "v=spf1 include:x.test -all"),
        ])
        .await;
        assert_eq!(c.total, 2 + 1);
        assert_eq!(
            c.problems,
            [
                "include:x.test loops back to x.test",
                "include:gone.x.test: no SPF record there (permerror)"
            ]
        );

        // A chain of 12 includes: stopped at the depth bound.
        let names: Vec<&'static str> = (0..13)
            .map(|i| &*Box::leak(format!("d{i}.x.test").into_boxed_str()))
            .collect();
        let records: Vec<(&'static str, &'static str)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let next = names.get(i + 1).copied().unwrap_or("end.x.test");
                (
                    *n,
                    &*Box::leak(format!("v=spf1 include:{next} -all").into_boxed_str()),
                )
            })
            .collect();
        let c = count(&records).await;
        assert!(c.total > MAX_SPF_LOOKUPS);
        assert!(
            c.problems[0].contains("nested more than 10 deep"),
            "{:?}",
            c.problems
        );
    }

    #[tokio::test]
    async fn a_wide_tree_is_bounded() {
        // Each record includes itself under two names: exponential without
        // the bound on records fetched.
        let mut records = vec![("x.test", "v=spf1 include:a.x.test include:b.x.test -all")];
        records.push(("a.x.test", "v=spf1 include:b.x.test include:c.x.test -all"));
        records.push(("b.x.test", "v=spf1 include:c.x.test include:d.x.test -all"));
        records.push(("c.x.test", "v=spf1 include:d.x.test include:e.x.test -all"));
        records.push(("d.x.test", "v=spf1 include:e.x.test include:f.x.test -all"));
        records.push(("e.x.test", "v=spf1 include:f.x.test include:g.x.test -all"));
        records.push(("f.x.test", "v=spf1 include:g.x.test include:h.x.test -all"));
        records.push(("g.x.test", "v=spf1 include:h.x.test include:i.x.test -all"));
        records.push(("h.x.test", "v=spf1 a -all"));
        records.push(("i.x.test", "v=spf1 a -all"));
        let c = count(&records).await;
        assert!(
            c.problems
                .iter()
                .any(|p| p.starts_with("stopped after 30 records")),
            "{:?}",
            c.problems
        );
        assert!(c.total > MAX_SPF_LOOKUPS);
    }

    #[tokio::test]
    async fn pass_all_through_includes_and_redirects() {
        let c = count(&[
            (
                "x.test",
                "v=spf1 include:lax.x.test ?include:other.x.test redirect=r.x.test",
            ),
            ("lax.x.test", "v=spf1 +all"),
            ("other.x.test", "v=spf1 all"),
            ("r.x.test", "v=spf1 redirect=r2.x.test"),
            ("r2.x.test", "v=spf1 all"),
        ])
        .await;
        assert_eq!(c.effective_all, Some(Qualifier::Pass));
        assert_eq!(c.passes_all, ["include:lax.x.test", "redirect=r2.x.test"]);
        assert_eq!(c.total, 3 + 1);
    }

    #[tokio::test]
    async fn spf_findings_for_a_good_and_a_bad_record() {
        let map = Map(HashMap::from([("x.test", "v=spf1 mx ~all")]));
        let f = spf_findings(&map, "x.test").await;
        assert!(f.iter().all(|f| f.passed), "{f:?}");
        assert_eq!(f.len(), 5);

        let map = Map(HashMap::from([("x.test", "v=spf1 mx ?all")]));
        let f = spf_findings(&map, "x.test").await;
        let weak = f.iter().find(|f| !f.passed).unwrap();
        assert_eq!(weak.title, "SPF ends in -all or ~all");
        assert_eq!(weak.severity, Severity::Low);

        let map = Map(HashMap::from([("x.test", "v=spf1 mx bogus -all")]));
        let f = spf_findings(&map, "x.test").await;
        assert_eq!(f.len(), 2);
        assert!(!f[1].passed && f[1].evidence[0].contains("unknown mechanism"));

        let f = spf_findings(&Map(HashMap::new()), "x.test").await;
        assert_eq!(f.len(), 1);
        assert!(!f[0].passed);
    }

    #[test]
    fn dkim_records() {
        let key = |t: &str| matches!(dkim_key("s._domainkey.x", &[t.to_owned()]), Dkim::Key(_));
        assert!(key("v=DKIM1; k=rsa; p=MIGfMA0G"));
        assert!(key("p=MIGf MA0G"));
        assert!(!key("v=DKIM1; p="));
        assert!(!key("v=DKIM2; p=abc"));
        assert!(!key("v=DKIM1; k=rsa"));
        assert!(!key("garbage"));
    }

    #[test]
    fn dns_servers() {
        assert_eq!(parse_dns_server("127.0.0.1").unwrap().port(), 53);
        assert_eq!(parse_dns_server("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(parse_dns_server("[::1]:5353").unwrap().port(), 5353);
        assert_eq!(parse_dns_server("::1").unwrap().port(), 53);
        assert!(parse_dns_server("ns.example").is_err());
    }
}
