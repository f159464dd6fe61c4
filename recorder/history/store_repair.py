"""The extraction-time repair of a window read from the shared store (`pumpwatch extract
--store`, issue 14 on top of issue 10).

`extractor.remote.extract_remote` reads the window from every recorder's archive, each trade
once; the gaps the union of the recorders leaves (not listening, id holes, hours not archived)
are fetched here from each exchange's REST trade history with the same engine as
`window.WindowRepair` (same specs, the process's extraction budget per exchange, the same
deadline), and merged
into the window as source ``rest`` (each trade once: a row the store holds wins). Nothing is
written to the store: the result lives in the listing only. The CLI hands
`store_window_repair(settings, …)` to `extract_remote` as its ``repair`` callback, so the
extractor does not import the recorder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pumpwatch.streams import split_stream

if TYPE_CHECKING:
    import httpx
    import pyarrow as pa

    from pumpwatch.recorder.history.window import WindowRepair
    from pumpwatch.segments.remote_read import StoreIndex
    from pumpwatch.settings import Settings

log = logging.getLogger(__name__)

REST_RECORDER = "~rest"  # the REST rows' place in the merge: after every recorder id in order


def store_window_repair(
    settings: Settings,
    *,
    deadline_s: float,
    client: httpx.AsyncClient | None = None,
    now_us: int | None = None,
) -> Any:
    """The ``repair`` callback of `extract_remote` (`extractor.remote.StoreRepair`)."""

    def run(
        index: StoreIndex, table: pa.Table, chosen: Sequence[str], symbol: str, start_us: int, end_us: int
    ) -> tuple[pa.Table, dict[str, list[dict[str, Any]]], list[str]]:
        return repair_store_window(
            settings, index, table, chosen, symbol, start_us, end_us,
            deadline_s=deadline_s, client=client, now_us=now_us,
        )  # fmt: skip

    return run


def repair_store_window(
    settings: Settings,
    index: StoreIndex,
    table: pa.Table,
    chosen: Sequence[str],
    symbol: str,
    start_us: int,
    end_us: int,
    *,
    deadline_s: float,
    client: httpx.AsyncClient | None = None,
    now_us: int | None = None,
) -> tuple[pa.Table, dict[str, list[dict[str, Any]]], list[str]]:
    """Fill the union's gaps from REST history: the table with the new rows merged in (each
    trade once, the store's copy first), the journal events of the repair per stream (they
    count in the coverage), and one note per stream attempted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pumpwatch.segments.reader import OUT_SCHEMA
    from pumpwatch.segments.remote_read import merge_recorders

    rows, events, reports = asyncio.run(
        _repair_async(settings, index, table, chosen, symbol, start_us, end_us, deadline_s, client, now_us)
    )
    for report in reports:
        report.written = 0  # counted below: REST rows the store did not hold
    if not any(t.num_rows for t in rows.values()):
        return table, events, [r.note() for r in reports]
    parts = []
    for stream in sorted(chosen, key=split_stream):
        exchange, market = split_stream(stream)
        mine = table.filter(
            pc.and_(pc.equal(table.column("exchange"), exchange), pc.equal(table.column("market"), market))
        )
        rest = rows.get(stream)
        if rest is not None and rest.num_rows:
            from pumpwatch.segments.schema import TRADE_SCHEMA

            stored = mine.select(TRADE_SCHEMA.names).cast(TRADE_SCHEMA)
            new = rest.filter(
                pc.and_(
                    pc.greater_equal(rest.column("time").cast(pa.int64()), start_us),
                    pc.less_equal(rest.column("time").cast(pa.int64()), end_us),
                )
            )
            merged = merge_recorders({"": stored, REST_RECORDER: new.cast(TRADE_SCHEMA)})
            for report in reports:
                if report.stream == stream:
                    report.written = merged.num_rows - stored.num_rows
            merged = merged.take(pc.sort_indices(merged, [("time", "ascending"), ("recv_time", "ascending")]))
            n = merged.num_rows
            merged = merged.add_column(0, OUT_SCHEMA.field("market"), pa.array([market] * n, pa.string()))
            mine = merged.add_column(0, OUT_SCHEMA.field("exchange"), pa.array([exchange] * n, pa.string()))
        if mine.num_rows:
            parts.append(mine.cast(OUT_SCHEMA))
    out = pa.concat_tables(parts).combine_chunks() if parts else OUT_SCHEMA.empty_table()
    return out, events, [r.note() for r in reports]


