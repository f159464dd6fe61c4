"""A tiny JSON exchange protocol (adapter + sim) for testing the runner and the local servers,
and a `Harness` running a `StreamRunner` against it (``from helpers.json_exchange import …``).

It has every feature the real ones have, each switchable: subscribe with ids and acks naming
the rejected symbols (or refusing a whole request), JSON ping/pong, a welcome, a token fetched
over REST before each connect (single use, like KuCoin's), server pings and a shutdown notice.

    client -> {"op":"sub","id":"7","args":["AAAUSDT"]}
    server -> {"e":"ack","id":"7","ok":true,"rejected":[]}
    client -> {"op":"ping","ts":1}
    server -> {"e":"pong","ts":1}
    server -> {"e":"trade","d":[{"s":"AAAUSDT","t":1700000000000000,"p":"1.5","q":"2","S":"buy","i":"42"}]}
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import (
    Adapter,
    ConnectTarget,
    Control,
    HttpRequest,
    Instrument,
    Instruments,
)
from pumpwatch.recorder.sim.protocol import HttpResponse, SimProtocol, SimSession
from pumpwatch.segments.schema import TradeRow
from pumpwatch.timeunits import US_PER_DAY

STREAM = "test_spot"
FAR_FUTURE_US = US_PER_DAY  # a trade time more than a day after receipt is garbage


def instrument(base: str) -> Instrument:
    return Instrument(f"{base}USDT", base, "USDT")


def decode_frame(frame: bytes | str, recv_us: int, instruments: Instruments) -> list[TradeRow] | Control:
    """One frame of the test protocol -> trades or a Control."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc}") from None
    if type(msg) is not dict:
        raise ParseError("not an object")
    event = msg.get("e")
    if event == "trade":
        rows: list[TradeRow] = []
        try:
            for d in msg["d"]:
                inst = instruments.get(d["s"])
                if inst is None:
                    raise ParseError(f"unknown symbol {d['s']!r}")
                price, qty, time_us = float(d["p"]), float(d["q"]), int(d["t"])
                if not (math.isfinite(price) and price > 0 and math.isfinite(qty) and qty > 0):
                    raise ParseError(f"bad price/qty {d['p']!r}/{d['q']!r}")
                if time_us > recv_us + FAR_FUTURE_US or time_us <= 0:
                    raise ParseError(f"implausible trade time {time_us}")
                if d["S"] not in ("buy", "sell"):
                    raise ParseError(f"bad side {d['S']!r}")
                rows.append(
                    (time_us, recv_us, inst.symbol, inst.base, inst.quote, price, qty, d["S"], str(d["i"]))
                )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ParseError):
                raise
            raise ParseError(f"bad trade: {exc!r}") from None
        return rows
    if event == "ack":
        return Control(
            "ack",
            req_id=msg.get("id"),
            ok=bool(msg.get("ok")),
            symbols=tuple(msg.get("rejected") or ()),
            message=msg.get("msg", ""),
        )
    if event == "pong":
        return Control("pong")
    if event == "welcome":
        return Control("welcome")
    if event == "shutdown":
        return Control("reconnect", message="server shutdown")
    if event == "ping":
        return Control("info", reply=orjson.dumps({"op": "pong", "ts": msg.get("ts")}).decode())
    if event == "error":
        return Control("error", req_id=msg.get("id"), ok=False, message=msg.get("msg", ""))
    raise ParseError(f"unknown event {event!r}")


def _request(op: str) -> Any:
    def build(symbols: Sequence[str], req_id: str) -> list[str]:
        return [orjson.dumps({"op": op, "id": req_id, "args": list(symbols)}).decode()]

    return build


