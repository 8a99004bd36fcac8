"""Faults at recipe level, in subprocesses as users run it: kill -9 (during training, during a checkpoint
write), SIGTERM (mid-epoch checkpoint, exact resume), NaN loss, and checkpoints that must be refused.

Each killed run is the real thing: the process sends itself SIGKILL/SIGTERM through the hooks of
tests/fault_hooks.py (``XMOCO_TEST_SIGNAL_AT_STEP``, ``XMOCO_TEST_CRASH_IN_CHECKPOINT``, installed by
tests/hooked_pretrain.py), which only pick the moment; the kernel delivers the signal as for ``kill -9 PID`` /
``kill PID``. The other runs are the recipe itself. Every resumed run must end bitwise equal (weights, momentum
encoder, queue, optimizer state) to one uninterrupted reference run.

Setup: the conftest's tiny run (test_resnet, 128 synthetic images, batch 16: 8 steps/epoch, 2 epochs, MoCo v2
with split BN, whose key permutations draw from torch's RNG, so the RNG state must be resumed exactly too).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from xmoco_zoo import checkpoint as ckpt

from .conftest import HOOKED_RECIPE, RECIPE, ROOT, TINY, launch_two

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # a busy 2-core machine: one thread per run is faster and steadier


def _run(*args: str, hooks: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """The recipe in a fresh process, with the fault ``hooks`` (tests/fault_hooks.py's environment variables) if
    given; returns whatever happened (the tests check the exit status)."""
    cmd = [sys.executable, str(HOOKED_RECIPE if hooks else RECIPE), *TINY, *args]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD, **(hooks or {})},
        start_new_session=True,  # its own process group: TERMGROUP signals it and its loader workers only
    )


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _names(out) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def _summary(out) -> dict:
    d = json.loads((out / "summary.json").read_text())
    d.pop("export", None)  # the path
    d.pop("train_minutes")  # wall clock
    return d


def _assert_same_training_state(a, b) -> None:
    """Bitwise: every tensor of the model file (online, momentum, queue, BN statistics) and of the optimizer."""
    ma, mb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ma.keys() == mb.keys() and "queue.queue" in ma
    for k in ma:
        assert torch.equal(ma[k], mb[k]), f"{k} differs from the uninterrupted run"
    oa = torch.load(a / "optimizer.bin", weights_only=True)
    ob = torch.load(b / "optimizer.bin", weights_only=True)
    for i, st in oa["state"].items():
        for name, t in st.items():
            assert torch.equal(t, ob["state"][i][name]), f"optimizer state {i}/{name} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    _ok(_run(f"train.output_dir={out}"))
    assert _names(out) == ["epoch_0001", "epoch_0002"]
    return out


def test_kill9_during_training_and_during_a_checkpoint_write_then_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    # kill -9 after step 11 (3 steps into epoch 2): epoch_0001 is complete, nothing else.
    p = _run(f"train.output_dir={out}", hooks={"XMOCO_TEST_SIGNAL_AT_STEP": "11:KILL"})
    assert p.returncode == -9, p.stderr[-2000:]
    assert _names(out) == ["epoch_0001"] and not (out / "summary.json").exists()

    # Resume; kill -9 while epoch_0002 is being written (its model file half written).
    p = _run(f"train.output_dir={out}", "--resume", hooks={"XMOCO_TEST_CRASH_IN_CHECKPOINT": "epoch_0002"})
    assert p.returncode == -9, p.stderr[-2000:]
    assert "resumed from" in p.stdout and "epoch_0001 (epoch 1, step 8)" in p.stdout
    assert _names(out) == [".tmp-epoch_0002", "epoch_0001"]
    partial = out / "checkpoints" / ".tmp-epoch_0002"
    assert not (partial / ckpt.META).exists()
    with pytest.raises(Exception):  # noqa: B017  (safetensors raises its own error type)
        load_file(str(partial / "model.safetensors"))
    # The partial folder is never a candidate, and asking for it by name is refused.
    assert ckpt.list_checkpoints(out / "checkpoints") == [out / "checkpoints" / "epoch_0001"]
    with pytest.raises(ckpt.CheckpointError, match="interrupted"):
        ckpt.find_checkpoint(out / "checkpoints", str(partial))

    # Resume again: from epoch_0001 (the last complete checkpoint), to the end.
    p = _ok(_run(f"train.output_dir={out}", "--resume"))
    assert "epoch_0001 (epoch 1, step 8)" in p.stdout
    assert _names(out) == ["epoch_0001", "epoch_0002"], "the partial folder is cleaned up"
    _assert_same_training_state(reference / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")
    assert _summary(out) == _summary(reference)


def test_sigterm_writes_a_mid_epoch_checkpoint_and_resume_continues_at_the_next_batch(tmp_path, reference):
    """SIGTERM to the whole process group (as Slurm or ``kill -TERM -PGID`` do: the 2 loader workers get it
    too, and ignore it) after step 11, 3 batches into epoch 2."""
    out = tmp_path / "run"
    p = _run(
        f"train.output_dir={out}", "data.num_workers=2", hooks={"XMOCO_TEST_SIGNAL_AT_STEP": "11:TERMGROUP"}
    )
    assert p.returncode == 143, p.stderr[-3000:]
    assert "SIGTERM: stopped after step 11" in p.stdout
    mid = out / "checkpoints" / "epoch_0001_step_00000011"
    assert _names(out) == ["epoch_0001", mid.name]
    meta = json.loads((mid / ckpt.META).read_text())
    assert meta["epoch"] == 1 and meta["mid_epoch_step"] == 11 and meta["training"]["steps"] == 11
    assert ckpt.find_checkpoint(out / "checkpoints") == mid, "the newest checkpoint"

    # The resumed half runs without loader workers: the skipped batches and the views do not depend on them.
    p = _ok(_run(f"train.output_dir={out}", "--resume"))
    assert "batch 3 of epoch 2" in p.stdout
    _assert_same_training_state(reference / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")
    assert _summary(out) == _summary(reference)


def test_sigterm_at_a_mid_epoch_knn_mark_evaluates_it_on_resume(tmp_path, reference):
    """SIGTERM after step 12, the step of the fractional kNN mark 1.5 (8 steps per epoch): the monitor is skipped
    to stop at once, and the resumed run evaluates that mark before its next batch. With the monitor's RNG draws
    undone, it ends bitwise where the reference run (no mark, never interrupted) ends."""
    out = tmp_path / "run"
    args = [f"train.output_dir={out}", "knn.epochs=[1.5]"]
    p = _run(*args, hooks={"XMOCO_TEST_SIGNAL_AT_STEP": "12:TERM"})
    assert p.returncode == 143 and "epoch 1.50" not in p.stdout, p.stderr[-3000:]
    p = _ok(_run(*args, "--resume"))
    assert "epoch 1.50 (step 12): kNN" in p.stdout and p.stdout.count("kNN top-1") == 2, (
        "the mark, then epoch 2"
    )
    _assert_same_training_state(reference / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")


def _copy_first_epoch(reference, out):
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(reference / "checkpoints/epoch_0001", out / "checkpoints/epoch_0001")
    return out / "checkpoints/epoch_0001"


def _file_bytes(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_nan_loss_stops_naming_step_and_term_and_the_kept_checkpoint_still_resumes(tmp_path, reference):
    out = tmp_path / "run"
    good = _copy_first_epoch(reference, out)
    before = _file_bytes(good)
    p = _run(f"train.output_dir={out}", "train.base_lr=1e30", "--resume")
    assert p.returncode != 0
    assert "NonFiniteLossError: step" in p.stderr and "(epoch 2): loss" in p.stderr
    assert "last good checkpoint" in p.stderr
    assert _names(out) == ["epoch_0001"] and _file_bytes(good) == before, "the checkpoint is untouched"
    # ... and loadable: resuming from it with the right lr reproduces the uninterrupted run.
    _ok(_run(f"train.output_dir={out}", "--resume"))
    _assert_same_training_state(reference / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")


# Several refusals in one process (each is a main() call that must fail before training).
_REFUSALS = textwrap.dedent(
    """
    import json, sys
    from xmoco_zoo.pretrain import main
    tiny, cases = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    found = {}
    for name, args in cases.items():
        try:
            main([*tiny, *args])
            found[name] = "no error"
        except Exception as e:
            found[name] = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps(found))
    """
)


class _Payload:
    """A pickle that runs code when loaded without weights_only (it would create a marker file)."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def test_resume_refuses_other_methods_unsafe_pickles_and_unreadable_files(tmp_path, reference):
    runs = {}
    marker = tmp_path / "code_ran"
    for case in ("method", "unsafe_state", "unsafe_rng", "truncated", "truncated_model"):
        out = tmp_path / case
        folder = _copy_first_epoch(reference, out)
        runs[case] = out
        if case == "unsafe_state":  # Accelerate loads this one with weights_only=False
            torch.save(_Payload(marker), folder / "custom_checkpoint_0.pkl")
        elif case == "unsafe_rng":  # ... and silently skips this one if it cannot load it
            torch.save({"random_state": _Payload(marker)}, folder / "random_states_0.pkl")
        elif case.startswith("truncated"):  # a damaged file in a complete checkpoint (disk, copy)
            name = "model.safetensors" if case == "truncated_model" else "optimizer.bin"
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 2])
    cases = {
        name: [f"train.output_dir={out}", "--resume", *(["method.name=mocov3"] if name == "method" else [])]
        for name, out in runs.items()
    }
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSALS, json.dumps(TINY), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **ONE_THREAD},
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, proc.stderr[-4000:]
    found = json.loads(lines[-1][len("RESULT ") :])
    assert (
        found["method"].startswith("CheckpointError")
        and "method: checkpoint 'mocov2' vs config 'mocov3'" in (found["method"])
    )
    for case in ("unsafe_state", "unsafe_rng"):
        assert found[case].startswith("CheckpointError"), found[case]
        assert "refused to load: not plain weights (it references 'exec')" in found[case]
    assert (
        found["truncated"].startswith("CheckpointError")
        and "optimizer.bin: cannot be read" in found["truncated"]
    )
    assert "model.safetensors: cannot be read" in found["truncated_model"], found["truncated_model"]
    assert not marker.exists(), "no code from a checkpoint ever ran"


