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
//! With `server.tls.client_ca_file`, an agent may instead present a client
//! certificate issued by that CA (mTLS). The handshake proves the
//! certificate; the identity is bound here: the `Hello` name must be one of
//! the certificate's DNS subject alternative names and have an `[[agent]]`
//! entry (which then needs no token). A token, when sent, takes precedence.
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

/// What a session presented to prove who it is.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Nothing: accepted under open enrollment only.
    None,
    /// A bearer token, as its SHA-256.
    Token([u8; 32]),
    /// A client certificate that verified against `server.tls.client_ca_file`:
    /// its DNS subject alternative names.
    Certificate(Vec<String>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Token(_) => f.write_str("Token([digest])"),
            Credential::Certificate(names) => f.debug_tuple("Certificate").field(names).finish(),
        }
    }
}

/// Why a session was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    /// No token or client certificate, a malformed header, or a token or
    /// certificate no entry has.
    #[error("a valid agent token is required: authorization: Bearer TOKEN (vantage-agent --token-file or VANTAGE_AGENT_TOKEN), or a client certificate naming the agent when the coordinator has server.tls.client_ca_file (vantage-agent --cert-file/--key-file)")]
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

    /// What the session proves before its `Hello`: the token in
    /// `metadata`'s `authorization` if there is one, else the verified
    /// client certificate's names (`cert_names`). Refused when that names no
    /// entry; under open enrollment anything goes.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        cert_names: Option<&[String]>,
    ) -> Result<Credential, AgentAuthError> {
        if self.is_open() {
            return Ok(Credential::None);
        }
        if let Some(d) = presented_digest(metadata) {
            return match self.entry_of_token(&d) {
                Some(_) => Ok(Credential::Token(d)),
                None => Err(AgentAuthError::Unauthenticated),
            };
        }
        match cert_names {
            Some(names) if self.entries.iter().any(|e| names.contains(&e.name)) => {
                Ok(Credential::Certificate(names.to_vec()))
            }
            _ => Err(AgentAuthError::Unauthenticated),
        }
    }

    /// The entry holding the token digest `d`. Every digest is compared,
    /// whichever matches.
    fn entry_of_token(&self, d: &[u8; 32]) -> Option<&AgentEntry> {
        let mut found = None;
        for entry in &self.entries {
            for known in &entry.sha256 {
                if ct_eq(known, d) {
                    found = Some(entry);
                }
            }
        }
        found
    }

    /// Whether a session that proved `credential` would still be admitted
    /// as `agent` in `region`: after a config reload, sessions that would
    /// not are closed.
    pub fn admits(&self, agent: &str, region: &str, credential: &Credential) -> bool {
        self.authorize(credential, agent, region).is_ok()
    }

    /// The entry `credential` admits as `hello`'s name and region (`None`
    /// under open enrollment), or why not.
    pub fn authorize(
        &self,
        credential: &Credential,
        agent: &str,
        region: &str,
    ) -> Result<Option<&AgentEntry>, AgentAuthError> {
        if self.is_open() {
            return Ok(None);
        }
        let shown = || agent.chars().take(70).collect::<String>();
        let entry = match credential {
            Credential::None => return Err(AgentAuthError::Unauthenticated),
            Credential::Token(d) => {
                let entry = self
                    .entry_of_token(d)
                    .ok_or(AgentAuthError::Unauthenticated)?;
                if entry.name != agent {
                    return Err(AgentAuthError::Forbidden(format!(
                        "this token belongs to agent {:?}, not {:?}: an agent may only speak for itself",
                        entry.name,
                        shown()
                    )));
                }
                entry
            }
            Credential::Certificate(names) => {
                if !names.iter().any(|n| n == agent) {
                    return Err(AgentAuthError::Forbidden(format!(
                        "this client certificate names {names:?}, not {:?}: an agent may only speak for itself",
                        shown()
                    )));
                }
                self.entries
                    .iter()
                    .find(|e| e.name == agent)
                    .ok_or(AgentAuthError::Unauthenticated)?
            }
        };
        if let Some(pinned) = &entry.region {
            if pinned != region {
                return Err(AgentAuthError::Forbidden(format!(
                    "agent {:?} is pinned to region {pinned:?} and may not report for {:?}",
                    entry.name,
                    region.chars().take(70).collect::<String>()
                )));
            }
        }
        Ok(Some(entry))
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
            let cred = auth
                .authenticate(&bearer(&format!("Bearer {token}")), None)
                .unwrap();
            assert_eq!(cred, Credential::Token(digest(token)));
            let region = if name == "eu-1" { "eu" } else { "us" };
            let got = auth.authorize(&cred, name, region).unwrap();
            assert_eq!(got.unwrap().name, name);
        }
        for bad in ["Bearer nope", "Bearer ", "old-eu", "Basic b2xkLWV1"] {
            assert_eq!(
                auth.authenticate(&bearer(bad), None).unwrap_err(),
                AgentAuthError::Unauthenticated,
                "{bad}"
            );
        }
        assert_eq!(
            auth.authenticate(&MetadataMap::new(), None).unwrap_err(),
            AgentAuthError::Unauthenticated
        );
        // A wrong token is refused even with a good certificate: the token,
        // when sent, decides.
        let names = ["eu-1".to_owned()];
        assert_eq!(
            auth.authenticate(&bearer("Bearer nope"), Some(&names))
                .unwrap_err(),
            AgentAuthError::Unauthenticated
        );
    }

    #[test]
    fn open_enrollment_needs_no_token() {
        let auth = AgentAuth::new(Vec::new());
        let cred = auth.authenticate(&MetadataMap::new(), None).unwrap();
        assert_eq!(cred, Credential::None);
        assert!(auth
            .authorize(&cred, "anyone", "anywhere")
            .unwrap()
            .is_none());
    }

    #[test]
    fn hello_must_match_the_tokens_name_and_pinned_region() {
        let auth = AgentAuth::new(vec![
            entry("eu-1", Some("eu"), &["t"]),
            entry("x", None, &["u"]),
        ]);
        let t = Credential::Token(digest("t"));
        assert!(auth.authorize(&t, "eu-1", "eu").is_ok());
        let other = auth.authorize(&t, "us-1", "eu").unwrap_err();
        assert!(matches!(other, AgentAuthError::Forbidden(m) if m.contains("not \"us-1\"")));
        let moved = auth.authorize(&t, "eu-1", "us").unwrap_err();
        assert!(matches!(moved, AgentAuthError::Forbidden(m) if m.contains("pinned")));
        assert!(auth
            .authorize(&Credential::Token(digest("u")), "x", "anywhere")
            .is_ok());
        // A token no entry holds any more (a reload removed it).
        assert!(!auth.admits("eu-1", "eu", &Credential::Token(digest("gone"))));
        assert!(!auth.admits("eu-1", "eu", &Credential::None));
    }

    #[test]
    fn a_client_certificate_admits_only_the_agents_it_names() {
        // eu-2 has no token: certificate only.
        let auth = AgentAuth::new(vec![
            entry("eu-1", Some("eu"), &["t"]),
            AgentEntry {
                name: "eu-2".into(),
                region: Some("eu".into()),
                sha256: Vec::new(),
            },
        ]);
        let names = vec!["eu-2".to_owned(), "eu-2.agents.example".to_owned()];
        let cred = auth
            .authenticate(&MetadataMap::new(), Some(&names))
            .unwrap();
        assert_eq!(cred, Credential::Certificate(names.clone()));
        assert_eq!(
            auth.authorize(&cred, "eu-2", "eu").unwrap().unwrap().name,
            "eu-2"
        );
        // Another agent's name, even one with an entry: refused.
        let other = auth.authorize(&cred, "eu-1", "eu").unwrap_err();
        assert!(
            matches!(&other, AgentAuthError::Forbidden(m) if m.contains("client certificate names")),
            "{other:?}"
        );
        let moved = auth.authorize(&cred, "eu-2", "us").unwrap_err();
        assert!(matches!(moved, AgentAuthError::Forbidden(m) if m.contains("pinned")));
        // A certificate naming no configured agent, or none at all.
        let stranger = ["db-7".to_owned()];
        assert_eq!(
            auth.authenticate(&MetadataMap::new(), Some(&stranger))
                .unwrap_err(),
            AgentAuthError::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(&MetadataMap::new(), Some(&[]))
                .unwrap_err(),
            AgentAuthError::Unauthenticated
        );
        // Its entry removed by a reload: no longer admitted.
        let after = AgentAuth::new(vec![entry("eu-1", Some("eu"), &["t"])]);
        assert!(!after.admits("eu-2", "eu", &cred));
        assert!(format!("{:?}", Credential::Token(digest("t"))).contains("[digest]"));
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
