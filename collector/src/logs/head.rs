//! The head: lines acknowledged since the last flush, in memory and queryable.
//!
//! Every line in the head is also in the WAL (it was appended and fsynced before it was
//! inserted here), so the head is a cache that a restart rebuilds by replaying the WAL. Per
//! stream it keeps one text arena and parallel vectors (timestamp, end offset), so inserting a
//! line is two pushes and a copy, and scanning a stream is a walk over contiguous memory.

use std::collections::HashMap;
use std::sync::Arc;

/// Text arena chunk size: lines are appended to fixed-capacity chunks so the head never holds
/// the up-to-2x spare capacity of a doubling buffer (that was ~40 % of RSS at 128 MiB heads).
const CHUNK: usize = 1 << 20;

/// Lines of one stream, in arrival order (timestamps may go back within the out-of-order
/// window; a flush sorts them).
#[derive(Default)]
pub struct StreamHead {
    pub ts: Vec<i64>,
    /// Per line: chunk index, start and end offsets in that chunk.
    spans: Vec<(u32, u32, u32)>,
    /// Shared with scans that copied this stream's positions ([`StreamHead::snapshot`]); a push
    /// into a chunk a scan still holds copies it first (at most 1 MiB).
    chunks: Vec<Arc<String>>,
    text_bytes: usize,
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
        let fits = self.chunks.last().is_some_and(|c| c.capacity() - c.len() >= line.len());
        if !fits {
            self.chunks.push(Arc::new(String::with_capacity(CHUNK.max(line.len()))));
        }
        let at = self.chunks.len() - 1;
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        if chunk.capacity() - chunk.len() < line.len() {
            chunk.reserve_exact(CHUNK.max(line.len()));
        }
        let start = chunk.len();
        chunk.push_str(line);
        self.spans.push((at as u32, start as u32, chunk.len() as u32));
        self.text_bytes += line.len();
    }

    pub fn line(&self, i: usize) -> &str {
        let (c, a, b) = self.spans[i];
        self.chunks.get(c as usize).and_then(|c| c.get(a as usize..b as usize)).unwrap_or("")
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

    /// A copy of this stream's positions sharing its text, so a scan can read it without
    /// holding the head's lock (the copy costs 20 bytes per line; the text is not copied).
    pub fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            ts: self.ts.clone(),
            spans: self.spans.clone(),
            chunks: self.chunks.clone(),
            meta: self.meta.clone(),
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
        self.text_bytes
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

/// See [`StreamHead::snapshot`].
pub struct StreamSnapshot {
    pub ts: Vec<i64>,
    spans: Vec<(u32, u32, u32)>,
    chunks: Vec<Arc<String>>,
    meta: Vec<(u32, Vec<(String, String)>)>,
}

impl StreamSnapshot {
    pub fn line(&self, i: usize) -> &str {
        let (c, a, b) = self.spans[i];
        self.chunks.get(c as usize).and_then(|c| c.get(a as usize..b as usize)).unwrap_or("")
    }

    pub fn metadata(&self, i: usize) -> Vec<(&str, &str)> {
        if self.meta.is_empty() {
            return Vec::new();
        }
        match self.meta.binary_search_by_key(&(i as u32), |(k, _)| *k) {
            Ok(at) => self.meta[at].1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_survives_later_pushes() {
        let mut s = StreamHead::default();
        s.push(2, "two", &[]);
        s.push(1, "one", &[("k", "v")]);
        let snap = s.snapshot();
        s.push(3, "three", &[]);
        assert_eq!((snap.line(0), snap.line(1), snap.ts.len()), ("two", "one", 2));
        assert_eq!(snap.metadata(1), vec![("k", "v")]);
        assert_eq!(s.line(2), "three");
        assert_eq!(s.sorted_order(), vec![1, 0, 2]);
        let long = "x".repeat(3 << 20);
        s.push(4, &long, &[]);
        assert_eq!(s.line(3).len(), 3 << 20);
        assert_eq!(s.text_bytes(), 3 + 3 + 5 + (3 << 20));
    }
}
