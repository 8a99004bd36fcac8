"""The comparison's table and bar chart from its run records (``python scripts/compare_methods.py report``)."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

FLOOR = {"knn": 78.85, "linear": 83.62}  # raw pixels, L2-normalised, same protocols (docs/models.md)
BEGIN, END = "<!-- comparison table: begin -->", "<!-- comparison table: end -->"


def _position(order: list[str], cell: str) -> int:
    """A cell's place in the queue's order; a cell the queue no longer has (a record of an older queue) last."""
    return order.index(cell) if cell in order else len(order)


def _cells(records: list[dict], kind: str) -> dict[str, list[dict]]:
    cells: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r.get("kind") == kind:
            cells[r["cell"]].append(r)
    return cells


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _is_superseded(cell: str, order: list[str]) -> bool:
    """An equal-time cell the queue no longer has: its epochs came from an earlier measurement of the step costs
    (cell_cost.json), and the queue's current cell replaces it (its records stay, in the table only)."""
    return "@" in cell and bool(order) and cell not in order


def _superseded(cell: str, order: list[str]) -> str:
    """The cell's name as the table shows it, marked when it is superseded."""
    return f"{cell} (superseded)" if _is_superseded(cell, order) else cell


def table(records: list[dict], order: list[str]) -> str:
    """Markdown: one row per test cell (mean ± sample std over seeds), then the held-out probes."""
    lines = [
        "| method (cell) | seeds | kNN, test (mean ± std) | linear probe, test | kNN per seed | linear per seed |",
        "|---|---|---|---|---|---|",
    ]
    for cell, rs in sorted(_cells(records, "test").items(), key=lambda kv: _position(order, kv[0])):
        rs = sorted(rs, key=lambda r: r["seed"])
        knn, lin = [r["knn"] for r in rs], [r["linear"] for r in rs]
        lines.append(
            f"| {_superseded(cell, order)} | {', '.join(str(r['seed']) for r in rs)} | {_mean_std(knn)} | {_mean_std(lin)} | "
            f"{', '.join(f'{v:.2f}' for v in knn)} | {', '.join(f'{v:.2f}' for v in lin)} |"
        )
    lines.append(f"| raw pixels (the floor) | | {FLOOR['knn']:.2f} | {FLOOR['linear']:.2f} | | |")
    val = _cells(records, "val")
    if val:
        lines += [
            "",
            "Held-out probes (one seed; kNN on the 10k images held out of train; the best of each cell in bold):",
            "",
            "| cell | setting | epochs | kNN, held out | kNN after each epoch | run |",
            "|---|---|---|---|---|---|",
        ]
        for cell, rs in sorted(val.items(), key=lambda kv: _position(order, kv[0])):
            best = max((r["knn"] for r in rs if "diverged" not in r), default=None)
            for r in rs:
                if "diverged" in r:
                    result, curve = "diverged", ""
                else:
                    result = f"**{r['knn']:.2f}**" if r["knn"] == best and len(rs) > 1 else f"{r['knn']:.2f}"
                    curve = ", ".join(f"{v:.2f}" for v in r.get("knn_curve", []))
                setting = r.get("setting", "")
                lines.append(
                    f"| {cell} | {setting} | {r.get('epochs', '')} | {result} | {curve} | `{r['id']}` |"
                )
    return "\n".join(lines)


COMMANDS = "<!-- cell commands: begin -->", "<!-- cell commands: end -->"


def _settings(command: str) -> str:
    """A record's pretraining command as a user types it: ``recipes/pretrain.py --config ...`` and the overrides,
    without the launcher's flags and the per-run seed and output directory."""
    args = command.split()
    start = next((i for i, a in enumerate(args) if a.endswith("recipes/pretrain.py")), 0)
    kept = [a for a in args[start:] if not a.startswith(("train.seed=", "train.output_dir="))]
    return " ".join(["recipes/pretrain.py", *kept[1:]])


