"""Model cards for exported backbones, rendered from ``model_cards/`` with huggingface_hub's ``ModelCard``.

A model folder (``model.safetensors`` + ``config.json``) describes itself: config.json's ``xmoco_zoo``
section says how the weights were made (method, data, schedule, command, or the converted source),
``training_config.yaml`` is the resolved training config, and ``results/*.json`` are the measured numbers
(:mod:`xmoco_zoo.results`). The card is a function of those files only, so it can be re-rendered at any
time (after a new evaluation, or with the repo id at push time) and never shows a number that was not
measured on this checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from . import methods  # noqa: F401  (registers every method's facts)
from .folder import CARD, META_KEY, TRAINING_CONFIG, TRAINING_CURVES, CardError, read_folder_config
from .registry import facts, list_methods
from .results import DATASET_NAMES, HF_DATASET_IDS, EvalRecord, read_results, training_command


def _templates() -> Path:
    """``model_cards/``: the card template and the per-method text (in the package as ``xmoco_zoo/model_cards``)."""
    return Path(__file__).resolve().parent / "model_cards"


def method_parts(meta: dict[str, Any]) -> list[str]:
    """The base, then each regularizer: the pieces whose text and citations the card shows."""
    return [meta.get("base") or meta["method"], *sorted(meta.get("regularizers") or [])]


def method_title(meta: dict[str, Any]) -> str:
    parts = method_parts(meta)
    if parts[1:] and meta.get("method") in list_methods():  # a preset: "co2" is MoCo v2 + CO2
        return f"{facts(meta['method']).title} (on {facts(parts[0]).title})"
    return " + ".join(facts(p).title for p in parts)


def count_params_and_gmacs(model: torch.nn.Module, input_size: list[int]) -> tuple[float, float]:
    """Parameters (M) and multiply-accumulates (G) of one forward at ``input_size``, by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters()) / 1e6
    model = model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_size))
    return params, counter.get_total_flops() / 2 / 1e9


def _fmt_value(r: EvalRecord) -> str:
    return f"{r.value:.2f}{r.unit}" if r.unit == "%" else f"{r.value:.4g} {r.unit}".strip()


