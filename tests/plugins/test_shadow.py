"""Advisory (shadow) mode: shadow autoscalers' would-be decisions are recorded, never applied."""

from __future__ import annotations

import pytest

from controlplane.errors import ConfigError
from controlplane.storage import iter_rows, make_engine
from controlplane.testing import make_config, make_trace, replay_with
from plugins.shadow import ShadowScaling

CLUSTER = {"models": [{"name": "default", "replicas": 1, "cold_start_s": 15.0}]}
BASE = ["queue-limit", "exact-cache", "least-loaded", "continuous-batching", "static-memory",
        "sampled-guardian", "builtin-latency-models"]


def _run(tmp_path, name: str, shadow: dict | None):
    enabled = ["hpa", *BASE, *(["shadow"] if shadow else [])]
    settings = {"hpa": {"target": 4, "metric_window_s": 10, "sync_period_s": 5, "max_replicas": 8}}
    if shadow:
        settings["shadow"] = shadow
    url = f"sqlite:///{tmp_path / name}.db"
    cfg = make_config(cluster=CLUSTER, plugins={"enabled": enabled, "settings": settings}, storage={"url": url})
    res = replay_with(trace=make_trace(1500, qps=10.0, prompt_tokens=512, output_tokens=64), config=cfg, db_url=url)
    engine = make_engine(url)
    rows = [{k: v for k, v in r.items() if k not in ("id", "run_id")}
            for r in iter_rows(engine, res.run_id, "requests")]
    return res, rows


def test_a_shadow_changes_no_request_row_and_records_what_it_would_do(tmp_path):
    plain, rows_plain = _run(tmp_path, "plain", None)
    shadowed, rows_shadow = _run(tmp_path, "shadow", {
        "policies": ["slo-planner", "kpa"], "settings": {"kpa": {"target_concurrency": 8, "max_replicas": 8}}})
    assert len(rows_plain) == 1500 and rows_plain == rows_shadow  # identical request rows
    active = [(d.time_s, d.plugin, d.payload) for d in plain.decisions if d.action == "scale"]
    assert active and active == [(d.time_s, d.plugin, d.payload) for d in shadowed.decisions if d.action == "scale"]
    shadow = [d for d in shadowed.decisions if d.action == "shadow_scale"]
    assert {d.plugin for d in shadow} == {"slo-planner", "kpa"}
    assert not any(d.action == "shadow_scale" for d in plain.decisions)
    for d in shadow:
        assert {"from", "to", "active_to"} <= set(d.payload) and d.reason
    planner = [d for d in shadow if d.plugin == "slo-planner"]
    assert all("signals" in d.payload and "confidence" in d.payload for d in planner)
    # recorded when its target changes, not at every tick
    targets = [d.payload["to"] for d in planner]
    assert all(a != b for a, b in zip(targets, targets[1:]))
    assert {k: v for k, v in plain.summary.items() if k != "wall_s"} == \
        {k: v for k, v in shadowed.summary.items() if k != "wall_s"}


def test_a_shadow_is_stored_only_when_its_target_changes_with_what_its_policy_gives(tmp_path):
    """Every shadow stored a no-change row at t=1 ("1 -> 1 (active 2)"), and seed-autoscaler's (a keep) had
    neither confidence nor signals, though its reason read "confidence 0.25" and its scale rows store both."""
    shadowed, _ = _run(tmp_path, "shadow", {"policies": ["slo-planner", "kpa", "seed-autoscaler"],
                                            "settings": {"kpa": {"target_concurrency": 8, "max_replicas": 8},
                                                         "seed-autoscaler": {"hold_s": 5.0, "scale_up_threshold": 0.4,
                                                                             "scale_down_threshold": 0.2}}})
    shadow = [d for d in shadowed.decisions if d.action == "shadow_scale"]
    assert {d.plugin for d in shadow} == {"slo-planner", "kpa", "seed-autoscaler"}
    same = [(d.time_s, d.plugin, d.payload["from"]) for d in shadow if d.payload["from"] == d.payload["to"]]
    assert not same  # each row a change of the shadow's own target
    for d in shadow:
        if d.plugin != "kpa":  # (kpa gives neither: its reason states its inputs)
            assert "confidence" in d.payload and "signals" in d.payload, (d.plugin, d.payload)


