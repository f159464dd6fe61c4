"""StreamRunner under faults injected by the local server: drops, stalls, refusals, garbage,
planned closes, storms. Delays are shrunk; the long storm runs with PUMPWATCH_SOAK=long."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import Counter
from typing import Any

import pytest
from helpers.json_exchange import Harness, decode_frame, key, make_adapter, make_protocol, rows_for

LONG = os.environ.get("PUMPWATCH_SOAK") == "long"


def run(coro: Any, timeout_s: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


async def pump(h: Any, symbols: list[str], stop: asyncio.Event, every_s: float = 0.003) -> int:
    """Publish 4 trades every `every_s` until `stop`; returns how many were published."""
    n = 0
    while not stop.is_set():
        h.sim.publish(rows_for(symbols, n, 4))
        n += 4
        await asyncio.sleep(every_s)
    return n


def test_reconnect_after_drop_journals_the_outage_with_its_bounds() -> None:
    async def main() -> None:
        async with Harness(make_adapter(), make_protocol(), ["AAA", "BBB"]) as h:
            await h.subscribed()
            h.sim.publish(rows_for(["AAAUSDT", "BBBUSDT"], 0, 4))
            await h.until(lambda: len(h.received) == 4)
            dropped_at = time.monotonic()
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 1)
            await h.subscribed()
            h.sim.publish(rows_for(["AAAUSDT", "BBBUSDT"], 4, 4))
            await h.until(lambda: len(h.received) == 8)
            events = [(e, f) for e, f in h.journal.events]
            kinds = [e for e, _ in events]
            assert kinds == [
                "connected", "subscribed",  # 0-1
                "disconnected", "gap_start",  # the drop
                "connected", "subscribed", "gap_end",  # 0-2
            ]  # fmt: skip
            disc, gap_start, conn2, sub2, gap_end = (f for _, f in events[2:])
            assert disc["conn"] == "0-1" and disc["reason"] == "connection lost"
            assert gap_start["reason"] == "conn 0-1: connection lost"
            assert conn2["conn"] == "0-2" and sub2["conn"] == "0-2"
            assert sub2["symbols"] == ["AAAUSDT", "BBBUSDT"]
            # Bounds: the gap opens after the drop and closes at the resubscription, not later.
            assert dropped_at <= disc["t"] <= gap_start["t"] <= conn2["t"] <= sub2["t"] <= gap_end["t"]
            assert gap_end["t"] - sub2["t"] < 0.05
            assert [key(r) for r in h.received] == [key(r) for r in rows_for(["AAAUSDT", "BBBUSDT"], 0, 8)]
            st = h.runner.stats
            assert (st.reconnects, st.rotations, st.connected) == (1, 0, 1)

    run(main())


def test_watchdog_replaces_a_stalled_connection() -> None:
    async def main() -> None:
        adapter = make_adapter(quiet_timeout_s=0.4, ping_interval_s=0.1)
        async with Harness(adapter, make_protocol(), ["AAA"]) as h:
            await h.subscribed()
            stalled_at = time.monotonic()
            h.sim.stall(5.0)  # no trades, no pongs, nothing read
            h.sim.publish(rows_for(["AAAUSDT"], 0, 3))  # queued behind the stall: never sent
            await h.until(lambda: h.runner.stats.reconnects == 1, timeout_s=3.0)
            await h.subscribed()
            recovered_s = time.monotonic() - stalled_at
            disc = next(f for e, f in h.journal.events if e == "disconnected")
            assert disc["reason"].startswith("silent for ")
            assert 0.35 <= disc["t"] - stalled_at < 2.0  # quiet_timeout_s after the last frame
            assert recovered_s < 3.0
            h.sim.publish(rows_for(["AAAUSDT"], 3, 2))
            await h.until(lambda: len(h.received) == 2)
            assert [r[8] for r in h.received] == ["3", "4"]
            assert h.sim.sent_rows("1") == []  # the stalled connection never wrote them

    run(main())


def test_garbage_frames_are_counted_and_skipped_while_trades_flow() -> None:
    def buggy_decode(frame: bytes | str, recv_us: int, instruments: Any) -> Any:
        if frame == "BUG":
            raise KeyError("a decoder bug")
        return decode_frame(frame, recv_us, instruments)

    async def main() -> None:
        adapter = make_adapter(decode=buggy_decode)
        async with Harness(adapter, make_protocol(), ["AAA"]) as h:
            await h.subscribed()
            now_us = time.time_ns() // 1000
            bad = [
                "not json at all",
                b"\x00\xff\xfe binary junk",
                '{"e":"trade","d":[{"s":"AAAUSDT","t":1700000000000000,"p":"NaN","q":"1","S":"buy","i":"x"}]}',
                '{"e":"trade","d":[{"s":"AAAUSDT","t":FUTURE,"p":"1","q":"1","S":"buy","i":"y"}]}'.replace(
                    "FUTURE", str(now_us + 10**12)
                ),
                '{"e":"mystery","x":1}',
                '{"e":"trade","d":[{"s":"ZZZUSDT","t":1700000000000000,"p":"1","q":"1","S":"buy","i":"z"}]}',
                "[1,2,3]",
            ]
            rows = rows_for(["AAAUSDT"], 0, 8)
            for i, frame in enumerate(bad):
                h.sim.publish(rows[i : i + 1])
                h.sim.send_raw(frame)
            h.sim.send_raw("BUG")
            h.sim.publish(rows[7:])
            await h.until(lambda: len(h.received) == 8)
            st = h.runner.stats
            assert st.parse_errors == len(bad)
            assert st.decode_bugs == 1
            assert st.trades == 8 and st.reconnects == 0 and h.sim.connections == 1
            assert [r[8] for r in h.received] == [str(i) for i in range(8)]
            assert [f for _, f in h.frames][-1] == rows_frame(h, rows[7:])

    def rows_frame(h: Any, rows: Any) -> str:
        return h.sim.protocol.encode_trades(rows, h.sim.instruments)[0]

    run(main())


def test_ack_timeout_reconnects_with_backoff() -> None:
    async def main() -> None:
        protocol = make_protocol(ack=False)
        async with Harness(make_adapter(), protocol, ["AAA"], ack_timeout_s=0.1) as h:
            await h.until(lambda: h.sim.connections >= 3)
            st = h.runner.stats
            assert st.connect_failures >= 2 and st.subscribed_symbols == 0 and st.pending_subscriptions == 1
            disc = [f for e, f in h.journal.events if e == "disconnected"]
            assert disc[0]["reason"].startswith("no ack for request")
            assert "gap_start" not in h.journal.kinds()  # never listened, so nothing was lost

    run(main())


def test_backoff_is_capped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        h = Harness(
            make_adapter(),
            make_protocol(),
            ["AAA"],
            backoff_initial_s=0.02,
            backoff_max_s=0.08,
            rng=lambda: 0.999,
        )
        h.sim.refuse_connections(8)
        async with h:
            await h.subscribed(timeout_s=5.0)
            assert h.runner.stats.reconnects == 0  # never connected before: not a reconnect
            assert h.runner.stats.connect_failures == 8
            times = list(h.sim.handshake_times_s)
            assert len(times) == 9 and h.sim.refused == 8
            gaps = [b - a for a, b in itertools.pairwise(times)]
            expected = [0.02, 0.04, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08]
            for gap, want in zip(gaps, expected, strict=True):
                assert want * 0.99 <= gap < want + 0.25  # never beyond the cap (plus scheduling slack)

    with caplog.at_level(logging.DEBUG, logger="pumpwatch.recorder.stream.runner"):
        run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot connect: handshake refused: HTTP 503" in warnings[0]
    assert all(r.getMessage().startswith("test_spot") for r in caplog.records if r.name.endswith("runner"))
    infos = [r.getMessage() for r in caplog.records if "failed attempts" in r.getMessage()]
    assert len(infos) == 1 and "conn 0-9: connected after" in infos[0] and "8 failed attempts" in infos[0]


def test_control_frames_respect_the_rate_limit() -> None:
    async def main() -> None:
        bases = [f"S{i:02d}" for i in range(30)]
        adapter = make_adapter(
            max_symbols_per_request=1,
            max_symbols_per_connection=100,
            max_requests_per_s=20.0,
            ping_interval_s=0.05,
            quiet_timeout_s=5.0,  # the server says nothing while we wait for the limiter
        )
        async with Harness(adapter, make_protocol(), bases) as h:
            await h.subscribed(timeout_s=5.0)
            await asyncio.sleep(0.3)
            assert h.sim.connections == 1
            times = list(h.sim.message_times_s)
            assert len(times) >= 30
            # At most 20 client frames a second, subscribes and pings together. Measured on
            # arrival, so allow the server's scheduling delay: no 20 within any half second.
            worst = max(sum(1 for t in times if s <= t < s + 0.5) for s in times)
            assert worst <= 20
            assert times[-1] - times[0] >= 1.0  # 30+ frames could not have gone out in one burst

    run(main())


def _exactly_once(h: Any, published: int, symbols: list[str]) -> None:
    received = Counter(key(r) for r in h.received)
    assert max(received.values()) == 1, "a trade was delivered twice"
    assert set(received) == {key(r) for r in rows_for(symbols, 0, published)}


def test_lifetime_rotation_has_zero_gap_and_zero_duplicates() -> None:
    async def main() -> None:
        symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"]
        # The exchange closes connections after 0.6 s; the adapter knows and rotates 0.25 s early.
        adapter = make_adapter(max_lifetime_s=0.6, rotate_margin_s=0.25)
        sim = {"lifetime_s": 0.6, "shutdown_grace_s": 0.0}
        async with Harness(adapter, make_protocol(), [s[:-4] for s in symbols], sim_kwargs=sim) as h:
            await h.subscribed()
            stop = asyncio.Event()
            publisher = asyncio.create_task(pump(h, symbols, stop))
            await h.until(lambda: h.runner.stats.rotations >= 4, timeout_s=10.0)
            stop.set()
            published = await publisher
            await h.until(lambda: len(h.received) >= published)
            await asyncio.sleep(0.05)
            _exactly_once(h, published, symbols)
            st = h.runner.stats
            assert st.reconnects == 0 and st.rotations >= 4
            assert "gap_start" not in h.journal.kinds()
            # Make-before-break: each connection subscribed before its predecessor disconnected.
            subscribed_at = {f["conn"]: f["t"] for e, f in h.journal.events if e == "subscribed"}
            for e, f in h.journal.events:
                if e == "disconnected" and f["reason"].startswith("rotated"):
                    slot, seq = f["conn"].split("-")
                    assert subscribed_at[f"{slot}-{int(seq) + 1}"] < f["t"]

    run(main())


def test_server_shutdown_notice_rotates_without_gap() -> None:
    async def main() -> None:
        symbols = ["AAAUSDT", "BBBUSDT"]
        sim = {"lifetime_s": 0.4, "shutdown_grace_s": 0.3}  # notice, then the close 0.3 s later
        async with Harness(make_adapter(), make_protocol(), ["AAA", "BBB"], sim_kwargs=sim) as h:
            await h.subscribed()
            stop = asyncio.Event()
            publisher = asyncio.create_task(pump(h, symbols, stop))
            await h.until(lambda: h.runner.stats.rotations >= 3, timeout_s=10.0)
            stop.set()
            published = await publisher
            await h.until(lambda: len(h.received) >= published)
            _exactly_once(h, published, symbols)
            assert h.runner.stats.reconnects == 0
            assert "gap_start" not in h.journal.kinds()
            reasons = {f["reason"] for e, f in h.journal.events if e == "disconnected"}
            assert reasons == {"rotated: server notice"}

    run(main())


@pytest.mark.soak
def test_disconnect_storm_delivers_every_sent_trade_exactly_once() -> None:
    drops = 60 if LONG else 8

    async def main() -> None:
        symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
        adapter = make_adapter(max_symbols_per_connection=2)  # two connections, both dropped
        async with Harness(adapter, make_protocol(snapshot=True), ["AAA", "BBB", "CCC"]) as h:
            await h.subscribed()
            stop = asyncio.Event()
            publisher = asyncio.create_task(pump(h, symbols, stop))
            cut = 0  # drops that found a connection to cut (others hit a slot waiting its backoff)
            for i in range(drops):
                await asyncio.sleep(0.05 + (i % 3) * 0.03)
                cut += h.sim.active_connections > 0
                h.sim.drop_all()
                if i % 4 == 3:
                    h.sim.refuse_connections(2)
            await h.subscribed(timeout_s=10.0)
            stop.set()
            published = await publisher
            sent = {key(r) for r in h.sim.sent_rows()}
            await h.until(lambda: sent <= {key(r) for r in h.received}, what="every sent trade received")
            received = Counter(key(r) for r in h.received)
            assert max(received.values()) == 1, "a trade was delivered twice"
            # Trades are only lost while no connection was subscribed, and the history replay
            # after each subscribe (snapshot=True) even brings some of those back.
            assert sent <= set(received) <= {key(r) for r in rows_for(symbols, 0, published)}
            # Not vacuous: a good share was sent (drops come every 50-110 ms and each reconnect
            # waits its backoff, so much of the storm is spent not subscribed).
            assert len(sent) > published // 10
            st = h.runner.stats
            # Each cut ended a serving connection (a reconnect) or one still subscribing (a failure).
            assert cut >= drops // 4 and st.reconnects + st.connect_failures >= cut
            # gap_end follows the last reconnection's acks by a few loop turns: wait for it.
            await h.until(
                lambda: h.journal.kinds().count("gap_start") == h.journal.kinds().count("gap_end"),
                what="the last gap closed in the journal",
            )
            assert h.journal.kinds().count("gap_start") >= 1

    run(main(), timeout_s=300)
