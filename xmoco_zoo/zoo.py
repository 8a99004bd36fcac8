"""The zoo's index: one row per published model folder, read from the folder's files only.

Every figure of a row comes from a file that travels with the model: config.json (architecture, ``model_args``,
``pretrained_cfg.input_size`` and the ``xmoco_zoo`` section: method, data, ``training``), the parameter count of
``model.safetensors`` (tensor shapes, no model built) and ``results/*.json``. Three views are written from the
same rows, so they cannot disagree:

- ``hub/results.csv`` (:func:`results_csv`), in the spirit of timm's ``results-imagenet.csv``: one line per
  model, plain columns (:data:`CSV_COLUMNS`), an empty cell for what was not recorded;
- the README's model table (:func:`markdown_table`), between ``<!-- model table: begin -->`` and
  ``<!-- model table: end -->``, with the baselines stored in the results files as rows of their own;
- ``xmoco-zoo list`` (:func:`format_table`), the same table in the terminal;
- a section per model in ``docs/models.md`` (:func:`model_sections`), between ``<!-- model sections: begin -->``
  and ``<!-- model sections: end -->``: its facts, its results beside the baselines measured with them, its
  pretraining command and commit, its kNN monitor and its training-curves image.

    xmoco-zoo list                 # the table
    xmoco-zoo list --write         # rewrites hub/results.csv, the README's table and docs/models.md's sections

Models sort by family, then kNN top-1 (best first). Training minutes (``training.train_minutes``: the epochs'
wall clock, without start-up, the kNN monitor or checkpoints) and the machine (``training.machine``) are
recorded by runs from 2026-12-02 on; an older model shows an empty cell (``—``). The machine's speed against
the reference machine (``training.machine_pace``, :mod:`xmoco_zoo.pace`; the zoo's runs from 2026-12-06 on) is
the CSV's ``machine_speed``: the plot and the time-to-accuracy comparison put minutes on the reference machine's
scale with it (:func:`on_one_scale`).

A reference curve (:func:`read_reference_curve`) is another library's accuracy against its training minutes,
for ``xmoco-zoo plot zoo --reference FILE``. JSON::

    {"label": "lightly MoCo v2 (examples/pytorch/moco.py)", "machine": "...", "command": "...",
     "points": [{"epochs": 1, "minutes": 3.1, "knn": 70.2, "linear": null}, ...],
     "machine_pace": {"speed": 1.8, ...}}

``minutes`` and ``knn`` per point are required (``knn`` may be null where only ``linear`` was measured), the rest
optional; ``points`` may be empty (not measured yet). A CSV with the header ``minutes,knn[,linear][,epochs]``
works too, its label being the file's name.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputNotFoundError, UserError
from .folder import META_KEY, read_folder_config
from .pace import speed_of
from .results import DATASET_NAMES, EvalRecord, read_results, training_command

CSV_NAME = "results.csv"
BEGIN = "<!-- model table: begin -->"
END = "<!-- model table: end -->"
SECTIONS_BEGIN = "<!-- model sections: begin -->"
SECTIONS_END = "<!-- model sections: end -->"
HUB_LIMIT_MB = 120  # hub/ (every published folder) stays small enough to clone with the project
MODELS_PAGE = "docs/models.md"  # beside the README: the page whose per-model sections --write rewrites
# The protocols the index shows, in column order, with their headings.
PROTOCOLS = {"knn": "kNN", "linear": "linear", "finetune": "fine-tune", "semisup_10pct": "10 % labels"}
CSV_COLUMNS = (
    "model",
    "repo_id",
    "family",
    "backbone",
    "param_count",
    "input_size",
    "data",
    "epochs",
    "train_minutes",
    "machine",
    "machine_speed",
    *(f"{p}_top1" for p in PROTOCOLS),
    "eval",
    "commit",
)
WIDTH_WORDS = {0.25: "quarter width", 0.5: "half width", 2.0: "double width"}
# Constructor arguments the backbone's note leaves out: in_chans (the input column says it), those a headless
# backbone always has, and (with a width note) those that set the width.
_SHOWN_ELSEWHERE = {"num_classes", "global_pool", "in_chans"}
_WIDTH_ARGS = {"channels", "embed_dim", "dims", "widths", "width", "width_multiplier", "width_factor"}
NONE = "—"


class ZooError(UserError, ValueError):
    """A README without the table's markers, or a reference curve that does not follow its format."""


