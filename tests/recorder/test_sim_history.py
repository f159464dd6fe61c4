"""The local exchange servers' REST trade history, over real HTTP on 127.0.0.1.

Each endpoint is paged the way a repairing client pages it, and what comes back, normalized,
must be exactly what the recorder's own adapters make of the WebSocket frames for the same
trades (same ids, prices, base quantities, sides, times at the endpoint's resolution). Then the
limits, the error bodies, the rate limits (429/418/403 with Retry-After), `throttle()` and the
id-hole fault `skip_pushes()`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import orjson
import pytest

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.adapters.checks import contract_qty, multiplier_parts
from pumpwatch.recorder.sim.cluster import sim_protocol_for
from pumpwatch.recorder.sim.history import RateLimit, TradeStore, numeric_id
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.sim.server import SimExchange
from pumpwatch.segments.schema import TradeRow

T0_US = 1_764_800_000_123_456
MS = 1000
Norm = tuple[str, float, float, str, str | None, int]  # symbol, price, qty (base), side, id, time_us


def _rows(stream: str, base: str, n: int, first_id: int = 5_000_000, step_us: int = 1_337) -> list[TradeRow]:
    """`n` trades of `base` on `stream`, ids contiguous, times increasing with µs parts."""
    inst = sim_instrument(stream, base)
    out: list[TradeRow] = []
    for k in range(n):
        t = T0_US + k * step_us
        price = round(100 + (k % 97) * 0.01, 2)
        if inst.multiplier != 1.0:
            qty = round((1 + k % 7) * inst.multiplier, 10)
        else:
            qty = round(0.001 * (1 + k % 13), 3)
        tid = None if stream.startswith("phemex") else str(first_id + k)
        out.append((t, t, inst.symbol, inst.base, inst.quote, price, qty, "buy" if k % 3 else "sell", tid))
    return out


@contextlib.asynccontextmanager
async def _exchange(stream: str, **kwargs: Any) -> AsyncIterator[tuple[SimExchange, httpx.AsyncClient]]:
    insts = [sim_instrument(stream, b) for b in ("BTC", "ETH")]
    async with (
        SimExchange(sim_protocol_for(stream), insts, **kwargs) as ex,
        httpx.AsyncClient(base_url=ex.rest_url, timeout=5) as client,
    ):
        yield ex, client


def _ws_view(stream: str, rows: Sequence[TradeRow], res_us: int) -> list[Norm]:
    """What the recorder's adapter makes of the WS frames for `rows` (times cut to `res_us`)."""
    protocol = sim_protocol_for(stream)
    instruments = {r[2]: sim_instrument(stream, r[3]) for r in rows}
    decode = get_adapter(stream).decode
    out: list[Norm] = []
    for frame in protocol.encode_trades(rows, instruments):
        parsed = decode(frame, T0_US, instruments)
        assert isinstance(parsed, list), parsed
        out.extend((r[2], r[5], r[6], r[7], r[8], r[0] // res_us * res_us) for r in parsed)
    return out


def _cut(view: list[Norm], res_us: int) -> list[Norm]:
    return [(s, p, q, side, tid, t // res_us * res_us) for s, p, q, side, tid, t in view]


# -- per-endpoint normalizers (what a repair client does with a REST item) ----------------------


def _binance_hist(item: dict[str, Any], symbol: str, time_unit_us: int) -> Norm:
    side = "sell" if item["isBuyerMaker"] else "buy"
    return (
        symbol,
        float(item["price"]),
        float(item["qty"]),
        side,
        str(item["id"]),
        item["time"] * time_unit_us,
    )


def _binance_agg(item: dict[str, Any], symbol: str, time_unit_us: int) -> Norm:
    assert item["f"] == item["l"]
    side = "sell" if item["m"] else "buy"
    return (symbol, float(item["p"]), float(item["q"]), side, str(item["f"]), item["T"] * time_unit_us)


def _okx(item: dict[str, Any], inst: Instrument) -> Norm:
    qty = float(item["sz"]) * inst.multiplier
    return (item["instId"], float(item["px"]), qty, item["side"], item["tradeId"], int(item["ts"]) * MS)


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- Binance ----------------------------------------------------------------------------------


def test_binance_spot_historical_trades_page_by_id_to_exactly_the_ws_trades() -> None:
    async def main() -> None:
        async with _exchange("binance_spot") as (ex, client):
            rows = _rows("binance_spot", "BTC", 2345)
            ex.publish(rows)
            ex.publish(_rows("binance_spot", "ETH", 10, first_id=1))
            got: list[Norm] = []
            from_id = int(rows[0][8] or 0)
            while True:
                response = await client.get(
                    "/api/v3/historicalTrades",
                    params={"symbol": "BTCUSDT", "fromId": from_id, "limit": 1000},
                    headers={"X-MBX-TIME-UNIT": "MICROSECOND"},
                )
                page = response.json()
                assert len(page) <= 1000
                assert response.headers["x-mbx-used-weight-1m"] == str(25 * (ex.history.stats.served))
                got.extend(_binance_hist(item, "BTCUSDT", 1) for item in page)
                if len(page) < 1000:
                    break
                from_id = page[-1]["id"] + 1
            assert got == _ws_view("binance_spot", rows, 1)  # µs times, exactly
            assert ex.history.stats.by_path["/api/v3/historicalTrades"] == 3

            # Without the header times are ms; without fromId the latest trades come.
            latest = await _get(client, "/api/v3/historicalTrades", symbol="BTCUSDT", limit=5)
            assert [_binance_hist(i, "BTCUSDT", MS) for i in latest] == _cut(got[-5:], MS)
            assert set(latest[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
            assert len(await _get(client, "/api/v3/historicalTrades", symbol="BTCUSDT")) == 500  # default

            for params, code in (
                ({"symbol": "NOPEUSDT"}, -1121),
                ({}, -1102),
                ({"symbol": "BTCUSDT", "limit": 1001}, -1130),
                ({"symbol": "BTCUSDT", "fromId": "x1"}, -1100),
            ):
                response = await client.get("/api/v3/historicalTrades", params=params)
                assert response.status_code == 400
                assert response.json()["code"] == code

    asyncio.run(main())


def test_binance_spot_agg_trades_by_agg_id_and_by_time() -> None:
    async def main() -> None:
        async with _exchange("binance_spot") as (ex, client):
            rows = _rows("binance_spot", "BTC", 1500)
            ex.publish(rows)
            want = _ws_view("binance_spot", rows, 1)
            first = await _get(client, "/api/v3/aggTrades", symbol="BTCUSDT", limit=1)
            oldest = await _get(client, "/api/v3/aggTrades", symbol="BTCUSDT", startTime=0, limit=1)
            assert first[0]["a"] != first[0]["f"]  # aggregate ids are their own sequence
            got: list[Norm] = []
            from_id = oldest[0]["a"]
            while True:
                page = await _get(client, "/api/v3/aggTrades", symbol="BTCUSDT", fromId=from_id, limit=1000)
                got.extend(_binance_agg(i, "BTCUSDT", MS) for i in page)
                if len(page) < 1000:
                    break
                from_id = page[-1]["a"] + 1
            assert got == _cut(want, MS)
            # By time (ms or µs bounds, inclusive), µs times with the header.
            start_ms, end_ms = rows[100][0] // MS, rows[200][0] // MS
            response = await client.get(
                "/api/v3/aggTrades",
                params={"symbol": "BTCUSDT", "startTime": start_ms, "endTime": end_ms},
                headers={"X-MBX-TIME-UNIT": "MICROSECOND"},
            )
            window = [_binance_agg(i, "BTCUSDT", 1) for i in response.json()]
            assert window == [w for w in want if start_ms * MS <= w[5] <= end_ms * MS + 999]
            response = await client.get(
                "/api/v3/aggTrades", params={"symbol": "BTCUSDT", "fromId": 1, "startTime": 1}
            )
            assert (response.status_code, response.json()["code"]) == (400, -1128)

    asyncio.run(main())


def test_binance_futures_agg_trades_by_id_and_under_an_hour() -> None:
    async def main() -> None:
        async with _exchange("binance_futures") as (ex, client):
            rows = _rows("binance_futures", "BTC", 2100, step_us=2_500_000)  # ~1.5 h of trades
            ex.publish(rows)
            want = _ws_view("binance_futures", rows, MS)
            got: list[Norm] = []
            from_id = int(rows[0][8] or 0)
            while True:
                page = await _get(client, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=from_id, limit=1000)
                assert all(set(i) == {"a", "p", "q", "f", "l", "T", "m"} for i in page)
                got.extend(_binance_agg(i, "BTCUSDT", MS) for i in page)
                if len(page) < 1000:
                    break
                from_id = page[-1]["a"] + 1
            assert got == want
            start_ms = rows[0][0] // MS
            response = await client.get(
                "/fapi/v1/aggTrades",
                params={"symbol": "BTCUSDT", "startTime": start_ms, "endTime": start_ms + 3_600_000},
            )
            assert (response.status_code, response.json()["code"]) == (400, -1127)
            # startTime alone covers [start, start + 1 h).
            page = await _get(client, "/fapi/v1/aggTrades", symbol="BTCUSDT", startTime=start_ms, limit=1000)
            assert [_binance_agg(i, "BTCUSDT", MS) for i in page] == [
                w for w in want if w[5] < (start_ms + 3_600_000) * MS
            ][:1000]

    asyncio.run(main())


# -- OKX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["okx_spot", "okx_futures"])
def test_okx_history_trades_page_back_by_trade_id(stream: str) -> None:
    async def main() -> None:
        async with _exchange(stream) as (ex, client):
            rows = _rows(stream, "BTC", 450)
            symbol = rows[0][2]
            inst = ex.instruments[symbol]
            ex.publish(rows)
            got: list[Norm] = []
            after: str | None = None
            while True:
                params = {"instId": symbol} if after is None else {"instId": symbol, "after": after}
                body = await _get(client, "/api/v5/market/history-trades", **params)
                assert body["code"] == "0" and body["msg"] == ""
                page = body["data"]
                assert len(page) <= 100
                got.extend(_okx(i, inst) for i in page)
                if len(page) < 100:
                    break
                after = page[-1]["tradeId"]
            assert got == list(reversed(_ws_view(stream, rows, MS)))  # newest first, all of them
            # The REST item is the WS push item itself (SWAP sz in contracts).
            ws_item = orjson.loads(ex.protocol.encode_trades(rows[-1:], ex.instruments)[0])["data"][0]
            latest = await _get(client, "/api/v5/market/history-trades", instId=symbol, limit=1)
            assert latest["data"] == [ws_item]
            # before alone: the latest trades newer than it; after + before: between.
            mid = int(rows[200][8] or 0)
            body = await _get(client, "/api/v5/market/history-trades", instId=symbol, before=mid, limit=3)
            assert [i["tradeId"] for i in body["data"]] == [rows[-1][8], rows[-2][8], rows[-3][8]]
            body = await _get(
                client, "/api/v5/market/history-trades", instId=symbol, after=mid + 3, before=mid
            )
            assert [int(i["tradeId"]) for i in body["data"]] == [mid + 2, mid + 1]
            # type=2: by timestamp, records older than `after` (ms).
            ts = rows[300][0] // MS
            body = await _get(
                client, "/api/v5/market/history-trades", instId=symbol, type=2, after=ts, limit=2
            )
            assert all(int(i["ts"]) < ts for i in body["data"]) and len(body["data"]) == 2
            recent = await _get(client, "/api/v5/market/trades", instId=symbol, limit=500)
            assert [_okx(i, inst) for i in recent["data"]] == got[:450]
            for path, params, code in (
                ("/api/v5/market/history-trades", {"instId": symbol, "limit": 101}, "51000"),
                ("/api/v5/market/trades", {"instId": symbol, "limit": 501}, "51000"),
                ("/api/v5/market/history-trades", {"instId": "NOPE-USDT"}, "51001"),
            ):
                body = await _get(client, path, **params)
                assert (body["code"], body["data"]) == (code, [])
            response = await client.get("/api/v5/market/history-trades")
            assert (response.status_code, response.json()["code"]) == (400, "50014")

    asyncio.run(main())


# -- Gate -------------------------------------------------------------------------------------


def test_gate_spot_trades_page_by_time_with_contiguous_sequence_ids() -> None:
    async def main() -> None:
        async with _exchange("gate_spot") as (ex, client):
            rows = _rows("gate_spot", "BTC", 2500)
            ex.publish(rows)
            lo_s, hi_s = rows[0][0] // 1_000_000, rows[-1][0] // 1_000_000
            got: list[dict[str, Any]] = []
            for page in range(1, 10):
                items = await _get(
                    client,
                    "/api/v4/spot/trades",
                    currency_pair="BTC_USDT",
                    limit=1000,
                    page=page,
                    **{"from": lo_s, "to": hi_s},
                )
                got.extend(items)
                if len(items) < 1000:
                    break
            ids = [int(i["sequence_id"]) for i in reversed(got)]
            assert ids == list(range(ids[0], ids[0] + len(rows)))  # per market contiguous
            norm = [
                (
                    "BTC_USDT",
                    float(i["price"]),
                    float(i["amount"]),
                    i["side"],
                    i["id"],
                    round(float(i["create_time_ms"]) * MS),
                )
                for i in reversed(got)
            ]
            assert norm == _ws_view("gate_spot", rows, 1)
            # The WS id_market of a trade is its REST sequence_id, on every connection.
            ws = orjson.loads(ex.protocol.encode_trades(rows[-1:], ex.instruments)[0])["result"]
            assert (ws["id_market"], str(ws["id"]), ws["create_time_ms"]) == (
                int(got[0]["sequence_id"]),
                got[0]["id"],
                got[0]["create_time_ms"],
            )
            for params, label in (
                ({"currency_pair": "NOPE_USDT"}, "INVALID_CURRENCY_PAIR"),
                ({}, "MISSING_REQUIRED_PARAM"),
                ({"currency_pair": "BTC_USDT", "limit": 1001}, "INVALID_PARAM_VALUE"),
                ({"currency_pair": "BTC_USDT", "limit": 1000, "page": 102}, "INVALID_PARAM_VALUE"),
            ):
                response = await client.get("/api/v4/spot/trades", params=params)
                assert (response.status_code, response.json()["label"]) == (400, label)

    asyncio.run(main())


def test_gate_futures_trades_offset_paging_and_size_decimal_header() -> None:
    async def main() -> None:
        async with _exchange("gate_futures") as (ex, client):
            rows = _rows("gate_futures", "BTC", 1200)
            ex.publish(rows)
            mult = ex.instruments["BTC_USDT"].multiplier
            window = {"from": rows[0][0] // 1_000_000, "to": rows[-1][0] // 1_000_000}
            got: list[dict[str, Any]] = []
            headers = {"X-Gate-Size-Decimal": "1"}
            while True:
                response = await client.get(
                    "/api/v4/futures/usdt/trades",
                    params={"contract": "BTC_USDT", "limit": 1000, "offset": len(got), **window},
                    headers=headers,
                )
                items = response.json()
                got.extend(items)
                if len(items) < 1000:
                    break
            norm = [
                ("BTC_USDT", float(i["price"]), contract_qty(i["size"], multiplier_parts(mult)),
                 "buy" if float(i["size"]) > 0 else "sell", str(i["id"]), i["create_time_ms"] * MS)
                for i in reversed(got)
            ]  # fmt: skip
            assert norm == _ws_view("gate_futures", rows, MS)
            assert all(isinstance(i["size"], str) for i in got)
            legacy = await _get(client, "/api/v4/futures/usdt/trades", contract="BTC_USDT", limit=5)
            assert [i["size"] for i in legacy] == [int(float(i["size"])) for i in got[:5]]
            response = await client.get("/api/v4/futures/usdt/trades", params={"contract": "NOPE_USDT"})
            assert (response.status_code, response.json()["label"]) == (400, "CONTRACT_NOT_FOUND")

    asyncio.run(main())


# -- recent-only venues -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "category", "max_limit"), [("bybit_spot", "spot", 60), ("bybit_futures", "linear", 1000)]
)
def test_bybit_recent_trade_latest_only(stream: str, category: str, max_limit: int) -> None:
    async def main() -> None:
        async with _exchange(stream) as (ex, client):
            rows = _rows(stream, "BTC", 1500)
            ex.publish(rows)
            body = await _get(
                client, "/v5/market/recent-trade", category=category, symbol="BTCUSDT", limit=max_limit
            )
            assert (body["retCode"], body["retMsg"], body["result"]["category"]) == (0, "OK", category)
            norm = [
                (
                    "BTCUSDT",
                    float(i["price"]),
                    float(i["size"]),
                    i["side"].lower(),
                    i["execId"],
                    int(i["time"]) * MS,
                )
                for i in reversed(body["result"]["list"])
            ]
            assert norm == _ws_view(stream, rows[-max_limit:], MS)
            for params, msg in (
                (
                    {"category": category, "symbol": "BTCUSDT", "limit": max_limit + 1},
                    "params error: limit invalid",
                ),
                ({"category": category, "symbol": "NOPEUSDT"}, "Not supported symbols"),
                ({"category": "inverse", "symbol": "BTCUSDT"}, "params error: category invalid"),
            ):
                body = await _get(client, "/v5/market/recent-trade", **params)
                assert (body["retCode"], body["retMsg"]) == (10001, msg)

    asyncio.run(main())


@pytest.mark.parametrize("stream", ["kucoin_spot", "kucoin_futures"])
def test_kucoin_latest_100_trades(stream: str) -> None:
    async def main() -> None:
        futures = stream == "kucoin_futures"
        path = "/api/v1/trade/history" if futures else "/api/v1/market/histories"
        async with _exchange(stream) as (ex, client):
            rows = _rows(stream, "BTC", 250)
            symbol = rows[0][2]
            mult = ex.instruments[symbol].multiplier
            ex.publish(rows)
            body = await _get(client, path, symbol=symbol)
            assert body["code"] == "200000"
            items = list(reversed(body["data"])) if futures else body["data"]
            time_key = "ts" if futures else "time"
            scale = mult if futures else 1.0
            norm = [
                (
                    symbol,
                    float(i["price"]),
                    float(i["size"]) * scale,
                    i["side"],
                    i["tradeId"],
                    i[time_key] // 1000,
                )
                for i in items
            ]
            assert norm == _ws_view(stream, rows[-100:], 1)
            ws = orjson.loads(ex.protocol.encode_trades(rows[-1:], ex.instruments)[0])["data"]
            assert str(ws["sequence"]) == str(items[-1]["sequence"])  # same sequence as the push
            body = await _get(client, path, symbol="NOPE")
            assert body["code"] == "400100"

    asyncio.run(main())


@pytest.mark.parametrize("stream", ["phemex_spot", "phemex_futures"])
def test_phemex_recent_trades_are_the_ws_snapshot_rows(stream: str) -> None:
    async def main() -> None:
        spot = stream == "phemex_spot"
        path, key = ("/md/trade", "trades") if spot else ("/md/v2/trade", "trades_p")
        async with _exchange(stream) as (ex, client):
            rows = _rows(stream, "BTC", 300)
            symbol = rows[0][2]
            ex.publish(rows)
            body = await _get(client, path, symbol=symbol)
            assert body["error"] is None and body["result"]["type"] == "snapshot"
            trades = body["result"][key]
            assert len(trades) == 200
            snapshot = ex.protocol.snapshot
            assert snapshot is not None
            ws = orjson.loads(snapshot(symbol, rows[-200:], ex.instruments)[0])
            assert trades == ws[key]  # newest first, the same wire rows
            incremental = [
                orjson.loads(f)[key] for f in ex.protocol.encode_trades(rows[-200:], ex.instruments)
            ]
            assert trades == list(reversed([r for frame in incremental for r in frame]))
            body = await _get(client, path, symbol="NOPE")
            assert body == {"error": {"code": 6001, "message": "invalid argument"}, "id": 0, "result": None}

    asyncio.run(main())


# -- rate limits and faults ---------------------------------------------------------------------


def test_okx_budget_answers_429_with_retry_after_then_recovers() -> None:
    async def main() -> None:
        budgets = {
            "history-trades": RateLimit(
                5, 0.5, body=orjson.dumps({"msg": "Too Many Requests", "code": "50011"})
            )
        }
        async with _exchange("okx_spot", history_budgets=budgets) as (ex, client):
            ex.publish(_rows("okx_spot", "BTC", 10))
            statuses = []
            for _ in range(7):
                response = await client.get("/api/v5/market/history-trades", params={"instId": "BTC-USDT"})
                statuses.append(response.status_code)
            assert statuses == [200] * 5 + [429, 429]
            assert response.json() == {"msg": "Too Many Requests", "code": "50011"}
            assert response.headers["retry-after"] == "1"
            # The other endpoint has its own budget (100 / 2 s by default).
            assert (
                await client.get("/api/v5/market/trades", params={"instId": "BTC-USDT"})
            ).status_code == 200
            await asyncio.sleep(0.6)
            response = await client.get("/api/v5/market/history-trades", params={"instId": "BTC-USDT"})
            assert response.status_code == 200
            stats = ex.history.stats
            assert (stats.requests, stats.served, stats.limited) == (9, 7, 2)

    asyncio.run(main())


def test_binance_weight_budget_429_then_418_ban_for_a_client_that_keeps_going() -> None:
    async def main() -> None:
        from pumpwatch.recorder.sim.binance_history import _rate_limit

        real = _rate_limit(6000)
        small = RateLimit(60, 60.0, body=real.body, ban_after=2, ban_s=30.0, ban_body=real.ban_body,
                          used_header=real.used_header)  # fmt: skip
        async with _exchange("binance_spot", history_budgets={"ip": small}) as (ex, client):
            ex.publish(_rows("binance_spot", "BTC", 10))
            params = {"symbol": "BTCUSDT"}
            first = await client.get("/api/v3/historicalTrades", params=params)
            second = await client.get("/api/v3/historicalTrades", params=params)
            assert (first.status_code, second.status_code) == (200, 200)
            assert second.headers["x-mbx-used-weight-1m"] == "50"
            refused = [await client.get("/api/v3/historicalTrades", params=params) for _ in range(3)]
            assert [r.status_code for r in refused] == [429, 429, 418]
            assert refused[0].json()["code"] == -1003
            assert "request weight per 1 MINUTE" in refused[0].json()["msg"]
            assert 1 <= int(refused[0].headers["retry-after"]) <= 60
            assert refused[2].headers["retry-after"] == "30"
            assert "IP banned until" in refused[2].json()["msg"]
            # Banned: even a light call is refused with 418 until the ban ends.
            light = await client.get("/api/v3/aggTrades", params=params)
            assert light.status_code == 418

    asyncio.run(main())


def test_bybit_over_budget_is_a_403_block() -> None:
    async def main() -> None:
        budget = {
            "ip": RateLimit(
                3, 5.0, status=403, body=b"access too frequent", penalty_s=2.0, content_type="text/plain"
            )
        }
        async with _exchange("bybit_spot", history_budgets=budget) as (_ex, client):
            params = {"category": "spot", "symbol": "BTCUSDT"}
            codes = [
                (await client.get("/v5/market/recent-trade", params=params)).status_code for _ in range(5)
            ]
            assert codes == [200, 200, 200, 403, 403]
            response = await client.get("/v5/market/recent-trade", params=params)
            assert (response.status_code, response.text, response.headers["retry-after"]) == (
                403,
                "access too frequent",
                "2",
            )

    asyncio.run(main())


@pytest.mark.parametrize(
    ("stream", "path", "params", "status", "body_key"),
    [
        ("binance_futures", "/fapi/v1/aggTrades", {"symbol": "BTCUSDT"}, 429, "code"),
        ("okx_futures", "/api/v5/market/history-trades", {"instId": "BTC-USDT-SWAP"}, 429, "code"),
        ("gate_spot", "/api/v4/spot/trades", {"currency_pair": "BTC_USDT"}, 429, "label"),
        ("kucoin_futures", "/api/v1/trade/history", {"symbol": "XBTUSDTM"}, 429, "code"),
        ("phemex_spot", "/md/trade", {"symbol": "sBTCUSDT"}, 429, "code"),
        ("bybit_futures", "/v5/market/recent-trade", {"category": "linear", "symbol": "BTCUSDT"}, 403, None),
    ],
)
def test_throttle_refuses_the_next_calls_like_the_exchange(
    stream: str, path: str, params: dict[str, str], status: int, body_key: str | None
) -> None:
    async def main() -> None:
        async with _exchange(stream) as (ex, client):
            ex.throttle(2)
            first, second, third = [await client.get(path, params=params) for _ in range(3)]
            assert (first.status_code, second.status_code, third.status_code) == (status, status, 200)
            assert first.headers["retry-after"] == "1"
            if body_key is not None:
                assert body_key in first.json()
            stats = ex.history.stats
            assert (stats.requests, stats.served, stats.limited, stats.by_path[path]) == (3, 1, 2, 1)

    asyncio.run(main())


async def _binance_ws(ex: SimExchange) -> tuple[Any, Callable[[], Any]]:
    from websockets.asyncio.client import connect

    ws = await connect(
        ex.ws_url + "/stream?timeUnit=MICROSECOND", proxy=None, ping_interval=None, close_timeout=1
    )
    await ws.send('{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@trade"],"id":1}')
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 2)) == {"result": None, "id": 1}

    async def next_trade() -> Any:
        return orjson.loads(await asyncio.wait_for(ws.recv(), 2))["data"]

    return ws, next_trade


def test_skip_pushes_leaves_an_id_hole_on_the_ws_while_rest_has_every_trade() -> None:
    async def main() -> None:
        async with _exchange("binance_spot") as (ex, client):
            ws, next_trade = await _binance_ws(ex)
            btc = _rows("binance_spot", "BTC", 12)
            eth = _rows("binance_spot", "ETH", 4, first_id=70)
            ex.publish(btc[:4])
            ex.skip_pushes(3)  # any symbol
            ex.publish(btc[4:10])
            ex.skip_pushes(1, symbol="ETHUSDT")
            ex.publish([btc[10], eth[0], eth[1], btc[11]])
            seen = [await next_trade() for _ in range(4 + 3 + 3)]
            ids = [(d["s"], d["t"]) for d in seen]
            b = [int(r[8] or 0) for r in btc]
            assert ids == [("BTCUSDT", i) for i in b[:4] + b[7:11]] + [("ETHUSDT", 71), ("BTCUSDT", b[11])]
            assert ex.active_connections == 1  # the connection stayed up across the hole
            assert ex.history.skipped == [*btc[4:7], eth[0]]
            await asyncio.sleep(0.05)
            assert btc[4] not in ex.sent_rows()
            rest = await _get(client, "/api/v3/historicalTrades", symbol="BTCUSDT", fromId=b[0], limit=1000)
            assert [i["id"] for i in rest] == b  # the hole is whole over REST
            rest_eth = await _get(client, "/api/v3/historicalTrades", symbol="ETHUSDT", fromId=70)
            assert [i["id"] for i in rest_eth] == [70, 71]
            await ws.close()

    asyncio.run(main())


def test_trade_store_is_bounded_per_symbol_and_pages_by_id_and_time() -> None:
    store = TradeStore(max_rows_per_symbol=100)
    rows = _rows("binance_spot", "BTC", 250)
    store.add(rows[:110])
    assert list(store.rows("BTCUSDT")) == rows[:110]  # within the slack of an eighth
    store.add(rows[110:150])
    assert list(store.rows("BTCUSDT")) == rows[50:150] and store.forgotten == 50
    store.add(rows[150:] + _rows("binance_spot", "ETH", 5))
    assert list(store.rows("BTCUSDT")) == rows[150:] and store.forgotten == 150
    assert len(store.rows("ETHUSDT")) == 5
    kept = store.rows("BTCUSDT")
    assert numeric_id(kept[0]) == numeric_id(rows[150])
    first = int(rows[150][8] or 0)
    assert list(store.id_range("BTCUSDT", first + 10, first + 12)) == rows[160:163]
    assert list(store.time_range("BTCUSDT", rows[170][0], rows[171][0])) == rows[170:172]
    assert list(store.latest("BTCUSDT", 3)) == rows[-3:]
    assert store.rows("NOPE") == []
