//! Command-line interface: `run` (the fleet agent), `probe` (one check),
//! `load` (a local load test) and `audit` (a launch-readiness scorecard).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vantage_agent::{oneshot, AgentOptions, Identity};

/// Exit code when a one-shot probe failed.
const EXIT_PROBE_FAILED: u8 = 1;
/// Exit code for errors (bad arguments, runtime failure).
const EXIT_ERROR: u8 = 2;
/// `load`: a threshold failed (the k6 contract).
const EXIT_THRESHOLDS_FAILED: u8 = 99;
/// `load`: bad load file, flags or a disallowed host.
const EXIT_LOAD_BAD_INPUT: u8 = 2;
/// `load`: any other error (target unreachable at start, output files).
const EXIT_LOAD_ERROR: u8 = 1;
/// `audit`: the verdict is not `ready` (the same code as a failed load
/// threshold: "ran, and the target did not pass").
const EXIT_AUDIT_NOT_READY: u8 = 99;

/// `--version`: the version and what the build is made from.
static LONG_VERSION: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(vantage_proto::build_info::long_version);

#[derive(Parser)]
#[command(
    name = "vantage-agent",
    version = LONG_VERSION.as_str(),
    about = "Vantage agent: runs checks and streams results to the coordinator"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dial the coordinator and run the checks it assigns.
    Run {
        /// Coordinator gRPC URL: https://HOST:PORT, or http:// to a loopback
        /// address only.
        #[arg(
            long,
            env = "VANTAGE_COORDINATOR",
            default_value = "http://127.0.0.1:7070"
        )]
        coordinator: String,
        /// Region this agent probes from.
        #[arg(long, env = "VANTAGE_REGION")]
        region: String,
        /// File holding this agent's token (else the environment variable
        /// VANTAGE_AGENT_TOKEN); never on the command line, where `ps` shows it.
        #[arg(long, value_name = "PATH")]
        token_file: Option<std::path::PathBuf>,
        /// PEM file with extra trust anchors for an https:// coordinator
        /// (besides the Mozilla roots).
        #[arg(long, env = "VANTAGE_CA_FILE", value_name = "PATH")]
        ca_file: Option<std::path::PathBuf>,
        /// Client certificate (PEM, leaf first) for a coordinator that
        /// authenticates agents by certificate (its server.tls.client_ca_file);
        /// it must name this agent in a DNS subject alternative name. Needs
        /// --key-file and an https:// coordinator; no token is needed then.
        #[arg(
            long,
            env = "VANTAGE_CERT_FILE",
            value_name = "PATH",
            requires = "key_file"
        )]
        cert_file: Option<std::path::PathBuf>,
        /// The private key (PEM) of --cert-file.
        #[arg(
            long,
            env = "VANTAGE_KEY_FILE",
            value_name = "PATH",
            requires = "cert_file"
        )]
        key_file: Option<std::path::PathBuf>,
        /// Agent name, unique in the fleet (default: the host name).
        #[arg(long, env = "VANTAGE_AGENT_NAME")]
        name: Option<String>,
        /// Probes in flight at once.
        #[arg(long, default_value_t = vantage_agent::scheduler::DEFAULT_MAX_CONCURRENT_PROBES)]
        max_concurrent_probes: usize,
        /// Directory of the durable spool: results wait there (on disk) until
        /// the coordinator acknowledges them. One directory per agent.
        #[arg(long, env = "VANTAGE_SPOOL_DIR", default_value = "vantage-agent-spool")]
        spool_dir: std::path::PathBuf,
        /// Bound on the spool in bytes; when full the oldest results are
        /// dropped and counted.
        #[arg(long, default_value_t = vantage_agent::spool::DEFAULT_MAX_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=(1u64 << 40)))]
        spool_max_bytes: usize,
        /// Allow coordinator-driven load to this host besides loopback
        /// (repeatable; also VANTAGE_LOAD_ALLOWED_HOSTS, comma-separated).
        #[arg(long, value_name = "HOST")]
        load_allow_host: Vec<String>,
        /// Most VUs a coordinator-driven load run may use on this agent.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=vantage_agent::load::file::DEFAULT_MAX_VUS))]
        load_max_vus: Option<u64>,
        /// Most requests per second a coordinator-driven load run may send
        /// from this agent (default 100000).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=vantage_agent::load::file::HIGHEST_MAX_RATE as u64))]
        load_max_rate: Option<u64>,
        /// Longest coordinator-driven load run this agent takes part in.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        load_max_duration: Duration,
        /// Let checks and load reach this non-public range (CIDR or one
        /// address; repeatable; also VANTAGE_EGRESS_ALLOW, comma-separated).
        /// Loopback, private, link-local (metadata), CGNAT and ULA addresses
        /// are refused without it.
        #[arg(long, value_name = "CIDR")]
        egress_allow: Vec<String>,
        /// Serve GET /healthz (liveness) and /readyz (a coordinator session
        /// is open) over plain HTTP on this address, e.g. 0.0.0.0:9090.
        #[arg(long, env = "VANTAGE_HEALTH_LISTEN", value_name = "ADDR")]
        health_listen: Option<std::net::SocketAddr>,
    },
    /// Run one check now and print its phases, status and TLS facts.
    Probe {
        /// https://host/path, http://..., tcp://host:port or tls://host:port.
        target: String,
        /// Deadline for the whole attempt.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Accept an untrusted certificate (facts are still reported).
        #[arg(long, short = 'k')]
        insecure: bool,
        /// PEM file with extra trust anchors.
        #[arg(long)]
        ca_file: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Audit a site before launch (TLS, latency, mail DNS, HTTP checks) and
    /// print a scorecard; exit 0 when the verdict is ready, 99 otherwise.
    Audit {
        /// The site: https://example.com/ (an http:// URL is audited as
        /// the https:// site it should redirect to).
        url: String,
        /// A route that must refuse anonymous requests (repeatable).
        #[arg(long, value_name = "PATH")]
        protected: Vec<String>,
        /// A login route that must be rate limited.
        #[arg(long, value_name = "PATH")]
        login: Option<String>,
        /// Mail domain (default: the URL's host without a leading www.).
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// A DKIM selector that must publish a key (repeatable; default:
        /// common selectors are tried and one must answer).
        #[arg(long = "dkim-selector", value_name = "SELECTOR")]
        dkim_selector: Vec<String>,
        /// DNS server for the mail records (default: the system's).
        #[arg(long, value_name = "IP[:PORT]")]
        dns_server: Option<String>,
        /// Connect to ADDR for HOST instead of resolving it (repeatable).
        #[arg(long, value_name = "HOST:ADDR")]
        resolve: Vec<String>,
        /// PEM file with extra trust anchors.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<String>,
        /// Port of the site's plain-HTTP listener.
        #[arg(long, default_value_t = 80)]
        http_port: u16,
        /// Deadline of each check.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Leave a check out (repeatable, or comma-separated): tls, latency,
        /// redirect, headers, cors, auth_required, rate_limit,
        /// exposed_secrets, email_dns.
        #[arg(long, value_name = "CHECK", value_delimiter = ',')]
        skip: Vec<String>,
        /// `json` (JSON on stdout instead of text), `json=PATH` or
        /// `html=PATH`; repeatable, one of each kind.
        #[arg(long, value_name = "json|json=PATH|html=PATH")]
        out: Vec<String>,
    },
    /// Run a local k6-style load test described by a TOML file.
    Load {
        /// The load file (see README, "Load tests").
        file: std::path::PathBuf,
        /// Write results: `--out json=PATH` (NDJSON) or `--out html=PATH`
        /// (the HTML report); repeatable, one of each kind.
        #[arg(long, value_name = "json=PATH|html=PATH")]
        out: Vec<String>,
        /// Write an HdrHistogram interval log of http_req_duration.
        #[arg(long, value_name = "PATH")]
        hlog: Option<std::path::PathBuf>,
        /// Allow load to this host besides loopback (repeatable).
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_host: Vec<String>,
        /// Tokio worker threads (default: the number of cores; 1 = current-thread runtime).
        #[arg(long)]
        threads: Option<usize>,
        /// PEM file with extra trust anchors for https targets.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<String>,
        /// Lower the VU cap of the file.
        #[arg(long)]
        max_vus: Option<u64>,
        /// The rate cap in requests per second (default 100000, at most
        /// 1000000); the file's options.max_rate can only lower it.
        #[arg(long)]
        max_rate: Option<u64>,
        /// No progress line.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
}

/// The client certificate of `--cert-file`/`--key-file` (clap makes them
/// come together): only over https://, and both files readable now, so a
/// typo stops the start instead of failing every connection.
fn client_cert(
    coordinator: &str,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
) -> Result<Option<vantage_agent::ClientCert>, String> {
    let (Some(cert_file), Some(key_file)) = (cert_file, key_file) else {
        return Ok(None);
    };
    if !coordinator.starts_with("https://") {
        return Err(format!(
            "--cert-file needs an https:// coordinator, not {coordinator}"
        ));
    }
    for (flag, path) in [("--cert-file", &cert_file), ("--key-file", &key_file)] {
        std::fs::File::open(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    }
    Ok(Some(vantage_agent::ClientCert {
        cert_file,
        key_file,
    }))
}

/// The agent's token: from `file`, else from `VANTAGE_AGENT_TOKEN`, else
/// none (a coordinator with open enrollment on loopback).
fn agent_token(
    file: Option<&std::path::Path>,
) -> Result<Option<vantage_agent::AgentToken>, String> {
    use vantage_agent::AgentToken;
    if let Some(path) = file {
        return AgentToken::from_file(path).map(Some);
    }
    match std::env::var(AgentToken::ENV) {
        Ok(v) => AgentToken::new(&v).map(Some).ok_or_else(|| {
            format!(
                "{} is empty or holds characters a token cannot have",
                AgentToken::ENV
            )
        }),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(format!("{} is not valid UTF-8", AgentToken::ENV))
        }
    }
}

pub fn execute(cli: Cli) -> ExitCode {
    let command = match cli.command {
        load_command @ Command::Load { .. } => return load(load_command),
        audit_command @ Command::Audit { .. } => return audit(audit_command),
        other => other,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match command {
        Command::Run {
            coordinator,
            region,
            token_file,
            ca_file,
            cert_file,
            key_file,
            name,
            max_concurrent_probes,
            spool_dir,
            spool_max_bytes,
            load_allow_host,
            load_max_vus,
            load_max_rate,
            load_max_duration,
            egress_allow,
            health_listen,
        } => {
            let env = std::env::var(vantage_agent::egress::ALLOW_ENV).ok();
            let egress = match vantage_agent::egress::EgressPolicy::from_flags_and_env(
                &egress_allow,
                env.as_deref(),
            ) {
                Ok(policy) => policy,
                Err(e) => {
                    eprintln!(
                        "error: --egress-allow / {}: {e}",
                        vantage_agent::egress::ALLOW_ENV
                    );
                    return ExitCode::from(EXIT_ERROR);
                }
            };
            let name = name.unwrap_or_else(default_name);
            let token = match agent_token(token_file.as_deref()) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    rt.shutdown_background();
                    return ExitCode::from(EXIT_ERROR);
                }
            };
            let client_cert = match client_cert(&coordinator, cert_file, key_file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    rt.shutdown_background();
                    return ExitCode::from(EXIT_ERROR);
                }
            };
            let mut opts = AgentOptions::new(Identity {
                coordinator,
                name,
                region,
                token,
                ca_file,
                client_cert,
            });
            opts.max_concurrent_probes = max_concurrent_probes;
            opts.spool_dir = Some(spool_dir);
            opts.spool_max_bytes = spool_max_bytes;
            opts.egress = std::sync::Arc::new(egress);
            opts.health_listen = health_listen;
            let env = std::env::var(vantage_agent::load::safety::ALLOWED_HOSTS_ENV).ok();
            opts.load = vantage_agent::load::remote::Limits {
                allowed: vantage_agent::load::safety::AllowedHosts::from_flags_and_env(
                    &load_allow_host,
                    env.as_deref(),
                ),
                max_vus: load_max_vus,
                max_rate: load_max_rate.map(|r| r as f64),
                max_duration: load_max_duration,
            };
            match rt.block_on(vantage_agent::run(opts, shutdown_signal())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(EXIT_ERROR)
                }
            }
        }
        Command::Probe {
            target,
            timeout,
            insecure,
            ca_file,
            json,
        } => match rt.block_on(oneshot::probe_url(&target, timeout, insecure, ca_file)) {
            Ok(outcome) => {
                if json {
                    println!("{}", oneshot::render_json(&outcome, &target));
                } else {
                    print!("{}", oneshot::render(&outcome, &target));
                }
                if outcome.is_success() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_PROBE_FAILED)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_ERROR)
            }
        },
        Command::Load { .. } => load(command),
        Command::Audit { .. } => audit(command),
    };
    // A name lookup still running on a blocking thread (the system resolver
    // ignores our deadline) must not hold the exit: the result is out.
    rt.shutdown_background();
    code
}

