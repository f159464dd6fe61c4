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

When: each recorder publishes ``recorder=<id>/recorder.json`` every round (`Heartbeat`): its
heartbeat and interval, when its ``record`` started, whether its listing watcher runs
(``upbit.enabled``), the streams it records, its instance token, and the runs of its earlier
processes (start, last heartbeat, watcher, streams; kept for `RUNS_KEPT_S`). The recorders
*expected* for a notice at T are those whose watcher ran through T: a run with start <= T whose
heartbeat reaches T within `LIVENESS_BEATS` intervals (its last heartbeat before T is recent
enough, or a later one proves it ran through T). A recorder started after T, or one without a
watcher, is not expected. A ``recorder.json`` that cannot be read (an I/O error) skips the
round: no listing is written on partial knowledge. One from an older version (no ``started_us``)
counts as a run that started at the beginning of time with the watcher on: expected when its
last heartbeat plus `LIVENESS_BEATS` intervals reaches T (the rule before these fields existed).
The directory is written as soon as every expected recorder's part is in (and T + after has
passed), else at T + after + ``remote.listing_deadline_s`` with what is there; a stream no part
holds is named with its reason, from the streams each recorder declares. A part that arrives
later re-assembles and replaces it (the metadata's ``parts`` differ). A part the previous
version used is never dropped: while it reads inconsistent (a re-extraction's upload under way)
the previous directory stays.

Files: ``metadata.json`` is written last and lists every other file with its size and SHA-256
(``shared.files``); a directory whose files do not match (two assemblers interleaved) is
rewritten, and `download_shared` skips a directory that does not match its metadata.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
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
RUNS_KEPT_S = 7 * 86400.0  # earlier runs of a recorder are kept in recorder.json this long
MAX_RUNS = 50


class HeartbeatConflict(RuntimeError):
    """Another live recorder publishes under the same recorder id (another instance token)."""


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
    """The object's bytes, None when it does not exist; any other error is raised (a read that
    failed is not "absent": the caller skips its round instead of deciding on partial data)."""
    try:
        with fs.open_input_stream(path) as f:
            return bytes(f.read())
    except FileNotFoundError:
        return None


def _write_bytes(fs: pafs.FileSystem, path: str, body: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(body)


def _listdir(fs: pafs.FileSystem, path: str) -> list[str]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


@dataclass(frozen=True)
class Run:
    """One ``record`` process of a recorder, as its heartbeats tell it."""

    started_us: int | None  # None: a recorder.json of an older version (unknown)
    heartbeat_us: int
    every_s: float
    listing_watcher: bool
    streams: tuple[str, ...] | None  # None: not declared (an older version)

    def ran_through(self, t_us: int) -> bool:
        """Whether this run's listing watcher was up at `t_us`."""
        if not self.listing_watcher:
            return False
        if self.started_us is not None and self.started_us > t_us:
            return False
        return self.heartbeat_us + int(LIVENESS_BEATS * self.every_s * US_PER_S) >= t_us

    def to_json(self) -> dict[str, Any]:
        return {
            "started_us": self.started_us,
            "heartbeat_us": self.heartbeat_us,
            "every_s": self.every_s,
            "listing_watcher": self.listing_watcher,
            "streams": None if self.streams is None else list(self.streams),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Run:
        started = doc.get("started_us")
        streams = doc.get("streams")
        return cls(
            started_us=None if started is None else int(started),
            heartbeat_us=int(doc["heartbeat_us"]),
            every_s=float(doc.get("every_s") or DEFAULT_BEAT_S),
            listing_watcher=bool(doc.get("listing_watcher", True)),
            streams=None if streams is None else tuple(str(x) for x in streams),
        )


@dataclass(frozen=True)
class RecorderInfo:
    """A recorder's ``recorder.json``: its current run, its earlier runs, its instance token."""

    recorder_id: str
    current: Run
    runs: tuple[Run, ...] = ()
    instance: str | None = None

    def run_at(self, t_us: int) -> Run | None:
        """The run whose listing watcher was up at `t_us` (the current one first), or None."""
        for run in (self.current, *reversed(self.runs)):
            if run.ran_through(t_us):
                return run
        return None

    @classmethod
    def parse(cls, rid: str, raw: bytes) -> RecorderInfo:
        doc = orjson.loads(raw)
        return cls(
            recorder_id=rid,
            current=Run.from_json(doc),
            runs=tuple(Run.from_json(r) for r in doc.get("runs") or []),
            instance=doc.get("instance"),
        )


def publish_heartbeat(
    fs: pafs.FileSystem,
    root: RemoteRoot,
    recorder_id: str,
    now_us: int,
    every_s: float = DEFAULT_BEAT_S,
    *,
    started_us: int | None = None,
    listing_watcher: bool = True,
    streams: list[str] | tuple[str, ...] | None = None,
    instance: str | None = None,
    runs: list[Run] | tuple[Run, ...] = (),
) -> None:
    """``recorder=<id>/recorder.json``: this recorder is alive at `now_us` and writes this
    again every `every_s` (its housekeeping round); the other fields as in the module doc
    (without `started_us` it reads as an older version's heartbeat)."""
    doc: dict[str, Any] = {"recorder_id": recorder_id, "heartbeat_us": now_us, "every_s": every_s}
    if started_us is not None:
        doc.update(
            {
                "started_us": started_us,
                "listing_watcher": listing_watcher,
                "streams": None if streams is None else list(streams),
                "instance": instance,
                "runs": [r.to_json() for r in runs],
            }
        )
    _write_bytes(fs, root.recorder_path(recorder_id, RECORDER_FILE), orjson.dumps(doc))


@dataclass
class Heartbeat:
    """This recorder's heartbeat publisher (the housekeeper's, one per ``record`` run).

    At its first publish it reads the recorder's ``recorder.json``: the run found there
    becomes an earlier run (kept `RUNS_KEPT_S`), unless it is a live heartbeat of another
    instance token (another machine publishing under this recorder id): then
    `HeartbeatConflict` is raised and nothing is written. A read error raises (retried at the
    next round; nothing is written before the earlier runs are known)."""

    recorder_id: str
    started_us: int
    every_s: float
    listing_watcher: bool
    streams: tuple[str, ...] | None  # None: not declared
    instance: str
    runs: list[Run] = field(default_factory=list)
    _loaded: bool = False

    def publish(self, fs: pafs.FileSystem, root: RemoteRoot, now_us: int) -> None:
        if not self._loaded:
            self._load(fs, root, now_us)
        publish_heartbeat(
            fs,
            root,
            self.recorder_id,
            now_us,
            self.every_s,
            started_us=self.started_us,
            listing_watcher=self.listing_watcher,
            streams=self.streams,
            instance=self.instance,
            runs=self.runs,
        )

    def _load(self, fs: pafs.FileSystem, root: RemoteRoot, now_us: int) -> None:
        raw = _read_bytes(fs, root.recorder_path(self.recorder_id, RECORDER_FILE))
        runs: list[Run] = []
        if raw is not None:
            try:
                info = RecorderInfo.parse(self.recorder_id, raw)
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                log.warning(
                    "recorder.json of %s is not readable; starting its run history anew", self.recorder_id
                )
            else:
                cur = info.current
                live = cur.heartbeat_us + int(LIVENESS_BEATS * cur.every_s * US_PER_S) >= now_us
                if info.instance not in (None, self.instance) and live:
                    raise HeartbeatConflict(
                        f"remote.recorder_id {self.recorder_id!r} is in use by another live recorder "
                        f"(instance {info.instance}, heartbeat "
                        f"{(now_us - cur.heartbeat_us) / US_PER_S:.0f} s ago); "
                        "give each machine its own remote.recorder_id"
                    )
                runs = list(info.runs)
                if cur.started_us != self.started_us or info.instance != self.instance:
                    runs.append(cur)
        keep_from = now_us - int(RUNS_KEPT_S * US_PER_S)
        self.runs = [r for r in runs if r.heartbeat_us >= keep_from][-MAX_RUNS:]
        self._loaded = True


def read_recorders(fs: pafs.FileSystem, root: RemoteRoot) -> dict[str, RecorderInfo | None]:
    """Every recorder's ``recorder.json`` (None: no heartbeat, or one that is not valid JSON:
    that recorder is never expected). An I/O error is raised: the caller skips its round."""
    from pumpwatch.segments.remote import recorder_ids

    out: dict[str, RecorderInfo | None] = {}
    for rid in recorder_ids(fs, root):
        raw = _read_bytes(fs, root.recorder_path(rid, RECORDER_FILE))
        if raw is None:
            out[rid] = None
            continue
        try:
            out[rid] = RecorderInfo.parse(rid, raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            log.warning("recorder.json of %s is damaged; it counts as not expected", rid)
            out[rid] = None
    return out


def expected_at(recorders: dict[str, RecorderInfo | None], t_us: int) -> dict[str, tuple[str, ...] | None]:
    """``{recorder id: its declared streams (None: not declared)}`` of the recorders expected
    to write a part for a notice at `t_us` (module doc)."""
    out: dict[str, tuple[str, ...] | None] = {}
    for rid, info in sorted(recorders.items()):
        run = info.run_at(t_us) if info is not None else None
        if run is not None:
            out[rid] = run.streams
    return out


def _read_part(fs: pafs.FileSystem, root: RemoteRoot, rid: str, name: str) -> Part | None:
    """A recorder's uploaded part, or None while it is not complete (metadata.json and
    raw/trades.parquet both there and readable, and from the same run; a "nothing recorded
    here" part is its metadata alone, with no trade). An I/O error is raised."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pumpwatch.segments.reader import OUT_SCHEMA

    base = root.recorder_path(rid, "listings", name)
    raw_meta = _read_bytes(fs, f"{base}/metadata.json")
    if raw_meta is None:
        return None
    try:
        meta = orjson.loads(raw_meta)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("streams"), dict):
        return None
    if meta.get("nothing_recorded"):
        return Part(rid, meta, OUT_SCHEMA.empty_table()) if meta.get("trades") == 0 else None
    raw_table = _read_bytes(fs, f"{base}/raw/trades.parquet")
    if raw_table is None:
        return None
    try:
        table = pq.read_table(io.BytesIO(raw_table))
    except (pa.ArrowException, OSError):
        return None
    if table.num_rows != int(meta.get("trades", -1)):  # the two files of different runs
        return None
    return Part(rid, meta, table)


def _spans(entries: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(int(e["start_us"]), int(e["end_us"])) for e in entries]


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _union_coverage(
    covs: dict[str, dict[str, Any]], window: tuple[int, int], merged: pa.Table
) -> dict[str, Any]:
    """The coverage of a stream recorded by several parts (each part's entry is kept under
    ``by_recorder``): a gap is one only where it is one in every part whose coverage is known,
    and a missing span only where it is missing in each of them; ``listening_s`` is the window
    less those gaps (the union of the listening); ``repaired`` are the parts' repaired spans
    inside the union's gaps, and the trade counts (per span and ``rest_trades``) are those of
    the merged rows with ``source = rest``; ``state`` follows from these."""
    import numpy as np
    import pyarrow.compute as pc

    from pumpwatch.extractor.metadata import span_entry as span
    from pumpwatch.segments.remote_read import intersect_spans
    from pumpwatch.segments.schema import SOURCE_REST
    from pumpwatch.utctime import format_utc

    if len(covs) == 1:
        ((rid, cov),) = covs.items()
        return {**cov, "recorders": [rid]}
    start_us, end_us = window
    items = sorted(covs.items())
    known = [c for _r, c in items if c.get("known")]
    gaps: list[tuple[int, int]] | None = None
    missing: list[tuple[int, int]] | None = None
    for _rid, c in items if not known else [(r, c) for r, c in items if c.get("known")]:
        if c.get("known"):
            g = _merge(_spans(c.get("gaps") or []))
            gaps = g if gaps is None else intersect_spans(gaps, g)
        m = _merge(_spans(c.get("missing") or []))
        missing = m if missing is None else intersect_spans(missing, m)
    missing = missing or []
    rest = (
        np.sort(
            merged.filter(pc.equal(merged.column("source"), SOURCE_REST))
            .column("time")
            .cast("int64")
            .to_numpy()
        )
        if merged.num_rows
        else np.empty(0, np.int64)
    )
    vias: list[tuple[int, int, str]] = [
        (int(r["start_us"]), int(r["end_us"]), str(r.get("via") or ""))
        for _rid, c in items
        for r in c.get("repaired") or []
    ]
    repaired = _merge([(a, b) for a, b, _v in vias])
    if gaps is not None:
        repaired = intersect_spans(repaired, gaps)

    def count(a: int, b: int) -> int:
        return int(np.searchsorted(rest, b, "left") - np.searchsorted(rest, a, "left"))

    def via(a: int, b: int) -> str:
        names = {v.strip() for x, y, vv in vias if x < b and a < y for v in vv.split(",") if v.strip()}
        return ", ".join(sorted(names))

    if missing:
        state = "incomplete"
    elif known and not gaps:
        state = "complete"
    elif repaired:
        state = "repaired"
    else:
        state = "incomplete"
    starts = [c["listening_since_us"] for c in known if isinstance(c.get("listening_since_us"), int)]
    since = min(starts) if starts else None
    listening_us = (end_us - start_us) - sum(
        min(b, end_us) - max(a, start_us) for a, b in gaps or [] if b > a
    )
    return {
        "known": bool(known),
        "complete": (not gaps) if known else None,
        "listening_s": round(max(0, listening_us) / US_PER_S, 6) if known else None,
        "listening_since": format_utc(since) if since is not None else None,
        "listening_since_us": since,
        "gaps": [span(a, b) for a, b in (gaps or [])],
        "state": state,
        "repaired": [{**span(a, b), "trades": count(a, b), "via": via(a, b)} for a, b in repaired],
        "missing": [{**span(a, b), "reason": "missing in every recorder"} for a, b in missing],
        "rest_trades": int(rest.size),
        "recorders": [r for r, _c in items],
        "by_recorder": dict(items),
    }


def covered(entry: dict[str, Any]) -> bool:
    """Did the part's recorder record this stream? A part lists all twelve; one it records has
    trades or a known coverage (its journal exists, even if it did not listen to this coin in
    the window: then its gaps and missing spans say so); one it does not record has neither."""
    cov = entry.get("coverage") or {}
    return bool(entry.get("trades")) or bool(cov.get("known"))


def _order(stream: str) -> int:
    return STREAMS.index(stream) if stream in STREAMS else len(STREAMS)


def _part_streams(p: Part) -> list[str]:
    return sorted((s for s, e in p.meta["streams"].items() if isinstance(e, dict) and covered(e)), key=_order)


def build_shared(
    name: str,
    parts: list[Part],
    expected: dict[str, tuple[str, ...] | None] | list[str],
    *,
    deadline_passed: bool,
) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    """The shared metadata and each stream's merged table (deterministic in `parts`).
    `expected` maps each expected recorder to the streams it declares (None: not declared; a
    list means none declared)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pumpwatch.segments.reader import OUT_SCHEMA
    from pumpwatch.segments.remote_read import merge_recorders

    declared = dict.fromkeys(expected) if isinstance(expected, list) else dict(expected)
    parts = sorted(parts, key=lambda p: p.recorder)
    first = parts[0].meta
    window = (int(first["window"]["start_us"]), int(first["window"]["end_us"]))
    by_stream: dict[str, dict[str, Part]] = {}
    for p in parts:
        for stream in _part_streams(p):
            by_stream.setdefault(stream, {})[p.recorder] = p
    tables: dict[str, pa.Table] = {}
    streams: dict[str, Any] = {}
    for stream in sorted(by_stream, key=_order):
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
                {r: p.meta["streams"][stream].get("coverage") or {} for r, p in by_stream[stream].items()},
                window,
                merged,
            ),
        }
    have = {p.recorder for p in parts}
    waiting = sorted(set(declared) - have)
    missing: dict[str, str] = {}
    for stream in STREAMS:
        if stream in streams:
            continue
        late = [r for r in waiting if declared[r] is None or stream in (declared[r] or ())]
        holders = [r for r in sorted(have) if stream in (declared.get(r) or ())]
        if late:
            missing[stream] = (
                "not in any part; part(s) of recorder(s) " + ", ".join(late) + " missing at the deadline"
            )
        elif holders:
            missing[stream] = (
                "recorded by " + ", ".join(holders) + " but not in its part (no journal of it in the window)"
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
                        "streams": _part_streams(p),
                        "extracted_at": p.meta.get("extracted_at"),
                        "trades": p.table.num_rows,
                        **({"nothing_recorded": True} if p.meta.get("nothing_recorded") else {}),
                    }
                    for p in parts
                ],
                "expected_recorders": sorted(declared),
                "declared_streams": {
                    r: None if v is None else sorted(v, key=_order) for r, v in sorted(declared.items())
                },
                "missing_parts": waiting,
                "complete": not waiting,
                "deadline_passed": deadline_passed,
                "missing_streams": missing,
            },
        }
    )
    return meta, tables


