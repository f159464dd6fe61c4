"""`pumpwatch archive` back-fills the Parquet archive; `pumpwatch --version`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pumpwatch import __version__
from pumpwatch.cli import app
from pumpwatch.recorder.sim.market import MarketSpec, write_store
from pumpwatch.segments import archive_dataset, list_segments, read_trades
from pumpwatch.segments.archive import list_archive
from pumpwatch.timeunits import US_PER_DAY as DAY_US
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US
from pumpwatch.timeunits import US_PER_S as S

runner = CliRunner()
PUMPWATCH = Path(sys.executable).with_name("pumpwatch")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Two hours of all twelve streams, ending an hour ago (inside the 90-day archive retention)."""
    now = time.time_ns() // 1000
    start = now - now % HOUR_US - 3 * HOUR_US
    data = tmp_path / "data"
    spec = MarketSpec(seed=5, start_us=start, duration_s=7200.0, trades_per_s=1.0, bases=("0G", "BTC"))
    write_store(data, spec, flush_every_s=600.0)
    return data


def _hours(data: Path, streams: set[str] | None = None) -> set[tuple[str, int]]:
    return {
        (f.stream, f.start_us - f.start_us % HOUR_US)
        for f in list_segments(data)
        if f.sealed and (streams is None or f.stream in streams)
    }


def test_archive_back_fills_every_sealed_hour_once(data_dir: Path) -> None:
    result = runner.invoke(app, ["archive", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    hours = _hours(data_dir)
    assert len(lines) == 1 and lines[0].startswith(f"archived {len(hours)} hour file(s): ")
    assert {(s, h) for s, h, _p in list_archive(data_dir)} == hours
    assert archive_dataset(data_dir).count_rows() == read_trades(data_dir, 0, 2**62).num_rows
    again = runner.invoke(app, ["archive", "--data-dir", str(data_dir)])
    assert again.exit_code == 0 and again.output.startswith("archived 0 hour file(s)")
    assert f"{len(hours)} already up to date" in again.output


def test_archive_streams_and_since_narrow_the_back_fill(data_dir: Path) -> None:
    result = runner.invoke(app, ["archive", "--data-dir", str(data_dir), "--streams", "binance,okx_spot"])
    assert result.exit_code == 0, result.output
    chosen = {"binance_spot", "binance_futures", "okx_spot"}
    assert {(s, h) for s, h, _p in list_archive(data_dir)} == _hours(data_dir, chosen)
    last_hour = max(h for _s, h in _hours(data_dir))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last_hour // S))
    result = runner.invoke(app, ["archive", "--data-dir", str(data_dir), "--since", since])
    assert result.exit_code == 0, result.output
    built = {(s, h) for s, h, _p in list_archive(data_dir)}
    assert built == _hours(data_dir, chosen) | {(s, h) for s, h in _hours(data_dir) if h == last_hour}
    today = time.strftime("%Y-%m-%d", time.gmtime(last_hour // S))
    result = runner.invoke(app, ["archive", "--data-dir", str(data_dir), "--since", today])
    assert result.exit_code == 0, result.output
    assert {(s, h) for s, h, _p in list_archive(data_dir)} == {
        (s, h) for s, h in _hours(data_dir) if h >= last_hour - last_hour % DAY_US
    } | built


def test_archive_files_open_with_plain_pyarrow(data_dir: Path) -> None:
    runner.invoke(app, ["archive", "--data-dir", str(data_dir), "--streams", "gate_spot"])
    for _s, _h, path in list_archive(data_dir):
        assert pq.read_metadata(path).num_rows > 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--since", "2026-13-01"], 2, "--since: cannot read time"),
        (["--since", "2026-01-01T00:00:00"], 2, "has no time zone"),
        (["--streams", "kraken"], 2, "unknown stream 'kraken'"),
    ],
)
def test_bad_input_is_one_line_and_a_usage_exit(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    proc = subprocess.run(
        [str(PUMPWATCH), "archive", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "archive").exists()


def test_a_missing_data_dir_is_a_store_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(PUMPWATCH), "archive", "--data-dir", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3 and proc.stderr.startswith("pumpwatch: error: data dir ")
    assert not (tmp_path / "nope").exists()


def test_version_flag() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output == f"pumpwatch {__version__}\n"
    proc = subprocess.run([str(PUMPWATCH), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == f"pumpwatch {__version__}\n"
