//! Finding the files to follow without re-walking trees.
//!
//! Each include glob has a root (its literal directory prefix) and a depth (unbounded with
//! `**`). The tree under each root is listed once; after that, every directory is only
//! `stat`ed on each poll, and listed again when its mtime changed (an entry was added, removed
//! or renamed) or when inotify reported a create, delete or rename in it. inotify watches are
//! non-recursive, one per directory, and are only a hint that wakes the tailer early: the poll
//! alone is correct (NFS, overflowed event queues, watch limits). Symlinked directories are not
//! followed (no loops); symlinked files are returned as found and deduplicated by target by the
//! tailer.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// inotify hints waiting for the tailer; beyond this they are dropped and a full rescan is done.
const EVENT_QUEUE: usize = 4096;

struct SourceGlobs {
    include: GlobSet,
    exclude: GlobSet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Root {
    depth: Option<usize>,
}

struct Dir {
    mtime: (i64, i64),
    /// Depth left below this directory (`None`: unbounded).
    depth: Option<usize>,
    /// Matched files directly in this directory.
    files: Vec<PathBuf>,
}

/// What inotify said since the last call.
#[derive(Default)]
pub struct Hints {
    /// Files written to (read them now).
    pub written: Vec<PathBuf>,
    /// Something happened that needs a look at the directories.
    pub rescan: bool,
}

pub struct Discovery {
    sources: Vec<SourceGlobs>,
    roots: HashMap<PathBuf, Root>,
    dirs: HashMap<PathBuf, Dir>,
    /// Directories inotify reported entries created, removed or renamed in.
    dirty: HashSet<PathBuf>,
    /// path -> source index, for every matched file.
    matched: HashMap<PathBuf, usize>,
    watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::Receiver<notify::Result<notify::Event>>,
    overflowed: Arc<AtomicBool>,
    watch_failures: u64,
}

fn glob_set(globs: &[String]) -> anyhow::Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = GlobBuilder::new(g).literal_separator(true).build();
        b.add(glob.map_err(|e| anyhow::anyhow!("invalid glob {g:?}: {e}"))?);
    }
    Ok(b.build()?)
}

/// The directory to list for a glob (its components before the first wildcard, without the
/// file name) and how deep below it matches can be (`None` with `**`).
pub fn glob_root(glob: &str) -> (PathBuf, Option<usize>) {
    let comps: Vec<String> =
        Path::new(glob).components().skip(1).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let mut root = PathBuf::from("/");
    let mut i = 0;
    // The last component is the file name pattern; never part of the root.
    while i + 1 < comps.len() && !comps[i].contains(['*', '?', '[', '{']) {
        root.push(&comps[i]);
        i += 1;
    }
    let rest = &comps[i..];
    let depth = if rest.iter().any(|c| c.contains("**")) { None } else { Some(rest.len().saturating_sub(1)) };
    (root, depth)
}

fn mtime(m: &std::fs::Metadata) -> (i64, i64) {
    (m.mtime(), m.mtime_nsec())
}

