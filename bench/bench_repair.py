"""Completeness under random outages (issue 10): how much of the market the store holds before
and after the repair from REST trade history, how fast repairs come, what they cost.

    .venv/bin/python bench/bench_repair.py [--duration-s 180] [--seed 10] [--quick] [--keep]

All twelve local exchanges run in this process (`SimCluster`, the seeded synthetic market;
every published trade is kept by its server and served over the real REST history routes).
`pumpwatch record` runs as a real subprocess against them. While the market trades, every
stream suffers random faults for `--duration-s`: `drop_all()` (a disconnect), `stall(s)` (a
silent connection, 1–10 s, long enough to trip the watchdog), and on the streams with
contiguous ids `skip_pushes(n)` (a hole while connected); one extra drop of every stream just
before a pumped coin's pump puts a gap in its listing window. After the faults, the market
trades calmly for a few seconds, the run waits until the repairs settle, and `record` gets
SIGTERM. Then, per stream, over the recording span (all streams listening .. end of the
calm tail):

- trades the server generated in the span (its store of published trades, by trade time);
- present before repair (rows on disk with source ``ws``) and after (every source);
- duplicates on disk (a key stored more often than the server generated it; must be 0), and
  rows under a key the server never generated (a repaired row stored under another trade id:
  a duplicate in disguise; must be 0);
- loss runs (consecutive trades of a symbol missing live) and how many are whole after repair,
  with a few examples of trades still missing and the journal events around them;
- gaps (journal ``gap_start``/``gap_end``, ``id_gap``) and, for each, the time from its end to
  the last ``repaired``/``unrepaired`` event overlapping it;
- for latest-only streams, which gaps were short enough for the endpoint (at most its per-call
  limit of trades per symbol inside the gap) and whether those are whole;
- REST history calls the server answered (`history.stats`).

Last, with the servers still trading, `pumpwatch extract` runs for the pumped coin over a window
holding that gap, with and without ``--no-backfill``, and over a window that runs past the end
of the recording (half of it never recorded): the extra time is what repair adds to an
extraction (medians of repeated runs). A build without live repair prints "after" equal to
"before" and says so; a build without ``--no-backfill`` says "not available in this build" for
the comparison. Exit status 1 when `record` did not exit 0 or a duplicate (or a row under an
unknown key) is on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pumpwatch.recorder.sim.cluster import SimCluster
from pumpwatch.recorder.sim.market import PumpSpec
from pumpwatch.segments.coverage import Replay
from pumpwatch.segments.journal import read_events
from pumpwatch.segments.paths import list_segments
from pumpwatch.segments.reader import read_segment
from pumpwatch.streams import STREAMS, split_stream

US_PER_S = 1_000_000
# Streams whose history reaches every gap (by id or by time): the target is 100 %.
WHOLE_TARGET = ("binance_spot", "binance_futures", "okx_spot", "okx_futures", "gate_spot", "gate_futures")
# Streams with contiguous trade ids per symbol: an id hole while connected is detectable there.
ID_CONTIGUOUS = ("binance_spot", "binance_futures", "okx_spot", "okx_futures", "gate_spot")
# Per-call limit of the latest-only endpoints (docs/repair.md), used when the build has no
# history specs to ask.
LATEST_LIMIT = {
    "bybit_spot": 60,
    "bybit_futures": 1000,
    "kucoin_spot": 100,
    "kucoin_futures": 100,
    "phemex_spot": 200,
    "phemex_futures": 200,
}
BASES = ("BTC", "ETH", "SOL", "DOGE", "0G", "ZRO")  # the first four are the busiest
SKIP_LEAD_S = 10.0  # no skipped pushes this close to the end of the fault phase
PUMPED = "0G"  # pumps during the faults; its listing window holds a drop of every stream
BUSY = "BTC"  # the busiest coin: the window over the end of the recording
# A latest-only endpoint asked this long after a loss run ends (reconnect + repair) must
# still return the run's first trade for the run to count as "short".
SHORT_SLACK_US = 2 * US_PER_S
WAIT_S = 60.0  # any wait for the recorder: far above normal


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Profile:
    duration_s: float  # fault phase
    fault_every_s: float  # mean interval between faults, per stream
    calm_s: float  # trading without faults after the fault phase (inside the span)
    settle_quiet_s: float  # repairs have settled when nothing changed for this long …
    settle_max_s: float  # … or after this long at most
    tail_s: float  # trading after SIGTERM, nobody recording (the second extraction window)
    trades_per_s: float


def profile(args: argparse.Namespace) -> Profile:
    if args.quick:
        return Profile(args.duration_s or 30.0, 6.0, 3.0, 5.0, 20.0, 6.0, args.trades_per_s)
    return Profile(args.duration_s or 180.0, 15.0, 5.0, 10.0, 90.0, 10.0, args.trades_per_s)


# -- reading the store and the journal ----------------------------------------------------------


def trade_key(stream: str, symbol: str, trade_id: str | None, time_us: int) -> tuple[Any, ...]:
    """One trade's identity on disk and at the server. Phemex has no ids: symbol and ms (a key
    may then stand for several trades, so presence counts are per key, capped by the server's)."""
    if split_stream(stream)[0] == "phemex":
        return (symbol, time_us // 1000)
    return (symbol, trade_id)


def disk_keys(data_dir: Path, stream: str) -> tuple[Counter[tuple[Any, ...]], Counter[tuple[Any, ...]]]:
    """Keys of every row stored for `stream`: (live rows only, all rows)."""
    live: Counter[tuple[Any, ...]] = Counter()
    every: Counter[tuple[Any, ...]] = Counter()
    for seg in list_segments(data_dir, [stream]):
        for batch in read_segment(seg, -(2**62), 2**62):
            cols = batch.to_pydict()
            times = batch.column(batch.schema.get_field_index("time")).cast("int64").to_pylist()
            sources = cols.get("source") or ["ws"] * batch.num_rows
            for symbol, tid, t_us, src in zip(cols["symbol"], cols["trade_id"], times, sources, strict=True):
                key = trade_key(stream, symbol, tid, t_us)
                every[key] += 1
                if src == "ws":
                    live[key] += 1
    return live, every


def journal(data_dir: Path, stream: str) -> list[dict[str, Any]]:
    try:
        return read_events(data_dir, stream)
    except FileNotFoundError:
        return []


def listening(data_dir: Path, stream: str) -> bool:
    replay = Replay()
    for event in journal(data_dir, stream):
        replay.feed(event)
    return replay.listening()


def repair_marks(data_dir: Path) -> tuple[int, int]:
    """(repaired + unrepaired + id_gap events, REST rows) over all streams: progress of repair."""
    events = sum(
        1
        for s in STREAMS
        for e in journal(data_dir, s)
        if e.get("event") in ("repaired", "unrepaired", "id_gap")
    )
    rest = 0
    for seg in list_segments(data_dir, list(STREAMS)):
        for batch in read_segment(seg, -(2**62), 2**62):
            if "source" in batch.schema.names:
                rest += batch.column("source").to_pylist().count("rest")
    return events, rest


@dataclass
class Gap:
    start_us: int
    end_us: int
    symbol: str | None  # None: the whole stream was not listening
    answered_us: int | None = None  # ts of the last repaired/unrepaired event overlapping it
    unrepaired: bool = False


def journal_gaps(events: list[dict[str, Any]], lo_us: int, hi_us: int) -> list[Gap]:
    """Not-listening spans (gap_start .. gap_end) and id holes that start inside [lo, hi]."""
    gaps: list[Gap] = []
    open_at: int | None = None
    for e in events:
        kind = e.get("event")
        if kind == "gap_start" and open_at is None:
            open_at = int(e["ts"])
        elif kind == "gap_end" and open_at is not None:
            if lo_us <= open_at <= hi_us:
                gaps.append(Gap(open_at, int(e["ts"]), None))
            open_at = None
        elif kind == "id_gap" and lo_us <= int(e["after_us"]) <= hi_us:
            gaps.append(Gap(int(e["after_us"]), int(e["before_us"]), str(e["symbol"])))
    for e in events:
        if e.get("event") not in ("repaired", "unrepaired"):
            continue
        a, b, ts = int(e["start_us"]), int(e["end_us"]), int(e["ts"])
        for g in gaps:
            if a <= g.end_us and b >= g.start_us and (g.symbol is None or g.symbol == e["symbol"]):
                g.answered_us = ts if g.answered_us is None else max(g.answered_us, ts)
                g.unrepaired |= e["event"] == "unrepaired"
    return gaps


# -- the run --------------------------------------------------------------------------------


@dataclass
class StreamResult:
    stream: str
    generated: int = 0
    before: int = 0
    after: int = 0
    duplicates: int = 0
    strangers: int = 0  # rows on disk under a key the server never generated (e.g. another id)
    rest_rows: int = 0
    missing_examples: list[str] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    gap_s: float = 0.0
    loss_runs: int = 0  # runs of consecutive trades of a symbol missing before repair
    loss_runs_whole: int = 0  # … of which every trade is present after
    short_runs: int = 0  # latest-only: loss runs short enough for the endpoint
    short_whole: int = 0  # … whole after repair
    lost_in_short: int = 0  # trades in those short runs
    found_in_short: int = 0  # … present after repair
    rest_calls: int = 0
    rest_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)


