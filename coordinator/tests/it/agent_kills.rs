//! An agent killed with SIGKILL 50 times at random moments (some while it
//! opens its spool, some mid-flush, some mid-send), restarted at once each
//! time, while it probes 10 checks every second. Afterwards:
//! - every restart opened its spool: nothing was quarantined, and the
//!   numbering only moved forward;
//! - nothing was sent again as new: every seq the agent numbered is stored
//!   once or still spooled, and no window was reported under two seqs;
//! - nothing was lost beyond the window in memory: every request the target
//!   saw is in a stored window, unless it came in the last moments before a
//!   kill (a result recorded after its window's end, because the recorder
//!   rolled late on a busy machine, is found in the window before).

use std::path::Path;
use std::time::Duration;

use vantage_coordinator::store::{SledStore, Store as _};

use crate::support::*;

const KILLS: usize = 50;
const CHECKS: usize = 10;
/// How long an agent lives before its kill: uniform in this range, ms. The
/// short ones hit start-up (spool open, connect); the long ones leave
/// results that must all be stored.
const LIFE_MS: (u64, u64) = (100, 6_000);
/// What a kill may lose: results in the open 1 s window, and of a window
/// closed at most a flush ago. A request's result is in the window of its
/// completion (at most the 500 ms timeout after it arrived), which closes
/// within 1 s and is on disk a flush later: requests older than this at the
/// kill must be stored.
const IN_MEMORY_MS: i64 = 2_000;
/// Longest time from a request's arrival at the target to its result.
const TIMEOUT_MS: i64 = 500;
/// A kill's time is taken once the agent is reaped, but a request it sent
/// just before may be seen by the target (a task on this busy test runtime)
/// a little later. Requests seen this soon after a kill are not checked (the
/// next life, once connected, may send some of them too).
const SETTLE_MS: i64 = 250;

