//! Finding the files to follow without re-walking trees.
//!
//! Each include glob has a root (its literal directory prefix) and a depth (unbounded with
//! `**`). The tree under each root is listed once; after that, every directory is only
//! `stat`ed on each poll, and listed again when its mtime changed (an entry was added, removed
//! or renamed) or when inotify reported a create, delete or rename in it. Symlinked directories
//! are not followed (no loops); symlinked files are returned as found and deduplicated by target
//! by the tailer.
//!
//! inotify: one non-recursive watch per directory, for writes, creates, deletes and renames only
//! (not opens, closes or attribute changes: a line appended costs one event, and the kernel
//! merges repeats of it). The tailer thread reads the events itself (`poll` on the inotify
//! descriptor is its sleep), so there is no watcher thread and no queue of ours; the kernel's
//! queue (`fs.inotify.max_queued_events`) is the bound, and its overflow makes every directory
//! and file be looked at again. Events are hints: a file in a watched directory is stat-polled
//! only when inotify names it or its directory, while it is active, and at the slow full rescan
//! (the safety net for lost events and for writes inotify never sees, such as NFS clients'). A
//! directory inotify could not watch keeps being polled as if inotify did not exist.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use rustix::fs::inotify;
use std::collections::{HashMap, HashSet};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What inotify is asked to report in each watched directory.
fn watch_flags() -> inotify::WatchFlags {
    use inotify::WatchFlags as W;
    W::MODIFY | W::CREATE | W::DELETE | W::MOVED_FROM | W::MOVED_TO | W::DELETE_SELF | W::MOVE_SELF | W::ONLYDIR
}