@dataclass
class ZooRow:
    """One published model: what the index shows (``None``: not recorded)."""

    model: str  # the folder's (and the repo's) name
    repo_id: str | None
    family: str  # the method: mocov2, co2, mocov3+co2+xmoco, ...
    backbone: str  # the timm architecture and a note when model_args change it, e.g. "resnet10t, half width"
    param_count: float  # millions, from model.safetensors (BatchNorm running statistics not counted)
    input_size: str  # C x H x W
    data: str  # the pretraining dataset's id
    epochs: int | None
    train_minutes: float | None
    machine: str | None
    top1: dict[str, float] = field(default_factory=dict)  # protocol -> top-1 %, for PROTOCOLS
    eval: str | None = None  # the dataset and split the top-1 figures are on, e.g. "fashion_mnist test"
    commit: str | None = None  # of the training
    path: str = ""
    # protocol -> baseline name -> value: what the results files measured beside the model
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)
    # the training's kNN monitor: [minutes, top-1] at each evaluation (training.knn_curve; runs from 2026-12-05)
    knn_curve: list[list[float]] = field(default_factory=list)
    command: str | None = None  # the pretraining command (training.command)
    # the training machine's speed against the reference machine (training.machine_pace; xmoco_zoo/pace.py)
    speed: float | None = None

    def csv_row(self) -> dict[str, str]:
        d = {
            "model": self.model,
            "repo_id": self.repo_id,
            "family": self.family,
            "backbone": self.backbone,
            "param_count": f"{self.param_count:.2f}",
            "input_size": self.input_size,
            "data": self.data,
            "epochs": self.epochs,
            "train_minutes": None if self.train_minutes is None else f"{self.train_minutes:.2f}",
            "machine": self.machine,
            "machine_speed": None if self.speed is None else f"{self.speed:.3f}",
            **{f"{p}_top1": _num(self.top1.get(p)) for p in PROTOCOLS},
            "eval": self.eval,
            "commit": self.commit,
        }
        return {k: "" if v is None else str(v) for k, v in d.items()}


def index_rows(hub_dir: str | Path = "hub") -> list[ZooRow]:
    """A row per model folder (a folder with a config.json) in ``hub_dir``, by family then kNN top-1 (best
    first); ``[]`` when there is none."""
    hub_dir = Path(hub_dir)
    folders = (
        sorted(p for p in hub_dir.iterdir() if (p / "config.json").is_file()) if hub_dir.is_dir() else []
    )
    rows = [model_row(f) for f in folders]
    return sorted(rows, key=lambda r: (r.family, -r.top1.get("knn", -math.inf), r.model))


def model_row(folder: str | Path) -> ZooRow:
    """The index row of one model folder (an export, a conversion, ``hub/NAME``)."""
    folder = Path(folder)
    cfg = read_folder_config(folder)
    meta = cfg.get(META_KEY) or {}
    training = meta.get("training") or {}
    arch = cfg.get("architecture", "?")
    dataset = meta.get("dataset") or "?"
    records = read_results(folder)
    chosen = {p: _result_for(records, p, dataset) for p in PROTOCOLS}
    chosen = {p: r for p, r in chosen.items() if r is not None}
    evals = sorted({f"{r.dataset} {r.split}" for r in chosen.values()})
    minutes = training.get("train_minutes")
    return ZooRow(
        model=folder.name,
        repo_id=meta.get("repo_id"),
        family=meta.get("method") or "?",
        backbone=backbone_text(
            arch, cfg.get("model_args") or {}, cfg.get("num_features"), meta.get("default_num_features")
        ),
        param_count=round(safetensors_params(folder / "model.safetensors") / 1e6, 2),
        input_size="x".join(str(n) for n in (cfg.get("pretrained_cfg") or {}).get("input_size", [])) or "?",
        data=dataset,
        epochs=training.get("epochs"),
        train_minutes=None if minutes is None else float(minutes),
        machine=training.get("machine"),
        top1={p: float(r.value) for p, r in chosen.items()},
        eval=", ".join(evals) or None,
        commit=training.get("commit"),
        path=str(folder),
        baselines={p: dict(r.baselines) for p, r in chosen.items() if r.baselines},
        knn_curve=[[float(m), float(t)] for m, t in training.get("knn_curve") or []],
        command=training_command(training.get("command")),
        speed=speed_of(
            training.get("machine_pace"), f"{folder}/config.json: xmoco_zoo.training.machine_pace"
        ),
    )


