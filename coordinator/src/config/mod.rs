//! The coordinator's TOML configuration: [`load`] / [`parse`] turn a file into
//! a validated [`Config`], or into [`ConfigErrors`] listing **every** problem
//! with file, line, column and key path.
//!
//! # Format (contract; README's config reference says the same)
//!
//! ```toml
//! version = 1                       # required; the only version is 1
//!
//! [server]                          # optional table
//! grpc_listen = "127.0.0.1:7070"    # default; agents dial this
//! http_listen = "127.0.0.1:7080"    # default; HTTP API
//! data_dir = "vantage-data"         # default; relative to the config file's directory
//! window = "10s"                    # default 10s; one result window (1s to 5m)
//! cache_capacity_mb = 64            # default 64; sled page cache in MiB (1 to 4096)
//! raw_retention = "48h"             # default 48h; raw windows kept (25h to 400d), roll-ups 400d
//!
//! [server.tls]                      # optional; required unless both listeners are loopback
//! cert_file = "coordinator.crt"     # PEM chain, leaf first; relative to the config file
//! key_file = "coordinator.key"      # PEM private key (PKCS#8, PKCS#1 or SEC1)
//!
//! [[agent]]                         # optional; required unless grpc_listen is loopback
//! name = "eu-1"                     # required, unique; the name the agent says in Hello
//! region = "eu"                     # optional: the only region this agent may claim
//! sha256 = "64 hex digits"          # SHA-256 of its token, or an array of two (rotation)
//! token = { env = "VAR" }           # or the token itself from { env } / { file }, hashed
//!
//! [[check]]
//! name = "homepage"                 # required, unique; 1-64 of A-Z a-z 0-9 . _ -
//! kind = "http"                     # required: http | tcp | tls
//! regions = ["eu", "us"]            # required, non-empty, valid names, no duplicates
//! interval = "30s"                  # default 30s; 200ms to 24h
//! timeout = "10s"                   # default min(10s, interval); at most interval and 2m
//! url = "https://example.com/"      # http: required
//!
//! [load]                            # optional: distributed load runs
//! allowed_hosts = ["staging.example.com"]  # besides loopback; default none
//! max_rate = 100000                 # default; requests/s of one run (1 to 1000000)
//! max_vus = 1000                    # default; VUs of one run (1 to 1000)
//! max_duration = "1h"               # default; longest planned run (1s to 24h)
//! ownership_token = "..."           # optional; targets must publish vantage-load=<token>
//! ownership_dns_server = "127.0.0.1:53"  # optional; for the TXT proofs (default: system)
//! ```
//!
//! Durations are strings of `<whole number><unit>` groups with the units `ms`,
//! `s`, `m`, `h` (`"500ms"`, `"30s"`, `"1h30m"`). Kind-specific keys:
//! `http` takes `url` (required), `method` (GET), `headers` (inline table),
//! `expect_status` (200-399), `body_contains`, `follow_redirects` (true),
//! `max_redirects` (10, at most 20), `insecure_skip_verify` (false), `ca_file`;
//! `tcp` takes `host`, `port` (both required); `tls` takes `host`, `port`,
//! `server_name` (defaults to host), `ca_file`.
//!
//! # Errors
//!
//! Each [`ConfigError`] displays as one line, `FILE:LINE:COLUMN: KEY.PATH: MESSAGE`:
//!
//! ```text
//! coordinator.toml:8:1: check[0].intervall: unknown key `intervall`, did you mean `interval`?
//! ```
//!
//! Where an error points (line and column are 1-based; columns count characters):
//! - a wrong, unknown or misplaced key, and a bad value: the **start of the key**
//!   (for an inline-table entry such as a header, that entry's key);
//! - a bad element of an array (`regions`, `expect_status`, `[[check]]`): the
//!   **element** itself, with a path like `check[0].regions[1]`;
//! - a missing key: the header of its table (`[[check]]`, `[server]`), or 1:1
//!   for a missing top-level key such as `version`;
//! - an error found by the check validation shared with the agent
//!   ([`vantage_proto::spec::Check::validate`]): the key it names, or the
//!   `[[check]]` header when that key was left to its default.
//!
//! A syntactically broken file yields the TOML parser's errors instead (path
//! empty, displayed as `FILE:LINE:COLUMN: MESSAGE`); a file that cannot be read
//! yields one error without a position (line and column 0, displayed as
//! `FILE: MESSAGE`). Errors are sorted by position.
#![warn(missing_docs)]

