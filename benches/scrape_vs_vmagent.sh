#!/usr/bin/env bash
# CPU per scraped sample: the Osprey agent and Debian's vmagent scrape the same targets (N
# copies of a real node_exporter body served by python's http.server) every second for
# DURATION seconds, one after the other, both remote_writing to the same VictoriaMetrics.
# Reports CPU seconds (utime+stime of the scraper's process), samples scraped, CPU µs per
# sample, and peak RSS. Run by hand: benches/scrape_vs_vmagent.sh [TARGETS] [DURATION]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=${1:-10}
DURATION=${2:-60}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build --release --quiet --bin osprey
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/{print $2}' "/proc/$1/status"; }

mkdir -p "$WORK/www"
for i in $(seq 1 "$TARGETS"); do cp testdata/exposition/node_exporter-1.5.prom "$WORK/www/m$i"; done
WWW=$(free_port); VM=$(free_port); AG=$(free_port); VMA=$(free_port)
(cd "$WORK/www" && exec python3 -m http.server "$WWW" --bind 127.0.0.1 >/dev/null 2>&1) &
victoria-metrics -httpListenAddr=127.0.0.1:$VM -storageDataPath="$WORK/vm" -loggerLevel=ERROR >/dev/null 2>&1 &
sleep 2

# Osprey agent
{
  echo "data_dir = \"$WORK/agent\""
  echo "[server]"; echo "listen = \"127.0.0.1:$AG\""
  echo "[collector]"; echo "url = \"http://127.0.0.1:$VM\""; echo "metrics_url = \"http://127.0.0.1:$VM/api/v1/write\""
  echo "[[sources.files]]"; echo "job = \"none\""; echo "include = [\"$WORK/none/*.log\"]"
  echo "[host_metrics]"; echo "enabled = false"
  echo "[scrape]"; echo "interval = \"1s\""
  for i in $(seq 1 "$TARGETS"); do
    echo "[[scrape.jobs]]"; echo "job_name = \"t$i\""; echo "metrics_path = \"/m$i\""
    echo "static_configs = [{ targets = [\"127.0.0.1:$WWW\"] }]"
  done
} > "$WORK/agent.toml"
OSPREY_LOG=warn target/release/osprey agent --config "$WORK/agent.toml" >/dev/null 2>"$WORK/agent.log" &
PID=$!
sleep 5
T0=$(cpu_ticks $PID)
S0=$(curl -s 127.0.0.1:$AG/metrics | awk '/^osprey_agent_scrape_samples_total/{s+=$2} END{print s+0}')
sleep "$DURATION"
T1=$(cpu_ticks $PID)
S1=$(curl -s 127.0.0.1:$AG/metrics | awk '/^osprey_agent_scrape_samples_total/{s+=$2} END{print s+0}')
H=$(hwm $PID)
kill $PID; wait $PID 2>/dev/null || true
python3 -c "t=($T1-$T0)/100; s=$S1-$S0; print(f'osprey agent: {t:.2f} CPU-s for {s:.0f} samples in ${DURATION}s: {t/s*1e6:.2f} µs CPU per sample; peak RSS {$H/1024:.1f} MiB')"

# vmagent
{
  echo "global:"; echo "  scrape_interval: 1s"
  echo "scrape_configs:"
  for i in $(seq 1 "$TARGETS"); do
    echo "  - job_name: t$i"; echo "    metrics_path: /m$i"
    echo "    static_configs: [{targets: ['127.0.0.1:$WWW']}]"
  done
} > "$WORK/scrape.yml"
vmagent -httpListenAddr=127.0.0.1:$VMA -promscrape.config="$WORK/scrape.yml" \
  -remoteWrite.url=http://127.0.0.1:$VM/api/v1/write -remoteWrite.tmpDataPath="$WORK/vmagent" -loggerLevel=ERROR >/dev/null 2>&1 &
PID=$!
sleep 5
T0=$(cpu_ticks $PID)
S0=$(curl -s 127.0.0.1:$VMA/metrics | awk '/^vm_promscrape_scraped_samples_sum/{s+=$2} END{print s+0}')
sleep "$DURATION"
T1=$(cpu_ticks $PID)
S1=$(curl -s 127.0.0.1:$VMA/metrics | awk '/^vm_promscrape_scraped_samples_sum/{s+=$2} END{print s+0}')
H=$(hwm $PID)
kill $PID; wait $PID 2>/dev/null || true
python3 -c "t=($T1-$T0)/100; s=$S1-$S0; print(f'vmagent:      {t:.2f} CPU-s for {s:.0f} samples in ${DURATION}s: {t/s*1e6:.2f} µs CPU per sample; peak RSS {$H/1024:.1f} MiB')"