def _sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _write_local(
    dst: Path, meta: dict[str, Any], tables: dict[str, pa.Table], pump: PumpSettings | None
) -> None:
    """The directory in `dst`; ``metadata.json`` last, listing every other file's size and
    SHA-256 under ``shared.files``."""
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
    dump = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
    (dst / "metadata.json").write_bytes(orjson.dumps(meta, option=dump))
    try:
        run_detector(dst, pump, chart=True)
    except Exception as exc:  # the listing stays useful without refined/
        log.warning("shared listing %s: detector failed: %s", dst.name, exc)
    with contextlib.suppress(OSError, orjson.JSONDecodeError):  # the detector may have added to it
        meta = orjson.loads((dst / "metadata.json").read_bytes())
    files = {}
    for path in sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "metadata.json"):
        body = path.read_bytes()
        files[path.relative_to(dst).as_posix()] = {"size": len(body), "sha256": _sha256(body)}
    meta["shared"]["files"] = files
    (dst / "metadata.json").write_bytes(orjson.dumps(meta, option=dump))


def _parts_key(meta: dict[str, Any] | None) -> Any:
    if not meta:
        return None
    shared = meta.get("shared") or {}
    return (shared.get("parts"), shared.get("missing_parts"), shared.get("missing_streams"))


def _read_meta(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """A metadata.json as a dict; None when absent or not valid JSON (an I/O error raises)."""
    raw = _read_bytes(fs, path)
    if raw is None:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _files_match(fs: pafs.FileSystem, base: str, meta: dict[str, Any]) -> bool:
    """Whether the stored files have the sizes the metadata lists (one listing call: cheap
    enough for every round). A directory of an older version (no ``shared.files``) matches."""
    import pyarrow.fs as pafs

    files = (meta.get("shared") or {}).get("files")
    if not isinstance(files, dict):
        return True
    sizes = {
        i.path[len(base) + 1 :]: i.size
        for i in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        if i.type == pafs.FileType.File
    }
    return all(sizes.get(rel) == f.get("size") for rel, f in files.items())


def assemble_listing(
    fs: pafs.FileSystem,
    root: RemoteRoot,
    name: str,
    *,
    now_us: int,
    deadline_s: float = DEFAULT_DEADLINE_S,
    recorders: dict[str, RecorderInfo | None] | None = None,
    pump: PumpSettings | None = None,
) -> Assembled | None:
    """Assemble ``listings/<name>/`` when due (module doc); None while nothing is there or it is
    not due yet. Writes nothing when the shared directory already holds these parts (and its
    files match its metadata), or when a part the stored directory used reads inconsistent now.
    An I/O error reading the store is raised (nothing is written on partial knowledge)."""
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
    expected = expected_at(recorders if recorders is not None else read_recorders(fs, root), trigger_us)
    have = {p.recorder for p in parts}
    deadline_passed = now_us >= end_us + int(deadline_s * US_PER_S)
    complete = set(expected) <= have
    if not complete and not deadline_passed:
        return None
    base = root.path(SHARED_DIR, name)
    old = _read_meta(fs, f"{base}/metadata.json")
    used = {str(p.get("recorder")) for p in ((old or {}).get("shared") or {}).get("parts") or []}
    if used - have:
        log.info(
            "shared listing %s: the part(s) of %s it holds read inconsistent now (an upload under way); "
            "keeping the directory as it is",
            name,
            ", ".join(sorted(used - have)),
        )
        assert old is not None
        return Assembled(name, False, bool((old.get("shared") or {}).get("complete")), old)
    meta, tables = build_shared(name, parts, expected, deadline_passed=deadline_passed)
    if old is not None and _parts_key(old) == _parts_key(meta) and _files_match(fs, base, old):
        return Assembled(name, False, complete, old)
    tmp = Path(tempfile.mkdtemp(prefix=".shared-listing-"))
    try:
        dst = tmp / name
        _write_local(dst, meta, tables, pump)
        files = sorted(p for p in dst.rglob("*") if p.is_file() and p.name != "metadata.json")
        for path in files:
            _write_bytes(fs, f"{base}/{path.relative_to(dst).as_posix()}", path.read_bytes())
        body = (dst / "metadata.json").read_bytes()
        meta = orjson.loads(body)
        _write_bytes(fs, f"{base}/metadata.json", body)  # last
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
    `recent_us` of now, when given); never raises for one listing. A heartbeat that cannot be
    read (an I/O error) raises before anything is written: the whole round is skipped."""
    from pumpwatch.utctime import parse_time_us

    recorders = read_recorders(fs, root)
    out: list[Assembled] = []
    for name in pending_names(fs, root):
        if recent_us is not None:
            with contextlib.suppress(Exception):
                t_us = parse_time_us(name.split("_")[1])
                if t_us < now_us - recent_us:
                    continue
        try:
            got = assemble_listing(
                fs, root, name, now_us=now_us, deadline_s=deadline_s, recorders=recorders, pump=pump
            )
        except Exception as exc:
            log.warning("shared listing %s: not assembled this round: %s", name, exc)
            continue
        if got is not None:
            out.append(got)
    return out


def download_shared(fs: pafs.FileSystem, root: RemoteRoot, dest: Path) -> list[Path]:
    """Copy every complete shared listing directory (metadata.json present, every file readable
    and, when the metadata lists them, matching their SHA-256) into `dest`, replacing what is
    there; returns the directories. A listing with any read error or mismatch is skipped (and
    logged): a cached directory is never one with a file missing."""
    import pyarrow.fs as pafs

    out: list[Path] = []
    dest.mkdir(parents=True, exist_ok=True)
    for name in _listdir(fs, root.path(SHARED_DIR)):
        base = root.path(SHARED_DIR, name)
        try:
            meta = _read_bytes(fs, f"{base}/metadata.json")
            if meta is None:
                continue
            listed = (orjson.loads(meta).get("shared") or {}).get("files")
            bodies: dict[str, bytes] = {}
            for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
                if info.type != pafs.FileType.File or info.path == f"{base}/metadata.json":
                    continue
                rel = info.path[len(base) + 1 :]
                body = _read_bytes(fs, info.path)
                if body is None:
                    raise OSError(f"{rel} disappeared while reading")
                bodies[rel] = body
            if isinstance(listed, dict):
                for rel, f in listed.items():
                    if rel not in bodies or _sha256(bodies[rel]) != f.get("sha256"):
                        raise OSError(f"{rel} does not match its metadata (being rewritten?)")
            elif "raw/trades.parquet" not in bodies:
                raise OSError("raw/trades.parquet is missing")
        except (OSError, orjson.JSONDecodeError, AttributeError) as exc:
            log.warning("shared listing %s skipped (not copied this time): %s", name, exc)
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest))
        try:
            for rel, body in bodies.items():
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp / rel).write_bytes(body)
            (tmp / "metadata.json").write_bytes(meta)
            target = dest / name
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        out.append(target)
    return out
