"""What loading a hand-written measured profile says without refusing it (`sim.latency.measured_checks`): the fit's
error on its own rows, times in the wrong unit, rows breaking monotonicity, kinds no row times, unknown row keys;
and the iterations a model prices past its rows (`sim.latency.measured_box`). The profile is an L40S engineer's
(Llama-13B int8, vLLM), from a benchmark CSV as docs/latency-models.md maps one."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from controlplane.hardware.profile_format import ProfileWarning
from sim.latency.base import IterationShape
from sim.latency.measured import MeasuredProfileModel
from sim.latency.measured_box import fit_line, past_profile_lines, past_profile_summary

PREFILL_MS = {128: 21.23, 256: 42.88, 512: 84.14, 1024: 163.03, 2048: 334.54, 4096: 686.49}
DECODE_MS = {  # batch -> per-sequence context -> ms
    1: {512: 20.8, 1024: 21.59, 2048: 21.89, 4096: 24.16}, 2: {512: 21.65, 1024: 22.34, 2048: 25.25, 4096: 28.83},
    4: {512: 22.36, 1024: 25.19, 2048: 29.23, 4096: 40.48}, 8: {512: 25.46, 1024: 28.88, 2048: 38.3, 4096: 58.99},
    16: {512: 30.5, 1024: 39.14, 2048: 57.84, 4096: 97.22}, 32: {512: 38.31, 1024: 57.86, 2048: 97.32, 4096: 175.31},
    64: {512: 57.9, 1024: 96.1, 2048: 172.39, 4096: 329.9}}
MIXED_MS = {(4, 256): 46.89, (4, 512): 85.78, (16, 256): 65.24, (16, 512): 105.12}  # decodes @ 1024 + one prefill


def l40s_rows(scale: float = 1e-3) -> list[dict]:
    """The engineer's rows (times in ms times ``scale``: 1e-3 is seconds)."""
    rows = [dict(num_prefill_tokens=p, num_prefill_seqs=1, num_decode_seqs=0, sum_decode_context=0,
                 sum_prefill_context=0, iteration_s=t * scale) for p, t in PREFILL_MS.items()]
    rows += [dict(num_prefill_tokens=0, num_prefill_seqs=0, num_decode_seqs=b, sum_decode_context=b * c,
                  sum_prefill_context=0, iteration_s=t * scale) for b, by in DECODE_MS.items() for c, t in by.items()]
    rows += [dict(num_prefill_tokens=p, num_prefill_seqs=1, num_decode_seqs=b, sum_decode_context=b * 1024,
                  sum_prefill_context=0, iteration_s=t * scale) for (b, p), t in MIXED_MS.items()]
    return rows


def write(tmp_path, rows, name="l40s.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"format": "controlplane-profile/1", "model": "acme/llama-13b-int8", "device": "l40s",
                                "precision": "int8", "rows": rows}))
    return str(path)


