//! Metric metadata (type, help, unit) per metric family, as senders attach it: remote_write 1.0
//! sends `MetricMetadata` entries now and then, 2.0 sends it with every series. Served on
//! `/api/v1/metadata` and used for `# HELP` lines on `/federate`.
//!
//! Bounded by `metrics.max_metadata_families` per tenant: metadata of further families is
//! dropped and counted (their samples are stored all the same). Entries not refreshed within
//! the series TTL expire.

use hashbrown::HashMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `MetricType` number (shared by 1.0 and 2.0).
    pub kind: i32,
    pub help: Box<str>,
    pub unit: Box<str>,
    touched: u32,
}

impl Metadata {
    /// The type as Prometheus' `/api/v1/metadata` spells it.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            1 => "counter",
            2 => "gauge",
            3 => "histogram",
            4 => "gaugehistogram",
            5 => "summary",
            6 => "info",
            7 => "stateset",
            _ => "unknown",
        }
    }
}

pub struct MetadataStore {
    families: HashMap<Box<str>, Metadata>,
    max: usize,
}

/// Result of [`MetadataStore::put`].
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// Nothing to store (no type, help or unit).
    Empty,
    /// Over `max_metadata_families`: dropped.
    Full,
}

impl MetadataStore {
    pub fn new(max: usize) -> Self {
        MetadataStore { families: HashMap::new(), max }
    }

    pub fn put(&mut self, family: &str, kind: i32, help: &str, unit: &str, now: u32) -> Put {
        if kind == 0 && help.is_empty() && unit.is_empty() {
            return Put::Empty;
        }
        if let Some(m) = self.families.get_mut(family) {
            if m.kind != kind || &*m.help != help || &*m.unit != unit {
                *m = Metadata { kind, help: help.into(), unit: unit.into(), touched: now };
            }
            m.touched = now;
            return Put::Stored;
        }
        if self.families.len() >= self.max {
            return Put::Full;
        }
        self.families.insert(family.into(), Metadata { kind, help: help.into(), unit: unit.into(), touched: now });
        Put::Stored
    }

    pub fn get(&self, family: &str) -> Option<&Metadata> {
        self.families.get(family)
    }

    /// The metadata that describes the series named `name`: its own family's, or, for the
    /// `_bucket`, `_sum`, `_count`, `_total`, `_created` and `_info` series of a family
    /// described without the suffix (histograms, summaries, OpenMetrics counters), the family's.
    pub fn for_series(&self, name: &str) -> Option<&Metadata> {
        if let Some(m) = self.families.get(name) {
            return Some(m);
        }
        ["_bucket", "_sum", "_count", "_total", "_created", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).and_then(|base| self.families.get(base)))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Metadata)> {
        self.families.iter().map(|(k, v)| (&**k, v))
    }

    pub fn expire(&mut self, cutoff: u32) {
        self.families.retain(|_, m| m.touched >= cutoff);
    }

    pub fn len(&self) -> usize {
        self.families.len()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_resolves_suffixes() {
        let mut m = MetadataStore::new(2);
        assert_eq!(m.put("http_seconds", 3, "Latency.", "seconds", 0), Put::Stored);
        assert_eq!(m.put("x", 0, "", "", 0), Put::Empty);
        assert_eq!(m.put("up", 2, "Up.", "", 0), Put::Stored);
        assert_eq!(m.put("third", 1, "h", "", 0), Put::Full);
        assert_eq!(m.put("up", 2, "Up!", "", 1), Put::Stored, "updates do not count against the bound");
        assert_eq!(&*m.get("up").unwrap().help, "Up!");
        assert_eq!(m.for_series("http_seconds_bucket").unwrap().type_name(), "histogram");
        assert!(m.for_series("nothing_bucket").is_none());
        m.expire(1);
        assert_eq!(m.len(), 1);
    }
}