def _result_for(records: list[EvalRecord], protocol: str, dataset: str) -> EvalRecord | None:
    """The record of ``protocol`` the index shows: on the pretraining data first, then its test split, then val."""
    mine = [r for r in records if r.protocol == protocol and r.metric == "top1"]
    order = {"test": 0, "val": 1, "validation": 1}
    mine.sort(key=lambda r: (r.dataset != dataset, order.get(r.split, 2), r.dataset, r.split))
    return mine[0] if mine else None


def safetensors_params(path: str | Path) -> int:
    """Parameters in a safetensors file, from the tensor shapes in its header (BatchNorm running statistics not
    counted). The header is read as the format defines it (an 8-byte little-endian length, then JSON), without
    importing torch."""
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(
        math.prod(v["shape"])
        for k, v in header.items()
        if k != "__metadata__" and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )


def backbone_text(
    arch: str, model_args: dict[str, Any], num_features: int | None, default: int | None = None
) -> str:
    """``arch``, with a note when ``model_args`` change it: its width against timm's default (the feature
    dimension's ratio, e.g. "half width"; none at the default width), then any other constructor argument
    (``in_chans`` is in the input).
    ``default``: the default feature dimension when the export recorded it (else timm builds the architecture)."""
    notes = []
    if default is None:  # an export from before the key, or a conversion: build it (imports timm, ~3 s)
        from .backbone import default_num_features

        default = default_num_features(arch)
    ratio = num_features / default if num_features and default else 1.0
    if ratio != 1.0:
        notes.append(WIDTH_WORDS.get(ratio, f"width x{ratio:g}"))
    # width arguments that keep the default feature dimension (timm's own channels, spelled out) say nothing
    hidden = _SHOWN_ELSEWHERE | _WIDTH_ARGS
    notes += [f"{k}={json.dumps(v)}" for k, v in sorted(model_args.items()) if k not in hidden]
    return ", ".join([arch, *notes])


# Baselines: the raw-pixel floor does not depend on the model; the others are the model's own architecture at
# random init (kNN, linear probe) or trained from scratch (fine-tuning), so they are grouped by backbone.
RAW_PIXELS = "raw pixels"
SAME_ARCH = "random init / from scratch"
BASELINES_TEXT = (
    "baselines, measured with each protocol: raw pixels (the floor), and the same architecture at random init "
    "(kNN, linear) or trained from scratch with the same schedule (fine-tune, 10 %)"
)


@dataclass
class BaselineRow:
    what: str  # RAW_PIXELS or SAME_ARCH
    backbone: str | None
    param_count: float | None
    input_size: str
    eval: str | None
    top1: dict[str, str]  # protocol -> value(s), formatted


def baseline_rows(rows: list[ZooRow]) -> list[BaselineRow]:
    """The baselines the results files store beside the models, one row per kind (raw pixels, or the same
    architecture) and per backbone and evaluation set; several different values of one cell are all shown."""
    groups: dict[tuple, dict[str, set[float]]] = {}
    facts: dict[tuple, tuple] = {}
    for r in rows:
        for protocol, named in r.baselines.items():
            for name, value in named.items():
                raw = name.lower().startswith("raw pixels")
                key = (r.eval, RAW_PIXELS if raw else SAME_ARCH, r.input_size, None if raw else r.backbone)
                facts.setdefault(key, (None, r.input_size) if raw else (r.param_count, r.input_size))
                groups.setdefault(key, {}).setdefault(protocol, set()).add(float(value))
    out = []
    for key in sorted(groups, key=lambda k: (str(k[0]), k[1] != RAW_PIXELS, str(k[3]), k[2])):
        eval_set, what, input_size, backbone = key
        out.append(
            BaselineRow(
                what=what,
                backbone=backbone,
                param_count=facts[key][0],
                input_size=input_size,
                eval=eval_set,
                top1={p: " / ".join(_num(v) for v in sorted(vs)) for p, vs in groups[key].items()},
            )
        )
    return out


