"""The one shared listing directory of a notice (issue 14, "one listing, one complete directory").

Every recorder's Upbit watcher extracts the streams it records into its own
``data/listings/<SYM>_<T>/``; the uploader copies it to ``recorder=<id>/listings/<SYM>_<T>/``
(a *part*). This module assembles the parts into ``<prefix>/listings/<SYM>_<T>/``:

- per stream, the rows of every part holding it, merged by the trade key with
  `pumpwatch.segments.remote_read.merge_recorders` (each trade once), and the coverage as the
  union of the parts' listening (a span is a gap/missing only when it is one in every part);
- the detector runs on the whole (``refined/`` as after a local extraction);
- ``metadata.json`` names the parts (recorder ids, their streams), the streams present and the
  missing ones with the reason (``no recorder records it`` / ``part of recorder X missing at the
  deadline``). It is written last, so a reader that sees it sees the complete directory.

Who assembles: every recorder's housekeeping round (`assemble_pending`). The output depends only
on the parts (no clock, no host name), so two recorders assembling at once write identical
objects; a recorder that dies at any point leaves the others to finish.

When: each recorder publishes ``recorder=<id>/recorder.json`` (its heartbeat and its interval)
every round. The recorders *expected* for a notice at T are those alive at T: their last
heartbeat plus `LIVENESS_BEATS` intervals reaches T (a heartbeat written just before T by a
recorder killed just after it still counts; one that stopped minutes earlier does not). The
directory is written as soon as every expected recorder's part is in (and T + after has
passed), else at T + after + ``remote.listing_deadline_s`` with what is there. A part that
arrives later re-assembles and replaces it (the metadata's ``parts`` differ).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from pumpwatch.streams import STREAMS, split_stream
from pumpwatch.timeunits import US_PER_S

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.fs as pafs

    from pumpwatch.segments.remote import RemoteRoot
    from pumpwatch.settings import PumpSettings

log = logging.getLogger(__name__)

SHARED_DIR = "listings"
RECORDER_FILE = "recorder.json"
DEFAULT_DEADLINE_S = 300.0
DEFAULT_BEAT_S = 15.0  # the housekeeping round (recorder/housekeeping.py CHECK_S) when unnamed
LIVENESS_BEATS = 3  # a recorder counts as alive this many intervals after its last heartbeat


@dataclass
class Part:
    recorder: str
    meta: dict[str, Any]
    table: pa.Table


@dataclass
class Assembled:
    name: str
    written: bool
    complete: bool  # every expected recorder's part was in
    meta: dict[str, Any]


def _read_bytes(fs: pafs.FileSystem, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return bytes(f.read())
    except (FileNotFoundError, OSError):
        return None


def _write_bytes(fs: pafs.FileSystem, path: str, body: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(body)


def _listdir(fs: pafs.FileSystem, path: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def publish_heartbeat(
    fs: pafs.FileSystem, root: RemoteRoot, recorder_id: str, now_us: int, every_s: float = DEFAULT_BEAT_S
) -> None:
    """``recorder=<id>/recorder.json``: this recorder is alive at `now_us` and writes this
    again every `every_s` (its housekeeping round)."""
    body = orjson.dumps({"recorder_id": recorder_id, "heartbeat_us": now_us, "every_s": every_s})
    _write_bytes(fs, root.recorder_path(recorder_id, RECORDER_FILE), body)


def _heartbeats(fs: pafs.FileSystem, root: RemoteRoot) -> dict[str, int]:
    """``{recorder id: alive until µs}``: its last heartbeat plus `LIVENESS_BEATS` of its
    interval (0 for a recorder without a readable heartbeat)."""
    from pumpwatch.segments.remote import recorder_ids

    out: dict[str, int] = {}
    for rid in recorder_ids(fs, root):
        raw = _read_bytes(fs, root.recorder_path(rid, RECORDER_FILE))
        with contextlib.suppress(Exception):
            beat = orjson.loads(raw) if raw else {}
            every_s = float(beat.get("every_s") or DEFAULT_BEAT_S)
            out[rid] = int(beat["heartbeat_us"]) + int(LIVENESS_BEATS * every_s * US_PER_S)
        out.setdefault(rid, 0)
    return out


def _read_part(fs: pafs.FileSystem, root: RemoteRoot, rid: str, name: str) -> Part | None:
    """A recorder's uploaded part, or None while it is not complete (metadata.json and
    raw/trades.parquet both there and readable, and from the same run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = root.recorder_path(rid, "listings", name)
    raw_meta = _read_bytes(fs, f"{base}/metadata.json")
    raw_table = _read_bytes(fs, f"{base}/raw/trades.parquet")
    if raw_meta is None or raw_table is None:
        return None
    try:
        meta = orjson.loads(raw_meta)
        table = pq.read_table(io.BytesIO(raw_table))
    except (orjson.JSONDecodeError, pa.ArrowException, OSError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("streams"), dict):
        return None
    if table.num_rows != int(meta.get("trades", -1)):  # the two files of different runs
        return None
    return Part(rid, meta, table)


