//! `[thresholds]`: k6 expressions per metric, checked against the metric's kind,
//! and their evaluation on the data so far.

use std::time::Duration;

use vantage_proto::threshold::{Aggregate, Threshold};
use vantage_proto::toml_reader::{self as reader, Ctx, Field, Reported};

use super::metrics::{Metric, MetricKind, Stats};

/// One threshold of the load file.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdDef {
    /// The metric it applies to.
    pub metric: Metric,
    /// The expression.
    pub threshold: Threshold,
    /// The expression as written.
    pub text: String,
    /// `abort_on_fail`: stop the run as soon as it fails (default false).
    pub abort_on_fail: bool,
    /// `delay_abort_eval`: no abort before this much of the run (default 0s).
    pub delay_abort_eval: Duration,
}

/// Reads the `[thresholds]` table; problems are recorded in `cx`.
pub(crate) fn read(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Vec<ThresholdDef> {
    let mut out = Vec::new();
    let Ok(entries) = f.entries(cx, "a table of metric names to arrays of thresholds") else {
        return out;
    };
    for (name, field) in entries {
        let Some(metric) = Metric::from_name(name) else {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            let message = match reader::suggest(name, &names) {
                Some(close) => format!("unknown metric `{name}`, did you mean `{close}`?"),
                None if name.contains('{') => {
                    format!("unknown metric `{name}`: tagged sub-metrics are not supported")
                }
                None => format!(
                    "unknown metric `{name}`: known metrics are {}",
                    names.join(", ")
                ),
            };
            field.error(cx, message);
            continue;
        };
        let Ok(items) = field.array(cx, "an array of threshold strings or tables") else {
            continue;
        };
        for item in &items {
            if let Ok(def) = read_one(cx, item, metric) {
                out.push(def);
            }
        }
    }
    out
}

fn read_one(cx: &mut Ctx<'_>, f: &Field<'_, '_>, metric: Metric) -> Result<ThresholdDef, Reported> {
    let expected = "a threshold string like \"p(95)<500\" or a { threshold, abort_on_fail, delay_abort_eval } table";
    if let toml::de::DeValue::String(_) = f.value.get_ref() {
        let text = reader::string(cx, f)?;
        let threshold = parse(cx, f, metric, &text)?;
        return Ok(ThresholdDef {
            metric,
            threshold,
            text,
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
        });
    }
    let mut r = f.table(cx, expected)?;
    let parsed = r.required(cx, "threshold", |cx, f| {
        let text = reader::string(cx, f)?;
        parse(cx, f, metric, &text).map(|t| (text, t))
    });
    let abort = r.optional(cx, "abort_on_fail", reader::boolean);
    let delay = r.optional(cx, "delay_abort_eval", reader::duration);
    r.finish(cx);
    let (text, threshold) = parsed?;
    Ok(ThresholdDef {
        metric,
        threshold,
        text,
        abort_on_fail: abort?.unwrap_or(false),
        delay_abort_eval: delay?.unwrap_or_default(),
    })
}

/// Parses `text` and checks the aggregate and value against the metric kind.
fn parse(
    cx: &mut Ctx<'_>,
    f: &Field<'_, '_>,
    metric: Metric,
    text: &str,
) -> Result<Threshold, Reported> {
    let t = Threshold::parse_syntax(text).map_err(|e| f.error(cx, format!("{text:?}: {e}")))?;
    validate(metric, &t).map_err(|m| f.error(cx, format!("{text:?}: {m}")))?;
    Ok(t)
}

/// Whether `t` fits `metric` (k6: trends take p(N)/avg/min/max/med in ms,
/// rates take `rate` in 0..1, counters take `count` and `rate` per second).
pub fn validate(metric: Metric, t: &Threshold) -> Result<(), String> {
    let name = metric.name();
    match metric.kind() {
        MetricKind::Trend if t.aggregate.is_latency() => {
            if t.value < 0.0 {
                return Err(format!("{} cannot be negative", t.aggregate));
            }
        }
        MetricKind::Trend => {
            return Err(format!(
                "`{}` does not apply to {name}, a trend: use p(N), avg, min, max or med (ms)",
                t.aggregate
            ))
        }
        MetricKind::Rate if t.aggregate == Aggregate::Rate => {
            if !(0.0..=1.0).contains(&t.value) {
                return Err(format!(
                    "rate of {name} is a fraction between 0 and 1 (0.01 = 1 %), got {}",
                    t.value
                ));
            }
        }
        MetricKind::Rate => {
            return Err(format!(
                "`{}` does not apply to {name}, a rate: use rate (0..1)",
                t.aggregate
            ))
        }
        MetricKind::Counter if matches!(t.aggregate, Aggregate::Count | Aggregate::Rate) => {
            if t.value < 0.0 {
                return Err(format!("{} cannot be negative", t.aggregate));
            }
        }
        MetricKind::Counter => {
            return Err(format!(
                "`{}` does not apply to {name}, a counter: use count or rate (per second)",
                t.aggregate
            ))
        }
    }
    Ok(())
}

/// The observed value of `def`'s aggregate in `stats` after `elapsed`
/// (`NaN` when there is nothing to measure).
pub fn observe(def: &ThresholdDef, stats: &Stats, elapsed: Duration) -> f64 {
    let agg = def.threshold.aggregate;
    if let Some(h) = stats.trend(def.metric) {
        if h.is_empty() {
            return f64::NAN;
        }
        let us = match agg {
            Aggregate::Percentile(p) => h.value_at_quantile(p / 100.0) as f64,
            Aggregate::Med => h.value_at_quantile(0.5) as f64,
            Aggregate::Avg => h.mean(),
            Aggregate::Min => h.min() as f64,
            Aggregate::Max => h.max() as f64,
            _ => return f64::NAN,
        };
        return us / 1000.0;
    }
    if let Some((hits, total)) = stats.rate(def.metric) {
        return if total == 0 {
            f64::NAN
        } else {
            hits as f64 / total as f64
        };
    }
    if let Some(count) = stats.count(def.metric) {
        return match agg {
            Aggregate::Count => count as f64,
            Aggregate::Rate if !elapsed.is_zero() => count as f64 / elapsed.as_secs_f64(),
            _ => f64::NAN,
        };
    }
    f64::NAN
}

/// Whether `def` holds. A rate or trend with no data holds (k6 does not fail
/// a threshold on a metric nothing was recorded into); a counter is 0.
pub fn passes(def: &ThresholdDef, stats: &Stats, elapsed: Duration) -> (f64, bool) {
    let observed = observe(def, stats, elapsed);
    if observed.is_nan() {
        return (observed, true);
    }
    (observed, def.threshold.holds(observed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::metrics::record;

    fn def(metric: Metric, text: &str) -> ThresholdDef {
        let threshold = Threshold::parse_syntax(text).unwrap();
        validate(metric, &threshold).unwrap();
        ThresholdDef {
            metric,
            threshold,
            text: text.into(),
            abort_on_fail: false,
            delay_abort_eval: Duration::ZERO,
        }
    }

    #[test]
    fn aggregates_fit_the_metric_kind() {
        let ok = [
            (Metric::HttpReqDuration, "p(99.9)<2000"),
            (Metric::IterationDuration, "med<=3"),
            (Metric::Checks, "rate>0.99"),
            (Metric::HttpReqs, "rate>5000"),
            (Metric::DroppedIterations, "count==0"),
        ];
        for (m, t) in ok {
            assert_eq!(
                validate(m, &Threshold::parse_syntax(t).unwrap()),
                Ok(()),
                "{t}"
            );
        }
        let bad = [
            (
                Metric::Checks,
                "p(95)<1",
                "does not apply to checks, a rate",
            ),
            (
                Metric::HttpReqWaiting,
                "rate<1",
                "does not apply to http_req_waiting, a trend",
            ),
            (
                Metric::Iterations,
                "max<1",
                "does not apply to iterations, a counter",
            ),
            (
                Metric::HttpReqFailed,
                "rate<1.5",
                "fraction between 0 and 1",
            ),
            (Metric::HttpReqs, "count>-1", "cannot be negative"),
        ];
        for (m, t, needle) in bad {
            let e = validate(m, &Threshold::parse_syntax(t).unwrap()).unwrap_err();
            assert!(e.contains(needle), "{t}: {e}");
        }
    }

    #[test]
    fn observed_values_follow_k6_units() {
        let mut s = Stats::default();
        for us in [1_000, 2_000, 3_000, 400_000] {
            record(&mut s.duration, us);
        }
        s.reqs = 4;
        s.failed = 1;
        s.iterations = 10;
        let ten_s = Duration::from_secs(10);
        let max = observe(&def(Metric::HttpReqDuration, "max<1"), &s, ten_s);
        assert!((max - 400.0).abs() < 1.0, "{max}");
        assert_eq!(
            observe(&def(Metric::HttpReqFailed, "rate<0.5"), &s, ten_s),
            0.25
        );
        assert_eq!(
            observe(&def(Metric::Iterations, "rate>0.5"), &s, ten_s),
            1.0
        );
        assert_eq!(
            observe(&def(Metric::Iterations, "count>5"), &s, ten_s),
            10.0
        );
        assert!(!passes(&def(Metric::HttpReqDuration, "p(99)<100"), &s, ten_s).1);
        assert!(passes(&def(Metric::HttpReqDuration, "med<100"), &s, ten_s).1);
        // No checks ran: the rate has no data and passes; a counter is 0.
        assert!(passes(&def(Metric::Checks, "rate>0.99"), &s, ten_s).1);
        assert!(!passes(&def(Metric::DroppedIterations, "count>0"), &s, ten_s).1);
    }
}
