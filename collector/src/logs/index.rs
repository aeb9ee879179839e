//! The stream index of one tenant: stream ids, labels, and postings (label name → value →
//! sorted stream ids), rebuilt in memory at startup from the parts' stream tables and the WAL.
//!
//! Selectors are resolved here first: an equality matcher is one postings lookup, the lists of
//! several are intersected, and only the survivors are checked against the whole selector. With
//! Loki's default of 15 labels and 5,000 streams per tenant this is at most a few hundred KiB
//! per tenant, so there is no on-disk index to keep consistent.

use super::store::SharedLabels;
use crate::selector::{MatchOp, Selector};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub struct StreamInfo {
    pub canonical: Arc<str>,
    pub labels: SharedLabels,
    /// Newest timestamp accepted for the stream (the out-of-order window's reference).
    pub max_ts: i64,
    /// Last push, in seconds since the index was created (active-stream accounting).
    pub last_push: u64,
    pub active: bool,
}

#[derive(Default)]
pub struct TenantIndex {
    pub streams: Vec<StreamInfo>,
    by_labels: HashMap<Arc<str>, u32>,
    postings: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
    pub active: usize,
}

impl TenantIndex {
    pub fn get(&self, canonical: &str) -> Option<u32> {
        self.by_labels.get(canonical).copied()
    }

    /// The id of the stream with these labels, adding it if new.
    pub fn intern(&mut self, canonical: &str, labels: &[(String, String)]) -> u32 {
        if let Some(&id) = self.by_labels.get(canonical) {
            return id;
        }
        let id = self.streams.len() as u32;
        let canonical: Arc<str> = Arc::from(canonical);
        for (k, v) in labels {
            self.postings.entry(k.clone()).or_default().entry(v.clone()).or_default().push(id);
        }
        self.streams.push(StreamInfo {
            canonical: canonical.clone(),
            labels: Arc::new(labels.to_vec()),
            max_ts: i64::MIN,
            last_push: 0,
            active: false,
        });
        self.by_labels.insert(canonical, id);
        id
    }

    /// Stream ids matching `selector`, sorted.
    pub fn select(&self, selector: &Selector) -> Vec<u32> {
        let mut candidates: Option<Vec<u32>> = None;
        for m in &selector.matchers {
            if m.op != MatchOp::Equal || m.value.is_empty() {
                continue;
            }
            let list = self.postings.get(&m.name).and_then(|vals| vals.get(&m.value));
            let Some(list) = list else { return Vec::new() };
            candidates = Some(match candidates {
                None => list.clone(),
                Some(c) => intersect(&c, list),
            });
        }
        let all = || (0..self.streams.len() as u32).collect::<Vec<_>>();
        candidates
            .unwrap_or_else(all)
            .into_iter()
            .filter(|&id| selector.matches_pairs(&self.streams[id as usize].labels))
            .collect()
    }

    /// Every label name, and the values of one name, across all streams (callers filter by
    /// time through the data).
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.postings.keys().map(String::as_str)
    }

    pub fn label_values(&self, name: &str) -> impl Iterator<Item = (&str, &[u32])> {
        self.postings.get(name).into_iter().flat_map(|v| v.iter().map(|(k, ids)| (k.as_str(), ids.as_slice())))
    }
}

fn intersect(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_series_selector;

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn postings_and_selectors() {
        let mut ix = TenantIndex::default();
        let a = ix.intern(r#"{host="h1", job="a"}"#, &l(&[("host", "h1"), ("job", "a")]));
        let b = ix.intern(r#"{host="h2", job="a"}"#, &l(&[("host", "h2"), ("job", "a")]));
        let c = ix.intern(r#"{job="b"}"#, &l(&[("job", "b")]));
        assert_eq!(ix.intern(r#"{job="b"}"#, &l(&[("job", "b")])), c);
        let sel = |s: &str| ix.select(&parse_series_selector(s).unwrap());
        assert_eq!(sel(r#"{job="a"}"#), vec![a, b]);
        assert_eq!(sel(r#"{job="a", host!="h1"}"#), vec![b]);
        assert_eq!(sel(r#"{job=~"a|b", host=""}"#), vec![c]);
        assert_eq!(sel(r#"{job="zzz"}"#), Vec::<u32>::new());
        assert_eq!(ix.label_names().collect::<Vec<_>>(), vec!["host", "job"]);
    }
}
