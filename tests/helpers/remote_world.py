"""Two recorders of one stream in the shared store, for the merged-reading tests: real sealed
segments (`SegmentWriter`), a real archive of them (`segments.archive.archive_pending`), real
journals (`EventJournal`), uploaded by the real `Uploader` to the local S3 server."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow.fs as pafs

from helpers.store import T0_US, make_rows
from pumpwatch.segments import SegmentWriter
from pumpwatch.segments.archive import archive_pending
from pumpwatch.segments.journal import EventJournal
from pumpwatch.segments.remote import RemoteSettings, parse_url
from pumpwatch.segments.schema import TradeRow
from pumpwatch.segments.upload import Uploader
from pumpwatch.timeunits import US_PER_S

S = US_PER_S
MIN = 60 * S
STREAM = "binance_spot"
STEP_US = 6 * S
N_ROWS = 1190  # 0 .. 7134 s after T0: two hours
SYMBOLS = ("BTC", "ETH", "0G")
END_US = T0_US + 2 * 3600 * S  # every recorder stops here
# each recorder misses its own ten minutes; they do not overlap
GAPS = {"rec-a": (T0_US + 20 * MIN, T0_US + 30 * MIN), "rec-b": (T0_US + 70 * MIN, T0_US + 80 * MIN)}
LAGS = {"rec-a": 500, "rec-b": 900}  # rec-a receives every trade first


def all_rows(lag_us: int = 500) -> list[TradeRow]:
    return make_rows(N_ROWS, step_us=STEP_US, lag_us=lag_us, symbols=SYMBOLS)


def record(data_dir: Path, rid: str, *, gap: tuple[int, int] | None = None) -> list[TradeRow]:
    """What recorder `rid` stores and journals: every trade outside its gap (received `LAGS`
    after the trade), one connection dropped for the gap. Returns the rows stored."""
    lo, hi = GAPS[rid] if gap is None else gap
    rows = [r for r in all_rows(LAGS[rid]) if not lo <= r[0] < hi]
    with SegmentWriter(data_dir, STREAM, fsync=False) as writer:
        writer.append(rows)
    symbols = [f"{b}USDT" for b in SYMBOLS]
    with EventJournal(data_dir, STREAM) as j:
        j.record("start", ts_us=T0_US - MIN, pid=1)
        for conn, at in (("c1", T0_US - MIN), ("c2", hi)):
            j.record("connected", conn=conn, ts_us=at, url="ws://127.0.0.1")
            j.record("subscribed", conn=conn, ts_us=at, symbols=symbols, bases=list(SYMBOLS))
            if conn == "c1":
                j.record("disconnected", conn=conn, ts_us=lo, reason="1006")
        for t in range(T0_US, END_US, 5 * MIN):
            j.record("alive", ts_us=t)
        j.record("stop", ts_us=END_US, pid=1)
    return rows


def archive_and_upload(data_dir: Path, url: str, endpoint_url: str, rid: str) -> None:
    archive_pending(data_dir, retention_s=None)
    up = Uploader(data_dir, RemoteSettings(url=url, endpoint_url=endpoint_url, recorder_id=rid))
    try:
        status = up.run_once()
        assert status.backlog_files == 0 and status.error is None, status
    finally:
        up.stop()


def delete_archive_hours(fs: pafs.FileSystem, url: str, rid: str, stream: str, hours: Sequence[str]) -> None:
    """Remove `rid`'s archive objects of `stream` for the ``YYYY-MM-DDTHH`` `hours` (as if
    they were never uploaded)."""
    root = parse_url(url)
    exchange, market = stream.split("_")
    for hour in hours:
        day, hh = hour.split("T")
        fs.delete_file(
            root.recorder_path(
                rid, "archive", f"exchange={exchange}", f"market={market}", f"date={day}", f"{hh}.parquet"
            )
        )
