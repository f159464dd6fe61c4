"""`normalize`: frames encoded by each simulated exchange come back as the trades they carried."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pumpwatch.recorder.adapter import Adapter, Instrument
from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.recorder.normalize import normalize_lines
from pumpwatch.recorder.sim.instruments import sim_instrument
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.segments.frames import encode_frame
from pumpwatch.segments.schema import TradeRow
from pumpwatch.streams import STREAMS, split_stream


def _available() -> list[str]:
    out = []
    for stream in STREAMS:
        exchange, _ = split_stream(stream)
        try:
            importlib.import_module(f"pumpwatch.recorder.adapters.{exchange}")
            importlib.import_module(f"pumpwatch.recorder.sim.{exchange}")
        except ImportError:
            continue
        out.append(stream)
    return out


AVAILABLE = _available()
T0_US = 1_767_225_600_123_000  # whole milliseconds: every exchange can carry them


def _setup(stream: str) -> tuple[Adapter, dict[str, Instrument], list[TradeRow], list[str]]:
    exchange, market = split_stream(stream)
    sim = importlib.import_module(f"pumpwatch.recorder.sim.{exchange}").sim_protocol(market)
    insts = {i.symbol: i for i in (sim_instrument(stream, "ABC"), sim_instrument(stream, "BTC"))}
    rows: list[TradeRow] = []
    for i, inst in enumerate(sorted(insts.values(), key=lambda x: x.symbol) * 3):
        qty = inst.multiplier * (i + 2) if inst.multiplier != 1.0 else 0.5 * (i + 1)
        side = "buy" if i % 2 else "sell"
        rows.append(
            (
                T0_US + i * 1000,
                T0_US + i * 1000 + 700,
                inst.symbol,
                inst.base,
                "USDT",
                100.25 + i,
                qty,
                side,
                str(5000 + i),
            )
        )
    frames = sim.encode_trades(rows, insts)
    return get_adapter(stream, {}), insts, rows, frames


def _check(got: list[dict[str, object]], rows: list[TradeRow], *, recv_us: list[int] | None) -> None:
    assert len(got) == len(rows)
    by_time = sorted(got, key=lambda d: (d["time"], d["symbol"]))  # type: ignore[arg-type, return-value]
    for i, (g, row) in enumerate(zip(by_time, sorted(rows, key=lambda r: (r[0], r[2])), strict=True)):
        assert list(g) == ["time", "recv_time", "symbol", "base", "quote", "price", "qty", "side", "trade_id"]
        assert g["time"] == row[0]
        if recv_us is not None:
            assert g["recv_time"] == recv_us[i]
        assert (g["symbol"], g["base"], g["quote"], g["side"]) == (row[2], row[3], row[4], row[7])
        assert g["price"] == pytest.approx(row[5], rel=1e-12)
        assert g["qty"] == pytest.approx(row[6], rel=1e-9)
        assert g["trade_id"] in (row[8], None)  # Phemex has no trade id (DESIGN §3)


@pytest.mark.parametrize("stream", AVAILABLE)
def test_raw_frames_normalize_to_the_trades_they_carry(stream: str) -> None:
    adapter, insts, rows, frames = _setup(stream)
    out = io.BytesIO()
    lines = [f.encode() if isinstance(f, str) else f for f in frames] + [b"", b"not json at all", b"{}"]
    report = normalize_lines(adapter, insts, lines, out, clock_us=lambda: T0_US + 1_000_000)
    assert report.trades == len(rows)
    assert report.lines == len(frames) + 2
    assert report.bad_frames + report.controls == 2
    assert report.bad_frames >= 1 and "line" in report.first_error
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    _check(got, rows, recv_us=None)
    assert {g["recv_time"] for g in got} == {T0_US + 1_000_000}


@pytest.mark.parametrize("stream", AVAILABLE)
def test_frame_journal_lines_keep_their_receive_time(stream: str) -> None:
    adapter, insts, rows, frames = _setup(stream)
    lines = [encode_frame(T0_US + 10 * k, f) for k, f in enumerate(frames)]
    out = io.BytesIO()
    report = normalize_lines(adapter, insts, lines, out, clock_us=lambda: T0_US + 1_000_000)
    assert report.trades == len(rows)
    got = [json.loads(line) for line in out.getvalue().splitlines()]
    assert T0_US + 1_000_000 not in {g["recv_time"] for g in got}
    assert {g["recv_time"] for g in got} <= {T0_US + 10 * k for k in range(len(frames))}


@pytest.mark.skipif(not any(s.endswith("futures") for s in AVAILABLE), reason="no futures adapter yet")
def test_cli_normalize_applies_multipliers_from_the_symbols_file(tmp_path: Path) -> None:
    stream = next(s for s in AVAILABLE if s.endswith("futures"))
    _adapter, insts, rows, frames = _setup(stream)
    symbols = tmp_path / "symbols.yaml"
    write_symbols(symbols, {stream: insts.values()})
    config = tmp_path / "config.yaml"
    config.write_text(f"recorder: {{symbols_file: {symbols}}}\nlogging: {{file: false}}\n")
    src = tmp_path / "frames.txt"
    src.write_text("\n".join([*frames, "garbage"]) + "\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pumpwatch",
            "normalize",
            stream,
            str(src),
            "--config",
            str(config),
            "--recv-time",
            str(T0_US // 1000 + 5000),
        ],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = [orjson.loads(line) for line in proc.stdout.splitlines()]
    _check(got, rows, recv_us=None)
    assert {g["recv_time"] for g in got} == {T0_US + 5_000_000}
    assert f"{len(frames) + 1} frames: {len(rows)} trades" in proc.stderr.decode()
    assert "1 bad" in proc.stderr.decode()


def test_cli_normalize_unknown_stream_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pumpwatch", "normalize", "nope_spot", "--data-dir", str(tmp_path)],
        capture_output=True,
        timeout=60,
        input=b"",
    )
    assert proc.returncode == 2
    err = proc.stderr.decode().strip()
    assert "unknown stream 'nope_spot'" in err and "Traceback" not in err and len(err.splitlines()) == 1
