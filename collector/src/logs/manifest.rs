//! The manifest: which part files are live, and how much of the WAL they cover.
//!
//! One small JSON file, `logs/MANIFEST`, replaced atomically (write `MANIFEST.tmp`, fsync,
//! rename, fsync the directory) after every flush, merge and retention pass. It is the single
//! point of truth: a part file it does not name is garbage from an interrupted flush or merge and
//! is deleted at startup; WAL segments below `wal_through` are already in parts and are skipped
//! and deleted. So every change to the set of parts is one atomic rename, and a crash at any
//! moment leaves either the old state or the new one.

use crate::wal::sync_dir;
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::Path;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// WAL segments with a smaller id are wholly in parts.
    pub wal_through: u64,
    /// Next part id to hand out (ids are never reused).
    pub next_part_id: u64,
    /// Live parts, by id.
    pub parts: Vec<u64>,
}

const NAME: &str = "MANIFEST";

impl Manifest {
    /// Reads `dir/MANIFEST`; a missing file is an empty store.
    pub fn load(dir: &Path) -> io::Result<Manifest> {
        let path = dir.join(NAME);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a valid manifest ({e}); restore it from a backup or move the logs directory aside",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(Manifest { version: 1, next_part_id: 1, ..Default::default() })
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces `dir/MANIFEST` atomically and durably.
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join("MANIFEST.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, dir.join(NAME))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Manifest::load(dir.path()).unwrap();
        assert_eq!(empty.next_part_id, 1);
        let m = Manifest { version: 1, wal_through: 5, next_part_id: 9, parts: vec![3, 8] };
        m.store(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        std::fs::write(dir.path().join(NAME), b"{not json").unwrap();
        let e = Manifest::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a valid manifest"), "{e}");
    }
}
