#!/usr/bin/env bash
# Build (once) the Jaeger v2 binary used by the end-to-end tests, from the Go module proxy.
#
#   scripts/build-jaeger.sh            # prints the path of the binary on stdout
#
# The binary goes to .cache/jaeger/<version>/jaeger (git-ignored) and is reused on later runs.
# Jaeger v2 is published to the Go module proxy under its v1.x tags (v1.76.0 is Jaeger v2.13.0);
# its cmd/jaeger is the v2 binary, an OpenTelemetry Collector distribution (receivers, processors,
# exporters, the jaeger_query extension and an in-memory store).
#
# Why not `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.76.0`: Jaeger's go.mod has a
# `replace` directive, which `go install pkg@version` refuses ("must not contain directives that
# would cause it to be interpreted differently than if it were the main module"). So the script
# fetches the exact same module version from the proxy with `go mod download` (checked against
# sum.golang.org like any module) and builds ./cmd/jaeger with that module as the main module,
# which is how Jaeger's own release build runs.
#
# Exit status: 0 and the path on stdout when the binary is ready; 3 when Go is not installed
# (the tests then skip and say why); anything else is a build failure (log under .cache/jaeger/).
set -euo pipefail

JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE_DIR="${JAEGER_CACHE_DIR:-$ROOT/.cache/jaeger/$JAEGER_VERSION}"
BIN="$CACHE_DIR/jaeger"
LOG="$CACHE_DIR/build.log"

if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build-jaeger: 'go' is not on PATH; cannot build Jaeger $JAEGER_VERSION" >&2
    exit 3
fi

mkdir -p "$CACHE_DIR"
# One build at a time (e.g. two pytest sessions): wait on a lock, then re-check the binary.
exec 9>"$CACHE_DIR/.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [[ -x "$BIN" ]]; then
    echo "$BIN"
    exit 0
fi

echo "build-jaeger: building github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" \
    "into $CACHE_DIR (first run only; log: $LOG)" >&2
start=$(date +%s)
tmp_bin="$CACHE_DIR/.gobin"
rm -rf "$tmp_bin"
mkdir -p "$tmp_bin"
fail() {
    echo "build-jaeger: $1 failed; last lines of $LOG:" >&2
    tail -n 30 "$LOG" >&2
    exit 1
}
module="github.com/jaegertracing/jaeger@$JAEGER_VERSION"
# GOFLAGS from the caller could carry -mod=vendor or similar; this build wants none of it.
export GOFLAGS="-trimpath" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
(cd "$CACHE_DIR" && go mod download -json "$module") >"$LOG" 2>&1 || fail "go mod download"
src_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' "$LOG")"
[[ -n "$src_dir" && -f "$src_dir/go.mod" ]] || fail "locating the module source"
ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION"
(cd "$src_dir" && go build -ldflags "$ldflags" -o "$tmp_bin/jaeger" ./cmd/jaeger) \
    >>"$LOG" 2>&1 || fail "go build"
mv "$tmp_bin/jaeger" "$BIN"
rm -rf "$tmp_bin"
end=$(date +%s)
echo "$((end - start))" >"$CACHE_DIR/build-seconds"
echo "build-jaeger: built in $((end - start)) s" >&2
echo "$BIN"
