//! What this build is, and which peer versions it works with.
//!
//! Both binaries print [`long_version`] for `--version` and log it at start;
//! the agent sends [`VERSION`] in `Hello`, the coordinator in `Welcome`, and
//! each side checks the other with [`compatibility`].
//!
//! # Compatibility rule (contract)
//!
//! Versions are semver. Two versions are compatible when their major
//! versions match and, while the major version is 0, their minor versions
//! match too: `0.1.0` works with `0.1.7`, not with `0.2.0`; `1.2.0` works
//! with `1.9.3`, not with `2.0.0`. Upgrade the coordinator first, then the
//! agents, one compatible step at a time. An incompatible peer is still
//! served (the wire is protobuf, so unknown fields are skipped), but both
//! sides warn, and the coordinator marks the agent in its API, `status` and
//! `/metrics`.

use std::fmt;

/// This build's version (the workspace's semver).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit it was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("VANTAGE_BUILD_COMMIT");
/// The commit's date (`YYYY-MM-DD`), or `unknown`.
pub const COMMIT_DATE: &str = env!("VANTAGE_BUILD_DATE");
/// The compiler's version.
pub const RUSTC: &str = env!("VANTAGE_BUILD_RUSTC");
/// The target triple.
pub const TARGET: &str = env!("VANTAGE_BUILD_TARGET");
/// The cargo profile (`debug` or `release`).
pub const PROFILE: &str = env!("VANTAGE_BUILD_PROFILE");

/// One line for `--version` and the startup log:
/// `0.1.0 (commit 0123456789ab 2026-12-02, rustc 1.95.0, x86_64-unknown-linux-gnu, release)`.
pub fn long_version() -> String {
    format!("{VERSION} (commit {COMMIT} {COMMIT_DATE}, rustc {RUSTC}, {TARGET}, {PROFILE})")
}

/// Why a peer's version is not compatible with this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incompatible {
    /// The peer's version is not `MAJOR.MINOR.PATCH[-pre][+build]`.
    Unparsable(String),
    /// The series differ: the peer's version and ours.
    Series {
        /// What the peer reported.
        peer: String,
        /// This build's version.
        ours: &'static str,
    },
}

impl fmt::Display for Incompatible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Incompatible::Unparsable(v) => {
                write!(f, "version {v:?} is not a semver version")
            }
            Incompatible::Series { peer, ours } => write!(
                f,
                "version {peer} is not compatible with {ours} (compatible: {})",
                series(ours).unwrap_or_default()
            ),
        }
    }
}

/// `MAJOR.MINOR.PATCH` of a semver string; pre-release and build suffixes
/// are ignored.
fn parse(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let mut next = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 10 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let v = (next()?, next()?, next()?);
    parts.next().is_none().then_some(v)
}

/// The series a version belongs to: `0.1.x` or `1.x`.
fn series(version: &str) -> Option<String> {
    let (major, minor, _) = parse(version)?;
    Some(if major == 0 {
        format!("0.{minor}.x")
    } else {
        format!("{major}.x")
    })
}

/// The versions this build works with: `0.1.x` or `1.x`.
pub fn compatible_series() -> String {
    series(VERSION).unwrap_or_else(|| VERSION.to_owned())
}

/// Whether a peer running `peer` works with this build (the rule above).
pub fn compatibility(peer: &str) -> Result<(), Incompatible> {
    compatible_with(peer, VERSION)
}

fn compatible_with(peer: &str, ours: &'static str) -> Result<(), Incompatible> {
    let shown: String = peer.chars().take(64).collect();
    let (Some(p), Some(o)) = (parse(peer), parse(ours)) else {
        return Err(Incompatible::Unparsable(shown));
    };
    let same_series = p.0 == o.0 && (o.0 != 0 || p.1 == o.1);
    if same_series {
        Ok(())
    } else {
        Err(Incompatible::Series { peer: shown, ours })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_series_is_compatible_and_others_are_not() {
        assert_eq!(compatible_with("0.1.7", "0.1.0"), Ok(()));
        assert_eq!(compatible_with("0.1.0-rc.1+abc", "0.1.3"), Ok(()));
        assert_eq!(compatible_with("1.9.3", "1.2.0"), Ok(()));
        assert!(matches!(
            compatible_with("0.2.0", "0.1.0"),
            Err(Incompatible::Series { .. })
        ));
        assert!(matches!(
            compatible_with("2.0.0", "1.2.0"),
            Err(Incompatible::Series { .. })
        ));
        assert!(matches!(
            compatible_with("1.0.0", "0.1.0"),
            Err(Incompatible::Series { .. })
        ));
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "1.x.0",
            "1..3",
            "99999999999.0.0",
        ] {
            assert_eq!(
                compatible_with(bad, "0.1.0"),
                Err(Incompatible::Unparsable(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_message_names_both_versions_and_the_series() {
        let e = compatible_with("0.2.4", "0.1.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "version 0.2.4 is not compatible with 0.1.0 (compatible: 0.1.x)"
        );
    }

    #[test]
    fn build_facts_are_filled_in() {
        assert_eq!(parse(VERSION).map(|_| ()), Some(()));
        assert!(!COMMIT.is_empty() && !RUSTC.is_empty() && !PROFILE.is_empty());
        assert!(long_version().starts_with(VERSION));
        assert!(long_version().contains(COMMIT));
    }
}
