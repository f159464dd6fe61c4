"""`pumpwatch status` and `pumpwatch prune`: in-process with CliRunner, and as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from pumpwatch.cli import app
from pumpwatch.errors import StoreError
from pumpwatch.segments.journal import EventJournal
from pumpwatch.timeunits import US_PER_HOUR as HOUR_US

runner = CliRunner()
PUMPWATCH = Path(sys.executable).with_name("pumpwatch")


def _now_us() -> int:
    return time.time_ns() // 1000


def _segment(data_dir: Path, stream: str, start_us: int, size: int = 1000) -> Path:
    from datetime import UTC, datetime

    exchange, market = stream.split("_")
    t = datetime.fromtimestamp(start_us // 1_000_000, UTC)
    path = data_dir / "segments" / f"exchange={exchange}" / f"market={market}" / f"date={t:%Y-%m-%d}"
    path.mkdir(parents=True, exist_ok=True)
    path = path / f"{t:%H%M%S}.arrow"
    path.write_bytes(b"\0" * size)  # retention never opens a file; status reports it unreadable
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    now = _now_us()
    hour = now - now % HOUR_US
    _segment(d, "gate_spot", hour - 10 * 24 * HOUR_US)  # past the 7-day retention
    _segment(d, "gate_spot", hour - HOUR_US)
    _segment(d, "gate_spot", hour)
    j = EventJournal(d, "gate_spot")
    j.start()
    j.subscribed("c1", ["0G_USDT"], ["0G"])
    j.alive()
    return d


def test_status_json(data_dir: Path) -> None:
    result = runner.invoke(app, ["status", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    status = orjson.loads(result.stdout)
    g = status["streams"]["gate_spot"]
    assert (g["files_sealed"], g["files_unreadable"], g["hours_on_disk"], g["bytes"]) == (3, 3, 3, 3000)
    assert (g["trades"], g["trades_last_hour"], g["counters_24h"]) == (0, 0, None)
    assert g["connected_now"] is True
    assert g["recorded"] == "journal"
    assert status["streams"]["okx_spot"]["recorded"] == "never"
    assert status["retention_s"] == 7 * 86400.0
    assert status["frames_retention_s"] == 3 * 86400.0
    assert status["retention"]["retention_s"] == 7 * 86400.0
    assert status["disk"]["floor_bytes"] == 2048 * 2**20
    assert status["data_dir"] == str(data_dir)


def test_status_table_is_aligned(data_dir: Path) -> None:
    result = runner.invoke(app, ["status", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = lines[0]
    assert header.split() == [
        "STREAM",
        "CONN",
        "HOURS",
        "SIZE",
        "TRADES",
        "1H",
        "LAST",
        "TRADE",
        "GAPS",
        "24H",
        "PARSE",
        "ERR",
        "RECONN",
    ]
    rows = {line.split()[0]: line for line in lines[1:13]}
    assert len(rows) == 12
    gate = rows["gate_spot"]
    # right-aligned figure columns end where their header ends, text columns start with theirs
    assert gate[: header.index("HOURS") + len("HOURS")].endswith(" 3")
    assert gate[: header.index("SIZE") + len("SIZE")].endswith("2.9 KiB")
    assert gate[header.index("CONN") :].startswith("yes ")
    assert gate[header.index("GAPS 24H") :].startswith("1 (<1s) ")  # start, then subscribed
    assert gate.endswith(" -       -")  # no stats events yet
    assert rows["okx_spot"].split()[1:5] == ["-", "0", "0", "B"]
    assert "never recorded" in rows["okx_spot"]
    assert lines[13] == ""
    assert lines[14] == f"data dir {data_dir}"
    assert lines[15].startswith("disk: ") and lines[15].endswith(", floor 2.0 GiB")
    assert lines[16].startswith("segments: ") and "of 7d00h retention" in lines[16]
    assert lines[17].startswith("frames: nothing on disk of 3d00h retention")
    assert lines[-1].startswith("0 trades on disk, 0 received in the last hour")


def test_status_table_fits_100_columns_with_the_widest_values(data_dir: Path) -> None:
    from pumpwatch.cli.store_cmds import format_status_table
    from pumpwatch.segments.status import store_status

    status = store_status(data_dir, retention_s=604800.0, frames_retention_s=259200.0, min_free_disk_mb=2048)
    for s in status["streams"].values():
        s.update(
            hours_on_disk=168,
            bytes=1023 * 2**20,  # "1023.0 MiB"
            trades_last_hour=99_999_999,
            last_trade_age_s=99 * 86400.0,
            last_event_us=1,
            counters_24h={"parse_errors": 9_999_999, "reconnects": 999_999},
        )
    status["streams"]["okx_spot"].update(recorded="never")
    status["disk"].update(used_bytes=999 * 2**40, free_bytes=999 * 2**40, below_floor=True)
    status.update(trades=999_999_999_999, trades_last_hour=999_999_999)
    lines = format_status_table(status).splitlines()
    assert "FREE DISK IS BELOW THE FLOOR: retention evicts the oldest files first" in lines
    assert "never recorded" in lines[5]
    assert "99,999,999" in lines[1] and "9,999,999" in lines[1] and "99d00h ago" in lines[1]
    table = lines[: lines.index("")]
    assert max(len(line) for line in table) <= 100, "\n".join(table)
    footer = [line for line in lines[len(table) + 1 :] if not line.startswith("data dir ")]
    assert max(len(line) for line in footer) <= 100, "\n".join(footer)


def test_prune_dry_run_then_prune(data_dir: Path) -> None:
    old = sorted((data_dir / "segments").rglob("*.arrow"))[0]
    dry = runner.invoke(app, ["prune", "--dry-run", "--data-dir", str(data_dir)])
    assert dry.exit_code == 0, dry.output
    assert "would delete segment" in dry.stdout and str(old) in dry.stdout
    assert old.exists()
    real = runner.invoke(app, ["prune", "--json", "--data-dir", str(data_dir)])
    assert real.exit_code == 0, real.output
    report = orjson.loads(real.stdout)
    assert report["dry_run"] is False
    assert report["deleted"]["segment"] == {"files": 1, "bytes": 1000, "evicted_files": 0}
    assert [f["path"] for f in report["files"]] == [str(old)]
    assert not old.exists()
    again = runner.invoke(app, ["prune", "--data-dir", str(data_dir)])
    assert again.stdout.strip().startswith(
        "deleted: 0 segment(s) 0 B, 0 frame file(s) 0 B, 0 journal line(s)"
    )


def test_prune_uses_the_config_file(data_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  retention: 0s\n  min_free_disk_mb: 0\n")
    result = runner.invoke(app, ["prune", "--json", "--config", str(cfg), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    # no retention: every file whose hour has ended goes, except the stream's newest
    assert orjson.loads(result.stdout)["deleted"]["segment"]["files"] == 2


@pytest.mark.parametrize("command", ["status", "prune"])
def test_missing_data_dir_is_a_store_error(tmp_path: Path, command: str) -> None:
    result = runner.invoke(app, [command, "--data-dir", str(tmp_path / "missing")])
    assert isinstance(result.exception, StoreError)
    assert "does not exist" in str(result.exception)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    return subprocess.run([str(PUMPWATCH), *args], capture_output=True, text=True, timeout=120, env=env)


def test_real_process_bad_inputs_give_one_line_and_no_traceback(tmp_path: Path) -> None:
    missing = _run("status", "--data-dir", str(tmp_path / "missing"))
    assert missing.returncode == 3
    assert (
        missing.stderr
        == f"pumpwatch: error: data dir {tmp_path / 'missing'} does not exist (nothing recorded yet?)\n"
    )
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("storage:\n  retention: forever\n")
    cfg = _run("prune", "--config", str(bad_cfg), "--data-dir", str(tmp_path))
    assert cfg.returncode == 2
    assert "Traceback" not in cfg.stderr
    assert cfg.stderr.startswith("pumpwatch: error: storage.retention:")
    assert len(cfg.stderr.strip().splitlines()) == 1


def test_real_process_status_bad_data_dirs_and_options(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    proc = _run("status", "--data-dir", str(a_file))  # refused by the option itself (file_okay=False)
    assert proc.returncode == 2
    assert "is a file" in " ".join(re.sub("[│╭╮╰╯─]", " ", proc.stderr).split())  # typer's box
    assert "Traceback" not in proc.stderr
    proc = _run("status", "--jsn", "--data-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_real_process_status_survives_damaged_files(tmp_path: Path) -> None:
    """Garbage segments, a garbage journal and a torn stats line: figures, never a traceback."""
    d = tmp_path / "data"
    d.mkdir()
    now = _now_us()
    _segment(d, "okx_spot", now - now % HOUR_US)
    (d / "journal").mkdir()
    (d / "journal" / "okx_spot.ndjson").write_bytes(
        b"\x00\xff garbage\n"
        + orjson.dumps({"ts": now - 10_000_000, "event": "start", "conn": None})
        + b"\n"
        + orjson.dumps({"ts": now - 5_000_000, "event": "stats", "conn": None, "parse_errors": 3})
        + b'\n{"ts": 1, "event": "sta'
    )
    proc = _run("status", "--json", "--data-dir", str(d))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    o = orjson.loads(proc.stdout)["streams"]["okx_spot"]
    assert (o["files_unreadable"], o["journal_unreadable_lines"], o["journal_events"]) == (1, 2, 2)
    assert o["counters_24h"]["parse_errors"] == 3
    table = _run("status", "--data-dir", str(d))
    assert table.returncode == 0 and "Traceback" not in table.stderr
    okx = next(line for line in table.stdout.splitlines() if line.startswith("okx_spot "))
    assert okx.split()[-2:] == ["3", "0"]


def test_real_process_status_json(data_dir: Path) -> None:
    proc = _run("status", "--json", "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    assert orjson.loads(proc.stdout)["streams"]["gate_spot"]["files_sealed"] == 3
