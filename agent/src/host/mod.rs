//! Host metrics with node_exporter's names, types, labels, units and HELP text.
//!
//! Each collector reads a few `/proc` or `/sys` files and appends metric families; names, label
//! names and HELP strings are node_exporter 1.5's (Debian's `prometheus-node-exporter`), checked
//! family by family against the real binary by `tests/host_node_exporter.rs`. [`HostCollectors`]
//! runs the enabled collectors, times each one and adds `node_scrape_collector_duration_seconds`
//! and `node_scrape_collector_success` exactly as node_exporter does.
//!
//! A collector whose file does not exist on this kernel (no `/proc/pressure`, no hwmon) is
//! disabled after one warning instead of failing every cycle; it keeps reporting
//! `node_scrape_collector_success 0` so the gap is visible.

mod cpu;
mod diskstats;
mod filefd;
mod filesystem;
mod hwmon;
mod loadavg;
mod meminfo;
mod netdev;
mod netstat;
mod os;
mod pressure;
mod sockstat;
mod stat;
pub mod textfile;
mod thermal;
mod time;
mod vmstat;

use osprey_config::agent::HostMetrics;
use osprey_protocol::exposition;
use osprey_protocol::prompb::{Label, Sample, TimeSeries};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Untyped,
    Histogram,
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Untyped => "untyped",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// Label pairs of one sample; names are mostly static strings.
pub type Labels = Vec<(Cow<'static, str>, String)>;

/// One sample of a family. Its name is the family's name plus `suffix` (`_bucket`, `_sum`,
/// `_count` for histograms and summaries read by the textfile collector; empty otherwise).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub suffix: &'static str,
    pub labels: Labels,
    pub value: f64,
}

/// One metric family: its samples share a name, a type and a HELP text.
#[derive(Clone, Debug)]
pub struct Family {
    pub name: Cow<'static, str>,
    pub help: Cow<'static, str>,
    pub kind: Kind,
    pub samples: Vec<Metric>,
}

impl Family {
    pub fn new(name: impl Into<Cow<'static, str>>, help: impl Into<Cow<'static, str>>, kind: Kind) -> Self {
        Family { name: name.into(), help: help.into(), kind, samples: Vec::new() }
    }

    pub fn single(
        name: impl Into<Cow<'static, str>>,
        help: impl Into<Cow<'static, str>>,
        kind: Kind,
        value: f64,
    ) -> Self {
        let mut f = Family::new(name, help, kind);
        f.samples.push(Metric { suffix: "", labels: Vec::new(), value });
        f
    }

    pub fn push(&mut self, labels: Labels, value: f64) {
        self.samples.push(Metric { suffix: "", labels, value });
    }
}

/// Where procfs, sysfs and the root file system are (a container mounts the host's elsewhere).
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub rootfs: PathBuf,
    /// udev's database of device properties (`/run/udev/data`).
    pub udev_data: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            rootfs: PathBuf::from("/"),
            udev_data: PathBuf::from("/run/udev/data"),
        }
    }
}

impl HostPaths {
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }
    /// A path of the host's root file system (`/etc/os-release` -> `{rootfs}/etc/os-release`).
    pub fn rootfs(&self, abs: &str) -> PathBuf {
        self.rootfs.join(abs.trim_start_matches('/'))
    }
}

pub(crate) fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

pub(crate) fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Everything a collector may need besides the paths.
pub struct Context {
    pub paths: HostPaths,
    pub mount_points_exclude: regex::Regex,
    pub fs_types_exclude: regex::Regex,
    pub diskstats_device_exclude: regex::Regex,
    pub netdev_device_exclude: Option<regex::Regex>,
    pub textfile_directory: Option<PathBuf>,
}

type CollectFn = fn(&Context, &mut Vec<Family>) -> std::io::Result<()>;

/// Collectors in node_exporter's order of names (its output is sorted by family name anyway).
const COLLECTORS: &[(&str, CollectFn)] = &[
    ("cpu", cpu::collect),
    ("diskstats", diskstats::collect),
    ("filefd", filefd::collect),
    ("filesystem", filesystem::collect),
    ("hwmon", hwmon::collect),
    ("loadavg", loadavg::collect),
    ("meminfo", meminfo::collect),
    ("netdev", netdev::collect),
    ("netstat", netstat::collect),
    ("os", os::collect),
    ("pressure", pressure::collect),
    ("sockstat", sockstat::collect),
    ("stat", stat::collect),
    ("textfile", textfile::collect),
    ("thermal_zone", thermal::collect),
    ("time", time::collect),
    ("uname", os::collect_uname),
    ("vmstat", vmstat::collect),
];

