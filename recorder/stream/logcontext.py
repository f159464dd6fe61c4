"""Log context bound once: every line about a stream or one of its connections names them.

A `StreamLog` wraps a module's logger with the stream id and, for a connection, its id.
Each record it emits carries them as attributes (``record.stream``, ``record.conn_id``; the
latter None for stream-wide lines) for filters and structured handlers, and its message starts
with ``"<stream>: "`` or ``"<stream> conn <id>: "`` so that the plain log file says the same.
Call sites write only what happened::

    clog = StreamLog(log, "example_spot").conn("0-3")
    clog.info("lost after %.1f s: %s", served_s, reason)
    # -> "example_spot conn 0-3: lost after 12.0 s: closed by server: code 1006"
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any


class StreamLog(logging.LoggerAdapter[logging.Logger]):
    """`logger` bound to `stream` and, optionally, one connection id."""

    def __init__(self, logger: logging.Logger, stream: str, conn_id: str | None = None) -> None:
        super().__init__(logger, {"stream": stream, "conn_id": conn_id})
        self.stream = stream
        self.conn_id = conn_id
        where = stream if conn_id is None else f"{stream} conn {conn_id}"
        self._prefix = where + ": "  # stream and connection ids never hold a "%"

    def conn(self, conn_id: str) -> StreamLog:
        """The same logger and stream, bound to connection `conn_id` as well."""
        return StreamLog(self.logger, self.stream, conn_id)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = kwargs.get("extra")
        kwargs["extra"] = self.extra if extra is None else {**extra, **(self.extra or {})}
        return self._prefix + str(msg), kwargs
