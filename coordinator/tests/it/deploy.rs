//! The deploy artefacts under `deploy/` (issue 9), checked offline.
//!
//! - systemd: each unit passes `systemd-analyze verify` (its `ExecStart`
//!   pointed at the real binary) and `systemd-analyze security --offline`,
//!   has the hardening and timeouts we rely on, and the shipped config and
//!   environment examples start a coordinator and an agent that find each
//!   other.
//! - Containerfile: its stages, users, base images and build command; the
//!   binaries need no shared library beyond what distroless `cc` has (ldd).
//!   The image build itself needs a container runtime and the base images,
//!   neither of which this machine has.
//! - Kubernetes: every manifest passes `kubernetes-validate --strict`,
//!   `deploy/k8s/check.py` finds none of the problems it looks for, and the
//!   coordinator and the three agents run with the config, environment and
//!   mounts the manifests give them (loopback instead of the cluster).
//!
//! Every check is also run on a broken copy of its input and must fail.
//! The tools come from `.ci/run`: `systemd-analyze` (Debian `systemd`) and
//! `kubernetes-validate` (PyPI).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{self, Proc};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.37.0";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn deploy(rel: &str) -> PathBuf {
    workspace().join("deploy").join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `cmd`, returning whether it succeeded and its stdout and stderr.
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Fails (never skips) when a tool `.ci/run` installs is missing.
fn require(tool: &str, installed_by: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "{tool} is missing: {installed_by} (see .ci/run)");
}

/// A random token, as an operator would make with `openssl rand -hex`.
fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Replaces `from` with `to` in `text`, insisting that `from` is there: an
/// edit of the shipped file that removes it must be noticed here.
fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "expected {from:?} in:\n{text}");
    text.replace(from, to)
}

// ---------------------------------------------------------------- systemd

/// `(key, value)` of every assignment in a unit file, in order.
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn unit_value(text: &str, key: &str) -> Option<String> {
    unit_entries(text)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .next_back()
}

/// `systemd-analyze verify` on `text` saved as `name`, its `ExecStart`
/// binary replaced by `bin` (verify insists that it is an executable).
/// Every line of its output about the unit is a problem.
fn verify_unit(name: &str, text: &str, bin: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let exec = unit_value(text, "ExecStart").expect("ExecStart");
    let program = exec.split_whitespace().next().unwrap();
    let text = text.replace(
        &format!("ExecStart={program}"),
        &format!("ExecStart={}", bin.display()),
    );
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    let about_unit: Vec<&str> = out.lines().filter(|l| l.contains(name)).collect();
    if ok && about_unit.is_empty() {
        Ok(())
    } else {
        Err(format!("systemd-analyze verify {name}:\n{out}"))
    }
}

/// `systemd-analyze security --offline` must rate `text` at most 2.0
/// ("OK"); the units score 1.2.
fn security_score(name: &str, text: &str) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let (ok, out) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&path));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze security {name} rates it above 2.0:\n{out}"
        ))
    }
}

