"""The report directory's permissions follow the umask (pumpwatch.atomic.make_temp_dir), as
every other directory PumpWatch writes: 0755 under 022, nothing for others under 027."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pumpwatch.detector.report import write_report


@pytest.mark.parametrize(("umask", "dir_mode"), [(0o027, 0o750), (0o022, 0o755)])
def test_report_dir_follows_the_umask(
    listings_store: tuple[Path, dict[str, Path]], tmp_path: Path, umask: int, dir_mode: int
) -> None:
    root, _ = listings_store
    old = os.umask(umask)
    try:
        out = write_report(root / "listings", tmp_path / "report").out_dir
    finally:
        os.umask(old)
    for d in (out, out / "img", out / "charts"):
        assert stat.S_IMODE(d.stat().st_mode) == dir_mode, d
    for f in (out / "index.html", out / "report.json", out / "img" / "lag.png"):
        assert stat.S_IMODE(f.stat().st_mode) & 0o777 & umask == 0, f
