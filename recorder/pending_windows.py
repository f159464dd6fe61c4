"""The windows of pending extractions, which the free-disk floor must never evict.

The listing trigger (``recorder/upbit/trigger.py``) keeps what it still has to extract in
``<data_dir>/upbit/pending.json`` (a JSON list of ``{"symbol", "trigger_us", "due_us", ...}``,
written atomically). This module only reads it: each entry protects
``[trigger_us - before, trigger_us + after]`` (the extraction settings), and the store widens
that by the extractor's read slack (``retention.in_windows``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import orjson

from pumpwatch.timeunits import US_PER_S

log = logging.getLogger(__name__)

PENDING_FILE = Path("upbit") / "pending.json"


def pending_windows(
    data_dir: str | os.PathLike[str], before_s: float, after_s: float
) -> list[tuple[int, int]]:
    """``(start_us, end_us)`` of every pending extraction; [] when there is none or the file is
    unreadable (logged: a damaged file protects nothing, as the trigger ignores it too)."""
    path = Path(data_dir) / PENDING_FILE
    try:
        items = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("pending extractions %s unreadable (%s): no window protected from eviction", path, exc)
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        trigger = item.get("trigger_us") if isinstance(item, dict) else None
        if isinstance(trigger, int):
            out.append((trigger - int(before_s * US_PER_S), trigger + int(after_s * US_PER_S)))
    return out


def pending_windows_of(
    data_dir: str | os.PathLike[str], before_s: float, after_s: float
) -> Callable[[], list[tuple[int, int]]]:
    """`pending_windows` as a callback for `DiskWatch(protected_spans=...)`."""
    return lambda: pending_windows(data_dir, before_s, after_s)
