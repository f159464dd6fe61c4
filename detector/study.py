"""The study across listings: the numbers of `pumpwatch report`, read from every listing
directory's metadata.json and refined/ files (DESIGN §7) and summed up per listing, per stream
and per pump event. Reading is one function; everything after it is pure.

Lags are measured from the trigger T (a pump that starts before T has a negative lag), rises
are the detector's `price_change_percent` (peak inside the event vs its start), durations
run from an event's first to its last trade. Quartiles are numpy's linear interpolation.

Coverage: each stream of a listing is ``complete``, ``repaired``, ``incomplete`` (metadata.json
``coverage.state``) or ``unknown``. Listings extracted before that field existed carry only
``coverage.complete`` (true, false, or null when the journal could not say): true reads as
``complete``, false as ``incomplete`` (there was no repair then), null or no coverage at all as
``unknown``. A stream is *whole* when complete or repaired. The figures across listings (lags,
rises, durations, pumped first, volume share) count whole streams only; the others are left
out and counted (docs/report.md, "Incomplete streams").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_MS, US_PER_S

log = logging.getLogger(__name__)

KST = timezone(timedelta(hours=9), "KST")
COVERAGE_STATES = ("complete", "repaired", "incomplete", "unknown")
WHOLE_STATES = ("complete", "repaired")


@dataclass
class ListingFiles:
    """What one listing directory holds for the study (refined objects None when not detected)."""

    name: str
    path: Path
    metadata: dict[str, Any]
    pump_analysis: dict[str, Any] | None
    comparison: dict[str, Any] | None
    chart: Path | None


@dataclass
class Skipped:
    name: str
    reason: str


@dataclass
class Listings:
    found: list[ListingFiles] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def read_listings(listings_dir: Path, *, since_us: int | None = None) -> Listings:
    """Every listing directory under `listings_dir` (hidden temporaries ignored), oldest
    trigger first; those triggered before `since_us` left out. A directory that is not a
    readable listing is `skipped` with the reason, never fatal."""
    out = Listings()
    if not listings_dir.is_dir():
        return out
    for path in sorted(listings_dir.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            meta = _read_json(path / "metadata.json")
            trigger_us = int(meta["trigger_time_us"])
        except FileNotFoundError:
            out.skipped.append(Skipped(path.name, "no metadata.json"))
            continue
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            out.skipped.append(Skipped(path.name, f"unreadable metadata.json: {exc}"))
            continue
        if since_us is not None and trigger_us < since_us:
            continue
        refined = path / "refined"
        try:
            analysis = _read_json(refined / "pump_analysis.json")
            comparison = _read_json(refined / "exchange_comparison.json")
        except FileNotFoundError:
            analysis = comparison = None  # extracted with --no-detect: listed, without pump numbers
        except (OSError, orjson.JSONDecodeError) as exc:
            out.skipped.append(Skipped(path.name, f"unreadable refined/ file: {exc}"))
            continue
        chart = refined / "chart.png"
        out.found.append(
            ListingFiles(path.name, path, meta, analysis, comparison, chart if chart.is_file() else None)
        )
    out.found.sort(key=lambda lf: (int(lf.metadata["trigger_time_us"]), lf.name))
    for s in out.skipped:
        log.warning("report: skipped %s: %s", s.name, s.reason)
    return out


def format_kst(time_us: int) -> str:
    """`2026-01-01 18:01:00 KST` (whole seconds; Upbit shows KST)."""
    return datetime.fromtimestamp(time_us // US_PER_S, KST).strftime("%Y-%m-%d %H:%M:%S KST")


def format_utc_s(time_us: int) -> str:
    """`2026-01-01 09:01:00 UTC` (whole seconds)."""
    return datetime.fromtimestamp(time_us // US_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def coverage_state(stream_meta: dict[str, Any]) -> str:
    """The coverage state of one ``metadata.json`` stream entry, from ``coverage.state`` or,
    in a listing written before that field, from ``coverage.complete`` (module doc)."""
    cov = stream_meta.get("coverage")
    if not isinstance(cov, dict):
        return "unknown"
    if "state" in cov:
        state = cov["state"]
        return state if state in COVERAGE_STATES else "unknown"
    complete = cov.get("complete")
    if complete is True:
        return "complete"
    if complete is False:
        return "incomplete"
    return "unknown"


def blind_from_us(stream_meta: dict[str, Any], state: str, window_start_us: int | None) -> int | None:
    """From when a stream that is not whole may have missed trades: the start of its first
    missing span (``coverage.missing``; ``coverage.gaps`` in a listing of the old format),
    else the window's start (unknown coverage, or no span listed); None (any time) when the
    window is not known either."""
    cov = stream_meta.get("coverage")
    spans = []
    if isinstance(cov, dict) and state == "incomplete":
        for span in cov.get("missing" if "state" in cov else "gaps") or []:
            try:
                spans.append(int(span["start_us"]))
            except (KeyError, TypeError, ValueError):
                return window_start_us
    return min(spans) if spans else window_start_us


def _stream_key(stream: str) -> tuple[int, str]:
    return (STREAMS.index(stream) if stream in STREAMS else len(STREAMS), stream)


def _events(lf: ListingFiles, trigger_us: int) -> list[dict[str, Any]]:
    """The listing's pump events as flat rows (times from T)."""
    if lf.pump_analysis is None:
        return []
    rows = []
    for ev in lf.pump_analysis.get("pump_events", []):
        start_us = int(ev.get("start_time_us", ev["start_time"] * US_PER_MS))
        end_us = int(ev.get("end_time_us", ev["end_time"] * US_PER_MS))
        rows.append(
            {
                "listing": lf.name,
                "symbol": lf.metadata.get("symbol"),
                "stream": f"{ev['exchange']}_{ev['market_type']}",
                "exchange": ev["exchange"],
                "market": ev["market_type"],
                "start_time_us": start_us,
                "lag_ms": (start_us - trigger_us) / US_PER_MS,
                "duration_ms": (end_us - start_us) / US_PER_MS,
                "rise_percent": ev["price_change_percent"],
                "volume_spike_ratio": ev.get("volume_spike_ratio"),
                "volume": ev.get("volume"),
                "trades": ev["trades_count"],
            }
        )
    return rows


