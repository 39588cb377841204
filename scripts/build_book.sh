#!/usr/bin/env bash
# Build the Jupyter Book: vendor the offline JavaScript if missing, then execute every notebook in the
# size given by RFM_TEACH_MODE (smoke | book | full; default book) and write HTML.
#
# Usage:  scripts/build_book.sh [--fresh] [extra jupyter-book build options, e.g. --toc /tmp/toc.yml]
# Output: _build/html/ for the book mode; _build/<mode>/_build/html/ for the others. Each mode keeps
# its own execution cache, because the cache is keyed on the notebook's code, not on the mode.
# The cache does not see changes to the rfm_teach package either: after changing the library, pass
# --fresh to drop this mode's cache and re-execute every notebook.
# Exit status: non-zero on any notebook error (_config.yml sets execute.raise_on_error).
set -euo pipefail

cd "$(dirname "$0")/.."
MODE=${RFM_TEACH_MODE:-book}
export RFM_TEACH_MODE=$MODE
case "$MODE" in
  book) OUT=. ;;
  smoke | full) OUT=_build/$MODE ;;
  *) echo "build_book: RFM_TEACH_MODE must be smoke, book or full; got '$MODE'" >&2; exit 2 ;;
esac

JB=${JUPYTER_BOOK:-jupyter-book}
if ! command -v "$JB" >/dev/null && [[ -x .venv/bin/jupyter-book ]]; then
  JB=.venv/bin/jupyter-book
fi

if [[ "${1:-}" == "--fresh" ]]; then
  shift
  rm -rf "$OUT/_build/.jupyter_cache"
  set -- --all "$@"
fi

book/vendor_assets.sh
echo "build_book: mode $MODE -> $OUT/_build/html"
"$JB" build . --path-output "$OUT" "$@"
