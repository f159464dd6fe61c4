"""Extraction-time repair: fill what is still missing inside a listing window from REST history.

`repair_window` is what ``pumpwatch extract`` and the listing trigger run just before cutting a
window out of the store (unless ``--no-backfill`` or ``repair.at_extract: false``). Per selected
stream it

1. finds the instruments of the coin: the subscription list (``recorder.symbols_file``, the
   shipped example ignored), plus every exchange symbol of that base the stream's journal or
   the store names in the window; one the list does not describe (a coin dropped from the list
   since) is looked up in the exchange's instrument list at the stream's ``rest_url``, because
   its contract multiplier is not in the store;
2. finds what is missing: the gaps of ``segments.coverage.completeness`` for the base (the whole
   window when the journal knows nothing, e.g. before PumpWatch was recording; the spans of
   damaged sealed segments, ``segments.damage``, included), minus, per
   symbol, the spans already journaled ``repaired`` and those journaled ``unrepaired`` for a
   reason that cannot change (``no_history``, ``beyond_reach``: a latest-only answer and an
   endpoint's reach only move forward in time); the part of the window not yet past (now minus
   a second) is left alone;
3. repairs each remaining span with the engine (`repair.repair`), writing through
   ``segments.repair.write_repaired`` (de-duplicated against the store) and journaling
   ``repaired`` / ``unrepaired`` to the stream's journal, so coverage and ``metadata.json``
   see it. A stream without a history endpoint (its adapter options) gets ``unrepaired``
   ``no_history`` without any call.

Every call of the process draws on one rate budget per exchange (`specs.extraction_budgets`:
`budget.EXTRACTION_SHARE` of the exchange's limit, shared by the listing trigger's parallel
extractions and by both streams of an exchange; the worker's live repair has its own share);
exchanges run concurrently, an exchange's streams one after the other. `deadline_s` bounds the whole call:
each repair gets the time left, a span not started in time is journaled ``rate_limited``, and
whatever still runs at the deadline plus `HARD_GRACE_S` is cancelled (its span stays
unattempted; a store write already started completes atomically). No recorder needs to run:
this works on a bare data directory with only the subscription list.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pumpwatch.errors import PumpWatchError, StoreError
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.history.pager import BEYOND_REACH, NO_HISTORY, RATE_LIMITED
from pumpwatch.recorder.history.repair import RepairResult, make_client, repair
from pumpwatch.recorder.history.spec import HistorySpec
from pumpwatch.recorder.history.specs import Budgets, extraction_budgets, history_spec
from pumpwatch.settings import Settings
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_S

log = logging.getLogger(__name__)

Span = tuple[int, int]  # inclusive µs bounds
SETTLE_US = US_PER_S  # trades younger than this may not be in the exchange's history yet
HARD_GRACE_S = 10.0  # past the deadline, a repair still running (a slow answer) is cancelled
PERMANENT = (NO_HISTORY, BEYOND_REACH)  # unrepaired reasons a later attempt cannot change


@dataclass
class WindowRepair:
    """What the extraction-time repair did for one stream.

    `gaps`: the window's missing spans found before repairing (inclusive µs; not looked for
    when no instrument of the coin is known on the stream, `symbols` empty); `todo`: the
    (symbol, span) pairs attempted; `repaired` / `unrepaired`: the journaled outcome
    (symbol, start, end[, reason]); `written`: trades new to the store; `notes`: anything
    that kept a symbol from being attempted.
    """

    stream: str
    symbols: tuple[str, ...] = ()
    gaps: list[Span] = field(default_factory=list)
    todo: list[tuple[str, Span]] = field(default_factory=list)
    written: int = 0
    fetched: int = 0
    calls: int = 0
    rate_limited: int = 0
    repaired: list[tuple[str, int, int]] = field(default_factory=list)
    unrepaired: list[tuple[str, int, int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, result: RepairResult) -> None:
        self.written += result.written
        self.fetched += result.fetched
        self.calls += result.calls
        self.rate_limited += result.rate_limited
        self.repaired.extend((result.symbol, lo, hi) for lo, hi in result.repaired)
        self.unrepaired.extend((result.symbol, lo, hi, why) for lo, hi, why in result.unrepaired)

    @property
    def attempted(self) -> bool:
        return bool(self.todo or self.notes)

    def note(self) -> str:
        """One line for the user: what was added, what is still missing and why."""
        text = (
            f"{self.stream}: {self.written} trade(s) added from REST, "
            f"{len(self.repaired)} span(s) repaired ({self.calls} call(s))"
        )
        if self.unrepaired:
            reasons = sorted({r[3].split(":", 1)[0] for r in self.unrepaired})
            text += f"; {len(self.unrepaired)} span(s) still missing ({', '.join(reasons)})"
        for note in self.notes:
            text += f"; {note}"
        return text


# -- spans ---------------------------------------------------------------------------------------


def subtract(spans: Sequence[Span], holes: Sequence[Span]) -> list[Span]:
    """The parts of the inclusive `spans` outside every inclusive span of `holes`."""
    out: list[Span] = []
    cuts = sorted(holes)
    for lo, hi in sorted(spans):
        cursor = lo
        for h_lo, h_hi in cuts:
            if h_hi < cursor or h_lo > hi:
                continue
            if h_lo > cursor:
                out.append((cursor, h_lo - 1))
            cursor = max(cursor, h_hi + 1)
            if cursor > hi:
                break
        if cursor <= hi:
            out.append((cursor, hi))
    return out


def _span(event: Mapping[str, Any]) -> Span | None:
    lo, hi = event.get("start_us"), event.get("end_us")
    if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool) and lo <= hi:
        return (lo, hi)
    return None


def settled_spans(events: Sequence[Mapping[str, Any]], symbol: str) -> list[Span]:
    """Spans of `symbol` nothing more can be done about: journaled ``repaired``, or
    ``unrepaired`` for a permanent reason."""
    out: list[Span] = []
    for event in events:
        if event.get("symbol") != symbol:
            continue
        kind = event.get("event")
        if kind == "repaired" or (kind == "unrepaired" and event.get("reason") in PERMANENT):
            span = _span(event)
            if span is not None:
                out.append(span)
    return out


# -- instruments ---------------------------------------------------------------------------------


def listed_instruments(settings: Settings) -> dict[str, dict[str, Instrument]]:
    """The subscription list per stream; empty when it is missing or the shipped example."""
    from pumpwatch.recorder.symbols import load_symbols_file

    path = Path(settings.recorder.symbols_file)
    if not path.exists():
        return {}
    loaded = load_symbols_file(path)
    return {} if loaded.example else loaded.streams


def journal_events(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    """The stream's journal events in file order (a week of heartbeats parses in one call)."""
    from pumpwatch.segments.journal import journal_path, parse_journal_fast

    try:
        data = journal_path(data_dir, stream).read_bytes()
    except FileNotFoundError:
        return []
    events, _skipped = parse_journal_fast(data)  # coverage() logs unreadable lines
    return events


