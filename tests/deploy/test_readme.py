"""README's "Install in Kubernetes" commands and values work as written."""
import os
import re

import yaml

from conftest import CHART, NAMESPACE, RELEASE, ROOT, config_text, container, find, one, render, run, lookout_bin

README = os.path.join(ROOT, "README.md")


def section():
    text = open(README).read()
    start = text.index("## Install in Kubernetes")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def blocks(lang):
    return re.findall(r"```%s\n(.*?)```" % lang, section(), re.S)


def test_readme_values_render_and_check(tmp_path):
    [values] = [b for b in blocks("yaml") if b.startswith("# lookout-values.yaml")]
    path = tmp_path / "lookout-values.yaml"
    path.write_text(values)
    objs = render([str(path)])
    kinds = sorted(o["kind"] for o in objs)
    assert kinds.count("ServiceMonitor") == 1 and "PrometheusRule" in kinds
    assert any("lookout.json" in o.get("data", {}) for o in find(objs, "ConfigMap"))
    assert container(objs)["image"].startswith("registry.example.org/lookout:")
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(config_text(objs))
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}"], check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert [t["name"] for t in yaml.safe_load(config_text(objs))["targets"]] == ["wiki", "postgres"]


def test_readme_commands_name_what_the_chart_creates():
    sh = "\n".join(blocks("sh"))
    m = re.search(r"helm upgrade --install (\S+) \./helm/lookout --namespace (\S+) ", sh)
    assert m and (m.group(1), m.group(2)) == (RELEASE, NAMESPACE), "tests render the release README installs"
    objs = render()
    assert f"deploy/{one(objs, 'Deployment')['metadata']['name']}" in sh
    assert f"svc/{one(objs, 'Service')['metadata']['name']} 9115:9115" in sh
    # The buildah command is the one tests/deploy/test_image.py runs: context = the parent of rootfs/.
    assert "scripts/build-static --rootfs target/image/rootfs" in sh
    assert "buildah bud --target prebuilt -f Dockerfile -t registry.example.org/lookout:0.1.0 target/image" in sh
    chart_version = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))["appVersion"]
    assert f"lookout:{chart_version}" in sh
