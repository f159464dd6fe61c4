"""The runner's hot path: one received frame -> raw journal, decode, de-duplicate, trades out.

Runs synchronously in the connection's read loop, once per frame, so it does as little as it
can: no clock reads (the receive time comes in), no allocation beyond the decoded rows, and
logging only for the first few bad frames and then one line per `LOG_EVERY_ERRORS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Adapter, Control, Instrument, Sequenced, kept_sequence
from pumpwatch.recorder.stream.continuity import IdContinuity, Resumed
from pumpwatch.recorder.stream.dedupe import Deduper
from pumpwatch.recorder.stream.logcontext import StreamLog
from pumpwatch.recorder.stream.stats import RunnerStats
from pumpwatch.segments.schema import TradeRow

log = logging.getLogger(__name__)

# Log the first few bad frames of a stream, then one line per this many (never one per frame).
LOG_FIRST_ERRORS = 5
LOG_EVERY_ERRORS = 1000


class FrameIngest:
    """Turns frames into trades for `on_trades`, counting into `stats`.

    With `ids` (streams whose trade ids count up per symbol) the de-duplicated trades are also
    checked for continuity; the resumes they settle go to `on_resumed`.

    `instruments` is read on every frame (the runner grows it in place). A `ParseError` is
    counted and skipped; any other exception from the decoder is a bug: counted, logged with
    its traceback once (then periodically), skipped. An exception from `on_frame` or
    `on_trades` is logged the same way and never stops the stream.
    """

    def __init__(
        self,
        adapter: Adapter,
        stats: RunnerStats,
        dedupe: Deduper,
        instruments: Mapping[str, Instrument],
        on_trades: Callable[[list[TradeRow]], None],
        on_frame: Callable[[int, bytes | str], None] | None = None,
        ids: IdContinuity | None = None,
        on_resumed: Callable[[list[Resumed]], None] | None = None,
    ) -> None:
        self.stream = adapter.stream
        self._log = StreamLog(log, adapter.stream)
        self._decode = adapter.decode
        self._stats = stats
        self._dedupe = dedupe
        self._instruments = instruments
        self._on_trades = on_trades
        self._on_frame = on_frame
        self._ids = ids  # trade-id continuity, for streams whose ids count up per symbol
        self._sequenced = adapter.sequenced  # ... checked on the ids the decoder attaches (Sequenced)
        self._on_resumed = on_resumed
        self._sink_errors = 0

    def process(self, frame: bytes | str, recv_us: int) -> Control | None:
        """Handle one frame received at `recv_us`; returns it decoded when it is a Control."""
        st = self._stats
        st.frames += 1
        if self._on_frame is not None:
            try:
                self._on_frame(recv_us, frame)
            except Exception:
                self._sink_failed("on_frame")
        try:
            out = self._decode(frame, recv_us, self._instruments)
        except ParseError as exc:
            st.parse_errors += 1
            n = st.parse_errors
            if n <= LOG_FIRST_ERRORS or n % LOG_EVERY_ERRORS == 0:
                self._log.warning("unparsable frame (%d so far): %s: %r", n, exc, frame[:200])
            return None
        except Exception:
            st.decode_bugs += 1
            if st.decode_bugs == 1 or st.decode_bugs % LOG_EVERY_ERRORS == 0:
                self._log.exception("decoder bug (%d so far) on %r", st.decode_bugs, frame[:200])
            return None
        if type(out) is list or type(out) is Sequenced:
            if out:
                rows = self._dedupe.filter(out)
                if rows:
                    st.trades += len(rows)
                    st.last_trade_recv_us = recv_us
                    st.note_lag(recv_us - rows[-1][0])
                    try:
                        self._on_trades(rows)
                    except Exception:
                        self._sink_failed("on_trades")
                    if self._ids is not None:
                        seq = kept_sequence(out, rows) if self._sequenced else None
                        settled = self._ids.check(rows, recv_us, seq)
                        if settled is not None and self._on_resumed is not None:
                            self._on_resumed(settled)
            return None
        if isinstance(out, Control):
            if out.kind == "error" and out.req_id is None and not out.symbols:
                st.error_frames += 1
            return out
        st.decode_bugs += 1
        if st.decode_bugs == 1:
            self._log.error("decoder returned %s, not trades or a Control", type(out).__name__)
        return None

    def _sink_failed(self, what: str) -> None:
        self._sink_errors += 1
        if self._sink_errors == 1 or self._sink_errors % LOG_EVERY_ERRORS == 0:
            self._log.exception("%s failed (%d times so far)", what, self._sink_errors)
