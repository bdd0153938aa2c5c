//! Probes: one file per kind. A probe never returns `Err` for a failing target:
//! DNS, connect, TLS, timeout, status and body failures are data
//! ([`ProbeOutcome::error`]), classified so they can be counted.
//!
//! Adding a kind: a spec in `vantage_proto::spec`, a file here, one arm in
//! [`build`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::audit::probe::AuditProbe;
use crate::egress::EgressPolicy;
use vantage_proto::spec::{Check, ProbeKind, ProbeSpec};
use vantage_proto::v1::{ErrorClass, TlsFacts};

pub mod http;
#[cfg(test)]
mod phase_timeouts;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testkit;
pub mod tls;

/// A boxed future, so probes can be called through `dyn Probe`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One runnable probe, built once per check and run on every tick.
pub trait Probe: Send + Sync + 'static {
    /// The kind of check this probe runs.
    fn kind(&self) -> ProbeKind;
    /// Runs one attempt. Completes within the check's timeout (plus scheduling
    /// slack); failures are reported inside the outcome.
    fn run(&self) -> BoxFuture<'_, ProbeOutcome>;
}

/// Durations of the phases of one attempt, named as k6 names them. A phase that
/// did not happen (no DNS for an IP literal, no TLS for plain HTTP, a failure
/// before it) is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Phases {
    /// Name resolution (`http_req_blocked` is not modelled separately).
    pub dns: Option<Duration>,
    /// TCP connect (`http_req_connecting`).
    pub connect: Option<Duration>,
    /// TLS handshake (`http_req_tls_handshaking`).
    pub tls: Option<Duration>,
    /// Request sent to first response byte (`http_req_waiting`, TTFB).
    pub waiting: Option<Duration>,
    /// The whole attempt, start to end (`http_req_duration` for http).
    pub total: Duration,
}

/// A classified failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeError {
    /// dns, connect, tls, timeout, status, body, egress or audit.
    pub class: ErrorClass,
    /// What happened, for humans. Never contains credentials from the URL.
    pub message: String,
}

impl ProbeError {
    /// A failure of `class` with a message.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        ProbeError {
            class,
            message: message.into(),
        }
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", error_class_name(self.class), self.message)
    }
}

/// The contract name of an error class (`dns`, `connect`, `tls`, `timeout`,
/// `status`, `body`, `egress`, `audit`; `unspecified` for the proto default).
pub fn error_class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Unspecified => "unspecified",
        ErrorClass::Dns => "dns",
        ErrorClass::Connect => "connect",
        ErrorClass::Tls => "tls",
        ErrorClass::Timeout => "timeout",
        ErrorClass::Status => "status",
        ErrorClass::Body => "body",
        ErrorClass::Egress => "egress",
        ErrorClass::Audit => "audit",
    }
}

/// `err` followed by its sources, joined by ": ", without repeating a source
/// whose text the message already contains (io errors wrapping rustls or
/// hyper errors display their cause themselves).
pub(crate) fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The result of one probe attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeOutcome {
    /// Wall-clock start of the attempt.
    pub started: SystemTime,
    /// `None` when the attempt succeeded.
    pub error: Option<ProbeError>,
    /// Phase timings.
    pub phases: Phases,
    /// HTTP status of the last response, if any.
    pub status: Option<u16>,
    /// Certificate facts, when a TLS handshake completed (or, for the `tls`
    /// kind, whenever the server presented a certificate).
    pub tls: Option<TlsFacts>,
    /// "HTTP/1.1" or "HTTP/2" for http probes.
    pub http_version: Option<String>,
    /// Redirects followed.
    pub redirects: u32,
    /// The URL of the last request (differs from the check's after redirects).
    pub final_url: Option<String>,
}

impl ProbeOutcome {
    /// Whether the attempt succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// An empty outcome for an attempt starting now: no error, no phases.
    pub fn begin() -> Self {
        ProbeOutcome {
            started: SystemTime::now(),
            error: None,
            phases: Phases::default(),
            status: None,
            tls: None,
            http_version: None,
            redirects: 0,
            final_url: None,
        }
    }

    /// Closes the attempt: records `result` as the error (if any) and the total
    /// time since `deadline` started.
    pub(crate) fn finish(mut self, result: Result<(), ProbeError>, deadline: &Deadline) -> Self {
        self.error = result.err();
        self.phases.total = deadline.elapsed();
        self
    }
}

