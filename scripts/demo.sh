#!/usr/bin/env bash
# Command 1: set up, then run the whole pipeline on the embedded demo dataset (headless, local).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m demo.run "$@"
