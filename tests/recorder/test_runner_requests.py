"""Ack matching and the per-connection rate limit, without sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pumpwatch.recorder.adapter import Control
from pumpwatch.recorder.stream import ratelimit
from pumpwatch.recorder.stream.ratelimit import RateLimiter
from pumpwatch.recorder.stream.requests import Answer, PendingRequest, RequestBook


def book_with(
    *requests: tuple[str, tuple[str, ...]], per_symbol: bool = False
) -> tuple[RequestBook, list[PendingRequest]]:
    loop = asyncio.new_event_loop()
    book = RequestBook(per_symbol=per_symbol)
    made = []
    for req_id, symbols in requests:
        r = PendingRequest(req_id, symbols, loop.create_future())
        book.add(r)
        made.append(r)
    loop.close()
    return book, made


def test_ack_by_id_completes_the_request() -> None:
    book, (r1, r2) = book_with(("1", ("A", "B")), ("2", ("C",)))
    assert book.answer(Control("ack", req_id="2")) == Answer(r2, ["C"], {}, True)
    assert (r2.acked, r2.rejected, r2.isolate) == (["C"], {}, [])
    assert list(book.pending) == ["1"]
    assert book.answer(Control("ack", req_id="9")) == Answer(None)  # an id we never sent
    # no id, no symbols: the oldest request
    assert book.answer(Control("ack")) == Answer(r1, ["A", "B"], {}, True)
    assert r1.acked == ["A", "B"] and book.pending == {}
    assert book.answer(Control("ack")) == Answer(None, [], {}, False)


def test_per_symbol_acks_without_ids_complete_when_all_arrived() -> None:
    # OKX-style: one answer per channel argument, matched by symbol.
    book, (r1, r2) = book_with(("1", ("A", "B")), ("2", ("C",)))
    assert book.answer(Control("ack", symbols=("C",))) == Answer(r2, ["C"], {}, True)
    # B is acked now (and reported now), A is still open
    assert book.answer(Control("ack", symbols=("B",))) == Answer(r1, ["B"], {}, False)
    assert r1.remaining == {"A"} and list(book.pending) == ["1"]
    assert book.answer(Control("ack", symbols=("A",))) == Answer(r1, ["A"], {}, True)
    assert r1.acked == ["B", "A"]  # in the order the exchange answered


def test_refusal_naming_symbols_rejects_them_and_asks_for_the_rest_again() -> None:
    # No document says a refusal naming some topics subscribed the others (issue 12): they are
    # not counted as acked, but isolated (asked again one per request).
    book, (r1,) = book_with(("7", ("A", "BAD", "C")))
    done = book.answer(Control("ack", req_id="7", ok=False, symbols=("BAD",), message="invalid symbol"))
    assert done == Answer(r1, [], {"BAD": "invalid symbol"}, True)
    assert r1.acked == [] and r1.rejected == {"BAD": "invalid symbol"} and r1.isolate == ["A", "C"]


def test_per_symbol_refusals_answer_only_the_symbols_they_name() -> None:
    # OKX: every arg of one request is answered on its own (ack, or error 60018 naming it),
    # all with the request's id. Two bad symbols in one request: the first error must not
    # count the second (nor the good ones still unanswered) as subscribed.
    book, (r1,) = book_with(("5", ("A", "BAD1", "BAD2", "C")), per_symbol=True)
    assert book.answer(Control("ack", req_id="5", symbols=("A",))) == Answer(r1, ["A"], {}, False)
    bad1 = Control("ack", req_id="5", ok=False, symbols=("BAD1",), message="60018: x")
    assert book.answer(bad1) == Answer(r1, [], {"BAD1": "60018: x"}, False)
    assert r1.remaining == {"BAD2", "C"} and r1.acked == ["A"] and r1.rejected == {"BAD1": "60018: x"}
    bad2 = Control("ack", req_id="5", ok=False, symbols=("BAD2",), message="60018: y")
    assert book.answer(bad2) == Answer(r1, [], {"BAD2": "60018: y"}, False)
    assert r1.acked == ["A"] and r1.remaining == {"C"}
    assert book.answer(Control("ack", req_id="5", symbols=("C",))) == Answer(r1, ["C"], {}, True)
    assert r1.acked == ["A", "C"]
    assert r1.rejected == {"BAD1": "60018: x", "BAD2": "60018: y"}
    assert r1.isolate == [] and book.pending == {}


def test_per_symbol_answers_without_symbols_still_answer_the_whole_request() -> None:
    book, (r1, r2) = book_with(("1", ("A", "B")), ("2", ("C", "D")), per_symbol=True)
    # an ack naming nothing: all of it
    assert book.answer(Control("ack", req_id="1")) == Answer(r1, ["A", "B"], {}, True)
    assert r1.acked == ["A", "B"]
    whole = Control("error", req_id="2", ok=False, message="60012: bad")
    assert book.answer(whole) == Answer(r2, [], {}, True)
    assert r2.isolate == ["C", "D"] and r2.rejected == {} and r2.acked == []


def test_refusal_naming_nothing_isolates_a_chunk_and_rejects_a_single() -> None:
    book, (chunk, single) = book_with(("1", ("A", "B")), ("2", ("X",)))
    refusal = Control("error", req_id="1", ok=False, message="bad request")
    assert book.answer(refusal) == Answer(chunk, [], {}, True)
    assert chunk.isolate == ["A", "B"] and chunk.acked == [] and chunk.rejected == {}
    assert book.answer(Control("error", req_id="2", ok=False)) == Answer(single, [], {"X": "rejected"}, True)
    assert single.rejected == {"X": "rejected"}


def test_close_releases_waiters() -> None:
    loop = asyncio.new_event_loop()
    book = RequestBook()
    r = PendingRequest("1", ("A",), loop.create_future())
    book.add(r)
    book.close()
    assert r.done.done() and r.done.result() is None and book.pending == {}
    loop.close()


def test_rate_limiter_sliding_window_with_a_fake_clock(monkeypatch: Any) -> None:
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    monkeypatch.setattr(ratelimit.asyncio, "sleep", fake_sleep)

    async def main() -> list[float]:
        limiter = RateLimiter(5.0, clock=lambda: now[0])
        stamps = []
        for i in range(12):
            if i == 7:
                now[0] += 0.3  # a pause frees nothing extra: the window slides
            await limiter.acquire()
            stamps.append(round(now[0] - 100.0, 6))
        return stamps

    stamps = asyncio.run(main())
    assert stamps == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.3, 1.3, 1.3, 2.0, 2.0]
    assert slept == [1.0, 0.7]
    assert all(sum(1 for t in stamps if s <= t < s + 1.0) <= 5 for s in stamps)


def test_rate_limiter_below_one_per_second_spaces_frames() -> None:
    slow = RateLimiter(0.5)
    assert (slow.capacity, slow.window_s) == (1, 2.0)
    with pytest.raises(ValueError):
        RateLimiter(0.0)
