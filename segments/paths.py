"""Where segments live on disk (DESIGN §5) and how a path maps back to its stream and hour.

    <data_dir>/segments/exchange=<exchange>/market=<market>/date=<YYYY-MM-DD>/<HHMMSS>.arrow

``HHMMSS`` is the UTC second the file was opened (normally ``HH0000``). A file still being
written is named ``_<HHMMSS>.arrow`` so that dataset readers (pyarrow, DuckDB) skip it. Paths
are built only from validated stream ids, never from strings that came off the network.

Rows repaired from an exchange's REST history are written by ``repair.py`` as separate sealed
files ``<HHMMSS>.rest<N>.arrow`` in the directory of their **trade** hour: ``HHMMSS`` is the
second of the file's first trade, ``N`` (1, 2, …) makes the name unique. The live writer's
names never contain ``.rest``, so the two can never collide; listing, reading, retention and
status treat a repair file like any sealed segment of its hour.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from pumpwatch.errors import StoreError, UsageError
from pumpwatch.streams import STREAMS, split_stream

US_PER_S = 1_000_000
US_PER_HOUR = 3600 * US_PER_S
US_PER_DAY = 24 * US_PER_HOUR

OPEN_PREFIX = "_"
SUFFIX = ".arrow"
REPAIR_TAG = ".rest"
_NAME_RE = re.compile(r"^(_?)(\d{2})(\d{2})(\d{2})(\.rest[1-9]\d*)?\.arrow$")
_DATE_RE = re.compile(r"^date=(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """One segment file: its stream, the µs it was opened at and the end of its hour."""

    path: Path
    stream: str
    start_us: int  # UTC µs of the HHMMSS in the name
    end_us: int  # end of that UTC hour (exclusive)
    sealed: bool  # False while the name starts with "_" (still being written, or left by a crash)
    size_bytes: int
    repair: bool = False  # a file of rows repaired from REST history (``HHMMSS.rest<N>.arrow``)


def segment_root(data_dir: str | os.PathLike[str]) -> Path:
    """``<data_dir>/segments``: the root of the hive-partitioned store."""
    return Path(data_dir) / "segments"


def _day_str(day: date | datetime | str) -> str:
    if isinstance(day, datetime):
        return day.astimezone(UTC).date().isoformat() if day.tzinfo else day.date().isoformat()
    if isinstance(day, date):
        return day.isoformat()
    if isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        date.fromisoformat(day)  # rejects 2024-13-45
        return day
    raise UsageError(f"expected a date YYYY-MM-DD, got {day!r}")


def segment_dir(data_dir: str | os.PathLike[str], stream: str, day: date | datetime | str) -> Path:
    """The directory of one stream's segments for one UTC day."""
    exchange, market = split_stream(stream)
    return segment_root(data_dir) / f"exchange={exchange}" / f"market={market}" / f"date={_day_str(day)}"


def hour_start_us(ts_us: int) -> int:
    """Start of the UTC hour holding `ts_us`."""
    return ts_us - ts_us % US_PER_HOUR


