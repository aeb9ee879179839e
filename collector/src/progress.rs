//! Progress of long work (WAL replay at start, merges): one log line at most every
//! [`EVERY`], always in the same shape (`<what>: 45% (1.2 GiB of 2.7 GiB)` with `done_bytes`,
//! `total_bytes` and `percent` fields), and, for the WAL replay, a shared [`Progress`] that
//! `/ready` reads to say how far the start is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Least time between two progress lines of one piece of work.
pub const EVERY: Duration = Duration::from_secs(2);

/// How far a piece of work is, readable from other threads.
#[derive(Debug, Default)]
pub struct Progress {
    running: AtomicBool,
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn begin(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.running.store(true, Ordering::Release);
    }

    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
    }

    pub fn finish(&self) {
        self.running.store(false, Ordering::Release);
    }

    /// `(done, total)` while running.
    pub fn get(&self) -> Option<(u64, u64)> {
        self.running
            .load(Ordering::Acquire)
            .then(|| (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed)))
    }
}

/// `45% (1.2 GiB of 2.7 GiB)`.
pub fn describe(done: u64, total: u64) -> String {
    format!("{}% ({} of {})", percent(done, total), bytes(done), bytes(total))
}

pub fn percent(done: u64, total: u64) -> u64 {
    if total == 0 { 100 } else { (done.min(total) as u128 * 100 / total as u128) as u64 }
}

/// Bytes in binary units, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Rate-limited progress lines for one piece of work.
pub struct ProgressLog {
    what: &'static str,
    last: Instant,
}

impl ProgressLog {
    /// Starts the clock: the first line comes [`EVERY`] after this, so short work logs nothing
    /// but its own summary.
    pub fn new(what: &'static str) -> ProgressLog {
        ProgressLog { what, last: Instant::now() }
    }

    /// Logs `done` of `total` if the last line is at least [`EVERY`] old; returns whether it did.
    pub fn update(&mut self, done: u64, total: u64) -> bool {
        self.update_at(Instant::now(), done, total)
    }

    fn update_at(&mut self, now: Instant, done: u64, total: u64) -> bool {
        if now.saturating_duration_since(self.last) < EVERY {
            return false;
        }
        self.last = now;
        tracing::info!(
            done_bytes = done,
            total_bytes = total,
            percent = percent(done, total),
            "{}: {}",
            self.what,
            describe(done, total)
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_rate_limited_and_say_how_far() {
        let mut p = ProgressLog::new("replaying the WAL");
        let t0 = p.last;
        assert!(!p.update_at(t0 + Duration::from_millis(500), 1, 10));
        assert!(p.update_at(t0 + EVERY, 5, 10));
        assert!(!p.update_at(t0 + EVERY + Duration::from_secs(1), 6, 10));
        assert!(p.update_at(t0 + EVERY * 2, 7, 10));
        assert_eq!(describe(3 << 29, 3 << 30), "50% (1.5 GiB of 3.0 GiB)");
        assert_eq!(describe(10, 0), "100% (10 B of 0 B)");
        assert_eq!(percent(u64::MAX, u64::MAX), 100);
    }

    #[test]
    fn shared_progress_is_visible_only_while_running() {
        let p = Progress::default();
        assert_eq!(p.get(), None);
        p.begin(100);
        p.set(40);
        assert_eq!(p.get(), Some((40, 100)));
        p.finish();
        assert_eq!(p.get(), None);
    }
}
