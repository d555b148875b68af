#!/usr/bin/env bash
# Build the Jaeger UI's static assets from a jaeger-ui source tree, into the archive the
# screenshot and its test serve (third_party/jaeger-ui/, committed). A maintainer's step, once
# per Jaeger version:
#
#   scripts/build-jaeger-ui.sh /path/to/jaeger-ui     # a checkout (or export) of tag $JAEGER_UI_VERSION
#
# Why an archive in the repository: the Jaeger binary that scripts/build-jaeger.sh builds from the
# Go module proxy embeds no UI (cmd/query/app/ui embeds `actual/*`, which the module ships empty,
# and falls back to a placeholder page saying the UI was not built). The assets come from the
# separate jaeger-ui project, an npm/vite build whose source is on no package registry (the npm
# name `jaeger-ui` has no published version), so CI and a fresh clone could not build them. The
# build output is what Jaeger's release embeds; Jaeger v2 serves it unchanged from a directory
# given as `extensions.jaeger_query.ui.assets_path` (tests/e2e/jaeger_ui.py unpacks the archive
# into .cache/jaeger-ui/<version>/ once and points Jaeger there).
#
# The npm dependencies come from the npm registry through jaeger-ui's own package-lock.json
# (`npm ci`). jaeger-ui asks for Node >= 24 with engine-strict; Debian's Node 20 builds it the same
# (vite 7 needs >= 20.19), so the engine check is relaxed, not the build.
set -euo pipefail

JAEGER_UI_VERSION="${JAEGER_UI_VERSION:-v1.76.0}"  # the jaeger-ui tag Jaeger v1.76.0 (v2.13.0) embeds
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="$ROOT/third_party/jaeger-ui"
ARCHIVE="$OUT_DIR/jaeger-ui-$JAEGER_UI_VERSION-assets.tar.xz"

src="${1:?usage: scripts/build-jaeger-ui.sh JAEGER_UI_SOURCE_DIR (jaeger-ui at tag $JAEGER_UI_VERSION)}"
src="$(cd "$src" && pwd)"
version="$(node -p "require('$src/packages/jaeger-ui/package.json').version")"
[[ "v$version" == "$JAEGER_UI_VERSION" ]] || {
    echo "build-jaeger-ui: $src is jaeger-ui v$version, not $JAEGER_UI_VERSION" >&2
    exit 1
}

echo "build-jaeger-ui: npm ci in $src" >&2
(cd "$src" && npm ci --engine-strict=false --no-audit --no-fund) >&2
echo "build-jaeger-ui: vite build of packages/jaeger-ui" >&2
(cd "$src/packages/jaeger-ui" && npm run build) >&2

build="$src/packages/jaeger-ui/build"
[[ -f "$build/index.html" ]] || { echo "build-jaeger-ui: no $build/index.html" >&2; exit 1; }
mkdir -p "$OUT_DIR"
# Reproducible: sorted names, no owners, one fixed time.
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$build" -cf - . \
    | xz -9e -T1 >"$ARCHIVE.tmp"
mv "$ARCHIVE.tmp" "$ARCHIVE"
cp "$src/LICENSE" "$OUT_DIR/LICENSE"
(cd "$OUT_DIR" && sha256sum "$(basename "$ARCHIVE")" >"$(basename "$ARCHIVE").sha256")
echo "build-jaeger-ui: wrote $ARCHIVE ($(wc -c <"$ARCHIVE") bytes)" >&2
echo "$ARCHIVE"
