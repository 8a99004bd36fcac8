"""The code and the docs' Python blocks pass ruff's lint and format checks (pinned ruff: the test extra)."""

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")], ids=["lint", "format"])
def test_ruff(args):
    proc = _ruff(*args)
    assert proc.returncode == 0, (
        f"`ruff {' '.join(args)}` failed; fix with `ruff {args[0]} --fix .` or `ruff format .`:\n{proc.stdout[-3000:]}{proc.stderr[-1000:]}"
    )
