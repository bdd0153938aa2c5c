//! The `tcp` probe: resolve the host, connect, close. Its phases are `dns` (for a
//! host name) and `connect`.
//!
//! `resolve_and_connect` is also the first step of the `http` and `tls`
//! probes, so all three time and classify those phases the same way.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use vantage_proto::spec::{ProbeKind, TcpSpec};
use vantage_proto::v1::ErrorClass;

use crate::egress::EgressPolicy;

use super::{run_attempt, Attempt, BoxFuture, Deadline, Phases, Probe, ProbeError, ProbeOutcome};

/// Runs a [`TcpSpec`]: succeeds once a TCP connection is established.
#[derive(Debug, Clone)]
pub struct TcpProbe {
    spec: TcpSpec,
    timeout: Duration,
    egress: Arc<EgressPolicy>,
}

impl TcpProbe {
    /// A probe of `spec` whose attempts end after `timeout`, connecting only
    /// where `egress` allows.
    pub fn new(spec: TcpSpec, timeout: Duration, egress: Arc<EgressPolicy>) -> Self {
        TcpProbe {
            spec,
            timeout,
            egress,
        }
    }
}

impl Probe for TcpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Tcp
    }

    fn run(&self) -> BoxFuture<'_, ProbeOutcome> {
        run_attempt(self)
    }
}

impl Attempt for TcpProbe {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn attempt(&self, deadline: &Deadline, out: &mut ProbeOutcome) -> Result<(), ProbeError> {
        let host = (self.spec.host.as_str(), self.spec.port);
        resolve_and_connect(host, &self.egress, deadline, &mut out.phases).await?;
        Ok(())
    }
}

/// `host` as an IP address when it is a literal (`10.0.0.1`, `::1` or `[::1]`).
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The host of `url` to resolve or connect to: a name, or an IP literal
/// without brackets. `None` when the URL has no (or an empty) host.
pub(crate) fn url_host(url: &url::Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain("") => None,
        url::Host::Domain(name) => Some(name.to_owned()),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

/// Resolves `host` and connects to the first address that answers, recording
/// `phases.dns` (only for a host name, not an IP literal) and `phases.connect`.
///
/// Only addresses `egress` allows are dialled, and the connection goes to the
/// very address that was checked (no second lookup). Failures are class `dns`
/// (no such name, no address), `egress` (every address refused: nothing was
/// sent), `connect` (refused, unreachable) or `timeout` (the deadline passed
/// in either phase).
pub(crate) async fn resolve_and_connect(
    (host, port): (&str, u16),
    egress: &EgressPolicy,
    deadline: &Deadline,
    phases: &mut Phases,
) -> Result<TcpStream, ProbeError> {
    connect_host((host, port), None, egress, deadline, phases).await
}

/// [`resolve_and_connect`], except that a `pinned` address stands for the
/// answer of DNS (curl's `--resolve`: auditing a site before its DNS points at
/// it, and tests on loopback). A pinned address is still checked against
/// `egress`, and `phases.dns` stays `None` for it.
pub(crate) async fn connect_host(
    (host, port): (&str, u16),
    pinned: Option<IpAddr>,
    egress: &EgressPolicy,
    deadline: &Deadline,
    phases: &mut Phases,
) -> Result<TcpStream, ProbeError> {
    let addrs = match pinned {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => resolve(host, port, deadline, phases).await?,
    };
    let addrs = permitted(host, addrs, egress)?;
    connect(&addrs, deadline, phases).await
}

/// The addresses of `addrs` that `egress` allows; a class `egress` error when
/// none is (naming the first refusal).
pub(crate) fn permitted(
    host: &str,
    addrs: Vec<SocketAddr>,
    egress: &EgressPolicy,
) -> Result<Vec<SocketAddr>, ProbeError> {
    let mut refused = None;
    let allowed: Vec<SocketAddr> = addrs
        .into_iter()
        .filter(|a| match egress.check(a.ip()) {
            Ok(()) => true,
            Err(denied) => {
                refused.get_or_insert(denied);
                false
            }
        })
        .collect();
    match refused {
        Some(denied) if allowed.is_empty() => Err(ProbeError::new(
            ErrorClass::Egress,
            if ip_literal(host).is_some() {
                denied.to_string()
            } else {
                format!("{host} resolves to {denied}")
            },
        )),
        _ => Ok(allowed),
    }
}

/// The addresses of `host`, timed as `phases.dns` unless `host` is an IP
/// literal (then nothing is resolved and `dns` stays `None`).
async fn resolve(
    host: &str,
    port: u16,
    deadline: &Deadline,
    phases: &mut Phases,
) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Some(ip) = ip_literal(host) {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let start = Instant::now();
    let found = deadline
        .run("dns", tokio::net::lookup_host((host, port)))
        .await?
        .map_err(|e| ProbeError::new(ErrorClass::Dns, format!("resolving {host}: {e}")))?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(ProbeError::new(
            ErrorClass::Dns,
            format!("resolving {host}: no addresses"),
        ));
    }
    phases.dns = Some(start.elapsed());
    Ok(addrs)
}

