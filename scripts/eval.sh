#!/usr/bin/env bash
# The main job: set up, then train a small MSDNet (--model dmnn: a small DMNN) on the bundled digits and print
# accuracy against cost (per exit, per budget). Backend: KERAS_BACKEND (default jax).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
exec .venv/bin/python examples/eval.py "$@"
