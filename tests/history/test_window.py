"""Extraction-time repair (`repair_window`) against the local exchanges' REST history.

Every test runs real HTTP servers on 127.0.0.1 (`SimExchange`), the real engine with the
exchanges' real rate budgets, the real store (`write_repaired`) and the real journal; the
outcome is read back from the store and the journal, as `extract` and `metadata.json` see it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from helpers.window_world import (
    BASE,
    BY_ID_OR_TIME,
    END_US,
    GAP_HI,
    GAP_LO,
    LATEST_ONLY,
    START_US,
    T_US,
    World,
    as_received,
    world,
)

from pumpwatch.recorder.history.budget import EXTRACTION_SHARE
from pumpwatch.recorder.history.specs import history_spec
from pumpwatch.recorder.history.window import WindowRepair, repair_window, subtract
from pumpwatch.recorder.upbit.notices import Notice
from pumpwatch.recorder.upbit.state import Firing
from pumpwatch.recorder.upbit.titles import parse_title
from pumpwatch.recorder.upbit.trigger import ExtractionScheduler, window_repair_fn
from pumpwatch.segments.journal import read_events, rewrite_journal
from pumpwatch.segments.paths import list_segments

S = 1_000_000


def firing() -> Firing:
    title = f"코인({BASE}) KRW 마켓 디지털 자산 추가"
    return Firing(BASE, T_US, Notice(9, title, T_US, T_US, "u-9"), T_US + 30 * S, parse_title(title))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def repair(w: World, streams: tuple[str, ...], deadline_s: float = 30.0) -> dict[str, WindowRepair]:
    return await repair_window(
        w.settings, w.data_dir, BASE, START_US, END_US, streams=streams, deadline_s=deadline_s
    )


def table_rows(table: Any) -> list[tuple[Any, ...]]:
    """The store's rows as tuples: the TradeRow fields (integer µs times), then source."""
    names = ["time", "recv_time", "symbol", "base", "quote", "price", "qty", "side", "trade_id", "source"]
    cols = [table.column(n) for n in names]
    values = [c.cast("int64").to_pylist() if i < 2 else c.to_pylist() for i, c in enumerate(cols)]
    return list(zip(*values, strict=True))


def ids(table: Any) -> Counter[str]:
    return Counter(table.column("trade_id").to_pylist())


def events(w: World, stream: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(w.data_dir, stream) if e["event"] == kind]


def repair_files(w: World) -> list[Path]:
    return [s.path for s in list_segments(w.data_dir) if ".rest" in s.path.name]


def forget_repairs(journal: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps(e) + b"\n" for e in journal if e["event"] != "repaired"]


def test_subtract_inclusive_spans() -> None:
    assert subtract([(0, 100)], [(10, 20), (50, 60)]) == [(0, 9), (21, 49), (61, 100)]
    assert subtract([(0, 100)], [(-5, 0), (100, 200)]) == [(1, 99)]
    assert subtract([(0, 10), (20, 30)], [(5, 25)]) == [(0, 4), (26, 30)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], []) == [(0, 10)]


