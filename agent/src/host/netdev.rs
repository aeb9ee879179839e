//! `node_network_{receive,transmit}_*_total` from `/proc/net/dev`, plus `receive_nohandler`
//! from sysfs (node_exporter reads it over netlink).

use super::{Context, Family, Kind, read};
use std::borrow::Cow;

const RECEIVE: [&str; 8] = ["bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast"];
const TRANSMIT: [&str; 8] = ["bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed"];

fn family(stat: &str) -> Family {
    Family::new(format!("node_network_{stat}_total"), format!("Network device statistic {stat}."), Kind::Counter)
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let text = read(&ctx.paths.proc("net/dev"))?;
    let mut rx: Vec<Family> = RECEIVE.iter().map(|s| family(&format!("receive_{s}"))).collect();
    let mut tx: Vec<Family> = TRANSMIT.iter().map(|s| family(&format!("transmit_{s}"))).collect();
    let mut nohandler = family("receive_nohandler");
    for line in text.lines().skip(2) {
        let Some((device, rest)) = line.split_once(':') else { continue };
        let device = device.trim();
        if ctx.netdev_device_exclude.as_ref().is_some_and(|re| re.is_match(device)) {
            continue;
        }
        let values: Vec<f64> = rest.split_ascii_whitespace().filter_map(|v| v.parse().ok()).collect();
        if values.len() < 16 {
            continue;
        }
        let labels = || vec![(Cow::Borrowed("device"), device.to_string())];
        for (i, f) in rx.iter_mut().enumerate() {
            f.push(labels(), values[i]);
        }
        for (i, f) in tx.iter_mut().enumerate() {
            f.push(labels(), values[8 + i]);
        }
        if let Ok(v) = read(&ctx.paths.sys(&format!("class/net/{device}/statistics/rx_nohandler")))
            && let Ok(v) = v.trim().parse::<f64>()
        {
            nohandler.push(labels(), v);
        }
    }
    out.extend(rx);
    out.push(nohandler);
    out.extend(tx);
    Ok(())
}
