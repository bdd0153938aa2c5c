//! A reader over a parsed TOML document that records every problem instead of
//! stopping at the first one. Shared by the coordinator's config and the
//! agent's load files, so both report `FILE:LINE:COLUMN: KEY.PATH: MESSAGE`.
//!
//! - [`Ctx`] owns the source text (to turn byte spans into line and column) and
//!   the list of errors found so far.
//! - [`TableReader`] hands out the keys of one table by name. Every key asked
//!   for is a key the table accepts, so [`TableReader::finish`] can report the
//!   keys nobody asked for as unknown, with a "did you mean" taken from the
//!   asked ones. Adding a key to the format is one `optional`/`required` call.
//! - [`Field`] is one value with its key path and the position its errors are
//!   reported at; the decoders at the bottom turn fields into typed values.

use std::fmt;
use std::io::Read as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a TOML file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// The file, as given to the parser.
    pub origin: PathBuf,
    /// 1-based line; 0 when the error concerns the whole file (it could not be read).
    pub line: usize,
    /// 1-based column in characters; 0 with `line` 0.
    pub column: usize,
    /// Key path such as `check[2].url` or `check[0].headers.X-Foo`; empty for
    /// TOML syntax errors and unreadable files.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl fmt::Display for TomlError {
    /// `FILE:LINE:COLUMN: KEY.PATH: MESSAGE`; without `KEY.PATH: ` when the
    /// path is empty and without `:LINE:COLUMN` when there is no position.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TomlError {}

impl TomlError {
    /// An error about the whole file (no position, no key path).
    pub fn whole_file(origin: &Path, message: String) -> Self {
        TomlError {
            origin: origin.to_path_buf(),
            line: 0,
            column: 0,
            path: String::new(),
            message,
        }
    }
}

