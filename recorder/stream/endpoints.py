"""The second WebSocket endpoint of a stream, for standing redundant connections (issue 10).

An adapter module whose exchange documents more than one WebSocket endpoint for the same data
declares ``REDUNDANT_WS_URLS: dict[primary, second]`` (Binance spot, OKX). The second
connection of a shard (``recorder.redundancy: 2``) uses the second endpoint **only when the
configured ``ws_url`` is one of the documented ones**: a URL pointing anywhere else (a local
test server, a proxy) keeps both connections on it, so a test or a private relay is never
bypassed towards the internet.
"""

from __future__ import annotations

import importlib

from pumpwatch.errors import UsageError
from pumpwatch.streams import split_stream


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


def redundant_ws_url_for(stream: str, ws_url: str) -> str | None:
    """The documented other endpoint for `ws_url` of `stream`, or None (none documented, or
    `ws_url` is not a documented endpoint)."""
    try:
        exchange, _market = split_stream(stream)
        module = importlib.import_module(f"pumpwatch.recorder.adapters.{exchange}")
    except (UsageError, ImportError):
        return None
    table: dict[str, str] = getattr(module, "REDUNDANT_WS_URLS", {})
    wanted = _norm(ws_url)
    for primary, second in table.items():
        if _norm(primary) == wanted:
            return second
    return None