def latest_limit(stream: str, rest_url: str) -> int | None:
    """Trades per call of the stream's latest-only endpoint (None: keyed by id or time)."""
    try:
        from pumpwatch.recorder.history.specs import history_spec

        spec = history_spec(stream, rest_url)
    except (ImportError, AttributeError):
        return LATEST_LIMIT.get(stream)
    if spec is None or spec.kind != "latest":
        return None
    return int(spec.limit)


def measure(
    cluster: SimCluster,
    data_dir: Path,
    stream: str,
    lo_us: int,
    hi_us: int,
    faults: Counter[str],
    show_missing: int,
) -> StreamResult:
    """The stream's figures over trades with ``lo_us <= time <= hi_us``."""
    res = StreamResult(stream, faults=faults)
    missing: dict[str, list[Any]] = {}  # examples of trades missing after repair, per symbol
    store = cluster.exchanges[stream].history.store
    everything: Counter[tuple[Any, ...]] = Counter()
    live, every = disk_keys(data_dir, stream)
    live_left, every_left = Counter(live), Counter(every)  # consumed per generated trade
    limit = latest_limit(stream, cluster.exchanges[stream].rest_url)
    for inst in cluster.instruments[stream]:
        for row in store.rows(inst.symbol):
            everything[trade_key(stream, row[2], row[8], row[0])] += 1
        span = store.time_range(inst.symbol, lo_us, hi_us)
        # (time, found live, found at all) per generated trade, oldest first
        marks: list[tuple[int, bool, bool]] = []
        for row in span:
            key = trade_key(stream, row[2], row[8], row[0])
            seen_live, seen = live_left[key] > 0, every_left[key] > 0
            live_left[key] -= seen_live
            every_left[key] -= seen
            marks.append((row[0], seen_live, seen))
            if not seen and len(missing.setdefault(inst.symbol, [])) < show_missing:
                missing[inst.symbol].append(row)
        res.generated += len(marks)
        res.before += sum(m[1] for m in marks)
        res.after += sum(m[2] for m in marks)
        for run in loss_runs(marks):
            res.loss_runs += 1
            whole = all(m[2] for m in run)
            res.loss_runs_whole += whole
            if limit is None:
                continue
            # Short: the endpoint's latest `limit` trades, asked for a little after the run,
            # still reach back to the run's first lost trade.
            reach = store.time_range(inst.symbol, run[0][0], run[-1][0] + SHORT_SLACK_US)
            if len(reach) <= limit:
                res.short_runs += 1
                res.short_whole += whole
                res.lost_in_short += len(run)
                res.found_in_short += sum(m[2] for m in run)
    res.duplicates = sum(max(0, n - everything[k]) for k, n in every.items() if k in everything)
    res.duplicates += sum(max(0, n - 1) for k, n in every.items() if k not in everything)
    res.strangers = sum(n for k, n in every.items() if k not in everything)
    res.rest_rows = sum(every.values()) - sum(live.values())
    events = journal(data_dir, stream)
    res.gaps = journal_gaps(events, lo_us, hi_us)
    res.missing_examples = [explain_missing(row, events, lo_us) for rows in missing.values() for row in rows][
        :show_missing
    ]
    res.gap_s = sum(g.end_us - g.start_us for g in res.gaps if g.symbol is None) / US_PER_S
    stats = cluster.exchanges[stream].history.stats
    res.rest_calls, res.rest_limited = stats.requests, stats.limited
    return res


