//! Issue 6: TLS on both listeners, agents that authenticate, and results only
//! for assigned checks. Real processes, real TLS with a generated CA, and a
//! hand-made gRPC client where the agent binary would not misbehave.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use vantage_proto::histogram;
use vantage_proto::v1::{
    self, agent_message, coordinator_message, AgentMessage, CoordinatorMessage,
};

use crate::support::*;

struct Session {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<CoordinatorMessage>,
}

/// Opens a session as a hand-made agent: `token` as bearer metadata, `hello`
/// as the first message; over TLS (trusting the test CA) when `grpc` is a
/// TLS listener.
async fn open(
    grpc: SocketAddr,
    token: Option<&str>,
    agent: &str,
    region: &str,
) -> Result<Session, tonic::Status> {
    open_with(grpc, None, token, agent, region).await
}

/// [`open`], presenting the client certificate `client` (certificate PEM,
/// key PEM) over TLS. A failed dial is `Unavailable`.
async fn open_with(
    grpc: SocketAddr,
    client: Option<&(String, String)>,
    token: Option<&str>,
    agent: &str,
    region: &str,
) -> Result<Session, tonic::Status> {
    let channel = if is_tls(grpc) {
        let mut tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
            tonic::transport::Certificate::from_pem(test_ca().ca_pem.clone()),
        );
        if let Some((cert, key)) = client {
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        tonic::transport::Endpoint::from_shared(format!("https://{grpc}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("dial: {e:?}")))?
    } else {
        tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .expect("dial coordinator")
    };
    let mut client = v1::fleet_client::FleetClient::new(channel);
    let (tx, out) = mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(v1::Hello {
            agent: agent.into(),
            region: region.into(),
            version: "test".into(),
            capabilities: vec!["tcp".into()],
            spool_dropped_windows_total: 0,
        })),
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(out));
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let rx = client.session(request).await?.into_inner();
    Ok(Session { tx, rx })
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

/// Welcome, then the first Assignment's check names.
async fn welcome_and_assignment(s: &mut Session) -> Vec<String> {
    assert!(matches!(
        next_msg(s).await,
        coordinator_message::Msg::Welcome(_)
    ));
    let coordinator_message::Msg::Assignment(a) = next_msg(s).await else {
        panic!("expected Assignment")
    };
    a.checks.into_iter().map(|c| c.name).collect()
}

/// A batch with one good window for each of `checks`, a second ago.
fn batch(seq: u64, checks: &[&str]) -> AgentMessage {
    let now = now_ms();
    let mut h = histogram::new_latency();
    histogram::record_micros(&mut h, 1500);
    let bytes = histogram::encode(&h);
    AgentMessage {
        msg: Some(agent_message::Msg::Results(v1::ResultBatch {
            seq,
            spool_dropped_windows_total: 0,
            windows: checks
                .iter()
                .map(|c| v1::Window {
                    check: (*c).into(),
                    start_unix_ms: now - now % 1000 - 1000,
                    duration_ms: 1000,
                    attempts: 1,
                    successes: 1,
                    phases: vec![v1::PhaseHistogram {
                        phase: v1::Phase::Total as i32,
                        histogram: bytes.clone(),
                    }],
                    ..Default::default()
                })
                .collect(),
        })),
    }
}

/// `[[check]]` tables of tcp checks `names` in `region`, every hour (the
/// hand-made agents never run them).
fn tcp_checks(names: &[&str], region: &str) -> String {
    names
        .iter()
        .map(|n| {
            format!("\n[[check]]\nname = \"{n}\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 9\nregions = [\"{region}\"]\ninterval = \"1h\"\n")
        })
        .collect()
}

/// Windows stored for `check`, by region, according to the API.
async fn stored_attempts(http: SocketAddr, check: &str) -> serde_json::Value {
    get_json(http, &format!("/api/v1/checks/{check}?window=1h")).await["regions"].clone()
}

#[test]
fn plaintext_off_loopback_is_refused_at_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "version = 1\n\n[server]\ngrpc_listen = \"0.0.0.0:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    );
    let out = Command::new(coordinator_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("vantage.toml:4:1: server.grpc_listen: 0.0.0.0:0 is not a loopback address, and plaintext is only allowed on loopback: add [server.tls]"),
        "{stderr}"
    );
    // Open enrollment off loopback is refused too.
    assert!(
        stderr.contains("agents must authenticate: add an [[agent]] table"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));

    // The HTTP API off loopback, likewise; with TLS both are accepted.
    let config = write_config(
        dir.path(),
        "version = 1\n\n[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"0.0.0.0:0\"\ndata_dir = \"data\"\n",
    );
    let out = Command::new(coordinator_bin())
        .args(["validate"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(":5:1: server.http_listen: 0.0.0.0:0 is not a loopback address"),
        "{stderr}"
    );
    let tls = tls_toml(dir.path(), &[]);
    let config = write_config(
        dir.path(),
        &format!("version = 1\n\n[server]\ngrpc_listen = \"0.0.0.0:0\"\nhttp_listen = \"0.0.0.0:0\"\ndata_dir = \"data\"\n{tls}{}", agents_toml(&[("a", "eu")])),
    );
    let out = Command::new(coordinator_bin())
        .args(["validate"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreadable_tls_files_are_named_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n[server.tls]\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"\n",
            LOOPBACK_SERVER
        ),
    );
    let out = Command::new(coordinator_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.tls.cert_file") && stderr.contains("missing.crt"),
        "{stderr}"
    );

    // A key that is not PEM: named, and its content never echoed.
    tls_toml(dir.path(), &[]);
    std::fs::write(
        dir.path().join("coordinator.key"),
        "SECRET-CANARY not a key\n",
    )
    .unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}\n[server.tls]\ncert_file = \"coordinator.crt\"\nkey_file = \"coordinator.key\"\n",
            LOOPBACK_SERVER
        ),
    );
    let out = Command::new(coordinator_bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("server.tls.key_file") && stderr.contains("coordinator.key"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET-CANARY"), "{stderr}");
}

/// A TLS coordinator config (certificate in `dir`) admitting `agent-tls`
/// in `eu`, with one HTTP check, `web`, on `target`.
fn tls_config_with_one_agent(dir: &std::path::Path, target: &RegionTarget) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "{}{}{}\n{}",
            LOOPBACK_SERVER,
            tls_toml(dir, &[]),
            agents_toml(&[("agent-tls", "eu")]),
            target.checks_toml(&["web".to_owned()], &["eu"], "1s", "500ms"),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_tls_delivers_and_the_api_answers_only_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let config = tls_config_with_one_agent(dir.path(), &target);
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    assert!(is_tls(grpc) && is_tls(http));
    let log = dir.path().join("agent.log");
    let _agent = start_agent_logged(grpc, "eu", "agent-tls", &dir.path().join("spool"), &log);
    let stored = eventually(Duration::from_secs(30), || async {
        let regions = stored_attempts(http, "web").await;
        (regions[0]["attempts"].as_u64().unwrap_or(0) >= 2).then_some(regions)
    })
    .await;
    assert!(
        stored.is_some(),
        "no results over TLS within 30 s; agent log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let agents = get_json(http, "/api/v1/agents").await;
    assert_eq!(agents["agents"][0]["name"], "agent-tls", "{agents}");

    // Plain HTTP to the TLS API port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf))
        .await
        .expect("the server closes a plaintext connection");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&buf)
    );

    // Plaintext gRPC to the TLS gRPC port fails, and stores nothing.
    let plain = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut client = v1::fleet_client::FleetClient::new(channel);
        let (_tx, out) = mpsc::channel::<AgentMessage>(1);
        client
            .session(ReceiverStream::new(out))
            .await
            .map(|_| ())
            .map_err(|s| s.to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(15), plain).await;
    assert!(!matches!(result, Ok(Ok(()))), "plaintext gRPC was accepted");

    // The HTTPS API answers (http_exchange speaks TLS to it).
    let (status, body) = http_get(http, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

/// The leaf certificate (DER) a TLS listener serves to a new connection,
/// offering `alpn` (the gRPC listener speaks only h2).
async fn served_leaf(addr: SocketAddr, alpn: &[u8]) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = test_tls_connector_alpn(alpn)
        .connect(name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// The leaf certificate (DER) in `dir`'s `coordinator.crt`.
fn leaf_on_disk(dir: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    rustls_pki_types::CertificateDer::from_pem_file(dir.join("coordinator.crt"))
        .unwrap()
        .to_vec()
}

/// A renewed certificate is served by both listeners within seconds,
/// without a restart and without dropping the agent's session; files that
/// do not make an identity leave the last good one served, and the API says
/// why (naming the file, never its content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let config = tls_config_with_one_agent(dir.path(), &target);
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let _agent = start_agent_logged(
        grpc,
        "eu",
        "agent-tls",
        &dir.path().join("spool"),
        &dir.path().join("agent.log"),
    );
    let first = leaf_on_disk(dir.path());
    assert_eq!(served_leaf(http, b"http/1.1").await, first);
    assert_eq!(served_leaf(grpc, b"h2").await, first);
    let connected = eventually(Duration::from_secs(30), || async {
        let a = get_json(http, "/api/v1/agents").await;
        a["agents"][0]["connected_unix_ms"].as_i64()
    })
    .await
    .expect("the agent did not connect over TLS");
    let status = get_json(http, "/api/v1/config").await;
    let digest = |der: &[u8]| vantage_coordinator::api::auth::digest_hex(der);
    assert_eq!(status["tls"]["cert_sha256"], digest(&first), "{status}");
    assert_eq!(status["tls"]["reloads_total"], 0, "{status}");

    // Renewal: a new key and certificate written over the old files (the
    // certificate first, so for a moment the two do not match).
    tls_toml(dir.path(), &[]);
    let renewed = leaf_on_disk(dir.path());
    assert_ne!(renewed, first);
    let served = eventually(Duration::from_secs(15), || async {
        let (h, g) = (
            served_leaf(http, b"http/1.1").await,
            served_leaf(grpc, b"h2").await,
        );
        (h == renewed && g == renewed).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "{}",
        get_json(http, "/api/v1/config").await
    );
    let status = get_json(http, "/api/v1/config").await;
    assert_eq!(status["tls"]["cert_sha256"], digest(&renewed), "{status}");
    assert_eq!(status["tls"]["reloads_total"], 1, "{status}");
    assert!(status["tls"]["last_error"].is_null(), "{status}");

    // Files that do not make an identity: the renewed certificate stays.
    std::fs::write(
        dir.path().join("coordinator.key"),
        "SECRET-CANARY not a key\n",
    )
    .unwrap();
    let refused = eventually(Duration::from_secs(15), || async {
        let s = get_json(http, "/api/v1/config").await;
        s["tls"]["last_error"].as_str().map(str::to_owned)
    })
    .await
    .expect("the broken key file was not reported");
    assert!(
        refused.contains("server.tls.key_file") && !refused.contains("SECRET-CANARY"),
        "{refused}"
    );
    assert_eq!(served_leaf(http, b"http/1.1").await, renewed);
    assert_eq!(served_leaf(grpc, b"h2").await, renewed);

    // The agent's session lasted through it, and results still arrive.
    let before = stored_attempts(http, "web").await[0]["attempts"]
        .as_u64()
        .unwrap_or(0);
    let more = eventually(Duration::from_secs(15), || async {
        let now = stored_attempts(http, "web").await[0]["attempts"]
            .as_u64()
            .unwrap_or(0);
        (now >= before + 2).then_some(())
    })
    .await;
    assert!(more.is_some(), "no results after the renewal");
    let a = get_json(http, "/api/v1/agents").await;
    assert_eq!(a["agents"][0]["connected_unix_ms"], connected, "{a}");

    // Through this TLS accept loop the failed-authentication limit still
    // sees the peer's address.
    let mut codes = Vec::new();
    for _ in 0..12 {
        match open(grpc, Some("wrong"), "agent-tls", "eu").await {
            Err(e) => codes.push(e.code()),
            Ok(_) => panic!("a wrong token opened a session"),
        }
    }
    assert_eq!(codes[0], Code::Unauthenticated, "{codes:?}");
    assert_eq!(codes[11], Code::ResourceExhausted, "{codes:?}");
}

/// Whether `err` is the transport's failure (the server ended the TLS
/// handshake), not an answer of the coordinator's: tonic reports that as
/// unavailable, cancelled, unknown or internal depending on when the
/// connection broke.
fn refused_in_handshake(err: &tonic::Status) -> bool {
    matches!(
        err.code(),
        Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
    )
}

/// Agents with client certificates (mTLS): the agent binary connects with
/// its certificate and no token, and its results are stored. A certificate
/// naming another agent, one from a CA the coordinator does not trust, and
/// none at all (without a token) are all refused; a token agent still works
/// on the same listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_authenticate_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let target = RegionTarget::start().await;
    let agents_ca = AgentCa::new("Vantage Agents CA");
    std::fs::write(dir.path().join("agents-ca.pem"), &agents_ca.pem).unwrap();
    let (cert, key) = agents_ca.client_cert(&["agent-m"]);
    std::fs::write(dir.path().join("agent-m.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("agent-m.key"), &key).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{LOOPBACK_SERVER}{}client_ca_file = \"agents-ca.pem\"\n\n[[agent]]\nname = \"agent-m\"\nregion = \"eu\"\n{}\n{}",
            tls_toml(dir.path(), &[]),
            agents_toml(&[("agent-t", "eu")]),
            target.checks_toml(&["web".to_owned()], &["eu"], "1s", "500ms"),
        ),
    );
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);

    // The agent binary, with its certificate and no token.
    let log = dir.path().join("agent-m.log");
    let mut cmd = agent_command(grpc, "eu", "agent-m", &dir.path().join("spool"));
    cmd.env_remove("VANTAGE_AGENT_TOKEN")
        .arg("--cert-file")
        .arg(dir.path().join("agent-m.crt"))
        .arg("--key-file")
        .arg(dir.path().join("agent-m.key"))
        .stderr(std::fs::File::create(&log).unwrap());
    let _agent = Proc {
        child: cmd.spawn().unwrap(),
        spool: None,
    };
    let stored = eventually(Duration::from_secs(30), || async {
        let regions = stored_attempts(http, "web").await;
        (regions[0]["attempts"].as_u64().unwrap_or(0) >= 2).then_some(())
    })
    .await;
    assert!(
        stored.is_some(),
        "no results from the certificate agent; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The certificate names agent-m only.
    let m = (cert.clone(), key.clone());
    let err = open_with(grpc, Some(&m), None, "agent-t", "eu")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("client certificate names"),
        "{err:?}"
    );
    // A certificate for agent-m from a CA the coordinator does not trust:
    // the handshake fails.
    let stranger = AgentCa::new("Someone Else's CA").client_cert(&["agent-m"]);
    let err = open_with(grpc, Some(&stranger), None, "agent-m", "eu")
        .await
        .err()
        .unwrap();
    assert!(refused_in_handshake(&err), "{err:?}");
    // Neither certificate nor token.
    let err = open_with(grpc, None, None, "agent-m", "eu")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");
    // A token agent on the same listener.
    let token = agent_token("agent-t");
    let mut s = open(grpc, Some(&token), "agent-t", "eu").await.unwrap();
    assert!(matches!(
        next_msg(&mut s).await,
        coordinator_message::Msg::Welcome(_)
    ));

    // The agents' CA replaced in place: new connections are checked against
    // the new one without a restart.
    let before = get_json(http, "/api/v1/config").await["tls"]["client_ca_sha256"].clone();
    assert!(before.is_string(), "{before}");
    let next_ca = AgentCa::new("Vantage Agents CA 2");
    std::fs::write(dir.path().join("agents-ca.pem"), &next_ca.pem).unwrap();
    let swapped = eventually(Duration::from_secs(15), || async {
        let now = get_json(http, "/api/v1/config").await["tls"]["client_ca_sha256"].clone();
        (now != before).then_some(())
    })
    .await;
    assert!(swapped.is_some(), "the new client CA was not picked up");
    let renewed = next_ca.client_cert(&["agent-m"]);
    let mut s = open_with(grpc, Some(&renewed), None, "agent-m", "eu")
        .await
        .expect("a certificate from the new CA is accepted");
    assert!(matches!(
        next_msg(&mut s).await,
        coordinator_message::Msg::Welcome(_)
    ));
    let err = open_with(grpc, Some(&m), None, "agent-m", "eu")
        .await
        .err()
        .unwrap();
    assert!(
        refused_in_handshake(&err),
        "the old CA's certificate: {err:?}"
    );
}

