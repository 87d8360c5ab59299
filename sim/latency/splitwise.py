"""Coarse iteration latency from SplitwiseSim's end-to-end measurements (perf_model.csv).

Same arithmetic as splitwise-sim's DatabasePerformanceModel.get_iteration_duration:
an all-prefill iteration costs prompt_time(batch_tokens), an all-decode iteration
token_time(batch_tokens) and a mixed one 1.1 x prompt_time(batch_tokens), where
batch_tokens = prefill tokens + one per decode and each curve is the median per
batch_tokens (= prompt_size x batch_size), interpolated linearly and extrapolated.
Context length is ignored — the profile does not vary it.
"""

from __future__ import annotations

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


@cached_per_file_version(maxsize=4)  # (an edited perf_model.csv is read again)
def _load(path: str) -> pd.DataFrame:
    return pd.read_csv(path)


def list_splitwise_profiles(profiles_dir: str | Path | None = None) -> list[tuple[str, str, int]]:
    df = _load(str(Path(profiles_dir or PROFILES_DIR) / _FILE))
    return sorted({(m, h, int(t)) for m, h, t in zip(df["model"], df["hardware"], df["tensor_parallel"])})


class _ExtrapCurve:
    """Linear interpolation with linear extrapolation at both ends (scipy interp1d 'extrapolate')."""

    __slots__ = ("x", "y", "xl", "yl")

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.xl, self.yl = x.tolist(), y.tolist()

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
        self.prompt_s = _ExtrapCurve(x, g["p"].to_numpy())
        self.token_s = _ExtrapCurve(x, g["d"].to_numpy())

    def iteration_s(self, shape: IterationShape) -> float:
        np_ = len(shape.prefill_chunk_tokens)
        nd = len(shape.decode_context_tokens)
        if np_ == 0 and nd == 0:
            return 0.0
        tokens = (int(sum(shape.prefill_chunk_tokens)) if np_ else 0) + nd
        if np_ == 0:
            return max(self.token_s(tokens), 0.0)
        t = max(self.prompt_s(tokens), 0.0)
        return t * MIXED_BATCH_FACTOR if nd else t

    def decode_run_s(self, decode_context_tokens: np.ndarray, num_iterations: int) -> np.ndarray:
        ctx, n = decode_run_args(decode_context_tokens, num_iterations)
        b = int(ctx.size)
        return np.full(n, max(self.token_s(b), 0.0) if b else 0.0)

    def __repr__(self) -> str:
        return f"SplitwiseModel(model={self.model_key!r}, gpu={self.gpu_key!r}, tensor_parallel={self.tensor_parallel})"
