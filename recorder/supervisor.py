"""`pumpwatch record`: the always-on supervisor of one worker process per exchange.

The supervisor itself touches no exchange socket. It
- checks everything the workers will need first (``recorder/preflight.py``, run as a child from
  `main`): a bad setting, adapter option or subscription list stops `record` in one line;
- writes the subscription list first when it does not exist yet (``pumpwatch symbols``), and
  refreshes it every ``symbols.refresh`` (the workers pick the new file up on their reload);
- starts ``python -m pumpwatch.recorder.worker`` for each exchange with selected streams;
- restarts a worker that died, after a capped exponential backoff (``recorder.worker_restart_max``),
  and journals the death as ``gap_start`` for each of its streams (the replacement's ``start``
  follows, so coverage shows the outage); a worker that exits with `EXIT_FATAL` (a fault no
  restart can fix: its one error line is already on stderr) stops `record` with that status;
- prunes old segments and frames every `PRUNE_INTERVAL_S`;
- runs the Upbit listing service when ``upbit.enabled``;
- on SIGTERM/SIGINT sends SIGTERM to every worker, waits for each to flush and seal, exits 0.

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
from collections.abc import Sequence
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
# Arrow's default jemalloc pool and glibc's per-thread arenas each keep freed memory around.
WORKER_ENV_DEFAULTS = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_ARENA_MAX": "2"}


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
    config: str | os.PathLike[str] | None, data_dir: str, streams: Sequence[str]
) -> list[str]:
    """The argv of a `pumpwatch symbols` refresh run as a child process."""
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
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


async def refresh_symbols_child(
    settings: Settings, config: str | os.PathLike[str] | None, streams: Sequence[str]
) -> int:
    """Run the subscription-list refresh in a child process; its exit code.

    A child keeps the supervisor small: fetching imports the adapters (and with them pyarrow),
    which would otherwise stay resident in the always-on supervisor.
    """
    proc = await asyncio.create_subprocess_exec(
        *symbols_command(config, settings.data_dir, streams), stdin=asyncio.subprocess.DEVNULL
    )
    rc = await proc.wait()
    if rc != 0:
        log.warning("symbols refresh exited with code %d; the previous list stays", rc)
    return rc


def worker_env() -> dict[str, str]:
    """The environment of a worker: ours, plus allocator settings measured to cut its RSS by
    ~8% at 2 k trades/s (bench/bench_memory.py); a value already set by the user wins."""
    env = dict(os.environ)
    for key, value in WORKER_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def worker_command(
    exchange: str, streams: Sequence[str], *, config: str | os.PathLike[str] | None, data_dir: str
) -> list[str]:
    """The argv that starts one worker process."""
    cmd = [sys.executable, "-m", "pumpwatch.recorder.worker", "--exchange", exchange]
    cmd += ["--streams", ",".join(streams), "--data-dir", data_dir]
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


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


def _journal_death(data_dir: str, streams: Sequence[str], reason: str) -> None:
    from pumpwatch.segments.journal import EventJournal

    for stream in streams:
        try:
            with EventJournal(data_dir, stream) as journal:
                journal.gap_start(reason)
        except OSError as exc:
            log.error("%s: cannot journal the worker's death: %s", stream, exc)


async def _stop_worker(handle: WorkerHandle) -> None:
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
    log.info("worker %s (pid %d) stopped with exit code %s", handle.exchange, proc.pid, proc.returncode)
    handle.failed_stop = proc.returncode != 0


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
        handle.proc = await asyncio.create_subprocess_exec(
            *cmd, stdin=asyncio.subprocess.DEVNULL, env=worker_env()
        )
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
            await _stop_worker(handle)
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
        _journal_death(settings.data_dir, handle.streams, reason)
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


async def _listing_loop(settings: Settings, stop: asyncio.Event) -> None:
    from pumpwatch.recorder.upbit.service import run_listing_service

    while not stop.is_set():
        try:
            await run_listing_service(settings, stop)
        except Exception:
            log.exception("Upbit listing service crashed; restarting in %.0f s", SERVICE_RESTART_S)
        if await _sleep_unless(stop, SERVICE_RESTART_S):
            return


async def _symbols_loop(
    settings: Settings, config: str | os.PathLike[str] | None, streams: Sequence[str], stop: asyncio.Event
) -> None:
    interval_s = settings.symbols.refresh_s
    while interval_s > 0 and not await _sleep_unless(stop, interval_s):
        await refresh_symbols_child(settings, config, streams)


async def run_supervisor(
    settings: Settings,
    streams: Sequence[str],
    *,
    config: str | os.PathLike[str] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Record `streams` with one worker per exchange until SIGTERM/SIGINT (or `stop`); exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    streams = [s for s in streams if settings.streams[s].enabled]
    if not streams:
        log.error("no enabled stream selected; nothing to record")
        return 2
    if not is_real_symbols_file(settings.recorder.symbols_file):
        log.info("no subscription list at %s yet; fetching it first", settings.recorder.symbols_file)
        await refresh_symbols_child(settings, config, streams)
    metrics_server = _start_metrics(settings)
    handles = [WorkerHandle(ex, group) for ex, group in group_by_exchange(streams).items()]
    tasks = [
        asyncio.create_task(keep_worker(h, settings, config, stop), name=f"keep-{h.exchange}")
        for h in handles
    ]
    services = [
        asyncio.create_task(_prune_loop(settings, stop)),
        asyncio.create_task(_symbols_loop(settings, config, streams, stop)),
        asyncio.create_task(keep_housekeeper(settings, config, stop)),  # archive + uploads, a nice'd child
    ]
    if settings.upbit.enabled:
        services.append(asyncio.create_task(_listing_loop(settings, stop)))
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
