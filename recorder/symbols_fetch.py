"""`pumpwatch symbols`: fetch every stream's instrument list and Upbit's KRW markets, then write
the subscription file (``recorder/symbols.py`` holds its format and the selection policy).

Each stream's list comes through its adapter (``instruments_request`` + ``parse_instruments``,
following pagination) from the stream's ``rest_url`` setting; Upbit's KRW set from
``{symbols.upbit_rest_url}/v1/market/all``. A stream whose REST call fails (an HTTP error, an
error body, an empty list) keeps its previous list and is named in the report, so
`pumpwatch symbols` exits non-zero; with no previous list to keep (no file, or an unreadable
one) the stream is left out of the file, never written empty, and logged as an error (a worker
keeps its current list for a stream absent from the file). An Upbit failure keeps the previous
KRW map; with none yet although a list was written before (Upbit unreachable so far), the KRW
bases of its first answer count as first seen then, not as old news. Nothing from
the network is written before it passed the instrument checks.

`record` runs this every ``symbols.refresh`` (1 min by default). The file is rewritten only
when its content changes, so a worker's reload (``recorder.symbols_reload``) is a ``stat`` and
nothing more when nothing changed. Which streams are failing is kept in the file
(``refresh_failing``: stream -> since when, µs), so a failure is logged as a warning when it
starts and when it ends, not at every refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Adapter, Instrument
from pumpwatch.recorder.symbols import (
    SymbolsFile,
    check_instrument,
    load_symbols_file,
    same_content,
    select_instruments,
    update_krw_first_seen,
    write_symbols,
)
from pumpwatch.settings import Settings
from pumpwatch.streams import SYMBOL_RE

log = logging.getLogger(__name__)

UPBIT = "upbit"  # the key of Upbit's KRW market list among the failing sources
MAX_PAGES = 100  # a paginated list longer than this is a server bug, not a market
UPBIT_MARKETS_PATH = "/v1/market/all"


@dataclass
class RefreshReport:
    """What a refresh wrote: instruments per stream, and the streams that kept an old list."""

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # stream -> why its previous list was kept
    upbit_krw: int | None = None  # bases on Upbit KRW, None when Upbit could not be read
    invalid: dict[str, int] = field(default_factory=dict)  # stream -> instruments refused by checks
    written: bool = False  # False: the content did not change and the file was left alone
    failures_changed: bool = False  # the set of failing streams differs from the previous refresh


def symbols_path(settings: Settings) -> Path:
    """``recorder.symbols_file``, made absolute when the settings loaded
    (`pumpwatch.settings.resolve_symbols_file`: config file or data directory, never the cwd)."""
    return Path(settings.recorder.symbols_file)


async def fetch_instruments(client: httpx.AsyncClient, adapter: Adapter, rest_url: str) -> list[Instrument]:
    """Every instrument the adapter's REST list returns, all pages."""
    if adapter.instruments_request is None or adapter.parse_instruments is None:
        raise ParseError(f"{adapter.stream}: the adapter has no instrument list")
    request = adapter.instruments_request(rest_url)
    out: list[Instrument] = []
    for _page in range(MAX_PAGES):
        resp = await client.request(
            request.method, request.url, headers=dict(request.headers), content=request.body
        )
        resp.raise_for_status()
        items, follow = adapter.parse_instruments(resp.content)
        out.extend(items)
        if follow is None:
            if not out:  # no exchange lists zero markets: an error page or a broken filter
                raise ParseError(f"{adapter.stream}: the instrument list is empty")
            return out
        request = follow
    raise ParseError(f"{adapter.stream}: instrument list still paginating after {MAX_PAGES} pages")


async def fetch_upbit_krw(client: httpx.AsyncClient, upbit_rest_url: str) -> set[str]:
    """Bases with a KRW market on Upbit (``KRW-BTC`` -> ``BTC``); malformed names are skipped."""
    resp = await client.get(upbit_rest_url.rstrip("/") + UPBIT_MARKETS_PATH)
    resp.raise_for_status()
    try:
        markets = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        raise ParseError("Upbit market/all: not JSON") from None
    if not isinstance(markets, list):
        raise ParseError("Upbit market/all: expected a JSON array")
    out: set[str] = set()
    skipped = 0
    for item in markets:
        market = item.get("market") if isinstance(item, dict) else None
        if not isinstance(market, str) or not market.startswith("KRW-"):
            continue
        base = market.split("-", 1)[1]
        if SYMBOL_RE.fullmatch(base):
            out.add(base)
        else:
            skipped += 1
    if skipped:
        log.warning("Upbit market/all: skipped %d malformed KRW market names", skipped)
    return out


def _load_previous(path: Path) -> SymbolsFile | None:
    if not path.exists():
        return None
    try:
        previous = load_symbols_file(path)
        return None if previous.example else previous
    except Exception as exc:  # a damaged previous file must not block writing a good one
        log.warning("previous symbols file %s unreadable (%s); starting fresh", path, exc)
        return None


async def fetch_stream_instruments(
    client: httpx.AsyncClient, settings: Settings, stream: str
) -> tuple[list[Instrument], int]:
    """One stream's instrument list that passed the name checks, and how many did not."""
    from pumpwatch.recorder.adapters import get_adapter

    options = dict(settings.streams[stream].options)
    adapter = get_adapter(stream, options)
    if "include_non_crypto" in adapter.default_options and "include_non_crypto" not in options:
        # symbols.include_non_crypto is the default of the adapters' per-stream option.
        options["include_non_crypto"] = settings.symbols.include_non_crypto
        adapter = get_adapter(stream, options)
    raw = await fetch_instruments(client, adapter, settings.streams[stream].rest_url)
    checked = [c for c in (check_instrument(i) for i in raw) if c is not None]
    return checked, len(raw) - len(checked)


