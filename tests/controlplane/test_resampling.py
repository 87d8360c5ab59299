"""The bootstrap of one run against another by resample counts (controlplane/resampling.py): the
intervals of ``scipy.stats.bootstrap`` a statistic at a time (as `compare` computed them), at a
small part of their cost, and intervals that cover the truth at their stated rate."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controlplane.compare import RunSample, compare_samples

SLO = {"ttft_s": 1.0, "tpot_s": 0.2, "e2e_s": None}
STATS = {"mean": np.mean, "p50": lambda x: np.percentile(x, 50), "p90": lambda x: np.percentile(x, 90),
         "p99": lambda x: np.percentile(x, 99)}


def _sample(run_id: int, ttft: np.ndarray, ids: np.ndarray, tpot: np.ndarray | None = None) -> RunSample:
    n = len(ttft)
    tpot = np.full(n, 0.05) if tpot is None else tpot
    return RunSample(run_id, ids, {"ttft": ttft, "tpot": tpot, "e2e": ttft + 1.0, "queue": ttft / 2}, SLO)


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{i}" for i in range(n)], dtype=object)


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "independent"])
def test_the_intervals_are_scipy_s_bootstrap_s_to_monte_carlo_noise(paired):
    from scipy.stats import bootstrap

    rng = np.random.default_rng(11)
    n = 1500
    ttft_a = rng.exponential(0.5, n)
    tpot_a, tpot_b = rng.lognormal(-3, 0.5, n), rng.lognormal(-2.95, 0.5, n)
    tpot_a[rng.random(n) < 0.1] = np.nan  # (single-token outputs: no TPOT)
    tpot_b[np.isnan(tpot_a)] = np.nan
    a = _sample(1, ttft_a, _ids("r", n), tpot_a)
    b = _sample(2, ttft_a * rng.lognormal(0.03, 0.3, n), _ids("r" if paired else "x", n), tpot_b)
    diffs = compare_samples([a], [b], n_resamples=3000, seed=1, metrics=[("ttft", s) for s in STATS] + [
        ("tpot", "p90"), ("slo_attainment", "mean")], block=1)  # (requests one by one, as scipy's draws them)
    for d in diffs:
        x, y = (s.attained(SLO) if d.metric == "slo_attainment" else s.values[d.metric] for s in (a, b))
        keep = ~np.isnan(x) & ~np.isnan(y)
        x, y = (x[keep], y[keep]) if paired else (x[~np.isnan(x)], y[~np.isnan(y)])
        f = STATS[d.stat]
        ref = bootstrap((x, y), lambda u, v: f(v) - f(u), paired=paired, vectorized=False, n_resamples=3000,
                        method="percentile", random_state=np.random.default_rng(2)).confidence_interval
        width = ref.high - ref.low
        assert d.method == ("paired" if paired else "independent")
        assert abs(d.low - ref.low) < 0.12 * width and abs(d.high - ref.high) < 0.12 * width, (d, ref)


def test_the_intervals_cover_the_true_difference_at_their_stated_rate():
    """Exponential latencies of means 0.5 s and 0.6 s: their true p90s differ by 0.1 ln 10, their means by 0.1.
    Independent runs, and paired ones where each request is 1.2 times as slow (the true p90 difference 0.1 ln 10)."""
    rng = np.random.default_rng(12)
    trials, n, covered = 200, 400, {"independent p90": 0, "independent mean": 0, "paired p90": 0}
    for t in range(trials):
        a = _sample(1, rng.exponential(0.5, n), _ids("r", n))
        b = _sample(2, rng.exponential(0.6, n), _ids("x", n))
        d = compare_samples([a], [b], n_resamples=300, seed=t, confidence=0.9,
                            metrics=[("ttft", "p90"), ("ttft", "mean")])
        covered["independent p90"] += d[0].low <= 0.1 * np.log(10) <= d[0].high
        covered["independent mean"] += d[1].low <= 0.1 <= d[1].high
        slower = _sample(2, a.values["ttft"] * 1.2, _ids("r", n))
        (p,) = compare_samples([a], [slower], n_resamples=300, seed=t, confidence=0.9, metrics=[("ttft", "p90")])
        assert p.method == "paired"
        covered["paired p90"] += p.low <= 0.1 * np.log(10) <= p.high
    for what, k in covered.items():  # 90% of 200 trials, +-3 standard deviations (0.021)
        assert 0.83 <= k / trials <= 0.97, (what, k / trials)


def test_a_compare_of_100000_requests_a_side_costs_seconds_not_minutes():
    """Two paired runs of 100,000 requests took ~30 CPU-seconds (a `scipy.stats.bootstrap` a statistic,
    each resample sorted for each percentile); ~1.5 now. The bound leaves room for a slow, shared machine."""
    rng = np.random.default_rng(13)
    n = 100_000
    ids = _ids("r", n)
    a = _sample(1, rng.exponential(0.5, n), ids)
    b = _sample(2, a.values["ttft"] * 1.01 + rng.normal(0, 0.01, n), ids)
    steps: list[int] = []
    started = time.process_time()
    diffs = compare_samples([a], [b], n_resamples=1000, progress=steps.append)
    assert time.process_time() - started < 10
    assert sum(steps) == 1000 and len(steps) > 1  # (in batches, each reported)
    assert diffs[0].method == "paired" and all(d.low is not None for d in diffs)


def test_a_slow_compare_says_how_long_and_names_resamples_and_no_ci(tmp_path, monkeypatch):
    """A compare of minutes ran with no word; one projected past `SLOW_S` says so on stderr (a bar on a terminal)."""
    from typer.testing import CliRunner

    from controlplane.cli import app, compare_progress

    db = f"sqlite:///{tmp_path / 'runs.db'}"
    for seed in ("1", "2"):
        assert CliRunner().invoke(app, ["sim", "replay", "--limit", "200", "--seed", seed, "--db", db,
                                        "--json"]).exit_code == 0
    monkeypatch.setattr(compare_progress, "SLOW_S", 1e9)  # (on a loaded machine 200 resamples may take seconds)
    quick = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", db, "--resamples", "200"])
    assert quick.exit_code == 0 and "note:" not in quick.stderr
    monkeypatch.setattr(compare_progress, "SLOW_S", 0.0)
    monkeypatch.setattr(compare_progress, "_MEASURE_S", 0.0)
    slow = CliRunner().invoke(app, ["runs", "compare", "1", "2", "--db", db, "--resamples", "200"])
    assert slow.exit_code == 0, slow.output
    said = " ".join(slow.stderr.split())
    assert "note: 200 bootstrap resamples of 400 requests take about" in said, said
    assert "--resamples 100 is about" in said and "--no-ci compares the summaries without intervals" in said
    assert "B - A with confidence intervals" in slow.stdout


def test_a_compare_projected_past_slow_s_says_so_whatever_the_rounding_of_its_projection(monkeypatch):
    """The note's test failed 1 time in 20: a bootstrap done in one step projected elapsed / 200 * 200, a hair under
    its elapsed time (0.0591775... s), so its time left read below a `SLOW_S` of 0."""
    from controlplane.cli import compare_progress

    clock = iter([0.0, 59 / 997])  # (started, then after the one step: 0.05917753259779338 s)
    monkeypatch.setattr(compare_progress.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(compare_progress, "SLOW_S", 0.0)
    monkeypatch.setattr(compare_progress, "_MEASURE_S", 0.0)
    progress = compare_progress.CompareProgress(200, 200, 400)
    progress(200)
    assert progress.said


def test_block_counts_draw_consecutive_requests_by_arrival_and_n_in_all():
    from controlplane.resampling import block_counts, block_length

    assert (block_length(1000), block_length(100_000), block_length(3)) == (20, 93, 3)
    order = np.random.default_rng(1).permutation(50)  # request indices in arrival order
    counts = block_counts(order, 7, 200, np.random.default_rng(2))
    assert counts.shape == (200, 50) and (counts.sum(axis=1) == 50).all()
    by_arrival = counts[:, order]  # each resample: 8 runs of consecutive arrivals (circular), the last cut to 1
    ends = np.diff(np.concatenate([by_arrival, by_arrival[:, :1]], axis=1), axis=1)
    assert (np.abs(ends).sum(axis=1) <= 2 * 8).all()


def _autocorrelated(rng: np.random.Generator, n: int, phi: float = 0.8) -> np.ndarray:
    """Latencies whose logs are AR(1): a burst's requests wait together, as a queue's do."""
    e, x = rng.normal(0, 1, n), np.empty(n)
    x[0] = e[0] / np.sqrt(1 - phi ** 2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return 0.3 * np.exp(0.5 * x)


def test_the_block_bootstrap_keeps_a_false_alarms_rate_near_its_level_where_latencies_are_correlated():
    """Two runs of one configuration, their latencies correlated in time: requests drawn one by one called 17 of 40
    such A/A pairs different (5% expected); blocks of consecutive arrivals (the default) call about 2."""
    rng = np.random.default_rng(5)
    ids = _ids("r", 1000)
    flagged = {1: 0, None: 0}
    for t in range(40):
        a, b = _sample(1, _autocorrelated(rng, 1000), ids), _sample(2, _autocorrelated(rng, 1000), ids)
        for block in flagged:
            (d,) = compare_samples([a], [b], n_resamples=300, seed=t, metrics=[("ttft", "mean")], block=block)
            assert d.method == "paired"
            flagged[block] += not d.within_noise
    assert flagged[1] >= 10 and flagged[None] <= 4, flagged
