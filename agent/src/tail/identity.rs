//! Which file is this? dev + inode, a checksum of the file's head, and a checksum of the bytes
//! just before a saved offset. Together they tell apart the cases that fool tailers keyed by
//! path or inode alone (see the decision table in ARCHITECTURE.md):
//!
//! - same inode, head and mark, size ≥ offset: the same file, appended to → resume;
//! - same inode, size < offset: truncated (copytruncate, `> file`) → read from 0;
//! - same inode, head or mark differ: the inode was reused by a new file, or the file was
//!   truncated and rewritten past the offset → read from 0;
//! - another inode with the same head, size ≥ offset and the same mark: a copy (the rotated file
//!   of copytruncate) → its bytes past the offset are the tail we had not read yet.

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Bytes of a file's head that identify it.
pub const HEAD_BYTES: usize = 1024;
/// Bytes before an offset that must be unchanged for the offset to still mean the same place.
pub const MARK_BYTES: usize = 64;

/// CRC-32 of `len` bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    pub len: u32,
    pub crc: u32,
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest { len: bytes.len() as u32, crc: crc32fast::hash(bytes) }
    }
}

fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The digest of the first `min(size, HEAD_BYTES)` bytes.
pub fn head(file: &File) -> std::io::Result<Digest> {
    Ok(Digest::of(&read_at(file, 0, HEAD_BYTES)?))
}

/// Whether the file still starts with the bytes `d` was taken of.
pub fn head_matches(file: &File, d: Digest) -> bool {
    read_at(file, 0, d.len as usize).is_ok_and(|b| b.len() == d.len as usize && Digest::of(&b) == d)
}

/// The digest of the `MARK_BYTES` (or fewer, near the start) before `offset`.
pub fn mark(file: &File, offset: u64) -> std::io::Result<Digest> {
    let len = (offset as usize).min(MARK_BYTES);
    let b = read_at(file, offset - len as u64, len)?;
    if b.len() != len {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file is shorter than the offset"));
    }
    Ok(Digest::of(&b))
}

/// A gzip member starts with 1f 8b: such a file is a compressed rotation, never tailed.
pub fn is_gzip(file: &File) -> bool {
    read_at(file, 0, 2).is_ok_and(|b| b == [0x1f, 0x8b])
}

/// What a file looks like now compared with what was saved about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Same file, at least as long: resume at the saved offset.
    Resume,
    /// Shorter than the saved offset: truncated.
    Truncated,
    /// Head or mark differ: another file with this inode, or rewritten content.
    Rewritten,
}

/// Compares an open file (same dev and inode as saved) with a saved head, offset and mark.
pub fn classify(file: &File, size: u64, saved_head: Digest, offset: u64, saved_mark: Digest) -> Verdict {
    if size < offset {
        return Verdict::Truncated;
    }
    if !head_matches(file, saved_head) {
        return Verdict::Rewritten;
    }
    match mark(file, offset) {
        Ok(m) if m == saved_mark => Verdict::Resume,
        _ => Verdict::Rewritten,
    }
}

/// How a rotated-away file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Same dev and inode under another name (rename rotation).
    Renamed,
    /// Another inode with the same content up to the offset (copytruncate's copy).
    Copy,
}

/// Looks next to `path` for where the file saved as (`dev`, `ino`, `head`, `offset`, `mark`)
/// went: a sibling whose name starts with the file's stem (`app.log` → `app.log.1`,
/// `app.log-20261126`, `app-1.log`), not gzip-compressed. A renamed inode is preferred to a copy.
pub fn find_rotated(
    path: &Path,
    dev: u64,
    ino: u64,
    head_digest: Digest,
    offset: u64,
    mark_digest: Digest,
) -> Option<(PathBuf, File, Found)> {
    let dir = path.parent()?;
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.split('.').next().filter(|s| !s.is_empty()).unwrap_or(&name).to_string();
    let mut copy: Option<(PathBuf, File)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        if p == path || !entry.file_name().to_string_lossy().starts_with(&stem) {
            continue;
        }
        let Ok(file) = File::open(&p) else { continue };
        let Ok(m) = file.metadata() else { continue };
        if !m.is_file() || is_gzip(&file) {
            continue;
        }
        let verdict = classify(&file, m.len(), head_digest, offset, mark_digest);
        if verdict != Verdict::Resume {
            continue;
        }
        if m.dev() == dev && m.ino() == ino {
            return Some((p, file, Found::Renamed));
        }
        if copy.is_none() && head_digest.len > 0 {
            copy = Some((p, file));
        }
    }
    copy.map(|(p, f)| (p, f, Found::Copy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &Path, name: &str, body: &[u8]) -> (PathBuf, File) {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        (p.clone(), File::open(&p).unwrap())
    }

    #[test]
    fn decision_table() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = file_with(dir.path(), "app.log", b"first line\nsecond line\n");
        let h = head(&f).unwrap();
        let off = 11;
        let m = mark(&f, off).unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(classify(&f, size(&p), h, off, m), Verdict::Resume);
        // Appending keeps it the same file (the head digest covers what it covered).
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"third\n").unwrap();
        assert_eq!(classify(&f, size(&p), h, off, m), Verdict::Resume);
        // Truncated below the offset.
        std::fs::write(&p, b"new\n").unwrap();
        assert_eq!(classify(&f, size(&p), h, off, m), Verdict::Truncated);
        // Truncated and rewritten past the offset with other content.
        std::fs::write(&p, b"other content, long enough\n").unwrap();
        assert_eq!(classify(&f, size(&p), h, off, m), Verdict::Rewritten);
        // Same first line, different bytes before the offset: the mark catches it.
        std::fs::write(&p, b"first line\nsecond line\n").unwrap();
        let off2 = 20;
        let m2 = mark(&f, off2).unwrap();
        let h2 = head(&f).unwrap();
        std::fs::write(&p, b"first line\nsecXnd line\n").unwrap();
        assert_eq!(classify(&f, size(&p), h, off2, m2), Verdict::Rewritten);
        assert_eq!(classify(&f, size(&p), h2, off2, m2), Verdict::Rewritten);
    }

    #[test]
    fn rotated_files_are_found_by_inode_or_content() {
        let dir = tempfile::tempdir().unwrap();
        let (p, f) = file_with(dir.path(), "app.log", b"one\ntwo\n");
        let m = f.metadata().unwrap();
        let (h, mk) = (head(&f).unwrap(), mark(&f, 4).unwrap());
        // Renamed.
        std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&p, b"fresh\n").unwrap();
        let (found, _, how) = find_rotated(&p, m.dev(), m.ino(), h, 4, mk).unwrap();
        assert_eq!((found, how), (dir.path().join("app.log.1"), Found::Renamed));
        // A copy (copytruncate) under another inode, and a gzip that must be ignored.
        std::fs::remove_file(dir.path().join("app.log.1")).unwrap();
        std::fs::write(dir.path().join("app.log.2.gz"), [0x1f, 0x8b, 0, 0]).unwrap();
        std::fs::write(dir.path().join("app.log-20261126"), b"one\ntwo\nthree\n").unwrap();
        let (found, _, how) = find_rotated(&p, m.dev(), m.ino(), h, 4, mk).unwrap();
        assert_eq!((found, how), (dir.path().join("app.log-20261126"), Found::Copy));
        std::fs::remove_file(dir.path().join("app.log-20261126")).unwrap();
        assert!(find_rotated(&p, m.dev(), m.ino(), h, 4, mk).is_none());
    }
}
