//! Pressure stall information (`/proc/pressure/{cpu,io,memory}`): the `total=` microsecond
//! counters as seconds.

use super::{Context, Family, Kind, read};

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let mut found = false;
    for resource in ["cpu", "io", "memory"] {
        let text = match read(&ctx.paths.proc(&format!("pressure/{resource}"))) {
            Ok(t) => t,
            // node_exporter skips a resource it cannot read (e.g. cpu on old kernels).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && found => continue,
            Err(e) => return Err(e),
        };
        found = true;
        for line in text.lines() {
            let mut fields = line.split_ascii_whitespace();
            let Some(kind) = fields.next() else { continue };
            let Some(total) = fields.find_map(|f| f.strip_prefix("total=")).and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            let (name, help) = match (resource, kind) {
                ("cpu", "some") => (
                    "node_pressure_cpu_waiting_seconds_total",
                    "Total time in seconds that processes have waited for CPU time",
                ),
                ("io", "some") => (
                    "node_pressure_io_waiting_seconds_total",
                    "Total time in seconds that processes have waited due to IO congestion",
                ),
                ("io", "full") => (
                    "node_pressure_io_stalled_seconds_total",
                    "Total time in seconds no process could make progress due to IO congestion",
                ),
                ("memory", "some") => (
                    "node_pressure_memory_waiting_seconds_total",
                    "Total time in seconds that processes have waited for memory",
                ),
                ("memory", "full") => (
                    "node_pressure_memory_stalled_seconds_total",
                    "Total time in seconds no process could make progress due to memory congestion",
                ),
                _ => continue,
            };
            out.push(Family::single(name, help, Kind::Counter, total / 1e6));
        }
    }
    Ok(())
}