def test_a_gap_in_the_window_is_repaired_to_every_trade_exactly_once(tmp_path: Path) -> None:
    """Binance, OKX and Gate: the window holds every trade the exchange made, once, the gap's
    from REST; the journal says `repaired` over the gap; a second run does nothing at all.
    okx_futures is missing from the subscription list (a coin dropped from it since): its
    instrument, with the contract size, comes from the exchange's instrument list."""

    async def main() -> None:
        async with world(tmp_path, BY_ID_OR_TIME) as w:
            w.write_symbols([s for s in BY_ID_OR_TIME if s != "okx_futures"])
            w.record_with_gap()
            reports = await repair(w, BY_ID_OR_TIME)
            for stream in BY_ID_OR_TIME:
                report = reports[stream]
                gap = [r for r in w.window_tape(stream) if GAP_LO <= r[0] < GAP_HI]
                assert report.written == len(gap) > 100, stream
                assert report.unrepaired == [] and report.notes == [], (stream, report)
                table = w.stored(stream)
                want = Counter(r[8] for r in w.window_tape(stream))
                assert ids(table) == want, stream  # every trade, exactly once
                # the gap's trades came from REST, and as exactly the rows the live adapter
                # makes of the same trades (all but the receive time)
                rest = {r[8]: r for r in table_rows(table) if r[9] == "rest"}
                assert {r[8] for r in gap} == set(rest), stream
                for live in as_received(stream, gap):
                    got = rest[live[8]]
                    assert got[0] == live[0] and got[2:9] == live[2:9], stream
                (done,) = events(w, stream, "repaired")
                assert done["symbol"] == w.instrument(stream).symbol and done["base"] == BASE
                assert done["start_us"] == GAP_LO and done["end_us"] == GAP_HI
                assert done["trades"] == len(gap)
            calls = w.requests()
            files = repair_files(w)

            again = await repair(w, BY_ID_OR_TIME)
            assert w.requests() == calls  # spans journaled `repaired` are not asked again
            assert all(r.written == 0 and not r.todo for r in again.values())
            assert repair_files(w) == files

            # Without the journal's word, the same repair fetches again and the store drops it all.
            for stream in BY_ID_OR_TIME:
                rewrite_journal(w.data_dir, stream, forget_repairs)
            third = await repair(w, BY_ID_OR_TIME)
            assert w.requests() > calls
            assert all(r.written == 0 and r.fetched > 100 for r in third.values())
            assert repair_files(w) == files

    run(main())


def test_latest_only_streams_get_what_their_endpoint_still_has(tmp_path: Path) -> None:
    """Bybit, KuCoin, Phemex answer only their latest trades: the part of the gap that answer
    reaches is repaired, the rest is `unrepaired` no_history up to the oldest trade returned."""

    async def main() -> None:
        async with world(tmp_path, LATEST_ONLY, end_us=GAP_HI + 3 * S) as w:
            w.write_symbols()
            w.record_with_gap()
            reports = await repair(w, LATEST_ONLY)
            outcomes = {}
            for stream in LATEST_ONLY:
                spec = history_spec(stream, "http://127.0.0.1")
                assert spec is not None
                latest = w.tapes[stream][-spec.limit :]
                gap = [r for r in w.tapes[stream] if GAP_LO <= r[0] < GAP_HI]
                reached = [r for r in gap if r[0] >= latest[0][0]]
                report = reports[stream]
                assert report.calls == 1, stream
                assert report.written == len(reached), stream
                table = w.stored(stream)
                assert table.num_rows == len(w.window_tape(stream)) - len(gap) + len(reached), stream
                assert Counter(table.column("source").to_pylist())["rest"] == len(reached)
                missing = events(w, stream, "unrepaired")
                if len(reached) == len(gap) and (latest[0][0] < GAP_LO or spec.short_is_complete):
                    assert missing == [], stream
                    outcomes[stream] = "whole"
                else:
                    (m,) = missing
                    assert (m["start_us"], m["reason"]) == (GAP_LO, "no_history"), stream
                    assert latest[0][0] // 1000 * 1000 <= m["end_us"] <= latest[0][0], stream
                    outcomes[stream] = "partial" if reached else "none"
            # the tape makes each kind of answer happen
            assert outcomes == {
                "bybit_spot": "partial",  # 60 latest: the last 6 s
                "bybit_futures": "whole",  # fewer trades than its 1000: every trade there is
                "kucoin_spot": "partial",
                "kucoin_futures": "partial",
                "phemex_spot": "whole",  # its 200 reach back past the gap
                "phemex_futures": "whole",
            }
            before = w.requests()
            again = await repair(w, LATEST_ONLY)  # no_history cannot change: nothing asked again
            assert w.requests() == before and all(r.written == 0 for r in again.values())

    run(main())