def make_adapter(**overrides: Any) -> Adapter:
    """The test adapter; `token=True` fetches a token over REST before each connect."""
    token = overrides.pop("token", False)
    welcome = overrides.pop("welcome", False)
    fields: dict[str, Any] = {
        "stream": STREAM,
        "doc_url": "tests/helpers/json_exchange.py",
        "decode": decode_frame,
        "subscribe": _request("sub"),
        "unsubscribe": _request("unsub"),
        "max_symbols_per_request": 3,
        "max_symbols_per_connection": 10,
        "max_requests_per_s": 200.0,
        "ping": lambda now_ms: orjson.dumps({"op": "ping", "ts": now_ms}).decode(),
        "ping_interval_s": 0.2,
        "quiet_timeout_s": 1.0,
    }
    if token:

        def connect_request(rest_url: str) -> HttpRequest:
            return HttpRequest("POST", rest_url + "/token")

        def connect_target(ws_url: str, body: bytes | None, conn_id: str) -> ConnectTarget:
            try:
                tok = orjson.loads(body or b"")["token"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise ParseError(f"bad token reply: {exc!r}") from None
            return ConnectTarget(f"{ws_url}/ws?token={tok}&connectId={conn_id}", wait_welcome=welcome)

        fields["connect_request"] = connect_request
        fields["connect_target"] = connect_target
    else:
        fields["connect_target"] = lambda ws_url, _b, _c: ConnectTarget(f"{ws_url}/ws", wait_welcome=welcome)
    fields.update(overrides)
    return Adapter(**fields)


def make_protocol(
    *,
    token: bool = False,
    welcome: bool = False,
    name_rejected: bool = True,
    snapshot: bool = False,
    ack: bool = True,
    **overrides: Any,
) -> SimProtocol:
    """The server side of the test protocol."""
    issued: set[str] = set()

    def accept(path: str, _headers: Mapping[str, str]) -> int | None:
        if not path.startswith("/ws"):
            return 404
        if token:
            tok = path.partition("token=")[2].partition("&")[0]
            if tok not in issued:
                return 401
            issued.discard(tok)  # single use: a reconnect must fetch a fresh one
        return None

    def on_connect(_session: SimSession) -> list[str]:
        return ['{"e":"welcome"}'] if welcome else []

    def on_message(session: SimSession, frame: str | bytes, _now_ms: int) -> list[str]:
        msg = orjson.loads(frame)
        op = msg.get("op")
        if op == "ping":
            return [orjson.dumps({"e": "pong", "ts": msg.get("ts")}).decode()]
        if op == "pong":
            return []
        if op in ("sub", "unsub"):
            args = list(msg["args"])
            if op == "unsub":
                session.subscribed.difference_update(args)
                return [orjson.dumps({"e": "ack", "id": msg["id"], "ok": True}).decode()] if ack else []
            bad = [s for s in args if s in session.reject or s not in session.instruments]
            if bad and not name_rejected:
                return [
                    orjson.dumps(
                        {"e": "ack", "id": msg["id"], "ok": False, "msg": "invalid request"}
                    ).decode()
                ]
            session.subscribed.update(s for s in args if s not in bad)
            reply = {
                "e": "ack",
                "id": msg["id"],
                "ok": not bad,
                "rejected": bad,
                "msg": "no such symbol" if bad else "",
            }
            return [orjson.dumps(reply).decode()] if ack else []
        return [orjson.dumps({"e": "error", "msg": f"unknown op {op!r}"}).decode()]

    def encode_trades(rows: Sequence[TradeRow], _instruments: Mapping[str, Instrument]) -> list[str]:
        frames = []
        for i in range(0, len(rows), 50):
            data = [
                {"s": r[2], "t": r[0], "p": repr(r[5]), "q": repr(r[6]), "S": r[7], "i": r[8]}
                for r in rows[i : i + 50]
            ]
            frames.append(orjson.dumps({"e": "trade", "d": data}).decode())
        return frames

    def replay(symbol: str, recent: Sequence[TradeRow], instruments: Mapping[str, Instrument]) -> list[str]:
        return encode_trades(list(recent)[-20:], instruments)

    def token_route(
        _q: Mapping[str, str], _body: bytes, _inst: Sequence[Instrument], _ws: str
    ) -> HttpResponse:
        tok = uuid.uuid4().hex
        issued.add(tok)
        return HttpResponse(200, orjson.dumps({"token": tok}))

    proto = SimProtocol(
        stream=STREAM,
        accept=accept,
        on_connect=on_connect,
        on_message=on_message,
        encode_trades=encode_trades,
        snapshot=replay if snapshot else None,
        http_routes={("POST", "/token"): token_route} if token else {},
        shutdown_notice=lambda: '{"e":"shutdown"}',
    )
    return dataclasses.replace(proto, **overrides) if overrides else proto


class RecordingJournal:
    """Duck-typed EventJournal that keeps (event, fields) in order, with a monotonic stamp."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def _add(self, event: str, **fields: Any) -> None:
        import time

        fields["t"] = time.monotonic()
        self.events.append((event, fields))

    def connected(self, conn: str, url: str) -> None:
        self._add("connected", conn=conn, url=url)

    def subscribed(self, conn: str, symbols: list[str], bases: list[str]) -> None:
        self._add("subscribed", conn=conn, symbols=list(symbols), bases=list(bases))

    def rejected(self, conn: str, symbols: list[str], reason: str) -> None:
        self._add("rejected", conn=conn, symbols=list(symbols), reason=reason)

    def unsubscribed(self, conn: str, symbols: list[str]) -> None:
        self._add("unsubscribed", conn=conn, symbols=list(symbols))

    def disconnected(self, conn: str, reason: str, last_rx_us: int | None = None) -> None:
        self._add("disconnected", conn=conn, reason=reason, last_rx_us=last_rx_us)

    def gap_start(self, reason: str) -> None:
        self._add("gap_start", reason=reason)

    def gap_end(self) -> None:
        self._add("gap_end")

    def kinds(self) -> list[str]:
        return [e for e, _ in self.events]


def rows_for(
    symbols: Sequence[str], start: int, n: int, t0_us: int = 1_700_000_000_000_000
) -> list[TradeRow]:
    """`n` trades round-robin over `symbols` with ids start..start+n-1 (recv time 0: server side)."""
    out: list[TradeRow] = []
    for k in range(start, start + n):
        sym = symbols[k % len(symbols)]
        out.append(
            (
                t0_us + k,
                0,
                sym,
                sym[:-4],
                "USDT",
                1.0 + k / 1000,
                0.5 + k % 7,
                "buy" if k % 2 else "sell",
                str(k),
            )
        )
    return out


def key(row: TradeRow) -> tuple[Any, ...]:
    """A trade without its receive time: equal for the server's and the client's copy."""
    return (row[0], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


class Harness:
    """A `SimExchange` and a `StreamRunner` connected to it, both on 127.0.0.1.

    Use inside ``asyncio.run``: ``async with Harness(adapter, protocol, bases) as h: ...``.
    """

    def __init__(
        self,
        adapter: Adapter,
        protocol: SimProtocol,
        bases: Sequence[str],
        *,
        subscribe: Sequence[str] | None = None,
        sim_kwargs: Mapping[str, Any] | None = None,
        **runner_kwargs: Any,
    ) -> None:
        from pumpwatch.recorder.sim.server import SimExchange

        self.instruments = {i.symbol: i for i in (instrument(b) for b in bases)}
        self.sim = SimExchange(protocol, list(self.instruments.values()), **(sim_kwargs or {}))
        self.adapter = adapter
        self.subscribe = list(subscribe) if subscribe is not None else list(self.instruments)
        self.journal = RecordingJournal()
        self.received: list[TradeRow] = []
        self.frames: list[tuple[int, bytes | str]] = []
        runner_kwargs.setdefault("backoff_initial_s", 0.02)
        runner_kwargs.setdefault("backoff_max_s", 0.2)
        runner_kwargs.setdefault("ack_timeout_s", 2.0)
        runner_kwargs.setdefault("open_timeout_s", 2.0)
        self.runner_kwargs = runner_kwargs
        self.runner: Any = None
        self._task: Any = None

    async def __aenter__(self) -> Harness:
        import asyncio

        from pumpwatch.recorder.stream.runner import StreamRunner

        await self.sim.start()
        self.runner = StreamRunner(
            self.adapter,
            ws_url=self.sim.ws_url,
            rest_url=self.sim.rest_url,
            instruments={s: self.instruments[s] for s in self.subscribe if s in self.instruments}
            | {s: instrument(s[:-4]) for s in self.subscribe if s not in self.instruments},
            on_trades=self.received.extend,
            on_frame=lambda recv_us, frame: self.frames.append((recv_us, frame)),
            journal=self.journal,
            **self.runner_kwargs,
        )
        self._task = asyncio.create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        import asyncio

        await self.runner.stop()
        await asyncio.wait_for(self._task, 5.0)
        await self.sim.close()

    async def until(self, condition: Any, timeout_s: float = 5.0, what: str = "condition") -> None:
        """Poll `condition()` every 5 ms; fail the test after `timeout_s`."""
        import asyncio
        import time

        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.005)

    async def subscribed(self, n: int | None = None, timeout_s: float = 5.0) -> None:
        """Wait until `n` symbols (default: all wanted) are acked on live connections."""
        want = len(self.subscribe) if n is None else n
        await self.until(
            lambda: (
                self.runner.stats.subscribed_symbols == want and self.runner.stats.pending_subscriptions == 0
            ),
            timeout_s,
            f"{want} symbols subscribed",
        )

    def received_keys(self) -> list[tuple[Any, ...]]:
        return [key(r) for r in self.received]
