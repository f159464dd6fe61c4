"""Two extractions running at once never take the same directory (review finding 1): the
listing watcher runs two extractions in parallel, and two notices of one coin at the same
second fall due together. The name is chosen and the directory swapped in under one lock."""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import shutil
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from pumpwatch.extractor import extract
from pumpwatch.recorder.sim.market import MarketSpec, write_store
from pumpwatch.timeunits import US_PER_S as S

START = 1_767_229_000 * S  # 2026-01-01T00:56:40Z
T = START + 100 * S
SPEC = MarketSpec(seed=7, start_us=START, duration_s=200, trades_per_s=8, bases=("BTC", "0G"))
STREAMS = ["binance_spot", "okx_futures"]
extract_mod = importlib.import_module("pumpwatch.extractor.extract")


def notice(n: int) -> dict[str, Any]:
    return {"type": "upbit", "notice_id": n, "title": f"0G notice {n}"}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("pristine")
    write_store(data_dir, SPEC, flush_every_s=2.0)
    return data_dir


@pytest.fixture
def data_dir(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(pristine, out)
    return out


def listings(data_dir: Path) -> dict[str, Any]:
    root = data_dir / "listings"
    return {
        p.name: orjson.loads((p / "metadata.json").read_bytes())
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }


def test_two_threads_in_the_same_second_get_two_directories(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both extractions are held just after choosing their directory until the other one has
    # chosen too (or 1.5 s passed: with the lock the other one waits for the first to finish).
    barrier = threading.Barrier(2)
    real = extract_mod.make_temp_dir

    def slow_temp_dir(target: Path) -> Path:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1.5)
        return real(target)

    monkeypatch.setattr(extract_mod, "make_temp_dir", slow_temp_dir)
    out: dict[int, Path] = {}
    errors: list[BaseException] = []

    def run(n: int, trigger_us: int) -> None:
        try:
            out[n] = extract(data_dir, "0G", trigger_us, source=notice(n), streams=STREAMS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, T + n * 1000)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert out[1] != out[2]
    found = listings(data_dir)
    assert sorted(found) == ["0G_20260101T005820Z", "0G_20260101T005820Z_2"]
    assert sorted(m["source"]["notice_id"] for m in found.values()) == [1, 2]
    for n, path in out.items():
        assert found[path.name]["source"]["notice_id"] == n
        assert found[path.name]["trigger_time_us"] == T + n * 1000


def _child(data_dir: str, n: int, start: Any) -> None:
    start.wait()
    extract(data_dir, "0G", T + n, source=notice(n), streams=STREAMS)


def test_four_processes_in_the_same_second_keep_four_directories(data_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_child, args=(str(data_dir), n, start)) for n in range(1, 5)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    found = listings(data_dir)
    assert len(found) == 4
    assert sorted(m["source"]["notice_id"] for m in found.values()) == [1, 2, 3, 4]
    assert all(not p.name.startswith(".") for p in (data_dir / "listings").iterdir())  # no temporary left
