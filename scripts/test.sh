#!/usr/bin/env bash
# Set everything up, then run the test suite (offline). Extra arguments go to pytest, e.g. -k features.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
python -m utils clean-notebooks --check
python -m pyflakes utils tests benchmarks
python -m pytest "$@"