/// Bytes read from the inotify descriptor at once (a few hundred events).
const EVENT_BUFFER: usize = 16 << 10;

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
    /// Its inotify watch, if it could be added.
    wd: Option<i32>,
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
    /// Directories in which entries were created, removed or renamed: list them again, and
    /// look at the followed files in them.
    pub dirs: Vec<PathBuf>,
    /// Events were lost (queue overflow): look at every directory and every file.
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
    /// The inotify instance (`None`: unavailable, discovery polls only).
    inotify: Option<OwnedFd>,
    /// Watch descriptor -> directory.
    watches: HashMap<i32, PathBuf>,
    events: Vec<MaybeUninit<u8>>,
    watch_failures: u64,
    /// Bumped whenever `matched` changes.
    generation: u64,
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
        let inotify = match inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable; discovering and following files by polling only");
                None
            }
        };
        Ok(Discovery {
            sources,
            roots,
            dirs: HashMap::new(),
            dirty: HashSet::new(),
            matched: HashMap::new(),
            inotify,
            watches: HashMap::new(),
            events: vec![MaybeUninit::uninit(); EVENT_BUFFER],
            watch_failures: 0,
            generation: 0,
        })
    }

    /// Whether inotify watches `dir` (so writes to the files in it are reported).
    pub fn watched(&self, dir: &Path) -> bool {
        self.dirs.get(dir).is_some_and(|d| d.wd.is_some())
    }

    /// Number of directories watched.
    pub fn dirs(&self) -> usize {
        self.dirs.len()
    }

    /// Changes whenever [`Discovery::matched`] does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every matched file and its source.
    pub fn matched(&self) -> &HashMap<PathBuf, usize> {
        &self.matched
    }

    /// Waits up to `timeout` for an inotify hint; returns what arrived (possibly nothing).
    pub fn wait(&mut self, timeout: Duration) -> Hints {
        let mut hints = Hints::default();
        let Some(fd) = &self.inotify else {
            std::thread::sleep(timeout);
            return hints;
        };
        if !timeout.is_zero() {
            let ts =
                rustix::event::Timespec::try_from(timeout).unwrap_or(rustix::event::Timespec { tv_sec: 1, tv_nsec: 0 });
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => return hints,
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => return hints,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot wait for inotify events; polling only");
                    self.inotify = None;
                    self.watches.clear();
                    std::thread::sleep(timeout);
                    return hints;
                }
            }
        }
        self.read_events(&mut hints);
        hints
    }

    /// Turns every pending inotify event into hints.
    fn read_events(&mut self, hints: &mut Hints) {
        let Some(fd) = &self.inotify else { return };
        let mut reader = inotify::Reader::new(fd, &mut self.events);
        let mut seen: HashSet<PathBuf> = HashSet::new();
        // Directories whose watch the kernel removed (deleted, or on an unmounted file system).
        let mut unwatched: Vec<PathBuf> = Vec::new();
        loop {
            let ev = match reader.next() {
                Ok(ev) => ev,
                Err(rustix::io::Errno::INTR) => continue,
                // AGAIN: nothing more for now. Anything else: read on the next wake-up; the
                // poll covers what is missed.
                Err(_) => break,
            };
            let flags = ev.events();
            if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                self.dirty.extend(self.dirs.keys().cloned());
                hints.rescan = true;
                continue;
            }
            if flags.contains(inotify::ReadFlags::IGNORED) {
                if let Some(dir) = self.watches.remove(&ev.wd()) {
                    unwatched.push(dir);
                }
                continue;
            }
            let Some(dir) = self.watches.get(&ev.wd()) else { continue };
            let structural = flags.intersects(
                inotify::ReadFlags::CREATE
                    | inotify::ReadFlags::DELETE
                    | inotify::ReadFlags::MOVED_FROM
                    | inotify::ReadFlags::MOVED_TO
                    | inotify::ReadFlags::DELETE_SELF
                    | inotify::ReadFlags::MOVE_SELF,
            );
            let path = match ev.file_name() {
                Some(name) => dir.join(std::ffi::OsStr::from_bytes(name.to_bytes())),
                // The directory itself (moved, deleted, or its watch removed).
                None => dir.clone(),
            };
            if structural {
                let changed = if ev.file_name().is_some() {
                    dir.clone()
                } else {
                    path.parent().map_or(path.clone(), Path::to_path_buf)
                };
                for d in [changed, path.clone()] {
                    if self.dirs.contains_key(&d) && self.dirty.insert(d.clone()) {
                        hints.dirs.push(d);
                    }
                }
            }
            if self.matched.contains_key(&path) && seen.insert(path.clone()) {
                hints.written.push(path);
            }
        }
        // Forgotten, and found again (watched anew) by the next listing of its parent or, for a
        // root, by the next refresh, if it still exists.
        for dir in unwatched {
            if !self.dirs.contains_key(&dir) {
                continue;
            }
            self.remove_dir(&dir);
            if let Some(parent) = dir.parent().filter(|p| self.dirs.contains_key(*p))
                && self.dirty.insert(parent.to_path_buf())
            {
                hints.dirs.push(parent.to_path_buf());
            }
            // Its followed files are looked at: gone with it, or still there unwatched.
            hints.dirs.push(dir);
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
        let mut wd = None;
        if let Some(fd) = &self.inotify {
            match inotify::add_watch(fd, path, watch_flags()) {
                Ok(w) => {
                    self.watches.insert(w, path.to_path_buf());
                    wd = Some(w);
                }
                Err(e) => {
                    self.watch_failures += 1;
                    if self.watch_failures == 1 {
                        tracing::warn!(dir = %path.display(), error = %e, "cannot watch a directory with inotify (fs.inotify.max_user_watches?); it and its files are polled");
                    }
                }
            }
        }
        self.dirs.insert(path.to_path_buf(), Dir { mtime: (0, 0), wd, depth, files: Vec::new() });
        self.relist(path, added);
    }

    fn remove_dir(&mut self, path: &Path) {
        let sub: Vec<PathBuf> = self.dirs.keys().filter(|p| p.starts_with(path)).cloned().collect();
        for p in sub {
            if let Some(d) = self.dirs.remove(&p) {
                for f in d.files {
                    self.matched.remove(&f);
                    self.generation += 1;
                }
                if let Some(wd) = d.wd {
                    // The same directory (inode) may be watched under another path with the
                    // same descriptor: only forget it if it is ours.
                    if self.watches.get(&wd) == Some(&p) {
                        self.watches.remove(&wd);
                        if let Some(fd) = &self.inotify {
                            // Fails harmlessly when the directory is gone (the kernel removed it).
                            let _ = inotify::remove_watch(fd, wd);
                        }
                    }
                }
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
            self.generation += 1;
        }
        for (p, src) in files {
            match self.matched.insert(p.clone(), src) {
                None => {
                    self.generation += 1;
                    added.push(p);
                }
                Some(old) if old != src => self.generation += 1,
                Some(_) => {}
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
