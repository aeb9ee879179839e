//! Graceful shutdown with real processes and real signals: the collector stops accepting,
//! answers the push in flight, and exits; it also exits when a request would hold it past
//! `shutdown_timeout`; the agent exits within its bound while its receiver is down, with its
//! checkpoints saved (after the restart nothing is read twice and nothing is lost); a second
//! signal ends a stop at once.

mod harness;
mod tail_support;

use harness::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tail_support::{Collector, agent_config, append, metric};

const WAIT: Duration = Duration::from_secs(30);

/// Sends a push's headers with `Expect: 100-continue` and waits for `100 Continue`: from then
/// on the request is in the collector's hands (its handler is reading the body).
fn start_push(url: &str, body: &[u8]) -> TcpStream {
    let addr = url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        conn,
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "expected 100 Continue, got {line:?}");
    reader.read_line(&mut line).unwrap();
    conn
}

#[test]
fn the_collector_answers_the_push_in_flight_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    let config = collector_config(dir.path(), "");
    let (mut proc, url) = start_collector(dir.path(), &config);
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let body = format!(r#"{{"streams":[{{"stream":{{"job":"s"}},"values":[["{ts}","pushed during shutdown"]]}}]}}"#);
    let mut conn = start_push(&url, body.as_bytes());

    proc.signal("TERM");
    wait_for_log(&dir.path().join("collector.log"), "shutting down", 1, WAIT);
    // The listener is closed: new connections are refused...
    let addr = url.trim_start_matches("http://").to_string();
    eventually(WAIT, || TcpStream::connect(&addr).is_err().then_some(())).expect("new connections refused");
    assert!(proc.child.try_wait().unwrap().is_none(), "still answering the request in flight");
    // ...and the request in flight is answered.
    conn.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let status = proc.wait_exit(WAIT).expect("the collector exits once the request is answered");
    assert!(status.success(), "{status:?}");
    wait_for_log(&dir.path().join("collector.log"), "stopped", 1, WAIT);

    // The acknowledged line is there after the restart.
    let (_proc, url) = start_collector(dir.path(), &config);
    let (code, found) = get(&format!("{url}/loki/api/v1/query_range?query=%7Bjob%3D%22s%22%7D&start=0"));
    assert_eq!(code, 200);
    assert!(found.contains("pushed during shutdown"), "{found}");
}

#[test]
fn the_collector_exits_within_shutdown_timeout_when_a_request_never_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = collector_config(dir.path(), "").replace("data_dir", "shutdown_timeout = \"1s\"\ndata_dir");
    let (mut proc, url) = start_collector(dir.path(), &config);
    // A push whose body never comes.
    let _conn = start_push(&url, &[b' '; 100]);
    proc.signal("TERM");
    let status = proc.wait_exit(WAIT).expect("exits within its bound");
    assert!(status.success(), "{status:?}");
    wait_for_log(&dir.path().join("collector.log"), "not finished within shutdown_timeout", 1, WAIT);
    // Nothing acknowledged depended on that request: it starts again cleanly.
    let (_proc, url) = start_collector(dir.path(), &config);
    assert_eq!(get(&format!("{url}/ready")).0, 200);
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> String {
    range.map(|i| format!("{prefix} {i:05} padding padding padding\n")).collect()
}

fn count(lines: &[(HashMap<String, String>, String)], prefix: &str) -> (usize, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (_, l) in lines.iter().filter(|(_, l)| l.starts_with(&format!("{prefix} "))) {
        *seen.entry(l.as_str()).or_default() += 1;
    }
    (seen.len(), seen.values().sum())
}

#[test]
fn the_agent_stops_within_its_bound_while_the_receiver_is_down_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut c = Collector::start(&dir.path().join("collector"));
    let sources = format!(
        "[sources]\npoll_interval = \"100ms\"\n\n[[sources.files]]\njob = \"t\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\n",
        logs.display()
    );
    let cfg = format!("shutdown_timeout = \"1s\"\n{}", agent_config(dir.path(), &c.url(), &sources));
    let app = logs.join("app.log");
    append(&app, &numbered("a", 0..200));
    let (mut agent, url) = start_agent(dir.path(), &cfg);
    c.wait_for(r#"{job="t"}"#, WAIT, |l| count(l, "a").0 == 200);

    // The receiver goes away; the agent reads more and keeps retrying.
    c.down();
    append(&app, &numbered("b", 0..200));
    eventually(WAIT, || (metric(&url, "osprey_agent_lines_read_total") >= 400.0).then_some(()))
        .expect("the agent read the new lines");
    let status = agent.terminate(WAIT).expect("the agent exits within its bound although it cannot deliver");
    assert!(status.success(), "{status:?}");

    // Back up: the undelivered lines come, the delivered ones do not come again.
    c.up();
    let (_agent, _) = start_agent(dir.path(), &cfg);
    let lines = c.wait_for(r#"{job="t"}"#, WAIT, |l| count(l, "b").0 == 200);
    assert_eq!(count(&lines, "a"), (200, 200), "acknowledged before the stop: not read again");
    assert_eq!(count(&lines, "b"), (200, 200), "undelivered at the stop: sent after the restart, once");
}

#[test]
fn a_second_signal_ends_the_stop_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let sources = format!(
        "[[sources.files]]\njob = \"t\"\ninclude = [\"{}/*.log\"]\nread_from = \"beginning\"\n",
        logs.display()
    );
    // Nothing listens there: the lines can never be delivered, and the bound is long.
    let receiver = format!("http://127.0.0.1:{}", free_port());
    let cfg = format!("shutdown_timeout = \"10m\"\n{}", agent_config(dir.path(), &receiver, &sources));
    append(&logs.join("app.log"), &numbered("a", 0..50));
    let (mut agent, url) = start_agent(dir.path(), &cfg);
    eventually(WAIT, || (metric(&url, "osprey_agent_batches_retried_total") >= 1.0).then_some(()))
        .expect("the sink is retrying");
    agent.signal("TERM");
    let log = dir.path().join("agent.log");
    wait_for_log(&log, "shutting down", 1, WAIT);
    assert!(agent.child.try_wait().unwrap().is_none(), "the first signal waits for the sink (up to 10m)");
    agent.signal("TERM");
    let status = agent.wait_exit(WAIT).expect("the second signal exits at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
    wait_for_log(&log, "second stop signal", 1, WAIT);
}
