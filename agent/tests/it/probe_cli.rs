//! `vantage-agent probe TARGET`: the one-shot check prints phases, status and TLS
//! facts, and its exit code says whether the check passed.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

async fn probe(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_vantage-agent"));
    cmd.arg("probe").args(args);
    tokio::time::timeout(std::time::Duration::from_secs(30), cmd.output())
        .await
        .expect("probe finished within 30 s")
        .unwrap()
}

/// A plain HTTP server answering 200 with a fixed body on every path.
async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"hello from the target\n"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TLS server whose self-signed certificate for `localhost` expired 10 days
/// ago. It completes handshakes and then closes.
async fn expired_tls_server() -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired.localhost");
    params.not_before = now - time::Duration::days(100);
    params.not_after = now - time::Duration::days(10) - time::Duration::hours(1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_probe_prints_status_and_phases_and_exits_0() {
    let addr = http_server().await;
    let out = probe(&[&format!("http://{addr}/health")]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("200"), "{text}");
    for phase in ["connect", "waiting", "total"] {
        assert!(text.contains(phase), "{phase} missing: {text}");
    }

    let out = probe(&["--json", &format!("http://{addr}/")]).await;
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["status"], 200, "{v}");
}

#[tokio::test]
async fn refused_connection_is_classified_and_exits_1() {
    // Bind then drop, so the port is closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let out = probe(&[&format!("tcp://{addr}"), "--timeout", "3s"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("connect"), "{text}");
}

#[tokio::test]
async fn expired_certificate_facts_are_reported() {
    let addr = expired_tls_server().await;
    let target = format!("tls://localhost:{}", addr.port());
    let out = probe(&["--json", &target]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "an expired certificate fails the check"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let text = v.to_string();
    // Facts are present even though verification failed: negative days left.
    assert!(
        text.contains("-10") || text.contains("-11"),
        "days left: {text}"
    );
    assert!(text.to_lowercase().contains("expired"), "{text}");
    assert!(text.contains("expired.localhost"), "{text}");
}

#[tokio::test]
async fn bad_target_is_an_input_error() {
    let out = probe(&["ftp://example.test/"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!out.stderr.is_empty());
}
