"""`pumpwatch remote push` and `pumpwatch remote status` against the local S3 server."""

from __future__ import annotations

from pathlib import Path

import orjson
from helpers.remote_store import BUCKET, S3Server, archive_store, local_files, write_listing, write_segments
from typer.testing import CliRunner

from pumpwatch.cli import app
from pumpwatch.errors import ConfigError

runner = CliRunner()
URL = f"s3://{BUCKET}/cli"


def _args(cmd: str, data_dir: Path, server: S3Server, *more: str) -> list[str]:
    return ["remote", cmd, "--data-dir", str(data_dir), "--url", URL, "--endpoint-url", server.endpoint_url,
            "--recorder-id", "laptop", *more]  # fmt: skip


def test_push_then_status(tmp_path: Path, s3_server: S3Server) -> None:
    write_segments(tmp_path, hours=1)
    archive_store(tmp_path)
    write_listing(tmp_path)

    before = orjson.loads(runner.invoke(app, _args("status", tmp_path, s3_server, "--json")).output)
    assert before["backlog_files"] == len(local_files(tmp_path)) and before["last_upload_us"] is None

    pushed = runner.invoke(app, _args("push", tmp_path, s3_server))
    assert pushed.exit_code == 0, pushed.output
    assert f"uploaded {len(local_files(tmp_path))} file(s); backlog 0" in pushed.output
    after = orjson.loads(runner.invoke(app, _args("status", tmp_path, s3_server, "--json")).output)
    assert after["backlog_files"] == 0 and after["last_upload_us"] is not None
    assert after["recorder_id"] == "laptop" and after["failures"] == 0

    # the store down: push fails with exit 1 and one line; status shows the failure and the backlog
    write_listing(tmp_path, "ABC_20260101T010000Z")
    s3_server.stop()
    failed = runner.invoke(app, _args("push", tmp_path, s3_server))
    assert failed.exit_code == 1 and "failed:" in failed.output
    text = runner.invoke(app, _args("status", tmp_path, s3_server)).output
    assert "backlog 2 file(s)" in text and "FAILING 1 attempt(s) in a row" in text


def test_no_remote_configured_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["remote", "status", "--data-dir", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "no remote store" in str(result.exception)
    result = runner.invoke(app, ["remote", "push", "--data-dir", str(tmp_path), "--url", "http://x/y"])
    assert isinstance(result.exception, ConfigError) and "remote.url: expected s3://" in str(result.exception)
