"""Coverage in the study: listings written before ``coverage.state`` existed (only
``coverage.complete``) are counted by that field, and streams with a gap are left out of the
figures across listings, counted, and never credited with the first pump by default."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import INCOMPLETE

from pumpwatch.detector.report import write_report
from pumpwatch.detector.study import coverage_state, read_listings, study
from pumpwatch.detector.study_plots import TIMELINE_KEY, timeline_series
from pumpwatch.timeunits import US_PER_S

Meta = dict[str, Any]


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def copy_listing(src: Path, listings: Path, edit: Callable[[Meta], None]) -> Path:
    """A copy of the listing `src` under `listings` with its metadata.json edited in place."""
    dst = listings / src.name
    shutil.copytree(src, dst)
    meta = load(dst / "metadata.json")
    edit(meta)
    (dst / "metadata.json").write_bytes(orjson.dumps(meta))
    return dst


def old_format(meta: Meta) -> None:
    """metadata.json as written before commit 65c3726: coverage = known, complete, listening_s,
    gaps (no state, repaired, missing, rest_trades, listening_since)."""
    for entry in meta["streams"].values():
        cov = entry["coverage"]
        entry["coverage"] = {k: cov[k] for k in ("known", "complete", "listening_s", "gaps")}


def missing(meta: Meta, stream: str, start_s: float, end_s: float) -> None:
    """Mark `stream` incomplete with one missing span [T + start_s, T + end_s)."""
    t = meta["trigger_time_us"]
    a, b = t + int(start_s * US_PER_S), t + int(end_s * US_PER_S)
    span = {"start_us": a, "end_us": b, "duration_s": end_s - start_s}
    meta["streams"][stream]["coverage"].update(
        complete=False,
        state="incomplete",
        gaps=[span],
        missing=[{**span, "reason": "not_attempted", "symbols": []}],
    )


# --- finding 1: listings of the old metadata format -------------------------------------------------


def test_coverage_state_of_both_formats() -> None:
    assert coverage_state({"coverage": {"state": "repaired", "complete": False}}) == "repaired"
    assert coverage_state({"coverage": {"known": True, "complete": True, "gaps": []}}) == "complete"
    assert coverage_state({"coverage": {"known": True, "complete": False, "gaps": [{}]}}) == "incomplete"
    assert coverage_state({"coverage": {"known": False, "complete": None, "gaps": []}}) == "unknown"
    assert coverage_state({"trades": 3}) == "unknown"
    assert coverage_state({"coverage": {"state": "something-new"}}) == "unknown"


def test_old_format_listing_counts_incomplete_and_unknown(
    listings_store: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    _, dirs = listings_store
    listings = tmp_path / "listings"
    listings.mkdir()

    def edit(meta: Meta) -> None:
        old_format(meta)
        meta["streams"]["bybit_spot"]["coverage"].update(known=False, complete=None, listening_s=None)

    d = copy_listing(dirs[INCOMPLETE[0]], listings, edit)
    assert "state" not in load(d / "metadata.json")["streams"][INCOMPLETE[1]]["coverage"]
    rep = write_report(listings, tmp_path / "report")
    (row,) = rep.study["listings"]
    assert (row["streams_complete"], row["streams_repaired"], row["streams_incomplete"]) == (10, 0, 1)
    assert row["streams_unknown"] == 1 and row["unknown_streams"] == ["bybit_spot"]
    assert row["incomplete_streams"] == [INCOMPLETE[1]]
    states = {st["stream"]: st["coverage"] for st in row["streams"]}
    assert states[INCOMPLETE[1]] == "incomplete" and states["bybit_spot"] == "unknown"
    totals = rep.study["totals"]
    assert totals["with_incomplete_stream"] == 1 and totals["with_unknown_coverage"] == 1
    page = rep.index.read_text()
    assert 'title="incomplete: gate_futures; coverage unknown: bybit_spot"' in page
    assert "every stream complete or repaired" not in page
    assert "1 of unknown coverage: bybit_spot" in page
    # the old `gaps` say from when the stream was blind: before the first pump, so uncertain
    assert row["first_pump_certain"] is False
    assert row["first_pump_doubt"] == ["bybit_spot", INCOMPLETE[1]]


# --- finding 2: streams with a gap left out of the figures -------------------------------------------


def test_stream_with_a_gap_is_left_out_of_lag_rise_and_first(
    listings_store: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    """0G pumps on binance_spot (T + 0.5 s), okx_futures (1.5 s), gate_spot (2.5 s). Copy A:
    binance_spot missed T - 3 s .. T - 1 s; copy B: gate_spot missed T + 10 s .. T + 12 s."""
    _, dirs = listings_store
    listings = tmp_path / "listings"
    listings.mkdir()
    src = dirs["0G"]
    a = copy_listing(src, listings, lambda m: missing(m, "binance_spot", -3.0, -1.0))
    b_dir = listings / "0G_B"
    shutil.copytree(src, b_dir)
    meta = load(b_dir / "metadata.json")
    missing(meta, "gate_spot", 10.0, 12.0)
    meta["trigger_time_us"] += 1  # oldest first: A, then B
    (b_dir / "metadata.json").write_bytes(orjson.dumps(meta))

    found = read_listings(listings)
    numbers = study(found.found)
    row_a, row_b = numbers["listings"]
    assert row_a["listing"] == a.name and row_b["listing"] == "0G_B"

    # A: the stream seen pumping first had a gap: nobody is credited, it is named
    assert row_a["first_seen_stream"] == "binance_spot"
    assert row_a["first_pump_certain"] is False and row_a["first_pump_stream"] is None
    assert row_a["first_pump_doubt"] == ["binance_spot"]
    # B: gate_spot's gap starts after the first pump (binance_spot, whole): credited
    assert row_b["first_pump_certain"] is True and row_b["first_pump_stream"] == "binance_spot"
    assert row_b["first_pump_doubt"] == []

    by = {s["stream"]: s for s in numbers["streams"]}
    lag_a = {st["stream"]: st["first_pump_lag_ms"] for st in row_a["streams"]}
    lag_b = {st["stream"]: st["first_pump_lag_ms"] for st in row_b["streams"]}
    # binance_spot: only B's lag (A left out), credited first once (B), over 1 credited listing
    bs = by["binance_spot"]
    assert (bs["listings"], bs["whole"], bs["incomplete"], bs["left_out"]) == (2, 1, 1, 1)
    assert bs["pumped"] == 1 and bs["pumped_left_out"] == 1
    assert bs["lag_ms"]["n"] == 1 and bs["lag_ms"]["median"] == lag_b["binance_spot"]
    assert bs["first"] == 1 and bs["first_share"] == 1.0
    # gate_spot: only A's (B left out although its pump came before its gap)
    gs = by["gate_spot"]
    assert gs["lag_ms"]["n"] == 1 and gs["lag_ms"]["median"] == lag_a["gate_spot"]
    assert gs["rise_percent"]["n"] == 1 and gs["pumped_left_out"] == 1
    # okx_futures whole in both; never credited (first in A is uncertain)
    of = by["okx_futures"]
    assert of["lag_ms"]["n"] == 2 and of["first"] == 0 and of["left_out"] == 0
    # no listing has every stream whole: no volume share
    assert all(s["pump_volume_share"] is None and s["pump_volume_share_n"] == 0 for s in by.values())
    totals = numbers["totals"]
    assert totals["first_credited"] == 1 and totals["first_uncertain"] == 1
    assert totals["events_left_out"] == 2
    left = [(e["listing"], e["stream"]) for e in numbers["events"] if not e["whole"]]
    assert left == [(a.name, "binance_spot"), ("0G_B", "gate_spot")]


def test_page_and_csv_show_what_was_left_out(
    listings_store: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    _, dirs = listings_store
    listings = tmp_path / "listings"
    listings.mkdir()
    copy_listing(dirs["0G"], listings, lambda m: missing(m, "binance_spot", -3.0, -1.0))
    rep = write_report(listings, tmp_path / "report")
    page = rep.index.read_text()
    assert '<span class="bad">uncertain</span><span class="sub">seen first: binance_spot</span>' in page
    assert "not credited: binance_spot may have pumped earlier unseen" in page
    assert "(1 incomplete, 0 unknown; 1 of them pumped)" in page
    assert "1 pump event(s) on such streams left out" in page
    # the figures' captions say what the histograms and the box plot count
    for caption in ("Lag of each pump&#x27;s start after T", "Rise of each pump", "Duration of each pump"):
        assert f"<figcaption>{caption} (n=2; 1 pump(s) on streams with a gap or unknown" in page
    assert 'alt="First-pump lag after T, per stream (whole streams only; 1 pump(s) on streams' in page
    csv_head = (rep.out_dir / "streams.csv").read_text().splitlines()[0].split(",")
    assert {"whole", "incomplete", "unknown", "left_out", "pumped_left_out"} <= set(csv_head)
    events_csv = (rep.out_dir / "events.csv").read_text()
    assert ",incomplete,False" in events_csv


def test_first_pump_on_a_stream_with_a_gap_only() -> None:
    """Every pump on streams with a gap: nobody credited; a pump at the same µs as the first
    whole one on a stream with a gap leaves it open too."""
    from pumpwatch.detector.study import ListingFiles, listing_study

    t = 1_767_258_060 * US_PER_S

    def listing(pumps: dict[str, int], states: dict[str, str]) -> dict[str, Any]:
        meta = {
            "symbol": "X",
            "trigger_time_us": t,
            "window": {"start_us": t - 20 * US_PER_S, "end_us": t + 20 * US_PER_S},
            "streams": {
                s: {"trades": 10, "coverage": {"state": st, "missing": [{"start_us": t + 15 * US_PER_S}]}}
                for s, st in states.items()
            },
        }
        events = [
            {"exchange": s.split("_")[0], "market_type": s.split("_")[1], "start_time_us": at,
             "start_time": at // 1000, "end_time_us": at + US_PER_S, "end_time": (at + US_PER_S) // 1000,
             "price_change_percent": 5.0, "trades_count": 3, "volume": 1.0}
            for s, at in pumps.items()
        ]  # fmt: skip
        comp = {"streams": {s: {"pumped": s in pumps, "first_pump_time_us": pumps.get(s)} for s in states}}
        return listing_study(ListingFiles("X", Path("."), meta, {"pump_events": events}, comp, None))

    row = listing({"okx_spot": t + 100}, {"okx_spot": "incomplete", "binance_spot": "complete"})
    assert row["first_pump_certain"] is False and row["first_pump_doubt"] == ["okx_spot"]
    row = listing(
        {"okx_spot": t + 100, "binance_spot": t + 100}, {"okx_spot": "incomplete", "binance_spot": "complete"}
    )
    assert row["first_pump_certain"] is False and row["first_pump_doubt"] == ["okx_spot"]
    row = listing({"binance_spot": t + 100}, {"okx_spot": "incomplete", "binance_spot": "complete"})
    assert row["first_pump_certain"] is True and row["first_pump_stream"] == "binance_spot"
    row = listing({"binance_spot": t + 100}, {"okx_spot": "unknown", "binance_spot": "complete"})
    assert row["first_pump_certain"] is False and row["first_pump_doubt"] == ["okx_spot"]


# --- finding 3: the timeline never plots "no pump" as a rise of 0 -------------------------------------


def test_timeline_keeps_listings_without_a_pump_apart(
    listings_store: tuple[Path, dict[str, Path]],
) -> None:
    root, _ = listings_store
    numbers = study(read_listings(root / "listings").found)
    series = timeline_series(numbers["listings"])
    plotted = [lst["symbol"] for s in series if not s["no_pump"] for lst in s["listings"]]
    rises = [r for s in series if not s["no_pump"] for r in s["rise"]]
    assert sorted(plotted) == ["0G", "ENA", "ZRO"] and None not in rises and min(rises) >= 3.0
    (quiet,) = [s for s in series if s["no_pump"]]
    assert [lst["symbol"] for lst in quiet["listings"]] == ["HYPE"]
    assert quiet["label"] == "no pump / not detected (1)"
    hollow = [lst["symbol"] for s in series if not s["no_pump"] and not s["whole"] for lst in s["listings"]]
    assert hollow == ["ENA"]
    assert "0 = no pump" not in TIMELINE_KEY and "| = no pump" in TIMELINE_KEY


@pytest.mark.parametrize("field", ["trades"])
def test_metadata_values_are_escaped(
    listings_store: tuple[Path, dict[str, Path]], tmp_path: Path, field: str
) -> None:
    """Finding 5: a shared store's metadata.json comes from another machine."""
    _, dirs = listings_store
    listings = tmp_path / "listings"
    listings.mkdir()
    evil = "<script>alert(1)</script>"

    def edit(meta: Meta) -> None:
        meta[field] = evil
        meta["streams"] = copy.deepcopy(meta["streams"])
        meta["streams"]["binance_spot"][field] = evil

    copy_listing(dirs["HYPE"], listings, edit)
    page = write_report(listings, tmp_path / "report").index.read_text()
    assert evil not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2
