#!/usr/bin/env bash
# Set up (first run builds the control plane, ~5 min), then run the demo on the built-in examples.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/gpucost demo "$@"
