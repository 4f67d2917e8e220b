#!/usr/bin/env bash
# Create .venv in the checkout and install adaptive_zoo with all three backends.
# Idempotent: re-runs only when pyproject.toml changed. Used by eval.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.adaptive_zoo-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch first, pinned: 2.13.0 is the local CPU wheel; an unpinned torch pulls CUDA packages.
  quiet() { { "$@" 2>&1; } | { grep -v "^WARNING: Location" || true; }; }
  quiet "$VENV/bin/pip" install --quiet --disable-pip-version-check torch==2.13.0
  quiet "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[tensorflow,jax,torch,data,test,plot]"
  echo "$want" > "$stamp"
fi
