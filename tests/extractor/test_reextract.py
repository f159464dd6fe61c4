"""Extraction never loses or hides anything (issue 13 §1): provenance survives a re-extraction,
colliding extractions get their own directories, a refresh keeps what it does not rewrite,
nothing is written for a symbol no stream ever recorded, a damaged segment shows in coverage,
and listing directories follow the umask."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpwatch.detector.refined import run_detector
from pumpwatch.errors import NothingMatchedError
from pumpwatch.extractor import extract, listing_dir_name
from pumpwatch.recorder.sim.market import MarketSpec, write_store
from pumpwatch.segments.damage import damaged_spans
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.paths import list_segments
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S as S

START = 1_767_229_000 * S  # 2026-01-01T00:56:40Z
T = START + 100 * S
SPEC = MarketSpec(seed=5, start_us=START, duration_s=240, trades_per_s=12, bases=("BTC", "0G"))
NOTICE = {
    "type": "upbit",
    "notice_id": 5123,
    "title": "0G(0G) KRW 마켓 디지털 자산 추가",
    "first_listed_at": "2026-01-01T00:58:20Z",
    "detected_at": "2026-01-01T00:58:33.2Z",
    "detection_delay_s": 13.2,
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("pristine")
    write_store(data_dir, SPEC, flush_every_s=2.0)
    return data_dir


@pytest.fixture
def data_dir(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the store: these tests write listings and damage files."""
    out = tmp_path / "data"
    shutil.copytree(pristine, out)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def meta_of(listing: Path) -> dict:
    return orjson.loads((listing / "metadata.json").read_bytes())


def test_manual_rerun_of_an_upbit_listing_keeps_its_source(data_dir: Path) -> None:
    first = extract(data_dir, "0G", T, source=NOTICE)
    run_detector(first)
    before = files(first)
    again = extract(data_dir, "0g", T)  # a person re-runs it by hand, in lower case
    assert again == first == data_dir / "listings" / "0G_20260101T005820Z"
    meta = meta_of(again)
    assert meta["source"] == NOTICE
    assert meta["re_extracted"] == {
        "first_extracted_at": orjson.loads(before["metadata.json"])["extracted_at"],
        "count": 2,
        "source_kept": True,
    }
    # the same request gives the same files; refined/ (not rewritten by extract) stays
    after = files(again)
    assert {k: v for k, v in after.items() if k != "metadata.json"} == {
        k: v for k, v in before.items() if k != "metadata.json"
    }
    assert meta_of(extract(data_dir, "0G", T))["re_extracted"]["count"] == 3


def test_a_manual_listing_gains_the_notice_when_the_watcher_extracts_it(data_dir: Path) -> None:
    manual = extract(data_dir, "0G", T)
    assert meta_of(manual)["source"] == "manual"
    upbit = extract(data_dir, "0G", T, source=NOTICE)
    assert upbit == manual and meta_of(upbit)["source"] == NOTICE


def test_colliding_extractions_get_distinct_directories(data_dir: Path) -> None:
    first = extract(data_dir, "0G", T, source=NOTICE)
    other = {**NOTICE, "notice_id": 5124, "title": "another notice, same coin, same second"}
    second = extract(data_dir, "0G", T, source=other)
    assert second.name == f"{first.name}_2"
    # another trigger inside the same second is another extraction too
    third = extract(data_dir, "0G", T + 250_000)
    assert third.name == f"{first.name}_3"
    assert [meta_of(d)["source"] for d in (first, second)] == [NOTICE, other]
    assert meta_of(third)["trigger_time_us"] == T + 250_000
    # each re-run finds its own directory again; none replaces another
    assert extract(data_dir, "0G", T, source=other) == second
    assert extract(data_dir, "0G", T + 250_000) == third
    assert extract(data_dir, "0G", T, source=NOTICE) == first
    assert meta_of(first)["source"] == NOTICE and meta_of(second)["source"] == other
    assert sorted(p.name for p in (data_dir / "listings").iterdir()) == [
        first.name,
        second.name,
        third.name,
    ]


