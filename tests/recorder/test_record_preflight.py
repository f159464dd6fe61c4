"""`record` refuses bad settings and files before any process starts: one line, non-zero exit.

Both entry points: `pumpwatch record` and the lean ``python -m pumpwatch.recorder.supervisor``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pumpwatch.errors import ConfigError, StoreError
from pumpwatch.recorder import preflight
from pumpwatch.recorder.adapter import Instrument
from pumpwatch.recorder.preflight import build_adapter, check_record
from pumpwatch.recorder.symbols import write_symbols
from pumpwatch.settings import Settings
from pumpwatch.streams import STREAMS

PUMPWATCH = Path(sys.executable).parent / "pumpwatch"

# One option each adapter really has, and a value it refuses.
BAD_VALUES = {
    "binance_spot": ("channel", "bogus"),
    "binance_futures": ("channel", "bogus"),
    "okx_spot": ("channel", "bogus"),
    "okx_futures": ("channel", "bogus"),
    "kucoin_spot": ("max_symbols_per_connection", 0),
    "kucoin_futures": ("max_symbols_per_connection", 1000),
    "gate_spot": ("ping_interval_s", 999),
    "gate_futures": ("ping_interval_s", -1),
    "phemex_spot": ("ping_interval_s", 999),
    "phemex_futures": ("ping_interval_s", -1),
}


@pytest.mark.parametrize("stream", STREAMS)
def test_an_unknown_option_is_refused_on_every_exchange_naming_the_key(stream: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_adapter(stream, {"no_such_option": 1})
    text = str(info.value)
    assert text.startswith(f"streams.{stream}.options.no_such_option: unknown option")
    assert "\n" not in text


@pytest.mark.parametrize("stream", sorted(BAD_VALUES))
def test_a_bad_option_value_names_the_key(stream: str) -> None:
    key, value = BAD_VALUES[stream]
    with pytest.raises(ConfigError) as info:
        build_adapter(stream, {key: value})
    assert str(info.value).startswith(f"streams.{stream}.options.{key}: ")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "raised",
    [
        ValueError("channel must be 'trade' or 'aggTrade', not 'x'"),
        ConfigError("binance_spot: channel must be 'trade' or 'aggTrade', not 'x'"),
        ConfigError("streams.binance_spot.options.channel: must be 'trade' or 'aggTrade', not 'x'"),
        ConfigError("options.channel: must be 'trade' or 'aggTrade', not 'x'"),
        TypeError("channel: expected a string"),
        KeyError("channel"),
    ],
)
def test_any_factory_error_becomes_one_config_line(
    raised: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The adapters raise ValueError today and ConfigError after their rewrite: both read the same.
    from pumpwatch.recorder import adapters

    real = adapters.get_adapter

    def factory(stream: str, options: Any = None) -> Any:
        if options:
            raise raised
        return real(stream, options)

    monkeypatch.setattr(adapters, "get_adapter", factory)
    with pytest.raises(ConfigError) as info:
        build_adapter("binance_spot", {"channel": "x"})
    assert str(info.value).startswith("streams.binance_spot.options.channel: ")
    assert "\n" not in str(info.value)


def test_check_record_builds_every_enabled_stream_and_reads_the_files(tmp_path: Path) -> None:
    settings = Settings()
    settings.data_dir = str(tmp_path / "data")
    settings.recorder.symbols_file = str(tmp_path / "absent.yaml")  # absent: `record` fetches it
    check_record(settings, STREAMS)
    assert Path(settings.data_dir).is_dir()
    settings.streams["gate_spot"].options = {"bogus": 1}
    settings.streams["gate_spot"].enabled = False  # a disabled stream is not recorded, not built
    check_record(settings, STREAMS)
    settings.streams["gate_spot"].enabled = True
    with pytest.raises(ConfigError, match=r"^streams\.gate_spot\.options\.bogus: "):
        check_record(settings, ["okx_spot", "gate_spot"])
    check_record(settings, ["okx_spot"])  # only the selected streams count
    Path(settings.recorder.symbols_file).write_bytes(b"streams: {okx_spot: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        check_record(settings, ["okx_spot"])


def test_a_data_dir_that_cannot_be_created_is_one_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=r"^data_dir: cannot create "):
        preflight.check_data_dir(str(blocker / "data"))


BINARY = b"\xff\xfe\x00\x01binary\x80\n"
# (config text, or bytes written as they are; symbols file bytes or None for a good one;
# the start of the one error line)
BAD_INPUTS: dict[str, tuple[str | bytes, bytes | None, str]] = {
    "bad_channel": (
        "streams: {binance_spot: {options: {channel: bogus}}}\n",
        None,
        "streams.binance_spot.options.channel: ",
    ),
    "unknown_option": (
        "streams: {bybit_futures: {options: {chanel: trade}}}\n",
        None,
        "streams.bybit_futures.options.chanel: unknown option",
    ),
    "flush_rows_0": ("storage: {flush_rows: 0}\n", None, "storage.flush_rows: must be at least 1"),
    "heartbeat_0": ("recorder: {heartbeat: 0}\n", None, "recorder.heartbeat: must be at least 1s"),
    "status_interval_0": (
        "recorder: {status_interval: 0}\n",
        None,
        "recorder.status_interval: must be at least 1s",
    ),
    "symbols_reload_0": ("recorder: {symbols_reload: 0}\n", None, "recorder.symbols_reload: must be"),
    "binary_config": (BINARY, None, "config "),
    "remote_not_s3": ("remote: {url: 'http://not-s3/x'}\n", None, "remote.url: "),
    "symbols_bad_yaml": ("{}", b"streams: {okx_spot: [\n", "symbols file "),
    "symbols_bad_instrument": (
        "{}",
        b"streams:\n  okx_spot:\n  - {symbol: 'A USDT', base: A, quote: USDT}\n",
        "symbols file ",
    ),
    "symbols_unknown_stream": ("{}", b"streams:\n  ftx_spot: []\n", "symbols file "),
    "symbols_binary": ("{}", BINARY, "symbols file "),
}
STREAMS_ARG = "okx,bybit,binance_spot"
SUFFIX = {
    "binary_config": "is not UTF-8 text (byte 0)",
    "symbols_bad_yaml": "is not valid YAML at line 2",
    "symbols_bad_instrument": "streams.okx_spot[0] is not a valid instrument",
    "symbols_unknown_stream": "unknown stream 'ftx_spot'",
    "symbols_binary": "is not UTF-8 text (byte 0)",
}


def _inputs(tmp_path: Path, case: str) -> tuple[Path, Path]:
    config_text, symbols_bytes, _ = BAD_INPUTS[case]
    data = tmp_path / "data"
    symbols = tmp_path / "symbols.yaml"
    if symbols_bytes is None:
        write_symbols(symbols, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})
    else:
        symbols.write_bytes(symbols_bytes)
    config = tmp_path / "config.yaml"
    if isinstance(config_text, bytes):
        config.write_bytes(config_text)
    else:
        raw = yaml.safe_load(config_text)
        raw.setdefault("recorder", {})["symbols_file"] = str(symbols)
        raw.update({"upbit": {"enabled": False}, "metrics": {"enabled": False}, "symbols": {"refresh": 0}})
        config.write_text(yaml.safe_dump(raw))
    return config, data


def _assert_refused(run: subprocess.CompletedProcess[str], data: Path, case: str, prefix: str) -> None:
    start = BAD_INPUTS[case][2]
    assert run.returncode == 2, run.stderr
    assert run.stderr.count("\n") == 1, run.stderr  # one line, no traceback
    assert run.stderr.startswith(prefix + start), run.stderr
    assert run.stderr.rstrip("\n").endswith(SUFFIX.get(case, "")), run.stderr
    assert "Traceback" not in run.stderr
    assert not (data / "run").exists() and not (data / "journal").exists()  # no worker started


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_record_refuses_bad_input_in_one_line(tmp_path: Path, case: str) -> None:
    config, data = _inputs(tmp_path, case)
    run = subprocess.run(
        [
            str(PUMPWATCH),
            "record",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--streams",
            STREAMS_ARG,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    _assert_refused(run, data, case, "pumpwatch: error: ")


@pytest.mark.parametrize("case", ["bad_channel", "unknown_option", "symbols_binary", "binary_config"])
def test_the_lean_supervisor_refuses_bad_input_in_one_line(tmp_path: Path, case: str) -> None:
    config, data = _inputs(tmp_path, case)
    cmd = [sys.executable, "-m", "pumpwatch.recorder.supervisor", "--config", str(config)]
    run = subprocess.run(
        [*cmd, "--data-dir", str(data), "--streams", STREAMS_ARG],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    _assert_refused(run, data, case, "pumpwatch record: error: ")


def test_normalize_checks_the_options_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("streams: {binance_futures: {options: {bogus: 1}}}\n")
    run = subprocess.run(
        [str(PUMPWATCH), "normalize", "binance_futures", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("pumpwatch: error: streams.binance_futures.options.bogus: unknown option")
    assert run.stderr.count("\n") == 1
