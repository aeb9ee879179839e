//! Log storage: accepting pushes durably and answering log queries.
//!
//! First cut: the WAL *is* the store. A push is validated the way Loki validates it, encoded as
//! one [`record`] and appended to the [`crate::wal`]; it is acknowledged after the fsync. Queries
//! scan the committed WAL with bounded memory (a top-`limit` heap), which is exact but linear in
//! the data. The log-search issue replaces the scan with time-partitioned parts and an index.

pub mod record;
pub mod store;

pub use store::{LogStore, PushOutcome, QueryRequest, QueryResult, ScanRequest, ScanStats, SharedLabels, StreamResult};
