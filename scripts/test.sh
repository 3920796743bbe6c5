#!/usr/bin/env bash
# Install (CPU torch first, so no CUDA build is pulled) and run the whole test suite.
# Installs into the active virtual environment, else into the project's .venv (scripts/python-env.sh);
# CI (.ci/run) runs this same script.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/python-env.sh
"$PY" -m pip install -q --no-compile torch==2.13.0
"$PY" -m pip install -q --no-compile -e ".[test]"
env_usage
# The report tests open the HTML in a real headless browser (Debian's chromium).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: could not install chromium; the browser tests will be skipped"
fi
# Two workers (pytest-xdist; many tests wait on Ray or subprocesses), tests handed out one at a
# time (worksteal: a heavy file does not hold one worker). Every test, the slow set included
# (about 6 min on 2 cores); `bash scripts/test.sh -m "not slow"` skips it while developing.
"$PY" -m pytest -q -n 2 --dist worksteal "$@"
