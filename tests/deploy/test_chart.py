"""The Helm chart (helm/lookout) with the real helm: lint, render, schema, Kubernetes and
prometheus-operator schemas, the lookout config it renders, and what each value does."""
import copy
import functools
import json
import os
import re
import signal
import subprocess
import time
import urllib.request

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
    free_port,
    helm,
    lookout_bin,
    one,
    promtool,
    render,
    render_values,
    run,
    template_args,
    wait_http,
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


def kubernetes_errors(obj):
    """Why the Kubernetes OpenAPI schemas of KUBE_VERSIONS refuse obj (unknown fields too)."""
    import kubernetes_validate

    errors = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {e.message} at {list(e.path)}")
    return errors


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
    objs = render(files(case))
    assert objs
    checked = 0
    for obj in objs:
        if obj["kind"] in MONITORING_KINDS:
            continue
        errors = kubernetes_errors(obj)
        if errors:
            pytest.fail("\n".join(errors))
        checked += 1
    assert checked >= 3  # Deployment or StatefulSet, Service, and a ServiceAccount or the config


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
        ({"sharding": {"enabled": True, "count": 3}}, "'count' not allowed"),
        ({"sharding": {"enabled": "yes"}}, "/sharding/enabled"),
        ({"discovery": {"enabled": True, "namespace": "web"}}, "'namespace' not allowed"),
        ({"discovery": {"namespaces": ["Web_Shop"]}}, "/discovery/namespaces/0"),
        ({"discovery": {"namespaces": ["web", "web"]}}, "/discovery/namespaces"),
        ({"discovery": {"kinds": ["pod"]}}, "/discovery/kinds/0"),
        ({"discovery": {"kinds": []}}, "/discovery/kinds"),
        ({"discovery": {"events": "yes"}}, "/discovery/events"),
        ({"discovery": {"labelSelector": ["tier=web"]}}, "/discovery/labelSelector"),
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


# ---------------------------------------------------------------- sharding ----------------------

SHARDING_VALUES = os.path.join(CHART, "ci", "sharding-values.yaml")
DISCOVERY_VALUES = os.path.join(CHART, "ci", "discovery-values.yaml")
HEADLESS = f"{FULL}-headless"
CHART_README = os.path.join(CHART, "README.md")
# Kinds only sharding or discovery render.
MODE_KINDS = {"StatefulSet", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


def lookout_container(workload):
    [c] = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == "lookout"]
    return c


def selects(selector, labels):
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": present and value in e.get("values", []),
              "NotIn": not present or value not in e.get("values", []),
              "Exists": present,
              "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def test_sharding_renders_a_stateful_set_with_the_shard_flags():
    """sharding.enabled: a StatefulSet instead of the Deployment, its pods started together, each
    told its ordinal through $(POD_NAME) (the downward API's pod name) and the replica count."""
    objs = render([SHARDING_VALUES])
    assert not find(objs, "Deployment")
    sts = one(objs, "StatefulSet")
    assert sts["metadata"]["name"] == FULL
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == HEADLESS
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    c = lookout_container(sts)
    shard_args = [a for a in c["args"] if a.startswith("--shard.")]
    peers = ",".join(f"http://{FULL}-{i}.{HEADLESS}.{NAMESPACE}.svc:9115" for i in range(3))
    assert shard_args == ["--shard.index=$(POD_NAME)", "--shard.count=3", f"--shard.peers={peers}",
                          "--shard.peer-interval=5s", "--shard.peer-failures=3"]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert env["TZ"] == {"name": "TZ", "value": "UTC"}, "extraEnv stays"
    assert c["env"][0]["name"] == "POD_NAME", "defined before anything that might refer to it"


