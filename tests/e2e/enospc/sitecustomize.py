"""Test-only: a full disk injected into `pumpwatch record` and its workers where no small file
system can be mounted (``tests/e2e/test_disk_full_e2e.py`` puts this directory on PYTHONPATH).

While the file named by ``PUMPWATCH_TEST_ENOSPC_FLAG`` exists, every segment batch write
(`ChecksumFileWriter.write_batch`) fails with ENOSPC, as on a full disk. The module is patched
when it is first imported, so processes that never load pyarrow (the supervisor) stay free of it.
"""

from __future__ import annotations

import errno
import importlib.abc
import importlib.util
import os
import sys
from typing import Any

_FLAG = os.environ.get("PUMPWATCH_TEST_ENOSPC_FLAG")
_TARGET = "pumpwatch.segments.checksum"


def _patch(module: Any) -> None:
    orig = module.ChecksumFileWriter.write_batch

    def write_batch(self: Any, batch: Any, metadata: Any) -> None:
        if _FLAG and os.path.exists(_FLAG):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        orig(self, batch, metadata)

    module.ChecksumFileWriter.write_batch = write_batch


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_patch(module: Any) -> None:
            exec_module(module)
            _patch(module)

        loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if _FLAG:
    sys.meta_path.insert(0, _Finder())
