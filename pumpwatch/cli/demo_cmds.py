"""Commands: demo."""

from __future__ import annotations

from pumpwatch.cli.app import app  # noqa: F401