def _num(v: float | None) -> str | None:
    return None if v is None else f"{v:.2f}"


def results_csv(rows: list[ZooRow]) -> str:
    """``hub/results.csv``: a header of :data:`CSV_COLUMNS`, then one line per model."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.csv_row())
    return buf.getvalue()


HEADINGS = (
    "model",
    "family",
    "backbone",
    "params",
    "input",
    "data",
    "epochs",
    "minutes",
    *PROTOCOLS.values(),
)


def _cells(rows: list[ZooRow], link_base: Path | None) -> list[list[str]]:
    """The table's cells, the baseline rows last; ``link_base``: the folder the README is in (model names
    become links to their folders), or None (plain names)."""
    out = []
    for r in rows:
        name = r.model
        if link_base is not None:
            name = f"[`{r.model}`]({Path(os.path.relpath(r.path, link_base)).as_posix()})"
        out.append(
            [
                name,
                r.family,
                r.backbone,
                f"{r.param_count:.2f}M",
                r.input_size,
                DATASET_NAMES.get(r.data, r.data),
                str(r.epochs) if r.epochs is not None else NONE,
                f"{r.train_minutes:.1f}" if r.train_minutes is not None else NONE,
                *(_num(r.top1.get(p)) or NONE for p in PROTOCOLS),
            ]
        )
    several = len({r.eval for r in rows}) > 1
    for b in baseline_rows(rows):
        what = f"baseline: {b.what}" + (f" ({b.eval})" if several and b.eval else "")
        params = f"{b.param_count:.2f}M" if b.param_count is not None else NONE
        out.append(
            [what, NONE, b.backbone or NONE, params, b.input_size, NONE, NONE, NONE]
            + [b.top1.get(p, NONE) for p in PROTOCOLS]
        )
    return out


def caption(rows: list[ZooRow], csv_ref: str = CSV_NAME) -> str:
    """What the numbers are: top-1 on which evaluation set, and what the minutes measure (the machine is in
    ``csv_ref``, the CSV as the caption names it)."""
    evals = sorted({r.eval for r in rows if r.eval})
    on = "; ".join(eval_text(e) for e in evals) or "no evaluation stored"
    baselines = f"; {BASELINES_TEXT}" if any(r.baselines for r in rows) else ""
    return (
        f"Top-1 % on {on}{baselines}. Minutes: the training epochs' wall clock, on the machine named in "
        f"{csv_ref} ({NONE}: trained before it was recorded); its speed against the reference machine is the "
        "CSV's machine_speed (docs/models.md)."
    )


def eval_text(eval_set: str) -> str:
    """``"fashion_mnist test"`` -> ``"Fashion-MNIST test"`` (each of a comma-separated list)."""
    parts = []
    for one in eval_set.split(", "):
        dataset, _, split = one.partition(" ")
        parts.append(f"{DATASET_NAMES.get(dataset, dataset)} {split}".strip())
    return ", ".join(parts)


def markdown_table(rows: list[ZooRow], readme_dir: str | Path) -> str:
    """The README's model table (a caption line, then the table), models linked relative to ``readme_dir``."""
    readme_dir = Path(readme_dir)
    cells = _cells(rows, readme_dir)
    csv_ref = f"`{CSV_NAME}`"
    if rows:
        link = Path(os.path.relpath(Path(rows[0].path).parent / CSV_NAME, readme_dir)).as_posix()
        csv_ref = f"[`{link}`]({link})"
    lines = [caption(rows, csv_ref), "", "| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines)


def format_table(rows: list[ZooRow]) -> str:
    """The same table for the terminal: aligned columns, plain names."""
    if not rows:
        return "no published models (hub/ is empty)"
    cells = [list(HEADINGS), *_cells(rows, None)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADINGS))]
    numeric = set(range(6, len(HEADINGS)))  # epochs onwards: right-aligned
    lines = [
        "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", caption(rows, str(Path(rows[0].path).parent / CSV_NAME))])