def test_sharded_pods_hear_each_other_only_over_plain_http(tmp_path):
    """sharding.takeOver: the peer list is left out when the web config serves TLS (peers are
    asked over plain HTTP only) and when takeOver is off; the binary accepts the flags rendered."""
    tls = tmp_path / "tls.yaml"
    tls.write_text("webConfig:\n  tls_server_config:\n    cert_file: /c\n    key_file: /k\n")
    off = tmp_path / "off.yaml"
    off.write_text("sharding:\n  takeOver:\n    enabled: false\n")
    for extra in (tls, off):
        c = lookout_container(one(render([SHARDING_VALUES, str(extra)]), "StatefulSet"))
        assert [a for a in c["args"] if a.startswith("--shard.")] == \
            ["--shard.index=$(POD_NAME)", "--shard.count=3"], extra.read_text()
    c = lookout_container(one(render([SHARDING_VALUES]), "StatefulSet"))
    args = [a.replace("$(POD_NAME)", f"{FULL}-1") for a in c["args"] if a.startswith("--shard.")]
    cfg = tmp_path / "lookout.yml"
    cfg.write_text("modules:\n  tcp: {prober: tcp}\n")
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}", *args], check=False)
    assert p.returncode == 0, p.stderr


def test_sharded_pods_run_the_deployments_pod_spec(tmp_path):
    """The StatefulSet's pod template is the Deployment's for the same values, but for the shard
    flags, POD_NAME and the history volume (a claim template instead)."""
    values = yaml.safe_load(open(SHARDING_VALUES))
    values["sharding"]["enabled"] = False
    deployment = one(render_values(values, tmp_path), "Deployment")["spec"]["template"]
    sharded = copy.deepcopy(one(render([SHARDING_VALUES]), "StatefulSet")["spec"]["template"])
    c = lookout_container({"spec": {"template": sharded}})
    c["args"] = [a for a in c["args"] if not a.startswith("--shard.")]
    c["env"] = [e for e in c["env"] if e["name"] != "POD_NAME"]
    deployment["spec"]["volumes"] = [v for v in deployment["spec"]["volumes"] if v["name"] != "history"]
    assert sharded == deployment