def _source(meta: dict[str, Any]) -> dict[str, Any]:
    src = meta.get("source")
    if isinstance(src, dict):
        return {
            "kind": "upbit",
            "notice_id": src.get("notice_id"),
            "title": src.get("title"),
            "first_listed_at": src.get("first_listed_at"),
            "detection_delay_s": src.get("detection_delay_s"),
        }
    return {"kind": "manual" if src in (None, "manual") else str(src), "notice_id": None, "title": None}


def _first_pump(
    events: list[dict[str, Any]], streams: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, list[str]]:
    """(credited first event, first event seen on any stream, doubting streams).

    The first pump is credited to the earliest pump on a whole stream, and only when no stream
    that is not whole could have pumped before it: none of those has a pump starting earlier or
    at the same time, and none may have missed trades (a missing span, or unknown coverage)
    from before it. Otherwise nobody is credited and the streams that leave it open are named.
    """
    if not events:
        return None, None, []
    order = sorted(events, key=lambda e: (e["start_time_us"], _stream_key(e["stream"])))
    seen = order[0]
    whole = [e for e in order if e["whole"]]
    first = whole[0] if whole else None
    blind = {st["stream"]: st["blind_from_us"] for st in streams if not st["whole"]}
    doubt = set()
    for e in order:
        if not e["whole"] and (first is None or e["start_time_us"] <= first["start_time_us"]):
            doubt.add(e["stream"])  # a pump seen on a stream with a gap, not after the first
    if first is not None:
        t1 = first["start_time_us"]
        doubt.update(name for name, b in blind.items() if b is None or b <= t1)
    return (None if doubt else first), seen, sorted(doubt, key=_stream_key)


