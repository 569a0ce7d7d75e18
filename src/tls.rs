//! Serving `wss://` directly: the `[server.tls]` settings, the TLS acceptor, and reloading
//! the certificate without a restart.
//!
//! The acceptor's rustls configuration is built once; the certificate it presents comes from
//! a resolver holding the current certificate and key behind a lock. Reloading (on SIGHUP, or
//! when either file's modification time or size changes, checked every
//! `server.tls.reload_interval`) swaps that pair: the next handshake presents the new
//! certificate, connections already established keep theirs. A new pair that does not load
//! (unreadable, not PEM, a key that is not the certificate's) is logged and the old pair kept.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::config::TlsConfig;

// === TlsError ===

/// Why a certificate or key could not be used. Each message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls.cert_path and server.tls.key_path must be set together (or neither, for plain ws://)")]
    Half,
    #[error("server.tls.reload_interval must be greater than 0")]
    ZeroInterval,
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} is not a PEM certificate chain: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path} holds no PEM private key (expected PKCS#8, PKCS#1 or SEC1): {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("the key in {key} cannot serve the certificate in {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate and key paths when TLS is on; an error when only one of them is set.
fn paths(config: &TlsConfig) -> Result<Option<(&Path, &Path)>, TlsError> {
    match (&config.cert_path, &config.key_path) {
        (Some(cert), Some(key)) => Ok(Some((cert, key))),
        (None, None) => Ok(None),
        _ => Err(TlsError::Half),
    }
}

// === Tls ===

/// The TLS side of the main listener: an acceptor and the certificate it presents.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<Current>,
    cert_path: PathBuf,
    key_path: PathBuf,
    reload_interval: Duration,
}

impl Tls {
    /// Loads the certificate and key of `config`; `None` when TLS is off.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Tls>, TlsError> {
        let Some((cert_path, key_path)) = paths(config)? else {
            return Ok(None);
        };
        if config.reload_interval.is_zero() {
            return Err(TlsError::ZeroInterval);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(Current {
            key: RwLock::new(Arc::new(load(cert_path, key_path, &provider)?)),
            stamp: RwLock::new(stamp(cert_path, key_path)),
            provider: provider.clone(),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // Wallets upgrade to WebSocket over HTTP/1.1 and publishers post over it.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            current,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            reload_interval: config.reload_interval,
        }))
    }

    /// Runs the TLS handshake on an accepted connection, within `timeout`. `None` when the
    /// client does not complete it (not TLS, a certificate it refuses, too slow).
    pub async fn accept<IO>(
        &self,
        stream: IO,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(error)) => {
                tracing::debug!(%error, "TLS handshake failed.");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out.");
                None
            }
        }
    }

    /// Reloads the files now. On failure the certificate in use is kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        *self.current.stamp.write() = stamp(&self.cert_path, &self.key_path);
        let key = load(&self.cert_path, &self.key_path, &self.current.provider)?;
        *self.current.key.write() = Arc::new(key);
        Ok(())
    }

    /// Reloads on SIGHUP and whenever either file changes, until `stop`.
    pub fn spawn_reloader(&self, stop: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::warn!(%error, "Cannot listen for SIGHUP; the TLS certificate is reloaded only when its files change.");
                    None
                }
            };
            let mut tick = tokio::time::interval(tls.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                    _ = tick.tick() => {
                        if stamp(&tls.cert_path, &tls.key_path) == *tls.current.stamp.read() {
                            continue;
                        }
                        "the files changed"
                    }
                };
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(cause = why, cert = %tls.cert_path.display(), "TLS certificate reloaded.")
                    }
                    Err(error) => {
                        tracing::warn!(cause = why, %error, "TLS certificate not reloaded; the previous one stays in use.")
                    }
                }
            }
        });
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish()
    }
}

// === Current ===

/// The certificate presented to new handshakes, and what its files looked like when loaded.
struct Current {
    key: RwLock<Arc<CertifiedKey>>,
    /// Modification time and size of (certificate, key) at the last load attempt.
    stamp: RwLock<Stamp>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().clone())
    }
}

/// Modification time and size of each file; `None` for a file that cannot be read.
type Stamp = [Option<(SystemTime, u64)>; 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(cert), of(key)]
}

/// Reads and checks a certificate chain and its key.
fn load(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_unless_both_paths_are_set() {
        assert!(Tls::from_config(&TlsConfig::default()).unwrap().is_none());
        let half = TlsConfig {
            cert_path: Some("cert.pem".into()),
            ..TlsConfig::default()
        };
        let err = Tls::from_config(&half).unwrap_err();
        assert!(matches!(err, TlsError::Half), "{err}");
    }

    #[test]
    fn unreadable_or_non_pem_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let config = TlsConfig {
            cert_path: Some(cert.clone()),
            key_path: Some(key.clone()),
            ..TlsConfig::default()
        };
        let err = Tls::from_config(&config).unwrap_err().to_string();
        assert!(
            err.contains("cannot read") && err.contains("cert.pem"),
            "{err}"
        );
        std::fs::write(&cert, "not pem").unwrap();
        std::fs::write(&key, "not pem").unwrap();
        let err = Tls::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
    }
}
