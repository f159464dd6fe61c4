"""refined/chart.png: each stream's price as % from its first trade in the window, pump
intervals shaded in the stream's colour, the trigger as a dashed line (matplotlib Agg,
headless; imported only when a chart is drawn)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pumpwatch.detector.analysis import Analysis
from pumpwatch.detector.compare import price_percent_series
from pumpwatch.timeunits import US_PER_S


def draw_chart(analysis: Analysis, path: Path) -> None:
    """Render the chart of `analysis` to `path` (PNG, deterministic for the same analysis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trigger_us = analysis.trigger_us
    fig, ax = plt.subplots(figsize=(11, 6), dpi=100)
    try:
        colors = [plt.get_cmap("tab20")(k / 20.0) for k in range(20)]
        for k, res in enumerate(analysis.streams):
            time_us, pct = price_percent_series(res)
            if len(time_us) == 0:
                continue
            color = colors[k % len(colors)]
            x_s = (time_us - trigger_us) / US_PER_S
            ax.plot(x_s, pct, drawstyle="steps-post", lw=1.0, color=color, label=res.trades.stream)
            for ev in res.events:
                ax.axvspan(x_s[ev.start], x_s[ev.end], color=color, alpha=0.18, lw=0)
        ax.axvline(0.0, color="black", ls="--", lw=1.0, label="trigger")
        start_s = (analysis.period_us[0] - trigger_us) / US_PER_S
        end_s = (analysis.period_us[1] - trigger_us) / US_PER_S
        if end_s > start_s:
            ax.set_xlim(start_s, end_s)
        when = datetime.fromtimestamp(trigger_us / US_PER_S, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        symbol = analysis.pump_analysis.get("symbol") or "?"
        n_events = len(analysis.pump_analysis["pump_events"])
        ax.set_title(f"{symbol}: trigger {when} UTC, {n_events} pump event(s)")
        ax.set_xlabel("seconds from trigger")
        ax.set_ylabel("price, % from first trade in window")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=7, ncol=2)
        fig.tight_layout()
        # No Software/date metadata, so re-running gives the same bytes.
        fig.savefig(path, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
