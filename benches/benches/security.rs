//! What security adds per request and per connection: deciding a request against the token
//! table (a SHA-256 of the presented token, then a constant-time comparison with every known
//! digest), a TLS handshake (ECDSA P-256 certificate, TLS 1.3, both ends in memory: the CPU of
//! client and server together), and moving bulk data through an established TLS session.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use osprey_collector::auth::{TokenTable, decide};
use osprey_config::CollectorConfig;
use osprey_config::collector::{Scope, Token};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConnection, ConnectionCommon, ServerConnection};
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

fn token_table(dir: &std::path::Path, n: usize) -> TokenTable {
    let mut cfg = CollectorConfig::default();
    cfg.auth.enabled = true;
    std::fs::create_dir_all(dir).expect("token dir");
    for i in 0..n {
        let file = dir.join(format!("t{i}"));
        std::fs::write(&file, format!("token-number-{i:04}-0123456789abcdef")).expect("write token");
        cfg.auth.tokens.push(Token {
            name: format!("t{i}"),
            file: file.display().to_string(),
            scopes: vec![Scope::Push],
            tenants: vec![format!("tenant-{i}")],
        });
    }
    TokenTable::from_config(&cfg).expect("tokens")
}

fn authorization(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("auth_decide");
    for n in [1usize, 10, 100] {
        let table = token_table(&dir.path().join(n.to_string()), n);
        let mut headers = axum::http::HeaderMap::new();
        let last = format!("Bearer token-number-{:04}-0123456789abcdef", n - 1);
        headers.insert("authorization", last.parse().expect("header"));
        g.bench_with_input(BenchmarkId::new("tokens", n), &n, |b, _| {
            b.iter(|| {
                let t = decide(&table, Some("/loki/api/v1/push"), "/loki/api/v1/push", black_box(&headers));
                black_box(t.expect("allowed"))
            })
        });
    }
}

fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("cert");
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Moves TLS records from one end to the other until neither has anything to send.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection, buf: &mut Vec<u8>) {
    while send(client, server, buf) | send(server, client, buf) {}
}

/// Hands everything `from` wants to write to `to`; returns whether anything moved.
fn send<A, B>(from: &mut ConnectionCommon<A>, to: &mut ConnectionCommon<B>, buf: &mut Vec<u8>) -> bool {
    let mut moved = false;
    while from.wants_write() {
        buf.clear();
        from.write_tls(buf).expect("write_tls");
        let mut records = buf.as_slice();
        while !records.is_empty() {
            to.read_tls(&mut records).expect("read_tls");
            to.process_new_packets().expect("process_new_packets");
        }
        moved = true;
    }
    moved
}

fn connect(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> (ClientConnection, ServerConnection) {
    let name = ServerName::try_from("localhost").expect("name");
    let mut client = ClientConnection::new(client_cfg.clone(), name).expect("client");
    let mut server = ServerConnection::new(server_cfg.clone()).expect("server");
    let mut buf = Vec::with_capacity(64 << 10);
    pump(&mut client, &mut server, &mut buf);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    (client, server)
}

fn tls(c: &mut Criterion) {
    let (server_cfg, client_cfg) = tls_configs();
    c.bench_function("tls_handshake_both_ends", |b| b.iter(|| black_box(connect(&server_cfg, &client_cfg))));

    let mut g = c.benchmark_group("tls_bulk");
    const MIB: usize = 1 << 20;
    g.throughput(Throughput::Bytes(MIB as u64));
    let payload = vec![b'x'; MIB];
    let (mut client, mut server) = connect(&server_cfg, &client_cfg);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut plain = vec![0u8; 64 << 10];
    g.bench_function("client_to_server_1MiB", |b| {
        b.iter(|| {
            let mut received = 0;
            for chunk in payload.chunks(16 << 10) {
                client.writer().write_all(chunk).expect("write");
                pump(&mut client, &mut server, &mut buf);
                loop {
                    match server.reader().read(&mut plain) {
                        Ok(0) => break,
                        Ok(n) => received += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            assert_eq!(received, MIB);
        })
    });
}

criterion_group!(benches, authorization, tls);
criterion_main!(benches);
