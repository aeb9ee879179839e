//! The head: lines acknowledged since the last flush, in memory and queryable.
//!
//! Every line in the head is also in the WAL (it was appended and fsynced before it was
//! inserted here), so the head is a cache that a restart rebuilds by replaying the WAL. Per
//! stream it keeps one text arena and parallel vectors (timestamp, end offset), so inserting a
//! line is two pushes and a copy, and scanning a stream is a walk over contiguous memory.

use std::collections::HashMap;

/// Lines of one stream, in arrival order (timestamps may go back within the out-of-order
/// window; a flush sorts them).
#[derive(Default)]
pub struct StreamHead {
    pub ts: Vec<i64>,
    ends: Vec<usize>,
    text: String,
    /// Structured metadata of the entries that have any, by entry index.
    meta: Vec<(u32, Vec<(String, String)>)>,
    pub min_ts: i64,
    pub max_ts: i64,
}

impl StreamHead {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn push(&mut self, ts: i64, line: &str, metadata: &[(&str, &str)]) {
        if self.ts.is_empty() {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        if !metadata.is_empty() {
            self.meta
                .push((self.ts.len() as u32, metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        }
        self.ts.push(ts);
        self.text.push_str(line);
        self.ends.push(self.text.len());
    }

    pub fn line(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..self.ends[i]).unwrap_or("")
    }

    /// Metadata of entry `i` (entries with metadata are few; binary search over them).
    pub fn metadata(&self, i: usize) -> Vec<(&str, &str)> {
        if self.meta.is_empty() {
            return Vec::new();
        }
        match self.meta.binary_search_by_key(&(i as u32), |(k, _)| *k) {
            Ok(at) => self.meta[at].1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Entry indexes sorted by timestamp (stable: equal timestamps keep arrival order).
    pub fn sorted_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.ts.len() as u32).collect();
        if !self.ts.windows(2).all(|w| w[0] <= w[1]) {
            order.sort_by_key(|&i| self.ts[i as usize]);
        }
        order
    }

    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }
}

/// All tenants' head data. Streams are keyed by their id in the tenant's index.
#[derive(Default)]
pub struct Head {
    pub tenants: HashMap<String, HashMap<u32, StreamHead>>,
    /// Line bytes held (the flush trigger and the memory bound).
    pub bytes: usize,
    pub entries: usize,
    /// When the first line of this head arrived (the flush-interval trigger).
    pub since: Option<std::time::Instant>,
}

impl Head {
    pub fn stream_mut(&mut self, tenant: &str, stream: u32) -> &mut StreamHead {
        if self.since.is_none() {
            self.since = Some(std::time::Instant::now());
        }
        if !self.tenants.contains_key(tenant) {
            self.tenants.insert(tenant.to_string(), HashMap::new());
        }
        self.tenants.get_mut(tenant).map(|t| t.entry(stream).or_default()).expect("inserted above")
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}
