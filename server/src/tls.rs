//! TLS for listeners (with reload) and for clients.
//!
//! A listener holds a [`ReloadingTls`]: the current `rustls::ServerConfig` behind a lock, read
//! from the PEM files named in `[server.tls]`. Each accepted connection takes the config that is
//! current at that moment, so a swap never touches a connection that is already open. The swap
//! happens when a watcher sees a file change (size, mtime or inode, polled every
//! `reload_interval`) or when [`ReloadingTls::reload`] is called (SIGHUP, `POST /-/reload`). A
//! reload that fails (a key that does not match the certificate, a half-written file) keeps the
//! old config and returns the reason; the watcher logs it and tries again when the files change
//! again.

use osprey_config::tls::{ClientTls, ServerTls};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// A TLS file that could not be used: which key, which file, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: cannot read: {source}")]
    Read { key: String, path: PathBuf, source: std::io::Error },
    #[error("{key} {path}: {what}")]
    Content { key: String, path: PathBuf, what: String },
    #[error("{what}: {source}")]
    Rustls { what: String, source: rustls::Error },
    #[error("{key}: switching TLS on or off needs a restart (the listener speaks one or the other)")]
    Switch { key: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { key: key.into(), path: path.into(), source })
}

fn content(key: &str, path: &Path, what: impl Into<String>) -> TlsError {
    TlsError::Content { key: key.into(), path: path.into(), what: what.into() }
}

/// Every certificate of a PEM file, in order.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| content(key, path, format!("not a valid PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(content(key, path, "holds no certificate (expected a -----BEGIN CERTIFICATE----- block)"));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            content(key, path, "holds no private key (expected a -----BEGIN PRIVATE KEY----- block)")
        }
        e => content(key, path, format!("not a valid PEM private key file: {e}")),
    })
}

fn load_roots(key: &str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| content(key, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The files a listener's TLS is read from, and the config-key prefix its errors name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `server.tls` (collector and agent alike); errors say `server.tls.cert_file /path: ...`.
    pub prefix: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// The files of `[server.tls]`; `None` when TLS is off.
    pub fn from_config(prefix: &str, tls: &ServerTls) -> Option<TlsFiles> {
        tls.enabled().then(|| TlsFiles {
            prefix: prefix.into(),
            cert_file: tls.cert_file.clone().into(),
            key_file: tls.key_file.clone().into(),
            client_ca_file: (!tls.client_ca_file.is_empty()).then(|| tls.client_ca_file.clone().into()),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert_file.as_path(), self.key_file.as_path()];
        v.extend(self.client_ca_file.as_deref());
        v
    }

    /// A server config from the files as they are now.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let certs = load_certs(&self.key("cert_file"), &self.cert_file)?;
        let key = load_key(&self.key("key_file"), &self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Rustls { what: "TLS protocol versions".into(), source })?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let key = self.key("client_ca_file");
                let roots = load_roots(&key, ca)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| content(&key, ca, format!("cannot verify clients with it: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_single_cert(certs, key).map_err(|source| TlsError::Rustls {
            what: format!(
                "{} {} and {} {} do not make a usable certificate",
                self.key("cert_file"),
                self.cert_file.display(),
                self.key("key_file"),
                self.key_file.display()
            ),
            source,
        })?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// What the watcher compares: a file's size, mtime and inode (all three, so a rename over the
/// file or a same-second rewrite is seen).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp(Option<(u64, SystemTime, u64)>);

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp(std::fs::metadata(path).ok().map(|m| (m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.ino())))
}

struct Watched {
    files: TlsFiles,
    /// Stamps of the last load attempt (successful or not), so a broken file is reported once
    /// and retried only when it changes again.
    seen: Vec<Stamp>,
}

/// A listener's TLS config, swapped whole on reload. Cheap to share (`Arc`).
pub struct ReloadingTls {
    current: RwLock<Arc<ServerConfig>>,
    watched: Mutex<Watched>,
    reloads: prometheus_client::metrics::family::Family<ResultLabels, prometheus_client::metrics::counter::Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl ReloadingTls {
    /// Loads the files; an error names the key, the file and the problem.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingTls>, TlsError> {
        let seen = files.paths().into_iter().map(stamp).collect();
        let cfg = files.server_config()?;
        Ok(Arc::new(ReloadingTls {
            current: RwLock::new(Arc::new(cfg)),
            watched: Mutex::new(Watched { files, seen }),
            reloads: Default::default(),
        }))
    }

    /// Registers `tls_reloads_total{result="ok"|"error"}` under the registry's prefix.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "tls_reloads",
            "Loads of the TLS certificate, key and client CA files after the first, by result",
            self.reloads.clone(),
        );
    }

    /// The config new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Reads the same files again and swaps the config in. On error the old config stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.watched.lock().unwrap_or_else(PoisonError::into_inner).files.clone();
        self.reload_with(files)
    }

    /// Swaps to other files (a config reload that changed `[server.tls]` paths). TLS cannot be
    /// switched on or off on an open listener; that needs a restart.
    pub fn reload_with(&self, files: TlsFiles) -> Result<(), TlsError> {
        let seen: Vec<Stamp> = files.paths().into_iter().map(stamp).collect();
        let result = files.server_config();
        let mut w = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        w.seen = seen;
        match result {
            Ok(cfg) => {
                w.files = files;
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(cfg);
                self.reloads.get_or_create(&ResultLabels { result: "ok" }).inc();
                Ok(())
            }
            Err(e) => {
                self.reloads.get_or_create(&ResultLabels { result: "error" }).inc();
                Err(e)
            }
        }
    }

    /// Whether any file changed since the last load attempt.
    fn changed(&self) -> bool {
        let w = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
        w.files.paths().into_iter().map(stamp).ne(w.seen.iter().cloned())
    }

    /// Polls the files every `interval` until `stop` turns true; reloads when one changed.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        if interval.is_zero() {
            return;
        }
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let Some(tls) = tls.upgrade() else { return };
                let changed = {
                    let t = tls.clone();
                    tokio::task::spawn_blocking(move || t.changed().then(|| t.reload())).await
                };
                match changed {
                    Ok(Some(Ok(()))) => tracing::info!("TLS certificate files changed; new connections use them"),
                    Ok(Some(Err(e))) => {
                        tracing::warn!("TLS files changed but cannot be used, keeping the previous ones: {e}")
                    }
                    _ => {}
                }
            }
        });
    }
}