/// What the units must say besides what systemd checks: hardening, restart,
/// shutdown time, secrets and state.
fn unit_problems(name: &str, text: &str) -> Vec<String> {
    let stem = name.trim_end_matches(".service");
    let role = stem.trim_start_matches("vantage-");
    let mut required: Vec<(&str, String)> = [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("RestrictNamespaces", "yes"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("Restart", "on-failure"),
        ("StateDirectory", stem),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    required.push(("EnvironmentFile", format!("/etc/vantage/{role}.env")));
    if role == "coordinator" {
        required.push(("ExecReload", "/bin/kill -HUP $MAINPID".into()));
    }
    let entries = unit_entries(text);
    let mut problems: Vec<String> = required
        .iter()
        .filter(|(key, value)| !entries.iter().any(|(k, v)| k == key && v == value))
        .map(|(key, value)| format!("{name}: {key}={value} missing"))
        .collect();
    let secs = |key: &str| {
        unit_value(text, key)
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or_default()
    };
    if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&secs("RestartSec")) {
        problems.push(format!("{name}: RestartSec must be 1 s to 60 s"));
    }
    // The coordinator drains for up to 10 s, then gives blocking work 3 s;
    // the agent gives its session 5 s.
    let shutdown = if role == "coordinator" { 13 } else { 5 };
    if secs("TimeoutStopSec") <= Duration::from_secs(shutdown) {
        problems.push(format!(
            "{name}: TimeoutStopSec must exceed the program's {shutdown} s shutdown"
        ));
    }
    if role == "coordinator" {
        let exec = unit_value(text, "ExecStart").unwrap_or_default();
        if !exec.ends_with("run --config /etc/vantage/coordinator.toml") {
            problems.push(format!(
                "{name}: ExecStart must run --config /etc/vantage/coordinator.toml"
            ));
        }
    }
    if !unit_value(text, "ExecStart")
        .unwrap_or_default()
        .starts_with(&format!("/usr/local/bin/{stem} "))
    {
        problems.push(format!("{name}: ExecStart must run /usr/local/bin/{stem}"));
    }
    problems
}

fn unit_text(name: &str) -> String {
    read(&deploy("systemd").join(name))
}

fn unit_binaries() -> [(&'static str, PathBuf); 2] {
    [
        ("vantage-coordinator.service", support::coordinator_bin()),
        ("vantage-agent.service", support::agent_bin()),
    ]
}

#[test]
fn systemd_units_pass_verify_and_fail_it_when_broken() {
    require("systemd-analyze", "Debian package systemd");
    for (name, bin) in unit_binaries() {
        let text = unit_text(name);
        verify_unit(name, &text, &bin).unwrap_or_else(|e| panic!("{e}"));

        let broken = replace(&text, "[Service]\n", "[Service]\nRestartt=on-failure\n");
        let err = verify_unit(name, &broken, &bin).expect_err("an unknown key must fail");
        assert!(err.contains("Restartt"), "{err}");
        // Without the rewrite, ExecStart names a binary that is not here.
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-binary");
        let err = verify_unit(name, &text, &missing).expect_err("a missing binary must fail");
        assert!(err.contains("no-such-binary"), "{err}");
    }
}

#[test]
fn systemd_units_are_hardened_and_fail_without_it() {
    require("systemd-analyze", "Debian package systemd");
    for (name, _) in unit_binaries() {
        let text = unit_text(name);
        assert_eq!(unit_problems(name, &text), Vec::<String>::new());
        security_score(name, &text).unwrap_or_else(|e| panic!("{e}"));

        let weaker = replace(&text, "NoNewPrivileges=yes\n", "");
        let problems = unit_problems(name, &weaker);
        assert!(
            problems.iter().any(|p| p.contains("NoNewPrivileges")),
            "{problems:?}"
        );
        let quick = replace(
            &text,
            &format!(
                "TimeoutStopSec={}",
                unit_value(&text, "TimeoutStopSec").unwrap()
            ),
            "TimeoutStopSec=5s",
        );
        let problems = unit_problems(name, &quick);
        assert!(
            problems.iter().any(|p| p.contains("TimeoutStopSec")),
            "{problems:?}"
        );
        // Everything after the hardening comment gone: exposed.
        let (head, _) = text.split_once("# Hardening").unwrap();
        let bare = format!("{head}\n[Install]\nWantedBy=multi-user.target\n");
        security_score(name, &bare).expect_err("an unhardened unit must rate above 2.0");
    }
}

/// `VARIABLE=value` lines of an environment file (comments and blank lines
/// skipped).
fn env_file(path: &Path) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: not VARIABLE=value: {l}", path.display()));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The `token = { env = ... }` variable of the `[[agent]]` called `name`.
fn agent_token_env(config: &str, name: &str) -> String {
    let table: toml::Table = config.parse().unwrap();
    table["agent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"].as_str() == Some(name))
        .and_then(|a| a["token"]["env"].as_str())
        .unwrap_or_else(|| panic!("no [[agent]] {name:?} with token = {{ env }}"))
        .to_owned()
}

/// The config made safe to run here: listeners on loopback port 0, and the
/// one example check aimed at a closed loopback port (the agents' egress
/// policy refuses it: nothing leaves the machine). Fails if any check
/// would still reach beyond loopback.
fn on_loopback(config: &str) -> String {
    let text = replace(config, "\"0.0.0.0:7070\"", "\"127.0.0.1:0\"");
    let text = replace(&text, "\"0.0.0.0:7080\"", "\"127.0.0.1:0\"");
    let text = replace(&text, "\"https://example.com/\"", "\"http://127.0.0.1:9/\"");
    let table: toml::Table = text.parse().unwrap();
    for check in table
        .get("check")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let target = check
            .get("url")
            .or_else(|| check.get("host"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        assert!(
            target.starts_with("http://127.0.0.1:") || target == "127.0.0.1",
            "check {check} would probe {target:?} from this test: aim it at loopback here"
        );
    }
    text
}

/// The agents the coordinator lists, as `name -> region`, once `want` of
/// them are there (30 s at most).
async fn wait_for_agents(
    http: SocketAddr,
    api_token: &str,
    want: usize,
) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) =
            support::http_request(http, "GET", "/api/v1/agents", None, Some(api_token)).await;
        assert_eq!(status, 200, "GET /api/v1/agents: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        let agents: BTreeMap<String, String> = json["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().unwrap_or_default().to_owned(),
                    a["region"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if agents.len() >= want {
            return agents;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{want} agents did not connect within 30 s; the coordinator lists {agents:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The systemd files together: coordinator.toml with the variables of
/// coordinator.env.example and the credentials the unit loads, and an agent
/// with agent.env.example, paths moved into a temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_config_and_env_examples_start_a_coordinator_and_an_agent() {
    let agent_bin = support::agent_bin();
    let unit = unit_text("vantage-coordinator.service");
    let config = read(&deploy("systemd/coordinator.toml"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();

    // The store is the unit's StateDirectory.
    let state = format!("/var/lib/{}", unit_value(&unit, "StateDirectory").unwrap());
    let table: toml::Table = config.parse().unwrap();
    assert_eq!(
        table["server"]["data_dir"].as_str(),
        Some(state.as_str()),
        "data_dir must be the unit's StateDirectory"
    );
    // The TLS pair where systemd puts the unit's credentials.
    let creds = root.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    support::tls_toml(&creds, &[]);
    let credential_dir = "/run/credentials/vantage-coordinator.service";
    let mut text = config.clone();
    for (key, file) in [
        ("cert_file", "coordinator.crt"),
        ("key_file", "coordinator.key"),
    ] {
        let path = table["server"]["tls"][key].as_str().unwrap();
        let (dir, id) = path.rsplit_once('/').unwrap();
        assert_eq!(dir, credential_dir, "server.tls.{key}");
        let loaded = unit_entries(&unit)
            .into_iter()
            .any(|(k, v)| k == "LoadCredential" && v.starts_with(&format!("{id}:")));
        assert!(
            loaded,
            "server.tls.{key} names credential {id}, which the unit does not load"
        );
        std::fs::rename(creds.join(file), creds.join(id)).unwrap();
    }
    text = replace(&text, credential_dir, creds.to_str().unwrap());
    text = replace(
        &text,
        &format!("\"{state}\""),
        &format!("{:?}", root.join("state")),
    );
    let config_path = root.join("coordinator.toml");
    std::fs::write(&config_path, on_loopback(&text)).unwrap();

    // Every variable of the example, with a fresh value.
    let coordinator_env: Vec<(String, String)> =
        env_file(&deploy("systemd/coordinator.env.example"))
            .into_iter()
            .map(|(k, _)| (k, token()))
            .collect();
    let env_refs: Vec<(&str, &str)> = coordinator_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    // `validate` passes with them, and names a missing one.
    let (ok, out) = run(Command::new(support::coordinator_bin())
        .arg("validate")
        .arg(&config_path)
        .envs(env_refs.iter().copied()));
    assert!(ok, "validate: {out}");
    let (first, _) = env_refs[0];
    let (ok, out) = run(Command::new(support::coordinator_bin())
        .arg("validate")
        .arg(&config_path)
        .envs(env_refs.iter().copied().filter(|(k, _)| *k != first)));
    assert!(
        !ok && out.contains(first),
        "validate without {first}: {out}"
    );

    let (_coordinator, grpc, http) = support::start_coordinator_with(&config_path, &env_refs, None);

    // The agent as agent.env.example describes it, pointed at this
    // coordinator, with the token the coordinator holds for its name.
    let mut agent_env: BTreeMap<String, String> = env_file(&deploy("systemd/agent.env.example"))
        .into_iter()
        .collect();
    let name = agent_env["VANTAGE_AGENT_NAME"].clone();
    let region = agent_env["VANTAGE_REGION"].clone();
    assert!(agent_env["VANTAGE_COORDINATOR"].starts_with("https://"));
    let spool_unit = unit_value(&unit_text("vantage-agent.service"), "StateDirectory").unwrap();
    assert!(
        agent_env["VANTAGE_SPOOL_DIR"].starts_with(&format!("/var/lib/{spool_unit}/")),
        "the spool must be in the agent unit's StateDirectory"
    );
    let token_var = agent_token_env(&config, &name);
    let token = coordinator_env
        .iter()
        .find(|(k, _)| *k == token_var)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("coordinator.env.example lacks {token_var}"));
    agent_env.insert("VANTAGE_AGENT_TOKEN".into(), token);
    agent_env.insert(
        "VANTAGE_COORDINATOR".into(),
        format!("https://127.0.0.1:{}", grpc.port()),
    );
    let ca = support::test_ca().ca_file.to_str().unwrap().to_owned();
    agent_env.insert("VANTAGE_CA_FILE".into(), ca);
    let spool = root.join("spool");
    agent_env.insert(
        "VANTAGE_SPOOL_DIR".into(),
        spool.to_str().unwrap().to_owned(),
    );
    let _agent = Proc {
        child: Command::new(agent_bin)
            .arg("run")
            .env_clear()
            .envs(&agent_env)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawning vantage-agent"),
        spool: None,
    };

    let ops = &coordinator_env
        .iter()
        .find(|(k, _)| k == "VANTAGE_OPS_TOKEN")
        .expect("VANTAGE_OPS_TOKEN in coordinator.env.example")
        .1;
    let agents = wait_for_agents(http, ops, 1).await;
    assert_eq!(agents, BTreeMap::from([(name, region)]));
}

// ---------------------------------------------------------- Containerfile

/// One `FROM` and the instructions after it.
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// Instructions grouped by stage: comments dropped, continuation lines
/// joined.
fn stages(containerfile: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in containerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let (word, rest) = (word.to_ascii_uppercase(), rest.trim().to_owned());
        if word == "FROM" {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            let image = parts
                .iter()
                .find(|p| !p.starts_with("--"))
                .unwrap_or(&"")
                .to_string();
            let name = parts
                .iter()
                .position(|p| p.eq_ignore_ascii_case("as"))
                .and_then(|i| parts.get(i + 1))
                .map(|s| s.to_string());
            stages.push(Stage {
                image,
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((word, rest));
        }
    }
    stages
}

fn containerfile_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let stages = stages(text);
    if stages.len() < 2 {
        problems.push(format!(
            "{} stage(s): a builder and runtime stages expected",
            stages.len()
        ));
    }
    let names: Vec<String> = stages.iter().filter_map(|s| s.name.clone()).collect();
    for s in &stages {
        if names.contains(&s.image) {
            continue;
        }
        // A tag is after the last '/', a digest after '@'.
        let last = s.image.rsplit('/').next().unwrap_or_default();
        let tag = last.split_once(':').map(|(_, t)| t);
        let pinned = s.image.contains("@sha256:") || tag.is_some_and(|t| t != "latest");
        if !pinned {
            problems.push(format!(
                "FROM {}: pin the base image by tag or digest",
                s.image
            ));
        }
        for (word, rest) in &s.instructions {
            let lower = rest.to_ascii_lowercase();
            if word == "ADD" && (lower.contains("http://") || lower.contains("https://")) {
                problems.push(format!(
                    "ADD {rest}: no downloads in the build; COPY what is needed"
                ));
            }
        }
    }
    let builder = stages
        .iter()
        .find(|s| s.image.ends_with("rust:1.95-bookworm"));
    match builder {
        None => problems.push("no builder stage FROM rust:1.95-bookworm".into()),
        Some(b) => {
            let build = b
                .instructions
                .iter()
                .find(|(w, r)| w == "RUN" && r.contains("cargo build"))
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            for needle in [
                "--locked",
                "--release",
                "--bin vantage-coordinator",
                "--bin vantage-agent",
                "--mount=type=cache,target=/usr/local/cargo/registry",
                "--mount=type=cache,target=/src/target",
            ] {
                if !build.contains(needle) {
                    problems.push(format!("the builder's cargo build lacks {needle}"));
                }
            }
        }
    }
    for (target, ports) in [("coordinator", "7070 7080"), ("agent", "9090")] {
        let Some(stage) = stages.iter().find(|s| s.name.as_deref() == Some(target)) else {
            problems.push(format!("no stage named {target} (--target {target})"));
            continue;
        };
        if !stage.image.starts_with("gcr.io/distroless/cc-debian12:") {
            problems.push(format!(
                "{target}: FROM {} is not distroless cc-debian12",
                stage.image
            ));
        }
        let get = |w: &str| {
            stage
                .instructions
                .iter()
                .filter(|(word, _)| word == w)
                .map(|(_, r)| r.as_str())
                .next_back()
        };
        let user = get("USER").unwrap_or_default();
        let uid = user.split(':').next().unwrap_or_default();
        if !uid.parse::<u32>().is_ok_and(|u| u != 0) {
            problems.push(format!(
                "{target}: USER {user:?} must be a numeric non-root uid"
            ));
        }
        let binary = format!("/usr/local/bin/vantage-{target}");
        if get("ENTRYPOINT") != Some(format!("[\"{binary}\"]").as_str()) {
            problems.push(format!("{target}: ENTRYPOINT must be [\"{binary}\"]"));
        }
        let copied = stage
            .instructions
            .iter()
            .any(|(w, r)| w == "COPY" && r.starts_with("--from=") && r.ends_with(&binary));
        if !copied {
            problems.push(format!("{target}: {binary} is not copied from the builder"));
        }
        if get("EXPOSE") != Some(ports) {
            problems.push(format!("{target}: EXPOSE {ports} expected"));
        }
        let state = format!("[\"/var/lib/vantage-{target}\"]");
        if get("VOLUME") != Some(state.as_str()) {
            problems.push(format!("{target}: VOLUME {state} expected"));
        }
        if !get("LABEL").is_some_and(|l| l.contains("org.opencontainers.image.title")) {
            problems.push(format!("{target}: OCI labels missing"));
        }
    }
    problems
}

#[test]
fn containerfile_has_pinned_stages_and_non_root_targets() {
    let text = read(&deploy("docker/Containerfile"));
    assert_eq!(containerfile_problems(&text), Vec::<String>::new());

    let broken = [
        ("USER 65532:65532", "USER root", "numeric non-root"),
        ("USER 65532:65532", "USER 0:0", "numeric non-root"),
        (
            "FROM docker.io/library/rust:1.95-bookworm",
            "FROM rust",
            "rust:1.95-bookworm",
        ),
        (
            "gcr.io/distroless/cc-debian12:nonroot AS agent",
            "gcr.io/distroless/cc-debian12:latest AS agent",
            "pin the base image",
        ),
        (
            "WORKDIR /src\n",
            "WORKDIR /src\nADD https://example.com/x.tgz /x\n",
            "no downloads",
        ),
        (" --locked", "", "--locked"),
    ];
    for (from, to, expect) in broken {
        let problems = containerfile_problems(&text.replacen(from, to, 1));
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{from:?} -> {to:?}: expected a problem with {expect:?}, got {problems:?}"
        );
    }
    let one_stage = text.split("FROM gcr.io").next().unwrap();
    let problems = containerfile_problems(one_stage);
    assert!(
        problems.iter().any(|p| p.contains("1 stage")),
        "{problems:?}"
    );
}

/// Libraries `gcr.io/distroless/cc-debian12` provides (glibc and libgcc).
const DISTROLESS_CC_LIBS: &[&str] = &[
    "linux-vdso.so",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux",
];

/// The shared libraries in `ldd` output that distroless cc lacks.
fn ldd_problems(ldd: &str) -> Vec<String> {
    ldd.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("statically linked"))
        .filter_map(|l| {
            let lib = l.split_whitespace().next()?;
            let base = lib.rsplit('/').next().unwrap_or(lib);
            let known = DISTROLESS_CC_LIBS.iter().any(|k| base.starts_with(k));
            (!known || l.contains("not found")).then(|| l.to_owned())
        })
        .collect()
}

#[test]
fn binaries_need_only_what_distroless_cc_has() {
    require("ldd", "Debian package libc-bin");
    for bin in [support::coordinator_bin(), support::agent_bin()] {
        let (ok, out) = run(Command::new("ldd").arg(&bin));
        assert!(ok, "ldd {}: {out}", bin.display());
        assert_eq!(
            ldd_problems(&out),
            Vec::<String>::new(),
            "{} needs libraries that gcr.io/distroless/cc-debian12 lacks:\n{out}",
            bin.display()
        );
        let with_openssl = format!(
            "{out}\tlibssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x00007f0000000000)\n"
        );
        assert_eq!(
            ldd_problems(&with_openssl).len(),
            1,
            "libssl must be reported"
        );
    }
    assert_eq!(
        ldd_problems("\tlibgcc_s.so.1 => not found\n").len(),
        1,
        "a missing library must be reported"
    );
}

// ------------------------------------------------------------- Kubernetes

/// The manifests of `dir` that have a Kubernetes schema: all but the
/// kustomization and the ServiceMonitor (a CRD; check.py checks its fields).
fn schema_manifests(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .filter(|p| {
            let name = p.file_name().unwrap();
            name != "kustomization.yaml" && name != "servicemonitor.yaml"
        })
        .collect();
    files.sort();
    files
}

fn kubernetes_validate(dir: &Path) -> Result<(), String> {
    let files = schema_manifests(dir);
    assert!(
        files.len() >= 5,
        "only {} manifests in {}",
        files.len(),
        dir.display()
    );
    let (ok, out) = run(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .args(&files));
    if ok {
        Ok(())
    } else {
        Err(out)
    }
}

fn require_kubernetes_validate() {
    let (ok, _) = run(Command::new("python3").args(["-c", "import kubernetes_validate"]));
    assert!(
        ok,
        "kubernetes-validate is missing: pip install kubernetes-validate (see .ci/run)"
    );
}

/// A copy of deploy/k8s in a temporary directory, `file` edited by
/// replacing `from` (which must be there) with `to`.
fn broken_k8s(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(deploy("k8s")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let path = dir.path().join(file);
    std::fs::write(&path, replace(&read(&path), from, to)).unwrap();
    dir
}

#[test]
fn k8s_manifests_pass_the_schema_in_strict_mode() {
    require_kubernetes_validate();
    kubernetes_validate(&deploy("k8s")).unwrap_or_else(|e| panic!("{e}"));

    let typo = broken_k8s(
        "coordinator-statefulset.yaml",
        "  replicas: 1\n",
        "  replica: 1\n",
    );
    let err = kubernetes_validate(typo.path()).expect_err("an unknown field must fail");
    assert!(err.contains("replica"), "{err}");
    let wrong_type = broken_k8s("agents.yaml", "periodSeconds: 10", "periodSeconds: ten");
    kubernetes_validate(wrong_type.path()).expect_err("a string for an integer must fail");
}

/// deploy/k8s/check.py on `dir`: success and its output.
fn k8s_check(dir: &Path, plan: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(deploy("k8s/check.py")).arg(dir);
    if let Some(plan) = plan {
        cmd.arg("--plan").arg(plan);
    }
    run(&mut cmd)
}

#[test]
fn k8s_checker_passes_the_manifests_and_catches_each_mistake() {
    require_kubernetes_validate();
    let (ok, out) = k8s_check(&deploy("k8s"), None);
    assert!(ok, "check.py:\n{out}");

    const AGENT_TOKEN: &str = "            - name: VANTAGE_AGENT_TOKEN
              valueFrom:
                secretKeyRef:
                  name: vantage-agent-tokens
                  key: eu-1
";
    let mistakes = [
        (
            "coordinator-statefulset.yaml",
            "          readinessProbe:\n",
            "          readinessProbeRemoved:\n",
            "readinessProbe missing",
        ),
        (
            "agents.yaml",
            "          livenessProbe:\n",
            "          livenessProbeRemoved:\n",
            "livenessProbe missing",
        ),
        (
            "agents.yaml",
            AGENT_TOKEN,
            "            - name: VANTAGE_AGENT_TOKEN\n              value: hunter2\n",
            "VANTAGE_AGENT_TOKEN holds a secret",
        ),
        (
            "agents.yaml",
            "fieldPath: metadata.labels['vantage.dev/region']",
            "fieldPath: metadata.name",
            "VANTAGE_REGION must come from the pod label",
        ),
        (
            "agents.yaml",
            "                  key: us-1\n",
            "                  key: eu-1\n",
            "must be the Secret key the coordinator reads",
        ),
        (
            "coordinator-statefulset.yaml",
            "            limits:\n              memory: 512Mi\n",
            "",
            "resources.limits.memory missing",
        ),
        (
            "coordinator-statefulset.yaml",
            "            runAsNonRoot: true\n            runAsUser: 65532\n            runAsGroup: 65532\n            allowPrivilegeEscalation",
            "            runAsNonRoot: false\n            runAsUser: 65532\n            runAsGroup: 65532\n            allowPrivilegeEscalation",
            "runAsNonRoot must be true",
        ),
        (
            "coordinator-statefulset.yaml",
            "              scheme: HTTPS\n            periodSeconds: 10",
            "              scheme: HTTP\n            periodSeconds: 10",
            "livenessProbe must GET /healthz",
        ),
        (
            "coordinator-statefulset.yaml",
            "            - name: data\n              mountPath: /var/lib/vantage-coordinator\n",
            "            - name: data\n              mountPath: /var/lib/vantage\n",
            "data_dir",
        ),
        (
            "coordinator-configmap.yaml",
            "token = { env = \"VANTAGE_OPS_TOKEN\" }",
            "token = \"hunter2\"",
            "api.token[0].token holds a secret",
        ),
        (
            "coordinator-configmap.yaml",
            "cert_file = \"/etc/vantage/tls/tls.crt\"",
            "cert_file = \"/etc/vantage/config/tls.crt\"",
            "server.tls.cert_file",
        ),
        (
            "kustomization.yaml",
            "  - agents.yaml\n",
            "  - agents.yaml\n  - servicemonitor.yaml\n",
            "must leave out",
        ),
        (
            "servicemonitor.yaml",
            "          key: prometheus\n",
            "          key: grafana\n",
            "bearer token",
        ),
    ];
    for (file, from, to, expect) in mistakes {
        let dir = broken_k8s(file, from, to);
        let (ok, out) = k8s_check(dir.path(), None);
        assert!(
            !ok && out.contains(expect),
            "{file}: {from:?} -> {to:?} must fail with {expect:?}:\n{out}"
        );
    }
}

/// Writes the files a mount would hold under `root`.
fn materialize(
    root: &Path,
    mounts: &serde_json::Value,
    configmaps: &serde_json::Value,
    tls_dir: &Path,
) {
    for m in mounts.as_array().unwrap() {
        let path = root.join(m["path"].as_str().unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(&path).unwrap();
        let name = m["name"].as_str().unwrap();
        match m["kind"].as_str().unwrap() {
            "configMap" if name == "vantage-ca" => {
                std::fs::write(path.join("ca.crt"), &support::test_ca().ca_pem).unwrap();
            }
            "configMap" => {
                let data = configmaps[name]
                    .as_object()
                    .unwrap_or_else(|| panic!("ConfigMap {name} is not in the manifests"));
                for (key, value) in data {
                    std::fs::write(path.join(key), value.as_str().unwrap()).unwrap();
                }
            }
            // A kubernetes.io/tls Secret: tls.crt and tls.key.
            "secret" => {
                assert_eq!(name, "vantage-coordinator-tls", "unexpected Secret volume");
                std::fs::copy(tls_dir.join("coordinator.crt"), path.join("tls.crt")).unwrap();
                std::fs::copy(tls_dir.join("coordinator.key"), path.join("tls.key")).unwrap();
            }
            _ => {}
        }
    }
}

/// A container's environment: literal values, Secret keys from `secrets`
/// (one random value per key, shared by every container that reads it),
/// paths under its mounts moved under `root`.
fn container_env(
    plan: &serde_json::Value,
    root: &Path,
    secrets: &mut BTreeMap<(String, String), String>,
) -> BTreeMap<String, String> {
    let mounts: Vec<&str> = plan["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    let mut env = BTreeMap::new();
    for (name, source) in plan["env"].as_object().unwrap() {
        let value = if let Some(v) = source["value"].as_str() {
            let rooted = mounts
                .iter()
                .any(|m| v.starts_with(&format!("{m}/")) || v == *m);
            if rooted {
                root.join(v.trim_start_matches('/'))
                    .to_str()
                    .unwrap()
                    .to_owned()
            } else {
                v.to_owned()
            }
        } else {
            let key = (
                source["secret"][0].as_str().unwrap().to_owned(),
                source["secret"][1].as_str().unwrap().to_owned(),
            );
            secrets.entry(key).or_insert_with(token).clone()
        };
        env.insert(name.clone(), value);
    }
    env
}

/// The coordinator and the three agents, each with the config, environment
/// and files its manifest gives it (Secrets filled with fresh values), on
/// loopback: every agent is accepted, in its region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_coordinator_and_agents_run_as_the_manifests_configure_them() {
    require_kubernetes_validate();
    let agent_bin = support::agent_bin();
    let work = tempfile::tempdir().unwrap();
    let plan_path = work.path().join("plan.json");
    let (ok, out) = k8s_check(&deploy("k8s"), Some(&plan_path));
    assert!(ok, "check.py:\n{out}");
    let plan: serde_json::Value = serde_json::from_str(&read(&plan_path)).unwrap();
    let tls_dir = work.path().join("tls-source");
    std::fs::create_dir_all(&tls_dir).unwrap();
    support::tls_toml(&tls_dir, &[]);
    let mut secrets = BTreeMap::new();

    // The coordinator's pod, its filesystem under `root`.
    let root = work.path().join("coordinator");
    let coordinator = &plan["coordinator"];
    materialize(&root, &coordinator["mounts"], &plan["configmaps"], &tls_dir);
    let config_path = root.join(
        plan["config_path"]
            .as_str()
            .unwrap()
            .trim_start_matches('/'),
    );
    let mut text = read(&config_path);
    // Absolute paths on the pod's mounts, moved under root like the mounts.
    for m in coordinator["mounts"].as_array().unwrap() {
        let path = m["path"].as_str().unwrap();
        let moved = root.join(path.trim_start_matches('/'));
        text = text.replace(&format!("\"{path}"), &format!("\"{}", moved.display()));
    }
    std::fs::write(&config_path, on_loopback(&text)).unwrap();
    let env = container_env(coordinator, &root, &mut secrets);
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ok, out) = run(Command::new(support::coordinator_bin())
        .arg("validate")
        .arg(&config_path)
        .env_clear()
        .envs(env_refs.iter().copied()));
    assert!(ok, "validate the ConfigMap's coordinator.toml: {out}");
    let (_coordinator, grpc, http) = support::start_coordinator_with(&config_path, &env_refs, None);

    let mut agents = Vec::new();
    let mut expected = BTreeMap::new();
    let mut health_addrs: Vec<SocketAddr> = Vec::new();
    for agent in plan["agents"].as_array().unwrap() {
        let deployment = agent["deployment"].as_str().unwrap();
        let root = work.path().join(deployment);
        materialize(&root, &agent["mounts"], &plan["configmaps"], &tls_dir);
        let mut env = container_env(agent, &root, &mut secrets);
        // The Service's address, here: the coordinator on loopback.
        let url = &env["VANTAGE_COORDINATOR"];
        assert!(
            url.starts_with("https://vantage-coordinator.vantage.svc:"),
            "{url}"
        );
        env.insert(
            "VANTAGE_COORDINATOR".into(),
            format!("https://127.0.0.1:{}", grpc.port()),
        );
        // The manifests' 0.0.0.0:9090 is one port for all three here: each
        // agent gets its own loopback port instead, probed below.
        assert_eq!(env["VANTAGE_HEALTH_LISTEN"], "0.0.0.0:9090");
        let health: SocketAddr = format!("127.0.0.1:{}", support::free_port())
            .parse()
            .unwrap();
        env.insert("VANTAGE_HEALTH_LISTEN".into(), health.to_string());
        health_addrs.push(health);
        expected.insert(
            env["VANTAGE_AGENT_NAME"].clone(),
            env["VANTAGE_REGION"].clone(),
        );
        agents.push(Proc {
            child: Command::new(&agent_bin)
                .args(
                    agent["args"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap()),
                )
                .env_clear()
                .envs(&env)
                .stdout(Stdio::null())
                .spawn()
                .expect("spawning vantage-agent"),
            spool: None,
        });
    }
    assert_eq!(expected.len(), 3, "{expected:?}");
    let ops = secrets[&("vantage-api-tokens".to_owned(), "ops".to_owned())].clone();
    let connected = wait_for_agents(http, &ops, expected.len()).await;
    assert_eq!(connected, expected);
    // The routes the manifests' probes ask for: live, and ready with a session.
    for health in health_addrs {
        assert_eq!(
            support::http_request(health, "GET", "/healthz", None, None)
                .await
                .0,
            200
        );
        let ready = support::eventually(Duration::from_secs(20), || async {
            (support::http_request(health, "GET", "/readyz", None, None)
                .await
                .0
                == 200)
                .then_some(())
        })
        .await;
        assert!(ready.is_some(), "{health}: /readyz never answered 200");
    }
}
