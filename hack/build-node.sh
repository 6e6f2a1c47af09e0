#!/usr/bin/env bash
# Builds what a real node of the test suite runs besides the kubelet and kube-proxy (which
# build-control-plane.sh makes with the other Kubernetes binaries): containerd and its runc shim,
# runc, the CNI plugins, CoreDNS and the sandbox ("pause") program, from source through the Go
# module proxy, into a cache outside the repository. A second run with everything present returns
# at once. runc needs libseccomp's headers (Debian's libseccomp-dev, which `make node` installs).
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:?}
RUNC_VERSION=${RUNC_VERSION:?}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:?}
COREDNS_VERSION=${COREDNS_VERSION:?}
OUT=${OUT:?}

export GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=mod
BIN="$OUT/bin"
CNI="$OUT/cni"
mkdir -p "$BIN" "$CNI"

have() { for b in "$@"; do [ -x "$b" ] || return 1; done; }

build_containerd() {
  have "$BIN/containerd" "$BIN/containerd-shim-runc-v2" "$BIN/ctr" && return 0
  local module=github.com/containerd/containerd/v2/cmd
  # No btrfs, devmapper or zfs snapshotters: the node uses overlayfs, and these need C headers.
  CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath -ldflags="-s -w" -tags no_btrfs,no_devmapper,no_zfs \
    "$module/containerd@$CONTAINERD_VERSION" "$module/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$module/ctr@$CONTAINERD_VERSION"
}

build_runc() {
  have "$BIN/runc" && return 0
  # seccomp: the RuntimeDefault profile that Pod Security "restricted" requires is applied by runc.
  CGO_ENABLED=1 GOBIN="$BIN" go install -trimpath -ldflags="-s -w" -tags seccomp \
    "github.com/opencontainers/runc@$RUNC_VERSION"
}

build_cni() {
  have "$CNI/bridge" "$CNI/host-local" "$CNI/loopback" "$CNI/portmap" && return 0
  local module=github.com/containernetworking/plugins/plugins
  CGO_ENABLED=0 GOBIN="$CNI" go install -trimpath -ldflags="-s -w" \
    "$module/main/bridge@$CNI_PLUGINS_VERSION" "$module/main/loopback@$CNI_PLUGINS_VERSION" \
    "$module/ipam/host-local@$CNI_PLUGINS_VERSION" "$module/meta/portmap@$CNI_PLUGINS_VERSION"
}

build_coredns() {
  have "$BIN/coredns" && return 0
  CGO_ENABLED=0 GOBIN="$BIN" go install -trimpath -ldflags="-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
}

build_pause() {
  have "$BIN/pause" && return 0
  # The sandbox container's one process: sleeps until told to stop, and reaps nothing (the pod's
  # containers have their own init). Static, so that it runs in an image with nothing else in it.
  local src="$OUT/src/pause.c"
  mkdir -p "$(dirname "$src")"
  cat > "$src" <<'EOF'
#include <signal.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGINT, stop);
  signal(SIGTERM, stop);
  for (;;) pause();
}
EOF
  gcc -static -Os -o "$BIN/pause" "$src"
}

build_containerd
build_runc
build_cni
build_coredns
build_pause
"$BIN/containerd" --version
"$BIN/runc" --version | sed -n 1p
echo "node ready in $OUT"
