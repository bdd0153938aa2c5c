//! Malformed and hostile gRPC input is rejected with a clear status, nothing is
//! stored from it, and the coordinator keeps serving. Valid batches are acked
//! once stored, and a resent batch is acked again without being counted twice.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use vantage_proto::histogram;
use vantage_proto::v1::{
    self, agent_message, coordinator_message, AgentMessage, CoordinatorMessage,
};

use crate::support::*;

const CONFIG: &str = r#"version = 1

[server]
grpc_listen = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
data_dir = "data"
window = "1s"

[[check]]
name = "db"
kind = "tcp"
host = "127.0.0.1"
port = 9
regions = ["eu"]
interval = "1h"
"#;

struct Session {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<CoordinatorMessage>,
}

async fn open(grpc: SocketAddr, first: AgentMessage) -> Result<Session, tonic::Status> {
    let mut client = v1::fleet_client::FleetClient::connect(format!("http://{grpc}"))
        .await
        .expect("dial coordinator");
    let (tx, out) = mpsc::channel(8);
    tx.send(first).await.unwrap();
    let rx = client.session(ReceiverStream::new(out)).await?.into_inner();
    Ok(Session { tx, rx })
}

fn hello(agent: &str, region: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(v1::Hello {
            agent: agent.into(),
            region: region.into(),
            version: "test".into(),
            capabilities: vec!["tcp".into()],
            spool_dropped_windows_total: 0,
        })),
    }
}

fn batch(seq: u64, check: &str, histogram_bytes: Vec<u8>) -> AgentMessage {
    batch_seconds_ago(seq, check, histogram_bytes, 1)
}

/// A batch with one window of `check`, `ago` whole seconds in the past.
fn batch_seconds_ago(seq: u64, check: &str, histogram_bytes: Vec<u8>, ago: i64) -> AgentMessage {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    AgentMessage {
        msg: Some(agent_message::Msg::Results(v1::ResultBatch {
            seq,
            spool_dropped_windows_total: 0,
            windows: vec![v1::Window {
                check: check.into(),
                start_unix_ms: now - now % 1000 - 1000 * ago,
                duration_ms: 1000,
                attempts: 1,
                successes: 1,
                phases: vec![v1::PhaseHistogram {
                    phase: v1::Phase::Total as i32,
                    histogram: histogram_bytes,
                }],
                ..Default::default()
            }],
        })),
    }
}

fn good_histogram() -> Vec<u8> {
    let mut h = histogram::new_latency();
    histogram::record_micros(&mut h, 1500);
    histogram::encode(&h)
}

/// Reads until the stream ends with an error and returns its status.
async fn expect_error(s: &mut Session) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await {
            Err(_) => panic!("no error within 10 s"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("stream ended without an error"),
            Ok(Err(status)) => return status,
        }
    }
}

async fn next_msg(s: &mut Session) -> coordinator_message::Msg {
    tokio::time::timeout(Duration::from_secs(10), s.rx.message())
        .await
        .expect("message within 10 s")
        .expect("stream ok")
        .expect("stream open")
        .msg
        .expect("message body")
}

