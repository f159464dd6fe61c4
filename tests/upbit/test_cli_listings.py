"""`pumpwatch listings`: --file, --json, live against the local server, one-line errors."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pumpwatch.recorder.sim.upbit import UpbitSim, backlog

FIXTURE = Path(__file__).parent.parent / "fixtures" / "upbit" / "announcements_trade.json"


def pumpwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pumpwatch", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_json_lines_from_a_saved_response(tmp_path: Path) -> None:
    proc = pumpwatch("listings", "--file", str(FIXTURE), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["id"] for r in rows] == [6580, 6562, 6560, 6561, 6558, 6555, 6540]
    assert all(list(r) == ["id", "title", "first_listed_at", "krw_listing", "symbols"] for r in rows)
    assert rows[0] == {
        "id": 6580,
        "title": "페이팔유에스디(PYUSD), 제이피와이코인(JPYC) 신규 거래지원 안내 (KRW, BTC, USDT 마켓) "
        "(JPYC 거래지원 개시 시점 추가 변경 안내)",
        "first_listed_at": "2026-09-17T00:48:01Z",
        "krw_listing": True,
        "symbols": ["PYUSD", "JPYC"],
    }
    by_id = {r["id"]: r for r in rows}
    assert (by_id[6561]["krw_listing"], by_id[6561]["symbols"]) == (True, ["BFC"])
    assert (by_id[6555]["krw_listing"], by_id[6555]["symbols"]) == (True, ["CP"])
    for nid in (6562, 6560, 6558, 6540):
        assert (by_id[nid]["krw_listing"], by_id[nid]["symbols"]) == (False, [])


def test_human_output(tmp_path: Path) -> None:
    proc = pumpwatch("listings", "--file", str(FIXTURE), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 7
    assert lines[3].split()[:5] == ["6561", "2026-09-10T04:40:00Z", "KRW", "BFC", "listing"]
    assert lines[1].split()[:5] == ["6562", "2026-09-10T09:30:01Z", "-", "-", "delisting"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"<html>502</html>", "is not an Upbit announcements response"),
        (b'{"success": true, "data": {}}', "is not an Upbit announcements response"),
    ],
)
def test_bad_file_is_one_line_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "resp.json"
    if content is not None:
        path.write_bytes(content)
    proc = pumpwatch("listings", "--file", str(path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def live_sim() -> Iterator[UpbitSim]:
    """The local server on its own event loop thread, so the CLI's asyncio.run can use it."""
    sim = UpbitSim(notices=backlog(int(time.time() * 1e6)))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(sim.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield sim
    asyncio.run_coroutine_threadsafe(sim.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_live_poll_of_the_configured_hosts(tmp_path: Path, live_sim: UpbitSim) -> None:
    live_sim.add_notice("바이프로스트(BFC) KRW, USDT 마켓 디지털 자산 추가", notice_id=7000)
    config = tmp_path / "config.yaml"
    dead = "http://127.0.0.1:9"  # refused: the second host answers
    config.write_text(f"upbit:\n  hosts: [{dead}, {live_sim.url}]\n  timeout: 2s\n", encoding="utf-8")
    proc = pumpwatch("listings", "--config", str(config), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[0]["id"] == 7000 and rows[0]["symbols"] == ["BFC"] and rows[0]["krw_listing"] is True
    assert len(rows) == 7  # the trade-category backlog plus the new notice
    (req,) = live_sim.requests
    assert req.query["category"] == "trade" and "origin" not in req.headers


def test_live_poll_failure_is_one_line(tmp_path: Path, live_sim: UpbitSim) -> None:
    live_sim.fail_next(1, status=429, retry_after_s=5)
    config = tmp_path / "config.yaml"
    config.write_text(f"upbit:\n  hosts: [{live_sim.url}]\n", encoding="utf-8")
    proc = pumpwatch("listings", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"pumpwatch: error: could not read Upbit notices ({live_sim.url}: HTTP 429)"


def test_watch_runs_the_watcher_alone_until_sigterm(tmp_path: Path, live_sim: UpbitSim) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"upbit:\n  hosts: [{live_sim.url}]\n  poll_interval: 100ms\nlogging:\n  file: false\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pumpwatch",
            "listings",
            "--watch",
            "--config",
            str(config),
            "--data-dir",
            "data",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state = tmp_path / "data" / "upbit" / "state.json"
    try:
        deadline = time.monotonic() + 20
        while not state.exists():
            assert time.monotonic() < deadline and proc.poll() is None, (
                proc.stderr.read() if proc.stderr else ""
            )
            time.sleep(0.05)
        while len(live_sim.requests) < 3:  # it keeps polling after the bootstrap
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(json.loads(state.read_text())["seen_ids"]) == sorted(
        n.id for n in live_sim.notices if n.category == "거래"
    )
    assert "bootstrapped" in err and "Traceback" not in err
