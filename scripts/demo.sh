#!/usr/bin/env bash
# Set up (first run builds the control plane, ~5 min), then run the demo on the built-in examples.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# In a private network namespace (scripts/netns.sh): the replicas' pod IPs are local there.
exec scripts/netns.sh .venv/bin/gpucost demo "$@"
