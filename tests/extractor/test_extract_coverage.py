"""Extraction over a store with live segments, REST repairs and journaled gaps (issue 10):
metadata.json's coverage states, spans, reasons and counts, and raw rows' ``source``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pumpwatch.extractor import extract
from pumpwatch.extractor.metadata import coverage_summary
from pumpwatch.segments.coverage import MissingSpan, completeness
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.repair import write_repaired
from pumpwatch.segments.schema import TradeRow
from pumpwatch.segments.writer import SegmentWriter
from pumpwatch.timeunits import US_PER_S as S
from pumpwatch.utctime import format_utc

T = 1_767_229_000 * S  # 2026-01-01T00:56:40Z
HALF = S // 2
STREAMS = ("binance_spot", "okx_futures", "binance_futures", "bybit_spot", "gate_spot", "okx_spot")
SYMBOL = {
    "binance_spot": "0GUSDT",
    "okx_futures": "0G-USDT-SWAP",
    "binance_futures": "0GUSDT",
    "bybit_spot": "0GUSDT",
    "gate_spot": "0G_USDT",
    "okx_spot": "0G-USDT",
}


def row(stream: str, t_us: int, i: int) -> TradeRow:
    side = "buy" if i % 2 else "sell"
    return (t_us, t_us + 700, SYMBOL[stream], "0G", "USDT", 0.5 + i * 1e-4, 10.0 + i, side, f"{i}")


def every_half_second(
    stream: str, a_s: float, b_s: float, *, skip: tuple[float, float] | None = None
) -> list[TradeRow]:
    """Rows at T + k/2 s for a_s <= k/2 <= b_s, without those strictly inside `skip`; trade id
    = the half-second index, so REST rows for the same instants carry the same ids."""
    rows = []
    for k in range(int(a_s * 2), int(b_s * 2) + 1):
        if skip is not None and skip[0] < k / 2 < skip[1]:
            continue
        rows.append(row(stream, T + k * HALF, 1000 + k))
    return rows


def journal(data_dir: Path, stream: str, events: list[tuple[float, str, dict[str, Any]]]) -> None:
    with EventJournal(data_dir, stream) as j:
        for ts_s, kind, fields in events:
            conn = fields.pop("conn", None)
            j.record(kind, conn=conn, ts_us=T + round(ts_s * S), **fields)


def listening(stream: str, *breaks: tuple[float, float]) -> list[tuple[float, str, dict[str, Any]]]:
    """start at T-100 s, subscribed, each (drop, resubscribe) break, heartbeats, stop at T+100 s."""
    sub = {"symbols": [SYMBOL[stream]], "bases": ["0G"]}
    events: list[tuple[float, str, dict[str, Any]]] = [
        (-100, "start", {}),
        (-99, "subscribed", {"conn": "c0", **sub}),
    ]
    for n, (drop, back) in enumerate(breaks):
        events.append((drop, "disconnected", {"conn": f"c{n}", "reason": "1006"}))
        events.append((back, "subscribed", {"conn": f"c{n + 1}", **sub}))
    events += [(t, "alive", {}) for t in range(-90, 100, 10)]
    events.sort(key=lambda e: e[0])
    return [*events, (100, "stop", {})]


def span_event(
    kind: str, stream: str, a_s: float, b_s: float, **fields: Any
) -> tuple[float, str, dict[str, Any]]:
    return (b_s + 1, kind, {"symbol": SYMBOL[stream], "base": "0G", "start_us": T + round(a_s * S),
                            "end_us": T + round(b_s * S), **fields})  # fmt: skip


@pytest.fixture(scope="module")
def listing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("repaired_store")

    def live(stream: str, rows: list[TradeRow]) -> None:
        with SegmentWriter(data_dir, stream, fsync=False) as w:
            w.append(rows)

    # binance_spot: listening throughout
    live("binance_spot", every_half_second("binance_spot", -30, 30))
    journal(data_dir, "binance_spot", listening("binance_spot"))

    # okx_futures: dropped from T-5 s to T-2 s; the worker's repair fetched the hole (and one
    # trade already stored, which write_repaired drops) and journaled it
    live("okx_futures", every_half_second("okx_futures", -30, 30, skip=(-5, -2)))
    offered = every_half_second("okx_futures", -5, -2.5)  # -5 is stored already
    done = write_repaired(data_dir, "okx_futures", offered, recv_us=T + 60 * S, fsync=False)
    assert (done.written, done.duplicates) == (5, 1)
    fixed = span_event("repaired", "okx_futures", -5, -2, trades=5, via="/api/v5/market/history-trades")
    journal(data_dir, "okx_futures", [*listening("okx_futures", (-5, -2)), fixed])

    # binance_futures: connected throughout, but id 1007 (T+3.5 s, between T+3 s and T+4 s) never came
    live("binance_futures", every_half_second("binance_futures", -30, 30, skip=(3, 4)))
    write_repaired(data_dir, "binance_futures", [row("binance_futures", T + 3 * S + HALF, 1007)], fsync=False)
    gap = (5, "id_gap", {"symbol": "0GUSDT", "base": "0G", "first_missing": "1007", "last_missing": "1007",
                         "after_us": T + 3 * S, "before_us": T + 4 * S})  # fmt: skip
    journal(data_dir, "binance_futures", [*listening("binance_futures"), gap,
            span_event("repaired", "binance_futures", 3, 4, trades=1, via="/fapi/v1/aggTrades")])  # fmt: skip

    # bybit_spot: dropped from T+10 s to T+12.3 s; recent-trade no longer reached back
    live("bybit_spot", every_half_second("bybit_spot", -30, 30, skip=(10, 12.3)))
    journal(data_dir, "bybit_spot", [*listening("bybit_spot", (10, 12.3)),
            span_event("unrepaired", "bybit_spot", 10, 12.3, reason="no_history")])  # fmt: skip

    # gate_spot: trades on disk, no journal at all (recorded before journals, or copied in)
    live("gate_spot", every_half_second("gate_spot", -30, 30))

    # okx_spot: PumpWatch was not recording; the whole window came from REST history
    write_repaired(
        data_dir, "okx_spot", every_half_second("okx_spot", -25, 25), recv_us=T + 3600 * S, fsync=False
    )
    with EventJournal(data_dir, "okx_spot") as j:
        j.record("repaired", ts_us=T + 3600 * S, symbol="0G-USDT", base="0G", start_us=T - 60 * S,
                 end_us=T + 60 * S, trades=101, via="/api/v5/market/history-trades")  # fmt: skip
    return extract(data_dir, "0G", T, streams=STREAMS)


def _span(a_us: int, b_us: int) -> dict[str, Any]:
    return {"start": format_utc(a_us), "end": format_utc(b_us), "start_us": a_us, "end_us": b_us,
            "duration_s": round((b_us - a_us) / S, 6)}  # fmt: skip


def coverage_of(listing: Path, stream: str) -> dict[str, Any]:
    meta = orjson.loads((listing / "metadata.json").read_bytes())
    return meta["streams"][stream]["coverage"]


def test_listening_throughout_is_complete(listing: Path) -> None:
    assert coverage_of(listing, "binance_spot") == {
        "known": True, "complete": True, "listening_s": 40.0, "gaps": [], "state": "complete",
        "repaired": [], "missing": [], "rest_trades": 0,
        "listening_since": format_utc(T - 99 * S), "listening_since_us": T - 99 * S,
    }  # fmt: skip


def test_a_disconnect_repaired_from_rest(listing: Path) -> None:
    a, b = T - 5 * S, T - 2 * S
    assert coverage_of(listing, "okx_futures") == {
        "known": True,
        "complete": False,
        "listening_s": 37.0,
        "listening_since": format_utc(T - 99 * S),
        "listening_since_us": T - 99 * S,
        "gaps": [_span(a, b)],
        "state": "repaired",
        "repaired": [{**_span(a, b), "trades": 5, "via": "/api/v5/market/history-trades"}],
        "missing": [],
        "rest_trades": 5,
    }
    rows = orjson.loads((listing / "raw" / "okx_futures.json").read_bytes())
    assert len(rows) == 81  # T-20 s .. T+20 s every half second: none lost, none twice
    assert [r["timestamp_us"] for r in rows] == [T + k * HALF for k in range(-40, 41)]
    rest = [r["timestamp_us"] for r in rows if r["source"] == "rest"]
    assert rest == [T + k * HALF for k in (-9, -8, -7, -6, -5)]
    assert {r["source"] for r in rows} == {"ws", "rest"}
    assert rows[0] == {
        "exchange": "okx", "market": "futures", "symbol": "0G-USDT-SWAP", "price": 0.5 + 960 * 1e-4,
        "quantity": 970.0, "side": "sell", "timestamp": (T - 20 * S) // 1000, "timestamp_us": T - 20 * S,
        "trade_id": "960", "source": "ws",
    }  # fmt: skip


def test_an_id_gap_repaired(listing: Path) -> None:
    a, b = T + 3 * S, T + 4 * S + 1  # the closed span [after_us, before_us]
    assert coverage_of(listing, "binance_futures") == {
        "known": True,
        "complete": False,  # listening throughout, but ids were not continuous
        "listening_s": 40.0,
        "listening_since": format_utc(T - 99 * S),
        "listening_since_us": T - 99 * S,
        "gaps": [_span(a, b)],
        "state": "repaired",
        "repaired": [{**_span(a, b), "trades": 1, "via": "/fapi/v1/aggTrades"}],
        "missing": [],
        "rest_trades": 1,
    }
    rows = orjson.loads((listing / "raw" / "binance_futures.json").read_bytes())
    assert [(r["trade_id"], r["source"]) for r in rows if 3 * S <= r["timestamp_us"] - T <= 4 * S] == [
        ("1006", "ws"), ("1007", "rest"), ("1008", "ws"),
    ]  # fmt: skip


def test_a_gap_left_unrepaired(listing: Path) -> None:
    a, b = T + 10 * S, T + 12_300_000
    gap = _span(a, b)
    assert coverage_of(listing, "bybit_spot") == {
        "known": True,
        "complete": False,
        "listening_s": 37.7,
        "listening_since": format_utc(T - 99 * S),
        "listening_since_us": T - 99 * S,
        "gaps": [gap],
        "state": "incomplete",
        "repaired": [],
        "missing": [{**gap, "reason": "no_history", "symbols": ["0GUSDT"]}],
        "rest_trades": 0,
    }


def test_no_journal_is_incomplete_and_rest_throughout_is_repaired(listing: Path) -> None:
    window_end = T + 20 * S
    assert coverage_of(listing, "gate_spot") == {
        "known": False, "complete": None, "listening_s": None, "gaps": [],
        "listening_since": None, "listening_since_us": None, "state": "incomplete",
        "repaired": [], "rest_trades": 0,
        "missing": [{**_span(T - 20 * S, window_end), "reason": "not_attempted", "symbols": []}],
    }  # fmt: skip
    assert coverage_of(listing, "okx_spot") == {
        "known": False, "complete": None, "listening_s": None, "gaps": [],
        "listening_since": None, "listening_since_us": None, "state": "repaired",
        "repaired": [{**_span(T - 20 * S, window_end), "trades": 81, "via": "/api/v5/market/history-trades"}],
        "missing": [], "rest_trades": 81,
    }  # fmt: skip
    rows = orjson.loads((listing / "raw" / "okx_spot.json").read_bytes())
    assert len(rows) == 81 and {r["source"] for r in rows} == {"rest"}


def test_parquet_source_is_a_plain_string_column(listing: Path) -> None:
    table = pq.read_table(listing / "raw" / "trades.parquet")
    assert table.schema.field("source").type == pa.string()
    counts: dict[tuple[str, str, str], int] = {}
    for e, m, s in zip(*(table.column(c).to_pylist() for c in ("exchange", "market", "source")), strict=True):
        counts[(e, m, s)] = counts.get((e, m, s), 0) + 1
    assert counts == {
        ("binance", "spot", "ws"): 81, ("binance", "futures", "ws"): 80, ("binance", "futures", "rest"): 1,
        ("bybit", "spot", "ws"): 77, ("gate", "spot", "ws"): 81, ("okx", "futures", "ws"): 76,
        ("okx", "futures", "rest"): 5, ("okx", "spot", "rest"): 81,
    }  # fmt: skip


def test_the_printed_summary(listing: Path) -> None:
    assert coverage_summary(listing) == [
        "binance_spot     81 trades  complete",
        "okx_futures      81 trades  repaired (1 span, 5 from REST)",
        "binance_futures  81 trades  repaired (1 span, 1 from REST)",
        "bybit_spot       77 trades  incomplete: 2.3 s missing (no_history)",
        "gate_spot        81 trades  incomplete: 40.0 s missing (no journal, not_attempted)",
        "okx_spot         81 trades  repaired (1 span, 81 from REST)",
    ]


def test_repairs_journaled_before_the_extraction_count(tmp_path: Path) -> None:
    stream = "bybit_spot"
    live_rows = every_half_second(stream, -30, 30, skip=(10, 12.3))
    with SegmentWriter(tmp_path, stream, fsync=False) as w:
        w.append(live_rows)
    journal(tmp_path, stream, listening(stream, (10, 12.3)))
    journal(tmp_path, "binance_spot", listening("binance_spot"))

    def backfill(stream_id: str, base: str, spans: Sequence[MissingSpan]) -> None:
        for span in spans:
            repaired = every_half_second(stream_id, (span.start_us - T) / S, (span.end_us - 1 - T) / S)
            write_repaired(tmp_path, stream_id, repaired, fsync=False)
            with EventJournal(tmp_path, stream_id) as j:
                fields = {"symbol": SYMBOL[stream_id], "base": base, "trades": len(repaired)}
                j.record(
                    "repaired", start_us=span.start_us, end_us=span.end_us - 1, via="/v5/recent", **fields
                )

    missing = completeness(tmp_path, stream, T - 20 * S, T + 20 * S, base="0G").missing
    assert missing == [MissingSpan(T + 10 * S, T + 12_300_000, "not_attempted", ("0GUSDT",))]
    assert completeness(tmp_path, "binance_spot", T - 20 * S, T + 20 * S, base="0G").missing == []
    backfill(stream, "0G", missing)
    out = extract(tmp_path, "0G", T, streams=(stream, "binance_spot", "gate_spot"))
    cov = coverage_of(out, stream)
    assert cov["state"] == "repaired"
    assert cov["repaired"] == [
        {**_span(T + 10 * S, T + 12_300_000), "trades": 4, "via": "/v5/recent"}  # T+10 s was live
    ]
    rows = orjson.loads((out / "raw" / f"{stream}.json").read_bytes())
    assert [r["timestamp_us"] for r in rows] == [T + k * HALF for k in range(-40, 41)]
    assert coverage_of(out, "gate_spot")["state"] == "incomplete"
