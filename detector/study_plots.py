"""The figures of `pumpwatch report` (matplotlib Agg, headless, PNG without date metadata so
the same study draws the same bytes): distributions of lag after T, pump rise and pump
duration over the pump events of whole streams, first-pump lag per stream (whole streams
only; detector/study.py says why), and the timeline of listings. Each figure's title says how
many were left out."""

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
LEFT_OUT = "pump(s) on streams with a gap or unknown coverage left out"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def _hist(
    plt: Any, values: list[float], xlabel: str, title: str, path: Path, color: str, left_out: int
) -> str:
    """Draw one histogram; returns its caption (the title on one line)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.0), dpi=100)
    if values:
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color=color, alpha=0.85)
    else:
        ax.text(0.5, 0.5, "no pump events", ha="center", va="center", transform=ax.transAxes)
    title = f"{title} (n={len(values)}"
    ax.set_title(title + (f";\n{left_out} {LEFT_OUT})" if left_out else ")"), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events")
    ax.grid(True, alpha=0.3)
    _save(fig, path)
    return title + (f"; {left_out} {LEFT_OUT})" if left_out else ")")


TIMELINE_KEY = (
    "largest pump rise per listing (size = streams that pumped; hollow = a stream not whole; | = no pump)"
)


def timeline_series(listings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timeline's point sets: per source and per whole / not whole (a stream incomplete or
    of unknown coverage: hollow markers), the listings with a pump at their largest rise; the
    listings without one (or not detected) apart, as ticks on the time axis, never as a rise
    of 0."""
    out = []
    pumped = [lst for lst in listings if lst["events"]]
    for kind, color, marker in (("upbit", "C0", "o"), ("manual", "C1", "s")):
        for whole in (True, False):
            rows = [
                lst for lst in pumped
                if lst["source"]["kind"] == kind
                and whole == (not lst["streams_incomplete"] and not lst["streams_unknown"])
            ]  # fmt: skip
            if rows:
                out.append({
                    "listings": rows, "no_pump": False, "whole": whole, "color": color, "marker": marker,
                    "rise": [lst["max_rise_percent"] for lst in rows],
                    "size": [16 + 10 * lst["streams_pumped"] for lst in rows],
                    "label": f"{kind}" + ("" if whole else ", a stream not whole") + f" ({len(rows)})",
                })  # fmt: skip
    quiet = [lst for lst in listings if not lst["events"]]
    if quiet:
        out.append({"listings": quiet, "no_pump": True, "label": f"no pump / not detected ({len(quiet)})"})
    return out


def _dates(mdates: Any, listings: list[dict[str, Any]]) -> Any:
    return mdates.date2num(
        [datetime.fromtimestamp(lst["trigger_time_us"] / US_PER_S, UTC) for lst in listings]
    )


def draw_figures(study: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """Write the report's figures into `out_dir`; returns ``{file name: caption}`` (with the
    counts: n, and how many were left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    events = [e for e in study["events"] if e["whole"]]
    left_out = len(study["events"]) - len(events)
    lag_s = [e["lag_ms"] / 1000.0 for e in events]
    captions = dict(FIGURES)
    captions["lag.png"] = _hist(plt, lag_s, "seconds after T (negative: before T)", FIGURES["lag.png"],
                                out_dir / "lag.png", "C0", left_out)  # fmt: skip
    rises = [e["rise_percent"] for e in events]
    captions["rise.png"] = _hist(plt, rises, "rise, % (peak vs start of the pump)", FIGURES["rise.png"],
                                 out_dir / "rise.png", "C3", left_out)  # fmt: skip
    durations = [e["duration_ms"] / 1000.0 for e in events]
    captions["duration.png"] = _hist(
        plt, durations, "seconds, first to last trade of the pump", FIGURES["duration.png"],
        out_dir / "duration.png", "C2", left_out,
    )  # fmt: skip

    streams = [s for s in study["streams"] if s["pumped"]]
    fig, ax = plt.subplots(figsize=(10.6, 3.4), dpi=100)
    data = [
        [st["first_pump_lag_ms"] / 1000.0 for lst in study["listings"] for st in lst["streams"]
         if st["stream"] == s["stream"] and st["whole"] and st["first_pump_lag_ms"] is not None]
        for s in streams
    ]  # fmt: skip
    if streams:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(streams) + 1), [s["stream"] for s in streams], rotation=30, ha="right",
                      fontsize=8)  # fmt: skip
    else:
        ax.text(0.5, 0.5, "no pump events", ha="center", va="center", transform=ax.transAxes)
    stream_left_out = sum(s["pumped_left_out"] for s in study["streams"])
    captions["streams.png"] = (
        FIGURES["streams.png"]
        + " (whole streams only"
        + (f"; {stream_left_out} {LEFT_OUT})" if stream_left_out else ")")
    )
    ax.set_title(captions["streams.png"], fontsize=10)
    ax.set_ylabel("seconds after T")
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, out_dir / "streams.png")

    fig, ax = plt.subplots(figsize=(10.6, 3.2), dpi=100)
    listings = study["listings"]
    if listings:
        for series in timeline_series(listings):
            x = _dates(mdates, series["listings"])
            if series["no_pump"]:
                ax.plot(x, [0.0] * len(x), linestyle="none", marker="|", markersize=14, color="0.45",
                        label=series["label"])  # fmt: skip
                continue
            style = {"c": series["color"]} if series["whole"] else {"facecolors": "none"}
            ax.scatter(x, series["rise"], s=series["size"], marker=series["marker"], alpha=0.7,
                       edgecolors=series["color"], label=series["label"], **style)  # fmt: skip
        ax.margins(x=0.04, y=0.12)
        ax.legend(loc="best", fontsize=8)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        ax.set_xlabel("trigger time, UTC")
    else:
        ax.text(0.5, 0.5, "no listings", ha="center", va="center", transform=ax.transAxes)
    captions["timeline.png"] = f"{FIGURES['timeline.png']}: {TIMELINE_KEY}"
    ax.set_title(captions["timeline.png"], fontsize=10)
    ax.set_ylabel("max rise, %")
    ax.grid(True, alpha=0.3)
    _save(fig, out_dir / "timeline.png")
    return captions
