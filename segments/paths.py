"""The on-disk layout of the store's hourly files (DESIGN §5, §6), segments and frames alike,
and how a path maps back to its stream and hour: the one model of an hourly file.

    <data_dir>/segments/exchange=<exchange>/market=<market>/date=<YYYY-MM-DD>/<HHMMSS>.arrow
    <data_dir>/frames/exchange=<exchange>/market=<market>/date=<YYYY-MM-DD>/<HHMMSS>.ndjson.zst

``HHMMSS`` is the UTC second the file was opened (normally ``HH0000``). A segment still being
written is named ``_<HHMMSS>.arrow`` so that dataset readers (pyarrow, DuckDB) skip it. Paths
are built only from validated stream ids, never from strings that came off the network.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from pumpwatch.errors import StoreError, UsageError
from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_DAY, US_PER_HOUR, US_PER_S

SEGMENTS_DIR = "segments"
OPEN_PREFIX = "_"
SUFFIX = ".arrow"  # a segment
REPAIR_TAG = ".rest"  # a sealed file of rows repaired from REST history: HHMMSS.rest<N>.arrow
_STEM_RE = re.compile(r"^(_?)(\d{2})(\d{2})(\d{2})(\.rest[1-9]\d*)?$")
_DATE_RE = re.compile(r"^date=(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class HourlyFile:
    """One hourly file of the store (a segment or a frame file): its stream, the µs it was
    opened at and the end of its UTC hour."""

    path: Path
    stream: str
    start_us: int  # UTC µs of the HHMMSS in the name
    hour_end_us: int  # end of that UTC hour (exclusive)
    sealed: bool  # False while the name starts with "_" (still being written, or left by a crash)
    size_bytes: int
    mtime_us: int
    repair: bool = False  # rows repaired from REST history (``HHMMSS.rest<N>.arrow``, never open)


def hour_start_us(ts_us: int) -> int:
    """Start of the UTC hour holding `ts_us`."""
    return ts_us - ts_us % US_PER_HOUR


def _day_str(day: date | datetime | str) -> str:
    if isinstance(day, datetime):
        return day.astimezone(UTC).date().isoformat() if day.tzinfo else day.date().isoformat()
    if isinstance(day, date):
        return day.isoformat()
    if isinstance(day, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        date.fromisoformat(day)  # rejects 2024-13-45
        return day
    raise UsageError(f"expected a date YYYY-MM-DD, got {day!r}")


def stream_dir(root: Path, stream: str) -> Path:
    """``<root>/exchange=<e>/market=<m>``: one stream's tree under a store root."""
    exchange, market = split_stream(stream)
    return root / f"exchange={exchange}" / f"market={market}"


