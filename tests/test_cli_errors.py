"""A user's mistake prints one line, ``error: <what> — <fix>``, and exits with status 2; ``--debug`` or
``XMOCO_DEBUG=1`` shows the traceback; a bug still raises with its traceback (xmoco_zoo/errors.py)."""

import os
import subprocess
import sys

import pytest
from omegaconf.errors import InterpolationResolutionError

from xmoco_zoo.config import ConfigError
from xmoco_zoo.errors import EXIT_USER_ERROR, OptionError, UserError, run_main, user_message
from xmoco_zoo.experiment import load_config
from xmoco_zoo.methods import create_method

from .conftest import ROOT, TINY, launch_two, run_cli

FMNIST = str(ROOT / "recipes/configs/mocov2_fmnist.yaml")


def _recipe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """recipes/pretrain.py ARGS in a fresh process, whatever its exit status."""
    return subprocess.run(
        [sys.executable, str(ROOT / "recipes/pretrain.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        timeout=300,
    )


def _error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a user error: exit status 2, no traceback, the line last on stderr."""
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == EXIT_USER_ERROR, out
    assert "Traceback" not in proc.stderr, out
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out
    assert proc.stderr.strip().splitlines()[-1] == lines[0], out
    return lines[0]


def test_unknown_config_key_through_the_recipe():
    line = _error_line(_recipe("--config", FMNIST, "train.epoch=3"))
    assert "train.epoch" in line and "Did you mean: 'epochs'" in line


def test_unknown_method_through_the_cli():
    line = _error_line(run_cli("pretrain", "--config", FMNIST, "method.name=mocov9", check=False))
    assert "unknown method 'mocov9'" in line and "did you mean 'mocov3'?" in line


def test_missing_dataset_root(tmp_path):
    missing = tmp_path / "no_such_folder"
    args = [*TINY, "data.dataset=imagefolder", f"data.root={missing}", f"train.output_dir={tmp_path / 'run'}"]
    line = _error_line(_recipe(*args))
    assert f"image folder {missing} does not exist" in line and "point data.root at" in line
    assert not (tmp_path / "run").exists()


def test_refused_checkpoint(tmp_path):
    not_a_checkpoint = tmp_path / "some_folder"
    not_a_checkpoint.mkdir()
    args = [*TINY, "knn.enabled=false", f"train.output_dir={tmp_path / 'run'}"]
    line = _error_line(_recipe(*args, "--resume-from", str(not_a_checkpoint)))
    assert f"{not_a_checkpoint} is not a complete xmoco-zoo checkpoint" in line and "--resume" in line


def test_unknown_local_dir_model_for_knn(tmp_path):
    missing = tmp_path / "no_model"
    proc = run_cli("knn", f"local-dir:{missing}", "--output-dir", str(tmp_path / "out"), check=False)
    line = _error_line(proc)
    assert f"{missing} is not a timm model folder (no config.json)" in line and "xmoco-zoo export" in line


def test_unknown_hf_hub_model_offline_for_eval(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # an empty cache: nothing to fall back on
    args = ["eval", "knn", "model.spec=hf-hub:nobody/no-such-model", f"run.output_dir={tmp_path / 'out'}"]
    line = _error_line(run_cli(*args, env=env, check=False))
    assert "hf-hub:nobody/no-such-model: not in the local Hugging Face cache" in line and "local-dir:" in line


def test_unknown_eval_protocol_is_a_user_error_too():
    line = _error_line(run_cli("eval", "knnn", check=False))
    assert "got 'knnn'" in line and "knn, linear, finetune" in line


@pytest.mark.parametrize("how", ["--debug", "XMOCO_DEBUG=1"])
def test_debug_shows_the_traceback(how):
    args, env = ((how,), None) if how == "--debug" else ((), {"XMOCO_DEBUG": "1"})
    proc = run_cli("pretrain", "--config", FMNIST, "train.epoch=3", *args, env=env, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]  # an uncaught exception, as before
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ConfigError: command line: Key 'epoch' not in 'TrainConfig'" in proc.stderr
    assert "error: " not in proc.stderr


@pytest.mark.slow
def test_under_accelerate_launch_a_rank_prints_its_line_and_exits_2():
    """Each rank prints its line, unless the launcher stops it first (it stops the others when one rank exits);
    the launcher's own report (its ChildFailedError traceback) follows: documented in docs/architecture.md."""
    proc = launch_two(*TINY, "method.name=mocov9")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert lines and "unknown method 'mocov9'" in lines[0] and len(set(lines)) == 1, proc.stderr[-4000:]
    assert "exitcode  : 2" in proc.stderr and proc.returncode == 1, proc.stderr[-4000:]
    assert f'File "{ROOT / "xmoco_zoo"}' not in proc.stderr, "no traceback from our code"


# In-process: what run_main catches, what it lets through, and --debug taken out of argv.


def _raises(exc: BaseException):
    def main(argv: list[str]) -> int:
        raise exc

    return main


def test_run_main_prints_a_user_error_and_returns_2(capsys, monkeypatch):
    monkeypatch.delenv("XMOCO_DEBUG", raising=False)
    seen = []
    assert run_main(lambda argv: seen.append(argv) or {"top1": 1.0}, ["a=1"]) == 0  # a recipe's summary
    assert seen == [["a=1"]]
    assert run_main(lambda argv: 3, []) == 3  # the CLI's exit status
    assert run_main(_raises(ConfigError("train.x: bad — set train.y")), []) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: train.x: bad — set train.y\n"


def test_run_main_with_debug_reraises_and_strips_the_flag(monkeypatch):
    monkeypatch.delenv("XMOCO_DEBUG", raising=False)
    seen = []

    def main(argv: list[str]) -> int:
        seen.append(argv)
        raise ConfigError("bad")

    with pytest.raises(ConfigError, match="bad"):
        run_main(main, ["--debug", "train.epochs=1"])
    assert seen == [["train.epochs=1"]]
    monkeypatch.setenv("XMOCO_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_main(main, [])
    monkeypatch.setenv("XMOCO_DEBUG", "0")
    assert run_main(main, []) == EXIT_USER_ERROR


@pytest.mark.parametrize(
    "bug", [RuntimeError("a bug"), KeyError("missing"), ValueError("plain"), TypeError("t")]
)
def test_a_bug_still_raises(bug, monkeypatch):
    monkeypatch.delenv("XMOCO_DEBUG", raising=False)
    with pytest.raises(type(bug)):
        run_main(_raises(bug), [])


def test_user_errors_keep_their_builtin_types():
    """Existing ``except ValueError`` / ``except TypeError`` code keeps catching them."""
    from xmoco_zoo.checkpoint import CheckpointError
    from xmoco_zoo.data import BadImageError, DatasetNotFoundError
    from xmoco_zoo.protocols.common import EvalError

    assert issubclass(ConfigError, ValueError) and issubclass(EvalError, ValueError)
    assert issubclass(CheckpointError, RuntimeError) and issubclass(BadImageError, RuntimeError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    for cls in (ConfigError, EvalError, CheckpointError, BadImageError, DatasetNotFoundError, OptionError):
        assert issubclass(cls, UserError)
    with pytest.raises(OptionError, match="did you mean 'queue_size'"):
        create_method("mocov2", "test_resnet", queu_size=8)
    with pytest.raises(TypeError):
        create_method("mocov2", "test_resnet", queue_size="many")
    with pytest.raises(ValueError, match="unknown method 'moco2' — did you mean 'mocov2'"):
        create_method("moco2", "test_resnet")


def test_library_errors_that_only_user_input_causes(capsys, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    monkeypatch.delenv("XMOCO_DEBUG", raising=False)
    # An OmegaConf interpolation in an override escapes the config's own checks.
    with pytest.raises(InterpolationResolutionError):
        load_config(None, ["train.epochs=${nowhere}"])
    assert run_main(lambda argv: load_config(None, argv), ["train.epochs=${nowhere}"]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: config: Interpolation key 'nowhere' not found (key: train.epochs) — fix")
    assert err.count("\n") == 1
    # huggingface_hub's errors (built without a response: their constructors vary between versions)
    repo = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(repo, "404 Client Error.\n\nRepository Not Found for url: ...")
    assert "no such repository on the Hub" in user_message(repo)
    assert "HF_HUB_OFFLINE" in user_message(LocalEntryNotFoundError("not cached"))
    assert user_message(OSError("disk full")) is None


def test_a_user_error_in_a_dataloader_worker_loses_the_worker_traceback():
    from torch._utils import ExceptionWrapper

    try:
        raise ConfigError("data.x: bad — set data.y")
    except ConfigError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ConfigError) as e:
        wrapped.reraise()
    assert "Original Traceback" in str(e.value)
    assert user_message(e.value) == "data.x: bad — set data.y"