def _evaluation_section(results: list[EvalRecord]) -> str:
    if not results:
        return (
            "Not evaluated: no results are stored with this checkpoint. This card shows only numbers measured on\n"
            "this exact model by an evaluation run that stores its result beside it (e.g. `xmoco-zoo knn`)."
        )
    lines = [
        "Measured by xmoco-zoo on this exact checkpoint. Each number comes from a results file stored with it",
        "(`results/*.json`, which also records the configuration, the date and the code commit); the baselines",
        "were measured in the same run with the same protocol.",
        "",
        "| protocol | dataset (split) | metric | value | baselines, same protocol |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        base = "; ".join(f"{name}: {v:.2f}{r.unit}" for name, v in r.baselines.items()) or "none"
        name = DATASET_NAMES.get(r.dataset, r.dataset)
        lines.append(
            f"| {r.protocol_text()} | {name} ({r.split}) | {r.metric} | **{_fmt_value(r)}** | {base} |"
        )
    lines += ["", "Commands:", ""]
    for r in results:
        when = f", {r.date[:10]}" if r.date else ""
        commit = f", commit `{r.commit[:12]}`" if r.commit else ""
        lines.append(f"- {r.protocol} on {r.dataset} {r.split} (`{r.filename}`{when}{commit}): `{r.command}`")
    return "\n".join(lines)


def _training_section(meta: dict[str, Any], folder: Path) -> str:
    src = meta.get("source")
    if src:
        lines = [
            f"Not trained by xmoco-zoo: converted from {src.get('description', 'an external checkpoint')}",
            f"(file `{Path(src.get('path', '?')).name}`, sha256 `{src.get('sha256', '?')}`) with",
            "",
            f"```bash\n{src.get('command', 'xmoco-zoo convert ...')}\n```",
            "",
            "Only the online encoder was kept; dropped: "
            + (", ".join(src.get("dropped") or []) or "nothing")
            + ".",
            "The weights are the original authors'; their license applies.",
        ]
        return "\n".join(lines)
    t = meta.get("training") or {}
    commit = f" (commit `{t['commit'][:12]}`)" if t.get("commit") else ""
    lines = [f"Pretrained with xmoco-zoo{commit}:"]
    if t.get("command"):  # a run resumed before 2026-12-06 recorded its --resume
        lines += ["", f"```bash\n{training_command(t['command'])}\n```"]
    curve = t.get("knn_curve") or []
    if curve:
        lines += [
            "",
            "kNN top-1 during training (the monitor, same protocol as the evaluation below; minutes of training): "
            + ", ".join(f"{m:.1f} min {top1:.2f}%" for m, top1 in curve)
            + ".",
        ]
    if (folder / TRAINING_CURVES).is_file():
        lines += [
            "",
            f"![training curves]({TRAINING_CURVES})",
            "",
            "Every loss term, the learning rate, the momentum and the kNN monitor of the training run, per epoch.",
        ]
    cfg_path = folder / TRAINING_CONFIG
    if cfg_path.is_file():
        lines += [
            "",
            f"The resolved configuration is `{TRAINING_CONFIG}` in this repo:",
            "",
            "<details>",
            "<summary>training_config.yaml</summary>",
            "",
            f"```yaml\n{cfg_path.read_text().rstrip()}\n```",
            "",
            "</details>",
        ]
    return "\n".join(lines)


def _weights_text(folder: Path, meta: dict[str, Any]) -> str:
    """The stored weights' dtype and file size: timm loads a float16 or bfloat16 file into a float32 model."""
    dtype = meta.get("weights_dtype", "float32")
    path = folder / "model.safetensors"
    size = f", {path.stat().st_size / 2**20:.1f} MiB" if path.is_file() else ""
    note = (
        "" if dtype == "float32" else " (BatchNorm statistics float32; timm loads them into a float32 model)"
    )
    return f"`model.safetensors`, {dtype}{note}{size}"


def _training_text(meta: dict[str, Any]) -> str:
    if meta.get("source"):
        return "converted, see Training"
    t = meta.get("training") or {}
    if not t:
        return "see Training"
    steps = f" ({t['steps']:,} steps)" if t.get("steps") is not None else ""
    procs = t.get("processes", 1)
    epochs = t.get("epochs", "?")
    text = f"{epochs} epoch{'' if epochs == 1 else 's'}{steps} of batch {t.get('batch_size', '?')} ({procs} process{'es' if procs != 1 else ''})"
    if t.get("train_minutes") is not None:
        text += f", {t['train_minutes']:.0f} min" + (f" on {t['machine']}" if t.get("machine") else "")
        pace = t.get("machine_pace") or {}
        speed = pace.get("speed")
        # own_run: the run's own steps against the same setting's on the reference machine (xmoco_zoo/pace.py)
        if speed and pace.get("own_run"):
            text += (
                f" (speed {speed:.2f} against the reference machine, from its own steps against the same setting's "
                f"there: about {t['train_minutes'] * speed:.0f} min on the reference machine)"
            )
        elif speed:
            text += f" (machine speed {speed:.2f}: about {t['train_minutes'] * speed:.0f} min on the reference machine)"
    return text


def render_model_card(
    folder: str | Path, repo_id: str | None = None, local_path: str | Path | None = None
) -> ModelCard:
    """The card of the model in ``folder``; ``repo_id`` (``org/name``) makes the usage code load ``hf-hub:``,
    otherwise it loads ``local-dir:`` from ``local_path`` (default ``folder``)."""
    folder = Path(folder)
    cfg = read_folder_config(folder)
    meta = cfg.get(META_KEY)
    if not meta:
        raise CardError(
            f"{folder}/config.json has no '{META_KEY}' section: it was not written by xmoco-zoo "
            "(export with `xmoco-zoo export` or convert with `xmoco-zoo convert`)"
        )
    repo_id = repo_id or meta.get("repo_id")
    pcfg = cfg.get("pretrained_cfg", {})
    arch = cfg["architecture"]
    input_size = list(pcfg.get("input_size", [3, 224, 224]))
    model = timm.create_model(f"local-dir:{folder.resolve()}", pretrained=True)
    params, gmacs = count_params_and_gmacs(model, input_size)
    results = read_results(folder)
    parts = method_parts(meta)
    dataset = meta.get("dataset", "unknown")
    hf_dataset = HF_DATASET_IDS.get(dataset)
    local_path = Path(local_path or folder)
    name = repo_id.split("/")[-1] if repo_id else local_path.resolve().name
    license = pcfg.get("license", "apache-2.0")
    eval_results = [
        EvalResult(
            task_type="image-classification",
            task_name=f"Image classification: {r.protocol_text()}",
            dataset_type=HF_DATASET_IDS.get(r.dataset) or r.dataset,
            dataset_name=DATASET_NAMES.get(r.dataset, r.dataset),
            dataset_split=r.split,
            metric_type="accuracy",
            metric_name=f"{r.protocol} {r.metric}",
            metric_value=round(float(r.value), 4),
        )
        for r in results
    ]
    card_data = ModelCardData(
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        license=license,
        tags=["image-feature-extraction", "timm", "self-supervised", "xmoco-zoo", "moco", *parts],
        datasets=[hf_dataset] if hf_dataset else None,
        model_name=name,
        eval_results=eval_results or None,
    )
    chans = input_size[0]
    size_text = f"{input_size[1]} x {input_size[2]}, {chans} channel{'s' if chans != 1 else ''}"
    model_args = {
        k: v for k, v in cfg.get("model_args", {}).items() if k not in ("num_classes", "global_pool")
    }
    method_text = "\n\n".join(
        (_templates() / "methods" / f"{p}.md").read_text().strip()
        for p in parts
        if (_templates() / "methods" / f"{p}.md").is_file()
    )
    settings = meta.get("regularizer_settings") or {}
    if settings:
        method_text += "\n\n" + "\n".join(
            f"- {facts(r).title} settings: " + ", ".join(f"`{k}={v}`" for k, v in values.items())
            for r, values in settings.items()
        )
    citations = "\n\n".join(
        (_templates() / "methods" / f"{p}.bib").read_text().strip()
        for p in parts
        if (_templates() / "methods" / f"{p}.bib").is_file()
    )
    papers = pcfg.get("paper_ids", "")
    summary = (
        f"A timm `{arch}` backbone pretrained with self-supervised {method_title(meta)} on "
        f"{DATASET_NAMES.get(dataset, dataset)}"
        + (
            " (converted from the authors' release)."
            if meta.get("source")
            else " by [xmoco-zoo](" + pcfg.get("origin_url", "") + ")."
        )
        + f" Headless (`num_classes=0`): it outputs {cfg.get('num_features')}-d pooled features."
    )
    card = ModelCard.from_template(
        card_data,
        template_str=(_templates() / "template.md").read_text(),
        title=name,
        summary=summary,
        architecture=arch,
        model_args_text=json.dumps(model_args) if model_args else "",
        params_m=f"{params:.2f}",
        weights_text=_weights_text(folder, meta),
        gmacs=f"{gmacs:.3g}",
        image_size_text=size_text,
        method_name=method_title(meta),
        dataset_text=f"{DATASET_NAMES.get(dataset, dataset)}"
        + (f" ({meta['dataset_note']})" if meta.get("dataset_note") else ""),
        training_text=_training_text(meta),
        license=license,
        papers_text=", ".join(
            f"[{p}](https://arxiv.org/abs/{p.split(':', 1)[1]})" for p in papers.split(",") if ":" in p
        )
        or "none",
        method_text=method_text,
        model_spec=f"hf-hub:{repo_id}" if repo_id else f"local-dir:{local_path}",
        preprocess_text=(
            f"{input_size[1]} px, {pcfg.get('interpolation', 'bilinear')}, crop_pct {pcfg.get('crop_pct')}, "
            f"mean {list(pcfg.get('mean', []))}, std {list(pcfg.get('std', []))}"
        ),
        input_note=(
            '# 1-channel (grayscale) input: open images with Image.open(path).convert("L").\n'
            if chans == 1
            else ""
        ),
        num_features=cfg.get("num_features"),
        evaluation=_evaluation_section(results),
        training_details=_training_section(meta, folder),
        citations=citations or "% no citation recorded",
    )
    return card


def write_model_card(
    folder: str | Path, repo_id: str | None = None, local_path: str | Path | None = None
) -> Path:
    """Render the card and write it to ``folder/README.md``; a ``repo_id`` is also recorded in config.json."""
    if repo_id:
        cfg = read_folder_config(folder)
        if cfg.get(META_KEY) and cfg[META_KEY].get("repo_id") != repo_id:
            cfg[META_KEY]["repo_id"] = repo_id
            (Path(folder) / "config.json").write_text(json.dumps(cfg, indent=2))
    card = render_model_card(folder, repo_id, local_path)
    path = Path(folder) / CARD
    card.save(str(path))
    return path