def test_before_pumpwatch_was_recording_streams_with_history_are_whole(tmp_path: Path) -> None:
    """No journal, no segments, only the subscription list: the whole window is a gap; the
    streams whose history reaches back end up holding every trade, `repaired` throughout."""
    streams = ("binance_spot", "okx_futures", "gate_spot", "kucoin_spot")

    async def main() -> None:
        async with world(tmp_path, streams) as w:
            w.write_symbols()
            reports = await repair(w, streams)
            for stream in streams[:3]:
                table = w.stored(stream)
                assert ids(table) == Counter(r[8] for r in w.window_tape(stream)), stream
                assert set(table.column("source").to_pylist()) == {"rest"}
                assert reports[stream].gaps == [(START_US, END_US)]
                (done,) = events(w, stream, "repaired")
                assert (done["start_us"], done["end_us"]) == (START_US, END_US)
            (missing,) = events(w, "kucoin_spot", "unrepaired")
            assert missing["reason"] == "no_history" and missing["start_us"] == START_US

    run(main())


def test_a_stream_without_history_is_journaled_no_history_without_a_call(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, ("okx_spot",)) as w:
            w.settings.streams["okx_spot"].options = {"channel": "trades"}  # aggregated: no REST match
            w.write_symbols()
            w.record_with_gap()
            report = (await repair(w, ("okx_spot",)))["okx_spot"]
            assert w.requests() == 0 and report.written == 0
            (m,) = events(w, "okx_spot", "unrepaired")
            assert (m["symbol"], m["start_us"], m["end_us"], m["reason"]) == (
                "ABC-USDT",
                GAP_LO,
                GAP_HI,
                "no_history",
            )

    run(main())


def test_rate_limits_slow_the_repair_and_the_deadline_ends_an_endless_429(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, ("binance_spot", "gate_futures")) as w:
            w.write_symbols()
            w.record_with_gap()
            w.exchanges["binance_spot"].throttle(1)  # 429, Retry-After: 1
            w.exchanges["gate_futures"].throttle(3)  # refuses longer than the deadline allows
            t0 = time.monotonic()
            reports = await repair(w, ("binance_spot", "gate_futures"), deadline_s=2.0)
            elapsed = time.monotonic() - t0
            assert 1.0 <= elapsed < 5.0
            slow = reports["binance_spot"]
            assert slow.rate_limited == 1 and slow.unrepaired == []
            assert ids(w.stored("binance_spot")) == Counter(r[8] for r in w.window_tape("binance_spot"))
            stuck = reports["gate_futures"]
            assert stuck.written == 0 and stuck.rate_limited >= 1
            (m,) = events(w, "gate_futures", "unrepaired")
            assert (m["start_us"], m["end_us"], m["reason"]) == (GAP_LO, GAP_HI, "rate_limited")
            assert events(w, "gate_futures", "repaired") == []

            # rate_limited is not final: the next extraction tries again (one refusal left) and
            # succeeds; it shares the first one's Gate budget (the process's), so it first waits
            # out the block left by the refusals and then the escalated one (4 s) of the last
            again = await repair(w, ("gate_futures",), deadline_s=10.0)
            assert again["gate_futures"].written > 100
            assert ids(w.stored("gate_futures")) == Counter(r[8] for r in w.window_tape("gate_futures"))

    run(main())


def test_nothing_missing_means_no_call(tmp_path: Path) -> None:
    """A window the recorder heard whole (journal listening throughout) costs nothing."""

    async def main() -> None:
        async with world(tmp_path, ("binance_futures",)) as w:
            w.write_symbols()
            w.record_with_gap()
            (done,) = [e for e in read_events(w.data_dir, "binance_futures") if e["event"] == "disconnected"]
            report = (
                await repair_window(
                    w.settings, w.data_dir, BASE, GAP_HI, END_US, streams=("binance_futures",), deadline_s=5.0
                )
            )["binance_futures"]
            assert done["ts"] == GAP_LO and report.gaps == [] and not report.attempted
            assert w.requests() == 0

    run(main())


