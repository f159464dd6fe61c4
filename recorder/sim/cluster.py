"""All the local exchanges at once, fed by the synthetic market: the offline world that the
end-to-end tests, the benchmarks and ``pumpwatch demo`` record from.

One `SimExchange` per stream (each ``recorder/sim/<exchange>.py`` supplies its protocol), the
instruments named the way each exchange names them (`sim_instrument`), and one task that
advances `LiveMarket` (`recorder/sim/market.py`) every `tick_s` and publishes each stream's trades.
`settings_overrides()` / `write_config()` / `write_symbols()` point `pumpwatch record` at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.market import LiveMarket, PumpSpec
from pumpwatch.recorder.sim.protocol import SimProtocol
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.streams import parse_streams, split_stream

log = logging.getLogger(__name__)


def sim_protocol_for(stream: str) -> SimProtocol:
    """The `SimProtocol` of `stream` from ``recorder/sim/<exchange>.py``."""
    exchange, market = split_stream(stream)
    module = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}")
    protocol: SimProtocol = module.sim_protocol(market)
    return protocol


class SimCluster:
    """Local exchanges for `streams` trading `bases`, driven by a seeded synthetic market.

    ``async with SimCluster(["binance_spot", "okx_futures"], ["BTC", "0G"]) as cluster: ...``
    `pumps` are `PumpSpec`s (`market.py`); `sim_kwargs` go to every `SimExchange` (fault
    settings such as ``lifetime_s``). `exchanges[stream]` gives each server for fault injection.
    """

    def __init__(
        self,
        streams: Sequence[str] | str | None,
        bases: Sequence[str],
        *,
        seed: int = 1,
        trades_per_s: float = 50.0,
        pumps: Sequence[PumpSpec] = (),
        tick_s: float = 0.05,
        sim_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.streams: tuple[str, ...] = parse_streams(
            streams if streams is None or isinstance(streams, str) else list(streams)
        )
        self.bases = tuple(bases)
        self.seed = seed
        self.trades_per_s = trades_per_s
        self.pumps = tuple(pumps)
        self.tick_s = tick_s
        self.instruments: dict[str, list[Instrument]] = {
            s: [sim_instrument(s, b) for b in self.bases] for s in self.streams
        }
        self.exchanges: dict[str, SimExchange] = {
            s: SimExchange(sim_protocol_for(s), self.instruments[s], **dict(sim_kwargs or {}))
            for s in self.streams
        }
        self.published: dict[str, int] = dict.fromkeys(self.streams, 0)  # trades published per stream
        self._market: LiveMarket | None = None
        self._task: asyncio.Task[None] | None = None
        self._paused = False

    async def start(self) -> None:
        """Start every server and the market clock."""
        for exchange in self.exchanges.values():
            await exchange.start()
        self._market = LiveMarket(
            self.instruments, seed=self.seed, trades_per_s=self.trades_per_s, pumps=self.pumps
        )
        self._market.advance(time.time_ns() // 1000)  # sets the market's clock to now
        self._task = asyncio.create_task(self._drive(), name="sim cluster market")
        log.info("sim cluster: %d streams x %d bases on 127.0.0.1", len(self.streams), len(self.bases))

    async def close(self) -> None:
        """Stop the market and every server."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for exchange in self.exchanges.values():
            await exchange.close()

    async def __aenter__(self) -> SimCluster:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) publishing; the market's clock keeps running, so trades are skipped."""
        self._paused = paused

    def tick(self, now_us: int | None = None) -> int:
        """Advance the market to `now_us` (default: now) and publish; returns trades published."""
        if self._market is None:
            raise RuntimeError("SimCluster.tick() before start()")
        batch = self._market.advance(time.time_ns() // 1000 if now_us is None else now_us)
        total = 0
        for stream, rows in batch.items():
            if rows and not self._paused:
                self.exchanges[stream].publish(rows)
                self.published[stream] += len(rows)
                total += len(rows)
        return total

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            self.tick()
            next_at += self.tick_s
            # Sleep to the next tick on a fixed schedule; after a hiccup, do not try to catch up
            # tick by tick (the market itself covers the whole elapsed time in one advance).
            next_at = max(next_at, loop.time())
            await asyncio.sleep(next_at - loop.time())

    # -- pointing `pumpwatch record` at the cluster ---------------------------------------------

    def settings_overrides(self) -> dict[str, Any]:
        """A config mapping: ``recorder.streams`` and each stream's ``ws_url``/``rest_url``."""
        return {
            "recorder": {"streams": list(self.streams)},
            "streams": {
                s: {"ws_url": ex.ws_url, "rest_url": ex.rest_url} for s, ex in self.exchanges.items()
            },
        }

    def write_config(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write a config file with `settings_overrides()` deep-merged over `extra`."""
        doc = _deep_merge(dict(extra or {}), self.settings_overrides())
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return p

    def write_symbols(self, path: str | Path) -> Path:
        """Write the subscription list (``config/symbols.yaml`` format) of the cluster's instruments."""
        from pumpwatch.recorder.symbols import write_symbols

        return write_symbols(path, self.instruments, policy="all", generated_at_us=time.time_ns() // 1000)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            base[key] = _deep_merge(dict(base[key]), value)
        else:
            base[key] = value
    return base
