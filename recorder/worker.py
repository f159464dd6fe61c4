"""One recorder worker process: a group of streams, from WebSocket to disk.

Started by the supervisor (``recorder/supervisor.py``) as::

    python -m pumpwatch.recorder.worker --exchange binance --streams binance_spot,binance_futures \\
        [--config FILE] [--data-dir DIR]
    python -m pumpwatch.recorder.worker --name all --streams binance_spot,...,phemex_futures

``recorder.workers`` says how many processes carry the streams: one (the default, the smallest
footprint), or up to one per exchange, so one exchange's crash, leak or CPU spike cannot touch
another's recording. SIGHUP re-reads the subscription list now (the supervisor sends it after a
refresh that changed the file). Per stream the worker: salvages what a crash left (``recover``), opens a
`SegmentWriter`, a `FrameWriter` (when ``frames.enabled``) and an `EventJournal` (``start``),
runs a `StreamRunner`, journals ``alive`` every ``recorder.heartbeat``, re-reads the symbols
file every ``recorder.symbols_reload`` and logs one status line per stream every
``recorder.status_interval``. One `LiveRepair` per worker (``recorder/history/live.py``) fetches
from REST history every span a runner reports missing: the downtime before this worker started
(since the stream's last journal line), each reconnect gap and each hole in contiguous trade
ids. SIGTERM/SIGINT: stop the runners (all at once, under one deadline), flush and seal the
writers, journal ``stop``, exit 0. A segment writer that stopped for good (a bug) makes the
worker stop and exit 1 (the supervisor journals the death and restarts it); its heartbeats
stop vouching for a crash bound meanwhile.

A per-stream ``flock`` under ``<data_dir>/run/`` makes sure two workers never record the same
stream (an orphan of a killed supervisor would otherwise write next to its replacement), and
the worker exits when its parent dies.

Exit status: 0 after a clean stop; 1 when a segment writer stopped with an error or did not
close cleanly (then no ``stop`` is journaled: the next run journals ``crashed`` with the bound
of what is on disk); 3 (`StoreError.exit_code`) when a writer dropped rows (the disk refused
them, or it had stopped; journaled as ``dropped`` spans); `EXIT_FATAL` (one error line
on stderr) for a fault that a restart cannot fix: bad settings or subscription list, a stream
still locked by another recorder after `LOCK_WAIT_S`. The supervisor restarts the worker after any other exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.errors import EXIT_FATAL, ConfigError, PumpWatchError, StoreError, StreamBusyError, UsageError
from pumpwatch.settings import Settings, load_settings
from pumpwatch.streams import parse_streams, split_stream
from pumpwatch.timeunits import US_PER_MS, US_PER_S

if TYPE_CHECKING:
    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.recorder.history.live import LiveRepair, RepairStats
    from pumpwatch.recorder.stream.continuity import Missing

log = logging.getLogger("pumpwatch.recorder.worker")  # not "__main__" when run with -m

LOCK_WAIT_S = 15.0  # how long a new worker waits for a dying predecessor to release a stream
STOP_TIMEOUT_S = 10.0  # per runner, before its task is cancelled
PRIME_WINDOW_S = 120.0  # trades already on disk this recent are taught to the de-duplicator
JOURNAL_TAIL_BYTES = 65536  # enough for the last lines of a journal (its last sign of life)
# At start, gaps this recent that no `repaired`/`unrepaired` event answers are repaired (a
# repair cut short by a kill or a stop); older ones are left to extraction-time repair.
RESCAN_LOOKBACK_S = 3600.0
METRICS_INTERVAL_S = 1.0  # how often a worker publishes its counters to the metrics directory


# Never loaded in a worker. pyarrow imports pandas on its own the first time `pa.array` sees a
# numpy array (its pandas shim checks for Series): +52 MB RSS per worker, measured, for nothing.
# httpx (live repair) imports its command-line client's click, rich and pygments when they are
# installed (they are, for the CLI): +5 MB RSS, measured; httpx reads their absence as "no CLI".
FORBIDDEN_IMPORTS = ("pandas", "matplotlib", "click", "rich", "pygments")


def forbid_heavy_imports(names: Sequence[str] = FORBIDDEN_IMPORTS) -> None:
    """Keep `names` out of this process (call before the first pyarrow conversion)."""
    from pumpwatch.importblock import keep_out

    keep_out(names, "in a recorder worker")


# The status side: one log line per stream per status interval, and the stream's cumulative
# counters journaled (``stats`` events) so `pumpwatch status` can show them from disk.


def _stat(stats: Any, name: str, default: Any = 0) -> Any:
    """A runner statistic by name (a mapping or attributes), `default` when absent."""
    if isinstance(stats, Mapping):
        return stats.get(name, default)
    return getattr(stats, name, default)


class StatusTracker:
    """Builds the periodic status line of one stream and warns while the writer queue grows."""

    def __init__(self, stream: str, *, queue_warn_rows: int) -> None:
        self.stream = stream
        self.queue_warn_rows = queue_warn_rows
        self._last = (time.time_ns() // 1000, 0)  # (now_us, trades) at the previous line
        self._last_queue = 0
        self._growing = 0

    def line(self, stats: Any, queue_rows: int, now_us: int) -> str:
        """One status line; logs a warning when the queue is past the mark or kept growing."""
        trades = int(_stat(stats, "trades"))
        rate = 0.0
        if now_us > self._last[0]:
            rate = (trades - self._last[1]) * US_PER_S / (now_us - self._last[0])
        self._last = (now_us, trades)
        last_recv_us = _stat(stats, "last_trade_recv_us", None)
        age = f"{(now_us - last_recv_us) / US_PER_S:.1f} s ago" if last_recv_us else "never"
        lag_us = _stat(stats, "lag_us", None)
        lag = f"{lag_us / US_PER_MS:.1f} ms" if isinstance(lag_us, int | float) else "n/a"
        self._growing = self._growing + 1 if queue_rows > self._last_queue > 0 else 0
        self._last_queue = queue_rows
        # Growth alone is noise (a queue of a second's trades goes up and down); growth of a
        # queue already a tenth of the warning mark is a disk falling behind.
        growing = self._growing >= 3 and queue_rows >= self.queue_warn_rows // 10
        if queue_rows >= self.queue_warn_rows or growing:
            log.warning(
                "%s: writer queue at %d rows and %s (the disk is not keeping up; nothing is dropped)",
                self.stream,
                queue_rows,
                f"growing for {self._growing} intervals" if growing else "over the warning mark",
            )
        return (
            f"{self.stream}: {rate:.1f} trades/s, lag {lag}, reconnects {_stat(stats, 'reconnects')}, "
            f"parse errors {_stat(stats, 'parse_errors')}, last trade {age}, "
            f"writer queue {queue_rows} rows, connections {_stat(stats, 'connected')}"
        )


def journal_stats(journal: Any, stats: Any, repair: Any = None) -> None:
    """Journal a stream's counters, cumulative since this worker started (an `EventJournal`);
    with `repair` (`RepairStats`) the live repair's too."""
    extra: dict[str, int] = {}
    if repair is not None:
        extra = {
            "id_holes": int(_stat(stats, "id_holes")),
            "repairs": repair.repairs,
            "repaired_trades": repair.trades,
            "repair_calls": repair.calls,
            "repair_rate_limited": repair.rate_limited,
            "repair_queue": repair.queued,
        }
    journal.record(
        "stats",
        frames=int(_stat(stats, "frames")),
        trades=int(_stat(stats, "trades")),
        parse_errors=int(_stat(stats, "parse_errors")),
        reconnects=int(_stat(stats, "reconnects")),
        duplicates=int(_stat(stats, "duplicates")),
        **extra,
    )


