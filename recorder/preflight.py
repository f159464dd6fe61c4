"""What `record` checks before any process starts: everything a worker would otherwise only
discover after it was started, and then again after every restart.

- every selected adapter is built with its ``streams.<stream>.options`` (an unknown key or a bad
  value names the key: ``streams.binance_spot.options.channel: …``);
- the subscription list (``recorder.symbols_file``), when it exists, reads and validates;
- the data directory can be created and written.

Both record entry points run it: `pumpwatch record` in its own process before it becomes the
supervisor, and ``python -m pumpwatch.recorder.supervisor`` as the child
``python -m pumpwatch.recorder.preflight`` (building the adapters loads pyarrow, which the
always-on supervisor must not hold). A fault is one `PumpWatchError` line and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.errors import ConfigError, PumpWatchError, StoreError
from pumpwatch.settings import Settings

if TYPE_CHECKING:
    from pumpwatch.recorder.adapter import Adapter


def _option_error(stream: str, options: Mapping[str, Any], exc: Exception) -> ConfigError:
    """`exc` from an adapter factory as one line that names ``streams.<stream>.options[.key]``."""
    where = f"streams.{stream}.options"
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if text.startswith(where):
        return ConfigError(text)
    if text.startswith("options."):  # named relative to the stream's settings
        return ConfigError(f"streams.{stream}.{text}")
    for prefix in (f"{stream}: ", f"{stream.split('_', 1)[0]}: "):
        text = text.removeprefix(prefix)
    named = [key for key in options if str(key) in text] or list(options)
    if len(named) == 1:
        where = f"{where}.{named[0]}"
    return ConfigError(f"{where}: {text or type(exc).__name__}")


def build_adapter(stream: str, options: Mapping[str, Any]) -> Adapter:
    """The adapter of `stream` built with `options`; any fault in them is a `ConfigError`.

    Unknown keys are refused here for every exchange alike (the adapter's own defaults say
    which keys it has), before the adapter sees the values.
    """
    from pumpwatch.recorder.adapters import get_adapter

    try:
        known = getattr(get_adapter(stream, {}), "default_options", None)
        if known is not None:
            unknown = sorted(str(k) for k in options if k not in known)
            if unknown:
                listed = ", ".join(sorted(known)) or "none"
                raise ConfigError(
                    f"streams.{stream}.options.{unknown[0]}: unknown option (known here: {listed})"
                )
        return get_adapter(stream, options)
    except (ConfigError, ValueError, TypeError, KeyError) as exc:  # ValueError: adapters before ConfigError
        raise _option_error(stream, options, exc) from None


def check_symbols_file(path: str | os.PathLike[str]) -> None:
    """Validate the subscription list when it exists (an absent one is fetched by `record`)."""
    from pumpwatch.recorder.symbols import load_symbols_file

    if Path(path).exists():
        load_symbols_file(path)


def check_data_dir(data_dir: str) -> None:
    """The data root exists (created if need be) and is writable."""
    path = Path(data_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"data_dir: cannot create {path}: {exc.strerror or exc}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"data_dir: {path} is not a writable directory")


def check_record(settings: Settings, streams: Sequence[str]) -> None:
    """Everything `record` of `streams` needs, checked now; raises one `PumpWatchError`."""
    for stream in streams:
        if settings.streams[stream].enabled:
            build_adapter(stream, settings.streams[stream].options)
    check_symbols_file(settings.recorder.symbols_file)
    check_data_dir(settings.data_dir)
    from pumpwatch.segments.remote import remote_settings

    remote_settings(settings)  # a bad `remote:` block (url, recorder id…) is a ConfigError now


def preflight_command(
    config: str | os.PathLike[str] | None, data_dir: str, streams: Sequence[str]
) -> list[str]:
    """The argv that runs `check_record` in a child process."""
    cmd = [sys.executable, "-m", "pumpwatch.recorder.preflight", "--data-dir", data_dir]
    cmd += ["--streams", ",".join(streams)]
    if config is not None:
        cmd += ["--config", str(Path(config).absolute())]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pumpwatch.recorder.preflight``: exit 0, or one line on stderr and the error's code."""
    import argparse

    from pumpwatch.settings import load_settings
    from pumpwatch.streams import parse_streams

    parser = argparse.ArgumentParser(prog="pumpwatch-preflight", description="Check what `record` needs.")
    parser.add_argument("--config", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--streams", default=None)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config, args.data_dir)
        chosen = parse_streams(args.streams if args.streams is not None else settings.recorder.streams)
        check_record(settings, chosen)
    except PumpWatchError as exc:
        sys.stderr.write(f"pumpwatch record: error: {exc}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
