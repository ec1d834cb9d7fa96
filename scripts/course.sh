#!/usr/bin/env bash
# Set everything up, then run the whole course: every notebook, in order, into build/ (results, student copies, site).
# Extra arguments go to `python -m instructor course`, e.g. --small, --out DIR, -p backbone efficientnet_lite1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$ROOT"
python -m instructor course --out build "$@"
