"""What a library replay checks of its arguments before a run opens (`sim.replay_args`)."""

from __future__ import annotations

import pytest

from controlplane.storage import get_run, make_engine
from controlplane.testing import make_config, make_trace
from sim.replay import replay


def test_an_unknown_trace_format_of_a_stream_is_refused(tmp_path):
    # (it was stored in the run row as given: trace_format 'azur')
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(ValueError, match=r"^unknown trace format 'azur' \(did you mean 'azure'\?\); valid formats: "
                                         r"azure, mooncake, "):
        replay(make_trace(5), make_config(storage={"url": url}), trace_format="azur", trace_name="mine")
    assert not (tmp_path / "runs.db").exists()  # (refused before the run opens)
    summary, _ = replay(make_trace(5), make_config(storage={"url": url}), trace_format="azure", trace_name="mine")
    assert get_run(make_engine(url), summary["run_id"])["trace_format"] == "azure"
