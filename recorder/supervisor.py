"""`pumpwatch record`: the always-on supervisor of one worker process per exchange.

The supervisor itself touches no exchange socket. It
- checks everything the workers will need first (``recorder/preflight.py``, run as a child from
  `main`): a bad setting, adapter option or subscription list stops `record` in one line;
- writes the subscription list first when it does not exist yet (``pumpwatch symbols``), and
  refreshes it every ``symbols.refresh`` (the workers pick the new file up on their reload);
- starts ``python -m pumpwatch.recorder.worker`` for each exchange with selected streams;
- restarts a worker that died, after a capped exponential backoff (``recorder.worker_restart_max``),
  and journals the death as ``gap_start`` with its ``exit_code`` for each of its streams
  (coverage ends the dead run at its last sign of life; the replacement's ``crashed`` and
  ``start`` follow); a worker that exits with `EXIT_FATAL` (a fault no
  restart can fix: its one error line is already on stderr) stops `record` with that status;
- prunes old segments and frames every `PRUNE_INTERVAL_S`;
- runs the nice'd housekeeping child (``recorder/housekeeping.py``): started when a sealed hour
  is not archived yet and gone when nothing is pending, resident when ``remote.url`` is set;
- runs the Upbit listing service when ``upbit.enabled``;
- on SIGTERM/SIGINT sends SIGTERM to every worker and waits for each to flush and seal; a
  worker still running after `WORKER_STOP_TIMEOUT_S` is killed, and a child then seals what it
  left and journals ``crashed`` with the bound of what is on disk (``recorder/killed.py``).
  Exits 0 when every worker stopped cleanly, 1 when one was killed or reported a failure.

One `record` per data directory: `main` takes ``<data_dir>/run/record.lock`` (`lock_data_dir`)
and a second one stops at start with one line naming the first one's pid, exit `EXIT_FATAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumpwatch.errors import EXIT_FATAL
from pumpwatch.recorder.housekeeping import keep_housekeeper
from pumpwatch.settings import Settings
from pumpwatch.streams import EXCHANGES, split_stream

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 600.0
HEALTHY_RUN_S = 60.0  # a worker that lived this long restarts after the initial delay again
WORKER_STOP_TIMEOUT_S = 30.0  # then SIGKILL
SERVICE_RESTART_S = 30.0  # pause before restarting a crashed listing service
# Arrow's default jemalloc pool and glibc's per-thread arenas each keep freed memory around;
# glibc's dynamic mmap threshold lets freed blocks of up to 32 MB (Arrow buffers, zstd
# contexts) stay in the heap. One arena, blocks over 64 KiB mapped and unmapped on their own,
# the heap trimmed above 64 KiB free: -19 MB RSS of the one worker of twelve streams at 1 000
# trades/s each, for ~2 points of one core (docs/recording.md, "Worker processes").
WORKER_ENV_DEFAULTS = {
    "ARROW_DEFAULT_MEMORY_POOL": "system",
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_TRIM_THRESHOLD_": "65536",
    "MALLOC_MMAP_THRESHOLD_": "65536",
}


@dataclass
class WorkerHandle:
    """One exchange's worker process and its restart history."""

    exchange: str
    streams: tuple[str, ...]
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    fatal: bool = False  # exited with EXIT_FATAL: not restarted, and `record` stops
    failed_stop: bool = False  # its last exit, when asked to stop, was not 0 (lost rows, killed)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def group_by_exchange(streams: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Streams grouped per exchange, in the canonical exchange order."""
    groups: dict[str, list[str]] = {}
    for stream in streams:
        groups.setdefault(split_stream(stream)[0], []).append(stream)
    return {ex: tuple(groups[ex]) for ex in EXCHANGES if ex in groups}