def test_sharding_gives_each_replica_its_own_history_claim(tmp_path):
    """persistence.enabled, sharded: volumeClaimTemplates (history-<pod>), no shared claim; an
    existing claim is refused, since replicas cannot share one store; without persistence each
    pod has an emptyDir."""
    objs = render([SHARDING_VALUES])
    assert not find(objs, "PersistentVolumeClaim")
    sts = one(objs, "StatefulSet")
    [vct] = sts["spec"]["volumeClaimTemplates"]
    # Only stable labels: a later chart version must not change the (immutable) templates.
    assert vct["metadata"] == {"name": "history", "labels": sts["spec"]["selector"]["matchLabels"],
                               "annotations": {"example.org/backup": "daily"}}
    assert vct["spec"] == {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                           "resources": {"requests": {"storage": "2Gi"}}}
    pod = sts["spec"]["template"]["spec"]
    assert "history" not in {v["name"] for v in pod["volumes"]}
    mounts = {m["name"]: m for m in lookout_container(sts)["volumeMounts"]}
    assert mounts["history"] == {"name": "history", "mountPath": "/var/lib/lookout"}
    assert "--storage.path=/var/lib/lookout" in lookout_container(sts)["args"]

    values = yaml.safe_load(open(SHARDING_VALUES))
    del values["persistence"]
    sts = one(render_values(values, tmp_path, "ephemeral.yaml"), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "history", "emptyDir": {}} in sts["spec"]["template"]["spec"]["volumes"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"sharding": {"enabled": True}, "persistence": {"enabled": True, "existingClaim": "mine"}},
         "persistence.existingClaim cannot be used with sharding.enabled"),
        ({"sharding": {"enabled": True}, "replicas": 0}, "sharding.enabled needs replicas of at least 1"),
    ],
)
def test_sharding_refuses_what_cannot_work(values, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    p = helm(*template_args([str(path)]), check=False)
    assert p.returncode != 0 and message in p.stderr, p.stderr


def test_headless_service_names_the_pods_and_monitors_leave_it_out():
    """The headless Service gives each pod a DNS name (even while not ready); every ServiceMonitor
    selects the normal Service and not the headless one, so each pod is scraped once; the
    PodDisruptionBudget covers the StatefulSet's pods."""
    objs = render([SHARDING_VALUES])
    services = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    assert set(services) == {FULL, HEADLESS}
    sts = one(objs, "StatefulSet")
    headless = services[HEADLESS]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert headless["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert headless["ports"] == [{"name": "http", "port": 9115, "targetPort": "http", "protocol": "TCP"}]
    assert services[FULL]["spec"] == one(render(), "Service")["spec"], "the normal Service is unchanged"
    sms = find(objs, "ServiceMonitor")
    assert len(sms) == 2  # self and one ad-hoc target
    for sm in sms:
        selector = sm["spec"]["selector"]
        assert selects(selector, services[FULL]["metadata"]["labels"]), sm["metadata"]["name"]
        assert not selects(selector, services[HEADLESS]["metadata"]["labels"]), sm["metadata"]["name"]
    pdb = one(objs, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert selects(pdb["selector"], sts["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("case", [c for c in VALUES_CASES if c not in (SHARDING_VALUES, DISCOVERY_VALUES)],
                         ids=[i for c, i in zip(VALUES_CASES, CASE_IDS) if c not in (SHARDING_VALUES, DISCOVERY_VALUES)])
def test_without_sharding_or_discovery_nothing_of_them_renders(case):
    """With both off (every other values file), the chart renders what it did before they existed:
    a Deployment, one Service, ServiceMonitors selecting by labels alone, no RBAC, no token, no
    shard flags, no kubernetes: section. (Byte-for-byte identity with the chart before was checked
    by hand when they were added; this keeps them from leaking in.)"""
    objs = render(files(case))
    assert not {o["kind"] for o in objs} & MODE_KINDS
    assert [s["metadata"]["name"] for s in find(objs, "Service")] == [FULL]
    c = container(objs)
    assert not [a for a in c["args"] if a.startswith("--shard.")]
    assert "POD_NAME" not in {e["name"] for e in c.get("env", [])}
    assert deployment_spec(objs)["automountServiceAccountToken"] is False
    for sm in find(objs, "ServiceMonitor"):
        assert set(sm["spec"]["selector"]) == {"matchLabels"}
    for rule in find(objs, "PrometheusRule"):
        assert "lookout-shards" not in [g["name"] for g in rule["spec"]["groups"]]
    text = config_text(objs)
    if text is not None:
        assert "kubernetes" not in yaml.safe_load(text)


def shard_rule_objs(tmp_path, name, **rule_values):
    return render_values({"replicas": 3, "sharding": {"enabled": True},
                          "prometheusRule": {"enabled": True, **rule_values}}, tmp_path, name)


def test_shard_missing_alert_fires_when_a_replica_is_gone(tmp_path):
    """LookoutShardMissing (sharding only): promtool's checks pass, and it fires once a replica's
    series are gone for 10 minutes, which LookoutDown cannot see while others are scraped."""
    objs = shard_rule_objs(tmp_path, "labels.yaml", additionalRuleLabels={"team": "home"})
    [group] = [g for g in one(objs, "PrometheusRule")["spec"]["groups"] if g["name"] == "lookout-shards"]
    [rule] = group["rules"]
    assert rule["alert"] == "LookoutShardMissing" and rule["labels"] == {"severity": "critical", "team": "home"}
    rules = tmp_path / "shards.rules.yml"
    rules.write_text(yaml.safe_dump({"groups": [group]}))
    run([promtool(), "check", "rules", str(rules)])
    series = []
    for pod, share, minutes in (("lookout-0", 2, 40), ("lookout-1", 1, 40), ("lookout-2", 1, 5)):
        labels = f'job="lookout",instance="{pod}:9115",pod="{pod}"'
        series += [{"series": f"lookout_shard_targets{{{labels}}}", "values": f"{share}x{minutes}"},
                   {"series": f"lookout_shard_targets_considered{{{labels}}}", "values": f"4x{minutes}"}]
    tests = tmp_path / "shards.test.yml"
    tests.write_text(yaml.safe_dump({
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                # lookout-2's last sample is at 5m; it stays visible for Prometheus' 5m lookback.
                {"eval_time": "9m", "alertname": "LookoutShardMissing", "exp_alerts": []},
                {"eval_time": "30m", "alertname": "LookoutShardMissing", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "team": "home"},
                    "exp_annotations": {
                        "summary": rule["annotations"]["summary"],
                        "description": rule["annotations"]["description"].replace("{{ $value | humanize }}", "1"),
                    },
                }]},
            ],
        }],
    }))
    run([promtool(), "test", "rules", str(tests)])
    assert "one of the 3 pods" in rule["annotations"]["description"]
    # disabledAlerts takes it out like any rule-pack alert.
    objs = shard_rule_objs(tmp_path, "disabled.yaml", disabledAlerts=["LookoutShardMissing"])
    assert "lookout-shards" not in [g["name"] for g in one(objs, "PrometheusRule")["spec"]["groups"]]


