//! TLS for the test read handlers: a server identity (certificate chain and key, PEM) and the rustls
//! acceptor the HTTP server wraps its connections in (the gRPC server uses tonic's own TLS).

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A server certificate chain and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct TlsIdentity {
    pub certificate_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl TlsIdentity {
    /// The test identity in `integration/tests/fixtures/tls`: `localhost` and `127.0.0.1`, signed by the
    /// test CA in `ca.pem` (which no system trusts: a client must be given it, e.g. with `SSL_CERT_FILE`).
    pub fn test_server() -> std::io::Result<Self> {
        let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        Ok(Self {
            certificate_pem: std::fs::read(directory.join("server.pem"))?,
            key_pem: std::fs::read(directory.join("server.key"))?,
        })
    }

    /// The path of the test CA certificate that signed [`TlsIdentity::test_server`].
    pub fn test_ca_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls/ca.pem")
    }
}

/// A rustls acceptor (aws-lc-rs, HTTP/1.1) for the identity.
pub(super) fn acceptor(identity: TlsIdentity) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&identity.certificate_pem)
            .collect::<Result<_, _>>()
            .map_err(|error| invalid(format!("certificate: {error}")))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|error| invalid(format!("key: {error}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| invalid(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| invalid(error.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
