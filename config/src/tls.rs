//! TLS settings shared by both roles: `[server.tls]` for a listener, and the client side
//! (`[collector.tls]` of the agent) that verifies a receiver and may present a certificate.
//!
//! Only paths live here: the files are read where they are used (the listener re-reads them
//! when they change), so this crate keeps reading nothing but the config file itself.

use crate::Duration;
use serde::{Deserialize, Serialize};

/// `[server.tls]`: serve HTTPS instead of HTTP. Off while `cert_file` is empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// PEM certificate chain, the server's certificate first. Empty: plain HTTP.
    pub cert_file: String,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// PEM CA certificates. Set: every client must present a certificate signed by one of
    /// them (mutual TLS); connections without one are refused during the handshake.
    pub client_ca_file: String,
    /// How often the three files are checked for changes (size, mtime, inode); a change loads
    /// them again for new connections, open connections keep theirs. `"0s"`: only on reload.
    pub reload_interval: Duration,
}

impl Default for ServerTls {
    fn default() -> Self {
        ServerTls {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl ServerTls {
    /// Whether the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// Problems, with key paths under `prefix` (e.g. `server.tls`).
    pub fn validate(&self, prefix: &str, p: &mut Vec<(String, String)>) {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, true) => p.push((format!("{prefix}.key_file"), "must be set when cert_file is set".into())),
            (true, false) => p.push((format!("{prefix}.cert_file"), "must be set when key_file is set".into())),
            _ => {}
        }
        if self.cert_file.is_empty() && !self.client_ca_file.is_empty() {
            p.push((
                format!("{prefix}.client_ca_file"),
                "client certificates need TLS: set cert_file and key_file too".into(),
            ));
        }
        let interval = self.reload_interval.get();
        if !interval.is_zero() && interval < std::time::Duration::from_millis(100) {
            p.push((format!("{prefix}.reload_interval"), "must be 0s (off) or at least 100ms".into()));
        }
    }
}

/// How a client verifies the server it sends to, and the certificate it may present.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// PEM CA certificates that sign the receiver's certificate. Empty: the system's trust
    /// store (`/etc/ssl/certs`).
    pub ca_file: String,
    /// PEM client certificate chain, for receivers that require mutual TLS. Empty: none.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
}

impl ClientTls {
    /// Problems, with key paths under `prefix` (e.g. `collector.tls`).
    pub fn validate(&self, prefix: &str, p: &mut Vec<(String, String)>) {
        match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (false, true) => p.push((format!("{prefix}.key_file"), "must be set when cert_file is set".into())),
            (true, false) => p.push((format!("{prefix}.cert_file"), "must be set when key_file is set".into())),
            _ => {}
        }
    }
}
