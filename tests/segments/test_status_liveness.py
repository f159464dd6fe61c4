"""`pumpwatch status` judges liveness from the journal's last sign of life, with the same bound
as coverage's open tail (`liveness_bound_us`), and a crashed run's coverage ends at the newest
trade it got on disk (``crashed`` with ``durable_us``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import pumpwatch.segments.status as status_mod
from pumpwatch.cli.app import app
from pumpwatch.segments.coverage import TAIL_HEARTBEATS, coverage_from_events, liveness_bound_us, state_events
from pumpwatch.segments.journal import encode_event, journal_path
from pumpwatch.segments.status import store_status
from pumpwatch.timeunits import US_PER_S as S

NOW = 1_773_145_800 * S  # 2026-03-10T12:30:00Z
HB = 10.0  # heartbeat, s


def ev(ts: int, event: str, conn: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"ts": ts, "event": event, "conn": conn, **fields}


def listening_run(t0: int, last_alive: int) -> list[dict[str, Any]]:
    return [
        ev(t0, "start", pid=11),
        ev(t0 + 1, "connected", "c1", url="ws://x"),
        ev(t0 + 2, "subscribed", "c1", symbols=["AUSDT"], bases=["A"]),
        ev(last_alive, "alive"),
    ]


def write_journal(data_dir: Path, stream: str, events: list[dict[str, Any]]) -> None:
    path = journal_path(data_dir, stream)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(encode_event(e) for e in events))


def entry(data_dir: Path, stream: str = "binance_spot") -> dict[str, Any]:
    status = store_status(data_dir, now_us=NOW, heartbeat_s=HB, free_bytes=lambda p: 0)
    return dict(status["streams"][stream])


def test_one_bound_for_coverage_tail_and_status() -> None:
    assert liveness_bound_us(HB) == TAIL_HEARTBEATS * HB * S


def test_heard_from_within_the_bound_is_connected_with_its_age(tmp_path: Path) -> None:
    write_journal(tmp_path, "binance_spot", listening_run(NOW - 600 * S, NOW - 3 * S))
    s = entry(tmp_path)
    assert s["liveness"] == "connected" and s["connected_now"] is True
    assert s["last_sign_of_life_age_s"] == 3.0
    assert s["liveness_bound_s"] == TAIL_HEARTBEATS * HB


def test_silent_past_the_bound_while_recording_is_stale_not_connected(tmp_path: Path) -> None:
    bound_s = TAIL_HEARTBEATS * HB
    write_journal(tmp_path, "binance_spot", listening_run(NOW - 600 * S, NOW - int((bound_s + 1) * S)))
    s = entry(tmp_path)
    assert s["liveness"] == "stale" and s["connected_now"] is False and s["connections_now"] == 0
    assert s["last_sign_of_life_age_s"] == bound_s + 1
    # and coverage's open tail stops at the same bound: the silence past it is a gap
    last = NOW - int((bound_s + 1) * S)
    assert s["gaps_24h"][-1] == [last + int(bound_s * S), NOW]


def test_a_clean_stop_is_stopped_not_stale(tmp_path: Path) -> None:
    events = [*listening_run(NOW - 600 * S, NOW - 100 * S), ev(NOW - 99 * S, "stop", pid=11)]
    write_journal(tmp_path, "binance_spot", events)
    assert entry(tmp_path)["liveness"] == "stopped"


def test_alive_but_not_subscribed_is_not_listening(tmp_path: Path) -> None:
    write_journal(tmp_path, "binance_spot", [ev(NOW - 600 * S, "start", pid=3), ev(NOW - 2 * S, "alive")])
    assert entry(tmp_path)["liveness"] == "not listening"
    assert entry(tmp_path, "okx_spot")["liveness"] is None  # no journal


def test_status_prints_the_stale_stream_with_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_journal(tmp_path, "binance_spot", listening_run(NOW - 600 * S, NOW - 45 * S))
    write_journal(tmp_path, "okx_spot", listening_run(NOW - 600 * S, NOW - 3 * S))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recorder:\n  heartbeat: 10s\n")
    real = status_mod.store_status
    monkeypatch.setattr(status_mod, "store_status", lambda *a, **k: real(*a, **{**k, "now_us": NOW}))
    out = CliRunner().invoke(app, ["status", "--config", str(cfg), "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    row = next(line for line in lines if line.startswith("binance_spot"))
    assert row.split()[1] == "no"
    assert any(line.startswith("okx_spot") and line.split()[1] == "yes" for line in lines)
    assert "binance_spot: stale: no heartbeat for 45s (> 3 x heartbeat = 30s): recorder not running?" in lines
    assert any(line.startswith("connected: heard from 3s ago at most") for line in lines)


# ---- the crash bound in coverage -------------------------------------------------------------


def crashed_journal(durable_us: int, death_notice: int) -> list[dict[str, Any]]:
    t0 = NOW - 600 * S
    return [
        *listening_run(t0, NOW - 300 * S),
        ev(death_notice, "gap_start", reason="worker binance (pid 11) exited with code -9"),
        ev(NOW - 200 * S, "crashed", durable_us=durable_us, pid=11),
        ev(NOW - 200 * S + 1, "start", pid=12),
        ev(NOW - 199 * S, "connected", "c2", url="ws://x"),
        ev(NOW - 198 * S, "subscribed", "c2", symbols=["AUSDT"], bases=["A"]),
        ev(NOW - S, "alive"),
    ]


def test_a_crashed_run_listens_until_its_newest_trade_on_disk_not_the_death_notice() -> None:
    durable = NOW - 302 * S  # the last flush came before the last heartbeat
    events = crashed_journal(durable, NOW - 290 * S)
    for evs in (events, state_events(events)):
        cov = coverage_from_events(evs, NOW - 500 * S, NOW, base="A", heartbeat_s=HB, now_us=NOW)
        assert cov.gaps == [(durable, NOW - 198 * S)]


def test_a_crash_bound_after_the_last_heartbeat_extends_to_it() -> None:
    durable = NOW - 295 * S  # flushes after the last heartbeat, no death notice (all killed)
    events = [e for e in crashed_journal(durable, 0) if e["event"] != "gap_start"]
    cov = coverage_from_events(events, NOW - 500 * S, NOW, heartbeat_s=HB, now_us=NOW)
    assert cov.gaps == [(durable, NOW - 198 * S)]


def test_a_crash_bound_before_a_reconnect_clips_every_span_of_that_run() -> None:
    t0 = NOW - 600 * S
    events = [
        *listening_run(t0, NOW - 450 * S),
        ev(NOW - 400 * S, "disconnected", "c1", reason="x"),
        ev(NOW - 399 * S, "subscribed", "c3", symbols=["AUSDT"], bases=["A"]),
        ev(NOW - 300 * S, "alive"),
        ev(NOW - 200 * S, "crashed", durable_us=NOW - 420 * S, pid=11),
        ev(NOW - 200 * S + 1, "start", pid=12),
    ]
    cov = coverage_from_events(events, NOW - 500 * S, NOW - 250 * S, heartbeat_s=HB, now_us=NOW)
    assert cov.gaps == [(NOW - 420 * S, NOW - 250 * S)]