def readme_block(readme: str | Path, markers: tuple[str, str] = (BEGIN, END)) -> str:
    """What the README (or the models page, with its ``markers``) holds between the markers, without them and
    the blank lines around."""
    text = Path(readme).read_text()
    start, end = _markers(text, readme, markers)
    return text[start:end].strip("\n")


def _markers(text: str, readme: str | Path, markers: tuple[str, str] = (BEGIN, END)) -> tuple[int, int]:
    begin, end = markers
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        what = (
            "the model table must sit between one {!r} line and one {!r} line after it; add them around the table "
            "under 'Published models'"
            if markers == (BEGIN, END)
            else "the models' sections must sit between one {!r} line and one {!r} line after it; add them where "
            "the sections go"
        )
        raise ZooError(f"{readme}: " + what.format(begin, end))
    return text.index(begin) + len(begin), text.index(end)


def update_readme(readme: str | Path, table: str, markers: tuple[str, str] = (BEGIN, END)) -> bool:
    """Put ``table`` between the README's (or the models page's) markers; True when that changed the file."""
    readme = Path(readme)
    text = readme.read_text()
    start, end = _markers(text, readme, markers)
    new = f"{text[:start]}\n{table}\n{text[end:]}"
    if new != text:
        readme.write_text(new)
    return new != text


_BASELINE_SHORT = ("raw pixels", "random init", "from scratch")  # a baseline's name, as the sections give it


def _baseline_text(named: dict[str, float]) -> str:
    """``{"raw pixels, L2-normalised (the floor)": 78.85, "same architecture (r), random init (seed 0)": 65.05}``
    -> ``"raw pixels 78.85, random init 65.05"`` (the raw-pixel floor first)."""
    parts = []
    for name, value in sorted(named.items(), key=lambda kv: not kv[0].lower().startswith("raw pixels")):
        short = next((key for key in _BASELINE_SHORT if key in name.lower()), name)
        parts.append(f"{short} {value:.2f}")
    return ", ".join(parts) or NONE


def model_sections(rows: list[ZooRow], page_dir: str | Path) -> str:
    """``docs/models.md``'s sections, one per model (links relative to ``page_dir``): what it is, its results
    beside the baselines its results files hold, the command and commit that trained it, its kNN monitor and
    its training-curves image (``training_curves.png`` in its folder, when there is one)."""
    page_dir = Path(page_dir)
    if not rows:
        return "No published models (hub/ is empty)."
    out = []
    for r in rows:
        folder = Path(os.path.relpath(r.path, page_dir)).as_posix()
        shown = f"{Path(r.path).parent.name}/{r.model}"  # hub/NAME
        trained = f"{r.epochs} epochs" if r.epochs is not None else "epochs not recorded"
        if r.train_minutes is not None:
            trained += f", {r.train_minutes:.1f} min of training" + (f" on {r.machine}" if r.machine else "")
            if r.speed is not None:
                trained += (
                    f" (machine speed {r.speed:.2f}: {r.train_minutes * r.speed:.1f} min on the reference "
                    "machine, [how](../xmoco_zoo/pace.py))"
                )
        facts = [
            f"[`{shown}`]({folder}) ([model card]({folder}/README.md))",
            r.family,
            f"{r.backbone} ({r.param_count:.2f}M params)",
            f"input {r.input_size}",
            f"{DATASET_NAMES.get(r.data, r.data)}, {trained}",
        ]
        lines = [f"### `{r.model}`", "", " · ".join(facts) + ".", ""]
        if r.top1:
            lines += [
                f"Top-1 % on {eval_text(r.eval) if r.eval else 'its evaluation set'} (the protocols are spelt "
                "out in the card and in `results/*.json`):",
                "",
                "| protocol | top-1 | baselines, same protocol and run |",
                "|---|---|---|",
            ]
            lines += [
                f"| {label} | **{r.top1[p]:.2f}** | {_baseline_text(r.baselines.get(p, {}))} |"
                for p, label in PROTOCOLS.items()
                if p in r.top1
            ]
            lines.append("")
        if r.command:
            short = (r.commit or "").split("+")[0][:12] + ("+dirty" if "+dirty" in (r.commit or "") else "")
            commit = f" at commit `{short}`" if r.commit else ""
            lines += [f"Pretrained{commit} with", "", "```bash", r.command, "```", ""]
        if r.knn_curve:
            points = ", ".join(f"{t:.2f} ({m:.1f} min)" for m, t in r.knn_curve)
            lines += [f"kNN monitor during training (top-1, at its training minutes): {points}.", ""]
        if (Path(r.path) / "training_curves.png").is_file():
            lines += [f"![{r.model}: training curves]({folder}/training_curves.png)", ""]
        out.append("\n".join(lines).rstrip("\n"))
    return "\n\n".join(out)


