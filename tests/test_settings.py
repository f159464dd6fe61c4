"""Settings: the shipped config.yaml equals the built-in defaults; bad files stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpwatch.errors import ConfigError
from pumpwatch.settings import Settings, load_settings, parse_duration

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_the_builtin_defaults() -> None:
    expected = Settings()
    expected.recorder.symbols_file = str(ROOT / "config" / "symbols.yaml")  # resolved when loaded
    assert load_settings(ROOT / "config" / "config.yaml") == expected


def test_no_file_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PUMPWATCH_CONFIG", raising=False)
    monkeypatch.delenv("PUMPWATCH_DATA_DIR", raising=False)
    s = load_settings()
    assert s.storage.flush_interval_s == 1.0
    assert s.storage.retention_s == 7 * 86400
    assert s.data_dir == "./data"


def test_durations_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "storage: {flush_interval: 250ms, retention: 2d}\n"
        "pump: {window: 2, threshold_percent: 5}\n"
        "streams: {okx_spot: {ws_url: 'ws://127.0.0.1:1/x'}}\n"
    )
    s = load_settings(cfg, str(tmp_path / "d"))
    assert s.storage.flush_interval_s == 0.25
    assert s.storage.retention_s == 2 * 86400
    assert s.pump.window_s == 2.0 and s.pump.threshold_percent == 5.0
    assert s.streams["okx_spot"].ws_url == "ws://127.0.0.1:1/x"
    assert s.streams["okx_spot"].rest_url == "https://www.okx.com"  # untouched keys keep defaults
    assert s.data_dir == str(tmp_path / "d")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("storage: {flushinterval: 1s}\n", "storage.flushinterval: unknown setting"),
        ("storage: {flush_rows: many}\n", "storage.flush_rows: expected an integer"),
        ("storage: {retention: soon}\n", "storage.retention: expected a duration"),
        ("pump: {window: 0}\n", "pump.window: must be positive"),
        ("streams: {ftx_spot: {}}\n", "unknown stream"),
        ("recorder: {streams: [binance_spot, nope]}\n", "unknown stream 'nope'"),
        ("metrics: [1, 2]\n", "metrics: expected a mapping"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("storage: {flush_interval: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("value", "seconds"), [("500ms", 0.5), ("20s", 20), ("30m", 1800), ("7d", 604800), (3, 3)]
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("storage: {flush_rows: 0}\n", "storage.flush_rows: must be at least 1, got 0"),
        ("storage: {flush_interval: 1ms}\n", "storage.flush_interval: must be at least 10ms, got 0.001"),
        ("storage: {compression_level: 0}\n", "storage.compression_level: must be at least 1, got 0"),
        ("storage: {compression_level: 23}\n", "storage.compression_level: must be at most 22, got 23"),
        ("storage: {queue_warn_rows: 0}\n", "storage.queue_warn_rows: must be at least 1, got 0"),
        ("storage: {min_free_disk_mb: -1}\n", "storage.min_free_disk_mb: must be at least 0, got -1"),
        ("frames: {compression_level: 0}\n", "frames.compression_level: must be at least 1, got 0"),
        ("recorder: {heartbeat: 0}\n", "recorder.heartbeat: must be at least 1s, got 0.0"),
        ("recorder: {status_interval: 0}\n", "recorder.status_interval: must be at least 1s, got 0.0"),
        ("recorder: {symbols_reload: 500ms}\n", "recorder.symbols_reload: must be at least 1s, got 0.5"),
        ("recorder: {backoff_initial: 0}\n", "recorder.backoff_initial: must be at least 10ms, got 0.0"),
        (
            "recorder: {backoff_initial: 5s, backoff_max: 1s}\n",
            "recorder.backoff_max: must be at least recorder.backoff_initial",
        ),
        (
            "recorder: {worker_restart_max: 0}\n",
            "recorder.worker_restart_max: must be at least 100ms, got 0.0",
        ),
        ("recorder: {symbols_file: ''}\n", "recorder.symbols_file: must name a file"),
        ("symbols: {refresh: 5s}\n", "symbols.refresh: must be 0 (never) or at least 1m, got 5 s"),
        ("upbit: {poll_interval: 0}\n", "upbit.poll_interval: must be at least 100ms, got 0.0"),
        ("upbit: {per_page: 0}\n", "upbit.per_page: must be at least 1, got 0"),
        ("upbit: {jitter: 1.5}\n", "upbit.jitter: must be at most 0.9, got 1.5"),
        ("upbit: {timeout: 0}\n", "upbit.timeout: must be at least 100ms, got 0.0"),
        (
            "upbit: {poll_interval: 10s, backoff_max: 1s}\n",
            "upbit.backoff_max: must be at least upbit.poll_interval",
        ),
        ("metrics: {port: 0}\n", "metrics.port: must be at least 1, got 0"),
        ("metrics: {port: 70000}\n", "metrics.port: must be at most 65535, got 70000"),
        ("logging: {level: LOUD}\n", "logging.level: unknown level 'LOUD'"),
        ("logging: {backups: -1}\n", "logging.backups: must be at least 0, got -1"),
        ("pump: {threshold_percent: -1}\n", "pump.threshold_percent: must be at least 0, got -1.0"),
    ],
)
def test_a_value_that_would_spin_a_loop_or_kill_a_worker_is_refused_at_load(
    tmp_path: Path, text: str, line: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value) == line


def test_the_lowest_allowed_values_load(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "storage: {flush_interval: 10ms, flush_rows: 1, compression_level: 1, retention: 0s}\n"
        "recorder: {heartbeat: 1s, status_interval: 1s, symbols_reload: 1s, backoff_initial: 10ms,"
        " backoff_max: 10ms, worker_restart_max: 100ms}\n"
        "symbols: {refresh: 0}\n"
        "upbit: {poll_interval: 100ms, backoff_max: 100ms, jitter: 0, per_page: 1}\n"
    )
    s = load_settings(cfg)
    assert (s.storage.flush_rows, s.recorder.heartbeat_s, s.symbols.refresh_s) == (1, 1.0, 0.0)


def test_a_binary_config_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"storage:\n  flush_rows: \xff\xfe\x00\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value) == f"config {cfg} is not UTF-8 text (byte 23)"
    cfg.write_bytes(b"storage: {flush_rows: 1}\n\x00\x01\x02\n")  # UTF-8, but not YAML
    with pytest.raises(ConfigError, match=r"is not valid YAML") as info:
        load_settings(cfg)
    assert "\n" not in str(info.value)