async def _repair_async(
    settings: Settings,
    index: StoreIndex,
    table: pa.Table,
    chosen: Sequence[str],
    symbol: str,
    start_us: int,
    end_us: int,
    deadline_s: float,
    client: httpx.AsyncClient | None,
    now_us: int | None,
) -> tuple[dict[str, pa.Table], dict[str, list[dict[str, Any]]], list[WindowRepair]]:
    import httpx
    import pyarrow as pa
    import pyarrow.compute as pc

    from pumpwatch.errors import PumpWatchError
    from pumpwatch.recorder.history.pager import NO_HISTORY, RATE_LIMITED
    from pumpwatch.recorder.history.repair import make_client, repair
    from pumpwatch.recorder.history.specs import extraction_budgets, history_spec
    from pumpwatch.recorder.history.window import (
        SETTLE_US,
        WindowRepair,
        exchange_instruments,
        journal_symbols,
        listed_instruments,
        settled_spans,
        subtract,
    )
    from pumpwatch.segments.remote_read import journal_events, remote_completeness
    from pumpwatch.segments.repair import _offer_table

    listed = await asyncio.to_thread(listed_instruments, settings)
    horizon_us = (time.time_ns() // 1000 if now_us is None else now_us) - SETTLE_US
    budgets = extraction_budgets()  # the process's: shared with any other extraction in it
    loop = asyncio.get_running_loop()
    deadline_at = loop.time() + deadline_s
    rows: dict[str, pa.Table] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    reports: list[WindowRepair] = []
    http = make_client() if client is None else client
    try:
        for stream in chosen:
            conf = settings.streams.get(stream)
            if conf is None or not conf.enabled:
                continue
            spec = history_spec(stream, conf.rest_url, conf.options)
            all_events = [
                e for rid in index.recorders for e in journal_events(index, rid, stream, start_us, end_us)
            ]
            exchange, market = split_stream(stream)
            mine = table.filter(
                pc.and_(
                    pc.equal(table.column("exchange"), exchange), pc.equal(table.column("market"), market)
                )
            )
            instruments = {s: i for s, i in listed.get(stream, {}).items() if i.base == symbol}
            seen = journal_symbols(all_events, symbol, end_us) | set(
                pc.unique(mine.column("symbol")).to_pylist()
            )
            unknown = seen - set(instruments)
            report = WindowRepair(stream, tuple(sorted(set(instruments) | unknown)))
            if not report.symbols:
                continue
            comp = await asyncio.to_thread(
                remote_completeness, index, stream, start_us, end_us, base=symbol,
                heartbeat_s=settings.recorder.heartbeat_s, now_us=now_us,
            )  # fmt: skip
            report.gaps = [(a, min(b, end_us)) for a, b in comp.gaps]
            gaps = subtract(report.gaps, [(horizon_us + 1, end_us)]) if end_us > horizon_us else report.gaps
            if unknown and spec is not None:
                try:
                    listing = await exchange_instruments(http, settings, stream)
                except (httpx.HTTPError, PumpWatchError) as exc:
                    listing = {}
                    log.warning("%s: instrument list unavailable (%s)", stream, exc)
                instruments.update({s: listing[s] for s in unknown if s in listing})
            todo: list[tuple[str, tuple[int, int]]] = []
            for sym in report.symbols:
                if sym not in instruments and spec is not None:
                    report.notes.append(f"{sym}: instrument unknown")
                    continue
                todo.extend((sym, span) for span in subtract(gaps, settled_spans(all_events, sym)))
            report.todo = todo
            got: list[pa.Table] = []
            mine_events: list[dict[str, Any]] = []

            def write(batch: Any, recv_us: int, stream: str = stream, got: list[pa.Table] = got) -> int:
                offer = _offer_table(stream, batch, recv_us)
                got.append(offer)
                return offer.num_rows

            def record(
                event: str, fields: Mapping[str, Any], out: list[dict[str, Any]] = mine_events
            ) -> None:
                out.append({"ts": time.time_ns() // 1000, "event": event, **fields})

            def give_up(sym: str, span: tuple[int, int], reason: str, report: WindowRepair = report) -> None:
                fields = {"symbol": sym, "base": symbol, "start_us": span[0], "end_us": span[1]}
                record("unrepaired", {**fields, "reason": reason})
                report.unrepaired.append((sym, span[0], span[1], reason))

            for sym, span in todo:
                if spec is None:
                    give_up(sym, span, NO_HISTORY)
                    continue
                left_s = deadline_at - loop.time()
                if left_s <= 0:
                    give_up(sym, span, RATE_LIMITED)
                    continue
                result = await repair(
                    http, spec, budgets.for_spec(spec), stream, sym, span[0], span[1],
                    instruments=instruments, write=write, journal=record, deadline_s=left_s,
                )  # fmt: skip
                report.add(result)
            if got:
                rows[stream] = pa.concat_tables(got)
            events[stream] = mine_events
            if report.attempted:
                reports.append(report)
    finally:
        if client is None:
            await http.aclose()
    return rows, events, reports
