"""The recorder's housekeeping: the Parquet archive of every sealed hour and the uploads to the
shared store, in a nice'd child process of `pumpwatch record` (issues 13 §2 and 14), started
only when there is work for it unless a remote store is set (issue 12 §4).

Why a child. Archiving reads segments and writes Parquet (pyarrow), uploading speaks S3
(pyarrow's filesystem): both would put pyarrow (~40 MB) into the always-on supervisor, and a
busy hour's table (hundreds of MB at peak) into its heap for good. A child keeps the supervisor
as small as before (it only starts, watches and stops it), runs at ``nice`` `NICE` so the
workers always get the CPU first, and gives its memory back to the system when it exits.
Nothing in it can block or slow recording: the workers never wait for it, and it only reads
sealed files (segments, archive, journal hours already over, complete listings).

Two ways to run it, chosen by the supervisor (`keep_housekeeper`, one task in its service list):

- **Archive only** (``storage.archive`` on, no ``remote.url``): *on demand*. The child is not
  resident: it held ~114 MB RSS at rest (pyarrow, numpy, Parquet) for about one hour file
  build per stream and hour. Every `PROBE_S` the supervisor asks `archive_work` (file names,
  ``stat`` and the archive's small JSON manifests: no pyarrow, no lock) whether a sealed hour
  of the last `RECENT_S` is missing from the archive; every `FULL_CHECK_S` (and at start) the
  same over the whole store, plus whether an archive file is past ``storage.archive_retention``.
  When there is work it starts ``python -m pumpwatch.recorder.housekeeping --until-idle``,
  which runs a full archive round, then recent rounds while anything new was sealed meanwhile,
  and exits 0 when nothing is pending. A sealed hour is thus archived within `PROBE_S` plus the
  child's start (~0.5-1 s) plus its build time of the seal. The supervisor publishes the archive
  figures for metrics (``pumpwatch_archive_*``) from its own checks.
- **With a remote store** (``remote.url`` set): *resident*, as before. Its `Uploader` thread
  uploads on its own interval with a capped jittered backoff, and every `CHECK_S` it publishes
  this recorder's heartbeat and assembles the shared listing directories that are due: work
  that needs the S3 client (pyarrow's filesystem) every few seconds, so starting a child per
  round would cost a pyarrow import (~0.5 s of CPU) every `CHECK_S`. It is restarted with a
  capped backoff when it dies (logged once per death).

Either way, at shutdown, after the workers have sealed their hours, the supervisor sends the
running child SIGTERM (or, archive only, starts one when the check finds the just-sealed hours
pending, ``--until-idle --final``): it archives what was just sealed and makes one last upload
round before it exits (at most `STOP_TIMEOUT_S`, then it is killed: both steps are crash-safe,
so the next `record` simply finds the rest pending).

Child side (`Housekeeper`):
- resident: every `CHECK_S` an archive round over the recent hours (`RECENT_S`), every
  `FULL_EVERY_S` one over the whole store (a repair file or a `reparse` in an older hour);
- with ``remote.url`` set, the `Uploader` thread (its own interval, capped jittered backoff, the
  manifest that survives restarts), woken after every round that built something;
- archive retention (``storage.archive_retention``) in the same rounds: with a remote store an
  expired file is deleted only once uploaded;
- a failing round is logged once when it starts failing and once when it works again, and
  retried every `CHECK_S`; it never stops recording (an on-demand child stays up while its
  rounds fail, so the retry and the single log line are kept);
- the figures for metrics (``pumpwatch_archive_*``, ``pumpwatch_upload_*``) every
  `METRICS_EVERY_S` when resident; ``pumpwatch status`` computes the same from the disk itself.
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.settings import Settings

if TYPE_CHECKING:
    from pumpwatch.segments.archive import ArchiveReport

log = logging.getLogger("pumpwatch.recorder.housekeeping")  # not "__main__" when run with -m

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
# On demand (no remote store): the supervisor's check of the recent hours runs this often (a
# few ms of stat for twelve streams), and covers the whole store every FULL_CHECK_S (~0.1 s
# for a week of twelve streams, 2 016 segments).
PROBE_S = min(CHECK_S, 5.0)
FULL_CHECK_S = 60.0

LISTING_DEADLINE_S = 300.0  # default remote.listing_deadline_s
SHARED_RECENT_S = 2 * 86400.0  # listings older than this are not re-assembled by recorders


def _now_us() -> int:
    return time.time_ns() // 1000


def wanted(settings: Settings) -> bool:
    """Whether `record` needs the housekeeper: the archive is on, or a remote store is set."""
    from pumpwatch.segments.remote import remote_settings

    return settings.storage.archive or remote_settings(settings).enabled


def housekeeper_command(
    config: str | os.PathLike[str] | None,
    data_dir: str,
    *,
    until_idle: bool = False,
    final: bool = False,
    started_us: int | None = None,
    streams: Sequence[str] | None = None,
) -> list[str]:
    """The argv of the housekeeping child (`until_idle`: the on-demand child, which exits when
    nothing is pending; `final`: the one started at shutdown, which does not retry;
    `started_us` and `streams`: when this ``record`` started and what it records, for its
    heartbeat in the shared store)."""
    cmd = [sys.executable, "-m", "pumpwatch.recorder.housekeeping", "--data-dir", data_dir]
    if until_idle:
        cmd.append("--until-idle")
    if final:
        cmd.append("--final")
    if started_us is not None:
        cmd += ["--started-us", str(started_us)]
    if streams is not None:
        cmd += ["--streams", ",".join(streams)]
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


# --- the cheap check: is there archive work? ---------------------------------------------------


@dataclass(frozen=True)
class ArchiveWork:
    """What an archive round would do now (`archive_work`): the same figures as
    `pumpwatch.segments.archive.ArchiveBacklog`, plus the archive files retention would delete."""

    pending_hours: int  # stream-hours with sealed segments not (all) in their archive file
    oldest_seal_us: int | None  # when the oldest of their segments was sealed (its mtime)
    newest_pending_hour_us: int | None
    newest_archived_hour_us: int | None  # the newest hour with an up-to-date archive file
    expired_files: int = 0  # archive files past the retention (counted only when asked)

    @property
    def due(self) -> bool:
        """True when an archive round would build or delete something."""
        return self.pending_hours > 0 or self.expired_files > 0

    def lag_s(self, now_us: int) -> float:
        """Seconds since the oldest unarchived segment was sealed (0 when nothing is pending)."""
        return 0.0 if self.oldest_seal_us is None else max(0.0, (now_us - self.oldest_seal_us) / 1e6)


def archive_work(
    data_dir: str | os.PathLike[str],
    *,
    now_us: int | None = None,
    retention_s: float | None = None,
    since_us: int | None = None,
    expired: bool = False,
) -> ArchiveWork:
    """Whether `archive_pending` has work, from file names, ``stat`` and the archive's JSON
    manifests only: no pyarrow and no lock, so the always-on supervisor can ask every few
    seconds. The same rules as `archive_pending`: an hour is pending when one of its sealed
    segments is not in its archive file's manifest (or the file is missing); hours past the
    retention are never archived; `since_us` keeps the hours ending after it. With `expired`,
    also counts the archive files retention would delete (a walk of the whole archive)."""
    from pumpwatch.segments.paths import hour_start_us, list_segments, stream_dir
    from pumpwatch.segments.retention import (
        ARCHIVE_DIR,
        Fingerprint,
        archive_files,
        archive_hour_key,
        archive_manifest,
    )
    from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

    now = _now_us() if now_us is None else now_us
    cutoff_us = None if not retention_s else now - int(retention_s * US_PER_S)
    start = since_us if cutoff_us is None else max(since_us or cutoff_us, cutoff_us)
    root = Path(data_dir) / ARCHIVE_DIR
    hours: dict[tuple[str, int], list[tuple[str, int, int]]] = {}
    for seg in list_segments(data_dir, start_us=start):
        if seg.sealed:
            hours.setdefault((seg.stream, hour_start_us(seg.start_us)), []).append(
                (seg.path.name, seg.size_bytes, seg.mtime_us)
            )
    manifests: dict[Path, dict[str, list[Fingerprint]]] = {}
    pending = 0
    oldest: int | None = None
    newest_pending: int | None = None
    newest_done: int | None = None
    for (stream, hour_us), prints in hours.items():
        if start is not None and hour_us + US_PER_HOUR <= start:
            continue
        directory = stream_dir(root, stream) / f"date={_day(hour_us)}"
        if directory not in manifests:
            manifests[directory] = archive_manifest(directory) or {}  # unreadable: rebuilt
        key = archive_hour_key(hour_us)
        archived = manifests[directory].get(key)
        if archived is not None and set(prints) <= set(archived) and (directory / f"{key}.parquet").is_file():
            newest_done = hour_us if newest_done is None else max(newest_done, hour_us)
            continue
        pending += 1
        sealed = min(mtime for _n, _s, mtime in prints)
        oldest = sealed if oldest is None else min(oldest, sealed)
        newest_pending = hour_us if newest_pending is None else max(newest_pending, hour_us)
    n_expired = 0
    if expired and cutoff_us is not None:
        n_expired = sum(1 for f in archive_files(data_dir) if f.start_us + US_PER_HOUR <= cutoff_us)
    return ArchiveWork(pending, oldest, newest_pending, newest_done, n_expired)


def _day(hour_us: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(hour_us // 1_000_000, UTC).date().isoformat()


# --- supervisor side ---------------------------------------------------------------------------


def recorded_streams(settings: Settings, streams: Sequence[str] | None = None) -> list[str] | None:
    """The streams this ``record`` records, for its heartbeat: `streams` (the supervisor's
    selection), else the ``--streams`` of this process when it is the supervisor (``pumpwatch
    record`` execs ``python -m pumpwatch.recorder.supervisor --streams …``; without the option
    it records ``recorder.streams``), the enabled ones; None (not declared) otherwise."""
    import argparse

    from pumpwatch.streams import parse_streams

    if streams is None:
        if not sys.argv or Path(sys.argv[0]).name != "supervisor.py":
            return None
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--streams", default=None)
        known, _rest = parser.parse_known_args(sys.argv[1:])
        spec = known.streams if known.streams is not None else settings.recorder.streams
    else:
        spec = list(streams)
    return [s for s in parse_streams(spec) if settings.streams[s].enabled]


async def keep_housekeeper(
    settings: Settings,
    config: str | os.PathLike[str] | None,
    stop: asyncio.Event | None = None,
    *,
    streams: Sequence[str] | None = None,
) -> None:
    """Run the housekeeping child until cancelled (the supervisor cancels its services after the
    workers have sealed), then let it finish the last round: resident with a remote store,
    on demand otherwise (see the module doc). Light: no pyarrow is imported. A bad ``remote``
    block stops `record` (via `stop`) with one error line: recording while nothing reaches the
    store, and retention cannot tell what is uploaded, is worse; so does a child that finds
    this recorder id in use by another live recorder (`EXIT_FATAL`). `streams` (the streams
    this ``record`` records, declared in its heartbeat) defaults to the settings'
    ``recorder.streams``; this call's time is the run's start in the heartbeat."""
    from pumpwatch.errors import ConfigError

    started_us = _now_us()
    try:
        remote_on = _remote_on(settings)  # validates the block even when the archive is on
        if not wanted(settings):
            return
    except ConfigError as exc:
        log.error("%s; stopping record", exc)
        if stop is not None:
            stop.set()
        return
    if remote_on:
        try:
            declared = recorded_streams(settings, streams)
        except Exception as exc:  # an argv it cannot read: the heartbeat declares no streams
            log.warning("cannot tell the recorded streams for the heartbeat: %s", exc)
            declared = None
        await _keep_resident(settings, config, stop, started_us=started_us, streams=declared)
    else:
        await OnDemand(settings, config).run()


async def _start_child(cmd: Sequence[str]) -> asyncio.subprocess.Process:
    from pumpwatch.recorder.supervisor import worker_env

    return await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL, env=worker_env())


async def _keep_resident(
    settings: Settings,
    config: str | os.PathLike[str] | None,
    stop: asyncio.Event | None = None,
    *,
    started_us: int | None = None,
    streams: Sequence[str] | None = None,
) -> None:
    """Keep the child running (remote store: uploads, heartbeats, shared listings), restarting it
    with a capped backoff when it dies; SIGTERM it when cancelled. A child that exits with
    `EXIT_FATAL` (its recorder id is in use by another live recorder: it said so in one line)
    is not restarted and stops `record`."""
    from pumpwatch.errors import EXIT_FATAL

    cmd = housekeeper_command(config, settings.data_dir, started_us=started_us, streams=streams)
    delay_s = 1.0
    proc: asyncio.subprocess.Process | None = None
    try:
        while True:
            started = time.monotonic()
            proc = await _start_child(cmd)
            log.info("housekeeping started (pid %d): archive + uploads, resident", proc.pid)
            rc = await proc.wait()
            if rc == EXIT_FATAL:
                if stop is not None:
                    stop.set()
                return
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


class OnDemand:
    """The supervisor's side of the on-demand housekeeper (archive only, no remote store).

    Every `PROBE_S` an `archive_work` check of the recent hours (every `FULL_CHECK_S` of the
    whole store, with archive retention); when something is due, the ``--until-idle`` child is
    started and awaited (it exits 0 when nothing is pending). A child that exits otherwise is
    logged and the next one waits a capped backoff. When cancelled: SIGTERM to a running child
    (it archives what the workers just sealed, then exits), else one ``--final`` child if the
    check finds anything pending. The archive figures for metrics come from the full checks."""

    def __init__(self, settings: Settings, config: str | os.PathLike[str] | None) -> None:
        self.data_dir = settings.data_dir
        self.config = config
        self.retention_s = settings.storage.archive_retention_s or None
        self.proc: asyncio.subprocess.Process | None = None
        self.children = 0  # children started
        self.checks = 0
        self.check_failing: str | None = None
        self._metrics: Any = None

    async def check(self, *, full: bool) -> ArchiveWork | None:
        """`archive_work` in a thread (never raises: a failing check is logged once, and counts
        as work, so the child's round reports the real error)."""
        now = _now_us()
        try:
            work = await asyncio.to_thread(
                archive_work,
                self.data_dir,
                now_us=now,
                retention_s=self.retention_s,
                since_us=None if full else now - int(RECENT_S * 1e6),
                expired=full,
            )
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.check_failing is None:
                log.warning("archive check failed (an archive round will tell more): %s", error)
            self.check_failing = error
            return None
        self.check_failing = None
        self.checks += 1
        if full:
            self._publish(work)
        return work

    def _publish(self, work: ArchiveWork) -> None:
        from pumpwatch.recorder.metrics import HousekeepingMetrics, enabled_in_this_process

        if not enabled_in_this_process():
            return
        if self._metrics is None:
            self._metrics = HousekeepingMetrics(remote=False)
        self._metrics.update(work, None)

    async def run_child(self, *, final: bool = False) -> int:
        cmd = housekeeper_command(self.config, self.data_dir, until_idle=True, final=final)
        self.proc = await _start_child(cmd)
        self.children += 1
        log.info("housekeeping started (pid %d): archive%s", self.proc.pid, ", last round" if final else "")
        rc = await self.proc.wait()
        level = logging.INFO if rc == 0 else logging.ERROR
        log.log(level, "housekeeping (pid %d) exited with code %d", self.proc.pid, rc)
        return rc

    async def run(self) -> None:
        delay_s = 1.0
        next_full = 0.0  # at start: the whole store
        after_child: tuple[int, int | None, int] | None = None  # what was due right after one
        stuck_logged = False
        try:
            while True:
                full = time.monotonic() >= next_full
                if full:
                    next_full = time.monotonic() + FULL_CHECK_S
                work = await self.check(full=full)
                due = work is None or work.due
                sig = None if work is None else (work.pending_hours, work.oldest_seal_us, work.expired_files)
                if due and sig is not None and sig == after_child:
                    # The child found nothing to do with what this check calls due (a file it
                    # cannot delete, say): do not start one every check; back off instead.
                    if not stuck_logged:
                        log.warning("archive work still due after a housekeeping round: %s", work)
                        stuck_logged = True
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, RESTART_MAX_S)
                    after_child = None  # try once more after the wait
                    continue
                after_child = None
                if due:
                    rc = await self.run_child()
                    self.proc = None
                    next_full = 0.0  # the figures after the round, and what it could not do
                    if rc != 0:
                        await asyncio.sleep(delay_s)
                        delay_s = min(delay_s * 2, RESTART_MAX_S)
                        continue
                    after_child = sig
                    continue  # the check right after it (a full one) publishes the new figures
                delay_s = 1.0
                stuck_logged = False
                await asyncio.sleep(PROBE_S)
        except asyncio.CancelledError:
            await self._last_round()
            raise

    async def _last_round(self) -> None:
        """At shutdown (the workers have sealed): let a running child finish, else archive what
        is pending in one last child."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            await _stop_child(proc)
            return
        work = await self.check(full=False)
        if work is not None and not work.due:
            return
        cmd = housekeeper_command(self.config, self.data_dir, until_idle=True, final=True)
        proc = self.proc = await _start_child(cmd)
        self.children += 1
        log.info("housekeeping started (pid %d): archive what was just sealed", proc.pid)
        await _wait_child(proc)


def _remote_on(settings: Settings) -> bool:
    from pumpwatch.segments.remote import remote_settings

    return remote_settings(settings).enabled


async def _stop_child(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    await _wait_child(proc)


async def _wait_child(proc: asyncio.subprocess.Process) -> None:
    """Wait for the child's last round, at most `STOP_TIMEOUT_S`, then kill it."""
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

    def __init__(
        self,
        settings: Settings,
        *,
        filesystem: Any = None,
        started_us: int | None = None,
        streams: Sequence[str] | None = None,
    ) -> None:
        from pumpwatch.segments.remote import instance_token, remote_settings
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
        self.conflict: str | None = None  # another live recorder publishes under our id
        self.heartbeat: Any = None
        if self.uploader is not None:
            from pumpwatch.detector.shared_listing import Heartbeat

            self.heartbeat = Heartbeat(
                recorder_id=self.uploader.recorder_id,
                started_us=_now_us() if started_us is None else started_us,
                every_s=CHECK_S,
                listing_watcher=bool(settings.upbit.enabled),
                streams=None if streams is None else tuple(recorded_streams(settings, streams) or ()),
                instance=instance_token(self.data_dir),
            )

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
                log.error("archive round failed, retrying every %g s (recording goes on): %s", CHECK_S, error)
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
        from pumpwatch.detector.shared_listing import HeartbeatConflict, assemble_pending
        from pumpwatch.segments.remote import parse_url

        try:
            root = parse_url(self.remote.url)
            self.heartbeat.publish(self.uploader.fs, root, now_us)
            assemble_pending(
                self.uploader.fs,
                root,
                now_us=now_us,
                deadline_s=self.listing_deadline_s,
                pump=self.pump,
                recent_us=int(SHARED_RECENT_S * 1e6),
            )
        except HeartbeatConflict as exc:
            log.error("%s; stopping record", exc)
            self.conflict = str(exc)
            return
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

    def run(self, stop: threading.Event, parent_pid: int | None = None) -> bool:
        """Loop until `stop` (SIGTERM) or the parent's death; then the final round. Returns
        False, without uploading anything more, when another live recorder publishes under
        this recorder id (checked by the first heartbeat, before the uploader starts when the
        store is reachable, and at every round after)."""
        if self.uploader is not None:
            self.shared_round(_now_us())
            if self.conflict is not None:
                self.uploader.stop(timeout_s=1.0)
                return False
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
            if self.conflict is not None:
                assert self.uploader is not None
                self.uploader.stop(timeout_s=STOP_TIMEOUT_S / 2)
                return False
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
        return True

    def run_until_idle(self, stop: threading.Event, parent_pid: int | None = None) -> None:
        """The on-demand child (archive only): a full archive round, then recent rounds while
        anything was sealed meanwhile (`archive_work`); return when nothing is pending. A failing
        round is retried every `CHECK_S` (logged once), unless `stop` is set (SIGTERM, or the
        ``--final`` child at shutdown) or the parent is gone. The archive figures for metrics
        are the supervisor's; only the failures counter is published from here."""
        from pumpwatch.recorder.metrics import HousekeepingMetrics, enabled_in_this_process

        if enabled_in_this_process():
            self._metrics = HousekeepingMetrics(remote=False)
        full = True
        while True:
            report = self.archive_round(full=full)
            if report is None:  # failed: logged once; retried while we may
                if stop.wait(CHECK_S) or (parent_pid is not None and os.getppid() != parent_pid):
                    break
                continue
            if full:
                self._next_full_us = _now_us() + int(FULL_EVERY_S * 1e6)
            full = False
            now = _now_us()
            work = archive_work(self.data_dir, now_us=now, since_us=now - int(RECENT_S * 1e6))
            if not work.due:
                break
            if not report.hours_built:  # the round saw nothing to build: do not spin
                log.warning("housekeeping: archive work still due after a round that built nothing: %s", work)
                break
        log.info(
            "housekeeping: %d archive round(s), %d hour file(s) built, %.2f s CPU in archive rounds; "
            "nothing pending, exiting",
            self.rounds,
            self.hours_built,
            self.cpu_s,
        )

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

    from pumpwatch.errors import EXIT_FATAL, PumpWatchError
    from pumpwatch.logsetup import setup_logging
    from pumpwatch.settings import load_settings

    parser = argparse.ArgumentParser(prog="pumpwatch-housekeeping")
    parser.add_argument("--config", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--until-idle", action="store_true", help="archive what is pending, then exit (no remote store)"
    )
    parser.add_argument("--final", action="store_true", help="with --until-idle: no retry (shutdown)")
    parser.add_argument("--started-us", type=int, default=None, help="when this record started (µs)")
    parser.add_argument("--streams", default=None, help="the streams this record records (comma list)")
    args = parser.parse_args(argv)
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor's SIGTERM comes after the seals
    stop = threading.Event()
    if args.final:
        stop.set()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stop.set())
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        settings = load_settings(args.config, args.data_dir)
        setup_logging(settings, "housekeeping")
        streams = None if args.streams is None else [s for s in args.streams.split(",") if s]
        housekeeper = Housekeeper(settings, started_us=args.started_us, streams=streams)
        if args.until_idle and housekeeper.uploader is None:
            housekeeper.run_until_idle(stop, parent)
        elif not housekeeper.run(stop, parent):  # a remote store needs the resident loop
            return EXIT_FATAL  # another live recorder has this recorder id: said in one line
    except PumpWatchError as exc:
        sys.stderr.write(f"pumpwatch housekeeping: error: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
