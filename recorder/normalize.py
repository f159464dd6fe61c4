"""`pumpwatch normalize STREAM [FILE]`: raw exchange frames in, normalized trades out (NDJSON).

Input: one frame per line, either the frame exactly as the exchange sent it (its receive time is
then "now"), or a line of the raw frame journal (``{"r": <recv µs>, "f"|"t"|"b": ...}``, see
``segments/frames.py``), whose recorded receive time is kept. Output: one JSON object per trade
with the columns of DESIGN §4, times as integer µs::

    {"time":1767225600123456,"recv_time":1767225600125000,"symbol":"0G-USDT-SWAP","base":"0G",
     "quote":"USDT","price":1.234,"qty":5.0,"side":"buy","trade_id":"123"}

Contract multipliers come from the subscription list. A bad frame is counted and skipped, never
fatal; control frames (acks, pongs) produce nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from pumpwatch.errors import ParseError
from pumpwatch.recorder.adapter import Adapter, Instruments

_JOURNAL_PREFIX = b'{"r":'


@dataclass
class NormalizeReport:
    """Counts of one normalize run."""

    lines: int = 0
    trades: int = 0
    controls: int = 0
    bad_frames: int = 0
    first_error: str = ""


def trade_json(row: tuple[object, ...]) -> bytes:
    """One trade row as an NDJSON line (with newline) in DESIGN §4 column order."""
    return orjson.dumps(
        {
            "time": row[0],
            "recv_time": row[1],
            "symbol": row[2],
            "base": row[3],
            "quote": row[4],
            "price": row[5],
            "qty": row[6],
            "side": row[7],
            "trade_id": row[8],
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def split_line(line: bytes, now_us: int) -> tuple[int, bytes | str]:
    """A frame-journal line's (recv_us, frame), or the raw line itself received at `now_us`."""
    if line.startswith(_JOURNAL_PREFIX):
        from pumpwatch.segments.frames import decode_frame

        decoded = decode_frame(line)
        if decoded is not None:
            return decoded
    try:
        return now_us, line.decode("utf-8")  # a live WebSocket text frame arrives as str
    except UnicodeDecodeError:
        return now_us, line


def normalize_lines(
    adapter: Adapter,
    instruments: Instruments,
    lines: Iterable[bytes],
    out: BinaryIO,
    *,
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> NormalizeReport:
    """Decode every line with `adapter` and write the trades to `out`; returns the counts."""
    report = NormalizeReport()
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        report.lines += 1
        recv_us, frame = split_line(line, clock_us())
        try:
            result = adapter.decode(frame, recv_us, instruments)
        except ParseError as exc:
            report.bad_frames += 1
            if not report.first_error:
                report.first_error = f"line {report.lines}: {exc}"
            continue
        if not isinstance(result, list):
            report.controls += 1
            continue
        for row in result:
            out.write(trade_json(row))
        report.trades += len(result)
    return report