/// Reads the UTF-8 text of `path`, refusing files larger than `max_bytes` so a
/// wrong path (say `/dev/zero`) fails instead of filling memory. `what` names
/// the file in messages ("config file", "load file").
pub fn read_text(path: &Path, max_bytes: u64, what: &str) -> Result<String, TomlError> {
    let whole_file = |message: String| TomlError::whole_file(path, message);
    let file = std::fs::File::open(path)
        .map_err(|e| whole_file(format!("cannot open the {what}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| whole_file(format!("cannot read the {what}: {e}")))?;
    if bytes.len() as u64 > max_bytes {
        return Err(whole_file(format!(
            "the file is larger than {} MiB; is this the {what}?",
            max_bytes / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes).map_err(|e| whole_file(format!("the file is not UTF-8 text: {e}")))
}

/// At most this many TOML syntax errors are listed; later ones are mostly
/// consequences of the first.
pub const MAX_SYNTAX_ERRORS: usize = 20;

/// Records the syntax errors of `DeTable::parse_recoverable`, deduplicated and
/// capped at [`MAX_SYNTAX_ERRORS`], and returns every error of `cx`.
pub fn syntax_errors(mut cx: Ctx<'_>, mut errors: Vec<toml::de::Error>) -> Vec<TomlError> {
    errors.sort_by_key(|e| e.span().map(|s| s.start));
    errors.dedup_by(|a, b| a.span() == b.span() && a.message() == b.message());
    let total = errors.len();
    let mut last = 0..0;
    for e in errors.iter().take(MAX_SYNTAX_ERRORS) {
        last = e.span().unwrap_or(0..0);
        cx.error(&last, "", format!("invalid TOML: {}", e.message()));
    }
    if total > MAX_SYNTAX_ERRORS {
        let more = total - MAX_SYNTAX_ERRORS;
        cx.error(
            &last,
            "",
            format!("invalid TOML: {more} more syntax errors not shown"),
        );
    }
    cx.into_errors()
}

/// A parsed TOML value with its byte span.
pub type Value<'i> = Spanned<DeValue<'i>>;

/// Marker: the problem was already recorded in [`Ctx`]; the caller only has to
/// carry on without the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported;

/// The source being read and the errors found in it so far.
pub struct Ctx<'a> {
    text: &'a str,
    origin: &'a Path,
    /// Byte offset of the first character of each line.
    line_starts: Vec<usize>,
    errors: Vec<TomlError>,
}

impl<'a> Ctx<'a> {
    /// A context over `text`; `origin` names the file in errors.
    pub fn new(text: &'a str, origin: &'a Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Ctx {
            text,
            origin,
            line_starts,
            errors: Vec::new(),
        }
    }

    /// 1-based line and column (in characters) of byte `offset`. Offsets past
    /// the end or inside a character are clamped, never a panic.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        // A byte-order mark is not a column an editor shows.
        let before = self.text.get(start..offset).unwrap_or("");
        let column = before.trim_start_matches('\u{feff}').chars().count();
        (line, column + 1)
    }

    /// Records an error at the start of `span`.
    pub fn error(&mut self, span: &Range<usize>, path: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push(TomlError {
            origin: self.origin.to_path_buf(),
            line,
            column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// The errors so far, in the order of their position in the file.
    pub fn into_errors(self) -> Vec<TomlError> {
        let mut errors = self.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        errors
    }
}

/// One value of the document, with where its errors are reported.
pub struct Field<'t, 'i> {
    /// Key path, like `check[0].interval`.
    pub path: String,
    /// Reported position: the key, or the element for array elements.
    pub at: Range<usize>,
    /// The value itself.
    pub value: &'t Value<'i>,
}

impl<'t, 'i> Field<'t, 'i> {
    /// Records `message` at this field.
    pub fn error(&self, cx: &mut Ctx<'_>, message: impl Into<String>) -> Reported {
        cx.error(&self.at, &self.path, message);
        Reported
    }

    /// Records "expected `expected`, found TYPE".
    pub fn type_error(&self, cx: &mut Ctx<'_>, expected: &str) -> Reported {
        let found = self.value.get_ref().type_str();
        self.error(cx, format!("expected {expected}, found {found}"))
    }

    /// The elements of an array value, each located at itself.
    pub fn array(&self, cx: &mut Ctx<'_>, expected: &str) -> Result<Vec<Field<'t, 'i>>, Reported> {
        let DeValue::Array(items) = self.value.get_ref() else {
            return Err(self.type_error(cx, expected));
        };
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, value)| Field {
                path: format!("{}[{i}]", self.path),
                at: value.span(),
                value,
            })
            .collect())
    }

    /// The entries of a table value in document order, each located at its key.
    pub fn entries(
        &self,
        cx: &mut Ctx<'_>,
        expected: &str,
    ) -> Result<Vec<(&'t str, Field<'t, 'i>)>, Reported> {
        let DeValue::Table(table) = self.value.get_ref() else {
            return Err(self.type_error(cx, expected));
        };
        Ok(sorted_entries(table)
            .into_iter()
            .map(|(key, value)| {
                let field = Field {
                    path: join(&self.path, key.get_ref()),
                    at: key.span(),
                    value,
                };
                (key.get_ref().as_ref(), field)
            })
            .collect())
    }

    /// This value as a table to read key by key.
    pub fn table(&self, cx: &mut Ctx<'_>, expected: &str) -> Result<TableReader<'t, 'i>, Reported> {
        match self.value.get_ref() {
            DeValue::Table(table) => Ok(TableReader::new(
                table,
                self.value.span(),
                self.path.clone(),
            )),
            _ => Err(self.type_error(cx, expected)),
        }
    }
}

/// Entries of `table` in the order they appear in the file (the map itself is
/// sorted by key).
fn sorted_entries<'t, 'i>(
    table: &'t DeTable<'i>,
) -> Vec<(&'t Spanned<toml::de::DeString<'i>>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// Appends `key` to a key path, quoting it when it is not a bare TOML key.
pub fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let segment = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        segment
    } else {
        format!("{prefix}.{segment}")
    }
}

/// Reads one table key by key and reports what was left over.
pub struct TableReader<'t, 'i> {
    table: &'t DeTable<'i>,
    /// Span of the table itself (its header for `[x]` / `[[x]]`); missing keys
    /// are reported here.
    header: Range<usize>,
    path: String,
    /// Keys this table accepts, in the order they were asked for.
    asked: Vec<&'static str>,
    /// Keys accepted without being read (e.g. kind-specific keys of a check
    /// whose kind is unknown).
    allowed: Vec<&'static str>,
}

impl<'t, 'i> TableReader<'t, 'i> {
    /// A reader over `table`, whose header is at `header` and key path is `path`.
    pub fn new(table: &'t DeTable<'i>, header: Range<usize>, path: String) -> Self {
        TableReader {
            table,
            header,
            path,
            asked: Vec::new(),
            allowed: Vec::new(),
        }
    }

    /// Span of the table header.
    pub fn header(&self) -> &Range<usize> {
        &self.header
    }

    /// Key path of `key` in this table.
    pub fn key_path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn entry(&self, key: &str) -> Option<(&'t Spanned<toml::de::DeString<'i>>, &'t Value<'i>)> {
        self.table.iter().find(|(k, _)| k.get_ref() == key)
    }

    /// Span of `key` when it is present.
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.entry(key).map(|(k, _)| k.span())
    }

    /// Marks `key` as accepted by this table and returns its field if present.
    pub fn field(&mut self, key: &'static str) -> Option<Field<'t, 'i>> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        self.entry(key).map(|(k, value)| Field {
            path: self.key_path(key),
            at: k.span(),
            value,
        })
    }

    /// Reads an optional key: `Ok(None)` when absent, `Err` when present but
    /// invalid (already reported).
    pub fn optional<T>(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &'static str,
        decode: impl FnOnce(&mut Ctx<'_>, &Field<'t, 'i>) -> Result<T, Reported>,
    ) -> Result<Option<T>, Reported> {
        match self.field(key) {
            Some(f) => decode(cx, &f).map(Some),
            None => Ok(None),
        }
    }

    /// Reads a required key; a missing key is reported at the table header.
    pub fn required<T>(
        &mut self,
        cx: &mut Ctx<'_>,
        key: &'static str,
        decode: impl FnOnce(&mut Ctx<'_>, &Field<'t, 'i>) -> Result<T, Reported>,
    ) -> Result<T, Reported> {
        match self.field(key) {
            Some(f) => decode(cx, &f),
            None => {
                let path = self.key_path(key);
                cx.error(&self.header, &path, format!("missing required key `{key}`"));
                Err(Reported)
            }
        }
    }

    /// Accepts `keys` without reading them.
    pub fn allow(&mut self, keys: &[&'static str]) {
        self.allowed.extend_from_slice(keys);
    }

    /// Reports `key`, if present and not asked for, with `message` instead of
    /// the generic "unknown key", and accepts it from then on.
    pub fn reject(&mut self, cx: &mut Ctx<'_>, key: &'static str, message: &str) {
        if self.asked.contains(&key) || self.allowed.contains(&key) {
            return;
        }
        if let Some(span) = self.key_span(key) {
            cx.error(&span, &self.key_path(key), message);
            self.allowed.push(key);
        }
    }

    /// Reports every key that was neither asked for nor allowed.
    pub fn finish(self, cx: &mut Ctx<'_>) {
        for (key, _) in sorted_entries(self.table) {
            let key_str: &str = key.get_ref();
            if self.asked.contains(&key_str) || self.allowed.contains(&key_str) {
                continue;
            }
            let message = match suggest(key_str, &self.asked) {
                Some(close) => format!("unknown key `{key_str}`, did you mean `{close}`?"),
                None if self.asked.is_empty() => format!("unknown key `{key_str}`"),
                None => format!(
                    "unknown key `{key_str}`: accepted keys are {}",
                    self.asked.join(", ")
                ),
            };
            cx.error(&key.span(), &self.key_path(key_str), message);
        }
    }
}

/// The accepted key closest to `key`, if within edit distance 2.
pub fn suggest<'k>(key: &str, accepted: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    accepted
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------
// Decoders: `fn(&mut Ctx, &Field) -> Result<T, Reported>`.

/// What a duration looks like, for "expected ..." messages.
pub const DURATION_EXPECTED: &str = "a string like \"30s\"";

/// Any string.
pub fn string(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<String, Reported> {
    match f.value.get_ref() {
        DeValue::String(s) => Ok(s.to_string()),
        _ => Err(f.type_error(cx, "a string")),
    }
}

/// `true` or `false`.
pub fn boolean(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<bool, Reported> {
    match f.value.get_ref() {
        DeValue::Boolean(b) => Ok(*b),
        _ => Err(f.type_error(cx, "true or false")),
    }
}

/// An integer that fits in `i64`; `expected` describes the key's values.
pub fn integer(cx: &mut Ctx<'_>, f: &Field<'_, '_>, expected: &str) -> Result<i64, Reported> {
    match f.value.get_ref() {
        DeValue::Integer(n) => i64::from_str_radix(n.as_str(), n.radix())
            .map_err(|_| f.error(cx, format!("{n} is too large: expected {expected}"))),
        _ => Err(f.type_error(cx, expected)),
    }
}

/// A duration string: one or more `<digits><unit>` groups with the units
/// `ms`, `s`, `m` and `h` (`"500ms"`, `"30s"`, `"1h30m"`).
pub fn duration(cx: &mut Ctx<'_>, f: &Field<'_, '_>) -> Result<Duration, Reported> {
    let DeValue::String(s) = f.value.get_ref() else {
        return Err(f.type_error(cx, DURATION_EXPECTED));
    };
    parse_duration(s).map_err(|why| {
        f.error(
            cx,
            format!(
                "{s:?} is not a duration{why}: use a whole number and a unit (ms, s, m, h or d), \
                 like \"500ms\", \"30s\" or \"1h30m\""
            ),
        )
    })
}

/// Parses the duration syntax of [`duration`]; the error is an optional
/// detail to insert after "is not a duration".
pub fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err("");
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("");
        }
        let (number, tail) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| " (too large)")?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let ms_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(""),
        };
        total_ms = number
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or(" (too large)")?;
        rest = tail.trim_start();
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_characters() {
        let text = "a = 1\nüü = 2\r\nx";
        let cx = Ctx::new(text, Path::new("t.toml"));
        assert_eq!(cx.position(0), (1, 1));
        assert_eq!(cx.position(6), (2, 1));
        // "üü " is 5 bytes, 3 characters.
        assert_eq!(cx.position(6 + 5), (2, 4));
        // Inside a multi-byte character and past the end: clamped.
        assert_eq!(cx.position(7), (2, 1));
        assert_eq!(cx.position(1000), (3, 2));
        assert_eq!(Ctx::new("", Path::new("e")).position(0), (1, 1));
        assert_eq!(Ctx::new("\u{feff}ab", Path::new("b")).position(4), (1, 2));
    }

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("0s", 0),
            ("2d", 172_800_000),
            ("1d12h", 129_600_000),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
        }
        for s in ["", "30", "s", "1.5s", "30sec", "-1s", "1w", "30 s"] {
            assert_eq!(parse_duration(s), Err(""), "{s}");
        }
        for s in ["99999999999999999999s", "9999999999999999h"] {
            assert_eq!(parse_duration(s), Err(" (too large)"), "{s}");
        }
    }

    #[test]
    fn suggestions_within_two_edits() {
        let keys = ["interval", "timeout", "name", "port"];
        assert_eq!(suggest("intervall", &keys), Some("interval"));
        assert_eq!(suggest("Timeout", &keys), Some("timeout"));
        assert_eq!(suggest("tmeot", &keys), Some("timeout"));
        assert_eq!(suggest("tmt", &keys), None);
        assert_eq!(suggest("prot", &keys), Some("port"));
        assert_eq!(suggest("zzzzzz", &keys), None);
    }

    #[test]
    fn key_paths_quote_non_bare_keys() {
        assert_eq!(join("", "version"), "version");
        assert_eq!(join("check[0].headers", "X-Foo"), "check[0].headers.X-Foo");
        assert_eq!(join("check[0].headers", "a b"), "check[0].headers.\"a b\"");
        assert_eq!(join("x", ""), "x.\"\"");
    }
}
