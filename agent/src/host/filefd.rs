//! `node_filefd_allocated` and `node_filefd_maximum` from `/proc/sys/fs/file-nr`.

use super::{Context, Family, Kind, invalid, read};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("sys/fs/file-nr"))?;
    let f: Vec<f64> = text.split_ascii_whitespace().filter_map(|v| v.parse().ok()).collect();
    let (Some(allocated), Some(maximum)) = (f.first(), f.get(2)) else {
        return Err(invalid("malformed /proc/sys/fs/file-nr"));
    };
    out.push(Family::single(
        "node_filefd_allocated",
        "File descriptor statistics: allocated.",
        Kind::Gauge,
        *allocated,
    ));
    out.push(Family::single("node_filefd_maximum", "File descriptor statistics: maximum.", Kind::Gauge, *maximum));
    Ok(())
}
