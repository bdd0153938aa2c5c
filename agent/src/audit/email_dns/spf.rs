//! A small SPF record parser (RFC 7208 §4.6, §5, §6): enough to count DNS
//! lookups, follow `include:` and `redirect=`, and read the final `all`.
//!
//! It never evaluates a sender and never expands macros: a domain-spec with
//! a macro is checked for syntax, counted, and not followed. The input is
//! bounded ([`MAX_RECORD_LEN`], [`MAX_TERMS`]) and any text gives `Ok` or
//! [`SpfError`], never a panic (see the property test).

use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest record parsed, in bytes. A TXT record can be far longer than any
/// sane SPF record (real ones stay under 512 bytes so they fit a UDP answer);
/// the bound keeps a hostile answer from costing more than a few µs.
pub const MAX_RECORD_LEN: usize = 4096;

/// Most terms after `v=spf1`. A record within the 10-lookup limit rarely has
/// 30; the bound limits work on hostile input.
pub const MAX_TERMS: usize = 128;

/// Longest domain-spec, in bytes (a DNS name is at most 253; macros can make
/// the written form a little longer).
const MAX_DOMAIN_SPEC: usize = 255;

/// What a matching mechanism yields (RFC 7208 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    /// `+` (the default): the sender is authorised.
    Pass,
    /// `-`: the sender is not authorised.
    Fail,
    /// `~`: probably not authorised.
    SoftFail,
    /// `?`: no statement.
    Neutral,
}

impl Qualifier {
    /// The qualifier as written (`+`, `-`, `~`, `?`).
    pub fn symbol(self) -> char {
        match self {
            Qualifier::Pass => '+',
            Qualifier::Fail => '-',
            Qualifier::SoftFail => '~',
            Qualifier::Neutral => '?',
        }
    }
}

/// A mechanism (RFC 7208 §5). CIDR lengths of `a` and `mx` are checked but
/// not kept: nothing here matches addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:<domain-spec>`.
    Include(String),
    /// `a[:<domain-spec>][/<cidr>]`.
    A(Option<String>),
    /// `mx[:<domain-spec>][/<cidr>]`.
    Mx(Option<String>),
    /// `ptr[:<domain-spec>]`.
    Ptr(Option<String>),
    /// `ip4:<address>[/<prefix>]`.
    Ip4(Ipv4Addr, u8),
    /// `ip6:<address>[/<prefix>]`.
    Ip6(Ipv6Addr, u8),
    /// `exists:<domain-spec>`.
    Exists(String),
}

impl Mechanism {
    /// Whether evaluating it costs a DNS lookup (counted towards the limit
    /// of 10, RFC 7208 §4.6.4).
    pub fn needs_lookup(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A(_)
                | Mechanism::Mx(_)
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

/// A qualifier and a mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `+` unless written otherwise.
    pub qualifier: Qualifier,
    /// What is matched.
    pub mechanism: Mechanism,
}

/// A parsed `v=spf1` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The directives, in order.
    pub directives: Vec<Directive>,
    /// `redirect=` (used only when the record has no `all`).
    pub redirect: Option<String>,
    /// `exp=`.
    pub exp: Option<String>,
}

impl Record {
    /// Lookups this record itself costs: its `include`, `a`, `mx`, `ptr` and
    /// `exists` mechanisms, plus `redirect=` when it applies.
    pub fn lookups(&self) -> usize {
        let mechanisms = self
            .directives
            .iter()
            .filter(|d| d.mechanism.needs_lookup())
            .count();
        mechanisms + usize::from(self.applied_redirect().is_some())
    }

    /// The qualifier of the first `all` (evaluation never goes past it).
    pub fn all(&self) -> Option<Qualifier> {
        self.directives
            .iter()
            .find(|d| d.mechanism == Mechanism::All)
            .map(|d| d.qualifier)
    }

    /// `redirect=` when it takes effect: RFC 7208 §6.1 ignores it in a
    /// record with an `all` mechanism.
    pub fn applied_redirect(&self) -> Option<&str> {
        match self.all() {
            Some(_) => None,
            None => self.redirect.as_deref(),
        }
    }

    /// The `include:` targets with their qualifiers, in order.
    pub fn includes(&self) -> impl Iterator<Item = (Qualifier, &str)> {
        self.directives.iter().filter_map(|d| match &d.mechanism {
            Mechanism::Include(domain) => Some((d.qualifier, domain.as_str())),
            _ => None,
        })
    }
}

/// Why a record does not parse (a receiver's `permerror`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{term:?}: {reason}")]
pub struct SpfError {
    /// The offending term (at most 60 characters of it).
    pub term: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn error(term: &str, reason: &'static str) -> SpfError {
    let term = match term.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &term[..end]),
        None => term.to_owned(),
    };
    SpfError { term, reason }
}

