//! `node_filesystem_*` for every mounted file system that node_exporter's default exclusions
//! keep: sizes, free and available bytes, inodes, read-only flag, and a device error flag
//! when `statfs` fails.

use super::{Context, Family, Kind, read};
use std::borrow::Cow;
use std::collections::HashSet;

/// Undoes the octal escapes of `/proc/mounts` (`\040` for a space).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    // PID 1's view is the host's even when the agent runs in its own mount namespace.
    let mounts = read(&ctx.paths.proc("1/mounts")).or_else(|_| read(&ctx.paths.proc("mounts")))?;
    let mut size = Family::new("node_filesystem_size_bytes", "Filesystem size in bytes.", Kind::Gauge);
    let mut free = Family::new("node_filesystem_free_bytes", "Filesystem free space in bytes.", Kind::Gauge);
    let mut avail = Family::new(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        Kind::Gauge,
    );
    let mut files = Family::new("node_filesystem_files", "Filesystem total file nodes.", Kind::Gauge);
    let mut files_free = Family::new("node_filesystem_files_free", "Filesystem total free file nodes.", Kind::Gauge);
    let mut readonly = Family::new("node_filesystem_readonly", "Filesystem read-only status.", Kind::Gauge);
    let mut device_error = Family::new(
        "node_filesystem_device_error",
        "Whether an error occurred while getting statistics for the given device.",
        Kind::Gauge,
    );
    let mut seen = HashSet::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [device, mountpoint, fstype, options, ..] = f[..] else { continue };
        let mountpoint = unescape(mountpoint);
        if ctx.mount_points_exclude.is_match(&mountpoint) || ctx.fs_types_exclude.is_match(fstype) {
            continue;
        }
        let device = unescape(device);
        if !seen.insert((device.clone(), mountpoint.clone(), fstype.to_string())) {
            continue;
        }
        let labels: super::Labels = vec![
            (Cow::Borrowed("device"), device),
            (Cow::Borrowed("fstype"), fstype.to_string()),
            (Cow::Borrowed("mountpoint"), mountpoint.clone()),
        ];
        let ro = options.split(',').any(|o| o == "ro");
        match rustix::fs::statvfs(ctx.paths.rootfs(&mountpoint)) {
            Ok(s) => {
                let bsize = s.f_bsize as f64;
                size.push(labels.clone(), s.f_blocks as f64 * bsize);
                free.push(labels.clone(), s.f_bfree as f64 * bsize);
                avail.push(labels.clone(), s.f_bavail as f64 * bsize);
                files.push(labels.clone(), s.f_files as f64);
                files_free.push(labels.clone(), s.f_ffree as f64);
                readonly.push(labels.clone(), if ro { 1.0 } else { 0.0 });
                device_error.push(labels, 0.0);
            }
            Err(e) => {
                tracing::debug!(mountpoint = %mountpoint, error = %e, "statfs failed");
                device_error.push(labels, 1.0);
            }
        }
    }
    out.extend([size, free, avail, files, files_free, readonly, device_error]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn applies_node_exporter_exclusions_and_reads_statfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data dir")).unwrap();
        write(
            d.path(),
            "proc/1/mounts",
            "proc /proc proc rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\n/dev/vdb /data\\040dir ext4 ro 0 0\ntmpfs /run tmpfs rw 0 0\noverlay /x overlay rw 0 0\n/dev/vdc /missing xfs rw 0 0\n",
        );
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        let size = find(&out, "node_filesystem_size_bytes");
        let mounts: Vec<&str> = size.samples.iter().map(|m| m.labels[2].1.as_str()).collect();
        assert_eq!(mounts, vec!["/", "/data dir"]);
        assert!(size.samples[0].value > 0.0);
        assert_eq!(value(&out, "node_filesystem_readonly", &[("mountpoint", "/data dir")]), 1.0);
        assert_eq!(value(&out, "node_filesystem_device_error", &[("mountpoint", "/missing")]), 1.0);
    }
}
