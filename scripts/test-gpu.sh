#!/usr/bin/env bash
# The node agent's real NVML path on a machine with an NVIDIA GPU (torch for the allocating
# process: pip install torch). Without a GPU the tests are reported as skipped, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest tests/gpu -rs -p no:cacheprovider "$@"