def journal_symbols(events: Sequence[Mapping[str, Any]], base: str, end_us: int) -> set[str]:
    """Exchange symbols of `base` the journal names up to `end_us` (subscriptions, repairs)."""
    out: set[str] = set()
    for event in events:
        kind = event.get("event")
        if kind == "subscribed" and event["ts"] <= end_us:
            symbols, bases = event.get("symbols"), event.get("bases")
            if isinstance(symbols, list) and isinstance(bases, list) and len(symbols) == len(bases):
                out.update(str(s) for s, b in zip(symbols, bases, strict=True) if str(b).upper() == base)
        elif kind in ("repaired", "unrepaired", "id_gap") and event.get("base") == base:
            symbol = event.get("symbol")
            if isinstance(symbol, str):
                out.add(symbol)
    return out


def stored_symbols(data_dir: Path, stream: str, base: str, start_us: int, end_us: int) -> set[str]:
    """Exchange symbols of `base` with trades stored in the window."""
    import pyarrow.compute as pc

    from pumpwatch.segments.reader import iter_batches

    out: set[str] = set()
    for _stream, batch in iter_batches(data_dir, start_us, end_us, streams=[stream], base=base):
        out.update(pc.unique(batch.column("symbol")).to_pylist())
    return out


async def exchange_instruments(
    client: httpx.AsyncClient, settings: Settings, stream: str
) -> dict[str, Instrument]:
    """The stream's instrument list from the exchange (its ``rest_url``), checked."""
    from pumpwatch.recorder.adapters import get_adapter
    from pumpwatch.recorder.symbols import check_instrument
    from pumpwatch.recorder.symbols_fetch import fetch_instruments

    conf = settings.streams[stream]
    raw = await fetch_instruments(client, get_adapter(stream, conf.options), conf.rest_url)
    return {c.symbol: c for c in (check_instrument(i) for i in raw) if c is not None}


# -- the repair ----------------------------------------------------------------------------------


@dataclass
class _Plan:
    """One stream's work, found before any REST call."""

    stream: str
    base: str
    spec: HistorySpec | None
    instruments: dict[str, Instrument]
    unknown: set[str]  # symbols seen but not in the list: looked up on the exchange
    todo: list[tuple[str, Span]]
    report: WindowRepair
    finished: bool = False