def explain_missing(row: Any, events: list[dict[str, Any]], lo_us: int) -> str:
    """Where a trade missing after repair sits: next to which journal events, inside which
    repaired/unrepaired span of its symbol."""
    t = row[0]
    spans = [
        f"{e['event']} {(e['start_us'] - lo_us) / US_PER_S:+.3f}..{(e['end_us'] - lo_us) / US_PER_S:+.3f} s"
        + (f" ({e['trades']} trades)" if e["event"] == "repaired" else f" ({e.get('reason')})")
        for e in events
        if e.get("event") in ("repaired", "unrepaired") and e.get("symbol") == row[2]
        and e["start_us"] <= t <= e["end_us"]
    ]  # fmt: skip
    marks = [e for e in events if e.get("event") in ("gap_start", "gap_end", "id_gap", "disconnected")]
    near = min(marks, key=lambda e: abs(int(e["ts"]) - t), default=None)
    where = (
        f"{(t - int(near['ts'])) / US_PER_S:+.3f} s from {near['event']}"
        if near is not None
        else "no gap event"
    )
    inside = "; inside " + ", ".join(spans) if spans else "; no repaired/unrepaired span covers it"
    return f"{row[2]} id {row[8]} at {(t - lo_us) / US_PER_S:+.3f} s: {where}{inside}"


