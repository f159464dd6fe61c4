"""`pumpwatch extract` fills the window's gaps from REST history first, as a user runs it: a real
subprocess against local exchanges on 127.0.0.1 (their REST history endpoints, counters and
faults), with a store and journal like a recorder leaves them."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import yaml
from helpers.window_world import BASE, END_US, GAP_HI, GAP_LO, START_US, T_US, World, world

from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments

PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")
STREAMS = ("binance_spot", "okx_futures", "gate_spot", "bybit_spot")
WHOLE = STREAMS[:3]  # history reaches back; bybit_spot answers its latest 60 trades only


def write_config(w: World, **repair: Any) -> Path:
    doc: dict[str, Any] = {
        "data_dir": str(w.data_dir),
        "recorder": {"streams": list(w.streams), "symbols_file": w.settings.recorder.symbols_file},
        "streams": {s: {"rest_url": w.exchanges[s].rest_url} for s in w.streams},
        "repair": repair,
        "logging": {"file": False},
        "metrics": {"enabled": False},
    }
    path = w.root / "config.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


async def extract(w: World, *args: str, **repair: Any) -> tuple[int, str, str]:
    """Run ``pumpwatch extract ABC <T> --no-detect`` while the exchanges keep serving."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    proc = await asyncio.create_subprocess_exec(
        PUMPWATCH, "extract", BASE, str(T_US), "--no-detect", "--config", str(write_config(w, **repair)),
        *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def raw(listing: Path, stream: str) -> list[dict[str, Any]]:
    trades: list[dict[str, Any]] = orjson.loads((listing / "raw" / f"{stream}.json").read_bytes())
    return trades


def repair_files(w: World) -> list[Path]:
    return sorted(s.path for s in list_segments(w.data_dir) if ".rest" in s.path.name)


def notes(stderr: str) -> dict[str, str]:
    return {line.split()[1].rstrip(":"): line for line in stderr.splitlines() if line.startswith("repair ")}


def test_extract_repairs_the_gap_once_and_says_so(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, STREAMS) as w:
            w.write_symbols()
            w.record_with_gap()
            code, out, err = await extract(w)
            assert code == 0, err
            assert out.count("\n") == 1  # stdout stays the listing directory alone
            listing = Path(out.strip())
            said = notes(err)
            assert set(said) == set(STREAMS), err
            table = pq.read_table(listing / "raw" / "trades.parquet")
            for stream in WHOLE:
                gap = [r for r in w.window_tape(stream) if GAP_LO <= r[0] < GAP_HI]
                assert f"{stream}: {len(gap)} trade(s) added from REST, 1 span(s) repaired" in said[stream]
                got = Counter(t["trade_id"] for t in raw(listing, stream))
                assert got == Counter(r[8] for r in w.window_tape(stream)), stream  # every trade, once
                exchange, market = stream.split("_")
                mine = [r for r in table.to_pylist() if (r["exchange"], r["market"]) == (exchange, market)]
                assert {r["trade_id"] for r in mine if r["source"] == "rest"} == {r[8] for r in gap}
            assert "1 span(s) still missing (no_history)" in said["bybit_spot"]
            (missing,) = [e for e in read_events(w.data_dir, "bybit_spot") if e["event"] == "unrepaired"]
            assert (missing["start_us"], missing["reason"]) == (GAP_LO, "no_history")

            calls, files = w.requests(), repair_files(w)
            code, again, err = await extract(w)
            assert code == 0 and again == out and notes(err) == {}, err
            assert w.requests() == calls and repair_files(w) == files  # nothing asked, nothing written
            for stream in WHOLE:
                assert Counter(t["trade_id"] for t in raw(listing, stream)) == Counter(
                    r[8] for r in w.window_tape(stream)
                )

    asyncio.run(main())


def test_no_backfill_and_the_setting_make_no_rest_call(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, STREAMS) as w:
            w.write_symbols()
            w.record_with_gap()
            for args, repair in ((("--no-backfill",), {}), ((), {"at_extract": False})):
                code, out, err = await extract(w, *args, **repair)
                assert code == 0, err
                assert notes(err) == {}
                assert w.requests() == 0
                assert repair_files(w) == []
                listing = Path(out.strip())
                for stream in STREAMS:
                    kept = [r for r in w.window_tape(stream) if not GAP_LO <= r[0] < GAP_HI]
                    assert len(raw(listing, stream)) == len(kept)
            assert all(
                e["event"] not in ("repaired", "unrepaired")
                for s in STREAMS
                for e in read_events(w.data_dir, s)
            )

    asyncio.run(main())