def test_a_directory_that_is_not_a_listing_is_never_taken_over(data_dir: Path) -> None:
    squatter = data_dir / "listings" / listing_dir_name("0G", T)
    squatter.mkdir(parents=True)
    (squatter / "notes.txt").write_text("mine")
    out = extract(data_dir, "0G", T)
    assert out.name == f"{squatter.name}_2"
    assert (squatter / "notes.txt").read_text() == "mine"


def test_a_subset_rerun_keeps_the_other_streams(data_dir: Path) -> None:
    full = extract(data_dir, "0G", T, source=NOTICE)
    before = files(full)
    table_before = pq.read_table(full / "raw" / "trades.parquet")
    again = extract(data_dir, "0G", T, streams="okx")
    assert again == full
    after = files(again)
    for stream in STREAMS:
        assert after[f"raw/{stream}.json"] == before[f"raw/{stream}.json"], stream
    assert pq.read_table(full / "raw" / "trades.parquet").equals(table_before)
    meta = meta_of(again)
    assert list(meta["streams"]) == list(STREAMS)
    old_at = orjson.loads(before["metadata.json"])["extracted_at"]
    assert meta["streams"]["binance_spot"]["kept_from"] == old_at
    assert "kept_from" not in meta["streams"]["okx_spot"]
    assert meta["trades"] == orjson.loads(before["metadata.json"])["trades"]


def test_a_stream_pruned_by_retention_keeps_its_extracted_trades(data_dir: Path) -> None:
    full = extract(data_dir, "0G", T)
    before = files(full)
    assert orjson.loads(before["raw/gate_spot.json"])  # it had trades
    for seg in list_segments(data_dir, ["gate_spot"]):
        seg.path.unlink()
    again = extract(data_dir, "0G", T)
    assert files(again)["raw/gate_spot.json"] == before["raw/gate_spot.json"]
    assert (
        meta_of(again)["streams"]["gate_spot"]["kept_from"]
        == orjson.loads(before["metadata.json"])["extracted_at"]
    )


def test_a_symbol_no_stream_recorded_writes_nothing(data_dir: Path) -> None:
    before = files(data_dir)
    with pytest.raises(NothingMatchedError, match="no stream has recorded ZZZ") as info:
        extract(data_dir, "zzz", T)
    assert info.value.exit_code == 4 and "\n" not in str(info.value)
    assert files(data_dir) == before
    assert not (data_dir / "listings").exists()


def test_a_symbol_a_journal_knows_gets_its_coverage_even_without_trades(data_dir: Path) -> None:
    journal = EventJournal(data_dir, "bybit_spot")
    journal.record("start", ts_us=START)
    journal.record("connected", conn="c1", ts_us=START + 1 * S, url="ws://127.0.0.1")
    journal.record("subscribed", conn="c1", ts_us=START + 2 * S, symbols=["NEWUSDT"], bases=["NEW"])
    journal.record("alive", ts_us=T + 30 * S)
    journal.close()
    out = extract(data_dir, "NEW", T)
    meta = meta_of(out)
    assert meta["trades"] == 0
    assert meta["streams"]["bybit_spot"]["coverage"]["state"] == "complete"


