"""Reading the shared store across recorders: each trade once, coverage the union (issue 14).

Two recorders may record the same stream (redundancy across machines); each uploads under its
own ``recorder=<id>/`` (`segments.remote`), so the raw archive holds one row per recorder that
got a trade. This module reads a window of the remote archive as one store:

- **Each trade once.** Rows are merged by the trade key the store already de-duplicates by
  (`segments.repair`): ``(symbol, trade_id)`` where the trade id is not null, else
  ``(symbol, time, price, qty, side)`` (floats bit for bit). Per key one recorder wins and all
  of *its* rows of that key are kept: with an id that is one row (the copy received first,
  earliest ``recv_time``, ties by recorder id); without an id the recorder holding the key most
  often (two genuine fills may share an id-less key, so ``max`` over recorders of the counts,
  never their sum). A store with one recorder reads exactly as its local segments do.
- **Coverage the union.** Each recorder's journal hours are replayed on their own with
  `segments.coverage` (connection ids and ``start``/``crashed`` events of two machines must
  not be mixed); a span is a gap of the merged stream only where it is a gap of every
  recorder. A recorder's hour that is not in the archive (not sealed and uploaded yet) counts
  as a gap of that recorder, whatever its journal says: its trades are not readable. Window
  hours no recorder has archived are reported by `unarchived_hours`, and their missing parts
  carry the reason ``not_archived``.

Only sealed, uploaded hours are in the store: the hour a recorder is writing now appears once
it is sealed, archived and uploaded (about an hour plus the upload interval; journal hours an
hour plus `journal_grace`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pumpwatch.segments.coverage import (
    DAMAGED,
    DEFAULT_HEARTBEAT_S,
    STATE_COMPLETE,
    STATE_INCOMPLETE,
    STATE_REPAIRED,
    Completeness,
    Coverage,
    MissingSpan,
    Span,
    classify_gaps,
    coverage_from_events,
    dropped_spans,
    id_gap_spans,
    merge_spans,
    recorded_symbols,
    span_events_of,
    state_events,
)
from pumpwatch.segments.reader import DEFAULT_SLACK_S, OUT_SCHEMA, TimeLike, time_us
from pumpwatch.segments.remote import RemoteRoot, open_filesystem, parse_url, recorder_ids
from pumpwatch.segments.schema import TRADE_SCHEMA
from pumpwatch.streams import STREAMS, parse_streams, split_stream
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

NOT_ARCHIVED = "not_archived"  # reason of a missing span: no recorder's archive has that hour
JOURNAL_LOOKBACK_HOURS = 31 * 24  # how far back a replay looks for the recorder's last `start`
JOURNAL_LOOKAHEAD_HOURS = 48  # how far past the window for a `start`/`crashed` ending its runs
_RUN_EVENTS = frozenset(("start", "crashed"))


def hour_key(hour_us: int) -> str:
    """``YYYY-MM-DDTHH`` of the UTC hour holding `hour_us`."""
    return datetime.fromtimestamp(hour_us // US_PER_S, UTC).strftime("%Y-%m-%dT%H")


def _hour_of(date: str, hh: str) -> int | None:
    try:
        t = datetime.strptime(f"{date}T{hh}", "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(t.timestamp()) * US_PER_S


def _hours(start_us: int, end_us: int) -> list[int]:
    first = start_us - start_us % US_PER_HOUR
    return list(range(first, end_us + 1, US_PER_HOUR))


# -- what the store holds --------------------------------------------------------------------------


@dataclass
class StoreIndex:
    """The objects of the shared store a window needs: per (recorder, stream), the archive
    hours (hour start µs -> object path) and the journal hours."""

    url: str
    root: RemoteRoot
    filesystem: pafs.FileSystem
    recorders: list[str]
    archive: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    journal: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)
    _journal_cache: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)

    def journal_hour(self, path: str) -> list[dict[str, Any]]:
        """The events of one journal hour object (read once per index)."""
        if path not in self._journal_cache:
            self._journal_cache[path] = _read_journal_hour(self.filesystem, path)
        return self._journal_cache[path]

    def known_streams(self) -> set[str]:
        """Streams any recorder has an archive or journal object of (in the dates listed)."""
        return {s for (_r, s), hours in (*self.archive.items(), *self.journal.items()) if hours}


def open_store(
    url: str,
    endpoint_url: str = "",
    *,
    region: str = "us-east-1",
    recorders: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> tuple[RemoteRoot, pafs.FileSystem, list[str]]:
    """The store's root, a filesystem on it, and the recorder ids to read (all, by default)."""
    root = parse_url(url)
    fs = filesystem if filesystem is not None else open_filesystem(endpoint_url=endpoint_url, region=region)
    chosen = recorder_ids(fs, root) if recorders is None else sorted(set(recorders))
    return root, fs, chosen


