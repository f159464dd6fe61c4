"""Where the subscription list is: ``recorder.symbols_file`` resolved once when the settings load,
against the config file's directory or the data directory, never the working directory; every
command and the worker read the resolved path."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.settings import load_settings, resolve_symbols_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("symbols_file", "config", "data_dir", "expected"),
    [
        ("/abs/subs.yaml", "/etc/pw/pw.yaml", "data", "/abs/subs.yaml"),
        # the default: beside the config file …
        ("config/symbols.yaml", "/etc/pw/pw.yaml", "data", "/etc/pw/symbols.yaml"),
        ("config/symbols.yaml", "/srv/proj/config/config.yaml", "data", "/srv/proj/config/symbols.yaml"),
        # … or, without one, in config/ beside the data directory (the repository layout)
        ("config/symbols.yaml", None, "/srv/proj/data", "/srv/proj/config/symbols.yaml"),
        # an explicit relative path: against the config file's directory …
        ("subs.yaml", "/etc/pw/pw.yaml", "/var/data", "/etc/pw/subs.yaml"),
        ("lists/subs.yaml", "/etc/pw/pw.yaml", "/var/data", "/etc/pw/lists/subs.yaml"),
        # … except the historical form written relative to the repository (first part = the
        # config directory's own name), which names the same file as before
        ("config/other.yaml", "/srv/proj/config/config.yaml", "data", "/srv/proj/config/other.yaml"),
    ],
)
def test_resolution_rule(symbols_file: str, config: str | None, data_dir: str, expected: str) -> None:
    assert resolve_symbols_file(symbols_file, config, data_dir) == expected


def test_relative_config_and_data_dir_are_taken_from_where_they_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_symbols_file("subs.yaml", "conf/pw.yaml", "data") == str(tmp_path / "conf" / "subs.yaml")
    assert resolve_symbols_file("config/symbols.yaml", None, "data") == str(
        tmp_path / "config" / "symbols.yaml"
    )


def test_settings_hold_the_absolute_path_also_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "conf" / "pw.yaml"
    config.parent.mkdir()
    config.write_text("recorder: {symbols_file: subs.yaml}\n")
    monkeypatch.setenv("PUMPWATCH_CONFIG", str(config))
    monkeypatch.chdir("/")
    assert load_settings().recorder.symbols_file == str(tmp_path / "conf" / "subs.yaml")
    monkeypatch.delenv("PUMPWATCH_CONFIG")
    monkeypatch.setenv("PUMPWATCH_DATA_DIR", str(tmp_path / "proj" / "data"))
    assert load_settings().recorder.symbols_file == str(tmp_path / "proj" / "config" / "symbols.yaml")


def test_the_repository_config_still_names_the_repository_list() -> None:
    settings = load_settings(ROOT / "config" / "config.yaml")
    assert settings.recorder.symbols_file == str(ROOT / "config" / "symbols.yaml")


def _swap_frame(t_ms: int) -> str:
    trade = {"instId": "AAA-USDT-SWAP", "tradeId": "1", "px": "2", "sz": "3", "side": "buy", "ts": str(t_ms)}
    return orjson.dumps(
        {"arg": {"channel": "trades-all", "instId": "AAA-USDT-SWAP"}, "data": [trade]}
    ).decode()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pumpwatch", *args], cwd=cwd, capture_output=True, timeout=60, check=False
    )


def test_normalize_and_reparse_find_the_list_from_any_working_directory(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    write_symbols(
        proj / "config" / "symbols.yaml",
        {"okx_futures": [Instrument("AAA-USDT-SWAP", "AAA", "USDT", multiplier=0.01)]},
    )
    config = proj / "config" / "config.yaml"
    config.write_text("recorder: {symbols_file: config/symbols.yaml}\nlogging: {file: false}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    t_ms = time.time_ns() // 1_000_000
    frames = elsewhere / "frames.txt"
    frames.write_text(_swap_frame(t_ms) + "\n")

    for how in (["--config", str(config)], ["--data-dir", str(proj / "data")]):
        proc = _cli("normalize", "okx_futures", str(frames), *how, cwd=elsewhere)
        assert proc.returncode == 0, proc.stderr
        assert b"no subscription list" not in proc.stderr
        (row,) = [orjson.loads(line) for line in proc.stdout.splitlines()]
        assert (row["symbol"], row["base"], row["qty"]) == ("AAA-USDT-SWAP", "AAA", pytest.approx(0.03))

        # reparse requires the list: it finds it, and finds nothing to rebuild in an empty store.
        hour = (t_ms // 3_600_000) * 3600
        proc = _cli(
            "reparse",
            "--stream",
            "okx_futures",
            "--start",
            str(hour - 7200),
            "--end",
            str(hour - 3600),
            *how,
            "--data-dir",
            str(proj / "data"),
            cwd=elsewhere,
        )
        assert proc.returncode == 0, proc.stderr
        assert b"okx_futures: 0 frames" in proc.stdout


def test_without_the_list_reparse_names_the_resolved_path(tmp_path: Path) -> None:
    proc = _cli(
        "reparse",
        "--stream",
        "okx_futures",
        "--start",
        "1767225600",
        "--end",
        "1767229200",
        "--data-dir",
        str(tmp_path / "d"),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert f"no subscription list at {tmp_path / 'config' / 'symbols.yaml'}".encode() in proc.stderr
