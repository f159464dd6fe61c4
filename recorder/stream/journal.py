"""What a stream runner reports to: the `Journal` protocol (implemented by
``segments/journal.py`` `EventJournal`) and `NullJournal`, the sink used when nobody listens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Journal(Protocol):
    """The events of a stream's connections, each reported the moment it happens."""

    def connected(self, conn: str, url: str) -> None: ...
    def subscribed(self, conn: str, symbols: list[str], bases: list[str]) -> None: ...
    def rejected(self, conn: str, symbols: list[str], reason: str) -> None: ...
    def unsubscribed(self, conn: str, symbols: list[str]) -> None: ...
    def disconnected(self, conn: str, reason: str, last_rx_us: int | None = None) -> None: ...
    def gap_start(self, reason: str) -> None: ...
    def gap_end(self) -> None: ...


class NullJournal:
    """Accepts every journal call and keeps nothing."""

    def __getattr__(self, _name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None