/// One attempt of a probe, run under its deadline by [`run_attempt`]: the
/// part that differs between kinds.
pub(crate) trait Attempt: Sync {
    /// The check's timeout (the deadline of the whole attempt).
    fn timeout(&self) -> Duration;

    /// Runs the attempt, filling `out` (phases, facts, status ...) as it goes;
    /// `Err` is the classified failure.
    fn attempt<'a>(
        &'a self,
        deadline: &'a Deadline,
        out: &'a mut ProbeOutcome,
    ) -> impl Future<Output = Result<(), ProbeError>> + Send + 'a;
}

/// [`Probe::run`] for an [`Attempt`]: starts the outcome and the deadline,
/// runs the attempt, and records its error and total time.
pub(crate) fn run_attempt<P: Attempt>(probe: &P) -> BoxFuture<'_, ProbeOutcome> {
    Box::pin(async move {
        let deadline = Deadline::after(probe.timeout());
        let mut out = ProbeOutcome::begin();
        let result = probe.attempt(&deadline, &mut out).await;
        out.finish(result, &deadline)
    })
}

/// Longest deadline of an attempt, whatever the timeout asked for.
const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The deadline of one whole attempt (the check's `timeout`). Every network
/// `await` of a probe goes through [`Deadline::run`], so a stalled phase ends
/// as class `timeout` instead of waiting on kernel defaults.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    start: Instant,
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    /// A deadline `timeout` from now.
    pub(crate) fn after(timeout: Duration) -> Self {
        // A spec's timeout is at most 2 minutes once validated; the cap only
        // keeps an unvalidated huge value from overflowing `Instant`.
        let timeout = timeout.min(MAX_DEADLINE);
        let start = Instant::now();
        Deadline {
            start,
            at: start + timeout,
            timeout,
        }
    }

    /// The instant the attempt must end.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// Time since the attempt started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Time left before the deadline (zero once passed).
    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The `timeout`-class error for a deadline hit during `phase`.
    pub(crate) fn expired(&self, phase: &str) -> ProbeError {
        ProbeError::new(
            ErrorClass::Timeout,
            format!(
                "timed out after {} during {phase}",
                humantime::format_duration(self.timeout)
            ),
        )
    }

    /// Runs `fut` until the deadline; past it, a `timeout` error naming `phase`.
    pub(crate) async fn run<F: Future>(
        &self,
        phase: &str,
        fut: F,
    ) -> Result<F::Output, ProbeError> {
        tokio::time::timeout_at(self.at, fut)
            .await
            .map_err(|_| self.expired(phase))
    }
}

/// Why a probe could not be built (a bad spec for this host, such as an
/// unreadable `ca_file`). The scheduler logs and counts it; nothing runs.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The `ca_file` could not be read or holds no certificate.
    #[error("ca_file {path}: {reason}")]
    CaFile {
        /// The path as given in the check.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Anything else about the spec that cannot run on this agent.
    #[error("{0}")]
    Invalid(String),
}

/// Builds the runtime probe for a check, connecting only where `egress`
/// allows.
pub fn build(check: &Check, egress: &Arc<EgressPolicy>) -> Result<Box<dyn Probe>, BuildError> {
    let (timeout, egress) = (check.timeout, Arc::clone(egress));
    Ok(match &check.probe {
        ProbeSpec::Http(spec) => Box::new(http::HttpProbe::new(spec.clone(), timeout, egress)?),
        ProbeSpec::Tcp(spec) => Box::new(tcp::TcpProbe::new(spec.clone(), timeout, egress)),
        ProbeSpec::Tls(spec) => Box::new(tls::TlsProbe::new(spec.clone(), timeout, egress)?),
        ProbeSpec::Redirect(_)
        | ProbeSpec::Headers(_)
        | ProbeSpec::Cors(_)
        | ProbeSpec::AuthRequired(_)
        | ProbeSpec::RateLimit(_)
        | ProbeSpec::EmailDns(_)
        | ProbeSpec::ExposedSecrets(_) => {
            Box::new(AuditProbe::new(check.probe.clone(), timeout, egress)?)
        }
    })
}
