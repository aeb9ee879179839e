//! `node_time_seconds`, `node_time_zone_offset_seconds{time_zone}` and the clocksource info
//! metrics.

use super::{Context, Family, Kind, read};
use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    out.push(Family::single("node_time_seconds", "System time in seconds since epoch (1970).", Kind::Gauge, now));
    let (zone, offset) = local_zone(ctx, now as i64);
    let mut tz = Family::new("node_time_zone_offset_seconds", "System time zone offset in seconds.", Kind::Gauge);
    tz.push(vec![(Cow::Borrowed("time_zone"), zone)], offset as f64);
    out.push(tz);

    let mut available = Family::new(
        "node_time_clocksource_available_info",
        "Available clocksources read from '/sys/devices/system/clocksource'.",
        Kind::Gauge,
    );
    let mut current = Family::new(
        "node_time_clocksource_current_info",
        "Current clocksource read from '/sys/devices/system/clocksource'.",
        Kind::Gauge,
    );
    if let Ok(dirs) = std::fs::read_dir(ctx.paths.sys("devices/system/clocksource")) {
        let mut dirs: Vec<_> = dirs.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        dirs.sort();
        for dir in dirs {
            let Some(device) = dir.strip_prefix("clocksource") else { continue };
            let base = format!("devices/system/clocksource/{dir}");
            let labels = |c: &str| {
                vec![(Cow::Borrowed("clocksource"), c.to_string()), (Cow::Borrowed("device"), device.to_string())]
            };
            if let Ok(a) = read(&ctx.paths.sys(&format!("{base}/available_clocksource"))) {
                for c in a.split_ascii_whitespace() {
                    available.push(labels(c), 1.0);
                }
            }
            if let Ok(c) = read(&ctx.paths.sys(&format!("{base}/current_clocksource"))) {
                current.push(labels(c.trim()), 1.0);
            }
        }
    }
    out.push(available);
    out.push(current);
    Ok(())
}

/// The local zone's abbreviation and UTC offset at `now`, from `$TZ` or `/etc/localtime`
/// (TZif); UTC when neither says otherwise.
fn local_zone(ctx: &Context, now: i64) -> (String, i64) {
    let path = match std::env::var("TZ") {
        Ok(tz) if tz.starts_with('/') => std::path::PathBuf::from(tz),
        Ok(tz) if !tz.is_empty() => std::path::Path::new("/usr/share/zoneinfo").join(tz.trim_start_matches(':')),
        _ => ctx.paths.rootfs("/etc/localtime"),
    };
    std::fs::read(path).ok().and_then(|b| tzif_at(&b, now)).unwrap_or_else(|| ("UTC".into(), 0))
}

/// Finds the local time type in effect at `now` in a TZif file (version 1 or 2+).
fn tzif_at(b: &[u8], now: i64) -> Option<(String, i64)> {
    let counts = |h: &[u8]| -> Option<[usize; 6]> {
        if h.get(..4)? != b"TZif" {
            return None;
        }
        let mut c = [0usize; 6];
        for (i, v) in c.iter_mut().enumerate() {
            let o = 20 + i * 4;
            *v = u32::from_be_bytes(h.get(o..o + 4)?.try_into().ok()?) as usize;
        }
        Some(c)
    };
    let [isut, isstd, leap, timecnt, typecnt, charcnt] = counts(b)?;
    let (data, time_size) = if b.get(4).is_some_and(|v| *v >= b'2') {
        // Skip the version 1 block; the version 2 block uses 64-bit times.
        let v1 = 44 + timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isut;
        (b.get(v1..)?, 8)
    } else {
        (b, 4)
    };
    let [_, _, _, timecnt, typecnt, charcnt] = counts(data)?;
    let times = data.get(44..44 + timecnt * time_size)?;
    let idx = data.get(44 + timecnt * time_size..44 + timecnt * (time_size + 1))?;
    let types_at = 44 + timecnt * (time_size + 1);
    let types = data.get(types_at..types_at + typecnt * 6)?;
    let chars = data.get(types_at + typecnt * 6..types_at + typecnt * 6 + charcnt)?;
    let mut current = 0usize;
    for i in 0..timecnt {
        let t = if time_size == 8 {
            i64::from_be_bytes(times[i * 8..i * 8 + 8].try_into().ok()?)
        } else {
            i32::from_be_bytes(times[i * 4..i * 4 + 4].try_into().ok()?) as i64
        };
        if t > now {
            break;
        }
        current = idx[i] as usize;
    }
    let ty = types.get(current * 6..current * 6 + 6)?;
    let offset = i32::from_be_bytes(ty[0..4].try_into().ok()?) as i64;
    let abbr_at = ty[5] as usize;
    let abbr = chars.get(abbr_at..)?;
    let end = abbr.iter().position(|c| *c == 0).unwrap_or(abbr.len());
    Some((String::from_utf8_lossy(&abbr[..end]).into_owned(), offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_zone_from_tzif_files_when_present() {
        for (zone, abbrs) in [("UTC", &["UTC"][..]), ("Europe/Paris", &["CET", "CEST"][..])] {
            let Ok(b) = std::fs::read(format!("/usr/share/zoneinfo/{zone}")) else { continue };
            let (abbr, offset) = tzif_at(&b, 1_700_000_000).unwrap();
            assert!(abbrs.contains(&abbr.as_str()), "{zone}: {abbr}");
            if zone == "Europe/Paris" {
                assert_eq!(offset, 3600, "November 2023 is CET");
            }
        }
        assert_eq!(tzif_at(b"not a tzif", 0), None);
    }
}
