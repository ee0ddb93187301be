//! TLS for `mqtts://` and `amqps://`: rustls with the ring provider, trusting either
//! `transport.ca_file` or the system roots.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::error::TransportError;

fn tls_err(what: &str, why: impl std::fmt::Display) -> TransportError {
    TransportError::Tls {
        what: what.to_string(),
        why: why.to_string(),
    }
}

/// Reads the CA bundle: every PEM certificate in the file, at least one.
pub fn read_ca_file(path: &Path) -> Result<(String, Vec<CertificateDer<'static>>), TransportError> {
    let what = format!("CA file {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| tls_err(&what, e))?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&what, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(&what, "holds no PEM certificate"));
    }
    Ok((text, certs))
}

/// The rustls client config for MQTT over TLS (ring provider, TLS 1.2 and 1.3).
pub fn rustls_client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let (_, certs) = read_ca_file(path)?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| tls_err(&format!("CA file {}", path.display()), e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(tls_err(
                    "system roots",
                    "no usable CA certificate found; set transport.ca_file",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("rustls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS settings handed to lapin for `amqps://` (it builds its own rustls config
/// with the ring provider from them).
pub fn amqp_tls_config(
    ca_file: Option<&Path>,
) -> Result<lapin::tcp::OwnedTLSConfig, TransportError> {
    let cert_chain = match ca_file {
        Some(path) => Some(read_ca_file(path)?.0),
        None => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA made by the openssl tool (no TLS broker needed).
    fn self_signed_ca(dir: &Path) -> std::path::PathBuf {
        let key = dir.join("ca.key");
        let cert = dir.join("ca.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=edge-agent test CA", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl tool runs");
        assert!(status.success());
        cert
    }

    #[test]
    fn a_ca_file_gives_a_rustls_config_and_bad_files_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let ca = self_signed_ca(dir.path());
        let config = rustls_client_config(Some(&ca)).unwrap();
        assert!(config.alpn_protocols.is_empty());
        let amqp = amqp_tls_config(Some(&ca)).unwrap();
        assert!(amqp.cert_chain.unwrap().contains("BEGIN CERTIFICATE"));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = rustls_client_config(Some(&garbage))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("garbage.pem") && err.contains("no PEM"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = amqp_tls_config(Some(&missing)).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
