"""Read trades of a time window out of the store, sealed and open segments alike (DESIGN §5).

Files are chosen by path before any is opened: a file holds the rows *received* in
[its HHMMSS, the end of its hour), and a trade's exchange time may differ from its receive
time by network lag or clock error, so a file is read when that span widened by `slack_s`
(default 5 minutes, both sides) meets the window. Inside a file every record batch carries its
min/max exchange time in its custom metadata, read from the message header without
decompressing, so only the batches that meet the window are decompressed. Sealed files are
memory-mapped; an open ``_`` file is read as the IPC stream after its 8-byte magic, up to its
last complete batch.

Repair files (``HHMMSS.rest<N>.arrow``, rows from REST history grouped by their trade hour) are
listed and read like any sealed segment. A version 1 segment has no ``source`` column: its
rows come out with source ``"ws"``.

The window's ends may be integer µs (any value, as stored), aware `datetime`s (pandas
`Timestamp`s included), `numpy.datetime64` (UTC, as numpy has no zones) or strings read by the
one TIME parser of every command (`pumpwatch.utctime.parse_time_us`: ISO 8601 with a zone, or an
epoch in s/ms/µs/ns told by magnitude). ``base`` matches case-insensitively; ``streams`` takes
stream ids or exchange names (``"binance"`` is both Binance streams), as on the command line.
"""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from pumpwatch.errors import StoreError, UsageError
from pumpwatch.segments.ipcscan import Chunk, scan_segment, stream_of
from pumpwatch.segments.paths import HourlyFile, list_segments, sealed_name
from pumpwatch.segments.schema import (
    BATCH_TIME_MAX,
    BATCH_TIME_MIN,
    DICT_COLUMNS,
    ROW_SCHEMA,
    TRADE_SCHEMA,
    with_source,
)
from pumpwatch.streams import parse_streams, split_stream
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import parse_time_us

log = logging.getLogger(__name__)

DEFAULT_SLACK_S = 300.0
OUT_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("market", pa.string(), nullable=False),
        *TRADE_SCHEMA,
    ],
    metadata=TRADE_SCHEMA.metadata,
)


# A window end: epoch µs, an aware datetime (pandas Timestamp too), numpy datetime64 or a TIME string.
TimeLike = int | datetime | np.datetime64 | str
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_trades(
    data_dir: str | os.PathLike[str],
    start_us: TimeLike,
    end_us: TimeLike,
    *,
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> pa.Table:
    """Every trade with ``start_us <= time <= end_us`` (and ``base`` equal, if given).

    The ends are epoch µs or any `TimeLike` (module doc); ``base`` is matched in upper case;
    ``streams`` are stream ids or exchanges (a list or a comma list; None: all twelve).
    Columns: ``exchange``, ``market`` and those of `TRADE_SCHEMA` (strings, not dictionaries;
    ``source`` is ``"ws"`` or ``"rest"``), sorted by (exchange, market, time, recv_time), ties
    kept in the order they were written.
    """
    per_stream: dict[str, list[pa.RecordBatch]] = {}
    for stream, batch in iter_batches(
        data_dir, start_us, end_us, streams=streams, base=base, slack_s=slack_s
    ):
        per_stream.setdefault(stream, []).append(batch)
    parts = []
    for stream in sorted(per_stream, key=split_stream):
        table = pa.Table.from_batches(per_stream[stream], schema=TRADE_SCHEMA)
        order = pc.sort_indices(table, [("time", "ascending"), ("recv_time", "ascending")])
        table = table.take(order)
        exchange, market = split_stream(stream)
        n = table.num_rows
        table = table.add_column(0, OUT_SCHEMA.field("market"), _constant(market, n))
        table = table.add_column(0, OUT_SCHEMA.field("exchange"), _constant(exchange, n))
        parts.append(table.cast(OUT_SCHEMA))
    if not parts:
        return OUT_SCHEMA.empty_table()
    return pa.concat_tables(parts).combine_chunks()


def _constant(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value])).cast(
        pa.string()
    )