def listing_study(lf: ListingFiles) -> dict[str, Any]:
    """One listing's row of the overview plus its per-stream table and events."""
    meta = lf.metadata
    trigger_us = int(meta["trigger_time_us"])
    window = meta.get("window")
    window_start = window.get("start_us") if isinstance(window, dict) else None
    events = _events(lf, trigger_us)
    coverage: dict[str, list[str]] = {state: [] for state in COVERAGE_STATES}
    comp_streams = (lf.comparison or {}).get("streams", {})
    meta_streams = meta.get("streams")
    if not isinstance(meta_streams, dict):
        meta_streams = {}
    volume_in_pumps: dict[str, float] = {}
    for ev in events:
        volume_in_pumps[ev["stream"]] = volume_in_pumps.get(ev["stream"], 0.0) + float(ev["volume"] or 0.0)
    streams = []
    for name in sorted(set(meta_streams) | set(comp_streams), key=_stream_key):
        m = meta_streams.get(name, {})
        c = comp_streams.get(name, {})
        state = coverage_state(m)
        coverage[state].append(name)
        whole = state in WHOLE_STATES
        first_us = c.get("first_pump_time_us")
        streams.append(
            {
                "stream": name,
                "trades": m.get("trades", c.get("trades")),
                "coverage": state,
                "whole": whole,
                "blind_from_us": None if whole else blind_from_us(m, state, window_start),
                "pumped": bool(c.get("pumped")),
                "events": c.get("events", 0),
                "first_pump_lag_ms": None if first_us is None else (first_us - trigger_us) / US_PER_MS,
                "lag_behind_first_ms": c.get("lag_ms"),
                "max_pump_rise_percent": c.get("max_pump_change_percent"),
                "max_window_rise_percent": c.get("max_rise_percent"),
                "change_after_trigger_percent": c.get("change_after_trigger_percent"),
                "volume_before_trigger": c.get("volume_before_trigger"),
                "volume_after_trigger": c.get("volume_after_trigger"),
                "volume_in_pumps": volume_in_pumps.get(name, 0.0),
            }
        )
    states = {st["stream"]: st["coverage"] for st in streams}
    for ev in events:
        ev["coverage"] = states.get(ev["stream"], "unknown")
        ev["whole"] = ev["coverage"] in WHOLE_STATES
    first, seen, doubt = _first_pump(events, streams)
    ratios = [e["volume_spike_ratio"] for e in events if e["volume_spike_ratio"] is not None]
    summary = (lf.pump_analysis or {}).get("summary", {})
    return {
        "listing": lf.name,
        "symbol": meta.get("symbol"),
        "trigger_time_us": trigger_us,
        "trigger_utc": format_utc_s(trigger_us),
        "trigger_kst": format_kst(trigger_us),
        "source": _source(meta),
        "detected": lf.pump_analysis is not None,
        "trades": meta.get("trades"),
        "streams_total": len(streams),
        "streams_complete": len(coverage["complete"]),
        "streams_repaired": len(coverage["repaired"]),
        "streams_incomplete": len(coverage["incomplete"]),
        "streams_unknown": len(coverage["unknown"]),
        "incomplete_streams": coverage["incomplete"],
        "unknown_streams": coverage["unknown"],
        "streams_pumped": len({e["stream"] for e in events}),
        "pumped_streams": sorted({e["stream"] for e in events}, key=_stream_key),
        "first_pump_stream": first["stream"] if first else None,
        "first_pump_lag_ms": first["lag_ms"] if first else None,
        "first_pump_certain": None if not events else first is not None,
        "first_pump_doubt": doubt,
        "first_seen_stream": seen["stream"] if seen else None,
        "first_seen_lag_ms": seen["lag_ms"] if seen else None,
        "max_rise_percent": max(e["rise_percent"] for e in events) if events else None,
        "max_volume_ratio": max(ratios) if ratios else None,
        "pump_duration_ms": summary.get("pump_duration_ms") if events else None,
        "chart": lf.chart is not None,
        "streams": streams,
        "events": events,
    }


def _spread(values: list[float]) -> dict[str, Any]:
    """n, median and the quartiles (IQR = q3 - q1) of `values`; nulls when empty."""
    if not values:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, med, q3 = (float(x) for x in np.percentile(np.asarray(values, dtype=float), [25, 50, 75]))
    return {"n": len(values), "median": med, "q1": q1, "q3": q3, "iqr": q3 - q1}


