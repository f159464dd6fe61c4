"""StreamRunner against a real local WebSocket server: subscribe, acks, rejections, trades."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers.json_exchange import Harness, key, make_adapter, make_protocol, rows_for

from pumpwatch.segments.schema import TradeRow


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_subscribes_in_chunks_and_delivers_trades_field_by_field() -> None:
    async def main() -> None:
        bases = ["AAA", "BBB", "CCC", "DDD", "EEE"]
        async with Harness(make_adapter(), make_protocol(), bases) as h:
            await h.subscribed()
            symbols = [f"{b}USDT" for b in bases]
            # 5 symbols at 3 per request: two subscribe requests, one connection.
            subs = [f for e, f in h.journal.events if e == "subscribed"]
            assert [s["symbols"] for s in subs] == [symbols[:3], symbols[3:]]
            assert [s["bases"] for s in subs] == [bases[:3], bases[3:]]
            assert h.journal.kinds()[:3] == ["connected", "subscribed", "subscribed"]
            assert h.journal.events[0][1]["url"] == h.sim.ws_url + "/ws"
            assert h.sim.subscribes == 5 and h.sim.connections == 1
            rows = rows_for(symbols, 0, 12)
            h.sim.publish(rows)
            await h.until(lambda: len(h.received) == 12)
            got: TradeRow = h.received[0]
            sent = rows[0]
            assert got[0] == sent[0]  # exchange time
            assert got[1] > 1_600_000_000_000_000  # receive time: our clock, in µs
            assert got[2:] == ("AAAUSDT", "AAA", "USDT", 1.0, 0.5, "sell", "0")
            assert [key(r) for r in h.received] == [key(r) for r in rows]
            st = h.runner.stats
            assert st.trades == 12
            assert st.connected == 1
            assert st.subscribed_symbols == 5
            assert st.last_trade_recv_us == h.received[-1][1]
            assert st.lag_us == h.received[-1][1] - rows[-1][0]
            assert st.parse_errors == 0 and st.reconnects == 0
            # on_frame saw every frame first, with the same receive time as the trades.
            trade_frames = [f for f in h.frames if '"e":"trade"' in str(f[1])]
            assert trade_frames[0][0] == h.received[0][1]
        assert h.journal.kinds()[-1] == "disconnected"
        assert h.journal.events[-1][1]["reason"] == "stopped"

    run(main())


def test_a_refused_symbol_is_journaled_once_and_asked_again_at_a_reconnect() -> None:
    # A refusal may be transient (an exchange under load, a gateway that does not know a new
    # listing yet): the symbol stays wanted, shows as refused with its next retry, and a
    # reconnect asks for it again (the backoff here is far longer than the test).
    async def main() -> None:
        bases = ["AAA", "BAD", "CCC", "DDD"]
        protocol = make_protocol()
        h = Harness(make_adapter(), protocol, bases, reject_retry_initial_s=60.0, health_interval_s=0.05)
        h.sim.reject(["BADUSDT"])
        async with h:
            await h.subscribed(3)
            st = h.runner.stats
            assert st.rejected == {"BADUSDT": "no such symbol"}
            assert "BADUSDT" in h.runner.instruments  # still wanted
            rejected = [f for e, f in h.journal.events if e == "rejected"]
            assert len(rejected) == 1
            assert rejected[0]["symbols"] == ["BADUSDT"] and rejected[0]["reason"] == "no such symbol"
            subs = [s for e, f in h.journal.events if e == "subscribed" for s in f["symbols"]]
            assert sorted(subs) == ["AAAUSDT", "CCCUSDT", "DDDUSDT"]
            await h.until(lambda: "BADUSDT" in h.runner.stats.not_recorded)
            reason = h.runner.stats.not_recorded["BADUSDT"]
            assert reason.startswith("rejected: no such symbol (next retry 20") and reason.endswith("Z)")
            # Refused again at a reconnect: still one journal line, the backoff doubled.
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 1)
            await h.subscribed(3)
            await h.until(lambda: h.runner.refused["BADUSDT"].refusals == 2)
            assert h.runner.refused["BADUSDT"].delay_s == 120.0
            assert len([1 for e, _ in h.journal.events if e == "rejected"]) == 1
            # The exchange knows it now: the next reconnect subscribes it, no restart.
            h.sim.allow(["BADUSDT"])
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 2)
            await h.subscribed(4)
            assert h.runner.stats.rejected == {} and h.runner.refused == {}
            h.sim.publish(rows_for(["BADUSDT"], 0, 3))
            await h.until(lambda: len(h.received) == 3)
            assert {r[2] for r in h.received} == {"BADUSDT"}
            await h.until(lambda: "BADUSDT" not in h.runner.stats.not_recorded)
            assert len([1 for e, _ in h.journal.events if e == "rejected"]) == 1

    run(main())


def test_whole_request_refused_is_isolated_to_the_bad_symbol() -> None:
    async def main() -> None:
        bases = ["AAA", "BAD", "CCC"]
        h = Harness(make_adapter(), make_protocol(name_rejected=False), bases)
        h.sim.reject(["BADUSDT"])
        async with h:
            await h.subscribed(2)
            assert h.runner.stats.rejected == {"BADUSDT": "invalid request"}
            # One 3-symbol request refused, then one request per symbol.
            subs = [f["symbols"] for e, f in h.journal.events if e == "subscribed"]
            assert subs == [["AAAUSDT"], ["CCCUSDT"]]
            h.sim.publish(rows_for(["AAAUSDT", "CCCUSDT"], 0, 4))
            await h.until(lambda: len(h.received) == 4)

    run(main())


def test_symbols_spread_over_connections_and_capacity_reported() -> None:
    async def main() -> None:
        bases = [f"S{i:02d}" for i in range(9)]
        adapter = make_adapter(max_symbols_per_connection=4, max_connections=2)
        async with Harness(adapter, make_protocol(), bases) as h:
            await h.subscribed(8)
            st = h.runner.stats
            assert st.connected == 2
            assert st.over_capacity == ["S08USDT"]
            assert sorted(len(s.subscribed) for s in h.sim.sessions()) == [4, 4]
            # Dropping one symbol frees room: the waiting one is subscribed live, nothing reconnects.
            wanted = {s: i for s, i in h.runner.instruments.items() if s != "S00USDT"}
            h.runner.update_instruments(wanted)
            await h.until(lambda: "S08USDT" in {s for x in h.sim.sessions() for s in x.subscribed})
            await h.subscribed(8)
            assert h.runner.stats.over_capacity == []
            assert h.sim.connections == 2 and h.sim.unsubscribes == 1
            assert ("unsubscribed", ["S00USDT"]) in [(e, f.get("symbols")) for e, f in h.journal.events]

    run(main())


def test_update_instruments_adds_and_drops_live() -> None:
    async def main() -> None:
        async with Harness(
            make_adapter(), make_protocol(), ["AAA", "BBB", "CCC"], subscribe=["AAAUSDT"]
        ) as h:
            await h.subscribed(1)
            h.runner.update_instruments({s: h.instruments[s] for s in ("BBBUSDT", "CCCUSDT")})
            await h.until(
                lambda: {s for x in h.sim.sessions() for s in x.subscribed} == {"BBBUSDT", "CCCUSDT"}
            )
            await h.subscribed(2)
            h.sim.publish(rows_for(["AAAUSDT", "BBBUSDT", "CCCUSDT"], 0, 6))
            await h.until(lambda: len(h.received) == 4)
            await asyncio.sleep(0.05)
            assert sorted({r[2] for r in h.received}) == ["BBBUSDT", "CCCUSDT"]
            assert h.sim.connections == 1  # no reconnect

    run(main())


def test_token_is_fetched_fresh_for_every_connection_and_welcome_awaited() -> None:
    async def main() -> None:
        adapter = make_adapter(token=True, welcome=True)
        async with Harness(adapter, make_protocol(token=True, welcome=True), ["AAA"]) as h:
            await h.subscribed()
            url = h.journal.events[0][1]["url"]
            assert url == h.sim.ws_url + "/ws"  # the token stays out of the journal
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 1)
            await h.subscribed()
            # Tokens are single use here: a second connection proves a second token request.
            assert h.sim.connections == 2 and h.sim.refused == 0
            assert h.sim._http.requests == 2

    run(main())


def test_keepalive_pings_within_rate_limit_and_idle_server_timeout() -> None:
    async def main() -> None:
        adapter = make_adapter(ping_interval_s=0.1, quiet_timeout_s=2.0)
        async with Harness(adapter, make_protocol(idle_timeout_s=0.5), ["AAA"]) as h:
            await h.subscribed()
            await asyncio.sleep(1.2)
            # The server would have closed an idle connection after 0.5 s: pings kept it open.
            assert h.sim.connections == 1
            assert h.sim.messages_in >= 1 + 8  # the subscribe and ~11 pings
            pongs = [f for _, f in h.frames if '"e":"pong"' in str(f)]
            assert len(pongs) >= 8

    run(main())
