//! TLS for `mqtts://` and `amqps://`: rustls with the ring provider, trusting either
//! `ca_file` or the system roots, and with `cert_file` and `key_file` a client
//! certificate (mutual TLS) for the broker to check.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

/// The client certificate and key files of a configuration, when it has both (config
/// validation refuses one without the other).
pub fn identity(cfg: &super::TransportConfig) -> Option<(&Path, &Path)> {
    Some((cfg.cert_file.as_deref()?, cfg.key_file.as_deref()?))
}

/// Reads a client certificate chain and its private key (PEM, PKCS#8, PKCS#1 or SEC1).
fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let what = format!("client certificate {}", cert.display());
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(&what, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(&what, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(&what, "holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| tls_err(&format!("client key {}", key.display()), e))?;
    Ok((certs, key))
}

/// The rustls client config for MQTT over TLS (ring provider, TLS 1.2 and 1.3), with a
/// client certificate when `identity` is (certificate file, key file).
pub fn rustls_client_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TransportError> {
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
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err("rustls", e))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let (certs, key_der) = read_identity(cert, key)?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| tls_err(&format!("client key {}", key.display()), e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The TLS settings handed to lapin for `amqps://` (it builds its own rustls config
/// with the ring provider from them).
pub fn amqp_tls_config(
    ca_file: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<lapin::tcp::OwnedTLSConfig, TransportError> {
    let cert_chain = match ca_file {
        Some(path) => Some(read_ca_file(path)?.0),
        None => None,
    };
    let identity = match identity {
        Some((cert, key)) => {
            // Checked here so a bad file is named at start, not at each reconnect.
            read_identity(cert, key)?;
            let read = |p: &Path, what: &str| {
                std::fs::read(p).map_err(|e| tls_err(&format!("{what} {}", p.display()), e))
            };
            Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read(cert, "client certificate")?,
                key: read(key, "client key")?,
            })
        }
        None => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
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
        let config = rustls_client_config(Some(&ca), None).unwrap();
        assert!(config.alpn_protocols.is_empty());
        assert!(!config.client_auth_cert_resolver.has_certs());
        let amqp = amqp_tls_config(Some(&ca), None).unwrap();
        assert!(amqp.cert_chain.unwrap().contains("BEGIN CERTIFICATE"));

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err = rustls_client_config(Some(&garbage), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("garbage.pem") && err.contains("no PEM"),
            "{err}"
        );
        let missing = dir.path().join("missing.pem");
        let err = amqp_tls_config(Some(&missing), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");

        // Mutual TLS: the CA's own certificate and key stand in for a client's.
        let key = dir.path().join("ca.key");
        let config = rustls_client_config(Some(&ca), Some((&ca, &key))).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
        let amqp = amqp_tls_config(Some(&ca), Some((&ca, &key))).unwrap();
        assert!(amqp.identity.is_some());
        for (cert, key, named) in [
            (&garbage, &key, "garbage.pem"),
            (&ca, &garbage, "garbage.pem"),
            (&ca, &missing, "missing.pem"),
        ] {
            let err = rustls_client_config(Some(&ca), Some((cert, key)))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{err}");
            let err = amqp_tls_config(Some(&ca), Some((cert, key)))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{err}");
        }
    }
}