/// The `next_seq` of a log's "spool opened" line, if the agent got that far.
fn opened_at_seq(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains("spool opened"))?;
    let rest = &line[line.find("next_seq=")? + "next_seq=".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_agent_kills_lose_only_the_window_in_memory() {
    // Printed, so a failing run can be replayed.
    let seed = std::env::var("VANTAGE_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64 | 1);
    eprintln!("agent kills: seed {seed} (VANTAGE_KILL_SEED to replay)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let checks: Vec<String> = (0..CHECKS).map(|i| format!("c{i}")).collect();
    let check_toml = target.checks_toml(&checks, &["eu"], "1s", "500ms");
    let config = write_config(dir.path(), &format!("{LOOPBACK_SERVER}\n{check_toml}"));
    agent_bin();
    let spool_dir = dir.path().join("spool");
    let (mut coordinator, grpc, http) = start_coordinator(&config);
    let log = |life: usize| dir.path().join(format!("agent-{life}.log"));

    let mut kills_ms = Vec::new();
    for life in 0..KILLS {
        let agent = start_agent_logged(grpc, "eu", "agent-eu", &spool_dir, &log(life));
        let lives = rng.between(LIFE_MS.0, LIFE_MS.1);
        tokio::time::sleep(Duration::from_millis(lives)).await;
        // SIGKILL, then restart at once, as a supervisor would. The time is
        // taken once it is reaped: it sends nothing after that.
        drop(agent);
        kills_ms.push(now_ms());
    }
    let last = KILLS;
    let mut agent = start_agent_logged(grpc, "eu", "agent-eu", &spool_dir, &log(last));
    // Its backlog drains and it runs a few seconds more.
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The coordinator's counters, while the agent is still connected (the
    // backlog of all lives is in by now).
    let agents = get_json(http, "/api/v1/agents").await;
    terminate("the last agent", &mut agent, Duration::from_secs(20));
    terminate("the coordinator", &mut coordinator, Duration::from_secs(20));

    // Every restart opened its spool, and its numbering went only forward.
    let mut opened = 0;
    let mut previous = 0;
    for life in 0..=last {
        let text = std::fs::read_to_string(log(life)).unwrap_or_default();
        for bad in ["COULD NOT BE OPENED", "in use by another process", "ERROR"] {
            assert!(!text.contains(bad), "life {life} logged {bad:?}:\n{text}");
        }
        if let Some(next_seq) = opened_at_seq(&log(life)) {
            assert!(
                next_seq >= previous,
                "life {life} opened its spool at seq {next_seq}, below {previous}"
            );
            previous = next_seq;
            opened += 1;
        }
    }
    assert!(
        opened_at_seq(&log(last)).is_some(),
        "the last agent did not open its spool"
    );
    eprintln!(
        "{opened} of {} lives opened the spool before their kill",
        last + 1
    );

    // The coordinator counted no window twice; batches resent under their
    // own seq (an ack lost with a kill) are harmless and only reported.
    let info = agents["agents"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == "agent-eu"))
        .cloned()
        .unwrap_or_else(|| panic!("agent-eu not in {agents}"));
    eprintln!(
        "duplicate batches {}, rewritten windows {}",
        info["duplicate_batches_total"], info["rewritten_windows_total"]
    );
    assert_eq!(info["rewritten_windows_total"], 0, "{info}");

    let store = SledStore::open(&dir.path().join("data"), 8 << 20).unwrap();
    let spool = vantage_agent::spool::Spool::open(&spool_dir, 64 << 20).unwrap();
    assert_eq!(spool.dropped_windows(), 0);
    let (numbered, _) = assert_every_seq_accounted_for(&store, &spool, "agent-eu");
    assert!(numbered >= 100, "only {numbered} batches");

    // Every request made earlier than IN_MEMORY_MS before the kill that ended
    // its agent (or made by the last agent, which stopped gracefully) is in a
    // stored window: the window of its arrival, or of its completion at most
    // the timeout later.
    let (stored, stored_attempts) = stored_starts(&store, &checks, "eu");
    let arrivals = target.arrivals();
    // A result goes into the window open when it is recorded; on a busy
    // machine the recorder may roll a window late (the result lands in the
    // window before its arrival's) or take a result late (it lands after
    // its completion's). Such a window holds more attempts than requests
    // arrived in it: the surplus covers those results.
    let mut attempts_in: std::collections::HashMap<(String, i64), u64> = Default::default();
    for check in &checks {
        for w in store.windows_since(check, 0).unwrap() {
            if w.region == "eu" {
                let w = w.window.unwrap();
                *attempts_in
                    .entry((check.clone(), w.start_unix_ms))
                    .or_default() += w.attempts;
            }
        }
    }
    let mut arrived_in: std::collections::HashMap<(String, i64), u64> = Default::default();
    for a in &arrivals {
        *arrived_in
            .entry((a.check.clone(), a.at_ms - a.at_ms.rem_euclid(1000)))
            .or_default() += 1;
    }
    let late_roll = |a: &Arrival| {
        let done = a.at_ms + TIMEOUT_MS;
        [
            a.at_ms - a.at_ms.rem_euclid(1000) - 1000,
            done - done.rem_euclid(1000) + 1000,
        ]
        .into_iter()
        .any(|start| {
            let key = (a.check.clone(), start);
            attempts_in.get(&key).copied().unwrap_or(0) > arrived_in.get(&key).copied().unwrap_or(0)
        })
    };
    let (mut must, mut lost) = (0, 0);
    let mut missing = Vec::new();
    for a in &arrivals {
        // The kill that ended the life that made it.
        let kill = kills_ms.iter().copied().find(|&k| k + SETTLE_MS > a.at_ms);
        let covered = in_stored_window(&stored, a, TIMEOUT_MS) || late_roll(a);
        let in_memory = kill.is_some_and(|k| k - a.at_ms <= IN_MEMORY_MS);
        if !in_memory {
            must += 1;
            if !covered {
                missing.push((a.check.clone(), a.at_ms, kill.map(|k| k - a.at_ms)));
            }
        } else if !covered {
            lost += 1;
        }
    }
    eprintln!(
        "{} requests: {must} had to be stored, {lost} lost with a kill; {stored_attempts} attempts stored",
        arrivals.len()
    );
    if !missing.is_empty() {
        // The log of each life that lost one: when its windows reached the
        // spool, and whether any closed or stored late.
        let mut lives: Vec<usize> = missing
            .iter()
            .map(|(_, at, _)| {
                kills_ms
                    .iter()
                    .take_while(|&&k| k + SETTLE_MS <= *at)
                    .count()
            })
            .collect();
        lives.dedup();
        for life in lives {
            let text = std::fs::read_to_string(log(life)).unwrap_or_default();
            eprintln!(
                "--- life {life} (killed at {:?}):\n{text}",
                kills_ms.get(life)
            );
        }
    }
    assert!(
        missing.is_empty(),
        "{} requests lost beyond the window in memory (check, unix ms, ms before the kill): {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    // Never counted twice: every stored attempt is a request the target saw.
    assert!(stored_attempts <= arrivals.len() as u64);
    // The run had substance: hundreds of requests were old enough at their
    // kill to be checked (about half of them, with these life times).
    assert!(
        must >= 300,
        "only {must} of {} requests checked",
        arrivals.len()
    );
}
