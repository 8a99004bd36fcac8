"""Atomic training checkpoints on top of Accelerate's ``save_state``.

A checkpoint is written to ``checkpoints/.tmp-epoch_NNNN``, fsynced, then renamed to
``checkpoints/epoch_NNNN``: a folder with a final name is always complete, and a crash mid-write leaves
only a ``.tmp-`` folder that is never loaded and is removed by the next save.

``epoch_NNNN`` is written after N complete epochs; ``epoch_NNNN_step_SSSSSSSS`` mid-epoch (on SIGTERM),
after N complete epochs and S optimizer steps in all, and sorts between ``epoch_NNNN`` and the next epoch.

Before Accelerate loads a checkpoint, :func:`verify_plain_data` loads every pickle in it with
``torch.load(weights_only=True)``: Accelerate itself loads the registered training state with
``weights_only=False``, so a crafted pickle would otherwise run code on ``--resume``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch

from .config import Config, to_yaml
from .errors import UserError
from .results import EvalRecord, write_result

_NAME = re.compile(r"^epoch_(\d{4,})(?:_step_(\d{8,}))?$")
PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")
META = "xmoco_meta.json"
CONFIG = "config.yaml"  # the resolved run config, so a checkpoint can be exported on its own


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is refused: incomplete, of another setup, unreadable, or not plain weights."""


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
    found = [
        ((int(m.group(1)), int(m.group(2) or -1)), p)
        for p in root.iterdir()
        if p.is_dir() and (m := _NAME.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """``epoch_NNNN`` after ``epoch`` complete epochs, or ``epoch_NNNN_step_SSSSSSSS`` mid-epoch."""
    return f"epoch_{epoch:04d}" if step is None else f"epoch_{epoch:04d}_step_{step:08d}"


def save_checkpoint(
    accelerator,
    root: Path,
    epoch: int,
    cfg: Config,
    keep: int = 2,
    training: dict | None = None,
    results: list[EvalRecord] | tuple = (),
    step: int | None = None,
) -> Path:
    """Save the full training state (Accelerate) plus what an export needs: the resolved config, the
    training facts (``training``: steps, batch, processes, command, commit) and the measured results.

    ``epoch`` is the number of complete epochs; ``step`` (the global step) marks a mid-epoch checkpoint."""
    root = Path(root)
    name = checkpoint_name(epoch, step)
    final = root / name
    tmp = root / f".tmp-{name}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
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
            "mid_epoch_step": step,
            "training": dict(training or {}),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2))
        (tmp / CONFIG).write_text(to_yaml(cfg))
        for record in results:
            write_result(tmp, record)
        _fsync_tree(tmp)
        replaced = None
        if final.exists():  # a directory cannot be replaced atomically: move the old one aside first
            replaced = root / f".old-{name}"
            os.replace(final, replaced)
        os.replace(tmp, final)
        _fsync_dir(root)
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(root: Path, which: str = "auto") -> Path:
    """``auto``: the newest complete checkpoint under ``root``; otherwise the given checkpoint folder."""
    if which != "auto":
        path = Path(which)
        if path.name.startswith((".tmp-", ".old-")):
            raise CheckpointError(
                f"{path} is a checkpoint whose write was interrupted (or one being replaced): it is never "
                "loaded; pass a complete checkpoints/epoch_NNNN folder, or use --resume for the newest one"
            )
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


def _numpy_safe_globals() -> list:
    """The non-torch types Accelerate's RNG-state pickles hold (numpy arrays and dtypes)."""
    try:
        from accelerate.utils.other import TORCH_SAFE_GLOBALS

        return list(TORCH_SAFE_GLOBALS)
    except ImportError:  # pragma: no cover - older or newer Accelerate
        import codecs

        import numpy as np

        core = getattr(np, "_core", None) or np.core
        extra = [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", object)) if n.endswith("DType")]
        return [core.multiarray._reconstruct, np.ndarray, np.dtype, codecs.encode, *extra]


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def verify_plain_data(path: Path) -> None:
    """Refuse a checkpoint holding a pickle that is not plain data (tensors, numbers, strings, containers,
    numpy arrays): every ``.bin``/``.pkl``/``.pt``/``.pth`` file is loaded with ``torch.load(weights_only=True)``
    before Accelerate loads it (Accelerate loads registered states with ``weights_only=False``). A truncated or
    corrupt file (pickle or safetensors) is an error naming it, before anything is loaded."""
    from safetensors import safe_open

    for file in sorted(Path(path).iterdir()):
        if file.suffix == ".safetensors" and file.is_file():
            try:
                with safe_open(str(file), framework="pt"):  # checks the header covers the whole file
                    pass
            except Exception as e:
                raise CheckpointError(
                    f"{file}: cannot be read ({_first_line(e)}); resume from another checkpoint (--resume-from)"
                ) from None
        if file.suffix not in PICKLE_SUFFIXES or not file.is_file():
            continue
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
            what = f"it references {found.group(1)!r}" if found else _first_line(e)
            raise CheckpointError(
                f"{file}: refused to load: not plain weights ({what}). xmoco-zoo loads checkpoints with "
                "torch.load(weights_only=True) only, so resuming cannot run code from them; a checkpoint "
                "written by xmoco-zoo never holds other objects"
            ) from None
        except Exception as e:  # truncated or otherwise unreadable
            raise CheckpointError(
                f"{file}: cannot be read ({type(e).__name__}: {_first_line(e)}); "
                "resume from another checkpoint (--resume-from)"
            ) from None
