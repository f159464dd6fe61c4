"""Id holes still inside their grace are never dropped unjournaled (review of issue 10): a clean
stop, or the symbol dropped from the subscription list, ends every chance that a late arrival
fills them, so they are journaled ``id_gap`` then (and, on a drop while running, handed to
repair); coverage never says complete across them. Real runner against a local server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from helpers.json_exchange import Harness, make_adapter, make_protocol

from pumpwatch.recorder.stream.continuity import Missing
from pumpwatch.segments.schema import TradeRow

GRACE_S = 60.0  # far longer than the test: only the stop or the drop can hand the hole out


class Journal:
    """Every journal call, in order (a duck-typed EventJournal)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.events.append((name, args, kwargs))

        return call

    def id_gaps(self) -> list[dict[str, Any]]:
        return [k for n, a, k in self.events if n == "record" and a[0] == "id_gap"]


def _trade(n: int, symbol: str) -> TradeRow:
    t_us = time.time_ns() // 1000
    return (t_us, 0, symbol, symbol[:-4], "USDT", 1.0 + n / 1000, 1.0, "buy", str(n))


def _harness(spans: list[Missing]) -> Harness:
    h = Harness(
        make_adapter(),
        make_protocol(),
        ["AAA", "BBB"],
        on_missing=spans.append,
        contiguous_ids=True,
        id_grace_s=GRACE_S,
    )
    h.journal = Journal()  # type: ignore[assignment]
    return h


def test_a_hole_within_the_grace_at_a_clean_stop_is_journaled() -> None:
    spans: list[Missing] = []
    h = _harness(spans)

    async def main() -> None:
        async with h:
            await h.subscribed()
            h.sim.publish([_trade(10, "AAAUSDT"), _trade(11, "AAAUSDT"), _trade(14, "AAAUSDT")])
            await h.until(lambda: len(h.received) == 3)
            assert h.runner.ids.pending_holes() == 1
        # stopped (by the harness) long before the grace ended

    asyncio.run(asyncio.wait_for(main(), 30))
    gaps = h.journal.id_gaps()  # type: ignore[attr-defined]
    assert [(g["symbol"], g["first_missing"], g["last_missing"]) for g in gaps] == [("AAAUSDT", 12, 13)]
    assert gaps[0]["after_us"] < gaps[0]["before_us"]
    assert h.runner.stats.id_holes == 1 and h.runner.ids.pending_holes() == 0
    names = [n if n != "record" else a[0] for n, a, _ in h.journal.events]  # type: ignore[attr-defined]
    assert names.index("id_gap") > max(i for i, n in enumerate(names) if n == "disconnected")
    assert spans == []  # the repair loop stops with the runner: the next start's rescan repairs it


def test_a_hole_within_the_grace_of_a_dropped_symbol_is_journaled_and_repaired() -> None:
    spans: list[Missing] = []
    h = _harness(spans)

    async def main() -> None:
        async with h:
            await h.subscribed()
            h.sim.publish([_trade(20, "BBBUSDT"), _trade(23, "BBBUSDT"), _trade(5, "AAAUSDT")])
            await h.until(lambda: len(h.received) == 3)
            h.runner.update_instruments({"AAAUSDT": h.instruments["AAAUSDT"]})  # BBB delisted
            gaps = h.journal.id_gaps()  # type: ignore[attr-defined]
            assert [(g["symbol"], g["first_missing"], g["last_missing"]) for g in gaps] == [
                ("BBBUSDT", 21, 22)
            ]
            repairs = [(s.symbol, s.cause, s.first_id, s.last_id) for s in spans]
            assert repairs == [("BBBUSDT", "id_gap", 21, 22)]

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(h.journal.id_gaps()) == 1  # type: ignore[attr-defined]  # not again at the stop
