//! The rustls client configuration of the `tls` and `http` probes: trust
//! anchors, and a verifier that lets every handshake complete so the
//! certificate can be inspected afterwards.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::probe::BuildError;

/// The client config for handshakes (with [`InspectingVerifier`]) and the real
/// WebPKI verifier whose verdict is reported as facts.
pub(super) fn client_config(
    ca_file: Option<&str>,
    alpn: &[&[u8]],
) -> Result<(Arc<ClientConfig>, Arc<WebPkiServerVerifier>), BuildError> {
    // Explicitly ring: never depend on a process-wide default provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(ca_file)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| BuildError::Invalid(format!("TLS verifier: {e}")))?;
    let inspecting = Arc::new(InspectingVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Invalid(format!("TLS protocol versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(inspecting)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Every attempt does a full handshake: its time is what is measured, and
    // a resumed session would not present the certificate again.
    config.resumption = Resumption::disabled();
    Ok((Arc::new(config), webpki))
}

/// The webpki-roots (Mozilla) trust anchors, plus every certificate in
/// `ca_file` when given.
pub(crate) fn root_store(ca_file: Option<&str>) -> Result<RootCertStore, BuildError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let Some(path) = ca_file else {
        return Ok(roots);
    };
    let err = |reason: String| BuildError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Accepts any certificate chain so that the handshake completes even for an
/// expired, self-signed or wrong-host certificate; the probe then asks the real
/// WebPKI verifier about the presented chain and reports its verdict.
///
/// Handshake signatures are still verified (with the ring provider's
/// algorithms): the server must prove it holds the certificate's key.
///
/// Because nothing is trusted at handshake time, a caller must check the
/// verdict before it sends anything over the connection
/// (see [`super::TlsClient::handshake`]).
#[derive(Debug)]
struct InspectingVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InspectingVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
