//! The inverted index of one shard: for every label pair, the ids of the series that carry it.
//!
//! Label matchers become set operations on these lists, as in Prometheus' TSDB head: `=` is one
//! lookup, `!=` is "all minus one list", and regexes are tested once per distinct *value* of
//! the label (not once per series), then the lists of the values that match are merged. Lists
//! are roaring bitmaps, because a series can leave any list at any time (expiry, stale
//! markers) and a sorted `Vec` would make that O(n). Most values in a large fleet belong to a
//! single series (`instance`, `id`), so a list of one is stored inline without a bitmap.

use super::symbols::Symbols;
use crate::selector::{MatchOp, Matcher};
use hashbrown::HashMap;
use roaring::RoaringBitmap;

/// The series ids that carry one label pair.
pub enum Postings {
    One(u32),
    Many(Box<RoaringBitmap>),
}

impl Postings {
    fn insert(&mut self, id: u32) {
        match self {
            Postings::One(existing) if *existing == id => {}
            Postings::One(existing) => {
                let mut b = RoaringBitmap::new();
                b.insert(*existing);
                b.insert(id);
                *self = Postings::Many(Box::new(b));
            }
            Postings::Many(b) => {
                b.insert(id);
            }
        }
    }

    /// Removes `id`; true when the list is now empty.
    fn remove(&mut self, id: u32) -> bool {
        match self {
            Postings::One(existing) => *existing == id,
            Postings::Many(b) => {
                b.remove(id);
                match b.len() {
                    0 => true,
                    1 => {
                        if let Some(last) = b.min() {
                            *self = Postings::One(last);
                        }
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    pub fn or_into(&self, acc: &mut RoaringBitmap) {
        match self {
            Postings::One(id) => {
                acc.insert(*id);
            }
            Postings::Many(b) => *acc |= &**b,
        }
    }

    pub fn to_bitmap(&self) -> RoaringBitmap {
        match self {
            Postings::One(id) => std::iter::once(*id).collect(),
            Postings::Many(b) => (**b).clone(),
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            Postings::One(_) => 1,
            Postings::Many(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Postings::One(_) => 0,
            Postings::Many(b) => 24 + b.serialized_size(),
        }
    }
}

/// label name symbol → label value symbol → series ids.
#[derive(Default)]
pub struct Index {
    names: HashMap<u32, HashMap<u32, Postings>>,
    all: RoaringBitmap,
}

impl Index {
    /// Adds series `id` with `labels` (alternating name and value symbols).
    pub fn add(&mut self, id: u32, labels: &[u32]) {
        for pair in labels.chunks_exact(2) {
            self.names
                .entry(pair[0])
                .or_default()
                .entry(pair[1])
                .and_modify(|p| p.insert(id))
                .or_insert(Postings::One(id));
        }
        self.all.insert(id);
    }

    /// Removes series `id`, which was added with `labels`.
    pub fn remove(&mut self, id: u32, labels: &[u32]) {
        for pair in labels.chunks_exact(2) {
            let Some(values) = self.names.get_mut(&pair[0]) else { continue };
            if values.get_mut(&pair[1]).is_some_and(|p| p.remove(id)) {
                values.remove(&pair[1]);
                if values.is_empty() {
                    self.names.remove(&pair[0]);
                }
            }
        }
        self.all.remove(id);
    }

    pub fn all(&self) -> &RoaringBitmap {
        &self.all
    }

    /// Label name symbols present in this shard.
    pub fn names(&self) -> impl Iterator<Item = u32> + '_ {
        self.names.keys().copied()
    }

    /// (value symbol, postings) of one label name.
    pub fn values(&self, name: u32) -> impl Iterator<Item = (u32, &Postings)> + '_ {
        self.names.get(&name).into_iter().flat_map(|m| m.iter().map(|(v, p)| (*v, p)))
    }

    /// The series that match every matcher (a missing label matches as the empty string).
    pub fn select(&self, symbols: &Symbols, matchers: &[Matcher]) -> RoaringBitmap {
        // Cheapest first: an equality on a present value narrows the most for the least work.
        let mut order: Vec<&Matcher> = matchers.iter().collect();
        order.sort_by_key(|m| match m.op {
            MatchOp::Equal if !m.value.is_empty() => 0,
            MatchOp::Regex => 1,
            _ => 2,
        });
        let mut acc: Option<RoaringBitmap> = None;
        for m in order {
            let set = self.matching(symbols, m);
            let next = match acc {
                None => set,
                Some(mut a) => {
                    a &= &set;
                    a
                }
            };
            if next.is_empty() {
                return next;
            }
            acc = Some(next);
        }
        acc.unwrap_or_else(|| self.all.clone())
    }

    /// The series that one matcher accepts.
    fn matching(&self, symbols: &Symbols, m: &Matcher) -> RoaringBitmap {
        let Some(name) = symbols.lookup(&m.name) else {
            // No series has this label: each of them sees "".
            return if m.matches("") { self.all.clone() } else { RoaringBitmap::new() };
        };
        let values = self.names.get(&name);
        let posting_of = |value: &str| -> Option<&Postings> {
            let v = symbols.lookup(value)?;
            values?.get(&v)
        };
        match m.op {
            MatchOp::Equal if !m.value.is_empty() => posting_of(&m.value).map(Postings::to_bitmap).unwrap_or_default(),
            MatchOp::NotEqual if !m.value.is_empty() => {
                let mut all = self.all.clone();
                if let Some(p) = posting_of(&m.value) {
                    all -= &p.to_bitmap();
                }
                all
            }
            _ => {
                // Regexes and the empty-value forms: test each distinct value once. When the
                // empty string matches, series without the label match too, so start from all
                // series and take away the values that fail.
                let empty_matches = m.matches("");
                let mut acc = RoaringBitmap::new();
                for (v, p) in values.into_iter().flatten() {
                    if m.matches(symbols.get(*v)) != empty_matches {
                        p.or_into(&mut acc);
                    }
                }
                if empty_matches {
                    let mut all = self.all.clone();
                    all -= &acc;
                    all
                } else {
                    acc
                }
            }
        }
    }

    /// Heap bytes held, estimated from capacities and bitmap sizes.
    pub fn heap_bytes(&self) -> usize {
        let mut total = self.names.capacity() * (4 + 32 + 1) + self.all.serialized_size();
        for values in self.names.values() {
            total += values.capacity() * (4 + std::mem::size_of::<Postings>() + 1);
            total += values.values().map(Postings::heap_bytes).sum::<usize>();
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::parse_series_selector;

    /// A shard-like fixture: series i has the given labels.
    fn build(series: &[&[(&str, &str)]]) -> (Symbols, Index) {
        let mut symbols = Symbols::default();
        let mut index = Index::default();
        for (i, labels) in series.iter().enumerate() {
            let ids: Vec<u32> = labels.iter().flat_map(|(k, v)| [symbols.acquire(k), symbols.acquire(v)]).collect();
            index.add(i as u32, &ids);
        }
        (symbols, index)
    }

    fn ids(symbols: &Symbols, index: &Index, selector: &str) -> Vec<u32> {
        let sel = parse_series_selector(selector).unwrap();
        index.select(symbols, &sel.matchers).iter().collect()
    }

    #[test]
    fn matchers_follow_prometheus_semantics() {
        let (s, ix) = build(&[
            &[("__name__", "up"), ("job", "node"), ("env", "prod")],
            &[("__name__", "up"), ("job", "api")],
            &[("__name__", "load"), ("job", "node"), ("env", "dev")],
        ]);
        assert_eq!(ids(&s, &ix, "up"), vec![0, 1]);
        assert_eq!(ids(&s, &ix, r#"{job="node"}"#), vec![0, 2]);
        assert_eq!(ids(&s, &ix, r#"up{job!="node"}"#), vec![1]);
        assert_eq!(ids(&s, &ix, r#"up{env=""}"#), vec![1], "missing label matches empty");
        assert_eq!(ids(&s, &ix, r#"{job=~".+", env!=""}"#), vec![0, 2]);
        assert_eq!(ids(&s, &ix, r#"{job=~"no.*"}"#), vec![0, 2]);
        assert_eq!(ids(&s, &ix, r#"{__name__=~"up|load", env=~"prod|"}"#), vec![0, 1]);
        assert_eq!(ids(&s, &ix, r#"up{job!~"no.*"}"#), vec![1]);
        assert_eq!(ids(&s, &ix, r#"up{env!~"p.*"}"#), vec![1], "missing label is \"\", which !~ p.*");
        assert_eq!(ids(&s, &ix, r#"{nope="x"}"#), Vec::<u32>::new());
        assert_eq!(ids(&s, &ix, r#"up{nope!="x"}"#), vec![0, 1]);
        assert_eq!(ids(&s, &ix, r#"{job="absent"}"#), Vec::<u32>::new());
    }

    #[test]
    fn removal_shrinks_and_drops_lists() {
        let (s, mut ix) = build(&[&[("a", "1")], &[("a", "1")], &[("a", "2")]]);
        let a = s.lookup("a").unwrap();
        let one = s.lookup("1").unwrap();
        let two = s.lookup("2").unwrap();
        ix.remove(0, &[a, one]);
        assert!(matches!(ix.names[&a][&one], Postings::One(1)));
        ix.remove(1, &[a, one]);
        assert!(!ix.names[&a].contains_key(&one));
        ix.remove(2, &[a, two]);
        assert!(ix.names.is_empty());
        assert!(ix.all().is_empty());
    }
}
