#!/usr/bin/env bash
# Installs everything xmoco-zoo needs on a fresh Debian/Ubuntu machine, idempotently:
#   - Fashion-MNIST from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist)
#   - torch + torchvision (TORCH_SPEC, default the versions this project is tested with)
#   - xmoco-zoo itself, editable, with the extras the tests use: test, plots, hf (datasets), onnx
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${XMOCO_DATA:-}" ]; then
  echo "== installing Fashion-MNIST (apt: dataset-fashion-mnist)"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist
fi

if ! $PY -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "== installing ${TORCH_SPEC:=torch==2.14.1 torchvision==0.29.1}"
  # shellcheck disable=SC2086
  $PY -m pip install -q $TORCH_SPEC
fi

echo "== installing xmoco-zoo (editable, with the test, plots, hf and onnx extras)"
$PY -m pip install -q -e ".[test,plots,hf,onnx]"
