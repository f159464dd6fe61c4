"""Keep heavy optional modules out of a process that never uses them.

pyarrow imports pandas the first time it converts a numpy array (only to ask whether a value is
a pandas object): ~0.3-0.6 s and 35-52 MB of RSS, measured, for nothing in the recorder workers
and the CLI commands. pyarrow treats an ImportError as "pandas not installed". Install this only
at a process's entry point (the console script, the worker's main), never from library code,
so a Python session that imports PumpWatch keeps pandas.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from typing import Any


class _KeepOut(importlib.abc.MetaPathFinder):
    def __init__(self, names: Sequence[str], why: str) -> None:
        self.names = frozenset(names)
        self.why = why

    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is not used {self.why}", name=fullname)
        return None  # not ours: the next finder looks


def keep_out(names: Sequence[str], why: str) -> None:
    """Make importing any of `names` (not yet imported) fail in this process from now on."""
    if any(isinstance(f, _KeepOut) for f in sys.meta_path):
        return
    pending = [n for n in names if n not in sys.modules]
    if pending:
        sys.meta_path.insert(0, _KeepOut(pending, why))
