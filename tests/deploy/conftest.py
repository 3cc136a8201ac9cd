"""Shared helpers for the deployment tests (run by scripts/test-deploy).

Environment (scripts/test-deploy sets all of them):
  LOOKOUT_HELM     helm binary (scripts/install-helm)
  LOOKOUT_BIN      the static lookout binary (scripts/build-static)
  LOOKOUT_ROOTFS   the image root filesystem built beside it (scripts/build-static --rootfs)
"""
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "helm", "lookout")
RULES = os.path.join(ROOT, "config", "rules")
DASHBOARD = os.path.join(ROOT, "config", "dashboards", "lookout.json")
CI_VALUES = sorted(
    os.path.join(CHART, "ci", f) for f in os.listdir(os.path.join(CHART, "ci")) if f.endswith(".yaml")
)
RELEASE = "lookout"
NAMESPACE = "monitoring"


def required_env(name):
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the deployment tests through scripts/test-deploy")
    return value


def helm_bin():
    return required_env("LOOKOUT_HELM")


def lookout_bin():
    path = required_env("LOOKOUT_BIN")
    if not os.access(path, os.X_OK):
        pytest.fail(f"LOOKOUT_BIN={path} is not an executable")
    return path


def run(cmd, check=True, **kw):
    """Runs cmd, returning CompletedProcess with text output; on failure shows both streams."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def helm(*args, check=True):
    return run([helm_bin(), *args], check=check)


def template_args(values_files=(), sets=()):
    args = ["template", RELEASE, CHART, "--namespace", NAMESPACE]
    for f in values_files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    return args


class StrictLoader(yaml.SafeLoader):
    """Refuses duplicate mapping keys, as Kubernetes' YAML decoding does (helm install would fail)."""


def _no_duplicates(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dups = {k for k in keys if keys.count(k) > 1}
    if dups:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(dups)}", node.start_mark)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


@functools.lru_cache(maxsize=None)
def _render(values_files, sets):
    out = helm(*template_args(values_files, sets)).stdout
    try:
        return tuple(d for d in yaml.load_all(out, Loader=StrictLoader) if d)
    except yaml.YAMLError as e:
        pytest.fail(f"the chart rendered invalid YAML for {values_files} {sets}: {e}")


def render(values_files=(), sets=()):
    """The chart's objects for these values files and --set strings (cached)."""
    return [json.loads(json.dumps(d)) for d in _render(tuple(values_files), tuple(sets))]


def render_values(values: dict, tmp_path, name="values.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return render([str(path)])


def find(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found


def one(objs, kind):
    found = find(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def container(objs):
    dep = one(objs, "Deployment")
    [c] = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "lookout"]
    return c


def config_text(objs):
    """The lookout.yml the chart renders, from its ConfigMap or Secret."""
    for o in objs:
        if o["kind"] == "ConfigMap" and "lookout.yml" in o.get("data", {}):
            return o["data"]["lookout.yml"]
        if o["kind"] == "Secret" and "lookout.yml" in o.get("stringData", {}):
            return o["stringData"]["lookout.yml"]
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=15.0, proc=None):
    """GETs url until it answers 200; returns the body. Fails early if proc exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"lookout exited with {proc.returncode} before answering {url}:\n{out}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return r.read().decode()
        except OSError as e:
            last = e
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {timeout}s: {last}")


def load_emitted():
    """{family: {"labels": set, "kind": str}} from emitted_metrics.txt."""
    fams = {}
    with open(os.path.join(os.path.dirname(__file__), "emitted_metrics.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            name, labels, kind = parts[0], parts[1], parts[2]
            fams[name] = {
                "labels": set() if labels == "-" else set(labels.split(",")),
                "kind": kind,
            }
    return fams


def recording_rules():
    names = set()
    for f in os.listdir(RULES):
        if f.endswith(".rules.yml"):
            for g in yaml.safe_load(open(os.path.join(RULES, f)))["groups"]:
                names |= {r["record"] for r in g["rules"] if "record" in r}
    return names


# Labels any probe or lookout series may carry: the scheduler's and the scrape's.
COMMON_LABELS = {"job", "instance", "target", "module", "pod", "namespace", "service", "endpoint", "container"}


def metric_names_and_labels(expr):
    """Metric names (and __name__ regexes) and every label name an expression uses.

    Returns (names, name_regexes, labels) using promql-parser's AST.
    """
    import promql_parser as pp

    names, regexes, labels = set(), set(), set()

    def visit(node):
        kind = type(node).__name__
        if kind == "VectorSelector":
            if node.name:
                names.add(node.name)
            for m in node.matchers.matchers:
                if m.name == "__name__":
                    if str(m.op).endswith("Re"):
                        regexes.add(m.value)
                    else:
                        names.add(m.value)
                else:
                    labels.add(m.name)
        elif kind == "AggregateExpr" and node.modifier is not None:
            labels.update(node.modifier.labels)
        elif kind == "BinaryExpr" and node.modifier is not None:
            mod = node.modifier
            if mod.matching is not None:
                labels.update(mod.matching.labels)
            labels.update(mod.group_labels or [])
        elif kind == "Call" and node.func.name == "label_replace":
            # label_replace(v, dst, replacement, src, regex): dst and src are label names.
            for arg in (node.args[1], node.args[3]):
                if getattr(arg, "val", ""):
                    labels.add(arg.val)
        return True

    pp.walk(pp.parse(expr), visit)
    return names, regexes, labels


def check_expr_metrics(expr, where, emitted, recorded):
    """Problems with the metric and label names of one expression (empty list when fine)."""
    problems = []
    names, regexes, labels = metric_names_and_labels(expr)
    allowed_names = set(emitted) | recorded
    for fam, info in emitted.items():
        if info["kind"] == "histogram":
            allowed_names |= {fam + "_bucket", fam + "_sum", fam + "_count"}
    for n in names - allowed_names:
        problems.append(f"{where}: metric {n} is not one lookout emits (tests/deploy/emitted_metrics.txt)")
    for rx in regexes:
        matched = [n for n in emitted if re.fullmatch(rx, n)]
        if not matched:
            problems.append(f"{where}: __name__=~{rx!r} matches no metric lookout emits")
        names |= set(matched)
    known = set(COMMON_LABELS)
    for n in names:
        base = n
        for suffix in ("_bucket", "_sum", "_count"):
            if n.endswith(suffix) and n[: -len(suffix)] in emitted:
                base = n[: -len(suffix)]
        known |= emitted.get(base, {"labels": set()})["labels"]
        if n.endswith("_bucket"):
            known.add("le")
    # Labels created by label_replace in recording rules (module for the thresholds).
    for label in sorted(labels - known):
        problems.append(f"{where}: label {label} exists on none of {sorted(names)}")
    return problems


def promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is missing: scripts/test-deploy installs Debian's prometheus package")
    return path
