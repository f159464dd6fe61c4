"""Command: archive (back-fill the Parquet archive from the sealed segments)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import StoreError
from pumpwatch.streams import parse_streams
from pumpwatch.utctime import parse_time_us


def _since_us(text: str) -> int:
    """``YYYY-MM-DD`` (that UTC day's midnight) or any TIME (ISO 8601 with a zone, epoch)."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
        return parse_time_us(f"{text.strip()}T00:00:00Z", what="--since")
    return parse_time_us(text, what="--since")


@app.command("archive")
def archive_cmd(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only hours ending after DATE (YYYY-MM-DD, UTC) or TIME. Default: every sealed hour.",
        ),
    ] = None,
    streams: Annotated[
        str | None, typer.Option("--streams", help="Comma list of stream ids or exchanges. Default: all.")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Back-fill the Parquet archive (data/archive/) from the sealed segments.

    Writes every sealed hour not archived yet, rebuilds the hours whose segments changed (a
    repair file, the rest of a restarted hour, a reparse), then deletes archive files older than
    storage.archive_retention (default 90 days; 0 keeps them; with a remote store only
    what is uploaded). The recorder does the same after each sealed
    segment. Prints a one-line summary.
    """
    since_us = _since_us(since) if since is not None else None
    chosen = parse_streams(streams)
    settings = settings_from(config, data_dir)
    root = settings.data_path
    if not root.is_dir():
        raise StoreError(f"data dir {root} does not exist (nothing recorded yet?)")
    from pumpwatch.segments.archive import archive_pending, archive_root
    from pumpwatch.segments.remote import remote_settings
    from pumpwatch.segments.upload import UploadedIndex

    remote = remote_settings(settings)
    # with a remote store, an expired archive file is deleted only once it is uploaded
    may_delete = UploadedIndex(root, remote).file if remote.enabled else None
    report = archive_pending(
        root,
        streams=chosen,
        since_us=since_us,
        retention_s=settings.storage.archive_retention_s or None,
        may_delete=may_delete,
    )
    typer.echo(report.summary(archive_root(root)))
