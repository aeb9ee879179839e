//! Test servers for the scrape and remote_write tests: a crafted-target HTTP server whose
//! answers the test chooses per path, and a remote_write receiver that decodes and keeps every
//! request. Plain std threads and sockets: real HTTP/1.1 on 127.0.0.1.

#![allow(dead_code)]

use osprey_protocol::prompb::{TimeSeries, decode_write_request};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a handler answers: status, extra headers, body, and a delay before answering.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn text(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; version=0.0.4".into())],
            body: body.as_bytes().to_vec(),
            delay: Duration::ZERO,
        }
    }
}

pub type Headers = HashMap<String, String>;
type Handler = Arc<dyn Fn(&str, &Headers, &[u8]) -> Reply + Send + Sync>;

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Headers, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, body))
}

/// An HTTP server on 127.0.0.1 that answers with `handler`. `stop()` closes the listener and
/// every connection (the port then refuses connections, like a dead receiver).
pub struct Server {
    pub port: u16,
    stopped: Arc<AtomicBool>,
}

impl Server {
    pub fn start(port: u16, handler: impl Fn(&str, &Headers, &[u8]) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind test server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let handler: Handler = Arc::new(handler);
        let stop = stopped.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let handler = handler.clone();
                        let stop = stop.clone();
                        std::thread::spawn(move || serve(conn, handler, stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { port, stopped }
    }

    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(conn: TcpStream, handler: Handler, stop: Arc<AtomicBool>) {
    conn.set_read_timeout(Some(Duration::from_millis(200))).ok();
    let mut writer = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_request(&mut reader) {
            Some(r) => r,
            None => {
                // A read timeout between requests: keep the connection unless stopped.
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let mut probe = [0u8; 1];
                match reader.get_ref().peek(&mut probe) {
                    Ok(0) => return,
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        continue;
                    }
                    Err(_) => return,
                }
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let reply = handler(&req.0, &req.1, &req.2);
        if !reply.delay.is_zero() {
            std::thread::sleep(reply.delay);
        }
        let mut head = format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\n", reply.status, reply.body.len());
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).and_then(|_| writer.write_all(&reply.body)).is_err() {
            return;
        }
    }
}

/// Every series received by a remote_write [`Receiver`], in arrival order.
pub type Received = Arc<Mutex<Vec<TimeSeries>>>;

/// Starts a remote_write receiver on `port` (0: any) that decodes each request and answers 204.
pub fn receiver(port: u16) -> (Server, Received) {
    let got: Received = Arc::default();
    let store = got.clone();
    let server = Server::start(port, move |_, _, body| match decode_write_request(body, 64 << 20) {
        Ok(req) => {
            store.lock().unwrap().extend(req.timeseries);
            Reply { status: 204, headers: vec![], body: vec![], delay: Duration::ZERO }
        }
        Err(e) => Reply { status: 400, headers: vec![], body: e.to_string().into_bytes(), delay: Duration::ZERO },
    });
    (server, got)
}

pub fn label<'a>(s: &'a TimeSeries, name: &str) -> Option<&'a str> {
    s.labels.iter().find(|l| l.name == name).map(|l| l.value.as_str())
}

/// The last value received for the series with these labels (stale markers included).
pub fn last_value(got: &Received, labels: &[(&str, &str)]) -> Option<f64> {
    got.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|s| labels.iter().all(|(k, v)| label(s, k) == Some(*v)))
        .and_then(|s| s.samples.last().map(|x| x.value))
}
