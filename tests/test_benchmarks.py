"""The benchmark scripts run and report what docs/performance.md quotes (tiny settings; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT

TINY = ["--backbone", "test_resnet", "--image-size", "16", "--batch", "16", "--queue", "64", "--threads", "1"]


def _run(script: str, *args: str, tmp_path) -> dict:
    out = tmp_path / f"{script}.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _positive(d: dict) -> bool:
    return all(v > 0 for v in d.values())


def test_step_overhead_reports_every_lever_against_both_limits(tmp_path):
    r = _run("step_overhead", *TINY, "--levers", "--rounds", "1", "--warmup", "0", tmp_path=tmp_path)
    assert {
        "backbone_limit",
        "limit_with_updates",
        "backbone_limit_nchw",
        "mocov2",
        "mocov2_plain_bn",
        "mocov2_unfused_opt",
        "mocov2_nchw",
    } <= set(r["median_step_s"])
    assert _positive(r["median_step_s"]) and set(r["ratio_to_limit_with_updates"]) >= {
        "mocov2",
        "mocov2_nchw",
    }


def test_regularizer_overhead_and_split_bn_and_augment_run(tmp_path):
    r = _run("regularizer_overhead", *TINY, "--rounds", "1", "--warmup", "0", tmp_path=tmp_path)
    assert set(r["ratios"]) == {"co2/mocov2", "xmoco/mocov2_symmetric", "xmoco/mocov2", "amcl/mocov2"}
    r = _run(
        "split_bn",
        "--backbone",
        "test_resnet",
        "--batch",
        "16",
        "--image-size",
        "16",
        "--splits",
        "4",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--threads",
        "1",
        tmp_path=tmp_path,
    )
    assert len(r["ratio_to_plain"]) == 8 and r["ratio_to_plain"]["plain fwd+bwd"] == 1.0
    r = _run("augment", "--batch", "8", "--rounds", "1", "--threads", "1", tmp_path=tmp_path)
    assert _positive(r["core_ms_per_image"]) and r["per_image_over_batched"] > 0


def test_scaling_reports_time_and_peak_memory_per_setting(tmp_path):
    r = _run(
        "scaling",
        *TINY,
        "--sweeps",
        "amcl_heads",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--mem-steps",
        "1",
        tmp_path=tmp_path,
    )
    rows = r["sweeps"]["amcl_heads"]
    assert [x["setting"] for x in rows] == ["mocov2", "amcl_h1", "amcl_h2", "amcl_h3", "amcl_h4"]
    assert all(x["step_s"] > 0 and x["peak_mb"] >= 0 for x in rows)


def test_vs_lightly_step_mode(tmp_path):
    pytest.importorskip(
        "lightly", reason="lightly is a benchmark-only dependency (pip install -e '.[bench]')"
    )
    r = _run("vs_lightly", *TINY, "--rounds", "1", "--warmup", "0", tmp_path=tmp_path)
    assert set(r["median_step_s"]) == {"ours", "ours_plain_bn", "lightly", "lightly_channels_last"}


def test_vs_lightly_curve_mode_writes_a_reference_curve_and_resumes_exactly(tmp_path):
    """Curve mode, stopped after epoch 1 of 2 and run again, writes the reference-curve JSON `xmoco-zoo plot zoo
    --reference` reads, and ends with the weights, memory bank and kNN of an uninterrupted run."""
    pytest.importorskip(
        "lightly", reason="lightly is a benchmark-only dependency (pip install -e '.[bench]')"
    )
    import torch

    from xmoco_zoo.zoo import read_reference_curve

    tiny = ["--mode", "curve", "--recipe", "lightly_cifar10", *TINY, "--max-images", "256", "--epochs", "2"]
    tiny += ["--lightly-workers", "1"]

    def curve(name: str, *extra: str) -> tuple[dict, Path]:
        out = tmp_path / name / "curve.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "vs_lightly.py"), *tiny, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text()), out

    first, _ = curve("stopped", "--stop-after-epoch", "1")
    assert [p["epochs"] for p in first["points"]] == [1]
    resumed, out = curve("stopped")
    whole, whole_out = curve("whole")

    points = resumed["points"]
    assert [p["epochs"] for p in points] == [1, 2]
    assert 0 < points[0]["minutes"] < points[1]["minutes"]
    assert all(0 <= p["knn"] <= 100 and p["linear"] is None for p in points)
    assert points[0] == first["points"][0]
    assert resumed["label"].startswith("lightly ") and "test_resnet 16 px" in resumed["label"]
    assert resumed["machine"] and "--stop-after-epoch" not in resumed["command"]
    assert resumed["command"].startswith("python benchmarks/vs_lightly.py --mode curve")
    ref = read_reference_curve(out)
    assert [p["epochs"] for p in ref.points] == [1.0, 2.0] and ref.command == resumed["command"]

    assert [(p["knn"], p["loss"]) for p in points] == [(p["knn"], p["loss"]) for p in whole["points"]]
    a, b = (torch.load(o.with_name("curve.checkpoint.pt"), weights_only=True) for o in (out, whole_out))
    for part in ("model", "memory_bank"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_step_parts_times_each_part_and_the_three_sgd_kernels(tmp_path):
    r = _run("step_parts", *TINY, "--bn-splits", "4", "--rounds", "1", tmp_path=tmp_path)
    assert {"mocov2: EMA update", "mocov2: optimizer step", "limit: key forward", "mocov2: total"} <= set(
        r["median_ms"]
    )
    assert set(r["sgd_step_ms"]) == {"for-loop (torch's CPU default)", "foreach", "fused"}
    assert set(r["queue_copy_ms"]) == {"queue 64 x 128", "queue 65536 x 128"}


def test_split_bn_candidate_matches_ours():
    """The benchmark's one-reduction split BN computes what SplitBatchNorm2d does: output, gradients, stats."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from split_bn import GroupStatsSplitBN

    from xmoco_zoo.momentum import SplitBatchNorm2d

    torch.manual_seed(0)
    a, b = SplitBatchNorm2d(6, 4).double(), GroupStatsSplitBN(6, 4).double()
    with torch.no_grad():
        for m in (a, b):
            m.weight.copy_(torch.linspace(0.5, 1.5, 6))
            m.bias.copy_(torch.linspace(-1, 1, 6))
    x = (torch.randn(16, 6, 3, 5, dtype=torch.double) * 3 + 1).contiguous(memory_format=torch.channels_last)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    torch.testing.assert_close(yb, ya)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad)
    torch.testing.assert_close(b.weight.grad, a.weight.grad)
    torch.testing.assert_close(b.bias.grad, a.bias.grad)
    torch.testing.assert_close(b.running_mean, a.running_mean)
    torch.testing.assert_close(b.running_var, a.running_var)


