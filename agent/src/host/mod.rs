//! Host metrics with node_exporter's names, types, labels and HELP text.
//!
//! First cut: cpu, meminfo, loadavg. Each collector reads one `/proc` file and returns metric
//! families; the agent ships them with remote_write and serves them on its `/metrics`.

mod cpu;
mod loadavg;
mod meminfo;

use osprey_protocol::exposition;
use osprey_protocol::prompb::{Label, Sample, TimeSeries};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One metric family: its samples share a name, a type and a HELP text.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

impl Family {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: Kind) -> Self {
        Family { name: name.into(), help: help.into(), kind, samples: Vec::new() }
    }

    pub fn single(name: &str, help: &str, kind: Kind, value: f64) -> Self {
        let mut f = Family::new(name, help, kind);
        f.samples.push((Vec::new(), value));
        f
    }
}

/// Where `/proc` lives (a test or a container can point elsewhere).
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths { proc: PathBuf::from("/proc") }
    }
}

impl HostPaths {
    fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Runs every collector; a collector that fails is skipped with a debug log.
pub fn collect(paths: &HostPaths) -> Vec<Family> {
    let mut out = Vec::new();
    type Collect = fn(&HostPaths, &mut Vec<Family>) -> std::io::Result<()>;
    let collectors: [(&str, Collect); 3] =
        [("cpu", cpu::collect), ("meminfo", meminfo::collect), ("loadavg", loadavg::collect)];
    for (name, collect) in collectors {
        if let Err(e) = collect(paths, &mut out) {
            tracing::debug!(collector = name, error = %e, "host metric collector failed");
        }
    }
    out
}

/// Converts families into remote_write series with `extra` labels (e.g. `host`, `job`) and one
/// timestamp.
pub fn to_series(families: &[Family], extra: &[(String, String)], ts_ms: i64) -> Vec<TimeSeries> {
    let mut out = Vec::with_capacity(families.iter().map(|f| f.samples.len()).sum());
    for f in families {
        for (labels, value) in &f.samples {
            let mut l: Vec<Label> = Vec::with_capacity(labels.len() + extra.len() + 1);
            l.push(Label::new("__name__", f.name.clone()));
            l.extend(labels.iter().map(|(k, v)| Label::new(k.clone(), v.clone())));
            l.extend(
                extra
                    .iter()
                    .filter(|(k, _)| !labels.iter().any(|(lk, _)| lk == k))
                    .map(|(k, v)| Label::new(k.clone(), v.clone())),
            );
            l.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(TimeSeries {
                labels: l,
                samples: vec![Sample { value: *value, timestamp: ts_ms }],
                exemplars: vec![],
            });
        }
    }
    out
}

/// Renders families as exposition text, as node_exporter serves them.
pub fn to_text(families: &[Family], out: &mut String) {
    for f in families {
        exposition::write_family_header(out, &f.name, &f.help, f.kind.as_str());
        for (labels, value) in &f.samples {
            exposition::write_sample(out, &f.name, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())), *value, None);
        }
    }
}
