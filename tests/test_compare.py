"""The method comparison's queue and report (scripts/compare_methods.py): what it runs and how it summarises."""

import statistics
import sys

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import compare_methods  # noqa: E402
import compare_report  # noqa: E402


def test_queue_ids_are_unique_and_probes_never_touch_the_test_set():
    runs = compare_methods.queue()
    assert len({r.id for r in runs}) == len(runs)
    for r in runs:
        cmd = r.pretrain_command(compare_methods.RUNS_DIR / r.id)
        assert f"train.seed={r.seed}" in cmd
        assert ("data.holdout=10000" in cmd) == (r.kind == "val")
    tests = [r for r in runs if r.kind == "test"]
    assert {r.seed for r in tests} == set(compare_methods.SEEDS)


def test_table_reports_mean_and_sample_std_over_seeds_and_the_probes():
    records = [
        {"id": f"m-e6-s{s}", "cell": "m", "kind": "test", "seed": s, "knn": k, "linear": lin}
        for s, k, lin in [(0, 80.0, 83.0), (1, 79.0, 83.5), (2, 81.0, 84.0)]
    ] + [
        {"id": "m-val-e6-s0", "cell": "m", "kind": "val", "seed": 0, "knn": 77.5},
        {"id": "a-val-e6-s0", "cell": "a", "kind": "val", "seed": 0, "diverged": "step 3: loss = nan"},
    ]
    md = compare_report.table(records, ["m", "a"])
    sd = statistics.stdev([80.0, 79.0, 81.0])
    assert f"| m | 0, 1, 2 | 80.00 ± {sd:.2f} | 83.50 ± 0.50 |" in md
    assert "| m | 77.50 |" in md and "| a | diverged |" in md
