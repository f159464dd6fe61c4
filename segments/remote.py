"""The shared store on S3-compatible object storage (DESIGN §11): where each local file's copy
lives, how to reach the store, and a dataset over the remote Parquet archive.

Remote layout (``<url>`` = ``s3://<bucket>/<prefix>``; the recorder id is a hive partition,
so two recorders never write the same key and every engine gets ``recorder`` as a column)::

    <url>/recorder=<id>/archive/exchange=<e>/market=<m>/date=<YYYY-MM-DD>/<HH>.parquet
    <url>/recorder=<id>/segments/exchange=<e>/market=<m>/date=<YYYY-MM-DD>/<HHMMSS>.arrow  (opt-in)
    <url>/recorder=<id>/journal/<stream>/date=<YYYY-MM-DD>/<HH>.ndjson
    <url>/recorder=<id>/listings/<SYMBOL>_<YYYYMMDDTHHMMSSZ>/…   (this recorder's part)
    <url>/recorder=<id>/recorder.json                             (its heartbeat, runs, token)
    <url>/listings/<SYMBOL>_<YYYYMMDDTHHMMSSZ>/…                  (the shared listing)

Readers of the archive take ``recorder=*/archive/**/*.parquet`` only: the listing directories
hold Parquet files too.

Filesystem: ``pyarrow.fs.S3FileSystem`` (it ships with pyarrow, so the recorder needs no new
dependency; it reads datasets directly). Credentials come from the standard AWS environment
variables, profile or instance metadata, unless given explicitly. An S3-compatible store
(MinIO, Ceph, R2, moto in tests) is reached with ``endpoint_url``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pumpwatch.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

RECORDER_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
PARTITIONS = ("recorder", "exchange", "market", "date")


@dataclass(frozen=True)
class RemoteSettings:
    """The ``remote:`` block of the settings (until `pumpwatch.settings` carries it, read with
    `remote_settings`). An empty `url` means no remote store."""

    url: str = ""  # s3://bucket/prefix
    endpoint_url: str = ""  # http(s)://host:port of an S3-compatible store; "" = AWS
    region: str = "us-east-1"
    recorder_id: str = ""  # "" = this machine's host name (sanitized)
    upload_interval_s: float = 30.0  # one upload round this often (sooner while a backlog remains)
    max_files_per_round: int = 200  # bounded work per round
    max_bytes_per_round: int = 512 * 1024 * 1024
    backoff_initial_s: float = 1.0  # after a failed put, wait this long …
    backoff_max_s: float = 300.0  # … doubling with jitter up to this
    journal_grace_s: float = 60.0  # a journal hour is uploaded this long after it ends
    upload_segments: bool = False  # also copy sealed Arrow segments (the archive holds the same rows)
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 60.0

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def resolved_recorder_id(self) -> str:
        """The recorder id, defaulting to the host name with anything outside the id alphabet
        replaced by ``-``."""
        rid = self.recorder_id or re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:63] or "recorder"
        if not RECORDER_ID_RE.match(rid):
            raise ConfigError(f"remote.recorder_id: expected [A-Za-z0-9][A-Za-z0-9_.-]{{0,62}}, got {rid!r}")
        return rid


INSTANCE_FILE = "remote/instance"  # in the data dir: this recorder's random instance token


def instance_token(data_dir: str | os.PathLike[str]) -> str:
    """This data directory's random instance token (``<data_dir>/remote/instance``, created on
    first use). Published in ``recorder.json``: two machines that resolve to the same recorder
    id (cloned VMs keep the host name) have different tokens, so the second one to start sees a
    live heartbeat of its id with another token and refuses to run instead of overwriting the
    first one's objects (`pumpwatch.detector.shared_listing.Heartbeat`)."""
    from pumpwatch.atomic import write_file_atomic

    path = Path(data_dir) / INSTANCE_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if re.fullmatch(r"[0-9a-f]{16,64}", token):
        return token
    token = secrets.token_hex(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, token.encode() + b"\n")
    return token


def validate_remote(remote: RemoteSettings) -> RemoteSettings:
    """Every check a worker would otherwise meet later; one `ConfigError` line per fault."""
    if remote.url:
        parse_url(remote.url)
        remote.resolved_recorder_id()
    if remote.endpoint_url:
        parts = urlsplit(remote.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                f"remote.endpoint_url: expected http(s)://host[:port], got {remote.endpoint_url!r}"
            )
    for name in ("upload_interval_s", "backoff_initial_s", "connect_timeout_s", "request_timeout_s"):
        if getattr(remote, name) <= 0:
            raise ConfigError(f"remote.{name.removesuffix('_s')}: must be positive")
    if remote.backoff_max_s < remote.backoff_initial_s:
        raise ConfigError("remote.backoff_max: must be at least remote.backoff_initial")
    if remote.max_files_per_round < 1 or remote.max_bytes_per_round < 1:
        raise ConfigError("remote.max_files_per_round / max_bytes_per_round: must be at least 1")
    return remote