def unanswered_gaps(
    events: Sequence[dict[str, Any]],
    instruments: Mapping[str, Instrument],
    *,
    now_us: int,
    lookback_us: int,
    heartbeat_s: float,
) -> list[Missing]:
    """The spans of each symbol the journal shows missing (not listening, or an ``id_gap``)
    within `lookback_us` before the journal's last line that no ``repaired``/``unrepaired``
    event answers: repairs a previous process never finished. Pure (events already read)."""
    from pumpwatch.recorder.stream.continuity import Missing
    from pumpwatch.recorder.stream.runner import LOST_MARGIN_US
    from pumpwatch.segments.coverage import coverage_from_events

    first_listen = next((e["ts"] for e in events if e["event"] == "subscribed"), None)
    if first_listen is None or not events:
        return []
    end_us = max(e["ts"] for e in events)
    start_us = max(first_listen, end_us - lookback_us)
    if end_us <= start_us:
        return []
    answered: dict[str, list[tuple[int, int]]] = {}
    holes: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        kind = e["event"]
        if kind in ("repaired", "unrepaired") and isinstance(e.get("symbol"), str):
            answered.setdefault(e["symbol"], []).append((int(e["start_us"]), int(e["end_us"])))
        elif kind == "id_gap" and isinstance(e.get("symbol"), str) and e["ts"] >= start_us:
            holes.setdefault(e["symbol"], []).append(e)
    out: list[Missing] = []
    gaps_of_base: dict[str, list[tuple[int, int]]] = {}
    for symbol, inst in instruments.items():
        if inst.base not in gaps_of_base:
            cov = coverage_from_events(
                events, start_us, end_us, base=inst.base, heartbeat_s=heartbeat_s, now_us=now_us
            )
            gaps_of_base[inst.base] = cov.gaps
        done = answered.get(symbol, [])
        for lo, hi in gaps_of_base[inst.base]:
            for a, b in _subtract((lo - LOST_MARGIN_US, hi), done):
                out.append(Missing(symbol, a, b, "rescan"))
        for e in holes.get(symbol, []):
            if _subtract((int(e["after_us"]), int(e["before_us"])), done):
                out.append(
                    Missing(
                        symbol,
                        int(e["after_us"]),
                        int(e["before_us"]),
                        "rescan",
                        int(e["first_missing"]),
                        int(e["last_missing"]),
                    )
                )
    return out


