//! The `tls` probe: connect, complete a TLS handshake whatever the certificate,
//! and report its facts (expiry, issuer, SANs, chain verdict, protocol).
//!
//! The handshake completes even for an expired, self-signed or wrong-host
//! certificate, so the facts are reported instead of only a failure
//! (shared/RELIABILITY.md §4). The probe then fails with class `tls` unless the
//! chain is valid and the name matches; the facts stay in the outcome.
//!
//! `TlsClient` is shared with the `http` probe for `https://` URLs.

mod config;

pub(crate) use config::root_store;
mod facts;

use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use vantage_proto::spec::{ProbeKind, TlsSpec};
use vantage_proto::v1::{ErrorClass, TlsFacts};

use super::tcp::{ip_literal, resolve_and_connect};
use super::{
    describe_error, run_attempt, Attempt, BoxFuture, BuildError, Deadline, Phases, Probe,
    ProbeError, ProbeOutcome,
};
use crate::egress::EgressPolicy;

pub(crate) use facts::{rfc3339, verdict};

/// Runs a [`TlsSpec`]: a handshake whose certificate must be valid for the name.
#[derive(Debug)]
pub struct TlsProbe {
    spec: TlsSpec,
    timeout: Duration,
    name: ServerName<'static>,
    client: TlsClient,
    egress: Arc<EgressPolicy>,
}

impl TlsProbe {
    /// A probe of `spec` whose attempts end after `timeout`, connecting only
    /// where `egress` allows.
    ///
    /// Fails when `ca_file` cannot be read or holds no certificate, or when
    /// the server name is neither a DNS name nor an IP address.
    pub fn new(
        spec: TlsSpec,
        timeout: Duration,
        egress: Arc<EgressPolicy>,
    ) -> Result<Self, BuildError> {
        let name = server_name(spec.server_name())
            .map_err(|e| BuildError::Invalid(format!("server_name: {}", e.message)))?;
        let client = TlsClient::new(spec.ca_file.as_deref(), &[])?;
        Ok(TlsProbe {
            spec,
            timeout,
            name,
            client,
            egress,
        })
    }
}

impl Attempt for TlsProbe {
    fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn attempt(&self, deadline: &Deadline, out: &mut ProbeOutcome) -> Result<(), ProbeError> {
        let host = (self.spec.host.as_str(), self.spec.port);
        let tcp = resolve_and_connect(host, &self.egress, deadline, &mut out.phases).await?;
        let (_stream, facts) = self
            .client
            .handshake(tcp, &self.name, deadline, &mut out.phases)
            .await?;
        let result = verdict(&facts);
        out.tls = Some(facts);
        result
    }
}

impl Probe for TlsProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Tls
    }

    fn run(&self) -> BoxFuture<'_, ProbeOutcome> {
        run_attempt(self)
    }
}

/// The TLS name for `host`: an IP address for a literal (brackets allowed),
/// else a DNS name. Class `tls` when it is neither.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, ProbeError> {
    if let Some(ip) = ip_literal(host) {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| {
        ProbeError::new(
            ErrorClass::Tls,
            format!("{host:?} is not a valid TLS server name"),
        )
    })
}

/// A TLS client whose handshakes complete with any certificate and report
/// its [`TlsFacts`]; cheap to clone.
#[derive(Clone)]
pub(crate) struct TlsClient {
    connector: TlsConnector,
    webpki: Arc<WebPkiServerVerifier>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client trusting webpki-roots plus `ca_file`, offering `alpn`.
    pub(crate) fn new(ca_file: Option<&str>, alpn: &[&[u8]]) -> Result<Self, BuildError> {
        let (config, webpki) = config::client_config(ca_file, alpn)?;
        Ok(TlsClient {
            connector: TlsConnector::from(config),
            webpki,
        })
    }