def group_streams(streams: Sequence[str], workers: int) -> dict[str, tuple[str, ...]]:
    """The streams of each worker process when `workers` processes carry them (``recorder.workers``;
    0 = one per exchange). An exchange's streams always share a process (they share its rate
    limits and its REST history budget); exchanges are dealt out largest first to the process with
    the fewest streams, so the load is as even as whole exchanges allow. A group is named after
    its exchange when it holds one, ``all`` when it holds every selected exchange, else its
    exchanges joined with ``-`` (the worker's log file is ``worker-<name>.log``)."""
    per_exchange = group_by_exchange(streams)
    if workers <= 0 or workers >= len(per_exchange):
        return per_exchange
    bins: list[list[str]] = [[] for _ in range(workers)]
    sizes = [0] * workers
    for ex in sorted(per_exchange, key=lambda e: (-len(per_exchange[e]), EXCHANGES.index(e))):
        i = min(range(workers), key=lambda k: (sizes[k], k))
        bins[i].append(ex)
        sizes[i] += len(per_exchange[ex])
    out: dict[str, tuple[str, ...]] = {}
    for exchanges in sorted((b for b in bins if b), key=lambda b: min(EXCHANGES.index(e) for e in b)):
        ordered = [e for e in EXCHANGES if e in exchanges]
        name = "all" if len(ordered) == len(per_exchange) else "-".join(ordered)
        out[name] = tuple(s for e in ordered for s in per_exchange[e])
    return out


def is_real_symbols_file(path: str | os.PathLike[str]) -> bool:
    """True when `path` exists and is not the shipped example (``example: true``), which `record`
    replaces first. Reads only the top-level keys, so the supervisor stays free of pyarrow."""
    p = Path(path)
    try:
        with p.open("rb") as fh:  # bytes: a damaged file is the preflight's to report, not ours
            head = [next(fh, b"") for _ in range(40)]
    except OSError:
        return False
    return not any(line.strip() == b"example: true" for line in head)


def symbols_command(
    config: str | os.PathLike[str] | None, data_dir: str, streams: Sequence[str], *, quiet: bool = False
) -> list[str]:
    """The argv of a `pumpwatch symbols` refresh run as a child process (`quiet`: the periodic
    runs, which print nothing but a change in the failing streams)."""
    cmd = [
        sys.executable,
        "-m",
        "pumpwatch",
        "symbols",
        "--data-dir",
        data_dir,
        "--streams",
        ",".join(streams),
    ]
    if quiet:
        cmd.append("--quiet")
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


async def refresh_symbols_child(
    settings: Settings,
    config: str | os.PathLike[str] | None,
    streams: Sequence[str],
    *,
    quiet: bool = False,
    last_rc: int | None = None,
) -> int:
    """Run the subscription-list refresh in a child process; its exit code.

    A child keeps the supervisor small: fetching imports the adapters (and with them pyarrow),
    which would otherwise stay resident in the always-on supervisor. A failing exit is logged
    when it differs from `last_rc` (the previous run's; None: always), so an exchange that stays
    down is one warning, not one a minute; the return to 0 is logged once too.
    """
    proc = await asyncio.create_subprocess_exec(
        *symbols_command(config, settings.data_dir, streams, quiet=quiet), stdin=asyncio.subprocess.DEVNULL
    )
    rc = await proc.wait()
    if rc != 0 and rc != last_rc:
        log.warning("symbols refresh exited with code %d; the previous list stays", rc)
    elif rc == 0 and last_rc not in (None, 0):
        log.info("symbols refresh succeeded again (was exiting with code %d)", last_rc)
    return rc


def worker_env() -> dict[str, str]:
    """The environment of a worker (and of the housekeeping child): ours, plus the allocator
    settings `WORKER_ENV_DEFAULTS`, measured with bench/bench_memory.py; a value already set by
    the user wins."""
    env = dict(os.environ)
    for key, value in WORKER_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def worker_command(
    name: str, streams: Sequence[str], *, config: str | os.PathLike[str] | None, data_dir: str
) -> list[str]:
    """The argv that starts one worker process (`name`: its group, see `group_streams`)."""
    flag = "--exchange" if name in EXCHANGES else "--name"  # --exchange: the worker checks the streams
    cmd = [sys.executable, "-m", "pumpwatch.recorder.worker", flag, name]
    cmd += ["--streams", ",".join(streams), "--data-dir", data_dir]
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


