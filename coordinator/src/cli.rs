//! Command-line interface.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vantage_coordinator::config;

/// Exit code for a configuration error (EX_CONFIG from sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for any other error.
pub const EXIT_ERROR: u8 = 2;

/// `--version`: the version and what the build is made from.
static LONG_VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(vantage_proto::build_info::long_version);

#[derive(Parser)]
#[command(
    name = "vantage-coordinator",
    version = LONG_VERSION.as_str(),
    about = "Vantage coordinator: assigns checks to agents, stores their results, serves the API"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the coordinator with a config file.
    Run {
        /// Path of the TOML config.
        #[arg(long, short = 'c', env = "VANTAGE_CONFIG")]
        config: PathBuf,
    },
    /// Try Vantage offline: a demo target, this coordinator with its embedded
    /// store, and one local agent, all in this process.
    Demo {
        /// Path of the TOML config.
        #[arg(long, short = 'c', default_value = "deploy/examples/demo.toml")]
        config: PathBuf,
    },
    /// Print the version, the commit and compiler it was built with, and
    /// which agent versions it works with.
    Version,
    /// Check a config file and report every error with file:line:column.
    Validate {
        /// Path of the TOML config.
        file: PathBuf,
    },
    /// The fleet and its checks, like `kubectl get`: the agents, then each
    /// check's state (up, degraded, down, late) and latency per region.
    Status {
        /// The coordinator's HTTP API: https://HOST:PORT, or http:// to a
        /// loopback address only.
        #[arg(long, env = "VANTAGE_API", default_value = "http://127.0.0.1:7080")]
        api: String,
        /// PEM file with extra trust anchors for an https:// API.
        #[arg(long, env = "VANTAGE_CA_FILE", value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// A file holding an API token (else VANTAGE_API_TOKEN); viewer
        /// suffices.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The summary window, e.g. 5m or 1h (at most 24h).
        #[arg(long, default_value = "5m")]
        window: String,
        /// Print JSON for scripts instead of tables: the agents, and one
        /// object per check and region.
        #[arg(long)]
        json: bool,
    },
    /// Distributed load runs through a running coordinator.
    Loadtest {
        #[command(subcommand)]
        command: LoadtestCommand,
    },
    /// Make a new API token: prints the token (give it to its holder) and
    /// the `[[api.token]]` table with its SHA-256 (put it in the config).
    /// With --agent, an agent token and its `[[agent]]` table instead.
    Token {
        /// Who will hold it (shown in the coordinator's logs); with --agent,
        /// the agent's name.
        #[arg(long)]
        name: String,
        /// viewer (read) or admin (read and change).
        #[arg(long, default_value = "viewer", value_parser = ["viewer", "admin"])]
        role: String,
        /// A token for the agent called --name, printed with its
        /// `[[agent]]` table.
        #[arg(long)]
        agent: bool,
        /// With --agent: pin the agent to this region.
        #[arg(long, requires = "agent")]
        region: Option<String>,
    },
}

