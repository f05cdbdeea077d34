//! TLS termination with rustls, from PEM files named by the policy.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub fn acceptor(cert_path: &str, key_path: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cert_pem = std::fs::read(cert_path).map_err(|e| format!("cannot read TLS certificate {cert_path}: {e}"))?;
    let key_pem = std::fs::read(key_path).map_err(|e| format!("cannot read TLS key {key_path}: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_path}: not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_path}: no certificate found"));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{key_path}: not a PEM private key: {e}"))?
        .ok_or_else(|| format!("{key_path}: no private key found"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
