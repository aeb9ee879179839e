#!/usr/bin/env bash
# End-to-end remote_write ingest over loopback, side by side: the same load from rw_load
# (benches/src/bin/rw_load.rs) into the Osprey collector, VictoriaMetrics and Prometheus, one
# receiver at a time, each on 127.0.0.1 with a fresh data directory. Run by hand, not in CI.
#
#   benches/metrics-e2e.sh throughput   # SERIES (100000) series, SECONDS (20) s, CONNECTIONS (2)
#   benches/metrics-e2e.sh memory       # RSS per active series after MEMORY_SERIES (1000000) series
#   benches/metrics-e2e.sh all
#
# Prints one line per receiver: samples/s acknowledged, receiver CPU seconds per million
# samples, peak RSS; or RSS growth per series; and the collector's /federate time.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-all}"
series="${SERIES:-100000}"
seconds="${SECONDS_LOAD:-20}"
connections="${CONNECTIONS:-2}"
batch="${BATCH:-2000}"
memory_series="${MEMORY_SERIES:-1000000}"
only="${ONLY:-osprey victoria-metrics prometheus}"

cargo build --release --quiet --bin osprey
cargo build --release --quiet -p osprey-benches --bin rw_load
osprey=target/release/osprey
rw_load=target/release/rw_load
work="$(mktemp -d)"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
tick_hz="$(getconf CLK_TCK)"

# start NAME: starts a receiver, sets pid, url (remote_write URL) and base (http://host:port).
start() {
  local name="$1" port dir
  port="$(free_port)"
  dir="$work/$name"
  mkdir -p "$dir"
  base="http://127.0.0.1:$port"
  case "$name" in
    osprey)
      printf 'data_dir = "%s"\n[server]\nlisten = "127.0.0.1:%s"\n[metrics]\nmax_series = 2000000\nmax_series_per_tenant = 2000000\n' "$dir/data" "$port" > "$dir/collector.toml"
      "$osprey" collector --config "$dir/collector.toml" > "$dir/log" 2>&1 &
      pid=$!; url="$base/api/v1/write"; ready="$base/ready" ;;
    victoria-metrics)
      victoria-metrics -httpListenAddr="127.0.0.1:$port" -storageDataPath="$dir/data" -retentionPeriod=1d -loggerLevel=WARN > "$dir/log" 2>&1 &
      pid=$!; url="$base/api/v1/write"; ready="$base/health" ;;
    prometheus)
      printf 'global:\n  scrape_interval: 1m\n' > "$dir/prometheus.yml"
      prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" --web.listen-address="127.0.0.1:$port" --web.enable-remote-write-receiver --log.level=warn > "$dir/log" 2>&1 &
      pid=$!; url="$base/api/v1/write"; ready="$base/-/ready" ;;
  esac
  for _ in $(seq 1 300); do
    if curl -sf -o /dev/null "$ready"; then return 0; fi
    sleep 0.1
  done
  echo "$name did not become ready"; cat "$dir/log"; exit 1
}

stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

throughput() {
  echo "== throughput: $series series, batches of $batch, $connections connections, ${seconds}s; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for name in $only; do
    start "$name"
    local c0 c1 out acked
    c0="$(cpu_ticks "$pid")"
    out="$("$rw_load" "$url" --series "$series" --batch "$batch" --connections "$connections" --seconds "$seconds")"
    c1="$(cpu_ticks "$pid")"
    acked="$(sed -E 's/.*samples_acked=([0-9]+).*/\1/' <<< "$out")"
    awk -v n="$name" -v out="$out" -v c="$((c1 - c0))" -v hz="$tick_hz" -v a="$acked" -v hwm="$(status_kib "$pid" VmHWM)" \
      'BEGIN { split(out, f, " "); printf "%-17s %s  receiver CPU %.1f s (%.2f CPU-s per 1M samples)  peak RSS %.0f MiB\n", n, out, c/hz, (a > 0 ? c/hz/(a/1e6) : 0), hwm/1024 }'
    stop
  done
}

memory() {
  echo "== memory: $memory_series active series, 2 samples each; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  for name in $only; do
    start "$name"
    sleep 2
    local r0 r1 out
    r0="$(status_kib "$pid" VmRSS)"
    out="$("$rw_load" "$url" --series "$memory_series" --batch 10000 --connections "$connections" --rounds 2 --seconds 600)"
    sleep 5
    r1="$(status_kib "$pid" VmRSS)"
    awk -v n="$name" -v r0="$r0" -v r1="$r1" -v s="$memory_series" -v out="$out" \
      'BEGIN { printf "%-17s RSS %.0f -> %.0f MiB: %.0f bytes per active series  (%s)\n", n, r0/1024, r1/1024, (r1-r0)*1024/s, out }'
    if [ "$name" = osprey ]; then
      for enc in identity gzip; do
        for _ in 1 2 3; do
          curl -s -o /dev/null -H "Accept-Encoding: $enc" -w "osprey            /federate of $memory_series series ($enc): %{time_total} s, %{size_download} bytes\n" "$base/federate"
        done
      done
    fi
    stop
  done
}

case "$mode" in
  throughput) throughput ;;
  memory) memory ;;
  all) throughput; memory ;;
  *) echo "usage: $0 throughput|memory|all"; exit 2 ;;
esac
