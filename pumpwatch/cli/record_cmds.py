"""Commands: record, symbols, normalize, reparse."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import ConfigError, UsageError
from pumpwatch.settings import Settings
from pumpwatch.streams import parse_streams, split_stream
from pumpwatch.timeunits import US_PER_S
from pumpwatch.utctime import parse_time_us

if TYPE_CHECKING:
    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.recorder.symbols_fetch import RefreshReport

StreamsOpt = Annotated[
    str | None,
    typer.Option("--streams", help="Comma list of stream ids or exchange names. Default: recorder.streams."),
]


def _instruments(settings: Settings, stream: str, *, required: bool) -> dict[str, Instrument]:
    from pumpwatch.recorder.symbols import load_symbols

    path = Path(settings.recorder.symbols_file)  # absolute: resolved when the settings loaded
    if not path.exists():
        if required:
            raise ConfigError(f"no subscription list at {path}; run `pumpwatch symbols` first")
        typer.echo(
            f"pumpwatch: warning: no subscription list at {path}; contract multipliers unknown", err=True
        )
        return {}
    return dict(load_symbols(path).get(stream, {}))


@app.command()
def record(config: ConfigOpt = None, data_dir: DataDirOpt = None, streams: StreamsOpt = None) -> None:
    """Record every trade of the selected streams until SIGTERM/SIGINT (one worker per exchange)."""
    import os
    import sys

    from pumpwatch.recorder.preflight import check_record

    settings = settings_from(config, data_dir)  # bad input stops here, as one line
    chosen = parse_streams(streams if streams is not None else settings.recorder.streams)
    check_record(settings, chosen)  # so do bad adapter options and a bad subscription list
    # The always-on process becomes the lean supervisor entry point (same pid, so signals and
    # service managers see no difference): the CLI layer (typer, pydantic) would otherwise stay
    # in memory for the life of the recording.
    argv = [sys.executable, "-m", "pumpwatch.recorder.supervisor", "--data-dir", settings.data_dir]
    argv += ["--streams", ",".join(chosen)]
    if config is not None:
        argv += ["--config", str(config)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Print nothing but a change in the failing streams (for periodic runs: record's refresh).",
    ),
]


@app.command()
def symbols(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, streams: StreamsOpt = None, quiet: QuietOpt = False
) -> None:
    """Refresh the subscription list (recorder.symbols_file) from the exchanges and Upbit.

    A stream whose list cannot be fetched keeps its previous list; the command then exits 1
    naming every such stream."""
    import asyncio

    from pumpwatch.logsetup import setup_logging
    from pumpwatch.recorder.symbols_fetch import refresh_symbols

    settings = settings_from(config, data_dir)
    chosen = parse_streams(streams if streams is not None else settings.recorder.streams)
    setup_logging(settings, "symbols", to_file=False)
    report = asyncio.run(refresh_symbols(settings, streams=chosen))
    if not quiet:
        _print_refresh(report)
    if report.failed:
        # Exit 1 naming every stream that kept an old (or no) list: a cron job or the
        # supervisor must not take a partial refresh for a good one.
        if not quiet or report.failures_changed:
            failed = ", ".join(sorted(report.failed))
            typer.echo(f"pumpwatch: error: instrument list failed for {failed}", err=True)
        raise typer.Exit(1)


def _print_refresh(report: RefreshReport) -> None:
    for stream, count in report.counts.items():
        note = (
            f"  (REST failed, previous list kept: {report.failed[stream]})" if stream in report.failed else ""
        )
        typer.echo(f"{stream:<16} {count:>5} instruments{note}")
    for stream in report.failed.keys() - report.counts.keys():
        typer.echo(f"{stream:<16}     - (REST failed, no previous list: {report.failed[stream]})")
    krw = "unavailable, previous kept" if report.upbit_krw is None else f"{report.upbit_krw} bases"
    typer.echo(f"Upbit KRW: {krw}")
    typer.echo(f"{'written' if report.written else 'unchanged'}: {report.path}")


@app.command()
def normalize(
    stream: Annotated[str, typer.Argument(help="Stream id, e.g. okx_futures.")],
    file: Annotated[
        Path | None, typer.Argument(help="Frames, one per line. Default: stdin.", dir_okay=False)
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    recv_time: Annotated[
        str | None,
        typer.Option(
            "--recv-time",
            help="Receive time to assume for raw lines (ISO 8601 with a zone, or epoch s/ms/µs/ns). "
            "Default: now. "
            "Parsers refuse trades more than a day from it, so set it for old captures.",
        ),
    ] = None,
) -> None:
    """Raw frames (one per line, or frame-journal lines) in, normalized trades out as NDJSON."""
    from pumpwatch.recorder.normalize import normalize_lines
    from pumpwatch.recorder.preflight import build_adapter

    split_stream(stream)
    fixed_recv_us = parse_time_us(recv_time, what="--recv-time") if recv_time is not None else None
    settings = settings_from(config, data_dir)
    adapter = build_adapter(stream, settings.streams[stream].options)
    instruments = _instruments(settings, stream, required=False)
    out = sys.stdout.buffer
    clock = (lambda: fixed_recv_us) if fixed_recv_us is not None else (lambda: time.time_ns() // 1000)
    if file is None:
        report = normalize_lines(adapter, instruments, sys.stdin.buffer, out, clock_us=clock)
    else:
        try:
            fh = open(file, "rb")  # noqa: SIM115 - closed right below, also on error
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
        with fh:
            report = normalize_lines(adapter, instruments, fh, out, clock_us=clock)
    out.flush()
    typer.echo(
        f"{report.lines} frames: {report.trades} trades, {report.controls} control, {report.bad_frames} bad"
        + (f" (first: {report.first_error})" if report.first_error else ""),
        err=True,
    )


@app.command()
def reparse(
    stream: Annotated[str, typer.Option("--stream", help="Stream id to rebuild.")],
    start: Annotated[
        str, typer.Option("--start", help="Range start: ISO 8601 with a zone, or epoch s/ms/µs/ns.")
    ],
    end: Annotated[str, typer.Option("--end", help="Range end (exclusive).")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Rebuild a stream's segments for [start, end) from the raw frame journal."""
    from pumpwatch.logsetup import setup_logging
    from pumpwatch.recorder.preflight import build_adapter
    from pumpwatch.recorder.reparse import reparse as run_reparse

    split_stream(stream)
    start_us, end_us = parse_time_us(start, what="--start"), parse_time_us(end, what="--end")
    if end_us <= start_us:
        raise UsageError("--end must be after --start")
    settings = settings_from(config, data_dir)
    setup_logging(settings, "reparse", to_file=False)
    adapter = build_adapter(stream, settings.streams[stream].options)
    instruments = _instruments(settings, stream, required=True)
    report = run_reparse(
        settings.data_dir, stream, start_us, end_us, adapter=adapter, instruments=instruments
    )
    for hour in report.hours:
        stamp = datetime.fromtimestamp(hour.hour_us / US_PER_S, UTC).isoformat(timespec="seconds")
        typer.echo(
            f"{stamp}  {hour.status:<18} rows {hour.rows_before} -> {hour.rows_after}  frames {hour.frames}"
        )
    typer.echo(
        f"{stream}: {report.frames} frames, {report.trades} trades, {report.duplicates} duplicates dropped, "
        f"{report.bad_frames} bad frames"
    )
