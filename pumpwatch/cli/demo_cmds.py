"""Command: demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumpwatch.cli.app import app


@app.command()
def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where to put everything. Default: a new temporary directory."),
    ] = None,
    before: Annotated[str, typer.Option(help="Extraction window before the notice.")] = "20s",
    after: Annotated[str, typer.Option(help="Extraction window after the notice.")] = "20s",
    lead: Annotated[
        str | None, typer.Option(help="Recording time before the notice. Default: before + 4 s.")
    ] = None,
    trades_per_s: Annotated[
        float, typer.Option(help="Simulated trades per second per stream and coin.")
    ] = 20.0,
) -> None:
    """Run the whole pipeline offline against local exchange and Upbit servers (~1 minute)."""
    import asyncio

    from pumpwatch.demo import DemoOptions, run_demo
    from pumpwatch.settings import parse_duration

    opts = DemoOptions(
        data_dir=data_dir,
        before_s=parse_duration(before, what="--before"),
        after_s=parse_duration(after, what="--after"),
        lead_s=parse_duration(lead, what="--lead") if lead is not None else None,
        trades_per_s=trades_per_s,
        echo=typer.echo,
    )
    asyncio.run(run_demo(opts))