def loss_runs(marks: list[tuple[int, bool, bool]]) -> list[list[tuple[int, bool, bool]]]:
    """Runs of consecutive trades (of one symbol) that were missing before repair."""
    runs: list[list[tuple[int, bool, bool]]] = []
    current: list[tuple[int, bool, bool]] = []
    for m in marks:
        if not m[1]:
            current.append(m)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


class Faults:
    """Random faults on every stream for `duration_s`, plus one drop of every stream at `pump_us`."""

    def __init__(self, cluster: SimCluster, rng: random.Random, prof: Profile, pump_drop_us: int) -> None:
        self.cluster = cluster
        self.rng = rng
        self.prof = prof
        self.pump_drop_us = pump_drop_us
        self.done: dict[str, Counter[str]] = {s: Counter() for s in cluster.streams}

    def _one(self, stream: str, left_s: float) -> None:
        """One fault on `stream`; a stall ends by the end of the fault phase (`left_s` from now),
        so no connection is still frozen when the recording span ends."""
        ex = self.cluster.exchanges[stream]
        roll = self.rng.random()
        if roll < 0.2 and stream in ID_CONTIGUOUS and left_s >= SKIP_LEAD_S:
            # A hole is seen only when the symbol's next trade arrives: busy coins, and early
            # enough that the hole closes and is repaired inside the run.
            symbol = self.rng.choice(self.cluster.instruments[stream][:4]).symbol
            ex.skip_pushes(self.rng.randint(3, 15), symbol=symbol)
            self.done[stream]["skip"] += 1
        elif roll < 0.55 and left_s >= 1.0:
            ex.stall(min(self.rng.uniform(1.0, 10.0), left_s))
            self.done[stream]["stall"] += 1
        else:
            ex.drop_all()
            self.done[stream]["drop"] += 1

    async def run(self) -> None:
        start = time.monotonic()
        end = start + self.prof.duration_s
        # Each stream's fault times, drawn up front: bounded in count and in time.
        plan: list[tuple[float, str]] = []
        for s in self.cluster.streams:
            t = start + self.rng.expovariate(1.0 / self.prof.fault_every_s)
            while t < end and len(plan) < 10_000:
                plan.append((t, s))
                t += max(1.0, self.rng.expovariate(1.0 / self.prof.fault_every_s))
        plan.sort()
        pump_dropped = False
        for at, stream in plan:
            while time.monotonic() < at:
                if not pump_dropped and now_us() >= self.pump_drop_us:
                    self._drop_everything()
                    pump_dropped = True
                await asyncio.sleep(min(0.05, max(0.0, at - time.monotonic())))
            self._one(stream, end - time.monotonic())
        while time.monotonic() < end:
            if not pump_dropped and now_us() >= self.pump_drop_us:
                self._drop_everything()
                pump_dropped = True
            await asyncio.sleep(0.05)
        if not pump_dropped:
            self._drop_everything()

    def _drop_everything(self) -> None:
        for s, ex in self.cluster.exchanges.items():
            ex.drop_all()
            self.done[s]["drop (pump window)"] += 1


