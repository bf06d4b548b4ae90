#!/usr/bin/env bash
# Set up what is missing, then run the engine in the foreground on config.yaml
# (embedded SQLite store under ./var). Extra arguments go to `run_engine.py run`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh
exec .venv/bin/python run_engine.py run --config "${ENGINE_CONFIG:-config.yaml}" "$@"
