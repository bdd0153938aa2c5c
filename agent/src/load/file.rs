//! Load files (TOML, k6 option names) → a validated [`LoadPlan`].
//!
//! Every problem is reported, each as `FILE:LINE:COLUMN: KEY.PATH: MESSAGE`
//! (the reader is shared with the coordinator's config, see
//! [`vantage_proto::toml_reader`]). Keys that do not apply to a scenario's
//! executor are rejected the way k6 rejects them, unknown keys get a
//! "did you mean".

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use toml::de::DeTable;
use vantage_proto::toml_reader::{self as reader, Ctx, Field, Reported, TableReader, TomlError};

use super::safety::AllowedHosts;
use super::threshold::{self, ThresholdDef};

/// Default and highest `options.max_vus`: a file (and the CLI) can only lower it.
pub const DEFAULT_MAX_VUS: u64 = 1000;
/// Default rate cap, requests per second over all scenarios: what a run may
/// send unless the operator raises it (`--max-rate`); a file can only lower
/// it.
pub const DEFAULT_MAX_RATE: f64 = 100_000.0;
/// Highest rate cap anyone can set (`--max-rate`, `options.max_rate`).
pub const HIGHEST_MAX_RATE: f64 = 1_000_000.0;
/// Default `gracefulStop` (k6).
pub const DEFAULT_GRACEFUL_STOP: Duration = Duration::from_secs(30);
/// Default `maxDuration` of the iteration-count executors (k6).
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(600);
/// Default `timeUnit` of the arrival-rate executors (k6).
pub const DEFAULT_TIME_UNIT: Duration = Duration::from_secs(1);
/// Largest load file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Longest accepted scenario length (`duration`, `maxDuration`, the sum of
/// `stages`): a local run is a burst, not a soak.
pub const MAX_SCENARIO_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A validated load file.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The file it was read from.
    pub origin: PathBuf,
    /// The `[options]` caps.
    pub options: Options,
    /// The `[[scenario]]` tables, in file order.
    pub scenarios: Vec<Scenario>,
    /// The `[thresholds]` table, in file order.
    pub thresholds: Vec<ThresholdDef>,
}

impl LoadPlan {
    /// The distinct origins (`scheme://host:port`) the run sends to, in
    /// first-use order.
    pub fn origins(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.scenarios.iter().flat_map(|s| &s.requests) {
            let origin = r.url.origin().ascii_serialization();
            if !out.contains(&origin) {
                out.push(origin);
            }
        }
        out
    }

    /// How long the run lasts as planned: the latest end (`startTime` plus
    /// the executor's length) of its scenarios, graceful stops aside.
    pub fn planned_length(&self) -> Duration {
        self.scenarios
            .iter()
            .map(|s| s.start_time + s.executor.duration())
            .max()
            .unwrap_or_default()
    }
}

/// `[options]`: local caps the engine enforces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// `max_vus`: VUs over all scenarios (default and maximum [`DEFAULT_MAX_VUS`]).
    pub max_vus: u64,
    /// `max_rate`: requests per second over all scenarios (at most
    /// [`HIGHEST_MAX_RATE`], the default: the run's cap, [`DEFAULT_MAX_RATE`]
    /// unless `--max-rate` says otherwise, applies on top).
    pub max_rate: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_vus: DEFAULT_MAX_VUS,
            max_rate: HIGHEST_MAX_RATE,
        }
    }
}

/// One `[[scenario]]`.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// `name`: unique, used in outputs.
    pub name: String,
    /// `executor` and its options.
    pub executor: Executor,
    /// `gracefulStop`: time in-flight iterations get after the end (default 30s).
    pub graceful_stop: Duration,
    /// `startTime`: delay from the start of the run (default 0s).
    pub start_time: Duration,
    /// `[[scenario.request]]`: what one iteration sends, in order.
    pub requests: Vec<RequestSpec>,
}

impl Scenario {
    /// The highest scheduled request rate per second (open model only): the
    /// iteration rate times the requests of one iteration.
    pub fn max_request_rate(&self) -> Option<f64> {
        self.executor
            .max_rate()
            .map(|r| r * self.requests.len() as f64)
    }
}

/// One stage of a ramping executor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    /// How long the ramp to `target` takes.
    pub duration: Duration,
    /// VUs (ramping-vus) or iterations per `timeUnit` (ramping-arrival-rate) at the end.
    pub target: u64,
}