def index_store(
    url: str,
    streams: Iterable[str],
    start_us: int,
    end_us: int,
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    recorders: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> StoreIndex:
    """List what the store holds for `streams` around ``[start_us, end_us]``: the archive
    hours of the window's dates (± a day, for the receive-time slack), every journal hour."""
    import pyarrow.fs as pafs

    root, fs, chosen = open_store(
        url, endpoint_url, region=region, recorders=recorders, filesystem=filesystem
    )
    index = StoreIndex(url, root, fs, chosen)
    slack_us = round(slack_s * US_PER_S)
    days = sorted(
        {
            datetime.fromtimestamp(h // US_PER_S, UTC).date().isoformat()
            for h in _hours(start_us - slack_us, end_us + slack_us)
        }
    )
    for rid in chosen:
        for stream in streams:
            exchange, market = split_stream(stream)
            hours: dict[int, str] = {}
            for day in days:
                base = root.recorder_path(
                    rid, "archive", f"exchange={exchange}", f"market={market}", f"date={day}"
                )
                for info in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
                    name = info.base_name
                    if info.type == pafs.FileType.File and len(name) == 10 and name.endswith(".parquet"):
                        hour = _hour_of(day, name[:2])
                        if hour is not None:
                            hours[hour] = info.path
            index.archive[(rid, stream)] = hours
            jbase = root.recorder_path(rid, "journal", stream)
            jhours: dict[int, str] = {}
            infos = fs.get_file_info(pafs.FileSelector(jbase, recursive=True, allow_not_found=True))
            for info in infos:
                rel = info.path[len(jbase) + 1 :].split("/")
                if (
                    info.type == pafs.FileType.File
                    and len(rel) == 2
                    and rel[0].startswith("date=")
                    and rel[1].endswith(".ndjson")
                ):
                    hour = _hour_of(rel[0].removeprefix("date="), rel[1].removesuffix(".ndjson"))
                    if hour is not None:
                        jhours[hour] = info.path
            index.journal[(rid, stream)] = jhours
    return index


def unarchived_hours(
    index: StoreIndex,
    stream: str,
    start_us: int,
    end_us: int,
    *,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
) -> list[int]:
    """Hours (start µs) of the window that should be in the archive of `stream` but are not
    in any recorder's: no recorder has the hour archived, and either a recorder's journal
    shows it listening during the hour (its archive file is late or lost) or the hour is
    newer than every journal hour in the store (the store has not caught up: the hour is being
    recorded or waits to be sealed and uploaded). Hours every recorder's journal shows it
    idle are not archive delays (they are ordinary gaps). Empty for a stream the store knows
    nothing of."""
    if stream not in index.known_streams():
        return []
    held: set[int] = set()
    newest = -1
    for rid in index.recorders:
        held.update(index.archive.get((rid, stream), {}))
        newest = max([newest, *index.journal.get((rid, stream), {})])
    lacking = [h for h in _hours(start_us, end_us) if h not in held]
    if not lacking:
        return []
    out = []
    replays = {rid: journal_events(index, rid, stream, start_us, end_us) for rid in index.recorders}
    for h in lacking:
        if h > newest:
            out.append(h)
            continue
        lo, hi = max(h, start_us), min(h + US_PER_HOUR - 1, end_us)
        for events in replays.values():
            cover = coverage_from_events(state_events(events), lo, hi, heartbeat_s=heartbeat_s, now_us=now_us)
            if cover.known and cover.listening_us > 0:
                out.append(h)
                break
    return out


# -- trades ----------------------------------------------------------------------------------------


def _key_column(table: pa.Table) -> pa.Array:
    """The trade key as one string per row: ``symbol\\x1fid`` with an id, else
    ``symbol\\x1f\\x1etime\\x1fprice bits\\x1fqty bits\\x1fside`` (``\\x1e`` keeps the two forms apart)."""

    def col(name: str) -> pa.Array:
        return table.column(name).combine_chunks()

    symbol = col("symbol").cast(pa.string())
    trade_id = col("trade_id").cast(pa.string())
    time = col("time").cast(pa.int64()).cast(pa.string())
    price = pa.array(col("price").to_numpy(zero_copy_only=False).view(np.int64)).cast(pa.string())
    qty = pa.array(col("qty").to_numpy(zero_copy_only=False).view(np.int64)).cast(pa.string())
    side = col("side").cast(pa.string())
    marker = pa.array(np.full(len(table), "\x1e", object), pa.string())
    anon = pc.binary_join_element_wise(symbol, marker, time, price, qty, side, "\x1f")
    with_id = pc.binary_join_element_wise(symbol, trade_id, "\x1f")
    return pc.if_else(pc.is_valid(trade_id), with_id, anon)


def merge_recorders(tables: Mapping[str, pa.Table]) -> pa.Table:
    """One stream's rows of several recorders (the `TRADE_SCHEMA` columns, and any others, the
    same in every table) with each trade once (module doc). Rows keep their order within a
    recorder; recorders come in id order."""
    present = [(rid, t) for rid, t in sorted(tables.items()) if t.num_rows]
    if not present:
        return TRADE_SCHEMA.empty_table()
    if len(present) == 1:
        return present[0][1]
    table = pa.concat_tables([t for _r, t in present]).combine_chunks()
    rec = np.concatenate([np.full(t.num_rows, i, np.int64) for i, (_r, t) in enumerate(present)])
    keys = _key_column(table)
    codes = pc.dictionary_encode(keys).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    has_id = pc.is_valid(table.column("trade_id")).to_numpy(zero_copy_only=False)
    recv = table.column("recv_time").cast(pa.int64()).to_numpy()
    n_rec = len(present)
    pair = codes * n_rec + rec
    order = np.lexsort((recv, pair))
    pairs, first, counts = np.unique(pair[order], return_index=True, return_counts=True)
    first_recv = recv[order][first]
    pair_code, pair_rec = pairs // n_rec, pairs % n_rec
    # winner per key: with an id the earliest receive; without one the largest count first
    anon = ~has_id[order][first]
    rank = np.where(anon, -counts, 0)
    pick = np.lexsort((pair_rec, first_recv, rank, pair_code))
    winners = pick[np.r_[True, pair_code[pick][1:] != pair_code[pick][:-1]]]
    win_rec = np.full(int(codes.max()) + 1, -1, np.int64)
    win_rec[pair_code[winners]] = pair_rec[winners]
    keep = np.flatnonzero(win_rec[codes] == rec)
    return table.take(pa.array(keep, pa.int64()))


@dataclass
class RemoteWindow:
    """A window read from the shared store: `table` as `read_trades` gives it (``exchange``,
    ``market`` and the `TRADE_SCHEMA` columns, sorted by exchange, market, time, receive
    time), and per stream the rows each recorder held (`rows_by_recorder`) and kept after the
    merge (`kept_by_recorder`)."""

    table: pa.Table
    rows_by_recorder: dict[str, dict[str, int]]
    kept_by_recorder: dict[str, dict[str, int]]


def _read_hours(
    fs: pafs.FileSystem, paths: Sequence[str], start_us: int, end_us: int, base: str | None
) -> pa.Table:
    import pyarrow.dataset as pads

    if not paths:
        return TRADE_SCHEMA.empty_table()
    ds = pads.dataset(list(paths), format="parquet", filesystem=fs, schema=TRADE_SCHEMA)
    time_type = TRADE_SCHEMA.field("time").type
    expr = (pads.field("time") >= pa.scalar(start_us, pa.int64()).cast(time_type)) & (
        pads.field("time") <= pa.scalar(end_us, pa.int64()).cast(time_type)
    )
    if base is not None:
        expr = expr & (pads.field("base") == base.upper())
    return ds.to_table(filter=expr, use_threads=False).combine_chunks()


def read_window(
    index: StoreIndex,
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    slack_s: float = DEFAULT_SLACK_S,
) -> RemoteWindow:
    """Every trade with ``start_us <= time <= end_us`` (and `base`) of the remote archive,
    each once across recorders (module doc)."""
    chosen = parse_streams(streams if streams is None or isinstance(streams, str) else list(streams))
    slack_us = round(slack_s * US_PER_S)
    wanted = set(_hours(start_us - slack_us, end_us + slack_us))
    parts: list[pa.Table] = []
    rows: dict[str, dict[str, int]] = {}
    kept: dict[str, dict[str, int]] = {}
    for stream in sorted(chosen, key=split_stream):
        per_recorder: dict[str, pa.Table] = {}
        for rid in index.recorders:
            hours = index.archive.get((rid, stream), {})
            paths = [p for h, p in sorted(hours.items()) if h in wanted]
            t = _read_hours(index.filesystem, paths, start_us, end_us, base)
            if t.num_rows:
                per_recorder[rid] = t.append_column(
                    "_rec", pa.array(np.full(t.num_rows, rid, object), pa.string())
                )
        if not per_recorder:
            continue
        merged = merge_recorders(per_recorder)
        rows[stream] = {rid: t.num_rows for rid, t in per_recorder.items()}
        recs = merged.column("_rec").to_pylist() if "_rec" in merged.schema.names else []
        kept[stream] = {rid: recs.count(rid) for rid in per_recorder}
        merged = merged.select(TRADE_SCHEMA.names).cast(TRADE_SCHEMA)
        # as read_trades: by (time, recv_time), ties in the order they were written
        merged = merged.take(pc.sort_indices(merged, [("time", "ascending"), ("recv_time", "ascending")]))
        exchange, market = split_stream(stream)
        n = merged.num_rows
        merged = merged.add_column(0, OUT_SCHEMA.field("market"), pa.array([market] * n, pa.string()))
        merged = merged.add_column(0, OUT_SCHEMA.field("exchange"), pa.array([exchange] * n, pa.string()))
        parts.append(merged.cast(OUT_SCHEMA))
    table = pa.concat_tables(parts).combine_chunks() if parts else OUT_SCHEMA.empty_table()
    return RemoteWindow(table, rows, kept)


def read_remote_trades(
    url: str,
    start: TimeLike,
    end: TimeLike,
    *,
    endpoint_url: str = "",
    streams: Sequence[str] | str | None = None,
    base: str | None = None,
    recorders: Sequence[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """`read_trades` over the shared store: every recorder's archive, each trade once. The
    ends are epoch µs or any `TimeLike` (a TIME string, an aware datetime …)."""
    start_us, end_us = time_us(start, "start"), time_us(end, "end")
    chosen = parse_streams(streams if streams is None or isinstance(streams, str) else list(streams))
    index = index_store(
        url, chosen, start_us, end_us, endpoint_url=endpoint_url, recorders=recorders, filesystem=filesystem
    )
    return read_window(index, start_us, end_us, streams=chosen, base=base).table


# -- coverage --------------------------------------------------------------------------------------


def _read_journal_hour(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    from pumpwatch.segments.journal import parse_journal_fast

    with fs.open_input_stream(path) as fh:
        data = fh.read()
    events, _bad = parse_journal_fast(data)
    return events


def journal_events(
    index: StoreIndex, recorder: str, stream: str, start_us: int, end_us: int
) -> list[dict[str, Any]]:
    """The recorder's journal events of `stream` a replay of ``[start_us, end_us]`` needs, in
    file order: back from the window to the hour holding the last ``start`` before it (its
    connection state is rebuilt from there; at most `JOURNAL_LOOKBACK_HOURS`), through the
    window, and on to the first hour after it holding a ``start``/``crashed`` (which may end
    runs inside the window; at most `JOURNAL_LOOKAHEAD_HOURS`)."""
    hours = index.journal.get((recorder, stream), {})
    first_hour = start_us - start_us % US_PER_HOUR
    last_hour = end_us - end_us % US_PER_HOUR
    before = sorted(
        (h for h in hours if h <= first_hour and h > first_hour - JOURNAL_LOOKBACK_HOURS * US_PER_HOUR),
        reverse=True,
    )
    chunks: list[list[dict[str, Any]]] = []
    for h in before:
        events = index.journal_hour(hours[h])
        chunks.append(events)
        if any(e.get("event") == "start" and e["ts"] <= start_us for e in events):
            break
    chunks.reverse()
    for h in sorted(x for x in hours if first_hour < x <= last_hour):
        chunks.append(index.journal_hour(hours[h]))
    for h in sorted(x for x in hours if last_hour < x <= last_hour + JOURNAL_LOOKAHEAD_HOURS * US_PER_HOUR):
        events = index.journal_hour(hours[h])
        chunks.append(events)
        if any(e.get("event") in _RUN_EVENTS for e in events):
            break
    return [e for chunk in chunks for e in chunk]


def intersect_spans(a: Sequence[Span], b: Sequence[Span]) -> list[Span]:
    """Intersection of two sorted unions of half-open spans."""
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def merged_completeness(
    events_by_recorder: Mapping[str, Sequence[dict[str, Any]]],
    start_us: int,
    end_us: int,
    *,
    base: str,
    unavailable: Mapping[str, Sequence[Span]] | None = None,
    not_archived: Sequence[Span] = (),
    extra_events: Sequence[dict[str, Any]] = (),
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
) -> Completeness:
    """`completeness_from_events` of one stream recorded by several recorders: each
    recorder's journal replayed alone, its gaps (not listening, id holes, dropped rows, and
    its `unavailable` half-open spans: hours not in its archive) intersected across
    recorders; repairs journaled by any of them (and `extra_events`, e.g. this extraction's)
    count. Missing parts inside `not_archived` (no recorder's archive has them) get the reason
    ``not_archived``."""
    base = base.upper()
    whole = [(start_us, end_us + 1)]
    gaps: list[Span] | None = None
    listen_gaps: list[Span] | None = None
    known = False
    since: int | None = None  # the earliest recorder's listening start (the union's)
    holes: list[Span] = []
    symbols: set[str] = set()
    everything: list[dict[str, Any]] = []
    for rid, events in sorted(events_by_recorder.items()):
        conn = state_events(events)
        listening = coverage_from_events(
            conn, start_us, end_us, base=base, heartbeat_s=heartbeat_s, now_us=now_us
        )
        known = known or listening.known
        if listening.listening_since is not None and (since is None or listening.listening_since < since):
            since = listening.listening_since
        not_listening = (
            [(a, end_us + 1 if b == end_us else b) for a, b in listening.gaps] if listening.known else whole
        )
        mine_holes = id_gap_spans(events, base, start_us, end_us)
        holes.extend(mine_holes)
        dropped = [(a, b) for a, b, _ in dropped_spans(events, start_us, end_us + 1)]
        lost = [(max(a, start_us), min(b, end_us + 1)) for a, b in (unavailable or {}).get(rid, ())]
        mine = merge_spans([*not_listening, *mine_holes, *dropped, *lost])
        gaps = mine if gaps is None else intersect_spans(gaps, mine)
        lg = merge_spans(listening.gaps if listening.known else [(start_us, end_us)])
        listen_gaps = lg if listen_gaps is None else intersect_spans(listen_gaps, lg)
        symbols.update(recorded_symbols(conn, base, start_us, end_us))
        everything.extend(events)
    if gaps is None:
        gaps = whole
    if listen_gaps is None:
        listen_gaps = [(start_us, end_us)] if end_us > start_us else []
    listen_gaps = [(a, b) for a, b in listen_gaps if b > a]
    listening_us = (end_us - start_us) - sum(b - a for a, b in listen_gaps)
    cover = Coverage(
        complete=known and not listen_gaps,
        gaps=listen_gaps,
        listening_us=listening_us,
        known=known,
        listening_since=since,
    )
    unreadable = merge_spans((max(a, start_us), min(b, end_us + 1)) for a, b in not_archived)
    gaps = merge_spans([*gaps, *unreadable])
    span_events = span_events_of([*everything, *extra_events], base, start_us, end_us)
    chosen = tuple(sorted(symbols)) or tuple(sorted({e.symbol for e in span_events}))
    repaired, missing = classify_gaps(gaps, span_events, chosen, unreadable)
    missing = [
        MissingSpan(m.start_us, m.end_us, NOT_ARCHIVED, m.symbols) if m.reason == DAMAGED else m
        for m in missing
    ]
    state = STATE_COMPLETE if not gaps else STATE_INCOMPLETE if missing else STATE_REPAIRED
    id_gaps = intersect_spans(merge_spans(holes), gaps)
    return Completeness(state, cover, gaps, id_gaps, repaired, missing, chosen, end_us)


def remote_completeness(
    index: StoreIndex,
    stream: str,
    start_us: int,
    end_us: int,
    *,
    base: str,
    extra_events: Sequence[dict[str, Any]] = (),
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    now_us: int | None = None,
) -> Completeness:
    """The completeness of `stream` for `base` over ``[start_us, end_us]`` in the shared store:
    the union of every recorder's listening, each recorder's hours missing from its archive
    counted as its gaps (`merged_completeness`)."""
    events = {rid: journal_events(index, rid, stream, start_us, end_us) for rid in index.recorders}
    events = {rid: ev for rid, ev in events.items() if ev or index.archive.get((rid, stream))}
    unavailable = {
        rid: [
            (h, h + US_PER_HOUR)
            for h in _hours(start_us, end_us)
            if h not in index.archive.get((rid, stream), {})
        ]
        for rid in events
    }
    missing_hours = unarchived_hours(index, stream, start_us, end_us, heartbeat_s=heartbeat_s, now_us=now_us)
    return merged_completeness(
        events,
        start_us,
        end_us,
        base=base,
        unavailable=unavailable,
        not_archived=[(h, h + US_PER_HOUR) for h in missing_hours],
        extra_events=extra_events,
        heartbeat_s=heartbeat_s,
        now_us=now_us,
    )


__all__ = [
    "NOT_ARCHIVED",
    "STREAMS",
    "RemoteWindow",
    "StoreIndex",
    "hour_key",
    "index_store",
    "intersect_spans",
    "merge_recorders",
    "merged_completeness",
    "read_remote_trades",
    "read_window",
    "remote_completeness",
    "unarchived_hours",
]
