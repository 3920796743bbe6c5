#!/usr/bin/env bash
# Install (CPU torch first) and run the quickstart study end to end, then write its report.
# Installs into the active virtual environment, else into the project's .venv (scripts/python-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-env.sh
"$PY" -m pip install -q --no-compile torch==2.13.0
"$PY" -m pip install -q --no-compile -e .
overlock-nas search studies/quickstart.yaml --run-dir runs/quickstart
overlock-nas report runs/quickstart
env_usage
