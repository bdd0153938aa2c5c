//! A real SMTP server for tests: Python aiosmtpd running
//! `coordinator/tests/smtp_server.py` on 127.0.0.1 with a generated
//! certificate chain, AUTH required, and scriptable failures. Reusable by
//! end-to-end tests: start one, point an `email` channel at `localhost`,
//! [`SmtpServer::port`] and [`SmtpServer::ca_file`], then read what arrived
//! with [`SmtpServer::wait_for`].
//!
//! aiosmtpd is required, not optional: without it the harness fails with the
//! install command (`.ci/run` installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::support::{pki, Proc};

/// The aiosmtpd version the tests are written against (also in `.ci/run`).
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// The login the server accepts.
pub const USER: &str = "vantage-test";

/// How the server secures connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// STARTTLS offered and required before AUTH and MAIL (port 587 style).
    StartTls,
    /// TLS from the first byte (port 465 style).
    Implicit,
    /// No TLS at all, and AUTH offered in plaintext: a client that would send
    /// credentials without TLS shows up as an `auth` event.
    Plain,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::StartTls => "starttls",
            Mode::Implicit => "implicit",
            Mode::Plain => "plain",
        }
    }
}

/// Scripted misbehaviour. Each failure applies to every attempt, or to the
/// first `fail_count` attempts when set.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Reply 451 or 550 to `RCPT TO`.
    pub fail_rcpt: Option<u16>,
    /// Reply 451 or 550 after the message content.
    pub fail_data: Option<u16>,
    /// Close the connection after the content, without replying.
    pub drop_after_data: bool,
    /// Wait this long after the content before replying.
    pub stall_after_data: Option<Duration>,
    /// Limit the failures above to the first N attempts.
    pub fail_count: Option<u32>,
    /// A failed AUTH reply quotes the password received (plain and base64).
    pub echo_secrets: bool,
}

/// A running aiosmtpd; killed on drop.
pub struct SmtpServer {
    proc: Option<Proc>,
    port: u16,
    events: PathBuf,
    stderr: PathBuf,
    ca_file: PathBuf,
    chain_file: PathBuf,
    key_file: PathBuf,
    mode: Mode,
    password: String,
    script: Script,
    _dir: tempfile::TempDir,
}

fn require_aiosmtpd() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the email tests need a real SMTP server: python3 with aiosmtpd. Install it with \
             `python3 -m pip install aiosmtpd=={AIOSMTPD_VERSION}`"
        );
    });
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl SmtpServer {
    /// Starts a server in `mode` that accepts [`USER`] with `password`, and
    /// waits until it listens.
    pub fn start(mode: Mode, password: &str, script: Script) -> SmtpServer {
        require_aiosmtpd();
        let dir = tempfile::tempdir().unwrap();
        let pki = pki(30, time::Duration::ZERO);
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let chain_file = dir.path().join("chain.pem");
        let chain: String = pki
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c.as_ref()))
            .collect();
        std::fs::write(&chain_file, chain).unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, pem("PRIVATE KEY", pki.key.secret_der())).unwrap();
        let events = dir.path().join("events.jsonl");
        std::fs::write(&events, "").unwrap();
        let stderr = dir.path().join("stderr.log");
        std::fs::write(&stderr, "").unwrap();
        let mut server = SmtpServer {
            proc: None,
            port: 0,
            events,
            stderr,
            ca_file,
            chain_file,
            key_file,
            mode,
            password: password.to_owned(),
            script,
            _dir: dir,
        };
        server.spawn(0);
        server
    }

    /// Starts the process on `port` (0: any free port) and waits for it.
    fn spawn(&mut self, port: u16) {
        let (mode, script, stderr) = (self.mode, self.script.clone(), self.stderr.clone());
        let script_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script_path)
            .args(["--port", &port.to_string(), "--mode", mode.arg()])
            .arg("--cert")
            .arg(&self.chain_file)
            .arg("--key")
            .arg(&self.key_file)
            .arg("--out")
            .arg(&self.events)
            .env("SMTP_USER", USER)
            .env("SMTP_PASSWORD", &self.password)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&stderr)
                    .unwrap(),
            );
        if let Some(code) = script.fail_rcpt {
            cmd.args(["--fail-rcpt", &code.to_string()]);
        }
        if let Some(code) = script.fail_data {
            cmd.args(["--fail-data", &code.to_string()]);
        }
        if script.drop_after_data {
            cmd.arg("--drop-after-data");
        }
        if let Some(d) = script.stall_after_data {
            cmd.args(["--stall-after-data", &d.as_secs_f64().to_string()]);
        }
        if let Some(n) = script.fail_count {
            cmd.args(["--fail-count", &n.to_string()]);
        }
        if script.echo_secrets {
            cmd.arg("--echo-secrets");
        }
        let mut child = cmd.spawn().expect("spawning python3 smtp_server.py");
        let stdout = child.stdout.take().unwrap();
        let proc = Proc { child, spool: None };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| {
                panic!(
                    "smtp_server.py did not get ready (stdout {line:?}); stderr:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                )
            });
        self.proc = Some(proc);
        self.port = port;
    }

    /// Kills the server: its port refuses connections until [`resume`].
    ///
    /// [`resume`]: SmtpServer::resume
    pub fn pause(&mut self) {
        self.proc.take();
    }

    /// Starts the server again on the same port, keeping what it recorded.
    pub fn resume(&mut self) {
        assert!(self.proc.is_none(), "resume of a running server");
        self.spawn(self.port);
    }

    /// The port on 127.0.0.1 (the certificate is for `localhost` and 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// PEM of the CA that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every event so far (`connect`, `auth`, `message`), in order.
    pub fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Messages whose content the server received (also those it then
    /// rejected or dropped; see `dropped`).
    pub fn messages(&self) -> Vec<Value> {
        self.of("message")
    }

    /// AUTH attempts.
    pub fn auths(&self) -> Vec<Value> {
        self.of("auth")
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.of("connect").len()
    }

    /// The server's stderr so far (aiosmtpd logs), for failure messages.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until at least `n` messages arrived; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            if start.elapsed() > timeout {
                panic!(
                    "{} of {n} messages within {timeout:?}; events: {:#?}\nstderr:\n{}",
                    m.len(),
                    self.events(),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops the server (also done on drop).
    pub fn stop(mut self) {
        self.proc.take();
    }
}
