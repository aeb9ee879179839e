//! The textfile collector: `*.prom` files from a directory, validated and exposed as they are
//! (node_exporter's `textfile` collector), so cron jobs and scripts can publish metrics.
//!
//! A file is taken whole or not at all: a parse error (reported with its line and column),
//! a client-side timestamp, a duplicate series, or a family whose type or HELP contradicts
//! another file's makes the file count as bad. Bad files set `node_textfile_scrape_error` to 1
//! (node_exporter's metric) and `node_textfile_file_error{file}` to 1 (ours, so the bad file is
//! named), and are logged once per distinct problem. Good files get
//! `node_textfile_mtime_seconds{file}`.

use super::{Context, Family, Kind, Metric};
use osprey_protocol::exposition::{Entry, Format, MetricKind, Parser};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The last problem logged per file, so a bad file is logged when its problem changes, not
/// every cycle.
static LOGGED: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

fn log_problem(path: &Path, problem: Option<&str>) {
    let mut guard = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    match problem {
        Some(p) if map.get(path).map(String::as_str) != Some(p) => {
            tracing::warn!(file = %path.display(), problem = p, "textfile collector: skipping a bad file");
            map.insert(path.to_path_buf(), p.to_string());
        }
        Some(_) => {}
        None => {
            if map.remove(path).is_some() {
                tracing::info!(file = %path.display(), "textfile collector: file is valid again");
            }
        }
    }
}

fn kind_of(k: MetricKind) -> Kind {
    match k {
        MetricKind::Counter => Kind::Counter,
        MetricKind::Gauge => Kind::Gauge,
        MetricKind::Histogram => Kind::Histogram,
        MetricKind::Summary => Kind::Summary,
        _ => Kind::Untyped,
    }
}

/// Parses one file into families (sample names resolved to family + suffix).
pub fn parse_file(path: &Path, body: &[u8]) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut types: HashMap<String, Kind> = HashMap::new();
    let mut helps: HashMap<String, String> = HashMap::new();
    let mut seen: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    for entry in Parser::new(body, Format::Text) {
        match entry.map_err(|e| format!("{}: {e}", path.display()))? {
            Entry::Help { name, help } => {
                helps.insert(name.to_string(), help.into_owned());
            }
            Entry::Type { name, kind } => {
                if index.contains_key(name) {
                    return Err(format!("{}: # TYPE {name} comes after samples of {name}", path.display()));
                }
                types.insert(name.to_string(), kind_of(kind));
            }
            Entry::Unit { .. } => {}
            Entry::Sample(s) => {
                if s.timestamp_ms.is_some() {
                    return Err(format!(
                        "{}: sample {} has a client-side timestamp, which textfiles must not carry",
                        path.display(),
                        s.name
                    ));
                }
                let (family, suffix, kind) = resolve(s.name, &types);
                let mut labels: Vec<(String, String)> =
                    s.labels().map(|(k, v)| (k.to_string(), v.into_owned())).collect();
                labels.sort();
                if !seen.insert((s.name.to_string(), labels.clone())) {
                    return Err(format!("{}: sample {}{labels:?} appears twice", path.display(), s.name));
                }
                let i = *index.entry(family.to_string()).or_insert_with(|| {
                    families.push(Family::new(family.to_string(), String::new(), kind));
                    families.len() - 1
                });
                families[i].samples.push(Metric {
                    suffix,
                    labels: labels.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
                    value: s.value,
                });
            }
        }
    }
    for f in &mut families {
        f.help =
            Cow::Owned(helps.remove(f.name.as_ref()).unwrap_or_else(|| format!("Metric read from {}", path.display())));
    }
    Ok(families)
}

