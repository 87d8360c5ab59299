"""When is a semantic neighbour's answer good enough to serve? A score per lookup and a threshold
on it, learned online from verified outcomes so that the share of wrong cached answers stays
under a bound the user sets.

Score. A lookup's neighbours (the ``k`` nearest cached prompts) vote: ``score = s1 * share``,
where ``s1`` is the nearest one's cosine similarity and ``share`` the softmax-weighted
(``exp(s / temperature)``) share of the neighbours whose answer is the nearest one's answer. A
question whose neighbourhood mixes answers (a question and its negation, two close intents)
scores low even when one neighbour is very similar; that is what a single fixed cosine
threshold cannot see.

Threshold. Every lookup whose nearest entry was not served yields a verified outcome for free
once the model's answer arrives (is the generated answer the cached one?); would-be hits are
verified by exploration (a sampled fraction is treated as a miss, see the plugin). From the
latest ``window`` outcomes, candidate thresholds are tested from high to low in steps of
``step`` (fixed-sequence testing). Candidate t passes when both

- the outcomes with score >= t have a one-sided Clopper-Pearson upper bound, at ``confidence``,
  on their error rate of at most ``bound`` (the hits served at t, taken together: an upper
  bound, never the point estimate), and
- the band [t, t + ``band``) holds at least ``min_outcomes(bound, confidence)`` verified outcomes
  (the fewest that could pass the first test on their own): the scores just above t were
  verified themselves. Too few there means "do not serve there", so the threshold never crosses
  a range of scores nothing was verified in, however much evidence lies above it (outcomes at
  1.0 and at 0.6 and none between used to let it fall from 1.0 to 0.6). The first candidate
  tested (below) fails as well when its outcomes leave a gap wider than ``band`` between two
  verified scores.

The lowest candidate reached before the first failure is used, never below the lowest verified
score; with too few outcomes none passes and nothing is served. A wrong outcome at or above
the threshold in use (a verified false hit) refits at once, not after ``refit_every`` outcomes
(which, while most lookups were hits, came seldom).

``scipy.special`` is imported at the first refit that has enough outcomes, not with this module:
a replay whose cache never learns (no answer text) never pays for it.
"""

from __future__ import annotations

from collections import deque

import numpy as np

__all__ = ["consensus_score", "ThresholdLearner", "upper_bound"]


def consensus_score(sims: np.ndarray, same_answer: np.ndarray, temperature: float) -> float:
    """``s1 * share`` for neighbours sorted best first (``same_answer[0]`` is True)."""
    if len(sims) == 0:
        return 0.0
    w = np.exp((sims - sims[0]) / temperature)
    return float(sims[0] * w[same_answer].sum() / w.sum())


def min_outcomes(bound: float, confidence: float) -> int:
    """Outcomes (all correct) needed before any threshold can pass: (1-bound)^n <= 1-confidence."""
    return int(np.ceil(np.log(1.0 - confidence) / np.log(1.0 - bound)))


def upper_bound(errors, n, confidence: float):
    """One-sided Clopper-Pearson upper bound on an error rate from ``errors`` of ``n`` (1 where n == errors,
    n == 0 included); arrays in, array out."""
    from scipy.special import betaincinv  # (lazily: see the module docstring)

    errors, n = np.asarray(errors, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = np.ones(np.broadcast(errors, n).shape)
    ok = n > errors
    out[ok] = betaincinv(np.broadcast_to(errors, out.shape)[ok] + 1, np.broadcast_to(n - errors, out.shape)[ok],
                         confidence)
    return out


class ThresholdLearner:
    """Online threshold on the score from (score, correct) outcomes; see the module docstring."""

    def __init__(self, bound: float = 0.02, confidence: float = 0.95, window: int = 20_000,
                 step: float = 0.005, refit_every: int = 25, band: float = 0.05) -> None:
        if not 0 < bound < 1:
            raise ValueError(f"bound must be in (0, 1), got {bound}")
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {confidence}")
        if not band > 0:
            raise ValueError(f"band must be > 0, got {band}")
        self.bound, self.confidence, self.step, self.refit_every = bound, confidence, step, refit_every
        self.band = band
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=window)
        self._since_fit = 0
        self.threshold = float("inf")  # nothing is served until the outcomes support a threshold
        self.n_min = min_outcomes(bound, confidence)

    def __len__(self) -> int:
        return len(self._outcomes)

    def observe(self, score: float, correct: bool) -> None:
        self._outcomes.append((float(score), bool(correct)))
        self._since_fit += 1
        if self._since_fit >= self.refit_every or (not correct and score >= self.threshold):
            self.refit()

    def refit(self) -> float:
        """Recompute the threshold from the outcomes in the window; returns it."""
        self._since_fit = 0
        if len(self._outcomes) < self.n_min:
            self.threshold = float("inf")
            return self.threshold
        data = np.array(self._outcomes, dtype=np.float64)
        order = np.argsort(-data[:, 0], kind="stable")
        scores, wrong = data[order, 0], 1.0 - data[order, 1]
        grid = np.arange(1.0, -self.step / 2, -self.step)
        cum_wrong = np.concatenate([[0.0], np.cumsum(wrong)])

        def above(t):  # (outcomes, errors) with score >= t, for each t
            k = np.searchsorted(-scores, -t, side="right")
            return k, cum_wrong[k]

        n, errors = above(grid)
        n_top, _ = above(grid + self.band)
        # The sequence starts at the highest threshold with enough outcomes to pass with a few
        # errors (3x the minimum, or all there are): the start depends on the scores only, never
        # on the outcomes, so the test stays valid.
        need = min(3 * self.n_min, len(scores))
        start = int(np.argmax(n >= need))
        n, errors, grid = n[start:], errors[start:], grid[start:]
        band_n = n - n_top[start:]
        band_n[0] = n[0]  # the start: everything above it is its band
        failed = (upper_bound(errors, n, self.confidence) > self.bound) | (band_n < self.n_min)
        top = scores[:n[0]]  # the start's own outcomes: no score range in them wider than a band left unverified
        if len(top) > 1 and float(np.max(top[:-1] - top[1:])) > self.band:
            failed[0] = True
        passed = len(grid) if not failed.any() else int(np.argmax(failed))  # fixed sequence: stop at the first failure
        # Never below the lowest verified score: no evidence says anything about lower scores.
        self.threshold = max(float(grid[passed - 1]), float(scores[-1])) if passed > 0 else float("inf")
        return self.threshold

    def error_upper_bound(self, threshold: float) -> tuple[int, int, float]:
        """(outcomes, wrong, Clopper-Pearson upper bound) at ``threshold`` (for reports)."""
        data = [(s, c) for s, c in self._outcomes if s >= threshold]
        n, e = len(data), sum(1 for _, c in data if not c)
        return n, e, float(upper_bound(e, n, self.confidence))