/// Whether a TXT string is an SPF record: `v=spf1` alone or followed by a
/// space (RFC 7208 §4.5; case-insensitive).
pub fn is_spf(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 6
        && bytes[..6].eq_ignore_ascii_case(b"v=spf1")
        && bytes.get(6).is_none_or(|b| *b == b' ')
}

/// Parses one SPF record.
pub fn parse(text: &str) -> Result<Record, SpfError> {
    if text.len() > MAX_RECORD_LEN {
        return Err(error(text, "the record is longer than 4096 bytes"));
    }
    // RFC 7208 separates terms by spaces; other ASCII whitespace is taken as
    // a separator too, as most receivers do.
    let mut terms = text.split_ascii_whitespace();
    match terms.next() {
        Some(v) if v.eq_ignore_ascii_case("v=spf1") => {}
        Some(v) => return Err(error(v, "the record must start with v=spf1")),
        None => return Err(error(text, "the record is empty")),
    }
    let mut record = Record::default();
    for (i, term) in terms.enumerate() {
        if i >= MAX_TERMS {
            return Err(error(term, "the record has more than 128 terms"));
        }
        match parse_term(term)? {
            Term::Directive(d) => record.directives.push(d),
            Term::Redirect(domain) => {
                if record.redirect.replace(domain).is_some() {
                    return Err(error(term, "redirect= appears twice"));
                }
            }
            Term::Exp(domain) => {
                if record.exp.replace(domain).is_some() {
                    return Err(error(term, "exp= appears twice"));
                }
            }
            Term::Unknown => {}
        }
    }
    Ok(record)
}

enum Term {
    Directive(Directive),
    Redirect(String),
    Exp(String),
    /// A modifier this parser does not know (ignored, RFC 7208 §6).
    Unknown,
}

fn parse_term(term: &str) -> Result<Term, SpfError> {
    let (qualifier, rest) = match term.as_bytes()[0] {
        b'+' => (Some(Qualifier::Pass), &term[1..]),
        b'-' => (Some(Qualifier::Fail), &term[1..]),
        b'~' => (Some(Qualifier::SoftFail), &term[1..]),
        b'?' => (Some(Qualifier::Neutral), &term[1..]),
        _ => (None, term),
    };
    let name_end = rest.find([':', '/', '=']).unwrap_or(rest.len());
    let (name, arg) = rest.split_at(name_end);
    if let Some(value) = arg.strip_prefix('=') {
        if qualifier.is_some() {
            return Err(error(term, "a modifier takes no qualifier"));
        }
        if !is_modifier_name(name) {
            return Err(error(term, "not a valid modifier name"));
        }
        return match name.to_ascii_lowercase().as_str() {
            "redirect" => Ok(Term::Redirect(domain_spec(term, value)?)),
            "exp" => Ok(Term::Exp(domain_spec(term, value)?)),
            _ => {
                check_macro_string(term, value)?;
                Ok(Term::Unknown)
            }
        };
    }
    let qualifier = qualifier.unwrap_or(Qualifier::Pass);
    let mechanism = match name.to_ascii_lowercase().as_str() {
        "all" if arg.is_empty() => Mechanism::All,
        "all" => return Err(error(term, "all takes no argument")),
        "include" => Mechanism::Include(required_domain(term, arg)?),
        "exists" => Mechanism::Exists(required_domain(term, arg)?),
        "ptr" => Mechanism::Ptr(optional_domain(term, arg)?),
        "a" => Mechanism::A(domain_and_cidr(term, arg)?),
        "mx" => Mechanism::Mx(domain_and_cidr(term, arg)?),
        "ip4" => {
            let (addr, prefix) = address(term, arg, 32)?;
            let addr = addr
                .parse::<Ipv4Addr>()
                .map_err(|_| error(term, "not an IPv4 address"))?;
            Mechanism::Ip4(addr, prefix)
        }
        "ip6" => {
            let (addr, prefix) = address(term, arg, 128)?;
            let addr = addr
                .parse::<Ipv6Addr>()
                .map_err(|_| error(term, "not an IPv6 address"))?;
            Mechanism::Ip6(addr, prefix)
        }
        _ => return Err(error(term, "unknown mechanism")),
    };
    Ok(Term::Directive(Directive {
        qualifier,
        mechanism,
    }))
}

/// `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`.
fn is_modifier_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `:<domain-spec>` required.
fn required_domain(term: &str, arg: &str) -> Result<String, SpfError> {
    match arg.strip_prefix(':') {
        Some(spec) => domain_spec(term, spec),
        None => Err(error(term, "needs :domain")),
    }
}