/// Sends a gRPC frame whose payload is not protobuf at all, over a raw HTTP/2
/// connection, and returns the grpc-status the server answered with.
async fn raw_garbage_frame(grpc: SocketAddr) -> String {
    let tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let payload = [0xffu8, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    let req = hyper::Request::post(format!("http://{grpc}/vantage.v1.Fleet/Session"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_owned();
    }
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("response within 10 s")
        .unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    trailers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "missing".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_rejected_and_valid_batches_are_acked_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, grpc, http) = start_coordinator(&write_config(dir.path(), CONFIG));

    // Bytes that are not a protobuf message.
    let status = raw_garbage_frame(grpc).await;
    assert_ne!(status, "0", "garbage must not be accepted");
    assert_ne!(status, "missing");

    // A bad agent name in Hello.
    let err = open(grpc, hello("bad name!", "eu")).await.err().unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("agent name"), "{}", err.message());

    // A first message that is not Hello.
    let beat = AgentMessage {
        msg: Some(agent_message::Msg::Heartbeat(v1::Heartbeat {
            sent_unix_ms: 1,
            spool_pending_batches: 0,
        })),
    };
    let err = open(grpc, beat).await.err().unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A histogram that is not HdrHistogram: the session is ended, nothing stored.
    let mut s = open(grpc, hello("agent-1", "eu")).await.unwrap();
    assert!(matches!(
        next_msg(&mut s).await,
        coordinator_message::Msg::Welcome(_)
    ));
    s.tx.send(batch(1, "db", b"\x1c\x84\x93\x14garbage".to_vec()))
        .await
        .unwrap();
    let err = expect_error(&mut s).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("HdrHistogram"), "{}", err.message());

    // A region reporting a check that does not run there (so was never
    // assigned to it): the window is dropped, not stored, and the batch
    // acknowledged, so the agent does not resend it forever.
    let mut s = open(grpc, hello("agent-us", "us")).await.unwrap();
    assert!(matches!(
        next_msg(&mut s).await,
        coordinator_message::Msg::Welcome(_)
    ));
    s.tx.send(batch(1, "db", good_histogram())).await.unwrap();
    let ack = loop {
        if let coordinator_message::Msg::Ack(a) = next_msg(&mut s).await {
            break a;
        }
    };
    assert_eq!(ack.seq, 1);
    let agents = get_json(http, "/api/v1/agents").await;
    let us = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "agent-us")
        .unwrap()
        .clone();
    assert_eq!(us["rejected_windows_total"], 1, "{us}");
    drop(s);

    let c = get_json(http, "/api/v1/checks/db").await;
    assert!(
        c["regions"].as_array().unwrap().is_empty(),
        "nothing stored: {c}"
    );

    // Still serving: a valid session is welcomed, assigned and acked.
    let mut s = open(grpc, hello("agent-1", "eu")).await.unwrap();
    let coordinator_message::Msg::Welcome(w) = next_msg(&mut s).await else {
        panic!("expected Welcome")
    };
    assert_eq!(w.last_stored_seq, 0);
    assert_eq!(w.window_ms, 1000);
    let coordinator_message::Msg::Assignment(a) = next_msg(&mut s).await else {
        panic!("expected Assignment")
    };
    assert_eq!(a.checks.len(), 1);
    assert_eq!(a.checks[0].name, "db");
    for _ in 0..2 {
        // The same batch twice, as after a lost ack: both acked, stored once.
        s.tx.send(batch(1, "db", good_histogram())).await.unwrap();
        let coordinator_message::Msg::Ack(ack) = next_msg(&mut s).await else {
            panic!("expected Ack")
        };
        assert_eq!(ack.seq, 1);
    }
    let c = get_json(http, "/api/v1/checks/db").await;
    assert_eq!(c["regions"][0]["attempts"], 1, "{c}");
    let (status, body) = http_get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // A reconnecting agent learns what is stored, so it never reuses seq 1.
    drop(s);
    let mut s = open(grpc, hello("agent-1", "eu")).await.unwrap();
    let coordinator_message::Msg::Welcome(w) = next_msg(&mut s).await else {
        panic!("expected Welcome")
    };
    assert_eq!(w.last_stored_seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_stored_with_cumulative_acks_and_a_bad_batch_keeps_those_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, grpc, http) = start_coordinator(&write_config(dir.path(), CONFIG));
    let mut s = open(grpc, hello("agent-1", "eu")).await.unwrap();
    assert!(matches!(
        next_msg(&mut s).await,
        coordinator_message::Msg::Welcome(_)
    ));
    // 40 batches back to back, as an agent draining its backlog sends them
    // (the coordinator stores what has arrived with one flush), then one
    // with a broken histogram.
    let sender = s.tx.clone();
    let sending = tokio::spawn(async move {
        for seq in 1..=40 {
            sender
                .send(batch_seconds_ago(
                    seq,
                    "db",
                    good_histogram(),
                    41 - seq as i64,
                ))
                .await
                .unwrap();
        }
        sender
            .send(batch(41, "db", b"\x1c\x84\x93\x14garbage".to_vec()))
            .await
            .unwrap();
    });
    // Acks are cumulative and in order; the last one covers seq 40; then
    // the session ends with the bad batch's error.
    let mut acked = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.rx.message()).await {
            Err(_) => panic!("stalled after ack {acked}"),
            Ok(Ok(Some(CoordinatorMessage {
                msg: Some(coordinator_message::Msg::Ack(a)),
            }))) => {
                assert!(a.seq > acked && a.seq <= 40, "ack {} after {acked}", a.seq);
                acked = a.seq;
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => panic!("stream ended without an error"),
            Ok(Err(status)) => break status,
        }
    };
    sending.await.unwrap();
    assert_eq!(acked, 40);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let c = get_json(http, "/api/v1/checks/db?window=1h").await;
    assert_eq!(c["regions"][0]["attempts"], 40, "{c}");
    assert_eq!(c["regions"][0]["windows"], 40, "{c}");
    let mut s = open(grpc, hello("agent-1", "eu")).await.unwrap();
    let coordinator_message::Msg::Welcome(w) = next_msg(&mut s).await else {
        panic!("expected Welcome")
    };
    assert_eq!(w.last_stored_seq, 40);
}

