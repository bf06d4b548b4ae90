#!/usr/bin/env bash
# Set up what is missing, then run the whole test suite. Extra arguments go to pytest,
# e.g. ./run_tests.sh -m "not slow" for the quick run, or -k framing.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
