"""Seal what a killed worker left, at once: the supervisor runs

    python -m pumpwatch.recorder.killed --data-dir DIR --streams a,b [--crashed]

after it had to kill a worker at shutdown (it ignored SIGTERM for 30 s). It runs
`segments.recovery.recover` for those streams (pyarrow stays out of the supervisor) and, with
``--crashed``, journals ``crashed`` with the bound of what reached the disk (`worker.crash_bound`)
for each stream whose run ended without ``stop``, instead of leaving both to the next start.
"""

from __future__ import annotations

import logging

from pumpwatch.errors import StoreError
from pumpwatch.recorder.worker import crash_bound
from pumpwatch.segments.recovery import recover
from pumpwatch.streams import split_stream

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """``python -m pumpwatch.recorder.killed``: see the module docstring."""
    import argparse

    from pumpwatch.logsetup import LINE_FORMAT

    parser = argparse.ArgumentParser(prog="pumpwatch-recover", description="Seal what dead writers left.")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--streams", required=True, help="comma list of stream ids")
    parser.add_argument("--crashed", action="store_true", help="journal `crashed` for runs without `stop`")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LINE_FORMAT)  # stderr: the supervisor's log
    streams = [s for s in args.streams.split(",") if s]
    for stream in streams:
        split_stream(stream)
    try:
        recover(args.data_dir, streams)
    except StoreError as exc:
        log.error("recovery failed: %s", exc)
        return exc.exit_code
    if args.crashed:
        from pumpwatch.segments.journal import EventJournal

        for stream in streams:
            bound = crash_bound(args.data_dir, stream)
            if bound is not None:
                with EventJournal(args.data_dir, stream) as journal:
                    journal.crashed(*bound)
                log.warning("%s: the killed run is on disk up to %d (journaled as crashed)", stream, bound[0])
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
