"""Writing the refined/ files of a listing directory, and re-running the detector on one."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import make_temp_dir, replace_dir, write_json
from pumpwatch.detector.analysis import Analysis, analyse
from pumpwatch.detector.compare import exchange_comparison, exchange_pumps
from pumpwatch.errors import StoreError
from pumpwatch.settings import PumpSettings

log = logging.getLogger(__name__)


def write_refined(listing_dir: str | Path, analysis: Analysis, *, chart: bool = True) -> Path:
    """Write refined/pump_analysis.json, refined/<exchange>_pumps.json (exchanges with events),
    refined/exchange_comparison.json and (unless `chart` is False) refined/chart.png, replacing
    any previous refined/ atomically. Returns the refined/ path."""
    target = Path(listing_dir) / "refined"
    tmp = make_temp_dir(target)
    try:
        write_json(tmp / "pump_analysis.json", analysis.pump_analysis)
        for exchange, doc in exchange_pumps(analysis).items():
            write_json(tmp / f"{exchange}_pumps.json", doc)
        write_json(tmp / "exchange_comparison.json", exchange_comparison(analysis))
        if chart:
            from pumpwatch.detector.chart import draw_chart

            draw_chart(analysis, tmp / "chart.png")
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def read_listing(listing_dir: Path) -> tuple[dict[str, Any], Any]:
    """(metadata.json object, raw/trades.parquet table) of an extracted listing directory."""
    import pyarrow.parquet as pq

    meta_path = listing_dir / "metadata.json"
    parquet_path = listing_dir / "raw" / "trades.parquet"
    try:
        meta = orjson.loads(meta_path.read_bytes())
        table = pq.ParquetFile(parquet_path).read()  # read_table would import pyarrow.dataset (+pandas)
    except FileNotFoundError as exc:
        raise StoreError(f"{listing_dir} is not a listing directory: missing {exc.filename}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StoreError(f"cannot read listing {listing_dir}: {exc}") from None
    if not isinstance(meta, dict) or "trigger_time_us" not in meta or "window" not in meta:
        raise StoreError(f"{meta_path}: not a PumpWatch metadata file (no trigger_time_us/window)")
    return meta, table


def run_detector(
    listing_dir: str | Path,
    pump: PumpSettings | None = None,
    *,
    chart: bool = True,
) -> dict[str, Any]:
    """Detect pumps in `listing_dir`/raw/trades.parquet with the thresholds of `pump` (default
    `PumpSettings()`) and (re)write its refined/ files.

    Returns the pump_analysis object. A directory without metadata.json or trades.parquet is a
    `StoreError`."""
    listing_dir = Path(listing_dir)
    meta, table = read_listing(listing_dir)
    window = meta["window"]
    analysis = analyse(
        table,
        int(meta["trigger_time_us"]),
        pump,
        symbol=meta.get("symbol"),
        period_us=(int(window["start_us"]), int(window["end_us"])),
    )
    write_refined(listing_dir, analysis, chart=chart)
    summary = analysis.pump_analysis["summary"]
    log.info(
        "detector %s: %d pump event(s) on %d stream(s), max %.2f%%",
        listing_dir.name,
        len(analysis.pump_analysis["pump_events"]),
        summary["total_streams_with_pumps"],
        summary["max_price_change"],
    )
    return analysis.pump_analysis