def _damage(data_dir: Path, stream: str) -> Path:
    """Overwrite the window's sealed segment of `stream` with random bytes from its first record
    batch on (the header included, so the reader stops there: "damaged after byte …")."""
    (seg,) = [s for s in list_segments(data_dir, [stream]) if s.start_us <= T < s.hour_end_us]
    with pa.memory_map(str(seg.path)) as mm:
        first = scan_segment(mm.read_buffer()).batches[0].start
    size = seg.path.stat().st_size
    with open(seg.path, "r+b") as fh:
        fh.seek(first)
        fh.write(b"\x00\x01" + os.urandom((size - first) * 2 // 3))
    return seg.path


def test_a_damaged_segment_shows_as_damaged_coverage(data_dir: Path) -> None:
    clean = extract(data_dir, "BTC", T, before_s=60, after_s=60)
    clean_meta = meta_of(clean)
    shutil.rmtree(clean)
    for stream in ("okx_spot", "binance_spot"):  # listening throughout: complete until damaged
        journal = EventJournal(data_dir, stream)
        journal.record("start", ts_us=START)
        journal.record("connected", conn="c1", ts_us=START + 1 * S, url="ws://127.0.0.1")
        journal.record("subscribed", conn="c1", ts_us=START + 2 * S, symbols=["BTCUSDT"], bases=["BTC"])
        journal.record("alive", ts_us=T + 100 * S)
        journal.close()
    path = _damage(data_dir, "okx_spot")
    spans = damaged_spans(data_dir, T - 60 * S, T + 60 * S)
    assert list(spans) == ["okx_spot"]
    (span,) = spans["okx_spot"]
    # no batch readable: from the file's start (before the window) to its hour's end (after it)
    assert span.path == str(path) and (span.start_us, span.end_us) == (T - 60 * S, T + 60 * S + 1)

    meta = meta_of(extract(data_dir, "BTC", T, before_s=60, after_s=60))
    okx = meta["streams"]["okx_spot"]
    assert okx["trades"] < clean_meta["streams"]["okx_spot"]["trades"]
    cov = okx["coverage"]
    assert cov["state"] == "incomplete" and cov["complete"] is False
    assert [(m["start_us"], m["end_us"], m["reason"]) for m in cov["missing"]] == [
        (T - 60 * S, T + 60 * S, "damaged")
    ]
    assert [(g["start_us"], g["end_us"]) for g in cov["gaps"]] == [(T - 60 * S, T + 60 * S)]
    assert meta["streams"]["binance_spot"]["coverage"]["state"] == "complete"


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask")
def test_listing_directories_follow_the_umask(data_dir: Path) -> None:
    out = extract(data_dir, "0G", T)
    run_detector(out)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o755
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o755}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o644}
    os.umask(0o027)
    extract(data_dir, "0G", T)  # the refresh: a new directory swapped in
    run_detector(out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "refined").stat().st_mode) == 0o750
    assert stat.S_IMODE((out / "metadata.json").stat().st_mode) == 0o640


def test_random_bytes_in_a_batch_body_are_a_damaged_span_not_a_lie(data_dir: Path) -> None:
    """Random bytes inside a batch's compressed body frame fine; the batch's checksum fails, so
    the reader skips exactly that batch and the extraction lists its span as missing (damaged)
    instead of stopping or claiming the stream whole."""
    listing = extract(data_dir, "BTC", T)
    clean = meta_of(listing)["streams"]["okx_spot"]
    (seg,) = [s for s in list_segments(data_dir, ["okx_spot"]) if s.start_us <= T < s.hour_end_us]
    with pa.memory_map(str(seg.path)) as mm:
        batch = scan_segment(mm.read_buffer()).batches[0]
    with open(seg.path, "r+b") as fh:  # the middle third of the body (headers intact)
        third = (batch.end - batch.start) // 3
        fh.seek(batch.start + third)
        fh.write(os.urandom(third))
    # a refresh of the listing keeps the trades the store has lost since (review finding 5)
    kept = meta_of(extract(data_dir, "BTC", T))["streams"]["okx_spot"]
    assert kept["trades"] == clean["trades"]
    assert kept["coverage"]["state"] == clean["coverage"]["state"] == "incomplete"  # no journal here
    assert sum(r["trades"] for r in kept["coverage"]["restored"]) > 0
    # a new extraction of the window says what the store cannot give back
    shutil.rmtree(listing)
    okx = meta_of(extract(data_dir, "BTC", T))["streams"]["okx_spot"]
    assert okx["trades"] < clean["trades"]
    assert okx["coverage"]["state"] == "incomplete"
    assert {m["reason"] for m in okx["coverage"]["missing"]} == {"damaged"}
