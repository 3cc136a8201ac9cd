"""The chart's values.schema.json knows exactly the probers the binary knows.

The binary's list comes from the binary itself: `--config.check` on a module with an unknown
prober answers "unknown prober … (expected http, tcp, … or redis)", a message built from the prober
table in src/probe.rs, so a prober added there and forgotten in the schema (or the reverse) fails
here."""
import json
import os
import re

from conftest import CHART, lookout_bin, run

UNKNOWN = "no-such-prober"


def binary_probers(tmp_path):
    cfg = tmp_path / "lookout.yml"
    cfg.write_text(f"modules:\n  m:\n    prober: {UNKNOWN}\n")
    p = run([lookout_bin(), "--config.check", f"--config.file={cfg}"], check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0, f"lookout --config.check accepted prober {UNKNOWN!r}:\n{out}"
    m = re.search(rf'unknown prober "{UNKNOWN}" \(expected ([a-z0-9, ]+)\)', out)
    assert m, f"no list of probers in lookout's answer:\n{out}"
    return re.split(r", | or ", m.group(1))


def schema_probers():
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    module = schema["properties"]["config"]["properties"]["modules"]["additionalProperties"]
    return module["properties"]["prober"]["enum"]


def test_schema_lists_exactly_the_binarys_probers(tmp_path):
    known = binary_probers(tmp_path)
    assert len(known) == len(set(known)) and len(known) >= 5, f"implausible list from lookout: {known}"
    listed = schema_probers()
    assert listed == known, (
        "helm/lookout/values.schema.json's prober enum differs from the probers lookout knows "
        f"(src/probe.rs's table, in its order):\n  schema: {listed}\n  binary: {known}"
    )
