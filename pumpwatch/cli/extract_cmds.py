"""Commands: extract, detect."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import NothingMatchedError, UsageError
from pumpwatch.settings import Settings, parse_duration
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import parse_time_us


def _duration(value: str | None, default_s: float, what: str) -> float:
    return default_s if value is None else parse_duration(value, what=what)


@app.command("extract")
def extract_cmd(
    symbol: Annotated[
        str, typer.Argument(help="Upbit-style ticker, e.g. 0G (matched against each stream's base).")
    ],
    when: Annotated[
        str,
        typer.Argument(
            metavar="TIME", help="Trigger time: ISO 8601 with Z or an offset, or epoch s/ms/µs/ns."
        ),
    ],
    before: Annotated[
        str | None,
        typer.Option("--before", help="Window start before TIME, e.g. 20s. Default: extract.before."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Window end after TIME, e.g. 20s. Default: extract.after.")
    ] = None,
    streams: Annotated[
        str | None, typer.Option("--streams", help="Comma list of stream ids or exchanges. Default: all.")
    ] = None,
    no_detect: Annotated[bool, typer.Option("--no-detect", help="Skip pump detection (refined/).")] = False,
    no_chart: Annotated[
        bool, typer.Option("--no-chart", help="Detect, but do not draw refined/chart.png.")
    ] = False,
    no_backfill: Annotated[
        bool,
        typer.Option(
            "--no-backfill",
            help="Do not fill the window's gaps from the exchanges' REST history first "
            "(also repair.at_extract: false).",
        ),
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Read the window from the shared store s3://bucket/prefix (every recorder's archive, "
            "each trade once) instead of the local data directory.",
        ),
    ] = None,
    remote: Annotated[
        bool, typer.Option("--remote", help="Like --store, with the store of the settings (remote.url).")
    ] = False,
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url", help="S3-compatible endpoint http(s)://host:port. Default: remote.endpoint_url."
        ),
    ] = None,
    recorders: Annotated[
        str | None,
        typer.Option("--recorders", help="With --store/--remote: comma list of recorder ids. Default: all."),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="With --store/--remote: where the listing directory goes. Default: <data_dir>/listings.",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Cut the window around TIME for SYMBOL out of the store, then detect pumps in it.

    With --store s3://bucket/prefix (or --remote: the settings' remote.url) the window comes
    from the shared store instead (any machine, no recorder or data directory needed): only
    hours already sealed and uploaded are there; a window hour no recorder has archived yet is
    named on stderr and listed as missing (not_archived), exit 4 when that leaves no trade.

    First fills what the store is missing inside the window from the exchanges' REST trade
    history (one line per repaired stream on stderr), unless --no-backfill.
    Prints the listing directory written (data/listings/<SYMBOL>_<YYYYMMDDTHHMMSSZ>), and on
    stderr one line per stream: its trades and coverage (complete, repaired, incomplete), and
    the pumps found. Exit 4 when no selected stream has a trade of SYMBOL in the window (with
    nothing written when no stream has ever recorded it).
    """
    from pumpwatch.streams import parse_streams, user_symbol

    symbol = user_symbol(symbol)
    trigger_us = parse_time_us(when, what="TIME")
    settings = settings_from(config, data_dir)
    before_s = _duration(before, settings.extract.before_s, "--before")
    after_s = _duration(after, settings.extract.after_s, "--after")
    chosen = parse_streams(streams)
    if store is not None or remote:
        out = _extract_from_store(
            settings, symbol, trigger_us, before_s, after_s, chosen,
            store=store, endpoint_url=endpoint_url, recorders=recorders, out_dir=out_dir,
            repair=settings.repair.at_extract and not no_backfill,
        )  # fmt: skip
        _detect_and_report(out, settings, symbol, no_detect=no_detect, no_chart=no_chart)
        return
    if recorders is not None or out_dir is not None or endpoint_url is not None:
        raise UsageError("--recorders, --out and --endpoint-url go with --store or --remote")
    if settings.repair.at_extract and not no_backfill:
        _backfill(settings, symbol, trigger_us, before_s, after_s, chosen)

    from pumpwatch.extractor.extract import extract
    from pumpwatch.extractor.metadata import coverage_summary

    out = extract(settings.data_path, symbol, trigger_us, before_s=before_s, after_s=after_s, streams=chosen)
    for line in coverage_summary(out):
        typer.echo(line, err=True)
    _detect_and_report(out, settings, symbol, no_detect=no_detect, no_chart=no_chart)


def _detect_and_report(
    out: Path, settings: Settings, symbol: str, *, no_detect: bool, no_chart: bool
) -> None:
    """The detector on a listing just extracted, its line on stderr, the directory on stdout;
    exit 4 when the listing holds no trade."""
    if not no_detect:
        from pumpwatch.detector.refined import run_detector

        chart = out / "refined" / "chart.png"
        kept_chart = chart.read_bytes() if no_chart and chart.is_file() else None
        result = run_detector(out, settings.pump, chart=not no_chart)
        if kept_chart is not None and not chart.exists():
            # --no-chart means "do not draw one", not "delete the one an earlier run drew"
            from pumpwatch.atomic import write_file_atomic

            write_file_atomic(chart, kept_chart)
        typer.echo(detect_summary(result), err=True)
    typer.echo(str(out))
    if not _trades_in(out):
        typer.echo(
            f"pumpwatch: no trade of {symbol} in the window on the selected streams (coverage above)",
            err=True,
        )
        raise typer.Exit(NothingMatchedError.exit_code)