def commands(records: list[dict], order: list[str]) -> str:
    """Markdown: how each test cell trains (the same command for every seed but ``train.seed``), with its mean
    training minutes, so a user can train any cell, the tuned ones included, without reading the queue."""
    lines = ["| cell | train with (`accelerate launch ...` or `python ...`; add `train.seed=S`) | training minutes |",
             "|---|---|---|"]  # fmt: skip
    for cell, rs in sorted(_cells(records, "test").items(), key=lambda kv: _position(order, kv[0])):
        said = {_settings(r["pretrain_command"]) for r in rs if r.get("pretrain_command")}
        if not said:
            continue
        if len(said) > 1:  # the seeds of one cell must share their settings; say so rather than pick one
            raise ValueError(f"cell {cell}: its seeds were trained with different settings: {sorted(said)}")
        minutes = [r["train_minutes"] for r in rs if r.get("train_minutes") is not None]
        spent = f"{statistics.mean(minutes):.1f}" if minutes else ""
        lines.append(f"| {cell} | `{said.pop()}` | {spent} |")
    return "\n".join(lines)


VERDICTS = "<!-- verdicts: begin -->", "<!-- verdicts: end -->"
GOAL = 1.0  # issue 14's bar: a regularizer beats its base by at least this many kNN points (mean of 3 seeds)
REFERENCE_EPOCHS = 6  # the equal-epochs budget (compare_methods.REFERENCE_EPOCHS)
REGULARIZERS = (
    "co2",
    "xmoco",
    "amcl",
)  # the cells the goal is for (AMCL's forms included); not MoCo v3 or a base


def _stats(rs: list[dict], key: str) -> tuple[float, float, int]:
    values = [r[key] for r in rs if r.get(key) is not None]
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return (statistics.mean(values) if values else float("nan")), sd, len(values)


def verdict(cell: str, base: str, cells: dict[str, list[dict]], key: str = "knn", goal: bool = True) -> str:
    """One comparison of two test cells on ``key``: the difference of the means, each mean ± std, and whether the
    difference is larger than both cells' spread over seeds (beyond seed noise) and, against a cell's own base
    (``goal``), reaches ``GOAL``."""
    (m, sd, n), (mb, sdb, nb) = _stats(cells[cell], key), _stats(cells[base], key)
    d = round(m - mb, 2) + 0.0  # no -0.00
    seeds = f" ({n} and {nb} seeds so far)" if min(n, nb) < 3 else ""
    if n < 2 or nb < 2:
        return f"{d:+.2f} ({m:.2f} against {mb:.2f}){seeds}: too few seeds to tell"
    spread = max(sd, sdb)
    if abs(d) <= spread:
        call = f"within the seeds' spread ({spread:.2f})"
    else:
        call = f"{'better' if d > 0 else 'worse'} beyond the seeds' spread ({spread:.2f})"
        if d > 0 and key == "knn" and goal:
            call += f", {'reaching' if d >= GOAL else 'short of'} the {GOAL:g}-point goal"
    return f"{d:+.2f} ({m:.2f} ± {sd:.2f} against {mb:.2f} ± {sdb:.2f}){seeds}: {call}"


def verdicts(records: list[dict], bases: dict[str, list[str]], order: list[str]) -> str:
    """A line per reported cell against each of its bases (``compare_methods.bases``): kNN and linear probe."""
    cells = _cells(records, "test")
    lines = []
    for cell in sorted(cells, key=lambda c: _position(order, c)):
        for base in bases.get(cell, []):
            if base not in cells:
                continue
            role = "its base" if base == bases[cell][0] else "the best MoCo v2"
            if base == "mocov2" and base != bases[cell][0]:
                role = "MoCo v2 at its defaults"
            elif base != bases[cell][0] and not base.startswith("mocov2"):
                role = "the method it takes apart"
            if "@" in cell:
                role = "the best MoCo v2 in the same training minutes"
            lines.append(
                f"- `{cell}` against `{base}` ({role}): kNN {verdict(cell, base, cells, goal=role == 'its base' and cell.split('_')[0] in REGULARIZERS)}; "
                f"linear {verdict(cell, base, cells, 'linear')}."
            )
    return "\n".join(lines)