/// `vantage-agent load FILE`: exit 0 when every threshold passed, 99 when one
/// failed, 2 for bad input, 1 for other errors.
fn load(command: Command) -> ExitCode {
    use vantage_agent::load::{self, file, safety::AllowedHosts, LoadError, RunOptions, Verdict};
    let Command::Load {
        file: path,
        out,
        hlog,
        allow_host,
        threads,
        ca_file,
        max_vus,
        max_rate,
        quiet,
    } = command
    else {
        return ExitCode::from(EXIT_LOAD_ERROR);
    };
    let bad = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(EXIT_LOAD_BAD_INPUT)
    };
    let (mut json, mut html) = (None, None);
    for o in &out {
        let (slot, p) = match o.split_once('=') {
            Some(("json", p)) if !p.is_empty() => (&mut json, p),
            Some(("html", p)) if !p.is_empty() => (&mut html, p),
            _ => return bad(format!("--out takes json=PATH or html=PATH, got {o:?}")),
        };
        if slot.replace(std::path::PathBuf::from(p)).is_some() {
            return bad(format!("--out: {o:?} repeats an output kind"));
        }
    }
    let title = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 256 {
        return bad(format!(
            "--threads must be between 1 and 256, got {threads}"
        ));
    }
    if max_vus == Some(0) || max_rate == Some(0) {
        return bad("--max-vus and --max-rate must be at least 1".into());
    }
    let highest = load::file::HIGHEST_MAX_RATE as u64;
    if max_rate.is_some_and(|r| r > highest) {
        return bad(format!("--max-rate must be at most {highest}"));
    }
    let env = std::env::var(load::safety::ALLOWED_HOSTS_ENV).ok();
    let allowed = AllowedHosts::from_flags_and_env(&allow_host, env.as_deref());
    let plan = match file::load(&path, &allowed) {
        Ok(plan) => plan,
        Err(e) => return bad(e.to_string()),
    };
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(EXIT_LOAD_ERROR);
        }
    };
    use std::io::IsTerminal as _;
    let opts = RunOptions {
        max_vus,
        max_rate: max_rate.map(|r| r as f64),
        shards: threads,
        ca_file,
        json,
        hlog,
        html,
        title,
        progress: (!quiet).then(|| std::io::stderr().is_terminal()),
        remote: None,
        egress: None,
        max_duration: None,
    };
    match rt.block_on(load::run(plan, opts)) {
        Ok(report) => {
            print!("{}", report.summary);
            match report.verdict {
                Verdict::Passed => ExitCode::SUCCESS,
                Verdict::ThresholdsFailed => ExitCode::from(EXIT_THRESHOLDS_FAILED),
                Verdict::Unreachable => ExitCode::from(EXIT_LOAD_ERROR),
            }
        }
        Err(LoadError::Input(msg)) => bad(msg),
        Err(LoadError::Other(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(EXIT_LOAD_ERROR)
        }
    }
}

