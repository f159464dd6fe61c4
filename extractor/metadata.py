"""metadata.json of a listing directory: what was extracted, from where, and how complete."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pumpwatch.segments.coverage import coverage
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_MS, US_PER_S
from pumpwatch.utctime import format_utc

log = logging.getLogger(__name__)


def _coverage(data_dir: Path, stream: str, base: str, start_us: int, end_us: int) -> dict[str, Any]:
    """The stream's listening state over the window, from its connection journal."""
    cov = coverage(data_dir, stream, start_us, end_us, base=base)
    return {
        "known": cov.known,
        # "connected for the whole window" only when the journal can say so.
        "complete": cov.complete if cov.known else None,
        "listening_s": round(cov.listening_us / US_PER_S, 6) if cov.known else None,
        "gaps": [
            {
                "start": format_utc(a),
                "end": format_utc(b),
                "start_us": a,
                "end_us": b,
                "duration_s": round((b - a) / US_PER_S, 6),
            }
            for a, b in (cov.gaps if cov.known else [])
        ],
    }


def build_metadata(
    data_dir: Path,
    symbol: str,
    trigger_us: int,
    *,
    before_s: float,
    after_s: float,
    start_us: int,
    end_us: int,
    source: Mapping[str, Any] | None,
    parts: Mapping[str, Any],
) -> dict[str, Any]:
    """The metadata.json object; `parts` maps each selected stream to its extracted table."""
    from pumpwatch import __version__

    streams: dict[str, Any] = {}
    for stream, part in parts.items():
        exchange, market = split_stream(stream)
        n = part.num_rows
        time_us = part.column("time").cast("int64") if n else None
        streams[stream] = {
            "exchange": exchange,
            "market": market,
            "trades": n,
            "symbols": sorted(set(part.column("symbol").to_pylist())),
            "first_trade_us": time_us[0].as_py() if time_us is not None else None,
            "last_trade_us": time_us[-1].as_py() if time_us is not None else None,
            "coverage": _coverage(data_dir, stream, symbol, start_us, end_us),
        }
    return {
        "symbol": symbol,
        "trigger_time": format_utc(trigger_us),
        "trigger_time_ms": trigger_us // US_PER_MS,
        "trigger_time_us": trigger_us,
        "window": {
            "before_s": before_s,
            "after_s": after_s,
            "start": format_utc(start_us),
            "end": format_utc(end_us),
            "start_ms": start_us // US_PER_MS,
            "end_ms": end_us // US_PER_MS,
            "start_us": start_us,
            "end_us": end_us,
            "inclusive": True,
        },
        "source": dict(source) if source is not None else "manual",
        "trades": sum(s["trades"] for s in streams.values()),
        "streams": streams,
        "timestamps": "raw/*.json: timestamp = exchange time in integer ms (floor), timestamp_us = exact µs",
        "extracted_at": format_utc(time.time_ns() // 1000),
        "pumpwatch_version": __version__,
    }
