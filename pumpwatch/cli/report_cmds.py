"""Command: report (the study across listings, docs/report.md)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.utctime import parse_time_us

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_since(text: str) -> int:
    """`--since`: a date `YYYY-MM-DD` (00:00 UTC that day) or any TIME `extract` accepts."""
    return parse_time_us(f"{text}T00:00:00Z" if _DATE.match(text) else text, what="--since")


@app.command("report")
def report_cmd(
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only listings triggered at or after this: YYYY-MM-DD (00:00 UTC) or a TIME."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Report directory (replaced whole). Default: <data-dir>/report", file_okay=False
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print report.json on stdout instead of the page's path.")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Also read the shared listing directories of s3://bucket/prefix (default: remote.url, "
            "falling back to the local listings with a warning when it cannot be read; '' to read local "
            "listings only). A listing in both (same symbol, trigger time and notice) is read once, from "
            "the store.",
        ),
    ] = None,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url", help="S3-compatible endpoint http(s)://host:port. Default: remote.endpoint_url."
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Study every listing directory under <data-dir>/listings: write a static HTML report
    (index.html, figures, charts; opens from disk, no network), report.json and CSVs.

    Prints the path of index.html (or, with --json, the report.json object) on stdout and a
    one-line summary on stderr.
    """
    since_us = parse_since(since) if since is not None else None
    settings = settings_from(config, data_dir)

    from pumpwatch.atomic import json_bytes
    from pumpwatch.detector.report import write_report

    out_dir = out if out is not None else settings.data_path / "report"
    remote = getattr(settings, "remote", None)
    url = store if store is not None else str(getattr(remote, "url", "") or "")
    listings = settings.data_path / "listings"
    if url:
        from pumpwatch.errors import StoreError

        try:
            listings = _combined_listings(
                settings.data_path,
                url,
                endpoint_url if endpoint_url is not None else str(getattr(remote, "endpoint_url", "") or ""),
                str(getattr(remote, "region", "") or "us-east-1"),
            )
        except StoreError as exc:
            if store is not None:
                raise  # asked for by name: no silent local-only report
            # remote.url of a recorder's settings: its own listings are still worth a report
            typer.echo(f"report: warning: {exc}; reporting the local listings only", err=True)
    report = write_report(listings, out_dir, since_us=since_us)
    totals = report.study["totals"]
    typer.echo(
        f"report: {totals['listings']} listing(s), {totals['with_pump']} with a pump, "
        f"{totals['pump_events']} pump event(s), {len(report.study['skipped'])} skipped",
        err=True,
    )
    if as_json:
        sys.stdout.buffer.write(json_bytes(report.study))
        sys.stdout.flush()
    else:
        typer.echo(str(report.index))


def _listing_key(path: Path) -> tuple[str, int, str | None] | None:
    """What identifies a listing across machines: its symbol, trigger µs and Upbit notice id
    (None when manual), from its metadata.json; None when that is unreadable. Directory names
    do not: each recorder numbers colliding names (``_2``, ``_3`` …) by itself."""
    import orjson

    try:
        meta = orjson.loads((path / "metadata.json").read_bytes())
        src = meta.get("source")
        notice = src.get("notice_id") if isinstance(src, dict) else None
        return (str(meta["symbol"]), int(meta["trigger_time_us"]), None if notice is None else str(notice))
    except (OSError, orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


def _combined_listings(data_path: Path, url: str, endpoint_url: str, region: str) -> Path:
    """A directory of links to every listing to study: the shared store's listing directories
    (copied to <data-dir>/cache/shared-listings) and the local ones not in the store (each
    listing once; the shared copy holds every recorder's streams). A local listing is the same
    as a shared one when symbol, trigger time and notice id agree (`_listing_key`); a local one
    that is not but has a shared one's name is linked as ``<name>+local``. Raises `StoreError`
    when the store cannot be read."""
    import shutil

    import pyarrow.fs as pafs

    from pumpwatch.detector.shared_listing import SHARED_DIR, download_shared
    from pumpwatch.errors import StoreError
    from pumpwatch.segments.remote import open_filesystem, parse_url

    root = parse_url(url)
    try:
        fs = open_filesystem(endpoint_url=endpoint_url, region=region)
        # download_shared reads what it can and skips the rest: ask once, so that a store that
        # cannot be reached is said, not taken for an empty one
        fs.get_file_info(pafs.FileSelector(root.path(SHARED_DIR), allow_not_found=True))
        cache = data_path / "cache" / "shared-listings"
        cache.mkdir(parents=True, exist_ok=True)
        shared = {p.name: p for p in download_shared(fs, root, cache)}
    except OSError as exc:
        raise StoreError(f"cannot read the shared listings of {url}: {exc}") from None
    combined = data_path / "cache" / "report-listings"
    shutil.rmtree(combined, ignore_errors=True)
    combined.mkdir(parents=True)
    shared_keys = {key for p in shared.values() if (key := _listing_key(p)) is not None}
    sources = dict(shared)
    local = data_path / "listings"
    local_only = 0
    if local.is_dir():
        for p in sorted(local.iterdir()):
            if not p.is_dir() or p.name.startswith("."):
                continue
            key = _listing_key(p)
            if key is not None and key in shared_keys:
                continue  # the same listing: the shared copy holds every recorder's streams
            name = p.name if p.name not in sources else f"{p.name}+local"
            sources[name] = p
            local_only += 1
    for name, src in sorted(sources.items()):
        (combined / name).symlink_to(src.resolve(), target_is_directory=True)
    typer.echo(f"report: {len(shared)} shared listing(s) from {url}, {local_only} local only", err=True)
    return combined