/// A loopback coordinator config admitting `agents` (name, region) with one
/// TCP check, `db`, in `eu`.
fn agents_with_db_check(dir: &std::path::Path, agents: &[(&str, &str)]) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "{}{}{}",
            LOOPBACK_SERVER,
            agents_toml(agents),
            tcp_checks(&["db"], "eu")
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_unauthenticated_and_the_agent_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = agents_with_db_check(dir.path(), &[("agent-1", "eu")]);
    agent_bin();
    let (_coordinator, grpc, http) = start_coordinator(&config);
    for token in [None, Some("wrong"), Some("test-agent-token-agent-2")] {
        let err = open(grpc, token, "agent-1", "eu").await.err().unwrap();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    // The right token is welcomed.
    let mut s = open(grpc, Some(&agent_token("agent-1")), "agent-1", "eu")
        .await
        .unwrap();
    assert_eq!(welcome_and_assignment(&mut s).await, ["db"]);
    drop(s);

    // A real agent with a wrong token: refused, logged as such, backing off.
    let log = dir.path().join("agent.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let _agent = Proc {
        child: agent_command(grpc, "eu", "agent-1", &dir.path().join("spool"))
            .env("VANTAGE_AGENT_TOKEN", "not-the-token-CANARY")
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap(),
        spool: None,
    };
    let refused = eventually(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("THE COORDINATOR REFUSED THIS AGENT")
            .then_some(text)
    })
    .await
    .expect("the agent logs the refusal");
    assert!(refused.contains("Unauthenticated"), "{refused}");
    assert!(
        !refused.contains("CANARY"),
        "the token reached the log:\n{refused}"
    );
    // One refusal, then a long wait: not a hot loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches("THE COORDINATOR REFUSED").count(), 1, "{text}");
    let agents = get_json(http, "/api/v1/agents").await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0, "{agents}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_agent_authentications_are_limited_per_address_and_a_valid_token_never_is() {
    use vantage_coordinator::api::auth::{FAILURE_BURST, FAILURE_REFILL};
    let dir = tempfile::tempdir().unwrap();
    let config = agents_with_db_check(dir.path(), &[("agent-1", "eu")]);
    let (_coordinator, grpc, _http) = start_coordinator(&config);
    // The burst: each wrong token is refused as unauthenticated.
    for i in 0..FAILURE_BURST {
        let err = open(grpc, Some(&format!("guess-{i}")), "agent-1", "eu")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::Unauthenticated, "attempt {i}: {err:?}");
    }
    // Past it, refused before the token counts, with when to retry.
    let err = open(grpc, Some("guess-more"), "agent-1", "eu")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let retry: u64 = err
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after: {err:?}"));
    assert!((1..=FAILURE_REFILL.as_secs()).contains(&retry), "{retry}");
    assert!(err.message().contains("too many failed"), "{err:?}");
    // The right token from the same address is still welcomed.
    let mut s = open(grpc, Some(&agent_token("agent-1")), "agent-1", "eu")
        .await
        .unwrap();
    assert_eq!(welcome_and_assignment(&mut s).await, ["db"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_presenting_another_agents_name_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = agents_with_db_check(dir.path(), &[("agent-a", "eu"), ("agent-b", "eu")]);
    agent_bin();
    let (mut coordinator, grpc, http) = start_coordinator(&config);
    // A's valid token, Hello as B.
    let err = open(grpc, Some(&agent_token("agent-a")), "agent-b", "eu")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("agent-a"), "{}", err.message());
    // A's token, its own name, another region than its pinned one.
    let err = open(grpc, Some(&agent_token("agent-a")), "agent-a", "us")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("pinned"), "{}", err.message());

    // The real agent binary, named B but holding A's token.
    let log = dir.path().join("agent.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let _agent = Proc {
        child: agent_command(grpc, "eu", "agent-b", &dir.path().join("spool"))
            .env("VANTAGE_AGENT_TOKEN", agent_token("agent-a"))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap(),
        spool: None,
    };
    let text = eventually(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("THE COORDINATOR REFUSED THIS AGENT")
            .then_some(text)
    })
    .await
    .expect("the agent logs the refusal");
    assert!(text.contains("PermissionDenied"), "{text}");
    let agents = get_json(http, "/api/v1/agents").await;
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0, "{agents}");
    assert_eq!(stored_attempts(http, "db").await, serde_json::json!([]));

    terminate("coordinator", &mut coordinator, Duration::from_secs(15));
    let store =
        vantage_coordinator::store::SledStore::open(&dir.path().join("data"), 1 << 20).unwrap();
    assert!(store.stored_seqs("agent-b").unwrap().is_empty());
    assert!(store.stored_seqs("agent-a").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_for_a_check_not_assigned_to_the_agent_are_dropped_the_rest_stored() {
    let dir = tempfile::tempdir().unwrap();
    let eu: Vec<String> = (0..8).map(|i| format!("eu{i}")).collect();
    let eu_refs: Vec<&str> = eu.iter().map(String::as_str).collect();
    let config = write_config(
        dir.path(),
        &format!(
            "{}{}{}{}",
            LOOPBACK_SERVER,
            agents_toml(&[("agent-a", "eu"), ("agent-b", "eu"), ("agent-c", "eu")]),
            tcp_checks(&eu_refs, "eu"),
            tcp_checks(&["us-only"], "us"),
        ),
    );
    let (mut coordinator, grpc, http) = start_coordinator(&config);
    // B first (it is assigned everything), then A takes its share; B's
    // share was never A's.
    let mut b = open(grpc, Some(&agent_token("agent-b")), "agent-b", "eu")
        .await
        .unwrap();
    assert_eq!(welcome_and_assignment(&mut b).await.len(), 8);
    let mut a = open(grpc, Some(&agent_token("agent-a")), "agent-a", "eu")
        .await
        .unwrap();
    let mine = welcome_and_assignment(&mut a).await;
    let theirs: Vec<&str> = eu_refs
        .iter()
        .copied()
        .filter(|c| !mine.iter().any(|m| m == c))
        .collect();
    assert!(!mine.is_empty() && !theirs.is_empty(), "mine {mine:?}");

    // One batch: A's own check, B's check, and a check of another region.
    a.tx.send(batch(1, &[mine[0].as_str(), theirs[0], "us-only"]))
        .await
        .unwrap();
    let ack = loop {
        match next_msg(&mut a).await {
            coordinator_message::Msg::Ack(ack) => break ack,
            _ => continue,
        }
    };
    // Acknowledged: the agent must not resend it forever.
    assert_eq!(ack.seq, 1);
    let own = stored_attempts(http, &mine[0]).await;
    assert_eq!(own[0]["attempts"], 1, "A's own window is stored: {own}");
    assert_eq!(
        stored_attempts(http, theirs[0]).await,
        serde_json::json!([])
    );
    assert_eq!(
        stored_attempts(http, "us-only").await,
        serde_json::json!([])
    );
    let agents = get_json(http, "/api/v1/agents").await;
    let entry = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "agent-a")
        .unwrap()
        .clone();
    assert_eq!(entry["rejected_windows_total"], 2, "{entry}");

    // A check once assigned stays reportable after a coordinator restart
    // (a backlog in the spool): C alone is assigned everything; after the
    // restart B comes first and C gets only its share, yet C's old windows
    // of B's share still land.
    drop(a);
    drop(b);
    eventually(Duration::from_secs(10), || async {
        let agents = get_json(http, "/api/v1/agents").await;
        agents["agents"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await
    .expect("sessions closed");
    let mut c = open(grpc, Some(&agent_token("agent-c")), "agent-c", "eu")
        .await
        .unwrap();
    assert_eq!(welcome_and_assignment(&mut c).await.len(), 8);
    drop(c);
    terminate("coordinator", &mut coordinator, Duration::from_secs(15));
    let (_coordinator, grpc, http) = start_coordinator(&config);
    let mut b = open(grpc, Some(&agent_token("agent-b")), "agent-b", "eu")
        .await
        .unwrap();
    assert_eq!(welcome_and_assignment(&mut b).await.len(), 8);
    let mut c = open(grpc, Some(&agent_token("agent-c")), "agent-c", "eu")
        .await
        .unwrap();
    let now_c = welcome_and_assignment(&mut c).await;
    let moved: Vec<&str> = eu_refs
        .iter()
        .copied()
        .filter(|x| !now_c.iter().any(|m| m == x))
        .collect();
    assert!(!moved.is_empty(), "C kept everything: {now_c:?}");
    let before = stored_attempts(http, moved[0]).await[0]["attempts"]
        .as_u64()
        .unwrap_or(0);
    c.tx.send(batch(1, &[moved[0]])).await.unwrap();
    let ack = loop {
        match next_msg(&mut c).await {
            coordinator_message::Msg::Ack(ack) => break ack,
            _ => continue,
        }
    };
    assert_eq!(ack.seq, 1);
    let backlog = stored_attempts(http, moved[0]).await;
    assert_eq!(backlog[0]["attempts"], before + 1, "{backlog}");
    assert!(backlog[0]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "agent-c"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_both_tokens_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = ("rotation-old-token", "rotation-new-token");
    let (old_s, new_s) = ("rotation-old-token-s", "rotation-new-token-s");
    std::fs::write(dir.path().join("agent.token"), format!("{new}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "{}{}\n[[agent]]\nname = \"agent-r\"\nsha256 = \"{}\"\ntoken = {{ file = \"agent.token\" }}\n\n[[agent]]\nname = \"agent-s\"\nsha256 = [\"{}\", \"{}\"]\n",
            LOOPBACK_SERVER,
            tcp_checks(&["db"], "eu"),
            sha256_hex(old),
            sha256_hex(old_s),
            sha256_hex(new_s),
        ),
    );
    let (_coordinator, grpc, _http) = start_coordinator(&config);
    for (agent, tokens) in [("agent-r", [old, new]), ("agent-s", [old_s, new_s])] {
        for token in tokens {
            let mut s = open(grpc, Some(token), agent, "eu")
                .await
                .unwrap_or_else(|e| panic!("{agent} with {token}: {e:?}"));
            assert!(!welcome_and_assignment(&mut s).await.is_empty());
        }
        let err = open(grpc, Some("rotation-other"), agent, "eu")
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
}
