"""From a fired listing to files on disk: wait for the window to close, repair, extract, detect.

Each fired coin becomes one pending extraction due at ``T + after + flush_interval + settle``:
by then every trade of the window has been received and flushed by the segment writer, so a
late detection loses nothing (the data was on disk before anyone knew it mattered). A firing
detected after that moment is extracted at once. Pending extractions live in
``<data_dir>/upbit/pending.json`` (atomic writes) and are re-scheduled on start, so a restart
between detection and extraction still extracts. Extraction and detection run in worker
threads (`asyncio.to_thread`) so the poll loop keeps going; several coins, from one notice or
several, each get their own directory.

Provenance: the extraction carries the notice (`Firing.source`: id, title, first_listed_at,
detection delay). One pending extraction per (coin, T, notice id): two notices naming the same
coin at the same time are two extractions, and the extractor gives the second its own
directory (``…Z_2``) instead of replacing the first; a later manual ``pumpwatch extract`` of
the same coin and T refreshes the directory and keeps the notice. A coin that no stream has
ever recorded is not retried (`NothingMatchedError`): no listing directory is written for it,
only this recorder's explicit "nothing recorded here" part for the shared store
(`write_nothing_part`: ``data/remote/nothing/<SYM>_<T>/metadata.json``, trades 0, the coverage
of every stream it journals), so a shared listing does not wait for this recorder until its
deadline and then call its part missing.

Before extracting, what the store is still missing inside the window is filled from the
exchanges' REST history (`window_repair_fn`, ``recorder/history/window.py``; off with
``repair.at_extract: false``). It runs as its own task on the event loop: HTTP is async, disk
work goes to threads, and ``repair.extract_deadline`` bounds it, so a blocked rate budget
delays the extraction by at most that much and a failed repair never stops it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.errors import NothingMatchedError
from pumpwatch.recorder.upbit.state import Firing, write_json_atomic
from pumpwatch.settings import PumpSettings, Settings
from pumpwatch.streams import STREAMS, check_symbol
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import format_utc

log = logging.getLogger(__name__)

ExtractFn = Callable[..., Path]
DetectFn = Callable[..., object]
# repair(symbol, window start µs, window end µs): fills the store's gaps in the window
RepairFn = Callable[[str, int, int], Coroutine[Any, Any, object]]

MAX_ATTEMPTS = 5  # an extraction that keeps failing (disk full, damaged store) is given up
RETRY_BASE_S = 5.0  # 5, 10, 20, 40 s between attempts
MAX_PARALLEL = 2  # extractions at once: each reads the window from every stream's segments


@dataclass
class PendingExtraction:
    """One coin's window waiting to be cut out of the store."""

    symbol: str
    trigger_us: int
    due_us: int
    source: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0

    @property
    def key(self) -> tuple[str, int, str]:
        """One extraction per coin, trigger time and notice: two notices of one coin at the same
        time are two extractions (the extractor gives the second its own directory)."""
        return (self.symbol, self.trigger_us, str(self.source.get("notice_id", "")))


@dataclass(frozen=True)
class ExtractionResult:
    symbol: str
    trigger_us: int
    listing_dir: Path | None
    detected: bool
    error: str | None = None
    final: bool = False  # an error retrying cannot change (no stream records the coin)


def default_extract() -> ExtractFn:
    """`pumpwatch.extractor.extract`, imported when first needed (it pulls in pyarrow)."""
    from pumpwatch.extractor import extract

    return extract


def window_repair_fn(settings: Settings) -> RepairFn | None:
    """The extraction-time repair (`repair_window`) of all twelve streams (`STREAMS`, not only
    those this machine records: a stream recorded elsewhere is filled from its exchange's REST
    history into this store too), bound to `settings`; None when ``repair.at_extract`` is
    off."""
    if not settings.repair.at_extract:
        return None

    async def repair(symbol: str, start_us: int, end_us: int) -> object:
        from pumpwatch.recorder.history.window import repair_window

        return await repair_window(
            settings,
            settings.data_path,
            symbol,
            start_us,
            end_us,
            streams=STREAMS,
            deadline_s=settings.repair.extract_deadline_s,
        )

    return repair


NOTHING_DIR = ("remote", "nothing")  # under the data dir: the "nothing recorded here" parts


