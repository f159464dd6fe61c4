"""`pumpwatch report`'s numbers equal what the listing files say (conftest.py builds the store),
its CSVs and `--json` carry the same numbers, and the command's options behave."""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import INCOMPLETE, PLAN, REPAIRED

from pumpwatch.detector.report import write_report
from pumpwatch.streams import STREAMS
from pumpwatch.timeunits import US_PER_MS

PUMPWATCH = str(Path(sys.executable).parent / "pumpwatch")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPWATCH_")}
    return subprocess.run([PUMPWATCH, *args], capture_output=True, text=True, timeout=120, env=env)


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


@pytest.fixture(scope="module")
def report(listings_store: tuple[Path, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, _ = listings_store
    return write_report(root / "listings", tmp_path_factory.mktemp("numbers") / "report").out_dir


def test_every_listing_row_equals_its_files(
    report: Path, listings_store: tuple[Path, dict[str, Path]]
) -> None:
    _, dirs = listings_store
    study = load(report / "report.json")
    assert [lst["symbol"] for lst in study["listings"]] == [p.symbol for p in PLAN]  # oldest first
    assert study["skipped"] == [{"listing": "notes", "reason": "no metadata.json"}]
    for plan, row in zip(PLAN, study["listings"], strict=True):
        d = dirs[plan.symbol]
        meta = load(d / "metadata.json")
        pa = load(d / "refined" / "pump_analysis.json")
        comp = load(d / "refined" / "exchange_comparison.json")
        events = pa["pump_events"]
        assert row["listing"] == d.name
        assert row["trigger_time_us"] == meta["trigger_time_us"] == plan.trigger_us
        assert row["trigger_utc"].replace(" UTC", "Z").replace(" ", "T") == meta["trigger_time"]
        if plan.source is None:
            assert meta["source"] == "manual" and row["source"]["kind"] == "manual"
        else:
            assert row["source"]["kind"] == "upbit"
            assert row["source"]["title"] == meta["source"]["title"] == plan.source["title"]
            assert row["source"]["notice_id"] == meta["source"]["notice_id"]
        states = [s["coverage"]["state"] for s in meta["streams"].values()]
        assert (row["streams_complete"], row["streams_repaired"], row["streams_incomplete"]) == (
            states.count("complete"), states.count("repaired"), states.count("incomplete"),
        )  # fmt: skip
        assert row["streams_total"] == len(meta["streams"]) == 12
        # pumps on the planned streams, as the detector found them
        assert (
            set(row["pumped_streams"])
            == set(plan.pumped)
            == {f"{e['exchange']}_{e['market_type']}" for e in events}
        )
        assert row["streams_pumped"] == pa["summary"]["total_streams_with_pumps"] == len(plan.pumped)
        if not events:
            assert row["first_pump_stream"] is None and row["max_rise_percent"] is None
            assert row["first_pump_lag_ms"] is None and row["pump_duration_ms"] is None
            continue
        s = pa["summary"]
        assert row["first_seen_stream"] == f"{s['first_pump_exchange']}_{s['first_pump_market_type']}"
        assert (
            row["first_seen_stream"]
            == comp["first_pump_stream"]
            == min(plan.lags_s, key=plan.lags_s.__getitem__)
        )
        first = events[0]
        assert row["first_seen_lag_ms"] == (first["start_time_us"] - meta["trigger_time_us"]) / US_PER_MS
        if plan.symbol == INCOMPLETE[0]:
            # gate_futures lost its connection from T - 5 s, before the first pump seen (T + 0.8 s),
            # and was never repaired: it may have pumped first unseen, so nobody is credited
            assert row["first_pump_certain"] is False and row["first_pump_doubt"] == [INCOMPLETE[1]]
            assert row["first_pump_stream"] is None and row["first_pump_lag_ms"] is None
        else:
            assert row["first_pump_certain"] is True and row["first_pump_doubt"] == []
            assert row["first_pump_stream"] == row["first_seen_stream"]
            assert row["first_pump_lag_ms"] == row["first_seen_lag_ms"]
        assert row["max_rise_percent"] == s["max_price_change"]
        assert row["max_volume_ratio"] == max(e["volume_spike_ratio"] for e in events)
        assert row["pump_duration_ms"] == s["pump_duration_ms"]
        # the per-stream table
        for st in row["streams"]:
            c = comp["streams"][st["stream"]]
            assert st["trades"] == c["trades"] == meta["streams"][st["stream"]]["trades"]
            assert st["coverage"] == meta["streams"][st["stream"]]["coverage"]["state"]
            assert st["pumped"] == c["pumped"] == (st["stream"] in plan.pumped)
            assert st["max_pump_rise_percent"] == c["max_pump_change_percent"]
            assert st["lag_behind_first_ms"] == c["lag_ms"]
            want = (
                None
                if c["first_pump_time_us"] is None
                else (c["first_pump_time_us"] - plan.trigger_us) / 1000
            )
            assert st["first_pump_lag_ms"] == want
            mine = [e for e in events if f"{e['exchange']}_{e['market_type']}" == st["stream"]]
            assert st["volume_in_pumps"] == sum(e["volume"] for e in mine)
        # the planned lags, within the detector's resolution (the sim starts rising at T + lag)
        for stream, lag_s in plan.lags_s.items():
            got = next(st for st in row["streams"] if st["stream"] == stream)["first_pump_lag_ms"]
            assert abs(got / 1000 - lag_s) < 0.35, (stream, got)


def test_coverage_states_of_the_planned_breaks(report: Path) -> None:
    study = load(report / "report.json")
    by_symbol = {lst["symbol"]: lst for lst in study["listings"]}
    assert by_symbol[INCOMPLETE[0]]["incomplete_streams"] == [INCOMPLETE[1]]
    assert by_symbol[REPAIRED[0]]["streams_repaired"] == 1
    assert (
        next(s for s in by_symbol[REPAIRED[0]]["streams"] if s["stream"] == REPAIRED[1])["coverage"]
        == "repaired"
    )
    assert study["totals"]["with_incomplete_stream"] == 1
    assert study["totals"] == {
        **study["totals"], "listings": 4, "with_pump": 3, "upbit": 2, "manual": 2, "not_detected": 0,
        "pump_events": sum(len(p.pumped) for p in PLAN), "with_unknown_coverage": 0, "first_credited": 2,
        "first_uncertain": 1, "events_left_out": 0,
    }  # fmt: skip


def test_per_stream_numbers(report: Path) -> None:
    study = load(report / "report.json")
    listings = study["listings"]
    credited = [lst for lst in listings if lst["first_pump_certain"]]
    for_volume = [lst for lst in listings if lst["events"] and all(st["whole"] for st in lst["streams"])]
    assert [lst["symbol"] for lst in for_volume] == ["0G", "ZRO"]  # ENA has an incomplete stream
    assert [s["stream"] for s in study["streams"]] == list(STREAMS)
    for s in study["streams"]:
        rows = [st for lst in listings for st in lst["streams"] if st["stream"] == s["stream"]]
        whole = [st for st in rows if st["coverage"] in ("complete", "repaired")]
        lags = [st["first_pump_lag_ms"] for st in whole if st["pumped"]]
        rises = [st["max_pump_rise_percent"] for st in whole if st["pumped"]]
        incomplete = int(s["stream"] == INCOMPLETE[1])
        got = (s["listings"], s["whole"], s["incomplete"], s["unknown"])
        assert got == (4, 4 - incomplete, incomplete, 0)
        assert s["left_out"] == incomplete and s["pumped_left_out"] == 0
        assert s["pumped"] == len(lags)
        assert s["first"] == sum(1 for lst in credited if lst["first_pump_stream"] == s["stream"])
        assert s["first_share"] == s["first"] / len(credited)
        for key, values in (("lag_ms", lags), ("rise_percent", rises)):
            spread = s[key]
            assert spread["n"] == len(values)
            if values:
                q1, _median, q3 = (
                    statistics.quantiles(values, n=4, method="inclusive")
                    if len(values) > 1
                    else [values[0]] * 3
                )
                assert spread["median"] == pytest.approx(statistics.median(values))
                assert (spread["q1"], spread["q3"]) == (pytest.approx(q1), pytest.approx(q3))
                assert spread["iqr"] == pytest.approx(q3 - q1)
            else:
                assert spread["median"] is None
        shares = []
        for lst in for_volume:
            total = sum(st["volume_in_pumps"] for st in lst["streams"])
            shares.append(
                sum(st["volume_in_pumps"] for st in lst["streams"] if st["stream"] == s["stream"]) / total
            )
        assert s["pump_volume_share"] == pytest.approx(sum(shares) / len(shares))
        assert s["pump_volume_share_n"] == len(shares) == 2
    assert sum(s["first"] for s in study["streams"]) == len(credited) == 2
    # every pump event appears once in the flat list, with its lag from T and duration
    events = study["events"]
    assert len(events) == sum(len(lst["events"]) for lst in listings) == 7
    for e in events:
        lst = next(lst for lst in listings if lst["listing"] == e["listing"])
        assert e["lag_ms"] == (e["start_time_us"] - lst["trigger_time_us"]) / 1000
        assert e["duration_ms"] > 0 and e["rise_percent"] >= 3.0
        assert e["whole"] is True and e["coverage"] in ("complete", "repaired")


def test_csv_files_carry_the_same_numbers(report: Path) -> None:
    study = load(report / "report.json")
    with open(report / "listings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["listing"] for r in rows] == [lst["listing"] for lst in study["listings"]]
    for r, lst in zip(rows, study["listings"], strict=True):
        assert r["notice_title"] == (lst["source"]["title"] or "")
        assert r["max_rise_percent"] == (
            "" if lst["max_rise_percent"] is None else str(lst["max_rise_percent"])
        )
        assert int(r["streams_incomplete"]) == lst["streams_incomplete"]
    with open(report / "events.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == len(study["events"])
    with open(report / "streams.csv", newline="") as fh:
        streams = list(csv.DictReader(fh))
    assert [r["stream"] for r in streams] == list(STREAMS)


def test_page_escapes_titles_and_links_every_listing(report: Path) -> None:
    page = (report / "index.html").read_text()
    assert "<b>Ethena</b>" not in page and "&lt;b&gt;Ethena&lt;/b&gt;" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    study = load(report / "report.json")
    for lst in study["listings"]:
        assert f'data-listing="{lst["listing"]}"' in page
    assert len(list((report / "charts").glob("*.png"))) == 4
    assert sorted(p.name for p in (report / "img").iterdir()) == [
        "duration.png", "lag.png", "rise.png", "streams.png", "timeline.png",
    ]  # fmt: skip


def test_cli_json_since_and_out(listings_store: tuple[Path, dict[str, Path]], tmp_path: Path) -> None:
    root, _ = listings_store
    out = tmp_path / "rep"
    proc = run("report", "--data-dir", str(root), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    printed = orjson.loads(proc.stdout)
    assert printed == load(out / "report.json")
    assert "report: 4 listing(s), 3 with a pump, 7 pump event(s), 1 skipped" in proc.stderr

    # --since: a date (00:00 UTC) or a TIME; the default --out is <data-dir>/report
    proc = run("report", "--data-dir", str(root), "--since", "2026-01-01T18:04:00+09:00")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(root / "report" / "index.html")
    assert [lst["symbol"] for lst in load(root / "report" / "report.json")["listings"]] == ["HYPE", "ENA"]
    proc = run("report", "--data-dir", str(root), "--since", "2026-01-02", "--json")
    assert proc.returncode == 0 and orjson.loads(proc.stdout)["listings"] == []

    # bad input: one line, exit 2, nothing written; an --out that is not a report is refused
    proc = run(
        "report", "--data-dir", str(root), "--since", "2026-01-01T09:00:00", "--out", str(tmp_path / "x")
    )
    assert proc.returncode == 2 and "no time zone" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    proc = run("report", "--data-dir", str(root), "--out", str(mine))
    assert proc.returncode == 2 and "not a PumpWatch report" in proc.stderr
    assert (mine / "thesis.tex").read_text() == "keep me"


def test_empty_data_dir(tmp_path: Path) -> None:
    rep = write_report(tmp_path / "listings", tmp_path / "report")
    assert rep.study["listings"] == [] and rep.study["streams"] == []
    assert "no listings yet" in rep.index.read_text()