/// Nothing, or `:<domain-spec>`.
fn optional_domain(term: &str, arg: &str) -> Result<Option<String>, SpfError> {
    if arg.is_empty() {
        Ok(None)
    } else {
        required_domain(term, arg).map(Some)
    }
}

/// `[:<domain-spec>][<dual-cidr>]` of `a` and `mx`.
fn domain_and_cidr(term: &str, arg: &str) -> Result<Option<String>, SpfError> {
    let (domain, cidr) = split_cidr(arg);
    if let Some(cidr) = cidr {
        dual_cidr(term, cidr)?;
    }
    optional_domain(term, domain)
}

/// Splits at the first `/` outside a macro (`%{d1/}` may hold one).
fn split_cidr(arg: &str) -> (&str, Option<&str>) {
    let mut in_macro = false;
    for (i, c) in arg.char_indices() {
        match c {
            '{' => in_macro = true,
            '}' => in_macro = false,
            '/' if !in_macro => return (&arg[..i], Some(&arg[i..])),
            _ => {}
        }
    }
    (arg, None)
}

/// `/n`, `//m` or `/n//m` with n ≤ 32 and m ≤ 128.
fn dual_cidr(term: &str, cidr: &str) -> Result<(), SpfError> {
    let (v4, v6) = match cidr.strip_prefix("//") {
        Some(m) => (None, Some(m)),
        None => {
            let rest = &cidr[1..];
            match rest.split_once("//") {
                Some((n, m)) => (Some(n), Some(m)),
                None => (Some(rest), None),
            }
        }
    };
    if let Some(n) = v4 {
        prefix(term, n, 32)?;
    }
    if let Some(m) = v6 {
        prefix(term, m, 128)?;
    }
    Ok(())
}

/// A prefix length: 1-3 digits, at most `max`.
fn prefix(term: &str, digits: &str, max: u8) -> Result<u8, SpfError> {
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(term, "a prefix length must be a number"));
    }
    match digits.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(error(term, "the prefix length is too long")),
    }
}

/// `:<address>[/<prefix>]` of `ip4` and `ip6`; the prefix defaults to `max`.
fn address<'a>(term: &str, arg: &'a str, max: u8) -> Result<(&'a str, u8), SpfError> {
    let Some(value) = arg.strip_prefix(':') else {
        return Err(error(term, "needs :address"));
    };
    match value.split_once('/') {
        Some((addr, len)) => Ok((addr, prefix(term, len, max)?)),
        None => Ok((value, max)),
    }
}

