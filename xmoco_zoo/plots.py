"""Plots (matplotlib PNG) from what runs and evaluations already write: no number is computed here.

- :func:`plot_training`: a pretraining or evaluation run's ``metrics.csv`` -> every logged series: each loss
  term, the lr and momentum schedules, the kNN monitor per epoch (with the stored baselines as horizontal
  lines), accuracy, the regularizers' statistics and throughput.
- :func:`plot_comparison`: several models' ``results/*.json`` -> one bar per model for each
  protocol/dataset/split, with each result's baselines (raw-pixel floor, random init, from scratch) drawn.
- :func:`plot_zoo`: the published models' kNN and linear top-1 against their training minutes (the index rows of
  :mod:`xmoco_zoo.zoo`), a line per family, beside another library's curve read from a file.

    xmoco-zoo plot curves runs/mocov2_fmnist                 # -> runs/mocov2_fmnist/training_curves.png
    xmoco-zoo plot compare hub/*/ --out docs/comparison.png
    xmoco-zoo plot zoo --out docs/images/zoo_accuracy_vs_minutes.png [--reference curve.json]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputNotFoundError, MissingExtraError, UserError
from .logging import read_metrics
from .results import DATASET_NAMES, EvalRecord, read_results


class PlotError(UserError, ValueError):
    """Nothing to plot: a run without logged series, or models without stored results."""


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - the plots extra is part of the test install
        raise MissingExtraError("plots need matplotlib: pip install 'xmoco-zoo[plots]'") from e
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _metrics_file(run: Path) -> Path:
    path = run / "metrics.csv" if run.is_dir() else run
    if not path.is_file():
        raise InputNotFoundError(
            f"{path}: no metrics.csv. Pass a run folder written by `xmoco-zoo pretrain` or `xmoco-zoo eval` "
            "(train.output_dir / run.output_dir), or the metrics.csv itself"
        )
    return path


def plot_training(run: str | Path, out: str | Path | None = None) -> tuple[Path, list[str]]:
    """Training curves of a run; returns the PNG's path and the metric keys drawn.

    Panels: every ``train/loss*`` term (one panel each: their scales differ), ``train/lr`` and
    ``train/momentum``, every ``eval/*`` series (kNN per epoch; fine-tuning top-1) with the baselines
    stored in the run's checkpoint results drawn as dashed lines, then every other series (``train/acc1``,
    a regularizer's statistics, ``perf/images_per_s``), grouped by family (see :func:`_diagnostic_panels`).
    """
    plt = _pyplot()
    run = Path(run)
    series = read_metrics(_metrics_file(run))
    run_dir = run if run.is_dir() else run.parent
    losses = sorted(k for k in series if k.startswith("train/loss"))
    losses = [k for k in losses if k == "train/loss"] + [k for k in losses if k != "train/loss"]
    panels: list[list[str]] = [[k] for k in losses]
    panels += [[k] for k in ("train/lr", "train/momentum") if k in series]
    panels += [[k] for k in sorted(series) if k.startswith("eval/") and "/baseline/" not in k]
    panels += _diagnostic_panels(series)
    if not panels:
        raise PlotError(
            f"{run}: metrics.csv has no train/ or eval/ series to plot; pass a run that has trained a step"
        )
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    baselines = _run_baselines(run_dir)
    for ax, keys in zip(axes.flat, panels):
        for k in keys:
            steps, values = zip(*series[k])
            marker = "o" if len(steps) < 40 else None
            ax.plot(steps, values, marker=marker, ms=3, lw=1.2, label=k)
            if k == "eval/knn_top1":
                for i, (name, v) in enumerate(sorted(baselines.items())):
                    ax.axhline(v, ls="--", lw=1, color=f"C{i + 1}", label=f"{name}: {v:.2f}")
                ax.legend(fontsize=6, loc="lower right")
        if len(keys) > 1:
            ax.legend(fontsize=6)
        ax.set_title((keys[0] if len(keys) == 1 else _family(keys[0])).split("/", 1)[-1], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"{run_dir.name}: every logged term (metrics.csv)", fontsize=10)
    fig.tight_layout()
    out = Path(out) if out else run_dir / "training_curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, [k for p in panels for k in p]


def _family(key: str) -> str:
    """A series' family: the key without its ``_mean/_min/_max`` and ``_pos/_neg`` parts (``amcl_sim`` for
    amcl_sim_pos and amcl_sim_neg)."""
    return re.sub(r"_(pos|neg)(?=_|$)", "", re.sub(r"_(mean|min|max)$", "", key))


def _diagnostic_panels(series: dict) -> list[list[str]]:
    """Every other logged series (accuracy, a regularizer's statistics, throughput), one panel per family: the
    ``_mean/_min/_max`` of one quantity and its ``_pos/_neg`` sides share a panel (e.g. AMCL's
    ``amcl_sim_pos``/``amcl_sim_neg``, and its six ``amcl_tau_{pos,neg}_{mean,min,max}``)."""
    skip = {"train/lr", "train/momentum", "train/epoch"}
    groups: dict[str, list[str]] = {}
    for k in sorted(series):
        if k in skip or k.startswith(("train/loss", "eval/")) or "/baseline/" in k:
            continue
        groups.setdefault(_family(k), []).append(k)
    return list(groups.values())


def _run_baselines(run_dir: Path) -> dict[str, float]:
    """The kNN baselines stored with a run (its export's or newest checkpoint's results), if any."""
    for folder in [run_dir / "backbone", *sorted((run_dir / "checkpoints").glob("epoch_*"), reverse=True)]:
        for r in read_results(folder) if folder.is_dir() else []:
            if r.protocol == "knn" and r.baselines:
                return dict(r.baselines)
    return {}


def _baseline_lines(rows: Sequence[tuple[str, EvalRecord]]) -> dict[str, float]:
    """The dashed lines of one bar chart: each baseline once. A baseline whose value differs between the models
    (a from-scratch or random-init baseline of different architectures: a ViT's and a ResNet's) gets a line per
    value, labelled with the models it belongs to."""
    values: dict[str, dict[float, list[str]]] = {}
    for name, r in rows:
        for b, v in r.baselines.items():
            values.setdefault(b, {}).setdefault(v, []).append(name)
    lines: dict[str, float] = {}
    for b, by_value in values.items():
        for v, owners in by_value.items():
            lines[b if len(by_value) == 1 else f"{b} ({', '.join(owners)})"] = v
    return lines


def plot_comparison(
    folders: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None
) -> tuple[Path, list[EvalRecord]]:
    """One bar chart per (protocol, dataset, split) over the models in ``folders`` (exports, hub/ repos or
    checkpoints), from their stored results; the baselines of each result are dashed lines. Returns the PNG
    and the records drawn."""
    plt = _pyplot()
    folders = [Path(f) for f in folders]
    names = list(names) if names else [f.name for f in folders]
    table: dict[tuple[str, str, str], list[tuple[str, EvalRecord]]] = {}
    for name, folder in zip(names, folders):
        for r in read_results(folder):
            table.setdefault((r.protocol, r.dataset, r.split), []).append((name, r))
    if not table:
        raise PlotError(
            f"no results/*.json in {[str(f) for f in folders]}: evaluate them first (xmoco-zoo eval ...)"
        )
    keys = sorted(table)
    colour = {n: f"C{i}" for i, n in enumerate(names)}
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(max(4.0, 1.1 * max(len(v) for v in table.values()) + 2) * len(keys), 4.4),
        squeeze=False,
    )
    drawn: list[EvalRecord] = []
    for ax, key in zip(axes.flat, keys):
        rows = table[key]
        values = [r.value for _, r in rows]
        bars = ax.bar(
            range(len(rows)), values, color=[colour[n] for n, _ in rows]
        )  # a model keeps its colour
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
        seen = _baseline_lines(rows)
        for i, (b, v) in enumerate(sorted(seen.items())):
            ax.axhline(
                v, ls="--", lw=1, color="0.3" if i == 0 else f"C{len(rows) + i}", label=f"{b}: {v:.2f}"
            )
        low = min([*values, *seen.values()])
        ax.set_ylim(max(0.0, low - 5), min(100.0, max([*values, *seen.values()]) + 3))
        ax.set_xticks(range(len(rows)), [n for n, _ in rows], rotation=20, ha="right", fontsize=7)
        protocol, dataset, split = key
        ax.set_title(f"{protocol} - {DATASET_NAMES.get(dataset, dataset)} {split}", fontsize=9)
        ax.set_ylabel(f"{rows[0][1].metric} ({rows[0][1].unit})", fontsize=8)
        if seen:  # under the axes: bars fill the chart's lower part
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
        ax.grid(axis="y", alpha=0.3)
        drawn += [r for _, r in rows]
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, drawn


def plot_zoo(
    hub_dir: str | Path, out: str | Path, reference: str | Path | None = None
) -> tuple[Path, list[str], list[str]]:
    """The published models' kNN (left) and linear probe (right) top-1 against their training minutes: a marker
    per model, labelled, a line per family, and ``reference`` (another library's curve, read by
    :func:`xmoco_zoo.zoo.read_reference_curve`) dashed. Models without training minutes are left out and named
    under the plot. The minutes are on the reference machine's scale when every run (and the reference) records its
    machine's speed (:func:`xmoco_zoo.zoo.on_one_scale`), as measured otherwise. Returns the PNG, the models drawn and those left out for want of minutes."""
    from .zoo import eval_text, index_rows, on_one_scale, read_reference_curve

    rows = index_rows(hub_dir)
    curve = read_reference_curve(reference) if reference is not None else None
    # machines of different speeds on one scale: the reference machine's, where every run measured its speed
    rows, curve, scale = on_one_scale(rows, curve)
    timed = [r for r in rows if r.train_minutes is not None and ("knn" in r.top1 or "linear" in r.top1)]
    skipped = [r.model for r in rows if r.train_minutes is None]
    unmeasured = [r.model for r in rows if r.train_minutes is not None and r not in timed]
    if not timed and not (curve and curve.points):
        raise PlotError(
            f"nothing to plot: no model in {hub_dir} records its training minutes (xmoco_zoo.training.train_minutes, "
            "written by runs from 2026-12-02 on)" + (f" and {curve.path} has no points" if curve else "")
        )
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), squeeze=False)
    # a colour per family, a marker per backbone: a line joins the models of one family on one backbone only
    families = sorted({r.family for r in timed})
    backbones = sorted({r.backbone for r in timed})
    markers = dict(zip(backbones, "o^sDvP*X" * (1 + len(backbones) // 8)))
    labels: list[list[tuple[float, float, str]]] = []
    for ax, (protocol, title) in zip(axes.flat, (("knn", "weighted kNN"), ("linear", "linear probe"))):
        named: list[tuple[float, float, str]] = []
        for i, family in enumerate(families):
            for backbone in backbones:
                pts = sorted(
                    (r.train_minutes, r.top1[protocol], r.model)
                    for r in timed
                    if r.family == family and r.backbone == backbone and protocol in r.top1
                )
                if not pts:
                    continue
                x, y, _ = zip(*pts)
                label = family if len(backbones) == 1 else f"{family}, {backbone}"
                ax.plot(x, y, marker=markers[backbone], ms=5, lw=1.2, color=f"C{i}", label=label)
                # each model's kNN monitor during its training, thin, in its family's colour
                if protocol == "knn":
                    for r in timed:
                        if r.family == family and r.backbone == backbone and r.knn_curve:
                            cx, cy = zip(*r.knn_curve)
                            ax.plot(cx, cy, lw=0.8, alpha=0.5, color=f"C{i}", marker=".", ms=3)
                named += pts
        labels.append(named)
        if curve is not None:
            ref = [(p["minutes"], p[protocol]) for p in curve.points if p.get(protocol) is not None]
            if ref:
                x, y = zip(*ref)
                ax.plot(x, y, ls="--", marker="s", ms=4, lw=1.2, color="0.35", label=curve.label)
            else:
                ax.plot([], [], ls="--", color="0.35", label=f"{curve.label}: no {title} points")
        ax.margins(x=0.15, y=0.1)  # room for the labels
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(f"training minutes (the epochs' wall clock) {scale.split(' (')[0]}", fontsize=8)
        ax.set_ylabel("top-1 (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    evals = sorted({r.eval for r in timed if r.eval})
    machines = sorted(
        {r.machine for r in timed if r.machine} | ({curve.machine} if curve and curve.machine else set())
    )
    title = "accuracy against training minutes" + (f" ({'; '.join(map(eval_text, evals))})" if evals else "")
    title += "" if curve is not None else "; no reference curve"
    if machines:
        title += "\n" + "; ".join(machines)
    fig.suptitle(title, fontsize=9)
    # one legend for both panels, under them: inside the axes it covered the models' points
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(text, handle)
    rows_of_legend = -(-len(legend) // 3)
    notes = [f"{name} (no training minutes recorded)" for name in skipped]
    notes += [f"{name} (no kNN or linear result)" for name in unmeasured]
    if legend:
        fig.legend(list(legend.values()), list(legend), fontsize=6, loc="lower center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 0.03 if notes else 0.0))  # fmt: skip
    if notes:
        fig.text(0.01, 0.005, "not drawn: " + ", ".join(notes), fontsize=6)
    bottom = (0.035 * rows_of_legend + 0.02 if legend else 0) + (0.03 if notes else 0)
    fig.set_size_inches(11, 4.4 / (1 - bottom))  # the panels keep their size
    fig.tight_layout(rect=(0, bottom, 1, 1))
    for ax, named in zip(axes.flat, labels):  # once the axes have their final size
        label_apart(ax, named)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out, [r.model for r in timed], skipped


def label_apart(ax, points: list[tuple[float, float, str]], fontsize: float = 6) -> list[float]:
    """Write each point's name to its right (to its left where the axes end), moved down where it would overlap a label above it (and joined to its
    point by a thin line when moved). Returns each label's vertical offset in points, in the order given."""
    # the data limits brought up to date (autoscaling is lazy) before any transform
    ax.get_xlim(), ax.get_ylim()
    to_px = ax.figure.dpi / 72  # display pixels per typographic point
    line = 1.3 * fontsize * to_px
    placed: list[tuple[float, float, float]] = []  # each placed label's left, right and baseline, in pixels
    offsets = [0.0] * len(points)
    for k in sorted(range(len(points)), key=lambda k: -points[k][1]):  # from the top down
        x, y, name = points[k]
        px, py = ax.transData.transform((x, y))
        width = 0.6 * fontsize * to_px * len(name)
        side = 1 if px + 4 * to_px + width <= ax.bbox.x1 else -1  # to the left where the axes end
        left, right = sorted((px + side * 4 * to_px, px + side * (4 * to_px + width)))
        ly = py
        for a, b, cy in sorted(placed, key=lambda t: -t[2]):  # labels above first
            if a < right and left < b and cy - line < ly < cy + line:
                ly = cy - line
        placed.append((left, right, ly))
        offsets[k] = (ly - py) / to_px
        moved = offsets[k] < -0.5
        ax.annotate(
            name,
            (x, y),
            xytext=(side * 4, 4 + offsets[k]),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.5"} if moved else None,
        )
    return offsets