mod alerting;
mod check;
mod reader;

pub use self::alerting::{
    AlertingConfig, CheckAlerting, Maintenance, RuleSpec, DEFAULT_AGENT_DOWN_AFTER,
    DEFAULT_ALERT_WINDOW, DEFAULT_CHANNEL_TIMEOUT, DEFAULT_EVAL_INTERVAL,
    DEFAULT_FAILURE_THRESHOLD, DEFAULT_REPEAT_INTERVAL,
};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use self::reader::{Ctx, Field, Reported, TableReader};

/// The only config version this build reads.
pub const VERSION: i64 = 1;
/// Default `server.grpc_listen`: loopback, so plaintext is allowed.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7070));
/// Default `server.http_listen`.
pub const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7080));
/// Default `server.data_dir`, relative to the config file's directory.
pub const DEFAULT_DATA_DIR: &str = "vantage-data";
/// Default `server.window`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Shortest accepted `server.window`: finer windows multiply stored histograms.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest accepted `server.window`: longer ones would delay alerts past the
/// five-minute target.
pub const MAX_WINDOW: Duration = Duration::from_secs(300);
/// Default `server.cache_capacity_mb`: far below sled's 1 GiB default
/// (shared/RELIABILITY.md §2).
pub const DEFAULT_CACHE_CAPACITY_MB: u64 = 64;
/// Default `server.raw_retention`: raw windows are kept two days.
pub const DEFAULT_RAW_RETENTION: Duration = Duration::from_secs(48 * 3600);
/// Shortest `server.raw_retention`: the 24-hour series and alert windows
/// read raw windows, and need all of the last 24 h plus the bucket that
/// holds now.
pub const MIN_RAW_RETENTION: Duration = Duration::from_secs(25 * 3600);
/// Longest `server.raw_retention`: as long as the roll-ups are kept.
pub const MAX_RAW_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);
/// Accepted `server.cache_capacity_mb` values.
pub const CACHE_CAPACITY_MB_RANGE: std::ops::RangeInclusive<u64> = 1..=4096;
/// Largest config file [`load`] reads, so a wrong path (say `/dev/zero`)
/// fails instead of filling memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A validated coordinator configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from, as given to [`load`] / [`parse`].
    pub origin: PathBuf,
    /// The `[server]` table.
    pub server: ServerConfig,
    /// The `[[check]]` tables, in file order; names are unique.
    pub checks: Vec<CheckConfig>,
    /// The `[alerting]` table.
    pub alerting: AlertingConfig,
    /// The `[[channel]]` tables, secrets already read; names are unique.
    pub channels: Vec<crate::alert::ChannelConfig>,
    /// The `[[maintenance]]` windows.
    pub maintenance: Vec<Maintenance>,
    /// The `[load]` table: where distributed load runs may go, and how hard.
    pub load: LoadConfig,
    /// The `[api]` table: who may call the HTTP API.
    pub api: ApiConfig,
    /// The `[[agent]]` tables: which agents may connect, and with what
    /// token. Empty means open enrollment (only allowed on loopback).
    pub agents: Vec<crate::agent_auth::AgentEntry>,
}

/// The `[api]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// `[[api.token]]`: name, role, and the token's SHA-256 (`sha256`, hex)
    /// or the token itself from a secret source (`token = { env | file }`),
    /// hashed when read. Names are unique.
    pub tokens: Vec<crate::api::auth::ApiToken>,
}

