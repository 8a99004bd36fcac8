"""The code in docs/data.md ("Train on your own data") and docs/downstream.md ("Use a backbone downstream") runs.

Every ```bash and ```python block of a page is run in order, in one temporary folder per page that holds what
the page says is there (``my_images/``; ``hub/`` and an official-layout MoCo v2 checkpoint from random weights).
Blocks after an ``<!-- not run: REASON -->`` line are skipped (they need the Hub or detectron2; their code paths
are tested in tests/test_hf_data.py and tests/test_downstream.py). Python blocks run each in a fresh
interpreter; bash blocks under ``bash -euo pipefail``, with ``xmoco-zoo`` being this checkout's CLI.

The one liberty taken: ``xmoco-zoo pretrain`` and ``xmoco-zoo eval`` commands get overrides appended that make
them smoke tests (timm's ``test_resnet`` at 32 px, 2 steps); later overrides win, so the rest of each command,
its config and data keys included, runs as written.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT

DOCS = ROOT / "docs"
SKIP = re.compile(r"<!--\s*not run:")
FENCE = re.compile(r"^```(\w*)\s*$")

PRETRAIN_SMOKE = [
    "model.backbone=test_resnet",
    "aug.image_size=32",
    "train.batch_size=8",
    "train.max_steps=2",
    "train.trackers=[]",
    "method.hidden_dim=64",
    "method.queue_size=64",
    "method.bn_splits=2",
    "data.num_workers=0",
    "knn.batch_size=16",
]
EVAL_SMOKE = {
    "knn": ["data.num_workers=0", "knn.k=5"],
    "linear": ["data.num_workers=0", "linear.lbfgs_max_iter=5"],
    "finetune": ["data.num_workers=0", "run.max_steps=2", "finetune.batch_size=8"],
}


def code_blocks(page: Path) -> list[tuple[str, str, bool]]:
    """(language, code, run?) of every fenced block of a markdown page."""
    blocks, lang, code, skip_next, skip = [], None, [], False, False
    for line in page.read_text().splitlines():
        fence = FENCE.match(line)
        if lang is None and fence:
            lang, code, skip, skip_next = fence.group(1), [], skip_next, False
        elif lang is not None and line.startswith("```"):
            blocks.append((lang, "\n".join(code) + "\n", not skip))
            lang = None
        elif lang is not None:
            code.append(line)
        elif SKIP.search(line):
            skip_next = True
        elif line.strip():
            skip_next = False
    return blocks


def _smoke(command: str) -> str:
    words = shlex.split(command, comments=True)  # a trailing comment would swallow what is appended
    if words[:2] == ["xmoco-zoo", "pretrain"]:
        return shlex.join(words + PRETRAIN_SMOKE)
    if words[:2] == ["xmoco-zoo", "eval"]:
        return shlex.join(words + EVAL_SMOKE[words[2]])
    return command


def bash_script(code: str) -> str:
    """The block with continuation lines joined and the smoke overrides appended to training commands."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return "\n".join(_smoke(line) if line.strip() else line for line in joined.splitlines())


def run_page(name: str, cwd: Path) -> list[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    cli = f'xmoco-zoo() {{ {shlex.quote(sys.executable)} -m xmoco_zoo.cli "$@"; }}\n'
    outputs = []
    ran = 0
    for lang, code, run in code_blocks(DOCS / name):
        if not run or lang not in ("bash", "python"):
            continue
        cmd = (
            ["bash", "-euo", "pipefail", "-c", cli + bash_script(code)]
            if lang == "bash"
            else [sys.executable, "-c", code]
        )
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"{name} block failed:\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
        outputs.append(proc.stdout)
        ran += 1
    assert ran >= 3, f"{name}: only {ran} blocks ran"
    return outputs


def test_the_skip_marker_and_the_smoke_overrides():
    blocks = code_blocks(DOCS / "data.md")
    skipped = [code for _, code, run in blocks if not run]
    assert len(skipped) == 3 and all(
        "data.hf_path=ORG/NAME" in c or "ILSVRC/imagenet-1k" in c for c in skipped
    )
    first, second = bash_script(
        "xmoco-zoo pretrain --config c.yaml \\\n    data.root=x  # a note\nls\n"
    ).splitlines()
    assert first == "xmoco-zoo pretrain --config c.yaml data.root=x " + shlex.join(PRETRAIN_SMOKE)
    assert second == "ls"


@pytest.mark.slow
def test_train_on_your_own_data(tmp_path):
    pytest.importorskip("datasets", reason="the hf extra: pip install 'xmoco-zoo[hf]'")
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 6)):
        for c in ("cats", "dogs"):
            folder = tmp_path / "my_images" / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")
    run_page("data.md", tmp_path)
    for run in ("my_images", "my_dataset", "my_dataset_streamed"):
        assert (tmp_path / "runs" / run / "backbone" / "model.safetensors").is_file(), run
    assert (tmp_path / "runs" / "eval" / "my_dataset" / "results" / "linear_hf_validation.json").is_file()


@pytest.mark.slow
def test_use_a_backbone_downstream(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'xmoco-zoo[onnx]'")
    from .test_downstream import _official_r50

    (tmp_path / "hub").symlink_to(ROOT / "hub")
    _official_r50(tmp_path / "moco_v2_800ep_pretrain.pth.tar")
    outputs = run_page("downstream.md", tmp_path)
    for name in ("moco_v2_r50_torchvision.pth", "moco_v2_r50_detectron2.pkl", "mocov2_fmnist.onnx"):
        assert (tmp_path / name).is_file(), name
    assert outputs[-1].strip() == "(5, 512)"
