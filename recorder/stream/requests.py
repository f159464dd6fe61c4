"""What a connection asked the exchange and what the answers mean (Sans-I/O).

Used by ``recorder/stream/connection.py``: every subscribe or unsubscribe request is booked
here, and each ack or error the exchange sends is matched to the request it answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from pumpwatch.recorder.adapter import Control


@dataclass
class PendingRequest:
    """One subscribe or unsubscribe request waiting for its answer."""

    req_id: str
    symbols: tuple[str, ...]
    done: asyncio.Future[None]
    remaining: set[str] = field(default_factory=set)
    acked: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)  # symbol -> the exchange's reason
    isolate: list[str] = field(default_factory=list)  # refused as a whole: retry one by one
    context: Any = None  # the caller's (callbacks to run on completion)

    def __post_init__(self) -> None:
        self.remaining = set(self.symbols)


@dataclass
class Answer:
    """What one ack or error settled (`RequestBook.answer`)."""

    request: PendingRequest | None  # the request it answered; None: it matched none
    acked: list[str] = field(default_factory=list)  # symbols this answer acked
    rejected: dict[str, str] = field(default_factory=dict)  # symbols this answer refused -> reason
    complete: bool = False  # every symbol of the request is answered: it left the book


class RequestBook:
    """Matches acks and errors to the requests they answer.

    An answer is matched by request id, else by the symbols it names, else (exchanges answer
    in order) to the oldest open request. A refusal naming symbols rejects those and, unless
    `per_symbol`, marks the rest of the request for isolation (Bybit: one reply per request,
    naming the refused topics; whether it subscribed the others is not documented, so they are
    asked again one per request and count only when acked). With `per_symbol` (OKX: one
    answer per symbol of a request) an answer naming symbols settles only those, and the
    request completes when each symbol had its own.
    A refusal naming none rejects a single-symbol request, and marks a larger one for isolation
    (one request per symbol) so that one bad symbol does not take its whole chunk down.
    """

    def __init__(self, per_symbol: bool = False) -> None:
        self.pending: dict[str, PendingRequest] = {}
        self.per_symbol = per_symbol

    def add(self, request: PendingRequest) -> None:
        self.pending[request.req_id] = request

    def discard(self, req_id: str) -> None:
        self.pending.pop(req_id, None)

    def answer(self, ctl: Control) -> Answer:
        """Apply `ctl` (kind ack or error) and say what it settled: the request it matched (if
        any), the symbols this very answer acked or rejected, and whether the request is now
        complete (it then left the book). Per-symbol answers settle a request bit by bit, and
        each bit is reported at once: trades of an acked symbol may arrive before the other
        symbols of its request are answered, and the journal must already count it as listening."""
        pending = self.pending
        request = pending.get(ctl.req_id) if ctl.req_id is not None else None
        if request is None and ctl.symbols:
            named = set(ctl.symbols)
            request = next((r for r in pending.values() if r.remaining & named), None)
        if request is None and ctl.req_id is None and pending:
            request = next(iter(pending.values()))
        if request is None:
            return Answer(None)
        acked: list[str] = []
        rejected: dict[str, str] = {}
        if ctl.ok:
            answered = request.remaining & set(ctl.symbols) if ctl.symbols else set(request.remaining)
            acked = [s for s in request.symbols if s in answered]
        elif ctl.symbols:
            reason = ctl.message or "rejected"
            named = set(ctl.symbols)
            # Per-symbol answers: the others of the request get their own answer later.
            answered = request.remaining & named if self.per_symbol else set(request.remaining)
            for s in request.symbols:
                if s in answered:
                    if s in named:
                        rejected[s] = reason
                    elif len(request.symbols) > 1:
                        # One reply for the request (Bybit) naming some symbols: no document says
                        # the others were subscribed, so they are asked again, one per request,
                        # whose answers are unambiguous (an "already subscribed" is an ack).
                        request.isolate.append(s)
        else:
            answered = set(request.remaining)
            open_symbols = [s for s in request.symbols if s in answered]
            if len(request.symbols) > 1:
                request.isolate.extend(open_symbols)
            else:
                rejected = {s: ctl.message or "rejected" for s in open_symbols}
        request.acked.extend(acked)
        request.rejected.update(rejected)
        request.remaining -= answered
        complete = not request.remaining
        if complete:
            del pending[request.req_id]
        return Answer(request, acked, rejected, complete)

    def close(self) -> None:
        """The connection ended: release every waiter (they see the end and fail)."""
        for request in self.pending.values():
            if not request.done.done():
                request.done.set_result(None)
        self.pending.clear()