/// The `[load]` table, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadConfig {
    /// `allowed_hosts`: hosts load runs may target besides loopback (names or
    /// IP literals, compared case-insensitively). Default none.
    pub allowed_hosts: Vec<String>,
    /// `max_rate`: requests per second of one run, all agents together.
    /// Default 100000.
    pub max_rate: u64,
    /// `max_vus`: VUs of one run, all agents together. Default 1000.
    pub max_vus: u64,
    /// `max_duration`: longest planned run (1s to 24h). Default 1h.
    pub max_duration: Duration,
    /// `ownership_token`: when set, every host of a run must publish
    /// `vantage-load=<token>` (TXT record or well-known file) before each
    /// run ([`crate::ownership`]). 16 to 128 of A-Z a-z 0-9 . _ -.
    pub ownership_token: Option<String>,
    /// `ownership_dns_server`: the name server (`ip:port`) asked for the TXT
    /// proofs; default the system's resolver.
    pub ownership_dns_server: Option<SocketAddr>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            allowed_hosts: Vec::new(),
            max_rate: 100_000,
            max_vus: 1000,
            max_duration: Duration::from_secs(3600),
            ownership_token: None,
            ownership_dns_server: None,
        }
    }
}

/// The `[server]` table, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `grpc_listen`: where agents connect. Default `127.0.0.1:7070`.
    pub grpc_listen: SocketAddr,
    /// `http_listen`: the HTTP API. Default `127.0.0.1:7080`.
    pub http_listen: SocketAddr,
    /// `data_dir`: the sled directory, already joined to the config file's
    /// directory when relative. Default `vantage-data`.
    pub data_dir: PathBuf,
    /// `window`: length of one result window, 1s to 5m. Default 10s.
    pub window: Duration,
    /// `cache_capacity_mb` × 1 MiB: sled's page cache, in bytes. Default 64 MiB.
    pub cache_capacity_bytes: u64,
    /// `raw_retention`: how long raw result windows are kept, 25h to 400d.
    /// Default 48h. Older ones are pruned hourly; the hourly and daily
    /// roll-ups keep their counts and latency for 400 days.
    pub raw_retention: Duration,
    /// `[server.tls]`: serve gRPC and HTTP over TLS with this certificate.
    /// Default none: plaintext, which is only accepted when both listeners
    /// are loopback addresses.
    pub tls: Option<TlsFiles>,
}

/// The `[server.tls]` table: PEM files, already joined to the config file's
/// directory when relative. Read when the coordinator starts
/// ([`crate::tls::load`]) and again whenever they change
/// ([`crate::tls::watch_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `cert_file`: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// `key_file`: the leaf's private key.
    pub key_file: PathBuf,
    /// `client_ca_file`: CA certificates (PEM) whose client certificates
    /// authenticate agents on the gRPC listener (mTLS); an agent's
    /// certificate names it in a DNS subject alternative name. Tokens work
    /// as well. Read again when it changes, like the certificate.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    /// The defaults of an absent `[server]` table, with `data_dir` relative to
    /// the current directory.
    fn default() -> Self {
        ServerConfig {
            grpc_listen: DEFAULT_GRPC_LISTEN,
            http_listen: DEFAULT_HTTP_LISTEN,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            window: DEFAULT_WINDOW,
            cache_capacity_bytes: DEFAULT_CACHE_CAPACITY_MB * MIB,
            raw_retention: DEFAULT_RAW_RETENTION,
            tls: None,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// One `[[check]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// The check as sent to agents; valid by [`vantage_proto::spec::Check::validate`].
    pub check: vantage_proto::spec::Check,
    /// `regions`: where the check runs; non-empty, valid names, no duplicates.
    pub regions: Vec<String>,
    /// The alert keys: rules, quorum, channels.
    pub alerting: CheckAlerting,
}

/// One problem in a config file (`FILE:LINE:COLUMN: KEY.PATH: MESSAGE`).
pub use vantage_proto::toml_reader::TomlError as ConfigError;

/// Every problem found in a config file, sorted by position; never empty when
/// returned by [`load`] or [`parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and parses the config file at `path` (see [`parse`]). A file that
/// cannot be read, is not UTF-8 or is larger than [`MAX_FILE_BYTES`] is one
/// [`ConfigError`] without a position.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    parse(&read_file(path)?, path)
}

