#!/usr/bin/env bash
# Checks docker/k8s/*.yaml without a cluster (docker/k8s/check says how and
# what it cannot check). The checker is built once per version of its
# source, under $XDG_CACHE_HOME/incpathd (~/.cache/...).
set -euo pipefail
cd "$(dirname "$0")/../docker/k8s/check"
key=$(cat go.mod go.sum ./*.go | sha256sum | cut -c1-12)
bin=${XDG_CACHE_HOME:-$HOME/.cache}/incpathd/tools/k8s-check-$key
if [ ! -x "$bin" ]; then
  echo "k8s-check: building the checker (once; cached)"
  mkdir -p "$(dirname "$bin")"
  GOFLAGS=-mod=readonly go build -trimpath -o "$bin.tmp" .
  mv "$bin.tmp" "$bin"
fi
"$bin" ../*.yaml

# The checker fails where it should: a misspelt field, a probe on a port no
# container names.
bad=$(mktemp -d)
trap 'rm -rf "$bad"' EXIT
sed 's/readOnlyRootFilesystem:/readOnlyRootFileSystem:/' \
  ../incpathd.yaml >"$bad/broken.yaml"
if "$bin" "$bad/broken.yaml" >"$bad/out" 2>&1; then
  echo "k8s-check: a broken manifest passed" >&2
  exit 1
fi
for want in 'unknown field "spec.template.spec.containers[1].securityContext.readOnlyRootFileSystem"'; do
  grep -qF "$want" "$bad/out" || { cat "$bad/out" >&2; echo "k8s-check: no error: $want" >&2; exit 1; }
done
sed 's/port: metrics$/port: metric/' ../incpathd.yaml >"$bad/broken.yaml"
if "$bin" "$bad/broken.yaml" >"$bad/out" 2>&1 || ! grep -q 'readinessProbe: port "metric" is not one of the container'"'"'s' "$bad/out"; then
  cat "$bad/out" >&2
  echo "k8s-check: a probe on an unknown port passed" >&2
  exit 1
fi
echo "k8s-check: broken manifests are refused"
