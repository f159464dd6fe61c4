"""Every log line of a stream's connection machinery carries its stream and connection id,
bound once (`StreamLog`), as record attributes and at the start of the message."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from helpers.json_exchange import Harness, make_adapter, make_protocol

from pumpwatch.recorder.stream.logcontext import StreamLog


def test_stream_log_binds_stream_and_connection(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("pumpwatch.test.logcontext")
    stream_log = StreamLog(logger, "okx_spot")
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        stream_log.info("starting with %d symbols", 3)
        stream_log.conn("2-7").warning("lost after %.1f s: %s", 1.5, "closed", extra={"k": 1})
        stream_log.conn("2-7").debug("no arguments, 100% literal")
    first, second, third = caplog.records
    assert (first.stream, first.conn_id) == ("okx_spot", None)
    assert first.getMessage() == "okx_spot: starting with 3 symbols"
    assert (second.stream, second.conn_id, second.k) == ("okx_spot", "2-7", 1)
    assert second.getMessage() == "okx_spot conn 2-7: lost after 1.5 s: closed"
    assert second.name == "pumpwatch.test.logcontext"  # the module's logger, not a new one
    assert third.getMessage() == "okx_spot conn 2-7: no arguments, 100% literal"


def test_a_connections_log_records_carry_stream_and_connection_id(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with Harness(make_adapter(), make_protocol(), ["AAA", "BAD"]) as h:
            h.sim.reject(["BADUSDT"])
            await h.until(lambda: "BADUSDT" in h.runner.stats.rejected)
            await h.subscribed(1)
            h.sim.send_raw(orjson.dumps({"e": "error", "msg": "boom"}).decode())  # answers nothing
            await h.until(lambda: h.runner.stats.error_frames == 1)
            h.sim.drop_all()
            await h.until(lambda: h.runner.stats.reconnects == 1)

    with caplog.at_level(logging.DEBUG, logger="pumpwatch.recorder.stream"):
        asyncio.run(asyncio.wait_for(main(), 30))
    ours = [r for r in caplog.records if r.name.startswith("pumpwatch.recorder.stream.")]
    assert ours
    for record in ours:
        assert record.stream == "test_spot"
        conn_id = record.conn_id
        prefix = "test_spot: " if conn_id is None else f"test_spot conn {conn_id}: "
        assert record.getMessage().startswith(prefix)

    def one(logger: str, text: str) -> logging.LogRecord:
        found = [r for r in ours if r.name == logger and text in r.getMessage()]
        assert len(found) == 1, (text, [r.getMessage() for r in ours])
        return found[0]

    runner, connection = "pumpwatch.recorder.stream.runner", "pumpwatch.recorder.stream.connection"
    assert one(runner, "starting with 2 symbols").conn_id is None
    assert one(runner, "BADUSDT rejected").conn_id == "0-1"
    assert one(connection, "error frame (1 so far): boom").conn_id == "0-1"
    assert one(runner, "lost after").conn_id == "0-1"
    assert one(runner, "reconnected after").conn_id == "0-2"
