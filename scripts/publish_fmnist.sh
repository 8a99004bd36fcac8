#!/usr/bin/env bash
# Publish a Fashion-MNIST pretraining run as hub/NAME, exactly as it is to be pushed: export the online backbone
# (timm Hub format), then evaluate it the way users load it (local-dir:) with every protocol, each beside its
# baselines, storing the results in hub/NAME/results/ and re-rendering the model card from them:
#   - weighted kNN (k=200, t=0.1), beside the same architecture at random init and raw pixels (the floor)
#   - linear probe (fast mode: cached features, L-BFGS), same baselines
#   - full fine-tuning (3 epochs) and 10 % semi-supervised fine-tuning (15 epochs), each beside the same
#     architecture trained from scratch with the same schedule (--compare-scratch; one scratch run per
#     architecture, reused by every model of it: runs/eval/scratch/)
# The weights are stored in float16 (DTYPE=float32 to keep them whole; docs/publishing.md): the evaluations load the
# export, so the card's numbers are those of the stored weights.
# Usage: bash scripts/publish_fmnist.sh RUN NAME        e.g. runs/mocov2_fmnist mocov2-resnet10t-fmnist
# Then: xmoco-zoo push hub/NAME ORG/NAME (token from HF_TOKEN or `hf auth login`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$1
NAME=$2
ORG=${ORG:-xmoco-zoo}
DTYPE=${DTYPE:-float16}
OUT=hub/$NAME
EVAL=runs/eval/$NAME
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
  --num_cpu_threads_per_process "$(nproc)")

# Every number of a published card must come from code that can be checked out: a committed tree, both for the
# evaluations (now) and for the training (its recorded commit).
# The rule is the one the evaluations record by: xmoco_zoo.results.git_commit() (hub/ is output and does not count).
# It checks the checkout xmoco_zoo is imported from (the code the evaluations run and record), which is this one
# after `pip install -e .` here, another if the package is installed from elsewhere.
if ! python -c 'import sys; from xmoco_zoo.results import git_commit; c = git_commit(); sys.exit(not c or c.endswith("+dirty"))'; then
  echo "error: the working tree has uncommitted changes (or is not a git checkout) — commit them first:" \
    "the evaluations record the commit" >&2
  exit 2
fi
xmoco-zoo export "$RUN" "$OUT" --repo-id "$ORG/$NAME" --dtype "$DTYPE"
python - "$OUT" <<'PY'
import json, sys
commit = json.load(open(f"{sys.argv[1]}/config.json"))["xmoco_zoo"].get("training", {}).get("commit") or ""
if not commit or commit.endswith("+dirty"):
    sys.exit(f"error: the run was trained from {commit or 'an unknown commit'}, not a committed tree — retrain "
             "it from a clean checkout: a published card names the commit its weights come from")
PY
"${LAUNCH[@]}" recipes/knn_eval.py --config recipes/configs/eval/knn_fmnist.yaml \
  "model.spec=local-dir:$OUT" "run.output_dir=$EVAL/knn"
"${LAUNCH[@]}" recipes/linear_eval.py --config recipes/configs/eval/linear_fmnist.yaml \
  "model.spec=local-dir:$OUT" "run.output_dir=$EVAL/linear"
# The from-scratch baselines depend on the architecture alone (and the schedule): one scratch run per architecture
# serves every model of it (finetune.py --scratch-dir checks the architecture and schedule before reusing one).
SCRATCH=runs/eval/scratch/$(python - "$OUT" <<'PY'
import hashlib, json, sys
cfg = json.load(open(f"{sys.argv[1]}/config.json"))
key = json.dumps([cfg["architecture"], cfg.get("model_args"), cfg["pretrained_cfg"].get("input_size")], sort_keys=True)
print(f"{cfg['architecture']}-{hashlib.sha256(key.encode()).hexdigest()[:10]}")
PY
)
"${LAUNCH[@]}" recipes/finetune.py --config recipes/configs/eval/finetune_fmnist.yaml --compare-scratch \
  --scratch-dir "$SCRATCH/finetune" "model.spec=local-dir:$OUT" "run.output_dir=$EVAL/finetune"
"${LAUNCH[@]}" recipes/finetune.py --config recipes/configs/eval/semisup_fmnist.yaml --compare-scratch \
  --scratch-dir "$SCRATCH/semisup10" "model.spec=local-dir:$OUT" "run.output_dir=$EVAL/semisup10"
# the training run's curves go on the card (re-rendered last, with every result)
xmoco-zoo plot curves "$RUN" --out "$OUT/training_curves.png"
xmoco-zoo card "$OUT" --repo-id "$ORG/$NAME"
xmoco-zoo list --write   # hub/results.csv, the README's model table and docs/models.md's sections