def remote_settings(settings: Any) -> RemoteSettings:
    """The remote settings of a loaded `Settings` (its ``remote`` attribute, a mapping or a
    dataclass), or the defaults (remote store off) when it has none yet."""
    raw = getattr(settings, "remote", None)
    if raw is None:
        return RemoteSettings()
    if isinstance(raw, RemoteSettings):
        return validate_remote(raw)
    names = {f.name for f in fields(RemoteSettings)}
    values = raw if isinstance(raw, dict) else {n: getattr(raw, n) for n in names if hasattr(raw, n)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"remote.{unknown[0]}: unknown setting")
    return validate_remote(RemoteSettings(**values))


@dataclass(frozen=True)
class RemoteRoot:
    """``s3://bucket/prefix`` split: pyarrow paths are ``bucket/prefix/...``."""

    bucket: str
    prefix: str  # no leading or trailing "/"; may be ""

    def path(self, *parts: str) -> str:
        """``bucket/prefix/part/...`` (a pyarrow filesystem path)."""
        return "/".join(p for p in (self.bucket, self.prefix, *parts) if p)

    def recorder_path(self, recorder_id: str, *parts: str) -> str:
        return self.path(f"recorder={recorder_id}", *parts)


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_url(url: str) -> RemoteRoot:
    """``s3://bucket/prefix`` -> `RemoteRoot`; anything else is a `ConfigError`."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not _BUCKET_RE.match(parts.netloc or ""):
        raise ConfigError(f"remote.url: expected s3://bucket[/prefix], got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"remote.url: no query or fragment allowed, got {url!r}")
    prefix = parts.path.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise ConfigError(f"remote.url: empty, '.' or '..' path segment in {url!r}")
    return RemoteRoot(bucket=parts.netloc, prefix=prefix)


def open_filesystem(
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    access_key: str | None = None,
    secret_key: str | None = None,
    connect_timeout_s: float = 5.0,
    request_timeout_s: float = 60.0,
) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem. With `endpoint_url` every request goes there (an S3-compatible
    store); without it, to AWS. Retries are ours (one attempt per call here), so an outage shows
    at once and the uploader's capped backoff decides when to try again."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {}
    if endpoint_url:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"remote.endpoint_url: expected http(s)://host[:port], got {endpoint_url!r}")
        kwargs["endpoint_override"] = parts.netloc
        kwargs["scheme"] = parts.scheme
    if access_key is not None or secret_key is not None:
        kwargs["access_key"] = access_key
        kwargs["secret_key"] = secret_key
    return pafs.S3FileSystem(
        region=region,
        connect_timeout=connect_timeout_s,
        request_timeout=request_timeout_s,
        background_writes=False,  # a put's failure is raised by the put, not by a later close
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        **kwargs,
    )


def filesystem_for(remote: RemoteSettings) -> pafs.S3FileSystem:
    return open_filesystem(
        endpoint_url=remote.endpoint_url,
        region=remote.region,
        connect_timeout_s=remote.connect_timeout_s,
        request_timeout_s=remote.request_timeout_s,
    )


def recorder_ids(filesystem: pafs.FileSystem, root: RemoteRoot) -> list[str]:
    """The recorder ids present under the remote root, sorted."""
    import pyarrow.fs as pafs

    infos = filesystem.get_file_info(pafs.FileSelector(root.path(), allow_not_found=True))
    out = []
    for info in infos:
        name = info.base_name
        if info.type == pafs.FileType.Directory and name.startswith("recorder="):
            rid = name.removeprefix("recorder=")
            if RECORDER_ID_RE.match(rid):
                out.append(rid)
    return sorted(out)


def remote_dataset(
    url: str,
    endpoint_url: str = "",
    *,
    recorders: list[str] | None = None,
    region: str = "us-east-1",
    filesystem: pafs.FileSystem | None = None,
) -> pads.Dataset:
    """A `pyarrow.dataset.Dataset` over the Parquet archive in the remote store: every
    recorder's (or those in `recorders`) ``archive/`` tree, with ``recorder``, ``exchange``,
    ``market`` and ``date`` as string columns from the hive path.

    Two recorders of the same stream both appear (one row per recorder that recorded the
    trade): filter on ``recorder``, or read with
    `pumpwatch.segments.remote_read.read_remote_trades` for each trade once across recorders.
    Hidden (``.``/``_``) names are skipped, as a local dataset does.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.fs as pafs

    root = parse_url(url)
    fs = filesystem if filesystem is not None else open_filesystem(endpoint_url=endpoint_url, region=region)
    chosen = recorder_ids(fs, root) if recorders is None else list(recorders)
    files: list[str] = []
    for rid in chosen:
        base = root.recorder_path(rid, "archive")
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        for info in infos:
            rel = info.path[len(base) + 1 :]
            if (
                info.type == pafs.FileType.File
                and info.path.endswith(".parquet")
                and not any(seg.startswith((".", "_")) for seg in rel.split("/"))
            ):
                files.append(info.path)
    partitioning = ds.partitioning(pa.schema([(name, pa.string()) for name in PARTITIONS]), flavor="hive")
    files.sort()
    if not files:
        from pumpwatch.segments.schema import TRADE_SCHEMA

        return ds.dataset(
            [], format="parquet", schema=pa.schema(list(TRADE_SCHEMA) + list(partitioning.schema))
        )
    return ds.dataset(
        files, format="parquet", filesystem=fs, partitioning=partitioning, partition_base_dir=root.path()
    )
