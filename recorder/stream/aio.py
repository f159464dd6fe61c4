"""Small asyncio helpers of the connection machinery."""

from __future__ import annotations

import asyncio


async def wait_flags(stop: asyncio.Event, event: asyncio.Event | None, timeout_s: float | None) -> bool:
    """Wait until `event` (if any) or `stop` is set, or `timeout_s` passes (None: no limit);
    True when a flag was set. asyncio.wait, not wait_for: Python 3.11's wait_for swallows a
    cancel that arrives in the loop turn the awaited event fires."""
    flags = [stop] if event is None else [event, stop]
    if any(f.is_set() for f in flags):
        return True
    waiters = [asyncio.ensure_future(f.wait()) for f in flags]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)
