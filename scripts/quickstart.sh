#!/usr/bin/env bash
# The quickstart's main job: set up, pretrain MoCo v2 on Fashion-MNIST, export the backbone in timm's
# format, load it back with timm.create_model('local-dir:...') and print its kNN top-1 beside the same
# architecture at random init and beside raw pixels. Extra arguments are config overrides for the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=runs/mocov2_fmnist
# One process using every core (accelerate launch would otherwise pin it to one thread).
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  --num_cpu_threads_per_process "$(nproc)" \
  recipes/pretrain.py --config recipes/configs/mocov2_fmnist.yaml train.output_dir=$OUT "$@"
xmoco-zoo knn "local-dir:$OUT/backbone" --baselines --json "$OUT/knn_eval.json"