SENTENCES = "<!-- in one sentence: begin -->", "<!-- in one sentence: end -->"
TITLES = {  # the cells the page sums up, in this order, with their readable names
    "co2": "CO2",
    "xmoco": "XMoCo",
    "amcl": "AMCL (posterior form, tuned)",
    "amcl_authors": "AMCL as its authors compute it",
    "amcl_likelihood": "AMCL, likelihood form",
    "mocov3": "MoCo v3",
    "mocov2_sym": "Symmetric MoCo v2",
    "mocov2_sym_tuned": "Symmetric MoCo v2 at the tuned temperature",
    "mocov2_tuned": "MoCo v2 at the tuned temperature",
    "mocov2_tuned_top100": "MoCo v2 at the tuned temperature over its 100 hardest negatives (AMCL without its heads)",
}


def _gap(cell: str, base: str, cells: dict[str, list[dict]], key: str) -> tuple[float, float, str] | None:
    """(difference of the means, the larger spread, 'beats'/'loses to'/'ties with') of two complete cells."""
    (m, sd, n), (mb, sdb, nb) = _stats(cells.get(cell, []), key), _stats(cells.get(base, []), key)
    if n < 3 or nb < 3:
        return None
    d, spread = round(m - mb, 2) + 0.0, max(sd, sdb)
    word = "ties with" if abs(d) <= spread else ("beats" if d > 0 else "loses to")
    return d, spread, word


def _against(gap: tuple[float, float, str]) -> str:
    """'beats it by 1.20 kNN points', 'loses to it by 0.80 kNN points', 'ties with it (-0.37 kNN points)'."""
    d, _, word = gap
    return (
        f"ties with it ({d:+.2f} kNN points)"
        if word == "ties with"
        else f"{word} it by {abs(d):.2f} kNN points"
    )


def sentences(records: list[dict], bases: dict[str, list[str]], cost: dict | None = None) -> str:
    """One plain sentence per method (``TITLES``): at equal epochs, does it beat its own base beyond the seeds'
    spread, and by how much (kNN, then the linear probe); at equal training time, against the best MoCo v2 in
    the same minutes; for a regularizer, whether it reaches the 1-point goal. Cells still running say so.
    ``cost``: benchmarks/cell_cost.py's measurement (cell_cost.json), which says which cells' 6 epochs already
    take MoCo v2's minutes (their equal-epoch verdict is also their equal-time one)."""
    own_time = {
        c: (cost or {}).get("ratio_to_mocov2", {}).get(c)
        for c, e in (cost or {}).get("equal_time_epochs", {}).items()
        if e == REFERENCE_EPOCHS
    }
    cells = _cells(records, "test")
    lines = []
    for cell, title in TITLES.items():
        if cell not in bases:
            continue
        base = bases[cell][0]
        knn, lin = _gap(cell, base, cells, "knn"), _gap(cell, base, cells, "linear")
        if knn is None or lin is None:
            have = len(cells.get(cell, [])), len(cells.get(base, []))
            lines.append(
                f"- **{title}**: not measured yet ({have[0]} of 3 seeds; its base `{base}`: {have[1]})."
            )
            continue
        d, spread, word = knn
        text = (
            f"- **{title}** {word} its base (`{base}`) at equal epochs: kNN {d:+.2f} points "
            f"({'beyond' if word != 'ties with' else 'within'} the seeds' spread of {spread:.2f}), linear probe "
            f"{lin[0]:+.2f} ({'beyond' if lin[2] != 'ties with' else 'within'} {lin[1]:.2f})"
        )
        if cell.split("_")[0] in REGULARIZERS:
            reached = word == "beats" and d >= GOAL
            text += f"; {'it reaches' if reached else 'short of'} the papers' {GOAL:g}-point goal"
        best = (
            "mocov2_tuned" if "mocov2_tuned" in bases[cell][1:] else None
        )  # the best MoCo v2, if not its base
        other = _gap(cell, best, cells, "knn") if best else None
        if other is not None:  # a base that is not the best MoCo v2: say how it fares against that one too
            text += f"; against the best MoCo v2 (`{best}`) it {_against(other)}"
        for ablated in (b for b in bases[cell][1:] if not b.startswith("mocov2")):  # an ablation's method
            gap = _gap(cell, ablated, cells, "knn")
            if gap is not None:
                text += f"; against {TITLES.get(ablated, ablated)} (`{ablated}`) it {_against(gap)}"
        mean_knn = _stats(cells[cell], "knn")[0]
        if mean_knn < FLOOR["knn"]:  # compare_methods.learned_nothing: no equal-time cell
            text += (
                f"; below raw pixels ({mean_knn:.2f} against {FLOOR['knn']:.2f} kNN), it learned nothing, so it "
                "gets no equal-time cell"
            )
        elif own_time.get(cell):
            text += (
                f"; its step costs {own_time[cell]:.2f}x MoCo v2's, so its {REFERENCE_EPOCHS} epochs also take MoCo "
                "v2's minutes: the same verdict per minute"
            )
        # the equal-time cell the queue has now (a cell timed by an earlier cost measurement is superseded)
        timed = next((c for c in bases if c.startswith(f"{cell}@")), None)
        if timed:
            t = _gap(timed, bases[timed][0], cells, "knn")
            epochs = timed.split("@", 1)[1]
            if t is None:
                text += f"; in the same training minutes ({epochs}): not measured yet"
            else:
                text += (
                    f"; in the same training minutes ({epochs} against `{bases[timed][0]}`'s 6 epochs) it "
                    f"{_against(t)}"
                )
        lines.append(text + ".")
    return "\n".join(lines)


