"""Per-stream connection-event journal: ``data/journal/<stream>.ndjson`` (DESIGN §5).

One JSON object per line, append-only, so a reader can tell "no trades" from "not listening"::

    {"ts": 1767225600123456, "event": "subscribed", "conn": "binance_spot-3",
     "symbols": ["0GUSDT", "ABCUSDT"], "bases": ["0G", "ABC"]}

``ts`` is integer microseconds UTC, ``event`` one of `EVENTS`, ``conn`` the connection id or
null for events about the whole stream (start, stop, alive, gap_start, gap_end).

Concurrency. Every append is one ``write(2)`` on a descriptor opened with ``O_APPEND``, so
several processes appending never interleave inside a line. `rewrite_journal` (used by
retention) replaces the file by a temporary file + ``rename``; to keep an appender from writing
into the replaced inode, both sides take an exclusive ``flock`` on the journal file, and an
appender that finds its descriptor no longer names the file at the path reopens it. Events are
rare (a heartbeat every ~10 s), so a lock and a ``stat`` per line cost nothing that matters.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import write_file_atomic
from pumpwatch.streams import split_stream

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
EVENTS: tuple[str, ...] = (
    "start",
    "stop",
    "alive",
    "connected",
    "subscribed",
    "rejected",
    "unsubscribed",
    "disconnected",
    "gap_start",
    "gap_end",
    "stats",  # the worker's cumulative counters (frames, trades, parse errors…), once per status interval
    "id_gap",  # a hole in contiguous trade ids while listening (issue 10)
    "repaired",  # a span of a symbol now holds every trade the exchange's REST history offers
    "unrepaired",  # a span of a symbol that could not be repaired, with the reason
    "dropped",  # rows (or frames) received but never written (disk full past the memory bound)
    # the previous run of the stream ended without `stop`: what it received up to `durable_us`
    # is on disk, the rest was lost (written by the next worker before its `start`)
    "crashed",
    "not_recorded",  # every wanted symbol not receiving, and why (issue 12): the whole map at each change
)
_RESERVED = ("ts", "event", "conn")


def journal_path(data_dir: str | os.PathLike[str], stream: str) -> Path:
    """``<data_dir>/journal/<stream>.ndjson``; an unknown stream id is a `UsageError`."""
    split_stream(stream)  # a stream id reaches a path only after this check
    return Path(data_dir) / JOURNAL_DIR / f"{stream}.ndjson"


def now_us() -> int:
    """Wall-clock time in integer microseconds UTC."""
    return time.time_ns() // 1000


def _lock_current(path: Path, flags: int) -> int:
    """Open `path` and hold an exclusive flock on the inode that is *still* at `path`.

    A rewrite may rename a new file over `path` while we wait for the lock; then the inode we
    locked is gone from the directory, so we drop it and try the new one.
    """
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            st = os.fstat(fd)
            if current is not None and (current.st_ino, current.st_dev) == (st.st_ino, st.st_dev):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # closing releases the flock on the stale inode


class EventJournal:
    """Appends connection events of one stream; safe to share one file between processes.

    The recorder calls the helpers (`connected`, `subscribed`, ...); each writes one line at
    once (no user-space buffering), so a crash loses nothing already recorded.
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], stream: str, *, clock_us: Callable[[], int] = now_us
    ) -> None:
        self.stream = stream
        self.path = journal_path(data_dir, stream)
        self._clock_us = clock_us
        self._fd: int | None = None

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _fd_is_current(self, fd: int) -> bool:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            return False
        st = os.fstat(fd)
        return (current.st_ino, current.st_dev) == (st.st_ino, st.st_dev)

    def record(self, event: str, *, conn: str | None = None, ts_us: int | None = None, **fields: Any) -> None:
        """Append one event line ``{"ts", "event", "conn", **fields}``; `ts_us` defaults to now."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        clash = [k for k in fields if k in _RESERVED]
        if clash:
            raise ValueError(f"journal fields may not be named {clash}")
        ts = self._clock_us() if ts_us is None else int(ts_us)
        line = orjson.dumps({"ts": ts, "event": event, "conn": conn, **fields}) + b"\n"
        self._append(line)

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self._fd = self._open()
        while True:
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            if self._fd_is_current(fd):
                break
            # retention replaced the file (or someone deleted it): follow the path
            os.close(fd)  # also releases the lock on the stale inode
            self._fd = self._open()
        try:
            size = os.fstat(fd).st_size
            # a writer that died mid-line left a torn tail: start ours on a fresh line
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the file descriptor (a later `record` reopens it)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> EventJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers the recorder calls -------------------------------------------------------------

    def start(self) -> None:
        """This process started recording the stream (a `start` without a `stop` before it
        tells readers the previous process crashed)."""
        self.record("start", pid=os.getpid())

    def stop(self) -> None:
        """Clean shutdown: every connection of this stream is closed."""
        self.record("stop", pid=os.getpid())

    def alive(self, durable_us: int | None = None) -> None:
        """Heartbeat (every ~`recorder.heartbeat`): bounds the unknown span after a crash. With
        `durable_us`, every trade this process received before that time is on disk."""
        if durable_us is None:
            self.record("alive")
        else:
            self.record("alive", durable_us=int(durable_us))

    def crashed(self, durable_us: int, pid: int | None = None) -> None:
        """The previous run of this stream ended without `stop` (a kill, a crash): every trade it
        received before `durable_us` is on disk, nothing after. Coverage ends its listening there."""
        self.record("crashed", durable_us=int(durable_us), pid=pid)

    def connected(self, conn: str, url: str) -> None:
        """The WebSocket of `conn` is open (not yet listening: that starts at `subscribed`)."""
        self.record("connected", conn=conn, url=url)

    def subscribed(self, conn: str, symbols: Iterable[str], bases: Iterable[str]) -> None:
        """The exchange acked `symbols` on `conn`; `bases` are their base assets, best given
        parallel to `symbols` (``bases[i]`` is the base of ``symbols[i]``)."""
        self.record("subscribed", conn=conn, symbols=list(symbols), bases=list(bases))

    def rejected(self, conn: str, symbols: Iterable[str], reason: str) -> None:
        """The exchange refused `symbols` on `conn` (they are not listened to)."""
        self.record("rejected", conn=conn, symbols=list(symbols), reason=reason)

    def unsubscribed(self, conn: str, symbols: Iterable[str], bases: Iterable[str] | None = None) -> None:
        """`symbols` were dropped from `conn` (bases optional: they are known from `subscribed`)."""
        fields: dict[str, Any] = {"symbols": list(symbols)}
        if bases is not None:
            fields["bases"] = list(bases)
        self.record("unsubscribed", conn=conn, **fields)

    def disconnected(self, conn: str, reason: str, last_rx_us: int | None = None) -> None:
        """`conn` closed or failed: it no longer listens to anything. `last_rx_us`, given when it
        died rather than being closed by the recorder, is when it last received anything (a
        frame, a pong): coverage ends its listening there (a stall the watchdog noticed late)."""
        if last_rx_us is None:
            self.record("disconnected", conn=conn, reason=reason)
        else:
            self.record("disconnected", conn=conn, reason=reason, last_rx_us=int(last_rx_us))

    def gap_start(self, reason: str) -> None:
        """Informational: the runner saw the stream stop listening (coverage derives gaps from
        connection state, not from these marks)."""
        self.record("gap_start", reason=reason)

    def gap_end(self) -> None:
        """Informational: the stream is listening again."""
        self.record("gap_end")


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    ts = obj.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(obj.get("event"), str):
        return None
    conn = obj.get("conn")
    if conn is not None and not isinstance(conn, str):
        return None
    return obj


def parse_journal(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """Parse journal bytes into (events in file order, number of skipped lines).

    A line that is not a JSON object with an integer ``ts`` and a string ``event`` is skipped
    and counted; so is a torn last line (a crash mid-write).
    """
    events: list[dict[str, Any]] = []
    skipped = 0
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        obj = _parse_line(raw)
        if obj is None:
            skipped += 1
        else:
            events.append(obj)
    return events, skipped


def parse_journal_fast(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """`parse_journal`'s result, from one orjson call when every line is a valid event (a
    week of heartbeats is ~70,000 lines per stream); any doubt falls back to it line by line."""
    body = data.rstrip(b"\n")
    if not body:
        return [], 0
    try:
        objs = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        return parse_journal(data)
    if len(objs) != body.count(b"\n") + 1:  # a line held more (or less) than one value
        return parse_journal(data)
    try:
        # parse_journal's checks (`type(x) is int` also refuses a bool); a non-object raises
        valid = all(
            type(o["ts"]) is int and type(o["event"]) is str and type(o.get("conn")) in (str, type(None))
            for o in objs
        )
    except (TypeError, KeyError, IndexError):
        valid = False
    return (objs, 0) if valid else parse_journal(data)


def scan_events(
    data_dir: str | os.PathLike[str], stream: str, start_us: int | None = None, end_us: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Events of `stream` with ``start_us <= ts <= end_us`` (bounds optional), file order, and
    the number of garbage lines skipped. No journal file: no events."""
    path = journal_path(data_dir, stream)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    events, skipped = parse_journal(data)
    if start_us is not None or end_us is not None:
        lo = start_us if start_us is not None else -(2**63)
        hi = end_us if end_us is not None else 2**63
        events = [e for e in events if lo <= e["ts"] <= hi]
    return events, skipped