def test_extract_before_pumpwatch_was_recording(tmp_path: Path) -> None:
    """An empty data directory and the subscription list: the streams whose history reaches
    back come out whole, from REST alone."""

    async def main() -> None:
        async with world(tmp_path, STREAMS) as w:
            w.write_symbols()
            code, out, err = await extract(w)
            assert code == 0, err
            listing = Path(out.strip())
            for stream in WHOLE:
                trades = raw(listing, stream)
                assert Counter(t["trade_id"] for t in trades) == Counter(r[8] for r in w.window_tape(stream))
                assert trades and min(t["timestamp_us"] for t in trades) >= START_US
                assert max(t["timestamp_us"] for t in trades) <= END_US
                (done,) = [e for e in read_events(w.data_dir, stream) if e["event"] == "repaired"]
                assert (done["start_us"], done["end_us"]) == (START_US, END_US)
            assert raw(listing, "bybit_spot") == []  # its latest 60 trades are after the window

    asyncio.run(main())


def test_an_endless_429_costs_the_deadline_then_extracts(tmp_path: Path) -> None:
    async def main() -> None:
        async with world(tmp_path, STREAMS) as w:
            w.write_symbols()
            w.record_with_gap()
            w.exchanges["okx_futures"].throttle(10**6)
            code, _out, err = await extract(w, extract_deadline="2s")
            assert code == 0, err
            said = notes(err)
            assert "1 span(s) still missing (rate_limited)" in said["okx_futures"], err
            assert "0 trade(s) added" in said["okx_futures"]
            assert "1 span(s) repaired" in said["binance_spot"]  # other exchanges are not held up
            (m,) = [e for e in read_events(w.data_dir, "okx_futures") if e["event"] == "unrepaired"]
            assert (m["start_us"], m["end_us"], m["reason"]) == (GAP_LO, GAP_HI, "rate_limited")
            assert w.exchanges["okx_futures"].history.stats.limited >= 1

    asyncio.run(main())


def test_a_damaged_segment_is_repaired_from_history(tmp_path: Path) -> None:
    """Random bytes over a sealed segment of the window: what cannot be read is a damaged span of
    the stream's coverage, and the extraction-time repair fills it from REST history."""
    import pyarrow as pa

    from pumpwatch.segments.ipcscan import scan_segment
    from pumpwatch.segments.journal import EventJournal
    from pumpwatch.segments.writer import SegmentWriter

    stream = "binance_spot"

    async def main() -> None:
        async with world(tmp_path, (stream,)) as w:
            w.write_symbols()
            inst = w.instrument(stream)
            with SegmentWriter(w.data_dir, stream, fsync=False) as writer:
                writer.append(w.tapes[stream])
            with EventJournal(w.data_dir, stream) as j:  # listening throughout
                j.record("start", ts_us=T_US - 40 * 1_000_000, pid=1)
                j.record("connected", conn="c1", ts_us=T_US - 40 * 1_000_000, url="ws://127.0.0.1")
                j.record(
                    "subscribed", conn="c1", ts_us=T_US - 40 * 1_000_000, symbols=[inst.symbol], bases=[BASE]
                )
                j.record("stop", ts_us=END_US + 1_000_000, pid=1)
            for seg in list_segments(w.data_dir, [stream]):
                with pa.memory_map(str(seg.path)) as mm:
                    first = scan_segment(mm.read_buffer()).batches[0].start
                with open(seg.path, "r+b") as fh:
                    fh.seek(first)
                    fh.write(b"\x00\x01" + os.urandom(64))
            code, out, err = await extract(w, "--streams", stream)
            assert code == 0, err
            listing = Path(out.strip())
            assert Counter(t["trade_id"] for t in raw(listing, stream)) == Counter(
                r[8] for r in w.window_tape(stream)
            )
            cov = orjson.loads((listing / "metadata.json").read_bytes())["streams"][stream]["coverage"]
            assert cov["state"] == "repaired" and cov["missing"] == [], cov
            assert cov["rest_trades"] == len(w.window_tape(stream))

            # without the repair: the same damage reads as missing, reason damaged
            for seg in list_segments(w.data_dir, [stream]):
                if ".rest" in seg.path.name:
                    seg.path.unlink()
            (w.data_dir / "journal" / f"{stream}.ndjson").write_bytes(
                b"".join(
                    orjson.dumps(e) + b"\n"
                    for e in read_events(w.data_dir, stream)
                    if e["event"] not in ("repaired", "unrepaired")
                )
            )
            shutil.rmtree(listing)  # a refresh would keep the trades the listing had (restored)
            code, out, err = await extract(w, "--streams", stream, "--no-backfill")
            assert code == 4, err  # nothing readable in the window
            cov = orjson.loads((Path(out.strip()) / "metadata.json").read_bytes())["streams"][stream][
                "coverage"
            ]
            assert cov["state"] == "incomplete"
            assert {m["reason"] for m in cov["missing"]} == {"damaged"}

    asyncio.run(main())
