"""Every exception type PumpWatch raises on purpose, in one place.

Three kinds of fault (STYLE.md): a bad frame is counted and skipped (`ParseError`), a network
fault reconnects (handled inside the runner, never raised to the user), and a config, schema,
disk or user-input fault stops loudly with one line (`PumpWatchError` subclasses; the CLI
prints ``str(exc)`` and exits non-zero, never a traceback). A worker process that hits such a
fault exits with `EXIT_FATAL`, which tells its supervisor not to restart it.
"""


class PumpWatchError(Exception):
    """Base of the errors the CLI reports as one line and a non-zero exit."""

    exit_code = 1


class UsageError(PumpWatchError):
    """Bad user input: a time without a zone, an unknown stream, a malformed symbol."""

    exit_code = 2


class ConfigError(PumpWatchError):
    """An unreadable config file, an unknown key, a value of the wrong type."""

    exit_code = 2


class StoreError(PumpWatchError):
    """The on-disk store cannot be read or written (missing data dir, damaged file, disk full)."""

    exit_code = 3


class StreamBusyError(PumpWatchError):
    """A stream is still being recorded by another process (its lock under ``<data_dir>/run/``)."""


class ParseError(ValueError):
    """A frame that is malformed or unexpected. Parsers raise only this; callers count and skip."""


EXIT_FATAL = 78  # EX_CONFIG (sysexits.h)
"""The exit status of a recorder worker that must not be restarted: the fault is one restarting
cannot fix (bad settings or files, a stream locked by another recorder). The supervisor stops
`record` with the same status instead of starting the worker again."""


class NothingMatchedError(PumpWatchError):
    """An extraction found no trade of the symbol in the window on any selected stream (and,
    when raised by `extract()`, no stream's journal names it either: nothing was written)."""

    exit_code = 4
