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

/// Where the system's CA bundle is read from: `SSL_CERT_FILE`, else the
/// Debian path the image ships.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// No trusted certificate in the system's bundle: name the file, since a
/// TLS handshake that cannot verify anything would only say it failed.
fn no_system_bundle() -> Error {
    let path = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_BUNDLE.to_string());
    let state = match std::fs::metadata(&path) {
        Err(cause) if cause.kind() == std::io::ErrorKind::NotFound => "does not exist",
        _ => "holds no usable certificate",
    };
    Error::unavailable(format!(
        "no CA certificates to verify TLS with: {path} {state} (install ca-certificates, set SSL_CERT_FILE, or give --ca FILE)"
    ))
}

/// The client configuration for one run: ALPN h2, the trust the user chose.
pub fn client_config(options: &TlsOptions) -> crate::Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::unavailable(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if options.insecure {
        Arc::new(Verifier::insecure(provider))
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
            return Err(match &options.ca {
                Some(path) => Error::usage(format!(
                    "{}: no usable CA certificate in it",
                    path.display()
                )),
                None => no_system_bundle(),
            });
        }
        Arc::new(Verifier::trusting(roots, trusted, provider)?)
    };
    let mut config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// WebPKI path validation, and failing that, the presented certificate
/// being one the user trusts byte for byte; or, for `--insecure`, nothing.
/// Either way the handshake's own signatures are checked, so the peer at
/// least holds the key it presented.
#[derive(Debug)]
struct Verifier {
    /// `None`: `--insecure`, no certificate is judged.
    trust: Option<Trust>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct Trust {
    /// `None` when there is no root at all (an empty system store): every
    /// chain is then an unknown issuer, which is what the handshake says.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    trusted: Vec<CertificateDer<'static>>,
}

impl Verifier {
    fn insecure(provider: Arc<CryptoProvider>) -> Self {
        Verifier {
            trust: None,
            provider,
        }
    }

    fn trusting(
        roots: RootCertStore,
        trusted: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> crate::Result<Self> {
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::unavailable(format!("TLS setup: {e}")))?,
            )
        };
        Ok(Verifier {
            trust: Some(Trust { webpki, trusted }),
            provider,
        })
    }
}

impl Trust {
    fn verify(
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
                match rustls::client::verify_server_name(&parsed, server_name) {
                    Ok(()) => Ok(ServerCertVerified::assertion()),
                    // No subjectAltName at all (a bare `openssl req -x509
                    // -subj /CN=NAME`): OpenSSL and curl then match the
                    // Common Name, for a certificate trusted this directly.
                    Err(e) => match (common_name_without_san(end_entity.as_ref()), server_name) {
                        (Some(cn), ServerName::DnsName(name))
                            if cn.eq_ignore_ascii_case(name.as_ref()) =>
                        {
                            Ok(ServerCertVerified::assertion())
                        }
                        _ => Err(e),
                    },
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Some(trust) => trust.verify(end_entity, intermediates, server_name, ocsp_response, now),
            None => Ok(ServerCertVerified::assertion()),
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

/// One DER element: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a DER SEQUENCE or SET's content.
fn der_elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, content, rest) = der_element(input)?;
        input = rest;
        Some((tag, content))
    })
}

/// A certificate's subject Common Name, when it has no subjectAltName
/// extension at all (then, and only then, name checks fall back to it).
pub fn common_name_without_san(certificate: &[u8]) -> Option<String> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    let (_, cert, _) = der_element(certificate)?;
    let (_, tbs, _) = der_element(cert)?;
    let mut fields = der_elements(tbs).peekable();
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next(); // version
    }
    // serial, signature algorithm, issuer, validity, subject
    let (_, subject) = fields.nth(4)?;
    let rest: Vec<(u8, &[u8])> = fields.collect();
    let has_san = rest
        .iter()
        .filter(|(tag, _)| *tag == 0xa3)
        .filter_map(|(_, explicit)| der_element(explicit))
        .flat_map(|(_, extensions, _)| der_elements(extensions))
        .any(|(_, extension)| {
            der_elements(extension)
                .next()
                .is_some_and(|(tag, oid)| tag == 0x06 && oid == SUBJECT_ALT_NAME)
        });
    if has_san {
        return None;
    }
    der_elements(subject)
        .flat_map(|(_, set)| der_elements(set))
        .find_map(|(_, attribute)| {
            let mut parts = der_elements(attribute);
            let (tag, oid) = parts.next()?;
            let (kind, value) = parts.next()?;
            (tag == 0x06 && oid == COMMON_NAME && matches!(kind, 0x0c | 0x13 | 0x16))
                .then(|| String::from_utf8_lossy(value).into_owned())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_file(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name);
        let certs = read_pem_certificates(&path).unwrap();
        certs[0].as_ref().to_vec()
    }

    #[test]
    fn common_name_is_read_only_from_certificates_without_san() {
        assert_eq!(
            common_name_without_san(&pem_file("cn-only.pem")),
            Some("localhost".to_string())
        );
        assert_eq!(common_name_without_san(&pem_file("with-san.pem")), None);
    }

    #[test]
    fn random_bytes_never_panic_the_der_walker() {
        let mut state: u64 = 0x853c_49e6_748f_ea9b;
        let base = pem_file("cn-only.pem");
        for i in 0..20_000 {
            let state = super::super::channel::xorshift(&mut state);
            let mut bytes = base.clone();
            // Corrupt a few bytes of a real certificate, or take random ones.
            if i % 2 == 0 {
                for k in 0..4 {
                    let at = ((state >> (k * 16)) as usize) % bytes.len();
                    bytes[at] = (state >> (k * 8)) as u8;
                }
            } else {
                bytes = state.to_le_bytes().repeat((state % 7) as usize);
            }
            let _ = common_name_without_san(&bytes);
        }
    }
}
