import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pretrain.py"
HOOKED_RECIPE = ROOT / "tests" / "hooked_pretrain.py"  # the recipe with tests/fault_hooks.py installed
if os.environ.get(
    "PYTEST_XDIST_WORKER"
):  # two pytest workers share the 2 cores: one thread each, children too
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(2)


def run_pretrain(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the pretrain recipe in a fresh process (as a user would) and fail loudly with its output."""
    cmd = [sys.executable, str(RECIPE), *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def run_cli(
    *args: str, env: dict | None = None, check: bool = True, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``xmoco-zoo ARGS`` in a fresh process; with ``check``, a failure shows its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "xmoco_zoo.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"xmoco-zoo {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two(
    *args: str, env: dict | None = None, timeout: int = 600, script: Path = RECIPE
) -> subprocess.CompletedProcess:
    """The pretrain recipe (or another ``script``) under ``accelerate launch --multi_gpu --num_processes 2`` on
    the CPU (gloo), one thread per process, on a free port; returns whatever happened (callers check the exit
    status)."""
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    port = cmd.index("--main_process_port") + 1
    for _ in range(
        3
    ):  # free_port() is free when asked, not necessarily when the launcher binds it a few s later
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
        if proc.returncode == 0 or "address already in use" not in (proc.stderr + proc.stdout).lower():
            return proc
        cmd[port] = str(free_port())
    return proc


# A tiny synthetic run: test_resnet at 32 px, no workers, no trackers but the CSV one.
TINY = [
    "model.backbone=test_resnet",
    "data.dataset=synthetic",
    "data.synthetic_size=128",
    "data.num_workers=0",
    "aug.image_size=32",
    "train.batch_size=16",
    "train.epochs=2",
    "train.log_every=2",
    "train.trackers=[]",
    "method.queue_size=100",
    "method.bn_splits=4",
]


@pytest.fixture
def tiny_args():
    return list(TINY)


def fashion_mnist_available() -> bool:
    from xmoco_zoo.data import DatasetNotFoundError, find_fashion_mnist

    try:
        find_fashion_mnist()
        return True
    except DatasetNotFoundError:
        return False


needs_fmnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