def test_the_listing_trigger_repairs_before_its_scheduled_extraction(tmp_path: Path) -> None:
    """The scheduler runs the repair (from settings) as its own task, then extracts: the
    listing's raw files hold the repaired trades."""
    streams = ("okx_spot", "binance_spot")

    async def main() -> None:
        async with world(tmp_path, streams) as w:
            w.write_symbols()
            w.record_with_gap()
            scheduler = ExtractionScheduler(
                w.data_dir,
                before_s=20.0,
                after_s=20.0,
                wait_after_s=0.0,
                repair_fn=window_repair_fn(w.settings),
            )
            scheduler.add(firing())
            await scheduler.idle()
            (result,) = scheduler.results
            assert result.error is None and result.listing_dir is not None
            for stream in streams:
                raw = orjson.loads((result.listing_dir / "raw" / f"{stream}.json").read_bytes())
                assert Counter(t["trade_id"] for t in raw) == Counter(r[8] for r in w.window_tape(stream))
            assert len(events(w, "okx_spot", "repaired")) == 1

    run(main())


def test_the_trigger_without_repair_asks_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, ("binance_spot",)) as w:
            w.write_symbols()
            w.record_with_gap()
            w.settings.repair.at_extract = False
            assert window_repair_fn(w.settings) is None
            scheduler = ExtractionScheduler(w.data_dir, before_s=20.0, after_s=20.0, wait_after_s=0.0)
            scheduler.add(firing())
            await scheduler.idle()
            assert scheduler.results[0].error is None and w.requests() == 0

    run(main())


def test_an_answer_that_never_comes_is_cut_at_the_deadline(tmp_path: Path, monkeypatch: Any) -> None:
    """The deadline bounds the budget waits; a hung answer is cancelled a grace later, its span
    left unattempted (nothing journaled), so the extraction is never held up for long."""
    import httpx

    import pumpwatch.recorder.history.window as window

    monkeypatch.setattr(window, "HARD_GRACE_S", 0.5)

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    async def main() -> None:
        async with world(tmp_path, ("gate_spot",)) as w:
            w.write_symbols()
            w.record_with_gap()
            t0 = time.monotonic()
            async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as client:
                reports = await repair_window(
                    w.settings, w.data_dir, BASE, START_US, END_US, streams=("gate_spot",),
                    deadline_s=1.0, client=client,
                )  # fmt: skip
            assert time.monotonic() - t0 < 3.0
            report = reports["gate_spot"]
            assert report.notes == ["cut at the deadline"] and report.written == 0
            assert events(w, "gate_spot", "repaired") == events(w, "gate_spot", "unrepaired") == []

    run(main())


def test_a_failing_repair_never_stops_the_scheduled_extraction(tmp_path: Path) -> None:
    calls: list[str] = []

    async def broken(symbol: str, start_us: int, end_us: int) -> object:
        calls.append(f"repair {symbol} {end_us - start_us}")
        raise RuntimeError("store on fire")

    def extract(data_dir: Path, symbol: str, trigger_us: int, **kw: Any) -> Path:
        calls.append(f"extract {symbol}")
        out = tmp_path / "listings" / symbol
        out.mkdir(parents=True, exist_ok=True)
        return out

    async def main() -> None:
        scheduler = ExtractionScheduler(
            tmp_path, before_s=20.0, after_s=20.0, wait_after_s=0.0, repair_fn=broken,
            extract_fn=extract, detect_fn=lambda *a: None,
        )  # fmt: skip
        scheduler.add(firing())
        await scheduler.idle()
        (result,) = scheduler.results
        assert result.error is None and result.listing_dir == tmp_path / "listings" / BASE

    run(main())
    assert calls == [f"repair {BASE} {40 * S}", f"extract {BASE}"]  # repair first, then extract


