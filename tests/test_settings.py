"""Settings: the shipped config.yaml equals the built-in defaults; bad files stop with one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pumpwatch.errors import ConfigError
from pumpwatch.settings import Settings, load_settings, parse_duration

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_config_is_the_builtin_defaults() -> None:
    assert load_settings(ROOT / "config" / "config.yaml") == Settings()


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
