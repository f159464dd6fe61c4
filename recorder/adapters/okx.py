"""OKX v5 spot and USDT-margined SWAP public trades.

All-trades channel: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-all-trades-channel
Connect/keep-alive: https://www.okx.com/docs-v5/en/#overview-websocket-connect
Instruments:        https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments

``trades-all`` on the business endpoint pushes one record per fill (the public ``trades``
channel aggregates a taker order's fills; it is the ``channel`` option). Times are ms
strings, ``side`` is the taker side, SWAP ``sz`` is in contracts: base qty = sz × ctVal ×
ctMult from the instrument list. OKX closes a connection after 30 s without traffic, so the
client sends the text ``ping`` every 20 s and gets ``pong``; notice 64008 announces a close.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
import orjson

from pumpwatch.errors import ConfigError, ParseError
from pumpwatch.recorder.adapter import Adapter, ConnectTarget, Control, HttpRequest, Instrument, Instruments
from pumpwatch.recorder.adapters.checks import (
    Side,
    contract_qty,
    loads,
    multiplier_parts,
    not_a_trade,
    option_values,
    read_options,
    trade_row,
)
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_MS

DOC_URL = "https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-all-trades-channel"

# OKX documents its production WebSocket service twice: ``ws.okx.com`` and the AWS-hosted
# ``wsaws.okx.com`` (same port and paths). With `recorder.redundancy: 2` the second connection
# goes to the other one (`recorder/stream/endpoints.py`).
_OKX_WS_HOSTS = ("wss://ws.okx.com:8443", "wss://wsaws.okx.com:8443")
REDUNDANT_WS_URLS = {
    f"{a}/ws/v5/{path}": f"{b}/ws/v5/{path}"
    for path in ("public", "business")
    for a, b in (_OKX_WS_HOSTS, _OKX_WS_HOSTS[::-1])
}
_CHANNELS = ("trades-all", "trades")
_PONGS = ("pong", b"pong")
_INST_RE = re.compile(r"instId:([A-Za-z0-9_-]+)")
SERVICE_UPGRADE = "64008"  # "The connection will soon be closed for a service upgrade."


class Trade(msgspec.Struct, kw_only=True, gc=False):
    """One trade of a ``trades-all``/``trades`` push (or a REST history-trades row).

    Documented as strings throughout; numbers are read the same way.
    """

    trade_id: str | int = msgspec.field(name="tradeId")
    price: str | float = msgspec.field(name="px")
    size: str | float = msgspec.field(name="sz")  # SWAP: contracts
    side: Side  # the taker's
    time: str | int = msgspec.field(name="ts")  # ms


class _Arg(msgspec.Struct, gc=False):
    instId: str
    channel: str | None = None


class _Push(msgspec.Struct, gc=False):
    arg: _Arg
    data: list[Trade]


_decode_push = msgspec.json.Decoder(_Push).decode


def trade_rows(trades: list[Trade], inst: Instrument, recv_us: int) -> list[TradeRow]:
    """Trades of `inst` -> checked rows (base qty = size × contract value); pushes and REST rows."""
    contract = None if inst.multiplier == 1.0 else multiplier_parts(inst.multiplier)
    rows: list[TradeRow] = []
    append = rows.append
    try:
        for trade in trades:
            time_us = int(trade.time) * US_PER_MS
            price = float(trade.price)
            qty = float(trade.size) if contract is None else contract_qty(trade.size, contract)
            append(trade_row(time_us, recv_us, inst, price, qty, trade.side, str(trade.trade_id)))
    except ValueError as exc:  # a ts, px or sz string that is not a number
        if isinstance(exc, ParseError):
            raise
        raise ParseError(f"okx: {exc}") from None
    return rows


def decode(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
    """One OKX frame -> trades (oldest first), or a Control for acks, errors, notices, pong.

    ``trades-all`` push::

        {"arg":{"channel":"trades-all","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",
         "tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","source":"0",
         "ts":"1630048897897"}]}
    """
    try:
        push = _decode_push(frame)
    except msgspec.DecodeError:
        return _control(frame)
    arg = push.arg
    if arg.channel is not None and arg.channel not in _CHANNELS:
        raise ParseError(f"okx: unexpected channel {arg.channel!r:.40}")
    inst = instruments.get(arg.instId)
    if inst is None:
        raise ParseError(f"okx: unknown instrument {arg.instId!r:.40}")
    return trade_rows(push.data, inst, recv_us)


def _control(frame: bytes | str) -> Control:
    """``{"event":"subscribe"|"unsubscribe"|"error"|"notice",…}`` frames and the text pong."""
    if frame in _PONGS:  # the text pong is not JSON
        return Control("pong")
    msg = loads(frame)
    if type(msg) is not dict:
        raise ParseError("okx: frame is not an object")
    if "arg" in msg and "data" in msg:  # a push whose schema check failed: say which field
        try:
            msgspec.convert(msg, _Push)
        except msgspec.ValidationError as exc:
            raise not_a_trade(exc) from None
    if type(msg.get("event")) is not str:
        raise ParseError("okx: frame without arg/data or event")
    event = msg["event"]
    raw_id = msg.get("id")
    req_id = str(raw_id) if type(raw_id) in (str, int) and raw_id != "" else None
    arg = msg.get("arg")
    inst_id = arg.get("instId") if type(arg) is dict else None
    if event in ("subscribe", "unsubscribe"):
        return Control("ack", req_id=req_id, symbols=(inst_id,) if type(inst_id) is str else ())
    code = str(msg.get("code", ""))
    text = f"{code}: {msg.get('msg', '')}"
    if event == "notice":
        return Control("reconnect" if code == SERVICE_UPGRADE else "info", message=text)
    if event == "error":
        # A refused subscription names the instrument: "Wrong URL or channel:trades-all,instId:X …".
        symbols = tuple(_INST_RE.findall(str(msg.get("msg", ""))))
        if symbols or req_id is not None:
            return Control("ack", req_id=req_id, ok=False, symbols=symbols, message=text)
        return Control("error", message=text)
    return Control("info", req_id=req_id, message=event)  # login, channel-conn-count, …


def _request(op: str, symbols: Sequence[str], req_id: str, channel: str) -> list[str]:
    args = [{"channel": channel, "instId": s} for s in symbols]
    return [orjson.dumps({"id": req_id, "op": op, "args": args}).decode()]


def _multiplier(item: Mapping[str, Any]) -> float | None:
    """Base units per contract of a linear SWAP: ctVal × ctMult, or None when not known."""
    try:
        value = float(item["ctVal"]) * float(item.get("ctMult") or 1)
    except (KeyError, TypeError, ValueError):
        return None
    return value if 0.0 < value < float("inf") else None


# Instrument states (``state``) left out: `test` pairs "can't be traded" and `settling` is an
# EVENTS contract's end. Kept: `live`; `preopen`, a new instrument before its listTime ("the state
# changes from preopen to live when the listTime is reached"); `suspend`, `rebase` and `post_only`,
# which return to `live`. Delisted instruments leave the list. A preopen instrument's other fields
# stay "" until at least 5 minutes before listTime, when its WebSocket subscription becomes
# available; until then it has no quote or contract value and is skipped.
# https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments
ENDED_STATES = frozenset({"test", "settling"})
# instCategory of the base asset: 1 crypto, 3 stocks, 4 commodities, 5 forex, 6 bonds ("" not
# available, treated as crypto). Non-crypto ones are left out unless `include_non_crypto`.
NON_CRYPTO_CATEGORIES = frozenset({"3", "4", "5", "6"})


def _parse_instruments(
    body: bytes, swap: bool, quotes: frozenset[str], include_non_crypto: bool = False
) -> list[Instrument]:
    """USDT spot pairs, or linear USDT-settled SWAPs with their contract value, that trade or
    are about to (preopen)."""
    try:
        doc = loads(body)
        if doc["code"] != "0":
            raise ParseError(f"okx: instruments code {doc['code']}: {doc.get('msg')}")
        out = []
        for item in doc["data"]:
            if item["state"] in ENDED_STATES:
                continue
            if not include_non_crypto and item.get("instCategory") in NON_CRYPTO_CATEGORIES:
                continue
            if not swap:
                if item["quoteCcy"] in quotes:
                    out.append(Instrument(item["instId"], item["baseCcy"].upper(), item["quoteCcy"].upper()))
                continue
            if item["ctType"] != "linear" or item["settleCcy"] not in quotes:
                continue
            multiplier = _multiplier(item)
            if multiplier is None:  # never guess a contract size
                continue
            base = (item.get("ctValCcy") or item["instFamily"].split("-")[0]).upper()
            out.append(Instrument(item["instId"], base, item["settleCcy"].upper(), multiplier=multiplier))
    except (KeyError, TypeError, AttributeError) as exc:
        raise ParseError(f"okx: bad instruments response ({exc!r})") from None
    return out


def _target(ws_url: str, channel: str) -> ConnectTarget:
    # trades-all is served on /ws/v5/business only, the aggregated trades on /ws/v5/public.
    url = ws_url
    if channel == "trades" and url.rstrip("/").endswith("/ws/v5/business"):
        url = url.rstrip("/")[: -len("business")] + "public"
    return ConnectTarget(url)


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``streams.okx_<market>.options``."""

    channel: Literal["trades-all", "trades"] = "trades-all"  # per fill, or aggregated per taker order
    quotes: tuple[str, ...] = ("USDT",)  # quote (SWAP: settle) assets recorded
    # stock/commodity/forex/bond underlyings too; default: symbols.include_non_crypto
    include_non_crypto: bool = False


