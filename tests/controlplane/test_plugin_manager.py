"""Building a run's plugin manager: discovery, selection, settings, isolation, ordering, speed."""

from __future__ import annotations

from collections import deque

import pluggy
import pytest

from controlplane import Plugin, PluginSettings, hookimpl
from controlplane.config import DEFAULT_PLUGINS, load_config
from controlplane.decisions import RouteDecision, ScaleDecision
from controlplane.errors import ConfigError, PluginError
from controlplane.plugin_manager import (
    ALLOW_ENV,
    MAX_RECORDED_ERRORS,
    TRACE_ENV,
    PluginInfo,
    build_plugin_set,
    discover_plugins,
    fast_caller,
)
from controlplane.session import RunSession, latency_factories
from controlplane.testing import (
    make_config,
    make_context,
    make_plugin_set,
    make_requests,
    make_trace,
    make_worker,
    replay_with,
)
from controlplane.types import RequestStatus
from tests.fixtures.common import assert_conserved

BUILTINS = {
    "queue-limit": "plugins.admission:QueueLimit",
    "exact-cache": "plugins.caching:ExactCache",
    "least-loaded": "plugins.routing:LeastLoaded",
    "round-robin": "plugins.routing:RoundRobin",
    "continuous-batching": "plugins.batching:ContinuousBatching",
    "fixed-replicas": "plugins.autoscaling:FixedReplicas",
    "static-memory": "plugins.memory:StaticMemory",
    "sampled-guardian": "plugins.guardians:SampledGuardian",
    "builtin-latency-models": "sim.latency.plugin:BuiltinLatencyModels",
}


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    monkeypatch.delenv(TRACE_ENV, raising=False)


# --- discovery -------------------------------------------------------------------------------


def test_discover_finds_every_builtin_through_its_entry_point():
    found = discover_plugins()
    for name, target in BUILTINS.items():
        info = found[name]
        assert info.entry_point == target
        assert (info.dist, info.version) == ("controlplane", "0.1.0")
        assert info.hooks and all(h.startswith("cp_") for h in info.hooks)
        assert info.doc  # first docstring paragraph, shown by `plugins list`
    assert found["continuous-batching"].hooks == ["cp_form_batch"]
    assert set(DEFAULT_PLUGINS) <= set(found)
    # every installed plugin's description is whole sentences (its first line alone was cut mid-sentence:
    # "... fewest queued plus running requests, or with"); two guardians had none
    assert {name: info.doc for name, info in found.items() if not info.doc.endswith(".")} == {}


def test_discovery_imports_no_plugin_module_and_a_run_imports_only_what_it_enables():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from controlplane.plugin_manager import build_plugin_set, discover_plugins\n"
        "found = discover_plugins()\n"
        "print(sorted(m for m in ('plugins.routing', 'plugins.caching', 'plugins.batching') if m in sys.modules))\n"
        "build_plugin_set(['round-robin'])\n"
        "print(sorted(m for m in ('plugins.routing', 'plugins.caching', 'plugins.batching') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["[]", "['plugins.routing']"]


def test_a_broken_entry_point_fails_only_the_run_that_uses_it_naming_itself():
    from importlib import metadata

    ep = metadata.EntryPoint("broken", "no_such_module_xyz:Thing", "controlplane")
    info = PluginInfo.from_entry_point(ep)
    available = {**discover_plugins(), "broken": info}
    build_plugin_set(["round-robin"], available=available)  # not enabled: not imported, no error
    with pytest.raises(PluginError, match="'broken' .*no_such_module_xyz:Thing.* failed to load"):
        build_plugin_set(["round-robin", "broken"], available=available)


def _with_a_second_round_robin(monkeypatch):
    from importlib import metadata

    from controlplane import plugin_manager

    class Dist:
        name, version = "cp-mine", "0.3.0"

    mine = metadata.EntryPoint("round-robin", "cp_mine:RoundRobin", "controlplane")
    mine = mine._for(Dist()) if hasattr(mine, "_for") else mine
    eps = [*metadata.entry_points(group="controlplane"), mine]
    monkeypatch.setattr(plugin_manager.metadata, "entry_points", lambda group: eps)
    return plugin_manager._scan_entry_points()


