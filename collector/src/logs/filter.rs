//! Per-block filters that let a scan skip blocks which cannot hold a wanted line.
//!
//! Two structures per block, both written by hand because each is a few dozen lines and their
//! exact layout is the on-disk format (see ARCHITECTURE.md, "Log store", for the numbers):
//!
//! - a **token filter**: a Bloom filter (10 bits and 7 probes per distinct key, ~1 % false
//!   positives) over the *words* of the lines. A word is a maximal run of ASCII letters, digits,
//!   `_` and non-ASCII bytes. The key of a word is its first [`TOKEN_PREFIX`] bytes, so a query
//!   fragment that must *start* a word (`|= "blk_-1608999687"`: `1608999687` follows a
//!   separator) can be looked up as well as a whole word. Words of one byte and all-digit words
//!   shorter than [`MIN_NUMERIC_TOKEN`] are not indexed: they are in nearly every block (times,
//!   ports, pids), cost the most space and would never prune.
//! - an **n-gram signature**: one bit per hashed trigram of the raw line bytes, folded (OR of
//!   halves) until about half the bits are set. A literal with `t` trigrams passes a block with
//!   fill `f` by accident with probability about `f^t`, so a 10-byte literal is pruned with
//!   ~0.4 % false positives at 2 bits per distinct trigram. This is what lets a substring with no
//!   usable word (`|= "IAM_PERMISS"`) skip blocks.
//!
//! Both answer "maybe" or "certainly not"; a scan reads a block only when every line hint may
//! be in it, and the query engine re-checks every line, so a false positive costs time, never
//! correctness.

/// Bytes of a word used as its key (whole word when shorter).
pub const TOKEN_PREFIX: usize = 8;
/// All-digit words shorter than this are not indexed.
pub const MIN_NUMERIC_TOKEN: usize = 8;
/// Token filter size and probes: 10 bits and 7 probes per key give ~0.8 % false positives.
const BITS_PER_KEY: usize = 10;
const PROBES: u32 = 7;
/// The signature is built at 2^16 bits and folded down to no less than 2^9.
const SIG_MAX_LOG2: u32 = 16;
const SIG_MIN_LOG2: u32 = 9;
/// Fold while the folded signature would have at most this fraction of bits set.
const SIG_TARGET_FILL: f64 = 0.5;

#[inline]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// A fast 64-bit hash of a short byte string (wyhash-style multiply-mix). Stable: it is part
/// of the on-disk format.
#[inline]
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(a));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(a));
    }
    mix(h)
}

#[inline]
fn mix(x: u64) -> u64 {
    let m = u128::from(x).wrapping_mul(0x9FB2_1C65_1E98_DF25);
    ((m >> 64) as u64) ^ (m as u64)
}

#[inline]
fn trigram_index(a: u8, b: u8, c: u8) -> u16 {
    let v = u64::from(a) | u64::from(b) << 8 | u64::from(c) << 16;
    (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u16
}

/// Calls `f` with the key hash of every indexable word of `line`.
#[inline]
pub fn for_each_token(line: &[u8], mut f: impl FnMut(u64)) {
    let mut i = 0;
    let n = line.len();
    while i < n {
        while i < n && !is_word_byte(line[i]) {
            i += 1;
        }
        let start = i;
        let mut digits = true;
        while i < n && is_word_byte(line[i]) {
            digits &= line[i].is_ascii_digit();
            i += 1;
        }
        if let Some(key) = token_key(&line[start..i], digits) {
            f(key);
        }
    }
}

#[inline]
fn token_key(word: &[u8], all_digits: bool) -> Option<u64> {
    if word.len() < 2 || (all_digits && word.len() < MIN_NUMERIC_TOKEN) {
        return None;
    }
    Some(hash_bytes(&word[..word.len().min(TOKEN_PREFIX)]))
}

/// Accumulates the filters of one block while its lines are added.
pub struct FilterBuilder {
    keys: Vec<u64>,
    sig: Vec<u64>,
}

impl Default for FilterBuilder {
    fn default() -> Self {
        FilterBuilder { keys: Vec::new(), sig: vec![0u64; (1 << SIG_MAX_LOG2) / 64] }
    }
}

impl FilterBuilder {
    pub fn add_line(&mut self, line: &[u8]) {
        for_each_token(line, |k| self.keys.push(k));
        for w in line.windows(3) {
            let i = trigram_index(w[0], w[1], w[2]) as usize;
            self.sig[i >> 6] |= 1 << (i & 63);
        }
    }

    /// Finishes into the compact filters, resetting the builder for the next block.
    pub fn finish(&mut self) -> BlockFilter {
        self.keys.sort_unstable();
        self.keys.dedup();
        let words = (self.keys.len() * BITS_PER_KEY).div_ceil(64).max(1);
        let mut bloom = vec![0u64; words];
        let bits = (words * 64) as u64;
        for &k in &self.keys {
            for p in probes(k, bits) {
                bloom[(p >> 6) as usize] |= 1 << (p & 63);
            }
        }
        self.keys.clear();
        let mut sig = std::mem::replace(&mut self.sig, vec![0u64; (1 << SIG_MAX_LOG2) / 64]);
        let mut log2 = SIG_MAX_LOG2;
        while log2 > SIG_MIN_LOG2 {
            let half = sig.len() / 2;
            let folded: Vec<u64> = (0..half).map(|i| sig[i] | sig[i + half]).collect();
            let ones: u32 = folded.iter().map(|w| w.count_ones()).sum();
            if f64::from(ones) > SIG_TARGET_FILL * (half * 64) as f64 {
                break;
            }
            sig = folded;
            log2 -= 1;
        }
        BlockFilter { bloom, sig }
    }
}

#[inline]
fn probes(key: u64, bits: u64) -> impl Iterator<Item = u64> {
    let h1 = key;
    let h2 = key.rotate_left(32) | 1;
    (0..PROBES).map(move |i| h1.wrapping_add(u64::from(i).wrapping_mul(h2)) % bits)
}

/// The filters of one block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockFilter {
    pub bloom: Vec<u64>,
    /// Length is a power of two (in bits: 2^9 ..= 2^16).
    pub sig: Vec<u64>,
}

