//! The gRPC session with the coordinator, run as a loop (RELIABILITY.md §3):
//! connect → `Hello` → `Welcome` → resend the un-acked spool from the oldest seq
//! → stream results and heartbeats, apply assignments. On any failure: back off
//! with full jitter (base 250 ms, cap 10 s; reset after 60 s healthy) and again.
//! A coordinator that refuses the agent's token or identity is not a passing
//! fault: that is logged as an error and retried only every
//! [`REFUSED_BACKOFF`], so a misconfigured agent does not hammer it.
//!
//! `https://` coordinators are dialled over TLS (webpki roots plus
//! `--ca-file`); plain `http://` is accepted only to a loopback address, so
//! the token never crosses a network in the clear ([`check_coordinator_url`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use vantage_proto::spec::{Check, ProbeKind};
use vantage_proto::v1::{self, agent_message, coordinator_message, AgentMessage};

use crate::load::remote::Runner;
use crate::spool::Spool;

/// Dial timeout. The session itself has no request timeout: `Endpoint::timeout`
/// would cut the long-lived stream (RELIABILITY.md §3).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the coordinator may take to answer `Hello` with `Welcome`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive ping interval; see the coordinator's matching values.
/// With the timeout, a black-holed link ends the session within 20 s.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Keepalive timeout: at least 10 s so RTT spikes do not kill healthy sessions.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Application heartbeat, so the coordinator sees a live agent even when no
/// results flow.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// First backoff step after a failed session.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff between attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Wait after the coordinator refused the token or the identity: a
/// configuration problem that retrying soon will not fix.
pub const REFUSED_BACKOFF: Duration = Duration::from_secs(60);
/// A session that stayed up this long resets the backoff.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// Batches sent but not yet acknowledged. Bounds what is in flight on the wire
/// (and in memory); the rest waits in the spool. The coordinator stores what
/// has arrived with one flush, so a backlog drains in groups of this size.
const MAX_IN_FLIGHT: usize = 32;
/// Outbound channel to the gRPC stream: the in-flight batches plus heartbeats
/// and load-run reports.
const OUTBOUND_CAPACITY: usize = 48;

/// Who this agent is and where it reports.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Coordinator URL, e.g. `https://coordinator.example:7070`, or
    /// `http://127.0.0.1:7070` on loopback.
    pub coordinator: String,
    /// Agent name.
    pub name: String,
    /// Region.
    pub region: String,
    /// The agent's token, sent as `authorization: Bearer` metadata.
    pub token: Option<AgentToken>,
    /// Extra trust anchors (PEM) for an `https://` coordinator, besides
    /// the webpki roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate and its key (PEM files) presented to an
    /// `https://` coordinator that authenticates agents by certificate
    /// (mTLS); read at each connection, so a renewed pair is picked up.
    pub client_cert: Option<ClientCert>,
}

/// The files of an agent's client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// The leaf's private key.
    pub key_file: std::path::PathBuf,
}

/// The agent's token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentToken(String);

impl AgentToken {
    /// Environment variable the token may come from.
    pub const ENV: &'static str = "VANTAGE_AGENT_TOKEN";
    /// Largest token file read.
    const MAX_FILE_BYTES: u64 = 64 * 1024;

    /// Wraps a token; `None` if it is empty or cannot be an HTTP header value.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        let printable = t.bytes().all(|b| (0x21..0x7f).contains(&b));
        (!t.is_empty() && printable).then(|| AgentToken(t.to_owned()))
    }

    /// Reads the token from `path` (one trailing newline allowed). Errors
    /// name the file, never its content.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        use std::io::Read as _;
        let cannot = |e: std::io::Error| format!("cannot read token file {}: {e}", path.display());
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(cannot)?
            .take(Self::MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(cannot)?;
        if text.len() as u64 > Self::MAX_FILE_BYTES {
            return Err(format!("token file {} is too large", path.display()));
        }
        Self::new(&text).ok_or_else(|| {
            format!(
                "token file {} is empty or holds characters a token cannot have",
                path.display()
            )
        })
    }

    fn bearer(&self) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
        let mut v: tonic::metadata::MetadataValue<_> = format!("Bearer {}", self.0).parse().ok()?;
        v.set_sensitive(true);
        Some(v)
    }
}

