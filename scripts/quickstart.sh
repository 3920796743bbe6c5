#!/usr/bin/env bash
# Install (CPU torch first) and run the quickstart study end to end, then write its report.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e .
overlock-nas search studies/quickstart.yaml --run-dir runs/quickstart
overlock-nas report runs/quickstart
