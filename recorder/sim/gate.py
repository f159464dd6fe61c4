"""Gate spot and USDT futures as a local server speaks them (see recorder/adapters/gate.py).

Spot pushes one trade per ``spot.trades`` update with ``create_time_ms`` as a string carrying
the sub-millisecond fraction; futures push a list per ``futures.trades`` update with the taker
side in the sign of ``size``. Connections idle for 60 s are closed (``idle_timeout_s``).

``X-Gate-Size-Decimal``: the real futures server truncates fractional sizes toward zero for
clients that do not send the header. `encode_trades` builds one frame for every connection, so
it cannot vary per client; this server therefore refuses a futures upgrade without the header
(HTTP 400, a failure a test can see) unless built with ``require_size_decimal=False``, and
`legacy_int_sizes` shows the truncation the real server applies.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.sim.protocol import HttpHandler, HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import MS_PER_S, US_PER_MS, US_PER_S

IDLE_TIMEOUT_S = 60.0


def num_text(x: float) -> str:
    """A plain decimal string (no exponent) that float() turns back into exactly `x`."""
    text = repr(float(x))
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def contracts(qty: float, multiplier: float) -> float:
    """Contracts c whose exact decimal product with the multiplier (the decoder's arithmetic,
    `pumpwatch.recorder.adapters.checks.contract_qty`) is `qty`: 1771.1 / 0.1 = 17711."""
    whole = round(qty / multiplier)
    if whole > 0 and whole * multiplier == qty:  # a product with float noise: still whole contracts
        return float(whole)
    return float(Decimal(repr(qty)) / Decimal(repr(multiplier)))


# Spot `id_market` (= REST `sequence_id`) is the trade id plus this: per pair contiguous like the
# real one, and never equal to the stored `id`, so a test can tell which id a check read.
MARKET_ID_OFFSET = 700_000_000


def market_id(trade_id: int) -> int:
    """The spot `id_market` / `sequence_id` of the trade with (numeric) id `trade_id`."""
    return trade_id + MARKET_ID_OFFSET


def us_to_ms_text(time_us: int) -> str:
    """µs -> Gate's ``"1606292218213.4578"``-style string (three fraction digits are exact µs)."""
    return f"{time_us // US_PER_MS}.{time_us % US_PER_MS:03d}"


def legacy_int_sizes(frame: str) -> str:
    """A futures.trades frame as a client without X-Gate-Size-Decimal gets it: integer sizes,
    truncated toward zero (1.7 -> 1, -1.5 -> -1); trades whose size truncates to 0 still appear."""
    msg = orjson.loads(frame)
    for item in msg.get("result", []):
        item["size"] = math.trunc(float(item["size"]))
    return orjson.dumps(msg).decode()


def _now_s(now: int) -> int:
    """The server passes a wall clock of unknown unit: infer s/ms/µs/ns from its magnitude."""
    for limit, div in ((10**11, 1), (10**14, MS_PER_S), (10**17, US_PER_S)):
        if now < limit:
            return now // div
    return now // 1_000_000_000


