#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the course into it.
# Re-installs only when pyproject.toml changed since the last install. Sourced by course.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEEP_FEATURES_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtual environment $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
stamp="$VENV/.deep-features-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "== installing the course and its dependencies (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # Linux x86_64 installs tensorflow-cpu: a venv made before holds the `tensorflow` wheel, which owns the
  # same files, so both go first and tensorflow-cpu installs clean
  if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ] && "$VENV/bin/python" -m pip show -q tensorflow \
      >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip uninstall --quiet -y tensorflow tensorflow-cpu
  fi
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,instructor,more-backbones]"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
