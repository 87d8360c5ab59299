"""The `controlplane-profile/1` file format shared by the live profiler and the measured model.

Kept free of heavy imports: live workers write profiles without loading scikit-learn.
"""

from __future__ import annotations

PROFILE_FORMAT = "controlplane-profile/1"
#: One row per timed iteration; contexts are KV lengths before the iteration.
ROW_FIELDS: tuple[str, ...] = (
    "num_prefill_tokens",
    "num_prefill_seqs",
    "num_decode_seqs",
    "sum_decode_context",
    "sum_prefill_context",
    "iteration_s",
)
#: Optional row fields of padded engines: prefill tokens and decode KV entries computed, padding included.
PADDED_FIELDS: tuple[str, ...] = ("padded_prefill_tokens", "padded_decode_context")
#: Optional row field: how many timed iterations the row's ``iteration_s`` averages (default 1).
#: The measured model weights its fit by it, so a mean over 500 iterations of a common shape
#: counts for more than one timing of a rare one.
WEIGHT_FIELD = "samples"
