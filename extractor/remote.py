"""`pumpwatch extract --store s3://…`: cut a listing window out of the shared store (issue 14).

Runs on any machine, a laptop with no recorder and no data directory included: the trades come
from every recorder's Parquet archive in the store, each trade once (`segments.remote_read`),
the coverage from every recorder's journal hours (the union of their listening). The listing
directory is written locally (``<out>/<SYMBOL>_<YYYYMMDDTHHMMSSZ>/``) with the same files as a
local extraction (`extractor.extract`): ``raw/<stream>.json``, ``raw/trades.parquet``,
``metadata.json``; the detector runs on it as after a local extraction. ``metadata.json`` also
says where the trades came from: ``store`` (``url``, the ``recorders`` that contributed trades
and how many each, ``unarchived_hours`` per stream).

The repair of issue 10 is applied on top where history exists, through the `repair` callback
(`recorder.history.store_repair.store_window_repair`, handed in by the CLI: the extractor does
not import the recorder): the gaps left by the union of the recorders (not listening, id holes,
hours not archived) are fetched from each exchange's REST trade history, merged into the
listing as source ``rest`` (each trade once: a row the store holds wins), and the outcome counts
in the coverage as ``repaired``/``unrepaired`` spans. Nothing is written to the store.

Only sealed, archived hours are in the store. A window hour no recorder has archived yet (the
hour a recorder is writing now, or an upload backlog) is named in `RemoteExtraction.unarchived`
and its span is missing with the reason ``not_archived``; when that leaves no trade at all,
`NothingMatchedError` names the hours and nothing is written.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.errors import NothingMatchedError, StoreError, UsageError
from pumpwatch.streams import STREAMS, parse_streams, split_stream, user_symbol
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import check_time_us, format_utc

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

    from pumpwatch.segments.remote_read import StoreIndex
    from pumpwatch.settings import Settings

log = logging.getLogger(__name__)

# `repair(index, table, streams, symbol, start_us, end_us)` -> the table with the REST rows merged
# in, the repair's journal events per stream (they count in the coverage), one note per stream
StoreRepair = Callable[
    ["StoreIndex", "pa.Table", Sequence[str], str, int, int],
    tuple["pa.Table", dict[str, list[dict[str, Any]]], list[str]],
]


@dataclass
class RemoteExtraction:
    """What `extract_remote` wrote: the listing directory, the window hours no recorder has
    archived per stream (hour start µs), and one repair note per stream it tried to repair."""

    path: Path
    unarchived: dict[str, list[int]] = field(default_factory=dict)
    repair_notes: list[str] = field(default_factory=list)


def unarchived_message(unarchived: Mapping[str, Sequence[int]], url: str) -> list[str]:
    """One line per stream with window hours not in the store."""
    from pumpwatch.segments.remote_read import hour_key

    return [
        f"{stream}: hour(s) {', '.join(hour_key(h) for h in hours)} UTC not archived in {url} yet "
        "(an hour reaches the store once sealed, archived and uploaded); listed as missing (not_archived)"
        for stream, hours in unarchived.items()
        if hours
    ]


def extract_remote(
    url: str,
    symbol: str,
    trigger_us: int,
    listings_dir: str | Path,
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    before_s: float = 20.0,
    after_s: float = 20.0,
    streams: Sequence[str] | str | None = None,
    recorders: Sequence[str] | None = None,
    source: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    repair: StoreRepair | None = None,
    filesystem: pafs.FileSystem | None = None,
    now_us: int | None = None,
) -> RemoteExtraction:
    """Extract `symbol`'s trades in ``[trigger - before_s, trigger + after_s]`` from the shared
    store at `url` into ``listings_dir`` (created if needed); see the module doc. `settings`
    gives the recorders' heartbeat (default 10 s); `repair`, when given, fills the union's gaps
    from REST history before the coverage is computed. Raises as `extract` does (`UsageError`,
    `NothingMatchedError`), and `StoreError` when the store cannot be read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pumpwatch.atomic import make_temp_dir, replace_dir, write_bytes, write_json
    from pumpwatch.extractor.extract import (
        _copy_files,
        _raw_rows,
        listing_lock,
        listing_target,
        write_json_lines_array,
    )
    from pumpwatch.extractor.metadata import build_metadata
    from pumpwatch.segments.remote_read import index_store, read_window, remote_completeness, unarchived_hours
    from pumpwatch.segments.slices import stream_slices

    symbol = user_symbol(symbol)
    chosen = parse_streams(streams if streams is None or isinstance(streams, str) else list(streams))
    if before_s < 0 or after_s < 0:
        raise UsageError(f"the extraction window cannot be negative (before {before_s} s, after {after_s} s)")
    if not (math.isfinite(before_s) and math.isfinite(after_s)):
        raise UsageError("the extraction window must be finite")
    check_time_us(trigger_us, "trigger time")
    start_us = check_time_us(trigger_us - round(before_s * US_PER_S), "window start (trigger - before)")
    end_us = check_time_us(trigger_us + round(after_s * US_PER_S), "window end (trigger + after)")
    heartbeat_s = settings.recorder.heartbeat_s if settings is not None else 10.0
    try:
        index = index_store(
            url, chosen, start_us, end_us, endpoint_url=endpoint_url, region=region,
            recorders=recorders, filesystem=filesystem,
        )  # fmt: skip
        window = read_window(index, start_us, end_us, streams=chosen, base=symbol)
        if not index.recorders:
            raise StoreError(f"no recorder has uploaded anything to {url}")
        unarchived = {
            s: unarchived_hours(index, s, start_us, end_us, heartbeat_s=heartbeat_s, now_us=now_us)
            for s in chosen
        }
        unarchived = {s: h for s, h in unarchived.items() if h}
        table = window.table
        extra: dict[str, list[dict[str, Any]]] = {}
        notes: list[str] = []
        if repair is not None:
            table, extra, notes = repair(index, table, chosen, symbol, start_us, end_us)
        comps = {
            s: remote_completeness(
                index,
                s,
                start_us,
                end_us,
                base=symbol,
                extra_events=extra.get(s, ()),
                heartbeat_s=heartbeat_s,
                now_us=now_us,
            )
            for s in chosen
        }
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(
            f"the store {url} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc!r}"
        ) from None
    if table.num_rows == 0 and not any(c.symbols for c in comps.values()):
        hours = unarchived_message(unarchived, url)
        why = ("; " + "; ".join(hours)) if hours else ", and no recorder's journal names it"
        raise NothingMatchedError(
            f"no trade of {symbol} in {format_utc(start_us)} .. {format_utc(end_us)} in {url} "
            f"on {_streams_text(chosen)}{why}; nothing written"
        )
    listings = Path(listings_dir)
    listings.mkdir(parents=True, exist_ok=True)
    with listing_lock(listings):
        target, old = listing_target(listings, symbol, trigger_us, source)
        found = stream_slices(table)
        parts: dict[str, Any] = {s: found.get(s, table.slice(0, 0)) for s in chosen}
        tmp = make_temp_dir(target)
        try:
            (tmp / "raw").mkdir()
            for stream in chosen:
                exchange, market = split_stream(stream)
                write_json_lines_array(
                    tmp / "raw" / f"{stream}.json", _raw_rows(parts[stream], exchange, market)
                )
            if old is not None and (target / "refined").is_dir():
                _copy_files(target / "refined", tmp / "refined")
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf, compression="zstd")
            write_bytes(tmp / "raw" / "trades.parquet", buf.getvalue().to_pybytes())
            meta = build_metadata(
                symbol,
                trigger_us,
                before_s=before_s,
                after_s=after_s,
                start_us=start_us,
                end_us=end_us,
                source=source,
                parts=parts,
                completeness=comps,
                previous=old,
            )
            meta["store"] = _store_entry(
                url, index, window.kept_by_recorder, window.rows_by_recorder, unarchived
            )
            write_json(tmp / "metadata.json", meta)
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info(
        "extracted %s around %s from %s: %d trades from %d recorder(s) -> %s",
        symbol,
        format_utc(trigger_us),
        url,
        table.num_rows,
        len(meta["store"]["recorders"]),
        target,
    )
    return RemoteExtraction(target, unarchived, notes)


def _store_entry(
    url: str,
    index: StoreIndex,
    kept: Mapping[str, Mapping[str, int]],
    rows: Mapping[str, Mapping[str, int]],
    unarchived: Mapping[str, Sequence[int]],
) -> dict[str, Any]:
    """metadata.json ``store``: where the trades came from, recorder by recorder."""
    from pumpwatch.segments.remote_read import hour_key

    recorders: dict[str, Any] = {}
    for stream in sorted(kept, key=STREAMS.index):
        for rid, n in kept[stream].items():
            entry = recorders.setdefault(rid, {"trades": 0, "streams": {}})
            entry["trades"] += n
            entry["streams"][stream] = {"trades": n, "rows_read": rows[stream].get(rid, 0)}
    return {
        "url": url,
        "recorders_read": list(index.recorders),
        "recorders": {rid: recorders[rid] for rid in sorted(recorders)},
        "unarchived_hours": {s: [hour_key(h) for h in hours] for s, hours in unarchived.items()},
        "merge": "each trade once by (symbol, trade_id), else (symbol, time, price, qty, side)",
    }


def _streams_text(chosen: Sequence[str]) -> str:
    return "any of the twelve streams" if len(chosen) == len(STREAMS) else ", ".join(chosen)