def _plan_stream(
    settings: Settings,
    data_dir: Path,
    stream: str,
    base: str,
    start_us: int,
    end_us: int,
    listed: Mapping[str, Mapping[str, Instrument]],
    horizon_us: int,
) -> _Plan:
    from pumpwatch.segments.coverage import completeness
    from pumpwatch.segments.damage import unreadable_spans

    conf = settings.streams[stream]
    spec = history_spec(stream, conf.rest_url, conf.options)
    events = journal_events(data_dir, stream)
    instruments = {s: i for s, i in listed.get(stream, {}).items() if i.base == base}
    seen = journal_symbols(events, base, end_us) | stored_symbols(data_dir, stream, base, start_us, end_us)
    unknown = seen - set(instruments)
    report = WindowRepair(stream, tuple(sorted(set(instruments) | unknown)))
    if not report.symbols:  # the coin is not traded here, as far as anyone knows: nothing to do
        return _Plan(stream, base, spec, instruments, unknown, [], report)
    # not listening, a hole in contiguous ids while listening, or a damaged segment (half-open)
    damaged = unreadable_spans(data_dir, start_us, end_us, streams=[stream]).get(stream, [])
    done = completeness(
        data_dir,
        stream,
        start_us,
        end_us,
        base=base,
        heartbeat_s=settings.recorder.heartbeat_s,
        damaged=damaged,
    )
    report.gaps = [(a, min(b, end_us)) for a, b in done.gaps]
    gaps = subtract(report.gaps, [(horizon_us + 1, end_us)]) if end_us > horizon_us else report.gaps
    if report.symbols and gaps != report.gaps:
        report.notes.append("the window's last second is too recent to repair")
    if spec is not None and spec.live_replays and gaps:
        unsettled = _unsettled_gaps(
            settings, data_dir, stream, events, base, start_us, horizon_us + SETTLE_US
        )
        if subtract(gaps, unsettled) != gaps:
            gaps = subtract(gaps, unsettled)
            report.notes.append(
                "a gap still open or closed too recently (the connection's replay of recent "
                "trades may still come): left to the live repair"
            )
    todo = []
    for symbol in sorted(set(instruments) | unknown):
        for span in subtract(gaps, settled_spans(events, symbol)):
            todo.append((symbol, span))
    return _Plan(stream, base, spec, instruments, unknown, todo, report)


def _unsettled_gaps(
    settings: Settings,
    data_dir: Path,
    stream: str,
    events: Sequence[Mapping[str, Any]],
    base: str,
    start_us: int,
    now_us: int,
) -> list[Span]:
    """While a recorder records `stream` (its journal does not end in ``stop`` and is fresh:
    `coverage.liveness_bound_us`), the gaps since `start_us` that are still open at `now_us`
    or closed less than one flush interval plus `SETTLE_US` before it (inclusive µs).

    A stream whose connection replays recent trades after each subscribe (Phemex's snapshot,
    `HistorySpec.live_replays`) delivers trades of such a gap again when it resumes, and the
    rows received then may still wait in the worker's writer for up to one flush interval: the
    store does not show them yet, and the live path does not read the store. Repairing the gap
    from this process would then store those trades twice (``rest`` and ``ws``). The worker's
    own live repair takes such a gap once it closes: it flushes its writer first and passes its
    rows through the connection's de-duplicator. No recorder running: nothing is unsettled (a
    recorder started later primes its de-duplicator from the store, repaired rows included).
    """
    from pumpwatch.segments.coverage import completeness, liveness_bound_us

    stamps = [e for e in events if isinstance(e.get("ts"), int)]
    if not stamps:
        return []
    last = stamps[-1]
    if last.get("event") == "stop" or last["ts"] < now_us - liveness_bound_us(settings.recorder.heartbeat_s):
        return []

    guard_us = SETTLE_US + round(settings.storage.flush_interval_s * US_PER_S)
    now = completeness(
        data_dir,
        stream,
        start_us,
        now_us,
        base=base,
        heartbeat_s=settings.recorder.heartbeat_s,
        now_us=now_us,
    )
    return [(a, b) for a, b in now.gaps if b >= now_us - guard_us]