def stream_study(listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per exchange and market across listings: in how many it was recorded, and of those
    how often its coverage was not whole (``incomplete``, ``unknown``: ``left_out`` of every
    figure below, with ``pumped_left_out`` the pumps seen there); over the listings where it
    was whole, how often it pumped, the spread of its first-pump lag after T and of its largest
    pump rise; how often it was credited the first pump (``first_share`` over the listings
    with a credited first pump); its mean share of a listing's pump volume (base units, so
    comparable within a listing only: shares are taken per listing with a pump and every
    stream whole, then averaged)."""
    names = sorted({s["stream"] for lst in listings for s in lst["streams"]}, key=_stream_key)
    credited = [lst for lst in listings if lst["first_pump_stream"] is not None]
    for_volume = [lst for lst in listings if lst["events"] and all(s["whole"] for s in lst["streams"])]
    out = []
    for name in names:
        rows = [s for lst in listings for s in lst["streams"] if s["stream"] == name]
        whole = [s for s in rows if s["whole"]]
        pumped = [s for s in whole if s["pumped"]]
        shares = []
        for lst in for_volume:
            total = sum(s["volume_in_pumps"] for s in lst["streams"])
            mine = sum(s["volume_in_pumps"] for s in lst["streams"] if s["stream"] == name)
            if total > 0 and any(s["stream"] == name for s in lst["streams"]):
                shares.append(mine / total)
        first = sum(1 for lst in credited if lst["first_pump_stream"] == name)
        exchange, _, market = name.partition("_")
        incomplete = sum(1 for s in rows if s["coverage"] == "incomplete")
        unknown = sum(1 for s in rows if s["coverage"] == "unknown")
        out.append(
            {
                "stream": name,
                "exchange": exchange,
                "market": market,
                "listings": len(rows),
                "whole": len(whole),
                "incomplete": incomplete,
                "unknown": unknown,
                "left_out": len(rows) - len(whole),
                "pumped": len(pumped),
                "pumped_left_out": sum(1 for s in rows if s["pumped"] and not s["whole"]),
                "first": first,
                "first_share": first / len(credited) if credited else None,
                "lag_ms": _spread(
                    [s["first_pump_lag_ms"] for s in pumped if s["first_pump_lag_ms"] is not None]
                ),
                "rise_percent": _spread(
                    [s["max_pump_rise_percent"] for s in pumped if s["max_pump_rise_percent"] is not None]
                ),
                "pump_volume_share": float(np.mean(shares)) if shares else None,
                "pump_volume_share_n": len(shares),
            }
        )
    return out


def study(found: list[ListingFiles], skipped: list[Skipped] | None = None) -> dict[str, Any]:
    """The report.json object: ``listings`` (overview rows, each with its ``streams`` table
    and ``events``), ``streams`` (per exchange and market), ``events`` (every pump event, flat),
    ``totals`` and ``skipped`` directories."""
    listings = [listing_study(lf) for lf in found]
    events = [e for lst in listings for e in lst["events"]]
    return {
        "listings": listings,
        "streams": stream_study(listings),
        "events": events,
        "totals": {
            "listings": len(listings),
            "with_pump": sum(1 for lst in listings if lst["events"]),
            "upbit": sum(1 for lst in listings if lst["source"]["kind"] == "upbit"),
            "manual": sum(1 for lst in listings if lst["source"]["kind"] == "manual"),
            "not_detected": sum(1 for lst in listings if not lst["detected"]),
            "with_incomplete_stream": sum(1 for lst in listings if lst["streams_incomplete"]),
            "with_unknown_coverage": sum(1 for lst in listings if lst["streams_unknown"]),
            "first_credited": sum(1 for lst in listings if lst["first_pump_certain"] is True),
            "first_uncertain": sum(1 for lst in listings if lst["first_pump_certain"] is False),
            "pump_events": len(events),
            "events_left_out": sum(1 for e in events if not e["whole"]),
            "first_listing_utc": listings[0]["trigger_utc"] if listings else None,
            "last_listing_utc": listings[-1]["trigger_utc"] if listings else None,
        },
        "skipped": [{"listing": s.name, "reason": s.reason} for s in skipped or []],
    }