/// Connects to `addrs` in order. Each address gets an equal share of the time
/// left, so one address that drops SYNs cannot use up the budget of the others
/// (shared/RELIABILITY.md §4).
async fn connect(
    addrs: &[SocketAddr],
    deadline: &Deadline,
    phases: &mut Phases,
) -> Result<TcpStream, ProbeError> {
    let start = Instant::now();
    let mut failures = Vec::with_capacity(addrs.len());
    for (i, addr) in addrs.iter().enumerate() {
        let left = u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        let budget = deadline.remaining() / left;
        match tokio::time::timeout(budget, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                phases.connect = Some(start.elapsed());
                // Probes write one small request; Nagle would only add delay.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
            Err(_) => failures.push(format!("{addr}: no answer")),
        }
    }
    if deadline.remaining().is_zero() {
        let mut err = deadline.expired("connect");
        err.message = format!("{} ({})", err.message, failures.join("; "));
        return Err(err);
    }
    Err(ProbeError::new(
        ErrorClass::Connect,
        format!("connecting to {}", failures.join("; ")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::testkit;

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn probe(host: &str, port: u16, timeout: Duration) -> TcpProbe {
        TcpProbe::new(
            TcpSpec {
                host: host.into(),
                port,
            },
            timeout,
            testkit::open(),
        )
    }

    fn guarded(host: &str, port: u16, egress: &Arc<EgressPolicy>) -> TcpProbe {
        let spec = TcpSpec {
            host: host.into(),
            port,
        };
        TcpProbe::new(spec, TIMEOUT, Arc::clone(egress))
    }

    /// Loopback however it is written, the unspecified address (which
    /// Linux routes to the host itself) and a name that resolves to
    /// loopback: refused with class `egress` before any packet; the victim
    /// accepts nothing. With the allow-list, the same spellings connect.
    #[tokio::test]
    async fn non_public_addresses_in_any_spelling_are_refused_before_a_packet() {
        let victim = testkit::Victim::start().await;
        let deny = Arc::new(EgressPolicy::default());
        let spellings = [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
            "[::ffff:7f00:1]",
            "localhost",
            "0.0.0.0",
            "::",
        ];
        for host in spellings {
            let out = guarded(host, victim.port, &deny).run().await;
            let err = out.error.unwrap_or_else(|| panic!("{host}: connected"));
            assert_eq!(err.class, ErrorClass::Egress, "{host}: {err:?}");
            assert!(
                err.message.contains("refused by the egress policy"),
                "{err:?}"
            );
            assert_eq!(out.phases.connect, None, "{host}");
        }
        assert_eq!(victim.accepted(), 0, "no connection reached the victim");

        let allow = Arc::new(
            EgressPolicy::from_flags_and_env(&["127.0.0.0/8".into(), "::1".into()], None).unwrap(),
        );
        let allowed = ["127.1", "0x7f000001", "[::1]", "::ffff:127.0.0.1"];
        for host in allowed {
            let out = guarded(host, victim.port, &allow).run().await;
            assert_eq!(out.error, None, "{host}");
        }
        assert_eq!(victim.until_accepted(allowed.len()).await, allowed.len());
    }

    #[test]
    fn a_mixed_answer_keeps_only_the_allowed_addresses() {
        let addrs: Vec<SocketAddr> = ["10.0.0.1:80", "93.184.216.34:80", "[fd00::1]:80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let kept = permitted("example", addrs.clone(), &EgressPolicy::default()).unwrap();
        assert_eq!(kept, vec![addrs[1]]);
        let none = permitted(
            "example",
            vec![addrs[0], addrs[2]],
            &EgressPolicy::default(),
        );
        let err = none.unwrap_err();
        assert_eq!(err.class, ErrorClass::Egress);
        assert!(
            err.message
                .starts_with("example resolves to 10.0.0.1 is private (RFC 1918)"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn connects_to_an_ip_literal_without_dns() {
        let addr = testkit::silent_server().await;
        let out = probe("127.0.0.1", addr.port(), TIMEOUT).run().await;
        assert_eq!(out.error, None);
        assert_eq!(out.phases.dns, None, "an IP literal is not resolved");
        let connect = out.phases.connect.expect("connect timed");
        assert!(connect <= out.phases.total);
        assert_eq!((out.phases.tls, out.phases.waiting), (None, None));
        assert_eq!(probe("x", 1, TIMEOUT).kind(), ProbeKind::Tcp);
    }

    #[tokio::test]
    async fn a_host_name_is_resolved_and_timed() {
        let addr = testkit::silent_server().await;
        // localhost comes from /etc/hosts; it may list ::1 first, which refuses
        // (the server is on 127.0.0.1), and the next address is tried.
        let out = probe("localhost", addr.port(), TIMEOUT).run().await;
        assert_eq!(out.error, None);
        assert!(out.phases.dns.is_some() && out.phases.connect.is_some());
    }

    #[tokio::test]
    async fn a_refused_port_is_class_connect() {
        let addr = testkit::closed_port().await;
        let out = probe("127.0.0.1", addr.port(), TIMEOUT).run().await;
        let err = out.error.expect("refused");
        assert_eq!(err.class, ErrorClass::Connect, "{err:?}");
        assert!(err.message.contains(&addr.to_string()), "{err:?}");
        assert_eq!(out.phases.connect, None);
    }

    #[tokio::test]
    async fn an_unresolvable_name_is_class_dns() {
        let out = probe(testkit::UNRESOLVABLE, 80, TIMEOUT).run().await;
        let err = out.error.expect("no such name");
        assert_eq!(err.class, ErrorClass::Dns, "{err:?}");
        assert_eq!(out.phases.dns, None);
    }

    #[tokio::test]
    async fn a_port_that_drops_syns_is_class_timeout() {
        let hole = testkit::Blackhole::new().await;
        let timeout = Duration::from_millis(300);
        let out = probe("127.0.0.1", hole.addr.port(), timeout).run().await;
        let err = out.error.expect("deadline");
        assert_eq!(err.class, ErrorClass::Timeout, "{err:?}");
        assert!(err.message.contains("connect"), "{err:?}");
        assert!(out.phases.total >= timeout && out.phases.total < TIMEOUT);
    }

    #[tokio::test]
    async fn an_unvalidated_huge_timeout_does_not_panic() {
        let addr = testkit::closed_port().await;
        let out = probe("127.0.0.1", addr.port(), Duration::MAX).run().await;
        assert_eq!(out.error.unwrap().class, ErrorClass::Connect);
    }

    #[test]
    fn url_hosts_lose_their_brackets() {
        let host = |u: &str| url_host(&u.parse().unwrap());
        assert_eq!(host("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host("tcp://[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host("https://10.0.0.1/").as_deref(), Some("10.0.0.1"));
        assert_eq!(
            host("tls://Example.test:1").as_deref(),
            Some("Example.test")
        );
        assert_eq!(host("tcp:///x"), None);
        assert_eq!(host("data:text/plain,x"), None);
    }

    #[test]
    fn ip_literals_with_and_without_brackets() {
        assert_eq!(
            ip_literal("[::1]"),
            Some(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))
        );
        assert_eq!(ip_literal("::1"), ip_literal("[::1]"));
        assert_eq!(ip_literal("10.0.0.1"), Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(ip_literal("localhost"), None);
        assert_eq!(ip_literal("[localhost]"), None);
    }
}
