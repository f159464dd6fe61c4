"""The shared listing's rules against the local S3 server, with parts written as a recorder's
uploader writes them (``recorder=<id>/listings/<name>/metadata.json`` + ``raw/trades.parquet``)
and heartbeats as the housekeeper publishes them: who is expected, what a stream covered by a
part is, the union of coverages, a part never dropped while its re-upload is under way, a
directory rewritten when its files do not match, and the download that never caches half a
directory."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from helpers.remote_store import BUCKET, S3Server
from helpers.store import T0_US

from pumpwatch.detector.shared_listing import (
    Heartbeat,
    HeartbeatConflict,
    assemble_listing,
    assemble_pending,
    download_shared,
    publish_heartbeat,
    read_recorders,
)
from pumpwatch.extractor.metadata import span_entry
from pumpwatch.segments.reader import OUT_SCHEMA
from pumpwatch.segments.remote import open_filesystem, parse_url
from pumpwatch.timeunits import US_PER_S

S = US_PER_S
T_US = T0_US + 1800 * S
START_US, END_US = T_US - 300 * S, T_US + 600 * S
NAME = "0G_20260101T003000Z"
URL = f"s3://{BUCKET}/rules"
ROOT = parse_url(URL)
BIN, OKX = "binance_spot", "okx_spot"


@pytest.fixture
def fs(s3_server: S3Server) -> pafs.FileSystem:
    return open_filesystem(endpoint_url=s3_server.endpoint_url)


def _rows(stream: str, times: list[int], source: str = "ws") -> pa.Table:
    exchange, market = stream.split("_")
    n = len(times)
    cols: dict[str, Any] = {
        "exchange": [exchange] * n,
        "market": [market] * n,
        "time": times,
        "recv_time": [t + 500 for t in times],
        "symbol": ["0GUSDT"] * n,
        "base": ["0G"] * n,
        "quote": ["USDT"] * n,
        "price": [1.0 + i / 1000 for i in range(n)],
        "qty": [1.0] * n,
        "side": ["buy"] * n,
        "trade_id": [f"{stream}-{t}" for t in times],
        "source": [source] * n,
    }
    return pa.table(cols, schema=OUT_SCHEMA)


def _cov(
    *,
    known: bool = True,
    gaps: list[tuple[int, int]] = (),  # type: ignore[assignment]
    repaired: list[tuple[int, int, int]] = (),  # type: ignore[assignment]
    missing: list[tuple[int, int]] = (),  # type: ignore[assignment]
    state: str | None = None,
) -> dict[str, Any]:
    deaf = sum(b - a for a, b in gaps)
    if state is None:
        state = "incomplete" if missing or (gaps and not repaired) else "repaired" if repaired else "complete"
    return {
        "known": known,
        "complete": (not gaps) if known else None,
        "listening_s": (END_US - START_US - deaf) / S if known else None,
        "listening_since": None,
        "listening_since_us": START_US - 60 * S if known else None,
        "gaps": [span_entry(a, b) for a, b in gaps],
        "state": state,
        "repaired": [{**span_entry(a, b), "trades": n, "via": "rest"} for a, b, n in repaired],
        "missing": [{**span_entry(a, b), "reason": "not_listening", "symbols": ["0G"]} for a, b in missing],
        "rest_trades": sum(n for _a, _b, n in repaired),
    }


def _put_part(
    fs: pafs.FileSystem,
    rid: str,
    streams: dict[str, tuple[pa.Table, dict[str, Any]]],
    *,
    extracted_at: str = "2026-01-01T00:41:00Z",
    meta_trades: int | None = None,
    data: bool = True,
    meta: bool = True,
) -> None:
    """One recorder's part: every stream of `streams` (table, coverage) listed; the other
    streams of the twelve as a part lists a stream this recorder does not record."""
    from pumpwatch.streams import STREAMS

    entries: dict[str, Any] = {}
    tables = []
    for stream in STREAMS:
        exchange, market = stream.split("_")
        if stream in streams:
            table, cov = streams[stream]
            tables.append(table)
        else:
            table, cov = _rows(stream, []), _cov(known=False, missing=[(START_US, END_US)])
        entries[stream] = {"exchange": exchange, "market": market, "trades": table.num_rows, "coverage": cov}
    whole = pa.concat_tables(tables) if tables else OUT_SCHEMA.empty_table()
    doc = {
        "symbol": "0G",
        "trigger_time_us": T_US,
        "window": {"start_us": START_US, "end_us": END_US, "before_s": 300.0, "after_s": 600.0},
        "source": {"notice_id": 1},
        "trades": whole.num_rows if meta_trades is None else meta_trades,
        "streams": entries,
        "extracted_at": extracted_at,
    }
    base = ROOT.recorder_path(rid, "listings", NAME)
    if data:
        buf = io.BytesIO()
        pq.write_table(whole, buf)
        with fs.open_output_stream(f"{base}/raw/trades.parquet") as f:
            f.write(buf.getvalue())
    if meta:
        with fs.open_output_stream(f"{base}/metadata.json") as f:
            f.write(orjson.dumps(doc))


def _beat(fs: pafs.FileSystem, rid: str, *, started: int, beat: int, watcher: bool = True,
          streams: tuple[str, ...] = (BIN, OKX)) -> None:  # fmt: skip
    publish_heartbeat(fs, ROOT, rid, beat, 15.0, started_us=started, listing_watcher=watcher,
                      streams=streams, instance=f"token-{rid}")  # fmt: skip


def _shared_meta(fs: pafs.FileSystem) -> dict[str, Any]:
    with fs.open_input_stream(ROOT.path("listings", NAME, "metadata.json")) as f:
        return orjson.loads(f.read())  # type: ignore[no-any-return]


def _bin(times: list[int], source: str = "ws") -> pa.Table:
    return _rows(BIN, times, source)


ALL = [START_US + k * 10 * S for k in range(90)]  # one trade every 10 s across the window


# --- finding 3: who is expected ----------------------------------------------------------------


def test_a_recorder_started_after_t_or_without_a_watcher_is_not_expected(fs: pafs.FileSystem) -> None:
    _put_part(fs, "rec-a", {BIN: (_bin(ALL), _cov())})
    _beat(fs, "rec-a", started=T_US - 3600 * S, beat=END_US)
    _beat(fs, "rec-late", started=T_US + 60 * S, beat=END_US)  # started after T: cannot have it
    _beat(fs, "rec-nowatch", started=T_US - 3600 * S, beat=END_US, watcher=False)
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None and got.written and got.complete
    assert got.meta["shared"]["expected_recorders"] == ["rec-a"]
    # a recorder that ran through T (started before, heartbeat after) is expected
    _beat(fs, "rec-b", started=T_US - 60 * S, beat=END_US)
    assert assemble_listing(fs, ROOT, NAME, now_us=END_US + 2) is None  # waits for rec-b's part
    # an earlier run that covered T counts, though the recorder restarted after T
    hb = Heartbeat("rec-c", T_US + 120 * S, 15.0, True, (OKX,), "token-rec-c")
    _beat(fs, "rec-c", started=T_US - 600 * S, beat=T_US + 30 * S, streams=(OKX,))  # its first run
    hb.publish(fs, ROOT, END_US)  # the restarted run: it keeps the first in its history
    late = assemble_listing(fs, ROOT, NAME, now_us=END_US + 301 * S)
    assert late is not None and late.written and not late.complete
    assert late.meta["shared"]["missing_parts"] == ["rec-b", "rec-c"]
    missing = late.meta["shared"]["missing_streams"]
    assert "rec-b, rec-c" in missing[OKX] and "rec-c" not in missing.get("bybit_spot", "")
    assert missing["bybit_spot"] == "no recorder records it"


def test_an_unreadable_heartbeat_skips_the_round(fs: pafs.FileSystem, s3_server: S3Server) -> None:
    """A heartbeat that cannot be read (the store fails on that object) is not "no recorder":
    nothing is written that round; the next round, with the heartbeat readable, waits for it."""
    _put_part(fs, "rec-a", {BIN: (_bin(ALL), _cov())})
    _beat(fs, "rec-a", started=T_US - 3600 * S, beat=END_US)
    _beat(fs, "rec-b", started=T_US - 3600 * S, beat=END_US)

    flaky = pafs.PyFileSystem(_FailingReads(fs, "recorder=rec-b/recorder.json"))
    with pytest.raises(OSError):
        read_recorders(flaky, ROOT)
    with pytest.raises(OSError):
        assemble_pending(flaky, ROOT, now_us=END_US + 301 * S, deadline_s=300)
    assert not _exists(fs, ROOT.path("listings", NAME, "metadata.json"))
    # readable again: rec-b is expected, so before its deadline nothing is written either
    assert assemble_pending(fs, ROOT, now_us=END_US + 10 * S, deadline_s=300) == []


class _FailingReads(pafs.FileSystemHandler):
    """The real store, except that reading an object whose path ends with `suffix` fails (a
    connection reset on that one request)."""

    def __init__(self, fs: pafs.FileSystem, suffix: str) -> None:
        self.fs, self.suffix = fs, suffix

    def _check(self, path: str) -> None:
        if path.endswith(self.suffix):
            raise OSError("connection reset by peer")

    def open_input_stream(self, path: str) -> Any:
        self._check(path)
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        self._check(path)
        return self.fs.open_input_file(path)

    def get_file_info(self, paths: Any) -> Any:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        return self.fs.get_file_info(selector)

    def get_type_name(self) -> str:
        return "failing-reads"

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: Any) -> bool:
        return other is self

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("not here")

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.copy_file(src, dest)

    def open_output_stream(self, path: str, metadata: Any = None) -> Any:
        return self.fs.open_output_stream(path)

    def open_append_stream(self, path: str, metadata: Any = None) -> Any:
        raise OSError("not here")


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def test_a_second_machine_with_the_same_id_is_refused(fs: pafs.FileSystem) -> None:
    first = Heartbeat("rec-x", T_US, 15.0, True, (BIN,), "a" * 32)
    first.publish(fs, ROOT, T_US + 10 * S)
    clone = Heartbeat("rec-x", T_US + 20 * S, 15.0, True, (BIN,), "b" * 32)
    with pytest.raises(HeartbeatConflict, match="in use by another live recorder"):
        clone.publish(fs, ROOT, T_US + 20 * S)
    # once the first is gone (its heartbeat older than the liveness bound) the id is free, and
    # the first machine's run stays in the history
    clone = Heartbeat("rec-x", T_US + 600 * S, 15.0, True, (BIN,), "b" * 32)
    clone.publish(fs, ROOT, T_US + 600 * S)
    info = read_recorders(fs, ROOT)["rec-x"]
    assert info is not None and [r.started_us for r in info.runs] == [T_US]
    # the same machine restarting is not a conflict
    again = Heartbeat("rec-x", T_US + 700 * S, 15.0, True, (BIN,), "b" * 32)
    again.publish(fs, ROOT, T_US + 700 * S)


def test_an_old_heartbeat_without_the_new_fields_keeps_the_old_rule(fs: pafs.FileSystem) -> None:
    _put_part(fs, "rec-a", {BIN: (_bin(ALL), _cov())})
    publish_heartbeat(fs, ROOT, "rec-a", T_US + 1)  # an older recorder.json: no started_us
    publish_heartbeat(fs, ROOT, "rec-old", T_US - 600 * S)  # stopped 10 min before T
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None and got.complete and got.meta["shared"]["expected_recorders"] == ["rec-a"]


# --- finding 2: a part the directory used is never dropped --------------------------------------


def test_a_part_being_re_uploaded_is_not_dropped(fs: pafs.FileSystem) -> None:
    _put_part(fs, "rec-a", {BIN: (_bin(ALL[:40]), _cov())})
    _put_part(fs, "rec-b", {OKX: (_rows(OKX, ALL), _cov())})
    for rid in ("rec-a", "rec-b"):
        _beat(fs, rid, started=T_US - 3600 * S, beat=END_US)
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None and got.written and got.complete
    # rec-b re-extracts: its new data is up, its metadata not yet (the counts differ): the part
    # reads inconsistent; past the deadline the directory must still hold rec-b's streams
    _put_part(fs, "rec-b", {OKX: (_rows(OKX, [*ALL, END_US - 1]), _cov())}, meta=False)
    kept = assemble_listing(fs, ROOT, NAME, now_us=END_US + 3600 * S)
    assert kept is not None and not kept.written
    assert OKX in _shared_meta(fs)["streams"]
    # the new metadata arrives: the directory is rewritten with the new part
    new = {OKX: (_rows(OKX, [*ALL, END_US - 1]), _cov())}
    _put_part(fs, "rec-b", new, extracted_at="2026-01-01T01:00:00Z")
    redo = assemble_listing(fs, ROOT, NAME, now_us=END_US + 3601 * S)
    assert redo is not None and redo.written and redo.meta["streams"][OKX]["trades"] == len(ALL) + 1


# --- finding 6: a stream recorded but silent in the window is covered ----------------------------


def test_a_recorded_stream_without_listening_in_the_window_is_covered(fs: pafs.FileSystem) -> None:
    deaf = _cov(gaps=[(START_US, END_US)], missing=[(START_US, END_US)])
    deaf["listening_s"] = 0.0
    _put_part(fs, "rec-a", {BIN: (_bin([]), deaf)})
    _beat(fs, "rec-a", started=T_US - 3600 * S, beat=END_US, streams=(BIN,))
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None
    assert BIN in got.meta["streams"], got.meta["shared"]["missing_streams"].get(BIN)
    cov = got.meta["streams"][BIN]["coverage"]
    assert cov["state"] == "incomplete" and cov["missing"] and cov["gaps"]
    assert BIN not in got.meta["shared"]["missing_streams"]


# --- finding 7: the union of coverages -----------------------------------------------------------


def test_union_coverage_counts_repairs_and_listening(fs: pafs.FileSystem) -> None:
    """rec-a is deaf 0..120 s of the window and repaired it from REST; rec-b is deaf 100..200 s
    (not repaired, missing): together only 100..120 s is a gap, repaired by rec-a."""
    a_gap = (START_US, START_US + 120 * S)
    b_gap = (START_US + 100 * S, START_US + 200 * S)
    a_rest = [t for t in ALL if a_gap[0] <= t < a_gap[1]]
    a_rows = pa.concat_tables([_bin(a_rest, "rest"), _bin([t for t in ALL if t >= a_gap[1]])])
    b_rows = _bin([t for t in ALL if not b_gap[0] <= t < b_gap[1]])
    _put_part(fs, "rec-a", {BIN: (a_rows, _cov(gaps=[a_gap], repaired=[(*a_gap, len(a_rest))]))})
    _put_part(fs, "rec-b", {BIN: (b_rows, _cov(gaps=[b_gap], missing=[b_gap]))})
    for rid in ("rec-a", "rec-b"):
        _beat(fs, rid, started=T_US - 3600 * S, beat=END_US, streams=(BIN,))
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None
    entry = got.meta["streams"][BIN]
    cov = entry["coverage"]
    assert [(g["start_us"], g["end_us"]) for g in cov["gaps"]] == [(b_gap[0], a_gap[1])]
    assert cov["listening_s"] == pytest.approx((END_US - START_US) / S - 20)
    assert cov["state"] == "repaired" and cov["missing"] == []
    assert [(r["start_us"], r["end_us"]) for r in cov["repaired"]] == [(b_gap[0], a_gap[1])]
    assert cov["repaired"][0]["trades"] == 2  # the REST rows at 100 s and 110 s
    merged = pq.read_table(io.BytesIO(_read(fs, ROOT.path("listings", NAME, "raw", "trades.parquet"))))
    n_rest = merged.column("source").to_pylist().count("rest")
    assert cov["rest_trades"] == n_rest > 0
    assert entry["trades"] == len(ALL)


def _read(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


# --- findings 8 and 9: files match their metadata --------------------------------------------------


def _one_listing(fs: pafs.FileSystem) -> None:
    _put_part(fs, "rec-a", {BIN: (_bin(ALL), _cov())})
    _beat(fs, "rec-a", started=T_US - 3600 * S, beat=END_US)
    got = assemble_listing(fs, ROOT, NAME, now_us=END_US + 1)
    assert got is not None and got.written


def test_a_directory_whose_files_do_not_match_is_rewritten(fs: pafs.FileSystem) -> None:
    _one_listing(fs)
    meta = _shared_meta(fs)
    assert "raw/trades.parquet" in meta["shared"]["files"]
    raw = ROOT.path("listings", NAME, "raw", "trades.parquet")
    good = _read(fs, raw)
    with fs.open_output_stream(raw) as f:  # another assembler's half-finished rewrite
        f.write(b"PAR1 torn")
    again = assemble_listing(fs, ROOT, NAME, now_us=END_US + 2)
    assert again is not None and again.written
    assert _read(fs, raw) == good
    assert not assemble_listing(fs, ROOT, NAME, now_us=END_US + 3).written  # type: ignore[union-attr]


def test_download_skips_a_listing_with_a_file_that_cannot_be_read(
    fs: pafs.FileSystem, tmp_path: Path
) -> None:
    _one_listing(fs)
    raw = ROOT.path("listings", NAME, "raw", "trades.parquet")
    good = _read(fs, raw)
    with fs.open_output_stream(raw) as f:  # being rewritten: does not match the metadata
        f.write(b"PAR1 torn")
    assert download_shared(fs, ROOT, tmp_path / "cache") == []
    assert not (tmp_path / "cache" / NAME).exists()
    fs.delete_file(raw)  # gone: also skipped, never a cached directory without it
    assert download_shared(fs, ROOT, tmp_path / "cache") == []
    with fs.open_output_stream(raw) as f:
        f.write(good)
    got = download_shared(fs, ROOT, tmp_path / "cache")
    assert got == [tmp_path / "cache" / NAME]
    assert (got[0] / "raw" / "trades.parquet").read_bytes() == good
    assert (got[0] / "metadata.json").is_file()