def write_index(
    hub_dir: str | Path = "hub",
    readme: str | Path | None = "README.md",
    models_page: str | Path | None = None,
) -> tuple[list[ZooRow], list[Path]]:
    """Write ``hub_dir/results.csv``, (unless ``readme`` is None) the README's model table and (when
    ``models_page`` is given) that page's per-model sections; returns the rows and the files that changed."""
    hub_dir = Path(hub_dir)
    if not hub_dir.is_dir():
        raise InputNotFoundError(
            f"{hub_dir}: no such folder; pass --hub-dir, the folder of the published models"
        )
    rows = index_rows(hub_dir)
    changed = []
    path = hub_dir / CSV_NAME
    text = results_csv(rows)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
        changed.append(path)
    if readme is not None:
        if not Path(readme).is_file():
            raise InputNotFoundError(
                f"{readme}: no such file; pass --readme, or --no-readme to write the CSV only"
            )
        if update_readme(readme, markdown_table(rows, Path(readme).parent)):
            changed.append(Path(readme))
    if models_page is not None:
        if not Path(models_page).is_file():
            raise InputNotFoundError(f"{models_page}: no such file; pass --models-page, or --no-models-page")
        sections = model_sections(rows, Path(models_page).parent)
        if update_readme(models_page, sections, (SECTIONS_BEGIN, SECTIONS_END)):
            changed.append(Path(models_page))
    return rows, changed


@dataclass
class ReferenceCurve:
    """Another library's accuracy against its training minutes (see the module's docstring for the format)."""

    label: str
    points: list[dict[str, float | None]]  # minutes, knn, and optionally linear, epochs; sorted by minutes
    machine: str | None = None
    command: str | None = None
    path: str = ""
    speed: float | None = None  # its machine's speed against the reference machine ("machine_pace")


REFERENCE_SCALE = "on the reference machine (measured minutes x machine speed, xmoco_zoo/pace.py)"
AS_MEASURED = "as measured (compare runs of one machine only)"
MEASURED_SCALE = (
    "as measured (a machine speed is not recorded for every run: compare runs of one machine only)"
)


def on_one_scale(
    rows: list[ZooRow], curve: ReferenceCurve | None = None
) -> tuple[list[ZooRow], ReferenceCurve | None, str]:
    """The rows' (and the reference curve's) minutes on one scale, and which: the reference machine's when every
    timed run records its machine's speed (xmoco_zoo/pace.py), as measured otherwise. Minutes of machines of
    different speeds compare only on the reference machine's scale."""
    timed = [r for r in rows if r.train_minutes is not None]
    if any(r.speed is None for r in timed) or (curve is not None and curve.speed is None):
        return rows, curve, MEASURED_SCALE

    def row(r: ZooRow) -> ZooRow:
        if r.train_minutes is None or r.speed is None:
            return r
        curve_pts = [[m * r.speed, t] for m, t in r.knn_curve]
        return replace(r, train_minutes=r.train_minutes * r.speed, knn_curve=curve_pts)

    scaled = None
    if curve is not None:
        factor = float(curve.speed or 1.0)
        points = [{**p, "minutes": float(p["minutes"]) * factor} for p in curve.points]
        scaled = replace(curve, points=points)
    return [row(r) for r in rows], scaled, REFERENCE_SCALE


