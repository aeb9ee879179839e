//! One shard of a tenant's series: its own symbols, series slots, hash table and index, behind
//! one lock.
//!
//! A series lives in exactly one shard, chosen by the hash of its label set, so writers to
//! different shards never wait for each other and a long read (a `/federate` of a million
//! series) holds one shard at a time. Everything a series costs is here: one slot in `series`
//! (48 bytes), its label ids (one allocation, 8 bytes per label pair), one hash table slot, and
//! one entry per label pair in the index.

use super::postings::Index;
use super::symbols::Symbols;
use hashbrown::HashTable;
use osprey_protocol::is_stale_nan;
use osprey_protocol::remote_write::Latest;
use roaring::RoaringBitmap;

pub struct Series {
    /// Alternating name and value symbols, sorted by name as received.
    pub labels: Box<[u32]>,
    pub hash: u64,
    pub value: f64,
    pub timestamp_ms: i64,
    /// Store clock (seconds) when the series last received a sample, for expiry.
    pub touched: u32,
}

/// What happened to one incoming series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// An existing series took the sample (or kept a newer one it already had).
    Updated,
    /// A new series was created.
    Created,
    /// The sample was a stale marker; `true` when it removed a series.
    Stale(bool),
    /// A new series was refused by the caller's limit.
    Refused,
}

#[derive(Default)]
pub struct Shard {
    pub symbols: Symbols,
    series: Vec<Option<Series>>,
    free: Vec<u32>,
    table: HashTable<u32>,
    pub index: Index,
}

impl Shard {
    fn find(&self, hash: u64, labels: &[(&str, &str)]) -> Option<u32> {
        self.table
            .find(hash, |&id| {
                let Some(s) = &self.series[id as usize] else { return false };
                s.hash == hash
                    && s.labels.len() == labels.len() * 2
                    && s.labels
                        .chunks_exact(2)
                        .zip(labels)
                        .all(|(ids, (n, v))| self.symbols.get(ids[0]) == *n && self.symbols.get(ids[1]) == *v)
            })
            .copied()
    }