def hourly_path(root: Path, stream: str, start_us: int, suffix: str, *, sealed: bool = True) -> Path:
    """``<root>/exchange=…/market=…/date=<day>/[_]<HHMMSS><suffix>`` for a file opened at
    `start_us` (whole seconds are kept)."""
    t = datetime.fromtimestamp(start_us // US_PER_S, UTC)
    name = f"{'' if sealed else OPEN_PREFIX}{t:%H%M%S}{suffix}"
    return stream_dir(root, stream) / f"date={t.date().isoformat()}" / name


def parse_hourly_path(path: Path, suffix: str) -> HourlyFile | None:
    """The HourlyFile for a path in the layout (stat'ed), or None if the path is not one."""
    if not path.name.endswith(suffix):
        return None
    m = _STEM_RE.match(path.name[: -len(suffix)])
    d = _DATE_RE.match(path.parent.name)
    if m is None or d is None or (m[1] and m[5]):
        return None
    market_dir, exchange_dir = path.parent.parent.name, path.parent.parent.parent.name
    if not (market_dir.startswith("market=") and exchange_dir.startswith("exchange=")):
        return None
    stream = f"{exchange_dir.removeprefix('exchange=')}_{market_dir.removeprefix('market=')}"
    if stream not in STREAMS:
        return None
    try:
        start = datetime(int(d[1]), int(d[2]), int(d[3]), int(m[2]), int(m[3]), int(m[4]), tzinfo=UTC)
        info = path.stat(follow_symlinks=False)
    except (ValueError, FileNotFoundError):  # 25:00:00, or sealed/pruned between listing and stat
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    start_us = int(start.timestamp()) * US_PER_S
    return HourlyFile(
        path=path,
        stream=stream,
        start_us=start_us,
        hour_end_us=hour_start_us(start_us) + US_PER_HOUR,
        sealed=not m[1],
        size_bytes=info.st_size,
        mtime_us=info.st_mtime_ns // 1000,
        repair=m[5] is not None,
    )


def scan_hourly_files(
    root: str | os.PathLike[str],
    suffix: str,
    streams: Iterable[str] | None = None,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[HourlyFile]:
    """Every hourly file (sealed and open) with `suffix` under `root` of `streams` (None =
    all), sorted by stream (in `STREAMS` order), start, then open before sealed. Anything else
    in the tree is ignored.

    With `start_us`/`end_us`, only files whose hour overlaps [start_us, end_us] are listed,
    and only the date directories that can hold them are read (the choice is by path).
    """
    out: list[HourlyFile] = []
    chosen = STREAMS if streams is None else tuple(streams)
    for stream in chosen:
        sdir = stream_dir(Path(root), stream)
        try:
            date_dirs = sorted(os.scandir(sdir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise StoreError(f"cannot list {sdir}: {exc.strerror or exc}") from None
        for entry in date_dirs:
            d = _DATE_RE.match(entry.name)
            if d is None or not entry.is_dir():
                continue
            if start_us is not None or end_us is not None:
                try:
                    day_us = int(datetime(int(d[1]), int(d[2]), int(d[3]), tzinfo=UTC).timestamp()) * US_PER_S
                except ValueError:
                    continue
                if end_us is not None and day_us > end_us:
                    continue
                if start_us is not None and day_us + US_PER_DAY <= start_us:
                    continue
            for name in sorted(os.listdir(entry.path)):
                f = parse_hourly_path(Path(entry.path) / name, suffix)
                if f is None:
                    continue
                if start_us is not None and f.hour_end_us <= start_us:
                    continue
                if end_us is not None and f.start_us > end_us:
                    continue
                out.append(f)
    out.sort(key=lambda f: (STREAMS.index(f.stream), f.start_us, f.sealed))
    return out


# Segments: the hourly files under <data_dir>/segments with the suffix .arrow.


def segment_root(data_dir: str | os.PathLike[str]) -> Path:
    """``<data_dir>/segments``: the root of the hive-partitioned store."""
    return Path(data_dir) / SEGMENTS_DIR


def segment_dir(data_dir: str | os.PathLike[str], stream: str, day: date | datetime | str) -> Path:
    """The directory of one stream's segments for one UTC day."""
    return stream_dir(segment_root(data_dir), stream) / f"date={_day_str(day)}"


def segment_path(data_dir: str | os.PathLike[str], stream: str, start_us: int, *, sealed: bool) -> Path:
    """Full path of the segment of `stream` opened at `start_us` (whole seconds are kept)."""
    return hourly_path(segment_root(data_dir), stream, start_us, SUFFIX, sealed=sealed)


def repair_name(start_us: int, n: int) -> str:
    """``HHMMSS.rest<n>.arrow``: the `n`-th repair file whose first trade is in the second of
    `start_us`. Live files never carry the tag, so the two can never collide."""
    if n < 1:
        raise ValueError(f"repair file number must be >= 1, got {n}")
    stem = hourly_path(Path(), "binance_spot", start_us, "", sealed=True).name
    return f"{stem}{REPAIR_TAG}{n}{SUFFIX}"


def sealed_name(path: Path) -> Path:
    """``.../_HHMMSS.arrow`` -> ``.../HHMMSS.arrow``."""
    return path.with_name(path.name.removeprefix(OPEN_PREFIX))


def parse_segment_path(path: Path) -> HourlyFile | None:
    """The HourlyFile for a segment path in the layout, or None if the path is not a segment."""
    return parse_hourly_path(path, SUFFIX)


def list_segments(
    data_dir: str | os.PathLike[str],
    streams: Iterable[str] | None = None,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
) -> list[HourlyFile]:
    """Every segment file (sealed and open) of `streams`; see `scan_hourly_files`."""
    return scan_hourly_files(segment_root(data_dir), SUFFIX, streams, start_us=start_us, end_us=end_us)
