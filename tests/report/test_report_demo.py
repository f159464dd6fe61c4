"""The demo ends by pointing at the report of its listing (pumpwatch/demo.py `_summary`, run
here on the generated store instead of a minute of live recording; tests/demo runs it whole)."""

from __future__ import annotations

from pathlib import Path

import orjson

from pumpwatch.demo import _summary


def test_demo_summary_ends_with_the_report(listings_store: tuple[Path, dict[str, Path]]) -> None:
    root, dirs = listings_store
    lines: list[str] = []
    meta = orjson.loads((dirs["0G"] / "metadata.json").read_bytes())
    result = _summary(root, dirs["0G"], meta["trigger_time_us"], lines.append)
    index = root / "report" / "index.html"
    assert lines[-1].startswith(f"  report:  {index}")
    assert result.extra["report"] == index and index.is_file()
    study = orjson.loads((root / "report" / "report.json").read_bytes())
    assert dirs["0G"].name in [lst["listing"] for lst in study["listings"]]
    assert f'data-listing="{dirs["0G"].name}"' in index.read_text()
