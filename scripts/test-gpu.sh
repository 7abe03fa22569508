#!/usr/bin/env bash
# The node agent's real NVML path on a machine with an NVIDIA GPU (torch for the allocating
# process, installed by setup). Without a GPU the tests are reported as skipped and the run exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
GPUCOST_EXTRAS=dev,compress scripts/setup.sh
exec .venv/bin/python -m pytest tests/gpu -rs -p no:cacheprovider "$@"