/// Which family a sample name belongs to: `x_bucket` to histogram `x`, `x_sum`/`x_count` to
/// histogram or summary `x`, anything else to itself.
fn resolve<'a>(name: &'a str, types: &HashMap<String, Kind>) -> (&'a str, &'static str, Kind) {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
            && (*kind == Kind::Histogram || (*kind == Kind::Summary && suffix != "_bucket"))
        {
            return (base, suffix, *kind);
        }
    }
    (name, "", types.get(name).copied().unwrap_or(Kind::Untyped))
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let Some(dir) = &ctx.textfile_directory else { return Ok(()) };
    let mut any_error = false;
    let mut mtime =
        Family::new("node_textfile_mtime_seconds", "Unixtime mtime of textfiles successfully read.", Kind::Gauge);
    let mut file_error = Family::new(
        "node_textfile_file_error",
        "1 if this textfile could not be read or is invalid, 0 otherwise (Osprey: names the bad file).",
        Kind::Gauge,
    );
    let mut merged: Vec<Family> = Vec::new();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "prom")).collect(),
        Err(e) => {
            // A directory that does not exist yet is a scrape error, not a reason to stop
            // looking: scripts often create it later.
            log_problem(dir, Some(&format!("cannot read the textfile directory: {e}")));
            any_error = true;
            Vec::new()
        }
    };
    if !any_error {
        log_problem(dir, None);
    }
    paths.sort();
    for path in paths {
        let result = std::fs::read(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|body| parse_file(&path, &body))
            .and_then(|fams| {
                for f in &fams {
                    if let Some(other) = merged.iter().find(|m| m.name == f.name)
                        && (other.kind != f.kind || other.help != f.help)
                    {
                        return Err(format!(
                            "{}: family {} has a different type or HELP than in another file",
                            path.display(),
                            f.name
                        ));
                    }
                }
                Ok(fams)
            });
        let label = vec![(Cow::Borrowed("file"), path.display().to_string())];
        match result {
            Ok(fams) => {
                log_problem(&path, None);
                for f in fams {
                    match merged.iter_mut().find(|m| m.name == f.name) {
                        Some(m) => m.samples.extend(f.samples),
                        None => merged.push(f),
                    }
                }
                let t = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs() as f64);
                mtime.push(label.clone(), t);
                file_error.push(label, 0.0);
            }
            Err(problem) => {
                log_problem(&path, Some(&problem));
                any_error = true;
                file_error.push(label, 1.0);
            }
        }
    }
    out.extend(merged);
    out.push(mtime);
    out.push(file_error);
    out.push(Family::single(
        "node_textfile_scrape_error",
        "1 if there was an error opening or reading a file, 0 otherwise",
        Kind::Gauge,
        if any_error { 1.0 } else { 0.0 },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn good_files_are_exposed_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "textfile/good.prom",
            "# HELP my_metric A test.\n# TYPE my_metric gauge\nmy_metric{a=\"b\"} 3\n",
        );
        write(
            d.path(),
            "textfile/h.prom",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
        );
        write(d.path(), "textfile/bad.prom", "ok 1\nbad{ 1\n");
        write(d.path(), "textfile/ts.prom", "x 1 1700000000000\n");
        write(d.path(), "textfile/ignored.txt", "bad{\n");
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        assert_eq!(value(&out, "my_metric", &[("a", "b")]), 3.0);
        let h = find(&out, "h");
        assert_eq!(h.kind, Kind::Histogram);
        assert_eq!(h.help, format!("Metric read from {}", d.path().join("textfile/h.prom").display()));
        assert_eq!(
            h.samples.iter().map(|m| m.suffix).collect::<Vec<_>>(),
            vec!["_bucket", "_bucket", "_sum", "_count"]
        );
        assert!(!out.iter().any(|f| f.name == "ok"), "a bad file is skipped whole");
        assert_eq!(value(&out, "node_textfile_scrape_error", &[]), 1.0);
        let bad = d.path().join("textfile/bad.prom").display().to_string();
        assert_eq!(value(&out, "node_textfile_file_error", &[("file", &bad)]), 1.0);
        let ts = d.path().join("textfile/ts.prom").display().to_string();
        assert_eq!(value(&out, "node_textfile_file_error", &[("file", &ts)]), 1.0);
        let good = d.path().join("textfile/good.prom").display().to_string();
        assert_eq!(value(&out, "node_textfile_file_error", &[("file", &good)]), 0.0);
        assert!(value(&out, "node_textfile_mtime_seconds", &[("file", &good)]) > 1e9);
        let err = parse_file(Path::new("bad.prom"), b"ok 1\nbad{ 1\n").unwrap_err();
        assert!(err.starts_with("bad.prom: line 2, column 6"), "{err}");
    }
}
