//! Issue 9: three regions on one machine, each agent in its own network
//! namespace, started the way the README says (`deploy/netns/three-regions.sh
//! up`), reach steady state; `down` removes everything. The script is run as
//! a user runs it, with this build's binaries (`VANTAGE_BIN_DIR`), its own
//! name prefix, addresses and state directory; the steady state is then
//! checked through the HTTP API with the admin token and CA the script made.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
/// The checks the script configures, each in every region.
const CHECKS: [&str; 3] = ["front", "health", "target-port"];
/// The longest `up` may take: its own wait for steady state (60 s) plus
/// starting the target and the coordinator (at most 10 s and 30 s) and
/// making keys and tokens.
const UP_LIMIT: Duration = Duration::from_secs(150);
/// `down` stops up to five processes, 15 s each at worst.
const DOWN_LIMIT: Duration = Duration::from_secs(90);

/// What one run of the script did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// The script's environment for one test: a unique prefix and network, a
/// temporary state directory. `down` runs on drop unless it ran already, so
/// a failing test leaves no namespace, address or process behind.
struct ThreeRegions {
    script: PathBuf,
    workspace: PathBuf,
    bin_dir: PathBuf,
    prefix: String,
    net: String,
    state: tempfile::TempDir,
    down_ran: bool,
}

impl ThreeRegions {
    fn new() -> ThreeRegions {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let agent = agent_bin();
        let bin_dir = coordinator_bin().parent().unwrap().to_path_buf();
        assert_eq!(
            agent.parent(),
            Some(bin_dir.as_path()),
            "the script wants both binaries in one directory"
        );
        let pid = std::process::id();
        ThreeRegions {
            script: workspace.join("deploy/netns/three-regions.sh"),
            workspace,
            bin_dir,
            // Short: interface names are at most 15 characters.
            prefix: format!("t3r{}", pid % 100_000),
            // Away from the script's default (10.233) and the other
            // namespace tests (10.231, 10.232).
            net: format!("10.{}", 234 + pid % 16),
            state: tempfile::tempdir().unwrap(),
            down_ran: false,
        }
    }

    fn coordinator_ip(&self) -> String {
        format!("{}.0.1", self.net)
    }

    /// `three-regions.sh ARGS` from the workspace root, as the README has
    /// it, bounded by `limit`. Its output is read to the end: a process it
    /// started that kept the script's stdout or stderr would hold the pipe
    /// open, and that fails the run (the fleet must be detached).
    fn run(&self, args: &[&str], limit: Duration) -> Run {
        let from = Instant::now();
        let mut child = Command::new(&self.script)
            .args(args)
            .current_dir(&self.workspace)
            .env("VANTAGE_BIN_DIR", &self.bin_dir)
            .env("VANTAGE_3R_PREFIX", &self.prefix)
            .env("VANTAGE_3R_NET", &self.net)
            .env("VANTAGE_3R_DIR", self.state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running deploy/netns/three-regions.sh");
        let (tx, rx) = std::sync::mpsc::channel();
        for (name, mut pipe) in [
            (
                "stdout",
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            ),
            ("stderr", Box::new(child.stderr.take().unwrap())),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                let _ = tx.send((name, text));
            });
        }
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if from.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "three-regions.sh {} did not end within {limit:?}",
                    args.join(" ")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let took = from.elapsed();
        let (mut stdout, mut stderr) = (String::new(), String::new());
        for _ in 0..2 {
            let (name, text) = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| {
                panic!(
                    "three-regions.sh {} exited, but a process it started still holds its output",
                    args.join(" ")
                )
            });
            if name == "stdout" {
                stdout = text;
            } else {
                stderr = text;
            }
        }
        eprintln!(
            "---- three-regions.sh {} ({status}, {:.1} s)\n{stdout}{stderr}",
            args.join(" "),
            took.as_secs_f64()
        );
        Run {
            ok: status.success(),
            stdout,
            stderr,
            took,
        }
    }

    fn down(&mut self) -> Run {
        self.down_ran = true;
        self.run(&["down"], DOWN_LIMIT)
    }

    /// Pids of what `up` started, from its pid files.
    fn pids(&self) -> Vec<(String, u32)> {
        let dir = self.state.path().join("run");
        let mut pids = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let pid = std::fs::read_to_string(&path)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            pids.push((name, pid));
        }
        pids.sort();
        pids
    }
}

