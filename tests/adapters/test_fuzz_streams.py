"""Every stream's parser, fed arbitrary bytes and arbitrary JSON: a list of trades, a Control, or
the documented ParseError, and nothing else. Exchange-specific fuzzers (values inside real
frames and envelopes) live in each exchange's test file."""

from __future__ import annotations

import pytest
from helpers.adapters import decode_or_parse_error, json_bytes, json_values, sim_instruments
from hypothesis import given, settings
from hypothesis import strategies as st

from pumpwatch.recorder.adapters import get_adapter
from pumpwatch.streams import STREAMS


@pytest.mark.parametrize("stream", STREAMS)
@settings(max_examples=300, deadline=None)
@given(frame=st.binary(max_size=300))
def test_arbitrary_bytes_only_parse_error(stream: str, frame: bytes) -> None:
    decode_or_parse_error(get_adapter(stream).decode, frame, sim_instruments(stream))


@pytest.mark.parametrize("stream", STREAMS)
@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_arbitrary_json_only_parse_error(stream: str, value: object) -> None:
    decode_or_parse_error(get_adapter(stream).decode, json_bytes(value), sim_instruments(stream))
