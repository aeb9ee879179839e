#!/usr/bin/env python3
"""Osprey's Grafana dashboards, as code. Writes osprey-*.json next to this file.

    packaging/grafana/dashboards.py                 # regenerate the JSON files
    packaging/grafana/dashboards.py --check         # fail if the committed JSON is stale
    packaging/grafana/dashboards.py --promql FILE   # every query as a rules file, for `promtool check rules`

The JSON is what users import (Dashboards > New > Import, or provisioning); the data source is a
dashboard variable, so the same file works against any Prometheus-compatible source. Scrape job
names follow docs/prometheus.md: "osprey-agent", "osprey-collector", and host metrics carry the
agents' `host` label. Standard library only.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
AGENT = 'job="osprey-agent", instance=~"$instance"'
COLLECTOR = 'job="osprey-collector", instance=~"$instance"'
HOST = 'host=~"$host"'


def datasource_var():
    return {
        "type": "datasource",
        "name": "datasource",
        "label": "Data source",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "includeAll": False,
        "multi": False,
        "options": [],
    }


def query_var(name, label, query, multi=True):
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "hide": 0,
        "options": [],
    }


class Layout:
    """Places panels left to right in rows of 24 grid units, and numbers them."""

    def __init__(self):
        self.panels = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _id(self):
        return len(self.panels) + 1

    def row(self, title):
        self.newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def newline(self):
        self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def add(self, panel, w, h):
        if self.x + w > 24:
            self.newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)


def targets(queries):
    out = []
    for i, (expr, legend) in enumerate(queries):
        out.append(
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "range": True,
            }
        )
    return out


def timeseries(title, description, queries, unit="short", stack=False):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets(queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "showPoints": "never",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(title, description, expr, unit="short", thresholds=None):
    steps = [{"color": "green", "value": None}]
    for value, color in thresholds or []:
        steps.append({"color": color, "value": value})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [dict(targets([(expr, "")])[0], instant=True, range=False)],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "thresholds": {"mode": "absolute", "steps": steps},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "justifyMode": "auto",
            "textMode": "auto",
        },
    }


def dashboard(uid, title, description, variables, layout):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["osprey"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["osprey"],
                "title": "Osprey",
                "asDropdown": True,
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_var()] + variables},
        "panels": layout.panels,
    }


def fleet():
    lay = Layout()
    lay.row("Fleet")
    lay.add(stat("Agents scraped up", "Agents Prometheus scrapes successfully (job osprey-agent).",
                 'sum(up{job="osprey-agent"})'), 4, 4)
    lay.add(stat("Agents down", "Agents Prometheus cannot scrape.",
                 'count(up{job="osprey-agent"} == 0) or vector(0)', thresholds=[(1, "red")]), 4, 4)
    lay.add(stat("Hosts shipping", "Hosts the collector has heard from recently (osprey_agent_up).",
                 "count(osprey_agent_up == 1) or vector(0)"), 4, 4)
    lay.add(stat("Hosts silent > 5m", "Hosts that shipped before and have sent nothing for 5 minutes.",
                 "count((time() - osprey_agent_last_seen_timestamp_seconds) > 300) or vector(0)",
                 thresholds=[(1, "orange")]), 4, 4)
    lay.add(stat("Lines stored /s", "Log lines the collectors durably stored, per second.",
                 'sum(rate(osprey_ingested_lines_total{job="osprey-collector"}[$__rate_interval]))',
                 unit="short"), 4, 4)
    lay.add(stat("Batches dropped (1h)", "Batches the agents dropped in the last hour: data lost.",
                 'sum(increase(osprey_agent_batches_dropped_total{job="osprey-agent"}[1h])) or vector(0)',
                 thresholds=[(1, "red")]), 4, 4)

    lay.row("Ingest")
    lay.add(timeseries("Lines read by agent", "Log lines read from files, per second.",
                       [(f"sum by (instance) (rate(osprey_agent_lines_read_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}}")], unit="short", stack=True), 12, 8)
    lay.add(timeseries("Bytes read by agent", "Bytes read from log files, per second.",
                       [(f"sum by (instance) (rate(osprey_agent_bytes_read_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}}")], unit="Bps", stack=True), 12, 8)
    lay.add(timeseries("Collector ingest", "What the collectors stored, per second.", [
        ('sum(rate(osprey_ingested_lines_total{job="osprey-collector"}[$__rate_interval]))', "lines/s"),
        ('sum(rate(osprey_ingested_samples_total{job="osprey-collector"}[$__rate_interval]))', "samples/s"),
    ]), 12, 8)
    lay.add(timeseries("Batches acknowledged", "Batches the receivers acknowledged, per second, by agent and sink.",
                       [(f"sum by (instance, sink) (rate(osprey_agent_batches_sent_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}} {{sink}}")]), 12, 8)

    lay.row("Lag and queue")
    lay.add(timeseries("File lag", "Bytes written to a file but not yet read, worst file per agent.",
                       [(f"max by (instance) (osprey_agent_file_lag_bytes{{{AGENT}}})", "{{instance}}")],
                       unit="bytes"), 8, 8)
    lay.add(timeseries("On-disk queue fill", "On-disk queue use against its bound; at 100 % new data is dropped.",
                       [(f"osprey_agent_queue_bytes{{{AGENT}}} / osprey_agent_queue_max_bytes{{{AGENT}}}",
                         "{{instance}}")], unit="percentunit"), 8, 8)
    lay.add(timeseries("Send latency p99", "From first send to acknowledgement of a batch, retries included.",
                       [("histogram_quantile(0.99, sum by (le, instance, sink) "
                         f"(rate(osprey_agent_send_duration_seconds_bucket{{{AGENT}}}[$__rate_interval])))",
                         "{{instance}} {{sink}}")], unit="s"), 8, 8)

    lay.row("Drops and errors")
    lay.add(timeseries("Batches dropped", "Batches refused for good or dropped at the queue bound, per second.",
                       [(f"sum by (instance, sink) (rate(osprey_agent_batches_dropped_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}} {{sink}}")]), 8, 8)
    lay.add(timeseries("Sends retried", "Failed sends that will be retried, per second.",
                       [(f"sum by (instance, sink) (rate(osprey_agent_batches_retried_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}} {{sink}}")]), 8, 8)
    lay.add(timeseries("Collector rejects", "Requests or items the collectors refused, by endpoint and reason.",
                       [('sum by (endpoint, reason) (rate(osprey_rejected_requests_total{job="osprey-collector"}[$__rate_interval]))',
                         "{{endpoint}} {{reason}}")]), 8, 8)
    lay.add(timeseries("Files", "Files open, and rotation events seen by the agents.", [
        (f"sum by (instance) (osprey_agent_files_open{{{AGENT}}})", "{{instance}} open"),
        (f"sum by (instance) (increase(osprey_agent_file_rotations_total{{{AGENT}}}[$__rate_interval]))", "{{instance}} rotations"),
        (f"sum by (instance) (increase(osprey_agent_file_truncations_total{{{AGENT}}}[$__rate_interval]))", "{{instance}} truncations"),
    ]), 12, 8)
    lay.add(timeseries("Files unreadable", "Matched files the agents could not open (permissions).",
                       [(f"sum by (instance) (increase(osprey_agent_files_unreadable_total{{{AGENT}}}[$__rate_interval]))",
                         "{{instance}}")]), 12, 8)
    return dashboard(
        "osprey-fleet", "Osprey / Fleet",
        "Every agent at a glance: who is up, what flows, who lags, what is dropped.",
        [query_var("instance", "Agent", 'label_values(up{job="osprey-agent"}, instance)')], lay)


def hosts():
    lay = Layout()
    lay.row("CPU and load")
    lay.add(timeseries("CPU busy", "Share of CPU time not idle, all CPUs.",
                       [(f'1 - avg by (host) (rate(node_cpu_seconds_total{{{HOST}, mode="idle"}}[$__rate_interval]))',
                         "{{host}}")], unit="percentunit"), 12, 8)
    lay.add(timeseries("CPU by mode", "CPU seconds per second by mode, summed over CPUs.",
                       [(f'sum by (host, mode) (rate(node_cpu_seconds_total{{{HOST}, mode!="idle"}}[$__rate_interval]))',
                         "{{host}} {{mode}}")], stack=True), 12, 8)
    lay.add(timeseries("Load average", "1, 5 and 15 minute load averages.", [
        (f"node_load1{{{HOST}}}", "{{host}} 1m"),
        (f"node_load5{{{HOST}}}", "{{host}} 5m"),
        (f"node_load15{{{HOST}}}", "{{host}} 15m"),
    ]), 24, 8)

    lay.row("Memory")
    lay.add(timeseries("Memory", "Used (total minus available), and available.", [
        (f"node_memory_MemTotal_bytes{{{HOST}}} - node_memory_MemAvailable_bytes{{{HOST}}}", "{{host}} used"),
        (f"node_memory_MemAvailable_bytes{{{HOST}}}", "{{host}} available"),
    ], unit="bytes"), 12, 8)
    lay.add(timeseries("Swap used", "Swap in use.",
                       [(f"node_memory_SwapTotal_bytes{{{HOST}}} - node_memory_SwapFree_bytes{{{HOST}}}", "{{host}}")],
                       unit="bytes"), 12, 8)

    fs = f'{HOST}, fstype!~"tmpfs|ramfs|squashfs|overlay|nsfs|fuse.*"'
    lay.row("Disks")
    lay.add(timeseries("Filesystem space left", "Available share of each filesystem.",
                       [(f"node_filesystem_avail_bytes{{{fs}}} / node_filesystem_size_bytes{{{fs}}}",
                         "{{host}} {{mountpoint}}")], unit="percentunit"), 12, 8)
    lay.add(timeseries("Disk throughput", "Bytes read and written per second, per device.", [
        (f"rate(node_disk_read_bytes_total{{{HOST}}}[$__rate_interval])", "{{host}} {{device}} read"),
        (f"rate(node_disk_written_bytes_total{{{HOST}}}[$__rate_interval])", "{{host}} {{device}} written"),
    ], unit="Bps"), 12, 8)

    lay.row("Network")
    lay.add(timeseries("Network traffic", "Bytes received and sent per second, per interface (lo excluded).", [
        (f'rate(node_network_receive_bytes_total{{{HOST}, device!="lo"}}[$__rate_interval])', "{{host}} {{device}} in"),
        (f'rate(node_network_transmit_bytes_total{{{HOST}, device!="lo"}}[$__rate_interval])', "{{host}} {{device}} out"),
    ], unit="Bps"), 24, 8)
    return dashboard(
        "osprey-hosts", "Osprey / Hosts",
        "One host (or a few) from the node_exporter-compatible metrics the agents ship.",
        [query_var("host", "Host", "label_values(node_load1, host)")], lay)


def collector():
    lay = Layout()
    lay.row("Overview")
    lay.add(stat("Lines stored /s", "Log lines durably stored, per second.",
                 f"sum(rate(osprey_ingested_lines_total{{{COLLECTOR}}}[$__rate_interval]))"), 6, 4)
    lay.add(stat("Samples stored /s", "Metric samples stored, per second.",
                 f"sum(rate(osprey_ingested_samples_total{{{COLLECTOR}}}[$__rate_interval]))"), 6, 4)
    lay.add(stat("Active series", "Metric series held.",
                 f"sum(osprey_series_active{{{COLLECTOR}}})"), 6, 4)
    lay.add(stat("WAL corruptions", "Corrupt or torn WAL records cut at the last starts.",
                 f"sum(osprey_wal_corruptions_total{{{COLLECTOR}}})", thresholds=[(1, "red")]), 6, 4)

    lay.row("Ingest")
    lay.add(timeseries("Stored", "Lines, line bytes and samples stored, per second.", [
        (f"sum by (instance) (rate(osprey_ingested_lines_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} lines/s"),
        (f"sum by (instance) (rate(osprey_ingested_samples_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} samples/s"),
    ]), 12, 8)
    lay.add(timeseries("Line bytes stored", "Bytes of log lines stored, per second.",
                       [(f"sum by (instance) (rate(osprey_ingested_line_bytes_total{{{COLLECTOR}}}[$__rate_interval]))",
                         "{{instance}}")], unit="Bps"), 12, 8)
    lay.add(timeseries("Rejects", "Requests or items refused, by endpoint and reason.",
                       [(f"sum by (instance, endpoint, reason) (rate(osprey_rejected_requests_total{{{COLLECTOR}}}[$__rate_interval]))",
                         "{{instance}} {{endpoint}} {{reason}}")]), 24, 8)

    lay.row("Write-ahead log")
    lay.add(timeseries("WAL writes", "Bytes appended and fsyncs, per second.", [
        (f"sum by (instance) (rate(osprey_wal_written_bytes_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} bytes/s"),
        (f"sum by (instance) (rate(osprey_wal_fsyncs_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} fsyncs/s"),
    ]), 12, 8)
    lay.add(timeseries("Group commit latency", "One WAL group commit (write + fsync): p50 and p99.", [
        ("histogram_quantile(0.5, sum by (le, instance) "
         f"(rate(osprey_wal_fsync_duration_seconds_bucket{{{COLLECTOR}}}[$__rate_interval])))", "{{instance}} p50"),
        ("histogram_quantile(0.99, sum by (le, instance) "
         f"(rate(osprey_wal_fsync_duration_seconds_bucket{{{COLLECTOR}}}[$__rate_interval])))", "{{instance}} p99"),
    ], unit="s"), 12, 8)
    lay.add(timeseries("WAL repairs", "Records and bytes cut from torn or corrupt WAL tails at startup.", [
        (f"sum by (instance) (increase(osprey_wal_corruptions_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} records"),
        (f"sum by (instance) (increase(osprey_wal_truncated_bytes_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} bytes"),
    ]), 24, 8)

    lay.row("Series and queries")
    lay.add(timeseries("Series", "Active series, and series expired after series_ttl, per second.", [
        (f"sum by (instance) (osprey_series_active{{{COLLECTOR}}})", "{{instance}} active"),
        (f"sum by (instance) (rate(osprey_series_expired_total{{{COLLECTOR}}}[$__rate_interval]))", "{{instance}} expired/s"),
    ]), 12, 8)
    lay.add(timeseries("Queries", "Queries served per second, by endpoint.",
                       [(f"sum by (instance, endpoint) (rate(osprey_queries_total{{{COLLECTOR}}}[$__rate_interval]))",
                         "{{instance}} {{endpoint}}")]), 12, 8)
    lay.add(timeseries("HTTP latency p99", "Request latency by endpoint.",
                       [("histogram_quantile(0.99, sum by (le, instance, endpoint) "
                         f"(rate(osprey_http_request_duration_seconds_bucket{{{COLLECTOR}}}[$__rate_interval])))",
                         "{{instance}} {{endpoint}}")], unit="s"), 12, 8)
    lay.add(timeseries("Memory", "Resident set size of the collector process.",
                       [(f"osprey_process_resident_memory_bytes{{{COLLECTOR}}}", "{{instance}}")], unit="bytes"), 12, 8)
    return dashboard(
        "osprey-collector", "Osprey / Collector",
        "Inside the collectors: ingest, rejects, write-ahead log, series, queries, memory.",
        [query_var("instance", "Collector", 'label_values(up{job="osprey-collector"}, instance)')], lay)


DASHBOARDS = {"osprey-fleet.json": fleet, "osprey-hosts.json": hosts, "osprey-collector.json": collector}


def lint(name, board):
    """Structural checks Grafana would not report until someone opens the dashboard: unique panel
    ids, panels inside the 24-unit grid and not overlapping, every query on the data source
    variable."""
    problems = []
    ids = [p["id"] for p in board["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    cells = {}
    for p in board["panels"]:
        g = p["gridPos"]
        if g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
            problems.append(f"panel {p['title']!r} is outside the 24-unit grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                if (x, y) in cells:
                    problems.append(f"panels {cells[(x, y)]!r} and {p['title']!r} overlap")
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            if p.get("datasource") != DS or any(t.get("datasource") != DS for t in p["targets"]):
                problems.append(f"panel {p['title']!r} does not use the ${{datasource}} variable")
            if not p["targets"]:
                problems.append(f"panel {p['title']!r} has no query")
    return [f"{name}: {m}" for m in dict.fromkeys(problems)]


def render(build):
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def all_queries():
    """(file, panel title, expr) of every query, variables included."""
    for name, build in DASHBOARDS.items():
        board = build()
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield name, "variable " + var["name"], var["definition"]
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield name, panel["title"], target["expr"]


def promql_rules():
    """Every query as a recording rule, with Grafana's variables replaced by values, so that
    promtool's PromQL parser checks them."""
    lines = ["groups:", "  - name: osprey-dashboard-queries", "    rules:"]
    for i, (name, title, expr) in enumerate(all_queries()):
        if expr.startswith("label_values("):
            inner = expr[len("label_values("):-1].rsplit(",", 1)[0]
            expr = inner
        expr = (expr.replace("$__rate_interval", "5m").replace('=~"$instance"', '=~".*"')
                .replace('=~"$host"', '=~".*"'))
        assert "$" not in expr, f"{name}: {title}: unreplaced variable in {expr}"
        lines.append(f"      # {name}: {title}")
        lines.append(f"      - record: osprey_dashboard_query_{i}")
        lines.append(f"        expr: {json.dumps(expr)}")
    return "\n".join(lines) + "\n"


def main(argv):
    if argv[1:2] == ["--promql"] and len(argv) == 3:
        Path(argv[2]).write_text(promql_rules())
        return 0
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if argv[1:] == ["--check"]:
            for problem in lint(name, build()):
                stale.append(problem)
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        elif argv[1:] == []:
            path.write_text(text)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if stale:
        print(f"dashboard problems: {'; '.join(stale)} (regenerate with packaging/grafana/dashboards.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
