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
            help="Also read the shared listing directories of s3://bucket/prefix (default: remote.url; "
            "'' to read local listings only). A listing in both is read once, from the store.",
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
    if url:
        listings = _combined_listings(
            settings.data_path,
            url,
            endpoint_url if endpoint_url is not None else str(getattr(remote, "endpoint_url", "") or ""),
            str(getattr(remote, "region", "") or "us-east-1"),
        )
    else:
        listings = settings.data_path / "listings"
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


def _combined_listings(data_path: Path, url: str, endpoint_url: str, region: str) -> Path:
    """A directory of links to every listing to study: the shared store's listing directories
    (copied to <data-dir>/cache/shared-listings) and the local ones not in the store (each
    listing once; the shared copy holds every recorder's streams)."""
    from pumpwatch.detector.shared_listing import download_shared
    from pumpwatch.errors import StoreError
    from pumpwatch.segments.remote import open_filesystem, parse_url

    root = parse_url(url)
    fs = open_filesystem(endpoint_url=endpoint_url, region=region)
    cache = data_path / "cache" / "shared-listings"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        shared = {p.name: p for p in download_shared(fs, root, cache)}
    except OSError as exc:
        raise StoreError(f"cannot read the shared listings of {url}: {exc}") from None
    combined = data_path / "cache" / "report-listings"
    import shutil

    shutil.rmtree(combined, ignore_errors=True)
    combined.mkdir(parents=True)
    local = data_path / "listings"
    sources = dict(shared)
    if local.is_dir():
        for p in sorted(local.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and p.name not in sources:
                sources[p.name] = p
    for name, src in sorted(sources.items()):
        (combined / name).symlink_to(src.resolve(), target_is_directory=True)
    typer.echo(
        f"report: {len(shared)} shared listing(s) from {url}, {len(sources) - len(shared)} local only",
        err=True,
    )
    return combined