impl std::fmt::Debug for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentToken([redacted])")
    }
}

impl std::fmt::Display for AgentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Refuses a coordinator URL the agent must not use: not `http(s)://`, or
/// `http://` to anything but a loopback address (the token and the results
/// would cross a network in plaintext).
pub fn check_coordinator_url(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("--coordinator {url:?}: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "--coordinator {url}: plaintext http:// is only allowed to a loopback address; use https:// (with --ca-file if the coordinator's certificate is not from a public CA)"
                ))
            }
        }
        other => Err(format!(
            "--coordinator {url}: scheme {other}:// is not supported; use https://"
        )),
    }
}

/// What the session feeds to the rest of the agent.
pub struct Outputs {
    /// The current assignment.
    pub checks: watch::Sender<Vec<Check>>,
    /// The window length chosen by the coordinator.
    pub window: watch::Sender<Duration>,
    /// Runs the coordinator's load commands.
    pub loads: Arc<Runner>,
    /// Set while a session is established (`/readyz`).
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

enum Ended {
    /// Shutdown was requested and the spool drained (or the drain deadline hit).
    Shutdown,
}

/// Why one session attempt ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {0}")]
    Connect(String),
    /// The coordinator refused the token or the identity.
    #[error("refused by the coordinator: {0}")]
    Refused(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("stream: {0}")]
    Stream(String),
    #[error("{0}")]
    Spool(String),
}

