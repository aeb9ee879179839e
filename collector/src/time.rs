//! Timestamps and durations as the Loki and Prometheus HTTP APIs accept them.

/// Parses a Loki API timestamp: nanoseconds (or seconds when 10 digits or fewer) since the
/// epoch, float seconds, or RFC 3339. Mirrors Loki's `parseTimestamp`.
pub fn parse_loki_time(value: &str) -> Result<i64, String> {
    if value.contains('.')
        && let Ok(f) = value.parse::<f64>()
    {
        return float_seconds_to_ns(f, value);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Ok(if value.trim_start_matches('-').len() <= 10 { n.saturating_mul(1_000_000_000) } else { n });
    }
    parse_rfc3339(value).ok_or_else(|| format!("cannot parse {value:?} to a valid timestamp"))
}

/// Parses a Prometheus API timestamp: float seconds or RFC 3339.
pub fn parse_prometheus_time(value: &str) -> Result<i64, String> {
    if let Ok(f) = value.parse::<f64>() {
        return float_seconds_to_ns(f, value);
    }
    parse_rfc3339(value).ok_or_else(|| format!("cannot parse {value:?} to a valid timestamp"))
}

fn float_seconds_to_ns(f: f64, value: &str) -> Result<i64, String> {
    if !f.is_finite() || f.abs() > 9.2e9 {
        return Err(format!("timestamp {value:?} is out of range"));
    }
    Ok((f * 1e9).round() as i64)
}

fn parse_rfc3339(value: &str) -> Option<i64> {
    let ts: jiff::Timestamp = value.parse().ok()?;
    i64::try_from(ts.as_nanosecond()).ok()
}

/// Parses a duration like Prometheus does (`5m`, `1h30m`, `250ms`) or as float seconds.
pub fn parse_duration(value: &str) -> Result<std::time::Duration, String> {
    if let Ok(f) = value.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Ok(std::time::Duration::from_secs_f64(f));
        }
        return Err(format!("invalid duration {value:?}"));
    }
    let b = value.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    if b.is_empty() {
        return Err("empty duration".into());
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n: u128 = value[start..i].parse().map_err(|_| format!("invalid duration {value:?}"))?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let ms: u128 = match &value[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(format!("invalid duration {value:?}: unknown unit")),
        };
        total = total.saturating_add(n.saturating_mul(ms));
    }
    Ok(std::time::Duration::from_millis(total.min(u64::MAX as u128) as u64))
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loki_times() {
        assert_eq!(parse_loki_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(parse_loki_time("1700000000000000001").unwrap(), 1_700_000_000_000_000_001);
        assert_eq!(parse_loki_time("1700000000.5").unwrap(), 1_700_000_000_500_000_000);
        assert_eq!(parse_loki_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000_000_000);
        assert!(parse_loki_time("yesterday").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("1.5").unwrap().as_millis(), 1500);
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }
}