def adapter(market: str, options: Mapping[str, Any]) -> Adapter:
    """The Adapter of ``okx_<market>``; options: see `Options`."""
    if market not in ("spot", "futures"):
        raise ConfigError(f"okx has no market {market!r}")
    swap = market == "futures"
    opts = read_options(f"okx_{market}", options, Options)
    channel = opts.channel
    quotes = frozenset(q.upper() for q in opts.quotes)
    inst_type = "SWAP" if swap else "SPOT"
    non_crypto = opts.include_non_crypto
    return Adapter(
        stream=f"okx_{market}",
        doc_url=DOC_URL,
        decode=decode,
        subscribe=lambda symbols, req_id: _request("subscribe", symbols, req_id, channel),
        unsubscribe=lambda symbols, req_id: _request("unsubscribe", symbols, req_id, channel),
        # One request's channels must stay under 64 KB; 480 (un)subscribe requests per hour.
        max_symbols_per_request=100,
        max_symbols_per_connection=300,
        max_requests_per_s=3.0,
        acks_per_symbol=True,
        connect_target=lambda ws_url, _body, _cid: _target(ws_url, channel),
        ping=lambda _now_ms: "ping",
        ping_interval_s=20.0,
        quiet_timeout_s=30.0,
        instruments_request=lambda rest_url: HttpRequest(
            "GET", f"{rest_url.rstrip('/')}/api/v5/public/instruments?instType={inst_type}"
        ),
        parse_instruments=lambda body: (_parse_instruments(body, swap, quotes, non_crypto), None),
        default_options=option_values(Options()),
    )
