//! Log storage: accepting pushes durably and answering log scans.
//!
//! - [`store`]: the [`LogStore`] API (push, scan, series, stats) and its snapshot of head and parts.
//! - [`limits`]: Loki's push validation and limits, with Loki's messages.
//! - [`record`]: the WAL payload of one push.
//! - [`head`]: acknowledged lines not yet in parts, in memory.
//! - [`part`], [`block`], [`filter`]: the immutable on-disk parts, their compressed blocks and
//!   per-block token and n-gram filters.
//! - [`index`]: per-tenant stream ids and label postings.
//! - [`manifest`]: the atomically replaced list of live parts and the WAL checkpoint.
//! - [`maintain`]: flush, merge and retention, in background threads.
//! - [`forward`]: Loki push fan-out through durable disk queues.

pub mod block;
pub mod filter;
pub mod forward;
pub mod head;
pub mod index;
pub mod limits;
pub(crate) mod maintain;
pub mod manifest;
pub mod metrics;
pub mod part;
pub mod record;
pub mod store;
mod varint;

pub use store::{
    IndexStats, LogStore, PushOutcome, QueryRequest, QueryResult, ScanRequest, ScanStats, SharedLabels, StreamResult,
};
