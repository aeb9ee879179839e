//! Target discovery: `static_configs` and `file_sd_configs` (Prometheus' file SD format, JSON
//! or YAML by extension).
//!
//! File SD is polled: every second the matched files are `stat`ed and those whose size or
//! mtime changed are re-read; every `refresh_interval` all are re-read anyway. Polling costs a
//! few `stat` calls and works on every file system (inotify misses NFS and bind mounts). A file
//! that does not parse keeps its previous targets and is logged once per distinct problem, as
//! Prometheus does.

use osprey_config::scrape::{FileSdConfig, ScrapeJob};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// A group of targets sharing labels, as Prometheus' `targetgroup.Group`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub targets: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

pub fn static_groups(job: &ScrapeJob) -> Vec<TargetGroup> {
    job.static_configs.iter().map(|s| TargetGroup { targets: s.targets.clone(), labels: s.labels.clone() }).collect()
}

/// Parses one file SD file by its extension.
pub fn parse_file_sd(path: &Path, text: &str) -> Result<Vec<TargetGroup>, String> {
    let groups: Vec<TargetGroup> = if path.extension().is_some_and(|x| x == "json") {
        serde_json::from_str(text).map_err(|e| format!("{}: invalid JSON file_sd: {e}", path.display()))?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(text).map_err(|e| format!("{}: invalid YAML file_sd: {e}", path.display()))?
    };
    for (i, g) in groups.iter().enumerate() {
        for t in &g.targets {
            if t.is_empty() || t.contains('/') {
                return Err(format!("{}: group {i}: target {t:?} must be host:port", path.display()));
            }
        }
    }
    Ok(groups)
}

/// Expands a path whose last component may be a glob.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else { return vec![] };
    if !name.contains(['*', '?', '[']) {
        return if p.exists() { vec![p.to_path_buf()] } else { vec![] };
    }
    let Ok(glob) = globset::Glob::new(name).map(|g| g.compile_matcher()) else { return vec![] };
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| glob.is_match(e.file_name())).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

struct FileState {
    stamp: (u64, Option<SystemTime>),
    groups: Vec<TargetGroup>,
    problem: Option<String>,
}

/// The discovered groups of one job, kept up to date by [`JobDiscovery::refresh`].
pub struct JobDiscovery {
    static_groups: Vec<TargetGroup>,
    file_sd: Vec<FileSdConfig>,
    files: HashMap<PathBuf, FileState>,
    last_full: Instant,
}

impl JobDiscovery {
    pub fn new(job: &ScrapeJob) -> JobDiscovery {
        JobDiscovery {
            static_groups: static_groups(job),
            file_sd: job.file_sd_configs.clone(),
            files: HashMap::new(),
            last_full: Instant::now(),
        }
    }

    /// Re-reads changed (or, every refresh interval, all) files. Returns true when the set of
    /// groups may have changed.
    pub fn refresh(&mut self) -> bool {
        if self.file_sd.is_empty() {
            return false;
        }
        let refresh = self.file_sd.iter().map(|f| f.refresh_interval.get()).min().unwrap_or_default();
        let full = self.last_full.elapsed() >= refresh;
        if full {
            self.last_full = Instant::now();
        }
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut changed = false;
        for pattern in self.file_sd.iter().flat_map(|f| f.files.iter()) {
            for path in expand(pattern) {
                seen.push(path.clone());
                let stamp = std::fs::metadata(&path).map(|m| (m.len(), m.modified().ok())).unwrap_or((0, None));
                if !full && self.files.get(&path).is_some_and(|s| s.stamp == stamp) {
                    continue;
                }
                let result = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|t| parse_file_sd(&path, &t));
                let state =
                    self.files.entry(path.clone()).or_insert(FileState { stamp, groups: vec![], problem: None });
                state.stamp = stamp;
                match result {
                    Ok(groups) => {
                        if state.problem.take().is_some() {
                            tracing::info!(file = %path.display(), "file_sd file is valid again");
                        }
                        if state.groups != groups {
                            state.groups = groups;
                            changed = true;
                        }
                    }
                    Err(problem) => {
                        if state.problem.as_deref() != Some(&problem) {
                            tracing::error!(file = %path.display(), %problem, "cannot use file_sd file; keeping its previous targets");
                            state.problem = Some(problem);
                        }
                    }
                }
            }
        }
        let before = self.files.len();
        self.files.retain(|p, _| seen.contains(p));
        changed || before != self.files.len()
    }

    /// Every group with the labels discovery adds (`__meta_filepath` for file SD).
    pub fn groups(&self) -> Vec<TargetGroup> {
        let mut out = self.static_groups.clone();
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        for p in paths {
            for g in &self.files[p].groups {
                let mut g = g.clone();
                g.labels.insert("__meta_filepath".into(), p.display().to_string());
                out.push(g);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_file_sd() {
        let json = r#"[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}, {"targets": ["c:3"]}]"#;
        let g = parse_file_sd(Path::new("t.json"), json).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].labels["env"], "prod");
        let yaml = "- targets: ['a:1', 'b:2']\n  labels:\n    env: prod\n- targets:\n    - c:3\n";
        assert_eq!(parse_file_sd(Path::new("t.yml"), yaml).unwrap(), g);
        let err = parse_file_sd(Path::new("t.json"), "[{\"targets\": 5}]").unwrap_err();
        assert!(err.starts_with("t.json: invalid JSON file_sd"), "{err}");
        let err = parse_file_sd(Path::new("t.yaml"), "- targets: ['http://a:1/x']\n").unwrap_err();
        assert!(err.contains("must be host:port"), "{err}");
    }

    #[test]
    fn rereads_changed_files_and_keeps_targets_of_a_broken_one() {
        let d = tempfile::tempdir().unwrap();
        let job = ScrapeJob {
            job_name: "j".into(),
            file_sd_configs: vec![FileSdConfig {
                files: vec![d.path().join("*.json").display().to_string()],
                ..FileSdConfig::default()
            }],
            ..ScrapeJob::default()
        };
        let mut disc = JobDiscovery::new(&job);
        assert!(!disc.refresh());
        std::fs::write(d.path().join("a.json"), r#"[{"targets": ["a:1"]}]"#).unwrap();
        assert!(disc.refresh());
        assert_eq!(disc.groups()[0].targets, vec!["a:1"]);
        assert_eq!(disc.groups()[0].labels["__meta_filepath"], d.path().join("a.json").display().to_string());
        std::fs::write(d.path().join("a.json"), r#"[{"targets": ["a:1", "b:2"]}]"#).unwrap();
        assert!(disc.refresh());
        assert_eq!(disc.groups()[0].targets.len(), 2);
        std::fs::write(d.path().join("a.json"), "not json at all").unwrap();
        disc.refresh();
        assert_eq!(disc.groups()[0].targets.len(), 2, "a broken file keeps its previous targets");
        std::fs::remove_file(d.path().join("a.json")).unwrap();
        assert!(disc.refresh());
        assert!(disc.groups().is_empty());
    }
}
