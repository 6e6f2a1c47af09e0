#!/usr/bin/env bash
# Builds the control-plane binaries the test suite runs (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) and the real node's kubelet and kube-proxy, from source through the Go
# module proxy, into a cache outside the repository. A second run with the binaries present returns
# at once.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod resolves every staging module k8s.io/*
# through ./staging replace lines that a consumer never sees. A wrapper module replaces each of
# them with its published v0.X.Y tag, read from that same go.mod so a new staging module can
# never be missed.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:?}
ETCD_VERSION=${ETCD_VERSION:?}
KWOK_VERSION=${KWOK_VERSION:?}
OUT=${OUT:?}

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
BIN="$OUT/bin"
mkdir -p "$BIN"

have() { for b in "$@"; do [ -x "$BIN/$b" ] || return 1; done; }

build_kubernetes() {
  have kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy && return 0
  local staging="v0.${K8S_VERSION#v1.}" minor src modfile ldflags
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  src="$OUT/src/kubernetes"
  mkdir -p "$src" && cd "$src"
  modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["GoMod"])')
  {
    printf 'module scaleml.dev/control-plane/kubernetes\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
    sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$modfile" | sort -u |
      while read -r module; do printf '\t%s => %s %s\n' "$module" "$module" "$staging"; done
    printf ')\n'
  } > go.mod
  echo "kubernetes $K8S_VERSION: $(grep -c ' => ' go.mod) staging modules replaced with $staging"
  go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" "k8s.io/kubernetes/cmd/kubelet@$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kube-proxy@$K8S_VERSION"
  # The version stamp must match the source: kube components derive their emulation version from it.
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  go build -buildvcs=false -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  have etcd && return 0
  # server/v3 has relative replace lines, so it too needs a (replace-free) wrapper module.
  local src="$OUT/src/etcd"
  mkdir -p "$src" && cd "$src"
  printf 'module scaleml.dev/control-plane/etcd\n\ngo 1.25.0\n' > go.mod
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go build -buildvcs=false -trimpath -ldflags="-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  have kwok && [ -f "$OUT/kwok-stages.yaml" ] && return 0
  GOBIN="$BIN" go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The standalone kwok controller has no built-in stages; take the ones kwokctl uses by default.
  local dir stages
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
  stages="$dir/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$stages/$f"
    printf -- '---\n'
  done > "$OUT/kwok-stages.yaml.tmp"
  mv "$OUT/kwok-stages.yaml.tmp" "$OUT/kwok-stages.yaml"
}

build_etcd
build_kwok
build_kubernetes
"$BIN/kube-apiserver" --version
# sed, not head: head exits after one line and SIGPIPEs etcd, which pipefail turns into a failure.
"$BIN/etcd" --version | sed -n 1p
echo "control plane ready in $BIN"
