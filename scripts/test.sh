#!/usr/bin/env bash
# Set up (idempotent) and run the test suite: 2 pytest workers (pytest-xdist), each file on one worker, one thread
# each (tests/conftest.py); XMOCO_TEST_WORKERS=0 runs it in one process. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec python3 -m pytest -q -n "${XMOCO_TEST_WORKERS:-2}" --dist loadfile "$@"
