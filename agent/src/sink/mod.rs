//! Sinks: where batches leave the host. Each sink owns one HTTP endpoint and sends its batches
//! in order, one at a time, retrying until they are delivered or refused for good.

pub mod http;
pub mod loki;
pub mod remote_write;
