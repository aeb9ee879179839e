//! `node_cpu_seconds_total{cpu,mode}` and `node_cpu_guest_seconds_total` from `/proc/stat`.

use super::{Context, Family, Kind, read};
use std::borrow::Cow;

/// Clock ticks per second of `/proc/stat` (USER_HZ), fixed at 100 on Linux as node_exporter
/// assumes.
const USER_HZ: f64 = 100.0;
const MODES: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("stat"))?;
    let mut f = Family::new("node_cpu_seconds_total", "Seconds the CPUs spent in each mode.", Kind::Counter);
    let mut guest = Family::new(
        "node_cpu_guest_seconds_total",
        "Seconds the CPUs spent in guests (VMs) for each mode.",
        Kind::Counter,
    );
    let mut values = Vec::with_capacity(10);
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(cpu) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else { continue };
        values.clear();
        values.extend(fields.map(|v| v.parse::<f64>().unwrap_or(0.0) / USER_HZ));
        for (mode, v) in MODES.iter().zip(&values) {
            f.push(vec![(Cow::Borrowed("cpu"), cpu.into()), (Cow::Borrowed("mode"), (*mode).into())], *v);
        }
        // guest and guest_nice are also counted in user and nice; node_exporter reports them apart.
        for (i, mode) in [(8, "user"), (9, "nice")] {
            if let Some(v) = values.get(i) {
                guest.push(vec![(Cow::Borrowed("cpu"), cpu.into()), (Cow::Borrowed("mode"), mode.into())], *v);
            }
        }
    }
    out.push(guest);
    out.push(f);
    Ok(())
}
