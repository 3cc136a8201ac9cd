"""The Helm chart (helm/lookout) with the real helm: lint, render, schema, Kubernetes and
prometheus-operator schemas, the lookout config it renders, and what each value does."""
import copy
import functools
import json
import os
import re

import pytest
import yaml

from conftest import (
    CHART,
    CI_VALUES,
    DASHBOARD,
    NAMESPACE,
    RELEASE,
    ROOT,
    RULES,
    config_text,
    container,
    find,
    helm,
    lookout_bin,
    one,
    promtool,
    render,
    render_values,
    run,
    template_args,
)

VALUES_CASES = [None] + CI_VALUES  # None: the chart's defaults
CASE_IDS = ["defaults"] + [os.path.basename(p) for p in CI_VALUES]
KUBE_VERSIONS = ["1.25.0", "1.37.0"]  # the chart's kubeVersion floor, and the newest schemas
MONITORING_KINDS = {"ServiceMonitor", "Probe", "PrometheusRule"}
FULL = RELEASE  # the release is named "lookout", so objects are named "lookout" too


def files(case):
    return () if case is None else (case,)


def deployment_spec(objs):
    return one(objs, "Deployment")["spec"]["template"]["spec"]


# ---------------------------------------------------------------- chart metadata ----------------


def test_app_version_is_cargo_version():
    chart = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))
    cargo = open(os.path.join(ROOT, "Cargo.toml")).read()
    version = re.search(r'^version\s*=\s*"([^"]+)"', cargo, re.M).group(1)
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == version
    image = container(render())["image"]
    assert image == f"lookout:{version}", "the image tag defaults to appVersion"


def test_values_are_documented_field_by_field():
    """Every chart-defined key in values.yaml has a comment right above it (or heads a commented
    group); free-form blocks (lookout's modules, Kubernetes objects) are not the chart's fields."""
    schema = json.load(open(os.path.join(CHART, "values.schema.json")))
    lines = open(os.path.join(CHART, "values.yaml")).read().splitlines()
    undocumented = []
    stack = []  # (indent, schema node)
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z_][\w]*):", line)
        if not m or line.lstrip().startswith("-"):
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else schema
        props = (parent or {}).get("properties")
        if props is None or parent.get("additionalProperties") is not False:
            stack.append((indent, None))
            continue  # free-form: not a chart field
        node = props.get(key)
        assert node is not None, f"values.yaml line {i + 1}: {key} is not in values.schema.json"
        prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        if not prev.strip().startswith("#"):
            undocumented.append(f"line {i + 1}: {key}")
        stack.append((indent, node))
    assert not undocumented, "values without a comment above them:\n" + "\n".join(undocumented)


# ---------------------------------------------------------------- helm lint and render ----------


@pytest.mark.parametrize("case", VALUES_CASES, ids=CASE_IDS)
def test_helm_lint_strict(case):
    args = ["lint", "--strict", CHART, "--namespace", NAMESPACE]
    for f in files(case):
        args += ["-f", f]
    out = helm(*args)
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("case", VALUES_CASES, ids=CASE_IDS)
def test_core_objects_match_kubernetes_schemas(case):
    import kubernetes_validate

    objs = render(files(case))
    assert objs
    checked = 0
    for obj in objs:
        if obj["kind"] in MONITORING_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {e.message} at {list(e.path)}")
        checked += 1
    assert checked >= 3  # Deployment, Service, and a ServiceAccount or the config


