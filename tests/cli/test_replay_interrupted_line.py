"""The line `controlplane sim replay` and `live-replay` print when stopped (`common.say_replay_interrupted`): it
names SIGTERM when that stopped the run (a live replay's summary has no simulated second to stop at)."""

from __future__ import annotations

from controlplane.cli import common


class _Stopped(KeyboardInterrupt):
    def __init__(self, summary):
        super().__init__()
        self.run_id, self.db_url, self.num_arrived, self.summary = 3, None, 12, summary


def test_a_live_replay_stopped_by_sigterm_says_so(capsys):
    common.say_replay_interrupted(_Stopped({"interrupted_by": "SIGTERM", "num_requests": 12}))
    assert "interrupted by SIGTERM after 12 requests arrived: run 3 is stored" in capsys.readouterr().err
    common.say_replay_interrupted(_Stopped({"interrupted_by": "SIGINT", "num_requests": 12}))
    assert "interrupted after 12 requests arrived: run 3 is stored" in capsys.readouterr().err
