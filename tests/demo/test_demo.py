"""`pumpwatch demo`, shortened: the whole pipeline against the local servers, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from pumpwatch.demo import DEMO_COIN, PUMP_LAGS_S
from pumpwatch.streams import STREAMS


def test_demo_produces_every_listing_file_and_finds_the_pumps(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pumpwatch",
            "demo",
            "--data-dir",
            str(data),
            "--before",
            "4s",
            "--after",
            "4s",
            "--lead",
            "10s",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "12/12 streams" in proc.stdout

    listings = sorted((data / "listings").glob(f"{DEMO_COIN}_*"))
    assert len(listings) == 1, "exactly one automatic extraction"
    listing = listings[0]
    # DESIGN §7: every file.
    for stream in STREAMS:
        assert (listing / "raw" / f"{stream}.json").is_file()
    for name in (
        "metadata.json",
        "raw/trades.parquet",
        "refined/pump_analysis.json",
        "refined/exchange_comparison.json",
        "refined/chart.png",
    ):
        assert (listing / name).is_file(), name

    metadata = json.loads((listing / "metadata.json").read_text())
    assert metadata["symbol"] == DEMO_COIN
    assert metadata["source"]["type"] == "upbit"
    assert metadata["trigger_time_ms"] % 1000 == 0  # Upbit's first_listed_at has whole seconds

    analysis = json.loads((listing / "refined" / "pump_analysis.json").read_text())
    pumped = {f"{e['exchange']}_{e['market_type']}" for e in analysis["pump_events"]}
    # The simulated coin pumps on exactly these streams; the others must not be flagged.
    assert pumped == set(PUMP_LAGS_S)
    for exchange in {s.split("_")[0] for s in pumped}:
        assert (listing / "refined" / f"{exchange}_pumps.json").is_file()

    table = pq.ParquetFile(listing / "raw" / "trades.parquet").read()
    assert set(table.column("base").to_pylist()) == {DEMO_COIN}
    assert not list((data / "segments").rglob("_*.arrow")), "SIGTERM seals every segment"
