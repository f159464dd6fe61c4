"""Logging for every PumpWatch process: console plus a rotated file under ``<data_dir>/logs/``.

Each line carries the UTC time, the process name (``supervisor``, ``worker-binance`` …), the
level and the logger; the recorder puts the stream and connection id into its messages. Each
process writes its own file (``<process_name>.log``) because several processes rotating one
file would lose lines.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import time
from pathlib import Path

from pumpwatch.errors import ConfigError
from pumpwatch.settings import Settings

LINE_FORMAT = "%(asctime)s.%(msecs)03dZ %(procname)s[%(process)d] %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
_PROCESS_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MARK = "_pumpwatch_handler"


class _ProcessNameFilter(logging.Filter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def filter(self, record: logging.LogRecord) -> bool:
        record.procname = self.process_name
        return True


class _LogFile(logging.handlers.RotatingFileHandler):
    """The rotated log file; a full disk costs it its lines (the console keeps them), noted
    once per spell on stderr, instead of a ``--- Logging error ---`` traceback per line."""

    _failing = False
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if self._failing and not self._failed_now:
            self._failing = False
            sys.stderr.write(f"pumpwatch: log file {self.baseFilename} is writable again\n")

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._failed_now = True
        if not self._failing:
            self._failing = True
            sys.stderr.write(
                f"pumpwatch: log file {self.baseFilename} not writable ({exc}); "
                "its lines go to the console only until it is\n"
            )


def _formatter() -> logging.Formatter:
    fmt = logging.Formatter(LINE_FORMAT, DATE_FORMAT)
    fmt.converter = time.gmtime  # UTC, like every time on disk
    return fmt


def setup_logging(
    settings: Settings, process_name: str, *, console: bool = True, to_file: bool | None = None
) -> Path | None:
    """Configure the root logger once for this process; returns the log file path (or None).

    `to_file` overrides ``logging.file`` (one-shot commands log to the console only).

    Calling it again replaces the handlers it added before (not other libraries' handlers).
    """
    if not _PROCESS_NAME_RE.fullmatch(process_name):
        raise ConfigError(f"bad process name for logging: {process_name!r}")
    level_name = settings.logging.level.upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        raise ConfigError(f"logging.level: unknown level {settings.logging.level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _MARK, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    name_filter = _ProcessNameFilter(process_name)
    handlers: list[logging.Handler] = []
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    log_path: Path | None = None
    if settings.logging.file if to_file is None else to_file:
        log_dir = settings.data_path / "logs"
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create log directory {log_dir}: {exc.strerror or exc}") from None
        log_path = log_dir / f"{process_name}.log"
        handlers.append(
            _LogFile(
                log_path,
                maxBytes=settings.logging.max_bytes,
                backupCount=settings.logging.backups,
                encoding="utf-8",
            )
        )
    for handler in handlers:
        handler.setFormatter(_formatter())
        handler.addFilter(name_filter)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    # websockets logs every failed handshake and keep-alive at INFO; our runner logs state changes.
    logging.getLogger("websockets").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
    logging.getLogger("httpcore").setLevel(max(level, logging.WARNING))
    return log_path
