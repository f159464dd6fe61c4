"""The store: trade schema, segment writer and reader, crash recovery, retention, journals.

Importing this package is light: pyarrow is imported by the submodules when first used.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from pumpwatch.segments.paths import HourlyFile, list_segments, segment_dir, segment_root

if TYPE_CHECKING:
    import pyarrow.dataset as pads

    from pumpwatch.segments.reader import iter_batches, read_trades
    from pumpwatch.segments.recovery import recover
    from pumpwatch.segments.remote import remote_dataset
    from pumpwatch.segments.repair import write_repaired
    from pumpwatch.segments.writer import SegmentWriter

__all__ = [
    "HourlyFile",
    "SegmentWriter",
    "dataset",
    "iter_batches",
    "list_segments",
    "read_trades",
    "recover",
    "remote_dataset",
    "segment_dir",
    "segment_root",
    "write_repaired",
]

_LAZY = {
    "SegmentWriter": "pumpwatch.segments.writer",
    "read_trades": "pumpwatch.segments.reader",
    "iter_batches": "pumpwatch.segments.reader",
    "recover": "pumpwatch.segments.recovery",
    "remote_dataset": "pumpwatch.segments.remote",
    "write_repaired": "pumpwatch.segments.repair",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def dataset(data_dir: str | os.PathLike[str]) -> pads.Dataset:
    """A `pyarrow.dataset.Dataset` over every sealed segment, with hive partitions as columns.

    Columns: ``exchange``, ``market``, ``date`` (from the path) and the trade columns. Open
    ``_`` files are skipped (pyarrow ignores names starting with ``_`` or ``.``); repair files
    (``HHMMSS.rest<N>.arrow``) are included. ``source`` is null in the rows of version 1
    segments (written before the column existed; they are all ``"ws"``): a pyarrow Dataset
    cannot give a missing column a default, so read it as
    ``pc.coalesce(ds.field("source"), "ws")`` or ``coalesce(source, 'ws')`` in DuckDB.
    Such files leave the store with retention (7 days by default).
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from pumpwatch.segments.schema import SEGMENT_SCHEMA

    partitioning = ds.partitioning(
        pa.schema([("exchange", pa.string()), ("market", pa.string()), ("date", pa.string())]),
        flavor="hive",
    )
    schema = pa.schema(list(SEGMENT_SCHEMA) + list(partitioning.schema), metadata=SEGMENT_SCHEMA.metadata)
    root = segment_root(data_dir)
    if not root.is_dir():  # nothing recorded yet: an empty dataset, not an error
        return ds.dataset([], format="ipc", schema=schema)
    return ds.dataset(str(root), format="ipc", partitioning=partitioning, schema=schema)
