#!/usr/bin/env python3
"""Writes lookout.json, the Grafana dashboard, beside this file.

The JSON is what Grafana imports (and what the Helm chart ships); this script is its source, so
panels stay consistent (one datasource variable, the same filters everywhere). After editing it:

    python3 config/dashboards/generate.py           # writes lookout.json
    python3 config/dashboards/generate.py --check   # exits 1 if lookout.json is out of date

tests/deploy/test_dashboard.py fails when lookout.json differs from what this script writes, when
a query does not parse, or when a query names a metric lookout does not emit.
"""
import json
import os
import sys

DS = {"type": "prometheus", "uid": "${datasource}"}
# Every probe series: scheduled targets (target, instance, module) and /probe scrapes (job, instance).
SEL = 'job=~"$job", instance=~"$instance", module=~"$module"'
# lookout's own series (its /metrics scrape).
SELF = 'job=~"$lookout_job"'
DEP = '{__name__=~"probe_(postgres|mqtt|redis)_duration_seconds", ' + SEL + "}"

_next_id = [0]


def pid():
    _next_id[0] += 1
    return _next_id[0]


def target(expr, legend="", instant=False, fmt="time_series", ref="A"):
    t = {"datasource": DS, "expr": expr, "refId": ref, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False, format="table")
    else:
        t.update(range=True, format=fmt)
    return t


def panel(kind, title, grid, targets, description="", unit=None, **extra):
    p = {
        "id": pid(),
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": dict(zip("xywh", grid)),
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    for k, v in extra.items():
        if k == "defaults":
            p["fieldConfig"]["defaults"].update(v)
        elif k == "overrides":
            p["fieldConfig"]["overrides"] = v
        else:
            p[k] = v
    return p


def row(title, y):
    return {"id": pid(), "type": "row", "title": title, "collapsed": False,
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}


def thresholds(*steps):
    return {"mode": "absolute",
            "steps": [{"color": c, "value": v} for v, c in steps]}


def timeseries(title, grid, targets, unit=None, description="", stack=False, **extra):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if not stack else 40,
              "showPoints": "never", "spanNulls": False,
              "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return panel("timeseries", title, grid, targets, description, unit,
                 defaults={"custom": custom},
                 options={"legend": {"displayMode": "table", "placement": "right",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **extra)


def table(title, grid, targets, description="", unit=None, hide=("Time",), **extra):
    transformations = [{"id": "merge", "options": {}}] if len(targets) > 1 else []
    transformations.append({"id": "organize", "options": {
        "excludeByName": {h: True for h in hide}, "indexByName": {}, "renameByName": {}}})
    options = extra.pop("options", {"showHeader": True, "cellHeight": "sm",
                                    "footer": {"show": False, "reducer": ["sum"], "fields": ""}})
    return panel("table", title, grid, targets, description, unit,
                 transformations=transformations, options=options, **extra)


def stat(title, grid, targets, unit=None, description="", **extra):
    return panel("stat", title, grid, targets, description, unit,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                          "justifyMode": "auto", "orientation": "auto"}, **extra)


UP_DOWN = [{"type": "value", "options": {
    "0": {"text": "DOWN", "color": "red", "index": 0},
    "1": {"text": "UP", "color": "green", "index": 1}}}]


def variable(name, label, query, include_all=True, multi=True, hide=0):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
            "allValue": ".*", "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": hide, "options": [], "regex": ""}


