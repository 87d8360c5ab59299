"""The output length a request is expected to generate: a quantile of the run's finished answers."""

from __future__ import annotations

import pytest

from controlplane.testing import make_requests
from controlplane.types import RequestStatus
from plugins.output_lengths import OutputLengths


def _answers(lengths: OutputLengths, tokens: list[int], model: str = "default",
             status: RequestStatus = RequestStatus.COMPLETED) -> None:
    for i, n in enumerate(tokens):
        r = make_requests(1, prefix=f"done{i}-", model=model)[0]
        r.status, r.output_tokens, r.max_output_tokens = status, n, 4096
        lengths.finished(r)


def _request(max_tokens: int, output_tokens: int = 0, model: str = "default"):
    r = make_requests(1, prefix="new", model=model)[0]
    r.max_output_tokens, r.output_tokens = max_tokens, output_tokens
    return r


def test_before_min_finished_answers_a_request_takes_its_max_tokens():
    lengths = OutputLengths(window=100, quantile=0.9, min_finished=20)
    _answers(lengths, [10] * 19)
    assert lengths.typical("default") is None
    assert lengths.expected(_request(4096)) == 4096
    assert lengths.remaining(_request(4096, output_tokens=96)) == 4000
    _answers(lengths, [10])
    assert lengths.typical("default") == 10
    assert lengths.expected(_request(4096)) == 10


def test_the_quantile_is_of_the_window_and_bounded_by_max_tokens():
    lengths = OutputLengths(window=10, quantile=0.9, min_finished=10)
    _answers(lengths, list(range(1, 11)))  # 1..10: p90 (nearest rank) = 9
    assert lengths.typical("default") == 9
    assert lengths.expected(_request(4096)) == 9
    assert lengths.expected(_request(5)) == 5  # asks for fewer: its max_tokens
    _answers(lengths, [500] * 5)  # the window keeps the last 10: 6..10 and five 500s
    assert lengths.typical("default") == 500
    assert lengths.expected(_request(300)) == 300
    assert lengths.typical("other") is None  # per model


def test_a_running_request_expects_at_least_one_more_token_until_its_max_tokens():
    lengths = OutputLengths(window=20, quantile=0.9, min_finished=20)
    _answers(lengths, [100] * 20)
    assert lengths.remaining(_request(4096, output_tokens=30)) == 70
    assert lengths.remaining(_request(4096, output_tokens=150)) == 1  # longer than any: still running
    assert lengths.remaining(_request(150, output_tokens=150)) == 0  # at its max_tokens: done
    assert lengths.remaining(_request(40, output_tokens=30)) == 10  # its max_tokens bounds it


def test_the_work_ahead_counts_the_mean_and_the_new_request_the_quantile():
    lengths = OutputLengths(window=10, quantile=0.9, min_finished=10)
    _answers(lengths, [1] * 9 + [100])  # p90 (nearest rank) = 1, mean 10.9
    assert lengths.typical("default") == 1 and lengths.mean("default") == 11  # rounded up
    _answers(lengths, [100, 100])  # the last 10: seven 1s and three 100s: p90 = 100, mean 30.7
    assert lengths.typical("default") == 100 and lengths.mean("default") == 31
    assert lengths.expected(_request(4096)) == 100  # its own length: the quantile
    assert lengths.remaining(_request(4096)) == 31  # in the work ahead: the mean
    # running with 15 made: one of the three answers over 15 tokens (all 100), not of the mean's
    assert lengths.mean("default", longer_than=15) == 100
    assert lengths.remaining(_request(4096, output_tokens=15)) == 85
    assert lengths.remaining(_request(4096, output_tokens=150)) == 1  # longer than any: still running
    assert lengths.remaining(_request(12)) == 12  # its max_tokens bounds it
    assert lengths.remaining(_request(50, output_tokens=15)) == 35
    assert lengths.mean("other") is None


def test_only_requests_that_generated_are_counted():
    lengths = OutputLengths(window=20, quantile=0.5, min_finished=2)
    _answers(lengths, [7, 7], status=RequestStatus.REJECTED)
    _answers(lengths, [7, 7], status=RequestStatus.FAILED)
    _answers(lengths, [0, 0], status=RequestStatus.CANCELLED)  # cancelled before its first token
    assert lengths.typical("default") is None
    _answers(lengths, [300], status=RequestStatus.BLOCKED)  # by the output guardian: a whole answer
    _answers(lengths, [300])
    assert lengths.typical("default") == 300


def test_a_burst_of_answers_cancelled_early_does_not_lower_the_expected_length():
    """After an overload burst, answers cut at the client's timeout after a few tokens (they waited)
    are lower bounds, not short answers: the quantile and the mean stay those of whole answers."""
    lengths = OutputLengths(window=100, quantile=0.9, min_finished=20)
    _answers(lengths, list(range(10, 410, 10)))  # 40 whole answers: 10..400
    q, m = lengths.typical("default"), lengths.mean("default")
    assert (q, m) == (360, 205)
    _answers(lengths, [3] * 60 + [100] * 40, status=RequestStatus.CANCELLED)  # fills the window if kept
    assert (lengths.typical("default"), lengths.mean("default")) == (q, m)
    assert lengths.expected(_request(4096)) == 360
    assert lengths.remaining(_request(4096)) == 205
    # one cut at or above the quantile is informative (the answer was at least that long): kept
    _answers(lengths, [360, 1000], status=RequestStatus.CANCELLED)
    assert lengths.mean("default") == -(-(8200 + 360 + 1000) // 42)
    assert lengths.mean("default", longer_than=400) == 1000


def test_cancelled_answers_do_not_count_before_there_is_a_quantile():
    """Cold start: cut answers alone never reach ``min_finished``, so a request still counts its
    ``max_tokens`` (cautious) rather than the few tokens a burst's answers got before their timeout."""
    lengths = OutputLengths(window=50, quantile=0.9, min_finished=20)
    _answers(lengths, [5] * 50, status=RequestStatus.CANCELLED)
    assert lengths.typical("default") is None
    assert lengths.expected(_request(4096)) == 4096
    _answers(lengths, [200] * 20)
    assert lengths.typical("default") == 200


@pytest.mark.parametrize("bad", [dict(window=0), dict(quantile=0), dict(quantile=1.5),
                                 dict(min_finished=0), dict(window=5, min_finished=6)])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="min_finished <= window"):
        OutputLengths(**bad)


def test_the_remaining_total_over_counted_pairs_is_the_sum_of_remaining_request_by_request():
    import random
    from collections import Counter

    rnd = random.Random(7)
    reqs = []
    for i in range(300):
        most = rnd.choice([1, 5, 30, 100, 4096, rnd.randint(1, 500)])
        reqs.append(_request(most, output_tokens=rnd.choice([0, 0, 0, rnd.randint(0, most)])))
    pairs = Counter((r.output_tokens, r.max_output_tokens) for r in reqs)
    assert len(pairs) < len(reqs) and any(made == most for made, most in pairs)  # (one at its max_tokens: 0 left)
    lengths = OutputLengths(window=50, quantile=0.9, min_finished=20)
    seen_typical = set()
    for step in range(60):  # before min_finished answers (max_tokens), then as the window moves
        assert lengths.remaining_total("default", pairs) == sum(lengths.remaining(r) for r in reqs), step
        seen_typical.add(lengths.typical("default") is not None)
        _answers(lengths, [rnd.randint(1, 300)])
    assert seen_typical == {False, True}
    assert lengths.remaining_total("default", {}) == 0