def samples(text):
    """{name: [(labels dict, value)]} of a text exposition."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def test_sharded_replicas_started_as_the_chart_says_split_the_targets(tmp_path):
    """Three lookouts started with the StatefulSet's args ($(POD_NAME) expanded as the kubelet
    does, to the pods' names) share a config's targets out: each target in exactly one share, a
    depends_on group whole in one, lookout_shard_info naming each replica."""
    closed = free_port()  # nothing listens there: probes fail at once, on loopback
    targets = [{"name": f"site-{i}", "module": "tcp_connect", "target": f"127.0.0.1:{closed}", "interval": "5m"}
               for i in range(12)]
    targets.append({"name": "app", "module": "tcp_connect", "target": f"127.0.0.1:{closed}", "interval": "5m",
                    "depends_on": ["site-0", "site-1"]})
    values = yaml.safe_load(open(SHARDING_VALUES))
    values["config"]["targets"] = targets
    objs = render_values(values, tmp_path)
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(config_text(objs))
    sts = one(objs, "StatefulSet")
    replicas = sts["spec"]["replicas"]
    procs, shares = [], {}
    try:
        for i in range(replicas):
            pod = f"{sts['metadata']['name']}-{i}"  # a StatefulSet's pod names
            port = free_port()
            store = tmp_path / pod
            store.mkdir()
            argv = [lookout_bin()]
            for a in lookout_container(sts)["args"]:
                a = a.replace("$(POD_NAME)", pod)
                if a.startswith("--config.file="):
                    a = f"--config.file={cfg}"
                elif a.startswith("--storage.path="):
                    a = f"--storage.path={store}"
                elif a.startswith("--web.listen-address="):
                    a = f"--web.listen-address=127.0.0.1:{port}"
                argv.append(a)
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(proc)
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/-/healthy", proc=proc)
            deadline = time.monotonic() + 15
            while True:
                m = samples(wait_http(f"{base}/metrics", proc=proc))
                with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as r:
                    names = {t["name"] for t in json.load(r)["targets"]}
                share = m.get("lookout_shard_targets", [({}, -1)])[0][1]
                if share == len(names) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert m.get("lookout_shard_info") == [({"count": str(replicas), "index": str(i)}, 1.0)], m.get("lookout_shard_info")
            assert m["lookout_shard_targets_considered"] == [({}, float(len(targets)))]
            assert share == len(names), f"{pod}: lookout_shard_targets {share}, /api/v1/targets {sorted(names)}"
            shares[pod] = names
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    every = [n for names in shares.values() for n in names]
    assert sorted(every) == sorted(t["name"] for t in targets), f"each target in exactly one share: {shares}"
    assert [pod for pod, names in shares.items() if {"app", "site-0", "site-1"} <= names], shares


# ---------------------------------------------------------------- discovery ---------------------

DISCOVERY_RBAC = f"{FULL}-{NAMESPACE}-discovery"
READ = ["get", "list", "watch"]
KIND_RULES = {
    "ingress": {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": READ},
    "service": {"apiGroups": [""], "resources": ["services"], "verbs": READ},
    "httproute": {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": READ},
}
EVENT_RULES = [
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
]


def assert_valid(objs):
    errors = [e for o in objs for e in kubernetes_errors(o)]
    assert not errors, "\n".join(errors)


def test_discovery_everywhere_gets_a_cluster_role_with_only_what_it_uses(tmp_path):
    """discovery.enabled with no namespaces: a ClusterRole reading the three kinds and writing
    Events, nothing else; its binding names the chart's ServiceAccount, whose token the pod now
    mounts; the config gets the kubernetes: section."""
    objs = render_values({"discovery": {"enabled": True}}, tmp_path)
    assert not find(objs, "Role") and not find(objs, "RoleBinding")
    role, binding = one(objs, "ClusterRole"), one(objs, "ClusterRoleBinding")
    assert role["metadata"]["name"] == binding["metadata"]["name"] == DISCOVERY_RBAC
    assert role["rules"] == [KIND_RULES[k] for k in ("ingress", "service", "httproute")] + EVENT_RULES
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": DISCOVERY_RBAC}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULL, "namespace": NAMESPACE}]
    assert one(objs, "ServiceAccount")["metadata"]["name"] == FULL
    assert one(objs, "ServiceAccount")["automountServiceAccountToken"] is False, "only this pod gets the token"
    assert deployment_spec(objs)["automountServiceAccountToken"] is True
    # The pod's name: the reporting instance of its Events. No shard flags without sharding.
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container(objs)["env"]
    assert not [a for a in container(objs)["args"] if a.startswith("--shard.")]
    assert yaml.safe_load(config_text(objs))["kubernetes"] == {
        "namespaces": [], "kinds": ["ingress", "service", "httproute"], "module": "http_2xx", "events": True}
    assert_valid([role, binding])


def test_discovery_in_listed_namespaces_gets_a_role_in_each():
    objs = render([DISCOVERY_VALUES])
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in find(objs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in find(objs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"web", "shop"}
    for ns in ("web", "shop"):
        assert roles[ns]["metadata"]["name"] == bindings[ns]["metadata"]["name"] == DISCOVERY_RBAC
        assert roles[ns]["rules"] == [KIND_RULES["ingress"], KIND_RULES["httproute"]] + EVENT_RULES
        assert bindings[ns]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DISCOVERY_RBAC}
        assert bindings[ns]["subjects"] == [{"kind": "ServiceAccount", "name": FULL, "namespace": NAMESPACE}]
    assert yaml.safe_load(config_text(objs))["kubernetes"] == {
        "namespaces": ["web", "shop"], "kinds": ["ingress", "httproute"], "module": "https_2xx", "events": True}
    assert deployment_spec(objs)["automountServiceAccountToken"] is True


def test_discovery_rbac_follows_kinds_events_and_the_service_account(tmp_path):
    objs = render_values({"discovery": {"enabled": True, "kinds": ["service"], "events": False, "labelSelector": "tier=web"},
                          "serviceAccount": {"create": False, "name": "monitoring"}}, tmp_path)
    assert one(objs, "ClusterRole")["rules"] == [KIND_RULES["service"]]
    assert one(objs, "ClusterRoleBinding")["subjects"] == [{"kind": "ServiceAccount", "name": "monitoring", "namespace": NAMESPACE}]
    assert yaml.safe_load(config_text(objs))["kubernetes"] == {
        "namespaces": [], "kinds": ["service"], "module": "http_2xx", "events": False, "label_selector": "tier=web"}
    # An existing config Secret: the chart cannot write the section (nor check the module), but
    # still grants the access and mounts the token.
    objs = render_values({"discovery": {"enabled": True, "module": "from_my_secret"},
                          "configExistingSecretName": "lookout-config"}, tmp_path, "existing.yaml")
    assert one(objs, "ClusterRole") and config_text(objs) is None
    assert deployment_spec(objs)["automountServiceAccountToken"] is True


def test_discovery_module_must_be_configured(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text(yaml.safe_dump({"discovery": {"enabled": True, "module": "http_3xx"}}))
    p = helm(*template_args([str(path)]), check=False)
    assert p.returncode != 0 and 'discovery.module "http_3xx" is not a module of config.modules' in p.stderr, p.stderr


def test_discovery_with_sharding(tmp_path):
    """Both on: the StatefulSet's pods get the token and the RBAC binds their ServiceAccount."""
    values = yaml.safe_load(open(SHARDING_VALUES))
    values["discovery"] = {"enabled": True}
    objs = render_values(values, tmp_path)
    assert one(objs, "StatefulSet")["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert one(objs, "ClusterRoleBinding")["subjects"][0]["name"] == FULL
    assert "kubernetes" in yaml.safe_load(config_text(objs))


# ---------------------------------------------------------------- README examples ---------------


def chart_readme_yaml(first_line):
    blocks = re.findall(r"```yaml\n(.*?)```", open(CHART_README).read(), re.S)
    [block] = [b for b in blocks if b.startswith(first_line)]
    return block


def readme_sharded_objs(tmp_path):
    path = tmp_path / "values-sharded.yaml"
    path.write_text(chart_readme_yaml("# values-sharded.yaml"))
    return render([str(path)])


def test_readme_three_replica_example(tmp_path):
    """README's three replicas render what it says they do: the pods, flags, claims, Services."""
    objs = readme_sharded_objs(tmp_path)
    readme = open(CHART_README).read()
    sts = one(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3 and not find(objs, "Deployment")
    for i in range(3):
        assert f"`{FULL}-{i}`" in readme and f"`history-{FULL}-{i}`" in readme
    [vct] = sts["spec"]["volumeClaimTemplates"]
    assert vct["metadata"]["name"] == "history"
    args = " ".join(a for a in lookout_container(sts)["args"] if a.startswith("--shard."))
    assert f"`{args}`" in readme
    assert sorted(s["metadata"]["name"] for s in find(objs, "Service")) == [FULL, HEADLESS]
    assert f"`{HEADLESS}`" in readme and f"`{FULL}-0.{HEADLESS}.{NAMESPACE}.svc`" in readme
    assert one(objs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(config_text(objs))
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_readme_probe_scrape_config_sends_each_target_to_one_replica(tmp_path):
    """README's hashmod scrape config passes promtool, keeps the target as instance, and its
    modulus and replica address match the three-replica example the chart renders."""
    text = chart_readme_yaml("# prometheus.yml")
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    run([promtool(), "check", "config", str(path)])
    [job] = yaml.safe_load(text)["scrape_configs"]
    assert job["metrics_path"] == "/probe"
    relabel = job["relabel_configs"]
    assert relabel[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
    assert relabel[1] == {"source_labels": ["__param_target"], "target_label": "instance"}
    [hashmod] = [r for r in relabel if r.get("action") == "hashmod"]
    assert hashmod["source_labels"] == ["__param_target"] and hashmod["target_label"] == "__tmp_shard"
    address = relabel[-1]
    assert address["source_labels"] == ["__tmp_shard"] and address["target_label"] == "__address__"
    objs = readme_sharded_objs(tmp_path)
    sts = one(objs, "StatefulSet")
    [headless] = find(objs, "Service", HEADLESS)
    port = headless["spec"]["ports"][0]["port"]
    assert hashmod["modulus"] == sts["spec"]["replicas"]
    assert address["replacement"] == f"{sts['metadata']['name']}-$1.{sts['spec']['serviceName']}.{NAMESPACE}.svc:{port}"


def test_readme_discovery_example(tmp_path):
    path = tmp_path / "values-discovery.yaml"
    path.write_text(chart_readme_yaml("# values-discovery.yaml"))
    objs = render([str(path)])
    roles = {r["metadata"]["namespace"]: r["rules"] for r in find(objs, "Role")}
    assert roles == {ns: [KIND_RULES["ingress"], KIND_RULES["service"]] + EVENT_RULES for ns in ("web", "shop")}
    assert f"`{DISCOVERY_RBAC}`" in open(CHART_README).read()
