"""Bootstrap confidence intervals of run differences (controlplane.compare)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlplane.compare import MetricDiff, RunSample, compare_runs, compare_samples
from controlplane.storage import make_engine
from sim.sweep import load_spec, run_sweep
from sim.sweep.store import sweep_runs

SLO = {"ttft_s": 1.0, "tpot_s": 0.2, "e2e_s": None}


def _sample(run_id: int, ttft: np.ndarray, ids: np.ndarray | None = None) -> RunSample:
    n = len(ttft)
    ids = ids if ids is not None else np.array([f"{run_id}-{i:05d}" for i in range(n)], dtype=object)
    values = {"ttft": ttft, "tpot": np.full(n, 0.05), "e2e": ttft + 1.0, "queue": ttft / 2}
    return RunSample(run_id, ids, values, SLO)


def _by(diffs, metric, stat):
    return next(d for d in diffs if d.metric == metric and d.stat == stat)


def test_same_distribution_is_within_noise_and_a_shift_is_not():
    rng = np.random.default_rng(1)
    a = _sample(1, rng.exponential(0.5, 3000))
    same = _sample(2, rng.exponential(0.5, 3000))  # other requests, same distribution
    shifted = _sample(3, rng.exponential(0.5, 3000) * 1.25)
    d_same = compare_samples([a], [same], n_resamples=500)
    d_shift = compare_samples([a], [shifted], n_resamples=500)
    for metric, stat in (("ttft", "mean"), ("ttft", "p50"), ("slo_attainment", "mean")):
        assert _by(d_same, metric, stat).within_noise, (metric, stat)
    m = _by(d_shift, "ttft", "mean")
    assert m.method == "independent" and not m.within_noise and m.low > 0 and m.diff > 0
    att = _by(d_shift, "slo_attainment", "mean")
    assert not att.within_noise and att.high < 0  # slower TTFT: fewer requests within 1 s


def test_paired_resampling_sees_a_small_shift_on_the_same_requests():
    rng = np.random.default_rng(2)
    base = rng.exponential(0.5, 2000)
    same_ids = np.array([f"r{i:05d}" for i in range(2000)], dtype=object)
    a, b = _sample(1, base, same_ids), _sample(2, base * 1.02, same_ids)  # the same requests, each 2% slower
    paired = _by(compare_samples([a], [b], n_resamples=500), "ttft", "mean")
    assert paired.method == "paired" and not paired.within_noise
    b_other_ids = _sample(2, base * 1.02, ids=np.array([f"x{i}" for i in range(2000)], dtype=object))
    unpaired = _by(compare_samples([a], [b_other_ids], n_resamples=500), "ttft", "mean")
    assert unpaired.method == "independent" and unpaired.within_noise  # 2% is lost in the trace's spread
    assert (unpaired.high - unpaired.low) > 5 * (paired.high - paired.low)


def test_several_runs_a_side_widen_the_interval_by_their_spread():
    rng = np.random.default_rng(3)
    seeds_a = [_sample(i, rng.exponential(0.5, 800) * s) for i, s in enumerate((0.8, 1.0, 1.2))]
    seeds_b = [_sample(10 + i, rng.exponential(0.5, 800) * s) for i, s in enumerate((0.85, 1.05, 1.25))]
    d = _by(compare_samples(seeds_a, seeds_b, n_resamples=300), "ttft", "mean")
    assert d.method == "hierarchical" and d.within_noise  # a 5% shift under 20% seed-to-seed spread
    one = _by(compare_samples(seeds_a[1:2], seeds_b[1:2], n_resamples=300), "ttft", "mean")
    assert (d.high - d.low) > (one.high - one.low)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    db = f"sqlite:///{tmp_path_factory.mktemp('cmp') / 'runs.db'}"
    spec = {"trace": {"limit": 400}, "seeds": [0, 1], "space": {"cluster.models.0.replicas": [1, 4]}}
    run_sweep(load_spec(data=spec), db, backend="serial")
    engine = make_engine(db)
    runs = {(r["overrides"]["cluster.models.0.replicas"], r["seed"]): r["id"] for r in sweep_runs(engine, 1)}
    yield db, engine, runs
    engine.dispose()


def test_stored_runs_one_against_itself_and_against_more_replicas(stored):
    _, engine, runs = stored
    itself = compare_runs(engine, [runs[1, 0]], [runs[1, 1]], n_resamples=300)  # seeds replay the same trace
    assert all((d.within_noise or d.no_verdict) and d.diff == 0 for d in itself if d.diff is not None)
    assert _by(itself, "ttft", "p99").no_verdict.startswith("p99 over 400 values")  # (a p99 needs 1,000)
    more = compare_runs(engine, [runs[1, 0]], [runs[4, 0]], n_resamples=300)
    assert _by(more, "slo_attainment", "mean").low > 0 and _by(more, "ttft", "p99").high < 0
    both = compare_runs(engine, [runs[1, 0], runs[1, 1]], [runs[4, 0], runs[4, 1]], n_resamples=200)
    assert _by(both, "ttft", "mean").method == "hierarchical" and not _by(both, "ttft", "mean").within_noise


def test_cli_compare_over_seeds_and_sweeps(stored):
    import json

    from typer.testing import CliRunner

    from controlplane.cli import app

    db, _, runs = stored
    r = CliRunner().invoke(app, ["runs", "compare", "--a", f"{runs[1, 0]},{runs[1, 1]}", "--b",
                                 f"{runs[4, 0]},{runs[4, 1]}", "--db", db, "--json", "--resamples", "200"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    att = next(m for m in d["metrics"] if m["metric"] == "slo_attainment")
    assert att["within_noise"] is False and att["low"] > 0
    r = CliRunner().invoke(app, ["runs", "compare", str(runs[1, 0]), str(runs[1, 1]), "--db", db])
    assert r.exit_code == 0 and "within noise" in r.output and "B - A" in r.output
    r = CliRunner().invoke(app, ["runs", "compare", "--a", "1,x", "--b", "2", "--db", db])
    assert r.exit_code != 0 and "--a: 'x' is not a run id" in r.output


def test_runs_whose_ids_match_but_whose_prompts_differ_are_not_paired():
    """Two traces that number their requests 0, 1, ... were bootstrapped as paired (narrow, wrong intervals)."""
    rng = np.random.default_rng(3)
    ids = np.array([str(i) for i in range(400)], dtype=object)
    a, b = _sample(1, rng.exponential(0.5, 400), ids), _sample(2, rng.exponential(0.5, 400), ids)
    a.prompt_tokens, b.prompt_tokens = rng.integers(1, 8000, 400), rng.integers(1, 8000, 400)
    assert _by(compare_samples([a], [b], n_resamples=200), "ttft", "mean").method == "independent"
    b.prompt_tokens = a.prompt_tokens.copy()  # the same requests: paired
    assert _by(compare_samples([a], [b], n_resamples=200), "ttft", "mean").method == "paired"


def test_a_paired_comparison_gives_its_values_over_the_requests_completed_in_both():
    """A run that blocked some requests (they never completed) against one that served them slowly:
    the point estimate used every completed request of each side, the paired interval only those
    completed in both, so the interval could lie on the other side of 0 from the difference."""
    from controlplane.cli.compare_ci import ci_table

    rng = np.random.default_rng(4)
    ids = np.array([f"r{i:04d}" for i in range(500)], dtype=object)
    base = rng.exponential(0.1, 500)
    a, b = _sample(1, base.copy(), ids), _sample(2, base * 0.97, ids)  # B: each request 3% faster ...
    for m in ("ttft", "e2e", "queue"):
        a.values[m][:50] = np.nan  # ... A blocked 50 requests that B served
        b.values[m][:50] += 5.0  # slowly, so B's p99 over every request it completed is higher
    diffs = compare_samples([a], [b], n_resamples=300)
    for d in diffs:
        assert d.method == "paired" and d.low <= d.diff <= d.high, d
    for d in diffs:  # tpot and SLO attainment: every request has one on both sides
        assert d.covers == ("the 450 requests completed in both runs" if d.metric in ("ttft", "e2e", "queue")
                            else None), d
    e2e = _by(compare_samples([a], [b], n_resamples=300), "e2e", "p99")
    assert e2e.b == pytest.approx(float(np.percentile(b.values["e2e"][50:], 99)))
    assert e2e.high < 0 and e2e.as_dict()["covers"] == e2e.covers
    caption = ci_table([e2e], "t", 0.95).caption
    assert "* A, B and the interval over the 450 requests completed in both runs" in caption


def test_each_runs_attainment_is_against_its_own_slo_as_its_summary_counts_it():
    """Side B was judged by A's targets: B's attainment read 0.31 in the interval table beside 1.0 in the summaries'."""
    ttft = np.linspace(0.05, 1.5, 100)
    a = _sample(1, ttft)
    b = _sample(2, ttft.copy(), ids=a.request_ids)
    b.slo = {"ttft_s": 2.0, "tpot_s": 0.2, "e2e_s": None}  # every request within 2 s
    att = _by(compare_samples([a], [b], n_resamples=200), "slo_attainment", "mean")
    assert att.a == pytest.approx(np.mean(ttft <= 1.0)) and att.b == 1.0
    assert att.low > 0  # the difference is B's looser target, and the interval says so


