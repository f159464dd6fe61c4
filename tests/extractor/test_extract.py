"""The extractor against a real store written by the real SegmentWriter from the generator."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pumpwatch.errors import NothingMatchedError, StoreError, UsageError
from pumpwatch.extractor import extract, listing_dir_name
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, generate, write_store
from pumpwatch.segments.journal import EventJournal
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S as S

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = 1_767_229_000 * S  # 2026-01-01T00:56:40Z: the store crosses the 01:00 hour boundary
DURATION_S = 480
BASES = ("BTC", "ETH", "0G", "SUI", "ONDO")
PUMP_AT = START + 200 * S
SPEC = MarketSpec(
    seed=21,
    start_us=START,
    duration_s=DURATION_S,
    trades_per_s=12,
    bases=BASES,
    pumps=(PumpSpec("0G", PUMP_AT, 15.0, 3.0, streams=("binance_spot", "okx_futures")),),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pa.Table]:
    """(data dir, every generated row with exchange and market columns)."""
    data_dir = tmp_path_factory.mktemp("store")
    report = write_store(data_dir, SPEC, flush_every_s=5.0)
    parts = []
    for stream, batch in generate(SPEC):
        exchange, market = stream.split("_")
        t = pa.Table.from_batches([batch])
        n = t.num_rows
        parts.append(
            t.add_column(0, "market", pa.array([market] * n)).add_column(
                0, "exchange", pa.array([exchange] * n)
            )
        )
    everything = pa.concat_tables(parts)
    assert report["trades"] == everything.num_rows
    return data_dir, everything


def brute_force(everything: pa.Table, symbol: str, start_us: int, end_us: int) -> dict[str, list[dict]]:
    t = everything.column("time").cast(pa.int64())
    mask = pc.and_(
        pc.equal(everything.column("base"), symbol),
        pc.and_(pc.greater_equal(t, start_us), pc.less_equal(t, end_us)),
    )
    out: dict[str, list[dict]] = defaultdict(list)
    for row in everything.filter(mask).to_pylist():
        out[f"{row['exchange']}_{row['market']}"].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (r["time"], r["recv_time"]))
    return out


def check_against(listing: Path, expected: dict[str, list[dict]]) -> None:
    for stream in STREAMS:
        got = orjson.loads((listing / "raw" / f"{stream}.json").read_bytes())
        want = expected.get(stream, [])
        assert len(got) == len(want), stream
        for g, w in zip(got, want, strict=True):
            time_us = _us(w["time"])
            assert g == {
                "exchange": w["exchange"],
                "market": w["market"],
                "symbol": w["symbol"],
                "price": w["price"],
                "quantity": w["qty"],
                "side": w["side"],
                "timestamp": time_us // 1000,
                "timestamp_us": time_us,
                "trade_id": w["trade_id"],
                "source": w["source"],
            }
    table = pq.read_table(listing / "raw" / "trades.parquet")
    want_rows = sorted(
        (r for rows in expected.values() for r in rows), key=lambda r: (r["exchange"], r["market"])
    )
    got_rows = table.to_pylist()
    assert len(got_rows) == len(want_rows)
    key = lambda r: (r["exchange"], r["market"], r["time"], r["recv_time"], r["trade_id"] or "", r["price"])  # noqa: E731
    assert sorted(got_rows, key=key) == sorted(want_rows, key=key)
    assert table.column_names[:2] == ["exchange", "market"]


def _us(dt: datetime) -> int:
    """datetime -> exact µs (no float rounding)."""
    return (dt - EPOCH) // timedelta(microseconds=1)


def test_window_equals_brute_force_filter_and_metadata(store: tuple[Path, pa.Table]) -> None:
    data_dir, everything = store
    trigger = PUMP_AT - 3 * S + 123_456
    source = {
        "notice_id": 5123,
        "title": "0G KRW 마켓 디지털 자산 추가",
        "first_listed_at": "2026-01-01T10:00:00+09:00",
    }
    listing = extract(data_dir, "0G", trigger, source=source)
    assert listing == data_dir / "listings" / listing_dir_name("0G", trigger)
    assert listing.name == "0G_20260101T005957Z"
    expected = brute_force(everything, "0G", trigger - 20 * S, trigger + 20 * S)
    check_against(listing, expected)
    meta = orjson.loads((listing / "metadata.json").read_bytes())
    assert meta["symbol"] == "0G"
    assert meta["trigger_time"] == "2026-01-01T00:59:57.123456Z"  # window spans the 01:00 hour files
    assert meta["trigger_time_ms"] == trigger // 1000
    assert meta["trigger_time_us"] == trigger
    assert meta["window"]["start_us"] == trigger - 20 * S
    assert meta["window"]["end_us"] == trigger + 20 * S
    assert meta["window"]["start"] == "2026-01-01T00:59:37.123456Z"
    assert meta["source"] == source
    assert meta["trades"] == sum(len(v) for v in expected.values())
    for stream in STREAMS:
        info = meta["streams"][stream]
        assert info["trades"] == len(expected.get(stream, []))
        assert info["symbols"] == sorted({r["symbol"] for r in expected.get(stream, [])})
        assert info["coverage"]["known"] is False  # no journal in this store


def test_rerun_gives_byte_identical_trade_files_and_replaces_atomically(store: tuple[Path, pa.Table]) -> None:
    data_dir, _ = store
    trigger = START + 100 * S
    first = extract(data_dir, "BTC", trigger)
    snapshot = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    (first / "stale.txt").write_text("from an older run")
    second = extract(data_dir, "BTC", trigger)
    assert second == first
    assert not (second / "stale.txt").exists()
    for rel, data in snapshot.items():
        if rel.name != "metadata.json":
            assert (second / rel).read_bytes() == data, rel
    meta_a = orjson.loads(snapshot[Path("metadata.json")])
    meta_b = orjson.loads((second / "metadata.json").read_bytes())
    # the refresh says so: when the listing was first extracted, and how often
    assert meta_b.pop("re_extracted") == {
        "first_extracted_at": meta_a["extracted_at"],
        "count": 2,
        "source_kept": False,
    }
    meta_a.pop("extracted_at"), meta_b.pop("extracted_at")
    assert meta_a == meta_b
    leftovers = [p.name for p in (data_dir / "listings").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset_s=st.floats(0, DURATION_S),
    before_s=st.sampled_from([0.0, 1.5, 20.0, 90.0]),
    after_s=st.sampled_from([0.0, 0.25, 20.0, 75.0]),
    symbol=st.sampled_from(BASES),
)
def test_any_window_equals_a_filter_over_everything_written(
    store: tuple[Path, pa.Table], offset_s: float, before_s: float, after_s: float, symbol: str
) -> None:
    data_dir, everything = store
    trigger = START + round(offset_s * S)
    expected = brute_force(everything, symbol, trigger - round(before_s * S), trigger + round(after_s * S))
    if not expected:  # no trade and no journal: nothing to extract, nothing written
        with pytest.raises(NothingMatchedError, match=f"no stream has recorded {symbol}"):
            extract(data_dir, symbol, trigger, before_s=before_s, after_s=after_s)
        return
    check_against(extract(data_dir, symbol, trigger, before_s=before_s, after_s=after_s), expected)


def test_stream_selection_writes_only_those_streams(store: tuple[Path, pa.Table]) -> None:
    data_dir, _everything = store
    trigger = START + 300 * S
    listing = extract(data_dir, "ETH", trigger, streams=("okx", "gate_spot"))
    assert sorted(p.name for p in (listing / "raw").iterdir()) == [
        "gate_spot.json",
        "okx_futures.json",
        "okx_spot.json",
        "trades.parquet",
    ]
    table = pq.read_table(listing / "raw" / "trades.parquet")
    assert set(
        zip(table.column("exchange").to_pylist(), table.column("market").to_pylist(), strict=True)
    ) == {
        ("gate", "spot"),
        ("okx", "futures"),
        ("okx", "spot"),
    }
    meta = orjson.loads((listing / "metadata.json").read_bytes())
    assert sorted(meta["streams"]) == ["gate_spot", "okx_futures", "okx_spot"]
    assert meta["source"] == "manual"


def test_coverage_from_the_journal(store: tuple[Path, pa.Table], tmp_path: Path) -> None:
    data_dir, _ = store
    trigger = START + 400 * S
    journal = EventJournal(data_dir, "bybit_spot")
    journal.record("start", ts_us=START)
    journal.record("connected", conn="c1", ts_us=START + 1 * S, url="ws://127.0.0.1")
    journal.record("subscribed", conn="c1", ts_us=START + 2 * S, symbols=["SUIUSDT"], bases=["SUI"])
    journal.record("disconnected", conn="c1", ts_us=trigger + 5 * S, reason="test drop")
    journal.record("connected", conn="c2", ts_us=trigger + 6 * S, url="ws://127.0.0.1")
    journal.record("subscribed", conn="c2", ts_us=trigger + 8 * S, symbols=["SUIUSDT"], bases=["SUI"])
    journal.record("alive", ts_us=trigger + 30 * S)
    journal.record("stop", ts_us=trigger + 31 * S)
    journal.close()
    meta = orjson.loads((extract(data_dir, "SUI", trigger) / "metadata.json").read_bytes())
    cov = meta["streams"]["bybit_spot"]["coverage"]
    assert cov["known"] is True
    assert cov["complete"] is False
    assert [(g["start_us"], g["end_us"]) for g in cov["gaps"]] == [(trigger + 5 * S, trigger + 8 * S)]
    assert cov["gaps"][0]["duration_s"] == 3.0
    assert cov["listening_s"] == 37.0
    assert meta["streams"]["binance_spot"]["coverage"]["known"] is False


def test_a_negative_window_is_a_usage_error(tmp_path: Path) -> None:
    """Review finding 6: a caller's mistake (UsageError, exit 2), not a store problem."""
    from pumpwatch.extractor.remote import extract_remote

    write_store(tmp_path, MarketSpec(seed=1, start_us=START, duration_s=30, trades_per_s=2, bases=("0G",)))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for kwargs in ({"before_s": -1.0}, {"after_s": -0.5}):
        with pytest.raises(UsageError, match="window cannot be negative"):
            extract(tmp_path, "0G", START + 10 * S, **kwargs)
        with pytest.raises(UsageError, match="window cannot be negative"):
            extract_remote("s3://nowhere/x", "0G", START + 10 * S, tmp_path / "out", **kwargs)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_bad_symbol_and_missing_store_touch_nothing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="malformed symbol"):
        extract(tmp_path, "../etc", START)
    with pytest.raises(UsageError, match="malformed symbol"):
        extract(tmp_path, "0-g", START)
    # a lower-case ticker is the upper-case one; with nothing recorded, nothing is written
    with pytest.raises(NothingMatchedError, match="no stream has recorded 0G"):
        extract(tmp_path, "0g", START)
    with pytest.raises(StoreError, match="does not exist"):
        extract(tmp_path / "nope", "BTC", START)
    with pytest.raises(UsageError, match="unknown stream"):
        extract(tmp_path, "BTC", START, streams=("binance_perp",))
    assert list(tmp_path.iterdir()) == []
