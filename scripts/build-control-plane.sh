#!/usr/bin/env bash
# Build the real control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd,
# kwok, kwokctl) from Go modules and cache the binaries outside the repo. There is no Docker here
# and none of these ship on PyPI/Debian at usable versions, so this is the only offline-safe path.
# Idempotent: a warm cache returns in well under a second.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.5}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CAPI_VERSION="${CAPI_VERSION:-v1.13.6}"
KARPENTER_VERSION="${KARPENTER_VERSION:-v1.15.0}"
# Karpenter v1.15 needs Go >= 1.26.9: its build (only) takes this toolchain from the module proxy.
KARPENTER_GOTOOLCHAIN="${KARPENTER_GOTOOLCHAIN:-go1.27.3}"
# SeaweedFS tags no Go-module releases: the pseudo-version of its 4.53 commit (weed version 4.53)
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${GPUCOST_CACHE:-$HOME/.cache/gpu-cost-operator}"
BIN="$CACHE/$K8S_VERSION/bin"
WORK="$CACHE/$K8S_VERSION/build"

export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$BIN" "$WORK"
step() { printf '\n==> [%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

have() { for b in "$@"; do [[ -x "$BIN/$b" ]] || return 1; done; }

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler && { step "kubernetes $K8S_VERSION cached"; return; }
  step "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (cold: about 5 minutes on 2 cores)"
  local mod="$WORK/kubernetes" minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging_ver="v0.${K8S_VERSION#v1.}"
  mkdir -p "$mod"; cd "$mod"
  # k8s.io/kubernetes requires every staging module at v0.0.0 with a local replace; a consumer
  # module has to replace each with its published v0.Y.Z twin.
  cat > go.mod <<MOD
module gpucost.dev/controlplane/kubernetes

go 1.24.0

require k8s.io/kubernetes $K8S_VERSION
MOD
  local staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
    sample-cli-plugin sample-controller)
  for s in "${staging[@]}"; do go mod edit -replace "k8s.io/$s=k8s.io/$s@$staging_ver"; done
  step "resolving modules"
  go mod download -x 2>&1 | grep -E '^# get .*200' | sed 's/^/   /' | tail -n 3 || true
  go get "k8s.io/kubernetes@$K8S_VERSION" >&2
  local pkg="k8s.io/component-base/version" cpkg="k8s.io/client-go/pkg/version"
  local ld="-s -w"
  for p in $pkg $cpkg; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  step "compiling (go build -v prints each package as it compiles)"
  go build -v -trimpath -ldflags "$ld" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler 2>&1 | awk '{ n++; if (n % 100 == 0) printf "   %d packages compiled (last: %s)\n", n, $0; fflush() }' >&2
  have kube-apiserver kube-controller-manager kube-scheduler
}

build_etcd() {
  have etcd && { step "etcd $ETCD_VERSION cached"; return; }
  step "building etcd $ETCD_VERSION"
  local mod="$WORK/etcd"; mkdir -p "$mod"; cd "$mod"
  cat > go.mod <<MOD
module gpucost.dev/controlplane/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  have kwok kwokctl && { step "kwok $KWOK_VERSION cached"; return; }
  step "building kwok and kwokctl $KWOK_VERSION"
  # Its own GOBIN install: kwok pins newer k8s.io libraries than the control plane.
  GOFLAGS= GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

# KWOK's own stage files (node lifecycle, pod lifecycle) from the same module. The dev cluster
# passes them to kwokctl with one change: node-initialize waits for the node's boot-delay
# annotation, which is how the kwok provider mimics instance boot time.
copy_kwok_stages() {
  [[ -s "$BIN/kwok-stages/node-initialize.yaml" ]] && return
  step "copying kwok $KWOK_VERSION stage files"
  local dir; dir=$(cd "$WORK" && GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  rm -rf "$BIN/kwok-stages"; mkdir -p "$BIN/kwok-stages"
  cp "$dir/kustomize/stage/node/fast/node-initialize.yaml" \
     "$dir/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" \
     "$dir"/kustomize/stage/pod/fast/pod-*.yaml "$BIN/kwok-stages/"
  chmod u+w "$BIN"/kwok-stages/*.yaml
}

# Cluster API's CRDs, as its own module ships them (config/crd/bases), for the clusterAPI provider's
# tests: the API server validates our MachineDeployment/Machine writes against the real schemas.
copy_capi_crds() {
  [[ -s "$BIN/capi-crds/cluster.x-k8s.io_machinedeployments.yaml" ]] && return
  step "copying Cluster API $CAPI_VERSION CRDs"
  local dir; dir=$(cd "$WORK" && GOFLAGS= go mod download -json "sigs.k8s.io/cluster-api@$CAPI_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  rm -rf "$BIN/capi-crds"; mkdir -p "$BIN/capi-crds"
  for kind in machinedeployments machinesets machines; do
    cp "$dir/config/crd/bases/cluster.x-k8s.io_$kind.yaml" "$BIN/capi-crds/"
  done
  chmod u+w "$BIN"/capi-crds/*.yaml
}

# SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process), the S3-compatible
# store the CompressionJob worker's s3:// tests upload to and download from.
build_seaweedfs() {
  have weed && { step "seaweedfs cached"; return; }
  step "building SeaweedFS (weed) for the S3 tests (cold: about 6 minutes on 2 cores)"
  local mod="$WORK/seaweedfs"; mkdir -p "$mod"; cd "$mod"
  cat > go.mod <<MOD
module gpucost.dev/objectstore

go 1.24.0
MOD
  go get "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/weed" github.com/seaweedfs/seaweedfs/weed
}

# Real Karpenter with its KWOK cloud provider (the module's kwok main package), and its CRDs as the
# module ships them, for the karpenter provider's tests: Karpenter launches the NodeClaims gpucost
# creates and joins KWOK nodes for them.
build_karpenter() {
  have karpenter-kwok && [[ -s "$BIN/karpenter-crds/karpenter.sh_nodeclaims.yaml" ]] && {
    step "karpenter $KARPENTER_VERSION cached"; return; }
  step "building Karpenter $KARPENTER_VERSION with its KWOK provider (cold: about 3 minutes)"
  local mod="$WORK/karpenter"; mkdir -p "$mod"; cd "$mod"
  cat > go.mod <<MOD
module gpucost.dev/karpenter

go 1.24.0
MOD
  GOTOOLCHAIN="$KARPENTER_GOTOOLCHAIN" go get "sigs.k8s.io/karpenter@$KARPENTER_VERSION" >&2
  GOTOOLCHAIN="$KARPENTER_GOTOOLCHAIN" go build -trimpath -ldflags "-s -w" \
    -o "$BIN/karpenter-kwok" sigs.k8s.io/karpenter/kwok
  local dir; dir=$(GOTOOLCHAIN="$KARPENTER_GOTOOLCHAIN" GOFLAGS= go mod download -json \
    "sigs.k8s.io/karpenter@$KARPENTER_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  rm -rf "$BIN/karpenter-crds"; mkdir -p "$BIN/karpenter-crds"
  cp "$dir/kwok/charts/crds/karpenter.sh_nodeclaims.yaml" \
     "$dir/kwok/charts/crds/karpenter.sh_nodepools.yaml" \
     "$dir/kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml" "$BIN/karpenter-crds/"
  chmod u+w "$BIN"/karpenter-crds/*.yaml
}

start=$(date +%s)
build_etcd
build_kwok
copy_kwok_stages
copy_capi_crds
build_kubernetes
build_seaweedfs
build_karpenter
step "control plane binaries ready in $BIN ($(( $(date +%s) - start ))s)"
echo "$BIN"
