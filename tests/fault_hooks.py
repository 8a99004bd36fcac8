"""Fault injection for tests/test_faults.py: the moments at which a training process gets killed.

The hooks only pick the moment; the kernel delivers the signal as for ``kill -9 PID`` / ``kill PID``, so each
fault is the real thing. tests/hooked_pretrain.py installs them from two environment variables (also under
``accelerate launch``, whose workers inherit the environment):

- ``XMOCO_TEST_SIGNAL_AT_STEP=N:KILL|TERM|TERMGROUP|TERMSLURM[:RANK]``: right after optimizer step N (on every
  rank, or on RANK only) the process sends the signal to itself; TERMGROUP to its whole process group (loader
  workers included); TERMSLURM to its launcher and every process the launcher started, as Slurm stops a job
  step. Through :func:`xmoco_zoo.pretrain.main`'s ``after_step`` hooks.
- ``XMOCO_TEST_CRASH_IN_CHECKPOINT=NAME``: a ``kill -9`` while checkpoint NAME is written, after Accelerate
  wrote the temporary folder and with its model file cut to half. Through a wrapped
  ``Accelerator.save_state``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

SIGNAL_AT_STEP = "XMOCO_TEST_SIGNAL_AT_STEP"
CRASH_IN_CHECKPOINT = "XMOCO_TEST_CRASH_IN_CHECKPOINT"


def signal_at_step(spec: str) -> Callable[[int, int], None]:
    """An ``after_step`` hook from ``N:KILL|TERM|TERMGROUP|TERMSLURM[:RANK]`` (see the module docstring)."""
    n, sig, *only = spec.split(":")

    def hook(step: int, rank: int) -> None:
        if int(n) != step or (only and int(only[0]) != rank):
            return
        if sig == "TERMGROUP":
            os.killpg(os.getpgid(0), signal.SIGTERM)
        elif sig == "TERMSLURM":  # as Slurm stops a job step: every worker, and the launcher, which forwards
            launcher, me = os.getppid(), os.getpid()  # a second copy to each worker
            os.kill(me, signal.SIGTERM)  # handled before the next line runs: this process has its first copy
            for pid in children(launcher):
                if pid != me:
                    os.kill(pid, signal.SIGTERM)
            time.sleep(0.2)
            os.kill(launcher, signal.SIGTERM)
            # Wait (at most 20 s) for the launcher's forwarded copy to reach this rank: on a loaded machine the
            # agent can forward it after this rank would have checkpointed and left its SIGTERM handler.
            stopper = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
            deadline = time.monotonic() + 20
            while (
                stopper is not None
                and not getattr(stopper, "_told_repeat", True)
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        else:
            os.kill(os.getpid(), {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}[sig])

    return hook


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def crash_in_checkpoint(name: str) -> None:
    """From now on, writing checkpoint ``name`` kills this process (SIGKILL) once Accelerate has written the
    temporary folder (``checkpoints/.tmp-NAME``), with the model file cut to half: a ``kill -9`` mid-write."""
    from accelerate import Accelerator

    save_state = Accelerator.save_state

    def save_state_then_crash(self: Accelerator, output_dir: str | None = None, *args, **kwargs) -> str:
        saved = save_state(self, output_dir, *args, **kwargs)
        if output_dir is None or Path(output_dir).name != f".tmp-{name}":
            return saved
        self.wait_for_everyone()
        if self.is_main_process:
            model_file = Path(output_dir) / "model.safetensors"
            if model_file.is_file():
                with open(model_file, "r+b") as f:
                    f.truncate(model_file.stat().st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)
        return saved  # not reached

    Accelerator.save_state = save_state_then_crash


def install_from_environment() -> list[Callable[[int, int], None]]:
    """Install the checkpoint crash named by the environment; return the ``after_step`` hooks it asks for."""
    if os.environ.get(CRASH_IN_CHECKPOINT):
        crash_in_checkpoint(os.environ[CRASH_IN_CHECKPOINT])
    spec = os.environ.get(SIGNAL_AT_STEP)
    return [signal_at_step(spec)] if spec else []
