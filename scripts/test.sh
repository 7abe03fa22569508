#!/usr/bin/env bash
# The whole test suite: unit tests and integration tests against a real control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
GPUCOST_EXTRAS=dev,compress scripts/setup.sh
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
step "checking the house rules (import-linter contracts, ruff lint and format)"
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check .
.venv/bin/ruff format --check .
step "running the tests (pytest, in a private network namespace: scripts/netns.sh)"
exec scripts/netns.sh .venv/bin/python -m pytest "$@"
