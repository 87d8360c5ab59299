"""`search`: the cheapest candidate meeting the target, checked against replaying every candidate."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from controlplane.cli import app
from controlplane.report.cost import run_cost
from sim.replay import replay
from sim.sweep import load_spec
from sim.sweep.run import load_traces, transforms_of
from sim.sweep.search import search

SPEC = {
    "name": "small",
    "base": {"cluster.models.0.latency_model": "roofline", "cluster.models.0.latency.model": "meta-llama/Llama-2-7b-hf",
             "slo": {"ttft_s": 2.0, "tpot_s": 0.2}},
    "trace": {"format": "azure", "limit": 1200},
    "space": {
        "cluster.models.0.replicas": [1, 2, 3, 4, 6],
        "hw": [{"cluster.models.0.gpu": "a100-80gb", "cluster.models.0.latency.gpu": "a100-80gb"},
               {"cluster.models.0.gpu": "h100-80gb", "cluster.models.0.latency.gpu": "h100-80gb"}],
        "plugins.settings.continuous-batching.policy": ["vllm", "sarathi"],
    },
    "search": {"screen_fraction": 0.3, "chunk": 6, "confirm_seeds": [0, 1], "neighbours": 2},
}
TARGET = 0.95


def _exhaustive(loaded):
    """Every candidate replayed on the whole trace over the confirm seeds: (cost, min attainment)."""
    traces = load_traces(loaded, [0, 1], transforms_of(loaded))
    out = []
    for overrides in loaded.spec.points():
        atts, costs = [], []
        for seed in (0, 1):
            cfg = loaded.run_config(overrides, seed)
            from controlplane.config import RunConfig

            s = replay(traces[f"seed={seed}"], RunConfig(**cfg), record=False).summary
            atts.append(s["slo_attainment"])
            costs.append(run_cost(cfg, s))
        out.append((sum(costs) / 2, min(atts), overrides))
    return out


def test_search_finds_the_cheapest_candidate_meeting_the_target():
    loaded = load_spec(data=SPEC)
    result = search(loaded, target=TARGET, backend="pool", workers=2).as_dict()
    assert result["candidates"] == 20 and result["wall_s"] > 0
    assert result["replayed"] + result["skipped_by_cost"] == 20 and result["skipped_by_cost"] > 0
    assert result["runs"] >= result["replayed"]
    assert result["stages"][0]["stage"] == "screen" and result["stages"][0]["stopped_early"] > 0
    best = result["best"]
    assert best is not None and best["stage"] == "confirmed"
    assert set(best["attainment_by_seed"]) == {"0", "1"} and best["attainment"] >= TARGET

    truth = _exhaustive(loaded)
    feasible = sorted((c for c in truth if c[1] >= TARGET), key=lambda c: c[0])
    assert abs(best["cost"] - feasible[0][0]) < 1e-3 * feasible[0][0]  # as cheap as the exhaustive answer
    by_key = {json.dumps(o, sort_keys=True): (cost, att) for cost, att, o in truth}
    assert by_key[json.dumps(best["overrides"], sort_keys=True)][1] >= TARGET
    assert result["rejected_cheaper"], "some cheaper candidates must have been rejected"
    for c in result["rejected_cheaper"]:
        cost, att = by_key[json.dumps(c["overrides"], sort_keys=True)]
        assert c["cost"] < best["cost"]
        assert att < TARGET  # replayed in full, none of the cheaper ones meets the target
    front = result["pareto"]
    assert [p["cost"] for p in front] == sorted(p["cost"] for p in front)
    assert all(a["attainment"] < b["attainment"] for a, b in zip(front, front[1:]))


def test_search_cli_ends_with_one_json_line(tmp_path):
    spec = tmp_path / "search.yaml"
    import yaml

    spec.write_text(yaml.safe_dump({**SPEC, "space": {"cluster.models.0.replicas": [1, 2, 4],
                                                        "hw": SPEC["space"]["hw"]}}))
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    r = CliRunner().invoke(app, ["sim", "search", str(spec), "--slo-ttft", "2", "--slo-tpot", "0.2",
                                 "--slo-attainment", "0.9", "--backend", "serial", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output.strip().splitlines()[-1])
    assert {"best", "candidates", "runs", "wall_s", "rejected_cheaper"} <= set(d)
    assert d["candidates"] == 6 and d["best"]["attainment"] >= 0.9 and d["sweep_id"] == 1
    assert all({"cost", "attainment"} <= set(c) for c in d["rejected_cheaper"])
    page = tmp_path / "search.html"
    r = CliRunner().invoke(app, ["runs", "report", "--sweep", str(d["sweep_id"]), "--db", db, "--html", str(page)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert "<h2>Pareto front</h2>" in text and "<b>best</b>" in text and "data:image/png;base64," in text


def test_a_candidate_whose_run_raises_is_rejected_with_its_error():
    from sim.sweep.backends import Backend
    from sim.sweep.worker import run_task

    class RefusesSarathi(Backend):  # (as a worker's run does when what only a run checks refuses the config)
        def run(self, tasks, traces):
            for t in tasks:
                if t.overrides["plugins.settings.continuous-batching.policy"] == "sarathi":
                    t = type(t)(**{**t.__dict__, "config": {**t.config, "cluster": "not a cluster"}})
                yield run_task(t, traces[t.trace_id])

    spec = {**SPEC, "trace": {"format": "azure", "limit": 400},
            "space": {"cluster.models.0.replicas": [1, 4],
                      "plugins.settings.continuous-batching.policy": ["sarathi", "vllm"]}}
    result = search(load_spec(data=spec), target=0.5, backend=RefusesSarathi()).as_dict()
    assert result["best"] is not None
    assert result["best"]["overrides"]["plugins.settings.continuous-batching.policy"] == "vllm"
    cheaper = [c for c in result["rejected_cheaper"] if "error" in c]
    assert cheaper  # (the 1-replica one, at least)
    # not measured: no attainment (was 0.0, as if replayed), and stage `failed`
    assert all("cluster" in c["error"] and c["attainment"] is None and c["stage"] == "failed" for c in cheaper)
    failed = result["failed"]
    assert {f["overrides"]["cluster.models.0.replicas"] for f in failed} == {1, 4}  # both refused candidates
    assert all(f["stage"] == "screen" and f["seed"] == 0 for f in failed)


def test_a_search_that_raises_leaves_its_sweep_failed_not_running(tmp_path):
    import pytest

    from controlplane.storage import make_engine
    from controlplane.storage.queries import list_sweeps
    from sim.sweep.backends import Backend

    class Broken(Backend):  # the backend dies mid-search (a worker pool lost, say)
        def run(self, tasks, traces):
            raise OSError("the pool's workers are gone")
            yield  # (a generator, like every backend's run)

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(OSError, match="workers are gone"):
        search(load_spec(data=SPEC), target=TARGET, backend=Broken(), db_url=url)
    engine = make_engine(url)
    (sweep,) = list_sweeps(engine)
    engine.dispose()
    assert sweep["status"] == "failed"  # was left `running` (then listed `crashed` by the next command)


class _Scripted:
    """A backend whose runs are scripted by replicas and stage (no replay): ``script[(replicas, stage)]``
    (or ``(replicas, stage, seed)``, or ``(replicas, "*")`` for every stage) is ``("stopped", upper bound)``,
    ``("failed", error)`` or ``("finished", attainment, GPU-seconds per replica per simulated second)``; a prefix's simulated span is ``span_share`` of the trace's (a bursty trace: its first
    requests span most of the time). Tasks run are kept in ``tasks``."""

    def __init__(self, script, span_share=0.9):
        from sim.sweep.backends import Backend

        self.backend = type("ScriptedBackend", (Backend,), {"run": self._run})()
        self.script, self.span_share, self.tasks = script, span_share, []

    def _run(self, tasks, traces):
        from sim.sweep.worker import RunOutcome

        for t in tasks:
            self.tasks.append(t)
            trace = traces[t.trace_id]
            span = trace[-1].arrival_s - trace[0].arrival_s
            replicas = t.overrides["cluster.models.0.replicas"]
            step = self.script.get((replicas, t.stage, t.seed)) or self.script.get((replicas, t.stage)) \
                or self.script[(replicas, "*")]
            status, attainment, *rate = step
            if status == "failed":  # (``attainment``: the error)
                yield RunOutcome(t, "failed", {"error": attainment})
                continue
            if status == "stopped":
                yield RunOutcome(t, "stopped", {"slo_attainment_max": attainment, "stopped": True})
                continue
            sim_span = span * (self.span_share if t.limit is not None else 1.0)
            gpu_s = replicas * rate[0] * sim_span
            yield RunOutcome(t, "finished", {"slo_attainment": attainment, "sim_span_s": sim_span,
                                             "gpu_seconds": gpu_s, "gpu_seconds_by_gpu": {"a100-80gb": gpu_s}})


def test_a_candidate_stopped_on_a_later_rung_is_ranked_by_its_estimate_not_an_earlier_rungs_cost():
    from controlplane.report.cost import estimated_cost

    spec = {**SPEC, "trace": {"format": "azure", "limit": 400},
            "space": {"cluster.models.0.replicas": [1, 2, 3, 4]},
            "search": {"screen_fraction": 0.25, "eta": 3, "chunk": 4, "confirm_seeds": [0], "neighbours": 1}}
    script = {
        (1, "screen"): ("finished", 0.5, 1.0),  # below the target, not stopped: its prefix's cost, scaled by time
        (2, "screen"): ("finished", 0.95, 1.0), (2, "rung1"): ("finished", 0.95, 1.0), (2, "full"): ("stopped", 0.93),
        # passes the screen and the first rung on a costly prefix, then stops early on the full trace
        (3, "screen"): ("finished", 0.95, 50.0), (3, "rung1"): ("finished", 0.95, 50.0), (3, "full"): ("stopped", 0.89),
        (3, "confirm"): ("finished", 0.85, 1.0),
        (4, "screen"): ("finished", 0.99, 1.0), (4, "rung1"): ("finished", 0.99, 1.0), (4, "full"): ("finished", 0.99, 1.0),
    }
    scripted = _Scripted(script)
    loaded = load_spec(data=spec)
    result = search(loaded, target=0.9, backend=scripted.backend).as_dict()
    assert result["best"]["overrides"]["cluster.models.0.replicas"] == 4
    traces = load_traces(loaded, [0], transforms_of(loaded))["seed=0"]
    span = traces[-1].arrival_s - traces[0].arrival_s
    estimate = {r: estimated_cost(loaded.run_config({"cluster.models.0.replicas": r}, 0), span) for r in (1, 2, 3, 4)}
    cheaper = {c["overrides"]["cluster.models.0.replicas"]: c for c in result["rejected_cheaper"]}
    assert set(cheaper) == {1, 2, 3}  # 3 was missing: ranked by its first rung's cost, above the best's
    assert abs(cheaper[2]["cost"] - estimate[2]) < 1e-5 * estimate[2] and cheaper[2]["stopped"]
    assert abs(cheaper[1]["cost"] - estimate[1]) < 1e-5 * estimate[1]  # (not 4 times it: 25% of the requests)
    confirmed = [t.overrides["cluster.models.0.replicas"] for t in scripted.tasks if t.stage == "confirm"]
    assert confirmed == [3]  # the next-cheaper neighbour of the best, not 2
    assert cheaper[3]["attainment"] == 0.85 and cheaper[3]["stage"] == "confirmed"
    assert [p["overrides"]["cluster.models.0.replicas"] for p in result["pareto"]] == [3, 4]  # 2: stopped, no point


def test_a_search_with_record_full_stores_its_full_trace_runs_requests(tmp_path):
    from sqlalchemy import func, select

    from controlplane.storage import make_engine
    from controlplane.storage.models import Request, Run

    spec = {**SPEC, "record": "full", "trace": {"format": "azure", "limit": 200},
            "space": {"cluster.models.0.replicas": [2, 4]}, "search": {"confirm_seeds": [0, 1], "neighbours": 1}}
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = search(load_spec(data=spec), target=0.5, backend="serial", db_url=url).as_dict()
    assert result["best"] is not None
    engine = make_engine(url)
    with engine.connect() as conn:
        runs = conn.execute(select(Run.id)).scalars().all()
        rows = dict(conn.execute(select(Request.run_id, func.count()).group_by(Request.run_id)).all())
    engine.dispose()
    assert runs and all(rows.get(r) == 200 for r in runs)  # were stored with no request rows
    r = CliRunner().invoke(app, ["runs", "compare", str(runs[0]), str(runs[1]), "--db", url])
    assert r.exit_code == 0, r.output


def test_a_candidate_stopped_early_lists_its_estimate_as_a_lower_bound_of_its_cost():
    """1 x L4 stopped early was listed at 0.0658 USD (its replicas for the trace's span) where its full replays cost
    0.144-0.152: the backlog's drain after the last arrival is paid too. The listed cost now says it is a lower
    bound; a full replay costs at least that."""
    from controlplane.config import RunConfig

    spec = {**SPEC, "trace": {"format": "azure", "limit": 600},
            "space": {"cluster.models.0.replicas": [1, 6], "hw": SPEC["space"]["hw"][:1]},
            "search": {"screen_fraction": 0.3, "confirm_seeds": [0], "neighbours": 0}}
    loaded = load_spec(data=spec)
    result = search(loaded, target=TARGET, backend="serial").as_dict()
    stopped = [c for c in result["rejected_cheaper"] if c["stopped"]]
    assert stopped, result["rejected_cheaper"]
    assert all(c.get("cost_lower_bound") is True for c in stopped)
    assert result["best"] is not None and "cost_lower_bound" not in result["best"]  # (measured on its full replays)
    trace = load_traces(loaded, [0], transforms_of(loaded))["seed=0"]
    for c in stopped:
        config = loaded.run_config(c["overrides"], 0)
        full = run_cost(config, replay(trace, RunConfig(**config), record=False).summary)
        assert full > c["cost"]  # (the drain after the last arrival)


def test_a_failed_candidate_is_not_measured_nor_confirmed_and_fails_the_searchs_sweep(tmp_path):
    """A candidate whose run raised was shown as measured (attainment 0.0), confirmed again as a neighbour (stage
    `confirmed`), left out of the output when dearer than the best, and its search stored `finished`."""
    from controlplane.report.html import sweep_report
    from controlplane.storage import make_engine
    from controlplane.storage.queries import list_sweeps

    spec = {**SPEC, "trace": {"format": "azure", "limit": 400},
            "space": {"cluster.models.0.replicas": [1, 2, 3, 4, 5]},
            "search": {"screen_fraction": 0.25, "eta": 3, "chunk": 5, "confirm_seeds": [0, 1], "neighbours": 3,
                       "cost_bound": False}}
    passes = ("finished", 0.99, 1.0)
    script = {
        (1, "*"): ("failed", "ConfigError: boom"),  # the cheapest: raises on the screen
        (2, "*"): ("finished", 0.5, 1.0),  # measured, below the target
        (3, "screen"): passes, (3, "rung1"): passes, (3, "full"): passes,
        (3, "confirm"): ("failed", "RuntimeError: seed 1 broke"),  # the first best: raises when confirmed
        (4, "*"): passes,
        (5, "*"): ("failed", "ConfigError: dearer"),  # above the best's cost: was in no list at all
    }
    scripted = _Scripted(script)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    result = search(load_spec(data=spec), target=0.9, backend=scripted.backend, db_url=url).as_dict()
    assert result["best"]["overrides"]["cluster.models.0.replicas"] == 4
    confirmed = {t.overrides["cluster.models.0.replicas"] for t in scripted.tasks if t.stage == "confirm"}
    assert confirmed == {2, 3, 4}  # not 1: a failed candidate is no neighbour to confirm
    failed = {f["overrides"]["cluster.models.0.replicas"]: f for f in result["failed"]}
    assert set(failed) == {1, 3, 5}
    assert (failed[1]["stage"], failed[1]["seed"], failed[1]["error"]) == ("screen", 0, "ConfigError: boom")
    assert (failed[3]["stage"], failed[3]["seed"], failed[3]["error"]) == ("confirm", 1, "RuntimeError: seed 1 broke")
    cheaper = {c["overrides"]["cluster.models.0.replicas"]: c for c in result["rejected_cheaper"]}
    for r in (1, 3):
        assert cheaper[r]["stage"] == "failed" and cheaper[r]["attainment"] is None and "error" in cheaper[r]
    assert cheaper[3]["attainment_by_seed"] == {"0": 0.99}  # the seed it finished, not a 0.0 for the one that raised
    assert cheaper[2]["stage"] == "confirmed" and cheaper[2]["attainment"] == 0.5
    assert 3 not in {p["overrides"]["cluster.models.0.replicas"] for p in result["pareto"]}
    engine = make_engine(url)
    try:
        (sweep,) = list_sweeps(engine)
        page = sweep_report(engine, sweep["id"])
    finally:
        engine.dispose()
    assert sweep["status"] == "failed"  # as a sweep with failed runs (was `finished`)
    assert "failed runs (3)" in page and "ConfigError: boom" in page and "RuntimeError: seed 1 broke" in page


def test_a_search_chooses_under_its_select_seed_confirms_under_others_and_notes_a_specs_seeds():
    """`seeds: [5]` with `confirm_seeds: [7, 8]` chose under seed 0 and confirmed under 7 and 8, saying nothing of 5.
    (It chose under 7, the first confirm seed, which then vouched for the winner it chose: the winner's curse.)"""
    from sim.sweep.search import search_seeds, unused_seeds_note
    from sim.sweep.search_seeds import confirm_seeds, reused_seed_note

    def loaded(**extra):
        return load_spec(data={**SPEC, **extra})

    assert search_seeds(loaded(seeds=[5], search={"confirm_seeds": [7, 8]})) == [0, 7, 8]
    assert unused_seeds_note(loaded(seeds=[5], search={"confirm_seeds": [7, 8]})) == (
        "the spec's seeds [5] are a sweep's: this search chooses under seed 0 (search.select_seed, by default) and "
        "confirms under seeds [7, 8] (search.confirm_seeds)")
    assert "seeds [1, 2, 3] (search.confirm_seeds, by default)" in unused_seeds_note(loaded(seeds=[5], search={}))
    assert search_seeds(loaded(search={})) == [0, 1, 2, 3] and reused_seed_note(loaded(search={})) is None
    assert search_seeds(loaded(search={"select_seed": 4, "confirm_seeds": [4, 5]})) == [4, 5]
    assert "seed 4 both chose the candidates" in reused_seed_note(loaded(search={"select_seed": 4,
                                                                                 "confirm_seeds": [4, 5]}))
    assert confirm_seeds(loaded(search={"confirm_seeds": []})) == [0]  # (the selection's own run: no evidence)
    assert "is not independent of its choice" in reused_seed_note(loaded(search={"confirm_seeds": []}))
    assert unused_seeds_note(loaded(search={"confirm_seeds": [7, 8]})) is None  # (no seeds set: nothing to say)
    assert unused_seeds_note(loaded(seeds=[0, 7, 8], search={"confirm_seeds": [7, 8]})) is None


def test_the_seed_that_chose_the_winner_does_not_confirm_it():
    """The winner's curse: seed 0 chose 2 replicas, which met 0.9 on it (0.95) by its luck, and seed 0 was the first
    of the confirm seeds, so its run counted towards the confirmation (min over 0, 1, 2). The confirmation now
    replays seeds 1, 2 and 3 only, reports the spread (mean, min, SD) and the margin over the target, and warns when
    that margin is within seed noise; the winner stays where its margin is clear."""
    spec = {**SPEC, "trace": {"format": "azure", "limit": 400}, "space": {"cluster.models.0.replicas": [2, 3]},
            "search": {"screen_fraction": 0.25, "chunk": 2, "neighbours": 0}}
    near = {(2, "*"): ("finished", 0.95, 1.0), (2, "confirm", 1): ("finished", 0.905, 1.0),
            (2, "confirm", 2): ("finished", 0.91, 1.0), (2, "confirm", 3): ("finished", 0.902, 1.0),
            (3, "*"): ("finished", 0.99, 1.0)}
    scripted = _Scripted(near)
    d = search(load_spec(data=spec), target=0.9, backend=scripted.backend).as_dict()
    best = d["best"]
    assert best["overrides"] == {"cluster.models.0.replicas": 2}
    assert sorted(t.seed for t in scripted.tasks if t.stage == "confirm") == [1, 2, 3]
    assert {t.seed for t in scripted.tasks if t.stage != "confirm"} == {0}
    assert best["attainment_by_seed"] == {"1": 0.905, "2": 0.91, "3": 0.902}  # (seed 0's 0.95 not among them)
    assert best["selection_attainment"] == 0.95 and best["attainment"] == best["attainment_min"] == 0.902
    assert abs(best["attainment_mean"] - 0.905667) < 1e-6 and abs(best["attainment_sd"] - 0.00404145) < 1e-6
    assert abs(best["margin"] - 0.005667) < 1e-6 and best["margin_within_noise"] is True
    assert (d["select_seed"], d["confirm_seeds"], d["seeds"], d["selection_seed_confirms"]) == (0, [1, 2, 3],
                                                                                                [0, 1, 2, 3], False)
    (warning,) = d["warnings"]
    assert warning.startswith("the winner's margin over the target is within seed noise: its attainment over confirm "
                              "seeds [1, 2, 3] is 0.9057 on average (min 0.902, SD 0.004), 0.0057 above 0.9")

    clear = {**near, (2, "confirm", 1): ("finished", 0.95, 1.0), (2, "confirm", 2): ("finished", 0.96, 1.0),
             (2, "confirm", 3): ("finished", 0.955, 1.0)}
    d = search(load_spec(data=spec), target=0.9, backend=_Scripted(clear).backend).as_dict()
    assert d["best"]["overrides"] == {"cluster.models.0.replicas": 2}  # (the same winner)
    assert d["best"]["margin_within_noise"] is False and d["warnings"] == []

    overlapping = {**spec, "search": {**spec["search"], "confirm_seeds": [0, 1, 2]}}  # (named: followed, and told)
    scripted = _Scripted(clear)
    d = search(load_spec(data=overlapping), target=0.9, backend=scripted.backend).as_dict()
    assert sorted(t.seed for t in scripted.tasks if t.stage == "confirm") == [1, 2]  # (seed 0's full run reused)
    assert d["best"]["attainment_by_seed"] == {"0": 0.95, "1": 0.95, "2": 0.96} and d["selection_seed_confirms"]
    assert any(w.startswith("seed 0 both chose the candidates (search.select_seed) and confirms them") for w in
               d["warnings"])


def test_a_winners_margin_is_within_noise_under_two_of_the_larger_of_its_seeds_sd_and_the_binomial_error():
    from sim.sweep.search_margin import confirm_spread

    # the tester's: 0.925, 0.93, 0.923 over 1,000 requests against 0.92 (20 seeds: mean 0.929, SD 0.011, 4 missed)
    tight = confirm_spread({1: 0.925, 2: 0.93, 3: 0.923}, 0.92, 1000)
    assert tight["margin_within_noise"] and abs(tight["margin_noise"] - (0.926 * 0.074 / 1000) ** 0.5) < 1e-6
    # seeds that change nothing (SD 0): the binomial error alone; docs/sweeps.md's benchmark winner is clear
    same = confirm_spread({1: 0.99989, 2: 0.99989, 3: 0.99989}, 0.99, 8819)
    assert same["attainment_sd"] == 0 and not same["margin_within_noise"]
    assert confirm_spread({1: 0.95, 2: 0.99, 3: 0.91}, 0.9, 10**6)["margin_within_noise"]  # (SD 0.04 > margin / 2)
    one = confirm_spread({1: 0.95}, 0.9, 400)
    assert one["attainment_sd"] is None and one["margin_within_noise"] is False  # (0.05 > 2 x 0.0109)
