//! Wire types and codecs that both sides of Osprey speak.
//!
//! Everything here is defined by somebody else: Prometheus remote_write 1.0 ([`prompb`]) and 2.0 ([`writev2`], and the borrowing
//! decoder of both in [`remote_write`]), Loki's
//! push API ([`logproto`], [`push_json`], [`loki_labels`]), the snappy block format ([`snappy`])
//! and the Prometheus text exposition format ([`exposition`]). The structs are written by hand
//! as prost messages (no `protoc` on a fresh machine) with the field numbers of the upstream
//! `.proto` files, so bytes from real Prometheus, Promtail or Alloy decode unchanged.
//!
//! This crate owns no I/O: it turns bytes into values and back, and every decoder of untrusted
//! bytes returns an error that says what was wrong instead of panicking.

pub mod exposition;
pub mod gzip;
pub mod logproto;
pub mod loki_labels;
pub mod prompb;
pub mod push_json;
pub mod remote_write;
pub mod snappy;
pub mod writev2;

/// The bit pattern Prometheus uses to mark a series stale (a NaN that is never produced by
/// arithmetic). Compare bits, never values: `NaN != NaN`.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// True when `v` is Prometheus' stale marker.
pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}
