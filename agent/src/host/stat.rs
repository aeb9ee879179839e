//! The `stat` collector: boot time, context switches, forks, interrupts and process states from
//! `/proc/stat`.

use super::{Context, Family, Kind, read};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("stat"))?;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let (name, help, kind) = match key {
            "intr" => ("node_intr_total", "Total number of interrupts serviced.", Kind::Counter),
            "ctxt" => ("node_context_switches_total", "Total number of context switches.", Kind::Counter),
            "btime" => ("node_boot_time_seconds", "Node boot time, in unixtime.", Kind::Gauge),
            "processes" => ("node_forks_total", "Total number of forks.", Kind::Counter),
            "procs_running" => ("node_procs_running", "Number of processes in runnable state.", Kind::Gauge),
            "procs_blocked" => {
                ("node_procs_blocked", "Number of processes blocked waiting for I/O to complete.", Kind::Gauge)
            }
            _ => continue,
        };
        let Some(v) = fields.next().and_then(|v| v.parse::<f64>().ok()) else { continue };
        out.push(Family::single(name, help, kind, v));
    }
    Ok(())
}
