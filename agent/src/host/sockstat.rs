//! `node_sockstat_*` from `/proc/net/sockstat` and `/proc/net/sockstat6`.

use super::{Context, Family, Kind, read};

/// Page size for the `mem` fields (pages) -> `mem_bytes`.
const PAGE_SIZE: f64 = 4096.0;

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let v4 = read(&ctx.paths.proc("net/sockstat"))?;
    parse(&v4, out);
    // IPv6 may be disabled; node_exporter then reports IPv4 only.
    if let Ok(v6) = read(&ctx.paths.proc("net/sockstat6")) {
        parse(&v6, out);
    }
    Ok(())
}

fn parse(text: &str, out: &mut Vec<Family>) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else { continue };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        if proto == "sockets" {
            if let Some(v) = fields.get(1).and_then(|v| v.parse::<f64>().ok()) {
                out.push(Family::single(
                    "node_sockstat_sockets_used",
                    "Number of IPv4 sockets in use.",
                    Kind::Gauge,
                    v,
                ));
            }
            continue;
        }
        for pair in fields.chunks(2) {
            let [key, value] = pair else { continue };
            let Ok(v) = value.parse::<f64>() else { continue };
            out.push(Family::single(
                format!("node_sockstat_{proto}_{key}"),
                format!("Number of {proto} sockets in state {key}."),
                Kind::Gauge,
                v,
            ));
            if *key == "mem" && (proto == "TCP" || proto == "UDP") {
                out.push(Family::single(
                    format!("node_sockstat_{proto}_mem_bytes"),
                    format!("Number of {proto} sockets in state mem_bytes."),
                    Kind::Gauge,
                    v * PAGE_SIZE,
                ));
            }
        }
    }
}
