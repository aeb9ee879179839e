//! `node_thermal_zone_temp` and `node_cooling_device_{cur,max}_state` from
//! `/sys/class/thermal`.

use super::{Context, Family, Kind, read};
use std::borrow::Cow;

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let dir = ctx.paths.sys("class/thermal");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir)?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut temp = Family::new("node_thermal_zone_temp", "Zone temperature in Celsius", Kind::Gauge);
    let mut cur =
        Family::new("node_cooling_device_cur_state", "Current throttle state of the cooling device", Kind::Gauge);
    let mut max =
        Family::new("node_cooling_device_max_state", "Maximum throttle state of the cooling device", Kind::Gauge);
    for name in names {
        let path = dir.join(&name);
        let file = |f: &str| read(&path.join(f)).ok().map(|s| s.trim().to_string());
        if let Some(zone) = name.strip_prefix("thermal_zone") {
            let (Some(kind), Some(t)) = (file("type"), file("temp").and_then(|t| t.parse::<f64>().ok())) else {
                continue;
            };
            temp.push(vec![(Cow::Borrowed("type"), kind), (Cow::Borrowed("zone"), zone.to_string())], t / 1000.0);
        } else if let Some(n) = name.strip_prefix("cooling_device") {
            let Some(kind) = file("type") else { continue };
            let labels = vec![(Cow::Borrowed("name"), n.to_string()), (Cow::Borrowed("type"), kind)];
            if let Some(v) = file("cur_state").and_then(|v| v.parse::<f64>().ok()) {
                cur.push(labels.clone(), v);
            }
            if let Some(v) = file("max_state").and_then(|v| v.parse::<f64>().ok()) {
                max.push(labels, v);
            }
        }
    }
    out.extend([temp, cur, max]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn zones_and_cooling_devices() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
        write(d.path(), "sys/class/thermal/thermal_zone0/temp", "45500\n");
        write(d.path(), "sys/class/thermal/cooling_device3/type", "Processor\n");
        write(d.path(), "sys/class/thermal/cooling_device3/cur_state", "1\n");
        write(d.path(), "sys/class/thermal/cooling_device3/max_state", "10\n");
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        assert_eq!(value(&out, "node_thermal_zone_temp", &[("type", "x86_pkg_temp"), ("zone", "0")]), 45.5);
        assert_eq!(value(&out, "node_cooling_device_max_state", &[("name", "3"), ("type", "Processor")]), 10.0);
    }
}
