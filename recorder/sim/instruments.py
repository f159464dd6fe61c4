"""How the simulated exchanges name a base asset's instrument, and their contract sizes.

Real instrument lists come from the exchanges (`pumpwatch symbols`); the local servers invent
theirs from a list of bases with these conventions, which follow each exchange's real naming.
The multipliers are deliberately not 1 so that tests exercise the contract conversion.
"""

from __future__ import annotations

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.streams import split_stream

# Contract sizes (base units per contract) used by the simulated futures venues.
SIM_MULTIPLIER = {"okx": 0.01, "kucoin": 0.001, "gate": 0.0001}


def sim_instrument(stream: str, base: str, quote: str = "USDT") -> Instrument:
    """The simulated `Instrument` of `base` on `stream`."""
    exchange, market = split_stream(stream)
    futures = market == "futures"
    if exchange in ("binance", "bybit"):
        return Instrument(f"{base}{quote}", base, quote)
    if exchange == "okx":
        if futures:
            return Instrument(f"{base}-{quote}-SWAP", base, quote, multiplier=SIM_MULTIPLIER["okx"])
        return Instrument(f"{base}-{quote}", base, quote)
    if exchange == "kucoin":
        wire_base = "XBT" if base == "BTC" and futures else base
        if futures:
            return Instrument(f"{wire_base}{quote}M", base, quote, multiplier=SIM_MULTIPLIER["kucoin"])
        return Instrument(f"{base}-{quote}", base, quote)
    if exchange == "gate":
        if futures:
            return Instrument(f"{base}_{quote}", base, quote, multiplier=SIM_MULTIPLIER["gate"])
        return Instrument(f"{base}_{quote}", base, quote)
    if exchange == "phemex":
        if futures:
            return Instrument(f"{base}{quote}", base, quote)
        return Instrument(f"s{base}{quote}", base, quote, price_scale=8, qty_scale=8)
    raise AssertionError(stream)  # pragma: no cover - split_stream validated it
