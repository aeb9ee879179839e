//! How the command-line clients (`osprey query`, `osprey status`) reach a secured agent or
//! collector: one set of flags (token file, CA, client certificate) and the HTTP client built
//! from them, so both commands take the same options with the same environment variables.

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Args, Clone, Debug, Default)]
pub struct ConnectArgs {
    /// File holding a bearer token (collectors with `[auth]`: the query scope for `query`, the
    /// metrics scope for `status`; agents with `server.bearer_token_file`).
    #[arg(long, env = "OSPREY_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<std::path::PathBuf>,
    /// PEM CA certificates that sign an https server's certificate (default: the system's).
    #[arg(long, env = "OSPREY_CA_FILE")]
    pub ca_file: Option<String>,
    /// PEM client certificate (and --key-file) for a server that requires mutual TLS.
    #[arg(long, env = "OSPREY_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<String>,
    #[arg(long, env = "OSPREY_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<String>,
}

pub type HttpsClient =
    Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>;

impl ConnectArgs {
    /// The TLS client config of `--ca-file`, `--cert-file`, `--key-file`.
    pub fn tls_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let tls = osprey_config::tls::ClientTls {
            ca_file: self.ca_file.clone().unwrap_or_default(),
            cert_file: self.cert_file.clone().unwrap_or_default(),
            key_file: self.key_file.clone().unwrap_or_default(),
        };
        osprey_server::tls::client_config("client", &tls).context("--ca-file / --cert-file / --key-file")
    }

    /// `Authorization: Bearer <token>` from `--bearer-token-file`.
    pub fn authorization(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.bearer_token_file else { return Ok(None) };
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --bearer-token-file {}", path.display()))?;
        Ok(Some(format!("Bearer {}", token.trim())))
    }

    /// A client for `http://` and `https://` URLs with these TLS settings.
    pub fn client(&self) -> anyhow::Result<HttpsClient> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.tls_config()?)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client::builder(TokioExecutor::new()).build(connector))
    }
}
