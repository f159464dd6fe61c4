"""The twelve stream ids and the checks on names that reach file paths (DESIGN §3, §11)."""

from __future__ import annotations

import re

from pumpwatch.errors import UsageError

EXCHANGES: tuple[str, ...] = ("binance", "bybit", "okx", "kucoin", "gate", "phemex")
MARKETS: tuple[str, ...] = ("spot", "futures")
STREAMS: tuple[str, ...] = tuple(f"{exchange}_{market}" for exchange in EXCHANGES for market in MARKETS)

SYMBOL_RE = re.compile(r"[A-Z0-9]{1,20}")


def split_stream(stream: str) -> tuple[str, str]:
    """``"okx_futures"`` -> ``("okx", "futures")``; an unknown id is a `UsageError`."""
    if stream not in STREAMS:
        raise UsageError(f"unknown stream {stream!r}; known streams: {', '.join(STREAMS)}")
    exchange, market = stream.split("_", 1)
    return exchange, market


def parse_streams(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """A comma list (or list) of stream ids, or exchanges meaning both their markets; None = all."""
    if spec is None or spec == "" or spec == "all":
        return STREAMS
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        chosen = [f"{item}_{m}" for m in MARKETS] if item in EXCHANGES else [item]
        for stream in chosen:
            split_stream(stream)
            if stream not in out:
                out.append(stream)
    if not out:
        raise UsageError("no stream selected")
    return tuple(out)


def check_symbol(symbol: str) -> str:
    """Return `symbol` if it is an Upbit-style ticker (``[A-Z0-9]{1,20}``), else `UsageError`.

    Every symbol that ends up in a path goes through here first.
    """
    if not isinstance(symbol, str) or not SYMBOL_RE.fullmatch(symbol):
        raise UsageError(f"malformed symbol {symbol!r}: expected 1-20 characters of A-Z and 0-9")
    return symbol


def user_symbol(symbol: str) -> str:
    """A ticker typed by a person: surrounding blanks dropped and upper-cased (``0g`` -> ``0G``,
    as Upbit and every stream's ``base`` spell it), then checked like `check_symbol`."""
    if not isinstance(symbol, str):
        raise UsageError(f"malformed symbol {symbol!r}: expected 1-20 characters of A-Z and 0-9")
    # str.upper() maps a few non-ASCII letters to ASCII ones (the long s to S): not a ticker
    cased = symbol.strip().upper() if symbol.isascii() else symbol
    try:
        return check_symbol(cased)
    except UsageError:
        raise UsageError(f"malformed symbol {symbol!r}: expected 1-20 characters of A-Z and 0-9") from None