impl BlockFilter {
    pub fn size_bytes(&self) -> usize {
        (self.bloom.len() + self.sig.len()) * 8
    }

    fn has_key(&self, key: u64) -> bool {
        if self.bloom.is_empty() {
            return true;
        }
        let bits = (self.bloom.len() * 64) as u64;
        probes(key, bits).all(|p| self.bloom[(p >> 6) as usize] & (1 << (p & 63)) != 0)
    }

    fn has_trigram(&self, idx: u16) -> bool {
        if self.sig.is_empty() {
            return true;
        }
        let mask = self.sig.len() * 64 - 1;
        let i = idx as usize & mask;
        self.sig[i >> 6] & (1 << (i & 63)) != 0
    }

    /// False only if no line of the block can contain every one of `hints`.
    pub fn may_contain_all(&self, hints: &[Probe]) -> bool {
        hints.iter().all(|h| h.keys.iter().all(|&k| self.has_key(k)) && h.trigrams.iter().all(|&t| self.has_trigram(t)))
    }
}

/// What to look up for one literal a wanted line must contain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// Token keys that any line containing the literal must have.
    pub keys: Vec<u64>,
    /// Trigram indexes of the literal.
    pub trigrams: Vec<u16>,
}

impl Probe {
    /// Works out, for `literal`, which keys are *certain* to be in a block holding a line that
    /// contains it. A word of the literal is usable when it is bounded on its left by a
    /// separator *inside the literal* (then it starts a word of the line): if it is also bounded
    /// on its right, it is the whole word; if it runs to the literal's end, it is a prefix of the
    /// line's word and usable when at least [`TOKEN_PREFIX`] bytes long. The first word of a
    /// literal that starts with a word byte may be the tail of a longer word: not usable.
    pub fn new(literal: &[u8]) -> Probe {
        let mut keys = Vec::new();
        let n = literal.len();
        let mut i = 0;
        while i < n {
            while i < n && !is_word_byte(literal[i]) {
                i += 1;
            }
            let start = i;
            let mut digits = true;
            while i < n && is_word_byte(literal[i]) {
                digits &= literal[i].is_ascii_digit();
                i += 1;
            }
            // Words are maximal runs, so `start > 0` means a separator precedes this one.
            if start == i || start == 0 {
                continue;
            }
            let word = &literal[start..i];
            if i < n {
                if let Some(k) = token_key(word, digits) {
                    keys.push(k);
                }
            } else if word.len() >= TOKEN_PREFIX {
                // A prefix of the line's word, which is at least this long, so it is indexed
                // (an all-digit one has >= TOKEN_PREFIX >= MIN_NUMERIC_TOKEN digits).
                keys.push(hash_bytes(&word[..TOKEN_PREFIX]));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let mut trigrams: Vec<u16> = literal.windows(3).map(|w| trigram_index(w[0], w[1], w[2])).collect();
        trigrams.sort_unstable();
        trigrams.dedup();
        Probe { keys, trigrams }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(lines: &[&str]) -> BlockFilter {
        let mut b = FilterBuilder::default();
        for l in lines {
            b.add_line(l.as_bytes());
        }
        b.finish()
    }

    #[test]
    fn words_prefixes_and_substrings() {
        let f = build(&[
            "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
            "user=alice action=IAM_PERMISSION_DENIED",
        ]);
        for yes in ["blk_-1608999687919862906", "Receiving", " block ", "IAM_PERMISS", "alice", "-16089996879"] {
            assert!(f.may_contain_all(&[Probe::new(yes.as_bytes())]), "{yes}");
        }
        // The probe for an interior word uses the token filter.
        assert!(!Probe::new(b" Receiving ").keys.is_empty());
        assert!(Probe::new(b"Receiving").keys.is_empty(), "may be inside a longer word");
        assert_eq!(Probe::new(b"blk_-1608999687919862906").keys.len(), 1, "prefix of the number");
    }

    #[test]
    fn signature_folds_for_small_blocks() {
        let f = build(&["a short line"]);
        assert_eq!(f.sig.len() * 64, 1 << SIG_MIN_LOG2);
        assert!(!f.may_contain_all(&[Probe::new(b"completely different words here")]));
    }

    proptest! {
        /// No false negatives: any substring of any line passes the filter of its block.
        #[test]
        fn substrings_always_pass(lines in proptest::collection::vec("[a-z0-9_ .:=-]{0,40}", 1..20), pick in any::<usize>(), a in any::<usize>(), len in 0usize..20) {
            let mut b = FilterBuilder::default();
            for l in &lines { b.add_line(l.as_bytes()); }
            let f = b.finish();
            let line = &lines[pick % lines.len()];
            let start = if line.is_empty() { 0 } else { a % line.len() };
            let end = (start + len).min(line.len());
            let lit = &line.as_bytes()[start..end];
            prop_assert!(f.may_contain_all(&[Probe::new(lit)]), "{:?} in {:?}", String::from_utf8_lossy(lit), line);
        }
    }
}
