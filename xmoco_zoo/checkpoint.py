"""Atomic training checkpoints on top of Accelerate's ``save_state``.

A checkpoint is written to ``checkpoints/.tmp-epoch_NNNN``, fsynced, then renamed to
``checkpoints/epoch_NNNN``: a folder with a final name is always complete, and a crash mid-write leaves
only a ``.tmp-`` folder that is never loaded and is removed by the next save.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from .config import Config, to_yaml
from .results import EvalRecord, write_result

_NAME = re.compile(r"^epoch_(\d{4,})$")
META = "xmoco_meta.json"
CONFIG = "config.yaml"  # the resolved run config, so a checkpoint can be exported on its own


class CheckpointError(RuntimeError):
    pass


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    accelerator,
    root: Path,
    epoch: int,
    cfg: Config,
    keep: int = 2,
    training: dict | None = None,
    results: list[EvalRecord] | tuple = (),
) -> Path:
    """Save the full training state (Accelerate) plus what an export needs: the resolved config, the
    training facts (``training``: steps, batch, processes, command, commit) and the measured results."""
    root = Path(root)
    final = root / f"epoch_{epoch:04d}"
    tmp = root / f".tmp-epoch_{epoch:04d}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        meta = {
            "method": cfg.method.name,
            "backbone": cfg.model.backbone,
            "model_kwargs": dict(cfg.model.kwargs),
            "epoch": epoch,
            "training": dict(training or {}),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        (tmp / CONFIG).write_text(to_yaml(cfg))
        for record in results:
            write_result(tmp, record)
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(root: Path, which: str = "auto") -> Path:
    """``auto``: the newest complete checkpoint under ``root``; otherwise the given checkpoint folder."""
    if which != "auto":
        path = Path(which)
        if not path.is_dir() or not (path / META).is_file():
            raise CheckpointError(
                f"{path} is not a complete xmoco-zoo checkpoint (no {META}); pass a checkpoints/epoch_NNNN folder "
                "to --resume-from, or use --resume for the newest one"
            )
        return path
    found = list_checkpoints(Path(root))
    if not found:
        raise CheckpointError(f"--resume: no complete checkpoint in {root}; start without --resume")
    return found[-1]


def check_compatible(path: Path, cfg: Config) -> None:
    """Refuse a checkpoint of another method or backbone with a message naming both."""
    meta = json.loads((Path(path) / META).read_text())
    mine = {"method": cfg.method.name, "backbone": cfg.model.backbone, "model_kwargs": dict(cfg.model.kwargs)}
    diff = {k: (meta.get(k), v) for k, v in mine.items() if meta.get(k) != v}
    if diff:
        lines = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"checkpoint {path} was trained with a different setup ({lines}); resume with its config"
        )