/// A domain-spec (RFC 7208 §7.1): a name with at least two labels, or a
/// macro-string; lower-cased, without a trailing dot.
fn domain_spec(term: &str, spec: &str) -> Result<String, SpfError> {
    if spec.is_empty() {
        return Err(error(term, "the domain is empty"));
    }
    if spec.len() > MAX_DOMAIN_SPEC {
        return Err(error(term, "the domain is longer than 255 bytes"));
    }
    if spec.contains('%') {
        check_macro_string(term, spec)?;
        return Ok(spec.to_owned());
    }
    let name = spec.strip_suffix('.').unwrap_or(spec);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    });
    if !labels_ok || !name.contains('.') {
        return Err(error(term, "not a valid domain name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Whether `s` is a valid macro-string: visible ASCII, and every `%` starts
/// `%%`, `%_`, `%-` or `%{<letter><digits>[r]<delimiters>}`.
fn check_macro_string(term: &str, s: &str) -> Result<(), SpfError> {
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(error(term, "only visible ASCII characters are allowed"));
    }
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            continue;
        }
        match bytes.next() {
            Some(b'%' | b'_' | b'-') => {}
            Some(b'{') => {
                let letter = bytes.next().map(|l| l.to_ascii_lowercase());
                if !matches!(
                    letter,
                    Some(
                        b's' | b'l' | b'o' | b'd' | b'i' | b'p' | b'h' | b'c' | b'r' | b't' | b'v'
                    )
                ) {
                    return Err(error(term, "unknown macro letter"));
                }
                // Transformers and delimiters, then `}`.
                loop {
                    match bytes.next() {
                        Some(b'}') => break,
                        Some(c) if c.is_ascii_digit() || b"rR.-+,/_=".contains(&c) => {}
                        _ => return Err(error(term, "unterminated or malformed macro")),
                    }
                }
            }
            _ => return Err(error(term, "a % must start a macro")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(text: &str) -> Record {
        parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(r) => panic!("{text} parsed: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn recognises_spf_records() {
        assert!(is_spf("v=spf1"));
        assert!(is_spf("V=SPF1 -all"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("v=spf"));
        assert!(!is_spf("google-site-verification=x"));
        assert!(!is_spf("é"));
    }

    #[test]
    fn a_typical_record() {
        let r = ok(
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx:mail.example.com/24//64 \
                    include:_spf.google.com ~all",
        );
        assert_eq!(r.lookups(), 3);
        assert_eq!(r.all(), Some(Qualifier::SoftFail));
        assert_eq!(
            r.includes().collect::<Vec<_>>(),
            vec![(Qualifier::Pass, "_spf.google.com")]
        );
        assert_eq!(
            r.directives[0].mechanism,
            Mechanism::Ip4(Ipv4Addr::new(192, 0, 2, 0), 24)
        );
        assert_eq!(
            r.directives[3].mechanism,
            Mechanism::Mx(Some("mail.example.com".into()))
        );
    }

    #[test]
    fn qualifiers_and_the_bare_all_that_means_pass() {
        assert_eq!(ok("v=spf1 all").all(), Some(Qualifier::Pass));
        assert_eq!(ok("v=spf1 +all").all(), Some(Qualifier::Pass));
        assert_eq!(ok("v=spf1 ?all").all(), Some(Qualifier::Neutral));
        assert_eq!(ok("v=spf1 -ALL").all(), Some(Qualifier::Fail));
        assert_eq!(ok("v=spf1 -all +all").all(), Some(Qualifier::Fail));
        assert_eq!(ok("v=spf1").all(), None);
    }

    #[test]
    fn redirect_counts_only_without_all() {
        let r = ok("v=spf1 redirect=_spf.example.com");
        assert_eq!(r.lookups(), 1);
        assert_eq!(r.applied_redirect(), Some("_spf.example.com"));
        let r = ok("v=spf1 -all redirect=_spf.example.com");
        assert_eq!(r.lookups(), 0);
        assert_eq!(r.applied_redirect(), None);
    }

    #[test]
    fn macros_and_unknown_modifiers() {
        let r = ok("v=spf1 exists:%{i}._spf.%{d} a:%{d1/}.example.com/24 foo=bar%{s} -all");
        assert_eq!(r.lookups(), 2);
        assert_eq!(
            r.directives[1].mechanism,
            Mechanism::A(Some("%{d1/}.example.com".into()))
        );
        assert!(err("v=spf1 exists:%{z}.x.com").contains("macro letter"));
        assert!(err("v=spf1 exists:%{d.x.com").contains("malformed macro"));
        assert!(err("v=spf1 include:a%b.com").contains("must start a macro"));
    }

    #[test]
    fn errors_name_the_term() {
        let cases = [
            ("", "empty"),
            ("v=spf2 -all", "start with v=spf1"),
            ("v=spf1 include", "needs :domain"),
            ("v=spf1 include:", "domain is empty"),
            ("v=spf1 include:localhost", "valid domain name"),
            ("v=spf1 ip4:300.1.1.1", "IPv4"),
            ("v=spf1 ip4:10.0.0.0/33", "too long"),
            ("v=spf1 ip6:2001:db8::/129", "too long"),
            ("v=spf1 ip6:2001:db8::/", "number"),
            ("v=spf1 a/+8", "number"),
            ("v=spf1 mx//", "number"),
            ("v=spf1 all:x.com", "no argument"),
            ("v=spf1 foo", "unknown mechanism"),
            ("v=spf1 -redirect=x.com", "no qualifier"),
            ("v=spf1 redirect=a.com redirect=b.com", "twice"),
            ("v=spf1 1x=y", "modifier name"),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert!(e.contains(expected), "{text}: {e}");
        }
        let long = format!("v=spf1 {}", "a ".repeat(MAX_TERMS + 1));
        assert!(err(&long).contains("128 terms"));
        let huge = format!("v=spf1 include:{}.com", "x".repeat(MAX_RECORD_LEN));
        let e = err(&huge);
        assert!(e.contains("4096 bytes") && e.len() < 200, "{e}");
    }

    proptest! {
        /// Any text: a result, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse(&text);
            let _ = is_spf(&text);
        }

        /// Record-shaped text, closer to the branches of the parser.
        #[test]
        fn record_shaped_text_never_panics(
            text in "v=spf1( [-+~?]?(all|include:[a-z%{}./_-]{0,12}|exists:[a-z%{}.]{0,12}|\
                     (a|mx|ptr)(:[a-z%{}/.]{0,10})?(/[0-9+]{0,4})?(//[0-9]{0,4})?|\
                     ip4:[0-9./]{0,20}|ip6:[0-9a-f:/]{0,24}|redirect=[a-z.%{}]{0,10}|\
                     [a-z0-9]{1,6}=[!-~]{0,8}|[!-~]{1,6})){0,24}"
        ) {
            if let Ok(record) = parse(&text) {
                prop_assert!(record.lookups() <= MAX_TERMS + 1);
            }
        }
    }
}
