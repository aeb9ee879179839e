//! `node_memory_*` from `/proc/meminfo`, named as node_exporter names them.

use super::{Context, Family, Kind, read};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("meminfo"))?;
    for line in text.lines() {
        let mut parts = line.split_ascii_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else { continue };
        let Some(key) = key.strip_suffix(':') else { continue };
        let Ok(mut v) = value.parse::<f64>() else { continue };
        // "Active(anon)" -> "Active_anon", as node_exporter's regex does.
        let mut key = key.replace('(', "_").replace(')', "");
        if parts.next().is_some() {
            v *= 1024.0;
            key.push_str("_bytes");
        }
        out.push(Family::single(
            format!("node_memory_{key}"),
            format!("Memory information field {key}."),
            Kind::Gauge,
            v,
        ));
    }
    Ok(())
}
