"""Check a measured profile before a run uses it: ``python -m sim.latency.measured_report PROFILE.json``.

Prints its rows by kind, the ranges they cover (the profiled box: past it the fit extrapolates), the fit's error on
its rows with the worst ones, what a run's load would warn (`measured_checks`: units, monotonicity, kinds no row
times) and the prices of a few shapes, those past the box marked. Exit status 0, or 2 for a profile that does not
load (the error on stderr). See docs/latency-models.md (A profile measured with your own tools).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

from .base import IterationShape
from .measured import MeasuredProfileModel
from .measured_box import BOX_FIELDS
from .measured_checks import describe_row, fit_errors, fit_note, profile_notes
from controlplane.hardware.profile_format import read_profile

__all__ = ["main", "report"]

#: Shapes priced at the end: (words, shape).
SAMPLE_SHAPES = (
    ("prefill 1 x 128 tokens", IterationShape((128,), (0,))),
    ("prefill 1 x 2,048 tokens", IterationShape((2048,), (0,))),
    ("prefill 1 x 8,192 tokens", IterationShape((8192,), (0,))),
    ("prefill 512 tokens over 3,584 context", IterationShape((512,), (3584,))),
    ("decode 1 seq @ 1,024", IterationShape((), (), (1024,))),
    ("decode 32 seqs @ 1,024", IterationShape((), (), (1024,) * 32)),
    ("decode 256 seqs @ 1,024", IterationShape((), (), (1024,) * 256)),
    ("prefill 512 + decode 16 seqs @ 1,024", IterationShape((512,), (0,), (1024,) * 16)),
)


def report(path: str) -> str:
    """The report of the profile at ``path`` (`read_profile`'s and the fit's errors raise, naming the file)."""
    with warnings.catch_warnings(record=True) as caught:  # (the load's own warnings: said below, once)
        warnings.simplefilter("always")
        rows, meta = read_profile(path)
        model = MeasuredProfileModel.from_file(path)
    lines = [f"{path}: {meta.get('model')} on {meta.get('device')} ({meta.get('precision', 'fp16')}), "
             f"{len(rows)} rows"]
    kinds = {"prefill-only": [r for r in rows if r["num_prefill_seqs"] and not r["num_decode_seqs"]],
             "decode-only": [r for r in rows if r["num_decode_seqs"] and not r["num_prefill_seqs"]],
             "mixed": [r for r in rows if r["num_prefill_seqs"] and r["num_decode_seqs"]]}
    lines.append("rows by kind: " + ", ".join(f"{k} {len(v)}" for k, v in kinds.items()))
    for kind, group in kinds.items():
        if group:
            ranges = ", ".join(f"{k} {min(int(r[k]) for r in group):,}-{max(int(r[k]) for r in group):,}"
                               for k in BOX_FIELDS if any(r[k] for r in group))
            lines.append(f"  {kind}: {ranges}")
    assert model.box is not None
    lines.append(f"profiled box (past it the fit extrapolates): {model.box.describe_limits()}")
    stats = model.fit_stats
    lines.append(f"fit on its rows: median |rel err| {stats['median_rel_err']:.1%}, p90 {stats['p90_rel_err']:.1%}, "
                 f"worst {stats['max_rel_err']:.1%}")
    rel = fit_errors(model.row_times, model.row_fitted)
    lines.append("worst rows (numbered from 1):")
    for i in sorted(range(len(rows)), key=lambda i: -abs(rel[i]))[:5]:
        lines.append(f"  row {i + 1}: {describe_row(rows[i])}: measured {model.row_times[i] * 1e3:.4g} ms, "
                     f"fitted {model.row_fitted[i] * 1e3:.4g} ms ({rel[i]:+.1%})")
    notes = [str(w.message) for w in caught]
    notes += [n for n in profile_notes(rows, model.row_times, model.row_fitted, path) if n not in notes]
    if fit_note(rows, model.row_times, model.row_fitted, path) is None:
        lines.append("fit: within the warning bounds (p90 and every row)")
    lines.append(f"warnings ({len(notes)}):" if notes else "warnings: none")
    lines += [f"  - {n}" for n in notes]
    lines.append("sample prices (* past the profiled box: extrapolated):")
    before = model.box.outside
    for words, shape in SAMPLE_SHAPES:
        t = model.iteration_s(shape)  # (counted in the box: tells whether it is past it)
        past = model.box.outside > before
        before = model.box.outside
        lines.append(f"  {words}{' *' if past else ''}: {t * 1e3:.4g} ms")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2 if len(args) != 1 else 0
    try:
        print(report(args[0]))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
