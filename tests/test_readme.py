"""The README's promises, executed: the research cookbook runs, and the first screen's
set-up command works on a fresh clone (in CI, where a clean machine is the point)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pumpwatch.detector import run_detector
from pumpwatch.extractor import extract
from pumpwatch.recorder.sim.market import MarketSpec, PumpSpec, write_store
from pumpwatch.settings import PumpSettings
from pumpwatch.timeunits import US_PER_S

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
T_US = 1_767_614_400_000_000  # 2026-01-05T12:00:00Z, the time the cookbook snippets use


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_first_screen_has_exactly_the_two_commands() -> None:
    first = _blocks("bash")[0].strip().splitlines()
    commands = [line.split("#")[0].strip() for line in first]
    assert commands == ["bash scripts/setup.sh && .venv/bin/pumpwatch demo", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec bash scripts/test.sh" in ci  # CI runs exactly the README's test command


@pytest.fixture(scope="module")
def cookbook_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cookbook")
    data = root / "data"
    spec = MarketSpec(
        seed=3,
        start_us=T_US - 60 * US_PER_S,
        duration_s=120.0,
        trades_per_s=30.0,
        bases=("0G", "BTC", "ZRO"),
        pumps=(PumpSpec("0G", T_US + 2 * US_PER_S, 8.0, 1.0, streams=("okx_spot", "binance_futures")),),
    )
    write_store(data, spec)
    listing = extract(data, "0G", T_US, before_s=20.0, after_s=20.0)
    run_detector(
        listing, PumpSettings(window_s=1.0, threshold_percent=3.0, min_volume_ratio=2.0), chart=False
    )
    return root


def test_research_cookbook_snippets_run(cookbook_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snippets = _blocks("python")
    assert len(snippets) >= 3
    monkeypatch.chdir(cookbook_dir)
    namespace: dict[str, object] = {}
    for code in snippets:
        exec(compile(code, "README.md", "exec"), namespace)
    zero_g = namespace["zero_g"]
    assert zero_g.num_rows > 0 and set(zero_g.column("base").to_pylist()) == {"0G"}  # type: ignore[attr-defined]
    df = namespace["df"]
    assert len(df) > 0 and set(df["exchange"]) == {"okx"}  # type: ignore[arg-type]
    per_day = namespace["per_day"]
    assert set(per_day["exchange"]) == {"binance", "bybit", "okx", "kucoin", "gate", "phemex"}  # type: ignore[index]
    window = namespace["window"]
    assert len(window) > 0 and window["time"].min().value // 1000 >= T_US - 20 * US_PER_S  # type: ignore[index]
    events = namespace["events"]
    streams = {f"{e}_{m}" for e, m in zip(events["exchange"], events["market_type"], strict=True)}  # type: ignore[index]
    assert streams == {"okx_spot", "binance_futures"}
    assert len(namespace["ranges"]) == 12  # type: ignore[arg-type]


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
