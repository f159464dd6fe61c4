#!/usr/bin/env bash
# The test command: set up (if needed), then lint, type-check and run the test suite.
# PUMPWATCH_SOAK=long selects the long forms of the soak/fault tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
