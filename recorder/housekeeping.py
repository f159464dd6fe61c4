"""The recorder's housekeeping: the Parquet archive of every sealed hour and the uploads to the
shared store, in one nice'd child process of `pumpwatch record` (issues 13 §2 and 14).

Why a child. Archiving reads segments and writes Parquet (pyarrow), uploading speaks S3
(pyarrow's filesystem): both would put pyarrow (~40 MB) into the always-on supervisor, and a
busy hour's table (hundreds of MB at peak) into its heap for good. A child keeps the supervisor
as small as before (it only starts, watches and stops it), runs at ``nice`` `NICE` so the
workers always get the CPU first, and gives its memory back to the system whenever it is
restarted. Nothing in it can block or slow recording: the workers never wait for it, and it only
reads sealed files (segments, archive, journal hours already over, complete listings).

Supervisor side (`keep_housekeeper`, one task in the supervisor's service list): starts
``python -m pumpwatch.recorder.housekeeping``, restarts it with a capped backoff when it dies
(logged once per death), and at shutdown, after the workers have sealed their hours, sends it
SIGTERM: it then archives what was just sealed and makes one last upload round before it exits
(at most `STOP_TIMEOUT_S`, then it is killed: both steps are crash-safe, so the next `record`
simply finds the rest pending).

Child side (`Housekeeper`):
- every `CHECK_S` an archive round over the recent hours (`RECENT_S`), every `FULL_EVERY_S` one
  over the whole store (a repair file or a `reparse` in an older hour); a sealed hour is thus
  archived within `CHECK_S` plus its build time of the seal;
- with ``remote.url`` set, the `Uploader` thread (its own interval, capped jittered backoff, the
  manifest that survives restarts), woken after every round that built something;
- archive retention (``storage.archive_retention``) in the same rounds: with a remote store an
  expired file is deleted only once uploaded;
- a failing round is logged once when it starts failing and once when it works again, and
  retried every `CHECK_S`; it never stops recording;
- the figures for metrics (``pumpwatch_archive_*``, ``pumpwatch_upload_*``) every
  `METRICS_EVERY_S`; ``pumpwatch status`` computes the same from the disk itself.
- it ignores SIGINT (a Ctrl-C reaches the whole process group: it must wait until the workers
  have sealed, which the supervisor's SIGTERM tells it), and exits when its parent is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.settings import Settings

if TYPE_CHECKING:
    from pumpwatch.segments.archive import ArchiveReport

log = logging.getLogger(__name__)

NICE = 10  # added niceness of the child: the workers always come first
CHECK_S = float(
    os.environ.get("PUMPWATCH_HOUSEKEEPING_CHECK_S", "15")
)  # an archive round over the recent hours this often
RECENT_S = 6 * 3600.0  # ... covering the hours that ended within this
FULL_EVERY_S = 900.0  # a round over every sealed hour this often (and at start)
METRICS_EVERY_S = 60.0  # archive backlog for metrics (a scan of the whole store) this often
STOP_TIMEOUT_S = 60.0  # final archive + upload round at shutdown, then SIGKILL
RESTART_MAX_S = 60.0  # cap of the backoff before restarting a dead child
HEALTHY_RUN_S = 60.0


LISTING_DEADLINE_S = 300.0  # default remote.listing_deadline_s
SHARED_RECENT_S = 2 * 86400.0  # listings older than this are not re-assembled by recorders


def _now_us() -> int:
    return time.time_ns() // 1000


def wanted(settings: Settings) -> bool:
    """Whether `record` needs the housekeeper: the archive is on, or a remote store is set."""
    from pumpwatch.segments.remote import remote_settings

    return settings.storage.archive or remote_settings(settings).enabled


def housekeeper_command(config: str | os.PathLike[str] | None, data_dir: str) -> list[str]:
    """The argv of the housekeeping child."""
    cmd = [sys.executable, "-m", "pumpwatch.recorder.housekeeping", "--data-dir", data_dir]
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


# --- supervisor side ---------------------------------------------------------------------------


async def keep_housekeeper(
    settings: Settings, config: str | os.PathLike[str] | None, stop: asyncio.Event | None = None
) -> None:
    """Keep the housekeeping child running until cancelled (the supervisor cancels its services
    after the workers have sealed), then stop it gracefully. Light: no pyarrow is imported.
    A bad ``remote`` block stops `record` (via `stop`) with one error line: recording while
    nothing reaches the store, and retention cannot tell what is uploaded, is worse."""
    from pumpwatch.errors import ConfigError

    try:
        remote_on = _remote_on(settings)  # validates the block even when the archive is on
        if not wanted(settings):
            return
    except ConfigError as exc:
        log.error("%s; stopping record", exc)
        if stop is not None:
            stop.set()
        return
    from pumpwatch.recorder.supervisor import worker_env

    cmd = housekeeper_command(config, settings.data_dir)
    delay_s = 1.0
    proc: asyncio.subprocess.Process | None = None
    try:
        while True:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, env=worker_env()
            )
            log.info(
                "housekeeping started (pid %d): archive%s",
                proc.pid,
                " + uploads" if remote_on else "",
            )
            rc = await proc.wait()
            if time.monotonic() - started >= HEALTHY_RUN_S:
                delay_s = 1.0
            log.error(
                "housekeeping (pid %d) exited with code %d; restarting in %.0f s", proc.pid, rc, delay_s
            )
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, RESTART_MAX_S)
    except asyncio.CancelledError:
        if proc is not None and proc.returncode is None:
            await _stop_child(proc)
        raise


def _remote_on(settings: Settings) -> bool:
    from pumpwatch.segments.remote import remote_settings

    return remote_settings(settings).enabled


async def _stop_child(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=STOP_TIMEOUT_S)
    except TimeoutError:
        log.warning(
            "housekeeping still busy after %.0f s; killing it (the rest is done next start)", STOP_TIMEOUT_S
        )
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
    log.info("housekeeping (pid %d) stopped with exit code %s", proc.pid, proc.returncode)


# --- child side --------------------------------------------------------------------------------


class Housekeeper:
    """Archive rounds and the uploader of one data directory (see the module doc)."""

    def __init__(self, settings: Settings, *, filesystem: Any = None) -> None:
        from pumpwatch.segments.remote import remote_settings
        from pumpwatch.segments.upload import Uploader

        self.data_dir = Path(settings.data_dir)
        self.archive_on = settings.storage.archive
        self.retention_s = settings.storage.archive_retention_s or None  # 0 keeps forever
        self.remote = remote_settings(settings)
        self.uploader = (
            Uploader(self.data_dir, self.remote, filesystem=filesystem) if self.remote.enabled else None
        )
        self.failing: str | None = None  # the error of the failing archive rounds, once logged
        self.rounds = 0
        self.hours_built = 0
        self.cpu_s = 0.0  # process CPU spent in archive rounds
        self._next_full_us = 0
        self._metrics: Any = None
        self.listing_deadline_s = float(
            getattr(getattr(settings, "remote", None), "listing_deadline_s", 0) or LISTING_DEADLINE_S
        )
        self.pump = settings.pump
        self.shared_failing: str | None = None

    def archive_round(self, *, full: bool) -> ArchiveReport | None:
        """One archive round (never raises); wakes the uploader when it built something."""
        from pumpwatch.segments.archive import archive_pending
        from pumpwatch.segments.upload import UploadedIndex

        now = _now_us()
        cpu0 = time.process_time()
        try:
            may_delete = UploadedIndex(self.data_dir, self.remote).file if self.remote.enabled else None
            report = archive_pending(
                self.data_dir,
                now_us=now,
                retention_s=self.retention_s,
                since_us=None if full else now - int(RECENT_S * 1e6),
                may_delete=may_delete,
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.failing is None:
                log.error(
                    "archive round failed, retrying every %.0f s (recording goes on): %s", CHECK_S, error
                )
            self.failing = error
            if self._metrics is not None:
                self._metrics.archive_failures.inc()
            return None
        finally:
            self.cpu_s += time.process_time() - cpu0
        if self.failing is not None:
            log.info("archive rounds work again")
            self.failing = None
        self.rounds += 1
        self.hours_built += report.hours_built
        if report.hours_built:
            log.info("archive: %s", report.summary(self.data_dir / "archive"))
        if (report.hours_built or report.pruned) and self.uploader is not None:
            self.uploader.wake()
        return report

    def tick(self) -> None:
        """One pass of the loop: an archive round (full when due)."""
        now = _now_us()
        if self.archive_on:
            full = now >= self._next_full_us
            self.archive_round(full=full)
            if full:
                self._next_full_us = now + int(FULL_EVERY_S * 1e6)
        self.shared_round(now)

    def shared_round(self, now_us: int) -> None:
        """Publish this recorder's heartbeat and assemble the shared listing directories that
        are due (`pumpwatch.detector.shared_listing`); never raises."""
        if self.uploader is None:
            return
        from pumpwatch.detector.shared_listing import assemble_pending, publish_heartbeat
        from pumpwatch.segments.remote import parse_url

        try:
            root = parse_url(self.remote.url)
            publish_heartbeat(self.uploader.fs, root, self.uploader.recorder_id, now_us)
            assemble_pending(
                self.uploader.fs,
                root,
                now_us=now_us,
                deadline_s=self.listing_deadline_s,
                pump=self.pump,
                recent_us=int(SHARED_RECENT_S * 1e6),
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.shared_failing is None:
                log.warning("shared listing round failed (retried every round): %s", error)
            self.shared_failing = error
            return
        self.shared_failing = None

    def publish_metrics(self, *, backlog_scan: bool = True) -> None:
        """Publish the figures; the archive backlog (a scan of the store) only with
        `backlog_scan`, the upload figures (in memory) always."""
        from pumpwatch.recorder.metrics import HousekeepingMetrics, enabled_in_this_process

        if not enabled_in_this_process():
            return
        if self._metrics is None:
            self._metrics = HousekeepingMetrics(
                self.uploader.status().failures if self.uploader else 0, remote=self.uploader is not None
            )
        backlog = None
        if self.archive_on and backlog_scan:
            from pumpwatch.segments.archive import archive_backlog

            try:
                backlog = archive_backlog(self.data_dir, retention_s=self.retention_s)
            except Exception as exc:  # a damaged manifest is the archive round's to report
                log.debug("archive backlog: %s", exc)
        self._metrics.update(backlog, None if self.uploader is None else self.uploader.status())

    def run(self, stop: threading.Event, parent_pid: int | None = None) -> None:
        """Loop until `stop` (SIGTERM) or the parent's death; then the final round."""
        if self.uploader is not None and not self.archive_on and not self.remote.upload_segments:
            log.warning(
                "remote store set but storage.archive is off and remote.upload_segments false: "
                "sealed segments never reach the store, so retention keeps them (only the "
                "free-disk floor evicts them)"
            )
        if self.uploader is not None:
            self.uploader.start()
        next_metrics = 0.0
        while not stop.is_set():
            built = self.hours_built
            self.tick()
            scan = time.monotonic() >= next_metrics or self.hours_built != built
            self.publish_metrics(backlog_scan=scan)
            if scan:
                next_metrics = time.monotonic() + METRICS_EVERY_S
            if stop.wait(CHECK_S):
                break
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("housekeeping: the supervisor is gone; exiting")
                break
        self.finish()

    def finish(self) -> None:
        """The last round after the workers sealed: archive what is new, one upload round."""
        if self.archive_on:
            self.archive_round(full=False)
        if self.uploader is not None:
            self.uploader.stop(timeout_s=STOP_TIMEOUT_S / 2, final_round=True)
        log.info(
            "housekeeping: %d archive round(s), %d hour file(s) built, %.2f s CPU in archive rounds",
            self.rounds,
            self.hours_built,
            self.cpu_s,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pumpwatch.recorder.housekeeping``: the child `record` starts."""
    import argparse

    from pumpwatch.errors import PumpWatchError
    from pumpwatch.logsetup import setup_logging
    from pumpwatch.settings import load_settings

    parser = argparse.ArgumentParser(prog="pumpwatch-housekeeping")
    parser.add_argument("--config", default=None)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's SIGTERM comes after the seals
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        settings = load_settings(args.config, args.data_dir)
        setup_logging(settings, "housekeeping")
        Housekeeper(settings).run(stop, parent)
    except PumpWatchError as exc:
        sys.stderr.write(f"pumpwatch housekeeping: error: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