async def wait_for(cond: Any, timeout_s: float, what: str, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"after {timeout_s:g} s: {what}")
        await asyncio.sleep(every_s)


async def settle(data_dir: Path, cluster: SimCluster, prof: Profile) -> float:
    """Wait until repair progress (journal events, REST rows, REST calls) stops changing."""
    t0 = time.monotonic()
    last: Any = None
    quiet_since = time.monotonic()
    while time.monotonic() - t0 < prof.settle_max_s:
        marks = await asyncio.to_thread(repair_marks, data_dir)
        calls = sum(ex.history.stats.requests for ex in cluster.exchanges.values())
        now = (marks, calls)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= prof.settle_quiet_s:
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - t0


# -- extraction -------------------------------------------------------------------------------


def pumpwatch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pumpwatch", *args]


async def run_cmd(args: list[str], timeout_s: float = 300.0) -> tuple[int, str, str, float]:
    """Run a child without blocking the event loop (the servers must keep answering)."""
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -9, "", f"timed out after {timeout_s:g} s", time.perf_counter() - t0
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), time.perf_counter() - t0


@dataclass
class ExtractRun:
    label: str
    seconds: float
    rc: int
    trades: int | None
    states: str
    rest_calls: int
    stderr: str


def listing_summary(listing: Path) -> tuple[int | None, str]:
    """(trades in the listing, coverage states per stream if metadata.json has them)."""
    try:
        meta = json.loads((listing / "metadata.json").read_text())
    except (OSError, ValueError):
        return None, "-"
    streams = meta.get("streams") or {}
    trades = 0
    states: Counter[str] = Counter()
    for info in streams.values() if isinstance(streams, dict) else []:
        if isinstance(info, dict):
            trades += int(info.get("trades") or 0)
            cov = info.get("coverage")
            if isinstance(cov, dict) and "state" in cov:
                states[str(cov["state"])] += 1
    text = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) if states else "no coverage state"
    return trades, text


async def extract_once(
    cluster: SimCluster,
    config: Path,
    label: str,
    case: tuple[str, str, int, float],
    backfill: bool | None,
) -> ExtractRun:
    _name, symbol, trigger_us, half_s = case
    calls0 = sum(ex.history.stats.requests for ex in cluster.exchanges.values())
    args = ["extract", symbol, str(trigger_us), "--before", f"{half_s:g}s", "--after", f"{half_s:g}s"]
    args += ["--no-detect", "--config", str(config)]
    if backfill is False:
        args.append("--no-backfill")
    rc, out, err, seconds = await run_cmd(pumpwatch_cmd(*args))
    calls = sum(ex.history.stats.requests for ex in cluster.exchanges.values()) - calls0
    trades, states = (
        listing_summary(Path(out.strip().splitlines()[-1])) if rc == 0 and out.strip() else (None, "-")
    )
    return ExtractRun(label, seconds, rc, trades, states, calls, err.strip()[-400:])


async def extraction_cases(
    cluster: SimCluster, config: Path, cases: list[tuple[str, str, int, float]], repeat: int
) -> tuple[bool, list[tuple[str, list[ExtractRun]]]]:
    _, out, err, _ = await run_cmd(pumpwatch_cmd("extract", "--help"))
    has_flag = "--no-backfill" in out + err
    results = []
    for case in cases:
        runs: list[ExtractRun] = []
        if has_flag:
            # Without repair first (it leaves the store as it is); then with repair: the first
            # run does the work, the later ones find nothing left to do. Medians of `repeat`.
            for _ in range(repeat):
                runs.append(await extract_once(cluster, config, "--no-backfill", case, False))
            runs.append(await extract_once(cluster, config, "backfill (1st)", case, True))
            for _ in range(repeat):
                runs.append(await extract_once(cluster, config, "backfill (again)", case, True))
        else:
            runs.append(await extract_once(cluster, config, "plain", case, None))
        results.append((f"{case[1]}: {case[0]}", runs))
    return has_flag, results


