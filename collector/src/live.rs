//! [`Live`]: a value that a reload replaces while readers keep using it.
//!
//! Readers take a cheap snapshot (`load`: an uncontended read lock and an `Arc` clone) and use it
//! for the whole of one request or one maintenance pass, so a reload never changes a limit in the
//! middle of a decision; the next request sees the new value. A plain `RwLock<Arc<T>>`: reloads
//! are rare and a read is far below the cost of anything it guards (a push, a query, a merge).

use std::sync::{Arc, RwLock};

pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: T) -> Live<T> {
        Live(RwLock::new(Arc::new(value)))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        match self.0.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the value; readers holding the old one finish with it.
    pub fn store(&self, value: T) {
        let mut guard = match self.0.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = Arc::new(value);
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.load().fmt(f)
    }
}