def _subtract(span: tuple[int, int], done: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `span` (inclusive µs) outside every span of `done`."""
    parts = [span]
    for d_lo, d_hi in done:
        nxt = []
        for a, b in parts:
            if d_hi < a or d_lo > b:
                nxt.append((a, b))
                continue
            if a < d_lo:
                nxt.append((a, d_lo - 1))
            if d_hi < b:
                nxt.append((d_hi + 1, b))
        parts = nxt
    return parts


def last_sign_of_life_us(data_dir: str, stream: str) -> int | None:
    """The time of the last line of the stream's journal (a heartbeat, a stop…): the recorder
    listened until about then. None when there is no journal (nothing was ever recorded)."""
    from pumpwatch.segments.journal import journal_path, parse_journal

    path = journal_path(data_dir, stream)
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - JOURNAL_TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return None
    if size > JOURNAL_TAIL_BYTES:
        tail = tail.split(b"\n", 1)[-1]  # the first line is cut
    events, _ = parse_journal(tail)
    return max((e["ts"] for e in events), default=None)


def newest_durable_us(data_dir: str, stream: str) -> int | None:
    """The newest trade of `stream` on disk as the bound of what a crashed run kept: the smaller
    of the largest receive time and the largest exchange time in its newest live segment file
    (from batch metadata, no decompression). A trade received later was lost, and its exchange
    time is later than that too (the feed sends in order) whichever way the clocks are skewed.
    None when no live segment holds a trade."""
    import pyarrow as pa

    from pumpwatch.segments.ipcscan import scan_segment
    from pumpwatch.segments.paths import list_segments
    from pumpwatch.segments.schema import BATCH_RECV_MAX, BATCH_TIME_MAX

    live = [seg for seg in list_segments(data_dir, [stream]) if not seg.repair]
    for seg in reversed(live[-2:]):  # a file opened just before the crash may hold no batch yet
        try:
            with pa.memory_map(str(seg.path)) as mm:
                scan = scan_segment(mm.read_buffer())
        except OSError:
            continue
        recvs, times = [], []
        for chunk in scan.batches:
            with contextlib.suppress(KeyError, ValueError):
                recvs.append(int(chunk.meta[BATCH_RECV_MAX]))
                times.append(int(chunk.meta[BATCH_TIME_MAX]))
        if recvs and times:
            return min(max(recvs), max(times))
    return None


def crash_bound(data_dir: str, stream: str) -> tuple[int, int | None] | None:
    """When the stream's previous run ended without ``stop`` (killed, crashed): the time up to
    which everything it received is on disk, and its pid. That is the later of the newest trade
    on disk (`newest_durable_us`) and its last heartbeat that found the writer's queue empty
    (``alive`` with ``durable_us``: a quiet stream has no recent trade to show). None after a
    clean stop or with no journal. Reads the journal's tail only; call after ``recover``."""
    from pumpwatch.segments.journal import journal_path, parse_journal

    try:
        with journal_path(data_dir, stream).open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - JOURNAL_TAIL_BYTES))
            tail = f.read()
    except FileNotFoundError:
        return None
    if size > JOURNAL_TAIL_BYTES:
        tail = tail.split(b"\n", 1)[-1]
    events, _ = parse_journal(tail)
    runs = [e for e in events if e["event"] in ("start", "stop", "crashed")]
    if not events or (runs and runs[-1]["event"] != "start"):
        return None
    pid = runs[-1].get("pid") if runs else None
    heartbeat = max(
        (e["durable_us"] for e in events if e["event"] == "alive" and isinstance(e.get("durable_us"), int)),
        default=None,
    )
    on_disk = newest_durable_us(data_dir, stream)
    marks = [t for t in (heartbeat, on_disk) if t is not None]
    bound = max(marks) if marks else min(e["ts"] for e in events)
    return bound, pid if isinstance(pid, int) else None


