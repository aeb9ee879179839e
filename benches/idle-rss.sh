#!/usr/bin/env bash
# Idle footprint of the release binary, as the packages run it: a collector and an agent shipping
# to it over loopback (agent following /var/log/**/*.log and a temp file with 200 lines, host
# metrics every 15 s), measured after SECONDS (default 40) of idling. Prints VmRSS and VmHWM.
#   cargo build --release --bin osprey && benches/idle-rss.sh
set -euo pipefail
BIN="${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/osprey}"
WAIT="${SECONDS_IDLE:-40}"
dir=$(mktemp -d)
trap 'kill "${apid:-}" "${cpid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/logs"
printf 'data_dir = "%s/c"\n[server]\nlisten = "127.0.0.1:0"\n' "$dir" > "$dir/c.toml"
"$BIN" collector --config "$dir/c.toml" > "$dir/c.out" 2> "$dir/c.err" & cpid=$!
for _ in $(seq 50); do grep -q listening "$dir/c.out" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$dir/c.out")
printf 'data_dir = "%s/a"\n[server]\nlisten = "127.0.0.1:0"\n[collector]\nurl = "%s"\n[[sources.files]]\ninclude = ["%s/logs/*.log", "/var/log/**/*.log"]\n' \
  "$dir" "$url" "$dir" > "$dir/a.toml"
"$BIN" agent --config "$dir/a.toml" > "$dir/a.out" 2> "$dir/a.err" & apid=$!
for _ in $(seq 50); do grep -q listening "$dir/a.out" && break; sleep 0.1; done
for i in $(seq 200); do echo "line $i of the idle footprint test" >> "$dir/logs/x.log"; done
sleep "$WAIT"
for p in agent:$apid collector:$cpid; do
  name=${p%%:*}; pid=${p#*:}
  printf '%-9s %s %s\n' "$name" "$(grep VmRSS /proc/"$pid"/status | tr -s ' ')" "$(grep VmHWM /proc/"$pid"/status | tr -s ' ')"
done
