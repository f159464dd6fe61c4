"""`pumpwatch` command line: thin wrappers that parse, load settings once, call one function."""

from __future__ import annotations

import sys

# Each module registers its commands on `app` when imported.
from pumpwatch.cli import (  # noqa: F401
    archive_cmds,
    demo_cmds,
    extract_cmds,
    listings_cmds,
    record_cmds,
    remote_cmds,
    report_cmds,
    store_cmds,
)
from pumpwatch.cli.app import app
from pumpwatch.errors import PumpWatchError


def main() -> None:
    """Console entry point: a PumpWatchError becomes one line on stderr and its exit code."""
    from pumpwatch.importblock import keep_out

    # No command uses pandas; pyarrow would import it on its first numpy conversion (see there).
    keep_out(("pandas",), "by the pumpwatch commands")
    try:
        app()
    except PumpWatchError as exc:
        print(f"pumpwatch: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
