"""A small local store for the remote-store tests: real sealed segments, a Parquet archive of
them (built by `segments.archive`), journal lines and a listing directory."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs

from helpers.store import T0_US, make_rows
from pumpwatch.segments import SegmentWriter
from pumpwatch.timeunits import US_PER_HOUR

STREAMS_USED = ("binance_spot", "okx_futures")
BUCKET = "pumpwatch-test"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class S3Server:
    """One moto server; `stop()`/`start()` take the endpoint down and bring it back on the same
    port (moto keeps its objects in memory across the restart, as a real store would)."""

    host: str
    port: int
    server: Any

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self.server.start()

    def filesystem(self) -> pafs.S3FileSystem:
        from pumpwatch.segments.remote import open_filesystem

        return open_filesystem(endpoint_url=self.endpoint_url, connect_timeout_s=1, request_timeout_s=10)


def write_segments(data_dir: Path, hours: int = 2, rows_per_hour: int = 600) -> None:
    """Sealed segments of `STREAMS_USED` covering `hours` UTC hours from T0."""
    for k, stream in enumerate(STREAMS_USED):
        with SegmentWriter(data_dir, stream) as w:
            for h in range(hours):
                start = T0_US + h * US_PER_HOUR + k * 1000
                w.append(make_rows(rows_per_hour, start_us=start, step_us=US_PER_HOUR // rows_per_hour // 2))


def archive_store(data_dir: Path) -> list[Path]:
    """The real Parquet archive (`segments.archive.archive_pending`) of every sealed segment
    hour, kept whatever its age; the archive files' paths, sorted."""
    from pumpwatch.segments.archive import archive_pending, list_archive

    archive_pending(data_dir, retention_s=None)
    return sorted(p for _s, _h, p in list_archive(data_dir))


def write_journal(data_dir: Path, stream: str, ts_list: list[int]) -> Path:
    """Journal lines (``alive`` events) at the given µs times, appended."""
    path = data_dir / "journal" / f"{stream}.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        for ts in ts_list:
            fh.write(orjson.dumps({"ts": ts, "event": "alive", "conn": None}) + b"\n")
    return path


def write_listing(data_dir: Path, name: str = "0G_20260101T003000Z") -> Path:
    """A complete listing directory (metadata.json, one raw file)."""
    d = data_dir / "listings" / name
    (d / "raw").mkdir(parents=True, exist_ok=True)
    (d / "metadata.json").write_bytes(orjson.dumps({"symbol": "0G", "trigger_ms": T0_US // 1000}))
    (d / "raw" / "binance_spot.json").write_bytes(b"[]\n")
    return d


def local_files(data_dir: Path) -> dict[str, bytes]:
    """Every visible file under archive/ and listings/ by its data-dir relative path."""
    out = {}
    for sub in ("archive", "listings"):
        for p in sorted((data_dir / sub).rglob("*")):
            rel = p.relative_to(data_dir)
            if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                out[rel.as_posix()] = p.read_bytes()
    return out
