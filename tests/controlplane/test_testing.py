"""`controlplane.testing`'s helpers, and what a library user reads of an interrupted replay."""

from __future__ import annotations

import pytest


def test_make_trace_refuses_what_is_not_a_trace_and_makes_an_empty_one():
    """make_trace(0) raised IndexError, qps=0 ZeroDivisionError, qps=-1 numpy's 'scale < 0'."""
    from controlplane.testing import make_trace

    assert make_trace(0) == []
    for kwargs, said in (({"n": -1}, "n must be a whole number"), ({"n": 5, "qps": 0}, "qps must be a finite rate"),
                         ({"n": 5, "qps": -1}, "qps must be a finite rate")):
        with pytest.raises(ValueError, match=said):
            make_trace(**kwargs)


def test_replay_interrupted_reads_as_words():
    from controlplane.errors import ReplayInterrupted

    assert str(ReplayInterrupted(3, 18063)) == "replay interrupted (run 3), after 18,063 requests arrived"
    assert str(ReplayInterrupted(None, 0)) == "replay interrupted before the run started"
    # an unrecorded run had started: it read "(before the run started), after 5 requests arrived"
    assert str(ReplayInterrupted(None, 5)) == "replay interrupted (not recorded), after 5 requests arrived"


def test_make_requests_are_for_the_default_configs_model_as_a_run_resolves_them():
    """They named no model, so a hook called directly read ``queue:None`` where a run reads ``queue:default``."""
    from controlplane.testing import make_config, make_requests, make_worker

    config = make_config()
    (request,) = make_requests(1)
    assert request.model == config.cluster.models[0].name == make_worker().model == "default"
    assert make_requests(1, model=None)[0].model is None and make_requests(1, model="m")[0].model == "m"


def test_settings_by_name_for_a_plugin_passed_as_an_instance_say_to_give_them_to_its_constructor():
    """They were refused as 'settings given for plugin(s) not enabled', of the plugin just passed."""
    from controlplane import Plugin, PluginSettings, hookimpl
    from controlplane.errors import ConfigError
    from controlplane.testing import make_plugin_set

    class Choosy(Plugin):
        name = "choosy"

        class Settings(PluginSettings):
            choices: int = 2

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return None

    with pytest.raises(ConfigError) as caught:
        make_plugin_set(Choosy(), **{"choosy": {"choices": 3}})
    assert str(caught.value) == (
        "plugins.settings.choosy: plugin 'choosy' is passed in code as an instance, made with its settings already; "
        "give them to its constructor instead: Choosy({'choices': 3}) (or Choosy(Choosy.Settings(...)))")
    made = make_plugin_set(Choosy({"choices": 3}), **{"least-loaded": {"by": "tokens"}})
    assert made.get("choosy").settings.choices == 3 and made.get("least-loaded").settings.by == "tokens"


def test_replay_with_refuses_a_trace_reader_an_earlier_replay_read(tmp_path):
    """The second replay_with of one read_trace(...) replayed no request, silently: a reader is read once."""
    from controlplane.testing import make_trace, replay_with
    from sim.traces import read_trace, write_canonical

    path = tmp_path / "t.jsonl"
    write_canonical(make_trace(5), path)
    reader = read_trace(path)
    assert replay_with(trace=reader).summary["num_requests"] == 5
    with pytest.raises(ValueError, match=r"already read to its end.*trace=list\(read_trace\(path\)\)"):
        replay_with(trace=reader)
    requests = list(read_trace(path))  # read once: replayed as often as wanted
    assert [replay_with(trace=requests).summary["num_requests"] for _ in range(2)] == [5, 5]
    assert replay_with(trace=str(path)).summary["num_requests"] == 5  # (a path opens the file each time)
    stream = iter(make_trace(3))  # a list's iterator: not a generator, left alone
    assert replay_with(trace=stream).summary["num_requests"] == 3
