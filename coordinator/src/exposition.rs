//! The Prometheus text exposition format (version 0.0.4), written by hand:
//! `# HELP` and `# TYPE` once per family, samples with escaped label values,
//! and histograms as cumulative `_bucket{le=...}`, `_sum` and `_count`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (name ends in `_total`).
    Counter,
    /// Cumulative buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of metrics being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<String>,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Declares family `name` (once; later calls are ignored), so its
    /// samples must follow before another family's.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        if !self.families.insert(name.to_owned()) {
            return;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of `name` with `labels`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A histogram sample set: `bounds` are the upper bounds (`le`) in the
    /// family's unit, increasing; `count_le(bound)` counts the observations
    /// at or below a bound; `+Inf` is `count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        count_le: impl Fn(f64) -> u64,
        sum: f64,
        count: u64,
    ) {
        let bucket = format!("{name}_bucket");
        let mut last = 0;
        for &le in bounds {
            // Cumulative buckets never decrease, whatever the source says.
            last = count_le(le).clamp(last, count);
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&number(le)));
            let _ = writeln!(self.out, " {last}");
        }
        self.out.push_str(&bucket);
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (k, v) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A sample value as the format writes it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::new();
        e.family("probe_success", Kind::Gauge, "Whether the probe succeeded.");
        e.sample("probe_success", &[("check", "home"), ("region", "eu")], 1.0);
        e.family("probe_success", Kind::Gauge, "again: ignored");
        e.sample(
            "probe_success",
            &[("check", "a\"b\\c\nd"), ("region", "us")],
            0.0,
        );
        e.family("up_total", Kind::Counter, "line one\nline two");
        e.sample("up_total", &[], 0.25);
        e.sample("up_total", &[], f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP probe_success Whether the probe succeeded.\n\
             # TYPE probe_success gauge\n\
             probe_success{check=\"home\",region=\"eu\"} 1\n\
             probe_success{check=\"a\\\"b\\\\c\\nd\",region=\"us\"} 0\n\
             # HELP up_total line one\\nline two\n\
             # TYPE up_total counter\n\
             up_total 0.25\n\
             up_total NaN\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let mut e = Exposition::new();
        e.family("d_seconds", Kind::Histogram, "Latency.");
        // A source that is not monotonic is clamped to stay cumulative.
        let counts = [(0.1, 3), (0.5, 2), (1.0, 9), (2.5, 20)];
        let count_le = |le: f64| counts.iter().find(|(b, _)| *b == le).unwrap().1;
        e.histogram(
            "d_seconds",
            &[("check", "x")],
            &[0.1, 0.5, 1.0, 2.5],
            count_le,
            4.5,
            10,
        );
        assert_eq!(
            e.finish(),
            "# HELP d_seconds Latency.\n\
             # TYPE d_seconds histogram\n\
             d_seconds_bucket{check=\"x\",le=\"0.1\"} 3\n\
             d_seconds_bucket{check=\"x\",le=\"0.5\"} 3\n\
             d_seconds_bucket{check=\"x\",le=\"1\"} 9\n\
             d_seconds_bucket{check=\"x\",le=\"2.5\"} 10\n\
             d_seconds_bucket{check=\"x\",le=\"+Inf\"} 10\n\
             d_seconds_sum{check=\"x\"} 4.5\n\
             d_seconds_count{check=\"x\"} 10\n"
        );
    }
}
