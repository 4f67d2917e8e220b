#!/usr/bin/env bash
# Set up, then run the whole test suite once per backend. Fails if any backend fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
export TF_CPP_MIN_LOG_LEVEL=2
status=0
summary=""
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:warnings -p no:cacheprovider --durations=15 tests "$@"
  rc=$?
  summary="$summary\n$backend: pytest exit $rc"
  [ $rc -eq 0 ] || status=1
done
echo -e "=== summary$summary"
exit $status
