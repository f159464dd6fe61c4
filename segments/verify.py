"""Check every batch's checksum in a range of the store: what ``pumpwatch verify`` runs.

`verify_store` reads every segment file (sealed and open, repair files too) of the chosen
streams whose hour meets the range, checks every record batch against its checksum
(``checksum.py``) and reports per file: how many batches passed, how many carry no checksum
(segments written before checksums existed: nothing to verify), and each damaged part with
its trade-time span: a batch failing its checksum, a batch recovery or sealing left out for
one (recorded in the sealed file), an unreadable file or tail. It changes nothing on disk:
damaged batches stay where they are, and every reader skips them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumpwatch.segments.checksum import OK, UNCHECKED
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import Damage, inspect_segment

_ALL = (-(2**62), 2**62)


@dataclass
class FileVerdict:
    """One segment file as `verify_store` found it."""

    path: Path
    stream: str
    sealed: bool
    start_us: int
    hour_end_us: int
    batches: int = 0  # complete record batches found
    ok: int = 0  # passed their checksum
    unchecked: int = 0  # carry no checksum (written before checksums existed)
    damage: list[Damage] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``damaged``, ``unchecked`` (nothing could be verified) or ``ok``."""
        if self.damage:
            return "damaged"
        return "unchecked" if self.unchecked and not self.ok else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "stream": self.stream,
            "sealed": self.sealed,
            "start_us": self.start_us,
            "hour_end_us": self.hour_end_us,
            "status": self.status,
            "batches": self.batches,
            "batches_ok": self.ok,
            "batches_unchecked": self.unchecked,
            "damaged": [
                {
                    "time_min_us": d.time_min_us,
                    "time_max_us": d.time_max_us,
                    "rows": d.rows,
                    "reason": d.reason,
                }
                for d in self.damage
            ],
        }


def verify_store(
    data_dir: str | os.PathLike[str],
    *,
    streams: Sequence[str] | None = None,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[FileVerdict]:
    """A verdict per segment file of `streams` (None: all) whose hour meets ``[start_us, end_us]``
    (None: unbounded), in stream then time order. Every batch of a chosen file is checked."""
    out: list[FileVerdict] = []
    for seg in list_segments(data_dir, streams, start_us=start_us, end_us=end_us):
        verdict = FileVerdict(seg.path, seg.stream, seg.sealed, seg.start_us, seg.hour_end_us)
        found = inspect_segment(seg, *_ALL)
        if found is None:
            continue  # sealed or pruned since it was listed: its other name is listed too, or gone
        verdict.batches = len(found.scan.batches)
        statuses = list(found.checks.status.values())
        verdict.ok = statuses.count(OK)
        verdict.unchecked = statuses.count(UNCHECKED)
        verdict.damage = found.damage
        out.append(verdict)
    return out


def summary(verdicts: Sequence[FileVerdict]) -> dict[str, Any]:
    """Totals of a `verify_store` result, JSON-ready (``files`` holds each `FileVerdict`)."""
    damaged = [v for v in verdicts if v.status == "damaged"]
    return {
        "ok": not damaged,
        "files": len(verdicts),
        "files_damaged": len(damaged),
        "files_unchecked": sum(1 for v in verdicts if v.status == "unchecked"),
        "batches": sum(v.batches for v in verdicts),
        "batches_ok": sum(v.ok for v in verdicts),
        "batches_unchecked": sum(v.unchecked for v in verdicts),
        "damaged_parts": sum(len(v.damage) for v in verdicts),
        "file_verdicts": [v.to_dict() for v in verdicts],
    }
