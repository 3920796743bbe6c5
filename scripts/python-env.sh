# Sourced by quickstart.sh and test.sh (from the project root): chooses the Python environment to
# install into, so that pip never installs into a system Python. Debian's and Ubuntu's own python3
# is "externally managed" (PEP 668) and pip refuses to install there.
#   - an active virtual environment ($VIRTUAL_ENV), or an active conda environment ($CONDA_PREFIX),
#     is used as it is;
#   - else the project's .venv (created here from ${PYTHON:-python3} when missing).
# Sets PY (that environment's python) and puts its bin/ first on PATH, so overlock-nas, ray and every
# subprocess the tests start run from it.

env_python() {   # the interpreter of an environment prefix, if it runs
  local prefix="$1"
  if [ -x "$prefix/bin/python" ] && "$prefix/bin/python" -c "" 2>/dev/null; then
    echo "$prefix/bin/python"
  fi
}

if [ -n "${VIRTUAL_ENV:-}" ] && [ -n "$(env_python "$VIRTUAL_ENV")" ]; then
  ENV_DIR="$VIRTUAL_ENV"
  ENV_HOW="the active virtual environment"
elif [ -n "${CONDA_PREFIX:-}" ] && [ -n "$(env_python "$CONDA_PREFIX")" ]; then
  ENV_DIR="$CONDA_PREFIX"
  ENV_HOW="the active conda environment"
else
  ENV_DIR="$PWD/.venv"
  ENV_HOW="the project's virtual environment"
  if [ -e "$ENV_DIR" ] && [ -z "$(env_python "$ENV_DIR")" ]; then
    echo "error: $ENV_DIR exists but its python does not run (moved, or its Python was removed): delete it and run this again" >&2
    exit 1
  fi
  if [ ! -e "$ENV_DIR" ]; then
    BASE_PYTHON="${PYTHON:-python3}"
    if ! "$BASE_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "error: overlock-nas needs Python >= 3.10; '$BASE_PYTHON' is $("$BASE_PYTHON" --version 2>&1 || echo missing) (set PYTHON=/path/to/python3.X)" >&2
      exit 1
    fi
    echo "creating $ENV_DIR from $("$BASE_PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])') ..."
    if ! "$BASE_PYTHON" -m venv "$ENV_DIR"; then
      rm -rf "$ENV_DIR"
      echo "error: '$BASE_PYTHON -m venv' failed; on Debian/Ubuntu install the venv module (apt-get install python3-venv) and run this again" >&2
      exit 1
    fi
  fi
fi
PY="$(env_python "$ENV_DIR")"
# pip installs with --no-compile: compiling every file of torch, ray and the rest to bytecode took
# 35 of the install's 73 s here; Python compiles what is imported, once, at its first import. That
# needs bytecode writing on, which some shells and containers turn off.
unset PYTHONDONTWRITEBYTECODE
export VIRTUAL_ENV="$ENV_DIR"
export PATH="$ENV_DIR/bin:$PATH"
echo "installing into $ENV_HOW: $ENV_DIR"

env_usage() {   # how to use the environment afterwards
  if [ "$ENV_DIR" = "$PWD/.venv" ]; then
    echo "overlock-nas is installed in .venv: run 'source .venv/bin/activate' first (or call .venv/bin/overlock-nas)"
  fi
}