def read_events(
    data_dir: str | os.PathLike[str], stream: str, start_us: int | None = None, end_us: int | None = None
) -> list[dict[str, Any]]:
    """Events of `stream` in file order, optionally only ``start_us <= ts <= end_us``.

    Tolerates a torn last line and garbage lines: they are skipped, and their count logged.
    """
    events, skipped = scan_events(data_dir, stream, start_us, end_us)
    if skipped:
        log.warning("journal %s: skipped %d unreadable line(s)", stream, skipped)
    return events


def rewrite_journal(
    data_dir: str | os.PathLike[str], stream: str, keep: Callable[[list[dict[str, Any]]], list[bytes]]
) -> tuple[int, int]:
    """Atomically replace the journal of `stream` with ``keep(events)`` (the lines to keep,
    each ending in a newline), under the lock appenders take. Returns (lines before, lines
    after). Garbage lines are dropped by the rewrite. A missing journal is left missing."""
    path = journal_path(data_dir, stream)
    try:
        fd = _lock_current(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0, 0
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        events, skipped = parse_journal(data)
        lines = keep(events)
        write_file_atomic(path, b"".join(lines))
        return len(events) + skipped, len(lines)
    finally:
        os.close(fd)


def encode_event(event: dict[str, Any]) -> bytes:
    """One journal line (with its newline) for an event dict as `read_events` returns it."""
    return orjson.dumps(event) + b"\n"
