"""The rule pack (config/rules): promtool's checks and unit tests, a unit test for every rule, and
only metrics and labels lookout emits."""
import glob
import os

import yaml

from conftest import RULES, check_expr_metrics, load_emitted, promtool, recording_rules, run

RULE_FILES = sorted(glob.glob(os.path.join(RULES, "*.rules.yml")))
TEST_FILES = sorted(glob.glob(os.path.join(RULES, "tests", "*.test.yml")))


def all_rules():
    for path in RULE_FILES:
        for group in yaml.safe_load(open(path))["groups"]:
            for rule in group["rules"]:
                yield os.path.basename(path), rule


def test_promtool_check_rules():
    out = run([promtool(), "check", "rules", *RULE_FILES])
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests():
    assert TEST_FILES, "no rule unit tests"
    run([promtool(), "test", "rules", *TEST_FILES])


def test_every_rule_has_a_unit_test():
    """Each alert is expected to fire in some test, and each recording rule is evaluated."""
    fired, evaluated = set(), set()
    for path in TEST_FILES:
        for t in yaml.safe_load(open(path))["tests"]:
            for a in t.get("alert_rule_test", []):
                if a.get("exp_alerts"):
                    fired.add(a["alertname"])
            for e in t.get("promql_expr_test", []):
                evaluated.add(e["expr"])
    missing = []
    for f, rule in all_rules():
        if "alert" in rule and rule["alert"] not in fired:
            missing.append(f"{f}: alert {rule['alert']} never fires in a unit test")
        if "record" in rule and not any(rule["record"] in e for e in evaluated):
            missing.append(f"{f}: recording rule {rule['record']} is never evaluated in a unit test")
    assert not missing, "\n".join(missing)


def test_rules_use_only_emitted_metrics_and_labels():
    emitted, recorded = load_emitted(), recording_rules()
    problems = []
    for f, rule in all_rules():
        name = rule.get("alert") or rule.get("record")
        problems += check_expr_metrics(rule["expr"], f"{f}: {name}", emitted, recorded)
    assert not problems, "\n".join(problems)


def test_alerts_have_severity_and_humanized_annotations():
    problems = []
    for f, rule in all_rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity must be critical, warning or info")
        ann = rule.get("annotations", {})
        if not {"summary", "description"} <= set(ann):
            problems.append(f"{name}: needs summary and description")
        text = " ".join(ann.values())
        if "$labels." not in text:
            problems.append(f"{name}: annotations should name the series ($labels)")
        if "$value" in text and "humanize" not in text:
            problems.append(f"{name}: $value must go through a humanize function")
    assert not problems, "\n".join(problems)


def test_the_unit_tests_can_fail(tmp_path):
    """A broken rule pack makes `promtool test rules` fail (guards against vacuous tests)."""
    broken = tmp_path / "rules"
    (broken / "tests").mkdir(parents=True)
    for path in RULE_FILES:
        text = open(path).read().replace("probe_success == 0", "probe_success == 2")
        (broken / os.path.basename(path)).write_text(text)
    for path in TEST_FILES:
        (broken / "tests" / os.path.basename(path)).write_text(open(path).read())
    p = run([promtool(), "test", "rules", *sorted(str(p) for p in (broken / "tests").glob("*.yml"))], check=False)
    assert p.returncode != 0
    assert "LookoutEndpointDown" in p.stdout + p.stderr
