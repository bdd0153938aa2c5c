//! Certificate facts: what the server presented, read with x509-parser, and
//! what the real WebPKI verifier says about it.

use rustls::client::danger::ServerCertVerifier;
use rustls::client::{verify_server_name, WebPkiServerVerifier};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use vantage_proto::v1::{ChainStatus, ErrorClass, TlsFacts};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::probe::ProbeError;

const SECONDS_PER_DAY: i64 = 86_400;

/// Everything known about a presented chain (leaf first).
///
/// `name` is the name the certificate must be valid for (SNI host or IP);
/// `now` is the verification time.
pub(crate) fn inspect(
    webpki: &WebPkiServerVerifier,
    chain: &[CertificateDer<'_>],
    name: &ServerName<'_>,
    now: UnixTime,
    protocol: Option<ProtocolVersion>,
) -> TlsFacts {
    let mut facts = TlsFacts {
        protocol_version: protocol.map(protocol_name).unwrap_or_default(),
        ..TlsFacts::default()
    };
    let Some((leaf, intermediates)) = chain.split_first() else {
        facts.chain_status = ChainStatus::Invalid.into();
        facts.verify_error = "the server presented no certificate".into();
        return facts;
    };
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    let now_unix = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let leaf_x509 = X509Certificate::from_der(leaf).ok().map(|(_, c)| c);
    if let Some(cert) = &leaf_x509 {
        facts.subject = cert.subject().to_string();
        facts.issuer = cert.issuer().to_string();
        facts.sans = sans(cert);
        facts.not_after_unix = cert.validity().not_after.timestamp();
        facts.days_left = days_left(facts.not_after_unix, now_unix);
    }
    facts.chain_earliest_not_after_unix = parsed
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()
        .unwrap_or_default();
    facts.san_match = ParsedCertificate::try_from(leaf)
        .and_then(|cert| verify_server_name(&cert, name))
        .is_ok();

    let verdict = webpki.verify_server_cert(leaf, intermediates, name, &[], now);
    let self_signed = leaf_x509
        .as_ref()
        .is_some_and(|c| c.subject().as_raw() == c.issuer().as_raw());
    let (status, mut text) = match verdict {
        Ok(_) => (ChainStatus::Valid, String::new()),
        Err(err) => describe(&err, self_signed, &facts),
    };
    // The name is reported whatever else failed (WebPKI checks it last).
    if !facts.san_match || status == ChainStatus::NameMismatch {
        let sep = if text.is_empty() { "" } else { "; " };
        text = format!("{text}{sep}{}", name_mismatch(name, &facts.sans));
    }
    facts.chain_status = status.into();
    facts.verify_error = text;
    facts
}

/// Whole days from `now` to `not_after`, rounded down (floor division): a
/// certificate that expired 10 days and 1 hour ago has `-11` days left, one
/// that expires in 10 days and 1 hour has `10`, and `0` means "expires within
/// the next 24 hours" (never negative before expiry).
pub(crate) fn days_left(not_after: i64, now: i64) -> i64 {
    not_after.saturating_sub(now).div_euclid(SECONDS_PER_DAY)
}

/// The TLS failure for facts that do not pass: the chain must be valid and
/// the leaf must match the name. Facts of a passing chain give `Ok`.
pub(crate) fn verdict(facts: &TlsFacts) -> Result<(), ProbeError> {
    if facts.chain_status() == ChainStatus::Valid && facts.san_match {
        return Ok(());
    }
    Err(ProbeError::new(
        ErrorClass::Tls,
        format!("certificate not accepted: {}", facts.verify_error),
    ))
}

/// The status and human text of a WebPKI error.
fn describe(err: &rustls::Error, self_signed: bool, facts: &TlsFacts) -> (ChainStatus, String) {
    let rustls::Error::InvalidCertificate(cert_err) = err else {
        return (ChainStatus::Invalid, err.to_string());
    };
    match cert_err {
        CertificateError::Expired => (
            ChainStatus::Expired,
            format!("certificate expired on {}", rfc3339(facts.not_after_unix)),
        ),
        CertificateError::ExpiredContext { not_after, .. } => (
            ChainStatus::Expired,
            format!("certificate expired on {}", rfc3339(unix(*not_after))),
        ),
        CertificateError::NotValidYet => (
            ChainStatus::NotYetValid,
            "certificate is not valid yet".into(),
        ),
        CertificateError::NotValidYetContext { not_before, .. } => (
            ChainStatus::NotYetValid,
            format!(
                "certificate is not valid before {}",
                rfc3339(unix(*not_before))
            ),
        ),
        CertificateError::UnknownIssuer if self_signed => (
            ChainStatus::SelfSigned,
            "self-signed certificate is not trusted".into(),
        ),
        CertificateError::UnknownIssuer => (
            ChainStatus::UnknownIssuer,
            format!(
                "certificate issuer is not trusted (unknown issuer {:?})",
                facts.issuer
            ),
        ),
        // The text is added by the caller, for every status.
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            (ChainStatus::NameMismatch, String::new())
        }
        CertificateError::Revoked => (ChainStatus::Revoked, "certificate is revoked".into()),
        other => (
            ChainStatus::Invalid,
            format!("invalid certificate: {other}"),
        ),
    }
}

fn name_mismatch(name: &ServerName<'_>, sans: &[String]) -> String {
    if sans.is_empty() {
        format!(
            "certificate is not valid for {} (it has no subject alternative names)",
            name.to_str()
        )
    } else {
        format!(
            "certificate is not valid for {} (valid for {})",
            name.to_str(),
            sans.join(", ")
        )
    }
}

/// DNS names and IP addresses of the subject alternative name extension.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(v4.into());
    }
    <[u8; 16]>::try_from(bytes).ok().map(Into::into)
}

fn unix(t: UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

/// "TLSv1.2" / "TLSv1.3" (the contract strings of `TlsFacts.protocol_version`).
fn protocol_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        other => format!("{other:?}"),
    }
}

/// Unix seconds as RFC 3339 UTC (`2025-01-31T12:00:00Z`); the raw number when
/// it is outside the representable range.
pub(crate) fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_left_rounds_down() {
        let day = SECONDS_PER_DAY;
        let hour = 3600;
        assert_eq!(days_left(1_000_000, 1_000_000 + 10 * day + hour), -11);
        assert_eq!(days_left(1_000_000, 1_000_000 + 10 * day), -10);
        assert_eq!(days_left(1_000_000, 1_000_001), -1);
        assert_eq!(days_left(1_000_000, 1_000_000), 0);
        assert_eq!(days_left(1_000_000 + day - 1, 1_000_000), 0);
        assert_eq!(days_left(1_000_000 + 10 * day + hour, 1_000_000), 10);
        assert_eq!(days_left(i64::MIN, i64::MAX), i64::MIN.div_euclid(day));
    }

    #[test]
    fn rfc3339_is_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(i64::MAX), format!("@{}", i64::MAX));
    }

    #[test]
    fn protocol_names_are_the_contract_strings() {
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_2), "TLSv1.2");
        assert_eq!(protocol_name(ProtocolVersion::TLSv1_3), "TLSv1.3");
    }

    #[test]
    fn an_empty_chain_is_invalid() {
        let (_, webpki) = super::super::config::client_config(None, &[]).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let facts = inspect(&webpki, &[], &name, UnixTime::now(), None);
        assert_eq!(facts.chain_status(), ChainStatus::Invalid);
        assert!(verdict(&facts).is_err());
    }
}
