//! Test harness: processes that are killed on drop, a real HTTPS target with a
//! generated certificate chain, a minimal HTTP/1.1 GET for the API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A child process killed (SIGKILL) and reaped on drop, so a failing test leaves
/// nothing running.
pub struct Proc {
    pub child: Child,
    /// The agent's spool directory, removed with the process.
    pub spool: Option<tempfile::TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Path of the `vantage-agent` binary. Cargo only provides `CARGO_BIN_EXE_*` for
/// the package's own binaries. `cargo test --workspace` builds the agent binary
/// next to ours (the agent's own tests need it); it is used when it is newer
/// than every agent and proto source. Otherwise (`cargo test -p
/// vantage-coordinator` after an agent change) it is built here, once per run.
/// Call this before timing anything: a build can take minutes.
pub fn agent_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // tests run from target/<profile>/deps/it-<hash>
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let bin = profile_dir.join("vantage-agent");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let sources = [
            "agent/src",
            "agent/Cargo.toml",
            "proto/src",
            "proto/proto",
            "Cargo.lock",
        ];
        let newest_source = sources
            .iter()
            .filter_map(|s| newest_mtime(&workspace.join(s)))
            .max();
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        if built.is_none() || built < newest_source {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "vantage-agent",
                    "--bin",
                    "vantage-agent",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("running cargo build for vantage-agent");
            assert!(status.success(), "building vantage-agent failed");
        }
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// The newest modification time of a file or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vantage-coordinator"))
}

/// Starts the coordinator with `config` and waits for its "listening" line.
pub fn start_coordinator(config: &Path) -> (Proc, SocketAddr, SocketAddr) {
    start_coordinator_with(config, &[], None)
}

/// Like [`start_coordinator`], with extra environment variables (secrets) and,
/// when `log` is given, stderr appended to that file at trace level.
pub fn start_coordinator_with(
    config: &Path,
    envs: &[(&str, &str)],
    log: Option<&Path>,
) -> (Proc, SocketAddr, SocketAddr) {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("opening the coordinator log"),
        ),
        None => Stdio::inherit(),
    };
    let level = if log.is_some() { "trace" } else { "info" };
    if std::fs::read_to_string(config).is_ok_and(|t| t.contains("[server.tls]")) {
        TLS_APIS.lock().unwrap().insert(config.to_path_buf());
    }
    let mut child = Command::new(coordinator_bin())
        .args(["run", "--config"])
        .arg(config)
        .env("VANTAGE_LOG", level)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawning vantage-coordinator");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc { child, spool: None };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("vantage-coordinator listening ") {
                let mut grpc = None;
                let mut http = None;
                for part in rest.split_whitespace() {
                    if let Some(v) = part.strip_prefix("grpc=") {
                        grpc = v.parse::<SocketAddr>().ok();
                    }
                    if let Some(v) = part.strip_prefix("http=") {
                        http = v.parse::<SocketAddr>().ok();
                    }
                }
                let _ = tx.send((grpc.unwrap(), http.unwrap()));
            }
        }
    });
    let (grpc, http) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("coordinator did not report its addresses within 30 s");
    let mut tls_addrs = TLS_ADDRS.lock().unwrap();
    if TLS_APIS.lock().unwrap().contains(config) {
        tls_addrs.insert(http);
        tls_addrs.insert(grpc);
    } else {
        // A port a TLS coordinator of an earlier test had, given again by
        // the kernel: plaintext now.
        tls_addrs.remove(&http);
        tls_addrs.remove(&grpc);
    }
    drop(tls_addrs);
    (proc, grpc, http)
}

pub fn start_agent(grpc: SocketAddr, region: &str, name: &str) -> Proc {
    let spool = tempfile::tempdir().expect("spool dir");
    let mut proc = start_agent_with_spool(grpc, region, name, spool.path());
    proc.spool = Some(spool);
    proc
}

/// Starts an agent whose spool is `spool` (kept by the caller, so a restarted
/// agent finds it again).
pub fn start_agent_with_spool(grpc: SocketAddr, region: &str, name: &str, spool: &Path) -> Proc {
    start_agent_with_args(grpc, region, name, spool, &[])
}

/// Like [`start_agent_with_spool`], with extra `vantage-agent run` flags.
pub fn start_agent_with_args(
    grpc: SocketAddr,
    region: &str,
    name: &str,
    spool: &Path,
    extra: &[&str],
) -> Proc {
    let child = agent_command(grpc, region, name, spool)
        .args(extra)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning vantage-agent");
    Proc { child, spool: None }
}