def write_nothing_part(
    data_dir: str | os.PathLike[str],
    symbol: str,
    trigger_us: int,
    *,
    before_s: float,
    after_s: float,
    source: dict[str, Any] | None,
    reason: str = "",
) -> Path | None:
    """This recorder's answer for a listing it has nothing of: the ``metadata.json`` of a part
    with no trade (``nothing_recorded: true``) and the coverage of every stream it journals in
    the window (so the shared listing shows it listened, or not, without hearing the coin), at
    ``data/remote/nothing/<name>/metadata.json`` with the name the extraction would have used.
    The uploader puts it as this recorder's part (never over a real listing directory of the
    same name). Returns the file, or None when a listing directory of that name exists."""
    from pumpwatch.atomic import write_file_atomic
    from pumpwatch.extractor.extract import listing_target
    from pumpwatch.extractor.metadata import build_metadata
    from pumpwatch.segments.coverage import completeness
    from pumpwatch.segments.reader import OUT_SCHEMA

    data = Path(data_dir)
    start_us = trigger_us - round(before_s * US_PER_S)
    end_us = trigger_us + round(after_s * US_PER_S)
    target, _old = listing_target(data / "listings", symbol, trigger_us, source)
    if target.exists():
        return None
    comps = {s: completeness(data, s, start_us, end_us, base=symbol) for s in STREAMS}
    known = {s: c for s, c in comps.items() if c.listening.known}
    empty = OUT_SCHEMA.empty_table()
    meta = build_metadata(
        symbol,
        trigger_us,
        before_s=before_s,
        after_s=after_s,
        start_us=start_us,
        end_us=end_us,
        source=source,
        parts=dict.fromkeys(known, empty),
        completeness=known,
    )
    meta["nothing_recorded"] = True
    meta["nothing_reason"] = reason
    path = data.joinpath(*NOTHING_DIR, target.name, "metadata.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, orjson.dumps(meta, option=orjson.OPT_INDENT_2))
    return path


def default_detect() -> DetectFn:
    """`pumpwatch.detector.run_detector`, imported when first needed (numpy, matplotlib)."""
    from pumpwatch.detector import run_detector

    return run_detector


class ExtractionScheduler:
    """Runs pending extractions when their window has closed; persists what is still to do."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        before_s: float,
        after_s: float,
        wait_after_s: float,
        pump: PumpSettings | None = None,
        extract_fn: ExtractFn | None = None,
        detect_fn: DetectFn | None = None,
        repair_fn: RepairFn | None = None,
        clock: Callable[[], float] = time.time,
        retry_base_s: float = RETRY_BASE_S,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / "upbit" / "pending.json"
        self.before_s = before_s
        self.after_s = after_s
        self.wait_after_s = wait_after_s  # one flush interval + settle
        self.pump = pump if pump is not None else PumpSettings()
        self._extract_fn = extract_fn
        self._detect_fn = detect_fn
        self._repair_fn = repair_fn
        self._clock = clock
        self._retry_base_s = retry_base_s
        self.pending: dict[tuple[str, int, str], PendingExtraction] = {}
        self.results: list[ExtractionResult] = []
        self._tasks: dict[tuple[str, int, str], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_PARALLEL)
        self._running: set[tuple[str, int, str]] = set()
        self._closing = False
        self._load()

    # -- persistence ---------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            items = orjson.loads(raw)
            loaded = [PendingExtraction(**item) for item in items]
        except (orjson.JSONDecodeError, TypeError, ValueError):
            log.error("upbit pending extractions %s are damaged; ignoring them", self.path)
            return
        for item in loaded:
            try:
                check_symbol(item.symbol)
            except Exception:
                log.warning("pending extraction with malformed symbol %r dropped", item.symbol)
                continue
            self.pending[item.key] = item
        if self.pending:
            log.info("upbit: %d pending extraction(s) re-scheduled after restart", len(self.pending))

    def _save(self) -> None:
        write_json_atomic(self.path, [asdict(p) for p in sorted(self.pending.values(), key=lambda p: p.key)])

    # -- scheduling ----------------------------------------------------------------------------

    def due_us_for(self, trigger_us: int) -> int:
        """When the window around `trigger_us` is complete on disk."""
        return trigger_us + int((self.after_s + self.wait_after_s) * US_PER_S)

    def add(self, firing: Firing) -> PendingExtraction | None:
        """Persist and schedule one fired coin; a duplicate (same symbol, T and notice) is ignored."""
        symbol = check_symbol(firing.symbol)
        item = PendingExtraction(
            symbol, firing.trigger_us, self.due_us_for(firing.trigger_us), firing.source()
        )
        if item.key in self.pending:
            return None
        self.pending[item.key] = item
        self._save()
        wait_s = max(0.0, item.due_us / US_PER_S - self._clock())
        log.info(
            "upbit: extraction of %s around %s scheduled in %.1f s",
            symbol,
            format_utc(item.trigger_us),
            wait_s,
        )
        self._spawn(item)
        return item

    def start(self) -> None:
        """Schedule everything loaded from disk (call inside the running loop)."""
        for item in list(self.pending.values()):
            self._spawn(item)

    def _spawn(self, item: PendingExtraction) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # picked up by start() once a loop runs
        if item.key in self._tasks and not self._tasks[item.key].done():
            return
        task = asyncio.create_task(self._run(item), name=f"upbit-extract-{item.symbol}")
        self._tasks[item.key] = task

    async def idle(self) -> None:
        """Wait until no extraction is pending or running (tests, benchmarks)."""
        while True:
            tasks = [t for t in self._tasks.values() if not t.done()]
            if not tasks:
                return
            await asyncio.wait(tasks)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop: cancel waiting jobs (they stay in pending.json), give running ones `grace_s`."""
        self._closing = True
        live = {k: t for k, t in self._tasks.items() if not t.done()}
        for key, task in live.items():
            if key not in self._running:
                task.cancel()
        running = [t for k, t in live.items() if k in self._running]
        if running:
            _, late = await asyncio.wait(running, timeout=grace_s)
            for task in late:
                log.warning("upbit: extraction still running at shutdown; it resumes on the next start")
                task.cancel()
        await asyncio.gather(*live.values(), return_exceptions=True)
        self._tasks.clear()

    async def _run(self, item: PendingExtraction) -> None:
        while True:
            wait_s = item.due_us / US_PER_S - self._clock()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue
            async with self._slots:
                self._running.add(item.key)
                try:
                    result = await self._attempt(item)
                finally:
                    self._running.discard(item.key)
            if result.error is None or result.final or item.attempts >= MAX_ATTEMPTS:
                if result.error is not None and not result.final:
                    log.error(
                        "upbit: giving up extraction of %s after %d attempts", item.symbol, item.attempts
                    )
                self.results.append(result)
                self.pending.pop(item.key, None)
                self._save()
                return
            delay_s = self._retry_base_s * 2 ** (item.attempts - 1)
            item.due_us = int((self._clock() + delay_s) * US_PER_S)
            self._save()
            log.warning(
                "upbit: extraction of %s failed (%s); retry in %.0f s", item.symbol, result.error, delay_s
            )
            if self._closing:
                return

    async def _repair(self, item: PendingExtraction) -> None:
        """Fill the window's gaps from REST history first; a failure is logged, not fatal."""
        if self._repair_fn is None:
            return
        start_us = item.trigger_us - round(self.before_s * US_PER_S)
        end_us = item.trigger_us + round(self.after_s * US_PER_S)
        task = asyncio.create_task(
            self._repair_fn(item.symbol, start_us, end_us), name=f"upbit-repair-{item.symbol}"
        )
        try:
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception:
            log.exception("upbit: repair of %s's window failed; extracting what the store holds", item.symbol)

    async def _attempt(self, item: PendingExtraction) -> ExtractionResult:
        item.attempts += 1
        await self._repair(item)
        extract = self._extract_fn or default_extract()
        try:
            listing_dir = await asyncio.to_thread(
                extract,
                self.data_dir,
                item.symbol,
                item.trigger_us,
                before_s=self.before_s,
                after_s=self.after_s,
                source=item.source,
            )
        except asyncio.CancelledError:
            raise
        except NothingMatchedError as exc:
            log.warning("upbit: nothing to extract for %s: %s", item.symbol, exc)
            try:
                await asyncio.to_thread(
                    write_nothing_part,
                    self.data_dir,
                    item.symbol,
                    item.trigger_us,
                    before_s=self.before_s,
                    after_s=self.after_s,
                    source=item.source,
                    reason=str(exc),
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("upbit: cannot write the empty part of %s", item.symbol)
            return ExtractionResult(item.symbol, item.trigger_us, None, False, str(exc), final=True)
        except Exception as exc:
            return ExtractionResult(item.symbol, item.trigger_us, None, False, f"{type(exc).__name__}: {exc}")
        log.info(
            "upbit: extracted %s around %s into %s", item.symbol, format_utc(item.trigger_us), listing_dir
        )
        detect = self._detect_fn or default_detect()
        detected = False
        try:
            await asyncio.to_thread(detect, Path(listing_dir), self.pump)
            detected = True
        except asyncio.CancelledError:
            raise
        except Exception:
            # The raw window is safe on disk; `pumpwatch detect` can redo this step.
            log.exception("upbit: detector failed on %s", listing_dir)
        return ExtractionResult(item.symbol, item.trigger_us, Path(listing_dir), detected)
