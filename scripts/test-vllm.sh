#!/usr/bin/env bash
# vLLM's own configuration parser on every checkpoint `gpucost compress` writes (tests/vllm).
# vLLM 0.33.0 pins compressed-tensors 0.17.0 and llmcompressor 0.14.0.1 pins 0.19.0, so vLLM lives
# in a virtualenv of its own, as it does in the serving image: about 9.5 GB and 6 minutes cold,
# cached in ~/.cache/gpu-cost-operator/vllm-0.33.0. No GPU is needed: the parser is what decides
# whether a server will load the checkpoint's format. Not part of scripts/test.sh for its size.
set -euo pipefail
cd "$(dirname "$0")/.."
GPUCOST_EXTRAS=dev,compress scripts/setup.sh
VLLM_VERSION="${VLLM_VERSION:-0.33.0}"
VENV="${GPUCOST_CACHE:-$HOME/.cache/gpu-cost-operator}/vllm-$VLLM_VERSION"
if ! "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  printf '\n==> [%s] installing vLLM %s into %s (pip)\n' "$(date +%H:%M:%S)" "$VLLM_VERSION" "$VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --progress-bar off "vllm==$VLLM_VERSION" 2>&1 \
    | grep -E '^(Collecting vllm|Successfully)' || true
  "$VENV/bin/python" -c 'import vllm'
fi
GPUCOST_VLLM_PYTHON="$VENV/bin/python" exec .venv/bin/python -m pytest tests/vllm -p no:cacheprovider "$@"