/// Like [`start_agent_with_spool`], its log (info level) written to `log`.
pub fn start_agent_logged(
    grpc: SocketAddr,
    region: &str,
    name: &str,
    spool: &Path,
    log: &Path,
) -> Proc {
    let stderr = std::fs::File::create(log).expect("creating the agent log");
    let child = agent_command(grpc, region, name, spool)
        // When each window reached the spool, and windows closed late.
        .env("VANTAGE_LOG", "info,vantage_agent::recorder=debug")
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("spawning vantage-agent");
    Proc { child, spool: None }
}

/// `vantage-agent run` for `name` in `region` on `spool`, stdout discarded.
pub fn agent_command(grpc: SocketAddr, region: &str, name: &str, spool: &Path) -> Command {
    agent_command_in(None, grpc, region, name, spool)
}

/// [`agent_command`], inside network namespace `netns` when given.
pub fn agent_command_in(
    netns: Option<&str>,
    grpc: SocketAddr,
    region: &str,
    name: &str,
    spool: &Path,
) -> Command {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    };
    cmd.arg("run");
    if !is_tls(grpc) {
        cmd.arg("--coordinator").arg(format!("http://{grpc}"));
    } else {
        // Off loopback the agent only speaks TLS; the coordinator's
        // certificate comes from the test CA (see `tls_toml`).
        cmd.arg("--coordinator")
            .arg(format!("https://{grpc}"))
            .arg("--ca-file")
            .arg(test_ca().ca_file.as_path());
    }
    // Ignored by coordinators with open enrollment; `agents_toml` lists it.
    cmd.env("VANTAGE_AGENT_TOKEN", agent_token(name))
        .args(["--region", region, "--name", name])
        .arg("--spool-dir")
        .arg(spool)
        .env("VANTAGE_LOG", "info")
        // The test targets live on loopback and in the 10.231.0.0/16
        // namespaces: private addresses the agent refuses by default. The
        // egress tests override this.
        .env(EGRESS_ALLOW_ENV, "127.0.0.0/8,::1,10.0.0.0/8")
        .stdout(Stdio::null());
    cmd
}

/// The agent's environment variable for its egress allow-list.
pub const EGRESS_ALLOW_ENV: &str = vantage_agent::egress::ALLOW_ENV;

/// How many times an agent's log says its session ended.
pub fn session_ends(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("session with coordinator ended")
        .count()
}

/// Sends SIGTERM and waits (bounded) for the process to exit.
pub fn terminate(what: &str, proc: &mut Proc, within: Duration) {
    let pid = proc.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success(), "kill -TERM {pid} ({what})");
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if proc.child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    panic!("{what} ({pid}, {threads} threads) did not exit within {within:?} of SIGTERM");
}

/// The 1 s window starts stored for each of `checks` by `region`, and the
/// attempts they hold in all.
pub fn stored_starts(
    store: &vantage_coordinator::store::SledStore,
    checks: &[String],
    region: &str,
) -> (
    std::collections::BTreeMap<String, std::collections::BTreeSet<i64>>,
    u64,
) {
    use vantage_coordinator::store::Store;
    let mut starts = std::collections::BTreeMap::new();
    let mut attempts = 0;
    for check in checks {
        let set: &mut std::collections::BTreeSet<i64> = starts.entry(check.clone()).or_default();
        for w in store.windows_since(check, 0).unwrap() {
            if w.region == region {
                let w = w.window.unwrap();
                attempts += w.attempts;
                set.insert(w.start_unix_ms);
            }
        }
    }
    (starts, attempts)
}

/// How late the agent's recorder may close a window after its boundary: an
/// attempt that completes in that time is counted in the window closing,
/// as the recorder counts attempts in the window open when their outcome
/// arrives.
const ROLL_SLACK_MS: i64 = 500;

/// Whether request `a` is in a stored 1 s window (of [`stored_starts`]): the
/// window of its arrival, of its completion at most `timeout_ms` later, or
/// the window before when that one closed late ([`ROLL_SLACK_MS`]).
pub fn in_stored_window(
    starts: &std::collections::BTreeMap<String, std::collections::BTreeSet<i64>>,
    a: &Arrival,
    timeout_ms: i64,
) -> bool {
    let Some(set) = starts.get(&a.check) else {
        return false;
    };
    [a.at_ms - ROLL_SLACK_MS, a.at_ms, a.at_ms + timeout_ms]
        .iter()
        .any(|t| set.contains(&(t - t.rem_euclid(1000))))
}

