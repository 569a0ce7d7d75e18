//! The `[server.tls]` section: the certificate and key files of the main listener and how
//! often they are checked for a change. Loading them is [`crate::tls`]'s job.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How often the certificate files are checked for a change, by default.
const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// `[server.tls]`: TLS on the main listener. Off unless both paths are set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, the server's certificate first.
    pub cert_path: Option<PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_path: Option<PathBuf>,
    /// How often both files are checked for a change (modification time or size); a change
    /// reloads them, as SIGHUP does.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_path: None,
            key_path: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}