class StreamPipeline:
    """Runner, writers and journal of one stream."""

    def __init__(
        self,
        settings: Settings,
        stream: str,
        instruments: Mapping[str, Instrument],
        repairer: LiveRepair | None = None,
        on_flush: Callable[[], object] | None = None,
    ) -> None:
        from pumpwatch.recorder.history.live import store_writer
        from pumpwatch.recorder.history.specs import history_spec
        from pumpwatch.recorder.preflight import build_adapter
        from pumpwatch.recorder.stream.runner import StreamRunner
        from pumpwatch.segments.frames import FrameWriter
        from pumpwatch.segments.journal import EventJournal
        from pumpwatch.segments.writer import SegmentWriter

        st = settings.storage
        cfg = settings.streams[stream]
        self.stream = stream
        self.instruments: dict[str, Instrument] = dict(instruments)
        self.writer = SegmentWriter(
            settings.data_dir,
            stream,
            flush_interval_s=st.flush_interval_s,
            flush_rows=st.flush_rows,
            compression_level=st.compression_level,
            queue_warn_rows=st.queue_warn_rows,
            on_flush=on_flush,  # the free-disk floor, checked after every flush
        )
        self.frames: Any = None
        if settings.frames.enabled:
            self.frames = FrameWriter(
                settings.data_dir,
                stream,
                compression_level=settings.frames.compression_level,
                flush_interval_s=st.flush_interval_s,
            )
        self.journal = EventJournal(settings.data_dir, stream)
        # Trade ids are checked where the stream's history says they count up per symbol.
        spec = history_spec(stream, cfg.rest_url, cfg.options)
        on_missing = functools.partial(repairer.submit, stream) if repairer is not None else None
        adapter = build_adapter(stream, cfg.options)
        self.runner = StreamRunner(
            adapter,
            ws_url=cfg.ws_url,
            rest_url=cfg.rest_url,
            instruments=self.instruments,
            on_trades=self.writer.append,
            on_frame=self.frames.append if self.frames is not None else None,
            journal=self.journal,
            backoff_initial_s=settings.recorder.backoff_initial_s,
            backoff_max_s=settings.recorder.backoff_max_s,
            redundancy=settings.recorder.redundancy,
            redundant_ws_url=getattr(adapter, "redundant_ws_url", None),
            contiguous_ids=spec is not None and spec.ids_contiguous,
            id_grace_s=settings.repair.id_grace_s,
            on_missing=on_missing,
            not_listening_since_us=last_sign_of_life_us(settings.data_dir, stream),
        )
        self.status = StatusTracker(stream, queue_warn_rows=st.queue_warn_rows)
        self.repair_stats: RepairStats | None = None
        if repairer is not None:  # spans name any instrument the runner ever had
            write = store_writer(settings.data_dir, stream, self.writer)
            known = self.runner.known_instruments
            self.repair_stats = repairer.add_stream(
                stream, spec, known, write, self.journal, admit=self.runner.dedupe.filter
            )

    def prime_dedupe(self, data_dir: str, *, window_s: float = PRIME_WINDOW_S) -> int:
        """Teach the runner's de-duplicator the trades already on disk from the last `window_s`.

        A restarted worker would otherwise record twice what an exchange replays after each
        subscribe (Phemex sends its recent trades) and what the previous process already stored.
        Returns the number of rows read.
        """
        from pumpwatch.segments.paths import list_segments
        from pumpwatch.segments.reader import read_segment

        since_us = time.time_ns() // 1000 - int(window_s * US_PER_S)
        taught = 0
        # Batch by batch, in file order (= receive order): only one batch is ever held as Python
        # rows (all of them at once was ~100 MB per stream at 2 k trades/s), and `remember`
        # counts occurrences across batches as if they were one.
        live = [seg for seg in list_segments(data_dir, [self.stream]) if not seg.repair]
        for seg in live[-2:]:  # the newest live files hold the last minutes
            if seg.hour_end_us < since_us:
                continue
            for batch in read_segment(seg, since_us, 2**62):
                cols = [batch.column(i) for i in range(batch.num_columns)]
                times = cols[0].cast("int64").to_pylist()
                recvs = cols[1].cast("int64").to_pylist()
                rest = [c.to_pylist() for c in cols[2:9]]  # the TradeRow fields, not `source`
                rows = list(zip(times, recvs, *rest, strict=True))
                rows.sort(key=lambda r: r[1])
                self.runner.dedupe.remember(rows)
                ids = self.runner.ids
                # Continuity starts from the newest stored id per symbol, where the stored id is
                # the one checked (not for a `sequenced` adapter: Gate spot stores its
                # exchange-wide `id` and checks `id_market`; its start is settled by time).
                if ids is not None and not self.runner.adapter.sequenced:
                    newest: dict[str, tuple[int, int]] = {}
                    for row in rows:
                        tid = row[8]
                        if tid is not None and tid.isdigit():
                            n = int(tid)
                            if n > newest.get(row[2], (-1, 0))[0]:
                                newest[row[2]] = (n, row[0])
                    for symbol, (n, t_us) in newest.items():
                        last = ids.last(symbol)
                        if last is None or n > last[0]:
                            ids.forget(symbol)
                            ids.prime(symbol, n, t_us)
                taught += len(rows)
        return taught

    def update_instruments(self, instruments: Mapping[str, Instrument]) -> None:
        """Apply a changed subscription list live (adds and drops only)."""
        new = dict(instruments)
        if new == self.instruments:
            return
        added = len(new.keys() - self.instruments.keys())
        dropped = len(self.instruments.keys() - new.keys())
        log.info("%s: subscription list changed: +%d -%d symbols", self.stream, added, dropped)
        self.instruments = new
        self.runner.update_instruments(new)

    def close(self) -> bool:
        """Flush and seal every file; journal the clean stop. Errors are logged, not raised;
        False when a writer did not close cleanly (missed its deadline, or had stopped with an
        error): then no ``stop`` is journaled, so the next run journals ``crashed`` with the
        bound of what is on disk, and the worker's exit code reports the failure."""
        clean = True
        for what, closer in (
            ("segments", self.writer.close),
            ("frames", getattr(self.frames, "close", None)),
        ):
            if closer is None:
                continue
            try:
                closer()
            except StoreError as exc:  # its own one line: no traceback
                log.error("%s: closing the %s writer failed: %s", self.stream, what, exc)
                clean = False
            except Exception:
                log.exception("%s: closing the %s writer failed", self.stream, what)
                clean = False
        if clean:
            with contextlib.suppress(Exception):
                self.journal.stop()
        with contextlib.suppress(Exception):
            self.journal.close()
        return clean