def load(path) -> tuple[MeasuredProfileModel, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = MeasuredProfileModel.from_file(path)
    return model, [str(w.message) for w in caught if issubclass(w.category, ProfileWarning)]


def test_a_fit_far_from_its_rows_is_warned_naming_its_error_and_worst_rows(tmp_path):
    model, said = load(write(tmp_path, l40s_rows()))
    fit = [s for s in said if "off its own rows" in s]
    assert len(fit) == 1, said
    assert "1.9% at the median, 9.7% at p90" in fit[0]
    assert "row 1 (prefill 128 tokens (1 seq): measured 21.2 ms, fitted 32 ms, +51%)" in fit[0]
    assert model.fit_stats["max_rel_err"] == pytest.approx(0.509, abs=0.002)
    assert fit_line(model.fit_stats) == "fit: p90 9.7% off its 38 rows (median 1.9%, worst 51%)"


def test_a_profile_fitted_closely_says_nothing_of_its_fit(tmp_path):
    rows = [{**r, "iteration_s": 0.02 + 1e-4 * r["num_prefill_tokens"] + 1e-3 * r["num_decode_seqs"]
             + 2e-7 * r["sum_decode_context"]} for r in l40s_rows()]
    _, said = load(write(tmp_path, rows))
    assert not [s for s in said if "off its own rows" in s or "below a row" in s], said


@pytest.mark.parametrize("scale, expected", [
    (1.0, r"row 7 times a decode step of one sequence at 20\.8 s, .*iteration_s is in seconds .*not ms"),
    (1e-6, r"row 7 times a decode step of one sequence at 20\.8 µs, faster than any GPU .*iteration_s is in seconds"),
])
def test_times_in_the_wrong_unit_are_warned(tmp_path, scale, expected):
    _, said = load(write(tmp_path, l40s_rows(scale)))
    assert any(re.search(expected, s) for s in said), said
    _, said = load(write(tmp_path, l40s_rows(), "s.json"))
    assert not [s for s in said if "iteration_s is in seconds" in s], said


def test_rows_that_cost_less_for_more_work_are_named(tmp_path):
    rows = l40s_rows()
    for r in rows:
        if r["num_decode_seqs"] == 32 and not r["num_prefill_seqs"]:
            r["iteration_s"] *= 0.5
    _, said = load(write(tmp_path, rows))
    mono = [s for s in said if "below a row doing less work" in s]
    assert len(mono) == 1, said
    assert re.search(r"3 row\(s\) timed more than 10% below .*row 27 \(decode 32 seqs, 16,384 context: 19\.2 ms\) "
                     r"\d+% below row \d+", mono[0]), mono
    _, said = load(write(tmp_path, l40s_rows(), "ok.json"))
    assert not [s for s in said if "below a row doing less work" in s]  # (noise within 10%: said nothing)


def test_a_kind_no_row_times_is_warned(tmp_path):
    _, said = load(write(tmp_path, l40s_rows()))
    assert any("no row prefills over a cached context (sum_prefill_context > 0)" in s for s in said), said
    rows = l40s_rows() + [dict(num_prefill_tokens=512, num_prefill_seqs=1, num_decode_seqs=0, sum_decode_context=0,
                               sum_prefill_context=1024, iteration_s=0.09)]
    _, said = load(write(tmp_path, rows, "ctx.json"))
    assert not any("cached context" in s for s in said), said


def test_unknown_row_keys_are_named_and_rows_counted_from_1(tmp_path):
    rows = [{**r, "sampels": 50} for r in l40s_rows()]
    _, said = load(write(tmp_path, rows))
    assert any("unknown row key(s) dropped: 'sampels' in 38 row(s), first row 1 (did you mean 'samples'?)" in s
               for s in said), said
    rows = l40s_rows()
    rows[6]["iteration_s"] = "0.02"
    with pytest.raises(ValueError, match=re.escape("row 7 (1-based): iteration_s='0.02' must be a number")):
        MeasuredProfileModel.from_file(write(tmp_path, rows, "bad.json"))


def test_iterations_past_the_profiled_box_are_counted_estimates_not(tmp_path):
    model, _ = load(write(tmp_path, l40s_rows()))
    model.iteration_s(IterationShape((2048,), (0,)))  # inside
    model.iteration_s(IterationShape((8192,), (0,)))  # longer than any prefill row
    model.iteration_s(IterationShape((512,), (3584,)))  # over a context no row had
    model.estimate_s(IterationShape((), (), (100,) * 256))  # the planner's: not counted
    assert model.box.counts() == {"priced": 3, "outside": 2,
                                  "past": {"num_prefill_tokens": 1, "sum_prefill_context": 1}}
    # a decode run counts as its iterations one by one would: 64 sequences reach 262,144 tokens of context
    for b, start, n in ((64, 4090, 20), (128, 100, 5), (8, 100, 3)):
        run, loop = MeasuredProfileModel.fit(l40s_rows()), MeasuredProfileModel.fit(l40s_rows())
        ctx = np.full(b, start)
        run.decode_run_s(ctx, n)
        for k in range(n):
            loop.iteration_s(IterationShape((), (), tuple(ctx + k)))
        assert run.box.counts() == loop.box.counts(), (b, start, n)
    summary = past_profile_summary({"default": model, "other": object()})
    assert summary == {"iterations_past_profile": {"default": model.box.counts()}}
    (line,) = past_profile_lines({"default": model})
    assert line.startswith(f"deployment 'default': 2 of 3 iterations priced (66.7%) were past every row of "
                           f"{tmp_path / 'l40s.json'} (more prefill tokens: 1, more prefill context: 1)")
