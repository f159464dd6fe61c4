"""`pumpwatch extract` and `pumpwatch detect` as a user runs them: real subprocesses."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pumpwatch.errors import UsageError
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S as S
from pumpwatch.utctime import parse_time_us

START = 1_767_258_000 * S  # 2026-01-01T09:00:00Z
TRIGGER = START + 60 * S  # 09:01:00Z = 18:01:00+09:00
PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """The command with the built-in settings; `extract` without the REST backfill, whose
    default URLs are the real exchanges (tests/test_cli_extract_repair.py covers it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    if args[0] == "extract":
        args = (*args, "--no-backfill")
    return subprocess.run([PUMPWATCH, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    spec = MarketSpec(
        seed=4,
        start_us=START,
        duration_s=120,
        trades_per_s=15,
        bases=("BTC", "0G", "ETH"),
        pumps=(PumpSpec("0G", TRIGGER + 2 * S, 20.0, 2.0),),
    )
    write_store(root, spec, flush_every_s=5.0)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_parse_time_us() -> None:
    utc = parse_time_us("2026-01-01T09:01:00Z")
    assert utc == TRIGGER
    assert parse_time_us("2026-01-01T18:01:00+09:00") == TRIGGER
    assert parse_time_us(str(TRIGGER // 1000)) == TRIGGER
    assert parse_time_us("2026-01-01T09:01:00.250001Z") == TRIGGER + 250_001
    with pytest.raises(UsageError, match="no time zone"):
        parse_time_us("2026-01-01T09:01:00")
    with pytest.raises(UsageError, match="cannot read time"):
        parse_time_us("yesterday")


def test_extract_then_detect_end_to_end(data_dir: Path) -> None:
    proc = run("extract", "0G", "2026-01-01T18:01:00+09:00", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip())
    assert proc.stdout.count("\n") == 1
    assert out == data_dir / "listings" / "0G_20260101T090100Z"
    # stderr: one line per stream, its trades and coverage (this store has no journal)
    *summary, pumps = proc.stderr.splitlines()
    assert [line.split()[0] for line in summary] == list(STREAMS)
    assert all(
        line.endswith("trades  incomplete: 40.0 s missing (no journal, not_attempted)") for line in summary
    )
    # then the pumps found, as `detect` prints them
    assert re.fullmatch(r"\d+ pump event\(s\) on 1[0-2] stream\(s\), max \d+\.\d\d%, first \w+", pumps), pumps
    meta = orjson.loads((out / "metadata.json").read_bytes())
    assert meta["trigger_time_us"] == TRIGGER
    assert meta["window"]["before_s"] == 20.0 and meta["window"]["after_s"] == 20.0
    assert meta["source"] == "manual"
    analysis = orjson.loads((out / "refined" / "pump_analysis.json").read_bytes())
    assert analysis["trigger_time"] == TRIGGER // 1000
    assert analysis["summary"]["total_streams_with_pumps"] >= 10  # the pump runs on all 12 streams
    assert analysis["summary"]["max_price_change"] > 10.0
    assert (out / "refined" / "chart.png").stat().st_size > 10_000

    # The same extraction by epoch ms, without detection: the same directory, refreshed; the
    # refined/ files the first run's detector wrote stay (this run does not rewrite them).
    refined = {p.name: p.read_bytes() for p in (out / "refined").iterdir()}
    again = run("extract", "0g", str(TRIGGER // 1000), "--no-detect", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert Path(again.stdout.strip()) == out
    assert {p.name: p.read_bytes() for p in (out / "refined").iterdir()} == refined
    # --no-chart redraws nothing, and deletes nothing either
    again = run("extract", "0G", str(TRIGGER // 1000), "--no-chart", "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert (out / "refined" / "chart.png").read_bytes() == refined["chart.png"]
    assert (out / "refined" / "pump_analysis.json").read_bytes() == refined["pump_analysis.json"]

    detect = run("detect", str(out), "--threshold-percent", "50", "--window", "500ms", "--no-chart")
    assert detect.returncode == 0, detect.stderr
    assert detect.stdout.splitlines() == [
        "0 pump event(s) on 0 stream(s), max 0.00%, first -",
        str(out / "refined"),
    ]
    params = orjson.loads((out / "refined" / "pump_analysis.json").read_bytes())["parameters"]
    assert params == {"window_s": 0.5, "threshold_percent": 50.0, "min_volume_ratio": 2.0}


def test_before_after_options(data_dir: Path) -> None:
    proc = run("extract", "ETH", "2026-01-01T09:01:00Z", "--before", "5s", "--after", "1500ms", "--no-detect",
               "--data-dir", str(data_dir))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    meta = orjson.loads((Path(proc.stdout.strip()) / "metadata.json").read_bytes())
    assert (meta["window"]["start_us"], meta["window"]["end_us"]) == (TRIGGER - 5 * S, TRIGGER + 1_500_000)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "0G", "2026-01-01T09:01:00"], "no time zone"),
        (["extract", "0G", "soon"], "cannot read time"),
        (["extract", "0g!", "2026-01-01T09:01:00Z"], "malformed symbol"),
        (["extract", "ſ", "2026-01-01T09:01:00Z"], "malformed symbol"),  # upper() would give S
        (["extract", "A" * 21, "2026-01-01T09:01:00Z"], "malformed symbol"),
        (["extract", "../../etc", "2026-01-01T09:01:00Z"], "malformed symbol"),
        (["extract", "0G", "2026-01-01T09:01:00Z", "--before", "ten"], "--before"),
        (["extract", "0G", "2026-01-01T09:01:00Z", "--streams", "binance_perp"], "unknown stream"),
        (["detect", "{data}/segments"], "not a listing directory"),
        (["detect", "{data}", "--window", "0s"], "--window must be positive"),
    ],
)
def test_bad_input_is_one_line_and_touches_nothing(data_dir: Path, args: list[str], message: str) -> None:
    before = snapshot(data_dir)
    argv = [a.replace("{data}", str(data_dir)) for a in args]
    proc = run(*argv, "--data-dir", str(data_dir))
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pumpwatch: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert snapshot(data_dir) == before


def test_missing_data_dir(tmp_path: Path) -> None:
    proc = run("extract", "0G", "2026-01-01T09:01:00Z", "--data-dir", str(tmp_path / "absent"))
    assert proc.returncode == 3
    assert proc.stderr.strip() == f"pumpwatch: error: data directory {tmp_path / 'absent'} does not exist"
    assert not (tmp_path / "absent").exists()


def test_a_symbol_no_stream_recorded_is_exit_4_and_writes_nothing(data_dir: Path) -> None:
    before = snapshot(data_dir)
    proc = run("extract", "zz9", "2026-01-01T09:01:00Z", "--data-dir", str(data_dir))
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("pumpwatch: error: no stream has recorded ZZ9: no trade in ")
    assert line.endswith("and no journal names it; nothing written")
    assert snapshot(data_dir) == before


def test_a_window_without_trades_is_exit_4_with_its_coverage(tmp_path: Path) -> None:
    """A coin a stream's journal knows, but no trade in the window: the listing is written (its
    coverage tells whether anyone was listening), the lines say so, the exit code is 4."""
    from pumpwatch.segments.journal import EventJournal

    data = tmp_path / "data"
    data.mkdir()
    journal = EventJournal(data, "okx_spot")
    journal.record("start", ts_us=START)
    journal.record("connected", conn="c1", ts_us=START + S, url="ws://127.0.0.1")
    journal.record("subscribed", conn="c1", ts_us=START + 2 * S, symbols=["NEW-USDT"], bases=["NEW"])
    journal.record("alive", ts_us=TRIGGER + 30 * S)
    journal.close()
    proc = run("extract", "NEW", "2026-01-01T09:01:00Z", "--streams", "okx", "--data-dir", str(data))
    assert proc.returncode == 4, proc.stderr
    out = Path(proc.stdout.strip())
    assert out == data / "listings" / "NEW_20260101T090100Z"
    lines = proc.stderr.splitlines()
    assert lines[0].split() == ["okx_spot", "0", "trades", "complete"]
    assert lines[-1] == "pumpwatch: no trade of NEW in the window on the selected streams (coverage above)"
    assert orjson.loads((out / "metadata.json").read_bytes())["trades"] == 0
