//! Snappy **block** format, as remote_write and Loki push use it (never the framed format).
//!
//! Decoding reads the uncompressed length from the block header first and refuses anything
//! larger than the caller's cap before allocating, so a 20-byte body that claims 4 GiB costs
//! nothing.

/// Why a snappy body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnappyError {
    #[error("snappy body is empty")]
    Empty,
    #[error("snappy body is corrupt: {0}")]
    Corrupt(String),
    #[error("snappy body would decompress to {claimed} bytes, over the limit of {limit} bytes")]
    TooLarge { claimed: u64, limit: usize },
}

/// Reads the uncompressed length from the block's varint header.
fn claimed_len(body: &[u8]) -> Result<u64, SnappyError> {
    let mut n: u64 = 0;
    for (i, &b) in body.iter().take(10).enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(SnappyError::Corrupt("the length header is not a valid varint".into()))
}

/// Compresses `raw` into one snappy block.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    let mut out = vec![0; snap::raw::max_compress_len(raw.len())];
    // Compression into a buffer of max_compress_len cannot fail for inputs under 4 GiB;
    // larger inputs are refused by snap, and we surface that as an empty body rather than panic.
    match snap::raw::Encoder::new().compress(raw, &mut out) {
        Ok(n) => {
            out.truncate(n);
            out
        }
        Err(_) => Vec::new(),
    }
}

/// Compresses `raw` into `out` (cleared first), reusing its allocation.
pub fn compress_into(encoder: &mut snap::raw::Encoder, raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.resize(snap::raw::max_compress_len(raw.len()), 0);
    match encoder.compress(raw, out) {
        Ok(n) => out.truncate(n),
        Err(_) => out.clear(),
    }
}

/// Decompresses one snappy block, refusing output over `limit` bytes.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, SnappyError> {
    if body.is_empty() {
        return Err(SnappyError::Empty);
    }
    let claimed = claimed_len(body)?;
    if claimed > limit as u64 {
        return Err(SnappyError::TooLarge { claimed, limit });
    }
    let claimed = claimed as usize;
    let mut out = vec![0; claimed];
    let n = snap::raw::Decoder::new().decompress(body, &mut out).map_err(|e| SnappyError::Corrupt(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

/// Like [`decompress`], into `out` (reusing its allocation: no fresh pages to fault in and
/// zero for every request).
pub fn decompress_into(body: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), SnappyError> {
    if body.is_empty() {
        return Err(SnappyError::Empty);
    }
    let claimed = claimed_len(body)?;
    if claimed > limit as u64 {
        return Err(SnappyError::TooLarge { claimed, limit });
    }
    out.clear();
    out.resize(claimed as usize, 0);
    let n = snap::raw::Decoder::new().decompress(body, out).map_err(|e| SnappyError::Corrupt(e.to_string()))?;
    out.truncate(n);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_a_bomb_before_allocating() {
        // Varint header claiming 4 GiB, then garbage.
        let body = [0x80, 0x80, 0x80, 0x80, 0x10, 0x00, 0x01];
        match decompress(&body, 64 << 20) {
            Err(SnappyError::TooLarge { claimed, .. }) => assert_eq!(claimed, 4 << 30),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_corrupt_bodies_are_errors() {
        assert_eq!(decompress(&[], 10), Err(SnappyError::Empty));
        assert!(matches!(decompress(&[0x05, 0xff, 0xff], 10), Err(SnappyError::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let c = compress(&data);
            prop_assert_eq!(decompress(&c, data.len()).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress(&data, 1 << 16);
            let mut out = vec![1, 2, 3];
            let _ = decompress_into(&data, 1 << 16, &mut out);
        }

        #[test]
        fn into_agrees_with_decompress(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let c = compress(&data);
            let mut out = vec![9; 10];
            decompress_into(&c, data.len(), &mut out).unwrap();
            prop_assert_eq!(out, data);
        }
    }
}