def _lock_streams(data_dir: str, streams: Sequence[str]) -> list[int]:
    """Exclusive per-stream locks; waits up to LOCK_WAIT_S for a predecessor to let go."""
    run_dir = Path(data_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fds: list[int] = []
    deadline = time.monotonic() + LOCK_WAIT_S
    for stream in streams:
        split_stream(stream)  # a validated id only reaches a path
        fd = os.open(run_dir / f"{stream}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                    os.close(fd)
                    for held in fds:
                        os.close(held)
                    raise TimeoutError(
                        f"{stream} is still being recorded by another process (pid {holder})"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        fds.append(fd)
    return fds


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us when the supervisor dies (best effort; polled as well)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("prctl(PR_SET_PDEATHSIG) unavailable")


async def _every(interval_s: float, stop: asyncio.Event) -> bool:
    """Sleep `interval_s` unless stopped; True to keep going."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=interval_s)
    return not stop.is_set()


def heartbeat_durable_us(writer: Any, now_us: int) -> int | None:
    """The crash bound a heartbeat vouches for: with the writer's queue empty, every trade
    received so far is on disk, and one received later has an exchange time after ``now``
    minus the stream's recent largest feed lag (windows are cut by exchange time). None while
    rows wait, or when the writer stopped (`failed`: nothing it is given reaches the disk)."""
    if writer.failed is not None or writer.queue_rows != 0:
        return None
    return now_us - max(0, int(writer.recent_max_lag_us))


async def _heartbeat(pipes: Sequence[StreamPipeline], interval_s: float, stop: asyncio.Event) -> None:
    while await _every(interval_s, stop):
        for p in pipes:
            try:
                p.journal.alive(durable_us=heartbeat_durable_us(p.writer, time.time_ns() // 1000))
            except OSError as exc:
                log.error("%s: journal heartbeat failed: %s", p.stream, exc)


WRITER_WATCH_S = 1.0  # how often the worker checks that no segment writer stopped


async def _watch_writers(pipes: Sequence[StreamPipeline], stop: asyncio.Event, failed: list[str]) -> None:
    """A segment writer that stopped for good (a bug: `SegmentWriter.failed`) drops every trade:
    stop the worker (non-zero exit) so the supervisor journals the death and restarts it."""
    while await _every(WRITER_WATCH_S, stop):
        dead = [p.stream for p in pipes if p.writer.failed is not None]
        if dead:
            log.error("segment writer of %s stopped; stopping the worker for a restart", ", ".join(dead))
            failed.extend(dead)
            stop.set()


async def _watch_parent(parent_pid: int, stop: asyncio.Event) -> None:
    while await _every(1.0, stop):
        if os.getppid() != parent_pid:
            log.warning("supervisor (pid %d) is gone; stopping", parent_pid)
            stop.set()


async def _every_or_now(interval_s: float, stop: asyncio.Event, now: asyncio.Event | None) -> bool:
    """Like `_every`, but `now` (set by SIGHUP) ends the wait early; True to keep going."""
    if now is None:
        return await _every(interval_s, stop)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(now.wait())]
    await asyncio.wait(waits, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
    for w in waits:
        w.cancel()
    now.clear()
    return not stop.is_set()


async def _reload_symbols(
    pipes: Sequence[StreamPipeline],
    path: Path,
    interval_s: float,
    stop: asyncio.Event,
    now: asyncio.Event | None = None,
    loaded_mtime_ns: int | None = None,
) -> None:
    """Re-read the subscription list when it changed: checked every `interval_s`, and at once
    when `now` is set (the supervisor's SIGHUP after a refresh that changed the file).
    `loaded_mtime_ns`: the file's mtime when the pipelines' lists were read (a change written
    while the worker was still starting is then picked up, not taken as the baseline)."""
    from pumpwatch.recorder.symbols import load_symbols

    last_mtime_ns = loaded_mtime_ns if loaded_mtime_ns is not None else _mtime_ns(path)
    while await _every_or_now(interval_s, stop, now):
        try:
            mtime_ns = path.stat().st_mtime_ns
            if mtime_ns == last_mtime_ns:
                continue
            table = await asyncio.to_thread(load_symbols, path)
        except (OSError, ConfigError) as exc:
            log.warning("symbols file not reloaded, keeping the current lists: %s", exc)
            continue
        last_mtime_ns = mtime_ns
        for p in pipes:
            if p.stream not in table:
                # Absent (its fetch failed with no previous list to keep): never an empty list
                # that would unsubscribe everything; the stream keeps what it records.
                kept = len(p.instruments)
                log.warning("%s: absent from %s; keeping its current %d instruments", p.stream, path, kept)
                continue
            p.update_instruments(table[p.stream])


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


async def _status(pipes: Sequence[StreamPipeline], interval_s: float, stop: asyncio.Event) -> None:
    while await _every(interval_s, stop):
        for p in pipes:
            try:
                stats = p.runner.stats
                line = p.status.line(stats, p.writer.queue_rows, time.time_ns() // 1000)
                rs = p.repair_stats
                if rs is not None:
                    line += (
                        f", id holes {stats.id_holes}, repairs {rs.repairs} ({rs.trades} trades, "
                        f"{rs.calls} calls, {rs.rate_limited} rate-limited), repair queue {rs.queued}"
                    )
                log.info("%s", line)
                journal_stats(p.journal, stats, rs)
            except Exception:  # a status line must never take the worker down
                log.exception("%s: status line failed", p.stream)


async def _metrics(pipes: Sequence[StreamPipeline], stop: asyncio.Event) -> None:
    """Publish every stream's counters once a second (only under a supervisor with metrics on)."""
    from pumpwatch.recorder.metrics import StreamMetrics, enabled_in_this_process

    if not enabled_in_this_process():
        return
    published = StreamMetrics()
    while await _every(METRICS_INTERVAL_S, stop):
        for p in pipes:
            try:
                published.update(
                    p.stream, p.runner.stats, p.writer, has_symbols=bool(p.instruments), repair=p.repair_stats
                )
            except Exception:  # metrics must never take the worker down
                log.exception("%s: metrics update failed", p.stream)


async def run_worker(settings: Settings, streams: Sequence[str], stop: asyncio.Event | None = None) -> int:
    """Record `streams` (all of one exchange) until `stop` is set or SIGTERM/SIGINT; the exit code."""
    from pumpwatch.recorder.symbols import load_symbols
    from pumpwatch.segments.recovery import recover

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    reload_now = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload_now.set)
    # The supervisor starts us with SIGHUP blocked (one sent before the handler existed would
    # have killed us); pending now, it is delivered to the handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        locks = await asyncio.to_thread(_lock_streams, settings.data_dir, streams)
    except TimeoutError as exc:
        raise StreamBusyError(f"{exc}; is another `pumpwatch record` using {settings.data_dir}?") from None
    from pumpwatch.recorder.history.live import LiveRepair
    from pumpwatch.recorder.pending_windows import pending_windows_of
    from pumpwatch.segments.diskwatch import start_disk_watch
    from pumpwatch.segments.remote import remote_settings

    ex = settings.extract
    watch = start_disk_watch(
        settings.data_dir,
        settings.storage.min_free_disk_mb,
        pending_windows_of(settings.data_dir, ex.before_s, ex.after_s),
        remote=remote_settings(settings),
    )
    pipes: list[StreamPipeline] = []
    repairer = LiveRepair(enabled=settings.repair.live)
    try:
        symbols_file = Path(settings.recorder.symbols_file)
        # Absent: the supervisor's fetch failed; record nothing until a reload finds the file.
        loaded_mtime_ns = _mtime_ns(symbols_file)  # before reading: a later change is reloaded
        table = load_symbols(symbols_file) if symbols_file.exists() else {}
        await asyncio.to_thread(recover, settings.data_dir, list(streams))
        for stream in streams:
            instruments = table.get(stream, {})
            if not instruments:
                log.warning("%s: no instruments in %s; waiting for a reload", stream, symbols_file)
            pipe = StreamPipeline(settings, stream, instruments, repairer, on_flush=watch.check)
            pipes.append(pipe)
            primed = await asyncio.to_thread(pipe.prime_dedupe, settings.data_dir)
            if primed:
                log.info("%s: de-duplicator primed with %d recent trades from disk", stream, primed)
            await _rescan(settings, pipe, repairer)
            bound = await asyncio.to_thread(crash_bound, settings.data_dir, stream)
            if bound is not None:
                pipe.journal.crashed(*bound)
                log.info("%s: the previous run ended without a stop; on disk up to %d", stream, bound[0])
            pipe.journal.start()
        log.info("recording %s (%d instruments)", ", ".join(streams), sum(len(p.instruments) for p in pipes))
        rc = await _run(settings, pipes, stop, repairer, reload_now, loaded_mtime_ns)
    finally:
        for pipe in pipes:
            pipe.writer.start_close()  # every writer's bounded wait for the disk runs at once
        unclean = [pipe.stream for pipe in pipes if not pipe.close()]
        watch.stop()
        for fd in locks:
            os.close(fd)
    lost = {p.stream: p.writer.rows_lost for p in pipes if p.writer.rows_lost}
    if unclean:  # a writer that failed, or missed its close deadline: not sealed cleanly
        log.error("stopped %s; segment writers of %s did not close cleanly", ", ".join(streams), unclean)
        rc = rc or 1
    if lost:  # journaled as `dropped` spans; the exit code says so too
        log.error("stopped %s; rows lost (journaled as dropped): %s", ", ".join(streams), lost)
        return rc or StoreError.exit_code
    if not rc:
        log.info("stopped %s; segments sealed", ", ".join(streams))
    return rc


async def _rescan(settings: Settings, pipe: StreamPipeline, repairer: LiveRepair) -> None:
    """Queue the recent gaps of the stream's journal that no repair answered (before `start`)."""
    from pumpwatch.segments.journal import read_events

    try:
        events = await asyncio.to_thread(read_events, settings.data_dir, pipe.stream)
        spans = unanswered_gaps(
            events,
            pipe.instruments,
            now_us=time.time_ns() // 1000,
            lookback_us=int(RESCAN_LOOKBACK_S * US_PER_S),
            heartbeat_s=settings.recorder.heartbeat_s,
        )
    except Exception:  # a journal that cannot be read must not stop the recording
        log.exception("%s: journal rescan for unrepaired gaps failed", pipe.stream)
        return
    if spans:
        log.info("%s: %d earlier gaps were never repaired; queued", pipe.stream, len(spans))
    for span in spans:
        repairer.submit(pipe.stream, span)


async def _run(
    settings: Settings,
    pipes: Sequence[StreamPipeline],
    stop: asyncio.Event,
    repairer: LiveRepair,
    reload_now: asyncio.Event | None = None,
    loaded_mtime_ns: int | None = None,
) -> int:
    rec = settings.recorder
    runner_tasks = {asyncio.create_task(p.runner.run(), name=f"runner-{p.stream}"): p for p in pipes}
    writers_failed: list[str] = []
    helpers = [
        asyncio.create_task(_watch_writers(pipes, stop, writers_failed)),
        asyncio.create_task(repairer.run(stop), name="live repair"),
        asyncio.create_task(_heartbeat(pipes, rec.heartbeat_s, stop)),
        asyncio.create_task(
            _reload_symbols(
                pipes, Path(rec.symbols_file), rec.symbols_reload_s, stop, reload_now, loaded_mtime_ns
            )
        ),
        asyncio.create_task(_status(pipes, rec.status_interval_s, stop)),
        asyncio.create_task(_metrics(pipes, stop)),
        asyncio.create_task(_watch_parent(os.getppid(), stop)),
    ]
    stop_wait = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stop_wait, *runner_tasks], return_when=asyncio.FIRST_COMPLETED)
    rc = 0
    for task in done:
        if task in runner_tasks:
            # A runner only returns when stopped; ending on its own is a bug worth a restart.
            exc = task.exception()
            log.error("%s: runner ended unexpectedly: %r", runner_tasks[task].stream, exc)
            rc = 1
    stop.set()
    if writers_failed:
        rc = rc or 1
    # every runner stops at once, under one deadline (one after another, a worker of many
    # streams could outlast the supervisor's SIGKILL)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    await asyncio.gather(
        *(_stop_runner(task, pipe, deadline) for task, pipe in runner_tasks.items() if not task.done())
    )
    for task in helpers:
        task.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    stop_wait.cancel()
    return rc