def test_bad_shadow_settings_name_the_key():
    cfg = make_config(plugins={"enabled": ["shadow", *BASE, "fixed-replicas"],
                               "settings": {"shadow": {"policies": ["no-such-scaler"]}}})
    with pytest.raises(ConfigError, match="shadow.policies: .*unknown plugin 'no-such-scaler'"):
        replay_with(trace=make_trace(5), config=cfg)
    cfg = make_config(plugins={"enabled": ["shadow", *BASE, "fixed-replicas"],
                               "settings": {"shadow": {"policies": ["least-loaded"]}}})
    with pytest.raises(ConfigError, match="not an autoscaler"):
        replay_with(trace=make_trace(5), config=cfg)
    # a wrapper (its answer a generator: an AttributeError traceback mid-run), and a policy listed twice
    for policies, words in ((["scaling-rules"], "'scaling-rules' wraps another autoscaler's decision"),
                            (["shadow"], "'shadow' wraps another autoscaler's decision"),
                            (["kpa", "kpa"], "a policy listed twice")):
        cfg = make_config(plugins={"enabled": ["shadow", *BASE, "fixed-replicas"],
                                   "settings": {"shadow": {"policies": policies}}})
        with pytest.raises(ConfigError, match=words):
            replay_with(trace=make_trace(5), config=cfg)


def test_a_misspelt_shadow_policy_suggests_the_installed_one():
    cfg = make_config(plugins={"enabled": ["shadow", *BASE, "fixed-replicas"],
                               "settings": {"shadow": {"policies": ["slo-planer"]}}})
    with pytest.raises(ConfigError, match=r"unknown plugin 'slo-planer' \(did you mean 'slo-planner'\?\); installed "
                                          "autoscalers that can run in advisory mode: "):
        replay_with(trace=make_trace(5), config=cfg)


def test_an_unknown_shadow_policy_lists_only_the_autoscalers_it_could_run():
    """`policies: [hpa-typo]` listed all 33 plugins installed (caches, routers, `shadow` itself) as the choices."""
    cfg = make_config(plugins={"enabled": ["shadow", *BASE, "fixed-replicas"],
                               "settings": {"shadow": {"policies": ["hpa-typo"]}}})
    with pytest.raises(ConfigError) as raised:
        replay_with(trace=make_trace(5), config=cfg)
    message = str(raised.value)
    assert "installed autoscalers that can run in advisory mode: " in message
    names = set(message.split("advisory mode: ")[1].splitlines()[0].split(", "))
    assert {"hpa", "kpa", "slo-planner", "fixed-replicas"} <= names
    assert not names & {"shadow", "scaling-rules", "least-loaded", "exact-cache", "round-robin"}


class _Broken:
    def cp_scale(self, ctx, model, scaling):
        raise RuntimeError("boom")


def test_a_failing_shadow_is_isolated_and_its_failure_recorded():
    shadow = ShadowScaling(ShadowScaling.Settings())
    shadow.shadows = {"broken": _Broken()}
    res = replay_with(shadow, trace=make_trace(200, qps=5.0), cluster=CLUSTER)
    rows = [d for d in res.decisions if d.action == "shadow_scale"]
    assert rows and rows[0].plugin == "broken" and "shadow broken failed: RuntimeError: boom" in rows[0].reason
    assert rows[0].payload["signals"] == {"shadow_failed": 1.0} and rows[0].payload["from"] == rows[0].payload["to"]
    assert len(rows) == 1  # once, when it starts failing: not at every tick it fails
    assert res.summary["num_completed"] == 200 and shadow.num_errors >= 1


class _FailsLater:
    def __init__(self):
        self.calls = 0

    def cp_scale(self, ctx, model, scaling):
        self.calls += 1
        if 20 <= self.calls < 40:
            raise RuntimeError("boom")
        from controlplane.decisions import ScaleDecision

        return ScaleDecision(model, scaling.num_current, "keep")


def test_a_shadow_that_starts_failing_later_is_stored_when_it_does():
    shadow = ShadowScaling(ShadowScaling.Settings())
    shadow.shadows = {"later": _FailsLater()}
    res = replay_with(shadow, trace=make_trace(200, qps=5.0), cluster=CLUSTER)
    rows = [d for d in res.decisions if d.action == "shadow_scale"]
    assert len(rows) == 1 and "shadow later failed" in rows[0].reason and rows[0].time_s > 1.0