struct Slot {
    name: &'static str,
    collect: CollectFn,
    /// Set after the first "file not found": the collector is not run again.
    missing: bool,
}

/// The enabled collectors and what they need; [`HostCollectors::collect`] runs them all.
pub struct HostCollectors {
    ctx: Context,
    slots: Vec<Slot>,
}

impl HostCollectors {
    /// Builds the collectors `cfg` enables. Regexes were validated with the config; an invalid
    /// one here is still an error, not a panic.
    pub fn new(cfg: &HostMetrics) -> anyhow::Result<HostCollectors> {
        let re = |key: &str, s: &str| {
            regex::Regex::new(s).map_err(|e| anyhow::anyhow!("host_metrics.{key}: invalid regex {s:?}: {e}"))
        };
        let ctx = Context {
            paths: HostPaths {
                proc: cfg.proc_path.clone(),
                sys: cfg.sys_path.clone(),
                rootfs: cfg.rootfs_path.clone(),
                ..HostPaths::default()
            },
            mount_points_exclude: re("filesystem_mount_points_exclude", &cfg.filesystem_mount_points_exclude)?,
            fs_types_exclude: re("filesystem_fs_types_exclude", &cfg.filesystem_fs_types_exclude)?,
            diskstats_device_exclude: re("diskstats_device_exclude", &cfg.diskstats_device_exclude)?,
            netdev_device_exclude: if cfg.netdev_device_exclude.is_empty() {
                None
            } else {
                Some(re("netdev_device_exclude", &cfg.netdev_device_exclude)?)
            },
            textfile_directory: (!cfg.textfile_directory.is_empty()).then(|| PathBuf::from(&cfg.textfile_directory)),
        };
        Ok(HostCollectors::with_context(ctx, &cfg.disable))
    }

    /// Collectors over an explicit context (tests point it at fixture trees).
    pub fn with_context(ctx: Context, disable: &[String]) -> HostCollectors {
        let slots = COLLECTORS
            .iter()
            .filter(|(name, _)| !disable.iter().any(|d| d == name))
            .filter(|(name, _)| *name != "textfile" || ctx.textfile_directory.is_some())
            .map(|(name, collect)| Slot { name, collect: *collect, missing: false })
            .collect();
        HostCollectors { ctx, slots }
    }

    /// Runs every enabled collector once and returns all families, the per-collector
    /// duration and success families included.
    pub fn collect(&mut self) -> Vec<Family> {
        let mut out = Vec::with_capacity(256);
        let mut duration = Family::new(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            Kind::Gauge,
        );
        let mut success =
            Family::new("node_scrape_collector_success", "node_exporter: Whether a collector succeeded.", Kind::Gauge);
        for slot in &mut self.slots {
            let started = Instant::now();
            let ok = if slot.missing {
                false
            } else {
                let before = out.len();
                match (slot.collect)(&self.ctx, &mut out) {
                    Ok(()) => true,
                    Err(e) => {
                        out.truncate(before);
                        if e.kind() == std::io::ErrorKind::NotFound {
                            slot.missing = true;
                            tracing::warn!(collector = slot.name, error = %e, "host metrics: a file this collector reads does not exist here; disabling it");
                        } else {
                            tracing::debug!(collector = slot.name, error = %e, "host metric collector failed");
                        }
                        false
                    }
                }
            };
            let labels = vec![(Cow::Borrowed("collector"), slot.name.to_string())];
            duration.push(labels.clone(), started.elapsed().as_secs_f64());
            success.push(labels, if ok { 1.0 } else { 0.0 });
        }
        out.push(duration);
        out.push(success);
        out
    }
}

/// Converts families into remote_write series with `extra` labels (e.g. `instance`, `job`) and
/// one timestamp. A family label wins over an extra label of the same name.
pub fn to_series(families: &[Family], extra: &[(String, String)], ts_ms: i64) -> Vec<TimeSeries> {
    let mut out = Vec::with_capacity(families.iter().map(|f| f.samples.len()).sum());
    for f in families {
        for m in &f.samples {
            let mut l: Vec<Label> = Vec::with_capacity(m.labels.len() + extra.len() + 1);
            let name = if m.suffix.is_empty() { f.name.to_string() } else { format!("{}{}", f.name, m.suffix) };
            l.push(Label::new("__name__", name));
            // An empty label value means "no such label" in Prometheus' data model; receivers
            // drop or refuse it, so it is not sent (the text exposition keeps it, as
            // node_exporter's does).
            l.extend(m.labels.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| Label::new(k.to_string(), v.clone())));
            l.extend(
                extra
                    .iter()
                    .filter(|(k, v)| !v.is_empty() && !m.labels.iter().any(|(lk, _)| lk == k))
                    .map(|(k, v)| Label::new(k.clone(), v.clone())),
            );
            l.sort_by(|a, b| a.name.cmp(&b.name));
            out.push(TimeSeries {
                labels: l,
                samples: vec![Sample { value: m.value, timestamp: ts_ms }],
                exemplars: vec![],
            });
        }
    }
    out
}

