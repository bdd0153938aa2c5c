//! Secrets (webhook URLs, SMTP passwords, tokens): read from an environment
//! variable or a file, never from the config text, and never shown.
//!
//! [`Secret`] has a redacted `Debug` and `Display`, no `Serialize`, and hands
//! out its value only through [`Secret::expose`], so a secret can reach a log
//! line or an API response only by a call that is easy to find in review.

use std::fmt;
use std::path::PathBuf;

/// A secret value. Redacted in `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a secret source.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where a secret comes from: `{ env = "NAME" }` or `{ file = "path" }` in
/// the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable of the coordinator process.
    Env(String),
    /// A file (relative to the config file's directory); one trailing newline
    /// is removed.
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret. The error names the source, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(std::env::VarError::NotPresent) => {
                    Err(format!("environment variable {name} is not set"))
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    Err(format!("environment variable {name} is not valid UTF-8"))
                }
            },
            SecretSource::File(path) => {
                use std::io::Read as _;
                let cannot =
                    |e: std::io::Error| format!("cannot read secret file {}: {e}", path.display());
                // Bounded: a path such as /dev/zero must fail, not hang.
                let mut text = String::new();
                std::fs::File::open(path)
                    .map_err(cannot)?
                    .take(MAX_SECRET_BYTES + 1)
                    .read_to_string(&mut text)
                    .map_err(cannot)?;
                if text.len() as u64 > MAX_SECRET_BYTES {
                    return Err(format!(
                        "secret file {} is larger than {MAX_SECRET_BYTES} bytes",
                        path.display()
                    ));
                }
                let value = text
                    .strip_suffix('\n')
                    .map(|t| t.strip_suffix('\r').unwrap_or(t))
                    .unwrap_or(&text);
                if value.is_empty() {
                    return Err(format!("secret file {} is empty", path.display()));
                }
                Ok(Secret(value.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-canary");
        assert_eq!(format!("{s}"), "[redacted]");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-canary");
    }

    #[test]
    fn file_source_strips_one_newline_and_errors_name_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\r\n").unwrap();
        assert_eq!(
            SecretSource::File(p.clone()).read().unwrap().expose(),
            "abc"
        );
        std::fs::write(&p, "\n").unwrap();
        let e = SecretSource::File(p.clone()).read().unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        let e = SecretSource::File("/dev/zero".into()).read().unwrap_err();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
        let e = SecretSource::Env("VANTAGE_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert_eq!(
            e,
            "environment variable VANTAGE_TEST_SURELY_UNSET_VAR is not set"
        );
    }
}
