#!/usr/bin/env bash
# Vendor the JavaScript the built book needs offline: MathJax 3 (math), require.js and the
# ipywidgets HTML manager (widget outputs). Without them the pages load these from CDNs, and with no
# network the math shows as raw TeX and widget outputs are blank (toolchain notes, section 5).
#
# Usage: book/vendor_assets.sh [DEST]     (default DEST: book/_vendor, relative to the repo root)
# Idempotent: does nothing when DEST already holds every file. Needs npm (the npm registry only).
set -euo pipefail

cd "$(dirname "$0")/.."
DEST=${1:-book/_vendor}
NEEDED=(mathjax/tex-mml-chtml.js widgets/embed-amd.js widgets/require.js)

missing=0
for f in "${NEEDED[@]}"; do [[ -f "$DEST/$f" ]] || missing=1; done
if [[ $missing -eq 0 ]]; then
  echo "vendor_assets: $DEST already complete, nothing to do"
  exit 0
fi
command -v npm >/dev/null || { echo "vendor_assets: npm is required to fetch the assets" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Pinned versions: mathjax 3.2.2 is what Sphinx 7's MathJax 3 config expects; html-manager 1.0.6 is
# the version myst-nb's widget output is written for; require.js 2.3.7 is its AMD loader.
(cd "$tmp" && npm pack --silent mathjax@3.2.2 @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.7 >/dev/null)
for f in "$tmp"/*.tgz; do
  mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"
done

M="$tmp/mathjax-3.2.2/package/es5"
H="$tmp/jupyter-widgets-html-manager-1.0.6/package/dist"
# Build into a staging folder and move it into place at the end, so an interrupted run never leaves a
# half-filled DEST that the completeness check above would accept.
stage="$tmp/stage"
mkdir -p "$stage/mathjax/output/chtml/fonts" "$stage/widgets"
cp "$M/tex-mml-chtml.js" "$stage/mathjax/"
cp -r "$M/output/chtml/fonts/woff-v2" "$stage/mathjax/output/chtml/fonts/"
cp "$H/embed-amd.js" "$H"/*.woff* "$H"/*.ttf "$H"/*.eot "$H"/*.svg "$H"/[0-9]*.embed.js "$stage/widgets/"
cp "$tmp/requirejs-2.3.7/package/require.js" "$stage/widgets/"

rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$stage" "$DEST"
echo "vendor_assets: wrote $(du -sh "$DEST" | cut -f1) to $DEST"