/// Reads the config file at `path` as text, at most [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    reader::read_text(path, MAX_FILE_BYTES, "config file").map_err(|e| ConfigErrors(vec![e]))
}

/// Parses config `text`. `origin` names the file in errors, and relative
/// `data_dir` paths are joined to its directory. Never panics.
///
/// ```
/// use std::path::Path;
/// let cfg = vantage_coordinator::config::parse(
///     "version = 1\n[[check]]\nname = \"db\"\nkind = \"tcp\"\nhost = \"db.internal\"\nport = 5432\nregions = [\"eu\"]\n",
///     Path::new("/etc/vantage/coordinator.toml"),
/// ).unwrap();
/// assert_eq!(cfg.checks[0].check.name, "db");
/// assert_eq!(cfg.server.data_dir, Path::new("/etc/vantage/vantage-data"));
/// ```
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx::new(text, origin);
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return Err(syntax(cx, syntax_errors));
    }
    let mut root = TableReader::new(doc.get_ref(), 0..0, String::new());
    read_version(&mut cx, &mut root);
    let base_dir = origin.parent().unwrap_or(Path::new(""));
    let (server, grpc_span) = read_server(&mut cx, &mut root, base_dir);
    let alerting = alerting::read_alerting(&mut cx, &mut root, server.window);
    let (channels, channel_names) = alerting::read_channels(&mut cx, &mut root, base_dir);
    let checks = check::read_checks(&mut cx, &mut root, &channel_names);
    let names: Vec<&str> = checks.iter().map(|c| c.check.name.as_str()).collect();
    let maintenance = alerting::read_maintenance(&mut cx, &mut root, &names);
    let load = read_load(&mut cx, &mut root);
    let api = read_api(&mut cx, &mut root, base_dir);
    let agents = read_agents(&mut cx, &mut root, base_dir, &server, grpc_span);
    root.finish(&mut cx);

    let errors = cx.into_errors();
    if errors.is_empty() {
        Ok(Config {
            origin: origin.to_path_buf(),
            server,
            checks,
            alerting,
            channels,
            maintenance,
            load,
            api,
            agents,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn syntax(cx: Ctx<'_>, errors: Vec<toml::de::Error>) -> ConfigErrors {
    ConfigErrors(reader::syntax_errors(cx, errors))
}

fn read_version(cx: &mut Ctx<'_>, root: &mut TableReader<'_, '_>) {
    let _ = root.required(cx, "version", |cx, f| {
        let v = reader::integer(cx, f, "an integer (the config version, 1)")?;
        if v == VERSION {
            Ok(())
        } else {
            Err(f.error(
                cx,
                format!("unsupported version {v}: the supported version is {VERSION}"),
            ))
        }
    });
}

/// The `[server]` table, and where its `grpc_listen` key is (for errors
/// about agents, which depend on it).
fn read_server(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    base_dir: &Path,
) -> (ServerConfig, Option<Span>) {
    let mut server = ServerConfig {
        data_dir: base_dir.join(DEFAULT_DATA_DIR),
        ..ServerConfig::default()
    };
    let Some(field) = root.field("server") else {
        return (server, None);
    };
    let Ok(mut r) = field.table(cx, "a table ([server])") else {
        return (server, None);
    };
    let grpc = r.optional(cx, "grpc_listen", listen_addr);
    let http = r.optional(cx, "http_listen", listen_addr);
    if let Ok(Some(a)) = grpc {
        server.grpc_listen = a;
    }
    if let Ok(Some(a)) = http {
        server.http_listen = a;
    }
    if let (Ok(_), Ok(_)) = (grpc, http) {
        if server.grpc_listen == server.http_listen && server.grpc_listen.port() != 0 {
            let key = if http.is_ok_and(|a| a.is_some()) {
                "http_listen"
            } else {
                "grpc_listen"
            };
            let at = r.key_span(key).unwrap_or_else(|| r.header().clone());
            cx.error(
                &at,
                &r.key_path(key),
                format!(
                    "grpc_listen and http_listen are both {}: give each its own port",
                    server.grpc_listen
                ),
            );
        }
    }
    if let Ok(Some(dir)) = r.optional(cx, "data_dir", |cx, f| {
        let s = reader::string(cx, f)?;
        if s.is_empty() {
            return Err(f.error(
                cx,
                "must not be empty: give a directory, like \"vantage-data\"",
            ));
        }
        Ok(PathBuf::from(s))
    }) {
        server.data_dir = base_dir.join(dir);
    }
    if let Ok(Some(w)) = r.optional(cx, "window", |cx, f| {
        let d = reader::duration(cx, f)?;
        if (MIN_WINDOW..=MAX_WINDOW).contains(&d) {
            Ok(d)
        } else {
            Err(f.error(cx, out_of_range(d, MIN_WINDOW, MAX_WINDOW)))
        }
    }) {
        server.window = w;
    }
    if let Ok(Some(mb)) = r.optional(cx, "cache_capacity_mb", |cx, f| {
        let expected = "an integer number of MiB from 1 to 4096";
        let n = reader::integer(cx, f, expected)?;
        match u64::try_from(n) {
            Ok(n) if CACHE_CAPACITY_MB_RANGE.contains(&n) => Ok(n),
            _ => Err(f.error(cx, format!("{n} is out of range: use 1 to 4096 (MiB)"))),
        }
    }) {
        server.cache_capacity_bytes = mb * MIB;
    }
    if let Ok(Some(d)) = r.optional(cx, "raw_retention", |cx, f| {
        let d = reader::duration(cx, f)?;
        if (MIN_RAW_RETENTION..=MAX_RAW_RETENTION).contains(&d) {
            Ok(d)
        } else {
            Err(f.error(
                cx,
                format!(
                    "{} is out of range: use 25h to 400d",
                    vantage_proto::spec::humantime_like(d)
                ),
            ))
        }
    }) {
        server.raw_retention = d;
    }
    let has_tls = r.key_span("tls").is_some();
    server.tls = read_tls(cx, &mut r, base_dir);
    // A broken [server.tls] has its own errors; do not pile these on.
    if !has_tls {
        // Plaintext only on loopback: tokens and results must never cross
        // a network in the clear.
        for (key, addr, ok) in [
            ("grpc_listen", server.grpc_listen, grpc),
            ("http_listen", server.http_listen, http),
        ] {
            if ok.is_ok() && !addr.ip().is_loopback() {
                let at = r.key_span(key).unwrap_or_else(|| r.header().clone());
                cx.error(
                    &at,
                    &r.key_path(key),
                    format!(
                        "{addr} is not a loopback address, and plaintext is only allowed on loopback: add [server.tls] with cert_file and key_file (see README, \"TLS\"), or listen on 127.0.0.1"
                    ),
                );
            }
        }
    }
    let grpc_span = r.key_span("grpc_listen");
    r.finish(cx);
    (server, grpc_span)
}

/// A byte range of the config text.
type Span = std::ops::Range<usize>;

/// `[server.tls]`: both files, or an error.
fn read_tls(
    cx: &mut Ctx<'_>,
    server: &mut TableReader<'_, '_>,
    base_dir: &Path,
) -> Option<TlsFiles> {
    let field = server.field("tls")?;
    let mut r = field.table(cx, "a table ([server.tls])").ok()?;
    let path = |cx: &mut Ctx<'_>, f: &Field<'_, '_>| {
        let s = reader::string(cx, f)?;
        if s.is_empty() {
            return Err(f.error(cx, "must not be empty: give the path of a PEM file"));
        }
        Ok(base_dir.join(s))
    };
    let cert_file = r.required(cx, "cert_file", path);
    let key_file = r.required(cx, "key_file", path);
    let client_ca_file = r.optional(cx, "client_ca_file", path);
    r.finish(cx);
    Some(TlsFiles {
        cert_file: cert_file.ok()?,
        key_file: key_file.ok()?,
        client_ca_file: client_ca_file.ok()?,
    })
}

/// The `[[agent]]` tables. With none, any agent may connect (open
/// enrollment), which is only accepted when `grpc_listen` is loopback.
fn read_agents(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    base_dir: &Path,
    server: &ServerConfig,
    grpc_span: Option<Span>,
) -> Vec<crate::agent_auth::AgentEntry> {
    use crate::agent_auth::{AgentEntry, MAX_TOKENS_PER_AGENT};
    let field = root.field("agent");
    let elements = match &field {
        Some(f) => f
            .array(cx, "an array of tables ([[agent]])")
            .unwrap_or_default(),
        None => Vec::new(),
    };
    if elements.is_empty() && !server.grpc_listen.ip().is_loopback() {
        let at = grpc_span.unwrap_or(0..0);
        cx.error(
            &at,
            "server.grpc_listen",
            format!(
                "{} is not a loopback address, so agents must authenticate: add an [[agent]] table with name and sha256 for each agent (see README, \"Agent authentication\")",
                server.grpc_listen
            ),
        );
    }
    let mut names = std::collections::HashMap::new();
    let mut tokens: std::collections::HashMap<[u8; 32], usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        let Ok(mut t) = element.table(cx, "a table ([[agent]])") else {
            continue;
        };
        let name = t.required(cx, "name", |cx, f| {
            unique_name(cx, f, ("agent", i), &mut names)
        });
        let region = t.optional(cx, "region", |cx, f| {
            let s = reader::string(cx, f)?;
            if vantage_proto::is_valid_name(&s) {
                Ok(s)
            } else {
                Err(f.error(
                    cx,
                    format!(
                        "{s:?} is not a valid region: use 1-64 characters from A-Z a-z 0-9 . _ -"
                    ),
                ))
            }
        });
        let hashed = t.optional(cx, "sha256", |cx, f| {
            const HOW: &str = "expected 64 hex digits, or an array of up to two during a rotation: the SHA-256 of the agent's token (vantage-coordinator token --agent prints one)";
            let one = |cx: &mut Ctx<'_>, f: &Field<'_, '_>| {
                let s = reader::string(cx, f)?;
                parse_sha256(&s).ok_or_else(|| f.error(cx, HOW))
            };
            if let toml::de::DeValue::Array(_) = f.value.get_ref() {
                let items = f.array(cx, HOW)?;
                if items.is_empty() || items.len() > MAX_TOKENS_PER_AGENT {
                    return Err(f.error(cx, HOW));
                }
                let digests: Vec<_> = items.iter().map(|item| one(cx, item)).collect();
                digests.into_iter().collect::<Result<Vec<_>, _>>()
            } else {
                Ok(vec![one(cx, f)?])
            }
        });
        let secret = t.optional(cx, "token", |cx, f| alerting::secret(cx, f, base_dir));
        // With client certificates on, an agent may have no token.
        let mtls = server
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca_file.is_some());
        let digests = match (hashed, secret) {
            (Ok(hashes), Ok(token)) => {
                let mut d = hashes.unwrap_or_default();
                d.extend(token.map(|s| crate::api::auth::digest(s.expose())));
                if (d.is_empty() && !mtls) || d.len() > MAX_TOKENS_PER_AGENT {
                    let at = t.header().clone();
                    cx.error(
                        &at,
                        &t.key_path("sha256"),
                        "give one or two tokens in all: sha256 = \"HEX\" (or [\"HEX\", \"HEX\"] during a rotation) and/or token = { env = \"NAME\" } / { file = \"path\" }; or set server.tls.client_ca_file to authenticate agents by client certificate",
                    );
                    None
                } else {
                    Some(d)
                }
            }
            _ => None,
        };
        let header = t.header().clone();
        let path = t.key_path("sha256");
        t.finish(cx);
        if let Some(d) = &digests {
            // A token decides who the agent is: one token, one agent.
            if let Some(other) = d.iter().find_map(|x| tokens.get(x).filter(|j| **j != i)) {
                cx.error(
                    &header,
                    &path,
                    format!("agent[{other}] has the same token: give each agent its own"),
                );
                continue;
            }
            for x in d {
                tokens.insert(*x, i);
            }
        }
        if let (Ok(name), Ok(region), Some(sha256)) = (name, region, digests) {
            out.push(AgentEntry {
                name,
                region,
                sha256,
            });
        }
    }
    out
}

