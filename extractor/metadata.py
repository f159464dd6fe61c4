"""metadata.json of a listing directory: what was extracted, from where, and how complete."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow.compute as pc

from pumpwatch.segments.coverage import Completeness
from pumpwatch.segments.schema import SOURCE_REST
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_MS, US_PER_S
from pumpwatch.utctime import format_utc

log = logging.getLogger(__name__)


def span_entry(a: int, b: int) -> dict[str, Any]:
    """A span of metadata.json coverage: ISO ends, exact µs ends and its length."""
    return {
        "start": format_utc(a),
        "end": format_utc(b),
        "start_us": a,
        "end_us": b,
        "duration_s": round((b - a) / US_PER_S, 6),
    }


def _count_in(time_us: np.ndarray, a: int, b: int) -> int:
    """Rows with ``a <= time < b`` of the sorted `time_us`."""
    return int(np.searchsorted(time_us, b, "left") - np.searchsorted(time_us, a, "left"))


def coverage_entry(comp: Completeness, part: Any) -> dict[str, Any]:
    """The ``coverage`` object of one stream: the listening figures (``known``, ``complete``,
    ``listening_s``, ``gaps``), the issue-10 ``state``, ``repaired`` and ``missing`` spans, and
    ``rest_trades``; `part` is the stream's extracted table (``time``, ``source``)."""
    known = comp.listening.known
    since = comp.listening.listening_since
    rest = pc.equal(part.column("source"), SOURCE_REST) if part.num_rows else None
    rest_us = (
        np.sort(part.column("time").filter(rest).cast("int64").to_numpy())
        if rest is not None
        else np.empty(0, np.int64)
    )
    return {
        "known": known,
        # "connected for the whole window (and no id hole)" only when the journal can say so.
        "complete": (not comp.gaps) if known else None,
        "listening_s": round(comp.listening.listening_us / US_PER_S, 6) if known else None,
        # from when the stream was listening for this base (its subscription ack, unclipped)
        "listening_since": format_utc(since) if since is not None else None,
        "listening_since_us": since,
        "gaps": [span_entry(a, comp.clip(b)) for a, b in (comp.gaps if known else [])],
        "state": comp.state,
        "repaired": [
            {
                **span_entry(r.start_us, comp.clip(r.end_us)),
                "trades": _count_in(rest_us, r.start_us, r.end_us),
                "via": ", ".join(r.via),
            }
            for r in comp.repaired
        ],
        "missing": [
            {**span_entry(m.start_us, comp.clip(m.end_us)), "reason": m.reason, "symbols": list(m.symbols)}
            for m in comp.missing
        ],
        "rest_trades": int(rest_us.size),
    }


def build_metadata(
    symbol: str,
    trigger_us: int,
    *,
    before_s: float,
    after_s: float,
    start_us: int,
    end_us: int,
    source: Mapping[str, Any] | None,
    parts: Mapping[str, Any],
    completeness: Mapping[str, Completeness],
    previous: Mapping[str, Any] | None = None,
    kept: Sequence[str] = (),
) -> dict[str, Any]:
    """The metadata.json object; `parts` maps each stream extracted now to its table and
    `completeness` to its coverage. `previous` is the metadata of the listing this run
    refreshes (None for a new one): its source stays when `source` is None, its first
    extraction time and count go on in ``re_extracted``, and the entries of the `kept` streams
    (left as they were) are copied with ``kept_from`` (the time of the run that wrote them)."""
    from pumpwatch import __version__

    now = format_utc(time.time_ns() // 1000)
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
            "coverage": coverage_entry(completeness[stream], part),
        }
    old_streams = previous.get("streams") if previous is not None else None
    for stream in kept:
        assert isinstance(old_streams, dict) and previous is not None
        entry = dict(old_streams[stream])
        entry.setdefault("kept_from", previous.get("extracted_at"))
        if previous.get("window") != _window(before_s, after_s, start_us, end_us):
            entry.setdefault("window", previous.get("window"))
        streams[stream] = entry
    if kept:
        streams = {s: streams[s] for s in sorted(streams, key=STREAMS.index)}
    kept_source = previous.get("source") if previous is not None else None
    if source is not None:
        kept_source = dict(source)
    meta: dict[str, Any] = {
        "symbol": symbol,
        "trigger_time": format_utc(trigger_us),
        "trigger_time_ms": trigger_us // US_PER_MS,
        "trigger_time_us": trigger_us,
        "window": _window(before_s, after_s, start_us, end_us),
        "source": kept_source if kept_source is not None else "manual",
        "trades": sum(s["trades"] for s in streams.values()),
        "streams": streams,
        "timestamps": "raw/*.json: timestamp = exchange time in integer ms (floor), timestamp_us = exact µs",
        "extracted_at": now,
        "pumpwatch_version": __version__,
    }
    if previous is not None:
        before = previous.get("re_extracted")
        first = before.get("first_extracted_at") if isinstance(before, dict) else previous.get("extracted_at")
        count = before.get("count", 1) if isinstance(before, dict) else 1
        meta["re_extracted"] = {
            "first_extracted_at": first,
            "count": count + 1 if isinstance(count, int) else 2,
            "source_kept": source is None
            and isinstance(meta_source := previous.get("source"), dict)
            and bool(meta_source),
        }
    return meta


def _window(before_s: float, after_s: float, start_us: int, end_us: int) -> dict[str, Any]:
    return {
        "before_s": before_s,
        "after_s": after_s,
        "start": format_utc(start_us),
        "end": format_utc(end_us),
        "start_ms": start_us // US_PER_MS,
        "end_ms": end_us // US_PER_MS,
        "start_us": start_us,
        "end_us": end_us,
        "inclusive": True,
    }


def _trades(n: int) -> str:
    return f"{n} trade" if n == 1 else f"{n} trades"


def coverage_summary(listing_dir: Path) -> list[str]:
    """One short line per stream of the listing's metadata.json: its trades and coverage state,
    e.g. ``okx_futures  201 trades  repaired (2 spans, 37 from REST)`` or
    ``bybit_spot  40 trades  incomplete: 12.3 s missing (no_history)``."""
    streams: Mapping[str, Any] = orjson.loads((listing_dir / "metadata.json").read_bytes())["streams"]
    width = max((len(s) for s in streams), default=0)
    digits = max((len(str(s["trades"])) for s in streams.values()), default=1)
    lines = []
    for stream, info in streams.items():
        cov = info["coverage"]
        state = cov["state"]
        if state == "repaired":
            spans = len(cov["repaired"])
            state += f" ({spans} span{'' if spans == 1 else 's'}, {cov['rest_trades']} from REST)"
        elif state == "incomplete":
            missing_s = sum(m["duration_s"] for m in cov["missing"])
            reasons = list(dict.fromkeys(m["reason"] for m in cov["missing"]))
            if not cov["known"]:
                reasons.insert(0, "no journal")
            state += f": {missing_s:.1f} s missing ({', '.join(reasons)})"
        trades = _trades(info["trades"]).rjust(digits + 7)
        lines.append(f"{stream.ljust(width)}  {trades}  {state}")
    return lines
