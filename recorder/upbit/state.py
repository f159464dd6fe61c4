"""The firing rule: which notices start an extraction, remembered across restarts.

A notice fires once per `id`, only when that id has never been seen and its `first_listed_at`
lies within `freshness_s` of now. The trigger time T is `first_listed_at` (never `listed_at`,
which moves on edits, and never the time we noticed it). The first poll after a fresh start
(no state file) only records what is there. Pinned `fixed_notices` are never considered. A
symbol fired once does not fire again for a re-announcement. Symbols that are not
``[A-Z0-9]{1,20}`` are dropped with a log line and never reach a path.

State lives in ``<data_dir>/upbit/state.json``, written atomically (temp file + rename).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pumpwatch.atomic import write_file_atomic
from pumpwatch.errors import StoreError, UsageError
from pumpwatch.recorder.upbit.notices import Notice, NoticePage
from pumpwatch.recorder.upbit.titles import TitleInfo, parse_title
from pumpwatch.streams import check_symbol
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import format_utc

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Seen ids are kept for this many of the newest ids: enough for years of notices while the
# file stays small. The list endpoint only ever shows the newest few pages.
MAX_SEEN_IDS = 20_000
# A symbol that fired is not fired again by a re-announcement (a corrected re-post, a second
# notice adding another market) within this span; a coin delisted and listed again years later
# is a new event.
REFIRE_AFTER_S = 30 * 86400.0


@dataclass(frozen=True)
class Firing:
    """One coin of one fresh KRW listing notice: extract around `trigger_us`."""

    symbol: str
    trigger_us: int  # first_listed_at in UTC µs
    notice: Notice
    detected_us: int
    title_info: TitleInfo

    @property
    def detection_delay_s(self) -> float:
        return (self.detected_us - self.trigger_us) / US_PER_S

    def source(self) -> dict[str, Any]:
        """The metadata ``source`` block of the extraction (DESIGN §7)."""
        return {
            "type": "upbit",
            "notice_id": self.notice.id,
            "uuid": self.notice.uuid,
            "title": self.notice.title,
            "first_listed_at": format_utc(self.notice.first_listed_at_us),
            "detected_at": format_utc(self.detected_us),
            "detection_delay_s": round(self.detection_delay_s, 3),
        }


class WatchState:
    """Seen notice ids and fired symbols, persisted under ``<data_dir>/upbit/state.json``."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / "upbit" / "state.json"
        self.seen_ids: set[int] = set()
        self.fired: dict[str, dict[str, Any]] = {}  # symbol -> {notice_id, trigger_us, fired_us}
        self.bootstrapped = False
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        try:
            doc = orjson.loads(raw)
            self.seen_ids = {int(i) for i in doc["seen_ids"]}
            self.fired = {str(k): dict(v) for k, v in doc.get("fired", {}).items()}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            # A damaged state file must not make every old notice look new: keep the
            # bootstrap behaviour (record, fire nothing) and say so.
            log.warning("upbit state %s is damaged; starting over with a silent first poll", self.path)
            return
        self.bootstrapped = True

    def save(self) -> None:
        """Write the state atomically."""
        newest = sorted(self.seen_ids)[-MAX_SEEN_IDS:]
        doc = {"version": STATE_VERSION, "seen_ids": newest, "fired": self.fired}
        write_json_atomic(self.path, doc)

    def decide(self, page: NoticePage, now_us: int, freshness_s: float) -> list[Firing]:
        """Apply the firing rule to one fresh page; updates and saves the state."""
        notices = page.notices  # fixed_notices are pinned old notices: never candidates
        if not self.bootstrapped:
            self.seen_ids.update(n.id for n in notices)
            self.bootstrapped = True
            self.save()
            log.info("upbit watcher bootstrapped: %d notices recorded as seen, none fired", len(notices))
            return []
        firings: list[Firing] = []
        changed = False
        for notice in notices:
            if notice.id in self.seen_ids:
                continue
            self.seen_ids.add(notice.id)
            changed = True
            firings.extend(self._fire(notice, now_us, freshness_s))
        if changed:
            self.save()
        return firings

    def _fire(self, notice: Notice, now_us: int, freshness_s: float) -> list[Firing]:
        info = parse_title(notice.title)
        if not info.krw_symbols:
            if info.is_listing:
                log.info("upbit notice %d is a listing without KRW: %s", notice.id, notice.title)
            return []
        age_s = (now_us - notice.first_listed_at_us) / US_PER_S
        if age_s > freshness_s:
            log.info(
                "upbit notice %d first listed %.0f s ago (> %.0f s): not fired: %s",
                notice.id,
                age_s,
                freshness_s,
                notice.title,
            )
            return []
        out: list[Firing] = []
        for symbol in info.krw_symbols:
            try:
                check_symbol(symbol)
            except UsageError as exc:
                log.warning("upbit notice %d: dropped symbol: %s", notice.id, exc)
                continue
            previous = self.fired.get(symbol)
            if previous is not None and now_us - int(previous.get("fired_us", 0)) < REFIRE_AFTER_S * US_PER_S:
                log.info(
                    "upbit notice %d: %s already fired for notice %s; not fired again",
                    notice.id,
                    symbol,
                    previous.get("notice_id"),
                )
                continue
            self.fired[symbol] = {
                "notice_id": notice.id,
                "trigger_us": notice.first_listed_at_us,
                "fired_us": now_us,
            }
            firing = Firing(symbol, notice.first_listed_at_us, notice, now_us, info)
            log.info(
                "upbit KRW listing fired: %s notice %d T=%s detected %.1f s after T",
                symbol,
                notice.id,
                format_utc(firing.trigger_us),
                firing.detection_delay_s,
            )
            out.append(firing)
        return out


def write_json_atomic(path: Path, doc: object) -> None:
    """Write `doc` as JSON to `path` atomically (`pumpwatch.atomic.write_file_atomic`)."""
    try:
        write_file_atomic(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
