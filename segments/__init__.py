"""The store: trade schema, segment writer and reader, crash recovery, retention, journals.

Importing this package is light: pyarrow is imported by the submodules when first used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pumpwatch.segments.paths import HourlyFile, list_segments, segment_dir, segment_root

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.dataset as pads

    from pumpwatch.segments.archive import archive_pending
    from pumpwatch.segments.reader import iter_batches, read_trades
    from pumpwatch.segments.recovery import recover
    from pumpwatch.segments.remote import remote_dataset
    from pumpwatch.segments.repair import write_repaired
    from pumpwatch.segments.writer import SegmentWriter

__all__ = [
    "HourlyFile",
    "SegmentWriter",
    "archive_dataset",
    "archive_pending",
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
    "archive_pending": "pumpwatch.segments.archive",
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


def dataset(data_dir: str | os.PathLike[str], *, include_open: bool = False) -> pads.Dataset:
    """A `pyarrow.dataset.Dataset` over every sealed segment, with hive partitions as columns.

    Columns: ``exchange``, ``market``, ``date`` (from the path) and the trade columns. Repair
    files (``HHMMSS.rest<N>.arrow``) are included. Open ``_`` files are skipped (pyarrow ignores
    names starting with ``_`` or ``.``) unless `include_open` is true: then the hour being
    written is read through the segment reader up to its last complete batch, as it is at the
    time of this call, and joins the dataset (a file sealed meanwhile is counted once).

    ``source`` is null in the rows of version 1 segments (written before the column existed; they
    are all ``"ws"``): a pyarrow Dataset cannot give a missing column a default, so read it as
    ``pc.coalesce(ds.field("source"), "ws")`` or ``coalesce(source, 'ws')`` in DuckDB.
    Such files leave the store with retention (7 days by default).

    A filter on ``date``, ``exchange`` or ``market`` skips whole directories; a filter on
    ``time`` or ``base`` still reads every file it keeps. For history filtered by time or coin,
    `archive_dataset` (Parquet with row-group statistics) reads far less.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from pumpwatch.segments.schema import SEGMENT_SCHEMA

    partitions = _partition_schema()
    schema = pa.schema(list(SEGMENT_SCHEMA) + list(partitions), metadata=SEGMENT_SCHEMA.metadata)
    opened = _read_open_segments(data_dir, schema) if include_open else []  # before the listing below
    root = segment_root(data_dir)
    if not root.is_dir():  # nothing recorded yet: an empty dataset, not an error
        sealed = ds.dataset([], format="ipc", schema=schema)
    else:
        sealed = ds.dataset(
            str(root), format="ipc", partitioning=ds.partitioning(partitions, flavor="hive"), schema=schema
        )
    if not include_open:
        return sealed
    listed = {Path(f).parts[-4:] for f in sealed.files}
    tables = [table for name, table in opened if name not in listed]  # sealed since we read it: listed
    in_memory = ds.dataset(pa.concat_tables(tables) if tables else schema.empty_table(), schema=schema)
    return ds.dataset([sealed, in_memory])


def archive_dataset(data_dir: str | os.PathLike[str]) -> pads.Dataset:
    """A `pyarrow.dataset.Dataset` over the Parquet archive (``<data_dir>/archive``), with the
    hive partitions ``exchange``, ``market`` and ``date`` as string columns.

    Filters on the partitions skip files; filters on ``base`` and ``time`` skip row groups by
    their statistics (rows are sorted by base, then time). Empty when nothing is archived yet.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    from pumpwatch.segments.archive import archive_root
    from pumpwatch.segments.schema import TRADE_SCHEMA

    partitions = _partition_schema()
    schema = pa.schema(list(TRADE_SCHEMA) + list(partitions), metadata=TRADE_SCHEMA.metadata)
    root = archive_root(data_dir)
    if not root.is_dir():
        return ds.dataset([], format="parquet", schema=schema)
    return ds.dataset(
        str(root), format="parquet", partitioning=ds.partitioning(partitions, flavor="hive"), schema=schema
    )


def _partition_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([("exchange", pa.string()), ("market", pa.string()), ("date", pa.string())])


def _read_open_segments(
    data_dir: str | os.PathLike[str], schema: pa.Schema
) -> list[tuple[tuple[str, ...], pa.Table]]:
    """Each open segment's rows as they are now, in `schema` (the dataset's), keyed by the last
    four parts of the path its sealed file will have."""
    import numpy as np
    import pyarrow as pa

    from pumpwatch.segments.paths import sealed_name
    from pumpwatch.segments.reader import read_segment
    from pumpwatch.segments.schema import TRADE_SCHEMA
    from pumpwatch.streams import split_stream

    everything = (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max))
    out = []
    for seg in list_segments(data_dir):
        if seg.sealed:
            continue
        table = pa.Table.from_batches(list(read_segment(seg, *everything)), schema=TRADE_SCHEMA)
        exchange, market = split_stream(seg.stream)
        n = table.num_rows
        for name, value in (("exchange", exchange), ("market", market), ("date", seg.path.parent.name[5:])):
            table = table.append_column(name, pa.repeat(pa.scalar(value, pa.string()), n))
        out.append((sealed_name(seg.path).parts[-4:], table.cast(schema)))
    return out