def test_two_installed_plugins_of_one_name_are_an_error_naming_both_distributions(monkeypatch):
    available = _with_a_second_round_robin(monkeypatch)
    with pytest.raises(PluginError) as exc:
        build_plugin_set(["round-robin"], available=available)
    msg = str(exc.value)
    assert "two installed plugins are named 'round-robin'" in msg
    assert "plugins.routing:RoundRobin (controlplane 0.1.0)" in msg
    assert "cp_mine:RoundRobin (cp-mine 0.3.0)" in msg


def test_two_installed_plugins_of_one_name_fail_only_the_runs_enabling_it(monkeypatch):
    available = _with_a_second_round_robin(monkeypatch)  # discovery itself does not fail
    assert available["round-robin"].dist == "controlplane, cp-mine"  # `plugins list` shows both
    assert available["round-robin"].version == "0.1.0, 0.3.0"
    build_plugin_set(["least-loaded"], available=available)  # a run without it is unaffected


def test_an_entry_point_to_something_that_is_no_plugin_class_or_module_is_refused():
    from importlib import metadata

    ep = metadata.EntryPoint("a-function", "controlplane.testing:make_trace", "controlplane")
    with pytest.raises(PluginError, match=r"'a-function' \(controlplane\.testing:make_trace\) loads a function, "
                                          r"not a plugin class or a module of hook functions"):
        PluginInfo.from_entry_point(ep).target


def test_an_entry_point_named_unlike_its_plugin_is_refused_naming_both():
    from importlib import metadata

    ep = metadata.EntryPoint("rr-alias", "plugins.routing:RoundRobin", "controlplane")
    with pytest.raises(PluginError, match="'rr-alias'.*named 'round-robin'"):
        PluginInfo.from_entry_point(ep).target


def test_each_build_gets_fresh_plugin_instances():
    a, b = make_plugin_set(), make_plugin_set()
    assert a.pm is not b.pm
    assert a.get("exact-cache") is not b.get("exact-cache")
    assert [p["name"] for p in a.versions()] == list(DEFAULT_PLUGINS)
    assert a.get("no-such-plugin") is None


# --- selection and settings ------------------------------------------------------------------


def test_unknown_plugin_is_a_config_error_listing_the_installed_ones():
    with pytest.raises(ConfigError) as exc:
        build_plugin_set(["least-loaded", "least-busy"])
    msg = str(exc.value)
    assert "plugins.enabled" in msg and "'least-busy'" in msg
    assert all(name in msg.split("installed:")[1] for name in BUILTINS)


def test_unknown_setting_names_the_full_key():
    with pytest.raises(ConfigError, match=r"plugins\.settings\.queue-limit\.max_queud: Extra inputs"):
        build_plugin_set(DEFAULT_PLUGINS, {"queue-limit": {"max_queud": 3}})


def test_invalid_setting_value_names_the_key():
    with pytest.raises(ConfigError, match=r"plugins\.settings\.continuous-batching\.policy"):
        build_plugin_set(DEFAULT_PLUGINS, {"continuous-batching": {"policy": "fifo"}})


def test_an_error_about_the_settings_as_a_whole_names_the_plugin_s_key_without_a_trailing_dot():
    with pytest.raises(ConfigError) as exc:
        build_plugin_set([*DEFAULT_PLUGINS, "hpa"], {"hpa": {"min_replicas": 5, "max_replicas": 2}})
    assert "\n  plugins.settings.hpa: " in str(exc.value) and "min_replicas 5 > max_replicas 2" in str(exc.value)


def test_valid_settings_reach_the_instance():
    ps = build_plugin_set(DEFAULT_PLUGINS, {"queue-limit": {"max_queued": 3}})
    assert ps.get("queue-limit").settings.max_queued == 3


def test_settings_for_a_plugin_that_is_not_enabled_are_an_error():
    with pytest.raises(ConfigError, match=r"plugins\.settings: .*'round-robin'"):
        build_plugin_set(DEFAULT_PLUGINS, {"round-robin": {}})


def test_settings_for_a_plugin_without_settings_are_an_error():
    class Bare:
        """Not a Plugin subclass: takes no settings."""

        @hookimpl
        def cp_on_event(self, event):
            pass

    available = {"bare": PluginInfo("bare", Bare, None, None, None)}
    with pytest.raises(ConfigError, match=r"plugins\.settings\.bare: this plugin takes no settings"):
        build_plugin_set(["bare"], {"bare": {"x": 1}}, available=available)
    assert isinstance(build_plugin_set(["bare"], available=available).get("bare"), Bare)


