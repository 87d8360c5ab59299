import numpy as np
import pytest

from sim.traces import TraceFormatError, detect_format, read_trace
from sim.traces.vidur import read_vidur

from .conftest import VIDUR_ARXIV, need

HEADER = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"


def test_arxiv_poisson_rate_matches_qps():
    path = need(VIDUR_ARXIV)
    assert detect_format(path) == "vidur"
    reqs = list(read_trace(path, rng=np.random.default_rng(3), qps=2.5))
    assert len(reqs) == 28257
    t = np.array([r.arrival_s for r in reqs])
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    rate = (len(t) - 1) / t[-1]
    assert rate == pytest.approx(2.5, rel=0.03)  # ~0.6% standard error at this size
    iat = np.diff(t)
    assert iat.std() / iat.mean() == pytest.approx(1.0, rel=0.05)  # exponential gaps
    assert max(r.prompt_tokens + r.output_tokens for r in reqs) <= 4096


def test_arxiv_gamma_cv_and_determinism():
    path = need(VIDUR_ARXIV)
    a = list(read_trace(path, rng=np.random.default_rng(1), arrival="gamma", qps=1.0, cv=3.0))
    b = list(read_trace(path, rng=np.random.default_rng(1), arrival="gamma", qps=1.0, cv=3.0))
    assert a == b
    iat = np.diff([r.arrival_s for r in a])
    assert 1 / iat.mean() == pytest.approx(1.0, rel=0.1)
    assert iat.std() / iat.mean() == pytest.approx(3.0, rel=0.15)


def test_lengths_and_ids_from_file(write):
    p = write("v.csv", HEADER + "10,2,12,5.0\n\n30,4,34,7.5\n")
    reqs = list(read_vidur(p, rng=np.random.default_rng(0), qps=4.0))
    assert [(r.request_id, r.prompt_tokens, r.output_tokens) for r in reqs] == [("0", 10, 2), ("1", 30, 4)]
    assert reqs[0].arrival_s == 0.0 < reqs[1].arrival_s


def test_two_column_file(write):
    p = write("v.csv", "num_prefill_tokens,num_decode_tokens\n1,2\n")
    assert detect_format(p) == "vidur"
    assert len(list(read_trace(p, rng=np.random.default_rng(0)))) == 1


@pytest.mark.parametrize("options, needle", [
    ({}, "rng"),
    ({"rng": np.random.default_rng(0), "arrival": "uniform"}, "unknown arrival 'uniform'; valid choices: poisson, gamma"),
    ({"rng": np.random.default_rng(0), "qps": 0}, "qps must be"),
    ({"rng": np.random.default_rng(0), "cv": -1}, "cv must be"),
    ({"rng": np.random.default_rng(0), "speed": 2}, "unknown option(s) 'speed' for trace format 'vidur'"),
])
def test_option_errors(write, options, needle):
    p = write("v.csv", HEADER + "1,1,2,1\n")
    with pytest.raises(ValueError) as exc:
        read_trace(p, "vidur", **options)
    assert needle in str(exc.value)


def test_bad_rows(write):
    p = write("trace.csv", HEADER + "1,1,2,1\n5,abc,2,1\n")
    with pytest.raises(TraceFormatError, match=r"trace\.csv:3: field 'num_decode_tokens': expected a non-negative integer, got 'abc'"):
        list(read_vidur(p, rng=np.random.default_rng(0)))
    p = write("trace3.csv", "num_prefill_tokens,num_decode_tokens\n1,1\n5,2,9\n")
    with pytest.raises(TraceFormatError, match=r"trace3\.csv:3: field 'num_decode_tokens': row has 3 fields, the header 2"):
        list(read_vidur(p, rng=np.random.default_rng(0)))
    p = write("trace2.csv", "num_prefill_tokens,pd_ratio\n1,1\n")
    with pytest.raises(TraceFormatError, match=r"trace2\.csv:1: field 'num_decode_tokens': missing required column"):
        list(read_vidur(p, rng=np.random.default_rng(0)))


def test_skip_with_callback(write):
    p = write("trace.csv", HEADER + "1,1,2,1\n-5,1,2,1\n3,3,6,1\n")
    seen = []
    reqs = list(read_trace(p, rng=np.random.default_rng(0), on_error=seen.append))
    assert [r.request_id for r in reqs] == ["0", "2"]
    assert [(e.line, e.field) for e in seen] == [(3, "num_prefill_tokens")]


def test_a_generator_function_is_called_only_by_a_format_that_draws(write):
    p = write("v.csv", HEADER + "10,2,12,5.0\n30,4,34,7.5\n")
    made = []

    def rng():
        made.append(1)
        return np.random.default_rng(0)

    by_function = [(r.request_id, r.arrival_s) for r in read_trace(p, rng=rng, qps=4.0)]
    assert made == [1]
    assert by_function == [(r.request_id, r.arrival_s) for r in read_trace(p, rng=np.random.default_rng(0), qps=4.0)]
    c = write("c.csv", "request_id,arrival_s,prompt_tokens,output_tokens\na,0.5,10,2\n")
    assert [r.request_id for r in read_trace(c, "canonical", rng=rng)] == ["a"]
    assert made == [1]  # the canonical format draws nothing: not made


def test_header_names_are_matched_ignoring_case(write):
    # (detection ignores case: a header it takes as Vidur's must read too, as Azure's and BurstGPT's do)
    p = write("v.csv", "Num_Prefill_Tokens,NUM_DECODE_TOKENS\n100,10\n")
    assert detect_format(p) == "vidur"
    (r,) = read_trace(p, rng=np.random.default_rng(0))
    assert (r.prompt_tokens, r.output_tokens) == (100, 10)
