"""Atomic, durable writes: a reader sees the old file or directory or the new one, never half.

The one place that writes a file as temp + fsync + rename, swaps a finished directory in, and
fsyncs a directory entry. Every folder (segments, extractor, detector, recorder) uses it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import orjson

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync one file in place (inside a directory not yet visible to readers)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_file_atomic(path: str | os.PathLike[str], data: bytes, *, sync_dir: bool = True) -> Path:
    """Replace `path` with `data`: a hidden temp file in the same directory, fsync, rename,
    then (unless `sync_dir` is False) fsync the directory so the rename survives a crash.

    The parent directory is created when missing; the temp file is removed on any failure.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp_file(target)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)
    return target


def _create_temp_file(target: Path) -> tuple[int, Path]:
    """A new hidden file next to `target`, mode 0666 less the umask (mkstemp's 0600 would make
    every replaced file private to the writing user)."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {target}")


def json_bytes(obj: Any) -> bytes:
    """An indented JSON document with a final newline (the look of every JSON file written)."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def write_json(path: Path, obj: Any) -> None:
    """`json_bytes(obj)` written and fsynced in place (see `write_bytes`)."""
    write_bytes(path, json_bytes(obj))


def _libc_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):
        return None


_renameat2 = _libc_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where unsupported."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def make_temp_dir(target: Path) -> Path:
    """An empty directory next to `target` (same filesystem, so the final rename is atomic).

    Its mode follows the umask like any ``mkdir`` (0755 under the usual 022), not mkdtemp's
    0700: the directory is renamed into place and must be as readable as its neighbours (a
    listing written by a service user is read by people and other tools). The hidden name
    keeps dataset readers and listings away from it until then.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {target}")


def replace_dir(tmp: Path, target: Path) -> None:
    """Put the finished directory `tmp` at `target`, replacing an older one atomically.

    On Linux the swap is a single renameat2(RENAME_EXCHANGE), so `target` always names a
    complete directory; elsewhere there is a moment with no `target` at all, never a partial one.
    """
    for sub in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
        fsync_dir(sub)
    if target.exists():
        if _exchange(tmp, target):
            shutil.rmtree(tmp)  # tmp now holds the old directory
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "d")
            os.rename(tmp, target)
            shutil.rmtree(old)
    else:
        os.rename(tmp, target)
    fsync_dir(target.parent)