def test_export_refuses_a_weights_pickle_that_is_not_plain_weights(tmp_path, reference):
    """The other place a checkpoint pickle is read: export from a folder with pytorch_model.bin."""
    from xmoco_zoo.export import backbone_state_from_checkpoint

    folder = tmp_path / "ckpt"
    shutil.copytree(reference / "checkpoints/epoch_0001", folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code_ran"
    torch.save({"encoder.online.backbone.x": _Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global: GLOBAL exec"):
        backbone_state_from_checkpoint(folder)
    assert not marker.exists()


def _run_two(*args: str, hooks: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    script = HOOKED_RECIPE if hooks else RECIPE
    return launch_two(*TINY, "train.batch_size=8", *args, env=hooks, timeout=timeout, script=script)


@pytest.fixture(scope="module")
def reference_two(tmp_path_factory):
    """An uninterrupted run of the tiny job in 2 processes (batch 8 each)."""
    ref = tmp_path_factory.mktemp("faults_two") / "reference"
    _ok(_run_two(f"train.output_dir={ref}"))
    return ref


@pytest.mark.slow
def test_two_processes_sigterm_on_one_rank_stops_both_at_the_same_step_and_resume_is_exact(
    tmp_path, reference_two
):
    """SIGTERM reaching one process only (rank 1, after step 3): the per-step all-reduce makes both stop after
    the same step and write one mid-epoch checkpoint (no hang in a collective); resuming with 2 processes ends
    bitwise equal to an uninterrupted 2-process run (shuffle BN across processes, per-rank RNG states)."""
    ref, out = reference_two, tmp_path / "run"
    p = _run_two(f"train.output_dir={out}", hooks={"XMOCO_TEST_SIGNAL_AT_STEP": "3:TERM:1"})
    assert p.returncode != 0 and "SIGTERM: stopped after step 3" in p.stdout, p.stderr[-3000:]
    assert _names(out) == ["epoch_0000_step_00000003"]
    meta = json.loads((out / "checkpoints/epoch_0000_step_00000003" / ckpt.META).read_text())
    assert meta["training"]["processes"] == 2 and meta["training"]["steps"] == 3
    p = _ok(_run_two(f"train.output_dir={out}", "--resume"))
    assert "batch 3 of epoch 1" in p.stdout
    _assert_same_training_state(ref / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")


@pytest.mark.slow
def test_slurm_sigterm_to_every_process_under_the_elastic_launcher_still_checkpoints(tmp_path, reference_two):
    """Slurm's stop (time limit, scancel, preemption) sends SIGTERM to every process of the job step: the
    launcher (``accelerate launch --multi_gpu``, torch's elastic agent) and both workers. The agent forwards the
    SIGTERM it got to its workers, so a worker receives it twice within milliseconds (the hook makes sure rank
    0 has handled its first copy when the second comes). The copy must not be taken as "exit now": both
    workers finish step 5, write one mid-epoch checkpoint and exit, and resuming ends
    bitwise equal to an uninterrupted 2-process run."""
    out = tmp_path / "run"
    p = _run_two(f"train.output_dir={out}", hooks={"XMOCO_TEST_SIGNAL_AT_STEP": "5:TERMSLURM:0"})
    assert p.returncode != 0, "the launcher reports the stop"
    assert "SIGTERM: stopped after step 5" in p.stdout, f"{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    assert "closing signal SIGTERM" in p.stderr, "the agent forwarded its copy"
    # Rank 0 had handled its first copy when the forwarded one came: it absorbed a second. (Rank 1, blocked in
    # the step's collective, may see its two copies merged into one pending signal, as the kernel does.)
    assert p.stderr.count("SIGTERM again: already stopping") >= 1, "a worker got (and absorbed) a second one"
    assert _names(out) == ["epoch_0000_step_00000005"]
    p = _ok(_run_two(f"train.output_dir={out}", "--resume"))
    assert "batch 5 of epoch 1" in p.stdout
    _assert_same_training_state(reference_two / "checkpoints/epoch_0002", out / "checkpoints/epoch_0002")
