"""`pumpwatch report`: the study across listings written as a directory that opens from disk:

```
<out>/index.html       the page (overview, per exchange and market, figures, one section per listing)
<out>/report.json      the same numbers (detector/study.py), for notebooks
<out>/listings.csv     the overview, one row per listing
<out>/streams.csv      per exchange and market
<out>/events.csv       every pump event
<out>/img/*.png        the figures
<out>/charts/*.png     each listing's refined/chart.png (hard-linked where possible)
```

The directory is built under a temporary name and swapped in whole (pumpwatch.atomic)."""

from __future__ import annotations

import csv
import io
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pumpwatch.atomic import json_bytes, make_temp_dir, replace_dir, write_bytes
from pumpwatch.detector.study import read_listings, study
from pumpwatch.detector.study_page import anchor, render_page
from pumpwatch.errors import UsageError

LISTING_COLUMNS = (
    "listing", "symbol", "trigger_time_us", "trigger_utc", "trigger_kst", "source", "notice_id",
    "notice_title", "detected", "trades", "streams_total", "streams_complete", "streams_repaired",
    "streams_incomplete", "streams_unknown", "incomplete_streams", "unknown_streams", "streams_pumped",
    "pumped_streams", "first_pump_stream", "first_pump_lag_ms", "first_pump_certain", "first_pump_doubt",
    "first_seen_stream", "first_seen_lag_ms", "max_rise_percent", "max_volume_ratio", "pump_duration_ms",
)  # fmt: skip
STREAM_COLUMNS = (
    "stream", "exchange", "market", "listings", "whole", "incomplete", "unknown", "left_out", "pumped",
    "pumped_left_out", "first", "first_share", "lag_ms_n", "lag_ms_median", "lag_ms_q1", "lag_ms_q3",
    "rise_percent_n", "rise_percent_median", "rise_percent_q1", "rise_percent_q3", "pump_volume_share",
    "pump_volume_share_n",
)  # fmt: skip
EVENT_COLUMNS = (
    "listing", "symbol", "stream", "exchange", "market", "start_time_us", "lag_ms", "duration_ms",
    "rise_percent", "volume_spike_ratio", "volume", "trades", "coverage", "whole",
)  # fmt: skip


@dataclass
class Report:
    out_dir: Path
    study: dict[str, Any]

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"


def _csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buf.getvalue().encode()


def _listing_rows(listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **lst,
            "source": lst["source"]["kind"],
            "notice_id": lst["source"].get("notice_id"),
            "notice_title": lst["source"].get("title"),
            "incomplete_streams": " ".join(lst["incomplete_streams"]),
            "unknown_streams": " ".join(lst["unknown_streams"]),
            "first_pump_doubt": " ".join(lst["first_pump_doubt"]),
            "pumped_streams": " ".join(lst["pumped_streams"]),
        }
        for lst in listings
    ]


def _stream_rows(streams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in streams:
        row = dict(s)
        for key in ("lag_ms", "rise_percent"):
            for part in ("n", "median", "q1", "q3"):
                row[f"{key}_{part}"] = s[key][part]
        rows.append(row)
    return rows


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a directory that is not an earlier report (it would be swapped away)."""
    if out_dir.exists() and (
        not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "report.json").is_file())
    ):
        raise UsageError(f"--out {out_dir} exists and is not a PumpWatch report; choose another directory")


def write_report(
    listings_dir: str | Path,
    out_dir: str | Path,
    *,
    since_us: int | None = None,
    now: datetime | None = None,
) -> Report:
    """Read every listing under `listings_dir` (triggered at or after `since_us` if given) and
    write the report directory `out_dir` (replaced whole). Returns it with the study object
    that report.json holds."""
    listings_dir, out_dir = Path(listings_dir), Path(out_dir)
    _check_out_dir(out_dir)
    from pumpwatch.detector.study_plots import draw_figures

    found = read_listings(listings_dir, since_us=since_us)
    numbers = study(found.found, found.skipped)
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {"generated_at": generated, "listings_dir": str(listings_dir), "since_us": since_us, **numbers}
    tmp = make_temp_dir(out_dir)
    try:
        (tmp / "img").mkdir()
        (tmp / "charts").mkdir()
        figures = draw_figures(numbers, tmp / "img")
        charts: dict[str, str] = {}
        for k, lf in enumerate(found.found):
            if lf.chart is not None:
                name = f"{anchor(k, lf.name)}.png"
                _link_or_copy(lf.chart, tmp / "charts" / name)
                charts[lf.name] = f"charts/{name}"
        write_bytes(tmp / "report.json", json_bytes(doc))
        write_bytes(tmp / "listings.csv", _csv(LISTING_COLUMNS, _listing_rows(numbers["listings"])))
        write_bytes(tmp / "streams.csv", _csv(STREAM_COLUMNS, _stream_rows(numbers["streams"])))
        write_bytes(tmp / "events.csv", _csv(EVENT_COLUMNS, numbers["events"]))
        page = render_page(numbers, figures, charts, generated_at=generated.replace("T", " ")[:-1] + " UTC")
        write_bytes(tmp / "index.html", page.encode())
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Report(out_dir, doc)
