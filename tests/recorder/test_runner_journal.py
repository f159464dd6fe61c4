"""The journal tells the truth about listening: no trade is ever received while the journal
says nobody listened (coverage gaps, `segments/coverage.py`, computed from what the runner
journaled, with the same wall clock as the trades' receive times)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import orjson
import pytest
from helpers.json_exchange import Harness, decode_frame, key, make_adapter, make_protocol, rows_for

from pumpwatch.recorder.adapter import Control, Instruments
from pumpwatch.recorder.sim.protocol import SimSession
from pumpwatch.segments.coverage import coverage_from_events
from pumpwatch.segments.schema import TradeRow

LONG = os.environ.get("PUMPWATCH_SOAK") == "long"


def now_us() -> int:
    return time.time_ns() // 1000


class UsJournal:
    """Duck-typed EventJournal keeping events in the journal file's shape, stamped like it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _add(self, event: str, conn: str | None = None, **fields: Any) -> None:
        self.events.append({"ts": now_us(), "event": event, "conn": conn, **fields})

    def connected(self, conn: str, url: str) -> None:
        self._add("connected", conn, url=url)

    def subscribed(self, conn: str, symbols: list[str], bases: list[str]) -> None:
        self._add("subscribed", conn, symbols=list(symbols), bases=list(bases))

    def rejected(self, conn: str, symbols: list[str], reason: str) -> None:
        self._add("rejected", conn, symbols=list(symbols), reason=reason)

    def unsubscribed(self, conn: str, symbols: list[str]) -> None:
        self._add("unsubscribed", conn, symbols=list(symbols))

    def disconnected(self, conn: str, reason: str, last_rx_us: int | None = None) -> None:
        extra = {} if last_rx_us is None else {"last_rx_us": last_rx_us}
        self._add("disconnected", conn, reason=reason, **extra)

    def gap_start(self, reason: str) -> None:
        self._add("gap_start", reason=reason)

    def gap_end(self) -> None:
        self._add("gap_end")


def rows_in_gaps(
    events: list[dict[str, Any]], rows: list[TradeRow], start_us: int, end_us: int, base: str | None = None
) -> tuple[list[tuple[int, int]], list[tuple[TradeRow, tuple[int, int]]]]:
    """(the journal's gaps in the window, every row received strictly inside one of them)."""
    cov = coverage_from_events(events, start_us, end_us, base=base, heartbeat_s=1.0, now_us=end_us)
    assert cov.known
    bad = []
    for row in rows:
        if base is not None and row[3] != base:
            continue
        for a, b in cov.gaps:
            if a < row[1] < b:
                bad.append((row, (a, b)))
    return cov.gaps, bad


def test_per_symbol_acks_journal_each_symbol_when_its_own_ack_arrives() -> None:
    """OKX answers every symbol of a request on its own and trades of an acked symbol may come
    before the next answer: `subscribed` must be journaled per answer, not once the request
    is complete, or the journal says nobody listened while that trade was received."""

    def on_message(session: SimSession, frame: str | bytes, _now_ms: int) -> list[str]:
        msg = orjson.loads(frame)
        if msg.get("op") == "ping":
            return [orjson.dumps({"e": "pong", "ts": msg.get("ts")}).decode()]
        if msg.get("op") != "sub":
            return []
        out = []
        for k, symbol in enumerate(msg["args"]):
            session.subscribed.add(symbol)
            out.append(orjson.dumps({"e": "sack", "id": msg["id"], "s": symbol}).decode())
            t_us = 1_700_000_000_000_000 + k
            trade = {"s": symbol, "t": t_us, "p": "1.5", "q": "2", "S": "buy", "i": str(k)}
            out.append(orjson.dumps({"e": "trade", "d": [trade]}).decode())
        return out

    def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
        msg = orjson.loads(frame)
        if msg.get("e") == "sack":
            return Control("ack", req_id=msg["id"], symbols=(msg["s"],))
        return decode_frame(frame, recv_us, instruments)

    async def main() -> None:
        adapter = make_adapter(decode=decode, acks_per_symbol=True)
        protocol = make_protocol(on_message=on_message)
        async with Harness(adapter, protocol, ["AAA", "BBB", "CCC"]) as h:
            journal = UsJournal()
            h.runner.journal = journal
            t0 = now_us()
            await h.subscribed()
            await h.until(lambda: len(h.received) == 3, what="the three trades sent between acks")
            t1 = now_us()
        subs = [e for e in journal.events if e["event"] == "subscribed"]
        assert [(e["conn"], e["symbols"], e["bases"]) for e in subs] == [
            ("0-1", ["AAAUSDT"], ["AAA"]),
            ("0-1", ["BBBUSDT"], ["BBB"]),
            ("0-1", ["CCCUSDT"], ["CCC"]),
        ]
        assert [(r[2], r[8]) for r in h.received] == [("AAAUSDT", "0"), ("BBBUSDT", "1"), ("CCCUSDT", "2")]
        # Each trade was received after its own symbol's ack and before the next symbol's.
        for row, sub, nxt in zip(h.received, subs, [*subs[1:], None], strict=True):
            assert sub["ts"] <= row[1]
            assert nxt is None or row[1] <= nxt["ts"]
        for base in (None, "AAA", "BBB", "CCC"):
            gaps, bad = rows_in_gaps(journal.events, h.received, t0, t1, base)
            assert len(gaps) == 1 and gaps[0][0] == t0, gaps  # before the first ack of `base`
            assert bad == [], f"base {base}: received inside a journaled gap: {bad}"

    asyncio.run(asyncio.wait_for(main(), 30))


@pytest.mark.parametrize("per_connection", [3, 1])
def test_drops_under_load_never_leave_a_trade_inside_a_journaled_gap(per_connection: int) -> None:
    """Drops while trades pour in (frames already buffered when the socket dies are still read
    and delivered): `disconnected` comes after the last of them and `subscribed` before the
    first trade of the next connection, for the stream and for every base."""
    drops = 40 if LONG else 10
    symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]

    async def main() -> None:
        adapter = make_adapter(max_symbols_per_connection=per_connection)
        async with Harness(adapter, make_protocol(), ["AAA", "BBB", "CCC"]) as h:
            journal = UsJournal()
            h.runner.journal = journal
            await h.subscribed(timeout_s=20.0)
            t0 = now_us()
            stop = asyncio.Event()

            async def publish() -> None:
                n = 0
                while not stop.is_set():
                    h.sim.publish(rows_for(symbols, n, 30))  # a burst: the client has a backlog
                    n += 30
                    await asyncio.sleep(0.002)

            publisher = asyncio.create_task(publish())
            rnd = random.Random(7)
            for _ in range(drops):
                await asyncio.sleep(rnd.uniform(0.05, 0.3))
                h.sim.drop_all()
            await h.subscribed(timeout_s=20.0)
            await asyncio.sleep(0.1)
            stop.set()
            await publisher
            sent = {key(r) for r in h.sim.sent_rows()}
            await h.until(lambda: sent <= set(h.received_keys()), timeout_s=20.0, what="every sent trade")
            t1 = now_us()
        received = [r for r in h.received if t0 <= r[1] <= t1]
        assert len(received) > 1000
        for base in (None, "AAA", "BBB", "CCC"):
            gaps, bad = rows_in_gaps(journal.events, received, t0, t1, base)
            assert gaps, f"base {base}: {drops} drops and no gap journaled"
            assert bad == [], f"base {base}: {len(bad)} trades received inside journaled gaps: {bad[:3]}"

    asyncio.run(asyncio.wait_for(main(), 120))
