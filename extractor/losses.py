"""What the store lost inside an extraction window, and how a refresh keeps what a listing had.

Coverage comes from the journal (was the stream listening, any id hole, any repair), but the
journal does not see every loss of stored trades:

- **damage**: batches failing their checksum, files cut short, segments gone while their archive
  file cannot be read (`unreadable_spans`: `segments.reader.window_damage` plus the cut-short
  files of `segments.damage`, except the segments the Parquet archive stands in for);
- **deleted**: the free-disk floor deletes last copies (unarchived segments, archive files whose
  segments are gone) without a journal event. A UTC hour of the window that the journal counts
  as listening but for which the store holds neither a segment nor an archive file of the
  stream is missing with the reason ``deleted`` (`fileless_spans`, `with_losses`; a stream
  whose files open on its first trade and that never stored any file is not judged).

A refresh of a listing (`restore_lost_rows`) never replaces its trades with fewer because the
store lost some since: in the spans the store now lacks (damaged, or hours without any file),
the rows the listing had are kept (the multiset union with what the store still gives: each
distinct trade as many times as the larger of its two counts), and the coverage says so
(``restored``); such a span stays missing only where the listing lacked it too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pumpwatch.segments.coverage import (
    DAMAGED,
    STATE_COMPLETE,
    STATE_INCOMPLETE,
    STATE_REPAIRED,
    Completeness,
    MissingSpan,
    Span,
    completeness_from_events,
    merge_spans,
)
from pumpwatch.timeunits import US_PER_HOUR

log = logging.getLogger(__name__)

DELETED = "deleted"


def subtract_spans(spans: Iterable[Span], cut: Iterable[Span]) -> list[Span]:
    """The parts of the half-open `spans` outside every span of `cut`, merged and sorted."""
    cuts = merge_spans(cut)
    out: list[Span] = []
    for a, b in merge_spans(spans):
        for c, d in cuts:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def intersect_spans(spans: Iterable[Span], other: Iterable[Span]) -> list[Span]:
    """The parts of the half-open `spans` inside some span of `other`."""
    mine = merge_spans(spans)
    return subtract_spans(mine, subtract_spans(mine, other))


def unreadable_spans(
    data_dir: str | os.PathLike[str], start_us: int, end_us: int, streams: Sequence[str]
) -> tuple[dict[str, list[Span]], dict[str, list[Any]]]:
    """Per stream, the half-open spans of the closed window whose trades the store cannot give
    back (module doc), and the `segments.damage.DamagedSpan`s of the sealed files cut short
    that count (for the log)."""
    from pumpwatch.segments.damage import damaged_spans
    from pumpwatch.segments.reader import window_damage

    found = window_damage(data_dir, start_us, end_us, streams=streams)
    cut = {
        stream: kept
        for stream, spans in damaged_spans(data_dir, start_us, end_us, streams=streams).items()
        if (kept := [d for d in spans if Path(d.path) not in found.served])
    }
    per: dict[str, list[Span]] = {}
    for stream, spans in cut.items():
        per.setdefault(stream, []).extend((d.start_us, d.end_us) for d in spans)
    for d in found.damage:
        a, b = max(d.time_min_us, start_us), min(d.time_max_us + 1, end_us + 1)
        if a < b:
            per.setdefault(d.stream, []).append((a, b))
    return {stream: merge_spans(spans) for stream, spans in per.items()}, cut


def fileless_spans(data_dir: str | os.PathLike[str], stream: str, start_us: int, end_us: int) -> list[Span]:
    """The half-open parts of the closed window in UTC hours for which the store holds neither a
    segment (sealed, open or repair) nor an archive file of `stream` (none for a stream with no
    file at all: `has_files`)."""
    from pumpwatch.segments.paths import hour_start_us, list_segments
    from pumpwatch.segments.retention import archive_files

    if not has_files(data_dir, stream):
        return []
    first = hour_start_us(start_us)
    have = {
        hour_start_us(f.start_us) for f in list_segments(data_dir, [stream], start_us=first, end_us=end_us)
    }
    have |= {f.start_us for f in archive_files(data_dir, [stream]) if first <= f.start_us <= end_us}
    out: list[Span] = []
    hour = first
    while hour <= end_us:
        if hour not in have:
            a, b = max(hour, start_us), min(hour + US_PER_HOUR, end_us + 1)
            if out and out[-1][1] == a:
                out[-1] = (out[-1][0], b)
            else:
                out.append((a, b))
        hour += US_PER_HOUR
    return out


def has_files(data_dir: str | os.PathLike[str], stream: str) -> bool:
    """Whether the store holds any segment or archive file of `stream` at all. A stream without
    any (nothing ever recorded: no trade of anything it listened to) gives no sign that a file
    was deleted, so its hours without a file are not called deleted."""
    from pumpwatch.segments.paths import stream_dir
    from pumpwatch.segments.retention import ARCHIVE_DIR, SEGMENTS_DIR

    for root, suffix in ((SEGMENTS_DIR, ".arrow"), (ARCHIVE_DIR, ".parquet")):
        sdir = stream_dir(Path(data_dir) / root, stream)
        try:
            days = os.listdir(sdir)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for day in days:
            try:
                if any(name.endswith(suffix) for name in os.listdir(sdir / day)):
                    return True
            except (FileNotFoundError, NotADirectoryError):
                continue
    return False


def listening_spans(comp: Completeness, start_us: int, end_us: int) -> list[Span]:
    """The half-open parts of the closed window in which the journal counts the stream as
    listening (nothing when the journal does not know)."""
    if not comp.listening.known:
        return []
    gaps = [(a, end_us + 1 if b == end_us else b) for a, b in comp.listening.gaps]
    return subtract_spans([(start_us, end_us + 1)], gaps)


def with_losses(
    events: Sequence[dict[str, Any]],
    start_us: int,
    end_us: int,
    *,
    base: str,
    unreadable: Sequence[Span],
    fileless: Sequence[Span],
) -> Completeness:
    """The stream's completeness (`segments.coverage.completeness_from_events`) with the store's
    losses: the `unreadable` spans are damage, and the `fileless` ones inside the journal's
    listening missing as ``deleted`` (module doc)."""
    comp = completeness_from_events(events, start_us, end_us, base=base, damaged=unreadable)
    deleted = subtract_spans(intersect_spans(fileless, listening_spans(comp, start_us, end_us)), unreadable)
    if not deleted:
        return comp
    comp = completeness_from_events(
        events, start_us, end_us, base=base, damaged=merge_spans([*unreadable, *deleted])
    )
    missing: list[MissingSpan] = []
    for m in comp.missing:
        if m.reason == DAMAGED and any(a <= m.start_us and m.end_us <= b for a, b in deleted):
            m = dataclasses.replace(m, reason=DELETED)
        last = missing[-1] if missing else None
        if (
            last is not None
            and last.end_us == m.start_us
            and (last.reason, last.symbols) == (m.reason, m.symbols)
        ):
            missing[-1] = dataclasses.replace(last, end_us=m.end_us)
        else:
            missing.append(m)
    return dataclasses.replace(comp, missing=missing)


def _restored_comp(comp: Completeness, restored: Sequence[Span]) -> Completeness:
    """`comp` with the `restored` spans neither gaps nor missing any more."""
    gaps = subtract_spans(comp.gaps, restored)
    missing = [
        dataclasses.replace(m, start_us=a, end_us=b)
        for m in comp.missing
        for a, b in subtract_spans([(m.start_us, m.end_us)], restored)
    ]
    state = STATE_COMPLETE if not gaps else STATE_INCOMPLETE if missing else STATE_REPAIRED
    return dataclasses.replace(comp, gaps=gaps, missing=missing, state=state)


def _in_spans(pc: Any, pa: Any, table: Any, spans: Sequence[Span]) -> Any:
    """A boolean mask of the rows of `table` whose ``time`` lies in one of the half-open `spans`."""
    times = table.column("time").cast(pa.int64())
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for a, b in spans:
        mask = pc.or_(mask, pc.and_(pc.greater_equal(times, a), pc.less(times, b)))
    return mask


def restore_lost_rows(
    old: Mapping[str, Any] | None,
    target: Path,
    stream: str,
    part: Any,
    comp: Completeness,
    lost: Sequence[Span],
    window: tuple[int, int],
) -> tuple[Any, Completeness, list[dict[str, Any]]]:
    """`part` (the stream's rows read now) with the rows the refreshed listing `old` had in the
    `lost` spans (the store's damage and hours without any file), `comp` without the lost spans
    the listing covered (a span it listed as missing stays missing), and the ``restored``
    entries of its coverage (the spans whose rows were kept, with their trade counts; empty:
    nothing changed). Unchanged unless `old` is this window's listing with trades of the
    stream and rows in `lost`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pumpwatch.extractor.metadata import span_entry
    from pumpwatch.segments.archive import multiset_union
    from pumpwatch.segments.schema import TRADE_SCHEMA
    from pumpwatch.streams import split_stream

    if old is None or not lost:
        return part, comp, []
    entry = old.get("streams", {}).get(stream) if isinstance(old.get("streams"), dict) else None
    window_old = old.get("window")
    if (
        not isinstance(entry, dict)
        or not entry.get("trades")
        or not isinstance(window_old, dict)
        or (window_old.get("start_us"), window_old.get("end_us")) != window
    ):
        return part, comp, []
    try:
        table = pq.read_table(target / "raw" / "trades.parquet")
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: raw/trades.parquet unreadable (%s): its %s rows cannot be kept", target, exc, stream)
        return part, comp, []
    exchange, market = split_stream(stream)
    mine = pc.and_(pc.equal(table.column("exchange"), exchange), pc.equal(table.column("market"), market))
    table = table.filter(mine)
    before = table.filter(_in_spans(pc, pa, table, lost))
    if before.num_rows == 0:
        return part, comp, []
    trade_cols = list(TRADE_SCHEMA.names)
    now_mask = _in_spans(pc, pa, part, lost)
    now_in = part.filter(now_mask).select(trade_cols).cast(TRADE_SCHEMA)
    union = multiset_union(before.select(trade_cols).cast(TRADE_SCHEMA), now_in)
    n = union.num_rows
    union = union.add_column(0, "market", pa.array([market] * n, pa.string()))
    union = union.add_column(0, "exchange", pa.array([exchange] * n, pa.string()))
    merged = pa.concat_tables([part.filter(pc.invert(now_mask)), union.cast(part.schema)])
    merged = merged.take(pc.sort_indices(merged, [("time", "ascending"), ("recv_time", "ascending")]))
    old_cov = entry.get("coverage")
    old_missing = [
        # metadata shows a span reaching the window's end as ending there: it reaches its last µs
        (m["start_us"], m["end_us"] + 1 if m["end_us"] == window[1] else m["end_us"])
        for m in ((old_cov.get("missing") if isinstance(old_cov, dict) else None) or [])
        if isinstance(m, dict) and isinstance(m.get("start_us"), int) and isinstance(m.get("end_us"), int)
    ]
    # complete again where the listing was; where it lacked trades too, the span stays missing
    complete = subtract_spans(lost, old_missing)
    times = before.column("time").cast(pa.int64())
    entries = []
    for a, b in merge_spans(lost):
        count = pc.sum(pc.and_(pc.greater_equal(times, a), pc.less(times, b))).as_py() or 0
        if count:
            entries.append(
                {**span_entry(a, min(b, comp.end_us)), "trades": count, "from": old.get("extracted_at")}
            )
    log.warning(
        "%s: %d trades in spans the store has lost since (damaged or deleted) kept from the listing "
        "extracted at %s (%d read from the store now)",
        stream,
        before.num_rows,
        old.get("extracted_at"),
        now_in.num_rows,
    )
    return merged.combine_chunks(), _restored_comp(comp, complete), entries
