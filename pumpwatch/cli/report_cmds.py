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
    report = write_report(settings.data_path / "listings", out_dir, since_us=since_us)
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
