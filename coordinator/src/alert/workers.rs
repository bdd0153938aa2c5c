//! The delivery workers, one per configured channel, kept in step with the
//! running config: a reload that adds, changes or removes a `[[channel]]`
//! starts, replaces or stops that channel's worker; the others go on
//! untouched.
//!
//! - A replaced worker finishes the send it is in (bounded by the channel's
//!   timeout) and stops before its successor starts, so no entry is ever in
//!   the hands of two workers. Its queue stays in the durable outbox and the
//!   successor takes it from the head, with the entries' attempt counts and
//!   retry times as they were.
//! - A channel whose new settings cannot be built (an unreadable `ca_file`
//!   removed after the reload was validated) keeps its running worker, and
//!   says so in the log.
//! - A removed channel's queued entries stay in the outbox, shown by the
//!   API, and go out if a channel of that name comes back.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::store::AlertStore;
use super::{build_channel, deliver, Channel, ChannelConfig};
use crate::reload::LiveConfig;

/// One wake-up per running channel: the evaluator wakes a channel's worker
/// when it queues entries for it, and a worker wakes the others when it
/// queues a `channel_failed` notice for them.
#[derive(Default)]
pub struct Wakers {
    map: RwLock<HashMap<String, Arc<Notify>>>,
}

impl Wakers {
    /// Wakes `channel`'s worker, if it runs.
    pub fn wake(&self, channel: &str) {
        if let Some(w) = self.read().get(channel) {
            w.notify_one();
        }
    }

    /// The running channels' names.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// `channel`'s wake-up, made on first use. A replaced worker's
    /// successor gets the same one, so a wake-up sent during the hand-over
    /// is not lost.
    fn of(&self, channel: &str) -> Arc<Notify> {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(channel.to_owned()).or_default())
    }

    fn remove(&self, channel: &str) {
        self.map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(channel);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Notify>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running worker.
struct Running {
    config: ChannelConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts, replaces and stops the workers as the config changes.
pub struct Supervisor {
    live: Arc<LiveConfig>,
    alerts: Arc<dyn AlertStore>,
    health: Arc<crate::metrics::Health>,
    wakers: Arc<Wakers>,
    running: HashMap<String, Running>,
}

impl Supervisor {
    /// A supervisor with no workers yet; `wakers` is shared with the
    /// evaluator.
    pub fn new(
        live: Arc<LiveConfig>,
        alerts: Arc<dyn AlertStore>,
        health: Arc<crate::metrics::Health>,
        wakers: Arc<Wakers>,
    ) -> Self {
        Supervisor {
            live,
            alerts,
            health,
            wakers,
            running: HashMap::new(),
        }
    }

    /// Runs the workers of `initial` (the channels of the running config,
    /// built at start so a bad one stops the start), then follows reloads
    /// until `stop`, when it waits for every worker to finish.
    pub async fn run(
        mut self,
        initial: Vec<(ChannelConfig, Arc<dyn Channel>)>,
        stop: CancellationToken,
    ) {
        let mut changes = self.live.subscribe();
        for (config, channel) in initial {
            self.start(config, channel, &stop);
        }
        // A reload applied while the coordinator was starting.
        let configs = changes.borrow_and_update().channels.clone();
        self.apply(&configs, &stop).await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
            let configs = changes.borrow_and_update().channels.clone();
            self.apply(&configs, &stop).await;
        }
        for (_, r) in self.running.drain() {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    fn start(
        &mut self,
        config: ChannelConfig,
        channel: Arc<dyn Channel>,
        stop: &CancellationToken,
    ) {
        let name = config.name.clone();
        let worker_stop = stop.child_token();
        let worker = deliver::Worker {
            send_timeout: config.timeout(),
            store: Arc::clone(&self.alerts),
            wake: self.wakers.of(&name),
            wakers: Arc::clone(&self.wakers),
            channel,
            health: Arc::clone(&self.health),
        };
        let task = tokio::spawn(worker.run(worker_stop.clone()));
        self.running.insert(
            name,
            Running {
                config,
                stop: worker_stop,
                task,
            },
        );
    }

    /// Brings the workers in line with `configs`.
    async fn apply(&mut self, configs: &[ChannelConfig], stop: &CancellationToken) {
        let mut starting = Vec::new();
        for c in configs {
            if self.running.get(&c.name).is_some_and(|r| r.config == *c) {
                continue;
            }
            match build_channel(c) {
                Ok(channel) => starting.push((c.clone(), channel)),
                Err(e) => tracing::error!(channel = %c.name, error = %e,
                    "the reloaded channel cannot be built; its running settings stay (if any)"),
            }
        }
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|n| !configs.iter().any(|c| &c.name == *n))
            .cloned()
            .collect();
        // Stop every outgoing worker first, then wait for them together: each
        // finishes the send it is in.
        let outgoing: Vec<Running> = starting
            .iter()
            .map(|(c, _)| &c.name)
            .chain(&removed)
            .filter_map(|n| self.running.remove(n))
            .collect();
        for r in &outgoing {
            r.stop.cancel();
        }
        for r in outgoing {
            let _ = r.task.await;
        }
        for name in removed {
            self.wakers.remove(&name);
            tracing::info!(channel = %name,
                "channel removed by a reload; its queued notifications stay in the outbox");
        }
        for (config, channel) in starting {
            tracing::info!(channel = %config.name, kind = config.kind.as_str(),
                "channel (re)started with its reloaded settings");
            self.start(config, channel, stop);
        }
    }
}