fn read_load(cx: &mut Ctx<'_>, root: &mut TableReader<'_, '_>) -> LoadConfig {
    let mut load = LoadConfig::default();
    let Some(field) = root.field("load") else {
        return load;
    };
    let Ok(mut r) = field.table(cx, "a table ([load])") else {
        return load;
    };
    if let Ok(Some(hosts)) = r.optional(cx, "allowed_hosts", |cx, f| {
        let mut out = Vec::new();
        let mut bad = None;
        for item in f.array(cx, "an array of host names or IP addresses")? {
            let Ok(h) = reader::string(cx, &item) else {
                continue;
            };
            let bare = h.trim_start_matches('[').trim_end_matches(']');
            if bare.is_empty()
                || bare.contains(['/', ':', ' ', '@']) && bare.parse::<std::net::Ipv6Addr>().is_err()
            {
                bad = Some(item.error(
                    cx,
                    format!("{h:?} is not a host: give a name or an IP address, without scheme, port or path"),
                ));
                continue;
            }
            out.push(bare.to_ascii_lowercase());
        }
        match bad {
            Some(reported) => Err(reported),
            None => Ok(out),
        }
    }) {
        load.allowed_hosts = hosts;
    }
    let cap = |name: &'static str, max: u64| {
        move |cx: &mut Ctx<'_>, f: &Field<'_, '_>| {
            let expected = format!("an integer from 1 to {max}");
            let n = reader::integer(cx, f, &expected)?;
            match u64::try_from(n) {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(f.error(
                    cx,
                    format!("{n} is out of range for {name}: use 1 to {max}"),
                )),
            }
        }
    };
    if let Ok(Some(v)) = r.optional(cx, "max_rate", cap("max_rate", 1_000_000)) {
        load.max_rate = v;
    }
    if let Ok(Some(v)) = r.optional(cx, "max_vus", cap("max_vus", 1000)) {
        load.max_vus = v;
    }
    if let Ok(Some(v)) = r.optional(cx, "max_duration", |cx, f| {
        let d = reader::duration(cx, f)?;
        if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
            return Err(f.error(
                cx,
                format!(
                    "{} is out of range for max_duration: use 1s to 24h",
                    vantage_proto::spec::humantime_like(d)
                ),
            ));
        }
        Ok(d)
    }) {
        load.max_duration = v;
    }
    if let Ok(Some(token)) = r.optional(cx, "ownership_token", |cx, f| {
        let token = reader::string(cx, f)?;
        let ok = (16..=128).contains(&token.len())
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(f.error(
                cx,
                "use 16 to 128 characters from A-Z a-z 0-9 . _ - (a random string: it is published on the targets)",
            ));
        }
        Ok(token)
    }) {
        load.ownership_token = Some(token);
    }
    if let Ok(Some(server)) = r.optional(cx, "ownership_dns_server", |cx, f| {
        let text = reader::string(cx, f)?;
        text.parse::<SocketAddr>().map_err(|_| {
            f.error(
                cx,
                format!(
                    "{text:?} is not an address: write it as 192.0.2.53:53 or [2001:db8::53]:53"
                ),
            )
        })
    }) {
        load.ownership_dns_server = Some(server);
    }
    r.finish(cx);
    load
}

