"""recorder.workers: how streams are dealt over worker processes, and the SIGHUP start-up race."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from pumpwatch.recorder.supervisor import _spawn_with_sighup_blocked, group_streams, worker_command
from pumpwatch.streams import STREAMS, split_stream

ALL = list(STREAMS)


def test_one_worker_carries_every_stream() -> None:
    assert group_streams(ALL, 1) == {"all": tuple(ALL)}


def test_zero_or_too_many_workers_is_one_per_exchange() -> None:
    per_exchange = {split_stream(s)[0] for s in ALL}
    for n in (0, len(per_exchange), len(per_exchange) + 5):
        groups = group_streams(ALL, n)
        assert set(groups) == per_exchange
        for name, streams in groups.items():
            assert all(split_stream(s)[0] == name for s in streams)


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_n_workers_split_whole_exchanges_evenly(n: int) -> None:
    groups = group_streams(ALL, n)
    assert len(groups) == n
    flat = [s for g in groups.values() for s in g]
    assert sorted(flat) == sorted(ALL) and len(flat) == len(set(flat))  # each stream exactly once
    owners: dict[str, str] = {}
    for name, streams in groups.items():
        for s in streams:
            ex = split_stream(s)[0]
            assert owners.setdefault(ex, name) == name, f"{ex} split over two workers"
        assert name == "-".join(dict.fromkeys(split_stream(s)[0] for s in streams))
    sizes = sorted(len(g) for g in groups.values())
    assert sizes[-1] - sizes[0] <= 2  # two streams per exchange: as even as whole exchanges allow


def test_uneven_exchanges_go_to_the_lightest_worker() -> None:
    streams = ["binance_spot", "binance_futures", "okx_spot", "bybit_spot", "gate_spot"]
    groups = group_streams(streams, 2)
    # binance (2) first, then bybit, okx and gate (1 each) each to the worker with fewer streams
    assert groups == {
        "binance-gate": ("binance_spot", "binance_futures", "gate_spot"),
        "bybit-okx": ("bybit_spot", "okx_spot"),
    }
    assert group_streams(["okx_spot"], 1) == {"okx": ("okx_spot",)}  # one exchange: named after it


def test_worker_command_names_a_group() -> None:
    cmd = worker_command("all", ["okx_spot", "gate_spot"], config=None, data_dir="/d")
    assert cmd[3:7] == ["--name", "all", "--streams", "okx_spot,gate_spot"]
    assert worker_command("okx", ["okx_spot"], config=None, data_dir="/d")[3:5] == ["--exchange", "okx"]


# A worker stand-in that needs a while before it installs its SIGHUP handler, then unblocks it,
# as the real worker does: the blocked mask inherited through exec keeps an early SIGHUP pending.
LATE_HANDLER = """
import signal, sys, time
time.sleep(1.0)
got = []
signal.signal(signal.SIGHUP, lambda *_: got.append(1))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
time.sleep(0.2)
sys.exit(0 if got else 5)  # 5: the pending SIGHUP was lost
"""


def test_sighup_before_the_handler_exists_is_delivered_later_not_fatal() -> None:
    async def body() -> tuple[int, set[int]]:
        proc = await _spawn_with_sighup_blocked([sys.executable, "-c", LATE_HANDLER])
        # The supervisor's own mask is restored after the spawn.
        mask_after = signal.pthread_sigmask(signal.SIG_BLOCK, set())
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGHUP)
        return await proc.wait(), set(mask_after)

    rc, mask = asyncio.run(body())
    assert rc == 0, f"exit {rc}: the early SIGHUP killed the child (or was lost: 5)"
    assert signal.SIGHUP not in mask


def test_a_plain_spawn_dies_of_an_early_sighup() -> None:
    """The control: without the blocked mask the same early SIGHUP is fatal (so the test above can fail)."""

    async def body() -> int:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", LATE_HANDLER)
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGHUP)
        return await proc.wait()

    assert asyncio.run(body()) == -signal.SIGHUP


def test_real_worker_survives_sighup_at_start(tmp_path: Path) -> None:
    """The real worker, SIGHUP'd over and over from its first instant, keeps running."""
    from helpers.e2e import Market, wait_listening

    streams = ["okx_spot", "okx_futures"]

    async def body() -> None:
        async with Market(streams) as market:
            config = market.write_config(tmp_path)
            cmd = worker_command("okx", streams, config=config, data_dir=str(tmp_path / "data"))
            proc = await _spawn_with_sighup_blocked(cmd)
            try:
                for _ in range(40):
                    if proc.returncode is not None:
                        break
                    proc.send_signal(signal.SIGHUP)
                    await asyncio.sleep(0.05)
                await market.wait_subscribed()
                await wait_listening(tmp_path / "data", streams)
                assert proc.returncode is None, f"worker died with {proc.returncode}"
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 30) == 0

    asyncio.run(body())


