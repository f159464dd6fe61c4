"""Shared test helpers, one module per area; `tests/` is on the pytest path, so they import as
``from helpers.<module> import …``. Fixtures stay in each folder's ``conftest.py``; plain
functions and classes live here.

- `adapters`: recorded frames on disk, sim instruments, hypothesis strategies for the adapter tests.
- `json_exchange`: a tiny JSON exchange (adapter + sim protocol) and a runner `Harness` on 127.0.0.1.
- `store`: deterministic trade rows and exact comparisons for the segment store tests.
- `e2e`: local exchanges, a `pumpwatch record` subprocess and readers of what reached disk.
"""