    /// Stores `latest` for the series `labels` (hash `hash`). `may_create` is asked before a
    /// new series is made and may refuse it (limits); it is not asked for existing series.
    pub fn upsert(
        &mut self,
        hash: u64,
        labels: &[(&str, &str)],
        latest: Latest,
        now: u32,
        may_create: impl FnOnce() -> bool,
    ) -> Upsert {
        let existing = self.find(hash, labels);
        if is_stale_nan(latest.value) {
            // A stale marker ends the series now: Prometheus' federation and queries stop
            // returning it at once rather than after the lookback.
            if let Some(id) = existing {
                let newer = self.series[id as usize].as_ref().is_some_and(|s| s.timestamp_ms > latest.timestamp_ms);
                if !newer {
                    self.remove(id);
                    return Upsert::Stale(true);
                }
            }
            return Upsert::Stale(false);
        }
        if let Some(id) = existing {
            if let Some(s) = self.series[id as usize].as_mut() {
                if latest.timestamp_ms >= s.timestamp_ms {
                    s.value = latest.value;
                    s.timestamp_ms = latest.timestamp_ms;
                }
                s.touched = now;
            }
            return Upsert::Updated;
        }
        if !may_create() {
            return Upsert::Refused;
        }
        let ids: Box<[u32]> =
            labels.iter().flat_map(|(n, v)| [self.symbols.acquire(n), self.symbols.acquire(v)]).collect();
        let series = Series { labels: ids, hash, value: latest.value, timestamp_ms: latest.timestamp_ms, touched: now };
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.series.push(None);
                (self.series.len() - 1) as u32
            }
        };
        self.index.add(id, &series.labels);
        self.series[id as usize] = Some(series);
        let slots = &self.series;
        self.table.insert_unique(hash, id, |&i| slots[i as usize].as_ref().map_or(0, |s| s.hash));
        Upsert::Created
    }

    fn remove(&mut self, id: u32) {
        let Some(series) = self.series[id as usize].take() else { return };
        self.index.remove(id, &series.labels);
        for &sym in series.labels.iter() {
            self.symbols.release(sym);
        }
        if let Ok(entry) = self.table.find_entry(series.hash, |&i| i == id) {
            entry.remove();
        }
        self.free.push(id);
    }

    /// Removes series not touched since `cutoff` (store clock); returns how many.
    pub fn expire(&mut self, cutoff: u32) -> usize {
        let old: Vec<u32> = self
            .series
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.touched < cutoff).map(|_| i as u32))
            .collect();
        for &id in &old {
            self.remove(id);
        }
        if self.free.len() > 1024 && self.free.len() * 2 > self.series.len() {
            self.compact_tail();
        }
        old.len()
    }

    /// Gives back the memory of free slots at the end of the slot vector.
    fn compact_tail(&mut self) {
        while matches!(self.series.last(), Some(None)) {
            self.series.pop();
        }
        let len = self.series.len() as u32;
        self.free.retain(|&id| id < len);
        self.series.shrink_to(self.series.len() * 5 / 4);
        self.free.shrink_to_fit();
    }

    pub fn get(&self, id: u32) -> Option<&Series> {
        self.series.get(id as usize).and_then(Option::as_ref)
    }

    pub fn len(&self) -> usize {
        self.series.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The series selected by `matchers` (all series when empty).
    pub fn select(&self, matchers: &[crate::selector::Matcher]) -> RoaringBitmap {
        if matchers.is_empty() {
            return self.index.all().clone();
        }
        self.index.select(&self.symbols, matchers)
    }

    /// The labels of a series as strings.
    pub fn labels<'a>(&'a self, s: &'a Series) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        s.labels.chunks_exact(2).map(|p| (self.symbols.get(p[0]), self.symbols.get(p[1])))
    }

    /// The value of label `name` (a symbol id) on `s`.
    pub fn label_value(&self, s: &Series, name: u32) -> Option<u32> {
        s.labels.chunks_exact(2).find(|p| p[0] == name).map(|p| p[1])
    }

    /// Heap bytes held by this shard, estimated from capacities.
    pub fn heap_bytes(&self) -> usize {
        let label_bytes: usize = self.series.iter().flatten().map(|s| s.labels.len() * 4).sum();
        self.series.capacity() * std::mem::size_of::<Option<Series>>()
            + self.free.capacity() * 4
            + self.table.capacity() * 5
            + label_bytes
            + self.symbols.heap_bytes()
            + self.index.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: f64, timestamp_ms: i64) -> Latest {
        Latest { value, timestamp_ms }
    }

    #[test]
    fn upsert_keeps_the_newest_and_stale_removes() {
        let mut shard = Shard::default();
        let labels = [("__name__", "up"), ("job", "a")];
        assert_eq!(shard.upsert(7, &labels, sample(1.0, 10), 0, || true), Upsert::Created);
        assert_eq!(shard.upsert(7, &labels, sample(2.0, 5), 1, || true), Upsert::Updated);
        let id = shard.find(7, &labels).unwrap();
        assert_eq!((shard.get(id).unwrap().value, shard.get(id).unwrap().timestamp_ms), (1.0, 10));
        assert_eq!(shard.upsert(7, &labels, sample(3.0, 20), 1, || true), Upsert::Updated);
        assert_eq!(shard.get(id).unwrap().value, 3.0);
        // Same hash, different labels: a distinct series.
        assert_eq!(shard.upsert(7, &[("__name__", "up"), ("job", "b")], sample(1.0, 1), 1, || true), Upsert::Created);
        assert_eq!(shard.len(), 2);
        let stale = sample(f64::from_bits(osprey_protocol::STALE_NAN_BITS), 30);
        assert_eq!(shard.upsert(7, &labels, stale, 2, || true), Upsert::Stale(true));
        assert_eq!(shard.upsert(7, &labels, stale, 2, || true), Upsert::Stale(false));
        assert_eq!(shard.len(), 1);
        assert!(shard.symbols.lookup("a").is_none(), "symbols of the removed series are freed");
        assert_eq!(shard.upsert(9, &[("__name__", "x")], sample(1.0, 1), 2, || false), Upsert::Refused);
        assert_eq!(shard.len(), 1);
    }

    #[test]
    fn expiry_removes_idle_series_and_their_index() {
        let mut shard = Shard::default();
        shard.upsert(1, &[("__name__", "a")], sample(1.0, 1), 0, || true);
        shard.upsert(2, &[("__name__", "b")], sample(1.0, 1), 10, || true);
        assert_eq!(shard.expire(5), 1);
        assert_eq!(shard.len(), 1);
        assert_eq!(shard.index.all().len(), 1);
        assert!(shard.symbols.lookup("a").is_none());
        // The freed slot is reused.
        shard.upsert(3, &[("__name__", "c")], sample(1.0, 1), 10, || true);
        assert_eq!(shard.series.len(), 2);
    }
}
