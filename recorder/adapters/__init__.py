"""The adapter registry: one module per exchange, each with ``adapter(market, options) -> Adapter``."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pumpwatch.recorder.adapter import Adapter
from pumpwatch.streams import split_stream


def get_adapter(stream: str, options: Mapping[str, Any] | None = None) -> Adapter:
    """The `Adapter` of `stream` (e.g. ``"gate_futures"``), built with `options` from settings.

    Raises `ConfigError` naming ``streams.<stream>.options.<key>`` for an unknown option or a
    bad value: settings build every selected adapter when they load.
    """
    exchange, market = split_stream(stream)
    module = importlib.import_module(f"pumpwatch.recorder.adapters.{exchange}")
    adapter: Adapter = module.adapter(market, dict(options or {}))
    return adapter