def segment_name(start_us: int, *, sealed: bool) -> str:
    """``HHMMSS.arrow`` (or ``_HHMMSS.arrow`` while open) for a file opened at `start_us`."""
    t = datetime.fromtimestamp(start_us // US_PER_S, UTC)
    return f"{'' if sealed else OPEN_PREFIX}{t:%H%M%S}{SUFFIX}"


def segment_path(data_dir: str | os.PathLike[str], stream: str, start_us: int, *, sealed: bool) -> Path:
    """Full path of the segment of `stream` opened at `start_us` (whole seconds are kept)."""
    day = datetime.fromtimestamp(start_us // US_PER_S, UTC).date()
    return segment_dir(data_dir, stream, day) / segment_name(start_us, sealed=sealed)


def repair_name(start_us: int, n: int) -> str:
    """``HHMMSS.rest<n>.arrow``: the `n`-th repair file whose first trade is in the second of `start_us`."""
    if n < 1:
        raise ValueError(f"repair file number must be >= 1, got {n}")
    return f"{segment_name(start_us, sealed=True).removesuffix(SUFFIX)}{REPAIR_TAG}{n}{SUFFIX}"


def sealed_name(path: Path) -> Path:
    """``.../_HHMMSS.arrow`` -> ``.../HHMMSS.arrow``."""
    return path.with_name(path.name.removeprefix(OPEN_PREFIX))


def parse_segment_path(path: Path) -> SegmentFile | None:
    """The SegmentFile for a path in the layout, or None if the path is not a segment."""
    m = _NAME_RE.match(path.name)
    d = _DATE_RE.match(path.parent.name)
    if m is None or d is None or (m.group(1) and m.group(5)):  # a repair file is never open
        return None
    market_dir, exchange_dir = path.parent.parent.name, path.parent.parent.parent.name
    if not (market_dir.startswith("market=") and exchange_dir.startswith("exchange=")):
        return None
    stream = f"{exchange_dir.removeprefix('exchange=')}_{market_dir.removeprefix('market=')}"
    if stream not in STREAMS:
        return None
    hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4))
    if hh > 23 or mm > 59 or ss > 59:
        return None
    try:
        day = datetime(int(d.group(1)), int(d.group(2)), int(d.group(3)), tzinfo=UTC)
    except ValueError:
        return None
    start_us = int(day.timestamp()) * US_PER_S + (hh * 3600 + mm * 60 + ss) * US_PER_S
    try:
        size = path.stat().st_size
    except FileNotFoundError:  # sealed or pruned between listing and stat
        return None
    return SegmentFile(
        path=path,
        stream=stream,
        start_us=start_us,
        end_us=hour_start_us(start_us) + US_PER_HOUR,
        sealed=not m.group(1),
        size_bytes=size,
        repair=m.group(5) is not None,
    )


def _stream_dirs(data_dir: str | os.PathLike[str], streams: Iterable[str] | None) -> list[tuple[str, Path]]:
    root = segment_root(data_dir)
    chosen = STREAMS if streams is None else tuple(streams)
    out = []
    for stream in chosen:
        exchange, market = split_stream(stream)
        out.append((stream, root / f"exchange={exchange}" / f"market={market}"))
    return out


def list_segments(
    data_dir: str | os.PathLike[str],
    streams: Iterable[str] | None = None,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[SegmentFile]:
    """Every segment file (sealed and open) of `streams` (None = all), by stream then start.

    With `start_us`/`end_us`, only date directories that can hold files whose hour overlaps
    [start_us, end_us] are listed (the choice is by path, no file is opened).
    """
    out: list[SegmentFile] = []
    for _stream, stream_dir in _stream_dirs(data_dir, streams):
        try:
            date_dirs = sorted(os.scandir(stream_dir), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreError(f"cannot list {stream_dir}: {exc.strerror or exc}") from None
        for entry in date_dirs:
            d = _DATE_RE.match(entry.name)
            if d is None or not entry.is_dir():
                continue
            if start_us is not None or end_us is not None:
                try:
                    day_us = int(datetime.fromisoformat(entry.name[5:] + "T00:00:00+00:00").timestamp())
                except ValueError:
                    continue
                day_us *= US_PER_S
                if end_us is not None and day_us > end_us:
                    continue
                if start_us is not None and day_us + US_PER_DAY <= start_us:
                    continue
            for name in sorted(os.listdir(entry.path)):
                seg = parse_segment_path(Path(entry.path) / name)
                if seg is None:
                    continue
                if start_us is not None and seg.end_us <= start_us:
                    continue
                if end_us is not None and seg.start_us > end_us:
                    continue
                out.append(seg)
    out.sort(key=lambda s: (STREAMS.index(s.stream), s.start_us, s.sealed))
    return out