    /// Runs the handshake over `tcp` for `name`, timed as `phases.tls`, and
    /// returns the stream with the facts of the presented certificate.
    ///
    /// The stream is returned whatever the certificate: a caller must pass the
    /// facts through [`verdict`] before sending anything it would not send to
    /// an unauthenticated peer.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        name: &ServerName<'static>,
        deadline: &Deadline,
        phases: &mut Phases,
    ) -> Result<(TlsStream<TcpStream>, TlsFacts), ProbeError> {
        let start = Instant::now();
        let stream = deadline
            .run("tls handshake", self.connector.connect(name.clone(), tcp))
            .await?
            .map_err(|e| {
                ProbeError::new(
                    ErrorClass::Tls,
                    format!(
                        "TLS handshake with {}: {}",
                        name.to_str(),
                        describe_error(&e)
                    ),
                )
            })?;
        phases.tls = Some(start.elapsed());
        let (_, conn) = stream.get_ref();
        let chain = conn.peer_certificates().unwrap_or_default();
        let facts = facts::inspect(
            &self.webpki,
            chain,
            name,
            UnixTime::now(),
            conn.protocol_version(),
        );
        Ok((stream, facts))
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::ChainStatus;

    use super::*;
    use crate::probe::testkit::{self, open, CaServer, ServerCert, Validity};

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn spec(host: &str, port: u16, server_name: Option<&str>, ca_file: Option<&str>) -> TlsSpec {
        TlsSpec {
            host: host.into(),
            port,
            server_name: server_name.map(Into::into),
            ca_file: ca_file.map(Into::into),
        }
    }

    async fn run(spec: TlsSpec) -> ProbeOutcome {
        TlsProbe::new(spec, TIMEOUT, open()).unwrap().run().await
    }

    /// Probes 127.0.0.1 as `localhost`, trusting the CA of a leaf for `names`.
    async fn probe_localhost(
        names: &[&str],
        validity: Validity,
        adjust: impl FnOnce(&mut ServerCert),
    ) -> ProbeOutcome {
        let server = CaServer::start_with(names, validity, adjust).await;
        let ca_file = server.ca_file();
        run(spec(
            "127.0.0.1",
            server.port(),
            Some("localhost"),
            ca_file.as_deref(),
        ))
        .await
    }

    #[tokio::test]
    async fn a_valid_chain_from_ca_file_passes_with_facts() {
        let out = probe_localhost(&["localhost"], Validity::Current, |_| {}).await;
        assert_eq!(out.error, None);
        let facts = out.tls.expect("facts");
        assert_eq!(facts.chain_status(), ChainStatus::Valid);
        assert!(facts.san_match);
        assert_eq!(facts.verify_error, "");
        assert_eq!(facts.sans, ["localhost"]);
        assert_eq!(facts.subject, "CN=vantage test leaf");
        assert_eq!(facts.issuer, "CN=vantage test CA");
        assert_eq!(facts.protocol_version, "TLSv1.3");
        assert!((29..=30).contains(&facts.days_left), "{}", facts.days_left);
        // The CA certificate (10 years) expires after the leaf.
        assert_eq!(facts.chain_earliest_not_after_unix, facts.not_after_unix);
        assert_eq!(out.phases.dns, None);
        assert!(out.phases.connect.is_some() && out.phases.tls.is_some());
        assert_eq!(out.phases.waiting, None);
    }

    #[tokio::test]
    async fn an_ip_address_matches_an_ip_san() {
        let server = CaServer::start(&["127.0.0.1"], Validity::Current).await;
        let ca_file = server.ca_file();
        let out = run(spec("127.0.0.1", server.port(), None, ca_file.as_deref())).await;
        assert_eq!(out.error, None);
        let facts = out.tls.unwrap();
        assert!(facts.san_match);
        assert_eq!(facts.sans, ["127.0.0.1"]);
    }

    #[tokio::test]
    async fn a_wrong_host_is_a_name_mismatch() {
        let out = probe_localhost(&["other.test"], Validity::Current, |_| {}).await;
        let err = out.error.expect("name mismatch fails");
        assert_eq!(err.class, ErrorClass::Tls);
        assert!(err.message.contains("not valid for localhost"), "{err:?}");
        let facts = out.tls.expect("facts despite the failure");
        assert!(!facts.san_match);
        assert_eq!(facts.chain_status(), ChainStatus::NameMismatch);
        assert_eq!(facts.sans, ["other.test"]);
    }

    #[tokio::test]
    async fn a_self_signed_certificate_is_untrusted() {
        let addr = testkit::https_server(ServerCert::self_signed(
            "self.localhost",
            &["localhost"],
            Validity::Current,
        ))
        .await;
        let out = run(spec("localhost", addr.port(), None, None)).await;
        let err = out.error.expect("untrusted");
        assert_eq!(err.class, ErrorClass::Tls);
        assert!(err.message.contains("self-signed"), "{err:?}");
        let facts = out.tls.expect("facts");
        assert_eq!(facts.chain_status(), ChainStatus::SelfSigned);
        assert!(facts.san_match, "the name matches; only trust fails");
        assert_eq!(facts.subject, "CN=self.localhost");
        assert_eq!(facts.subject, facts.issuer);
        assert!(out.phases.dns.is_some(), "localhost is resolved");
    }

    #[tokio::test]
    async fn an_expired_certificate_reports_negative_days() {
        let out = probe_localhost(&["localhost"], Validity::Expired, |_| {}).await;
        let err = out.error.expect("expired");
        assert_eq!(err.class, ErrorClass::Tls);
        assert!(err.message.contains("expired on"), "{err:?}");
        let facts = out.tls.expect("facts");
        assert_eq!(facts.chain_status(), ChainStatus::Expired);
        // Expired 10 days and 1 hour ago: floor division gives -11.
        assert_eq!(facts.days_left, -11);
        assert!(facts.san_match);
    }

    #[tokio::test]
    async fn a_not_yet_valid_certificate_is_reported() {
        let out = probe_localhost(&["localhost"], Validity::NotYetValid, |_| {}).await;
        assert_eq!(out.error.unwrap().class, ErrorClass::Tls);
        assert_eq!(out.tls.unwrap().chain_status(), ChainStatus::NotYetValid);
    }

    #[tokio::test]
    async fn an_unknown_issuer_without_the_ca_file() {
        let server = CaServer::start(&["localhost"], Validity::Current).await;
        let out = run(spec("127.0.0.1", server.port(), Some("localhost"), None)).await;
        assert_eq!(out.error.unwrap().class, ErrorClass::Tls);
        let facts = out.tls.unwrap();
        assert_eq!(facts.chain_status(), ChainStatus::UnknownIssuer);
        assert!(facts.verify_error.contains("vantage test CA"), "{facts:?}");
    }

    #[tokio::test]
    async fn tls12_is_reported() {
        let out = probe_localhost(&["localhost"], Validity::Current, |cert| {
            cert.tls12_only = true;
        })
        .await;
        assert_eq!(out.error, None);
        assert_eq!(out.tls.unwrap().protocol_version, "TLSv1.2");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_the_handshake_is_class_timeout() {
        let addr = testkit::silent_server().await;
        let timeout = Duration::from_millis(300);
        let probe =
            TlsProbe::new(spec("127.0.0.1", addr.port(), None, None), timeout, open()).unwrap();
        let out = probe.run().await;
        let err = out.error.expect("timeout");
        assert_eq!(err.class, ErrorClass::Timeout, "{err:?}");
        assert!(err.message.contains("tls handshake"), "{err:?}");
        assert!(out.phases.connect.is_some());
        assert_eq!((out.phases.tls, out.tls), (None, None));
    }

    #[tokio::test]
    async fn a_plain_http_server_is_a_tls_failure() {
        let addr = testkit::http_server().await;
        let out = run(spec("127.0.0.1", addr.port(), None, None)).await;
        let err = out.error.expect("not TLS");
        assert_eq!(err.class, ErrorClass::Tls, "{err:?}");
        assert_eq!(out.tls, None);
    }

    #[tokio::test]
    async fn a_refused_port_is_class_connect() {
        let addr = testkit::closed_port().await;
        let out = run(spec("127.0.0.1", addr.port(), None, None)).await;
        assert_eq!(out.error.unwrap().class, ErrorClass::Connect);
    }

    #[test]
    fn bad_ca_files_fail_at_build_time() {
        let missing = TlsProbe::new(
            spec("localhost", 443, None, Some("/nonexistent/ca.pem")),
            TIMEOUT,
            open(),
        );
        assert!(
            matches!(missing, Err(BuildError::CaFile { .. })),
            "{missing:?}"
        );

        let empty = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(empty.path(), "not a certificate\n").unwrap();
        let err = TlsProbe::new(
            spec("localhost", 443, None, empty.path().to_str()),
            TIMEOUT,
            open(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn server_names() {
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("10.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("example.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert_eq!(server_name("bad name").unwrap_err().class, ErrorClass::Tls);
        let probe = TlsProbe::new(spec("x", 443, Some("a b"), None), TIMEOUT, open());
        assert!(matches!(probe, Err(BuildError::Invalid(_))));
    }
}