/// A k6 executor with its options.
#[derive(Debug, Clone, PartialEq)]
pub enum Executor {
    /// `constant-vus`: `vus` loop for `duration`.
    ConstantVus {
        /// `vus` (default 1).
        vus: u64,
        /// `duration` (required).
        duration: Duration,
    },
    /// `ramping-vus`: the VU count follows `stages` from `startVUs`.
    RampingVus {
        /// `startVUs` (default 1).
        start_vus: u64,
        /// `stages` (required).
        stages: Vec<Stage>,
    },
    /// `per-vu-iterations`: each of `vus` runs `iterations`.
    PerVuIterations {
        /// `vus` (default 1).
        vus: u64,
        /// `iterations` per VU (default 1).
        iterations: u64,
        /// `maxDuration` (default 10m).
        max_duration: Duration,
    },
    /// `shared-iterations`: `vus` share `iterations`.
    SharedIterations {
        /// `vus` (default 1).
        vus: u64,
        /// `iterations` in total (default 1).
        iterations: u64,
        /// `maxDuration` (default 10m).
        max_duration: Duration,
    },
    /// `constant-arrival-rate`: `rate` iterations per `timeUnit` for `duration`.
    ConstantArrivalRate {
        /// `rate` (required).
        rate: u64,
        /// `timeUnit` (default 1s).
        time_unit: Duration,
        /// `duration` (required).
        duration: Duration,
        /// `preAllocatedVUs` (required).
        pre_allocated_vus: u64,
        /// `maxVUs` (default `preAllocatedVUs`).
        max_vus: u64,
    },
    /// `ramping-arrival-rate`: the rate follows `stages` from `startRate`.
    RampingArrivalRate {
        /// `startRate` (default 0).
        start_rate: u64,
        /// `timeUnit` (default 1s).
        time_unit: Duration,
        /// `stages` (required).
        stages: Vec<Stage>,
        /// `preAllocatedVUs` (required).
        pre_allocated_vus: u64,
        /// `maxVUs` (default `preAllocatedVUs`).
        max_vus: u64,
    },
}

impl Executor {
    /// The k6 name.
    pub fn name(&self) -> &'static str {
        match self {
            Executor::ConstantVus { .. } => "constant-vus",
            Executor::RampingVus { .. } => "ramping-vus",
            Executor::PerVuIterations { .. } => "per-vu-iterations",
            Executor::SharedIterations { .. } => "shared-iterations",
            Executor::ConstantArrivalRate { .. } => "constant-arrival-rate",
            Executor::RampingArrivalRate { .. } => "ramping-arrival-rate",
        }
    }

    /// Whether iterations are scheduled at intended times (open model).
    pub fn is_open_model(&self) -> bool {
        matches!(
            self,
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. }
        )
    }

    /// The most VUs the executor can run at once.
    pub fn max_vus(&self) -> u64 {
        match self {
            Executor::ConstantVus { vus, .. }
            | Executor::PerVuIterations { vus, .. }
            | Executor::SharedIterations { vus, .. } => *vus,
            Executor::RampingVus { start_vus, stages } => {
                stages.iter().map(|s| s.target).fold(*start_vus, u64::max)
            }
            Executor::ConstantArrivalRate { max_vus, .. }
            | Executor::RampingArrivalRate { max_vus, .. } => *max_vus,
        }
    }

    /// The highest scheduled iteration rate per second (open model only).
    pub fn max_rate(&self) -> Option<f64> {
        match self {
            Executor::ConstantArrivalRate {
                rate, time_unit, ..
            } => Some(*rate as f64 / time_unit.as_secs_f64()),
            Executor::RampingArrivalRate {
                start_rate,
                time_unit,
                stages,
                ..
            } => {
                let top = stages.iter().map(|s| s.target).fold(*start_rate, u64::max);
                Some(top as f64 / time_unit.as_secs_f64())
            }
            _ => None,
        }
    }

    /// The planned length before `gracefulStop` (for iteration-count
    /// executors, `maxDuration`).
    pub fn duration(&self) -> Duration {
        match self {
            Executor::ConstantVus { duration, .. }
            | Executor::ConstantArrivalRate { duration, .. } => *duration,
            Executor::RampingVus { stages, .. } | Executor::RampingArrivalRate { stages, .. } => {
                stages.iter().map(|s| s.duration).sum()
            }
            Executor::PerVuIterations { max_duration, .. }
            | Executor::SharedIterations { max_duration, .. } => *max_duration,
        }
    }
}

/// One `[[scenario.request]]`.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// `method` (default GET).
    pub method: http::Method,
    /// `url`: http or https.
    pub url: url::Url,
    /// `headers`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `body` (default empty).
    pub body: Bytes,
    /// `checks.status`: the expected status code.
    pub check_status: Option<u16>,
    /// `checks.body_contains`: text the body must contain.
    pub check_body: Option<String>,
}

/// Every problem found in a load file, sorted by position; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_all(.0))]
pub struct LoadFileErrors(pub Vec<TomlError>);