def build():
    panels = []
    y = 0

    panels.append(row("Status", y)); y += 1
    panels.append(stat("Up", (0, y, 4, 4), [target(f"count(probe_success{{{SEL}}} == 1) or vector(0)", "up", instant=True)],
                       description="Targets whose latest probe succeeded.",
                       defaults={"color": {"mode": "fixed", "fixedColor": "green"}}))
    panels.append(stat("Down", (0, y + 4, 4, 4), [target(f"count(probe_success{{{SEL}}} == 0) or vector(0)", "down", instant=True)],
                       description="Targets whose latest probe failed.",
                       defaults={"color": {"mode": "thresholds"},
                                 "thresholds": thresholds((None, "green"), (1, "red"))}))
    panels.append(table(
        "Targets", (4, y, 20, 8),
        [target(f"probe_success{{{SEL}}}", instant=True),
         target(f"probe_http_status_code{{{SEL}}}", instant=True),
         target(f"probe_duration_seconds{{{SEL}}}", instant=True)],
        description="Latest probe of every target, with its module and labels (scheduled targets carry target and the target's own labels).",
        hide=("Time", "__name__"),
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"},
             "properties": [{"id": "displayName", "value": "status"}, {"id": "mappings", "value": UP_DOWN},
                            {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
            {"matcher": {"id": "byName", "options": "Value #B"},
             "properties": [{"id": "displayName", "value": "HTTP status"}]},
            {"matcher": {"id": "byName", "options": "Value #C"},
             "properties": [{"id": "displayName", "value": "duration"}, {"id": "unit", "value": "s"}]},
        ]))
    y += 8
    panels.append(table(
        "Availability over the dashboard's range", (0, y, 12, 9),
        [target(f"avg_over_time(probe_success{{{SEL}}}[$__range])", instant=True),
         target('sum by (target, instance, module) (increase(lookout_probes_total{result="success", ' + SEL + '}[$__range]))'
                ' / sum by (target, instance, module) (increase(lookout_probes_total{' + SEL + '}[$__range]))', instant=True)],
        description="A: share of scrapes whose probe succeeded (every target). B: share of scheduled probes that succeeded, counted by lookout itself.",
        unit="percentunit", hide=("Time",),
        defaults={"decimals": 3, "thresholds": thresholds((None, "red"), (0.99, "orange"), (0.999, "green")),
                  "custom": {"cellOptions": {"type": "color-text"}}},
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"}, "properties": [{"id": "displayName", "value": "by scrape"}]},
            {"matcher": {"id": "byName", "options": "Value #B"}, "properties": [{"id": "displayName", "value": "by probe (scheduled)"}]},
        ]))
    panels.append(panel(
        "state-timeline", "Up and down over time", (12, y, 12, 9),
        [target(f"probe_success{{{SEL}}}", "{{instance}}")],
        "Each target's probe result over time.",
        defaults={"mappings": UP_DOWN, "color": {"mode": "thresholds"},
                  "thresholds": thresholds((None, "red"), (1, "green"))},
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8,
                 "legend": {"showLegend": False}}))
    y += 9

    panels.append(row("Response time", y)); y += 1
    panels.append(timeseries("Probe duration", (0, y, 12, 8), [target(f"probe_duration_seconds{{{SEL}}}", "{{instance}}")],
                             unit="s", description="Whole probe: resolve, connect, TLS, request and answer."))
    panels.append(timeseries("HTTP duration by phase", (12, y, 12, 8),
                             [target(f"sum by (phase) (avg_over_time(probe_http_duration_seconds{{{SEL}}}[$__interval]))", "{{phase}}")],
                             unit="s", stack=True,
                             description="resolve, connect, tls, processing (time to first byte) and transfer, summed over the selected HTTP targets and redirects."))
    y += 8
    panels.append(timeseries("HTTP duration by phase, per target", (0, y, 12, 8),
                             [target(f"probe_http_duration_seconds{{{SEL}}}", "{{instance}} {{phase}}")], unit="s"))
    panels.append(timeseries("ICMP round trip", (12, y, 12, 8),
                             [target(f'probe_icmp_duration_seconds{{phase="rtt", {SEL}}}', "{{instance}}")], unit="s"))
    y += 8

    panels.append(row("Certificates", y)); y += 1
    panels.append(table(
        "Certificate expiry", (0, y, 16, 8),
        [target(f"probe_ssl_earliest_cert_expiry{{{SEL}}} - time()", instant=True)],
        description="Time left before the earliest-expiring certificate a target presents. Alerts: 14 days (warning), 3 days (critical).",
        unit="dtdurations", hide=("Time",),
        defaults={"thresholds": thresholds((None, "red"), (3 * 86400, "orange"), (14 * 86400, "green")),
                  "custom": {"cellOptions": {"type": "color-background"}}},
        overrides=[{"matcher": {"id": "byName", "options": "Value"},
                    "properties": [{"id": "displayName", "value": "expires in"}]}],
        options={"showHeader": True, "cellHeight": "sm",
                 "sortBy": [{"displayName": "expires in", "desc": False}],
                 "footer": {"show": False, "reducer": ["sum"], "fields": ""}}))
    panels.append(table(
        "TLS version and cipher", (16, y, 8, 8),
        [target(f"probe_tls_version_info{{{SEL}}} == 1", instant=True),
         target(f"probe_tls_cipher_info{{{SEL}}} == 1", instant=True)],
        hide=("Time", "Value #A", "Value #B", "__name__")))
    y += 8

    panels.append(row("DNS and TCP", y)); y += 1
    panels.append(timeseries("DNS lookup time (every prober)", (0, y, 8, 8),
                             [target(f"probe_dns_lookup_time_seconds{{{SEL}}}", "{{instance}}")], unit="s",
                             description="Resolving the target's name before connecting."))
    panels.append(timeseries("DNS probe duration by phase", (8, y, 8, 8),
                             [target(f"probe_dns_duration_seconds{{{SEL}}}", "{{instance}} {{phase}}")], unit="s"))
    panels.append(table(
        "DNS answers", (16, y, 8, 8),
        [target(f"probe_dns_answer_rrs{{{SEL}}}", instant=True),
         target(f"probe_dns_authority_rrs{{{SEL}}}", instant=True),
         target(f"probe_dns_query_succeeded{{{SEL}}}", instant=True)],
        description="Records in the answer and authority sections; an empty answer to a successful query fires LookoutDNSAnswerMissing.",
        hide=("Time", "__name__"),
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"}, "properties": [{"id": "displayName", "value": "answer"}]},
            {"matcher": {"id": "byName", "options": "Value #B"}, "properties": [{"id": "displayName", "value": "authority"}]},
            {"matcher": {"id": "byName", "options": "Value #C"}, "properties": [{"id": "displayName", "value": "query ok"}]},
        ]))
    y += 8
    panels.append(timeseries(
        "TCP and other non-HTTP probes: duration", (0, y, 12, 8),
        [target(f"probe_duration_seconds{{{SEL}}} unless on (job, instance, target, module) probe_http_status_code", "{{instance}}")],
        unit="s", description="Connect (and TLS, and the query_response dialogue) of TCP probes, and every other non-HTTP prober."))
    panels.append(table(
        "TCP: regex failures and address family", (12, y, 12, 8),
        [target(f"probe_failed_due_to_regex{{{SEL}}}", instant=True),
         target(f"probe_ip_protocol{{{SEL}}}", instant=True)],
        hide=("Time", "__name__"),
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"}, "properties": [{"id": "displayName", "value": "failed on regex"}]},
            {"matcher": {"id": "byName", "options": "Value #B"}, "properties": [{"id": "displayName", "value": "IP version"}]},
        ]))
    y += 8

    panels.append(row("Dependencies", y)); y += 1
    panels.append(table(
        "Dependency status", (0, y, 12, 8),
        [target(f"probe_success{{{SEL}}} and on (job, instance, target, module) {DEP}", instant=True),
         target(f"probe_data_age_seconds{{{SEL}}}", instant=True)],
        description="PostgreSQL, MQTT and Redis checks: UP/DOWN and the age of the newest data they saw.",
        hide=("Time", "__name__"),
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"},
             "properties": [{"id": "displayName", "value": "status"}, {"id": "mappings", "value": UP_DOWN},
                            {"id": "custom.cellOptions", "value": {"type": "color-background"}}]},
            {"matcher": {"id": "byName", "options": "Value #B"},
             "properties": [{"id": "displayName", "value": "data age"}, {"id": "unit", "value": "dtdurations"}]},
        ]))
    panels.append(timeseries(
        "Data age against max_age", (12, y, 12, 8),
        [target(f"probe_data_age_seconds{{{SEL}}}", "{{instance}} {{target}}"),
         target('lookout:module_max_age_seconds{module=~"$module"}', "max_age {{module}}")],
        unit="s", description="probe_data_age_seconds per check, and each module's max_age (recording rule of the chart's rule pack): above the line fires LookoutDataStale."))
    y += 8
    panels.append(timeseries("PostgreSQL phases", (0, y, 8, 8),
                             [target(f"probe_postgres_duration_seconds{{{SEL}}}", "{{instance}} {{phase}}")], unit="s"))
    panels.append(timeseries("MQTT phases", (8, y, 8, 8),
                             [target(f"probe_mqtt_duration_seconds{{{SEL}}}", "{{instance}} {{phase}}")], unit="s"))
    panels.append(timeseries("Redis phases", (16, y, 8, 8),
                             [target(f"probe_redis_duration_seconds{{{SEL}}}", "{{instance}} {{phase}}")], unit="s"))
    y += 8
    panels.append(table(
        "PostgreSQL servers", (0, y, 8, 7),
        [target(f"probe_postgres_in_recovery{{{SEL}}}", instant=True),
         target(f"probe_postgres_server_version_num{{{SEL}}}", instant=True),
         target(f"probe_postgres_query_rows{{{SEL}}}", instant=True)],
        hide=("Time", "__name__"),
        overrides=[
            {"matcher": {"id": "byName", "options": "Value #A"}, "properties": [{"id": "displayName", "value": "in recovery"}]},
            {"matcher": {"id": "byName", "options": "Value #B"}, "properties": [{"id": "displayName", "value": "server_version_num"}]},
            {"matcher": {"id": "byName", "options": "Value #C"}, "properties": [{"id": "displayName", "value": "query rows"}]},
        ]))
    panels.append(table(
        "MQTT CONNACK codes", (8, y, 8, 7),
        [target(f"probe_mqtt_connack_code{{{SEL}}}", instant=True)],
        description="0 is accepted; anything else is the broker's refusal reason.",
        hide=("Time", "__name__")))
    panels.append(table(
        "Redis roles", (16, y, 8, 7),
        [target(f"probe_redis_role_info{{{SEL}}} == 1", instant=True)],
        hide=("Time", "__name__", "Value")))
    y += 7

    panels.append(row("lookout", y)); y += 1
    panels.append(timeseries(
        "Probes per second", (0, y, 8, 8),
        [target(f"sum by (module, result) (rate(lookout_probe_requests_total{{{SELF}}}[$__rate_interval]))", "/probe {{module}} {{result}}"),
         target(f'sum by (module, result) (rate(lookout_probes_total{{{SELF}, module=~"$module"}}[$__rate_interval]))', "scheduled {{module}} {{result}}")],
        unit="reqps"))
    panels.append(timeseries(
        "Failures by reason", (8, y, 8, 8),
        [target(f'sum by (module, reason) (rate(lookout_probe_failures_total{{{SELF}, module=~"$module"}}[$__rate_interval]))', "{{module}} {{reason}}")],
        unit="reqps", stack=True,
        description="Why probes failed: resolve, connect, tls, timeout, protocol, assertion, ..."))
    panels.append(stat(
        "Config reload", (16, y, 4, 4),
        [target(f"min(lookout_config_last_reload_successful{{{SELF}}})", "last reload", instant=True)],
        defaults={"mappings": [{"type": "value", "options": {
            "0": {"text": "FAILED", "color": "red", "index": 0},
            "1": {"text": "OK", "color": "green", "index": 1}}}]}))
    panels.append(stat(
        "Config loaded", (20, y, 4, 4),
        [target(f"max(lookout_config_last_reload_success_timestamp_seconds{{{SELF}}}) * 1000", "loaded", instant=True)],
        unit="dateTimeFromNow", defaults={"color": {"mode": "fixed", "fixedColor": "blue"}}))
    panels.append(stat(
        "Probe panics", (16, y + 4, 4, 4),
        [target(f"sum(increase(lookout_probe_panics_total{{{SELF}}}[$__range])) or vector(0)", "panics", instant=True)],
        defaults={"color": {"mode": "thresholds"}, "thresholds": thresholds((None, "green"), (1, "red"))}))
    panels.append(stat(
        "Scheduled targets", (20, y + 4, 4, 4),
        [target(f"sum(lookout_scheduler_targets{{{SELF}}})", "targets", instant=True)],
        defaults={"color": {"mode": "fixed", "fixedColor": "blue"}}))
    y += 8
    panels.append(timeseries(
        "Scheduler: running probes and limit", (0, y, 8, 8),
        [target(f"lookout_scheduler_running_probes{{{SELF}}}", "running {{pod}}"),
         target(f"lookout_scheduler_max_concurrency{{{SELF}}}", "max_concurrency {{pod}}")]))
    panels.append(timeseries(
        "Scheduler: start lateness", (8, y, 8, 8),
        [target(f"histogram_quantile(0.99, sum by (le) (rate(lookout_scheduler_start_lateness_seconds_bucket{{{SELF}}}[$__rate_interval])))", "p99"),
         target(f"histogram_quantile(0.5, sum by (le) (rate(lookout_scheduler_start_lateness_seconds_bucket{{{SELF}}}[$__rate_interval])))", "p50"),
         target(f"max(lookout_scheduler_start_lateness_max_seconds{{{SELF}}})", "max")],
        unit="s", description="How late probes start against their planned time."))
    panels.append(timeseries(
        "Missed probes", (16, y, 8, 8),
        [target(f'sum by (target) (rate(lookout_probe_missed_total{{{SELF}, module=~"$module"}}[$__rate_interval]))', "{{target}}")],
        unit="reqps", description="Probes skipped because the previous probe of the target still ran."))
    y += 8
    panels.append(timeseries(
        "CPU", (0, y, 8, 7),
        [target(f"rate(process_cpu_seconds_total{{{SELF}}}[$__rate_interval])", "{{pod}}")], unit="percentunit"))
    panels.append(timeseries(
        "Memory", (8, y, 8, 7),
        [target(f"process_resident_memory_bytes{{{SELF}}}", "{{pod}}")], unit="bytes"))
    panels.append(table(
        "Version", (16, y, 8, 7),
        [target(f"lookout_build_info{{{SELF}}}", instant=True),
         target(f"time() - process_start_time_seconds{{{SELF}}}", instant=True)],
        hide=("Time", "__name__", "Value #A"),
        overrides=[{"matcher": {"id": "byName", "options": "Value #B"},
                    "properties": [{"id": "displayName", "value": "uptime"}, {"id": "unit", "value": "dtdurations"}]}]))

    return {
        "__inputs": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "lookout: probe results (scheduled targets and /probe scrapes), certificates, DNS, dependencies and lookout's own health.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [],
        "panels": panels,
        "refresh": "1m",
        "schemaVersion": 39,
        "tags": ["lookout", "blackbox", "probes"],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""},
            variable("job", "Job", "label_values(probe_success, job)"),
            variable("module", "Module", 'label_values(probe_success{job=~"$job"}, module)'),
            variable("instance", "Target", 'label_values(probe_success{job=~"$job", module=~"$module"}, instance)'),
            variable("lookout_job", "lookout job", "label_values(lookout_build_info, job)"),
        ]},
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": "lookout",
        "uid": "lookout-probes",
        "version": 1,
        "weekStart": "",
    }


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lookout.json")
    text = json.dumps(build(), indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        with open(out) as f:
            if f.read() != text:
                print(f"{out} is out of date: run python3 {sys.argv[0]}")
                sys.exit(1)
        return
    with open(out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
