#!/usr/bin/env python3
"""Every alert in the rules file is tested both ways and has its runbook section.

    coverage.py osprey-alerts.yml osprey-alerts.test.yml docs/runbook.md

For each alert: a `promtool test rules` case where it fires (non-empty exp_alerts) and one where
it must not (empty exp_alerts); summary, description and runbook_url annotations and a severity
label; a runbook_url that points at docs/runbook.md with an anchor that a heading of the runbook
produces (GitHub's rule: lower case, spaces to dashes, punctuation dropped). promtool itself
checks that the expectations hold; this checks that they exist. Needs PyYAML (in the tools venv).
"""

import re
import sys

import yaml


def anchors(markdown):
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def main(rules_path, tests_path, runbook_path):
    rules = yaml.safe_load(open(rules_path))
    tests = yaml.safe_load(open(tests_path))
    runbook = anchors(open(runbook_path).read())
    fires, quiet = set(), set()
    for case in tests["tests"]:
        for t in case.get("alert_rule_test", []):
            (fires if t.get("exp_alerts") else quiet).add(t["alertname"])
    problems = []
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    for rule in alerts:
        name = rule["alert"]
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key} annotation")
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity label must be critical, warning or info")
        url = ann.get("runbook_url", "")
        if "/docs/runbook.md#" not in url:
            problems.append(f"{name}: runbook_url {url!r} does not point into docs/runbook.md")
        elif url.split("#", 1)[1] not in runbook:
            problems.append(f"{name}: docs/runbook.md has no heading for anchor #{url.split('#', 1)[1]}")
        if name not in fires:
            problems.append(f"{name}: no test where it fires")
        if name not in quiet:
            problems.append(f"{name}: no test where it must not fire")
    unknown = (fires | quiet) - {r["alert"] for r in alerts}
    problems += [f"tests name an alert that does not exist: {n}" for n in sorted(unknown)]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{len(alerts)} alerts: each fires and stays quiet in a test, each has its runbook section")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
