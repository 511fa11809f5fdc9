//! TLS termination's certificate, for both planes: a PEM certificate chain and private key read
//! into a rustls server configuration that always hands out the newest good pair. The files are
//! read again when they change (looked at every second) or on SIGHUP; a pair that does not load
//! (half written, a key of another certificate) leaves the one in use in place and is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the certificate files are looked at.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Why a certificate pair could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{setting} is set but {missing} is not: TLS needs both a certificate and its key")]
    Half {
        setting: &'static str,
        missing: &'static str,
    },
    #[error("{setting} is set without a certificate and key ({cert}, {key})")]
    AddressWithoutCertificate {
        setting: &'static str,
        cert: &'static str,
        key: &'static str,
    },
    #[error("cannot read the TLS certificate {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    #[error("cannot read the TLS private key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the TLS private key {key} does not belong to the certificate {cert}: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// Where a plane's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Names of a plane's TLS settings, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct TlsSettingNames {
    pub cert: &'static str,
    pub key: &'static str,
    pub addr: &'static str,
}

impl TlsFiles {
    /// The pair a plane's settings name: none, both, or an error naming the one missing (and a
    /// TLS address with neither).
    pub fn from_settings(
        cert: Option<&Path>,
        key: Option<&Path>,
        has_addr: bool,
        names: TlsSettingNames,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some(Self {
                cert: c.to_owned(),
                key: k.to_owned(),
            })),
            (Some(_), None) => Err(TlsError::Half {
                setting: names.cert,
                missing: names.key,
            }),
            (None, Some(_)) => Err(TlsError::Half {
                setting: names.key,
                missing: names.cert,
            }),
            (None, None) if has_addr => Err(TlsError::AddressWithoutCertificate {
                setting: names.addr,
                cert: names.cert,
                key: names.key,
            }),
            (None, None) => Ok(None),
        }
    }

    /// Reads and checks the pair.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let cert_err = |why: String| TlsError::Certificate {
            path: self.cert.clone(),
            why,
        };
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| cert_err(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(e.to_string()))?;
        if chain.is_empty() {
            return Err(cert_err("no CERTIFICATE block in it".to_owned()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::Key {
            path: self.key.clone(),
            why: e.to_string(),
        })?;
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            why: e.to_string(),
        })
    }

    /// What says the files changed: both files' modification time and length.
    fn stamp(&self) -> Option<Stamp> {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Some((one(&self.cert)?, one(&self.key)?))
    }
}

type Stamp = ((SystemTime, u64), (SystemTime, u64));

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The certificate in use, swapped for a new one when its files change.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    /// The files as last loaded (or last failed to load: not tried again until they change).
    seen: Mutex<Option<Stamp>>,
}

impl Certificates {
    /// Loads the pair (an error here stops the start: the message names the file).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = files.stamp();
        let key = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: ArcSwap::from_pointee(key),
            seen: Mutex::new(stamp),
        }))
    }

    /// Reads the files again when they changed since last time (`force`: whether or not);
    /// `Ok(true)` when a new pair is in use.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !force && *seen == stamp {
                return Ok(false);
            }
            *seen = stamp;
        }
        let key = self.files.load()?;
        self.current.store(Arc::new(key));
        Ok(true)
    }

    /// A server configuration that serves the certificate in use, offering `alpn` (most
    /// preferred first).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap_or_else(|_| rustls::ServerConfig::builder());
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// Looks at the files every [`RELOAD_EVERY`] and on SIGHUP until `stop` fires, putting a
    /// changed pair in use. Connections already open keep the certificate they started with.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => true,
                _ = stop.changed() => return,
            };
            match self.reload(force) {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one stays in use");
                }
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