/// Renders families as exposition text, as node_exporter serves them: sorted by family name,
/// each family's samples sorted by labels.
pub fn to_text(families: &[Family], out: &mut String) {
    let mut order: Vec<&Family> = families.iter().collect();
    order.sort_by(|a, b| a.name.cmp(&b.name));
    for f in order {
        if f.samples.is_empty() {
            continue;
        }
        exposition::write_family_header(out, &f.name, &f.help, f.kind.as_str());
        let mut samples: Vec<&Metric> = f.samples.iter().collect();
        samples.sort_by(|a, b| a.suffix.cmp(b.suffix).then_with(|| a.labels.cmp(&b.labels)));
        let mut name = String::new();
        for m in samples {
            name.clear();
            name.push_str(&f.name);
            name.push_str(m.suffix);
            exposition::write_sample(out, &name, m.labels.iter().map(|(k, v)| (k.as_ref(), v.as_str())), m.value, None);
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A context over a fixture tree with node_exporter's default exclusions.
    pub fn context(root: &Path) -> Context {
        let d = HostMetrics::default();
        Context {
            paths: HostPaths {
                proc: root.join("proc"),
                sys: root.join("sys"),
                rootfs: root.to_path_buf(),
                udev_data: root.join("run/udev/data"),
            },
            mount_points_exclude: regex::Regex::new(&d.filesystem_mount_points_exclude).unwrap(),
            fs_types_exclude: regex::Regex::new(&d.filesystem_fs_types_exclude).unwrap(),
            diskstats_device_exclude: regex::Regex::new(&d.diskstats_device_exclude).unwrap(),
            netdev_device_exclude: Some(regex::Regex::new(&d.netdev_device_exclude).unwrap()),
            textfile_directory: Some(root.join("textfile")),
        }
    }

    pub fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn find<'a>(fams: &'a [Family], name: &str) -> &'a Family {
        fams.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no family {name}"))
    }

    pub fn value(fams: &[Family], name: &str, labels: &[(&str, &str)]) -> f64 {
        let f = find(fams, name);
        f.samples
            .iter()
            .find(|m| labels.iter().all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v)))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:?}", f.samples))
            .value
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn a_missing_file_disables_its_collector_with_success_zero() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/loadavg", "0.5 0.25 0.1 1/100 42\n");
        let mut c = HostCollectors::with_context(context(d.path()), &[]);
        for _ in 0..2 {
            let fams = c.collect();
            assert_eq!(value(&fams, "node_load1", &[]), 0.5);
            assert_eq!(value(&fams, "node_scrape_collector_success", &[("collector", "loadavg")]), 1.0);
            assert_eq!(value(&fams, "node_scrape_collector_success", &[("collector", "pressure")]), 0.0);
        }
        assert!(c.slots.iter().find(|s| s.name == "pressure").unwrap().missing);
    }

    #[test]
    fn series_leave_out_empty_label_values() {
        let mut f = Family::new("node_disk_info", "Info.", Kind::Gauge);
        f.push(vec![(Cow::Borrowed("device"), "vda".into()), (Cow::Borrowed("model"), String::new())], 1.0);
        let series = to_series(&[f], &[("job".into(), "node".into())], 7);
        let names: Vec<&str> = series[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, vec!["__name__", "device", "job"]);
    }

    #[test]
    fn disabled_collectors_do_not_run() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "proc/loadavg", "0.5 0.25 0.1 1/100 42\n");
        let mut c = HostCollectors::with_context(context(d.path()), &["loadavg".to_string()]);
        let fams = c.collect();
        assert!(!fams.iter().any(|f| f.name == "node_load1"));
        let success = find(&fams, "node_scrape_collector_success");
        assert!(!success.samples.iter().any(|m| m.labels[0].1 == "loadavg"));
    }
}
