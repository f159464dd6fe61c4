"""The figures of `pumpwatch report` (matplotlib Agg, headless, PNG without date metadata so
the same study draws the same bytes): distributions of lag after T, pump rise and pump
duration over every pump event, first-pump lag per stream, and the timeline of listings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pumpwatch.timeunits import US_PER_S

FIGURES = {
    "lag.png": "Lag of each pump's start after T",
    "rise.png": "Rise of each pump",
    "duration.png": "Duration of each pump",
    "streams.png": "First-pump lag after T, per stream",
    "timeline.png": "Listings over time",
}


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def _hist(plt: Any, values: list[float], xlabel: str, title: str, path: Path, color: str) -> None:
    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color=color, alpha=0.85)
    else:
        ax.text(0.5, 0.5, "no pump events", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{title} (n={len(values)})", fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def draw_figures(study: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write the report's figures into `out_dir`; returns ``{file name: caption}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    events = study["events"]
    lag_s = [e["lag_ms"] / 1000.0 for e in events]
    _hist(plt, lag_s, "seconds after T (negative: before T)", FIGURES["lag.png"], out_dir / "lag.png", "C0")
    rises = [e["rise_percent"] for e in events]
    _hist(plt, rises, "rise, % (peak vs start of the pump)", FIGURES["rise.png"], out_dir / "rise.png", "C3")
    durations = [e["duration_ms"] / 1000.0 for e in events]
    _hist(plt, durations, "seconds, first to last trade of the pump", FIGURES["duration.png"],
          out_dir / "duration.png", "C2")  # fmt: skip

    streams = [s for s in study["streams"] if s["pumped"]]
    fig, ax = plt.subplots(figsize=(10.6, 3.4), dpi=100)
    data = [
        [st["first_pump_lag_ms"] / 1000.0 for lst in study["listings"] for st in lst["streams"]
         if st["stream"] == s["stream"] and st["first_pump_lag_ms"] is not None]
        for s in streams
    ]  # fmt: skip
    if streams:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(streams) + 1), [s["stream"] for s in streams], rotation=30, ha="right",
                      fontsize=8)  # fmt: skip
    else:
        ax.text(0.5, 0.5, "no pump events", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(FIGURES["streams.png"], fontsize=10)
    ax.set_ylabel("seconds after T")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, out_dir / "streams.png")

    fig, ax = plt.subplots(figsize=(10.6, 3.2), dpi=100)
    listings = study["listings"]
    if listings:
        for kind, color, marker in (("upbit", "C0", "o"), ("manual", "C1", "s")):
            rows = [lst for lst in listings if lst["source"]["kind"] == kind]
            if not rows:
                continue
            x = mdates.date2num(
                [datetime.fromtimestamp(lst["trigger_time_us"] / US_PER_S, UTC) for lst in rows]
            )
            y = [lst["max_rise_percent"] or 0.0 for lst in rows]
            size = [16 + 10 * lst["streams_pumped"] for lst in rows]
            ax.scatter(x, y, s=size, c=color, marker=marker, alpha=0.7, label=f"{kind} ({len(rows)})")
        ax.margins(x=0.04, y=0.12)
        ax.legend(loc="best", fontsize=8)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("trigger time, UTC")
    else:
        ax.text(0.5, 0.5, "no listings", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(
        f"{FIGURES['timeline.png']}: max rise (0 = no pump), size = streams that pumped", fontsize=10
    )
    ax.set_ylabel("max rise, %")
    ax.grid(True, alpha=0.3)
    _save(fig, out_dir / "timeline.png")
    return dict(FIGURES)