impl Drop for ThreeRegions {
    fn drop(&mut self) {
        if !self.down_ran {
            let _ = self.down();
        }
    }
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn command_output(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {}", args.join(" "));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET `path` from the API at `addr` over TLS (trusting only `ca_pem`, the
/// script's CA) with `token`; the JSON body of a 200.
async fn api_get(addr: SocketAddr, ca_pem: &str, token: &str, path: &str) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the API, trusting the script's CA");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        // The server may close without close_notify once it has answered.
        let _ = tls.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the API answered within 10 s");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "GET {path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// Three agents, one per region, connected and seen lately, three checks
/// each; every check up in every region, from that region's agent, with a
/// window that ended moments ago and no failed attempt. Panics otherwise.
fn assert_steady(agents: &serde_json::Value, checks: &serde_json::Value, now: i64) {
    let agents = agents["agents"].as_array().expect("agents");
    let mut seen: Vec<(String, String)> = agents
        .iter()
        .map(|a| {
            (
                a["region"].as_str().unwrap().to_owned(),
                a["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = REGIONS
        .iter()
        .map(|r| ((*r).to_owned(), format!("{r}-1")))
        .collect();
    want.sort();
    assert_eq!(seen, want, "one agent per region: {agents:#?}");
    for a in agents {
        let last_seen = a["last_seen_unix_ms"].as_i64().unwrap();
        assert!(
            now - last_seen < 30_000,
            "{} last seen {} ms ago",
            a["name"],
            now - last_seen
        );
        assert_eq!(
            a["checks"].as_array().map_or(0, Vec::len),
            CHECKS.len(),
            "{} runs every check: {a}",
            a["name"]
        );
    }

    let checks = checks["checks"].as_array().expect("checks");
    let mut names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    names.sort();
    let mut want_names = CHECKS.to_vec();
    want_names.sort();
    assert_eq!(names, want_names);
    for c in checks {
        let name = c["name"].as_str().unwrap();
        for region in REGIONS {
            let s = c["regions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["region"] == region)
                .unwrap_or_else(|| panic!("{name}: no results from {region}: {c:#}"));
            let attempts = s["attempts"].as_u64().unwrap();
            let end = s["last_window_end_unix_ms"].as_i64().unwrap_or(0);
            assert!(attempts > 0, "{name} in {region}: no attempts: {s:#}");
            assert_eq!(
                s["successes"].as_u64(),
                Some(attempts),
                "{name} in {region}: failed attempts: {s:#}"
            );
            assert_eq!(s["state"], "up", "{name} in {region}: {s:#}");
            // Windows of 2 s, a probe every 2 s: a window older than 10 s
            // means the region stopped reporting.
            assert!(
                now - end < 10_000,
                "{name} in {region}: newest window ended {} ms ago",
                now - end
            );
            assert_eq!(
                s["agents"],
                serde_json::json!([format!("{region}-1")]),
                "{name} in {region}: {s:#}"
            );
        }
    }
}

#[test]
fn three_regions_from_the_readme_reach_steady_state_and_go_down_cleanly() {
    let mut fleet = ThreeRegions::new();
    let up = fleet.run(&["up"], UP_LIMIT);
    assert!(
        up.ok,
        "three-regions.sh up failed:\n{}{}",
        up.stdout, up.stderr
    );
    assert!(
        up.stdout.contains("==> steady state "),
        "up succeeded without saying so: {}",
        up.stdout
    );
    eprintln!(
        "three regions: `up` took {:.1} s in all",
        up.took.as_secs_f64()
    );

    // Checked by this test, not taken from the script's word.
    let state = fleet.state.path().to_path_buf();
    let token = std::fs::read_to_string(state.join("tokens/operator.token")).unwrap();
    let ca_pem = std::fs::read_to_string(state.join("ca.pem")).unwrap();
    let api: SocketAddr = format!("{}:7080", fleet.coordinator_ip()).parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (agents, checks) = rt.block_on(async {
        (
            api_get(api, &ca_pem, token.trim(), "/api/v1/agents").await,
            api_get(api, &ca_pem, token.trim(), "/api/v1/checks?window=1m").await,
        )
    });
    assert_steady(&agents, &checks, now_ms());

    // Each agent in its own namespace: the pid's network namespace is the
    // region's.
    let pids = fleet.pids();
    for region in REGIONS {
        let (_, pid) = pids
            .iter()
            .find(|(name, _)| *name == format!("{region}-1"))
            .unwrap_or_else(|| panic!("no pid file for {region}-1: {pids:?}"));
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(
            exe.ends_with("vantage-agent"),
            "{region}-1's pid file names {}",
            exe.display()
        );
        let ns = command_output("ip", &["netns", "identify", &pid.to_string()]);
        assert_eq!(ns.trim(), format!("{}-{region}", fleet.prefix));
    }

    let status = fleet.run(&["status"], Duration::from_secs(30));
    assert!(status.ok, "status failed: {}", status.stderr);
    for region in REGIONS {
        assert!(
            status.stdout.contains(&format!("{region}-1")),
            "{}",
            status.stdout
        );
    }

    let down = fleet.down();
    assert!(
        down.ok,
        "three-regions.sh down failed:\n{}{}",
        down.stdout, down.stderr
    );
    let namespaces = command_output("ip", &["netns", "list"]);
    assert!(
        !namespaces.contains(&format!("{}-", fleet.prefix)),
        "namespaces left after down:\n{namespaces}"
    );
    let links = command_output("ip", &["-o", "link", "show"]);
    assert!(
        !links.contains(&format!(" {}-", fleet.prefix)),
        "interfaces left after down:\n{links}"
    );
    let lo = command_output("ip", &["-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        !lo.contains(&format!(" {}/32", fleet.coordinator_ip())),
        "the coordinator's address is still on lo:\n{lo}"
    );
    let routes = command_output(
        "ip",
        &[
            "-4",
            "route",
            "list",
            "root",
            &format!("{}.0.0/16", fleet.net),
        ],
    );
    assert!(
        routes.trim().is_empty(),
        "routes left after down:\n{routes}"
    );
    for (name, pid) in pids {
        assert!(!running(pid), "{name} ({pid}) still runs after down");
    }
    assert!(
        state.join("coordinator.toml").exists(),
        "down without --purge keeps the state directory"
    );
}
