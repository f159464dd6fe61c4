#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install PumpWatch with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'

# Headless Chromium (and a Korean font, for Upbit titles in screenshots) for the report page
# test, tests/report/test_report_page.py. Installed only when missing and apt-get is there
# (as root, or with password-less sudo); a failure only makes that test skip.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium fonts-nanum; } >/dev/null; then
    echo "setup: could not install chromium with apt-get; the report page test will be skipped" >&2
  fi
fi
