"""`sim.traces.stream_check`: a stream given to a replay in memory is checked as a file's rows are."""

from __future__ import annotations

import pytest

from sim.traces.stream_check import checked_requests


def test_a_stream_of_something_else_is_a_type_error_saying_what_a_request_is():
    """A list of dicts (or a DataFrame, which iterates over its column names) read "'dict' object has no
    attribute 'prompt_tokens'"."""
    with pytest.raises(TypeError, match=r"request 0 of the stream is a dict, not a sim\.traces\.TraceRequest"):
        list(checked_requests([{"request_id": "a", "arrival_s": 0.0, "prompt_tokens": 5, "output_tokens": 2}]))
    with pytest.raises(TypeError, match="request 0 of the stream is a str"):
        list(checked_requests(["request_id", "arrival_s"]))
