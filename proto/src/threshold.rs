//! Threshold expressions in k6 syntax: `p(95)<500`, `avg<200`, `rate<0.01`,
//! `availability>99.5`, `days_left>14`.
//!
//! An expression states the condition that must *hold* (as in k6): `p(95)<500`
//! passes while the 95th percentile is under 500 ms and is breached otherwise.
//! The aggregate decides which measurement the value is compared with:
//!
//! | aggregate | measurement | unit |
//! |---|---|---|
//! | `p(N)`, `med`, `avg`, `min`, `max` | latency of attempts | ms |
//! | `count` | attempts in the window | attempts |
//! | `rate` | share of failed attempts | 0..1 |
//! | `availability` | share of successful attempts | percent |
//! | `days_left` | days until the certificate expires | days |
//!
//! Shared by the coordinator's config (parsing, with the column of an error)
//! and its evaluator (comparison), so both read the same grammar.

use std::fmt;
use std::str::FromStr;

/// What an expression aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// Latency percentile, `p(95)`; the argument is in (0, 100].
    Percentile(f64),
    /// Median latency (`med`, same as `p(50)`).
    Med,
    /// Mean latency.
    Avg,
    /// Fastest attempt.
    Min,
    /// Slowest attempt.
    Max,
    /// Attempts in the window.
    Count,
    /// Failed attempts / attempts (k6's `http_req_failed` rate).
    Rate,
    /// Successful attempts / attempts, in percent.
    Availability,
    /// Whole days until the leaf certificate expires (negative once expired).
    DaysLeft,
}

impl Aggregate {
    /// Whether this aggregate is computed from the latency histogram.
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Aggregate::Percentile(_)
                | Aggregate::Med
                | Aggregate::Avg
                | Aggregate::Min
                | Aggregate::Max
        )
    }

    /// The unit of the measurement, for messages ("ms", "%" ...).
    pub fn unit(self) -> &'static str {
        match self {
            a if a.is_latency() => "ms",
            Aggregate::Availability => "%",
            Aggregate::DaysLeft => " days",
            _ => "",
        }
    }
}

