"""`pumpwatch demo`: the whole pipeline, offline, in about a minute.

It starts local servers for all twelve exchange protocols and a local Upbit-shaped server, then
runs the real `pumpwatch symbols` and `pumpwatch record` processes against them (the same
workers, runner, writer, journals, listing watcher and trigger as production). While the
simulated market trades it publishes a KRW listing notice for a fresh coin that then pumps on
some exchanges and not on others, waits for the automatic extraction and detection, stops
`record` with SIGTERM, and prints a summary. Nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumpwatch.errors import PumpWatchError
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_S

DEMO_COIN = "0G"
# Coins the demo's Upbit does not list on KRW: `pumpwatch symbols` keeps them (default policy).
FRESH_BASES = (DEMO_COIN, "ZRO", "HYPE", "ENA")
# Coins already on the demo's Upbit KRW market: the default policy leaves them out.
KRW_BASES = ("BTC", "ETH", "XRP")
# The fresh coin pumps on these streams, each a little later than the one before.
PUMP_LAGS_S = {
    "binance_spot": 0.8,
    "binance_futures": 1.0,
    "bybit_futures": 1.4,
    "okx_spot": 1.9,
    "gate_spot": 2.6,
    "kucoin_futures": 3.2,
}
NOTICE_TITLE = f"제로지({DEMO_COIN}) 신규 거래지원 안내 (KRW, USDT 마켓)"


class DemoError(PumpWatchError):
    """The demo could not complete (a child process failed or the listing never appeared)."""


@dataclass
class DemoOptions:
    data_dir: Path | None = None
    before_s: float = 20.0  # extraction window before the notice
    after_s: float = 20.0  # … and after it
    lead_s: float | None = None  # recording time before the notice (default before_s + 10 s)
    trades_per_s: float = 40.0  # per stream, spread over its coins
    seed: int = 7
    timeout_s: float = 90.0  # give up waiting for the listing this long after the notice
    echo: Callable[[str], None] = print


@dataclass
class DemoResult:
    data_dir: Path
    listing_dir: Path
    trades_recorded: int
    streams_recorded: list[str]
    pump_events: list[dict[str, Any]]
    notice_delay_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def _now_us() -> int:
    return time.time_ns() // 1000


def _pumpwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "pumpwatch", *args]


def _config(cluster: Any, upbit_url: str, data_dir: Path, opts: DemoOptions) -> Path:
    extra = {
        "data_dir": str(data_dir),
        "storage": {"flush_interval": "500ms"},
        "extract": {"before": f"{opts.before_s}s", "after": f"{opts.after_s}s"},
        "recorder": {
            "symbols_file": str(data_dir / "symbols.yaml"),
            "status_interval": "15s",
            "heartbeat": "2s",
            "backoff_initial": "200ms",
            "backoff_max": "2s",
        },
        "symbols": {"upbit_rest_url": upbit_url},
        "upbit": {"hosts": [upbit_url], "poll_interval": "1s", "jitter": 0.1},
        "metrics": {"enabled": False},
        "logging": {"file": True, "level": "INFO"},
    }
    path: Path = cluster.write_config(data_dir / "demo-config.yaml", extra)
    return path


async def _run_child(args: list[str], log_path: Path, what: str) -> None:
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(*args, stdout=log, stderr=subprocess.STDOUT)
        code = await proc.wait()
    if code != 0:
        raise DemoError(f"{what} exited with {code}; see {log_path}")


def _listing_ready(data_dir: Path) -> Path | None:
    root = data_dir / "listings"
    if not root.is_dir():
        return None
    for d in sorted(root.glob(f"{DEMO_COIN}_*")):
        if (d / "refined" / "pump_analysis.json").is_file():
            return d
    return None


def _progress(data_dir: Path) -> tuple[int, int]:
    """(streams connected now, trades on disk) from the store and journals."""
    from pumpwatch.segments.status import store_status

    try:
        status = store_status(data_dir)
    except PumpWatchError:
        return 0, 0
    connected = sum(1 for s in status["streams"].values() if s.get("connected_now"))
    return connected, int(status["trades"])


async def run_demo(opts: DemoOptions) -> DemoResult:
    """Run the demo; returns what it produced. Every child process is stopped before returning."""
    from pumpwatch.recorder.sim.cluster import SimCluster
    from pumpwatch.recorder.sim.market import PumpSpec
    from pumpwatch.recorder.sim.upbit import UpbitSim, backlog, krw_markets

    echo = opts.echo
    data_dir = opts.data_dir or Path(tempfile.mkdtemp(prefix="pumpwatch-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    lead_s = opts.lead_s if opts.lead_s is not None else opts.before_s + 10.0
    start_us = _now_us()
    # Upbit times have whole seconds.
    notice_us = (start_us + round(lead_s * US_PER_S)) // US_PER_S * US_PER_S + US_PER_S
    pump = PumpSpec(
        base=DEMO_COIN,
        at_us=notice_us,
        rise_percent=9.0,
        duration_s=1.5,
        streams=tuple(PUMP_LAGS_S),
        lag_s=PUMP_LAGS_S,
    )
    log_path = data_dir / "demo-children.log"
    echo(f"PumpWatch demo: data dir {data_dir}")
    echo(
        f"  starting local servers: {len(STREAMS)} exchange streams and Upbit on 127.0.0.1 "
        f"(coins {', '.join(FRESH_BASES + KRW_BASES)})"
    )
    cluster = SimCluster(
        STREAMS, FRESH_BASES + KRW_BASES, seed=opts.seed, trades_per_s=opts.trades_per_s, pumps=[pump]
    )
    upbit = UpbitSim(notices=backlog(start_us), markets=krw_markets(KRW_BASES, FRESH_BASES))
    record: asyncio.subprocess.Process | None = None
    async with cluster, upbit:
        config = _config(cluster, upbit.url, data_dir, opts)
        # Explicit options beat a PUMPWATCH_DATA_DIR/PUMPWATCH_CONFIG the user may have set.
        where = ("--config", str(config), "--data-dir", str(data_dir))
        echo("  pumpwatch symbols: instrument lists from every local exchange, KRW markets from Upbit")
        await _run_child(_pumpwatch("symbols", *where), log_path, "pumpwatch symbols")
        echo("  pumpwatch record: one worker process per exchange (log: demo-children.log)")
        with log_path.open("ab") as log:
            record = await asyncio.create_subprocess_exec(
                *_pumpwatch("record", *where),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            listing = await _drive(opts, data_dir, upbit, notice_us, record, echo)
        finally:
            await _stop_record(record, echo)
    return _summary(data_dir, listing, notice_us, echo)


async def _drive(
    opts: DemoOptions,
    data_dir: Path,
    upbit: Any,
    notice_us: int,
    record: asyncio.subprocess.Process,
    echo: Callable[[str], None],
) -> Path:
    published = False
    last_echo = 0.0
    deadline_us = notice_us + round((opts.after_s + opts.timeout_s) * US_PER_S)
    while True:
        await asyncio.sleep(0.25)
        if record.returncode is not None:
            raise DemoError(f"pumpwatch record exited early with {record.returncode}; see demo-children.log")
        now = _now_us()
        if not published and now >= notice_us:
            upbit.add_notice(NOTICE_TITLE, at_us=notice_us)
            published = True
            echo(f"  Upbit publishes: {NOTICE_TITLE!r}")
            echo(f"  {DEMO_COIN} starts pumping on {len(PUMP_LAGS_S)} of {len(STREAMS)} streams")
        listing = _listing_ready(data_dir)
        if listing is not None:
            return listing
        if now > deadline_us:
            raise DemoError("the listing directory did not appear in time; see demo-children.log")
        if time.monotonic() - last_echo >= 5.0:
            last_echo = time.monotonic()
            connected, trades = await asyncio.to_thread(_progress, data_dir)
            if not published:
                when = f"notice in {max(0.0, (notice_us - now) / US_PER_S):4.1f} s"
            else:
                due_s = (notice_us - now) / US_PER_S + opts.after_s + 1.0
                when = f"extraction due in {max(0.0, due_s):4.1f} s"
            streams = f"{connected:2d}/{len(STREAMS)} streams connected"
            echo(f"  recording: {streams}, {trades:7d} trades on disk, {when}")


async def _stop_record(record: asyncio.subprocess.Process, echo: Callable[[str], None]) -> None:
    if record.returncode is None:
        echo("  stopping record (SIGTERM: every worker flushes and seals its segments)")
        record.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(record.wait(), 30.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
            await record.wait()
            raise DemoError("pumpwatch record did not stop within 30 s") from None
    if record.returncode != 0:
        raise DemoError(f"pumpwatch record exited with {record.returncode}; see demo-children.log")


def _summary(data_dir: Path, listing: Path, notice_us: int, echo: Callable[[str], None]) -> DemoResult:
    from pumpwatch.segments.status import store_status

    status = store_status(data_dir)
    recorded = sorted(s for s, v in status["streams"].items() if v["trades"] > 0)
    analysis = json.loads((listing / "refined" / "pump_analysis.json").read_text())
    metadata = json.loads((listing / "metadata.json").read_text())
    source = metadata.get("source") or {}
    delay = float(source.get("detection_delay_s", 0.0)) if isinstance(source, dict) else 0.0
    events = analysis.get("pump_events", [])
    echo("")
    where = data_dir / "segments"
    echo(f"Recorded {status['trades']} trades on {len(recorded)}/{len(STREAMS)} streams into {where}")
    echo(f"Listing {DEMO_COIN} at {metadata.get('trigger_time')} (noticed {delay:.1f} s after publication)")
    echo(f"  window:  {listing}")
    echo(f"  raw:     {len(list((listing / 'raw').glob('*.json')))} stream files + raw/trades.parquet")
    by_stream = {f"{e['exchange']}_{e['market_type']}": e for e in events}
    for stream in STREAMS:
        e = by_stream.get(stream)
        if e is not None:
            ratio = e.get("volume_spike_ratio")
            vol = f", volume x{ratio:.1f}" if isinstance(ratio, int | float) else ""
            echo(
                f"  pump:    {stream:16s} +{e['price_change_percent']:.2f}%{vol}, {e['trades_count']} trades"
            )
    quiet = [s for s in STREAMS if s not in by_stream]
    echo(f"  no pump: {', '.join(quiet) if quiet else '-'}")
    summary = analysis.get("summary", {})
    echo(f"  first pump: {summary.get('first_pump_exchange')}; max rise {summary.get('max_price_change')}%")
    echo(f"  chart:   {listing / 'refined' / 'chart.png'}")
    from pumpwatch.detector.report import write_report

    report = write_report(data_dir / "listings", data_dir / "report")
    echo(f"  report:  {report.index}  (the study across listings: open it in a browser)")
    return DemoResult(
        data_dir, listing, int(status["trades"]), recorded, events, delay, {"report": report.index}
    )


def demo(opts: DemoOptions) -> DemoResult:
    """Synchronous entry point for the CLI."""
    return asyncio.run(run_demo(opts))
