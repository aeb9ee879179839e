//! Bearer tokens: read from files, held as SHA-256 digests, compared in constant time.
//!
//! The presented token is hashed once and its digest compared with every known digest without
//! stopping at a match, so neither the position of the first differing byte nor the length of
//! a token nor which entry matched shows in the time an answer takes. The secret itself is
//! dropped after hashing; nothing here can log it.

use http::HeaderMap;
use std::path::Path;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Shortest token accepted from a file: 16 characters (about 96 bits when random base64).
pub const MIN_TOKEN_CHARS: usize = 16;

/// A token file that cannot be used; names the config key and the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{key} {path}: cannot read the token file: {source}")]
    Read { key: String, path: String, source: std::io::Error },
    #[error("{key} {path}: {what}")]
    Invalid { key: String, path: String, what: String },
}

/// The SHA-256 digest of a token.
#[derive(Clone, Copy)]
pub struct Digest([u8; 32]);

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digest(..)")
    }
}

impl Digest {
    pub fn of(token: &str) -> Digest {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Digest(out)
    }

    /// Whether two digests are equal (constant time).
    pub fn same(&self, other: &Digest) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// Reads a token file (`key` is the config key naming it, for errors): its content with
    /// surrounding whitespace trimmed, at least [`MIN_TOKEN_CHARS`], no inner whitespace. A file
    /// that others can read is accepted with a warning.
    pub fn read_file(key: &str, path: &str) -> Result<Digest, TokenError> {
        let invalid = |what: String| TokenError::Invalid { key: key.into(), path: path.into(), what };
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            key: key.into(),
            path: path.into(),
            source,
        })?;
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(invalid(format!(
                "the token is {} characters long; use at least {MIN_TOKEN_CHARS} (e.g. `head -c 32 /dev/urandom | base64`)",
                token.chars().count()
            )));
        }
        if token.chars().any(char::is_whitespace) {
            return Err(invalid("the token holds whitespace; the file must hold one token".into()));
        }
        if let Ok(meta) = std::fs::metadata(Path::new(path)) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(key, path, "token file is readable by every user; chmod o-r it");
            }
        }
        Ok(Digest::of(token))
    }
}

/// Index of the entry of `known` whose digest equals `presented`'s, looking at every entry.
pub fn find(known: &[Digest], presented: &str) -> Option<usize> {
    let probe = Digest::of(presented);
    let mut found = subtle::Choice::from(0);
    let mut index = 0u32;
    for (i, d) in known.iter().enumerate() {
        let eq = d.0.ct_eq(&probe.0);
        index = u32::conditional_select(&index, &(i as u32), eq);
        found |= eq;
    }
    bool::from(found).then_some(index as usize)
}

/// What an `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials<'a> {
    None,
    Bearer(&'a str),
    /// Another scheme, or a value that is not text.
    Unsupported,
}

/// Reads `Authorization: Bearer <token>` (scheme case-insensitive, as RFC 6750 says).
pub fn credentials(headers: &HeaderMap) -> Credentials<'_> {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else { return Credentials::None };
    let Ok(v) = v.to_str() else { return Credentials::Unsupported };
    match v.trim().split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Credentials::Bearer(token.trim())
        }
        _ => Credentials::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_matching_digest_only() {
        let known = [Digest::of("aaaaaaaaaaaaaaaa"), Digest::of("bbbbbbbbbbbbbbbb"), Digest::of("cccccccccccccccc")];
        assert_eq!(find(&known, "bbbbbbbbbbbbbbbb"), Some(1));
        assert_eq!(find(&known, "cccccccccccccccc"), Some(2));
        assert_eq!(find(&known, "aaaaaaaaaaaaaaaa"), Some(0));
        assert_eq!(find(&known, "bbbbbbbbbbbbbbb"), None);
        assert_eq!(find(&known, ""), None);
        assert_eq!(find(&[], "x"), None);
    }

    #[test]
    fn reads_token_files_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).display().to_string();
        std::fs::write(path("ok"), "  0123456789abcdef0123\n").unwrap();
        let d = Digest::read_file("auth.tokens[0].file", &path("ok")).unwrap();
        assert_eq!(find(&[d], "0123456789abcdef0123"), Some(0));
        std::fs::write(path("short"), "abc\n").unwrap();
        let e = Digest::read_file("auth.tokens[0].file", &path("short")).unwrap_err().to_string();
        assert!(e.starts_with("auth.tokens[0].file ") && e.contains("3 characters long"), "{e}");
        std::fs::write(path("two"), "0123456789abcdef 0123456789abcdef\n").unwrap();
        let e = Digest::read_file("k", &path("two")).unwrap_err().to_string();
        assert!(e.contains("whitespace"), "{e}");
        let e = Digest::read_file("k", &path("missing")).unwrap_err().to_string();
        assert!(e.contains("cannot read the token file"), "{e}");
    }

    #[test]
    fn parses_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(credentials(&h), Credentials::None);
        h.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Bearer("abc"));
        h.insert(http::header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Bearer("abc"));
        h.insert(http::header::AUTHORIZATION, "Basic YTpi".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Unsupported);
        h.insert(http::header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(credentials(&h), Credentials::Unsupported);
    }
}