def test_concurrent_extractions_share_one_budget_per_exchange(tmp_path: Path) -> None:
    """The listing trigger runs two extractions at once: both repairs of OKX spot and SWAP draw
    on the process's one OKX budget, a quarter of OKX's 20 calls / 2 s. Counted at the local
    servers, no 2 s ever holds more than 5 history calls (with a budget per call it was the
    burst of both, 14 calls within the first second), and both repairs are whole."""
    streams = ("okx_spot", "okx_futures")
    rule = history_spec("okx_spot", "http://x").rate
    per_window = int(rule.weight_per_window * EXTRACTION_SHARE)

    async def main() -> list[float]:
        async with world(tmp_path, streams) as w:
            w.write_symbols()
            w.record_with_gap()
            stamps: list[float] = []
            for stream in streams:
                service = w.exchanges[stream].history
                handle = service.handle

                def counted(*args: Any, handle: Any = handle) -> Any:
                    stamps.append(time.monotonic())
                    return handle(*args)

                service.handle = counted  # type: ignore[method-assign]
            first, second = await asyncio.gather(repair(w, streams), repair(w, streams))
            for stream in streams:
                assert first[stream].unrepaired == [] and second[stream].unrepaired == []
                assert ids(w.stored(stream)) == Counter(r[8] for r in w.window_tape(stream))
            return stamps

    stamps = run(main())
    assert len(stamps) > per_window * 2  # enough calls that the budget had to pace them
    for t0 in stamps:
        in_window = [t for t in stamps if t0 <= t < t0 + rule.window_s]
        assert len(in_window) <= per_window, (len(in_window), stamps)


def test_a_replaying_stream_leaves_a_gap_still_open_to_the_live_repair(tmp_path: Path) -> None:
    """Phemex replays its last 200 trades after every subscribe, and the live path stores them
    without reading the store. The recorder runs, the connection is still down at extraction:
    repairing the gap now would store the trades the resumed connection's snapshot then stores
    again. The extraction leaves it to the worker's live repair (a note says so); the snapshot,
    stored the live way afterwards, leaves every trade once. (A gap closed long before the
    extraction is repaired: test_latest_only_streams_get_what_their_endpoint_still_has.)"""
    from pumpwatch.segments import SegmentWriter
    from pumpwatch.segments.journal import EventJournal

    stream = "phemex_spot"

    async def main() -> None:
        async with world(tmp_path, (stream,)) as w:
            w.write_symbols()
            inst = w.instrument(stream)
            tape = w.tapes[stream]
            with SegmentWriter(w.data_dir, stream, fsync=False) as writer:
                writer.append(as_received(stream, [r for r in tape if r[0] < GAP_LO]))
            with EventJournal(w.data_dir, stream) as j:
                j.record("start", ts_us=T_US - 40 * S, pid=1)
                j.record("connected", conn="c1", ts_us=T_US - 40 * S, url="ws://127.0.0.1")
                j.record("subscribed", conn="c1", ts_us=T_US - 40 * S, symbols=[inst.symbol], bases=[BASE])
                j.record("disconnected", conn="c1", ts_us=GAP_LO, reason="1006")
                j.record("alive")  # the recorder runs on, the connection is still down
            reports = await repair(w, (stream,))
            report = reports[stream]
            assert report.calls == 0 and report.written == 0 and report.todo == []
            assert any("left to the live repair" in note for note in report.notes), report.notes
            assert events(w, stream, "unrepaired") == [] and events(w, stream, "repaired") == []
            # the connection resumes: the snapshot of the last 200 trades, stored the live way
            with SegmentWriter(w.data_dir, stream, fsync=False) as writer:
                writer.append(as_received(stream, tape[-200:]))
            table = w.stored(stream)
            copies = Counter(
                zip(*(table.column(n).to_pylist() for n in ("time", "price", "qty")), strict=True)
            )
            assert copies and max(copies.values()) == 1  # every trade once

    run(main())
