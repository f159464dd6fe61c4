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

Re-extraction (`listing_target`) never destroys another extraction's provenance or files:

- An extraction is identified by symbol, exact trigger µs and source (the Upbit notice id; a
  manual run matches any source). Re-running it refreshes the same directory; a manual re-run
  of an Upbit listing keeps its ``source`` and records ``re_extracted`` (first extraction time
  and count). A different extraction whose name collides (two notices of one symbol in the
  same second, another trigger µs in that second) gets the next free ``_2``, ``_3`` … suffix.
- A refresh rewrites ``metadata.json`` and the raw files of the streams it selects. It keeps
  what it does not rewrite: the raw files, ``raw/trades.parquet`` rows and metadata entries of
  streams it did not select (or whose segments retention has since deleted, when the store
  now yields no trade where the listing had some), the trades of the spans the store has lost
  since (damaged, or hours whose files were deleted: `extractor.losses`, listed in the
  coverage as ``restored``), and ``refined/`` as the last detector run left it (the detector
  replaces it when it runs).
- Choosing the directory and swapping it in happen under `listing_lock` (an exclusive
  ``flock`` on the listings directory), so extractions running at once never take the same
  name.

Coverage counts what the store lost without a journal event too (`extractor.losses`): damaged
spans (reason ``damaged``) and listening hours with no segment or archive file left
(``deleted``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import make_temp_dir, replace_dir, write_bytes, write_json
from pumpwatch.errors import NothingMatchedError, StoreError, UsageError
from pumpwatch.extractor.metadata import build_metadata
from pumpwatch.segments.coverage import merge_spans
from pumpwatch.streams import STREAMS, check_symbol, parse_streams, split_stream, user_symbol
from pumpwatch.timeunits import US_PER_MS, US_PER_S
from pumpwatch.utctime import check_time_us, format_utc

log = logging.getLogger(__name__)

MAX_NAME_SUFFIX = 1000  # distinct extractions sharing one symbol and second, at most


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


def read_metadata(listing_dir: Path) -> dict[str, Any] | None:
    """A listing directory's metadata.json as a dict, or None (no directory, no or bad file)."""
    try:
        meta = orjson.loads((listing_dir / "metadata.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _source_key(source: Any) -> Any:
    if isinstance(source, Mapping) and "notice_id" in source:
        return ("notice", source["notice_id"])
    return ("source", orjson.dumps(source, option=orjson.OPT_SORT_KEYS))


def same_extraction(
    old: Mapping[str, Any], symbol: str, trigger_us: int, source: Mapping[str, Any] | None
) -> bool:
    """Is the listing whose metadata is `old` the extraction (symbol, trigger µs, source)? A
    manual request (`source` None) matches any source; a sourced one matches a manual listing
    (it adds the provenance the manual run lacked) or one of the same notice."""
    if old.get("symbol") != symbol or old.get("trigger_time_us") != trigger_us:
        return False
    old_source = old.get("source")
    return source is None or old_source == "manual" or _source_key(old_source) == _source_key(dict(source))


def listing_target(
    listings: Path, symbol: str, trigger_us: int, source: Mapping[str, Any] | None
) -> tuple[Path, dict[str, Any] | None]:
    """The directory this extraction writes, and the metadata of the one it refreshes (None for
    a new one): ``<SYM>_<stamp>``, else the first of ``_2``, ``_3`` … that is this extraction
    or free. A directory that is not a readable listing is never taken over."""
    name = listing_dir_name(symbol, trigger_us)
    for n in range(1, MAX_NAME_SUFFIX + 1):
        target = listings / (name if n == 1 else f"{name}_{n}")
        if not target.exists():
            return target, None
        old = read_metadata(target)
        if old is not None and same_extraction(old, symbol, trigger_us, source):
            return target, old
    raise StoreError(f"{MAX_NAME_SUFFIX} listings named {name}_* already exist in {listings}")


@contextlib.contextmanager
def listing_lock(listings: Path) -> Iterator[None]:
    """Hold the listings directory's writer lock (an exclusive ``flock`` on the directory
    itself, blocking; no lock file) from choosing the directory name (`listing_target`) to
    swapping the finished directory in: two extractions running at once (threads or processes;
    the listing watcher runs two) never pick the same name, so neither replaces the other."""
    try:
        listings.mkdir(parents=True, exist_ok=True)
        fd = os.open(listings, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"cannot open the listings directory {listings}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _kept_streams(
    old: Mapping[str, Any] | None,
    target: Path,
    fresh: Mapping[str, Any],
    data_dir: Path,
    window: tuple[int, int],
) -> list[str]:
    """Streams of the refreshed listing `old` this extraction leaves as they were: not selected
    now, or selected but read empty where the listing had trades and the store holds no
    segment of the stream for the same window any more (retention)."""
    if old is None or not isinstance(old.get("streams"), dict):
        return []
    from pumpwatch.segments.paths import list_segments

    kept = []
    for stream, info in old["streams"].items():
        if stream not in fresh or (
            fresh[stream].num_rows == 0
            and _window_us(old) == window
            and isinstance(info, dict)
            and info.get("trades")
            and not list_segments(data_dir, [stream], start_us=window[0], end_us=window[1])
        ):
            kept.append(stream)
    return [s for s in kept if s in STREAMS and (target / "raw" / f"{s}.json").is_file()]


def _window_us(meta: Mapping[str, Any]) -> tuple[Any, Any] | None:
    window = meta.get("window")
    return (window.get("start_us"), window.get("end_us")) if isinstance(window, dict) else None


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

    `symbol` is upper-cased (``0g`` = ``0G``). `source` describes what triggered the extraction
    (Upbit notice id, title, first_listed_at, detected_at, detection_delay_s …); None means
    "manual" (or, when refreshing a listing, that listing's source). `streams` restricts the
    streams (ids or exchange names, as `parse_streams` accepts); None = all twelve. Repairing the
    window from REST history first is the caller's job (`pumpwatch.recorder.history.window`).
    Raises `UsageError` for a malformed symbol or stream, a negative or infinite window, or an
    implausible time (see `pumpwatch.utctime.check_time_us`), `StoreError` for a missing data
    dir, and
    `NothingMatchedError` (writing nothing) when no selected stream has a trade of the symbol
    in the window, a journal naming it, or a damaged segment there.
    """
    symbol = user_symbol(symbol)
    chosen = parse_streams(streams if streams is None or isinstance(streams, str) else list(streams))
    if before_s < 0 or after_s < 0:
        raise UsageError(f"the extraction window cannot be negative (before {before_s} s, after {after_s} s)")
    check_time_us(trigger_us, "trigger time")
    if not (math.isfinite(before_s) and math.isfinite(after_s)):
        raise UsageError("the extraction window must be finite")
    start_us = check_time_us(trigger_us - round(before_s * US_PER_S), "window start (trigger - before)")
    end_us = check_time_us(trigger_us + round(after_s * US_PER_S), "window end (trigger + after)")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"data directory {data_dir} does not exist")

    import pyarrow as pa

    from pumpwatch.extractor.losses import DELETED, fileless_spans, unreadable_spans, with_losses
    from pumpwatch.segments.journal import read_events
    from pumpwatch.segments.reader import read_trades

    try:
        table = read_trades(data_dir, start_us, end_us, streams=list(chosen), base=symbol)
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(_undecodable(data_dir, start_us, end_us, chosen, symbol, exc)) from None
    # what the store cannot give back: damage (checksums, files cut short, gone segments whose
    # archive file is unreadable) and hours with no file at all (the free-disk floor)
    unreadable, damage = unreadable_spans(data_dir, start_us, end_us, chosen)
    fileless = {stream: fileless_spans(data_dir, stream, start_us, end_us) for stream in chosen}
    comps = {
        stream: with_losses(
            read_events(data_dir, stream),
            start_us,
            end_us,
            base=symbol,
            unreadable=unreadable.get(stream, []),
            fileless=fileless[stream],
        )
        for stream in chosen
    }
    if table.num_rows == 0 and not unreadable and not any(c.symbols for c in comps.values()):
        raise NothingMatchedError(
            f"no stream has recorded {symbol}: no trade in {format_utc(start_us)} .. {format_utc(end_us)} "
            f"on {_streams_text(chosen)}, and no journal names it; nothing written"
        )
    for stream, spans in damage.items():
        for d in spans:
            log.warning(
                "%s: %s is damaged after byte %d (%s): %s .. %s unreadable, listed as missing (damaged)",
                stream,
                d.path,
                d.offset,
                d.error,
                format_utc(d.start_us),
                format_utc(d.end_us),
            )
    for stream, comp in comps.items():
        for m in comp.missing:
            if m.reason == DELETED:
                log.warning(
                    "%s: %s .. %s listening, but no segment or archive file of that hour is left "
                    "(deleted, e.g. by the free-disk floor): listed as missing (deleted)",
                    stream,
                    format_utc(m.start_us),
                    format_utc(comp.clip(m.end_us)),
                )
    lost = {stream: merge_spans([*unreadable.get(stream, []), *fileless[stream]]) for stream in chosen}
    with listing_lock(data_dir / "listings"):
        target, old = listing_target(data_dir / "listings", symbol, trigger_us, source)
        n_trades = _write_listing(
            data_dir,
            target,
            old,
            table,
            comps,
            lost,
            chosen=chosen,
            symbol=symbol,
            trigger_us=trigger_us,
            before_s=before_s,
            after_s=after_s,
            window=(start_us, end_us),
            source=source,
        )
    log.info(
        "%s %s around %s: %d trades on %d stream(s) -> %s",
        "re-extracted" if old is not None else "extracted",
        symbol,
        format_utc(trigger_us),
        n_trades[0],
        n_trades[1],
        target,
    )
    return target


def _write_listing(
    data_dir: Path,
    target: Path,
    old: dict[str, Any] | None,
    table: Any,
    comps: Mapping[str, Any],
    lost: Mapping[str, Sequence[tuple[int, int]]],
    *,
    chosen: Sequence[str],
    symbol: str,
    trigger_us: int,
    before_s: float,
    after_s: float,
    window: tuple[int, int],
    source: Mapping[str, Any] | None,
) -> tuple[int, int]:
    """Build the listing directory in a temporary one and swap it in at `target` (the caller
    holds `listing_lock`); (trades written, streams with trades)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pumpwatch.extractor.losses import restore_lost_rows
    from pumpwatch.segments.slices import stream_slices

    found = stream_slices(table)
    parts: dict[str, Any] = {stream: found.get(stream, table.slice(0, 0)) for stream in chosen}
    kept = _kept_streams(old, target, parts, data_dir, window)
    comps = dict(comps)
    restored: dict[str, list[dict[str, Any]]] = {}
    for stream in chosen:
        if stream in kept:
            continue
        part, comp, entries = restore_lost_rows(
            old, target, stream, parts[stream], comps[stream], lost[stream], window
        )
        if entries:
            parts[stream], comps[stream], restored[stream] = part, comp, entries
    if restored:
        table = pa.concat_tables([parts[s] for s in sorted(chosen, key=split_stream)])
    tmp = make_temp_dir(target)
    try:
        (tmp / "raw").mkdir()
        for stream in chosen:
            if stream in kept:
                continue
            exchange, market = split_stream(stream)
            write_json_lines_array(tmp / "raw" / f"{stream}.json", _raw_rows(parts[stream], exchange, market))
        out_table = table
        if kept:
            for stream in kept:
                write_bytes(tmp / "raw" / f"{stream}.json", (target / "raw" / f"{stream}.json").read_bytes())
            out_table = _merge_kept(pq, pc, pa, target, table, kept)
        if old is not None and (target / "refined").is_dir():
            _copy_files(target / "refined", tmp / "refined")
        buf = pa.BufferOutputStream()
        pq.write_table(out_table, buf, compression="zstd")
        write_bytes(tmp / "raw" / "trades.parquet", buf.getvalue().to_pybytes())
        meta = build_metadata(
            symbol,
            trigger_us,
            before_s=before_s,
            after_s=after_s,
            start_us=window[0],
            end_us=window[1],
            source=source,
            parts={s: p for s, p in parts.items() if s not in kept},
            completeness={s: comps[s] for s in chosen if s not in kept},
            previous=old,
            kept=kept,
        )
        for stream, entries in restored.items():
            meta["streams"][stream]["coverage"]["restored"] = entries
        write_json(tmp / "metadata.json", meta)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sum(p.num_rows for s, p in parts.items() if s not in kept), sum(
        1 for p in parts.values() if p.num_rows
    )


def _undecodable(
    data_dir: Path, start_us: int, end_us: int, chosen: Sequence[str], symbol: str, exc: BaseException
) -> str:
    """One line for a window the reader cannot decode (a batch body damaged on disk, which the
    scan of message headers in `segments.damage` cannot see), naming the streams it hits."""
    import pyarrow as pa

    from pumpwatch.segments.reader import read_trades

    bad = []
    for stream in chosen:
        try:
            read_trades(data_dir, start_us, end_us, streams=[stream], base=symbol)
        except (OSError, pa.ArrowException):
            bad.append(stream)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"a segment of {', '.join(bad) or 'the window'} cannot be decoded ({first}): "
        "a damaged batch inside the window; nothing written"
    )


def _copy_files(src: Path, dst: Path) -> None:
    """The files of `src` (one level, as refined/ holds them) into a new `dst`, each fsynced
    like every file of a listing (`replace_dir` then syncs the directories)."""
    dst.mkdir()
    for path in sorted(src.iterdir()):
        if path.is_file():
            write_bytes(dst / path.name, path.read_bytes())


def _streams_text(chosen: Sequence[str]) -> str:
    return "any of the twelve streams" if len(chosen) == len(STREAMS) else ", ".join(chosen)


def _merge_kept(pq: Any, pc: Any, pa: Any, target: Path, table: Any, kept: Sequence[str]) -> Any:
    """`table` plus the rows of the `kept` streams from the listing's trades.parquet, in the
    file's order (exchange, market, time, receive time; a stable sort keeps ties)."""
    try:
        old = pq.read_table(target / "raw" / "trades.parquet")
    except (OSError, pa.ArrowException):
        log.warning(
            "%s: raw/trades.parquet unreadable; the kept streams are only in their JSON files", target
        )
        return table
    ids = pc.binary_join_element_wise(old.column("exchange"), old.column("market"), "_")
    rows = old.filter(pc.is_in(ids, pa.array(list(kept))))
    merged = pa.concat_tables([table, rows.select(table.schema.names).cast(table.schema)])
    order = pc.sort_indices(
        merged,
        [
            ("exchange", "ascending"),
            ("market", "ascending"),
            ("time", "ascending"),
            ("recv_time", "ascending"),
        ],
    )
    return merged.take(order)
