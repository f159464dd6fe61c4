"""Copy what this recorder has sealed to the shared object store, in the background.

What goes up (keys in `pumpwatch.segments.remote`), each only once it is sealed:

- the Parquet archive (``data/archive/…/<HH>.parquet``, written whole under its final name);
- sealed Arrow segments only with ``remote.upload_segments`` (the archive already holds every
  sealed segment's rows, so by default they are not copied twice);
- the journal (``data/journal/<stream>.ndjson``) as one object per stream and UTC hour of
  its lines' ``ts``, uploaded once the hour has ended plus ``journal_grace_s``. The local file is
  append-only but retention rewrites its head, so an object per closed hour (its lines in file
  order) is a deterministic, immutable unit; a late line for a past hour replaces that hour's
  object with one holding more lines (never fewer: a head trimmed locally never shrinks a copy);
- every file of each listing directory (``data/listings/<SYM>_<T>/``; they appear under the
  final name only when complete), replaced when its bytes change (a re-run), its
  ``metadata.json`` last; and the "nothing recorded here" parts
  (``data/remote/nothing/<SYM>_<T>/metadata.json``) as ``listings/<SYM>_<T>/metadata.json``.

Manifest: ``data/remote/manifest.sqlite`` records, per local item, the key, size, mtime and
SHA-256 of what was put. An item is uploaded when its bytes differ from that (a changed
size/mtime is re-hashed first, so an identical rewrite is not sent again). A row is committed
right after its put returns; a crash between the two re-sends the same bytes to the same key
once, which is harmless. An object put is atomic in S3 (a reader sees the old object or the
whole new one; a multipart upload appears only when completed), so no partial file is ever
visible remotely.

The `Uploader` runs in its own thread: bounded work per round, capped jittered backoff after a
failure, and `status()` for ``status`` and metrics. Retention consults `is_uploaded` /
`not_yet_uploaded` so that nothing leaves the disk before it is safely in the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from pumpwatch.atomic import write_file_atomic
from pumpwatch.segments.journal import JOURNAL_DIR
from pumpwatch.segments.paths import SEGMENTS_DIR, parse_segment_path
from pumpwatch.segments.remote import RemoteRoot, RemoteSettings, filesystem_for, parse_url
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

if TYPE_CHECKING:
    import pyarrow.fs as pafs

log = logging.getLogger(__name__)

ARCHIVE_DIR = "archive"
LISTINGS_DIR = "listings"
REMOTE_DIR = "remote"
MANIFEST_NAME = "manifest.sqlite"
STATUS_NAME = "status.json"  # the running uploader's figures, for `status` in another process
NOTHING_DIR = "remote/nothing"  # the "nothing recorded here" listing parts (recorder/upbit/trigger.py)
_TS_RE = re.compile(rb'"ts"\s*:\s*(-?\d+)')
_HIVE_DIRS = (
    re.compile(r"^exchange=[a-z]+$"),
    re.compile(r"^market=[a-z]+$"),
    re.compile(r"^date=\d{4}-\d{2}-\d{2}$"),
)
_ARCHIVE_NAME_RE = re.compile(r"^\d{2}\.parquet$")


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Item:
    """One thing to upload: a local file, or one journal hour (derived from the journal file).

    `ident` is the local path relative to the data dir (for a journal hour
    ``journal/<stream>.ndjson#<YYYY-MM-DD>T<HH>``); `version` is what tells a change cheaply
    (``size:mtime_ns`` of a file; the line count of a journal hour)."""

    ident: str
    key: str  # the object's path: relative to recorder=<id>/ when listed, full in `sealed_items`
    version: str
    size_hint: int
    load: Callable[[], bytes]
    grows_only: bool = False  # a journal hour: only a version with more lines replaces the copy


@dataclass
class UploadStatus:
    """What `status` and metrics show about the uploads of this recorder."""

    enabled: bool
    recorder_id: str = ""
    url: str = ""
    backlog_files: int = 0
    backlog_bytes: int = 0
    uploaded_files: int = 0  # since this process started
    uploaded_bytes: int = 0
    failures: int = 0  # failed rounds (carried over from the previous uploader of the data dir)
    consecutive_failures: int = 0
    last_upload_us: int | None = None  # last successful put (from the manifest: survives restarts)
    last_round_us: int | None = None
    last_error: str | None = None
    last_failure_us: int | None = None
    next_attempt_us: int | None = None


# --- manifest ----------------------------------------------------------------------------------


class Manifest:
    """What has been uploaded, in SQLite (transactions make each row's update atomic)."""

    def __init__(self, data_dir: str | os.PathLike[str], *, create: bool = True) -> None:
        """Open (or, with `create`, create) ``<data_dir>/remote/manifest.sqlite``; without
        `create` a missing manifest reads as empty and nothing is written to the disk."""
        path = Path(data_dir) / REMOTE_DIR / MANIFEST_NAME
        self.path = path
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        target = str(path) if create or path.exists() else ":memory:"
        self._db = sqlite3.connect(target, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS uploaded (ident TEXT PRIMARY KEY, key TEXT NOT NULL,"
            " version TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,"
            " uploaded_us INTEGER NOT NULL)"
        )
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, ident: str) -> tuple[str, str, str] | None:
        """(key, version, sha256) of what was uploaded for `ident`, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT key, version, sha256 FROM uploaded WHERE ident = ?", (ident,)
            ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def all(self) -> dict[str, tuple[str, str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT ident, key, version, sha256 FROM uploaded").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def put(self, ident: str, key: str, version: str, sha256: str, size: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO uploaded VALUES (?, ?, ?, ?, ?, ?)",
                (ident, key, version, sha256, size, _now_us()),
            )
            self._db.commit()

    def last_upload_us(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT max(uploaded_us) FROM uploaded").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- what is sealed ----------------------------------------------------------------------------


def _file_item(data_dir: Path, path: Path, key: str) -> Item | None:
    try:
        st = path.stat()
    except FileNotFoundError:  # pruned or replaced between listing and stat
        return None
    return Item(
        ident=path.relative_to(data_dir).as_posix(),
        key=key,
        version=f"{st.st_size}:{st.st_mtime_ns}",
        size_hint=st.st_size,
        load=path.read_bytes,
    )


def _hive_files(root: Path, name_ok: Callable[[str], bool]) -> Iterator[Path]:
    """Files ``root/exchange=…/market=…/date=…/<name>`` whose name passes `name_ok`, sorted."""
    if not root.is_dir():
        return
    for ex in sorted(root.iterdir()):
        if not (_HIVE_DIRS[0].match(ex.name) and ex.is_dir()):
            continue
        for mk in sorted(ex.iterdir()):
            if not (_HIVE_DIRS[1].match(mk.name) and mk.is_dir()):
                continue
            for day in sorted(mk.iterdir()):
                if not (_HIVE_DIRS[2].match(day.name) and day.is_dir()):
                    continue
                for f in sorted(day.iterdir()):
                    if name_ok(f.name) and f.is_file():
                        yield f


def archive_items(data_dir: Path) -> Iterator[Item]:
    """Every archive Parquet file under its final name (``<HH>.parquet``)."""
    root = data_dir / ARCHIVE_DIR
    for f in _hive_files(root, lambda n: bool(_ARCHIVE_NAME_RE.match(n))):
        item = _file_item(data_dir, f, f"{ARCHIVE_DIR}/{f.relative_to(root).as_posix()}")
        if item is not None:
            yield item


def segment_items(data_dir: Path) -> Iterator[Item]:
    """Every sealed segment (live and repair files); open ``_`` files never."""
    root = data_dir / SEGMENTS_DIR
    for f in _hive_files(root, lambda n: n.endswith(".arrow") and not n.startswith(("_", "."))):
        parsed = parse_segment_path(f)
        if parsed is None or not parsed.sealed:
            continue
        item = _file_item(data_dir, f, f"{SEGMENTS_DIR}/{f.relative_to(root).as_posix()}")
        if item is not None:
            yield item


def listing_items(data_dir: Path) -> Iterator[Item]:
    """Every file of every complete listing directory (hidden temporary directories skipped),
    its ``metadata.json`` last: a reader of the store (the shared listing's assembler) that sees
    a new ``metadata.json`` sees the data files it describes (a re-extraction's new data is put
    first; the old metadata meanwhile marks the part inconsistent, never new metadata with old
    data)."""
    root = data_dir / LISTINGS_DIR
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if d.name.startswith((".", "_")) or not d.is_dir():
            continue
        for f in sorted(d.rglob("*"), key=lambda f: (f == d / "metadata.json", f)):
            rel = f.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                continue
            item = _file_item(data_dir, f, f"{LISTINGS_DIR}/{rel.as_posix()}")
            if item is not None:
                yield item
    # the "nothing recorded here" parts (recorder/upbit/trigger.py write_nothing_part): their
    # metadata.json alone, as the part of the listing of that name (a real directory wins)
    nothing = data_dir / NOTHING_DIR
    if nothing.is_dir():
        for d in sorted(nothing.iterdir()):
            if d.name.startswith((".", "_")) or (root / d.name).exists():
                continue
            item = _file_item(data_dir, d / "metadata.json", f"{LISTINGS_DIR}/{d.name}/metadata.json")
            if item is not None:
                yield item


def journal_hours(data: bytes) -> dict[int, list[bytes]]:
    """The journal's complete lines grouped by the UTC hour of their ``ts`` (file order kept);
    a line without a readable ``ts`` is left out (a torn last line has no newline yet)."""
    out: dict[int, list[bytes]] = {}
    end = data.rfind(b"\n")
    if end < 0:
        return out
    for line in data[: end + 1].splitlines(keepends=True):
        m = _TS_RE.search(line, 0, 64)
        if m is None:
            continue
        ts = int(m.group(1))
        out.setdefault(ts - ts % US_PER_HOUR, []).append(line)
    return out


def _constant(blob: bytes) -> Callable[[], bytes]:
    return lambda: blob


def journal_items(data_dir: Path, now_us: int, grace_s: float) -> Iterator[Item]:
    """One item per stream and closed journal hour (hour end + `grace_s` passed)."""
    root = data_dir / JOURNAL_DIR
    for stream in STREAMS:
        path = root / f"{stream}.ndjson"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for hour_us, lines in sorted(journal_hours(data).items()):
            if hour_us + US_PER_HOUR + int(grace_s * US_PER_S) > now_us:
                continue
            t = datetime.fromtimestamp(hour_us // US_PER_S, UTC)
            blob = b"".join(lines)
            yield Item(
                ident=f"{JOURNAL_DIR}/{stream}.ndjson#{t:%Y-%m-%dT%H}",
                key=f"{JOURNAL_DIR}/{stream}/date={t:%Y-%m-%d}/{t:%H}.ndjson",
                version=str(len(lines)),
                size_hint=len(blob),
                load=_constant(blob),
                grows_only=True,
            )


def sealed_items(
    data_dir: str | os.PathLike[str], remote: RemoteSettings, now_us: int | None = None
) -> list[Item]:
    """Everything sealed that belongs in the store, oldest kind of data first: archive,
    segments (if enabled), journal hours, listings; each `Item.key` is its full destination
    (``bucket/prefix/recorder=<id>/…``), so a changed url or recorder id uploads everything
    again to the new place."""
    d = Path(data_dir)
    now = _now_us() if now_us is None else now_us
    items = list(archive_items(d))
    if remote.upload_segments:
        items.extend(segment_items(d))
    items.extend(journal_items(d, now, remote.journal_grace_s))
    items.extend(listing_items(d))
    return [dataclasses.replace(i, key=destination(remote, i.key)) for i in items]


def destination(remote: RemoteSettings, key: str) -> str:
    """``bucket/prefix/recorder=<id>/<key>``: where this recorder puts `key`."""
    return parse_url(remote.url).recorder_path(remote.resolved_recorder_id(), key)


def _needs_upload(item: Item, done: tuple[str, str, str] | None) -> bool:
    """Whether `item` differs (cheaply: by its version) from what the manifest says was put."""
    if done is None:
        return True
    key, version, _sha = done
    if key != item.key:
        return True
    if item.grows_only:
        return int(item.version) > int(version)
    return version != item.version


def _listing_of(ident: str) -> str | None:
    """The listing directory name of a listing item's ident (a local listing file, or a
    "nothing recorded here" part), else None."""
    parts = ident.split("/")
    if parts[0] == LISTINGS_DIR and len(parts) > 2:
        return parts[1]
    if ident.startswith(NOTHING_DIR + "/") and len(parts) > 3:
        return parts[2]
    return None


def pending_items(manifest: Manifest, items: list[Item]) -> list[Item]:
    done = manifest.all()
    return [i for i in items if _needs_upload(i, done.get(i.ident))]


# --- retention's questions ---------------------------------------------------------------------


class UploadedIndex:
    """Retention's questions against one read of the manifest (cheap to ask per file):
    whether a local file, or a journal hour, is in `remote`'s store as it is now."""

    def __init__(self, data_dir: str | os.PathLike[str], remote: RemoteSettings) -> None:
        self.data_dir = Path(data_dir)
        self.remote = remote
        self._manifests: dict[Path, dict[str, set[tuple[str, int, int]]]] = {}
        manifest = Manifest(self.data_dir, create=False)
        try:
            self._done = manifest.all()
        finally:
            manifest.close()

    def file(self, path: str | os.PathLike[str]) -> bool:
        """Whether the file at `path` is in the store as it is now. A sealed segment that is not
        copied itself (``upload_segments`` off) counts as uploaded only when its rows are in an
        uploaded archive file: the archive hour holding it (``archive/…/date=<d>/<HH>.parquet``)
        is in the store as it is now *and* that hour's archive manifest (``.sources.json``,
        written after the file, so never ahead of it) lists the segment's fingerprint (name,
        size, mtime). A repair file, a reparsed segment or one sealed into an hour archived
        before it is therefore kept until the archiver rebuilt the hour and that file went up.
        A missing file is not "uploaded"."""
        p = Path(path)
        if self._as_is(p):
            return True
        seg = parse_segment_path(p)
        if seg is not None and seg.sealed and not self.remote.upload_segments:
            from pumpwatch.segments.retention import archive_hour_key

            try:
                rel = p.relative_to(self.data_dir / SEGMENTS_DIR)
            except ValueError:
                return False
            directory = self.data_dir / ARCHIVE_DIR / rel.parent
            hour = archive_hour_key(seg.start_us)
            if not self._as_is(directory / f"{hour}.parquet"):
                return False
            return (seg.path.name, seg.size_bytes, seg.mtime_us) in self._archived(directory).get(hour, set())
        return False

    def _archived(self, directory: Path) -> dict[str, set[tuple[str, int, int]]]:
        """The archive manifest of `directory` (per hour, the fingerprints of the segments its
        file was built from), read once; an unreadable one counts as empty (nothing archived)."""
        from pumpwatch.segments.retention import archive_manifest

        if directory not in self._manifests:
            hours = archive_manifest(directory) or {}
            self._manifests[directory] = {k: set(v) for k, v in hours.items()}
        return self._manifests[directory]

    def _as_is(self, f: Path) -> bool:
        item = _file_item(self.data_dir, f, "")
        if item is None:
            return False
        done = self._done.get(item.ident)
        return (
            done is not None and done[0] == destination(self.remote, item.ident) and done[1] == item.version
        )

    def journal_hour(self, stream: str, hour_us: int, lines: int) -> bool:
        """Whether the store holds at least `lines` lines of `stream`'s journal hour."""
        t = datetime.fromtimestamp(hour_us // US_PER_S, UTC)
        done = self._done.get(f"{JOURNAL_DIR}/{stream}.ndjson#{t:%Y-%m-%dT%H}")
        if done is None:
            return False
        key = destination(self.remote, f"{JOURNAL_DIR}/{stream}/date={t:%Y-%m-%d}/{t:%H}.ndjson")
        return done[0] == key and int(done[1]) >= lines

    def journal_cutoff(self, stream: str, cutoff_us: int) -> int:
        """`cutoff_us`, moved back to the start of the oldest journal hour before it that is not
        (completely) in the store: journal lines older than the result may be dropped."""
        try:
            data = (self.data_dir / JOURNAL_DIR / f"{stream}.ndjson").read_bytes()
        except FileNotFoundError:
            return cutoff_us
        for hour_us, lines in sorted(journal_hours(data).items()):
            if hour_us >= cutoff_us:
                break
            if not self.journal_hour(stream, hour_us, len(lines)):
                return hour_us
        return cutoff_us


def is_uploaded(
    data_dir: str | os.PathLike[str], path: str | os.PathLike[str], remote: RemoteSettings
) -> bool:
    """Whether the file at `path` (in the data dir) is in `remote`'s store as it is now.

    A sealed segment that is not copied itself (``upload_segments`` off) counts as uploaded
    when the archive hour holding it (``archive/…/date=<d>/<HH>.parquet``) is uploaded as it is
    now and lists the segment in its manifest (`UploadedIndex.file`). A file that does not
    exist any more is not "uploaded" (nothing to decide)."""
    return UploadedIndex(data_dir, remote).file(path)


def not_yet_uploaded(
    data_dir: str | os.PathLike[str], remote: RemoteSettings, now_us: int | None = None
) -> list[str]:
    """Idents (data-dir relative paths; ``journal/<stream>.ndjson#<day>T<HH>`` for a journal
    hour) of everything sealed that is not yet in the store as it is now."""
    manifest = Manifest(data_dir, create=False)
    try:
        return [i.ident for i in pending_items(manifest, sealed_items(data_dir, remote, now_us))]
    finally:
        manifest.close()


def upload_status(
    data_dir: str | os.PathLike[str], remote: RemoteSettings, now_us: int | None = None
) -> UploadStatus:
    """The upload figures as seen from any process: backlog counted now from the disk and the
    manifest, last upload from the manifest, failures and the last error from the running (or
    last) uploader's ``remote/status.json`` (counted since that uploader started)."""
    if not remote.enabled:
        return UploadStatus(enabled=False)
    d = Path(data_dir)
    st = UploadStatus(enabled=True, recorder_id=remote.resolved_recorder_id(), url=remote.url)
    try:
        saved = orjson.loads((d / REMOTE_DIR / STATUS_NAME).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        saved = {}
    for name in ("uploaded_files", "uploaded_bytes", "failures", "consecutive_failures", "last_round_us",
                 "last_error", "last_failure_us", "next_attempt_us"):  # fmt: skip
        if name in saved:
            setattr(st, name, saved[name])
    manifest = Manifest(d, create=False)
    try:
        pending = pending_items(manifest, sealed_items(d, remote, now_us))
        st.last_upload_us = manifest.last_upload_us()
    finally:
        manifest.close()
    st.backlog_files = len(pending)
    st.backlog_bytes = sum(i.size_hint for i in pending)
    return st


# --- the uploader ------------------------------------------------------------------------------


@dataclass
class RoundResult:
    uploaded: list[str] = field(default_factory=list)  # idents put this round
    skipped_same_bytes: int = 0  # changed stat, identical bytes: recorded, not sent
    backlog_files: int = 0  # still pending after the round
    backlog_bytes: int = 0
    error: str | None = None


class Uploader:
    """Uploads this recorder's sealed files in rounds, in its own thread (`start`/`stop`) or
    one round at a time (`run_once`). Never raises out of a round: a failed put ends the round,
    is counted, and the next round waits a capped, jittered backoff."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        remote: RemoteSettings,
        *,
        filesystem: pafs.FileSystem | None = None,
        clock_us: Callable[[], int] = _now_us,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.remote = remote
        self.root: RemoteRoot = parse_url(remote.url)
        self.recorder_id = remote.resolved_recorder_id()
        self.fs = filesystem if filesystem is not None else filesystem_for(remote)
        self.manifest = Manifest(self.data_dir)
        self._clock_us = clock_us
        self._status = UploadStatus(
            enabled=True,
            recorder_id=self.recorder_id,
            url=remote.url,
            last_upload_us=self.manifest.last_upload_us(),
        )
        self._carry_over()
        self._backoff_s = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._round_lock = threading.Lock()
        self._made_dirs: set[str] = set()

    def _carry_over(self) -> None:
        """Keep the failure count of the previous uploader of this data dir (a restarted
        `record`), so ``pumpwatch_upload_failures_total`` and `status` count across restarts."""
        try:
            saved = orjson.loads((self.data_dir / REMOTE_DIR / STATUS_NAME).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return
        if saved.get("url") != self.remote.url or saved.get("recorder_id") != self.recorder_id:
            return
        with contextlib.suppress(TypeError, ValueError):
            self._status.failures = int(saved.get("failures") or 0)
            self._status.last_error = saved.get("last_error")
            self._status.last_failure_us = saved.get("last_failure_us")

    def _put(self, path: str, data: bytes) -> None:
        """One atomic object put of `data` at `path` (``bucket/key``), its size checked."""
        with self.fs.open_output_stream(path) as out:
            out.write(data)
        info = self.fs.get_file_info(path)
        if info.size != len(data):
            raise OSError(f"{path}: stored {info.size} bytes, sent {len(data)}")

    # one round

    def run_once(self) -> RoundResult:
        """Scan what is sealed, put what is pending (at most the per-round bounds)."""
        with self._round_lock:
            return self._round()

    def _round(self) -> RoundResult:
        result = RoundResult()
        now = self._clock_us()
        pending = pending_items(self.manifest, sealed_items(self.data_dir, self.remote, now))
        files_left = self.remote.max_files_per_round
        bytes_left = self.remote.max_bytes_per_round
        handled = 0  # items read this round (put, or found identical)
        skipped: set[str] = set()
        held: set[str] = set()  # listing directories with a file that could not be read
        for item in pending:
            if files_left <= 0 or (bytes_left <= 0 and handled > 0):
                break
            listing = _listing_of(item.ident)
            if listing is not None and listing in held:
                continue  # never its metadata.json without the files read before it
            try:
                data = item.load()
            except FileNotFoundError:  # pruned or replaced since the scan: the next round sees it
                if listing is not None:
                    held.add(listing)
                continue
            handled += 1
            sha = hashlib.sha256(data).hexdigest()
            done = self.manifest.get(item.ident)
            if done is not None and done[0] == item.key and done[2] == sha:
                self.manifest.put(item.ident, item.key, item.version, sha, len(data))
                result.skipped_same_bytes += 1
                skipped.add(item.ident)
                bytes_left -= len(data)  # reading and hashing counts against the round's bound
                continue
            try:
                self._put(item.key, data)
            except OSError as exc:
                result.error = f"{item.key}: {exc}"
                self._failed(result.error)
                break
            self.manifest.put(item.ident, item.key, item.version, sha, len(data))
            result.uploaded.append(item.ident)
            files_left -= 1
            bytes_left -= len(data)
            self._status.uploaded_files += 1
            self._status.uploaded_bytes += len(data)
            self._status.last_upload_us = self._clock_us()
        if result.error is None and result.uploaded:  # only a put proves the store reachable
            if self._status.consecutive_failures:
                log.info("remote store reachable again: uploads resumed (%s)", self.remote.url)
            self._status.consecutive_failures = 0
            self._backoff_s = 0.0
        handled_idents = set(result.uploaded) | skipped
        left = [i for i in pending if i.ident not in handled_idents]  # as of this round's scan
        result.backlog_files = len(left)
        result.backlog_bytes = sum(i.size_hint for i in left)
        self._status.backlog_files = result.backlog_files
        self._status.backlog_bytes = result.backlog_bytes
        self._status.last_round_us = self._clock_us()
        self._publish()
        return result

    def _publish(self) -> None:
        """Write the figures to ``remote/status.json`` for `upload_status` in other processes."""
        try:
            write_file_atomic(
                self.data_dir / REMOTE_DIR / STATUS_NAME,
                orjson.dumps(self.status().__dict__),
                sync_dir=False,  # a lost status file costs nothing: the next round rewrites it
            )
        except OSError as exc:
            log.warning("cannot write upload status: %s", exc)

    def _failed(self, error: str) -> None:
        st = self._status
        if st.consecutive_failures == 0:
            log.warning("remote store upload failed, retrying with backoff: %s", error)
        st.failures += 1
        st.consecutive_failures += 1
        st.last_error = error
        st.last_failure_us = self._clock_us()
        base = self.remote.backoff_initial_s if self._backoff_s == 0 else self._backoff_s * 2
        self._backoff_s = min(base, self.remote.backoff_max_s)

    def next_wait_s(self, result: RoundResult) -> float:
        """Seconds until the next round: the backoff after a failure (jittered ±20 %), at
        once while a backlog remains, else the upload interval."""
        if result.error is not None:
            return self._backoff_s * random.uniform(0.8, 1.2)
        if result.backlog_files:
            return 0.0
        return self.remote.upload_interval_s

    def status(self) -> UploadStatus:
        """A copy of the current figures (backlog as of the last round)."""
        st = self._status
        return UploadStatus(**{k: getattr(st, k) for k in st.__dataclass_fields__})

    # the thread

    def start(self) -> None:
        """Upload in a daemon thread until `stop`."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="pumpwatch-upload", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Start the next round now (for example right after an hour is archived)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.run_once()
            except Exception as exc:  # a local fault (unreadable dir): keep the thread alive, report
                log.exception("upload round failed")
                error = f"{type(exc).__name__}: {exc}"
                result = RoundResult(error=error)
                self._failed(error)
            wait_s = self.next_wait_s(result)
            self._status.next_attempt_us = self._clock_us() + int(wait_s * US_PER_S)
            self._wake.wait(wait_s)
            self._wake.clear()

    def stop(self, timeout_s: float = 10.0, *, final_round: bool = False) -> None:
        """Stop after the current put; the manifest stays consistent whatever the timing. With
        `final_round`, one more round first (what was sealed at shutdown; a failure simply
        leaves it pending for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # a put still hanging: leave the manifest to it
                log.warning("upload thread still busy after %.1f s; leaving it", timeout_s)
                return
            self._thread = None
        if final_round:
            try:
                self.run_once()
            except Exception:
                log.exception("final upload round failed; the rest is uploaded at the next start")
        self.manifest.close()
