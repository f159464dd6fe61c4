"""The listing watcher as a service: poll -> firing rule -> scheduled extraction.

`run_listing_service(settings, stop)` is what ``pumpwatch record`` runs next to the streams
(when ``upbit.enabled``); it also runs alone. It keeps going through network faults and
malformed answers; it returns when `stop` is set, leaving unfinished extractions in
``<data_dir>/upbit/pending.json`` for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httpx

from pumpwatch.recorder.upbit.poller import NoticePoller, PollResult
from pumpwatch.recorder.upbit.state import Firing, WatchState
from pumpwatch.recorder.upbit.trigger import DetectFn, ExtractFn, ExtractionScheduler, window_repair_fn
from pumpwatch.settings import Settings

log = logging.getLogger(__name__)


class ListingWatcher:
    """Owns the poller, the persisted firing state and the extraction scheduler."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.AsyncClient | None = None,
        extract_fn: ExtractFn | None = None,
        detect_fn: DetectFn | None = None,
        on_firing: Callable[[Firing], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.poller = NoticePoller(settings.upbit, client=client, clock=clock)
        self.state = WatchState(settings.data_dir)
        self.scheduler = ExtractionScheduler(
            settings.data_dir,
            before_s=settings.extract.before_s,
            after_s=settings.extract.after_s,
            wait_after_s=settings.storage.flush_interval_s + settings.upbit.settle_s,
            pump=settings.pump,
            extract_fn=extract_fn,
            detect_fn=detect_fn,
            repair_fn=window_repair_fn(settings),
            clock=clock,
        )
        self._on_firing = on_firing
        self.firings: list[Firing] = []

    async def poll_once(self) -> PollResult:
        """One poll round; fresh KRW listings are scheduled for extraction."""
        result = await self.poller.fetch()
        if result.page is not None:
            now_us = result.received_us or int(self._clock() * 1e6)
            for firing in self.state.decide(result.page, now_us, self.settings.upbit.freshness_s):
                self.firings.append(firing)
                self.scheduler.add(firing)
                if self._on_firing is not None:
                    self._on_firing(firing)
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set."""
        self.scheduler.start()
        try:
            while not stop.is_set():
                result = await self.poll_once()
                delay_s = self.poller.next_delay_s(result)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay_s)
        finally:
            await self.scheduler.close()
            await self.poller.aclose()
            log.info("upbit watcher stopped (%d listing(s) fired this run)", len(self.firings))


async def run_listing_service(
    settings: Settings, stop: asyncio.Event, *, on_firing: Callable[[Firing], None] | None = None
) -> None:
    """Watch Upbit notices and extract every fresh KRW listing until `stop` is set. `on_firing`
    sees each firing as it is decided (`record` uses it to subscribe a coin no stream records)."""
    if not settings.upbit.enabled:
        log.info("upbit watcher disabled (upbit.enabled: false)")
        return
    watcher = ListingWatcher(settings, on_firing=on_firing)
    if settings.metrics.enabled:
        from pumpwatch.recorder.metrics import watch_upbit

        watch_upbit(watcher)
    await watcher.run(stop)