/// After the agent and the coordinator stopped: every seq the agent numbered
/// in `spool` is stored in the coordinator's `store` or still in the
/// spool (nothing lost), no stored seq is one the agent did not number
/// (nothing invented), and the stored seqs have no hole (stored in order).
/// Returns (numbered, still spooled).
pub fn assert_every_seq_accounted_for(
    store: &vantage_coordinator::store::SledStore,
    spool: &vantage_agent::spool::Spool,
    agent: &str,
) -> (u64, usize) {
    let numbered = spool.next_seq() - 1;
    let mut pending = Vec::new();
    while let Some(b) = spool.next_after(pending.last().copied().unwrap_or(0)) {
        pending.push(b.seq);
    }
    let stored = store.stored_seqs(agent).unwrap();
    eprintln!(
        "{agent}: numbered {numbered} batches, stored {}, still spooled {}",
        stored.len(),
        pending.len()
    );
    let mut all: Vec<u64> = stored.iter().chain(&pending).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1..=numbered).collect::<Vec<u64>>(), "{agent}");
    let gap = stored.windows(2).find(|w| w[1] != w[0] + 1);
    assert!(gap.is_none(), "{agent}: stored seqs jump at {gap:?}");
    (numbered, pending.len())
}

/// The token every agent started by [`agent_command_in`] presents.
pub fn agent_token(name: &str) -> String {
    format!("test-agent-token-{name}")
}

/// Lowercase hex SHA-256 of `token`, as `sha256` keys take it.
pub fn sha256_hex(token: &str) -> String {
    vantage_coordinator::api::auth::digest_hex(token)
}

/// `[[agent]]` tables for `(name, region)` pairs, each pinned to its region,
/// with the hash of [`agent_token`].
pub fn agents_toml(agents: &[(&str, &str)]) -> String {
    agents
        .iter()
        .map(|(name, region)| {
            format!(
                "\n[[agent]]\nname = \"{name}\"\nregion = \"{region}\"\nsha256 = \"{}\"\n",
                sha256_hex(&agent_token(name))
            )
        })
        .collect()
}

/// The process-wide test CA: its PEM written to `ca_file`, and the issuer
/// that signs coordinator certificates.
pub struct TestCa {
    pub ca_file: PathBuf,
    pub ca_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
    _dir: tempfile::TempDir,
}

pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| {
        let now = time::OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Vantage Test Coordinator CA");
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem()).unwrap();
        TestCa {
            ca_file,
            ca_pem: issuer.pem(),
            issuer,
            _dir: dir,
        }
    })
}

