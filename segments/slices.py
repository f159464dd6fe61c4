"""A trades table cut into one slice per stream, the way the store orders them."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from pumpwatch.streams import STREAMS


def stream_slices(table: pa.Table) -> dict[str, pa.Table]:
    """``{stream: rows}`` of a table with ``exchange`` and ``market`` columns, each sorted by
    time (then receive time when present), streams in `STREAMS` order.

    Works with Arrow-side sorts and zero-copy slices only: converting a Python or numpy value
    to Arrow makes pyarrow import pandas, which alone costs more than an extraction.
    """
    keys = [("exchange", "ascending"), ("market", "ascending"), ("time", "ascending")]
    if "recv_time" in table.column_names:
        keys.append(("recv_time", "ascending"))
    ordered = table.sort_by(keys)
    out: dict[str, pa.Table] = {}
    if ordered.num_rows == 0:
        return out
    ex_names, ex_idx = _codes(ordered.column("exchange"))
    mk_names, mk_idx = _codes(ordered.column("market"))
    key = ex_idx * (len(mk_names) + 1) + mk_idx
    cuts = [0, *(np.flatnonzero(np.diff(key)) + 1).tolist(), ordered.num_rows]
    found = {
        f"{ex_names[ex_idx[a]]}_{mk_names[mk_idx[a]]}": ordered.slice(a, b - a)
        for a, b in itertools.pairwise(cuts)
    }
    for stream in STREAMS:
        if stream in found:
            out[stream] = found[stream]
    return out


def _codes(column: pa.ChunkedArray) -> tuple[list[str], np.ndarray]:
    """A string column as (distinct values, per-row index into them), via a dictionary."""
    enc = column.combine_chunks()
    if not pa.types.is_dictionary(enc.type):
        enc = enc.dictionary_encode()
    return enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