async def refresh_symbols(
    settings: Settings,
    *,
    streams: tuple[str, ...] | list[str] | None = None,
    now_us: int | None = None,
    timeout_s: float = 30.0,
) -> RefreshReport:
    """Fetch, select by ``symbols.policy`` and write the subscription file atomically.

    `streams` defaults to the enabled streams of ``recorder.streams``. Streams not refreshed
    keep what the previous file had.
    """
    path = symbols_path(settings)
    now_us = time.time_ns() // 1000 if now_us is None else now_us
    chosen = list(streams) if streams is not None else list(settings.recorder.streams)
    chosen = [s for s in chosen if settings.streams[s].enabled]
    previous = _load_previous(path)
    report = RefreshReport(path=path)
    headers = {"User-Agent": settings.upbit.user_agent, "Accept": "application/json"}
    async with httpx.AsyncClient(timeout=timeout_s, headers=headers, follow_redirects=True) as client:
        tasks = [fetch_stream_instruments(client, settings, s) for s in chosen]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        krw_now: set[str] | None
        try:
            krw_now = await fetch_upbit_krw(client, settings.symbols.upbit_rest_url)
            upbit_error = ""
        except (httpx.HTTPError, ParseError) as exc:
            krw_now = None
            upbit_error = _why(exc)

    prev_krw = previous.krw_first_seen_us if previous is not None else None
    if krw_now is None:
        krw_seen = prev_krw
    elif previous is not None and prev_krw is None:
        # A list was written before, but Upbit never answered so far: a base on KRW now may
        # have been listed meanwhile, so none is old news; each counts as first seen now (and
        # stays recorded for `keep_after_krw`). Only the very first refresh marks all as old.
        krw_seen = dict.fromkeys(sorted(krw_now), now_us)
        report.upbit_krw = len(krw_now)
    else:
        krw_seen = update_krw_first_seen(prev_krw, sorted(krw_now), now_us)
        report.upbit_krw = len(krw_now)
    out_streams: dict[str, list[Instrument]] = {}
    if previous is not None:
        out_streams.update({s: list(v.values()) for s, v in previous.streams.items()})
    was_failing = dict(previous.refresh_failing) if previous is not None else {}
    failing = {s: t for s, t in was_failing.items() if s not in chosen and s != UPBIT}
    if upbit_error:
        failing[UPBIT] = was_failing.get(UPBIT, now_us)
        if UPBIT in was_failing:
            log.debug("Upbit KRW market list still unavailable (%s)", upbit_error)
        else:
            log.warning("Upbit KRW market list unavailable (%s); keeping the previous one", upbit_error)
    elif UPBIT in was_failing:
        log.warning("Upbit KRW market list fetched again (failing since %d µs)", was_failing[UPBIT])
    for stream, result in zip(chosen, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            report.failed[stream] = _why(result)
            failing[stream] = was_failing.get(stream, now_us)
            if stream not in out_streams:
                # Nothing to keep (no previous file, or an unreadable one): the stream stays out
                # of the file (never an empty list), and a running worker keeps what it records.
                log.error(
                    "%s: instrument list failed (%s) and there is no previous list to keep; the "
                    "stream is left out of %s (running workers keep their current list)",
                    stream,
                    _why(result),
                    path,
                )
                continue
            kept = len(out_streams[stream])
            if stream in was_failing:  # already said when it started failing
                log.debug("%s: instrument list still failing (%s)", stream, _why(result))
            else:
                why = _why(result)
                log.warning("%s: instrument list failed (%s); keeping previous %d", stream, why, kept)
            continue
        if stream in was_failing:
            since_us = was_failing[stream]
            log.warning("%s: instrument list fetched again (failing since %d µs)", stream, since_us)
        instruments, invalid = result
        if invalid:
            report.invalid[stream] = invalid
            log.warning("%s: %d instruments failed the name checks and were skipped", stream, invalid)
        out_streams[stream] = select_instruments(
            instruments,
            policy=settings.symbols.policy,
            include=settings.symbols.include,
            krw_first_seen_us=krw_seen,
            now_us=now_us,
            keep_after_krw_s=settings.symbols.keep_after_krw_s,
        )
    report.counts = {s: len(v) for s, v in out_streams.items()}
    report.failures_changed = failing.keys() - {UPBIT} != was_failing.keys() - {UPBIT}
    new = SymbolsFile(
        streams={s: {i.symbol: i for i in v} for s, v in out_streams.items()},
        krw_first_seen_us=dict(krw_seen) if krw_seen is not None else None,
        policy=settings.symbols.policy,
        refresh_failing=failing,
    )
    if previous is not None and same_content(previous, new):
        # Every minute under `record`: not worth a line unless debugging.
        log.debug(
            "symbols unchanged in %s: %s", path, ", ".join(f"{s}={n}" for s, n in report.counts.items())
        )
        return report
    write_symbols(
        path,
        out_streams,
        krw_first_seen_us=krw_seen,
        policy=settings.symbols.policy,
        generated_at_us=now_us,
        refresh_failing=failing,
    )
    report.written = True
    log.info("symbols written to %s: %s", path, ", ".join(f"{s}={n}" for s, n in report.counts.items()))
    return report


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
