//! `node_disk_*` from `/proc/diskstats` (and `node_disk_info` with udev's device properties).

use super::{Context, Family, Kind, read};
use std::borrow::Cow;

/// Sectors in `/proc/diskstats` are always 512 bytes, whatever the device's sector size.
const SECTOR: f64 = 512.0;

/// (field index after the device name, name, help, kind, scale)
const FIELDS: &[(usize, &str, &str, Kind, f64)] = &[
    (0, "node_disk_reads_completed_total", "The total number of reads completed successfully.", Kind::Counter, 1.0),
    (1, "node_disk_reads_merged_total", "The total number of reads merged.", Kind::Counter, 1.0),
    (2, "node_disk_read_bytes_total", "The total number of bytes read successfully.", Kind::Counter, SECTOR),
    (3, "node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.", Kind::Counter, 0.001),
    (4, "node_disk_writes_completed_total", "The total number of writes completed successfully.", Kind::Counter, 1.0),
    (5, "node_disk_writes_merged_total", "The number of writes merged.", Kind::Counter, 1.0),
    (6, "node_disk_written_bytes_total", "The total number of bytes written successfully.", Kind::Counter, SECTOR),
    (
        7,
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Kind::Counter,
        0.001,
    ),
    (8, "node_disk_io_now", "The number of I/Os currently in progress.", Kind::Gauge, 1.0),
    (9, "node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", Kind::Counter, 0.001),
    (
        10,
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        11,
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (12, "node_disk_discards_merged_total", "The total number of discards merged.", Kind::Counter, 1.0),
    (
        13,
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        14,
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Kind::Counter,
        0.001,
    ),
    (
        15,
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Kind::Counter,
        1.0,
    ),
    (
        16,
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Kind::Counter,
        0.001,
    ),
];

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("diskstats"))?;
    let mut families: Vec<Family> = FIELDS.iter().map(|(_, n, h, k, _)| Family::new(*n, *h, *k)).collect();
    let mut info = Family::new("node_disk_info", "Info of /sys/block/<block_device>.", Kind::Gauge);
    for line in text.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let (major, minor, device) = (f[0], f[1], f[2]);
        if ctx.diskstats_device_exclude.is_match(device) {
            continue;
        }
        let stats = &f[3..];
        for (i, (idx, _, _, _, scale)) in FIELDS.iter().enumerate() {
            if let Some(v) = stats.get(*idx).and_then(|v| v.parse::<f64>().ok()) {
                families[i].push(vec![(Cow::Borrowed("device"), device.to_string())], v * scale);
            }
        }
        let udev = read(&ctx.paths.udev_data.join(format!("b{major}:{minor}"))).unwrap_or_default();
        let prop = |key: &str| {
            udev.lines()
                .find_map(|l| l.strip_prefix("E:").and_then(|l| l.strip_prefix(key)).and_then(|l| l.strip_prefix('=')))
                .unwrap_or("")
                .to_string()
        };
        info.push(
            vec![
                (Cow::Borrowed("device"), device.to_string()),
                (Cow::Borrowed("major"), major.to_string()),
                (Cow::Borrowed("minor"), minor.to_string()),
                (Cow::Borrowed("model"), prop("ID_MODEL")),
                (Cow::Borrowed("path"), prop("ID_PATH")),
                (Cow::Borrowed("revision"), prop("ID_REVISION")),
                (Cow::Borrowed("serial"), prop("ID_SERIAL_SHORT")),
                (Cow::Borrowed("wwn"), prop("ID_WWN")),
            ],
            1.0,
        );
    }
    out.extend(families.into_iter().filter(|f| !f.samples.is_empty()));
    out.push(info);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn parses_diskstats_and_skips_excluded_devices() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "proc/diskstats",
            " 254       0 vda 237421 1000 9000000 50000 100 5 800 70 2 3000 4000 10 1 20 30 40 50\n   7       0 loop0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n 254       1 vda1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        );
        write(d.path(), "run/udev/data/b254:0", "E:ID_MODEL=QEMU\nE:ID_SERIAL_SHORT=abc\n");
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        assert_eq!(value(&out, "node_disk_reads_completed_total", &[("device", "vda")]), 237421.0);
        assert_eq!(value(&out, "node_disk_read_bytes_total", &[("device", "vda")]), 9000000.0 * 512.0);
        assert_eq!(value(&out, "node_disk_read_time_seconds_total", &[("device", "vda")]), 50.0);
        assert_eq!(value(&out, "node_disk_flush_requests_time_seconds_total", &[("device", "vda")]), 0.05);
        assert_eq!(value(&out, "node_disk_info", &[("device", "vda"), ("model", "QEMU"), ("serial", "abc")]), 1.0);
        assert_eq!(find(&out, "node_disk_io_now").samples.len(), 1, "loop0 and the partition vda1 are excluded");
    }
}
