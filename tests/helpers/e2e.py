"""End-to-end harness: local exchanges for every stream whose adapter exists, a config pointing
`pumpwatch record` at them, a deterministic trade publisher, and readers of what reached disk.

Everything waits by polling a condition with a generous deadline (never a fixed sleep that
must be "long enough"): CI runs this on a loaded 2-core machine where the recorder subprocess
can lag the test process by seconds."""

from __future__ import annotations

import asyncio
import importlib
import itertools
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.segments.coverage import Replay
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import MS_PER_S, US_PER_MS

BASES = ("AAA", "BBB", "CCC")
SOAK_LONG = os.environ.get("PUMPWATCH_SOAK") == "long"
WAIT_S = 60.0  # deadline of every wait: far above normal, only hit when something is broken
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def available_streams() -> list[str]:
    """Every stream whose adapter and simulated protocol are both present."""
    out = []
    for stream in STREAMS:
        exchange, _ = split_stream(stream)
        try:
            importlib.import_module(f"pumpwatch.recorder.adapters.{exchange}")
            importlib.import_module(f"pumpwatch.recorder.sim.{exchange}")
        except ImportError:
            continue
        out.append(stream)
    return out


def now_us() -> int:
    return time.time_ns() // 1000


def recv_us(row: dict[str, Any]) -> int:
    """A disk row's receive time in exact integer µs (no float rounding)."""
    return int((row["recv_time"] - _EPOCH) // timedelta(microseconds=1))


async def poll(cond: Any, timeout_s: float, what: Any, every_s: float = 0.05) -> None:
    """Wait until `cond()` holds; AssertionError with `what()` (or `what`) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout_s:g} s: {what() if callable(what) else what}")
        await asyncio.sleep(every_s)


def journal_listening(data_dir: Path, stream: str) -> bool:
    """Whether the stream's journal says it is listening now (a connection is subscribed)."""
    replay = Replay()
    try:
        for event in read_events(data_dir, stream):
            replay.feed(event)
    except FileNotFoundError:
        return False
    return replay.listening()


async def wait_listening(data_dir: Path, streams: Iterable[str], timeout_s: float = WAIT_S) -> None:
    """Wait until every stream's journal says it listens: the exchange marks a subscription
    before the recorder has read the ack and journaled it, so a window must not start earlier."""
    chosen = list(streams)

    def deaf() -> list[str]:
        return [s for s in chosen if not journal_listening(data_dir, s)]

    await poll(lambda: not deaf(), timeout_s, lambda: f"journal not listening: {deaf()}")


class Market:
    """Local exchanges for `streams`, each with the instruments of `BASES`."""

    def __init__(self, streams: Sequence[str], *, lifetime_s: float | None = None) -> None:
        self.streams = list(streams)
        self.instruments: dict[str, list[Instrument]] = {
            s: [sim_instrument(s, b) for b in BASES] for s in self.streams
        }
        self.sims: dict[str, SimExchange] = {}
        for s in self.streams:
            exchange, market = split_stream(s)
            protocol = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}").sim_protocol(market)
            self.sims[s] = SimExchange(protocol, self.instruments[s], lifetime_s=lifetime_s)
        # Ids count up by one per stream and symbol, as the real ones do where the recorder
        # checks their continuity (a global counter would look like a hole at every trade).
        self._ids: dict[tuple[str, str], itertools.count[int]] = {}
        self._t_ms = dict.fromkeys(self.streams, now_us() // US_PER_MS)

    async def __aenter__(self) -> Market:
        for sim in self.sims.values():
            await sim.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for sim in self.sims.values():
            await sim.close()

    def write_config(self, tmp: Path, **recorder: Any) -> Path:
        """Symbols file + config file with shrunk intervals; returns the config path."""
        symbols = tmp / "symbols.yaml"
        write_symbols(symbols, self.instruments)
        rec = {
            "streams": self.streams,
            "symbols_file": str(symbols),
            "backoff_initial": "50ms",
            "backoff_max": "500ms",
            "heartbeat": "1s",
            "worker_restart_max": "500ms",
            "status_interval": "2s",
            "symbols_reload": "1s",
            # one worker per exchange: the tests written before recorder.workers kill or stop
            # one exchange's worker; test_workers_e2e passes workers=1 / 2 itself
            "workers": 0,
        }
        rec.update(recorder)
        cfg = {
            "data_dir": str(tmp / "data"),
            "storage": {"flush_interval": "200ms"},
            "recorder": rec,
            "symbols": {"refresh": 0},
            "upbit": {"enabled": False},
            "metrics": {"enabled": False},
            "logging": {"level": "INFO"},
            "streams": {s: {"ws_url": sim.ws_url, "rest_url": sim.rest_url} for s, sim in self.sims.items()},
        }
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def subscribed(self, stream: str, exclude: Iterable[str] = ()) -> bool:
        """True when the connections of `stream` (but those in `exclude`, server-side ids) are
        subscribed to every instrument."""
        wanted = {i.symbol for i in self.instruments[stream]}
        skip = set(exclude)
        got: set[str] = set()
        for session in self.sims[stream].sessions():
            if session.conn_id not in skip:
                got |= session.subscribed
        return wanted <= got

    def session_ids(self) -> dict[str, set[str]]:
        """Server-side ids of the open connections, per stream."""
        return {s: {x.conn_id for x in sim.sessions()} for s, sim in self.sims.items()}

    async def wait_subscribed(
        self,
        streams: Iterable[str] | None = None,
        timeout_s: float = WAIT_S,
        exclude: dict[str, set[str]] | None = None,
    ) -> None:
        """Wait until the exchanges see every instrument subscribed (on connections other than
        `exclude[stream]`: after a drop, the dropped ones linger until the server notices)."""
        chosen = list(streams if streams is not None else self.streams)
        skip = exclude or {}

        def missing() -> list[str]:
            return [s for s in chosen if not self.subscribed(s, skip.get(s, ()))]

        await poll(lambda: not missing(), timeout_s, lambda: f"not subscribed: {missing()}")

    def publish(self, per_stream: int, streams: Iterable[str] | None = None) -> None:
        """Publish `per_stream` new trades on each stream: unique id and a distinct millisecond."""
        for s in streams if streams is not None else self.streams:
            rows: list[TradeRow] = []
            insts = self.instruments[s]
            for k in range(per_stream):
                inst = insts[k % len(insts)]
                n = next(self._ids.setdefault((s, inst.symbol), itertools.count(1)))
                self._t_ms[s] = t_ms = max(self._t_ms[s] + 1, now_us() // US_PER_MS)
                qty = inst.multiplier * (1 + n % 7) if inst.multiplier != 1.0 else 0.01 * (1 + n % 7)
                price = 1.5 + (n % 100) * 0.01
                side = "buy" if n % 2 else "sell"
                t_us = t_ms * US_PER_MS
                rows.append((t_us, t_us, inst.symbol, inst.base, inst.quote, price, qty, side, str(n)))
            self.sims[s].publish(rows)

    async def trade_for(self, seconds: float, per_tick: int = 5, tick_s: float = 0.05) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.publish(per_tick)
            await asyncio.sleep(tick_s)

    def sent(self, stream: str) -> list[TradeRow]:
        """Every trade written to a connection of `stream` while it was subscribed."""
        return self.sims[stream].sent_rows()


def trade_key(stream: str, row: dict[str, Any] | TradeRow) -> tuple[Any, ...]:
    """Identity of one trade on disk or as sent (Phemex carries no id: time and symbol then)."""
    if isinstance(row, dict):
        t = row["time"]
        t_ms = int(t.timestamp() * MS_PER_S) if hasattr(t, "timestamp") else int(t) // US_PER_MS
        symbol, tid = row["symbol"], row["trade_id"]
    else:
        t_ms, symbol, tid = row[0] // US_PER_MS, row[2], row[8]
    if split_stream(stream)[0] == "phemex":
        return (symbol, t_ms)
    return (symbol, tid)


def disk_rows(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    """Every row in the stream's segment files, sealed or still open."""
    rows: list[dict[str, Any]] = []
    for seg in list_segments(data_dir, [stream]):
        for batch in read_segment(seg, -(2**62), 2**62):
            rows += batch.to_pylist()
    return rows


async def wait_on_disk(market: Market, data_dir: Path, timeout_s: float = WAIT_S) -> None:
    """Wait until every trade sent so far is readable from disk (flushed) on every stream."""
    deadline = time.monotonic() + timeout_s
    for stream in market.streams:
        sent = {trade_key(stream, r) for r in market.sent(stream)}
        while True:
            have = {trade_key(stream, r) for r in disk_rows(data_dir, stream)}
            if sent <= have:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{stream}: {len(sent - have)} sent trades not on disk after {timeout_s} s"
                )
            await asyncio.sleep(0.1)


def open_segments(data_dir: Path) -> list[Path]:
    return [s.path for s in list_segments(data_dir) if not s.sealed]


def check_exactly_once(market: Market, data_dir: Path, stream: str) -> tuple[int, int]:
    """Every trade sent while subscribed is on disk exactly once and nothing is duplicated.

    Returns (sent, on disk). Phemex's history replay may add trades published before a
    subscription: they count as on disk but not as sent."""
    on_disk = Counter(trade_key(stream, r) for r in disk_rows(data_dir, stream))
    dupes = {k: n for k, n in on_disk.items() if n > 1}
    assert not dupes, f"{stream}: duplicated on disk: {list(dupes.items())[:5]}"
    sent = {trade_key(stream, r) for r in market.sent(stream)}
    missing = sent - on_disk.keys()
    assert not missing, (
        f"{stream}: {len(missing)} of {len(sent)} sent trades missing, e.g. {sorted(missing)[:5]}"
    )
    return len(sent), sum(on_disk.values())


class Recorder:
    """`pumpwatch record` as a real subprocess in its own process group."""

    def __init__(self, config: Path, tmp: Path, extra: Sequence[str] = ()) -> None:
        self.config = config
        self.log = (tmp / "record.out").open("ab")
        self.proc: asyncio.subprocess.Process | None = None
        self.extra = list(extra)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pumpwatch",
            "record",
            "--config",
            str(self.config),
            *self.extra,
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )

    async def start_listening(self, market: Market, data_dir: Path, streams: Iterable[str]) -> None:
        """Start, then wait until the local exchanges see every subscription and the journal
        says each stream listens (a test window must not begin before that)."""
        await self.start()
        await market.wait_subscribed()
        await wait_listening(data_dir, streams)

    async def terminate(self, timeout_s: float = WAIT_S) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout_s)

    async def kill_group(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