impl fmt::Display for Aggregate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Aggregate::Percentile(p) => write!(f, "p({p})"),
            Aggregate::Med => f.write_str("med"),
            Aggregate::Avg => f.write_str("avg"),
            Aggregate::Min => f.write_str("min"),
            Aggregate::Max => f.write_str("max"),
            Aggregate::Count => f.write_str("count"),
            Aggregate::Rate => f.write_str("rate"),
            Aggregate::Availability => f.write_str("availability"),
            Aggregate::DaysLeft => f.write_str("days_left"),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==` (k6 also accepts `===`)
    Eq,
    /// `!=`
    Ne,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A parsed threshold expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub aggregate: Aggregate,
    /// How it is compared.
    pub op: Op,
    /// The limit, in the aggregate's unit.
    pub value: f64,
}

impl Threshold {
    /// Whether the condition holds for `observed`. `NaN` (nothing measured)
    /// never holds; callers decide whether "no data" is a breach.
    pub fn holds(&self, observed: f64) -> bool {
        match self.op {
            Op::Lt => observed < self.value,
            Op::Le => observed <= self.value,
            Op::Gt => observed > self.value,
            Op::Ge => observed >= self.value,
            Op::Eq => observed == self.value,
            Op::Ne => !observed.is_nan() && observed != self.value,
        }
    }
}

impl fmt::Display for Threshold {
    /// The canonical text: no spaces, `===` written `==`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.aggregate, self.op.as_str(), self.value)
    }
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {})", .offset + 1)]
pub struct ThresholdError {
    /// Character offset (0-based) in the expression where the problem is.
    pub offset: usize,
    /// What is wrong and what is accepted.
    pub message: String,
}

const AGGREGATES: &str = "p(N), med, avg, min, max, count, rate, availability, days_left";

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Parser::new(s).threshold(true)
    }
}

impl Threshold {
    /// Parses the grammar only, without the value ranges that [`FromStr`]
    /// applies (`rate` in 0..1, `availability` in 0..100, no negative
    /// latency or count). For callers whose metrics give an aggregate another
    /// meaning, such as k6 counters where `rate` is per second; they check
    /// ranges themselves.
    pub fn parse_syntax(s: &str) -> Result<Threshold, ThresholdError> {
        Parser::new(s).threshold(false)
    }
}

/// A small cursor over the characters of one expression.
struct Parser<'a> {
    chars: Vec<(usize, char)>,
    pos: usize,
    text: &'a str,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            chars: text.char_indices().collect(),
            pos: 0,
            text,
        }
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> ThresholdError {
        ThresholdError {
            offset,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// The text from character `start` to the cursor.
    fn slice(&self, start: usize) -> &'a str {
        let from = self.chars.get(start).map_or(self.text.len(), |&(i, _)| i);
        let to = self
            .chars
            .get(self.pos)
            .map_or(self.text.len(), |&(i, _)| i);
        &self.text[from..to]
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> (usize, &'a str) {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
        (start, self.slice(start))
    }

    fn threshold(mut self, ranged: bool) -> Result<Threshold, ThresholdError> {
        self.skip_spaces();
        let aggregate = self.aggregate()?;
        self.skip_spaces();
        let op = self.op()?;
        self.skip_spaces();
        let value = self.number("a number after the operator")?;
        self.skip_spaces();
        if self.pos < self.chars.len() {
            return Err(self.err(
                self.pos,
                format!("unexpected {:?} after the value", self.slice_rest()),
            ));
        }
        if ranged {
            check_range(aggregate, value).map_err(|m| self.err(0, m))?;
        }
        Ok(Threshold {
            aggregate,
            op,
            value,
        })
    }

    fn slice_rest(&self) -> &'a str {
        let from = self
            .chars
            .get(self.pos)
            .map_or(self.text.len(), |&(i, _)| i);
        &self.text[from..]
    }

    fn aggregate(&mut self) -> Result<Aggregate, ThresholdError> {
        let (start, word) = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        let agg = match word {
            "" => {
                return Err(self.err(
                    start,
                    format!("expected an aggregate ({AGGREGATES}) at the start"),
                ))
            }
            "p" => return self.percentile(),
            "med" => Aggregate::Med,
            "avg" => Aggregate::Avg,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            "count" => Aggregate::Count,
            "rate" => Aggregate::Rate,
            "availability" => Aggregate::Availability,
            "days_left" => Aggregate::DaysLeft,
            other => {
                return Err(self.err(
                    start,
                    format!("unknown aggregate {other:?}; expected one of {AGGREGATES}"),
                ))
            }
        };
        Ok(agg)
    }

    fn percentile(&mut self) -> Result<Aggregate, ThresholdError> {
        self.skip_spaces();
        if self.peek() != Some('(') {
            return Err(self.err(self.pos, "expected `(` after `p`, as in p(95)"));
        }
        self.pos += 1;
        self.skip_spaces();
        let at = self.pos;
        let p = self.number("a percentile between 0 and 100, as in p(99.9)")?;
        if !(p > 0.0 && p <= 100.0) {
            return Err(self.err(at, format!("percentile {p} is outside (0, 100]")));
        }
        self.skip_spaces();
        if self.peek() != Some(')') {
            return Err(self.err(self.pos, "expected `)` to close p(...)"));
        }
        self.pos += 1;
        Ok(Aggregate::Percentile(p))
    }

    fn op(&mut self) -> Result<Op, ThresholdError> {
        let (start, sym) = self.take_while(|c| matches!(c, '<' | '>' | '=' | '!'));
        Ok(match sym {
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            "==" | "===" => Op::Eq,
            "!=" => Op::Ne,
            "" => {
                return Err(self.err(
                    start,
                    "expected a comparison (<, <=, >, >=, ==, !=) after the aggregate",
                ))
            }
            other => return Err(self.err(start, format!("unknown operator {other:?}"))),
        })
    }

    fn number(&mut self, what: &str) -> Result<f64, ThresholdError> {
        let (start, text) =
            self.take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        if text.is_empty() {
            return Err(self.err(start, format!("expected {what}")));
        }
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(start, format!("{text:?} is not a number; expected {what}"))),
        }
    }
}

/// Limits that make an expression meaningless otherwise.
fn check_range(aggregate: Aggregate, value: f64) -> Result<(), String> {
    match aggregate {
        Aggregate::Rate if !(0.0..=1.0).contains(&value) => Err(format!(
            "rate is a fraction between 0 and 1 (0.01 = 1 %), got {value}"
        )),
        Aggregate::Availability if !(0.0..=100.0).contains(&value) => Err(format!(
            "availability is a percentage between 0 and 100, got {value}"
        )),
        a if (a.is_latency() || a == Aggregate::Count) && value < 0.0 => {
            Err(format!("{a} cannot be negative, got {value}"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_the_k6_forms() {
        assert_eq!(
            t("p(95)<500"),
            Threshold {
                aggregate: Aggregate::Percentile(95.0),
                op: Op::Lt,
                value: 500.0
            }
        );
        assert_eq!(
            t(" p( 99.9 ) <= 2000 ").aggregate,
            Aggregate::Percentile(99.9)
        );
        assert_eq!(t("avg<200").aggregate, Aggregate::Avg);
        assert_eq!(t("max<3000").op, Op::Lt);
        assert_eq!(t("rate<0.01").value, 0.01);
        assert_eq!(t("availability>99.5").op, Op::Gt);
        assert_eq!(t("days_left>14").aggregate, Aggregate::DaysLeft);
        assert_eq!(t("count===0").op, Op::Eq);
        assert_eq!(t("days_left>=-1").value, -1.0);
    }

    #[test]
    fn display_is_canonical_and_parses_back() {
        for s in [
            "p(95)<500",
            "p(99.9)<=2000",
            "rate<0.01",
            "availability>99.5",
            "med!=3",
        ] {
            let parsed = t(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(t(&parsed.to_string()), parsed);
        }
        assert_eq!(t("count === 0").to_string(), "count==0");
    }

    #[test]
    fn holds_is_the_passing_condition() {
        let p95 = t("p(95)<500");
        assert!(p95.holds(499.9));
        assert!(!p95.holds(500.0));
        assert!(!p95.holds(f64::NAN));
        assert!(t("availability>=99.5").holds(99.5));
        assert!(!t("days_left>14").holds(14.0));
        assert!(!t("max!=1").holds(f64::NAN));
    }

    #[test]
    fn errors_say_where_and_what_is_accepted() {
        let cases = [
            ("", 0, "expected an aggregate"),
            ("p95<500", 0, "unknown aggregate \"p95\""),
            ("p(95<500", 4, "expected `)`"),
            ("p(0)<1", 2, "outside (0, 100]"),
            ("p(101)<1", 2, "outside (0, 100]"),
            ("avg 200", 4, "expected a comparison"),
            ("avg=<200", 3, "unknown operator \"=<\""),
            ("avg<", 4, "expected a number"),
            ("avg<20ms", 6, "unexpected \"ms\""),
            ("avg<1.2.3", 4, "\"1.2.3\" is not a number"),
            ("rate<5", 0, "fraction between 0 and 1"),
            ("availability>120", 0, "percentage between 0 and 100"),
            ("p(95)<-1", 0, "cannot be negative"),
            ("é<1", 0, "expected an aggregate"),
        ];
        for (input, offset, needle) in cases {
            let e = input.parse::<Threshold>().expect_err(input);
            assert_eq!(e.offset, offset, "{input}: {e}");
            assert!(e.message.contains(needle), "{input}: {e}");
        }
    }

    #[test]
    fn parse_syntax_skips_only_the_ranges() {
        let t = Threshold::parse_syntax("rate>500").unwrap();
        assert_eq!(
            (t.aggregate, t.op, t.value),
            (Aggregate::Rate, Op::Gt, 500.0)
        );
        assert!("rate>500".parse::<Threshold>().is_err());
        assert_eq!(
            Threshold::parse_syntax("p(95<1").unwrap_err().offset,
            "p(95<1".parse::<Threshold>().unwrap_err().offset
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Threshold>();
        }

        #[test]
        fn round_trips(p in 0.001f64..=100.0, v in 0.0f64..1e6, op in 0usize..6) {
            let ops = ["<", "<=", ">", ">=", "==", "!="];
            let text = format!("p({p}){}{v}", ops[op]);
            let parsed: Threshold = text.parse().unwrap();
            prop_assert_eq!(parsed.to_string().parse::<Threshold>().unwrap(), parsed);
        }
    }
}
