//! The HTTP listener both Osprey roles share, and the TLS and token pieces around it.
//!
//! - [`listener`]: the accept loop (hyper's HTTP/1.1 server under an axum router) with a
//!   connection limit, header and handshake timeouts, a header size limit, a plain-HTTP answer
//!   on a TLS port, and graceful draining. `axum::serve` offers none of these knobs.
//! - [`tls`]: server configs read from PEM files and swapped when the files change or on
//!   [`tls::ReloadingTls::reload`] (open connections keep the config they started with); the
//!   client configs the agent and `osprey query` verify receivers with.
//! - [`token`]: bearer secrets read from files, kept as SHA-256 digests, compared in constant
//!   time, never logged.

pub mod listener;
pub mod tls;
pub mod token;

pub use listener::{ListenerMetrics, ListenerOptions, bind, serve};
pub use tls::ReloadingTls;
