"""Command: listings — recent Upbit notices and how each one parses (DESIGN §10)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pumpwatch.cli.app import ConfigOpt, DataDirOpt, app, settings_from
from pumpwatch.errors import ParseError, PumpWatchError, UsageError


def notice_rows(body: bytes) -> list[dict[str, Any]]:
    """One dict per notice of an announcements response: the `--json` object, plus ``kind``."""
    from pumpwatch.recorder.upbit.notices import parse_page
    from pumpwatch.recorder.upbit.titles import is_valid_symbol, parse_title
    from pumpwatch.utctime import format_utc

    page = parse_page(body)
    rows = []
    for notice in page.notices:
        info = parse_title(notice.title)
        symbols = [s for s in info.krw_symbols if is_valid_symbol(s)]
        if info.is_listing:
            kind = "listing" if symbols else "listing without KRW"
        else:
            kind = info.vetoed or "other"
        rows.append(
            {
                "id": notice.id,
                "title": notice.title,
                "first_listed_at": format_utc(notice.first_listed_at_us),
                "krw_listing": bool(symbols),
                "symbols": symbols,
                "kind": kind,
            }
        )
    return rows


def _fetch_live(config: Path | None, data_dir: Path | None) -> bytes:
    import asyncio

    import httpx

    from pumpwatch.recorder.upbit.poller import NoticePoller

    settings = settings_from(config, data_dir)

    async def once() -> bytes:
        async with httpx.AsyncClient(timeout=httpx.Timeout(settings.upbit.timeout_s)) as client:
            poller = NoticePoller(settings.upbit, client=client)
            last = "no host configured"
            for host in settings.upbit.hosts:
                try:
                    resp = await client.get(
                        poller.url(host), params=poller.params(), headers=poller.headers(host)
                    )
                except httpx.HTTPError as exc:
                    last = f"{host}: {type(exc).__name__}"
                    continue
                if resp.status_code == 200:
                    return resp.content
                last = f"{host}: HTTP {resp.status_code}"
            raise PumpWatchError(f"could not read Upbit notices ({last})")

    return asyncio.run(once())


def _watch(config: Path | None, data_dir: Path | None) -> None:
    import asyncio
    import signal

    from pumpwatch.logsetup import setup_logging
    from pumpwatch.recorder.upbit.service import run_listing_service

    settings = settings_from(config, data_dir)
    settings.upbit.enabled = True
    setup_logging(settings, "listings")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_listing_service(settings, stop)

    asyncio.run(main())


@app.command("listings")
def listings_cmd(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Parse a saved announcements response instead of polling Upbit.", dir_okay=False
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="One JSON object per notice: id, title, first_listed_at, krw_listing, symbols."
        ),
    ] = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Run the listing watcher alone (poll, fire, extract from the store) until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Show recent Upbit notices and how each parses (one poll of upbit.hosts, or --file)."""
    if watch:
        _watch(config, data_dir)
        return
    if file is not None:
        try:
            body = file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror or exc}") from None
    else:
        body = _fetch_live(config, data_dir)
    try:
        rows = notice_rows(body)
    except ParseError as exc:
        where = file if file is not None else "the Upbit response"
        raise UsageError(f"{where} is not an Upbit announcements response: {exc}") from None
    for row in rows:
        if as_json:
            keys = ("id", "title", "first_listed_at", "krw_listing", "symbols")
            typer.echo(json.dumps({k: row[k] for k in keys}, ensure_ascii=False))
        else:
            symbols = ",".join(row["symbols"]) or "-"
            krw = "KRW" if row["krw_listing"] else "-"
            head = f"{row['id']:>6}  {row['first_listed_at']}  {krw:<3}  {symbols:<14}  {row['kind']:<20}"
            typer.echo(f"{head}  {row['title']}")