def test_a_plugin_listed_twice_is_an_error():
    with pytest.raises(ConfigError, match="listed twice"):
        build_plugin_set(["least-loaded", "least-loaded"])


def test_the_listed_twice_error_names_the_plugin():
    with pytest.raises(ConfigError, match="'least-loaded' is listed twice"):
        build_plugin_set(["queue-limit", "least-loaded", "round-robin", "least-loaded"])


def test_a_config_error_raised_when_a_plugin_is_made_keeps_its_message():
    shadow = {"policies": ["hpa"], "settings": {"hpa": {"nope": 1}}}
    with pytest.raises(ConfigError, match=r"^invalid plugin settings:\n  plugins\.settings\.shadow\.settings\.hpa\.nope"):
        build_plugin_set([*DEFAULT_PLUGINS, "shadow"], {"shadow": shadow})


def test_a_plugin_that_raises_when_made_is_a_plugin_error_naming_it():
    class Fragile(Plugin):
        name = "fragile"

        def __init__(self, settings=None):
            super().__init__(settings)
            raise RuntimeError("no model file")

    available = {"fragile": PluginInfo("fragile", Fragile, None, None, None)}
    with pytest.raises(PluginError, match="plugin 'fragile' failed to start: RuntimeError: no model file"):
        build_plugin_set(["fragile"], available=available)


def test_allow_list_keeps_other_installed_plugins_out(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "least-loaded, continuous-batching")
    ps = build_plugin_set(DEFAULT_PLUGINS)
    assert [p.info.name for p in ps.loaded] == ["least-loaded", "continuous-batching"]
    assert ps.hook.cp_admit_request.get_hookimpls() == []


def test_allow_list_leaves_out_a_configured_plugin_with_its_settings(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "least-loaded")
    ps = build_plugin_set(DEFAULT_PLUGINS, {"queue-limit": {"max_queued": 3}})
    assert [p.info.name for p in ps.loaded] == ["least-loaded"]
    with pytest.raises(ConfigError, match=r"plugins\.settings: .*'round-robin'"):
        build_plugin_set(DEFAULT_PLUGINS, {"round-robin": {}})  # not configured at all: still an error


