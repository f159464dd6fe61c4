"""`pumpwatch verify`: per file ok / DAMAGED with the damaged spans, exit 1 on damage, --json;
and the damage recovery recorded shows in `pumpwatch status`."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
from typer.testing import CliRunner

from pumpwatch.cli import app
from pumpwatch.errors import StoreError, UsageError
from pumpwatch.segments import SegmentWriter, list_segments
from pumpwatch.segments.ipcscan import scan_segment
from pumpwatch.segments.recovery import recover_report
from pumpwatch.segments.schema import TradeRow
from pumpwatch.utctime import format_utc

runner = CliRunner()
S = 1_000_000
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def make_rows(n: int, *, start_us: int) -> list[TradeRow]:
    return [
        (
            start_us + i * 1000,
            start_us + i * 1000 + 500,
            "0GUSDT",
            "0G",
            "USDT",
            1.0 + i / 64,
            2.0,
            "buy",
            str(i),
        )
        for i in range(n)
    ]


def _store(data_dir: Path, *, damage: bool, seal: bool = True) -> list[list]:
    """binance_spot: one hour of 3 one-second batches (sealed or left open), okx_spot one clean
    sealed hour; with `damage`, 16 bytes of binance_spot's second batch are flipped."""
    flushes = [make_rows(20, start_us=T0_US + k * S) for k in range(3)]
    w = SegmentWriter(data_dir, "binance_spot", fsync=False)
    for rows in flushes:
        w.append(rows)
        w.flush()
    path = w.current_path
    assert path is not None
    raw = path.read_bytes()
    w.close()
    with SegmentWriter(data_dir, "okx_spot", fsync=False) as other:
        other.append(make_rows(10, start_us=T0_US + 2 * 3600 * S))
    if damage:
        chunk = scan_segment(pa.py_buffer(raw)).batches[1]
        b = bytearray(raw)
        for i in range(chunk.body_start + 8, chunk.body_start + 24):
            b[i] ^= 0x5A
        raw = bytes(b)
    if not seal:
        (sealed,) = list_segments(data_dir, ["binance_spot"])
        sealed.path.unlink()
        path.write_bytes(raw)  # as a crash would leave it
    else:
        assert not damage  # sealed damage is made through recovery in the tests below
    return flushes


def test_verify_a_clean_store_exits_0(tmp_path: Path) -> None:
    _store(tmp_path, damage=False)
    result = runner.invoke(app, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("ok ") for line in lines[:2])
    assert lines[-1].endswith("no damage found")


def test_verify_names_the_damaged_batch_and_exits_1(tmp_path: Path) -> None:
    flushes = _store(tmp_path, damage=True, seal=False)
    result = runner.invoke(app, ["verify", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    lo, hi = min(r[0] for r in flushes[1]), max(r[0] for r in flushes[1])
    assert f"damaged {format_utc(lo)} .. {format_utc(hi)} (20 rows)" in result.stdout
    assert result.stdout.startswith("DAMAGED ")
    assert "DAMAGE in 1 file(s)" in result.stdout

    as_json = runner.invoke(app, ["verify", "--json", "--data-dir", str(tmp_path)])
    assert as_json.exit_code == 1
    report = orjson.loads(as_json.stdout)
    assert (report["ok"], report["files"], report["files_damaged"]) == (False, 2, 1)
    (bad,) = [f for f in report["file_verdicts"] if f["status"] == "damaged"]
    assert (bad["stream"], bad["sealed"], bad["batches"], bad["batches_ok"]) == ("binance_spot", False, 3, 2)
    assert [(d["time_min_us"], d["time_max_us"], d["rows"]) for d in bad["damaged"]] == [(lo, hi, 20)]

    # the range and stream filters: okx_spot alone is clean
    only_okx = runner.invoke(app, ["verify", "--streams", "okx", "--data-dir", str(tmp_path)])
    assert only_okx.exit_code == 0, only_okx.output
    later = runner.invoke(
        app, ["verify", "--start", str(T0_US + 3600 * S), "--end", str(T0_US + 3 * 3600 * S),
              "--data-dir", str(tmp_path)],
    )  # fmt: skip
    assert later.exit_code == 0, later.output

    # after recovery the damage is recorded in the sealed file: still reported, still exit 1
    assert recover_report(tmp_path).batches_damaged == 1
    after = runner.invoke(app, ["verify", "--json", "--data-dir", str(tmp_path)])
    assert after.exit_code == 1
    (bad,) = [f for f in orjson.loads(after.stdout)["file_verdicts"] if f["status"] == "damaged"]
    assert bad["sealed"] and [(d["time_min_us"], d["time_max_us"]) for d in bad["damaged"]] == [(lo, hi)]

    status = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 0, status.output
    note = "DAMAGED (rows left out, see `pumpwatch verify`): binance_spot 1 batches in 1 files"
    assert note in status.stdout
    status_json = orjson.loads(runner.invoke(app, ["status", "--json", "--data-dir", str(tmp_path)]).stdout)
    b = status_json["streams"]["binance_spot"]
    assert (b["files_damaged"], b["batches_damaged"], b["trades"]) == (1, 1, 40)


def test_verify_bad_input(tmp_path: Path) -> None:
    """One line and exit 2 (a time without a zone) or 3 (no data dir) from `main`: never 1,
    which means damage."""
    _store(tmp_path, damage=False)
    result = runner.invoke(app, ["verify", "--start", "2026-01-01T00:00:00", "--data-dir", str(tmp_path)])
    assert isinstance(result.exception, UsageError) and result.exception.exit_code == 2
    missing = runner.invoke(app, ["verify", "--data-dir", str(tmp_path / "nope")])
    assert isinstance(missing.exception, StoreError) and missing.exception.exit_code == 3
