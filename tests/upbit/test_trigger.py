"""The extraction scheduler: timing, persistence across restarts, retries, several coins."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.recorder.upbit.notices import Notice
from pumpwatch.recorder.upbit.state import Firing
from pumpwatch.recorder.upbit.titles import parse_title
from pumpwatch.recorder.upbit.trigger import ExtractionScheduler
from pumpwatch.settings import PumpSettings
from pumpwatch.timeunits import US_PER_S as S


def firing(symbol: str, trigger_us: int, nid: int = 7) -> Firing:
    title = f"코인({symbol}) KRW 마켓 디지털 자산 추가"
    return Firing(
        symbol,
        trigger_us,
        Notice(nid, title, trigger_us, trigger_us, "123"),
        trigger_us + S,
        parse_title(title),
    )


class Recorder:
    """Stands in for the extractor and the detector; records calls and the thread they ran on."""

    def __init__(self, tmp: Path, fail_first: int = 0, detect_fails: bool = False) -> None:
        self.tmp = tmp
        self.calls: list[dict[str, Any]] = []
        self.detected: list[Path] = []
        self.fail_first = fail_first
        self.detect_fails = detect_fails
        self.lock = threading.Lock()

    def extract(self, data_dir: Path, symbol: str, trigger_us: int, **kw: Any) -> Path:
        with self.lock:
            self.calls.append(
                {
                    "data_dir": data_dir,
                    "symbol": symbol,
                    "trigger_us": trigger_us,
                    "at": time.time(),
                    **kw,
                    "thread": threading.current_thread() is threading.main_thread(),
                }
            )
            if self.fail_first > 0:
                self.fail_first -= 1
                raise OSError("disk hiccup")
        out = self.tmp / "listings" / f"{symbol}_{trigger_us}"
        out.mkdir(parents=True, exist_ok=True)
        return out

    def detect(self, listing_dir: Path, pump: PumpSettings) -> None:
        if self.detect_fails:
            raise ValueError("detector bug")
        self.detected.append(listing_dir)


def scheduler(tmp: Path, rec: Recorder, **kw: Any) -> ExtractionScheduler:
    return ExtractionScheduler(
        tmp,
        before_s=20.0,
        after_s=0.3,
        wait_after_s=0.2,
        pump=PumpSettings(window_s=1.0, threshold_percent=3.0, min_volume_ratio=2.0),
        extract_fn=rec.extract,
        detect_fn=rec.detect,
        **kw,
    )


def test_waits_for_the_window_then_extracts_in_a_thread(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)

    async def main() -> None:
        sched = scheduler(tmp_path, rec)
        t_us = int(time.time() * S)
        item = sched.add(firing("CP", t_us))
        assert item is not None and item.due_us == t_us + 500_000
        assert sched.add(firing("CP", t_us)) is None  # same coin and T: one extraction
        pending = orjson.loads((tmp_path / "upbit" / "pending.json").read_bytes())
        assert pending == [
            {
                "symbol": "CP",
                "trigger_us": t_us,
                "due_us": t_us + 500_000,
                "attempts": 0,
                "source": firing("CP", t_us).source(),
            }
        ]
        await sched.idle()
        (call,) = rec.calls
        assert call["at"] >= t_us / S + 0.5
        assert (call["symbol"], call["trigger_us"], call["before_s"], call["after_s"]) == (
            "CP",
            t_us,
            20.0,
            0.3,
        )
        assert call["source"]["notice_id"] == 7 and call["source"]["type"] == "upbit"
        assert call["thread"] is False
        assert rec.detected == [tmp_path / "listings" / f"CP_{t_us}"]
        assert orjson.loads((tmp_path / "upbit" / "pending.json").read_bytes()) == []
        (result,) = sched.results
        assert (result.symbol, result.detected, result.error) == ("CP", True, None)

    asyncio.run(main())


def test_late_detection_extracts_at_once(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)

    async def main() -> None:
        sched = scheduler(tmp_path, rec)
        t_us = int((time.time() - 13) * S)
        started = time.time()
        sched.add(firing("0G", t_us))
        await sched.idle()
        assert rec.calls[0]["at"] - started < 0.5

    asyncio.run(main())


def test_restart_between_detection_and_extraction_still_extracts(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    t_us = int(time.time() * S)

    async def first_run() -> None:
        sched = scheduler(tmp_path, rec)
        sched.add(firing("TIA", t_us, nid=11))
        await asyncio.sleep(0.05)
        await sched.close()

    asyncio.run(first_run())
    assert rec.calls == []
    saved = orjson.loads((tmp_path / "upbit" / "pending.json").read_bytes())
    assert [(p["symbol"], p["trigger_us"]) for p in saved] == [("TIA", t_us)]

    async def second_run() -> None:
        sched = scheduler(tmp_path, rec)
        assert [key[:2] for key in sched.pending] == [("TIA", t_us)]
        sched.start()
        await sched.idle()

    asyncio.run(second_run())
    (call,) = rec.calls
    assert (call["symbol"], call["trigger_us"], call["source"]["notice_id"]) == ("TIA", t_us, 11)
    assert call["at"] >= t_us / S + 0.5
    assert orjson.loads((tmp_path / "upbit" / "pending.json").read_bytes()) == []


def test_failed_extraction_is_retried_and_detector_failure_keeps_the_raw_files(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, fail_first=2, detect_fails=True)

    async def main() -> None:
        sched = scheduler(tmp_path, rec, retry_base_s=0.05)
        sched.add(firing("CRV", int((time.time() - 5) * S)))
        await sched.idle()
        assert len(rec.calls) == 3
        (result,) = sched.results
        assert result.error is None and result.detected is False and result.listing_dir is not None
        assert orjson.loads((tmp_path / "upbit" / "pending.json").read_bytes()) == []

    asyncio.run(main())


def test_several_coins_each_get_their_own_extraction(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)

    async def main() -> None:
        sched = scheduler(tmp_path, rec)
        t_us = int((time.time() - 1) * S)
        for sym in ("PYUSD", "JPYC", "CP"):
            sched.add(firing(sym, t_us))
        await sched.idle()
        assert sorted(c["symbol"] for c in rec.calls) == ["CP", "JPYC", "PYUSD"]
        assert sorted(p.name for p in (tmp_path / "listings").iterdir()) == [
            f"CP_{t_us}",
            f"JPYC_{t_us}",
            f"PYUSD_{t_us}",
        ]

    asyncio.run(main())


def test_damaged_pending_file_and_bad_symbols_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "upbit" / "pending.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        orjson.dumps(
            [{"symbol": "../X", "trigger_us": 1, "due_us": 1}, {"symbol": "OK", "trigger_us": 2, "due_us": 2}]
        )
    )
    sched = scheduler(tmp_path, Recorder(tmp_path))
    assert [key[:2] for key in sched.pending] == [("OK", 2)]
    path.write_bytes(b"[{")
    assert scheduler(tmp_path, Recorder(tmp_path)).pending == {}