def test_the_cli_says_when_the_compared_runs_targets_differ(tmp_path):
    from typer.testing import CliRunner

    from controlplane.cli import app

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    cli = CliRunner()
    for slo in ("2", "0.1"):
        assert cli.invoke(app, ["sim", "replay", "--limit", "60", "--slo-ttft", slo, "--db", db,
                                "--no-progress", "--json"]).exit_code == 0
    r = cli.invoke(app, ["runs", "compare", "1", "2", "--db", db, "--resamples", "200"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "each run against its own SLO targets, which differ: run 1 TTFT <= 2 s" in r.output
    # --no-ci printed the SLO row alone, and --json had no targets (the check sat with the intervals' table)
    r = cli.invoke(app, ["runs", "compare", "1", "2", "--db", db, "--no-ci"], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "each run against its own SLO targets, which differ: run 1 TTFT <= 2 s" in r.output
    for mode in (["--no-ci"], ["--resamples", "200"]):
        r = cli.invoke(app, ["runs", "compare", "1", "2", "--db", db, "--json", *mode])
        assert r.exit_code == 0, r.output
        got = json.loads(r.stdout)
        assert got["slo_targets_differ"] is True
        assert got["slo_targets"]["1"]["ttft_s"] == 2.0 and got["slo_targets"]["2"]["ttft_s"] == 0.1
    r = cli.invoke(app, ["runs", "compare", "1", "1", "--db", db, "--json", "--no-ci"])
    assert json.loads(r.stdout)["slo_targets_differ"] is False


def test_differences_at_rounding_scale_are_within_noise():
    """Two runs that agree to 1e-12 (fast vs --exact, summing in another order) read "B higher" on TPOT mean:
    a paired interval of [2e-16, 3e-15] beside values of 0.06 s excluded 0 by rounding alone."""
    rng = np.random.default_rng(4)
    a = _sample(1, rng.exponential(0.5, 300))
    b = _sample(2, a.values["ttft"] * (1 + 1e-14 * (1 + rng.random(300))), a.request_ids)  # all a hair higher
    d = _by(compare_samples([a], [b], n_resamples=300), "ttft", "mean")
    assert d.method == "paired" and 0 < d.low < d.high < 1e-12  # excludes 0, by rounding alone
    assert d.within_noise and d.as_dict()["within_noise"] is True
    shifted = _sample(2, a.values["ttft"] * (1 + 1e-6), a.request_ids)  # a real difference, however small
    assert not _by(compare_samples([a], [shifted], n_resamples=300), "ttft", "mean").within_noise


def test_resampling_in_batches_gives_the_same_intervals(monkeypatch):
    """All resamples at once held resamples x requests values a side: 16 GB for a 500,000-request run. In
    batches memory is bounded; the intervals are those of the same bootstrap (for two independent sides the
    draws interleave otherwise, so they move by a small part of their width)."""
    import controlplane.resampling as resampling

    rng = np.random.default_rng(4)
    a, b = _sample(1, rng.exponential(0.5, 2000)), _sample(2, rng.exponential(0.6, 2000))
    whole = compare_samples([a], [b], n_resamples=300)
    monkeypatch.setattr(resampling, "BATCH_VALUES", 2000 * 7)  # batches of 7 resamples
    batched = compare_samples([a], [b], n_resamples=300)
    for w, d in zip(whole, batched, strict=True):
        width = w.high - w.low + 1e-12  # (a constant metric: an interval of rounding alone, its ends move as much)
        assert (d.metric, d.stat) == (w.metric, w.stat) and d.diff == w.diff
        assert abs(d.low - w.low) <= 0.25 * width and abs(d.high - w.high) <= 0.25 * width, (w, d)
    monkeypatch.setattr(resampling, "BATCH_VALUES", 2000 * 300)  # one batch: the very same draws
    assert [(d.low, d.high) for d in compare_samples([a], [b], n_resamples=300)] == [(d.low, d.high) for d in whole]


def test_a_run_that_replayed_the_others_requests_and_more_is_compared_on_the_shared_ones():
    """A live run that served a warm-up before its trace (benchmarks/fidelity.py's) against the simulated replay
    of the trace: the warm-up's requests were pooled into the live side, the comparison independent."""
    rng = np.random.default_rng(5)
    ids = np.array([f"t{i:04d}" for i in range(300)], dtype=object)
    base = rng.exponential(0.3, 300)
    sim = _sample(2, base.copy(), ids)
    warm = np.array([f"warm-up-{i}" for i in range(20)], dtype=object)
    live = _sample(1, np.concatenate([base * 1.05, np.full(20, 9.0)]), np.concatenate([ids, warm]))
    order = np.argsort(live.request_ids)  # (stored runs are read in request id order)
    live = live.of_requests(order)
    diffs = compare_samples([live], [sim], n_resamples=300)
    p50 = _by(diffs, "ttft", "p50")
    assert p50.method == "paired"
    assert p50.a == pytest.approx(float(np.percentile(base * 1.05, 50)))  # the warm-up's 9 s left out
    assert p50.covers.startswith("the 300 requests both runs replayed (run 1's 20 others left out: warm-up-0, ")
    assert p50.high < 0  # sim 5% faster on every shared request: seen, paired
    other = _sample(3, base.copy(), np.array([f"u{i:04d}" for i in range(300)], dtype=object))
    assert _by(compare_samples([live], [other], n_resamples=100), "ttft", "p50").method == "independent"


@pytest.mark.parametrize(("metric", "low", "high", "verdict", "outcome"), [
    ("ttft", 0.5, 1.5, "B higher", "worse"), ("ttft", -1.5, -0.5, "B lower", "better"),
    ("slo_attainment", -0.2, -0.1, "B lower", "worse"), ("slo_attainment", 0.1, 0.2, "B higher", "better"),
    ("e2e", -0.5, 0.5, "within noise", "within noise"), ("tpot", None, None, None, None)])
def test_a_difference_says_the_tables_verdict_and_whether_it_is_better_for_b(metric, low, high, verdict, outcome):
    """`runs compare --json` had no verdict: a gate redid the noise test and hard-coded each metric's direction."""
    diff = None if low is None else (low + high) / 2
    d = MetricDiff(metric, "p99", 1.0, 1.0 + (diff or 0.0), diff, low, high, "paired")
    assert (d.verdict, d.outcome) == (verdict, outcome)
    assert d.as_dict()["higher_is_better"] is (metric == "slo_attainment")
    assert {"verdict", "outcome", "a_whole", "b_whole"} <= set(d.as_dict())


def test_several_runs_a_side_are_compared_over_the_requests_completed_in_every_run():
    """`--a 33,34 --b 35,36`, B's config rejecting 47% of the requests (its slowest): with one run a side the values
    were over the requests completed in both, with several over every request each run completed: B read faster
    on every latency (TTFT p50 33.65 -> 0.795), metrics_restricted false, covers null."""
    rng = np.random.default_rng(6)
    ids = np.array([f"r{i:04d}" for i in range(600)], dtype=object)
    base = rng.exponential(0.5, 600)
    side_a = [_sample(1 + i, base * (1 + 0.01 * i), ids) for i in range(2)]
    side_b = [_sample(3 + i, base * (1.2 + 0.01 * i), ids) for i in range(2)]  # each request 20% slower ...
    for s in side_b:  # ... but the slowest half rejected
        for m in ("ttft", "e2e", "queue"):
            s.values[m][base > np.median(base)] = np.nan
    diffs = compare_samples(side_a, side_b, n_resamples=200)
    p50 = _by(diffs, "ttft", "p50")
    assert p50.method == "hierarchical" and p50.covers == "the 300 requests completed in every run"
    assert p50.outcome == "worse" and p50.low > 0  # over the same requests B is slower
    assert p50.a_whole > p50.b_whole  # each side's own values, over every request it completed: B "faster"
    assert p50.a == pytest.approx(float(np.percentile(np.concatenate([s.values["ttft"][base <= np.median(base)]
                                                                      for s in side_a]), 50)))
    assert _by(diffs, "tpot", "p50").covers is None  # every request has one in every run


def test_several_runs_a_side_of_nested_requests_are_compared_over_those_every_run_replayed():
    """`--a 2,3,4,5 --b 13,14,15`, A of 1,200 requests and B of 800 of them: the 400 more (here, fast ones) were
    pooled into A and B read "worse", where the 800 shared ones show no difference."""
    rng = np.random.default_rng(7)
    ids = np.array([f"r{i:04d}" for i in range(1200)], dtype=object)
    base = np.concatenate([rng.exponential(0.5, 800), np.full(400, 0.01)])
    side_a = [_sample(2 + i, base * (1 + 0.01 * (i - 1)), ids) for i in range(4)]
    side_b = [_sample(13 + i, base[:800] * (1 + 0.01 * (i - 1)), ids[:800]) for i in range(3)]
    p50 = _by(compare_samples(side_a, side_b, n_resamples=200), "ttft", "p50")
    assert p50.covers.startswith("the 800 requests every run replayed (run 2's 400, run 3's 400, run 4's 400, "
                                 "run 5's 400 others left out: r0800, r0801, r0802, ...)")
    assert p50.within_noise and p50.a == pytest.approx(float(np.median(np.concatenate(
        [s.values["ttft"][:800] for s in side_a]))))
    other = [_sample(20, base[:800], np.array([f"x{i}" for i in range(800)], dtype=object))]
    assert _by(compare_samples(side_a, other + side_b[:1], n_resamples=100), "ttft", "p50").covers is None


def test_one_run_a_side_says_its_intervals_hold_no_seed_variation_and_several_runs_say_they_do():
    """Two seeds of one configuration read "different" on a quarter of their metrics with one run a side: the
    intervals are over requests, and nothing said that seed-to-seed variation was not in them."""
    from controlplane.cli.compare_ci import ci_table

    rng = np.random.default_rng(8)
    ids = np.array([f"r{i:04d}" for i in range(1000)], dtype=object)
    runs = [_sample(i, rng.exponential(0.5, 1000), ids) for i in range(4)]
    one = compare_samples(runs[:1], runs[1:2], n_resamples=100)
    assert {d.interval_over for d in one} == {"blocks of 20 consecutive requests by arrival of one run a side, "
                                              "paired; seed-to-seed variation not included"}
    assert all(d.as_dict()["seed_variation_included"] is False for d in one)
    caption = ci_table(one, "t", 0.95).caption
    assert "! one run a side: the intervals hold the requests' variation, not the seeds'" in caption
    several = compare_samples(runs[:2], runs[2:], n_resamples=100, metrics=[("ttft", "mean")])
    assert several[0].seed_variation_included is True and "seed-to-seed variation included" in several[0].interval_over
    assert "! one run a side" not in ci_table(several, "t", 0.95).caption


def test_runs_of_the_same_ids_whose_arrivals_differ_are_not_paired():
    """A trace's Poisson arrivals drawn by each run's seed: request '10' at 2.847 s in one run, 1.893 s in the other,
    compared "paired" as if the same requests."""
    rng = np.random.default_rng(9)
    ids = np.array([str(i) for i in range(400)], dtype=object)
    a, b = _sample(1, rng.exponential(0.5, 400), ids), _sample(2, rng.exponential(0.5, 400), ids)
    a.arrivals, b.arrivals = np.cumsum(rng.exponential(0.3, 400)), np.cumsum(rng.exponential(0.3, 400))
    assert _by(compare_samples([a], [b], n_resamples=100), "ttft", "mean").method == "independent"
    b.arrivals = a.arrivals + 5.0 + 1e-9  # the same offsets from each run's first arrival (a live run's clock): paired
    assert _by(compare_samples([a], [b], n_resamples=100), "ttft", "mean").method == "paired"


def test_a_percentile_over_too_few_values_gets_no_verdict():
    """40 requests a side: their p99 is their largest, and got a confident "B higher". A percentile q needs
    10/(1-q) values a side (p50: 20, p90: 100, p99: 1,000) for a verdict; its interval stays."""
    ids = np.array([f"r{i}" for i in range(40)], dtype=object)
    a = _sample(1, np.linspace(0.1, 1.0, 40), ids)
    b = _sample(2, np.linspace(0.1, 1.0, 40) * 1.5, ids)
    diffs = compare_samples([a], [b], n_resamples=200)
    p99, p90, p50 = (_by(diffs, "ttft", s) for s in ("p99", "p90", "p50"))
    assert p99.low is not None and p99.low > 0  # (an interval that excludes 0 ...)
    assert (p99.within_noise, p99.verdict, p99.outcome) == (None, None, None)  # (... and no verdict)
    assert p99.no_verdict == ("p99 over 40 values: a percentile q needs 10/(1-q) = 1,000 values behind it for a "
                              "verdict (10 beyond it)")
    assert p90.no_verdict is not None and p50.no_verdict is None and p50.outcome == "worse"
    assert p99.as_dict()["no_verdict"] == p99.no_verdict and p99.as_dict()["outcome"] is None


def test_the_requests_left_out_are_named_in_arrival_order_not_as_their_ids_sort_as_text():
    """Runs of 1,200 and 800 numbered requests (stored, and loaded, in id order as text): "others left out: 1000, 1001,
    1002, ..." where 800-1199 were left out. They are named in arrival order, ties by their numbers."""
    from controlplane.compare import every_run_replayed, within_other

    order = sorted(range(1200), key=str)  # (as `load_sample` reads them: ordered by the id's text)
    ids = np.array([str(i) for i in order], dtype=object)
    arrivals = np.array([0.5 * (i // 2) for i in order])  # (two at a time: ties)
    big = RunSample(1, ids, {m: np.full(1200, 0.1) for m in ("ttft", "tpot", "e2e", "queue")}, SLO,
                    arrivals=arrivals)
    small = big.of_requests(np.array([i < 800 for i in order]))
    small.run_id = 2
    assert within_other(small, big)[2] == ("the 800 requests both runs replayed (run 1's 400 others left out: 800, "
                                           "801, 802, ...)")
    assert every_run_replayed([big], [small, small])[2].endswith("(run 1's 400 others left out: 800, 801, 802, ...)")
