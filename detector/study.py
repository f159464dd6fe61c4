"""The study across listings: the numbers of `pumpwatch report`, read from every listing
directory's metadata.json and refined/ files (DESIGN §7) and summed up per listing, per stream
and per pump event. Reading is one function; everything after it is pure.

Lags are measured from the trigger T (a pump that starts before T has a negative lag), rises
are the detector's `price_change_percent` (peak inside the event vs its start), durations
run from an event's first to its last trade. Quartiles are numpy's linear interpolation.
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
COVERAGE_STATES = ("complete", "repaired", "incomplete")


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


def listing_study(lf: ListingFiles) -> dict[str, Any]:
    """One listing's row of the overview plus its per-stream table and events."""
    meta = lf.metadata
    trigger_us = int(meta["trigger_time_us"])
    events = _events(lf, trigger_us)
    coverage: dict[str, list[str]] = {state: [] for state in COVERAGE_STATES}
    comp_streams = (lf.comparison or {}).get("streams", {})
    volume_in_pumps: dict[str, float] = {}
    for ev in events:
        volume_in_pumps[ev["stream"]] = volume_in_pumps.get(ev["stream"], 0.0) + float(ev["volume"] or 0.0)
    streams = []
    for name in sorted(set(meta.get("streams", {})) | set(comp_streams), key=_stream_key):
        m = meta.get("streams", {}).get(name, {})
        c = comp_streams.get(name, {})
        state = (m.get("coverage") or {}).get("state")
        if state in coverage:
            coverage[state].append(name)
        first_us = c.get("first_pump_time_us")
        streams.append(
            {
                "stream": name,
                "trades": m.get("trades", c.get("trades")),
                "coverage": state,
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
    first = min(events, key=lambda e: (e["start_time_us"], _stream_key(e["stream"]))) if events else None
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
        "incomplete_streams": coverage["incomplete"],
        "streams_pumped": len({e["stream"] for e in events}),
        "pumped_streams": sorted({e["stream"] for e in events}, key=_stream_key),
        "first_pump_stream": first["stream"] if first else None,
        "first_pump_lag_ms": first["lag_ms"] if first else None,
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
    """Per exchange and market across listings: how often it was recorded, pumped and pumped
    first; the spread of its first-pump lag after T and of its largest pump rise; its mean
    share of a listing's pump volume (base units, so comparable within a listing only:
    shares are taken per listing with any pump, then averaged)."""
    names = sorted({s["stream"] for lst in listings for s in lst["streams"]}, key=_stream_key)
    with_pump = [lst for lst in listings if lst["events"]]
    out = []
    for name in names:
        rows = [s for lst in listings for s in lst["streams"] if s["stream"] == name]
        pumped = [s for s in rows if s["pumped"]]
        shares = []
        for lst in with_pump:
            total = sum(s["volume_in_pumps"] for s in lst["streams"])
            mine = sum(s["volume_in_pumps"] for s in lst["streams"] if s["stream"] == name)
            if total > 0:
                shares.append(mine / total)
        first = sum(1 for lst in with_pump if lst["first_pump_stream"] == name)
        exchange, _, market = name.partition("_")
        out.append(
            {
                "stream": name,
                "exchange": exchange,
                "market": market,
                "listings": len(rows),
                "pumped": len(pumped),
                "first": first,
                "first_share": first / len(with_pump) if with_pump else None,
                "lag_ms": _spread(
                    [s["first_pump_lag_ms"] for s in pumped if s["first_pump_lag_ms"] is not None]
                ),
                "rise_percent": _spread(
                    [s["max_pump_rise_percent"] for s in pumped if s["max_pump_rise_percent"] is not None]
                ),
                "pump_volume_share": float(np.mean(shares)) if shares else None,
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
            "pump_events": len(events),
            "first_listing_utc": listings[0]["trigger_utc"] if listings else None,
            "last_listing_utc": listings[-1]["trigger_utc"] if listings else None,
        },
        "skipped": [{"listing": s.name, "reason": s.reason} for s in skipped or []],
    }