/// Issue 9: agents report their version; one outside the coordinator's
/// series is still served, but warned about in the log and marked in the
/// API and `/metrics`. The Welcome carries the coordinator's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_incompatible_version_is_served_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coordinator.log");
    let (_coord, grpc, http) =
        start_coordinator_with(&write_config(dir.path(), CONFIG), &[], Some(&log));
    let ours = vantage_proto::build_info::VERSION;
    let mut sessions = Vec::new();
    for (agent, version) in [("same-series", ours), ("next-major", "9.0.0")] {
        let mut first = hello(agent, "eu");
        if let Some(agent_message::Msg::Hello(h)) = first.msg.as_mut() {
            h.version = version.into();
        }
        let mut s = open(grpc, first).await.expect("served");
        let coordinator_message::Msg::Welcome(w) = next_msg(&mut s).await else {
            panic!("expected Welcome")
        };
        assert_eq!(w.coordinator_version, ours);
        sessions.push(s);
    }
    let agents = get_json(http, "/api/v1/agents").await;
    let flag = |name: &str| {
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| (a["version"].clone(), a["version_compatible"].clone()))
            .unwrap()
    };
    assert_eq!(flag("same-series"), (ours.into(), true.into()), "{agents}");
    assert_eq!(
        flag("next-major"),
        ("9.0.0".into(), false.into()),
        "{agents}"
    );
    let (_, metrics) = http_request(http, "GET", "/metrics", None, Some(TEST_ADMIN_TOKEN)).await;
    assert!(
        metrics.contains(
            "vantage_agent_info{agent=\"next-major\",region=\"eu\",version=\"9.0.0\",compatible=\"false\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "vantage_build_info{{version=\"{ours}\",commit=\"{}\"",
        vantage_proto::build_info::COMMIT
    )));
    let logged = std::fs::read_to_string(&log).unwrap();
    let warning = logged
        .lines()
        .find(|l| l.contains("incompatible version") && l.contains("next-major"))
        .expect("no warning about the incompatible agent");
    assert!(
        warning.contains("version 9.0.0 is not compatible with"),
        "{warning}"
    );
    assert!(
        !logged
            .lines()
            .any(|l| l.contains("incompatible version") && l.contains("same-series")),
        "the compatible agent was warned about"
    );
    drop(sessions);
}
