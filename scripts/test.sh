#!/usr/bin/env bash
# The README's test command: installs the package with its test extra into the active Python,
# then lints, type-checks and runs every test (the tests start their own redis-server and AWS
# emulator on loopback ports) in 4 parallel workers (each with its own servers; most tests wait on
# servers, not the CPU). `--fast`: the unit tests only (no servers), after lint and types.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e '.[test]'
python -m ruff check broker tests benchmarks
python -m mypy
if [[ "${1:-}" == "--fast" ]]; then
  shift
  python -m pytest -q tests/unit "$@"
else
  python -m pytest -q -n 4 --durations=15 "$@"
fi
