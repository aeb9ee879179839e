//! A minimal HTTP/1.1 receiver that acknowledges every request at once (204), decoding
//! nothing: the far end of the tail benchmark, so that what is measured is the agent alone.
//! Keep-alive, `Content-Length` bodies only (what the agent's client sends).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Receiver {
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Receiver {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Listens on a free port of 127.0.0.1; one thread per connection.
pub fn start() -> std::io::Result<Receiver> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (r, b) = (r.clone(), b.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, &r, &b);
            });
        }
    });
    Ok(Receiver { addr, requests, bytes })
}

fn serve(conn: TcpStream, requests: &AtomicU64, bytes: &AtomicU64) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::with_capacity(1 << 20, conn);
    let mut body = Vec::new();
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
        requests.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
        out.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")?;
    }
}
