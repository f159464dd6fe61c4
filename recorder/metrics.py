"""Prometheus metrics of `pumpwatch record`, across its processes.

`record` is a supervisor plus one worker process per exchange, so the standard client's
multiprocess mode is used: the supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at
``<data_dir>/run/metrics`` (emptied at start) before anything imports prometheus_client, the
workers inherit it and update their metrics there, and the supervisor serves the merged view on
``metrics.host:metrics.port`` (127.0.0.1:9464 by default). The listing watcher runs in the
supervisor and is read directly by a custom collector.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pumpwatch.timeunits import US_PER_S

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# the reason kinds of `RunnerStats.not_recorded` (recorder/stream/not_recorded.py), each a series
NOT_RECORDED_KINDS = ("rejected", "over_capacity", "not_connected", "unparsable")
_watchers: list[Any] = []


def prepare_multiprocess_dir(data_dir: str | os.PathLike[str]) -> Path:
    """Create an empty metrics directory and export it to this process and its children."""
    path = Path(data_dir) / "run" / "metrics"
    if path.exists():
        shutil.rmtree(path)  # values of a previous run would be merged in otherwise
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def enabled_in_this_process() -> bool:
    """True when a supervisor exported a metrics directory (workers then publish)."""
    return bool(os.environ.get(MULTIPROC_ENV))


class StreamMetrics:
    """The per-stream metrics a worker publishes; `update` turns cumulative counters into deltas."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        label = ["stream"]
        self.frames = Counter("pumpwatch_frames", "WebSocket frames received", label)
        self.trades = Counter("pumpwatch_trades", "Trades handed to the segment writer", label)
        self.duplicates = Counter("pumpwatch_duplicate_trades", "Trades dropped as already seen", label)
        self.parse_errors = Counter("pumpwatch_parse_errors", "Frames refused by the parser", label)
        self.reconnects = Counter("pumpwatch_reconnects", "Connections re-opened after a loss", label)
        self.gap_seconds = Counter(
            "pumpwatch_gap_seconds", "Seconds with no subscribed connection for a stream with symbols", label
        )
        self.bytes_written = Counter("pumpwatch_segment_bytes_written", "Bytes written to segments", label)
        self.id_holes = Counter(
            "pumpwatch_id_holes", "Holes in contiguous trade ids (journaled id_gap)", label
        )
        self.repairs = Counter("pumpwatch_repairs", "Missing spans repaired from REST history", label)
        self.repaired_trades = Counter("pumpwatch_repaired_trades", "Trades written from REST history", label)
        self.repair_calls = Counter("pumpwatch_repair_calls", "REST history requests sent", label)
        self.repair_rate_limited = Counter(
            "pumpwatch_repair_rate_limited", "REST history answers 429 / ban (each a wait and a retry)", label
        )
        self.repair_queue = Gauge("pumpwatch_repair_queue", "Missing spans waiting for repair", label)
        self.lag = Gauge(
            "pumpwatch_lag_seconds",
            "Receive time minus exchange time (moving mean)",
            label,
            multiprocess_mode="livesum",
        )
        self.connections = Gauge(
            "pumpwatch_connections", "WebSocket connections open", label, multiprocess_mode="livesum"
        )
        self.queue = Gauge(
            "pumpwatch_writer_queue_rows", "Rows waiting for the disk", label, multiprocess_mode="livesum"
        )
        # Nothing silent (issue 12): wanted symbols that are not receiving, by the kind of reason
        # (rejected, over_capacity, not_connected, unparsable); `pumpwatch status` names them.
        self.not_recorded = Gauge(
            "pumpwatch_symbols_not_recorded",
            "Wanted symbols not receiving, by reason",
            ["stream", "reason"],
            multiprocess_mode="livesum",
        )
        self._last: dict[tuple[str, str], float] = {}
        self._last_t: dict[str, float] = {}

    def _inc(self, counter: Any, stream: str, name: str, value: float) -> None:
        key = (stream, name)
        delta = value - self._last.get(key, 0.0)
        if delta > 0:
            counter.labels(stream).inc(delta)
        self._last[key] = value

    def update(
        self,
        stream: str,
        stats: Any,
        writer: Any,
        *,
        has_symbols: bool,
        now_s: float | None = None,
        repair: Any = None,
    ) -> None:
        """Publish one stream's `RunnerStats` and `SegmentWriter` counters (and its live
        repair's `RepairStats` when given)."""
        now = time.monotonic() if now_s is None else now_s
        if stream not in self._last_t:  # create every series at 0, so a scraper sees 0, not absence
            for metric in (
                self.frames,
                self.trades,
                self.duplicates,
                self.parse_errors,
                self.reconnects,
                self.gap_seconds,
                self.bytes_written,
            ):
                metric.labels(stream)
        self._inc(self.frames, stream, "frames", stats.frames)
        self._inc(self.trades, stream, "trades", stats.trades)
        self._inc(self.duplicates, stream, "duplicates", stats.duplicates)
        self._inc(self.parse_errors, stream, "parse_errors", stats.parse_errors)
        self._inc(self.reconnects, stream, "reconnects", stats.reconnects)
        self._inc(self.bytes_written, stream, "bytes", writer.bytes_written)
        last = self._last_t.get(stream)
        if last is not None and has_symbols and stats.subscribed_symbols == 0:
            self.gap_seconds.labels(stream).inc(now - last)
        self._last_t[stream] = now
        if stats.lag_avg_us is not None:
            self.lag.labels(stream).set(stats.lag_avg_us / US_PER_S)
        self.connections.labels(stream).set(stats.connected)
        by_kind = dict.fromkeys(NOT_RECORDED_KINDS, 0)
        for reason in getattr(stats, "not_recorded", {}).values():
            kind = reason.split(":", 1)[0]
            by_kind[kind] = by_kind.get(kind, 0) + 1
        for kind, n in by_kind.items():
            self.not_recorded.labels(stream, kind).set(n)
        self.queue.labels(stream).set(writer.queue_rows)
        if repair is not None:
            self._inc(self.id_holes, stream, "id_holes", getattr(stats, "id_holes", 0))
            self._inc(self.repairs, stream, "repairs", repair.repairs)
            self._inc(self.repaired_trades, stream, "repaired_trades", repair.trades)
            self._inc(self.repair_calls, stream, "repair_calls", repair.calls)
            self._inc(self.repair_rate_limited, stream, "repair_rate_limited", repair.rate_limited)
            self.repair_queue.labels(stream).set(repair.queued)


