//! `node_os_info` / `node_os_version` from os-release, and `node_uname_info` from the kernel's
//! `/proc/sys/kernel` view of uname.

use super::{Context, Family, Kind, read};
use std::borrow::Cow;

const OS_INFO_LABELS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];

/// Parses os-release's `KEY=value` lines (values optionally quoted).
fn os_release(text: &str) -> Vec<(&str, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, raw)| {
            let raw = raw.trim();
            let unquoted = raw
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| raw.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(raw);
            (k.trim(), unquoted.replace("\\\"", "\"").replace("\\$", "$"))
        })
        .collect()
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text =
        read(&ctx.paths.rootfs("/etc/os-release")).or_else(|_| read(&ctx.paths.rootfs("/usr/lib/os-release")))?;
    let pairs = os_release(&text);
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut info = Family::new(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
        Kind::Gauge,
    );
    info.push(OS_INFO_LABELS.iter().map(|(l, k)| (Cow::Borrowed(*l), get(k))).collect(), 1.0);
    out.push(info);
    // "12" -> 12, "22.04" -> 22.04, "3.18.4" -> 3.18, as node_exporter's major.minor.
    let version_id = get("VERSION_ID");
    let major_minor: String = {
        let mut parts = version_id.split('.');
        match (parts.next(), parts.next()) {
            (Some(a), Some(b)) => format!("{a}.{b}"),
            (Some(a), None) => a.to_string(),
            _ => String::new(),
        }
    };
    if let Ok(v) = major_minor.parse::<f64>() {
        let mut version =
            Family::new("node_os_version", "Metric containing the major.minor part of the OS version.", Kind::Gauge);
        version.push(
            vec![
                (Cow::Borrowed("id"), get("ID")),
                (Cow::Borrowed("id_like"), get("ID_LIKE")),
                (Cow::Borrowed("name"), get("NAME")),
            ],
            v,
        );
        out.push(version);
    }
    Ok(())
}

pub fn collect_uname(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let field = |name: &str| read(&ctx.paths.proc(&format!("sys/kernel/{name}"))).map(|s| s.trim_end().to_string());
    let mut f =
        Family::new("node_uname_info", "Labeled system information as provided by the uname system call.", Kind::Gauge);
    f.push(
        vec![
            (Cow::Borrowed("domainname"), field("domainname")?),
            (Cow::Borrowed("machine"), std::env::consts::ARCH.to_string()),
            (Cow::Borrowed("nodename"), field("hostname")?),
            (Cow::Borrowed("release"), field("osrelease")?),
            (Cow::Borrowed("sysname"), field("ostype")?),
            (Cow::Borrowed("version"), field("version")?),
        ],
        1.0,
    );
    out.push(f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn os_release_labels_and_version() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "etc/os-release",
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nID=debian\n",
        );
        let mut out = Vec::new();
        collect(&context(d.path()), &mut out).unwrap();
        assert_eq!(
            value(&out, "node_os_info", &[("pretty_name", "Debian GNU/Linux 12 (bookworm)"), ("id", "debian")]),
            1.0
        );
        assert_eq!(value(&out, "node_os_version", &[("id", "debian")]), 12.0);
        assert_eq!(find(&out, "node_os_info").samples[0].labels.len(), 12);
    }
}
