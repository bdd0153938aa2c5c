//! The Vantage agent: runs the checks the coordinator assigns and streams their
//! results as per-window HDR histograms.
//!
//! # Layout
//! - [`probe`]: one file per probe kind (`http`, `tcp`, `tls`).
//! - [`scheduler`]: per-check timers, the concurrency cap.
//! - [`recorder`]: per-check windows aligned to the clock, with histograms.
//! - [`spool`]: batches waiting for the coordinator's ack.
//! - [`session`]: the gRPC session (reconnect, backoff, heartbeat).
//! - [`oneshot`]: `vantage-agent probe URL`, a single check printed for humans.
//! - [`load`]: `vantage-agent load FILE`, a local k6-style load test.
//! - [`audit`]: the launch-readiness checks and `vantage-agent audit URL`.
#![warn(missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub mod audit;
pub mod egress;
pub mod health;
pub mod load;
pub mod oneshot;
pub mod probe;
pub mod recorder;
pub mod scheduler;
pub mod session;
pub mod spool;

pub use session::{AgentToken, ClientCert, Identity};

/// Window length used until the coordinator's `Welcome` says otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Outcomes buffered between the scheduler and the recorder; when full, probe
/// tasks wait (the recorder only adds to histograms, so it is rarely behind).
const RESULTS_CAPACITY: usize = 1024;
/// Time given to the session after shutdown to deliver what the spool holds.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// Agent settings.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Identity and coordinator address.
    pub identity: Identity,
    /// Probes in flight at once.
    pub max_concurrent_probes: usize,
    /// Bound on the spool, in bytes.
    pub spool_max_bytes: usize,
    /// Directory of the durable spool (sled); `None` keeps results in
    /// memory only (lost if the agent dies).
    pub spool_dir: Option<std::path::PathBuf>,
    /// What the coordinator may make this agent send (distributed load).
    pub load: load::remote::Limits,
    /// Time allowed after shutdown to deliver spooled results.
    pub drain: Duration,
    /// Where checks and coordinator-driven load may connect (default:
    /// public addresses only).
    pub egress: Arc<egress::EgressPolicy>,
    /// Where to serve `/healthz` and `/readyz` ([`health`]); none by
    /// default.
    pub health_listen: Option<std::net::SocketAddr>,
}

impl AgentOptions {
    /// Defaults for everything but the identity.
    pub fn new(identity: Identity) -> Self {
        AgentOptions {
            identity,
            max_concurrent_probes: scheduler::DEFAULT_MAX_CONCURRENT_PROBES,
            spool_max_bytes: spool::DEFAULT_MAX_BYTES,
            spool_dir: None,
            load: load::remote::Limits::default(),
            drain: DEFAULT_DRAIN,
            egress: Arc::default(),
            health_listen: None,
        }
    }
}

/// Opens the durable spool (or a memory one without `spool_dir`). A spool
/// that cannot be read is moved aside and replaced, with an error in the log
/// naming where it went; a spool held by another process stops the agent.
async fn open_spool(opts: &AgentOptions) -> anyhow::Result<spool::Spool> {
    let Some(dir) = opts.spool_dir.clone() else {
        return Ok(spool::Spool::new(opts.spool_max_bytes));
    };
    let max = opts.spool_max_bytes;
    let (spool, quarantined) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating the spool directory {}: {e}", dir.display()))?;
        spool::Spool::open_or_quarantine(&dir, max).map_err(anyhow::Error::from)
    })
    .await??;
    if let Some(q) = quarantined {
        tracing::error!(
            error = %q.error,
            moved_to = %q.moved_to.display(),
            "THE SPOOL COULD NOT BE OPENED: it was moved aside and this agent starts with an empty one; results it held were not delivered (inspect or delete the moved directory)"
        );
    }
    tracing::info!(
        pending_batches = spool.len(),
        next_seq = spool.next_seq(),
        dropped_windows_total = spool.dropped_windows(),
        "spool opened"
    );
    Ok(spool)
}

/// Runs the agent until `shutdown` completes, then stops in order: scheduler,
/// then the recorder's last partial window into the spool, then the session
/// delivers what it can within `drain`.
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    if !vantage_proto::is_valid_name(&opts.identity.name)
        || !vantage_proto::is_valid_name(&opts.identity.region)
    {
        anyhow::bail!("agent name and region must be 1-64 characters from A-Z a-z 0-9 . _ -");
    }
    session::check_coordinator_url(&opts.identity.coordinator).map_err(anyhow::Error::msg)?;
    if let Some(path) = &opts.identity.ca_file {
        // Read again at each dial; checked here so a wrong path stops the
        // agent at once instead of failing every session.
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("--ca-file {}: {e}", path.display()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            anyhow::bail!(
                "--ca-file {}: no PEM certificate in the file",
                path.display()
            );
        }
    }
    let health = match opts.health_listen {
        Some(addr) => Some(health::bind(addr).await?),
        None => None,
    };
    tracing::info!(version = %vantage_proto::build_info::long_version(), agent = %opts.identity.name,
        region = %opts.identity.region, "agent starting");
    let spool = Arc::new(open_spool(&opts).await?);
    let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_health = CancellationToken::new();
    let health = health.map(|listener| {
        tokio::spawn(health::serve(
            listener,
            Arc::clone(&connected),
            stop_health.clone(),
        ))
    });
    let (checks_tx, checks_rx) = watch::channel(Vec::new());
    let (window_tx, window_rx) = watch::channel(DEFAULT_WINDOW);
    let (results_tx, results_rx) = mpsc::channel(RESULTS_CAPACITY);
    let stop_probes = CancellationToken::new();
    let stop_session = CancellationToken::new();

    let scheduler = tokio::spawn(scheduler::run(
        checks_rx,
        results_tx,
        opts.max_concurrent_probes,
        Arc::clone(&opts.egress),
        stop_probes.clone(),
    ));
    let recorder = tokio::spawn(recorder::run(results_rx, window_rx, Arc::clone(&spool)));
    let session = tokio::spawn(session::run(
        opts.identity.clone(),
        Arc::clone(&spool),
        session::Outputs {
            checks: checks_tx,
            window: window_tx,
            loads: load::remote::Runner::new(opts.load.clone(), Arc::clone(&opts.egress)),
            connected,
        },
        stop_session.clone(),
        opts.drain,
    ));

    shutdown.await;
    tracing::info!("shutting down: stopping checks");
    stop_probes.cancel();
    let _ = scheduler.await;
    // The scheduler held the only sender; the recorder now pushes its last
    // partial window and ends.
    let _ = recorder.await;
    stop_session.cancel();
    let _ = session.await;
    stop_health.cancel();
    if let Some(h) = health {
        let _ = h.await;
    }
    let left = spool.len();
    if left > 0 {
        tracing::warn!(
            batches = left,
            "exiting with results the coordinator has not acknowledged"
        );
    }
    Ok(())
}
