"""The TIME argument, one parser for every command (`pumpwatch.utctime`): the forms it reads,
and every implausible input refused by `extract`, `reparse` and `normalize --recv-time` with one
line, exit code 2 and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pumpwatch.errors import UsageError
from pumpwatch.timeunits import US_PER_S as S
from pumpwatch.utctime import EARLIEST_US, LATEST_US, check_time_us, format_utc, parse_time_us

T = 1_767_258_060 * S  # 2026-01-01T09:01:00Z
PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")

BAD_TIMES = {
    "no zone": ("2026-01-01T09:01:00", "no time zone"),
    "date only": ("2026-01-01", "no time zone"),
    "words": ("soon", "cannot read time"),
    "empty": ("", "cannot read time"),
    "negative": ("-1767258060", "cannot read time"),
    "exponent": ("1.7e12", "cannot read time"),
    "zero": ("0", "not a plausible time"),
    "1970s ms": ("1767258", "not a plausible time"),
    "before 2009": ("1230767999", "not a plausible time"),
    "2100 in ms": ("4102444800000", "not a plausible time"),
    "20 digits": ("99999999999999999999", "not a plausible time"),
    "5000 digits": ("9" * 5000, "not a plausible time"),
    "16 nines": ("9999999999999999", "not a plausible time"),
    "year 1": ("0001-01-01T00:00:00+01:00", "not plausible"),
    "year 1 Z": ("0001-01-01T00:00:00Z", "not plausible"),
    "year 9999": ("9999-12-31T23:59:59Z", "not plausible"),
    "year 2008": ("2008-12-31T23:59:59Z", "not plausible"),
    "month 13": ("2026-13-01T00:00:00Z", "cannot read time"),
}


def test_parse_forms() -> None:
    assert parse_time_us("2026-01-01T09:01:00Z") == T
    assert parse_time_us(" 2026-01-01T09:01:00z ") == T
    assert parse_time_us("2026-01-01T18:01:00+09:00") == T
    assert parse_time_us("2026-01-01T09:01:00.000001Z") == T + 1
    # An epoch number: its magnitude tells the unit.
    assert parse_time_us("1767258060") == T
    assert parse_time_us("1767258060250") == T + 250_000
    assert parse_time_us("1767258060250001") == T + 250_001
    assert parse_time_us("1767258060250001999") == T + 250_001
    # the examples: µs (once a traceback: year 58895) and seconds (once read as ms)
    assert parse_time_us("1796396320000000") == 1_796_396_320 * S
    assert parse_time_us("1796396320") == 1_796_396_320 * S
    # The bounds: 2009-01-01 inclusive, 2100-01-01 exclusive.
    assert parse_time_us(str(EARLIEST_US // S)) == EARLIEST_US
    assert parse_time_us("2099-12-31T23:59:59.999999Z") == LATEST_US - 1


@pytest.mark.parametrize(("text", "message"), BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_time_us(text, what="TIME")
    assert str(info.value).startswith("TIME: ") and "\n" not in str(info.value)


def test_check_and_format() -> None:
    assert check_time_us(T) == T
    for bad in (0, -1, EARLIEST_US - 1, LATEST_US, 10**30):
        with pytest.raises(UsageError, match="trigger time is not a plausible time"):
            check_time_us(bad, "trigger time")
    assert format_utc(T) == "2026-01-01T09:01:00Z"
    assert format_utc(T + 250_000) == "2026-01-01T09:01:00.25Z"
    assert format_utc(T + 1) == "2026-01-01T09:01:00.000001Z"


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    return subprocess.run(
        [PUMPWATCH, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd, input=""
    )


def commands(time_text: str, data: Path) -> dict[str, list[str]]:
    """Each command given `time_text` (``--opt=value`` and ``--`` so that ``-1…`` is a value)."""
    d = ["--data-dir", str(data)]
    return {
        "extract": ["extract", *d, "--", "0G", time_text],
        "reparse --start": [
            "reparse",
            *d,
            "--stream",
            "okx_spot",
            f"--start={time_text}",
            "--end",
            "1767258060",
        ],
        "reparse --end": [
            "reparse",
            *d,
            "--stream",
            "okx_spot",
            "--start",
            "1767258060",
            f"--end={time_text}",
        ],
        "normalize --recv-time": ["normalize", *d, f"--recv-time={time_text}", "okx_spot"],
    }


def _one_line_exit_2(proc: subprocess.CompletedProcess[str], message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pumpwatch: error:") and message in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["extract", "reparse --start", "reparse --end", "normalize --recv-time"])
@pytest.mark.parametrize(("text", "message"), BAD_TIMES.values(), ids=BAD_TIMES.keys())
def test_bad_time_is_one_line_exit_2(tmp_path: Path, command: str, text: str, message: str) -> None:
    data = tmp_path / "data"
    (data / "segments").mkdir(parents=True)
    (data / "segments" / "keep").write_bytes(b"x")
    before = snapshot(tmp_path)
    proc = run(*commands(text, data)[command], cwd=tmp_path)
    _one_line_exit_2(proc, message)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("option", ["--before", "--after"])
def test_window_past_the_plausible_range_is_refused(tmp_path: Path, option: str) -> None:
    data = tmp_path / "data"
    (data / "segments").mkdir(parents=True)
    before = snapshot(tmp_path)
    proc = run(
        "extract", "0G", "2026-01-01T09:01:00Z", option, "99999999d", "--data-dir", str(data), cwd=tmp_path
    )
    _one_line_exit_2(proc, "not a plausible time")
    assert snapshot(tmp_path) == before
    assert not (data / "listings").exists()
