#!/usr/bin/env bash
# The peer library's reference curve for the zoo's time-to-accuracy plot (issue 15; docs/models.md): lightly's MoCo
# v2 recipe (its CIFAR-10 settings) on resnet18 at 32 px for 10 epochs, kNN after every epoch, on this machine,
# through benchmarks/vs_lightly.py's curve mode (about 2 hours on 2 cores: its first epoch took 12.0 training minutes
# and a minute of kNN on 2026-12-05; its loss is symmetric, two passes a step). It checkpoints after every epoch,
# so it can be spread over several sessions. lightly is a benchmark-only
# dependency: it goes into its own venv (system site packages kept, so torch is this machine's), made once.
# The run resumes from its checkpoint under runs/; the finished curve is copied to docs/results/lightly_curve/ with
# the machine's speed (benchmarks/machine_pace.py, measured before each start) as its "machine_pace".
#   bash scripts/dev/lightly_curve.sh
set -euo pipefail
MAIN=${XMOCO_MAIN:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$(dirname "$0")/../.."
VENV=${XMOCO_LIGHTLY_VENV:-$MAIN/runs/venv-lightly}
NAME=lightly_mocov2_resnet18_32px.json
DONE=$MAIN/docs/results/lightly_curve/$NAME
if [ -f "$DONE" ]; then echo "lightly curve: done ($DONE)"; exit 0; fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import lightly" 2>/dev/null; then
  python -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q "lightly==1.6.0"
fi
mkdir -p runs/lightly_curve
# this machine's speed at every start (xmoco_zoo/pace.py): the curve's minutes go on the reference machine's scale
PACE=runs/lightly_curve/machine_pace.json
# vs_lightly.py resumes from the checkpoint beside its --out: a start without one trains from scratch and keeps
# only its own measurement (--fresh), a resumed start adds one
CKPT="runs/lightly_curve/${NAME%.json}.checkpoint.pt"
FRESH=--fresh
if [ -f "$CKPT" ]; then FRESH=; fi
# shellcheck disable=SC2086
python benchmarks/machine_pace.py --threads 2 --json "$PACE" $FRESH
"$VENV/bin/python" benchmarks/vs_lightly.py --mode curve --recipe lightly_cifar10 --backbone resnet18 \
  --image-size 32 --epochs 10 --threads 2 --out "runs/lightly_curve/$NAME"
mkdir -p "$(dirname "$DONE")"
python - "runs/lightly_curve/$NAME" "$PACE" "$DONE.tmp" <<'PY'
import json, sys
from xmoco_zoo.pace import read_pace
curve = json.load(open(sys.argv[1]))
curve["machine_pace"] = read_pace(sys.argv[2])
open(sys.argv[3], "w").write(json.dumps(curve, indent=2) + "\n")
PY
mv "$DONE.tmp" "$DONE"
echo "lightly curve: $DONE"