#[derive(Subcommand)]
enum LoadtestCommand {
    /// Run a load file on the agents of some regions, print live progress and
    /// the k6-style summary. Exit 0 when every threshold passed, 99 when one
    /// failed, 2 for a refused file or request, 1 for other errors.
    Run {
        /// The load file (see README, "Load tests").
        file: PathBuf,
        /// Comma-separated regions whose agents share the load.
        #[arg(long, value_delimiter = ',', required = true)]
        regions: Vec<String>,
        /// The coordinator's HTTP API: https://HOST:PORT, or http:// to a
        /// loopback address only.
        #[arg(long, env = "VANTAGE_API", default_value = "http://127.0.0.1:7080")]
        api: String,
        /// PEM file with extra trust anchors for an https:// API (besides
        /// the Mozilla roots).
        #[arg(long, env = "VANTAGE_CA_FILE", value_name = "PATH")]
        ca_file: Option<PathBuf>,
        /// A file holding an admin API token (else the environment variable
        /// VANTAGE_API_TOKEN); never on the command line, where `ps` shows it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// No progress line.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

/// `loadtest run`: a threshold failed (the k6 contract).
const EXIT_THRESHOLDS_FAILED: u8 = 99;
/// `loadtest run`: the file or request was refused.
const EXIT_LOAD_BAD_INPUT: u8 = 2;
/// `loadtest run`: anything else.
const EXIT_LOAD_ERROR: u8 = 1;

pub fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Status {
            api,
            ca_file,
            token_file,
            window,
            json,
        } => {
            let target = api_token(token_file.as_deref()).and_then(|token| {
                ApiTarget::parse(&api, ca_file.as_deref()).map(|target| (token, target))
            });
            match target {
                Ok((token, target)) => status(&api, &target, token.as_deref(), &window, json),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Loadtest {
            command:
                LoadtestCommand::Run {
                    file,
                    regions,
                    api,
                    ca_file,
                    token_file,
                    quiet,
                },
        } => match api_token(token_file.as_deref()) {
            Ok(token) => match ApiTarget::parse(&api, ca_file.as_deref()) {
                Ok(target) => loadtest_run(&file, regions, &api, &target, token.as_deref(), quiet),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_LOAD_BAD_INPUT)
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_LOAD_BAD_INPUT)
            }
        },
        Command::Token {
            name,
            role,
            agent,
            region,
        } => {
            if !vantage_proto::is_valid_name(&name)
                || region
                    .as_deref()
                    .is_some_and(|r| !vantage_proto::is_valid_name(r))
            {
                eprintln!("error: --name, --region: use 1-64 characters from A-Z a-z 0-9 . _ -");
                return ExitCode::from(EXIT_ERROR);
            }
            if agent {
                let token = vantage_coordinator::api::auth::generate();
                let hex = vantage_coordinator::api::auth::digest_hex(&token);
                println!("token (put it in the agent's --token-file; it is not stored anywhere):\n  {token}\n");
                let pin = region
                    .map(|r| format!("region = \"{r}\"\n"))
                    .unwrap_or_default();
                println!("config:\n[[agent]]\nname = \"{name}\"\n{pin}sha256 = \"{hex}\"");
                return ExitCode::SUCCESS;
            }
            let token = vantage_coordinator::api::auth::generate();
            let hex = vantage_coordinator::api::auth::digest_hex(&token);
            println!("token (give it to {name}; it is not stored anywhere):\n  {token}\n");
            println!(
                "config:\n[[api.token]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{hex}\""
            );
            ExitCode::SUCCESS
        }
        Command::Version => {
            use vantage_proto::build_info as b;
            println!("vantage-coordinator {}", b::VERSION);
            println!("commit:   {} ({})", b::COMMIT, b::COMMIT_DATE);
            println!("rustc:    {}", b::RUSTC);
            println!("target:   {}", b::TARGET);
            println!("profile:  {}", b::PROFILE);
            println!("agents:   {} (same series)", b::compatible_series());
            ExitCode::SUCCESS
        }
        Command::Validate { file } => match config::load(&file) {
            Ok(cfg) => {
                println!("{}: ok ({} checks)", file.display(), cfg.checks.len());
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config: path } => match config::load(&path) {
            Ok(cfg) => run_async(vantage_coordinator::run_watching(
                cfg,
                path,
                shutdown_signal(),
                print_bound,
            )),
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Demo { config: path } => match config::load(&path) {
            Ok(cfg) => run_async(vantage_coordinator::demo::run(
                cfg,
                shutdown_signal(),
                print_bound,
            )),
            Err(errs) => {
                eprintln!("{errs}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
    }
}

/// Prints the bound addresses on stdout, one line, so scripts and tests that use
/// port 0 can find them.
fn print_bound(b: vantage_coordinator::Bound) {
    println!(
        "vantage-coordinator listening grpc={} http={}",
        b.grpc, b.http
    );
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    };
    // The store is flushed by now; blocking work still running (an alert
    // evaluation) gets a moment, then the process exits regardless.
    rt.shutdown_timeout(SHUTDOWN_BLOCKING_GRACE);
    code
}

/// How long exit waits for blocking work after the coordinator stopped.
const SHUTDOWN_BLOCKING_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `vantage-coordinator loadtest run`.
/// The API token for client commands: from `file`, else from
/// `VANTAGE_API_TOKEN`, else none.
fn api_token(file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let source = match file {
        Some(f) => vantage_coordinator::secret::SecretSource::File(f.to_path_buf()),
        None if std::env::var_os("VANTAGE_API_TOKEN").is_some() => {
            vantage_coordinator::secret::SecretSource::Env("VANTAGE_API_TOKEN".into())
        }
        None => return Ok(None),
    };
    source.read().map(|s| Some(s.expose().to_owned()))
}

/// Where the API is, and how to speak to it.
struct ApiTarget {
    /// HOST:PORT.
    addr: String,
    /// For https: the connector and the name the certificate must have.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

impl ApiTarget {
    /// `--api` and `--ca-file`. Plain http:// only to loopback: the admin
    /// token must never cross a network in the clear.
    fn parse(api: &str, ca_file: Option<&std::path::Path>) -> Result<Self, String> {
        let url = url::Url::parse(api).map_err(|e| format!("--api {api:?}: {e}"))?;
        let host = url.host().ok_or_else(|| format!("--api {api}: no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("--api {api}: no port"))?;
        let host_text = match &host {
            url::Host::Domain(d) => (*d).to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => format!("[{ip}]"),
        };
        let addr = format!("{host_text}:{port}");
        match url.scheme() {
            "http" => {
                let loopback = match host {
                    url::Host::Ipv4(ip) => ip.is_loopback(),
                    url::Host::Ipv6(ip) => ip.is_loopback(),
                    url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
                };
                if !loopback {
                    return Err(format!("--api {api}: plaintext http:// is only allowed to a loopback address; use https:// (with --ca-file for a private CA)"));
                }
                Ok(ApiTarget { addr, tls: None })
            }
            "https" => {
                let name = match host {
                    url::Host::Ipv4(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
                    url::Host::Ipv6(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
                    url::Host::Domain(d) => rustls_pki_types::ServerName::try_from(d.to_owned())
                        .map_err(|e| format!("--api {api}: {e}"))?,
                };
                Ok(ApiTarget {
                    addr,
                    tls: Some((tls_client(ca_file)?, name)),
                })
            }
            other => Err(format!(
                "--api {api}: scheme {other}:// is not supported; use https://"
            )),
        }
    }
}

/// A TLS client with the Mozilla roots plus `ca_file`, HTTP/1.1 by ALPN.
fn tls_client(ca_file: Option<&std::path::Path>) -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let err = |reason: String| format!("--ca-file {}: {reason}", path.display());
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(e.to_string()))?;
        if certs.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

fn loadtest_run(
    file: &std::path::Path,
    regions: Vec<String>,
    api: &str,
    target: &ApiTarget,
    token: Option<&str>,
    quiet: bool,
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: reading {}: {e}", file.display());
            return ExitCode::from(EXIT_LOAD_BAD_INPUT);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_LOAD_ERROR);
        }
    };
    rt.block_on(async move {
        let body = serde_json::json!({ "file": text, "regions": regions }).to_string();
        let (status, created) =
            match api_call(target, token, "POST", "/api/v1/loadtests", Some(&body)).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {api}: {e}");
                    return ExitCode::from(EXIT_LOAD_ERROR);
                }
            };
        if status != 201 {
            let msg = created["error"].as_str().unwrap_or("refused").to_owned();
            eprintln!("error: {msg}");
            return ExitCode::from(if (400..500).contains(&status) {
                EXIT_LOAD_BAD_INPUT
            } else {
                EXIT_LOAD_ERROR
            });
        }
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        if !quiet {
            eprintln!(
                "load run {id} created on {} agent(s)",
                created["agents"].as_array().map_or(0, Vec::len)
            );
        }
        let path = format!("/api/v1/loadtests/{id}");
        let mut failures = 0;
        let result = loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match api_call(target, token, "GET", &path, None).await {
                Ok((200, v)) => {
                    failures = 0;
                    if !v["verdict"].is_null() {
                        break v;
                    }
                    if !quiet {
                        let m = &v["metrics"];
                        eprint!(
                            "\r{} {:>6.1}s  {:>9} reqs  {:>9.1}/s  p95 {:>8} ms  failed {}   ",
                            v["state"].as_str().unwrap_or(""),
                            v["elapsed_s"].as_f64().unwrap_or(0.0),
                            m["http_reqs"],
                            m["http_reqs_rate"].as_f64().unwrap_or(0.0),
                            m["http_req_duration"]["p95"],
                            m["http_req_failed"],
                        );
                    }
                }
                Ok((status, v)) => {
                    eprintln!("\nerror: GET {path}: {status} {v}");
                    return ExitCode::from(EXIT_LOAD_ERROR);
                }
                Err(e) => {
                    failures += 1;
                    if failures >= 10 {
                        eprintln!("\nerror: {api}: {e}");
                        return ExitCode::from(EXIT_LOAD_ERROR);
                    }
                }
            }
        };
        if !quiet {
            eprintln!();
        }
        print!("{}", result["summary"].as_str().unwrap_or(""));
        match result["verdict"].as_str() {
            Some("passed") => ExitCode::SUCCESS,
            Some("thresholds_failed") => ExitCode::from(EXIT_THRESHOLDS_FAILED),
            _ => ExitCode::from(EXIT_LOAD_ERROR),
        }
    })
}

/// `vantage-coordinator status`.
fn status(
    api: &str,
    target: &ApiTarget,
    token: Option<&str>,
    window: &str,
    json: bool,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    rt.block_on(async move {
        let window: String = url::form_urlencoded::byte_serialize(window.as_bytes()).collect();
        let mut bodies = Vec::new();
        for path in [
            "/api/v1/agents".to_owned(),
            format!("/api/v1/checks?window={window}"),
        ] {
            match api_call(target, token, "GET", &path, None).await {
                Ok((200, v)) => bodies.push(v),
                Ok((status, v)) => {
                    let msg = v["error"].as_str().unwrap_or("no reason given");
                    eprintln!("error: GET {path}: {status}: {msg}");
                    return ExitCode::from(EXIT_ERROR);
                }
                Err(e) => {
                    eprintln!("error: {api}: {e}");
                    return ExitCode::from(EXIT_ERROR);
                }
            }
        }
        let now = vantage_coordinator::now_ms();
        if json {
            let v = vantage_coordinator::status::json(&bodies[0], &bodies[1], now);
            println!("{v:#}");
        } else {
            print!(
                "{}",
                vantage_coordinator::status::render(&bodies[0], &bodies[1], now)
            );
        }
        ExitCode::SUCCESS
    })
}

/// TCP or TLS to the API.
trait ApiStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> ApiStream for T {}

/// One HTTP/1.1 request to the API (`Connection: close`); the status and the
/// JSON body.
async fn api_call(
    target: &ApiTarget,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, serde_json::Value), String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let io = |e: std::io::Error| e.to_string();
    let addr = target.addr.as_str();
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(io)?;
    let mut s: std::pin::Pin<Box<dyn ApiStream>> = match &target.tls {
        None => Box::pin(tcp),
        Some((connector, name)) => Box::pin(
            tokio::time::timeout(
                std::time::Duration::from_secs(10),
                connector.connect(name.clone(), tcp),
            )
            .await
            .map_err(|_| "TLS handshake timed out".to_owned())?
            .map_err(|e| format!("TLS: {e}"))?,
        ),
    };
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.map_err(io)?;
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "the API did not answer within 30 s".to_owned())?
        .map_err(io)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "malformed HTTP response".to_owned())?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "malformed status line".to_owned())?;
    let json = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
    Ok((status, json))
}