def _extract_from_store(
    settings: Settings,
    symbol: str,
    trigger_us: int,
    before_s: float,
    after_s: float,
    chosen: tuple[str, ...],
    *,
    store: str | None,
    endpoint_url: str | None,
    recorders: str | None,
    out_dir: Path | None,
    repair: bool,
) -> Path:
    """`extract --store/--remote`: the listing from the shared store (extractor/remote.py),
    its notes and coverage lines on stderr."""
    from pumpwatch.extractor.metadata import coverage_summary
    from pumpwatch.extractor.remote import extract_remote, unarchived_message
    from pumpwatch.segments.remote import remote_settings, validate_remote

    conf = remote_settings(settings)
    url = store if store is not None else conf.url
    if not url:
        raise UsageError("--remote: no remote.url in the settings (or give --store s3://bucket/prefix)")
    endpoint = conf.endpoint_url if endpoint_url is None else endpoint_url
    validate_remote(dataclasses.replace(conf, url=url, endpoint_url=endpoint, recorder_id="x"))
    ids = None
    if recorders is not None:
        from pumpwatch.segments.remote import RECORDER_ID_RE

        ids = [r.strip() for r in recorders.split(",") if r.strip()]
        bad = [r for r in ids if not RECORDER_ID_RE.match(r)]
        if not ids or bad:
            raise UsageError(f"--recorders: expected a comma list of recorder ids, got {recorders!r}")
    result = extract_remote(
        url,
        symbol,
        trigger_us,
        out_dir if out_dir is not None else settings.data_path / "listings",
        endpoint_url=endpoint,
        region=conf.region,
        before_s=before_s,
        after_s=after_s,
        streams=chosen,
        recorders=ids,
        settings=settings if repair else None,
        repair_deadline_s=settings.repair.extract_deadline_s,
    )
    for note in result.repair_notes:
        typer.echo(f"repair {note}", err=True)
    for line in unarchived_message(result.unarchived, url):
        typer.echo(f"pumpwatch: {line}", err=True)
    for line in coverage_summary(result.path):
        typer.echo(line, err=True)
    return result.path


def _trades_in(listing_dir: Path) -> int:
    import orjson

    trades = orjson.loads((listing_dir / "metadata.json").read_bytes()).get("trades")
    return trades if isinstance(trades, int) else 0


def detect_summary(result: dict[str, Any]) -> str:
    """The one line `detect` prints about a pump_analysis object (also after `extract`)."""
    summary = result["summary"]
    market = summary["first_pump_market_type"]
    return (
        f"{len(result['pump_events'])} pump event(s) on {summary['total_streams_with_pumps']} stream(s), "
        f"max {summary['max_price_change']:.2f}%, first {summary['first_pump_exchange'] or '-'}"
        f"{'_' + market if market else ''}"
    )


def _backfill(
    settings: Settings,
    symbol: str,
    trigger_us: int,
    before_s: float,
    after_s: float,
    streams: tuple[str, ...],
) -> None:
    """The extraction-time repair of the window (recorder/history/window.py), one note per
    stream it touched on stderr; stdout stays the listing directory alone."""
    import asyncio

    from pumpwatch.recorder.history.window import repair_window

    if before_s < 0 or after_s < 0 or not math.isfinite(before_s + after_s):
        return  # extract() refuses the window with its own message
    start_us = trigger_us - round(before_s * US_PER_S)
    end_us = trigger_us + round(after_s * US_PER_S)
    reports = asyncio.run(
        repair_window(
            settings,
            settings.data_path,
            symbol,
            start_us,
            end_us,
            streams=streams,
            deadline_s=settings.repair.extract_deadline_s,
        )
    )
    for report in reports.values():
        if report.attempted:
            typer.echo(f"repair {report.note()}", err=True)


@app.command("detect")
def detect_cmd(
    listing_dir: Annotated[Path, typer.Argument(help="A directory written by `pumpwatch extract`.")],
    threshold_percent: Annotated[
        float | None,
        typer.Option("--threshold-percent", help="Minimum rise. Default: pump.threshold_percent."),
    ] = None,
    window: Annotated[
        str | None, typer.Option("--window", help="Sliding window length, e.g. 1s. Default: pump.window.")
    ] = None,
    min_volume_ratio: Annotated[
        float | None,
        typer.Option(
            "--min-volume-ratio", help="Window volume vs pre-trigger average. Default: pump.min_volume_ratio."
        ),
    ] = None,
    no_chart: Annotated[bool, typer.Option("--no-chart", help="Do not draw refined/chart.png.")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-run pump detection on an extracted listing directory; rewrites its refined/ files.

    Prints one summary line and the refined/ directory.
    """
    settings = settings_from(config, data_dir)
    pump = settings.pump
    window_s = _duration(window, pump.window_s, "--window")
    if window_s <= 0:
        raise UsageError("--window must be positive")
    threshold = pump.threshold_percent if threshold_percent is None else threshold_percent
    ratio = pump.min_volume_ratio if min_volume_ratio is None else min_volume_ratio
    if threshold < 0 or ratio < 0:
        raise UsageError("--threshold-percent and --min-volume-ratio cannot be negative")

    from pumpwatch.detector.refined import run_detector

    pump = dataclasses.replace(pump, window_s=window_s, threshold_percent=threshold, min_volume_ratio=ratio)
    result = run_detector(listing_dir, pump, chart=not no_chart)
    typer.echo(detect_summary(result))
    typer.echo(str(listing_dir / "refined"))
