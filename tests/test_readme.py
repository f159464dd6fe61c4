"""The README's promises, executed: the research cookbook runs, and the first screen's
set-up command works on a fresh clone (in CI, where a clean machine is the point)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pumpwatch.detector import run_detector
from pumpwatch.extractor import extract
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.segments import SegmentWriter, archive_pending, read_trades
from pumpwatch.settings import PumpSettings
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_HOUR, US_PER_S

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The demo records "now"; so does this store (the archive keeps 90 days). Five minutes before the
# hour, so the ±2 min window of the cookbook stays inside one archived hour.
_NOW_US = time.time_ns() // 1000
T_US = _NOW_US - _NOW_US % US_PER_HOUR - US_PER_HOUR - 5 * 60 * US_PER_S


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_first_screen_has_exactly_the_two_commands() -> None:
    first = _blocks("bash")[0].strip().splitlines()
    commands = [line.split("#")[0].strip() for line in first]
    assert commands == ["bash scripts/setup.sh && .venv/bin/pumpwatch demo", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci  # CI runs exactly the README's test command


@pytest.fixture(scope="module")
def cookbook_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A demo-like store: twelve streams around a 0G listing (sealed, archived by the recorder's
    call, then extracted and detected) and an hour still being written."""
    root = tmp_path_factory.mktemp("cookbook")
    data = root / "data"
    spec = MarketSpec(
        seed=3,
        start_us=T_US - 60 * US_PER_S,
        duration_s=240.0,
        trades_per_s=30.0,
        bases=("0G", "BTC", "ZRO"),
        pumps=(PumpSpec("0G", T_US + 2 * US_PER_S, 8.0, 1.0, streams=("okx_spot", "binance_futures")),),
    )
    write_store(data, spec)
    archive_pending(data)  # what the recorder does after each sealed segment
    open_hour = SegmentWriter(data, "okx_spot", clock_us=lambda: 0)  # the next hour, being written
    later_us = T_US + 6 * 60 * US_PER_S
    open_hour.append([(later_us, later_us, "0G-USDT", "0G", "USDT", 1.0, 2.0, "buy", "o1")])
    open_hour.flush()
    listing = extract(data, "0G", T_US, before_s=20.0, after_s=20.0)
    run_detector(
        listing, PumpSettings(window_s=1.0, threshold_percent=3.0, min_volume_ratio=2.0), chart=False
    )
    yield root
    open_hour.close()


def test_research_cookbook_snippets_run(cookbook_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snippets = _blocks("python")
    assert len(snippets) >= 4
    monkeypatch.chdir(cookbook_dir)
    ns: dict[str, Any] = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), ns)
    assert (ns["coin"], ns["meta"]["trigger_time_us"]) == ("0G", T_US)
    per_stream = ns["per_stream"]
    assert len(per_stream) == 12 and (per_stream["trades"] > 0).all()
    # The archive query agrees with the segments for the same day and coin.
    ohlcv = ns["ohlcv"]
    assert {f"{e}_{m}" for e, m in zip(ohlcv["exchange"], ohlcv["market"], strict=True)} == set(STREAMS)
    lo_us, hi_us = T_US - 120 * US_PER_S, T_US + 120 * US_PER_S
    segments = read_trades("data", lo_us, hi_us, base="0G").to_pandas()
    assert ohlcv["trades"].sum() == len(segments) == ns["around"].num_rows
    bars = segments.assign(second=segments["time"].dt.floor("s")).groupby(["exchange", "market", "second"])
    assert len(ohlcv) == bars.ngroups
    assert sorted(ohlcv["high"].round(12)) == sorted(bars["price"].max().round(12))
    assert sorted(ohlcv["low"].round(12)) == sorted(bars["price"].min().round(12))
    assert abs(ohlcv["volume"].sum() - segments["qty"].sum()) < 1e-6 * segments["qty"].sum()
    by_exchange = ns["by_exchange"]
    assert by_exchange["exchange"].to_list() == sorted(
        {"binance", "bybit", "okx", "kucoin", "gate", "phemex"}
    )
    assert by_exchange["trades"].sum() == len(segments)
    day_us = T_US - T_US % (24 * US_PER_HOUR)
    assert ns["recent"].num_rows == read_trades("data", day_us, 2**62, base="0G").num_rows
    assert "o1" in ns["recent"].column("trade_id").to_pylist()  # the open hour is in
    lag = ns["first_trade_lag_s"]
    assert len(lag) == 12 and (lag >= 0).all() and (lag < 20).all()
    assert set(ns["binance_only"].column("market").to_pylist()) == {"spot", "futures"}
    assert len(ns["trades"]) == len(ns["window"]) > 0
    events = ns["events"]
    streams = {f"{e}_{m}" for e, m in zip(events["exchange"], events["market_type"], strict=True)}
    assert streams == {"okx_spot", "binance_futures"}
    assert len(ns["ranges"]) == 12


@pytest.mark.skipif(
    os.environ.get("CI") != "true" and os.environ.get("PUMPWATCH_README_SETUP") != "1",
    reason="runs in CI (CI=true) or with PUMPWATCH_README_SETUP=1: a fresh clone, a fresh venv, the demo",
)
def test_first_command_on_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # The working tree's current files, so an uncommitted change is what gets tested.
    for rel in subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines():
        src = ROOT / rel
        if src.is_file():
            (clone / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUMPWATCH_", "VIRTUAL_ENV"))}
    command = _blocks("bash")[0].strip().splitlines()[0].split("#")[0].strip()
    command += " --data-dir demo-data"
    proc = subprocess.run(
        ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "12/12 streams" in proc.stdout
    assert list((clone / "demo-data" / "listings").glob("0G_*/refined/pump_analysis.json"))