class HousekeepingMetrics:
    """What the housekeeping child (recorder/housekeeping.py) publishes: the archive's lag and,
    with a remote store, the upload backlog, failures and last success (docs/remote.md)."""

    def __init__(self, failures_before: int = 0, *, remote: bool = True) -> None:
        from prometheus_client import Counter, Gauge

        self.archive_pending = Gauge(
            "pumpwatch_archive_pending_hours",
            "Sealed stream-hours whose Parquet archive file is missing or out of date",
            multiprocess_mode="livemax",
        )
        self.archive_lag = Gauge(
            "pumpwatch_archive_lag_seconds",
            "Seconds since the oldest sealed segment not yet in the archive was sealed (0: none)",
            multiprocess_mode="livemax",
        )
        self.archive_newest = Gauge(
            "pumpwatch_archive_newest_hour_timestamp_seconds",
            "Start of the newest hour with an up-to-date archive file",
            multiprocess_mode="max",
        )
        self.archive_failures = Counter("pumpwatch_archive_failures", "Archive rounds that failed")
        self.remote = remote
        self._failures_seen = failures_before
        if not remote:  # no remote store: no upload series at all
            return
        self.backlog_files = Gauge(
            "pumpwatch_upload_backlog_files",
            "Sealed files not yet in the remote store",
            multiprocess_mode="livemax",
        )
        self.backlog_bytes = Gauge(
            "pumpwatch_upload_backlog_bytes", "Bytes not yet in the remote store", multiprocess_mode="livemax"
        )
        self.upload_failures = Counter("pumpwatch_upload_failures", "Failed upload rounds")
        self.last_success = Gauge(
            "pumpwatch_upload_last_success_timestamp_seconds",
            "Time of the last successful upload",
            multiprocess_mode="max",
        )

    def update(self, backlog: Any, upload: Any) -> None:
        """Publish an `archive.ArchiveBacklog` (None: unknown) and an `upload.UploadStatus`
        (None: no remote store)."""
        if backlog is not None:
            self.archive_pending.set(backlog.pending_hours)
            self.archive_lag.set(backlog.lag_s(time.time_ns() // 1000))
            if backlog.newest_archived_hour_us is not None:
                self.archive_newest.set(backlog.newest_archived_hour_us / US_PER_S)
        if upload is None or not self.remote:
            return
        self.backlog_files.set(upload.backlog_files)
        self.backlog_bytes.set(upload.backlog_bytes)
        if upload.failures > self._failures_seen:
            self.upload_failures.inc(upload.failures - self._failures_seen)
        self._failures_seen = max(self._failures_seen, upload.failures)
        if upload.last_upload_us is not None:
            self.last_success.set(upload.last_upload_us / US_PER_S)


def watch_upbit(watcher: Any) -> None:
    """Register the supervisor's listing watcher for the metrics endpoint."""
    _watchers.append(watcher)


class _UpbitCollector:
    """Listing-watcher counters, read from the live watcher objects of this process."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        polls = CounterMetricFamily("pumpwatch_upbit_polls", "Announcement list requests sent")
        errors = CounterMetricFamily(
            "pumpwatch_upbit_poll_errors", "Failed polls (rate limits, HTTP and network errors, bad bodies)"
        )
        fired = CounterMetricFamily("pumpwatch_listings_fired", "KRW listings fired")
        s_polls = s_errors = s_fired = 0
        for w in _watchers:
            st = w.poller.stats
            s_polls += st.requests
            s_errors += st.rate_limited + st.http_errors + st.network_errors + st.malformed
            s_fired += len(w.firings)
        polls.add_metric([], s_polls)
        errors.add_metric([], s_errors)
        fired.add_metric([], s_fired)
        yield polls
        yield errors
        yield fired


def serve(host: str, port: int) -> Any:
    """Serve every process's metrics on http://host:port/metrics; returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_UpbitCollector())
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server


@functools.cache
def restart_counter() -> Any:
    """Worker restarts by exchange (published by the supervisor)."""
    from prometheus_client import Counter

    return Counter("pumpwatch_worker_restarts", "Worker processes restarted after dying", ["exchange"])