def test_cell_cost_merge_updates_only_the_timed_cells(tmp_path, monkeypatch):
    """``--cells amcl --merge`` re-times one cell against MoCo v2 and keeps every other cell's measured ratio."""
    from .conftest import TINY

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cell_cost

    table = {
        "mocov2": ("recipes/configs/mocov2_fmnist.yaml", list(TINY)),
        "amcl": ("recipes/configs/amcl_fmnist.yaml", list(TINY)),
    }
    monkeypatch.setattr(cell_cost, "cells", lambda: table)
    out = tmp_path / "cell_cost.json"
    kept = {"mocov2": 1.0, "xmoco": 2.04}
    out.write_text(json.dumps({"machine": "m", "setting": "s", "median_step_s": {"mocov2": 0.25, "xmoco": 0.52},
                               "ratio_to_mocov2": dict(kept), "equal_time_epochs": {"mocov2": 6, "xmoco": 3}}))  # fmt: skip
    args = ["--threads", "1", "--rounds", "1", "--warmup", "0", "--cells", "amcl", "--json", str(out)]
    cell_cost.main([*args, "--merge"])
    r = json.loads(out.read_text())
    assert r["ratio_to_mocov2"]["xmoco"] == kept["xmoco"] and r["equal_time_epochs"]["xmoco"] == 3
    ratio = r["ratio_to_mocov2"]["amcl"]
    assert ratio > 0 and r["equal_time_epochs"]["amcl"] == max(1, round(6 / ratio))
    assert r["ratio_to_mocov2"]["mocov2"] == 1.0 and r["median_step_s"] == {"mocov2": 0.25, "xmoco": 0.52}
    [update] = r["updates"]
    assert set(update["median_step_s"]) == {"mocov2", "amcl"}
    with pytest.raises(SystemExit, match="--merge"):
        cell_cost.main([*args[:-4], "--json", str(out), "--merge"])  # no --cells


def test_cell_cost_times_a_table_of_runs_against_its_baseline(tmp_path):
    """``--table`` (the zoo's models on their own setting): ratios to ``--baseline``, whatever the names."""
    from .conftest import TINY

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cell_cost

    table = tmp_path / "table.json"
    table.write_text(json.dumps({"mocov2-x": ["recipes/configs/mocov2_fmnist.yaml", list(TINY)],
                                 "co2-x": ["recipes/configs/co2_fmnist.yaml", list(TINY)]}))  # fmt: skip
    out = tmp_path / "cost.json"
    args = ["--threads", "1", "--rounds", "1", "--warmup", "0", "--table", str(table), "--json", str(out)]
    cell_cost.main([*args, "--baseline", "mocov2-x"])
    r = json.loads(out.read_text())
    assert r["baseline"] == "mocov2-x" and r["ratio_to_mocov2"]["mocov2-x"] == 1.0
    assert r["ratio_to_mocov2"]["co2-x"] > 0 and table.name in r["setting"]
    with pytest.raises(SystemExit, match="baseline 'mocov2' is not among"):
        cell_cost.main(args)


def test_cell_cost_times_the_loops_step_with_a_fresh_batch_each_time(tmp_path, monkeypatch):
    """Every timed step loads the next batch from the run's own loader (equal time is equal wall-clock: loading
    is part of a step), ``--steps`` consecutive steps of a cell per round."""
    from .conftest import TINY

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import cell_cost

    table = {"mocov2": ("recipes/configs/mocov2_fmnist.yaml", list(TINY))}
    monkeypatch.setattr(cell_cost, "cells", lambda: table)
    seen = []
    monkeypatch.setattr(cell_cost, "train_step", lambda run, images, labels: seen.append(images))
    cell_cost.main(["--threads", "1", "--rounds", "2", "--warmup", "1", "--steps", "3"])
    assert len(seen) == (1 + 2) * 3
    assert all(x.dtype == torch.uint8 for x in seen)  # the loader's raw batches (aug.batched)
    assert not any(torch.equal(seen[i], seen[i + 1]) for i in range(len(seen) - 1))  # each step its own batch