# -- printing ---------------------------------------------------------------------------------


def pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:7.2f}%" if whole else "      -"


def seconds_text(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"


def print_stream(r: StreamResult, live_repair: bool) -> None:
    kind = "target 100%" if r.stream in WHOLE_TARGET else "latest-only: short gaps whole"
    faults = ", ".join(f"{k} {v}" for k, v in sorted(r.faults.items())) or "none"
    stream_gaps = [g for g in r.gaps if g.symbol is None]
    id_gaps = [g for g in r.gaps if g.symbol is not None]
    answered = [g for g in r.gaps if g.answered_us is not None]
    latency = [(g.answered_us - g.end_us) / US_PER_S for g in answered if g.answered_us is not None]
    print(f"\n{r.stream}  ({kind})")
    print(f"  faults injected            {faults}")
    print(f"  generated in span          {r.generated:>9,}")
    print(f"  present before repair      {r.before:>9,} {pct(r.before, r.generated)}")
    after_note = "" if live_repair else "   (no live repair in this build: after = before)"
    print(f"  present after repair       {r.after:>9,} {pct(r.after, r.generated)}{after_note}")
    print(f"  missing after repair       {r.generated - r.after:>9,}")
    print(f"  rows from REST (whole run) {r.rest_rows:>9,}")
    print(f"  duplicates                 {r.duplicates:>9,}")
    print(f"  rows under unknown keys    {r.strangers:>9,}  (a repaired row stored under another id)")
    for text in r.missing_examples if live_repair else []:  # without repair, every loss stays
        print(f"  missing e.g.               {text}")
    print(f"  loss runs whole after      {r.loss_runs_whole:>9} of {r.loss_runs}")
    print(f"  gaps: not listening        {len(stream_gaps):>9}  ({r.gap_s:.1f} s); id holes {len(id_gaps)}")
    unrep = sum(g.unrepaired for g in r.gaps)
    print(f"  gap end -> repaired        {seconds_text(latency)}  ({len(answered)}/{len(r.gaps)} answered, "
          f"{unrep} with unrepaired spans)")  # fmt: skip
    if r.stream not in WHOLE_TARGET:
        print(f"  short loss runs whole      {r.short_whole}/{r.short_runs}  "
              f"(their trades found: {r.found_in_short:,}/{r.lost_in_short:,})")  # fmt: skip
    print(f"  REST history calls         {r.rest_calls:>9,}  (refused as rate limited: {r.rest_limited})")


def print_summary(results: list[StreamResult], live_repair: bool) -> bool:
    print("\nsummary")
    print(f"{'stream':<16} {'generated':>9} {'before':>8} {'after':>8} {'missing':>7} {'dupes':>5} "
          f"{'gaps':>4} {'REST':>5} {'REST/trade':>10} {'gap->repaired med/max s':>24}")  # fmt: skip
    ok = True
    for r in results:
        found = r.after - r.before
        lat = [(g.answered_us - g.end_us) / US_PER_S for g in r.gaps if g.answered_us is not None]
        lat_text = f"{statistics.median(lat):.2f}/{max(lat):.2f}" if lat else "-"
        per_trade = f"{r.rest_calls / found:.3f}" if found > 0 else "-"
        shares = f"{pct(r.before, r.generated):>8} {pct(r.after, r.generated):>8}"
        print(f"{r.stream:<16} {r.generated:>9,} {shares} "
              f"{r.generated - r.after:>7,} {r.duplicates:>5} {len(r.gaps):>4} {r.rest_calls:>5} "
              f"{per_trade:>10} {lat_text:>24}")  # fmt: skip
        if r.duplicates or r.strangers:
            ok = False
    for name, group in (
        ("binance/okx/gate", [r for r in results if r.stream in WHOLE_TARGET]),
        ("latest-only", [r for r in results if r.stream not in WHOLE_TARGET]),
    ):
        gen = sum(r.generated for r in group)
        before = sum(r.before for r in group)
        after = sum(r.after for r in group)
        lost = gen - before
        recovered = after - before
        print(f"{name:<16}: present {pct(before, gen).strip()} before -> {pct(after, gen).strip()} after; "
              f"{recovered:,} of {lost:,} lost trades recovered = {recovered / lost if lost else 1.0:.3f} "
              f"of the loss")  # fmt: skip
    short = [r for r in results if r.stream not in WHOLE_TARGET]
    sg, sw = sum(r.short_runs for r in short), sum(r.short_whole for r in short)
    lost, found = sum(r.lost_in_short for r in short), sum(r.found_in_short for r in short)
    print(f"latest-only short loss runs (the endpoint's last page reaches them): {sw}/{sg} whole, "
          f"{found:,}/{lost:,} of their trades found")  # fmt: skip
    runs = sum(r.loss_runs for r in results)
    runs_whole = sum(r.loss_runs_whole for r in results)
    print(f"loss runs (consecutive trades of a symbol missing live), all streams: "
          f"{runs_whole}/{runs} whole after repair")  # fmt: skip
    all_lat = [(g.answered_us - g.end_us) / US_PER_S for r in results for g in r.gaps if g.answered_us]
    n_gaps = sum(len(r.gaps) for r in results)
    print(
        f"gap end -> repaired/unrepaired journaled: {seconds_text(all_lat)} over {len(all_lat)}/{n_gaps} gaps"
    )
    calls = sum(r.rest_calls for r in results)
    found = sum(r.after - r.before for r in results)
    print(f"REST history calls: {calls:,} for {found:,} trades recovered"
          f" = {calls / found if found else float('nan'):.3f} calls per recovered trade")  # fmt: skip
    dupes = sum(r.duplicates for r in results)
    strangers = ", ".join(f"{r.stream} {r.strangers}" for r in results if r.strangers) or "none"
    print(f"duplicates: {dupes} (must be 0); rows under keys the server never generated: {strangers}")
    if not live_repair:
        print("live repair: not available in this build (no repaired/unrepaired/id_gap event, no REST row)")
    return ok


def print_extraction(has_flag: bool, cases: list[tuple[str, list[ExtractRun]]]) -> None:
    print("\nextraction (pumpwatch extract SYMBOL T --no-detect), wall time per run incl. start-up")
    for name, runs in cases:
        print(f"  {name}")
        for run in runs:
            trades = "-" if run.trades is None else f"{run.trades:,}"
            status = (
                "" if run.rc == 0 else f"  EXIT {run.rc}: {run.stderr.splitlines()[-1] if run.stderr else ''}"
            )
            print(f"    {run.label:<16} {run.seconds:6.2f} s  trades {trades:>7}  "
                  f"REST calls {run.rest_calls:>4}  coverage: {run.states}{status}")  # fmt: skip
        if not has_flag:
            print("    with vs without repair: not available in this build (extract has no --no-backfill)")
            continue
        base = [r.seconds for r in runs if r.label == "--no-backfill" and r.rc == 0]
        first_runs = [r for r in runs if r.label == "backfill (1st)" and r.rc == 0]
        first = [r.seconds for r in first_runs]
        again = [r.seconds for r in runs if r.label == "backfill (again)" and r.rc == 0]
        if base and first and again:
            b, f, a = statistics.median(base), first[0], statistics.median(again)
            work = "REST calls made" if first_runs[0].rest_calls else "no REST call needed"
            print(f"    repair adds {f - b:+.2f} s = {f / b:.2f} x on the first run ({work}), "
                  f"{a - b:+.2f} s = {a / b:.2f} x with nothing left to repair (medians)")  # fmt: skip


# -- main ---------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> int:
    prof = profile(args)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="pw-bench-repair-"))
    data_dir = tmp / "data"
    startup_allow_s = 15.0
    pump_us = now_us() + round((startup_allow_s + 0.6 * prof.duration_s) * US_PER_S)
    pump = PumpSpec(base=PUMPED, at_us=pump_us, rise_percent=8.0, duration_s=2.0)
    cluster = SimCluster(
        STREAMS, BASES, seed=args.seed, trades_per_s=prof.trades_per_s, pumps=[pump], sim_kwargs={}
    )
    log = (tmp / "record.out").open("ab")
    record: asyncio.subprocess.Process | None = None
    print(f"bench_repair: 12 streams x {len(BASES)} coins, ~{prof.trades_per_s:g} trades/s per stream, "
          f"faults for {prof.duration_s:g} s (one every ~{prof.fault_every_s:g} s per stream), "
          f"seed {args.seed}; data in {tmp}", flush=True)  # fmt: skip
    async with cluster:
        symbols = cluster.write_symbols(tmp / "symbols.yaml")
        config = cluster.write_config(
            tmp / "config.yaml",
            {
                "data_dir": str(data_dir),
                "recorder": {
                    "symbols_file": str(symbols),
                    "status_interval": "10s",
                    "heartbeat": "1s",
                    "backoff_initial": "100ms",
                    "backoff_max": "2s",
                    "worker_restart_max": "1s",
                },
                "symbols": {"refresh": 0},
                "upbit": {"enabled": False},
                "metrics": {"enabled": False},
                "logging": {"level": "INFO", "file": False},
            },
        )
        start_mono = time.monotonic()
        record = await asyncio.create_subprocess_exec(
            *pumpwatch_cmd("record", "--config", str(config)), stdout=log, stderr=log, start_new_session=True
        )
        try:

            async def all_listening() -> bool:
                if record is not None and record.returncode is not None:
                    raise SystemExit(f"record exited with {record.returncode}; see {tmp / 'record.out'}")
                states = await asyncio.to_thread(lambda: [listening(data_dir, s) for s in STREAMS])
                return all(states)

            await wait_for(all_listening, WAIT_S, "not every stream is listening")
            t0 = now_us()
            print(f"record listening on every stream after {time.monotonic() - start_mono:.1f} s", flush=True)
            faults = Faults(cluster, rng, prof, pump_drop_us=pump_us - 2 * US_PER_S)
            await faults.run()
            await asyncio.sleep(prof.calm_s)
            t1 = now_us()
            print(f"faults done ({sum(sum(c.values()) for c in faults.done.values())} injected); "
                  "waiting for repairs to settle", flush=True)  # fmt: skip
            settled_s = await settle(data_dir, cluster, prof)
            record.send_signal(signal.SIGTERM)
            rc = await asyncio.wait_for(record.wait(), WAIT_S)
            t_stop = now_us()
            print(f"settled after {settled_s:.1f} s; record exit code {rc}", flush=True)
        finally:
            if record is not None and record.returncode is None:
                os.killpg(record.pid, signal.SIGKILL)
                await record.wait()
        results = [
            await asyncio.to_thread(measure, cluster, data_dir, s, t0, t1, faults.done[s], args.show_missing)
            for s in STREAMS
        ]
        live_repair = any(r.rest_rows for r in results) or any(
            e.get("event") in ("repaired", "unrepaired", "id_gap")
            for s in STREAMS
            for e in journal(data_dir, s)
        )
        print(
            f"\nrecording span {(t1 - t0) / US_PER_S:.1f} s (every stream listening .. end of the calm tail)"
        )
        for r in results:
            print_stream(r, live_repair)
        ok = print_summary(results, live_repair) and rc == 0
        await asyncio.sleep(prof.tail_s)  # the market trades on, nobody records
        half_tail = prof.tail_s / 2
        has_flag, cases = await extraction_cases(
            cluster,
            config,
            repeat=2 if args.quick else 3,
            cases=[
                (
                    "T +/- 10 s around its pump, with a drop of every stream at T - 2 s",
                    PUMPED,
                    pump_us,
                    10.0,
                ),
                (
                    f"T +/- {half_tail:g} s around the SIGTERM: the second half never recorded",
                    BUSY,
                    t_stop,
                    half_tail,
                ),
            ],
        )
        print_extraction(has_flag, cases)
    log.close()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"\nkept {tmp}")
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=None, help="fault phase (default 180, quick 30)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--trades-per-s", type=float, default=40.0, help="per stream, over its coins")
    parser.add_argument("--quick", action="store_true", help="a ~1-minute run")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--show-missing", type=int, default=3, help="examples per stream of trades missing after repair"
    )
    raise SystemExit(asyncio.run(bench(parser.parse_args())))


if __name__ == "__main__":
    main()
