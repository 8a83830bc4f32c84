//! TLS for `podprobe grpc --tls`: which roots are trusted (`--ca FILE`, else
//! the system's, which honour SSL_CERT_FILE and SSL_CERT_DIR), the server
//! name checked (`--authority`, else the target's host), and `--insecure`.
//!
//! A certificate the user trusts directly is accepted as OpenSSL and curl
//! accept it, even when it is its own issuer and says CA:TRUE (what
//! `openssl req -x509` makes): webpki alone refuses that as
//! `CaUsedAsEndEntity`. Its validity dates and names are still checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::Error;

/// What the user asked of TLS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsOptions {
    /// PEM file of the CA certificates (or the very certificate) to trust
    /// instead of the system's.
    pub ca: Option<PathBuf>,
    /// Accept any certificate (no verification at all).
    pub insecure: bool,
}

/// How the server's certificate is judged, for the evidence.
pub fn trust_description(options: &TlsOptions) -> String {
    match (&options.ca, options.insecure) {
        (_, true) => "none: --insecure, the certificate is not verified".to_string(),
        (Some(ca), false) => format!("--ca {}", ca.display()),
        (None, false) => "system roots (SSL_CERT_FILE / SSL_CERT_DIR when set)".to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates in a PEM file; none is an input error.
pub fn read_pem_certificates(path: &Path) -> crate::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|cause| Error::Input {
        path: path.display().to_string(),
        cause,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(Error::usage(format!(
            "{}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// The client configuration for one run: ALPN h2, the trust the user chose.
pub fn client_config(options: &TlsOptions) -> crate::Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::unavailable(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if options.insecure {
        Arc::new(NoVerification(provider))
    } else {
        let trusted = match &options.ca {
            Some(path) => read_pem_certificates(path)?,
            // Certificates that fail to parse are skipped, as every client
            // that reads the system bundle does.
            None => rustls_native_certs::load_native_certs().certs,
        };
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(trusted.iter().cloned());
        if added == 0 {
            if let Some(path) = &options.ca {
                return Err(Error::usage(format!(
                    "{}: no usable CA certificate in it",
                    path.display()
                )));
            }
        }
        Arc::new(TrustedOrChained::new(roots, trusted, provider)?)
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI path validation, and failing that, the presented certificate
/// being one the user trusts byte for byte.
#[derive(Debug)]
struct TrustedOrChained {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    trusted: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl TrustedOrChained {
    fn new(
        roots: RootCertStore,
        trusted: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> crate::Result<Self> {
        // No roots at all (an empty system store): every chain is then an
        // unknown issuer, which is what the handshake will say.
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::unavailable(format!("TLS setup: {e}")))?,
            )
        };
        Ok(TrustedOrChained {
            webpki,
            trusted,
            provider,
        })
    }
}

impl ServerCertVerifier for TrustedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chained = match &self.webpki {
            Some(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            None => Err(CertificateError::UnknownIssuer.into()),
        };
        match chained {
            Ok(verified) => Ok(verified),
            // webpki checks validity dates and key usage before the chain,
            // so these two errors leave only the chain itself unproven; a
            // certificate the user trusts directly needs none.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::Other(_),
            )) if self
                .trusted
                .iter()
                .any(|t| t.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `--insecure`: any certificate, any name. The handshake's own signatures
/// are still checked, so the peer at least holds the key it presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake failure in words a person acts on.
pub fn describe_handshake_error(err: &std::io::Error) -> String {
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            let hint = match cert {
                CertificateError::UnknownIssuer => {
                    "; trust its CA with --ca FILE (or SSL_CERT_FILE), or --insecure"
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "; give the name it was issued for with --authority NAME"
                }
                _ => "",
            };
            format!("TLS: certificate not accepted: {cert:?}{hint}")
        }
        Some(other) => format!("TLS handshake: {other}"),
        None => format!("TLS handshake: {err}"),
    }
}

/// True when a handshake failed on the certificate (not on the transport).
pub fn is_certificate_error(err: &std::io::Error) -> bool {
    matches!(
        err.get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(_))
    )
}