/// A CA that issues agents' client certificates (mTLS), apart from
/// [`test_ca`].
pub struct AgentCa {
    /// Its certificate, for `server.tls.client_ca_file`.
    pub pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl AgentCa {
    pub fn new(name: &str) -> Self {
        let now = time::OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        AgentCa {
            pem: issuer.pem(),
            issuer,
        }
    }

    /// A client certificate whose DNS subject alternative names are
    /// `names`: (certificate PEM, key PEM).
    pub fn client_cert(&self, names: &[&str]) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let mut leaf =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        leaf.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("agent"),
        );
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        leaf.not_before = now - time::Duration::days(1);
        leaf.not_after = now + time::Duration::days(10);
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes a coordinator certificate for 127.0.0.1, `localhost` and `ips`
/// (signed by [`test_ca`]) as `coordinator.crt` / `coordinator.key` in
/// `dir`, and returns the `[server.tls]` table that uses them.
pub fn tls_toml(dir: &Path, ips: &[std::net::IpAddr]) -> String {
    let now = time::OffsetDateTime::now_utc();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    for ip in ips {
        leaf.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    leaf.distinguished_name
        .push(DnType::CommonName, "vantage-coordinator");
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(10);
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &test_ca().issuer).unwrap();
    std::fs::write(dir.join("coordinator.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("coordinator.key"), key.serialize_pem()).unwrap();
    "\n[server.tls]\ncert_file = \"coordinator.crt\"\nkey_file = \"coordinator.key\"\n".into()
}

/// [`tls_toml`] with absolute paths, for a config written elsewhere.
pub fn tls_toml_abs(dir: &Path, ips: &[std::net::IpAddr]) -> String {
    tls_toml(dir, ips)
        .replace(
            "\"coordinator.crt\"",
            &format!("{:?}", dir.join("coordinator.crt")),
        )
        .replace(
            "\"coordinator.key\"",
            &format!("{:?}", dir.join("coordinator.key")),
        )
}

/// Config files started by [`start_coordinator_with`] that have
/// `[server.tls]`, and the addresses they got: [`http_exchange`] and
/// [`agent_command_in`] speak TLS to those.
static TLS_APIS: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());
static TLS_ADDRS: std::sync::Mutex<std::collections::BTreeSet<SocketAddr>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether `addr` is a listener of a coordinator started with
/// `[server.tls]`, or off loopback (where only TLS is allowed).
pub fn is_tls(addr: SocketAddr) -> bool {
    !addr.ip().is_loopback() || TLS_ADDRS.lock().unwrap().contains(&addr)
}

/// A TLS client trusting only [`test_ca`], offering HTTP/1.1 by ALPN.
pub fn test_tls_connector() -> tokio_rustls::TlsConnector {
    test_tls_connector_alpn(b"http/1.1")
}

/// A TLS client trusting only [`test_ca`], offering `alpn`.
pub fn test_tls_connector_alpn(alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(test_ca().ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// The admin API token every config written by [`write_config`] accepts.
pub const TEST_ADMIN_TOKEN: &str = "vantage-test-admin-token-0123456789";

/// GET over plain HTTP/1.1 with the test admin token; status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, Some(TEST_ADMIN_TOKEN)).await
}

/// One HTTP/1.1 request to the API with an optional JSON body and bearer
/// token; status and body (headers dropped).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_exchange(addr, method, path, body, token, None).await;
    (status, body)
}

/// [`http_request`], with the response head too, optionally from another
/// source address.
pub async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    from: Option<std::net::Ipv4Addr>,
) -> (u16, String, String) {
    let tcp = match from {
        // Another loopback address (127.0.0.0/8 is all local): a client
        // the API counts separately.
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((ip, 0).into()).unwrap();
            socket.connect(addr).await.expect("connect to API")
        }
        None => TcpStream::connect(addr).await.expect("connect to API"),
    };
    let mut s: Box<dyn Io> = if is_tls(addr) {
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        Box::new(
            test_tls_connector()
                .connect(name, tcp)
                .await
                .expect("TLS handshake with the API"),
        )
    } else {
        Box::new(tcp)
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let payload = body.unwrap_or("");
    let kind = if body.is_some() {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}{kind}Content-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("API answered within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

/// A byte stream: TCP, or TLS over it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The view of load run `id` once it has ended (bounded: 30 s).
pub async fn loadtest_result(http: SocketAddr, id: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), || async {
        let run = get_json(http, &format!("/api/v1/loadtests/{id}")).await;
        let state = run["state"].as_str().unwrap_or_default().to_owned();
        (!["starting", "running", "aborting"].contains(&state.as_str())).then_some(run)
    })
    .await
    .unwrap_or_else(|| panic!("load run {id} did not end within 30 s"))
}

pub async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = http_get(addr, path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// A CA and a leaf certificate for `localhost` / 127.0.0.1 that expires in
/// `days_left` days plus `extra`.
pub struct TestPki {
    pub ca_pem: String,
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    pub key: rustls_pki_types::PrivateKeyDer<'static>,
}

pub fn pki(days_left: i64, extra: time::Duration) -> TestPki {
    let now = time::OffsetDateTime::now_utc();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Vantage Test CA");
    ca_params.not_before = now - time::Duration::days(1);
    ca_params.not_after = now + time::Duration::days(365);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.not_before = now - time::Duration::days(1);
    leaf.not_after = now + time::Duration::days(days_left) + extra;
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    TestPki {
        ca_pem: ca.pem(),
        chain: vec![cert.der().clone(), ca.der().clone()],
        key: rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

/// A real HTTPS server (HTTP/1.1 and HTTP/2 by ALPN) whose response delay can
/// be changed while it runs.
pub struct HttpsTarget {
    pub addr: SocketAddr,
    pub delay_ms: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsTarget {
    fn drop(&mut self) {
        self._task.abort();
    }
}

pub async fn https_target(pki: &TestPki) -> HttpsTarget {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let delay_ms = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (d, r) = (Arc::clone(&delay_ms), Arc::clone(&requests));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (d, r) = (Arc::clone(&d), Arc::clone(&r));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let (d, r) = (Arc::clone(&d), Arc::clone(&r));
                    async move {
                        r.fetch_add(1, Ordering::Relaxed);
                        let ms = d.load(Ordering::Relaxed);
                        if ms > 0 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"vantage target ok\n"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    HttpsTarget {
        addr,
        delay_ms,
        requests,
        _task: task,
    }
}

/// Polls `f` every 250 ms until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The top of a config whose listeners are on loopback ports the system
/// picks, with 1 s windows; more `[server]` keys may follow.
pub const LOOPBACK_SERVER: &str = "version = 1\n\n[server]\ngrpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\nwindow = \"1s\"\n";

/// Writes `body` as `vantage.toml` in `dir`, with an `[[api.token]]` for
/// [`TEST_ADMIN_TOKEN`] unless the body has its own `[api]`.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("vantage.toml");
    let mut text = body.to_owned();
    if !text.contains("[api") {
        let hex = sha256_hex(TEST_ADMIN_TOKEN);
        text.push_str(&format!(
            "\n[[api.token]]\nname = \"test-admin\"\nrole = \"admin\"\nsha256 = \"{hex}\"\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// A free TCP port on 127.0.0.1 (bound, then released), for processes that
/// must come back on the same address after a restart.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain-HTTP target serving `/{check}` for many checks, failing (503) for
/// the regions it is told to, by the agents' `X-Vantage-Region` header.
pub struct RegionTarget {
    pub addr: SocketAddr,
    requests: Arc<std::sync::atomic::AtomicU64>,
    /// Every request as it arrived.
    arrivals: Arc<std::sync::Mutex<Vec<Arrival>>>,
    failing: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for RegionTarget {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// One request seen by a [`RegionTarget`].
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Unix ms.
    pub at_ms: i64,
    /// The path without its leading `/` (the check's name).
    pub check: String,
    /// The agent's `X-Vantage-Region`.
    pub region: String,
}

impl RegionTarget {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1").await
    }

    /// Listens on `ip` (any free port), e.g. an address agents in a network
    /// namespace can reach.
    pub async fn start_on(ip: &str) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>> =
            Arc::default();
        let f = Arc::clone(&failing);
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        let arrivals: Arc<std::sync::Mutex<Vec<Arrival>>> = Arc::default();
        let log = Arc::clone(&arrivals);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let f = Arc::clone(&f);
                let counter = Arc::clone(&counter);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64);
                        let check = req.uri().path().trim_start_matches('/').to_owned();
                        let region = req
                            .headers()
                            .get("x-vantage-region")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        log.lock().unwrap().push(Arrival {
                            at_ms: now,
                            check: check.clone(),
                            region: region.clone(),
                        });
                        let fail = f
                            .lock()
                            .unwrap()
                            .get(&check)
                            .is_some_and(|rs| rs.iter().any(|r| r == &region || r == "*"));
                        async move {
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(if fail {
                                "unavailable\n"
                            } else {
                                "ok\n"
                            })));
                            if fail {
                                *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        RegionTarget {
            addr,
            requests,
            arrivals,
            failing,
            _task: task,
        }
    }

    /// Requests received so far, all checks.
    pub fn requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The distinct `window_ms`-aligned windows in which requests arrived.
    pub fn active_windows(&self, window_ms: i64) -> std::collections::BTreeSet<i64> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.at_ms - a.at_ms.rem_euclid(window_ms))
            .collect()
    }

    /// Every request so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// URL of `check`'s endpoint.
    pub fn url(&self, check: &str) -> String {
        format!("http://{}/{check}", self.addr)
    }

    /// `[[check]]` tables for HTTP checks of this target named `checks`,
    /// run in `regions` every `interval` with `timeout`.
    pub fn checks_toml(
        &self,
        checks: &[String],
        regions: &[&str],
        interval: &str,
        timeout: &str,
    ) -> String {
        let regions = regions
            .iter()
            .map(|r| format!("{r:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        checks
            .iter()
            .map(|c| {
                format!(
                    "[[check]]\nname = \"{c}\"\nkind = \"http\"\nurl = \"{}\"\nregions = [{regions}]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n\n",
                    self.url(c)
                )
            })
            .collect()
    }

    /// Makes `check` fail in `regions` (`"*"`: all) from now on; empty heals it.
    pub fn fail(&self, check: &str, regions: &[&str]) {
        self.failing.lock().unwrap().insert(
            check.to_owned(),
            regions.iter().map(|r| (*r).to_owned()).collect(),
        );
    }
}

/// xorshift64*: a small seeded generator for tests that print their seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Unix time in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Percentile `p` (0..=100) of `values` (nearest rank).
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}
