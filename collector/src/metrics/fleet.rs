//! Fleet liveness: which agents (hosts) have sent metrics, and when last.
//!
//! An agent is known by the value of `metrics.agent_label` (default `host`) on the series it
//! writes. Each one gets `osprey_agent_up{host}` (1 while it has written within
//! `metrics.agent_down_after`, then 0) and `osprey_agent_last_seen_timestamp_seconds{host}`, so
//! `osprey_agent_up == 0` fires for a silent host instead of its series quietly vanishing. A
//! host silent for `metrics.agent_forget_after` is dropped. At most `metrics.max_agents` hosts
//! are tracked; more are counted and ignored.
//!
//! The time is the collector's clock when the write arrived, not the sample timestamps: a host
//! whose clock is wrong is still alive.

use hashbrown::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub tenant: String,
    pub host: String,
    pub up: bool,
    /// Unix seconds (with millisecond precision) of the last write seen.
    pub last_seen: f64,
}

pub struct Fleet {
    /// tenant → host → last write, Unix milliseconds.
    hosts: Mutex<HashMap<String, HashMap<String, i64>>>,
    pub label: String,
    down_after: Duration,
    forget_after: Duration,
    max: usize,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Fleet {
    pub fn new(label: String, down_after: Duration, forget_after: Duration, max: usize) -> Self {
        Fleet { hosts: Mutex::new(HashMap::new()), label, down_after, forget_after, max }
    }

    pub fn enabled(&self) -> bool {
        !self.label.is_empty()
    }

    /// Records a write from each of `hosts` at `at_ms`. Returns how many new hosts were not
    /// tracked because the fleet is at `max_agents`.
    pub fn seen<'a>(&self, tenant: &str, hosts: impl IntoIterator<Item = &'a str>, at_ms: i64) -> u64 {
        let Ok(mut map) = self.hosts.lock() else { return 0 };
        let mut total: usize = map.values().map(HashMap::len).sum();
        let mut refused = 0;
        if !map.contains_key(tenant) {
            map.insert(tenant.to_string(), HashMap::new());
        }
        let Some(tenant_hosts) = map.get_mut(tenant) else { return 0 };
        for host in hosts {
            // Lookup by borrowed key first: the common case allocates nothing.
            if let Some(t) = tenant_hosts.get_mut(host) {
                *t = at_ms;
                continue;
            }
            if total >= self.max {
                refused += 1;
                continue;
            }
            tenant_hosts.insert(host.to_string(), at_ms);
            total += 1;
        }
        refused
    }

    /// Every tracked agent with its liveness at `now_ms`; forgets those silent too long.
    pub fn states(&self, now_ms: i64) -> Vec<AgentState> {
        let Ok(mut map) = self.hosts.lock() else { return vec![] };
        let forget = self.forget_after.as_millis() as i64;
        let down = self.down_after.as_millis() as i64;
        for hosts in map.values_mut() {
            hosts.retain(|_, last| now_ms - *last < forget);
        }
        map.retain(|_, hosts| !hosts.is_empty());
        let mut out: Vec<AgentState> = map
            .iter()
            .flat_map(|(tenant, hosts)| {
                hosts.iter().map(move |(host, last)| AgentState {
                    tenant: tenant.clone(),
                    host: host.clone(),
                    up: now_ms - *last < down,
                    last_seen: *last as f64 / 1000.0,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.host).cmp(&(&b.tenant, &b.host)));
        out
    }

    pub fn len(&self) -> usize {
        self.hosts.lock().map(|m| m.values().map(HashMap::len).sum()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_then_down_then_forgotten() {
        let fleet = Fleet::new("host".into(), Duration::from_secs(60), Duration::from_secs(600), 2);
        assert_eq!(fleet.seen("t", ["a", "b", "a"], 1_000_000), 0);
        assert_eq!(fleet.seen("t", ["c"], 1_000_000), 1, "over max_agents");
        let s = fleet.states(1_030_000);
        assert_eq!(s.len(), 2);
        assert!(s.iter().all(|a| a.up));
        assert_eq!(s[0].last_seen, 1000.0);
        fleet.seen("t", ["b"], 1_050_000);
        let s = fleet.states(1_100_000);
        assert_eq!((s[0].host.as_str(), s[0].up), ("a", false));
        assert_eq!((s[1].host.as_str(), s[1].up), ("b", true));
        assert_eq!(fleet.states(1_620_000).len(), 1, "a forgotten after 10 minutes");
    }
}