def iter_batches(
    data_dir: str | os.PathLike[str],
    start_us: TimeLike,
    end_us: TimeLike,
    *,
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(stream, batch of `TRADE_SCHEMA`) for the window, in stream then write order, filtered.

    Arguments as `read_trades`; they are checked when the iterator is created."""
    start_us, end_us = time_us(start_us, "start"), time_us(end_us, "end")
    if isinstance(streams, str):
        streams = streams.split(",")
    chosen = parse_streams(None if streams is None else [s.strip().lower() for s in streams])
    base = base.strip().upper() if base is not None else None
    return _iter_window(data_dir, start_us, end_us, chosen, base, slack_s)


def time_us(value: TimeLike, what: str = "time") -> int:
    """A window end as epoch µs: an int as it is, an aware datetime or pandas Timestamp exactly
    (to the µs, ns floored), a numpy datetime64 as UTC, a string through the TIME parser.
    A naive datetime is refused (`UsageError`): its zone would be a guess."""
    if isinstance(value, str):
        return parse_time_us(value, what=what)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise UsageError(
                f"{what}: datetime {value!r} has no time zone: give tzinfo=timezone.utc (or tz='UTC')"
            )
        return (value - _EPOCH) // timedelta(microseconds=1)
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[us]").astype(np.int64))
    if isinstance(value, bool):
        raise UsageError(f"{what}: expected a time, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise UsageError(
            f"{what}: expected epoch µs, a datetime with a zone or an ISO 8601 string, got {value!r}"
        ) from None


def _iter_window(
    data_dir: str | os.PathLike[str],
    start_us: int,
    end_us: int,
    streams: Sequence[str],
    base: str | None,
    slack_s: float,
) -> Iterator[tuple[str, pa.RecordBatch]]:
    if end_us < start_us:
        return
    slack_us = int(slack_s * US_PER_S)
    for seg in list_segments(data_dir, streams, start_us=start_us - slack_us, end_us=end_us + slack_us):
        if seg.start_us - slack_us > end_us or seg.hour_end_us + slack_us <= start_us:
            continue
        for batch in read_segment(seg, start_us, end_us, base=base):
            yield seg.stream, batch


def read_segment(
    seg: HourlyFile, start_us: int, end_us: int, *, base: str | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of one segment file inside the window, as `TRADE_SCHEMA` batches."""
    buf = _map(seg.path)
    if buf is None:
        return
    scan = scan_segment(buf)
    if scan.error is not None and seg.sealed:
        log.warning(
            "%s is damaged after byte %d (%s); reading what precedes", seg.path, scan.valid_end, scan.error
        )
    keep: list[Chunk] = []
    picked: list[int] = []
    ordinal = 0
    for chunk in scan.chunks:
        if chunk.kind != "record batch":
            keep.append(chunk)
            continue
        if _meets(chunk, start_us, end_us):
            keep.append(chunk)
            picked.append(ordinal)
        ordinal += 1
    if not picked:
        return
    for batch in _decode(buf, seg, scan.clean_eos, keep, picked):
        out = _filter(batch, start_us, end_us, base)
        if out is not None:
            yield out


def _map(path: Path) -> pa.Buffer | None:
    for candidate in (path, sealed_name(path)):
        try:
            with pa.memory_map(str(candidate)) as mm:
                return mm.read_buffer()
        except FileNotFoundError:
            continue  # an open file sealed (renamed) since it was listed, or pruned
        except OSError as exc:
            raise StoreError(f"cannot read segment {candidate}: {exc}") from None
    return None


def _meets(chunk: Chunk, start_us: int, end_us: int) -> bool:
    lo, hi = chunk.meta.get(BATCH_TIME_MIN), chunk.meta.get(BATCH_TIME_MAX)
    if lo is None or hi is None:
        return True  # no bounds recorded: decode it and filter row by row
    return int(lo) <= end_us and int(hi) >= start_us


def _decode(
    buf: pa.Buffer, seg: HourlyFile, clean: bool, keep: list[Chunk], picked: list[int]
) -> Iterator[pa.RecordBatch]:
    if seg.sealed and clean:
        try:
            reader = ipc.open_file(buf)
        except pa.ArrowInvalid:
            pass  # no readable footer: fall back to the stream
        else:
            for i in picked:
                yield reader.get_batch(i)
            return
    yield from ipc.open_stream(stream_of(buf, keep))


def _filter(batch: pa.RecordBatch, start_us: int, end_us: int, base: str | None) -> pa.RecordBatch | None:
    times = batch.column(0).to_numpy().view("i8")
    mask = (times >= start_us) & (times <= end_us)
    if base is not None:
        col = batch.column(batch.schema.get_field_index("base"))
        if pa.types.is_dictionary(col.type):
            hits = np.flatnonzero(np.asarray(col.dictionary.to_numpy(zero_copy_only=False) == base))
            if len(hits) == 0:
                return None
            mask &= np.isin(col.indices.to_numpy(zero_copy_only=False), hits)
        else:
            mask &= np.asarray(pc.equal(col, base).to_numpy(zero_copy_only=False), dtype=bool)
    if not mask.any():
        return None
    picked = batch if mask.all() else batch.filter(pa.array(mask))
    if picked.num_columns == len(ROW_SCHEMA):  # a version 1 segment: every row was received live
        picked = with_source(picked)
    cols = [
        col.cast(pa.string()) if name in DICT_COLUMNS else col
        for name, col in zip(picked.schema.names, picked.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(cols, schema=TRADE_SCHEMA)