def _between(text: str, markers: tuple[str, str], body: str) -> str:
    begin, end = markers
    if begin not in text:
        return text
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]


CHART_ORDER = [  # the chart's rows, top to bottom: the bases, then the methods
    "mocov2",
    "mocov2_tuned",
    "mocov2_sym",
    "mocov2_sym_tuned",
    "mocov3",
    "co2",
    "xmoco",
    "amcl",
    "mocov2_tuned_top100",
    "amcl_authors",
    "amcl_likelihood",
]


def bar_chart(records: list[dict], order: list[str], out: Path) -> None:
    """Horizontal bars, one row per cell (mean ± std, dots: seeds), kNN and linear side by side: equal-epoch cells
    in blue, equal-time cells (``<cell>@<E>ep``) in orange. The axis starts a few points below raw pixels; a cell
    below the axis (a collapse) is drawn as its figure in text at the left edge."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def place(cell: str) -> tuple[int, int, int]:  # the bases first, then each method; its time cell under it
        name = cell.split("@")[0]
        return _position(CHART_ORDER, name), _position(order, name), "@" in cell

    current = {c: rs for c, rs in _cells(records, "test").items() if not _is_superseded(c, order)}
    cells = sorted(current.items(), key=lambda kv: place(kv[0]))
    names = [c for c, _ in cells]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.9 + 0.32 * len(cells)), sharey=True)
    for ax, key in zip(axes, ("knn", "linear")):
        values = [[r[key] for r in rs] for _, rs in cells]
        means = [statistics.mean(v) for v in values]
        stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        lo, hi = FLOOR[key] - 4, max(means + [FLOOR[key]]) + 1.5
        ys = range(len(cells))
        colors = ["tab:orange" if "@" in n else "tab:blue" for n in names]
        ax.barh(ys, [m - lo for m in means], left=lo, xerr=stds, color=colors, capsize=3, height=0.7)
        for y, v, m, sd in zip(ys, values, means, stds):
            ax.scatter(v, [y] * len(v), color="black", s=8, zorder=3)
            if m < lo:
                ax.text(lo + 0.2, y, f"{m:.2f} ± {sd:.2f} (below the axis)", va="center", fontsize=7)
        ax.axvline(FLOOR[key], color="tab:red", ls="--", lw=1, label="raw pixels")
        ax.set_xlim(lo, hi)
        ax.set_yticks(list(ys), names, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_title(
            f"{'kNN' if key == 'knn' else 'linear probe'}, Fashion-MNIST test (mean ± std, dots: seeds)",
            fontsize=9,
        )
    axes[0].invert_yaxis()  # shared: the first cell on top
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:blue", "tab:orange")]
    handles.append(plt.Line2D([0], [0], color="tab:red", ls="--", lw=1))
    labels = ["6 epochs", "MoCo v2's 6 epochs' minutes (equal time)", "raw pixels"]
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.3 / (0.9 + 0.32 * len(cells)), 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


AMCL_CURVES = {  # panel title -> metrics.csv keys (train/ prefix), drawn per AMCL form probe
    "temperature, mean (log scale)": ("amcl_tau_pos_mean", "amcl_tau_neg_mean"),
    "share of temperatures at tau_min": ("amcl_tau_pos_at_min", "amcl_tau_neg_at_min"),
    "share of temperatures at tau_max": ("amcl_tau_pos_at_max", "amcl_tau_neg_at_max"),
    "cosine of positives / negatives": ("amcl_sim_pos", "amcl_sim_neg"),
}


def read_metrics(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """A run's metrics.csv (step, key, value rows) as key -> (steps, values)."""
    import csv

    out: dict[str, tuple[list[int], list[float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            steps, values = out.setdefault(row["key"], ([], []))
            steps.append(int(row["step"]))
            values.append(float(row["value"]))
    return out


def amcl_curves(runs: list, runs_dir: Path, out: Path) -> bool:
    """AMCL's forms side by side over training (held-out probes of stage 1): the kNN monitor, the temperatures'
    mean and their shares at each bound (positives solid, negatives dashed), and the cosines of positives and
    negatives (a collapse shows as both going to 1). False when no probe's metrics are here (runs/ is not
    committed: the figure is drawn where the queue ran)."""
    forms = [r for r in runs if r.cell == "amcl" and r.kind == "val" and " " not in r.setting]
    found = [(r, runs_dir / r.id / "metrics.csv") for r in forms]
    found = [(r, p) for r, p in found if p.is_file()]
    if not found:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(AMCL_CURVES), figsize=(4 * (1 + len(AMCL_CURVES)), 3.4))
    for i, (r, path) in enumerate(found):
        m, color = read_metrics(path), f"C{i}"
        knn = m.get("eval/knn_top1")
        if knn:
            axes[0].plot(*knn, marker="o", color=color, label=r.setting)
        for ax, keys in zip(axes[1:], AMCL_CURVES.values()):
            for key, ls in zip(keys, ("-", "--")):
                if f"train/{key}" in m:
                    ax.plot(*m[f"train/{key}"], ls=ls, color=color, lw=1)
    axes[0].set_title("kNN, held out (%)", fontsize=9)
    axes[0].legend(fontsize=7)
    for ax, title in zip(axes[1:], AMCL_CURVES):
        ax.set_title(title + "\n(solid: positives, dashed: negatives)", fontsize=8)
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("step", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def report(out_dir: Path, runs: list, bases: dict[str, list[str]] | None = None) -> None:
    """Rewrite the table and the verdicts between their markers in docs/results/methods_fmnist.md and draw the
    chart."""
    records = [json.loads(p.read_text()) for p in sorted((out_dir / "runs").glob("*.json"))]
    order = list(dict.fromkeys(r.cell for r in runs))
    md = table(records, order)
    said = verdicts(records, bases or {}, order)
    print(md + "\n\n" + said)
    page = out_dir.parent / "methods_fmnist.md"
    text = page.read_text()
    new = _between(_between(text, (BEGIN, END), md), VERDICTS, said)
    if COMMANDS[0] in text:
        new = _between(new, COMMANDS, commands(records, order))
    cost_file = out_dir / "cell_cost.json"
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else None
    new = _between(new, SENTENCES, sentences(records, bases or {}, cost))
    if new != text:
        page.write_text(new)
    images = out_dir.parent.parent / "images"
    bar_chart(records, order, images / "methods_fmnist_seeds.png")
    from compare_methods import RUNS_DIR  # noqa: PLC0415

    if amcl_curves(runs, RUNS_DIR, images / "amcl_forms_fmnist.png"):
        print(f"wrote {images / 'amcl_forms_fmnist.png'}")
