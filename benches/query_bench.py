#!/usr/bin/env python3
"""End-to-end query benchmark of the collector's Loki API (run by hand; not in CI).

Starts a release `osprey collector` on a free port with its own data dir, pushes the loghub
corpus (testdata/loghub, 10 files) replicated COPIES times with shifted timestamps (one stream
per file and copy), then times queries through /loki/api/v1/query_range and reports for each:
wall time, lines scanned per second (from the answer's stats), collector CPU seconds (from
/proc/<pid>/stat) and the collector's peak RSS during the query (VmHWM, reset before each
query through /proc/<pid>/clear_refs, which needs root).

Usage: cargo build --release && python3 benches/query_bench.py [COPIES] [BUDGET_BYTES]
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COPIES = int(sys.argv[1]) if len(sys.argv) > 1 else 40
BUDGET = int(sys.argv[2]) if len(sys.argv) > 2 else 64 << 20
BASE_NS = 1_700_000_000_000_000_000
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def request(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    binary = os.path.join(ROOT, "target/release/osprey")
    tmp = tempfile.mkdtemp(prefix="osprey-query-bench-")
    port = free_port()
    config = os.path.join(tmp, "collector.toml")
    with open(config, "w") as f:
        f.write(
            f'data_dir = "{tmp}/data"\n[server]\nlisten = "127.0.0.1:{port}"\nrequest_timeout = "10m"\n'
            f'[logs]\nfsync = "never"\nmax_query_memory_bytes = {BUDGET}\n'
        )
    proc = subprocess.Popen([binary, "collector", "--config", config], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdout.readline()
    base = f"http://127.0.0.1:{port}"
    try:
        files = sorted(p for p in os.listdir(os.path.join(ROOT, "testdata/loghub")) if p.endswith(".log"))
        corpus = {}
        for name in files:
            with open(os.path.join(ROOT, "testdata/loghub", name), encoding="utf-8", errors="replace") as f:
                corpus[name.split("_")[0].lower()] = [l.rstrip("\r\n") for l in f]
        lines = raw_bytes = 0
        started = time.time()
        for copy in range(COPIES):
            streams = []
            for app, body in corpus.items():
                values = [[str(BASE_NS + (copy * len(body) + i) * 10_000_000), l] for i, l in enumerate(body)]
                streams.append({"stream": {"job": "loghub", "app": app, "copy": str(copy)}, "values": values})
                lines += len(body)
                raw_bytes += sum(len(l.encode()) for l in body)
            status, resp = request(f"{base}/loki/api/v1/push", json.dumps({"streams": streams}).encode(),
                                   {"content-type": "application/json"})
            assert status == 204, resp
        print(f"ingested {lines} lines, {raw_bytes / 1e6:.1f} MB in {time.time() - started:.1f} s "
              f"({COPIES} copies of loghub); memory budget {BUDGET} bytes")
        end = BASE_NS + COPIES * 2000 * 10_000_000 + 1
        queries = [
            ("rare literal", '{job="loghub"} |= "BLOCK* NameSystem.allocateBlock: /user/root/rand"', {}),
            ("common literal, limit 100", '{job="loghub"} |= "error"', {}),
            ("negated literal", '{job="loghub"} != "INFO" != "info"', {}),
            ("case-insensitive regex", '{job="loghub"} |~ "(?i)fail(ed|ure)"', {}),
            ("pattern + label filter", '{job="loghub", app="openssh"} | pattern "<_> <_> <_> <host> <proc>: <msg>" | proc=~"sshd.*"', {}),
            ("metric: count by app", 'sum by (app) (count_over_time({job="loghub"} |= "error" [1m]))', {"step": "60"}),
            ("metric: bytes_rate", 'sum(bytes_rate({job="loghub"}[5m]))', {"step": "60"}),
            ("everything, limit 5000", '{job=~".+"}', {"limit": "5000"}),
            ("budget: 1 series per line", 'count_over_time({job=~".+"} | regexp "(?P<line>.*)" [1m])', {"step": "60"}),
        ]
        print(f"| query | status | wall s | lines scanned | M lines/s | MB/s | collector CPU s | peak RSS MiB |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for name, q, extra in queries:
            params = {"query": q, "start": str(BASE_NS), "end": str(end), "limit": "100"}
            params.update(extra)
            reset_peak(proc.pid)
            cpu0 = proc_cpu(proc.pid)
            t0 = time.time()
            status, body = request(f"{base}/loki/api/v1/query_range?{urllib.parse.urlencode(params)}")
            wall = time.time() - t0
            cpu = proc_cpu(proc.pid) - cpu0
            peak = proc_status(proc.pid, "VmHWM") / (1 << 20)
            scanned = mb = 0
            if status == 200:
                s = json.loads(body)["data"]["stats"]["summary"]
                scanned, mb = s["totalLinesProcessed"], s["totalBytesProcessed"] / 1e6
            else:
                body = body.decode()[:80]
            print(f"| {name}: `{q}` | {status} | {wall:.2f} | {scanned} | {scanned / wall / 1e6:.2f} | "
                  f"{mb / wall:.0f} | {cpu:.2f} | {peak:.0f} |" + ("" if status == 200 else f" {body}"))
    finally:
        proc.terminate()
        proc.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