def best_by_minutes(rows: list[ZooRow]) -> list[tuple[float, float, str]]:
    """Our time-to-accuracy curve: every kNN monitor point of the models' trainings (and each model's final
    kNN at its training minutes), as (minutes, best kNN reached by any model within those minutes, model) at
    each point where the best improves: a step function, since a budget of m minutes can train any run that
    took m minutes or less."""
    pts = sorted(
        [(m, t, r.model) for r in rows for m, t in r.knn_curve]
        + [
            (r.train_minutes, r.top1["knn"], r.model)
            for r in rows
            if r.train_minutes is not None and "knn" in r.top1
        ]
    )
    out: list[tuple[float, float, str]] = []
    for m, t, name in pts:
        if not out or t > out[-1][1]:
            out.append((m, t, name))
    return out


def compare_with_reference(rows: list[ZooRow], curve: ReferenceCurve, measured: bool = False) -> list[str]:
    """At each of the reference's kNN points (m minutes, its top-1), ours: the best kNN any of our runs had
    reached within m minutes (:func:`best_by_minutes`). One line per point, and a last line: whether ours is
    above at every point. The minutes are on one scale (:func:`on_one_scale`); ``measured``: as measured,
    which compares runs of one machine (a speed calibration is one network's step and need not carry to
    another network: docs/models.md, "Minutes and machines")."""
    scale = AS_MEASURED
    if not measured:
        rows, scaled, scale = on_one_scale(rows, curve)
        curve = scaled if scaled is not None else curve
    ours = best_by_minutes(rows)
    lines, above = [f"minutes: {scale}"], True
    for p in curve.points:
        if p.get("knn") is None:
            continue
        m, theirs = float(p["minutes"]), float(p["knn"])
        reached = [(t, name) for mm, t, name in ours if mm <= m]
        if reached:
            t, name = reached[-1]
            lines.append(
                f"{m:7.1f} min: {curve.label} {theirs:.2f}, ours {t:.2f} ({name}): {t - theirs:+.2f}"
            )
            above &= t > theirs
        else:
            lines.append(f"{m:7.1f} min: {curve.label} {theirs:.2f}, ours: no run measured this early")
            above = False
    lines.append(f"ours above {curve.label} at every one of its points: {'yes' if above else 'no'}")
    return lines


def read_reference_curve(path: str | Path) -> ReferenceCurve:
    """Read a reference curve from a ``.json`` or ``.csv`` file; a wrong file is a ZooError naming the fix."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(
            f"{path}: no such reference curve (a .json or .csv of minutes and kNN points)"
        )
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"minutes", "knn"} <= set(reader.fieldnames):
                raise ZooError(f"{path}: a reference CSV needs the header minutes,knn[,linear][,epochs]")
            points = [{k: v for k, v in row.items() if v not in ("", None)} for row in reader]
        data: dict[str, Any] = {"label": path.stem, "points": points}
    else:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ZooError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict) or not isinstance(data.get("points"), list):
            raise ZooError(f'{path}: a reference curve is an object with "label" and a "points" list')
    points = []
    for i, p in enumerate(data["points"]):
        if not isinstance(p, dict) or "minutes" not in p or "knn" not in p:
            raise ZooError(f"{path}: point {i} needs 'minutes' and 'knn' (null when not measured), got {p!r}")
        try:
            point = {
                k: None if p.get(k) is None else float(p[k]) for k in ("minutes", "knn", "linear", "epochs")
            }
        except (TypeError, ValueError) as e:
            raise ZooError(f"{path}: point {i} has a value that is not a number: {p!r}") from e
        if point["minutes"] is None:
            raise ZooError(f"{path}: point {i} has no minutes")
        points.append(point)
    return ReferenceCurve(
        label=str(data.get("label") or path.stem),
        points=sorted(points, key=lambda p: p["minutes"]),
        machine=data.get("machine"),
        command=data.get("command"),
        path=str(path),
        speed=speed_of(data.get("machine_pace"), f"{path}: machine_pace"),
    )


def rows_json(rows: list[ZooRow]) -> list[dict[str, Any]]:
    """The rows as plain dicts (``xmoco-zoo list --json``)."""
    return [asdict(r) for r in rows]
