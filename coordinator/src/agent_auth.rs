//! Which agents may open a session (issue 6, "agents authenticate").
//!
//! Each `[[agent]]` entry of the config names one agent, optionally pins its
//! region, and holds the SHA-256 of one or two tokens (two during a
//! rotation: the old and the new are both valid until the old is removed).
//! The agent sends `authorization: Bearer TOKEN` as gRPC metadata on its
//! `Session` call. The token decides the identity; the `Hello` that follows
//! must say the same name (and the pinned region), and everything later in
//! the session is bound to that identity by the session itself.
//!
//! Tokens are kept only as digests and compared in constant time against
//! every configured digest, so neither the time taken nor the error says
//! which entry was close. With no `[[agent]]` entries any agent may connect
//! (open enrollment); the config accepts that only when `grpc_listen` is a
//! loopback address.

use tonic::metadata::MetadataMap;

use crate::api::auth::{ct_eq, digest};

/// Tokens one agent may hold at once: the current one and, during a
/// rotation, the next.
pub const MAX_TOKENS_PER_AGENT: usize = 2;

/// One `[[agent]]` entry: who, where, and the digests of its tokens (never
/// the tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct AgentEntry {
    /// The name the agent must give in `Hello`.
    pub name: String,
    /// The only region the agent may claim; `None`: any.
    pub region: Option<String>,
    /// SHA-256 of each valid token (one or two).
    pub sha256: Vec<[u8; 32]>,
}

impl std::fmt::Debug for AgentEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentEntry")
            .field("name", &self.name)
            .field("region", &self.region)
            .field("tokens", &self.sha256.len())
            .finish()
    }
}

/// Why a session was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    /// No token, a malformed header, or a token no entry has.
    #[error("a valid agent token is required: authorization: Bearer TOKEN (vantage-agent --token-file or VANTAGE_AGENT_TOKEN)")]
    Unauthenticated,
    /// The token is valid, but for another name or region than `Hello` says.
    #[error("{0}")]
    Forbidden(String),
}

/// SHA-256 of the bearer token in `metadata`'s `authorization`, if any.
pub fn presented_digest(metadata: &MetadataMap) -> Option<[u8; 32]> {
    metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(digest)
}

/// The configured agents.
#[derive(Debug, Clone)]
pub struct AgentAuth {
    entries: Vec<AgentEntry>,
}

impl AgentAuth {
    /// Checks sessions against `entries`; none means open enrollment.
    pub fn new(entries: Vec<AgentEntry>) -> Self {
        AgentAuth { entries }
    }

    /// Whether any agent may connect without a token.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry whose token is in `metadata`'s `authorization`, or `None`
    /// under open enrollment.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> Result<Option<&AgentEntry>, AgentAuthError> {
        if self.is_open() {
            return Ok(None);
        }
        let d = presented_digest(metadata).ok_or(AgentAuthError::Unauthenticated)?;
        // Every digest is compared, whichever matches.
        let mut found = None;
        for entry in &self.entries {
            for known in &entry.sha256 {
                if ct_eq(known, &d) {
                    found = Some(entry);
                }
            }
        }
        found.map(Some).ok_or(AgentAuthError::Unauthenticated)
    }

    /// Whether a session that authenticated with the token digest
    /// `presented` as `agent` in `region` would still be admitted: after a
    /// config reload, sessions that would not are closed.
    pub fn admits(&self, agent: &str, region: &str, presented: Option<&[u8; 32]>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(d) = presented else {
            return false;
        };
        self.entries.iter().any(|e| {
            e.sha256.iter().any(|known| ct_eq(known, d))
                && Self::authorize(Some(e), agent, region).is_ok()
        })
    }

    /// Whether `hello`'s name and region fit `entry` (the token's owner).
    pub fn authorize(
        entry: Option<&AgentEntry>,
        agent: &str,
        region: &str,
    ) -> Result<(), AgentAuthError> {
        let Some(entry) = entry else {
            return Ok(());
        };
        if entry.name != agent {
            return Err(AgentAuthError::Forbidden(format!(
                "this token belongs to agent {:?}, not {:?}: an agent may only speak for itself",
                entry.name,
                agent.chars().take(70).collect::<String>()
            )));
        }
        if let Some(pinned) = &entry.region {
            if pinned != region {
                return Err(AgentAuthError::Forbidden(format!(
                    "agent {:?} is pinned to region {pinned:?} and may not report for {:?}",
                    entry.name,
                    region.chars().take(70).collect::<String>()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, region: Option<&str>, tokens: &[&str]) -> AgentEntry {
        AgentEntry {
            name: name.into(),
            region: region.map(Into::into),
            sha256: tokens.iter().map(digest).collect(),
        }
    }

    fn bearer(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().unwrap());
        m
    }

    #[test]
    fn tokens_pick_their_entry_and_both_rotation_tokens_work() {
        let auth = AgentAuth::new(vec![
            entry("eu-1", Some("eu"), &["old-eu", "new-eu"]),
            entry("us-1", None, &["us"]),
        ]);
        for (token, name) in [("old-eu", "eu-1"), ("new-eu", "eu-1"), ("us", "us-1")] {
            let got = auth
                .authenticate(&bearer(&format!("Bearer {token}")))
                .unwrap();
            assert_eq!(got.unwrap().name, name);
        }
        for bad in ["Bearer nope", "Bearer ", "old-eu", "Basic b2xkLWV1"] {
            assert_eq!(
                auth.authenticate(&bearer(bad)).unwrap_err(),
                AgentAuthError::Unauthenticated,
                "{bad}"
            );
        }
        assert_eq!(
            auth.authenticate(&MetadataMap::new()).unwrap_err(),
            AgentAuthError::Unauthenticated
        );
    }

    #[test]
    fn open_enrollment_needs_no_token() {
        let auth = AgentAuth::new(Vec::new());
        assert!(auth.authenticate(&MetadataMap::new()).unwrap().is_none());
        assert!(AgentAuth::authorize(None, "anyone", "anywhere").is_ok());
    }

    #[test]
    fn hello_must_match_the_tokens_name_and_pinned_region() {
        let e = entry("eu-1", Some("eu"), &["t"]);
        assert!(AgentAuth::authorize(Some(&e), "eu-1", "eu").is_ok());
        let other = AgentAuth::authorize(Some(&e), "us-1", "eu").unwrap_err();
        assert!(matches!(other, AgentAuthError::Forbidden(m) if m.contains("not \"us-1\"")));
        let moved = AgentAuth::authorize(Some(&e), "eu-1", "us").unwrap_err();
        assert!(matches!(moved, AgentAuthError::Forbidden(m) if m.contains("pinned")));
        let free = entry("x", None, &["t"]);
        assert!(AgentAuth::authorize(Some(&free), "x", "anywhere").is_ok());
    }

    #[test]
    fn debug_shows_no_digest() {
        let shown = format!("{:?}", entry("eu-1", None, &["secret-token"]));
        assert!(
            shown.contains("eu-1") && !shown.contains("sha256"),
            "{shown}"
        );
    }
}
