"""`pumpwatch report` with a shared store (a real S3 server, moto on 127.0.0.1): local and shared
listings are matched by what they are (symbol, trigger time, notice id), not by directory name;
a store that cannot be reached is a warning when it comes from remote.url (the local listings
are still reported) and an error when named with --store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from helpers.remote_store import BUCKET, S3Server
from typer.testing import CliRunner

from pumpwatch.cli import app
from pumpwatch.timeunits import US_PER_S

URL = f"s3://{BUCKET}/shared"
T_US = 1_767_225_600 * US_PER_S  # 2026-01-01T00:00:00Z
NAME = "X_20260101T000000Z"


def metadata(notice: int | None, trades: int) -> bytes:
    source: Any = (
        "manual" if notice is None else {"type": "upbit", "notice_id": notice, "title": f"X #{notice}"}
    )
    return orjson.dumps(
        {"symbol": "X", "trigger_time_us": T_US, "source": source, "trades": trades, "streams": {}}
    )


def put_shared(fs: pafs.FileSystem, name: str, notice: int | None, trades: int) -> None:
    """A shared listing as the assembler leaves it: its data (here an empty table), then its
    metadata (a listing without raw/trades.parquet is skipped as half written)."""
    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"time": pa.array([], pa.int64())}), buf)
    with fs.open_output_stream(f"{BUCKET}/shared/listings/{name}/raw/trades.parquet") as f:
        f.write(buf.getvalue())
    with fs.open_output_stream(f"{BUCKET}/shared/listings/{name}/metadata.json") as f:
        f.write(metadata(notice, trades))


def put_local(data_dir: Path, name: str, notice: int | None, trades: int) -> None:
    d = data_dir / "listings" / name
    d.mkdir(parents=True)
    (d / "metadata.json").write_bytes(metadata(notice, trades))


def report(*args: str) -> Any:
    return CliRunner().invoke(app, ["report", *args, "--json"])


def test_local_and_shared_matched_by_symbol_trigger_and_notice(tmp_path: Path, s3_server: S3Server) -> None:
    """Each recorder numbers colliding names by itself: the store's ``X`` is notice 1 and its
    ``X_2`` notice 2, while this recorder's ``X`` is notice 2 and its ``X_2`` notice 3."""
    fs = s3_server.filesystem()
    put_shared(fs, NAME, 1, 100)
    put_shared(fs, f"{NAME}_2", 2, 200)
    data = tmp_path / "rec"
    put_local(data, NAME, 2, 20)  # the same listing as the store's X_2: read once, from the store
    put_local(data, f"{NAME}_2", 3, 30)  # only here: kept, under another name
    put_local(data, "Y_20260101T000000Z", None, 7)  # a manual one of another symbol
    res = report("--data-dir", str(data), "--store", URL, "--endpoint-url", s3_server.endpoint_url)
    assert res.exit_code == 0, res.output
    listings = orjson.loads(res.stdout)["listings"]
    got = sorted((lst["listing"], lst["source"]["notice_id"], lst["trades"]) for lst in listings)
    assert got == [
        (NAME, 1, 100),
        (f"{NAME}_2", 2, 200),
        (f"{NAME}_2+local", 3, 30),
        ("Y_20260101T000000Z", None, 7),
    ]
    assert "report: 2 shared listing(s) from s3://pumpwatch-test/shared, 2 local only" in res.stderr


def test_unreachable_store_of_the_settings_falls_back_to_local(tmp_path: Path, s3_server: S3Server) -> None:
    data = tmp_path / "rec"
    put_local(data, NAME, 1, 10)
    config = tmp_path / "pumpwatch.yaml"
    config.write_text(f"data_dir: {data}\nremote:\n  url: {URL}\n  endpoint_url: {s3_server.endpoint_url}\n")
    s3_server.stop()
    res = report("--config", str(config))
    assert res.exit_code == 0, res.output
    assert [lst["listing"] for lst in orjson.loads(res.stdout)["listings"]] == [NAME]
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, res.stderr
    assert warnings[0].startswith(f"report: warning: cannot read the shared listings of {URL}: ")
    assert warnings[0].endswith("; reporting the local listings only")
    assert "Traceback" not in res.stderr

    # --store given by name: the store is what was asked for; exit 3 (the console entry point),
    # one error line, nothing written
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pumpwatch"), "report", "--config", str(config), "--store", URL,
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith(f"pumpwatch: error: cannot read the shared listings of {URL}: ")
    assert "warning" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