@functools.lru_cache(maxsize=None)
def crd_validator(kind):
    """A strict JSON-schema validator for a prometheus-operator kind.

    The schemas come from cloudcoil-models-prometheus-operator (PyPI), pydantic models generated
    from prometheus-operator's CRD OpenAPI schemas (v0.80): types, required fields, enums and
    patterns. Like kubeconform's -strict, unknown fields are errors here (the API server would
    silently prune them, which hides typos).
    """
    import jsonschema
    from cloudcoil.models.prometheus_operator import v1

    schema = getattr(v1, kind).model_json_schema(by_alias=True)

    def strict(node):
        if isinstance(node, list):
            return [strict(v) for v in node]
        if not isinstance(node, dict):
            return node
        any_of = node.get("anyOf")
        if any_of and len(any_of) == 2 and {"type": "null"} in any_of:
            # pydantic's Optional[X]: a CRD field is X or absent, never null.
            [inner] = [a for a in any_of if a != {"type": "null"}]
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **inner}
        node = {k: strict(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node

    schema = strict(schema)
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(obj["kind"]).iter_errors(obj)]


@pytest.mark.parametrize("case", VALUES_CASES, ids=CASE_IDS)
def test_monitoring_objects_match_crd_schemas(case):
    for obj in render(files(case)):
        if obj["kind"] in MONITORING_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            errors = crd_errors(obj)
            assert not errors, f"{obj['kind']}/{obj['metadata']['name']}:\n" + "\n".join(errors)


def test_crd_validation_catches_mistakes():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    sm = copy.deepcopy(find(objs, "ServiceMonitor")[0])
    sm["spec"]["endpoints"][0]["intervall"] = "30s"
    assert any("intervall" in e for e in crd_errors(sm))
    sm = copy.deepcopy(find(objs, "ServiceMonitor")[0])
    sm["spec"]["endpoints"][0]["scheme"] = "ftp"
    assert crd_errors(sm)
    probe = copy.deepcopy(find(objs, "Probe")[0])
    del probe["spec"]["prober"]["url"]
    assert any("url" in e for e in crd_errors(probe))
    rule = copy.deepcopy(one(objs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    assert crd_errors(rule)


def test_kubernetes_validation_catches_mistakes():
    import kubernetes_validate

    dep = copy.deepcopy(one(render(), "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("case", VALUES_CASES, ids=CASE_IDS)
def test_rendered_config_passes_lookout_config_check(case, tmp_path):
    objs = render(files(case))
    text = config_text(objs)
    if text is None:
        assert one(objs, "Deployment")  # configExistingSecretName: the config is not the chart's
        assert "existing-secret" in os.path.basename(case)
        return
    # Files the config names (password_file, ...) come from Secrets mounted in the pod; stand in
    # for them under tmp_path.
    def relocate(m):
        path = tmp_path / m.group(2).lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
        return f"{m.group(1)}: {path}"

    text = re.sub(r"(\w+_file): (/\S+)", relocate, text)
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(text)
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}"], check=False)
    assert p.returncode == 0, f"lookout --config.check rejected the chart's config:\n{p.stdout}{p.stderr}\n{text}"


def test_config_check_rejects_a_bad_module(tmp_path):
    objs = render_values({"config": {"modules": {"bad": {"prober": "http", "http": {"valid_status_code": [200]}}}}}, tmp_path)
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(config_text(objs))
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}"], check=False)
    assert p.returncode != 0 and "valid_status_code" in p.stdout + p.stderr


# ---------------------------------------------------------------- values.schema.json ------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"replicas": -1}, "replicas"),
        ({"frobnicate": True}, "frobnicate"),
        ({"icmp": {"enabled": "sometimes"}}, "enabled"),
        ({"configReload": {"method": "reboot"}}, "method"),
        ({"serviceMonitor": {"targets": [{"name": "x"}]}}, "url"),
        ({"config": {"modules": {"m": {"prober": "smtp"}}}}, "prober"),
        ({"config": {"targets": [{"name": "t", "module": "http_2xx"}]}}, "target"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"serviceMonitor": {"selfMonitor": {"interval": "often"}}}, "interval"),
    ],
)
def test_schema_rejects_bad_values(values, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    p = helm(*template_args([str(path)]), check=False)
    assert p.returncode != 0, f"helm accepted {values}"
    assert "schema" in p.stderr and message in p.stderr, p.stderr


# ---------------------------------------------------------------- what the values do -----------


def test_defaults_are_minimal_and_locked_down():
    objs = render()
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    spec = deployment_spec(objs)
    c = container(objs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "sysctls" not in spec.get("securityContext", {})
    assert spec["automountServiceAccountToken"] is False
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
    assert c["ports"] == [{"name": "http", "containerPort": 9115, "protocol": "TCP"}]
    assert "--config.watch=true" in c["args"]
    assert "checksum/config" not in one(objs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["port"] == 9115
    assert svc["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_config_comes_straight_from_values(tmp_path):
    values = {"config": {
        "modules": {"http_2xx": {"prober": "http"}, "tcp_connect": {"prober": "tcp"}},
        "defaults": {"interval": "1m", "labels": {"site": "home"}},
        "scheduler": {"max_concurrency": 16},
        "targets": [{"name": "wiki", "module": "http_2xx", "target": "https://wiki.lan/", "labels": {"app": "wiki"}}],
    }}
    # Helm merges maps, so the chart's default modules stay unless set to null.
    values["config"]["modules"]["https_2xx"] = None
    objs = render_values(values, tmp_path)
    rendered = yaml.safe_load(config_text(objs))
    expected = copy.deepcopy(values["config"])
    del expected["modules"]["https_2xx"]
    expected["modules"]["http_2xx"] = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))["config"]["modules"]["http_2xx"]
    expected["modules"]["tcp_connect"] = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))["config"]["modules"]["tcp_connect"]
    assert rendered == expected
    mounts = {m["name"]: m for m in container(objs)["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/lookout" and "subPath" not in mounts["config"]
    assert "--config.file=/etc/lookout/lookout.yml" in container(objs)["args"]


def icmp_state(objs):
    spec = deployment_spec(objs)
    sysctls = {s["name"]: s["value"] for s in spec.get("securityContext", {}).get("sysctls", [])}
    caps = container(objs)["securityContext"].get("capabilities", {})
    return sysctls, caps.get("add", []), container(objs)["securityContext"]["runAsUser"]


def test_icmp_auto_uses_the_ping_group_sysctl_not_a_capability(tmp_path):
    objs = render_values({"config": {"modules": {"ping": {"prober": "icmp"}}}}, tmp_path)
    sysctls, added, uid = icmp_state(objs)
    assert sysctls == {"net.ipv4.ping_group_range": "0 2147483647"}
    assert added == [] and uid == 65532


def test_net_raw_only_when_icmp_is_on(tmp_path):
    with_icmp = render([os.path.join(CHART, "ci", "icmp-netraw-values.yaml")])
    sysctls, added, uid = icmp_state(with_icmp)
    assert added == ["NET_RAW"] and uid == 0 and sysctls == {}
    assert container(with_icmp)["securityContext"]["capabilities"]["drop"] == ["ALL"]
    # netRaw asked for, but no module uses ICMP: nothing is added.
    without = render_values({"icmp": {"netRaw": True}}, tmp_path)
    assert icmp_state(without) == ({}, [], 65532)
    # ICMP off explicitly, even with an icmp module.
    off = render_values({"icmp": {"enabled": False, "netRaw": True},
                         "config": {"modules": {"ping": {"prober": "icmp"}}}}, tmp_path, "off.yaml")
    assert icmp_state(off) == ({}, [], 65532)


def test_restart_method_changes_the_checksum_with_the_config(tmp_path):
    def checksum(modules, name):
        objs = render_values({"configReload": {"method": "restart"}, "config": {"modules": modules}}, tmp_path, name)
        assert "--config.watch=false" in container(objs)["args"]
        return one(objs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    a = checksum({"http_2xx": {"prober": "http"}}, "a.yaml")
    assert a == checksum({"http_2xx": {"prober": "http"}}, "a2.yaml")
    assert a != checksum({"http_2xx": {"prober": "http", "timeout": "3s"}}, "b.yaml")


def test_secret_config():
    objs = render([os.path.join(CHART, "ci", "secret-config-values.yaml")])
    secret = one(objs, "Secret")
    assert "not-a-real-password" in secret["stringData"]["lookout.yml"]
    assert not find(objs, "ConfigMap")
    assert deployment_spec(objs)["volumes"][0]["secret"]["secretName"] == secret["metadata"]["name"]
    assert deployment_spec(objs)["serviceAccountName"] == "monitoring" and not find(objs, "ServiceAccount")


def test_self_service_monitor_keeps_target_labels_and_names_the_job():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    self_sm = find(objs, "ServiceMonitor", FULL)[0]
    ep = self_sm["spec"]["endpoints"][0]
    assert ep["path"] == "/metrics" and ep["honorLabels"] is True and ep["port"] == "http"
    assert {"action": "replace", "targetLabel": "job", "replacement": "lookout"} in ep["relabelings"]
    assert self_sm["metadata"]["labels"]["release"] == RELEASE  # releaseLabel
    assert self_sm["spec"]["selector"]["matchLabels"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_per_target_service_monitors_probe_like_the_blackbox_chart():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    sms = {s["metadata"]["name"]: s for s in find(objs, "ServiceMonitor")}
    wiki = sms[f"{FULL}-jimswiki"]["spec"]["endpoints"][0]
    assert wiki["path"] == "/probe"
    assert wiki["params"] == {"module": ["https_2xx"], "target": ["https://jimswiki.example.org/"],
                              "hostname": ["jimswiki.example.org"]}
    assert wiki["interval"] == "60s" and wiki["scrapeTimeout"] == "20s"
    relabels = {r["targetLabel"]: r["replacement"] for r in wiki["metricRelabelings"]}
    assert relabels == {"instance": "https://jimswiki.example.org/", "target": "jimswiki",
                        "module": "https_2xx", "app": "jspwiki"}
    amd = sms[f"{FULL}-amd-wiki"]["spec"]["endpoints"][0]
    assert amd["params"]["module"] == ["http_2xx"] and amd["interval"] == "30s"  # defaults


def test_probe_objects_point_at_lookout():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    probes = {p["metadata"]["name"]: p["spec"] for p in find(objs, "Probe")}
    public = probes[f"{FULL}-public-sites"]
    assert public["prober"] == {"url": f"{FULL}.{NAMESPACE}.svc:9115", "scheme": "http", "path": "/probe"}
    assert public["module"] == "https_2xx"
    assert public["targets"]["staticConfig"]["static"] == ["https://nerdsbythehour.com/", "https://cdn.example.org/"]
    assert public["targets"]["staticConfig"]["labels"] == {"module": "https_2xx", "exposure": "public"}


def rule_pack_alerts():
    names = set()
    for f in os.listdir(RULES):
        if f.endswith(".rules.yml"):
            for g in yaml.safe_load(open(os.path.join(RULES, f)))["groups"]:
                names |= {r["alert"] for r in g["rules"] if "alert" in r}
    return names


def chart_rules(objs):
    return [r for g in one(objs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def test_prometheus_rule_carries_the_rule_pack(tmp_path):
    objs = render_values({"prometheusRule": {"enabled": True}}, tmp_path)
    alerts = {r["alert"] for r in chart_rules(objs) if "alert" in r}
    assert alerts == rule_pack_alerts()
    groups = [g["name"] for g in one(objs, "PrometheusRule")["spec"]["groups"]]
    assert groups == ["lookout-probes", "lookout-self"]  # no thresholds without a max_age


def test_prometheus_rule_options():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    rules = chart_rules(objs)
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert "LookoutTLS13NotOffered" not in alerts  # disabledAlerts
    assert all(r["labels"]["team"] == "home" for n, r in alerts.items() if n.startswith("Lookout"))
    assert alerts["TeslaMateDataCollectionStopped"]["for"] == "15m"  # rules: custom group
    [threshold] = [r for r in rules if r.get("record") == "lookout:module_max_age_seconds"]
    assert threshold["expr"] == 'label_replace(vector(5400), "module", "pg_teslamate", "", "")'  # max_age 1h30m


GRAPH_CONFIG = """\
modules:
  tcp: {prober: tcp, timeout: 2s}
  http: {prober: http}
targets:
  - {name: postgres, module: tcp, target: "db.lan:5432", runbook_url: "https://wiki.lan/postgres"}
  - {name: mosquitto, module: tcp, target: "mqtt.lan:1883"}
  - {name: teslamate, module: http, target: "http://teslamate.lan:4000/", depends_on: [postgres, mosquitto]}
"""


def test_prometheus_rule_renders_the_generated_rules(tmp_path):
    """`lookout rules` output, handed to the chart with --set-file, becomes a group of the
    PrometheusRule that promtool accepts: one alert per target, with its dependents."""
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(GRAPH_CONFIG)
    generated = tmp_path / "generated.yml"
    generated.write_text(run([lookout_bin(), "rules", "--config.file", str(cfg)]).stdout)
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"prometheusRule": {
        "enabled": True, "defaultRules": False, "additionalRuleLabels": {"team": "home"}}}))
    out = helm(*template_args([str(values)]), "--set-file", f"prometheusRule.generatedRules={generated}").stdout
    [rule] = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "PrometheusRule"]
    [group] = rule["spec"]["groups"]
    assert group["name"] == "lookout-targets"
    alerts = {r["labels"]["team"]: r for r in group["rules"]}  # additionalRuleLabels apply
    assert len(group["rules"]) == 3 and set(alerts) == {"home"}
    by_target = {re.search(r'target="([^"]+)"', r["expr"]).group(1): r for r in group["rules"]}
    assert by_target["postgres"]["annotations"]["dependents"] == "teslamate"
    assert by_target["postgres"]["annotations"]["runbook_url"] == "https://wiki.lan/postgres"
    assert "dependents" not in by_target["teslamate"]["annotations"]
    assert all(r["alert"] == "LookoutTargetDown" and "for" not in r for r in group["rules"])
    (tmp_path / "chart.rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    run([promtool(), "check", "rules", str(tmp_path / "chart.rules.yml")])


def test_job_name_flows_into_lookout_down(tmp_path):
    objs = render_values({"prometheusRule": {"enabled": True},
                          "serviceMonitor": {"selfMonitor": {"enabled": True, "jobName": "probes"}}}, tmp_path)
    [down] = [r for r in chart_rules(objs) if r.get("alert") == "LookoutDown"]
    assert 'up{job="probes"}' in down["expr"] and 'job="lookout"' not in down["expr"]
    [sm] = find(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"][0]["replacement"] == "probes"


@pytest.mark.parametrize("max_age, seconds", [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1500ms", 1)])
def test_max_age_becomes_seconds(max_age, seconds, tmp_path):
    objs = render_values({"prometheusRule": {"enabled": True}, "config": {"modules": {
        "pg": {"prober": "postgres", "postgres": {"query": "SELECT now()", "max_age": max_age}}}}}, tmp_path)
    [rec] = [r for r in chart_rules(objs) if r.get("record")  == "lookout:module_max_age_seconds"]
    assert rec["expr"] == f'label_replace(vector({seconds}), "module", "pg", "", "")'


def test_bad_max_age_fails_the_render(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"prometheusRule": {"enabled": True}, "config": {"modules": {
        "pg": {"prober": "postgres", "postgres": {"max_age": "ten minutes"}}}}}))
    p = helm(*template_args([str(path)]), check=False)
    assert p.returncode != 0 and "ten minutes" in p.stderr


def test_chart_rules_pass_the_rule_unit_tests(tmp_path):
    """The PrometheusRule's groups, written back as rule files, pass config/rules/tests unchanged
    (the thresholds group generated from a module with max_age 1h, as the tests expect)."""
    objs = render_values({"prometheusRule": {"enabled": True, "additionalRuleLabels": {}},
                          "config": {"modules": {"postgres_data_age": {
                              "prober": "postgres", "postgres": {"query": "SELECT now()", "max_age": "1h"}}}}}, tmp_path)
    groups = {g["name"]: g for g in one(objs, "PrometheusRule")["spec"]["groups"]}
    rules_dir = tmp_path / "rules"
    (rules_dir / "tests").mkdir(parents=True)
    for name in ("lookout-probes", "lookout-self", "lookout-thresholds"):
        (rules_dir / f"{name}.rules.yml").write_text(yaml.safe_dump({"groups": [groups[name]]}))
    tests = sorted(os.listdir(os.path.join(RULES, "tests")))
    for t in tests:
        (rules_dir / "tests" / t).write_text(open(os.path.join(RULES, "tests", t)).read())
    run([promtool(), "check", "rules", *map(str, sorted(rules_dir.glob("*.yml")))])
    run([promtool(), "test", "rules", *(str(rules_dir / "tests" / t) for t in tests)])


def test_dashboard_config_map_for_the_grafana_sidecar():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    [cm] = [c for c in find(objs, "ConfigMap") if "lookout.json" in c.get("data", {})]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Monitoring"}
    assert json.loads(cm["data"]["lookout.json"]) == json.load(open(DASHBOARD))


def test_ingress_pdb_and_labels():
    objs = render([os.path.join(CHART, "ci", "full-values.yaml")])
    ing = one(objs, "Ingress")["spec"]
    assert ing["ingressClassName"] == "nginx"
    assert ing["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": f"{FULL}", "port": {"name": "http"}}
    assert ing["tls"] == [{"hosts": ["lookout.example.org"], "secretName": "lookout-tls"}]
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    assert all(o["metadata"]["labels"]["team"] == "home" for o in objs)  # commonLabels
    assert container(objs)["image"].startswith("registry.lan:5000/tools/lookout:0.1.0@sha256:")


def test_notes_render(tmp_path):
    out = helm("install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE,
               "-f", os.path.join(CHART, "ci", "full-values.yaml")).stdout
    notes = out.split("NOTES:", 1)[1]
    assert f"svc/{FULL} 9115:9115" in notes
    assert "6 scheduled target(s)" in notes


def test_migration_diff_from_the_blackbox_chart(tmp_path):
    """helm/lookout/README.md's diff: the blackbox chart's values with the removed lines back are
    refused, naming each key; ci/blackbox-migration-values.yaml (the diff applied) renders."""
    migrated = yaml.safe_load(open(os.path.join(CHART, "ci", "blackbox-migration-values.yaml")))
    original = copy.deepcopy(migrated)
    original["image"] = {"registry": "quay.io", "repository": "prometheus/blackbox-exporter"}
    original["configReloader"] = {"enabled": True}
    original["kind"] = "DaemonSet"
    path = tmp_path / "blackbox-values.yaml"
    path.write_text(yaml.safe_dump(original))
    p = helm(*template_args([str(path)]), check=False)
    assert p.returncode != 0
    for key in ("configReloader", "kind"):
        assert key in p.stderr, p.stderr
    objs = render([os.path.join(CHART, "ci", "blackbox-migration-values.yaml")])
    sms = find(objs, "ServiceMonitor")
    assert len(sms) == 4  # self + the three blackbox-style targets
    assert all(s["metadata"]["labels"]["release"] == "kube-prometheus-stack" for s in sms if s["metadata"]["name"] != FULL)


def test_packaged_chart_carries_the_rules_and_dashboard(tmp_path):
    """files/rules and files/dashboards are links to config/: `helm package` must resolve them,
    keep only the rule files and the dashboard, and render the same objects as the directory."""
    import tarfile

    helm("package", CHART, "-d", str(tmp_path))
    [tgz] = list(tmp_path.glob("lookout-*.tgz"))
    names = sorted(tarfile.open(tgz).getnames())
    files = [n for n in names if "/files/" in n]
    assert files == ["lookout/files/dashboards/lookout.json", "lookout/files/rules/lookout-probes.rules.yml",
                     "lookout/files/rules/lookout-self.rules.yml", "lookout/files/rules/lookout-thresholds.rules.yml"]
    assert not any("/ci/" in n for n in names)
    full = os.path.join(CHART, "ci", "full-values.yaml")
    from_dir = helm(*template_args([full])).stdout
    from_tgz = helm("template", RELEASE, str(tgz), "--namespace", NAMESPACE, "-f", full).stdout
    assert from_tgz == from_dir


def test_history_on_a_persistent_volume_claim(tmp_path):
    """persistence.enabled puts the history store on a claim the chart makes (or an existing
    one); without it the store lives in an emptyDir."""
    volume = lambda objs: [v for v in deployment_spec(objs)["volumes"] if v["name"] == "history"][0]
    assert volume(render()) == {"name": "history", "emptyDir": {}}
    assert not find(render(), "PersistentVolumeClaim")
    objs = render_values({"persistence": {"enabled": True, "size": "5Gi", "storageClassName": "local-path"}}, tmp_path)
    [pvc] = find(objs, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == f"{FULL}-history"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert pvc["spec"]["storageClassName"] == "local-path"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert volume(objs) == {"name": "history", "persistentVolumeClaim": {"claimName": f"{FULL}-history"}}
    assert "--storage.path=/var/lib/lookout" in container(objs)["args"]
    objs = render_values({"persistence": {"enabled": True, "existingClaim": "mine"}}, tmp_path, "existing.yaml")
    assert not find(objs, "PersistentVolumeClaim")
    assert volume(objs)["persistentVolumeClaim"]["claimName"] == "mine"


WEB_VALUES = os.path.join(CHART, "ci", "web-config-values.yaml")


def web_config_text(objs):
    [secret] = find(objs, "Secret", f"{FULL}-web")
    return secret["stringData"]["web.yml"]


def test_web_config_renders_a_secret_the_flag_and_matching_probes(tmp_path):
    """webConfig becomes a Secret mounted as a directory, --web.config.file names it, and the
    kubelet's probes follow it: HTTPS with TLS, the TCP port once basic auth is on."""
    objs = render([WEB_VALUES])
    values = yaml.safe_load(open(WEB_VALUES))
    assert yaml.safe_load(web_config_text(objs)) == values["webConfig"]
    c = container(objs)
    assert "--web.config.file=/etc/lookout-web/web.yml" in c["args"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["web-config"] == {"name": "web-config", "mountPath": "/etc/lookout-web", "readOnly": True}
    volumes = {v["name"]: v for v in deployment_spec(objs)["volumes"]}
    assert volumes["web-config"] == {"name": "web-config", "secret": {"secretName": f"{FULL}-web"}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "http"} and "httpGet" not in c[probe], c[probe]
    # TLS without basic auth: the same HTTP check, over HTTPS.
    tls_only = copy.deepcopy(values)
    del tls_only["webConfig"]["basic_auth_users"]
    c = container(render_values(tls_only, tmp_path, "tls-only.yaml"))
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http", "scheme": "HTTPS"}
    # Without webConfig nothing changes.
    c = container(render())
    assert not any(a.startswith("--web.config.file") for a in c["args"])
    assert "web-config" not in {m["name"] for m in c["volumeMounts"]}


def test_web_config_from_an_existing_secret(tmp_path):
    objs = render_values({"webConfigExistingSecretName": "my-web-config"}, tmp_path)
    assert not find(objs, "Secret")
    volumes = {v["name"]: v for v in deployment_spec(objs)["volumes"]}
    assert volumes["web-config"]["secret"] == {"secretName": "my-web-config"}
    c = container(objs)
    assert "--web.config.file=/etc/lookout-web/web.yml" in c["args"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}, "the chart cannot see inside it"


def test_rendered_web_config_passes_lookout_config_check(tmp_path):
    """The chart's web.yml, its certificate paths pointed at real files, passes the binary's own
    check; a bad hash in webConfig is refused naming its line and field."""
    objs = render([WEB_VALUES])
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=lookout.monitoring.svc"])
    text = web_config_text(objs).replace("/etc/lookout-tls/tls.crt", str(cert)).replace("/etc/lookout-tls/tls.key", str(key))
    web = tmp_path / "web.yml"
    web.write_text(text)
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(config_text(objs))
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}", f"--web.config.file={web}"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Web config file is ok" in p.stdout and "TLS on, 1 basic auth users" in p.stdout, p.stdout

    bad = yaml.safe_load(open(WEB_VALUES))
    bad["webConfig"]["basic_auth_users"]["prometheus"] = "scrape-secret"
    objs = render_values(bad, tmp_path, "bad.yaml")
    web.write_text(web_config_text(objs).replace("/etc/lookout-tls/tls.crt", str(cert)).replace("/etc/lookout-tls/tls.key", str(key)))
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}", f"--web.config.file={web}"], check=False)
    assert p.returncode == 1
    assert re.search(rf"{re.escape(str(web))}:\d+: field basic_auth_users.prometheus: too short to be a bcrypt hash", p.stderr), p.stderr