/// The `[server.tls]` (`prefix`) of a reloaded config, checked against the TLS the listener
/// runs (`running`) before anything changes: the files to hand to
/// [`ReloadingTls::reload_with`], or `None` when TLS is off and stays off. Both roles' reloads
/// use it, so a broken file or an on/off switch refuses the whole reload.
pub fn check_reload(
    running: Option<&Arc<ReloadingTls>>,
    prefix: &str,
    tls: &ServerTls,
) -> Result<Option<TlsFiles>, TlsError> {
    match (running, TlsFiles::from_config(prefix, tls)) {
        (Some(_), Some(files)) => {
            files.server_config()?;
            Ok(Some(files))
        }
        (None, None) => Ok(None),
        _ => Err(TlsError::Switch { key: prefix.into() }),
    }
}

/// A client config: receivers verified against `tls.ca_file` (else the system's trust store),
/// presenting `tls.cert_file` when set. Errors name `{prefix}.<key>` and the file.
pub fn client_config(prefix: &str, tls: &ClientTls) -> Result<ClientConfig, TlsError> {
    let roots = if tls.ca_file.is_empty() {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::debug!("no system CA certificates found; https receivers will fail verification");
        }
        roots
    } else {
        load_roots(&format!("{prefix}.ca_file"), Path::new(&tls.ca_file))?
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { what: "TLS protocol versions".into(), source })?
        .with_root_certificates(roots);
    if tls.cert_file.is_empty() {
        return Ok(builder.with_no_client_auth());
    }
    let cert_key = format!("{prefix}.cert_file");
    let certs = load_certs(&cert_key, Path::new(&tls.cert_file))?;
    let key = load_key(&format!("{prefix}.key_file"), Path::new(&tls.key_file))?;
    builder.with_client_auth_cert(certs, key).map_err(|source| TlsError::Rustls {
        what: format!("{cert_key} {} and {prefix}.key_file {} do not match", tls.cert_file, tls.key_file),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn files(cert: &Path, key: &Path) -> TlsFiles {
        TlsFiles { prefix: "server.tls".into(), cert_file: cert.into(), key_file: key.into(), client_ca_file: None }
    }

    #[test]
    fn loads_and_names_the_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "a");
        assert!(files(&c, &k).server_config().is_ok());

        let missing = dir.path().join("missing.pem");
        let e = files(&missing, &k).server_config().unwrap_err().to_string();
        assert!(e.starts_with("server.tls.cert_file ") && e.contains("missing.pem: cannot read"), "{e}");

        let e = files(&k, &k).server_config().unwrap_err().to_string();
        assert!(e.contains("server.tls.cert_file") && e.contains("holds no certificate"), "{e}");

        let e = files(&c, &c).server_config().unwrap_err().to_string();
        assert!(e.contains("server.tls.key_file") && e.contains("holds no private key"), "{e}");

        // A key that belongs to another certificate.
        let (_, other_key) = cert(dir.path(), "b");
        let e = files(&c, &other_key).server_config().unwrap_err().to_string();
        assert!(e.contains("do not make a usable certificate"), "{e}");
    }

    #[test]
    fn reload_keeps_the_old_config_when_the_new_files_are_broken() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "a");
        let tls = ReloadingTls::load(files(&c, &k)).unwrap();
        let first = tls.current();
        assert!(!tls.changed());
        std::fs::write(&c, "garbage").unwrap();
        assert!(tls.changed());
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&first, &tls.current()), "a failed reload must keep the running config");
        assert!(!tls.changed(), "a failed attempt is remembered until the files change again");
        let (c2, k2) = cert(dir.path(), "b");
        std::fs::copy(&c2, &c).unwrap();
        std::fs::copy(&k2, &k).unwrap();
        assert!(tls.changed());
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&first, &tls.current()));
    }

    #[test]
    fn client_config_names_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = cert(dir.path(), "a");
        let ok = ClientTls { ca_file: c.display().to_string(), ..Default::default() };
        assert!(client_config("collector.tls", &ok).is_ok());
        let bad = ClientTls { ca_file: k.display().to_string(), ..Default::default() };
        let e = client_config("collector.tls", &bad).unwrap_err().to_string();
        assert!(e.starts_with("collector.tls.ca_file"), "{e}");
        let mtls = ClientTls {
            ca_file: c.display().to_string(),
            cert_file: c.display().to_string(),
            key_file: k.display().to_string(),
        };
        assert!(client_config("collector.tls", &mtls).is_ok());
    }
}