async def _run_stream(
    plan: _Plan,
    settings: Settings,
    data_dir: Path,
    client: httpx.AsyncClient,
    budgets: Budgets,
    deadline_at: float,
    clock: Callable[[], float],
) -> None:
    from pumpwatch.segments.journal import EventJournal
    from pumpwatch.segments.repair import write_repaired

    report, stream = plan.report, plan.stream
    if not plan.todo:
        plan.finished = True
        return
    if plan.unknown and plan.spec is not None:
        try:
            listing = await exchange_instruments(client, settings, stream)
        except (httpx.HTTPError, PumpWatchError) as exc:
            listing = {}
            log.warning("%s: instrument list unavailable (%s)", stream, exc)
        for symbol in sorted(plan.unknown):
            if symbol in listing:
                plan.instruments[symbol] = listing[symbol]
    todo = []
    for symbol, span in plan.todo:
        if symbol in plan.instruments or plan.spec is None:
            todo.append((symbol, span))
        elif f"{symbol}: instrument unknown" not in report.notes:
            report.notes.append(f"{symbol}: instrument unknown")  # no multiplier: not attempted
    report.todo = todo

    def write(rows: list[Any], recv_us: int) -> int:
        return write_repaired(data_dir, stream, rows, recv_us=recv_us).written

    with EventJournal(data_dir, stream) as journal:

        def record(event: str, fields: Mapping[str, Any]) -> None:
            journal.record(event, **fields)

        def give_up(symbol: str, span: Span, reason: str) -> None:
            record(
                "unrepaired",
                {
                    "symbol": symbol,
                    "base": plan.base,
                    "start_us": span[0],
                    "end_us": span[1],
                    "reason": reason,
                },
            )
            report.unrepaired.append((symbol, span[0], span[1], reason))

        for symbol, span in todo:
            if plan.spec is None:
                give_up(symbol, span, NO_HISTORY)
                continue
            left_s = deadline_at - clock()
            if left_s <= 0:
                give_up(symbol, span, RATE_LIMITED)
                continue
            result = await repair(
                client,
                plan.spec,
                budgets.for_spec(plan.spec),
                stream,
                symbol,
                span[0],
                span[1],
                instruments=plan.instruments,
                write=write,
                journal=record,
                deadline_s=left_s,
            )
            report.add(result)
    plan.finished = True


async def repair_window(
    settings: Settings,
    data_dir: str | os.PathLike[str],
    symbol: str,
    start_us: int,
    end_us: int,
    *,
    streams: Sequence[str],
    deadline_s: float,
    client: httpx.AsyncClient | None = None,
    now_us: int | None = None,
    budgets: Budgets | None = None,
) -> dict[str, WindowRepair]:
    """Repair what `streams` are missing of `symbol` (an Upbit-style base) in
    ``[start_us, end_us]``; see the module docstring.

    Returns one `WindowRepair` per stream; streams this machine does not record
    (``recorder.streams``) or that are disabled are left out: their REST URLs and instruments
    are not this configuration's. `now_us` (default: the wall clock) sets what is too recent
    to repair; `budgets` (default: the process's `extraction_budgets()`) paces the calls.
    Raises `StoreError` when `data_dir` does not exist (nothing is created then) and
    `ConfigError` for an unreadable subscription list.
    """
    data_path = Path(data_dir)
    if not data_path.is_dir():
        raise StoreError(f"data directory {data_path} does not exist")
    recorded = set(settings.recorder.streams)
    chosen = [s for s in streams if s in recorded and settings.streams[s].enabled]
    listed = await asyncio.to_thread(listed_instruments, settings)  # a big YAML: off the loop
    horizon_us = (time.time_ns() // 1000 if now_us is None else now_us) - SETTLE_US
    plans = [
        await asyncio.to_thread(
            _plan_stream, settings, data_path, s, symbol, start_us, end_us, listed, horizon_us
        )
        for s in chosen
    ]
    loop = asyncio.get_running_loop()
    deadline_at = loop.time() + deadline_s
    budgets = extraction_budgets() if budgets is None else budgets
    by_exchange: dict[str, list[_Plan]] = {}
    for plan in plans:
        by_exchange.setdefault(split_stream(plan.stream)[0], []).append(plan)

    own_client = client is None
    http = make_client() if client is None else client
    try:

        async def run_exchange(group: list[_Plan]) -> None:
            for plan in group:
                await _run_stream(plan, settings, data_path, http, budgets, deadline_at, loop.time)

        tasks = {
            asyncio.create_task(run_exchange(group), name=f"repair-window-{exchange}"): group
            for exchange, group in by_exchange.items()
        }
        if tasks:
            done, late = await asyncio.wait(tasks, timeout=deadline_s + HARD_GRACE_S)
            for task in late:
                task.cancel()
                for plan in tasks[task]:
                    if plan.todo and not plan.finished:
                        plan.report.notes.append("cut at the deadline")
            await asyncio.gather(*late, return_exceptions=True)
            for task in done:
                task.result()  # a store fault propagates
    finally:
        if own_client:
            await http.aclose()
    reports = {plan.stream: plan.report for plan in plans}
    touched = [r for r in reports.values() if r.attempted]
    for report in touched:
        log.info("repair at extraction: %s %s", symbol, report.note())
    if not touched:
        log.info("repair at extraction: %s: nothing missing on %d stream(s)", symbol, len(reports))
    return reports
