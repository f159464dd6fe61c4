"""Cut the window around a trigger time for one symbol out of the store (DESIGN §7).

Output, under ``<data_dir>/listings/<SYMBOL>_<YYYYMMDDTHHMMSSZ>/`` (trigger time in UTC):

- ``raw/<stream>.json`` for every selected stream: a JSON array, one trade per line, oldest
  first: exchange, market, symbol, price, quantity (base units), side (taker), timestamp
  (integer ms, floor of the exchange time, as the original system wrote it), timestamp_us
  (the exact exchange time in µs; some venues give µs or ns), trade_id (null on Phemex),
  source (``ws``: received live, ``rest``: repaired from the exchange's trade history).
- ``raw/trades.parquet``: every stream's trades in one table, the columns of the store plus
  ``exchange`` and ``market``, sorted by exchange, market, time, receive time.
- ``metadata.json``: symbol, trigger time, window, source, per-stream trades/symbols/coverage
  (state ``complete``/``repaired``/``incomplete`` with the repaired and missing spans).

The window is closed: trades with ``T - before <= time <= T + after``. The directory is built
under a temporary name and swapped in atomically; the raw files contain nothing but the
trades, so the same store and arguments give byte-identical raw files (metadata.json alone
carries the extraction's wall-clock time, in ``extracted_at``).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import make_temp_dir, replace_dir, write_bytes, write_json
from pumpwatch.errors import StoreError, UsageError
from pumpwatch.extractor.metadata import build_metadata
from pumpwatch.streams import check_symbol, parse_streams, split_stream
from pumpwatch.timeunits import US_PER_MS, US_PER_S
from pumpwatch.utctime import check_time_us, format_utc

log = logging.getLogger(__name__)


def listing_dir_name(symbol: str, trigger_us: int) -> str:
    """``0G_20250102T030405Z`` for a trigger at 2025-01-02 03:04:05.xxx UTC."""
    stamp = datetime.fromtimestamp(trigger_us // US_PER_S, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{check_symbol(symbol)}_{stamp}"


def _raw_rows(part: Any, exchange: str, market: str) -> list[dict[str, Any]]:
    time_us = part.column("time").cast("int64").to_pylist()
    cols = zip(
        part.column("symbol").to_pylist(),
        part.column("price").to_pylist(),
        part.column("qty").to_pylist(),
        part.column("side").to_pylist(),
        time_us,
        part.column("trade_id").to_pylist(),
        part.column("source").to_pylist(),
        strict=True,
    )
    return [
        {
            "exchange": exchange,
            "market": market,
            "symbol": symbol,
            "price": price,
            "quantity": qty,
            "side": side,
            "timestamp": t_us // US_PER_MS,
            "timestamp_us": t_us,
            "trade_id": trade_id,
            "source": source,
        }
        for symbol, price, qty, side, t_us, trade_id, source in cols
    ]


def write_json_lines_array(path: Path, items: Iterable[Any]) -> None:
    """A JSON array with one element per line: valid JSON, yet greppable and diffable."""
    lines = [orjson.dumps(item) for item in items]
    body = b"[\n" + b",\n".join(lines) + b"\n]\n" if lines else b"[]\n"
    write_bytes(path, body)


def extract(
    data_dir: str | Path,
    symbol: str,
    trigger_us: int,
    *,
    before_s: float = 20.0,
    after_s: float = 20.0,
    source: Mapping[str, Any] | None = None,
    streams: Sequence[str] | str | None = None,
) -> Path:
    """Extract `symbol`'s trades in ``[trigger - before_s, trigger + after_s]`` from the store
    under `data_dir` and return the listing directory written (see the module doc).

    `source` describes what triggered the extraction (Upbit notice id, title, first_listed_at,
    detected_at, detection_delay_s …); None means "manual". `streams` restricts the streams
    (ids or exchange names, as `parse_streams` accepts); None = all twelve. Repairing the window
    from REST history first is the caller's job (`pumpwatch.recorder.history.window`).
    Raises `UsageError` for a malformed symbol or stream or an implausible time (see
    `pumpwatch.utctime.check_time_us`), `StoreError` for a missing data dir.
    """
    check_symbol(symbol)
    chosen = parse_streams(streams if streams is None or isinstance(streams, str) else list(streams))
    if before_s < 0 or after_s < 0:
        raise StoreError("the extraction window cannot be negative")
    check_time_us(trigger_us, "trigger time")
    if not (math.isfinite(before_s) and math.isfinite(after_s)):
        raise UsageError("the extraction window must be finite")
    start_us = check_time_us(trigger_us - round(before_s * US_PER_S), "window start (trigger - before)")
    end_us = check_time_us(trigger_us + round(after_s * US_PER_S), "window end (trigger + after)")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"data directory {data_dir} does not exist")

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pumpwatch.segments.reader import read_trades
    from pumpwatch.segments.slices import stream_slices

    table = read_trades(data_dir, start_us, end_us, streams=list(chosen), base=symbol)
    target = data_dir / "listings" / listing_dir_name(symbol, trigger_us)
    tmp = make_temp_dir(target)
    try:
        (tmp / "raw").mkdir()
        found = stream_slices(table)
        parts: dict[str, Any] = {}
        for stream in chosen:
            exchange, market = split_stream(stream)
            part = found.get(stream, table.slice(0, 0))
            parts[stream] = part
            write_json_lines_array(tmp / "raw" / f"{stream}.json", _raw_rows(part, exchange, market))
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf, compression="zstd")
        write_bytes(tmp / "raw" / "trades.parquet", buf.getvalue().to_pybytes())
        meta = build_metadata(
            data_dir,
            symbol,
            trigger_us,
            before_s=before_s,
            after_s=after_s,
            start_us=start_us,
            end_us=end_us,
            source=source,
            parts=parts,
        )
        write_json(tmp / "metadata.json", meta)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "extracted %s around %s: %d trades on %d stream(s) -> %s",
        symbol,
        format_utc(trigger_us),
        table.num_rows,
        sum(1 for p in parts.values() if p.num_rows),
        target,
    )
    return target