impl Discovery {
    /// `wake` is called from the watcher's thread whenever a hint arrives.
    pub fn new(includes: &[(Vec<String>, Vec<String>)]) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        let mut roots: HashMap<PathBuf, Root> = HashMap::new();
        for (include, exclude) in includes {
            sources.push(SourceGlobs { include: glob_set(include)?, exclude: glob_set(exclude)? });
            for g in include {
                let (root, depth) = glob_root(g);
                let e = roots.entry(root).or_insert(Root { depth });
                e.depth = match (e.depth, depth) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
        }
        let (tx, events) = mpsc::sync_channel(EVENT_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if tx.try_send(ev).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable; discovering files by polling only");
                None
            }
        };
        Ok(Discovery {
            sources,
            roots,
            dirs: HashMap::new(),
            dirty: HashSet::new(),
            matched: HashMap::new(),
            watcher,
            events,
            overflowed,
            watch_failures: 0,
        })
    }

    /// Number of directories watched.
    pub fn dirs(&self) -> usize {
        self.dirs.len()
    }

    /// Every matched file and its source.
    pub fn matched(&self) -> &HashMap<PathBuf, usize> {
        &self.matched
    }

    /// Waits up to `timeout` for an inotify hint; returns what arrived (possibly nothing).
    pub fn wait(&mut self, timeout: Duration) -> Hints {
        let mut hints = Hints::default();
        if let Ok(ev) = self.events.recv_timeout(timeout) {
            self.note(ev, &mut hints);
        }
        while let Ok(ev) = self.events.try_recv() {
            self.note(ev, &mut hints);
        }
        if self.overflowed.swap(false, Ordering::Relaxed) {
            self.dirty.extend(self.dirs.keys().cloned());
            hints.rescan = true;
        }
        hints
    }

    fn note(&mut self, ev: notify::Result<notify::Event>, hints: &mut Hints) {
        let Ok(ev) = ev else {
            hints.rescan = true;
            return;
        };
        if ev.need_rescan() {
            self.dirty.extend(self.dirs.keys().cloned());
            hints.rescan = true;
            return;
        }
        let structural = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(notify::event::ModifyKind::Name(_))
                | EventKind::Any
        );
        for p in ev.paths {
            if structural {
                if let Some(parent) = p.parent()
                    && self.dirs.contains_key(parent)
                {
                    self.dirty.insert(parent.to_path_buf());
                }
                if self.dirs.contains_key(&p) {
                    self.dirty.insert(p.clone());
                }
                hints.rescan = true;
            }
            if self.matched.contains_key(&p) {
                hints.written.push(p);
            }
        }
    }

    /// Stats every known directory (and missing roots), lists those that changed, and returns
    /// the files matched since the last call. Files that disappeared simply leave
    /// [`Discovery::matched`]; the tailer notices them through its own stat of each file.
    pub fn refresh(&mut self) -> Vec<PathBuf> {
        let mut added = Vec::new();
        let roots: Vec<(PathBuf, Root)> = self.roots.iter().map(|(p, r)| (p.clone(), *r)).collect();
        for (root, r) in roots {
            if !self.dirs.contains_key(&root) && std::fs::metadata(&root).is_ok_and(|m| m.is_dir()) {
                self.add_dir(&root, r.depth, &mut added);
            }
        }
        let mut changed: Vec<PathBuf> = Vec::new();
        let mut gone: Vec<PathBuf> = Vec::new();
        for (path, dir) in &self.dirs {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => {
                    if mtime(&m) != dir.mtime || self.dirty.contains(path) {
                        changed.push(path.clone());
                    }
                }
                _ => gone.push(path.clone()),
            }
        }
        self.dirty.clear();
        for path in gone {
            self.remove_dir(&path);
        }
        for path in changed {
            self.relist(&path, &mut added);
        }
        added
    }

    fn add_dir(&mut self, path: &Path, depth: Option<usize>, added: &mut Vec<PathBuf>) {
        if self.dirs.contains_key(path) {
            return;
        }
        if let Some(w) = self.watcher.as_mut()
            && let Err(e) = w.watch(path, RecursiveMode::NonRecursive)
        {
            self.watch_failures += 1;
            if self.watch_failures == 1 {
                tracing::warn!(dir = %path.display(), error = %e, "cannot watch a directory with inotify (fs.inotify.max_user_watches?); it is still polled");
            }
        }
        self.dirs.insert(path.to_path_buf(), Dir { mtime: (0, 0), depth, files: Vec::new() });
        self.relist(path, added);
    }

    fn remove_dir(&mut self, path: &Path) {
        let sub: Vec<PathBuf> = self.dirs.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for p in sub {
            if let Some(d) = self.dirs.remove(&p) {
                for f in d.files {
                    self.matched.remove(&f);
                }
            }
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(&p);
            }
        }
    }

    fn relist(&mut self, path: &Path, added: &mut Vec<PathBuf>) {
        let Some(depth) = self.dirs.get(path).map(|d| d.depth) else { return };
        // mtime first: a change during the listing is then seen on the next poll.
        let m = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => m,
            _ => {
                self.remove_dir(path);
                return;
            }
        };
        let Ok(entries) = std::fs::read_dir(path) else {
            self.remove_dir(path);
            return;
        };
        let mut files = Vec::new();
        let mut subdirs = Vec::new();
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            let p = entry.path();
            if ft.is_dir() {
                if depth != Some(0) {
                    subdirs.push(p);
                }
            } else if (ft.is_file() || ft.is_symlink())
                && let Some(src) = self.source_of(&p)
            {
                if ft.is_symlink() && !std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                files.push((p, src));
            }
        }
        let old: HashSet<PathBuf> = self.dirs.get(path).map(|d| d.files.iter().cloned().collect()).unwrap_or_default();
        let new: HashSet<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        for gone in old.difference(&new) {
            self.matched.remove(gone);
        }
        for (p, src) in files {
            if self.matched.insert(p.clone(), src).is_none() {
                added.push(p);
            }
        }
        if let Some(d) = self.dirs.get_mut(path) {
            // File times come from a coarse clock: an entry added in the same tick as this
            // listing but after it would leave the mtime unchanged. A directory changed in the
            // last two seconds is therefore listed again on the next poll.
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            d.mtime = if now - m.mtime() < 2 { (0, 0) } else { mtime(&m) };
            d.files = new.into_iter().collect();
        }
        let child_depth = depth.map(|d| d.saturating_sub(1));
        let known: Vec<PathBuf> = self.dirs.keys().filter(|p| p.parent() == Some(path)).cloned().collect();
        for k in known {
            if !subdirs.contains(&k) {
                self.remove_dir(&k);
            }
        }
        for s in subdirs {
            self.add_dir(&s, child_depth, added);
        }
    }

    /// The first source whose include globs match `path` and whose exclude globs do not
    /// (whether or not the file exists).
    pub fn source_of(&self, path: &Path) -> Option<usize> {
        self.sources.iter().position(|s| s.include.is_match(path) && !s.exclude.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_depths() {
        assert_eq!(glob_root("/var/log/**/*.log"), (PathBuf::from("/var/log"), None));
        assert_eq!(glob_root("/a/b/c.log"), (PathBuf::from("/a/b"), Some(0)));
        assert_eq!(glob_root("/a/*/c/*.log"), (PathBuf::from("/a"), Some(2)));
        assert_eq!(glob_root("/*.log"), (PathBuf::from("/"), Some(0)));
    }

    #[test]
    fn finds_new_files_and_subdirectories_incrementally() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        let glob = format!("{}/**/*.log", root.display());
        let mut d = Discovery::new(&[(vec![glob], vec![format!("{}/skip/**", root.display())])]).unwrap();
        assert!(d.refresh().is_empty(), "root does not exist yet");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("skip")).unwrap();
        std::fs::write(root.join("a/b/x.log"), "x\n").unwrap();
        std::fs::write(root.join("a/y.txt"), "y\n").unwrap();
        std::fs::write(root.join("skip/z.log"), "z\n").unwrap();
        assert_eq!(d.refresh(), vec![root.join("a/b/x.log")]);
        assert!(d.refresh().is_empty(), "nothing changed");
        std::fs::write(root.join("a/b/w.log"), "w\n").unwrap();
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::write(root.join("c/v.log"), "v\n").unwrap();
        let mut added = d.refresh();
        added.sort();
        assert_eq!(added, vec![root.join("a/b/w.log"), root.join("c/v.log")]);
        std::fs::remove_dir_all(root.join("a")).unwrap();
        d.refresh();
        assert_eq!(d.matched().len(), 1);
    }
}
