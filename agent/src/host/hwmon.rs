//! `node_hwmon_*` from `/sys/class/hwmon`: temperatures, fans, voltages, chip names and
//! sensor labels, with node_exporter's chip naming (from the device path, which is stable
//! across boots, unlike `hwmonN`).

use super::{Context, Family, Kind, read};
use std::borrow::Cow;
use std::path::Path;

/// node_exporter's `cleanMetricName`: lower case, anything but `[a-z0-9:_]` becomes `_`,
/// leading and trailing `_` trimmed.
fn clean(name: &str) -> String {
    let s: String = name
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' { c } else { '_' })
        .collect();
    s.trim_matches('_').to_string()
}

fn chip_name(dir: &Path) -> String {
    if let Ok(dev) = std::fs::canonicalize(dir.join("device")) {
        let name = dev.file_name().map(|n| clean(&n.to_string_lossy())).unwrap_or_default();
        let kind = dev.parent().and_then(|p| p.file_name()).map(|n| clean(&n.to_string_lossy())).unwrap_or_default();
        if !kind.is_empty() && !name.is_empty() {
            return format!("{kind}_{name}");
        }
        if !name.is_empty() {
            return name;
        }
    }
    if let Ok(n) = read(&dir.join("name")) {
        let n = clean(&n);
        if !n.is_empty() {
            return n;
        }
    }
    let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    clean(&real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let root = ctx.paths.sys("class/hwmon");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let mut chips =
        Family::new("node_hwmon_chip_names", "Annotation metric for human-readable chip names", Kind::Gauge);
    let mut labels_f = Family::new("node_hwmon_sensor_label", "Label for given chip and sensor", Kind::Gauge);
    let mut temp = Family::new("node_hwmon_temp_celsius", "Hardware monitor for temperature (input)", Kind::Gauge);
    let mut temp_max =
        Family::new("node_hwmon_temp_max_celsius", "Hardware monitor for temperature (max)", Kind::Gauge);
    let mut temp_crit =
        Family::new("node_hwmon_temp_crit_celsius", "Hardware monitor for temperature (crit)", Kind::Gauge);
    let mut fan =
        Family::new("node_hwmon_fan_rpm", "Hardware monitor for fan revolutions per minute (input)", Kind::Gauge);
    let mut volts = Family::new("node_hwmon_in_volts", "Hardware monitor for voltage (input)", Kind::Gauge);
    for dir in dirs {
        let chip = chip_name(&dir);
        if let Ok(n) = read(&dir.join("name")) {
            chips.push(
                vec![(Cow::Borrowed("chip"), chip.clone()), (Cow::Borrowed("chip_name"), n.trim().to_string())],
                1.0,
            );
        }
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        files.sort();
        for file in files {
            let Some((sensor, prop)) = file.split_once('_') else { continue };
            let labels = || vec![(Cow::Borrowed("chip"), chip.clone()), (Cow::Borrowed("sensor"), sensor.to_string())];
            let target = match (sensor.trim_end_matches(|c: char| c.is_ascii_digit()), prop) {
                (_, "label") => {
                    if let Ok(l) = read(&dir.join(&file)) {
                        labels_f.push(
                            vec![
                                (Cow::Borrowed("chip"), chip.clone()),
                                (Cow::Borrowed("label"), l.trim().to_string()),
                                (Cow::Borrowed("sensor"), sensor.to_string()),
                            ],
                            1.0,
                        );
                    }
                    continue;
                }
                ("temp", "input") => (&mut temp, 0.001),
                ("temp", "max") => (&mut temp_max, 0.001),
                ("temp", "crit") => (&mut temp_crit, 0.001),
                ("fan", "input") => (&mut fan, 1.0),
                ("in", "input") => (&mut volts, 0.001),
                _ => continue,
            };
            if let Some(v) = read(&dir.join(&file)).ok().and_then(|v| v.trim().parse::<f64>().ok()) {
                target.0.push(labels(), v * target.1);
            }
        }
    }
    out.extend([chips, labels_f, temp, temp_max, temp_crit, fan, volts]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn temperatures_fans_and_names() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "sys/class/hwmon/hwmon0/name", "coretemp\n");
        write(d.path(), "sys/class/hwmon/hwmon0/temp1_input", "52000\n");
        write(d.path(), "sys/class/hwmon/hwmon0/temp1_crit", "100000\n");
        write(d.path(), "sys/class/hwmon/hwmon0/temp1_label", "Package id 0\n");
        write(d.path(), "sys/class/hwmon/hwmon0/fan2_input", "1200\n");
        write(d.path(), "sys/class/hwmon/hwmon0/in0_input", "1100\n");
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        assert_eq!(value(&out, "node_hwmon_temp_celsius", &[("chip", "coretemp"), ("sensor", "temp1")]), 52.0);
        assert_eq!(value(&out, "node_hwmon_temp_crit_celsius", &[("sensor", "temp1")]), 100.0);
        assert_eq!(value(&out, "node_hwmon_fan_rpm", &[("sensor", "fan2")]), 1200.0);
        assert_eq!(value(&out, "node_hwmon_in_volts", &[("sensor", "in0")]), 1.1);
        assert_eq!(value(&out, "node_hwmon_sensor_label", &[("label", "Package id 0")]), 1.0);
        assert_eq!(value(&out, "node_hwmon_chip_names", &[("chip_name", "coretemp")]), 1.0);
        assert_eq!(clean("Platform-ACPI.0 "), "platform_acpi_0");
    }
}
