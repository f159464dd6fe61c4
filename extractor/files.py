"""Writing an output directory so that a reader never sees it half-written: build it under a
temporary name next to the target, fsync, then swap it in with one rename."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.segments.durable import fsync_dir

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


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
    """An empty directory next to `target` (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


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


def write_bytes(path: Path, data: bytes) -> None:
    """Write and fsync one file."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: Path, obj: Any) -> None:
    """An indented JSON document with a final newline."""
    write_bytes(path, orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))


def write_json_lines_array(path: Path, items: Iterable[Any]) -> None:
    """A JSON array with one element per line: valid JSON, yet greppable and diffable."""
    lines = [orjson.dumps(item) for item in items]
    body = b"[\n" + b",\n".join(lines) + b"\n]\n" if lines else b"[]\n"
    write_bytes(path, body)
