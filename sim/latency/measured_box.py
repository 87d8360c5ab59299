"""The profiled box of a measured profile: the largest counts its rows timed, and how many of a run's iterations the
measured model priced past them (extrapolated: an 8,192-token prefill on a profile timed up to 4,096 tokens is
priced by the fit's square term, a 256-sequence decode on one timed up to 64 by its straight line).

`ProfiledBox` counts as the model prices (`MeasuredProfileModel.iteration_s` and `decode_run_s`; the planner's
estimates are not counted: `MeasuredProfileModel.estimate_s`). A multi-iteration decode run is priced, and so
counted, in full when it starts: a run cut short by an arrival counts the iterations priced past the cut too. A
replay's summary has the counts as ``iterations_past_profile`` (`past_profile_summary`) and ends with one warning
line per deployment (`past_profile_lines`), as it does for ``requests_past_context``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BOX_FIELDS", "ProfiledBox", "past_profile_lines", "fit_line", "past_profile_summary", "with_fit_stats"]

#: The counts a row gives and an iteration is compared on, with how a line names going past each.
BOX_FIELDS: dict[str, str] = {
    "num_prefill_tokens": "more prefill tokens",
    "num_prefill_seqs": "more prefill sequences",
    "num_decode_seqs": "more decode sequences",
    "sum_decode_context": "more decode context",
    "sum_prefill_context": "more prefill context",
}


class ProfiledBox:
    """The largest of each of `BOX_FIELDS` over a profile's rows, and the iterations priced so far (``priced``),
    those past the box in any count (``outside``), and by count (``by_field``)."""

    __slots__ = ("limits", "priced", "outside", "by_field", "source")

    def __init__(self, rows: Sequence[Mapping[str, float]], source: str | None = None) -> None:
        self.source = source  # (the profile's file, for the lines)
        self.limits = tuple(max(int(r[k]) for r in rows) for k in BOX_FIELDS)
        self.priced = 0
        self.outside = 0
        self.by_field = [0] * len(BOX_FIELDS)

    def note(self, p_tok: int, n: int, nd: int, d_ctx: int, p_ctx: int) -> None:
        """One iteration priced, of these counts."""
        self.priced += 1
        lim = self.limits
        if p_tok > lim[0] or n > lim[1] or nd > lim[2] or d_ctx > lim[3] or p_ctx > lim[4]:
            self.outside += 1
            for i, v in enumerate((p_tok, n, nd, d_ctx, p_ctx)):
                if v > lim[i]:
                    self.by_field[i] += 1

    def note_decode_run(self, b: int, sum_context: int, num_iterations: int, step: int) -> None:
        """``num_iterations`` decode-only iterations of ``b`` sequences, the first holding ``sum_context`` tokens of
        KV, each later one ``step`` more (``b``; a padded engine's ``b`` times the longest)."""
        self.priced += num_iterations
        lim = self.limits
        first = 0 if sum_context > lim[3] else (lim[3] - sum_context) // max(step, 1) + 1  # the first one past
        past_context = max(0, num_iterations - first)
        self.by_field[3] += past_context
        if b > lim[2]:
            self.by_field[2] += num_iterations
            self.outside += num_iterations
        else:
            self.outside += past_context

    def counts(self) -> dict[str, Any]:
        """What a run's summary says: ``priced``, ``outside`` and, by count past, ``past`` (those above 0)."""
        past = {k: n for k, n in zip(BOX_FIELDS, self.by_field) if n}
        return {"priced": self.priced, "outside": self.outside, "past": past}

    def describe_limits(self) -> str:
        """The box in words: ``prefill tokens <= 4,096, ...``."""
        return ", ".join(f"{k} <= {v:,}" for k, v in zip(BOX_FIELDS, self.limits))


def past_profile_summary(models: Mapping[str, Any]) -> dict[str, Any]:
    """``{"iterations_past_profile": {deployment: counts}}`` for each deployment whose latency model has a
    `ProfiledBox` that priced an iteration past it; empty when none did."""
    out = {name: box.counts() for name, box in _boxes(models) if box.outside}
    return {"iterations_past_profile": out} if out else {}


def past_profile_lines(models: Mapping[str, Any]) -> list[str]:
    """One line per deployment whose measured profile priced iterations past its rows: how many, of how many, past
    which counts, and the box."""
    lines = []
    for name, box in _boxes(models):
        if not box.outside:
            continue
        c = box.counts()
        which = ", ".join(f"{BOX_FIELDS[k]}: {n:,}" for k, n in c["past"].items())
        source = box.source or "its measured profile"
        lines.append(f"deployment {name!r}: {c['outside']:,} of {c['priced']:,} iterations priced "
                     f"({c['outside'] / max(c['priced'], 1):.1%}) were past every row of {source} ({which}): "
                     f"extrapolated by the fit, not measured (the profile's rows reach {box.describe_limits()}; "
                     "profile those shapes, or see docs/latency-models.md#the-profiled-box)")
    return lines


def _boxes(models: Mapping[str, Any]) -> list[tuple[str, ProfiledBox]]:
    out = []
    for name, model in models.items():
        box = getattr(getattr(model, "inner", model), "box", None)
        if isinstance(box, ProfiledBox):
            out.append((name, box))
    return out


def with_fit_stats(files: Mapping[str, Mapping[str, Any]] | None,
                   models: Mapping[str, Any]) -> dict[str, dict[str, Any]] | None:
    """A run's ``latency_files`` (deployment -> ``{"path", "sha256"}``, `sim.replay.latency_files`; None: none) with
    each measured profile's in-sample fit error added as ``fit`` (``rows``, ``median_rel_err``, ``p90_rel_err``,
    ``max_rel_err``: |fitted - measured| / measured over its rows), which `runs show` prints."""
    if not files:
        return None
    out = {}
    for name, entry in files.items():
        model = models.get(name)
        stats = getattr(getattr(model, "inner", model), "fit_stats", None)
        out[name] = {**entry, "fit": {k: round(float(v), 6) for k, v in stats.items()}} if stats else dict(entry)
    return out


def fit_line(fit: Mapping[str, Any]) -> str:
    """A stored ``fit`` (`with_fit_stats`) in words: ``fit: p90 9.7% off its rows (median 1.9%, worst 51%)``."""
    worst = f", worst {fit['max_rel_err']:.0%}" if "max_rel_err" in fit else ""
    return (f"fit: p90 {fit['p90_rel_err']:.1%} off its {int(fit.get('rows', 0))} rows "
            f"(median {fit['median_rel_err']:.1%}{worst})")
