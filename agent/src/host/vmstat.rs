//! `node_vmstat_*` from `/proc/vmstat`: the fields node_exporter exports by default
//! (`^(oom_kill|pgpg|pswp|pg.*fault).*`), untyped as there.

use super::{Context, Family, Kind, read};

fn wanted(key: &str) -> bool {
    key.starts_with("oom_kill")
        || key.starts_with("pgpg")
        || key.starts_with("pswp")
        || (key.starts_with("pg") && key[2..].contains("fault"))
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("vmstat"))?;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else { continue };
        if !wanted(key) {
            continue;
        }
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        out.push(Family::single(
            format!("node_vmstat_{key}"),
            format!("/proc/vmstat information field {key}."),
            Kind::Untyped,
            v,
        ));
    }
    Ok(())
}