async def _stop_runner(task: asyncio.Task[Any], pipe: StreamPipeline, deadline: float) -> None:
    try:
        await asyncio.wait_for(pipe.runner.stop(), timeout=max(0.1, deadline - time.monotonic()))
        await asyncio.wait_for(task, timeout=max(0.1, deadline - time.monotonic()))
    except (TimeoutError, Exception) as exc:
        log.warning("%s: runner did not stop cleanly (%r); cancelling", pipe.stream, exc)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pumpwatch.recorder.worker``."""
    from pumpwatch.logsetup import setup_logging

    parser = argparse.ArgumentParser(prog="pumpwatch-worker", description="Record a group of streams.")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--exchange", help="one exchange: every stream must be one of its own")
    who.add_argument("--name", help="a group of exchanges (recorder.workers), named in the logs")
    parser.add_argument("--streams", required=True, help="comma list of stream ids")
    parser.add_argument("--config", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    forbid_heavy_imports()
    try:
        settings = load_settings(args.config, args.data_dir)
        setup_logging(settings, f"worker-{args.exchange or args.name}")
        streams = parse_streams(args.streams)
        foreign = [s for s in streams if args.exchange and split_stream(s)[0] != args.exchange]
        if foreign:
            raise UsageError(f"streams {', '.join(foreign)} do not belong to exchange {args.exchange}")
        _die_with_parent()
        return asyncio.run(run_worker(settings, streams))
    except StoreError as exc:  # a full or failing disk may recover: the supervisor restarts us
        sys.stderr.write(f"pumpwatch worker: error: {exc}\n")
        return exc.exit_code
    except PumpWatchError as exc:
        sys.stderr.write(f"pumpwatch worker: error: {exc}\n")
        return EXIT_FATAL


if __name__ == "__main__":
    sys.exit(main())
