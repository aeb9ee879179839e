//! `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.

use super::{Context, Family, Kind, invalid, read};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("loadavg"))?;
    let mut fields = text.split_ascii_whitespace();
    for (name, help) in
        [("node_load1", "1m load average."), ("node_load5", "5m load average."), ("node_load15", "15m load average.")]
    {
        let v = fields.next().and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| invalid("malformed /proc/loadavg"))?;
        out.push(Family::single(name, help, Kind::Gauge, v));
    }
    Ok(())
}