fn read_api(cx: &mut Ctx<'_>, root: &mut TableReader<'_, '_>, base_dir: &Path) -> ApiConfig {
    use crate::api::auth::{ApiToken, Role};
    let mut api = ApiConfig::default();
    let Some(field) = root.field("api") else {
        return api;
    };
    let Ok(mut r) = field.table(cx, "a table ([api])") else {
        return api;
    };
    let elements = match r.field("token") {
        Some(f) => f
            .array(cx, "an array of tables ([[api.token]])")
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut names = std::collections::HashMap::new();
    for (i, element) in elements.iter().enumerate() {
        let Ok(mut t) = element.table(cx, "a table ([[api.token]])") else {
            continue;
        };
        let name = t.required(cx, "name", |cx, f| {
            unique_name(cx, f, ("api.token", i), &mut names)
        });
        let role = t.required(cx, "role", |cx, f| match reader::string(cx, f)?.as_str() {
            "viewer" => Ok(Role::Viewer),
            "admin" => Ok(Role::Admin),
            other => Err(f.error(cx, format!("{other:?} is not a role: use viewer or admin"))),
        });
        let hashed = t.optional(cx, "sha256", |cx, f| {
            let s = reader::string(cx, f)?;
            parse_sha256(&s).ok_or_else(|| {
                f.error(cx, "expected 64 hex digits: the SHA-256 of the token (vantage-coordinator token prints it)")
            })
        });
        let secret = t.optional(cx, "token", |cx, f| alerting::secret(cx, f, base_dir));
        let digest = match (hashed, secret) {
            (Ok(Some(d)), Ok(None)) => Some(d),
            (Ok(None), Ok(Some(s))) => Some(crate::api::auth::digest(s.expose())),
            (Ok(_), Ok(_)) => {
                let at = t.header().clone();
                cx.error(
                    &at,
                    &t.key_path("sha256"),
                    "give exactly one of sha256 = \"HEX\" or token = { env = \"NAME\" } / { file = \"path\" }",
                );
                None
            }
            _ => None,
        };
        t.finish(cx);
        if let (Ok(name), Ok(role), Some(sha256)) = (name, role, digest) {
            api.tokens.push(ApiToken { name, role, sha256 });
        }
    }
    r.finish(cx);
    api
}

/// A `name` key of element `i` of the `table` array: a valid name, not taken
/// by an earlier element (`seen`: name to index).
fn unique_name(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    (table, i): (&str, usize),
    seen: &mut std::collections::HashMap<String, usize>,
) -> Result<String, Reported> {
    let s = reader::string(cx, f)?;
    if !vantage_proto::is_valid_name(&s) {
        return Err(f.error(
            cx,
            format!("{s:?} is not a valid name: use 1-64 characters from A-Z a-z 0-9 . _ -"),
        ));
    }
    if let Some(first) = seen.get(&s) {
        return Err(f.error(
            cx,
            format!("duplicate {table} name {s:?}: {table}[{first}] already uses it"),
        ));
    }
    seen.insert(s.clone(), i);
    Ok(s)
}

/// 64 hex digits to 32 bytes.
fn parse_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn listen_addr(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<SocketAddr, Reported> {
    let expected = "a string like \"127.0.0.1:7070\"";
    let toml::de::DeValue::String(s) = f.value.get_ref() else {
        return Err(f.type_error(cx, expected));
    };
    s.parse().map_err(|_| {
        f.error(
            cx,
            format!(
                "{s:?} is not a listen address: use IP:PORT, like \"127.0.0.1:7070\" or \"[::]:7070\""
            ),
        )
    })
}

/// "`d` is out of range: use `min` to `max`", in the words of `vantage_proto::spec`.
fn out_of_range(d: Duration, min: Duration, max: Duration) -> String {
    use vantage_proto::spec::humantime_like as human;
    format!(
        "{} is out of range: use {} to {}",
        human(d),
        human(min),
        human(max)
    )
}