fn display_all(errors: &[TomlError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads and parses the load file at `path` (see [`parse`]).
pub fn load(path: &Path, allowed: &AllowedHosts) -> Result<LoadPlan, LoadFileErrors> {
    let text = reader::read_text(path, MAX_FILE_BYTES, "load file")
        .map_err(|e| LoadFileErrors(vec![e]))?;
    parse(&text, path, allowed)
}

/// Parses load-file `text`; `origin` names the file in errors. URLs whose
/// host `allowed` does not permit are errors at their key. Never panics.
pub fn parse(
    text: &str,
    origin: &Path,
    allowed: &AllowedHosts,
) -> Result<LoadPlan, LoadFileErrors> {
    let mut cx = Ctx::new(text, origin);
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return Err(LoadFileErrors(reader::syntax_errors(cx, syntax_errors)));
    }
    let mut root = TableReader::new(doc.get_ref(), 0..0, String::new());
    let options = read_options(&mut cx, &mut root);
    let scenarios = read_scenarios(&mut cx, &mut root, allowed);
    let thresholds = root
        .optional(&mut cx, "thresholds", |cx, f| Ok(threshold::read(cx, f)))
        .ok()
        .flatten()
        .unwrap_or_default();
    root.finish(&mut cx);
    check_caps(&mut cx, &options, &scenarios);
    let errors = cx.into_errors();
    if errors.is_empty() {
        Ok(LoadPlan {
            origin: origin.to_path_buf(),
            options,
            scenarios: scenarios.into_iter().map(|(s, _)| s).collect(),
            thresholds,
        })
    } else {
        Err(LoadFileErrors(errors))
    }
}

fn read_options(cx: &mut Ctx<'_>, root: &mut TableReader<'_, '_>) -> Options {
    let mut options = Options::default();
    let Some(field) = root.field("options") else {
        return options;
    };
    let Ok(mut r) = field.table(cx, "a table ([options])") else {
        return options;
    };
    if let Ok(Some(v)) = r.optional(cx, "max_vus", |cx, f| {
        ranged(cx, f, 1, DEFAULT_MAX_VUS, "a VU count")
    }) {
        options.max_vus = v;
    }
    if let Ok(Some(v)) = r.optional(cx, "max_rate", |cx, f| {
        ranged(cx, f, 1, HIGHEST_MAX_RATE as u64, "requests per second")
    }) {
        options.max_rate = v as f64;
    }
    r.finish(cx);
    options
}

/// An integer in `min..=max`; the message names the range.
fn ranged(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, Reported> {
    let expected = format!("an integer from {min} to {max} ({what})");
    let n = reader::integer(cx, f, &expected)?;
    match u64::try_from(n) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(f.error(cx, format!("{n} is out of range: expected {expected}"))),
    }
}

/// Largest accepted VU count, rate or iteration count in a scenario before
/// the caps are applied (they are checked separately, naming the cap).
const MAX_COUNT: u64 = 1_000_000_000;

fn count(cx: &mut Ctx<'_>, f: &Field<'_, '_>, min: u64) -> Result<u64, Reported> {
    ranged(cx, f, min, MAX_COUNT, "a whole number")
}

fn duration_in(cx: &mut Ctx<'_>, f: &Field<'_, '_>, positive: bool) -> Result<Duration, Reported> {
    let d = reader::duration(cx, f)?;
    if positive && d.is_zero() {
        return Err(f.error(cx, "must be longer than 0s"));
    }
    if d > MAX_SCENARIO_DURATION {
        return Err(f.error(cx, "is longer than the 24h limit of a local load run"));
    }
    Ok(d)
}

/// Every executor-specific key, so a key of another executor gets "does not apply".
const EXECUTOR_KEYS: &[&str] = &[
    "vus",
    "duration",
    "iterations",
    "maxDuration",
    "startVUs",
    "stages",
    "gracefulRampDown",
    "rate",
    "timeUnit",
    "preAllocatedVUs",
    "maxVUs",
    "startRate",
];
const EXECUTORS: &str = "constant-vus, ramping-vus, constant-arrival-rate, ramping-arrival-rate, per-vu-iterations, shared-iterations";

/// A scenario and the position of its header (for cap errors).
type Located = (Scenario, std::ops::Range<usize>);

fn read_scenarios(
    cx: &mut Ctx<'_>,
    root: &mut TableReader<'_, '_>,
    allowed: &AllowedHosts,
) -> Vec<Located> {
    let Some(field) = root.field("scenario") else {
        cx.error(
            &(0..0),
            "scenario",
            "a load file needs at least one [[scenario]]",
        );
        return Vec::new();
    };
    let Ok(elements) = field.array(cx, "an array of tables ([[scenario]])") else {
        return Vec::new();
    };
    if elements.is_empty() {
        field.error(cx, "a load file needs at least one [[scenario]]");
    }
    let mut out: Vec<Located> = Vec::new();
    for element in &elements {
        let Ok(r) = element.table(cx, "a table ([[scenario]])") else {
            continue;
        };
        let header = r.header().clone();
        if let Some(s) = read_scenario(cx, r, allowed) {
            if out.iter().any(|(o, _)| o.name == s.name) {
                cx.error(
                    &header,
                    &element.path,
                    format!("duplicate scenario name {:?}", s.name),
                );
            }
            out.push((s, header));
        }
    }
    out
}

fn read_scenario(
    cx: &mut Ctx<'_>,
    mut r: TableReader<'_, '_>,
    allowed: &AllowedHosts,
) -> Option<Scenario> {
    let name = r.required(cx, "name", |cx, f| {
        let s = reader::string(cx, f)?;
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(f.error(
                cx,
                format!("{s:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        Ok(s)
    });
    let executor_name = r.required(cx, "executor", |cx, f| {
        let s = reader::string(cx, f)?;
        match s.as_str() {
            "constant-vus"
            | "ramping-vus"
            | "constant-arrival-rate"
            | "ramping-arrival-rate"
            | "per-vu-iterations"
            | "shared-iterations" => Ok(s),
            _ => {
                let names: Vec<&str> = EXECUTORS.split(", ").collect();
                let hint = reader::suggest(&s, &names)
                    .map(|c| format!(", did you mean {c:?}?"))
                    .unwrap_or_else(|| format!("; expected one of {EXECUTORS}"));
                Err(f.error(cx, format!("unknown executor {s:?}{hint}")))
            }
        }
    });
    let graceful_stop = r.optional(cx, "gracefulStop", |cx, f| duration_in(cx, f, false));
    let start_time = r.optional(cx, "startTime", |cx, f| duration_in(cx, f, false));
    let requests = read_requests(cx, &mut r, allowed);
    let executor = match &executor_name {
        Ok(name) => read_executor(cx, &mut r, name),
        Err(Reported) => {
            r.allow(EXECUTOR_KEYS);
            Err(Reported)
        }
    };
    if let Ok(name) = &executor_name {
        for key in EXECUTOR_KEYS {
            r.reject(
                cx,
                key,
                &format!("`{key}` does not apply to executor {name:?}"),
            );
        }
    }
    r.finish(cx);
    Some(Scenario {
        name: name.ok()?,
        executor: executor.ok()?,
        graceful_stop: graceful_stop.ok()?.unwrap_or(DEFAULT_GRACEFUL_STOP),
        start_time: start_time.ok()?.unwrap_or_default(),
        requests: requests.ok()?,
    })
}

fn read_executor(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    name: &str,
) -> Result<Executor, Reported> {
    let header = r.header().clone();
    let path = r.key_path("executor");
    let vus = |cx: &mut Ctx<'_>, r: &mut TableReader<'_, '_>| {
        r.optional(cx, "vus", |cx, f| count(cx, f, 1))
            .map(|v| v.unwrap_or(1))
    };
    let exec = match name {
        "constant-vus" => {
            let vus = vus(cx, r);
            let duration = r.required(cx, "duration", |cx, f| duration_in(cx, f, true));
            Executor::ConstantVus {
                vus: vus?,
                duration: duration?,
            }
        }
        "ramping-vus" => {
            let start_vus = r
                .optional(cx, "startVUs", |cx, f| count(cx, f, 0))
                .map(|v| v.unwrap_or(1));
            let stages = r.required(cx, "stages", read_stages);
            // Accepted for k6 compatibility: a ramped-down VU finishes its iteration.
            let _ = r.optional(cx, "gracefulRampDown", |cx, f| duration_in(cx, f, false));
            Executor::RampingVus {
                start_vus: start_vus?,
                stages: stages?,
            }
        }
        "per-vu-iterations" | "shared-iterations" => {
            let vus = vus(cx, r);
            let iterations = r
                .optional(cx, "iterations", |cx, f| count(cx, f, 1))
                .map(|v| v.unwrap_or(1));
            let max_duration = r
                .optional(cx, "maxDuration", |cx, f| duration_in(cx, f, true))
                .map(|v| v.unwrap_or(DEFAULT_MAX_DURATION));
            let (vus, iterations, max_duration) = (vus?, iterations?, max_duration?);
            if name == "per-vu-iterations" {
                Executor::PerVuIterations {
                    vus,
                    iterations,
                    max_duration,
                }
            } else {
                if iterations < vus {
                    cx.error(&header, &r.key_path("iterations"), format!(
                        "shared-iterations needs iterations >= vus (k6), got {iterations} iterations for {vus} VUs"));
                    return Err(Reported);
                }
                Executor::SharedIterations {
                    vus,
                    iterations,
                    max_duration,
                }
            }
        }
        "constant-arrival-rate" | "ramping-arrival-rate" => {
            let rate = if name == "constant-arrival-rate" {
                r.required(cx, "rate", |cx, f| count(cx, f, 1))
            } else {
                r.optional(cx, "startRate", |cx, f| count(cx, f, 0))
                    .map(|v| v.unwrap_or(0))
            };
            let time_unit = r
                .optional(cx, "timeUnit", |cx, f| duration_in(cx, f, true))
                .map(|v| v.unwrap_or(DEFAULT_TIME_UNIT));
            let length = if name == "constant-arrival-rate" {
                r.required(cx, "duration", |cx, f| duration_in(cx, f, true))
                    .map(|d| (d, Vec::new()))
            } else {
                r.required(cx, "stages", read_stages)
                    .map(|s| (Duration::ZERO, s))
            };
            let pre = r.required(cx, "preAllocatedVUs", |cx, f| count(cx, f, 0));
            let max = r.optional(cx, "maxVUs", |cx, f| count(cx, f, 1));
            let (rate, time_unit, (duration, stages), pre, max) =
                (rate?, time_unit?, length?, pre?, max?);
            let max_vus = max.unwrap_or(pre).max(1);
            if max_vus < pre {
                cx.error(
                    &header,
                    &r.key_path("maxVUs"),
                    format!("maxVUs ({max_vus}) must be at least preAllocatedVUs ({pre})"),
                );
                return Err(Reported);
            }
            if name == "constant-arrival-rate" {
                Executor::ConstantArrivalRate {
                    rate,
                    time_unit,
                    duration,
                    pre_allocated_vus: pre,
                    max_vus,
                }
            } else {
                Executor::RampingArrivalRate {
                    start_rate: rate,
                    time_unit,
                    stages,
                    pre_allocated_vus: pre,
                    max_vus,
                }
            }
        }
        _ => {
            cx.error(&header, &path, "unknown executor");
            return Err(Reported);
        }
    };
    Ok(exec)
}

fn read_stages(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Vec<Stage>, Reported> {
    let items = f.array(cx, "an array of { duration, target } tables")?;
    if items.is_empty() {
        return Err(f.error(cx, "needs at least one stage"));
    }
    let mut stages = Vec::new();
    let mut failed = false;
    let mut total = Duration::ZERO;
    for item in &items {
        let Ok(mut r) = item.table(cx, "a { duration = \"10s\", target = 10 } table") else {
            failed = true;
            continue;
        };
        let duration = r.required(cx, "duration", |cx, f| duration_in(cx, f, false));
        let target = r.required(cx, "target", |cx, f| count(cx, f, 0));
        r.finish(cx);
        match (duration, target) {
            (Ok(duration), Ok(target)) => {
                total += duration;
                stages.push(Stage { duration, target });
            }
            _ => failed = true,
        }
    }
    if failed {
        return Err(Reported);
    }
    if total.is_zero() || total > MAX_SCENARIO_DURATION {
        return Err(f.error(
            cx,
            "the stages must last longer than 0s and at most 24h in total",
        ));
    }
    Ok(stages)
}

fn read_requests(
    cx: &mut Ctx<'_>,
    r: &mut TableReader<'_, '_>,
    allowed: &AllowedHosts,
) -> Result<Vec<RequestSpec>, Reported> {
    let header = r.header().clone();
    let Some(field) = r.field("request") else {
        cx.error(
            &header,
            &r.key_path("request"),
            "a scenario needs at least one [[scenario.request]]",
        );
        return Err(Reported);
    };
    let items = field.array(cx, "an array of tables ([[scenario.request]])")?;
    if items.is_empty() {
        return Err(field.error(cx, "a scenario needs at least one [[scenario.request]]"));
    }
    let mut out = Vec::new();
    let mut failed = false;
    for item in &items {
        match item
            .table(cx, "a table ([[scenario.request]])")
            .and_then(|t| read_request(cx, t, allowed))
        {
            Ok(req) => out.push(req),
            Err(Reported) => failed = true,
        }
    }
    if failed {
        Err(Reported)
    } else {
        Ok(out)
    }
}

fn read_request(
    cx: &mut Ctx<'_>,
    mut r: TableReader<'_, '_>,
    allowed: &AllowedHosts,
) -> Result<RequestSpec, Reported> {
    let method = r
        .optional(cx, "method", |cx, f| {
            let s = reader::string(cx, f)?;
            let upper = s.to_ascii_uppercase();
            match upper.as_str() {
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
                    http::Method::from_bytes(upper.as_bytes()).map_err(|_| f.error(cx, "invalid method"))
                }
                _ => Err(f.error(cx, format!(
                    "unsupported method {s:?}; expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"))),
            }
        })
        .map(|m| m.unwrap_or(http::Method::GET));
    let url = r.required(cx, "url", |cx, f| {
        let s = reader::string(cx, f)?;
        let url =
            url::Url::parse(&s).map_err(|e| f.error(cx, format!("{s:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(f.error(
                cx,
                format!(
                    "scheme {:?} is not supported; use http or https",
                    url.scheme()
                ),
            ));
        }
        let Some(host) = url.host() else {
            return Err(f.error(cx, "the URL has no host"));
        };
        allowed.check(&host).map_err(|why| f.error(cx, why))?;
        Ok(url)
    });
    let headers = r
        .optional(cx, "headers", |cx, f| {
            let mut out = Vec::new();
            for (key, value) in f.entries(cx, "a table of header names to strings")? {
                let v = reader::string(cx, &value)?;
                let name = http::HeaderName::from_bytes(key.as_bytes())
                    .map_err(|_| value.error(cx, format!("{key:?} is not a valid header name")))?;
                let v = http::HeaderValue::from_str(&v)
                    .map_err(|_| value.error(cx, "is not a valid header value"))?;
                out.push((name, v));
            }
            Ok(out)
        })
        .map(Option::unwrap_or_default);
    let body = r
        .optional(cx, "body", |cx, f| reader::string(cx, f).map(Bytes::from))
        .map(Option::unwrap_or_default);
    let checks = r
        .optional(cx, "checks", |cx, f| {
            let mut t = f.table(cx, "a table like { status = 200, body_contains = \"ok\" }")?;
            let status = t.optional(cx, "status", |cx, f| {
                ranged(cx, f, 100, 599, "an HTTP status")
            });
            let body = t.optional(cx, "body_contains", |cx, f| {
                let s = reader::string(cx, f)?;
                if s.is_empty() {
                    return Err(f.error(cx, "must not be empty"));
                }
                Ok(s)
            });
            t.finish(cx);
            Ok((status?.map(|s| s as u16), body?))
        })
        .map(Option::unwrap_or_default);
    r.finish(cx);
    let (check_status, check_body) = checks?;
    Ok(RequestSpec {
        method: method?,
        url: url?,
        headers: headers?,
        body: body?,
        check_status,
        check_body,
    })
}

/// The caps of `[options]` against what the scenarios ask for.
fn check_caps(cx: &mut Ctx<'_>, options: &Options, scenarios: &[Located]) {
    let mut total_vus = 0u64;
    let mut total_rate = 0f64;
    for (s, header) in scenarios {
        total_vus = total_vus.saturating_add(s.executor.max_vus());
        total_rate += s.max_request_rate().unwrap_or(0.0);
        let path = format!("scenario.{}", s.name);
        if total_vus > options.max_vus {
            cx.error(header, &path, format!(
                "needs up to {total_vus} VUs over all scenarios, above the max_vus cap of {} (options.max_vus; the cap can only be lowered)",
                options.max_vus));
        }
        if total_rate > options.max_rate {
            cx.error(header, &path, format!(
                "schedules up to {total_rate} requests per second over all scenarios, above the max_rate cap of {} (options.max_rate; the cap can only be lowered)",
                options.max_rate));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &str = "[[scenario.request]]\nurl = \"http://127.0.0.1:8080/\"\n";

    fn parse_ok(text: &str) -> LoadPlan {
        parse(text, Path::new("t.toml"), &AllowedHosts::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(text, Path::new("t.toml"), &AllowedHosts::default()) {
            Ok(_) => panic!("parsed: {text}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn scenario(keys: &str) -> String {
        format!("[[scenario]]\nname = \"api\"\n{keys}\n{REQUEST}")
    }

    #[test]
    fn the_readme_example_parses() {
        let text = r#"
[options]
max_vus = 1000
max_rate = 100000

[[scenario]]
name = "api"
executor = "constant-arrival-rate"
rate = 5000
timeUnit = "1s"
duration = "30s"
preAllocatedVUs = 50
maxVUs = 200
[[scenario.request]]
method = "GET"
url = "http://127.0.0.1:8080/"
headers = { Accept = "application/json" }
body = ""
checks = { status = 200, body_contains = "ok" }

[thresholds]
http_req_duration = ["p(95)<500", { threshold = "p(99)<1500", abort_on_fail = true, delay_abort_eval = "5s" }]
http_req_failed = ["rate<0.01"]
checks = ["rate>0.99"]
http_req_waiting = ["p(95)<400"]
iterations = ["count>100"]
http_reqs = ["rate>4000"]
"#;
        let plan = parse_ok(text);
        assert_eq!(
            plan.scenarios[0].executor,
            Executor::ConstantArrivalRate {
                rate: 5000,
                time_unit: Duration::from_secs(1),
                duration: Duration::from_secs(30),
                pre_allocated_vus: 50,
                max_vus: 200
            }
        );
        assert_eq!(plan.scenarios[0].graceful_stop, DEFAULT_GRACEFUL_STOP);
        let req = &plan.scenarios[0].requests[0];
        assert_eq!(req.check_status, Some(200));
        assert_eq!(req.check_body.as_deref(), Some("ok"));
        assert_eq!(req.headers[0].0, "accept");
        assert_eq!(plan.thresholds.len(), 7);
        assert!(plan.thresholds[1].abort_on_fail);
        assert_eq!(plan.thresholds[1].delay_abort_eval, Duration::from_secs(5));
        assert_eq!(plan.thresholds[6].threshold.value, 4000.0);
    }

    #[test]
    fn every_executor_with_its_defaults() {
        let cases = [
            ("executor = \"constant-vus\"\nduration = \"5s\"", Executor::ConstantVus { vus: 1, duration: Duration::from_secs(5) }),
            (
                "executor = \"ramping-vus\"\nstages = [{ duration = \"1s\", target = 3 }]\ngracefulRampDown = \"1s\"",
                Executor::RampingVus { start_vus: 1, stages: vec![Stage { duration: Duration::from_secs(1), target: 3 }] },
            ),
            ("executor = \"per-vu-iterations\"", Executor::PerVuIterations { vus: 1, iterations: 1, max_duration: DEFAULT_MAX_DURATION }),
            (
                "executor = \"shared-iterations\"\nvus = 2\niterations = 9\nmaxDuration = \"1m\"",
                Executor::SharedIterations { vus: 2, iterations: 9, max_duration: Duration::from_secs(60) },
            ),
            (
                "executor = \"ramping-arrival-rate\"\nstartRate = 5\ntimeUnit = \"1m\"\npreAllocatedVUs = 2\nstages = [{ duration = \"10s\", target = 50 }]",
                Executor::RampingArrivalRate {
                    start_rate: 5,
                    time_unit: Duration::from_secs(60),
                    stages: vec![Stage { duration: Duration::from_secs(10), target: 50 }],
                    pre_allocated_vus: 2,
                    max_vus: 2,
                },
            ),
        ];
        for (keys, want) in cases {
            let text =
                format!("[[scenario]]\nname = \"api\"\n{keys}\nstartTime = \"2s\"\n{REQUEST}");
            let plan = parse_ok(&text);
            assert_eq!(plan.scenarios[0].executor, want, "{keys}");
            assert_eq!(plan.scenarios[0].start_time, Duration::from_secs(2));
        }
    }

    #[test]
    fn errors_name_the_position_the_key_and_the_fix() {
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                scenario("executor = \"constant-vu\"\nduration = \"1s\""),
                vec!["t.toml:3:1: scenario[0].executor: unknown executor \"constant-vu\", did you mean \"constant-vus\"?"],
            ),
            (
                scenario("executor = \"constant-vus\"\nduration = \"1s\"\nrate = 5"),
                vec!["t.toml:5:1: scenario[0].rate: `rate` does not apply to executor \"constant-vus\""],
            ),
            (
                scenario("executor = \"constant-vus\"\nduraton = \"1s\""),
                vec![
                    "t.toml:1:1: scenario[0].duration: missing required key `duration`",
                    "t.toml:4:1: scenario[0].duraton: unknown key `duraton`, did you mean `duration`?",
                ],
            ),
            (
                scenario("executor = \"constant-vus\"\nvus = 2000\nduration = \"1s\""),
                vec!["t.toml:1:1: scenario.api: needs up to 2000 VUs over all scenarios, above the max_vus cap of 1000 (options.max_vus; the cap can only be lowered)"],
            ),
            (
                format!("[options]\nmax_rate = 100\n{}", scenario("executor = \"constant-arrival-rate\"\nrate = 10\ntimeUnit = \"50ms\"\nduration = \"1s\"\npreAllocatedVUs = 1")),
                vec!["t.toml:3:1: scenario.api: schedules up to 200 requests per second over all scenarios, above the max_rate cap of 100 (options.max_rate; the cap can only be lowered)"],
            ),
            (
                "[options]\nmax_vus = 5000\n".to_owned() + &scenario("executor = \"per-vu-iterations\""),
                vec!["t.toml:2:1: options.max_vus: 5000 is out of range: expected an integer from 1 to 1000 (a VU count)"],
            ),
            (
                scenario("executor = \"constant-arrival-rate\"\nrate = 10\nduration = \"1s\"\npreAllocatedVUs = 10\nmaxVUs = 5"),
                vec!["t.toml:1:1: scenario[0].maxVUs: maxVUs (5) must be at least preAllocatedVUs (10)"],
            ),
            (
                scenario("executor = \"shared-iterations\"\nvus = 10\niterations = 5"),
                vec!["t.toml:1:1: scenario[0].iterations: shared-iterations needs iterations >= vus (k6), got 5 iterations for 10 VUs"],
            ),
            (
                scenario("executor = \"constant-vus\"\nduration = \"soon\""),
                vec!["t.toml:4:1: scenario[0].duration: \"soon\" is not a duration: use a whole number and a unit (ms, s, m, h or d), like \"500ms\", \"30s\" or \"1h30m\""],
            ),
            (
                scenario("executor = \"per-vu-iterations\"") + "[thresholds]\nchecks = [\"p(95)<1\"]\nhttp_reqs = [\"avg<3\"]\nhttp_req_failed = [\"rate<5\"]\nhttp_req_duraton = [\"p(95)<1\"]\n",
                vec![
                    "t.toml:7:11: thresholds.checks[0]: \"p(95)<1\": `p(95)` does not apply to checks, a rate: use rate (0..1)",
                    "t.toml:8:14: thresholds.http_reqs[0]: \"avg<3\": `avg` does not apply to http_reqs, a counter: use count or rate (per second)",
                    "t.toml:9:20: thresholds.http_req_failed[0]: \"rate<5\": rate of http_req_failed is a fraction between 0 and 1 (0.01 = 1 %), got 5",
                    "t.toml:10:1: thresholds.http_req_duraton: unknown metric `http_req_duraton`, did you mean `http_req_duration`?",
                ],
            ),
            (
                "[[scenario]]\nname = \"api\"\nexecutor = \"per-vu-iterations\"\n[[scenario.request]]\nurl = \"ftp://127.0.0.1/\"\nchecks = { status = 999, body = \"x\" }\n".to_owned(),
                vec![
                    "t.toml:5:1: scenario[0].request[0].url: scheme \"ftp\" is not supported; use http or https",
                    "t.toml:6:12: scenario[0].request[0].checks.status: 999 is out of range: expected an integer from 100 to 599 (an HTTP status)",
                    "t.toml:6:26: scenario[0].request[0].checks.body: unknown key `body`: accepted keys are status, body_contains",
                ],
            ),
            ("[options]\n".to_owned(), vec!["t.toml:1:1: scenario: a load file needs at least one [[scenario]]"]),
        ];
        for (text, want) in cases {
            assert_eq!(errors(&text), want, "{text}");
        }
    }

    #[test]
    fn the_rate_cap_counts_every_request_of_an_iteration() {
        let text = format!(
            "[options]\nmax_rate = 100\n{}{REQUEST}",
            scenario("executor = \"constant-arrival-rate\"\nrate = 60\nduration = \"1s\"\npreAllocatedVUs = 1")
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("schedules up to 120 requests per second"),
            "{e:?}"
        );
    }

    #[test]
    fn every_deploy_load_example_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        // deploy/load targets loopback; the pre-launch example a staging
        // host, which its comment says to allow.
        let staging = AllowedHosts::new(["staging.example.com"]);
        for (dir, allowed, at_least) in [
            ("deploy/load", AllowedHosts::default(), 2),
            ("deploy/examples/load", staging, 1),
        ] {
            let dir = root.join(dir);
            let mut seen = 0;
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    load(&path, &allowed).unwrap_or_else(|e| panic!("{e}"));
                    seen += 1;
                }
            }
            assert!(seen >= at_least, "{seen} examples in {}", dir.display());
        }
        // Without the allowance the staging host is refused.
        let prelaunch = root.join("deploy/examples/load/prelaunch.toml");
        let refused = load(&prelaunch, &AllowedHosts::default()).unwrap_err();
        assert!(
            refused.to_string().contains("staging.example.com"),
            "{refused}"
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = errors("[[scenario]]\nname = \n");
        assert!(e[0].starts_with("t.toml:2:"), "{e:?}");
        assert!(e[0].contains("invalid TOML"), "{e:?}");
    }

    #[test]
    fn allowed_hosts_are_checked_at_the_url() {
        let text =
            scenario("executor = \"per-vu-iterations\"").replace("127.0.0.1:8080", "example.com");
        assert_eq!(
            errors(&text),
            ["t.toml:5:1: scenario[0].request[0].url: host \"example.com\" is not allowed for load: only loopback is by default; add `--allow-host example.com` (or VANTAGE_LOAD_ALLOWED_HOSTS) if you own it"]
        );
        let allowed = AllowedHosts::new(["example.com"]);
        assert!(parse(&text, Path::new("t.toml"), &allowed).is_ok());
    }
}