def test_allow_list_warns_of_the_enabled_plugins_it_leaves_out(monkeypatch, caplog):
    """The daemon and library runs went without them in silence, their stored config listing them."""
    monkeypatch.setenv(ALLOW_ENV, "least-loaded, continuous-batching, fixed-replicas")
    with caplog.at_level("WARNING", logger="controlplane.plugin_manager"):
        build_plugin_set(["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "exact-cache"])
        build_plugin_set(["queue-limit", "least-loaded", "continuous-batching", "fixed-replicas", "exact-cache"])
    warnings = [r.getMessage() for r in caplog.records if "leaves out" in r.getMessage()]
    assert warnings == [f"{ALLOW_ENV}='least-loaded, continuous-batching, fixed-replicas' leaves out queue-limit, "
                        "exact-cache of plugins.enabled: the run goes without them"]


def test_allow_list_warns_of_a_name_no_installed_plugin_has(monkeypatch, caplog):
    monkeypatch.setenv(ALLOW_ENV, "least-loaded, continuous-batchin")
    with caplog.at_level("WARNING", logger="controlplane.plugin_manager"):
        ps = build_plugin_set(DEFAULT_PLUGINS)
        build_plugin_set(DEFAULT_PLUGINS)  # warned once
    assert [p.info.name for p in ps.loaded] == ["least-loaded"]
    warnings = [r.getMessage() for r in caplog.records if "continuous-batchin'" in r.getMessage()]
    assert len(warnings) == 1
    assert f"{ALLOW_ENV} names 'continuous-batchin', which is not an installed plugin " \
        "(did you mean 'continuous-batching'" in warnings[0]


def test_allow_list_works_with_a_loaded_config(monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, ",".join(DEFAULT_PLUGINS))
    config = load_config()
    assert config.plugins.enabled == list(DEFAULT_PLUGINS)


# --- typos -----------------------------------------------------------------------------------


class TypoHook(Plugin):
    name = "typo-hook"

    @hookimpl
    def cp_form_batches(self, ctx, worker):
        return None


def test_a_hookimpl_with_a_typo_in_its_name_is_a_plugin_error():
    with pytest.raises(PluginError, match="cp_form_batches"):
        make_plugin_set(TypoHook())


def test_the_typo_error_names_the_plugin():
    with pytest.raises(PluginError, match="typo-hook"):
        make_plugin_set(TypoHook())


class NoPrefix(Plugin):
    name = "no-prefix"

    @hookimpl
    def form_batch(self, ctx, worker):
        return None


def test_a_hookimpl_without_the_cp_prefix_is_not_silently_ignored():
    with pytest.raises(PluginError, match="form_batch"):
        make_plugin_set(NoPrefix())


# --- isolation -------------------------------------------------------------------------------


class ExplodingRouter(Plugin):
    name = "exploding-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        raise RuntimeError(f"cannot route {request.request_id}")


class ExplodingObserver(Plugin):
    name = "exploding-observer"

    @hookimpl
    def cp_on_event(self, event):
        if type(event).__name__ == "WorkerChanged":
            raise KeyError("observer bug")


def test_a_raising_policy_is_recorded_and_the_next_implementation_decides():
    res = replay_with(ExplodingRouter(), trace=make_trace(12))
    errors = [d for d in res.decisions if d.is_error]
    assert len(errors) == 12
    assert {(d.hook, d.plugin, d.action) for d in errors} == {("cp_route_request", "exploding-router", "error")}
    # the first of each plugin and hook says where it was raised; later ones only what
    assert errors[0].reason == ("RuntimeError: cannot route 0 (raised at tests/controlplane/test_plugin_manager.py:"
                                f"{ExplodingRouter.cp_route_request.__code__.co_firstlineno + 2} in cp_route_request)")
    assert errors[1].reason == "RuntimeError: cannot route 1" and errors[1].payload is None
    assert {d.plugin for d in res.decisions if d.action == "route"} == {"least-loaded"}
    assert res.summary["num_completed"] == 12 and res.summary["num_plugin_errors"] == 12


def test_a_raising_observer_is_recorded_and_the_run_completes():
    res = replay_with(ExplodingObserver(), trace=make_trace(5))
    errors = [d for d in res.decisions if d.is_error]
    assert errors and {(d.hook, d.plugin) for d in errors} == {("cp_on_event", "exploding-observer")}
    assert "KeyError" in errors[0].reason
    assert res.summary["num_completed"] == 5


def test_the_builtin_fallback_decides_when_no_enabled_plugin_can():
    class ExplodingBatcher(Plugin):
        name = "exploding-batcher"

        @hookimpl
        def cp_form_batch(self, ctx, worker):
            raise ZeroDivisionError("bad batch maths")

    # Only the explosive batcher is enabled for batching: the built-in default steps in.
    enabled = [n for n in DEFAULT_PLUGINS if n != "continuous-batching"]
    res = replay_with(ExplodingBatcher(), trace=make_trace(8), plugins={"enabled": enabled})
    batches = [d for d in res.decisions if d.action == "batch"]
    assert batches and {d.plugin for d in batches} == {"continuous-batching (fallback)"}
    assert all(d.plugin == "exploding-batcher" for d in res.decisions if d.is_error)
    assert res.summary["num_completed"] == 8
    assert_conserved(res.summary, res.requests)


def test_every_plugin_error_is_counted_in_the_summary():
    n = MAX_RECORDED_ERRORS + 20
    res = replay_with(ExplodingRouter(), trace=make_trace(n, qps=20))
    assert res.summary["num_completed"] == n
    assert res.summary["num_plugin_errors"] == n


class NoisyObserver:
    """Raises on every event, its own error decisions included."""

    name = "noisy-observer"

    @hookimpl
    def cp_on_event(self, ctx, event):
        raise RuntimeError("observer bug")


class StrayRouter:
    """Routes to a replica that is not a candidate."""

    name = "stray-router"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision("nowhere-0", "a typo")


@pytest.mark.parametrize(("plugin", "hook"), [(NoisyObserver(), "cp_on_event"), (StrayRouter(), "cp_route_request")])
def test_the_summarys_error_counts_match_the_recorded_rows_up_to_the_cap(plugin, hook):
    """The observer's errors on its own error decisions were counted and then dropped (1,435 counted, "the first
    100 recorded", 50 rows); a stray route's error was counted outside the per-plugin counts and recorded
    without the cap (300 rows, no ``plugin_error_counts``)."""
    n = MAX_RECORDED_ERRORS + 50
    res = replay_with(plugin, trace=make_trace(n, qps=20))
    assert res.summary["num_completed"] == n
    counted = res.summary["plugin_error_counts"][plugin.name][hook]
    assert res.summary["num_plugin_errors"] == counted >= n
    rows = [d for d in res.decisions if d.is_error]
    assert len(rows) == MAX_RECORDED_ERRORS and {(d.plugin, d.hook) for d in rows} == {(plugin.name, hook)}


class ExplodingWrapper:
    name = "exploding-wrapper"

    @hookimpl(wrapper=True)
    def cp_scale(self, ctx, model, workers):
        yield
        raise RuntimeError("wrapper bug")


def test_a_raising_wrapper_does_not_take_the_run_down():
    res = replay_with(ExplodingWrapper(), trace=make_trace(5))
    assert res.summary["num_completed"] == 5
    assert any(d.is_error and d.plugin == "exploding-wrapper" for d in res.decisions)


# --- ordering --------------------------------------------------------------------------------


def test_the_first_enabled_plugin_is_asked_first():
    three = {"models": [{"name": "default", "replicas": 3}]}
    trace = make_trace(30, qps=30)
    rest = [n for n in DEFAULT_PLUGINS if n != "least-loaded"]
    rr_first = replay_with(trace=trace, cluster=three, plugins={"enabled": ["round-robin", "least-loaded", *rest]})
    ll_first = replay_with(trace=trace, cluster=three, plugins={"enabled": ["least-loaded", "round-robin", *rest]})
    assert {d.plugin for d in rr_first.decisions if d.action == "route"} == {"round-robin"}
    assert {d.plugin for d in ll_first.decisions if d.action == "route"} == {"least-loaded"}


def test_extra_plugins_are_asked_before_the_configured_ones():
    class Pin(Plugin):
        name = "pin"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return RouteDecision(workers[-1].worker_id, "pinned")

    res = replay_with(Pin(), trace=make_trace(6))
    routes = [d for d in res.decisions if d.action == "route"]
    assert {(d.plugin, d.payload["worker"], d.reason) for d in routes} == {("pin", "default-1", "pinned")}


# --- fast_caller -----------------------------------------------------------------------------


def _recorder(name: str, answer, calls: list[str], **opts):
    def cp_route_request(self, ctx, request, workers):
        calls.append(name)
        return answer

    def cp_on_event(self, ctx, event):
        calls.append(name)

    cls = type(name, (), {
        "name": name,
        "cp_route_request": hookimpl(**opts)(cp_route_request),
        "cp_on_event": hookimpl(**opts)(cp_on_event),
    })
    return cls()


@pytest.mark.parametrize("answers", [
    (None, None, "C", None, "E"),
    (None, None, None, None, None),
    ("A", "B", "C", "D", "E"),
])
def test_fast_caller_matches_pluggy_including_tryfirst_and_trylast(answers):
    calls: list[str] = []
    opts = [{}, {"tryfirst": True}, {"trylast": True}, {}, {"tryfirst": True}]
    plugins = [_recorder(n, a, calls, **o) for n, a, o in zip("abcde", answers, opts)]
    ps = build_plugin_set([], extra=plugins)
    kwargs = {"ctx": None, "request": None, "workers": (), "event": None}
    for hook in ("cp_route_request", "cp_on_event"):
        caller = getattr(ps.hook, hook)
        calls.clear()
        expected = caller(**kwargs)
        expected_order = list(calls)
        calls.clear()
        got = fast_caller(caller, ps.monitor)(*[kwargs[n] for n in caller.spec.argnames])
        assert (got, calls) == (expected if hook == "cp_route_request" else None, expected_order)
        if hook == "cp_on_event":
            assert expected_order == ["b", "e", "a", "d", "c"]  # tryfirst, then in the order passed, trylast


def test_fast_caller_keeps_isolation():
    ps = build_plugin_set(["least-loaded"], extra=[ExplodingRouter()])
    workers = [make_worker("default-0"), make_worker("default-1", waiting=deque(make_requests(2)))]
    decision = fast_caller(ps.hook.cp_route_request, ps.monitor)(make_context(workers=workers),
                                                                 make_requests(1)[0], workers)
    assert decision.worker_id == "default-0"
    assert [(e.plugin, e.hook) for e in ps.monitor.take_errors()] == [("exploding-router", "cp_route_request")]
    assert ps.monitor.last_plugin == "least-loaded"


def test_fast_caller_falls_back_to_pluggy_when_a_wrapper_exists():
    class Wrap:
        name = "wrap"

        @hookimpl(wrapper=True)
        def cp_route_request(self, ctx, request, workers):
            return (yield)

    class OldWrap:
        name = "old-wrap"

        @hookimpl(hookwrapper=True)
        def cp_scale(self, ctx, model, workers):
            yield

    ps = build_plugin_set(DEFAULT_PLUGINS, extra=[Wrap(), OldWrap()])
    assert fast_caller(ps.hook.cp_route_request, ps.monitor).caller is ps.hook.cp_route_request
    assert fast_caller(ps.hook.cp_scale, ps.monitor).caller is ps.hook.cp_scale
    assert not hasattr(fast_caller(ps.hook.cp_form_batch, ps.monitor), "caller")


# --- wrappers --------------------------------------------------------------------------------


class Greedy(Plugin):
    name = "greedy-scaler"

    @hookimpl
    def cp_scale(self, ctx, model, workers):
        return ScaleDecision(model, 6, "more is better")


class Clamp(Plugin):
    """A wrapper: whatever the policies decide, stay within [min, max] replicas."""

    name = "clamp"

    class Settings(PluginSettings):
        max_replicas: int = 3

    @hookimpl(wrapper=True)
    def cp_scale(self, ctx, model, workers):
        decision = yield
        if decision is not None and decision.target_replicas > self.settings.max_replicas:
            return ScaleDecision(model, self.settings.max_replicas,
                                 f"{decision.reason}; clamped to {self.settings.max_replicas}")
        return decision


def test_a_wrapper_clamps_the_scaling_decision():
    res = replay_with(Clamp(), Greedy(), trace=make_trace(40, qps=10),
                      cluster={"models": [{"name": "default", "replicas": 1, "cold_start_s": 1.0}]})
    scale = [d for d in res.decisions if d.action == "scale"]
    assert len(scale) == 1
    assert scale[0].payload == {"from": 1, "to": 3}
    assert scale[0].reason == "more is better; clamped to 3"
    assert scale[0].plugin == "greedy-scaler"
    assert res.summary["num_completed"] == 40


# --- registration hooks and tracing ----------------------------------------------------------


def test_a_duplicate_latency_model_name_is_a_config_error():
    class Shadow(Plugin):
        name = "shadow-latency"

        @hookimpl
        def cp_register_latency_models(self, register):
            register("linear", lambda **kw: None)

    session = RunSession(make_config(), mode="sim", record=False, extra_plugins=[Shadow()])
    with pytest.raises(ConfigError, match="linear"):
        latency_factories(session.plugins)


def test_trace_env_traces_policy_hook_calls(monkeypatch, capsys):
    monkeypatch.setenv(TRACE_ENV, "1")
    replay_with(trace=make_trace(2))
    err = capsys.readouterr().err
    assert "cp_run_started" in err
    assert "cp_form_batch" in err and "cp_route_request" in err


def test_replay_with_accepts_an_event_log():
    from controlplane.testing import EventLog

    log = EventLog()
    res = replay_with(log, trace=make_trace(3))
    assert len(log.events) == len(res.events) > 0


def test_an_extra_plugin_named_like_an_enabled_one_is_refused():
    class Impostor(Plugin):
        name = "least-loaded"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            return None

    with pytest.raises((PluginError, ValueError), match="least-loaded"):
        make_plugin_set(Impostor())


def test_isolated_hooks_keep_pluggy_argument_names():
    ps = make_plugin_set()
    impl = ps.hook.cp_form_batch.get_hookimpls()[0]
    assert impl.argnames == ("ctx", "worker")
    assert isinstance(ps.pm, pluggy.PluginManager)


def test_replay_with_a_rejecting_admission_plugin_has_no_completions():
    class Closed(Plugin):
        name = "closed"

        @hookimpl
        def cp_admit_request(self, ctx, request):
            from controlplane.decisions import Admission

            return Admission(False, "maintenance window")

    res = replay_with(Closed(), trace=make_trace(4))
    assert {(r.status, r.reason) for r in res.requests} == {(RequestStatus.REJECTED, "maintenance window")}


# --- plugins passed in code ------------------------------------------------------------------


class _First(Plugin):
    name = "first"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(workers[0].worker_id, "first")


class _Last(Plugin):
    name = "last"

    @hookimpl
    def cp_route_request(self, ctx, request, workers):
        return RouteDecision(workers[-1].worker_id, "last")


def test_plugins_passed_in_code_are_asked_in_the_order_passed():
    three = {"models": [{"name": "default", "replicas": 3}]}
    for plugins, winner in (((_First(), _Last()), "first"), ((_Last(), _First()), "last")):
        res = replay_with(*plugins, trace=make_trace(20, qps=10), cluster=three)
        assert {d.plugin for d in res.decisions if d.action == "route"} == {winner}
    ps = make_plugin_set(_First(), _Last())
    assert [i.plugin_name for i in reversed(ps.hook.cp_route_request.get_hookimpls())][:2] == ["first", "last"]


def test_a_trace_passed_where_plugins_go_is_refused_saying_trace_keyword():
    with pytest.raises(TypeError, match=r"argument #2 is a list, not a plugin; pass the trace by keyword.*trace="):
        replay_with(_First(), make_trace(5))


@pytest.mark.parametrize("obj, what", [(42, "an? int"), ("not a plugin", "str"), (_First, "the class _First")])
def test_an_object_passed_as_a_plugin_that_is_none_is_refused(obj, what):
    with pytest.raises((PluginError, TypeError), match=rf"#2 .*{what}"):
        replay_with(_First(), obj, trace=make_trace(3))
    with pytest.raises(PluginError, match=r"#1 passed in code is (an?|the class) .*not a plugin"):
        make_plugin_set(42 if obj == "not a plugin" else obj)


@pytest.mark.parametrize("plugins, enabled, match", [
    ((_First(), _First()), None, "two plugins passed in code are named 'first'"),
    ((_First(),), ["first"], "plugin 'first' is passed in code and enabled in plugins.enabled too"),
])
def test_two_plugins_of_one_name_are_a_one_line_plugin_error(plugins, enabled, match):
    available = {**discover_plugins(), "first": PluginInfo("first", _First, None, None, None)}
    with pytest.raises(PluginError, match=match) as exc:
        build_plugin_set(enabled or [], extra=plugins, available=available)
    assert "\n" not in str(exc.value)


# --- slow hooks (live) -----------------------------------------------------------------------


def test_a_slow_hook_is_warned_of_once_where_hooks_are_timed_and_never_timed_otherwise(monkeypatch, caplog):
    import time

    from controlplane import hook_calls

    class Slow(Plugin):
        name = "slow"

        @hookimpl
        def cp_route_request(self, ctx, request, workers):
            time.sleep(0.03)

    monkeypatch.setattr(hook_calls, "_warned_slow", set())
    workers = [make_worker("default-0")]
    args = (make_context(workers=workers), make_requests(1)[0], workers)
    untimed = build_plugin_set([], extra=[Slow()])
    assert not hasattr(untimed.hook.cp_route_request.get_hookimpls()[0].function.__wrapped__, "__wrapped__")
    hook_calls.time_hooks(0.01)
    try:
        timed = build_plugin_set(["least-loaded"], extra=[Slow()])
    finally:
        hook_calls.time_hooks(None)
    with caplog.at_level("WARNING", logger="controlplane.plugin_manager"):
        for _ in range(3):
            assert fast_caller(timed.hook.cp_route_request, timed.monitor)(*args).worker_id == "default-0"
    warned = [r.getMessage() for r in caplog.records if "'slow'" in r.getMessage()]
    assert len(warned) == 1 and "cp_route_request took" in warned[0] and "event loop" in warned[0]


def test_a_plugin_installed_while_the_process_runs_is_found_by_the_next_run(tmp_path, monkeypatch):
    """A notebook's `%pip install my-plugin` after its first replay: the next replay said 'unknown plugin'
    (discovery was kept for the process until sys.path changed)."""
    from controlplane.plugin_manager import discover_plugins

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert "late-router" not in discover_plugins()
    (site / "late_router.py").write_text(
        "from controlplane import Plugin\n\nclass LateRouter(Plugin):\n    name = 'late-router'\n")
    info = site / "late_router-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: late-router\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[controlplane]\nlate-router = late_router:LateRouter\n")
    assert "late-router" in discover_plugins()