async def _spawn_with_sighup_blocked(cmd: Sequence[str]) -> asyncio.subprocess.Process:
    """Start a worker with SIGHUP blocked: the mask survives exec, so a "re-read the symbols"
    SIGHUP sent before the worker installed its handler waits (pending) instead of killing it
    (SIGHUP's default action); the worker unblocks it once its handler is in place. The fork
    happens in this thread, whose mask is restored right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        return await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, env=worker_env())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, or return early when `stop` is set; True when it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
    return stop.is_set()


RECORD_LOCK = "record.lock"  # under <data_dir>/run/: held by the one `record` of a data directory


class DataDirBusy(Exception):
    """Another `record` holds the data directory's lock."""


def lock_data_dir(data_dir: str) -> int:
    """Take ``<data_dir>/run/record.lock`` (an exclusive ``flock``, released by the kernel when
    this process dies however it dies, so a crash never blocks a restart) and write our pid in
    it; the descriptor, to keep open for the life of the recording (not inherited by workers).
    `DataDirBusy` names the holder's pid when another `record` has it."""
    import fcntl

    run_dir = Path(data_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / RECORD_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DataDirBusy(
            f"{data_dir} is already being recorded by pid {holder} (lock {run_dir / RECORD_LOCK}); "
            "one `record` per data directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _journal_death(data_dir: str, streams: Sequence[str], reason: str, exit_code: int) -> None:
    from pumpwatch.segments.journal import EventJournal

    for stream in streams:
        try:
            with EventJournal(data_dir, stream) as journal:
                # the exit code makes it a death mark: coverage ends the run at its last sign of life
                journal.record("gap_start", reason=reason, exit_code=exit_code)
        except OSError as exc:
            log.error("%s: cannot journal the worker's death: %s", stream, exc)


async def _stop_worker(handle: WorkerHandle, data_dir: str | None = None) -> None:
    proc = handle.proc
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=WORKER_STOP_TIMEOUT_S)
    except TimeoutError:
        log.error(
            "worker %s (pid %d) ignored SIGTERM for %.0f s; killing it",
            handle.exchange,
            proc.pid,
            WORKER_STOP_TIMEOUT_S,
        )
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        await _recover_killed(handle, data_dir)
    log.info("worker %s (pid %d) stopped with exit code %s", handle.exchange, proc.pid, proc.returncode)
    handle.failed_stop = proc.returncode != 0


RECOVER_TIMEOUT_S = 60.0  # the child that seals what a killed worker left


async def _recover_killed(handle: WorkerHandle, data_dir: str | None) -> None:
    """After killing a worker at shutdown: a child (pyarrow stays out of this process) seals
    its open segments and journals ``crashed`` with the bound of what reached the disk."""
    if data_dir is None:
        return
    cmd = [sys.executable, "-m", "pumpwatch.recorder.killed", "--data-dir", data_dir, "--crashed"]
    cmd += ["--streams", ",".join(handle.streams)]
    try:
        child = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, env=worker_env())
    except OSError as exc:
        log.error("worker %s: sealing what it left failed (%r); the next start does it", handle.exchange, exc)
        return
    try:
        rc = await asyncio.wait_for(child.wait(), timeout=RECOVER_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        log.error("worker %s: sealing what it left took over %.0f s; the next start does it", handle.exchange,
                  RECOVER_TIMEOUT_S)  # fmt: skip
        return
    if rc != 0:
        log.error(
            "worker %s: sealing what it left exited with %d; the next start does it", handle.exchange, rc
        )


async def keep_worker(
    handle: WorkerHandle, settings: Settings, config: str | os.PathLike[str] | None, stop: asyncio.Event
) -> None:
    """Run one worker until `stop`, restarting it with capped backoff whenever it dies."""
    max_delay_s = settings.recorder.worker_restart_max_s
    first_delay_s = min(1.0, max_delay_s)
    delay_s = first_delay_s
    cmd = worker_command(handle.exchange, handle.streams, config=config, data_dir=settings.data_dir)
    while not stop.is_set():
        started = time.monotonic()
        handle.proc = await _spawn_with_sighup_blocked(cmd)
        handle.starts += 1
        log.info(
            "worker %s started (pid %d): %s", handle.exchange, handle.proc.pid, ", ".join(handle.streams)
        )
        waiter = asyncio.create_task(handle.proc.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if stop.is_set() and not waiter.done():
            waiter.cancel()
            await _stop_worker(handle, settings.data_dir)
            return
        rc = await waiter
        handle.exit_codes.append(rc)
        if stop.is_set() and rc == 0:
            return  # stopped by the same signal the supervisor got (Ctrl-C reaches the whole group)
        if stop.is_set():
            handle.failed_stop = True  # it stopped on the same signal, but reported a failure
        reason = f"worker {handle.exchange} (pid {handle.proc.pid}) exited with code {rc}"
        if rc == EXIT_FATAL:
            # Its error line is on stderr already; it never recorded, so there is no gap to journal.
            log.error("%s: a fault restarting cannot fix; stopping record", reason)
            handle.fatal = True
            stop.set()
            return
        if settings.metrics.enabled:
            from pumpwatch.recorder.metrics import restart_counter

            restart_counter().labels(handle.exchange).inc()
        _journal_death(settings.data_dir, handle.streams, reason, rc)
        if time.monotonic() - started >= HEALTHY_RUN_S:
            delay_s = first_delay_s
        log.error("%s; restarting in %.1f s", reason, delay_s)
        if await _sleep_unless(stop, delay_s):
            return
        delay_s = min(delay_s * 2, max_delay_s)


async def _prune_loop(settings: Settings, stop: asyncio.Event) -> None:
    from pumpwatch.recorder.pending_windows import pending_windows
    from pumpwatch.segments.remote import remote_settings
    from pumpwatch.segments.retention import prune

    while not stop.is_set():
        if not Path(settings.data_dir).is_dir():  # nothing recorded yet
            if await _sleep_unless(stop, PRUNE_INTERVAL_S / 10):
                return
            continue
        try:
            await asyncio.to_thread(
                prune,
                settings.data_dir,
                retention_s=settings.storage.retention_s,
                min_free_disk_mb=settings.storage.min_free_disk_mb,
                frames_retention_s=settings.frames.retention_s,
                protected_spans=pending_windows(
                    settings.data_dir, settings.extract.before_s, settings.extract.after_s
                ),
                remote=remote_settings(settings),  # nothing un-uploaded leaves the disk
            )
        except Exception:
            log.exception("retention prune failed; retrying in %.0f s", PRUNE_INTERVAL_S)
        if await _sleep_unless(stop, PRUNE_INTERVAL_S):
            return


async def _listing_loop(
    settings: Settings, stop: asyncio.Event, on_firing: Callable[[Any], None] | None = None
) -> None:
    from pumpwatch.recorder.upbit.service import run_listing_service

    while not stop.is_set():
        try:
            await run_listing_service(settings, stop, on_firing=on_firing)
        except Exception:
            log.exception("Upbit listing service crashed; restarting in %.0f s", SERVICE_RESTART_S)
        if await _sleep_unless(stop, SERVICE_RESTART_S):
            return


class SymbolsRefresh:
    """The periodic subscription-list refresh, which a listing notice can also ask for at once.

    Every ``symbols.refresh`` (or at once after `request`) it runs ``pumpwatch symbols --quiet``
    as a child; when the file changed, it sends SIGHUP to every worker, which re-reads it now
    instead of at its next ``recorder.symbols_reload`` check. A notice is therefore subscribed
    within one refresh child's run (~1-2 s) plus the subscription round trip.
    """

    def __init__(
        self,
        settings: Settings,
        config: str | os.PathLike[str] | None,
        streams: Sequence[str],
        handles: Sequence[WorkerHandle],
    ) -> None:
        self.settings = settings
        self.config = config
        self.streams = list(streams)
        self.handles = handles
        self.wanted = asyncio.Event()
        self.last_rc: int | None = None
        self.runs = 0
        self.urgent_runs = 0

    def request(self, reason: str) -> None:
        """Refresh now (from the event loop's thread)."""
        log.info("refreshing the subscription list now: %s", reason)
        self.wanted.set()

    def on_firing(self, firing: Any) -> None:
        """The listing watcher's hook: every listing gets a refresh at once. Even a coin some
        stream records already may open on another exchange the same day (a Gate/KuCoin coin
        whose Bybit/OKX/Binance perpetual opens with the Upbit listing): one child run is cheap,
        a stream waiting for the periodic refresh misses the pump."""
        base = str(firing.symbol).upper()
        if symbols_file_lists(self.settings.recorder.symbols_file, base):
            self.request(f"Upbit lists {base} (subscribed on some stream; looking for the others)")
        else:
            self.request(f"Upbit lists {base}, which no stream is subscribed to")

    async def run_once(self, *, urgent: bool = False) -> int:
        path = Path(self.settings.recorder.symbols_file)
        before = _mtime_ns(path)
        rc = await refresh_symbols_child(
            self.settings, self.config, self.streams, quiet=True, last_rc=self.last_rc
        )
        self.last_rc = rc
        self.runs += 1
        self.urgent_runs += urgent
        if _mtime_ns(path) != before:
            self.signal_workers()
        return rc

    def signal_workers(self) -> None:
        """SIGHUP to every live worker: re-read the subscription list now."""
        for h in self.handles:
            proc = h.proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGHUP)

    async def loop(self, stop: asyncio.Event) -> None:
        interval_s = self.settings.symbols.refresh_s
        while not stop.is_set():
            wanted = asyncio.create_task(self.wanted.wait())
            stopped = asyncio.create_task(stop.wait())
            timeout = interval_s if interval_s > 0 else None
            await asyncio.wait([wanted, stopped], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            wanted.cancel()
            stopped.cancel()
            if stop.is_set():
                return
            urgent = self.wanted.is_set()
            self.wanted.clear()
            await self.run_once(urgent=urgent)


def _mtime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def symbols_file_lists(path: str | os.PathLike[str], base: str) -> bool:
    """True when the subscription list names `base` for any stream. A text search of the file
    (``base: X`` in an instrument's flow mapping, as `write_symbols` writes it), so the
    supervisor does not parse thousands of instruments on every notice; an unreadable file
    counts as "not listed" (a refresh then costs one child run)."""
    import re

    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    pattern = rb"[{ ,]base: ['\"]?" + re.escape(base.encode()) + rb"['\"]?[,}]"
    return re.search(pattern, data) is not None


async def run_supervisor(
    settings: Settings,
    streams: Sequence[str],
    *,
    config: str | os.PathLike[str] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Record `streams` with ``recorder.workers`` worker processes until SIGTERM/SIGINT (or `stop`);
    the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    streams = [s for s in streams if settings.streams[s].enabled]
    if not streams:
        log.error("no enabled stream selected; nothing to record")
        return 2
    groups = group_streams(streams, settings.recorder.workers)
    handles = [WorkerHandle(name, group) for name, group in groups.items()]
    refresh = SymbolsRefresh(settings, config, streams, handles)
    if not is_real_symbols_file(settings.recorder.symbols_file):
        log.info("no subscription list at %s yet; fetching it first", settings.recorder.symbols_file)
        refresh.last_rc = await refresh_symbols_child(settings, config, streams)
    metrics_server = _start_metrics(settings)
    tasks = [
        asyncio.create_task(keep_worker(h, settings, config, stop), name=f"keep-{h.exchange}")
        for h in handles
    ]
    services = [
        asyncio.create_task(_prune_loop(settings, stop)),
        asyncio.create_task(refresh.loop(stop)),
        # archive + uploads, a nice'd child
        asyncio.create_task(keep_housekeeper(settings, config, stop, streams=streams)),
    ]
    if settings.upbit.enabled:
        services.append(asyncio.create_task(_listing_loop(settings, stop, refresh.on_firing)))
    log.info("record: %d workers for %s (supervisor pid %d)", len(handles), ", ".join(streams), os.getpid())
    await stop.wait()
    log.info("stopping: asking every worker to flush and seal")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for svc in services:
        svc.cancel()
    await asyncio.gather(*services, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    for exc in failed:
        log.error("worker keeper failed: %r", exc)
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("record stopped")
    if any(h.fatal for h in handles):
        return EXIT_FATAL
    stop_failed = [h.exchange for h in handles if h.failed_stop]
    if stop_failed:  # a worker lost rows (disk full) or had to be killed: say so in the exit code
        log.error("record stopped, but workers %s reported a failure", ", ".join(stop_failed))
    return 1 if failed or stop_failed else 0


def _start_metrics(settings: Settings) -> Any:
    """The Prometheus endpoint (metrics.*); a port that cannot be bound is logged, not fatal."""
    if not settings.metrics.enabled:
        return None
    from pumpwatch.recorder import metrics

    metrics.prepare_multiprocess_dir(settings.data_dir)  # before any process imports the client
    try:
        return metrics.serve(settings.metrics.host, settings.metrics.port)
    except OSError as exc:
        log.error(
            "metrics: cannot listen on %s:%d (%s); recording continues without metrics",
            settings.metrics.host,
            settings.metrics.port,
            exc.strerror or exc,
        )
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pumpwatch.recorder.supervisor``: `pumpwatch record` without the CLI layer.

    Same options, same behaviour, the same checks before anything starts (the preflight runs as
    a child: building the adapters loads pyarrow, which this process must not hold). The
    always-on process then holds only what supervising needs: the CLI's argument parser (typer)
    loads pydantic on every command, ~11 MB of RSS kept for the life of the recording
    (bench/bench_memory.py: supervisor 38 MB via the CLI).
    """
    import argparse
    import subprocess

    from pumpwatch.errors import PumpWatchError
    from pumpwatch.logsetup import setup_logging
    from pumpwatch.recorder.preflight import preflight_command
    from pumpwatch.settings import load_settings
    from pumpwatch.streams import parse_streams

    parser = argparse.ArgumentParser(
        prog="pumpwatch-record", description="Record the selected streams, one worker per exchange."
    )
    parser.add_argument("--config", default=None, help="config file (default: $PUMPWATCH_CONFIG, built-ins)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--streams", default=None, help="comma list of stream ids or exchanges")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, args.data_dir)
        chosen = parse_streams(args.streams if args.streams is not None else settings.recorder.streams)
        checked = subprocess.run(
            preflight_command(args.config, settings.data_dir, chosen), stdin=subprocess.DEVNULL, check=False
        )
        if checked.returncode != 0:
            return checked.returncode  # its one line is on stderr
        try:
            lock_fd = lock_data_dir(settings.data_dir)
        except DataDirBusy as exc:
            sys.stderr.write(f"pumpwatch record: error: {exc}\n")
            return EXIT_FATAL  # a second recorder: restarting it cannot help
        setup_logging(settings, "supervisor")
        try:
            return asyncio.run(run_supervisor(settings, chosen, config=args.config))
        finally:
            os.close(lock_fd)
    except PumpWatchError as exc:
        sys.stderr.write(f"pumpwatch record: error: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
