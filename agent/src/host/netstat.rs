//! `node_netstat_*` from `/proc/net/{netstat,snmp,snmp6}`: the fields node_exporter exports by
//! default, untyped as there.

use super::{Context, Family, Kind, read};

/// node_exporter's default `--collector.netstat.fields`.
const FIELDS: &str = "^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$";

fn fields() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(FIELDS).unwrap_or_else(|_| regex::Regex::new("^$").expect("trivial regex")))
}

pub fn collect(ctx: &Context, out: &mut Vec<Family>) -> std::io::Result<()> {
    let netstat = read(&ctx.paths.proc("net/netstat"))?;
    let snmp = read(&ctx.paths.proc("net/snmp"))?;
    let mut stats: Vec<(String, f64)> = Vec::new();
    pairs(&netstat, &mut stats);
    pairs(&snmp, &mut stats);
    if let Ok(snmp6) = read(&ctx.paths.proc("net/snmp6")) {
        // "Ip6InOctets  123": the protocol is the leading letters and digit before the field.
        for line in snmp6.lines() {
            let mut f = line.split_ascii_whitespace();
            let (Some(key), Some(v)) = (f.next(), f.next()) else { continue };
            let split = ["Ip6", "Icmp6", "UdpLite6", "Udp6"].iter().find(|p| key.starts_with(**p));
            let Some(proto) = split else { continue };
            let Ok(v) = v.parse::<f64>() else { continue };
            stats.push((format!("{proto}_{}", &key[proto.len()..]), v));
        }
    }
    let re = fields();
    for (key, v) in stats {
        if !re.is_match(&key) {
            continue;
        }
        let help = format!("Statistic {}.", key.replacen('_', "", 1));
        out.push(Family::single(format!("node_netstat_{key}"), help, Kind::Untyped, v));
    }
    Ok(())
}

/// `/proc/net/netstat` and `/proc/net/snmp` come as pairs of lines: `Proto: names...` then
/// `Proto: values...`.
fn pairs(text: &str, out: &mut Vec<(String, f64)>) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((_, values))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        for (n, v) in names.split_ascii_whitespace().zip(values.split_ascii_whitespace()) {
            if let Ok(v) = v.parse::<f64>() {
                out.push((format!("{proto}_{n}"), v));
            }
        }
    }
}