def test_symbols_file_lists_finds_a_base_by_text(tmp_path: Path) -> None:
    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.recorder.supervisor import symbols_file_lists
    from pumpwatch.recorder.symbols import write_symbols

    path = tmp_path / "symbols.yaml"
    write_symbols(
        path,
        {
            "okx_spot": [Instrument("ON-USDT", "ON", "USDT"), Instrument("ABC-USDT", "ABC", "USDT")],
            "gate_spot": [Instrument("1INCH_USDT", "1INCH", "USDT")],
        },
    )
    for base in ("ON", "ABC", "1INCH"):
        assert symbols_file_lists(path, base), base
    for base in ("AB", "BC", "INCH", "NEWCOIN", "USDT"):
        assert not symbols_file_lists(path, base), base
    assert not symbols_file_lists(tmp_path / "absent.yaml", "ON")


class _Pipe:
    """What `_reload_symbols` needs of a pipeline: its stream and the instruments it is given."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.updates: list[list[str]] = []

    def update_instruments(self, instruments: dict[str, object]) -> None:
        self.updates.append(sorted(instruments))


def test_a_list_changed_while_the_worker_started_is_reloaded_and_sighup_is_immediate(tmp_path: Path) -> None:
    """The worker reads the list, then spends seconds recovering and priming before its reload
    loop starts: a refresh written in between must still be applied (the baseline is the mtime
    at the read, not at the loop's start), and at once when SIGHUP (`now`) says so."""
    import os

    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.recorder.symbols import write_symbols
    from pumpwatch.recorder.worker import _reload_symbols

    path = tmp_path / "symbols.yaml"
    write_symbols(path, {"okx_spot": [Instrument("A-USDT", "A", "USDT")]})
    loaded = path.stat().st_mtime_ns
    write_symbols(path, {"okx_spot": [Instrument("A-USDT", "A", "USDT"), Instrument("B-USDT", "B", "USDT")]})
    os.utime(path, ns=(loaded + 10**9, loaded + 10**9))

    async def body() -> list[list[str]]:
        pipe = _Pipe("okx_spot")
        stop, now = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_reload_symbols([pipe], path, 3600.0, stop, now, loaded))  # type: ignore[list-item]
        await asyncio.sleep(0.1)
        assert pipe.updates == []  # the hourly check is far away
        now.set()  # SIGHUP
        for _ in range(100):
            if pipe.updates:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task
        return pipe.updates

    assert asyncio.run(body()) == [["A-USDT", "B-USDT"]]


def test_a_listing_notice_refreshes_even_when_some_stream_lists_the_base(tmp_path: Path) -> None:
    # ABC trades on Gate already; its Bybit/OKX/Binance perpetual may open with the Upbit
    # listing: the notice must not wait for the periodic refresh because Gate lists it.
    from types import SimpleNamespace

    from pumpwatch.recorder.adapter import Instrument
    from pumpwatch.recorder.supervisor import SymbolsRefresh
    from pumpwatch.recorder.symbols import write_symbols
    from pumpwatch.settings import Settings

    settings = Settings()
    settings.recorder.symbols_file = str(tmp_path / "symbols.yaml")
    write_symbols(settings.recorder.symbols_file, {"gate_spot": [Instrument("ABC_USDT", "ABC", "USDT")]})
    streams = ["gate_spot", "okx_futures", "bybit_futures", "binance_futures"]

    async def body() -> tuple[bool, bool]:
        refresh = SymbolsRefresh(settings, None, streams, [])
        refresh.on_firing(SimpleNamespace(symbol="abc"))
        listed = refresh.wanted.is_set()
        refresh.wanted.clear()
        refresh.on_firing(SimpleNamespace(symbol="NEWCOIN"))
        return listed, refresh.wanted.is_set()

    assert asyncio.run(body()) == (True, True)
