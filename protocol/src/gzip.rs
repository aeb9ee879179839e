//! gzip bodies (`Content-Encoding: gzip`) with a hard cap on the inflated size.

use std::io::Read;

#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    #[error("gzip body is corrupt: {0}")]
    Corrupt(std::io::Error),
    #[error("gzip body inflates past the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

/// Inflates `body`, stopping with [`GzipError::TooLarge`] as soon as the output passes `limit`.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut reader = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(GzipError::Corrupt)?;
    if out.len() > limit {
        return Err(GzipError::TooLarge { limit });
    }
    Ok(out)
}

/// Compresses `raw` with gzip at the default level.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limit() {
        let raw = vec![b'a'; 10_000];
        let gz = compress(&raw);
        assert_eq!(decompress(&gz, 10_000).unwrap(), raw);
        assert!(matches!(decompress(&gz, 9_999), Err(GzipError::TooLarge { limit: 9_999 })));
        assert!(matches!(decompress(b"not gzip", 100), Err(GzipError::Corrupt(_))));
    }
}
