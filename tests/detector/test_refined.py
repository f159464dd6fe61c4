"""refined/ files written by run_detector on a listing directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpwatch.detector import run_detector
from pumpwatch.errors import StoreError
from pumpwatch.settings import PumpSettings
from pumpwatch.timeunits import US_PER_S as S

T0 = 1_767_300_000 * S


def make_listing(root: Path) -> Path:
    listing = root / "0G_20260101T202000Z"
    (listing / "raw").mkdir(parents=True)
    rows = []
    for k in range(42):  # 1 trade / 500 ms, flat, both streams, until T0 + 0.5 s
        rows.append(("binance", "spot", T0 - 20 * S + k * 500_000, 2.0, 1.0, str(100 + k)))
        rows.append(("okx", "futures", T0 - 20 * S + k * 500_000 + 1000, 2.0, 1.0, str(500 + k)))
    # okx futures pumps 10 % at T0 + 1.0..1.4 s; binance follows 0.5 s later but only +2 %
    rows += [("okx", "futures", T0 + 1_000_000 + j * 100_000, 2.0 * (1 + 0.025 * (j + 1)), 5.0, str(600 + j))
             for j in range(4)]  # fmt: skip
    rows += [("binance", "spot", T0 + 1_500_000, 2.04, 5.0, "200")]
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "exchange": list(cols[0]),
            "market": list(cols[1]),
            "time": pa.array(cols[2], pa.timestamp("us", tz="UTC")),
            "symbol": ["X"] * len(rows),
            "base": ["0G"] * len(rows),
            "price": pa.array(cols[3], pa.float64()),
            "qty": pa.array(cols[4], pa.float64()),
            "side": ["buy"] * len(rows),
            "trade_id": list(cols[5]),
        }
    )
    pq.write_table(table, listing / "raw" / "trades.parquet")
    meta = {
        "symbol": "0G",
        "trigger_time_us": T0,
        "window": {"start_us": T0 - 20 * S, "end_us": T0 + 20 * S},
    }
    (listing / "metadata.json").write_bytes(orjson.dumps(meta))
    return listing


def test_refined_files(tmp_path: Path) -> None:
    listing = make_listing(tmp_path)
    result = run_detector(listing)
    refined = listing / "refined"
    assert sorted(p.name for p in refined.iterdir()) == [
        "chart.png",
        "exchange_comparison.json",
        "okx_pumps.json",
        "pump_analysis.json",
    ]
    assert orjson.loads((refined / "pump_analysis.json").read_bytes()) == result
    (ev,) = result["pump_events"]
    assert (ev["exchange"], ev["market_type"]) == ("okx", "futures")
    assert ev["price_change_percent"] == pytest.approx(10.0)
    assert result["collection_period"] == {"start": (T0 - 20 * S) // 1000, "end": (T0 + 20 * S) // 1000}
    assert result["symbol"] == "0G"

    okx = orjson.loads((refined / "okx_pumps.json").read_bytes())
    assert okx["exchange"] == "okx"
    (okx_ev,) = okx["events"]
    assert okx_ev["market_type"] == "futures"
    assert len(okx_ev["trades"]) == ev["trades_count"] == 5
    assert ev["start_time_us"] == T0 + 501_000  # the last flat trade before the jump
    assert okx_ev["trades"][0]["timestamp_us"] == ev["start_time_us"]
    assert okx_ev["trades"][-1]["timestamp_us"] == ev["end_time_us"]
    assert [t["trade_id"] for t in okx_ev["trades"][-4:]] == ["600", "601", "602", "603"]

    comp = orjson.loads((refined / "exchange_comparison.json").read_bytes())
    assert comp["first_pump_stream"] == "okx_futures"
    assert comp["pump_order"] == ["okx_futures"]
    okx_s, bin_s = comp["streams"]["okx_futures"], comp["streams"]["binance_spot"]
    assert okx_s["pumped"] is True and okx_s["lag_ms"] == 0.0 and okx_s["events"] == 1
    assert okx_s["first_pump_time_us"] == ev["start_time_us"]
    assert okx_s["trades"] == 46
    assert okx_s["volume_before_trigger"] == 40.0 and okx_s["volume_after_trigger"] == 22.0
    assert okx_s["baseline_window_volume"] == pytest.approx(40.0 / 20.0)
    assert okx_s["change_after_trigger_percent"] == pytest.approx(10.0)
    assert bin_s["pumped"] is False and bin_s["lag_ms"] is None and bin_s["first_pump_time"] is None
    assert bin_s["max_rise_percent"] == pytest.approx(2.0)
    assert (refined / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerun_is_byte_identical_and_replaces_stale_files(tmp_path: Path) -> None:
    listing = make_listing(tmp_path)
    run_detector(listing)
    first = {p.name: p.read_bytes() for p in (listing / "refined").iterdir()}
    run_detector(listing)
    assert {p.name: p.read_bytes() for p in (listing / "refined").iterdir()} == first
    strict = run_detector(listing, PumpSettings(threshold_percent=50.0), chart=False)
    assert strict["pump_events"] == []
    assert strict["parameters"]["threshold_percent"] == 50.0
    assert sorted(p.name for p in (listing / "refined").iterdir()) == [
        "exchange_comparison.json",
        "pump_analysis.json",
    ]
    loose = run_detector(listing, PumpSettings(threshold_percent=1.5), chart=False)
    assert [(e["exchange"], e["market_type"]) for e in loose["pump_events"]] == [
        ("okx", "futures"),
        ("binance", "spot"),
    ]
    assert loose["summary"]["total_exchanges_with_pumps"] == 2
    assert [p.name for p in listing.iterdir() if p.name.startswith(".")] == []


def test_not_a_listing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a listing directory"):
        run_detector(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "metadata.json").write_text("{}")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "raw" / "trades.parquet")
    with pytest.raises(StoreError, match="not a PumpWatch metadata file"):
        run_detector(tmp_path)
