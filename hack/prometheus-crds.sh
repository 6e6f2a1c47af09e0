#!/usr/bin/env bash
# Generates the Prometheus Operator's CRDs that the install tests need (ServiceMonitor, PodMonitor,
# PrometheusRule) from its Go API module, with controller-gen, the way its own release builds
# them, into a cache outside the repository. A second run with the CRDs present returns at once.
set -euo pipefail

VERSION=${VERSION:?}
CONTROLLER_TOOLS_VERSION=${CONTROLLER_TOOLS_VERSION:?}
OUT=${OUT:?}

kinds=(servicemonitors podmonitors prometheusrules)
have() { for kind in "${kinds[@]}"; do [ -f "$OUT/crds/monitoring.coreos.com_$kind.yaml" ] || return 1; done; }
have && exit 0

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
api=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
src="$OUT/src"
mkdir -p "$src"
cd "$src"
printf 'module scaleml.dev/tools/prometheus-crds\n\ngo 1.26.0\n' > go.mod
go get "$api@$VERSION" "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
go build -trimpath -ldflags="-s -w" -o controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen
rm -rf generated
./controller-gen crd:crdVersions=v1 "paths=$api/v1" output:crd:dir=generated
mkdir -p "$OUT/crds"
for kind in "${kinds[@]}"; do
  cp "generated/monitoring.coreos.com_$kind.yaml" "$OUT/crds/"
done
echo "Prometheus Operator $VERSION CRDs in $OUT/crds"
