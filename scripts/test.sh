#!/usr/bin/env bash
# Set everything up, then run the test suite (offline). Extra arguments go to pytest, e.g. -k features.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
python -m instructor clean-notebooks --check   # committed notebooks carry no outputs (nbstripout)
python -m instructor sync-notebooks --check    # install cells and README launch links match pyproject.toml
python -m pyflakes utils tests benchmarks instructor
python -m pytest "$@"