def test_a_shadow_hpa_s_holds_between_syncs_are_not_recorded_as_wants(tmp_path):
    """hpa keeps the current count between its syncs (`holding`): recorded, the shadow flipped every tick
    between its want and the count kept (58 rows in a 160 s live run, "3 -> 1", then "keep 3")."""
    shadowed, _ = _run(tmp_path, "shadow", {"policies": ["kpa", "hpa"],
                                            "settings": {"hpa": {"target": 2, "max_replicas": 8}}})
    hpa = [d for d in shadowed.decisions if d.action == "shadow_scale" and d.plugin == "hpa"]
    assert hpa and not any("between syncs" in d.reason for d in hpa)


def _phases(*phases: tuple[int, float]):
    """Poisson phases ``(requests, qps)`` one after another: a load that rises and falls."""
    from dataclasses import replace

    out, start = [], 0.0
    for i, (n, qps) in enumerate(phases):
        part = make_trace(n, qps=qps, seed=i)
        out += [replace(r, request_id=f"{i}-{r.request_id}", arrival_s=start + r.arrival_s) for r in part]
        start = out[-1].arrival_s + 1.0 / qps
    return out


def _changes(res, action: str, plugin: str, start: int) -> list[tuple[float, int]]:
    """The targets ``plugin`` chose, as (time, target) where the target changed (from ``start``)."""
    out, last = [], start
    for d in res.decisions:
        if d.action == action and d.plugin == plugin and d.payload["to"] != last:
            out.append((d.time_s, d.payload["to"]))
            last = d.payload["to"]
    return out


def test_a_shadow_of_the_active_policy_decides_as_the_active_one_does():
    """A shadow evolves from its own last target, not the active policy's count: a shadow slo-planner beside
    an active hpa stored 200 rows (an active one makes 19), its hold capped at hpa's count ("9 -> 9 ... held
    12"). Beside an active slo-planner on the same signals, a shadow slo-planner chooses what it chooses."""
    trace = _phases((600, 2.0), (1500, 12.0), (600, 1.0), (900, 10.0), (300, 0.5))
    plugins = {"enabled": ["slo-planner", "shadow", *BASE],
               "settings": {"slo-planner": {"max_replicas": 12}, "shadow": {
                   "policies": ["slo-planner"], "settings": {"slo-planner": {"max_replicas": 12}}}}}
    res = replay_with(trace=trace, cluster=CLUSTER, plugins=plugins)
    active = _changes(res, "scale", "slo-planner", 1)
    assert len(active) >= 4 and any(b < a for (_, a), (_, b) in zip(active, active[1:]))  # up and down
    assert _changes(res, "shadow_scale", "slo-planner", 1) == active
    # and its reasons read its own count: "want W, C -> T" with C its previous target
    shadow = [d for d in res.decisions if d.action == "shadow_scale"]
    active_reasons = {d.time_s: d.reason for d in res.decisions if d.action == "scale"}
    assert all(active_reasons.get(d.time_s, d.reason) == d.reason for d in shadow)


def test_a_shadow_decides_from_its_own_last_target_beside_another_policy():
    """Beside an active hpa, a shadow slo-planner's "want W, C -> T" reads C = its own last target (it
    read hpa's count: "9 -> 9 (held 12 ...)" stored as 9, and a target flipping A -> B -> A at hpa's steps)."""
    import re

    trace = _phases((600, 2.0), (1500, 12.0), (600, 1.0), (900, 10.0), (300, 0.5))
    plugins = {"enabled": ["hpa", "shadow", *BASE],
               "settings": {"hpa": {"target": 2, "max_replicas": 12, "sync_period_s": 5},
                            "shadow": {"policies": ["slo-planner"],
                                       "settings": {"slo-planner": {"max_replicas": 12}}}}}
    res = replay_with(trace=trace, cluster=CLUSTER, plugins=plugins)
    shadow = [d for d in res.decisions if d.action == "shadow_scale"]
    active = [d for d in res.decisions if d.action == "scale"]
    assert len(shadow) >= 4 and len(active) >= 4
    last = 1  # the cluster's count at the start
    for d in shadow:
        current, target = map(int, re.search(r"; want \d+, (\d+) -> (\d+)", d.reason).groups())
        assert (current, target) == (last, d.payload["to"]), d.reason
        assert d.payload["from"] == last  # the stored from is the shadow's own count too, not hpa's
        last = target
