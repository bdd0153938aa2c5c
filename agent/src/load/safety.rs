//! Where load may go (shared/RELIABILITY.md, API6: Vantage must not be a DDoS
//! tool). Loopback is allowed; any other host must be named with
//! `--allow-host` or `VANTAGE_LOAD_ALLOWED_HOSTS`. The check runs while the
//! load file is read, so a disallowed URL fails before any request.

use std::net::IpAddr;

use url::Host;

/// Environment variable with extra allowed hosts, comma-separated.
pub const ALLOWED_HOSTS_ENV: &str = "VANTAGE_LOAD_ALLOWED_HOSTS";

/// Hosts load may be sent to besides loopback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    /// Lower-case host names or IP literals, exactly as in URLs (no port).
    extra: Vec<String>,
}

impl AllowedHosts {
    /// Loopback plus `hosts` (names are compared case-insensitively; IPv6
    /// literals may be written with or without brackets).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(hosts: I) -> Self {
        let extra = hosts
            .into_iter()
            .map(|h| {
                h.as_ref()
                    .trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .filter(|h| !h.is_empty())
            .collect();
        AllowedHosts { extra }
    }

    /// `flags` plus the comma-separated hosts of `env` (the value of
    /// [`ALLOWED_HOSTS_ENV`], if set).
    pub fn from_flags_and_env(flags: &[String], env: Option<&str>) -> Self {
        let from_env = env.into_iter().flat_map(|v| v.split(','));
        AllowedHosts::new(flags.iter().map(String::as_str).chain(from_env))
    }

    /// `Ok` when load may go to `host`; otherwise the message to show.
    pub fn check(&self, host: &Host<&str>) -> Result<(), String> {
        let (text, loopback) = match host {
            Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                let lo = d == "localhost";
                (d, lo)
            }
            Host::Ipv4(ip) => (ip.to_string(), IpAddr::V4(*ip).is_loopback()),
            Host::Ipv6(ip) => (ip.to_string(), IpAddr::V6(*ip).is_loopback()),
        };
        if loopback || self.extra.contains(&text) {
            return Ok(());
        }
        Err(format!(
            "host {text:?} is not allowed for load: only loopback is by default; \
             add `--allow-host {text}` (or {ALLOWED_HOSTS_ENV}) if you own it"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: &AllowedHosts, url: &str) -> Result<(), String> {
        let url = url::Url::parse(url).unwrap();
        allowed.check(&url.host().unwrap())
    }

    #[test]
    fn loopback_by_default_others_by_name() {
        let none = AllowedHosts::default();
        for ok in [
            "http://127.0.0.1/",
            "http://127.9.9.9:80/",
            "http://[::1]/",
            "http://LocalHost./",
        ] {
            assert_eq!(check(&none, ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://[::2]/",
            "http://localhost.evil/",
        ] {
            assert!(
                check(&none, bad)
                    .unwrap_err()
                    .contains("is not allowed for load"),
                "{bad}"
            );
        }
        let some =
            AllowedHosts::from_flags_and_env(&["Example.com".into()], Some("10.0.0.1, [fd00::1]"));
        for ok in [
            "http://example.com/",
            "http://10.0.0.1/",
            "http://[fd00::1]/",
        ] {
            assert_eq!(check(&some, ok), Ok(()), "{ok}");
        }
        assert!(check(&some, "http://www.example.com/").is_err());
    }
}
