//! HTTPS for the API: a rustls server configuration from a PEM certificate chain and key (read
//! from files, or fetched by the node, e.g. from tailscaled); `server` runs the handshakes. Only
//! the ring provider is used, so no other crypto library is built.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate and key, ready to serve.
#[derive(Clone)]
pub struct TlsConfig(pub(crate) Arc<rustls::ServerConfig>);

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a certificate and key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM text holds no certificate.
    #[error("no certificate found in the PEM text")]
    NoCertificate,
    /// The PEM text holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in the PEM text")]
    NoKey,
    /// rustls refused the pair (a key that does not match the certificate, an unsupported key).
    #[error("the certificate and key cannot be used: {0}")]
    Invalid(String),
}

impl TlsConfig {
    /// From PEM text: the certificate chain (leaf first) and the private key. They may be in one
    /// text, as tailscaled's `type=pair` answer is.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey)?;
        Self::build(certs, key)
    }

    /// From DER: the certificate chain (leaf first) and the private key, whose encoding (PKCS#8,
    /// SEC1 or PKCS#1) is recognised from its structure.
    pub fn from_der(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Result<Self, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let certs = chain.into_iter().map(CertificateDer::from).collect();
        let key = PrivateKeyDer::try_from(key).map_err(|_| TlsError::NoKey)?;
        Self::build(certs, key)
    }

    fn build(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Invalid(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_pairs_load_and_bad_ones_are_named() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
        TlsConfig::from_pem(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        // One text holding both, as tailscaled sends it.
        let pair = format!("{cert_pem}{key_pem}");
        TlsConfig::from_pem(pair.as_bytes(), pair.as_bytes()).unwrap();
        assert_eq!(TlsConfig::from_pem(b"", key_pem.as_bytes()).unwrap_err(), TlsError::NoCertificate);
        assert_eq!(TlsConfig::from_pem(cert_pem.as_bytes(), b"nothing").unwrap_err(), TlsError::NoKey);
        // DER, as tailscaled's pair arrives once parsed.
        TlsConfig::from_der(vec![cert.cert.der().to_vec()], cert.key_pair.serialize_der()).unwrap();
        assert_eq!(
            TlsConfig::from_der(Vec::new(), cert.key_pair.serialize_der()).unwrap_err(),
            TlsError::NoCertificate
        );
        assert_eq!(
            TlsConfig::from_der(vec![cert.cert.der().to_vec()], vec![1, 2, 3]).unwrap_err(),
            TlsError::NoKey
        );
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        let mismatched = TlsConfig::from_pem(cert_pem.as_bytes(), other.key_pair.serialize_pem().as_bytes());
        assert!(matches!(mismatched, Err(TlsError::Invalid(_))), "{mismatched:?}");
    }
}
