//! Every phase has a deadline (issue 5): a port that drops SYNs, a TLS server
//! that never answers the handshake and an HTTP server that never sends
//! headers each end as class `timeout`, naming the phase, within the check's
//! timeout plus 200 ms — 100 runs each, ten at a time. (A DNS server that
//! never answers is tested end to end with the CLI in a network namespace:
//! `coordinator/tests/it/netfault.rs`.)

use std::time::{Duration, Instant};

use vantage_proto::spec::{HttpSpec, TcpSpec, TlsSpec};
use vantage_proto::v1::ErrorClass;

use super::testkit;
use super::{http::HttpProbe, tcp::TcpProbe, tls::TlsProbe, Probe};

const TIMEOUT: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(200);
const RUNS: usize = 100;
const AT_ONCE: usize = 10;

/// Runs `make()` `RUNS` times, `AT_ONCE` at a time; checks each outcome.
async fn hundred_runs(phase: &str, make: impl Fn() -> Box<dyn Probe>) {
    let mut worst = Duration::ZERO;
    for _ in 0..RUNS / AT_ONCE {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..AT_ONCE {
            let probe = make();
            set.spawn(async move {
                let started = Instant::now();
                let out = probe.run().await;
                (out, started.elapsed())
            });
        }
        while let Some(joined) = set.join_next().await {
            let (out, took) = joined.unwrap();
            let err = out.error.expect("the probe must fail");
            assert_eq!(err.class, ErrorClass::Timeout, "{phase}: {err:?}");
            assert!(err.message.contains(phase), "{phase}: {err:?}");
            assert!(
                took <= TIMEOUT + SLACK,
                "{phase}: finished after {took:?}, timeout {TIMEOUT:?}"
            );
            worst = worst.max(took);
        }
    }
    eprintln!("{phase}: {RUNS} runs, slowest {worst:?} (timeout {TIMEOUT:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_syn_times_out_in_connect() {
    let hole = testkit::Blackhole::new().await;
    let port = hole.addr.port();
    hundred_runs("connect", || {
        Box::new(TcpProbe::new(
            TcpSpec {
                host: "127.0.0.1".into(),
                port,
            },
            TIMEOUT,
            testkit::open(),
        ))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_server_times_out_in_the_handshake() {
    let addr = testkit::silent_server().await;
    hundred_runs("tls handshake", || {
        Box::new(
            TlsProbe::new(
                TlsSpec {
                    host: "127.0.0.1".into(),
                    port: addr.port(),
                    server_name: None,
                    ca_file: None,
                },
                TIMEOUT,
                testkit::open(),
            )
            .unwrap(),
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_sends_headers_times_out_waiting() {
    let addr = testkit::silent_server().await;
    let url: url::Url = format!("http://{addr}/").parse().unwrap();
    hundred_runs("waiting", || {
        Box::new(HttpProbe::new(HttpSpec::get(url.clone()), TIMEOUT, testkit::open()).unwrap())
    })
    .await;
}
