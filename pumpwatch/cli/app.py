"""The typer application and the options every command shares (DESIGN §10).

Command modules import `app` from here and register their commands. They import heavy
libraries (pyarrow, matplotlib, websockets) inside the command body, so `pumpwatch --help`
and a short command start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumpwatch.settings import Settings, load_settings

app = typer.Typer(
    name="pumpwatch",
    help="Record every public trade on twelve exchange streams; cut the window around an Upbit KRW listing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="PUMPWATCH_CONFIG",
        help="Settings file (YAML). Default: built-in defaults.",
        dir_okay=False,
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="PUMPWATCH_DATA_DIR", help="Data root. Default: ./data", file_okay=False
    ),
]


def settings_from(config: Path | None, data_dir: Path | None) -> Settings:
    """Load settings once per command from the shared options."""
    return load_settings(config, str(data_dir) if data_dir is not None else None)


def _print_version(value: bool) -> None:
    if value:
        from pumpwatch import __version__

        typer.echo(f"pumpwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # No docstring: the application's help text stays the one given to typer.Typer above.
    pass


@app.command()
def version() -> None:
    """Print the PumpWatch version."""
    from pumpwatch import __version__

    typer.echo(__version__)
