"""config/dashboards/lookout.json: up to date with its generator, a Prometheus datasource variable,
and every query parses (promtool) and names only metrics lookout emits."""
import json
import os
import re
import subprocess
import sys

import yaml

from conftest import DASHBOARD, ROOT, check_expr_metrics, load_emitted, promtool, recording_rules, run

GENERATOR = os.path.join(ROOT, "config", "dashboards", "generate.py")

# Grafana's own variables, replaced by something of the right type before parsing.
DURATION_VARS = {"__range", "__rate_interval", "__interval", "__range_s"}


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def panels(d):
    for p in d["panels"]:
        yield p
        yield from p.get("panels", [])


def queries(d):
    for p in panels(d):
        for t in p.get("targets", []):
            yield p["title"], t
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            yield f"variable {v['name']}", {"expr": label_values_expr(q)}


def label_values_expr(q):
    """label_values(EXPR, label) -> EXPR (the part that is PromQL)."""
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
    assert m, f"unexpected variable query {q!r}"
    return m.group(1)


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2)
        return "5m" if name in DURATION_VARS else "x"

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def test_generator_output_is_committed():
    out = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_version_and_identity():
    d = dashboard()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] == "lookout-probes" and d["title"]
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_every_query_uses_the_datasource_variable():
    d = dashboard()
    [ds] = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert ds["name"] == "datasource" and ds["query"] == "prometheus"
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], f"panel {p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]


def test_the_panels_the_issue_asks_for_exist():
    exprs = " ".join(t["expr"] for _, t in queries(dashboard()))
    for needed in [
        "probe_success",  # status table and availability
        "[$__range]",  # availability over the dashboard range
        "probe_http_duration_seconds",  # response time by phase
        "probe_ssl_earliest_cert_expiry",  # certificate countdown
        "probe_dns_lookup_time_seconds",
        "probe_dns_answer_rrs",
        "probe_postgres_duration_seconds",
        "probe_mqtt_duration_seconds",
        "probe_redis_duration_seconds",
        "probe_data_age_seconds",
        "lookout_probe_requests_total",  # probes/s
        "lookout_probe_failures_total",  # failures by reason
        "lookout_config_last_reload_successful",
    ]:
        assert needed in exprs, f"no panel queries {needed}"


def test_every_query_parses_with_promtool(tmp_path):
    """promtool's own parser: each query becomes a recording rule of a rule file it checks."""
    rules = []
    for i, (title, t) in enumerate(queries(dashboard())):
        rules.append({"record": f"dashboard:query_{i}", "expr": substitute(t["expr"]),
                      "labels": {"panel": title}})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run([promtool(), "check", "rules", str(path)])
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


def test_promtool_check_catches_a_bad_query(tmp_path):
    path = tmp_path / "bad.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "x:y", "expr": substitute("sum by (target (probe_success[$__range])")}]}]}))
    assert run([promtool(), "check", "rules", str(path)], check=False).returncode != 0


def test_queries_use_only_emitted_metrics_and_labels():
    emitted, recorded = load_emitted(), recording_rules()
    problems = []
    for title, t in queries(dashboard()):
        problems += check_expr_metrics(substitute(t["expr"]), f"panel {title!r}", emitted, recorded)
    assert not problems, "\n".join(problems)
