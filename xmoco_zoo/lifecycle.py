"""How a training run stops: on SIGTERM, on a non-finite loss, and what the loader workers do meanwhile.

SIGTERM (Slurm's time limit, ``scancel``, ``kill PID``) only sets a flag (:class:`StopOnSigterm`); the loop
finishes its step, every process learns of the flag through the step's collective (:func:`any_process` outside
a step), a checkpoint is written and the process exits with :class:`TrainingInterrupted` (status 143). A NaN or
inf loss raises :class:`NonFiniteLossError` and writes nothing, so the last good checkpoint is kept.
See docs/scaling.md ("Checkpoints, resume and faults").
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import torch
from accelerate import Accelerator


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stops and the last good checkpoint is kept."""


class TrainingInterrupted(SystemExit):
    """SIGTERM: the checkpoint is written and the process exits with 128 + SIGTERM = 143."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


class StopOnSigterm:
    """While active, SIGTERM only sets ``requested``: the loop finishes its step, checkpoints and exits.

    Further SIGTERMs are absorbed, not taken as "exit now": under Slurm every process of the job step gets
    SIGTERM and the launcher (torch's elastic agent, behind ``accelerate launch --multi_gpu`` and torchrun)
    forwards its own copy to its workers, so each worker receives two within milliseconds. To exit at once,
    send SIGINT (Ctrl-C) or SIGKILL; the launchers and Slurm send SIGKILL after their grace period anyway.
    Outside the main thread it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._told_repeat = False
        self._previous = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            if not self._told_repeat:
                self._told_repeat = True
                print(
                    "SIGTERM again: already stopping after this step (Ctrl-C or kill -9 to exit at once)",
                    file=sys.stderr,
                    flush=True,
                )
            return
        self.requested = True
        print("SIGTERM: finishing this step, then writing a checkpoint", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def ignore_sigterm(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the worker ignores SIGTERM.

    Sent to the whole process group (Slurm, ``kill -TERM -PGID``), SIGTERM would kill the workers and the next
    batch would raise before the main process could write its checkpoint. They exit with the main process.
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether ``flag`` is set on any process (one all-reduce under several processes; every rank must call it)."""
    t = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(t, reduction="sum").item() > 0) if accelerator.num_processes > 1 else flag
