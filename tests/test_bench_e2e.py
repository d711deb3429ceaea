"""benchmarks/bench_e2e.py --smoke (CPU, tiny sizes): the JSON's structure and the counts check."""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_e2e import LAYER_SETS, VARIANTS  # noqa: E402


def test_smoke_run_writes_every_variant_and_a_passing_counts_check(tmp_path):
    out = tmp_path / "e2e.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run(
        [sys.executable, "-W", "ignore", str(ROOT / "benchmarks" / "bench_e2e.py"), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["done"] is True and doc["machine"]
    rows = doc["rows"]
    seen = {(r["variant"], r["layers"]) for r in rows}
    expected = {("none", "-")} | {(v, s) for v in VARIANTS if v != "none" for s in LAYER_SETS}
    assert seen == expected
    for r in rows:
        assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0 and r["steps_timed"] >= 3
        assert math.isfinite(r["overhead_pct"])
    for r in rows:
        if r["variant"] in ("exact", "warm"):
            assert r["error_rows"] == 0, r["errors"]
    checks = {c["layers"]: c["variants"] for c in doc["checks"]}
    assert set(checks) == set(LAYER_SETS)
    for layer_set, by_variant in checks.items():
        assert set(by_variant) == {"exact", "warm", "warm_fused"}
        for variant in ("exact", "warm"):
            c = by_variant[variant]
            assert c["error_rows"] == 0, (layer_set, variant, c)
            assert c["refreshed_compared"] > 0 and c["refreshed_mismatches"] == 0, (layer_set, variant, c)
            assert c["certified_mismatches"] == 0, (layer_set, variant, c)