def sim_protocol(market: str, *, require_size_decimal: bool = True) -> SimProtocol:
    """The Gate `SimProtocol` for ``"spot"`` or ``"futures"``."""
    if market not in ("spot", "futures"):
        raise ValueError(f"gate: unknown market {market!r}")
    futures = market == "futures"
    channel, ping_channel, pong_channel = f"{market}.trades", f"{market}.ping", f"{market}.pong"
    ids = itertools.count(27_753_479)
    pair_ids: dict[str, itertools.count[int]] = {}

    def accept(path: str, headers: Mapping[str, str]) -> int | None:
        if futures and require_size_decimal:
            sent = {k.lower(): v for k, v in headers.items()}.get("x-gate-size-decimal")
            if sent != "1":
                return 400
        return None

    def reply(req: dict[str, Any], now_s: int, error: dict[str, Any] | None, result: Any) -> str:
        out: dict[str, Any] = {"time": now_s, "time_ms": now_s * MS_PER_S}
        if "id" in req:
            out["id"] = req["id"]
        out.update(channel=req.get("channel", ""), event=req.get("event", ""), error=error, result=result)
        return orjson.dumps(out).decode()

    def on_message(session: SimSession, frame: str | bytes, now: int) -> list[str]:
        now_s = _now_s(now)
        try:
            req = orjson.loads(frame)
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict):
            return [reply({}, now_s, {"code": 1, "message": "invalid request body"}, None)]
        if req.get("channel") == ping_channel:
            return [reply({"channel": pong_channel}, now_s, None, None)]
        event, payload = req.get("event"), req.get("payload")
        if req.get("channel") != channel or event not in ("subscribe", "unsubscribe"):
            return [reply(req, now_s, {"code": 1, "message": "unknown channel or event"}, None)]
        if type(req.get("time")) is not int or not isinstance(payload, list) or not payload:
            return [reply(req, now_s, {"code": 2, "message": "invalid argument"}, {"status": "fail"})]
        if event == "unsubscribe":
            session.subscribed.difference_update(str(p) for p in payload)
            return [reply(req, now_s, None, {"status": "success"})]
        bad = [p for p in payload if p in session.reject or p not in session.instruments]
        if bad:  # Gate rejects the request on the first unknown pair; nothing from it is subscribed
            what = "contract" if futures else "currency pair"
            return [reply(req, now_s, {"code": 2, "message": f"unknown {what} {bad[0]}"}, {"status": "fail"})]
        session.subscribed.update(payload)
        return [reply(req, now_s, None, {"status": "success"})]

    def encode_trades(rows: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        if futures:
            return _encode_futures(rows, instruments, ids)
        frames = []
        for time_us, _recv, symbol, _b, _q, price, qty, side, trade_id in rows:
            tid = next(ids)
            # id_market is per-market contiguous and the same on every connection and over REST
            # (sequence_id): derived from the row's own id where it has one (the sim's ids count
            # per symbol), see `market_id`.
            numeric = trade_id is not None and trade_id.isdigit()
            mid = (
                market_id(int(trade_id)) if numeric else next(pair_ids.setdefault(symbol, itertools.count(1)))
            )
            result = {
                "id": int(trade_id) if trade_id is not None and trade_id.isdigit() else tid,
                "id_market": mid,
                "create_time": time_us // US_PER_S,
                "create_time_ms": us_to_ms_text(time_us),
                "side": side,
                "currency_pair": symbol,
                "amount": num_text(qty),
                "price": num_text(price),
                "range": f"{mid}-{mid}",
            }
            msg = {"time": time_us // US_PER_S, "time_ms": time_us // US_PER_MS, "channel": channel}
            msg.update(event="update", result=result)
            frames.append(orjson.dumps(msg).decode())
        return frames

    routes: dict[tuple[str, str], HttpHandler]
    if futures:
        routes = {("GET", "/api/v4/futures/usdt/contracts"): _contracts}
    else:
        routes = {("GET", "/api/v4/spot/currency_pairs"): _currency_pairs}
    return SimProtocol(
        stream=f"gate_{market}",
        accept=accept,
        on_connect=lambda _session: [],
        on_message=on_message,
        encode_trades=encode_trades,
        idle_timeout_s=IDLE_TIMEOUT_S,
        http_routes=routes,
    )


def _encode_futures(
    rows: Sequence[TradeRow], instruments: Mapping[str, Instrument], ids: itertools.count[int]
) -> list[str]:
    """Consecutive rows of one contract share a frame (the real server batches per contract)."""
    frames: list[str] = []
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            last_ms = batch[-1]["create_time_ms"]
            msg = {"time": last_ms // MS_PER_S, "time_ms": last_ms, "channel": "futures.trades"}
            msg.update(event="update", error=None, result=list(batch))
            frames.append(orjson.dumps(msg).decode())
            batch.clear()

    for time_us, _recv, symbol, _b, _q, price, qty, side, trade_id in rows:
        if batch and batch[-1]["contract"] != symbol:
            flush()
        size = contracts(qty, instruments[symbol].multiplier)
        batch.append(
            {
                "size": num_text(size if side == "buy" else -size),
                "id": int(trade_id) if trade_id is not None and trade_id.isdigit() else next(ids),
                "create_time": time_us // US_PER_S,
                # futures carry whole milliseconds only
                "create_time_ms": time_us // US_PER_MS,
                "price": num_text(price),
                "contract": symbol,
            }
        )
    flush()
    return frames


def _currency_pairs(_q: Mapping[str, str], _b: bytes, inst: Sequence[Instrument], _w: str) -> HttpResponse:
    rows = [
        {
            "id": i.symbol,
            "base": i.base,
            "quote": i.quote,
            "fee": "0.2",
            "min_quote_amount": "3",
            "amount_precision": 4,
            "precision": 6,
            "trade_status": "tradable",
            "sell_start": 0,
            "buy_start": 0,
            "delisting_time": 0,
            "type": "normal",
        }
        for i in inst
    ]
    return HttpResponse(200, orjson.dumps(rows))


def _contracts(_q: Mapping[str, str], _b: bytes, inst: Sequence[Instrument], _w: str) -> HttpResponse:
    rows = [
        {
            "name": i.symbol,
            "type": "direct",
            "quanto_multiplier": num_text(i.multiplier),
            "status": "trading",
            "in_delisting": False,
            "enable_decimal": True,
            "order_size_min": 1,
        }
        for i in inst
    ]
    return HttpResponse(200, orjson.dumps(rows))
