"""Shared test helpers, one module per area; `tests/` is on the pytest path, so they import as
``from helpers.<module> import …``. Fixtures stay in each folder's ``conftest.py``; plain
functions and classes live here.

- `adapters`: recorded frames on disk, sim instruments, hypothesis strategies for the adapter tests.
- `json_exchange`: a tiny JSON exchange (adapter + sim protocol) and a runner `Harness` on 127.0.0.1.
- `store`: deterministic trade rows and exact comparisons for the segment store tests.
- `e2e`: local exchanges, a `pumpwatch record` subprocess and readers of what reached disk.
- `history`: REST history test world: instruments, trades published to a local exchange, a store
  and journal stand-in for `repair()`, fast budgets.
- `history_faults`: a small local proxy in front of a sim exchange for faults the sim cannot make.
- `window_world`: a store with a gap inside a window, for extraction-time repair tests.
"""
