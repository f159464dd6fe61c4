"""A store with several generated listings for the report tests, extracted and detected by
the real extractor and detector over a synthetic market with journals:

- 0G  (Upbit notice): pumps on binance_spot, okx_futures, gate_spot (0.5, 1.5, 2.5 s after T);
  okx_spot has a journaled disconnect repaired from REST (coverage `repaired`);
- ZRO (manual): pumps on bybit_futures and kucoin_spot, kucoin_spot 0.3 s *before* T;
- HYPE (manual): no pump;
- ENA (Upbit notice): pumps on binance_futures and phemex_spot; gate_futures lost its
  connection inside the window, never repaired (coverage `incomplete`);
- `notes/`: a directory without metadata.json (skipped, not fatal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pumpwatch.detector.refined import run_detector
from pumpwatch.extractor import extract
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.segments.journal import EventJournal
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S as S

START = 1_767_258_000 * S  # 2026-01-01T09:00:00Z
BASES = ("0G", "ZRO", "HYPE", "ENA", "BTC")
DURATION_S = 400


@dataclass(frozen=True)
class Planned:
    symbol: str
    trigger_us: int
    pumped: tuple[str, ...]
    lags_s: dict[str, float]
    source: dict[str, Any] | None


PLAN = (
    Planned("0G", START + 60 * S, ("binance_spot", "okx_futures", "gate_spot"),
            {"binance_spot": 0.5, "okx_futures": 1.5, "gate_spot": 2.5},
            {"type": "upbit", "notice_id": 5123, "title": "제로지(0G) 신규 거래지원 안내 (KRW, USDT 마켓)",
             "first_listed_at": "2026-01-01T09:01:00Z"}),
    Planned("ZRO", START + 150 * S, ("bybit_futures", "kucoin_spot"),
            {"bybit_futures": 1.0, "kucoin_spot": -0.3}, None),
    Planned("HYPE", START + 240 * S, (), {}, None),
    Planned("ENA", START + 330 * S, ("binance_futures", "phemex_spot"),
            {"binance_futures": 0.8, "phemex_spot": 3.0},
            {"type": "upbit", "notice_id": 5130, "title": "<b>Ethena</b> (ENA) KRW market & \"quotes\"",
             "first_listed_at": "2026-01-01T09:05:30Z"}),
)  # fmt: skip
REPAIRED = ("0G", "okx_spot")
INCOMPLETE = ("ENA", "gate_futures")


def _journal(data_dir: Path) -> None:
    """Every stream listening for every base throughout; two breaks inside two windows."""
    plan = {p.symbol: p for p in PLAN}
    for stream in STREAMS:
        sub = {"symbols": [sim_instrument(stream, b).symbol for b in BASES], "bases": list(BASES)}
        events: list[tuple[int, str, dict[str, Any]]] = [
            (START - 10 * S, "start", {}),
            (START - 9 * S, "subscribed", {"conn": "c0", **sub}),
        ]
        events += [(START + k * S, "alive", {}) for k in range(0, DURATION_S, 10)]
        for symbol, broken in (REPAIRED, INCOMPLETE):
            if stream != broken:
                continue
            t = plan[symbol].trigger_us
            events.append((t - 5 * S, "disconnected", {"conn": "c0", "reason": "1006"}))
            events.append((t - 2 * S, "subscribed", {"conn": "c1", **sub}))
            if (symbol, broken) == REPAIRED:
                events.append((t + S, "repaired", {
                    "symbol": sim_instrument(stream, symbol).symbol, "base": symbol,
                    "start_us": t - 5 * S, "end_us": t - 2 * S, "trades": 0,
                    "via": "/api/v5/market/history-trades",
                }))  # fmt: skip
        events.sort(key=lambda e: e[0])
        events.append((START + DURATION_S * S + 10 * S, "stop", {}))
        with EventJournal(data_dir, stream) as j:
            for ts_us, kind, fields in events:
                conn = fields.pop("conn", None)
                j.record(kind, conn=conn, ts_us=ts_us, **fields)


def build_listings(root: Path) -> dict[str, Path]:
    """Write the store and extract + detect every planned listing; ``{symbol: listing dir}``."""
    pumps = tuple(
        PumpSpec(p.symbol, p.trigger_us, 8.0, 2.0, streams=p.pumped, lag_s=p.lags_s) for p in PLAN if p.pumped
    )
    spec = MarketSpec(
        seed=11, start_us=START, duration_s=DURATION_S, trades_per_s=12, bases=BASES, pumps=pumps
    )
    write_store(root, spec, flush_every_s=5.0)
    _journal(root)
    out = {}
    for p in PLAN:
        listing = extract(root, p.symbol, p.trigger_us, source=p.source)
        run_detector(listing)
        out[p.symbol] = listing
    (root / "listings" / "notes").mkdir()
    (root / "listings" / "notes" / "todo.txt").write_text("not a listing\n")
    return out


@pytest.fixture(scope="session")
def listings_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """(data dir, {symbol: listing dir}) of the planned store, built once per session."""
    root = tmp_path_factory.mktemp("report_store")
    return root, build_listings(root)