def _spans(entries: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(int(e["start_us"]), int(e["end_us"])) for e in entries]


def _union_coverage(covs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The coverage of a stream recorded by several parts: a gap (or missing span) is one only
    where it is one in every part (each part's entry is kept under ``by_recorder``)."""
    from pumpwatch.extractor.metadata import span_entry as span
    from pumpwatch.segments.remote_read import intersect_spans
    from pumpwatch.utctime import format_utc

    if len(covs) == 1:
        ((rid, cov),) = covs.items()
        return {**cov, "recorders": [rid]}
    items = sorted(covs.items())
    known = [c for _r, c in items if c.get("known")]
    gaps: list[tuple[int, int]] | None = None
    missing: list[tuple[int, int]] | None = None
    for _rid, c in items:
        g = _spans(c.get("gaps") or []) if c.get("known") else None
        m = _spans(c.get("missing") or [])
        if g is not None:
            gaps = g if gaps is None else intersect_spans(gaps, g)
        missing = m if missing is None else intersect_spans(missing, m)
    states = [c.get("state") for _r, c in items]
    state = "complete" if "complete" in states else "repaired" if "repaired" in states else "incomplete"
    if missing:
        state = "incomplete"
    elif state == "incomplete":
        state = "repaired" if gaps else "complete"

    starts = [c["listening_since_us"] for c in known if isinstance(c.get("listening_since_us"), int)]
    since = min(starts) if starts else None
    return {
        "known": bool(known),
        "complete": (not gaps) if known else None,
        "listening_s": max(float(c.get("listening_s") or 0) for c in known) if known else None,
        "listening_since": format_utc(since) if since is not None else None,
        "listening_since_us": since,
        "gaps": [span(a, b) for a, b in (gaps or [])],
        "state": state,
        "repaired": [],
        "missing": [{**span(a, b), "reason": "missing in every recorder"} for a, b in (missing or [])],
        "rest_trades": 0,
        "recorders": [r for r, _c in items],
        "by_recorder": dict(items),
    }


def covered(entry: dict[str, Any]) -> bool:
    """Did the part's recorder record this stream (a part lists all twelve; one it does not
    record has no trade and no listening)?"""
    cov = entry.get("coverage") or {}
    return bool(entry.get("trades")) or bool(cov.get("known") and (cov.get("listening_s") or 0) > 0)


def _part_streams(p: Part) -> list[str]:
    return sorted(
        (s for s, e in p.meta["streams"].items() if isinstance(e, dict) and covered(e)),
        key=lambda s: STREAMS.index(s) if s in STREAMS else len(STREAMS),
    )


def build_shared(
    name: str,
    parts: list[Part],
    expected: list[str],
    *,
    deadline_passed: bool,
) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    """The shared metadata and each stream's merged table (deterministic in `parts`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pumpwatch.segments.reader import OUT_SCHEMA
    from pumpwatch.segments.remote_read import merge_recorders

    parts = sorted(parts, key=lambda p: p.recorder)
    first = parts[0].meta
    by_stream: dict[str, dict[str, Part]] = {}
    for p in parts:
        for stream in _part_streams(p):
            by_stream.setdefault(stream, {})[p.recorder] = p
    tables: dict[str, pa.Table] = {}
    streams: dict[str, Any] = {}
    for stream in sorted(by_stream, key=lambda s: STREAMS.index(s) if s in STREAMS else len(STREAMS)):
        exchange, market = split_stream(stream)
        per: dict[str, pa.Table] = {}
        for rid, p in by_stream[stream].items():
            t = p.table
            mask = pc.and_(pc.equal(t.column("exchange"), exchange), pc.equal(t.column("market"), market))
            per[rid] = t.filter(mask).select(OUT_SCHEMA.names).cast(OUT_SCHEMA)
        merged = merge_recorders(per)
        if merged.num_rows == 0:
            merged = OUT_SCHEMA.empty_table()
        else:
            order = pc.sort_indices(merged, [("time", "ascending"), ("recv_time", "ascending")])
            merged = merged.take(order)
        tables[stream] = merged
        times = merged.column("time").cast(pa.int64()) if merged.num_rows else None
        streams[stream] = {
            "exchange": exchange,
            "market": market,
            "trades": merged.num_rows,
            "symbols": sorted(set(merged.column("symbol").to_pylist())),
            "first_trade_us": times[0].as_py() if times is not None else None,
            "last_trade_us": times[-1].as_py() if times is not None else None,
            "rows_by_recorder": {r: per[r].num_rows for r in sorted(per)},
            "coverage": _union_coverage(
                {r: p.meta["streams"][stream].get("coverage") or {} for r, p in by_stream[stream].items()}
            ),
        }
    have = {p.recorder for p in parts}
    waiting = sorted(set(expected) - have)
    missing: dict[str, str] = {}
    for stream in STREAMS:
        if stream in streams:
            continue
        if waiting:
            missing[stream] = (
                "not in any part; part(s) of recorder(s) " + ", ".join(waiting) + " missing at the deadline"
            )
        else:
            missing[stream] = "no recorder records it"
    meta: dict[str, Any] = {
        k: first[k]
        for k in (
            "symbol",
            "trigger_time",
            "trigger_time_ms",
            "trigger_time_us",
            "window",
            "source",
            "timestamps",
        )
        if k in first
    }
    meta.update(
        {
            "trades": sum(s["trades"] for s in streams.values()),
            "streams": streams,
            "extracted_at": max(str(p.meta.get("extracted_at", "")) for p in parts),
            "pumpwatch_version": first.get("pumpwatch_version"),
            "shared": {
                "parts": [
                    {
                        "recorder": p.recorder,
                        "streams": sorted(
                            p.meta["streams"], key=lambda s: STREAMS.index(s) if s in STREAMS else 99
                        ),
                        "extracted_at": p.meta.get("extracted_at"),
                        "trades": p.table.num_rows,
                    }
                    for p in parts
                ],
                "expected_recorders": sorted(expected),
                "missing_parts": waiting,
                "complete": not waiting,
                "deadline_passed": deadline_passed,
                "missing_streams": missing,
            },
        }
    )
    return meta, tables


def _write_local(
    dst: Path, meta: dict[str, Any], tables: dict[str, pa.Table], pump: PumpSettings | None
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pumpwatch.detector.refined import run_detector
    from pumpwatch.extractor.extract import _raw_rows, write_json_lines_array
    from pumpwatch.segments.reader import OUT_SCHEMA

    (dst / "raw").mkdir(parents=True)
    for stream, t in tables.items():
        exchange, market = split_stream(stream)
        write_json_lines_array(dst / "raw" / f"{stream}.json", _raw_rows(t, exchange, market))
    whole = pa.concat_tables(list(tables.values())) if tables else OUT_SCHEMA.empty_table()
    pq.write_table(whole, dst / "raw" / "trades.parquet", compression="zstd")
    (dst / "metadata.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    try:
        run_detector(dst, pump, chart=True)
    except Exception as exc:  # the listing stays useful without refined/
        log.warning("shared listing %s: detector failed: %s", dst.name, exc)


def _parts_key(meta: dict[str, Any] | None) -> Any:
    if not meta:
        return None
    shared = meta.get("shared") or {}
    return (shared.get("parts"), shared.get("missing_parts"))


def assemble_listing(
    fs: pafs.FileSystem,
    root: RemoteRoot,
    name: str,
    *,
    now_us: int,
    deadline_s: float = DEFAULT_DEADLINE_S,
    heartbeats: dict[str, int] | None = None,
    pump: PumpSettings | None = None,
) -> Assembled | None:
    """Assemble ``listings/<name>/`` when due (module doc); None while nothing is there or it is
    not due yet. Writes nothing when the shared directory already holds these parts."""
    from pumpwatch.segments.remote import recorder_ids

    rids = recorder_ids(fs, root)
    parts = [p for rid in rids if (p := _read_part(fs, root, rid, name)) is not None]
    if not parts:
        return None
    first = parts[0].meta
    trigger_us = int(first["trigger_time_us"])
    end_us = int(first["window"]["end_us"])
    if now_us < end_us:
        return None
    beats = heartbeats if heartbeats is not None else _heartbeats(fs, root)
    expected = sorted(rid for rid, alive_until in beats.items() if alive_until >= trigger_us)
    have = {p.recorder for p in parts}
    deadline_passed = now_us >= end_us + int(deadline_s * US_PER_S)
    complete = set(expected) <= have
    if not complete and not deadline_passed:
        return None
    meta, tables = build_shared(name, parts, expected, deadline_passed=deadline_passed)
    base = root.path(SHARED_DIR, name)
    old_raw = _read_bytes(fs, f"{base}/metadata.json")
    old = orjson.loads(old_raw) if old_raw else None
    if _parts_key(old) == _parts_key(meta):
        return Assembled(name, False, complete, old or meta)
    tmp = Path(tempfile.mkdtemp(prefix=".shared-listing-"))
    try:
        dst = tmp / name
        _write_local(dst, meta, tables, pump)
        files = sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "metadata.json")
        for path in files:
            _write_bytes(fs, f"{base}/{path.relative_to(dst).as_posix()}", path.read_bytes())
        _write_bytes(fs, f"{base}/metadata.json", (dst / "metadata.json").read_bytes())  # last
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "shared listing %s: %d part(s) (%s), %d stream(s), %d trades%s",
        name,
        len(parts),
        ", ".join(sorted(have)),
        len(meta["streams"]),
        meta["trades"],
        ""
        if complete
        else f"; missing part(s) of {', '.join(meta['shared']['missing_parts'])} at the deadline",
    )
    return Assembled(name, True, complete, meta)


def pending_names(fs: pafs.FileSystem, root: RemoteRoot) -> list[str]:
    """Every listing name any recorder has a part of."""
    from pumpwatch.segments.remote import recorder_ids

    names: set[str] = set()
    for rid in recorder_ids(fs, root):
        names.update(n for n in _listdir(fs, root.recorder_path(rid, "listings")) if not n.startswith("."))
    return sorted(names)


def assemble_pending(
    fs: pafs.FileSystem,
    root: RemoteRoot,
    *,
    now_us: int,
    deadline_s: float = DEFAULT_DEADLINE_S,
    pump: PumpSettings | None = None,
    recent_us: int | None = None,
) -> list[Assembled]:
    """One assembling round over every listing with a part (those whose name's time is within
    `recent_us` of now, when given); never raises for one listing."""
    from pumpwatch.utctime import parse_time_us

    beats = _heartbeats(fs, root)
    out: list[Assembled] = []
    for name in pending_names(fs, root):
        if recent_us is not None:
            with contextlib.suppress(Exception):
                t_us = parse_time_us(name.rsplit("_", 1)[1])
                if t_us < now_us - recent_us:
                    continue
        try:
            got = assemble_listing(
                fs, root, name, now_us=now_us, deadline_s=deadline_s, heartbeats=beats, pump=pump
            )
        except Exception as exc:
            log.warning("shared listing %s: not assembled this round: %s", name, exc)
            continue
        if got is not None:
            out.append(got)
    return out


def download_shared(fs: pafs.FileSystem, root: RemoteRoot, dest: Path) -> list[Path]:
    """Copy every complete shared listing directory (metadata.json present) into `dest`
    (replacing what is there); returns the directories."""
    import pyarrow.fs as pafs

    out: list[Path] = []
    for name in _listdir(fs, root.path(SHARED_DIR)):
        base = root.path(SHARED_DIR, name)
        meta = _read_bytes(fs, f"{base}/metadata.json")
        if meta is None:
            continue
        target = dest / name
        shutil.rmtree(target, ignore_errors=True)
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type != pafs.FileType.File or info.base_name == "metadata.json":
                continue
            rel = info.path[len(base) + 1 :]
            body = _read_bytes(fs, info.path)
            if body is None:
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            (target / rel).write_bytes(body)
        target.mkdir(parents=True, exist_ok=True)
        (target / "metadata.json").write_bytes(meta)
        out.append(target)
    return out