/// Runs sessions until `stop` fires and `drain_deadline` passes or the spool is
/// empty.
pub async fn run(
    id: Identity,
    spool: Arc<Spool>,
    out: Outputs,
    stop: CancellationToken,
    drain: Duration,
) {
    let mut attempt: u32 = 0;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        if stop.is_cancelled() {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            if spool.is_empty() || Instant::now() >= deadline {
                return;
            }
        }
        let began = Instant::now();
        let ended = session(&id, &spool, &out, &stop, drain).await;
        out.connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match ended {
            Ok(Ended::Shutdown) => return,
            Err(e) => {
                if began.elapsed() >= HEALTHY_RESET {
                    attempt = 0;
                }
                attempt = attempt.saturating_add(1);
                let wait = if let SessionError::Refused(_) = e {
                    let wait = REFUSED_BACKOFF.max(backoff(attempt));
                    tracing::error!(error = %e, agent = %id.name, region = %id.region, retry_in = ?wait,
                        "THE COORDINATOR REFUSED THIS AGENT: check its token (--token-file or VANTAGE_AGENT_TOKEN) or client certificate (--cert-file), name and region against the coordinator's [[agent]] entry");
                    wait
                } else {
                    let wait = backoff(attempt);
                    tracing::warn!(error = %e, retry_in = ?wait, "session with coordinator ended");
                    wait
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled(), if !stop.is_cancelled() => {}
                }
                if stop.is_cancelled() && spool.is_empty() {
                    return;
                }
            }
        }
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(cap, base·2^attempt))`.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    Duration::from_millis(rand::random_range(0..=ceiling.as_millis() as u64))
}

fn hello(id: &Identity, spool: &Spool) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(v1::Hello {
            agent: id.name.clone(),
            region: id.region.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            capabilities: ProbeKind::ALL
                .iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            spool_dropped_windows_total: spool.dropped_windows(),
        })),
    }
}

fn apply_assignment(out: &Outputs, a: v1::Assignment) {
    let mut checks = Vec::with_capacity(a.checks.len());
    for wire in a.checks {
        let name = wire.name.clone();
        match Check::try_from(wire) {
            Ok(c) => checks.push(c),
            Err(errs) => {
                let why: Vec<_> = errs.iter().map(ToString::to_string).collect();
                tracing::error!(check = %name, errors = %why.join("; "), "ignoring invalid check in assignment");
            }
        }
    }
    tracing::info!(
        version = a.version,
        checks = checks.len(),
        "assignment received"
    );
    let _ = out.checks.send(checks);
}

async fn session(
    id: &Identity,
    spool: &Spool,
    out: &Outputs,
    stop: &CancellationToken,
    drain: Duration,
) -> Result<Ended, SessionError> {
    check_coordinator_url(&id.coordinator).map_err(SessionError::Connect)?;
    let mut endpoint = Endpoint::from_shared(id.coordinator.clone())
        .map_err(|e| SessionError::Connect(format!("invalid coordinator URL: {e}")))?;
    if id.coordinator.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(path) = &id.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| SessionError::Connect(format!("--ca-file {}: {e}", path.display())))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        if let Some(c) = &id.client_cert {
            let read = |flag: &str, path: &std::path::Path| {
                std::fs::read(path)
                    .map_err(|e| SessionError::Connect(format!("{flag} {}: {e}", path.display())))
            };
            let (cert, key) = (
                read("--cert-file", &c.cert_file)?,
                read("--key-file", &c.key_file)?,
            );
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| SessionError::Connect(format!("TLS: {}", error_chain(&e))))?;
    }
    let channel = endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| SessionError::Connect(error_chain(&e)))?;
    let mut client = v1::fleet_client::FleetClient::new(channel)
        .max_decoding_message_size(vantage_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(vantage_proto::MAX_MESSAGE_BYTES);

    let (tx, rx) = mpsc::channel::<AgentMessage>(OUTBOUND_CAPACITY);
    // Invariant: the channel is new and empty.
    tx.try_send(hello(id, spool))
        .expect("fresh channel has room");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(bearer) = id.token.as_ref().and_then(AgentToken::bearer) {
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut inbound = client
        .session(request)
        .await
        .map_err(|s| {
            let text = format!("{:?}: {}", s.code(), s.message());
            match s.code() {
                // ResourceExhausted: too many failed authentications
                // from this address; the token is still the cause.
                tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::ResourceExhausted => SessionError::Refused(text),
                _ => SessionError::Connect(text),
            }
        })?
        .into_inner();

    let welcome = tokio::time::timeout(WELCOME_TIMEOUT, inbound.message())
        .await
        .map_err(|_| SessionError::Protocol("no Welcome within 10 s".into()))?
        .map_err(|s| SessionError::Stream(format!("{}: {}", s.code(), s.message())))?;
    let Some(v1::CoordinatorMessage {
        msg: Some(coordinator_message::Msg::Welcome(w)),
    }) = welcome
    else {
        return Err(SessionError::Protocol(
            "first message was not Welcome".into(),
        ));
    };
    spool
        .rebase(w.last_stored_seq)
        .map_err(|e| SessionError::Spool(e.to_string()))?;
    if w.window_ms > 0 {
        let _ = out
            .window
            .send(Duration::from_millis(u64::from(w.window_ms)));
    }
    let pending = spool.len();
    if let Err(e) = vantage_proto::build_info::compatibility(&w.coordinator_version) {
        tracing::warn!(agent_version = vantage_proto::build_info::VERSION,
            "the coordinator runs an incompatible version: {e}; upgrade so both are in one series (coordinator first)");
    }
    tracing::info!(coordinator = %id.coordinator, coordinator_version = %w.coordinator_version,
        last_stored_seq = w.last_stored_seq, pending, "session established");
    out.connected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // The backlog: every batch numbered before this session. Its delivery is
    // logged once, with how long it took.
    let mut backlog = (pending > 0).then(|| (spool.next_seq() - 1, pending, Instant::now()));

    let mut sent_up_to = w.last_stored_seq;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_INTERVAL);
    heartbeat.reset();
    let mut drain_deadline = stop.is_cancelled().then(|| Instant::now() + drain);
    loop {
        // Send what the in-flight window allows, oldest first.
        while spool.pending_up_to(sent_up_to) < MAX_IN_FLIGHT {
            let Some(batch) = spool.next_after(sent_up_to) else {
                break;
            };
            let seq = batch.seq;
            let msg = AgentMessage {
                msg: Some(agent_message::Msg::Results(batch)),
            };
            match tx.try_send(msg) {
                Ok(()) => sent_up_to = seq,
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(SessionError::Stream("outbound stream closed".into()))
                }
            }
        }
        if let Some(deadline) = drain_deadline {
            if spool.is_empty() || Instant::now() >= deadline {
                return Ok(Ended::Shutdown);
            }
        }
        let drain_sleep = async {
            match drain_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.msg {
                    Some(coordinator_message::Msg::Ack(a)) => {
                        spool.ack(a.seq);
                        if let Some((last, batches, since)) = backlog {
                            if a.seq >= last {
                                tracing::info!(batches, took = ?since.elapsed(), "backlog delivered");
                                backlog = None;
                            }
                        }
                    }
                    Some(coordinator_message::Msg::Assignment(a)) => apply_assignment(out, a),
                    Some(coordinator_message::Msg::LoadStart(l)) => out.loads.start(l, tx.clone()),
                    Some(coordinator_message::Msg::LoadAbort(a)) => out.loads.abort(&a.run_id, &a.reason),
                    Some(coordinator_message::Msg::Welcome(_)) | None => {
                        return Err(SessionError::Protocol("unexpected message".into()))
                    }
                },
                Ok(None) => return Err(SessionError::Stream("coordinator closed the session".into())),
                Err(s) => return Err(SessionError::Stream(format!("{}: {}", s.code(), s.message()))),
            },
            _ = spool.pushed() => {}
            _ = heartbeat.tick() => {
                let beat = AgentMessage { msg: Some(agent_message::Msg::Heartbeat(v1::Heartbeat {
                    sent_unix_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as i64)
                        .unwrap_or(0),
                    spool_pending_batches: spool.len() as u64,
                })) };
                // A full channel already proves liveness; skip this beat.
                let _ = tx.try_send(beat);
            }
            _ = stop.cancelled(), if drain_deadline.is_none() => {
                drain_deadline = Some(Instant::now() + drain);
            }
            _ = drain_sleep => {}
        }
    }
}

/// A transport error with its sources, which is where tonic puts the cause
/// ("connection refused" and the like).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_loopback() {
        for ok in [
            "https://coordinator.example:7070",
            "https://10.0.0.1:7070",
            "http://127.0.0.1:7070",
            "http://[::1]:7070",
            "http://localhost:7070",
        ] {
            assert!(check_coordinator_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:7070",
            "http://coordinator.example:7070",
            "ftp://x",
        ] {
            let e = check_coordinator_url(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(check_coordinator_url("http://10.0.0.1:7070")
            .unwrap_err()
            .contains("only allowed to a loopback address"));
    }

    #[test]
    fn token_is_never_shown() {
        let t = AgentToken::new("s3cret-canary\n").unwrap();
        assert_eq!(format!("{t}"), "[redacted]");
        assert!(!format!("{t:?}").contains("canary"));
        assert!(!format!("{:?}", Some(&t)).contains("canary"));
        assert!(t.bearer().unwrap().is_sensitive());
        assert!(AgentToken::new(" \n").is_none());
        assert!(AgentToken::new("a b").is_none());
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for attempt in 1..40 {
            let ceiling = BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_CAP);
            for _ in 0..50 {
                assert!(backoff(attempt) <= ceiling);
            }
        }
        // Jitter: 200 draws at the cap are not all equal.
        let draws: std::collections::HashSet<_> = (0..200).map(|_| backoff(30)).collect();
        assert!(draws.len() > 10);
    }
}
