"""emitted_metrics.txt, the list the rule pack and the dashboard are checked against, matches src/."""
import os
import re

from conftest import ROOT, load_emitted


def src_text():
    chunks = []
    for d, _, files in os.walk(os.path.join(ROOT, "src")):
        for f in files:
            if f.endswith(".rs"):
                chunks.append(open(os.path.join(d, f)).read())
    return "\n".join(chunks)


def test_every_listed_family_is_in_the_source():
    text = src_text()
    missing = [
        name
        for name, info in load_emitted().items()
        if info["kind"] != "scrape"  # up: Prometheus' own
        and re.search(r'"%s"' % re.escape(name), text) is None
    ]
    assert not missing, f"listed in emitted_metrics.txt but not a string in src/: {missing}"


def test_lookout_families_in_the_source_are_listed():
    # Every lookout_* / blackbox_* family the code names is in the list, so the list is complete
    # for lookout's own metrics.
    text = src_text()
    listed = set(load_emitted())
    in_src = set(re.findall(r'"((?:lookout|blackbox_exporter|blackbox_module)_[a-z_]+)"', text))
    assert in_src - listed == set(), f"families in src/ missing from emitted_metrics.txt: {sorted(in_src - listed)}"


def test_the_metric_check_reports_unknown_names_and_labels():
    from conftest import check_expr_metrics, recording_rules

    emitted, recorded = load_emitted(), recording_rules()
    assert check_expr_metrics('sum by (target) (probe_success{module="x"})', "ok", emitted, recorded) == []
    assert check_expr_metrics('lookout:module_max_age_seconds', "ok", emitted, recorded) == []
    [p] = check_expr_metrics("probe_http_status_codes == 200", "w", emitted, recorded)
    assert "probe_http_status_codes" in p
    [p] = check_expr_metrics('probe_http_duration_seconds{stage="tls"}', "w", emitted, recorded)
    assert "label stage" in p
    [p] = check_expr_metrics('sum by (reason) (lookout_probes_total)', "w", emitted, recorded)
    assert "label reason" in p
    [p] = check_expr_metrics('{__name__=~"probe_kafka_.*"}', "w", emitted, recorded)
    assert "matches no metric" in p
