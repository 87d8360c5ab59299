"""Coarse iteration latency from SplitwiseSim's end-to-end measurements (perf_model.csv).

Same arithmetic as splitwise-sim's DatabasePerformanceModel.get_iteration_duration:
an all-prefill iteration costs prompt_time(batch_tokens), an all-decode iteration
token_time(batch_tokens) and a mixed one 1.1 x prompt_time(batch_tokens), where
batch_tokens = prefill tokens + one per decode and each curve is the median per
batch_tokens (= prompt_size x batch_size), interpolated linearly and extrapolated.
Context length is ignored — the profile does not vary it.

Unlike splitwise-sim, each curve never decreases (`_MonotoneCurve`): a profiled median below an
earlier one is dropped as an outlier, so more tokens never cost less and the extrapolation past
the profile follows the last rising segment (Llama-2-70B on A100 TP2 timed 32,768 prompt tokens
at 0.79 s after 6.6 s for 16,384: extrapolated through it, a 37k-token prompt cost 0 s). A mixed
iteration also costs at least the decode-only one of its token count.
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from pathlib import Path

import numpy as np
import pandas as pd

from .base import IterationShape, LatencyModel, decode_run_args
from .vidur_files import PROFILES_DIR, ProfileNotFoundError, cached_per_file_version

__all__ = ["SplitwiseModel", "list_splitwise_profiles"]

_FILE = "splitwise_sim/perf_model.csv"
_MODEL_ALIASES = {
    "meta-llama/llama-2-70b-hf": "llama2-70b",
    "llama-2-70b-hf": "llama2-70b",
    "bigscience/bloom": "bloom-176b",
    "bloom": "bloom-176b",
}
_GPU_ALIASES = {"a100": "a100-80gb", "h100": "h100-80gb", "h100-pcap": "h100-80gb-pcap"}
MIXED_BATCH_FACTOR = 1.1
#: The profiled models' context windows (tokens): a longer prompt is past what the model serves.
MAX_CONTEXT = {"llama2-70b": 4096, "bloom-176b": 2048}


@cached_per_file_version(maxsize=4)  # (an edited perf_model.csv is read again)
def _load(path: str) -> pd.DataFrame:
    return pd.read_csv(path)


def list_splitwise_profiles(profiles_dir: str | Path | None = None) -> list[tuple[str, str, int]]:
    df = _load(str(Path(profiles_dir or PROFILES_DIR) / _FILE))
    return sorted({(m, h, int(t)) for m, h, t in zip(df["model"], df["hardware"], df["tensor_parallel"])})


class _MonotoneCurve:
    """Linear interpolation through the knots that are at least every earlier knot's value (a knot below an
    earlier one is dropped as an outlier), extrapolated linearly at both ends along the end segments (as scipy
    interp1d 'extrapolate' does on the kept knots): it never decreases, and past the last knot it rises at the
    last kept segment's slope."""

    __slots__ = ("x", "y", "xl", "yl", "dropped")

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        keep = y >= np.maximum.accumulate(y)
        self.dropped = x[~keep]
        self.x, self.y = x[keep], y[keep]
        self.xl, self.yl = self.x.tolist(), self.y.tolist()

    def __call__(self, q: float) -> float:
        x, y = self.xl, self.yl
        if len(x) == 1:
            return y[0]
        if q <= x[0]:
            i = 0
        elif q >= x[-1]:
            i = len(x) - 2
        else:
            i = bisect_right(x, q) - 1
        return y[i] + (y[i + 1] - y[i]) * (q - x[i]) / (x[i + 1] - x[i])


class SplitwiseModel(LatencyModel):
    """Llama-2-70B / BLOOM-176B on A100 / H100 (DGX), TP 2-8, from perf_model.csv."""

    name = "splitwise"

    def __init__(self, model: str = "llama2-70b", gpu: str = "a100-80gb", tensor_parallel: int = 2, profiles_dir: str | Path | None = None) -> None:
        df = _load(str(Path(profiles_dir or PROFILES_DIR) / _FILE))
        self.model_key = _MODEL_ALIASES.get(model.lower(), model.lower())
        self.gpu_key = _GPU_ALIASES.get(gpu.lower(), gpu.lower())
        self.tensor_parallel = int(tensor_parallel)
        sub = df[(df["model"] == self.model_key) & (df["hardware"] == self.gpu_key) & (df["tensor_parallel"] == self.tensor_parallel)]
        if sub.empty:
            have = ", ".join(f"({m}, {h}, tp={t})" for m, h, t in list_splitwise_profiles(profiles_dir))
            raise ProfileNotFoundError(f"no SplitwiseSim profile for ({model}, {gpu}, tp={tensor_parallel}); available: {have}")
        tokens = (sub["prompt_size"] * sub["batch_size"]).to_numpy()
        g = pd.DataFrame({"t": tokens, "p": sub["prompt_time"].to_numpy() / 1e3, "d": sub["token_time"].to_numpy() / 1e3}).groupby("t").median()
        x = g.index.to_numpy(dtype=np.float64)
        self.prompt_s = _MonotoneCurve(x, g["p"].to_numpy())
        self.token_s = _MonotoneCurve(x, g["d"].to_numpy())
        self.max_context = MAX_CONTEXT.get(self.model_key)
        self._warned_context = self.max_context is None

    def iteration_s(self, shape: IterationShape) -> float:
        np_ = len(shape.prefill_chunk_tokens)
        nd = len(shape.decode_context_tokens)
        if np_ == 0 and nd == 0:
            return 0.0
        tokens = (int(sum(shape.prefill_chunk_tokens)) if np_ else 0) + nd
        if np_ == 0:
            return max(self.token_s(tokens), 0.0)
        if not self._warned_context:
            self._check_context(shape)
        t = max(self.prompt_s(tokens), 0.0)
        return max(t * MIXED_BATCH_FACTOR, self.token_s(tokens)) if nd else t

    def _check_context(self, shape: IterationShape) -> None:
        """Warn once per model when a prompt runs past the model's context window, which the profile's
        batch-token curves cannot tell: the model could not serve it, yet it gets a time."""
        ctx = shape.prefill_context_tokens if len(shape.prefill_context_tokens) else (0,) * len(shape.prefill_chunk_tokens)
        longest = max(int(c) + int(n) for c, n in zip(ctx, shape.prefill_chunk_tokens))
        if longest > self.max_context:
            self._warned_context = True
            warnings.warn(f"splitwise: a {longest}-token prompt is longer than {self.model_key}'s {self.max_context}-token "
                          "context window; it is priced from the profile's batch-token curve all the same (set the "
                          "deployment's max_model_len to refuse such prompts)", RuntimeWarning, stacklevel=3)

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        b = int(ctx.size)
        return np.full(n, max(self.token_s(b), 0.0) if b else 0.0)

    def __repr__(self) -> str:
        return f"SplitwiseModel(model={self.model_key!r}, gpu={self.gpu_key!r}, tensor_parallel={self.tensor_parallel})"
