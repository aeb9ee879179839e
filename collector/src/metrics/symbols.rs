//! Interned strings: every label name and value is stored once per shard and referred to by a
//! `u32`.
//!
//! A fleet repeats the same few hundred names and a few thousand values across millions of
//! series (`job`, `instance`, `mode="idle"`), so a series holds ids, not strings, and the index
//! keys are pairs of ids. Symbols are reference-counted by the series that use them and freed
//! when the last one expires, so churn does not grow the table forever.

use hashbrown::HashTable;
use std::hash::BuildHasher;

struct Entry {
    text: Box<str>,
    /// How many label slots (names and values) of live series refer to this symbol; 0 means
    /// the slot is free and listed in `free`.
    refs: u32,
    /// The text contains `\`, `"` or a newline, which exposition formats escape. Known once
    /// here, so `/federate` does not search every value of every series for them.
    needs_escape: bool,
}

pub struct Symbols {
    entries: Vec<Entry>,
    free: Vec<u32>,
    /// Ids of live entries, hashed by their text.
    table: HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Bytes of string text held (for the memory estimate on `/metrics`).
    text_bytes: usize,
}

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            entries: Vec::new(),
            free: Vec::new(),
            table: HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            text_bytes: 0,
        }
    }
}

impl Symbols {
    /// The id of `s`, if some live series uses it.
    #[inline]
    pub fn lookup(&self, s: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(s);
        self.table.find(hash, |&id| &*self.entries[id as usize].text == s).copied()
    }

    /// The id of `s`, adding it if new, and counts one more reference to it.
    pub fn acquire(&mut self, s: &str) -> u32 {
        let hash = self.hasher.hash_one(s);
        if let Some(&id) = self.table.find(hash, |&id| &*self.entries[id as usize].text == s) {
            self.entries[id as usize].refs += 1;
            return id;
        }
        let needs_escape = memchr::memchr3(b'\\', b'"', b'\n', s.as_bytes()).is_some();
        let entry = Entry { text: s.into(), refs: 1, needs_escape };
        self.text_bytes += s.len();
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        let entries = &self.entries;
        let hasher = &self.hasher;
        self.table.insert_unique(hash, id, |&i| hasher.hash_one(&*entries[i as usize].text));
        id
    }

    /// Drops one reference; frees the symbol when it was the last.
    pub fn release(&mut self, id: u32) {
        let entry = &mut self.entries[id as usize];
        debug_assert!(entry.refs > 0, "symbol {id} released more often than acquired");
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs > 0 {
            return;
        }
        let text = std::mem::take(&mut entry.text);
        self.text_bytes -= text.len();
        let hash = self.hasher.hash_one(&*text);
        if let Ok(found) = self.table.find_entry(hash, |&i| i == id) {
            found.remove();
        }
        self.free.push(id);
    }

    #[inline]
    pub fn get(&self, id: u32) -> &str {
        &self.entries[id as usize].text
    }

    /// True when the text of `id` has characters exposition formats escape.
    #[inline]
    pub fn needs_escape(&self, id: u32) -> bool {
        self.entries[id as usize].needs_escape
    }

    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held, estimated from capacities (for `osprey_metrics_index_bytes`).
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.free.capacity() * 4
            + self.table.capacity() * 5
            + self.text_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_release_reuses_ids() {
        let mut s = Symbols::default();
        let a = s.acquire("job");
        assert_eq!(s.acquire("job"), a);
        let b = s.acquire("node");
        assert_eq!((s.get(a), s.get(b), s.len()), ("job", "node", 2));
        s.release(a);
        assert_eq!(s.lookup("job"), Some(a), "one reference left");
        s.release(a);
        assert_eq!(s.lookup("job"), None);
        let c = s.acquire("instance");
        assert_eq!(c, a, "freed id reused");
        assert_eq!(s.get(c), "instance");
        assert_eq!(s.lookup("node"), Some(b));
        let q = s.acquire("say \"hi\"");
        assert!(s.needs_escape(q) && !s.needs_escape(b));
    }
}