/// Where `audit --out` sends the scorecard.
#[derive(Default)]
struct AuditOutputs {
    json_stdout: bool,
    json: Option<std::path::PathBuf>,
    html: Option<std::path::PathBuf>,
}

impl AuditOutputs {
    fn parse(out: &[String]) -> Result<Self, String> {
        let mut o = AuditOutputs::default();
        for spec in out {
            let repeated = match spec.split_once('=') {
                None if spec == "json" => std::mem::replace(&mut o.json_stdout, true),
                Some(("json", p)) if !p.is_empty() => o.json.replace(p.into()).is_some(),
                Some(("html", p)) if !p.is_empty() => o.html.replace(p.into()).is_some(),
                _ => {
                    return Err(format!(
                        "--out takes json, json=PATH or html=PATH, got {spec:?}"
                    ))
                }
            };
            if repeated {
                return Err(format!("--out: {spec:?} repeats an output kind"));
            }
        }
        Ok(o)
    }
}

/// `vantage-agent audit URL`: exit 0 when the verdict is ready, 99 when it
/// is not, 2 for bad input or an output that cannot be written.
fn audit(command: Command) -> ExitCode {
    use vantage_agent::audit::{self, plan::parse_resolve, AuditOptions, Verdict};
    let Command::Audit {
        url,
        protected,
        login,
        domain,
        dkim_selector,
        dns_server,
        resolve,
        ca_file,
        http_port,
        timeout,
        skip,
        out,
    } = command
    else {
        return ExitCode::from(EXIT_ERROR);
    };
    let bad = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(EXIT_ERROR)
    };
    let outputs = match AuditOutputs::parse(&out) {
        Ok(o) => o,
        Err(e) => return bad(e),
    };
    let resolve = match resolve.iter().map(|r| parse_resolve(r)).collect() {
        Ok(map) => map,
        Err(e) => return bad(e),
    };
    let opts = AuditOptions {
        url,
        protected,
        login,
        domain,
        dkim_selectors: dkim_selector,
        dns_server,
        resolve,
        ca_file,
        http_port,
        timeout,
        skip,
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return bad(format!("starting the async runtime: {e}")),
    };
    let result = rt.block_on(audit::audit(&opts));
    // As for `probe`: a system lookup still blocking must not hold the exit.
    rt.shutdown_background();
    let card = match result {
        Ok(card) => card,
        Err(e) => return bad(e),
    };
    if outputs.json_stdout {
        println!("{}", card.to_json());
    } else {
        print!("{}", card.to_text());
    }
    for (path, body) in [
        (&outputs.json, outputs.json.as_ref().map(|_| card.to_json())),
        (&outputs.html, outputs.html.as_ref().map(|_| card.to_html())),
    ] {
        if let (Some(path), Some(body)) = (path, body) {
            if let Err(e) = std::fs::write(path, body) {
                return bad(format!("writing {}: {e}", path.display()));
            }
        }
    }
    match card.verdict() {
        Verdict::Ready => ExitCode::SUCCESS,
        Verdict::ReadyAfterFixes | Verdict::Hold => ExitCode::from(EXIT_AUDIT_NOT_READY),
    }
}

fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| vantage_proto::is_valid_name(s))
        .unwrap_or_else(|| "agent".to_owned())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
