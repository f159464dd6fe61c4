"""Raw frame journal (DESIGN §6): every frame received, zstd NDJSON, hourly per stream.

``data/frames/exchange=<e>/market=<m>/date=<YYYY-MM-DD>/<HHMMSS>.ndjson.zst``, one file per
stream per UTC hour of receive time; ``<HHMMSS>`` is when the writer opened it (``HH0000``
except for a writer's first hour), so a restart never appends after a torn tail. One line per
frame, exactly as received::

    {"r":1767225600123456,"f":"{\\"e\\":\\"trade\\",...}"}   a text frame given as str
    {"r":1767225600123456,"t":"{\\"e\\":\\"trade\\",...}"}   a UTF-8 frame given as bytes
    {"r":1767225600123456,"b":"AAECAw=="}                     other bytes, base64

Each flush appends one complete zstd frame; concatenated zstd frames are one valid stream, so
a crash loses at most the unflushed interval, and a torn last zstd frame reads as the end.

`FrameWriter.append` is the recorder's hot path (up to ~50 k frames/s per process): it only
puts the frame on a deque; a background thread encodes, compresses and writes every
``flush_interval_s``. On a disk error the file is truncated back to its last complete zstd frame
and the frames stay queued, up to `max_backlog_bytes` (raw frame bytes); past that the oldest
are dropped and journaled as a ``dropped`` event (``"what": "frames"``, exact receive-time
bounds and count). Retries wait until the disk has room again (checked with ``fallocate``,
without compressing anything); the failure and the recovery are each logged once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import zstandard

from pumpwatch.segments.diskfault import DEFAULT_BACKLOG_BYTES, LossJournal, LostSpan
from pumpwatch.segments.paths import HourlyFile, hourly_path, scan_hourly_files
from pumpwatch.streams import split_stream
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

log = logging.getLogger(__name__)

FRAMES_DIR = "frames"
FRAME_SUFFIX = ".ndjson.zst"
_READ_CHUNK = 1 << 20


def frames_root(data_dir: str | os.PathLike[str]) -> Path:
    """``<data_dir>/frames``."""
    return Path(data_dir) / FRAMES_DIR


def list_frame_files(
    data_dir: str | os.PathLike[str], streams: Iterable[str] | None = None
) -> list[HourlyFile]:
    """Frame files on disk, sorted by stream (in `STREAMS` order), then start."""
    return scan_hourly_files(frames_root(data_dir), FRAME_SUFFIX, streams)


def frame_path(data_dir: str | os.PathLike[str], stream: str, opened_us: int) -> Path:
    """Path of the frame file of `stream` opened at `opened_us` (named by its UTC HHMMSS)."""
    return hourly_path(frames_root(data_dir), stream, opened_us, FRAME_SUFFIX)


def encode_frame(recv_us: int, frame: bytes | str) -> bytes:
    """One NDJSON line (with newline) for a frame; see the module docstring for the keys."""
    if isinstance(frame, str):
        return orjson.dumps({"r": recv_us, "f": frame}, option=orjson.OPT_APPEND_NEWLINE)
    if not isinstance(frame, bytes):
        frame = bytes(frame)  # bytearray / memoryview from a WebSocket library
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        return orjson.dumps(
            {"r": recv_us, "b": base64.b64encode(frame).decode("ascii")}, option=orjson.OPT_APPEND_NEWLINE
        )
    return orjson.dumps({"r": recv_us, "t": text}, option=orjson.OPT_APPEND_NEWLINE)


def decode_frame(line: bytes) -> tuple[int, bytes | str] | None:
    """Inverse of `encode_frame`; None for a line that is not one (torn or foreign)."""
    try:
        obj = orjson.loads(line)
        recv_us = obj["r"]
        if not isinstance(recv_us, int):
            return None
        if "f" in obj and isinstance(obj["f"], str):
            return recv_us, obj["f"]
        if "t" in obj and isinstance(obj["t"], str):
            return recv_us, obj["t"].encode("utf-8")
        if "b" in obj and isinstance(obj["b"], str):
            return recv_us, base64.b64decode(obj["b"], validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, binascii.Error):
        return None
    return None


class FrameWriter:
    """Buffers raw frames of one stream and writes them hourly as zstd NDJSON.

    `append` never blocks on the disk and never drops; a background thread flushes every
    `flush_interval_s`; `flush` writes everything appended so far; `close` flushes and stops.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        stream: str,
        *,
        compression_level: int = 3,
        flush_interval_s: float = 1.0,
        max_backlog_bytes: int = DEFAULT_BACKLOG_BYTES,
    ) -> None:
        split_stream(stream)
        self.data_dir = Path(data_dir)
        self.stream = stream
        self.flush_interval_s = flush_interval_s
        self._queue: deque[tuple[int, bytes | str]] = deque()
        self._pending: list[tuple[int, bytes | str]] = []  # taken from the queue, not yet on disk
        self._level = compression_level
        self._write_lock = threading.Lock()
        self._paths: dict[int, Path] = {}  # hour start -> file this writer uses for that hour
        self._fd: int | None = None
        self._fd_hour: int | None = None
        self._failing = False
        self.max_backlog_bytes = max_backlog_bytes
        self._pending_bytes = 0  # raw bytes of `_pending` (frames taken from the queue)
        self._loss = LossJournal(str(self.data_dir), stream, what="frames")
        self.frames_written = 0
        self.bytes_written = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"frames-{stream}", daemon=True)
        self._thread.start()

    def append(self, recv_us: int, frame: bytes | str) -> None:
        """Queue one frame received at `recv_us` (µs UTC). Cheap: a deque append."""
        self._queue.append((recv_us, frame))

    def flush(self) -> None:
        """Write every frame appended so far (one zstd frame per hour touched).

        A disk error is logged (once per failure spell), the frames stay queued for the next
        attempt, and `StoreError` is not raised: the recorder must keep running.
        """
        with self._write_lock:
            self._flush_locked()

    def close(self) -> None:
        """Flush, stop the background thread and close the file."""
        self._closed.set()
        self._thread.join()
        with self._write_lock:
            self._flush_locked()
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
        if self._pending:
            log.error("frames %s: %d frame(s) could not be written at close", self.stream, len(self._pending))
            self._drop(len(self._pending))
        self._loss.write("disk refused writes", final=True)
        self._loss.close()

    @property
    def frames_lost(self) -> int:
        """Frames dropped since this writer started (the disk refused them past the bound)."""
        return self._loss.total

    def _drop(self, n: int) -> None:
        """Drop the `n` oldest taken frames and account for them as a lost span."""
        span = LostSpan()
        for recv_us, frame in self._pending[:n]:
            span.add(1, recv_us, recv_us, recv_us, recv_us)
            self._pending_bytes -= len(frame)
        del self._pending[:n]
        self._loss.note(span)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queued(self) -> int:
        """Frames appended but not yet on disk."""
        return len(self._queue) + len(self._pending)

    def _run(self) -> None:
        while not self._closed.wait(self.flush_interval_s):
            try:
                self.flush()
            except Exception:  # keep the thread alive: the frames stay queued for the next try
                log.exception("frames %s: flush failed", self.stream)

    def _flush_locked(self) -> None:
        queue = self._queue
        # popleft is atomic against concurrent appends; a swap of lists would race with them
        take = len(queue)
        if take:
            taken = [queue.popleft() for _ in range(take)]
            self._pending_bytes += sum(len(f) for _, f in taken)
            self._pending.extend(taken)
        if self._failing:
            if self._pending_bytes > self.max_backlog_bytes:
                self._keep_bound()
            if not self._room_for(min(self._pending_bytes // 4, 1 << 20)):
                return
        while self._pending:
            hour = self._pending[0][0] // US_PER_HOUR
            run_end = 1
            n = len(self._pending)
            while run_end < n and self._pending[run_end][0] // US_PER_HOUR == hour:
                run_end += 1
            run = self._pending[:run_end]
            if not self._write_run(hour * US_PER_HOUR, run):
                return
            del self._pending[:run_end]
            self._pending_bytes -= sum(len(f) for _, f in run)
        if self._loss.waiting is not None:
            self._loss.write("disk refused writes")

    def _keep_bound(self) -> None:
        n, excess = 0, self._pending_bytes - self.max_backlog_bytes
        while n < len(self._pending) and excess > 0:
            excess -= len(self._pending[n][1])
            n += 1
        if n and not self._loss.total:
            log.error("frames %s: memory bound reached: dropping the oldest frames (journaled)", self.stream)
        self._drop(n)

    def _room_for(self, nbytes: int) -> bool:
        """Whether the disk has room for `nbytes` (reserved with fallocate, then given back)."""
        probe = self.data_dir / f".frames-{self.stream}.probe"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.posix_fallocate(fd, 0, max(nbytes, 4096))
            finally:
                os.close(fd)
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
        return True

    def _write_run(self, hour_us: int, run: list[tuple[int, bytes | str]]) -> bool:
        # A fresh context per run: a long-lived one keeps buffers sized for the largest run it
        # ever compressed (up to 3.6 MB per stream); this one is freed at once. Same bytes.
        cctx = zstandard.ZstdCompressor(level=self._level, write_checksum=True)
        payload = cctx.compress(b"".join([encode_frame(r, f) for r, f in run]))
        try:
            fd = self._fd_for(hour_us, run[0][0])
            size_before = os.fstat(fd).st_size
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError:
                # leave no torn zstd frame in the middle of the file: the retry rewrites it whole
                os.ftruncate(fd, size_before)
                raise
        except OSError as exc:
            if not self._failing:
                log.error("frames %s: cannot write (%s); %d frame(s) kept queued", self.stream, exc, len(run))
                self._failing = True
            return False
        if self._failing:
            log.warning("frames %s: writing again", self.stream)
            self._failing = False
        self.frames_written += len(run)
        self.bytes_written += len(payload)
        return True

    def _fd_for(self, hour_us: int, first_recv_us: int) -> int:
        if self._fd is not None and self._fd_hour == hour_us:
            return self._fd
        path = self._paths.get(hour_us)
        if path is None:
            # the first hour of a writer is named by its first frame; later hours by HH0000
            opened_us = first_recv_us if not self._paths else hour_us
            path = frame_path(self.data_dir, self.stream, opened_us)
            while path.exists() and opened_us + US_PER_S < hour_us + US_PER_HOUR:
                opened_us += US_PER_S  # another writer (restart in the same second) has it
                path = frame_path(self.data_dir, self.stream, opened_us)
            self._paths[hour_us] = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            log.info("frames %s: rotated to %s", self.stream, path.name)
        self._fd, self._fd_hour = fd, hour_us
        return fd


def _iter_file_lines(path: Path) -> Iterator[bytes]:
    """Lines of the complete zstd frames of one frame file, in order. A torn last frame (a
    crash mid-write) or damaged bytes end the file quietly: a frame counts only once it is
    complete and its checksum matched."""
    dctx = zstandard.ZstdDecompressor()
    try:
        fh = open(path, "rb")  # noqa: SIM115  # closed by the `with` below
    except FileNotFoundError:
        return
    with fh:
        dobj = dctx.decompressobj()
        parts: list[bytes] = []
        carry = b""
        while True:
            chunk = carry or fh.read(_READ_CHUNK)
            carry = b""
            if not chunk:
                return  # clean end, or a torn frame whose output is dropped
            try:
                parts.append(dobj.decompress(chunk))
            except zstandard.ZstdError as exc:
                log.warning("frames: %s is damaged after a point (%s); reading stopped there", path, exc)
                return
            if dobj.eof:
                # each flush wrote whole lines into one frame, so a frame splits on newlines
                yield from (line for line in b"".join(parts).split(b"\n") if line)
                parts = []
                carry = dobj.unused_data
                dobj = dctx.decompressobj()


def iter_frames(
    data_dir: str | os.PathLike[str], stream: str, start_us: int | None = None, end_us: int | None = None
) -> Iterator[tuple[int, bytes | str]]:
    """Frames of `stream` received in ``[start_us, end_us]`` (bounds optional), in receive
    order, as ``(recv_us, frame)`` with the frame's original type (str or bytes)."""
    lo = -(2**63) if start_us is None else start_us
    hi = 2**63 if end_us is None else end_us
    skipped = 0
    for f in list_frame_files(data_dir, [stream]):
        if f.hour_end_us <= lo or f.start_us > hi:
            continue
        for line in _iter_file_lines(f.path):
            decoded = decode_frame(line)
            if decoded is None:
                skipped += 1
                continue
            if lo <= decoded[0] <= hi:
                yield decoded
    if skipped:
        log.warning("frames %s: skipped %d unreadable line(s)", stream, skipped)
